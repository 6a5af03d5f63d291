//! `vtp listen --stdout xml0|jsonl` against a broker: every event on standard output, byte
//! for byte, logs on standard error; a closed standard output stops vtp once, with status 5.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::Read;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use support::*;

/// Standard error of a child, collected on a thread.
#[derive(Clone, Default)]
struct Stderr(Arc<Mutex<(String, bool)>>);

impl Stderr {
    fn text(&self) -> String {
        self.0.lock().unwrap().0.clone()
    }

    /// Waits (bounded) until the child closed it; returns it all.
    fn wait_closed(&self) -> String {
        let deadline = Instant::now() + WAIT;
        while !self.0.lock().unwrap().1 {
            assert!(Instant::now() < deadline, "stderr open:\n{}", self.text());
            std::thread::park_timeout(Duration::from_millis(20));
        }
        self.text()
    }
}

/// `vtp listen` on the broker's subscriber port with these extra arguments; stdout piped
/// (returned apart), stderr collected.
fn listen(b: &Broker, extra: &[&str]) -> (Child, ChildStdout, Stderr) {
    let mut child = Command::new(VTP)
        .args(["listen", &format!("127.0.0.1:{}", b.broadcast)])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let log = Stderr::default();
    let mut stderr = child.stderr.take().unwrap();
    let l = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            l.0.lock()
                .unwrap()
                .0
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        l.0.lock().unwrap().1 = true;
    });
    // Subscribed once the broker names it.
    b.proc.log.wait_for("the listener to subscribe", |l| {
        l.contains("subscriber 127.0.0.1:") && l.contains(" connected")
    });
    (child, stdout, log)
}

/// Reads `out` on a thread; returns what arrived once `done` says it is complete, or panics
/// at the deadline with what arrived.
fn read_until(out: ChildStdout, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = out;
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while !done(&got) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => got.extend(chunk),
            Err(_) => panic!(
                "standard output so far: {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    got
}

/// Three events: an observation, a test event, and one whose text needs escaping in JSON.
fn events() -> Vec<Vec<u8>> {
    let plain = event_xml("ivo://vtp.test/author#s1");
    let test = String::from_utf8(event_xml("ivo://vtp.test/author#s2"))
        .unwrap()
        .replace("role=\"observation\"", "role=\"test\"")
        .into_bytes();
    let tricky = String::from_utf8(event_xml("ivo://vtp.test/author#s3"))
        .unwrap()
        .replace(
            "</Who>",
            "</Who>\n\t<What><Description>\"quoted\" \\ caf\u{e9} &amp; \u{2603}</Description></What>",
        )
        .into_bytes();
    vec![plain, test, tricky]
}

fn submit_all(b: &Broker, events: &[Vec<u8>]) {
    for e in events {
        assert_eq!(submit_raw(b.receive, e).0, "ack");
    }
}

#[test]
fn xml0_writes_each_event_byte_for_byte_then_a_nul() {
    let b = Broker::start("stdout-xml0", &["--broadcast-test-interval", "0"]);
    let (mut child, out, log) = listen(&b, &["--stdout", "xml0"]);
    let sent = events();
    submit_all(&b, &sent);
    let got = read_until(out, |g| g.iter().filter(|&&c| c == 0).count() == sent.len());
    assert_eq!(got.last(), Some(&0));
    let mut records: Vec<&[u8]> = got[..got.len() - 1].split(|&c| c == 0).collect();
    let mut want: Vec<&[u8]> = sent.iter().map(Vec::as_slice).collect();
    records.sort();
    want.sort();
    assert_eq!(records, want);
    // The logs went to standard error (on standard output they would have broken a record).
    assert!(log.text().contains(" INFO "), "{}", log.text());
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn jsonl_writes_one_object_per_event_with_its_exact_text_and_role() {
    let b = Broker::start("stdout-jsonl", &["--broadcast-test-interval", "0"]);
    let (mut child, out, _log) = listen(&b, &["--stdout", "jsonl"]);
    let sent = events();
    submit_all(&b, &sent);
    let got = read_until(out, |g| {
        g.iter().filter(|&&c| c == b'\n').count() == sent.len()
    });
    let text = String::from_utf8(got).unwrap();
    let mut seen = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let ivorn = v["ivorn"].as_str().unwrap().to_owned();
        let xml = v["xml"].as_str().unwrap();
        let i: usize = ivorn
            .strip_prefix("ivo://vtp.test/author#s")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(xml.as_bytes(), sent[i - 1], "{ivorn}");
        let role = if i == 2 { "test" } else { "observation" };
        assert_eq!(v["role"], role, "{ivorn}");
        let received = v["received"].as_str().unwrap();
        // 2026-01-02T03:04:05.678Z
        assert!(
            received.len() == 24 && received.ends_with('Z') && received.as_bytes()[10] == b'T',
            "{received}"
        );
        seen.push(i);
    }
    seen.sort_unstable();
    assert_eq!(seen, [1, 2, 3]);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_closed_stdout_is_logged_once_and_stops_vtp_with_status_5() {
    let b = Broker::start("stdout-closed", &["--broadcast-test-interval", "0"]);
    let (mut child, out, log) = listen(&b, &["--stdout", "jsonl"]);
    // The consumer exits.
    drop(out);
    submit_all(&b, &events());
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "vtp listen kept running:\n{}",
            log.text()
        );
        std::thread::park_timeout(Duration::from_millis(20));
    };
    let text = log.wait_closed();
    assert_eq!(status.code(), Some(5), "{text}");
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{text}");
    assert!(
        errors[0].contains("standard output is closed (its reader exited)"),
        "{text}"
    );
    // Only the log line explains it: no repeated message, no WARN per event.
    assert!(!text.contains("WARN"), "{text}");
    assert!(!text.contains("vtp: "), "{text}");
}
