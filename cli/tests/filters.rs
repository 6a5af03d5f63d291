//! `--filter` is checked at start-up with this build's filter engine, as Comet refuses to
//! start with an invalid `--filter` (a subscriber's invalid filter, by contrast, is only
//! dropped and logged by the broker).

use std::process::Command;

#[cfg(feature = "xpath")]
mod support;

const VTP: &str = env!("CARGO_BIN_EXE_vtp");

fn start(filter: &str) -> (Option<i32>, String) {
    // Port 1 on localhost: start-up fails on the filter before any connection is tried.
    let out = Command::new(VTP)
        .args(["listen", "localhost:1", "--filter", filter])
        .output()
        .expect("vtp runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[cfg(feature = "xpath")]
#[test]
fn a_filter_with_a_syntax_error_stops_start_up_naming_it() {
    for (filter, what) in [
        ("//Param[@name=", "character 15"),
        ("for $x in //Param return $x", "character 5"),
        ("//*:Param", "character 4"),
    ] {
        let (code, err) = start(filter);
        assert_eq!(code, Some(2), "{filter}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{filter}: {err}");
        assert!(err.contains(&format!("{filter:?}")), "{filter}: {err}");
        assert!(err.contains("XPath syntax error at"), "{filter}: {err}");
        assert!(err.contains(what), "{filter}: {err}");
    }
}

#[cfg(not(feature = "xpath"))]
#[test]
fn a_build_without_xpath_refuses_every_filter_at_start_up() {
    let (code, err) = start(r#"//Param[@name="Packet_Type" and @value=61]"#);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not supported by this build"), "{err}");
}

/// What the filter engine did is logged when the broker stops: operators see errors,
/// over-budget evaluations and caught xee panics without a debugger.
#[cfg(feature = "xpath")]
#[test]
fn the_broker_logs_what_the_filters_did_when_it_stops() {
    use support::{Broker, Proc};
    let mut b = Broker::start("b", &["--broadcast-test-interval", "0"]);
    let mut listen = Command::new(VTP);
    listen.args([
        "listen",
        &format!("127.0.0.1:{}", b.broadcast),
        "--filter",
        "//Param[@name='Packet_Type' and @value=61]",
    ]);
    let _listener = Proc::spawn("listen", listen);
    b.proc.log.wait_for("the subscriber's filter", |l| {
        l.contains("subscriber filters set")
    });
    let dir = support::TempDir::new("events");
    let event = dir.path().join("e.xml");
    std::fs::write(
        &event,
        support::event_xml("ivo://vtp.test/author#filters-1"),
    )
    .expect("write the event");
    let sent = Command::new(VTP)
        .args(["send", &format!("127.0.0.1:{}", b.receive)])
        .arg(&event)
        .output()
        .expect("vtp send runs");
    assert_eq!(
        sent.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    b.proc
        .log
        .wait_for("the accepted event", |l| l.contains("accepted event"));
    assert_eq!(b.proc.terminate(), Some(0));
    let log = b.proc.log.text();
    let line = log
        .lines()
        .find(|l| l.contains("filters:"))
        .unwrap_or_else(|| panic!("no filter summary at shutdown:\n{log}"));
    assert!(line.contains("1 events evaluated"), "{line}");
    assert!(
        line.contains("1 evaluations, 0 errors, 0 over the cost budget"),
        "{line}"
    );
}
