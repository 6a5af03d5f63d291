//! The load generator against the null relay: the numbers come out, and so do the failures.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use vtp_testkit::Proc;

/// A running null relay (killed on drop) and its listeners' addresses.
struct Relay {
    proc: Proc,
    receive: String,
    broadcast: String,
}

fn relay() -> Relay {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_null-relay"));
    cmd.args(["--receive", "127.0.0.1:0", "--broadcast", "127.0.0.1:0"]);
    let proc = Proc::spawn("null-relay", cmd);
    let receive = proc.log.wait_after("null-relay: listening for authors on ");
    let broadcast = proc
        .log
        .wait_after("null-relay: listening for subscribers on ");
    Relay {
        proc,
        receive,
        broadcast,
    }
}

impl Relay {
    /// vtp-bench's arguments for an `e2e` run through this relay, then `more`.
    fn e2e<'a>(&'a self, more: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "e2e",
            "--receive",
            &self.receive,
            "--broadcast",
            &self.broadcast,
        ];
        args.extend_from_slice(more);
        args
    }
}

/// Runs vtp-bench and checks its exit code and that its JSON line (the last line of its
/// stdout) contains each of `fields`; returns that line.
fn bench(args: &[&str], code: i32, fields: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_vtp-bench"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let json = stdout.lines().last().unwrap_or_default().to_owned();
    assert!(json.starts_with('{') && json.ends_with('}'), "{stdout}");
    assert_eq!(out.status.code().unwrap(), code, "{json}");
    for field in fields {
        assert!(json.contains(field), "{json}");
    }
    json
}

#[test]
fn e2e_through_the_null_relay_delivers_every_event_to_every_subscriber() {
    let r = relay();
    let json = bench(
        &r.e2e(&[
            "--subscribers",
            "5",
            "--events",
            "50",
            "--rate",
            "0",
            "--window",
            "4",
            "--stream",
            "--timeout",
            "20",
            "--pid",
            &r.proc.child.id().to_string(),
        ]),
        0,
        &[
            r#""deliveries":250,"#,
            r#""latency_samples":250,"#,
            r#""events_complete":50,"#,
            r#""broker_rss_kib":"#,
            r#""ok":true"#,
        ],
    );
    assert!(!json.contains(r#""broker_rss_kib":null"#), "{json}");
}

#[test]
fn paced_run_takes_as_long_as_its_rate_says() {
    let r = relay();
    let started = std::time::Instant::now();
    let json = bench(
        &r.e2e(&[
            "--subscribers",
            "2",
            "--events",
            "10",
            "--rate",
            "50",
            "--stream",
            "--timeout",
            "20",
        ]),
        0,
        &[r#""deliveries":20,"#],
    );
    // Ten events at 50/s: the last one starts 180 ms after the first.
    assert!(started.elapsed() >= Duration::from_millis(180), "{json}");
}

#[test]
fn hold_fails_when_no_iamalive_arrives() {
    // The null relay sends an authenticate and never an iamalive.
    let r = relay();
    bench(
        &[
            "hold",
            "--broadcast",
            &r.broadcast,
            "--subscribers",
            "20",
            "--seconds",
            "0.5",
            "--iamalive",
            "0.2",
            "--slack",
            "0.1",
        ],
        1,
        &[r#""held":20,"#, r#""on_time":0,"#, r#""ok":false"#],
    );
}

#[test]
fn submit_reports_a_broker_that_never_answers() {
    // The null relay never sends a receipt.
    let r = relay();
    bench(
        &[
            "submit",
            "--receive",
            &r.receive,
            "--events",
            "2",
            "--authors",
            "2",
            "--timeout",
            "0.5",
        ],
        1,
        &[r#""acked":0,"#, r#""failed":2,"#, "no receipt: timed out"],
    );
}
