//! The load generator against the null relay: the numbers come out, and so do the failures.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running null relay, killed on drop.
struct Relay {
    child: Child,
    receive: String,
    broadcast: String,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn relay() -> Relay {
    let mut child = Command::new(env!("CARGO_BIN_EXE_null-relay"))
        .args(["--receive", "127.0.0.1:0", "--broadcast", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut receive = None;
    let mut broadcast = None;
    while receive.is_none() || broadcast.is_none() {
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        if let Some(a) = line.strip_prefix("null-relay: listening for authors on ") {
            receive = Some(a.to_owned());
        }
        if let Some(a) = line.strip_prefix("null-relay: listening for subscribers on ") {
            broadcast = Some(a.to_owned());
        }
    }
    Relay {
        child,
        receive: receive.unwrap(),
        broadcast: broadcast.unwrap(),
    }
}

/// Runs vtp-bench; returns its exit code and its JSON line.
fn bench(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vtp-bench"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let json = stdout.lines().last().unwrap_or_default().to_owned();
    assert!(json.starts_with('{') && json.ends_with('}'), "{stdout}");
    (out.status.code().unwrap(), json)
}

#[test]
fn e2e_through_the_null_relay_delivers_every_event_to_every_subscriber() {
    let r = relay();
    let (code, json) = bench(&[
        "e2e",
        "--receive",
        &r.receive,
        "--broadcast",
        &r.broadcast,
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
        &r.child.id().to_string(),
    ]);
    assert_eq!(code, 0, "{json}");
    assert!(json.contains(r#""deliveries":250,"#), "{json}");
    assert!(json.contains(r#""latency_samples":250,"#), "{json}");
    assert!(json.contains(r#""events_complete":50,"#), "{json}");
    assert!(json.contains(r#""broker_rss_kib":"#) && !json.contains(r#""broker_rss_kib":null"#));
    assert!(json.contains(r#""ok":true"#), "{json}");
}

#[test]
fn paced_run_takes_as_long_as_its_rate_says() {
    let r = relay();
    let started = std::time::Instant::now();
    let (code, json) = bench(&[
        "e2e",
        "--receive",
        &r.receive,
        "--broadcast",
        &r.broadcast,
        "--subscribers",
        "2",
        "--events",
        "10",
        "--rate",
        "50",
        "--stream",
        "--timeout",
        "20",
    ]);
    assert_eq!(code, 0, "{json}");
    // Ten events at 50/s: the last one starts 180 ms after the first.
    assert!(started.elapsed() >= Duration::from_millis(180), "{json}");
    assert!(json.contains(r#""deliveries":20,"#), "{json}");
}

#[test]
fn hold_fails_when_no_iamalive_arrives() {
    // The null relay sends an authenticate and never an iamalive.
    let r = relay();
    let (code, json) = bench(&[
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
    ]);
    assert_eq!(code, 1, "{json}");
    assert!(json.contains(r#""held":20,"#), "{json}");
    assert!(json.contains(r#""on_time":0,"#), "{json}");
    assert!(json.contains(r#""ok":false"#), "{json}");
}

#[test]
fn submit_reports_a_broker_that_never_answers() {
    // The null relay never sends a receipt.
    let r = relay();
    let (code, json) = bench(&[
        "submit",
        "--receive",
        &r.receive,
        "--events",
        "2",
        "--authors",
        "2",
        "--timeout",
        "0.5",
    ]);
    assert_eq!(code, 1, "{json}");
    assert!(json.contains(r#""acked":0,"#), "{json}");
    assert!(json.contains(r#""failed":2,"#), "{json}");
    assert!(json.contains("no receipt: timed out"), "{json}");
}
