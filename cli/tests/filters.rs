//! `--filter` is checked at start-up with this build's filter engine, as Comet refuses to
//! start with an invalid `--filter` (a subscriber's invalid filter, by contrast, is only
//! dropped and logged by the broker).

use std::process::Command;

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
