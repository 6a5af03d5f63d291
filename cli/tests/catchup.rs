//! `--catch-up URL`: a `vtp listen` or a downstream `vtp broker` stopped while events are
//! submitted upstream gets them from the upstream's archive API when it starts again, then the
//! live ones, each exactly once; gaps and bad answers are logged and retried.
//!
//! The end-to-end tests run against the real upstream (`vtp broker --http`, whose archive
//! serves `GET /api/events`). The client's error cases (HTTP 500, malformed JSON, an oversize
//! answer, a gap) are served by a small scripted HTTP server here, since the real archive does
//! not produce them on demand.
#![cfg(feature = "catchup")]
#![allow(clippy::unwrap_used)]

mod peers;
mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use support::*;

/// The archive's newest sequence number (`last_seq`), 0 when empty.
fn archive_last_seq(port: u16) -> u64 {
    let (status, body) = http_get(port, "/api/events?limit=1");
    assert_eq!(status, 200, "GET /api/events: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["last_seq"].as_u64().unwrap_or(0)
}

/// Polls `f` until it is true, for at most [`WAIT`].
fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

/// The position in a state file (`after N`), if it exists.
fn position(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("after "))
        .and_then(|n| n.trim().parse().ok())
}

/// How many times each IVORN was printed by `--stdout jsonl`.
fn handled(log: &Log) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for line in log.text().lines().filter(|l| l.starts_with("{\"ivorn\":")) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        *n.entry(v["ivorn"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    n
}

fn submit(port: u16, ivorn: &str) {
    let (role, _) = submit_raw(port, &event_xml(ivorn));
    assert_eq!(role, "ack", "{ivorn} acknowledged");
}

fn listen(upstream: u16, url: &str, db: &TempDir, saved: &TempDir) -> Proc {
    listen_with(upstream, url, db, saved, &[])
}

fn listen_with(upstream: u16, url: &str, db: &TempDir, saved: &TempDir, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(VTP);
    cmd.args([
        "listen",
        &format!("127.0.0.1:{upstream}"),
        "--catch-up",
        url,
    ])
    .args([
        "--catch-up-interval",
        "1",
        "--stdout",
        "jsonl",
        "--save-event",
    ])
    .arg("--eventdb")
    .arg(db.path())
    .arg("--save-event-directory")
    .arg(saved.path())
    .args(extra);
    Proc::spawn("listen", cmd)
}

fn upstream(name: &str) -> (Broker, u16) {
    let b = Broker::start(
        name,
        &["--http", "127.0.0.1:0", "--broadcast-test-interval", "0"],
    );
    let http = http_port(&b.proc.log);
    (b, http)
}

fn subscribers_connected(b: &Broker, n: usize) {
    b.proc.log.wait_count("subscribers", n, |l| {
        l.contains("subscriber 127.0.0.1:") && l.contains(" connected")
    });
}

#[test]
fn listen_catches_up_the_events_it_missed_then_the_live_ones_each_once() {
    let (b, http) = upstream("cu-up1");
    let url = format!("http://127.0.0.1:{http}");
    let (db, saved) = (TempDir::new("cu-ldb"), TempDir::new("cu-saved"));
    let state = vtp_host::catchup::state_path(db.path(), &url);

    let mut first = listen(b.broadcast, &url, &db, &saved);
    subscribers_connected(&b, 1);
    // A first run remembers the archive's newest event (from now on).
    wait_until("the first position", || position(&state).is_some());
    submit(b.receive, "ivo://vtp.test/author#before");
    first
        .log
        .wait_for("the live event", |l| l.contains("author#before"));
    first.terminate();

    let missed: Vec<String> = (1..=20)
        .map(|i| format!("ivo://vtp.test/author#missed{i}"))
        .collect();
    for ivorn in &missed {
        submit(b.receive, ivorn);
    }
    wait_until("the archive holds the 21 events", || {
        archive_last_seq(http) >= 21
    });

    let second = listen(b.broadcast, &url, &db, &saved);
    second.log.wait_count("the 20 missed events", 20, |l| {
        l.starts_with("{\"ivorn\":") && l.contains("#missed")
    });
    subscribers_connected(&b, 2);
    let live: Vec<String> = (1..=3)
        .map(|i| format!("ivo://vtp.test/author#live{i}"))
        .collect();
    for ivorn in &live {
        submit(b.receive, ivorn);
    }
    second.log.wait_count("the 3 live events", 3, |l| {
        l.starts_with("{\"ivorn\":") && l.contains("#live")
    });
    // Catch-up passes run past the live events (fetched again, dropped as duplicates): the
    // position is committed once each is handled or known. The archive writes off the event
    // loop: the last live event may reach it after its forward reached the listener.
    wait_until("the archive holds the 24 events", || {
        archive_last_seq(http) >= 24
    });
    let last = archive_last_seq(http);
    wait_until("the position reaches the archive's newest", || {
        position(&state).is_some_and(|p| p >= last)
    });

    let counts = handled(&second.log);
    for ivorn in missed.iter().chain(&live) {
        assert_eq!(
            counts.get(ivorn),
            Some(&1),
            "{ivorn} handled once: {counts:?}"
        );
    }
    assert_eq!(
        counts.get("ivo://vtp.test/author#before"),
        None,
        "{counts:?}"
    );
    assert_eq!(counts.len(), 23, "{counts:?}");
    let files = std::fs::read_dir(saved.path()).unwrap().count();
    assert_eq!(files, 24, "every event saved once");
}

/// A TCP relay to 127.0.0.1:`target` that holds each connection until opened: lets a test
/// connect a subscriber before the node it watches can reach the archive.
struct Gate {
    port: u16,
    open: Arc<(Mutex<bool>, Condvar)>,
}

impl Gate {
    fn new(target: u16) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let open = Arc::new((Mutex::new(false), Condvar::new()));
        let o = Arc::clone(&open);
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { continue };
                let o = Arc::clone(&o);
                std::thread::spawn(move || {
                    let (m, cv) = &*o;
                    let mut g = m.lock().unwrap();
                    while !*g {
                        g = cv.wait(g).unwrap();
                    }
                    drop(g);
                    let Ok(up) = TcpStream::connect(loopback(target)) else {
                        return;
                    };
                    let (mut c2, mut up2) = (c.try_clone().unwrap(), up.try_clone().unwrap());
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut c2, &mut up2);
                        let _ = up2.shutdown(std::net::Shutdown::Write);
                    });
                    let (mut c, mut up) = (c, up);
                    let _ = std::io::copy(&mut up, &mut c);
                    let _ = c.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Self { port, open }
    }

    fn set(&self, open: bool) {
        *self.open.0.lock().unwrap() = open;
        self.open.1.notify_all();
    }
}

#[test]
fn a_downstream_broker_catches_up_and_serves_its_subscriber_each_event_once() {
    let (b, http) = upstream("cu-up2");
    let gate = Gate::new(http);
    let url = format!("http://127.0.0.1:{}", gate.port);
    let args = [
        "--subscribe",
        &format!("127.0.0.1:{}", b.broadcast),
        "--catch-up",
        &url,
        "--catch-up-interval",
        "1",
        "--broadcast-test-interval",
        "0",
    ];
    gate.set(true);
    let d = Broker::start("cu-down", &args);
    subscribers_connected(&b, 1);
    let state = vtp_host::catchup::state_path(d.db.path(), &url);
    wait_until("the first position", || position(&state).is_some());
    let Broker { mut proc, db, .. } = d;
    proc.terminate();
    drop(proc);

    let missed: Vec<String> = (1..=20)
        .map(|i| format!("ivo://vtp.test/author#down{i}"))
        .collect();
    for ivorn in &missed {
        submit(b.receive, ivorn);
    }
    wait_until("the archive holds the 20 events", || {
        archive_last_seq(http) >= 20
    });

    // The archive is out of reach until the raw subscriber is connected.
    gate.set(false);
    let d = Broker::start_with_db("cu-down", &args, db);
    let mut raw = RawSubscriber::connect(loopback(d.broadcast));
    d.proc.log.wait_for("the raw subscriber", |l| {
        l.contains("subscriber 127.0.0.1:") && l.contains(" connected")
    });
    gate.set(true);
    let ivorn_of = |bytes: &[u8]| -> String {
        let text = String::from_utf8_lossy(bytes);
        let at = text.find("ivorn=").unwrap() + 7;
        text[at..].split(['\'', '"']).next().unwrap().to_owned()
    };
    let mut got: Vec<String> = (0..20).map(|_| ivorn_of(&raw.next_event())).collect();
    // In the archive's order, which is the upstream's order of acceptance (the handler pool
    // queues batches for the archive in the order its workers take them).
    assert_eq!(got, missed, "the missed events, in order, each once");

    subscribers_connected(&b, 2);
    for i in 1..=3 {
        submit(b.receive, &format!("ivo://vtp.test/author#downlive{i}"));
    }
    for _ in 0..3 {
        got.push(ivorn_of(&raw.next_event()));
    }
    let last = archive_last_seq(http);
    wait_until("the position reaches the archive's newest", || {
        position(&state).is_some_and(|p| p >= last)
    });
    // Nothing was forwarded twice: the next event the subscriber gets is the marker.
    submit(b.receive, "ivo://vtp.test/author#marker");
    got.push(ivorn_of(&raw.next_event()));
    assert_eq!(
        &got[20..],
        [
            "ivo://vtp.test/author#downlive1",
            "ivo://vtp.test/author#downlive2",
            "ivo://vtp.test/author#downlive3",
            "ivo://vtp.test/author#marker",
        ]
    );
}

/// An HTTP server answering each connection with the next of `answers` (then `rest` forever),
/// closing after each. An answer of `None` is an endless 70 MiB body.
fn scripted(answers: Vec<Option<String>>, rest: String) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut answers = answers.into_iter();
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && c.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            match answers.next().unwrap_or(Some(rest.clone())) {
                Some(text) => {
                    let _ = c.write_all(text.as_bytes());
                }
                None => {
                    let len = 70usize << 20;
                    let _ = write!(
                        c,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                         Content-Length: {len}\r\nConnection: close\r\n\r\n"
                    );
                    let chunk = vec![b' '; 1 << 20];
                    for _ in 0..70 {
                        if c.write_all(&chunk).is_err() {
                            break;
                        }
                    }
                }
            }
        }
    });
    port
}

fn answer(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn errors_and_gaps_are_logged_and_retried_never_fatal() {
    use base64::Engine as _;
    let payload = base64::engine::general_purpose::STANDARD
        .encode(event_xml("ivo://vtp.test/author#after-gap"));
    let page = format!(
        r#"{{"events":[{{"seq":50,"ivorn":"ivo://vtp.test/author#after-gap","payload":"{payload}"}}],"next_after":50,"first_seq":50,"last_seq":50}}"#
    );
    let empty = r#"{"events":[],"next_after":null,"first_seq":50,"last_seq":50}"#;
    let port = scripted(
        vec![
            Some(answer(
                "500 Internal Server Error",
                r#"{"error":"database is locked"}"#,
            )),
            Some(answer("200 OK", r#"{"events": [{"seq": 1"#)),
            None,
            Some(answer("200 OK", &page)),
        ],
        answer("200 OK", empty),
    );
    let url = format!("http://127.0.0.1:{port}");
    let (db, saved) = (TempDir::new("cu-edb"), TempDir::new("cu-esaved"));
    let state = vtp_host::catchup::state_path(db.path(), &url);
    std::fs::write(&state, "after 10\n").unwrap();
    // No VTP upstream there: catch-up runs at start all the same.
    let nobody = TcpListener::bind("127.0.0.1:0").unwrap();
    let vtp_port = nobody.local_addr().unwrap().port();
    drop(nobody);
    let l = listen_with(vtp_port, &url, &db, &saved, &["--http", "127.0.0.1:0"]);
    let metrics_port = http_port(&l.log);
    l.log.wait_for("the HTTP error", |l| {
        l.contains("HTTP 500: database is locked") && l.contains("retrying in")
    });
    l.log.wait_for("the malformed answer", |l| {
        l.contains("malformed answer: not an events page")
    });
    l.log
        .wait_for("the oversize answer", |l| l.contains("larger than 64 MiB"));
    l.log.wait_for("the gap", |l| {
        l.contains("gap: events seq 11..=49 (39) are no longer in the archive")
    });
    l.log.wait_for("the event after the gap", |l| {
        l.starts_with("{\"ivorn\":") && l.contains("after-gap")
    });
    wait_until("the position past the gap", || position(&state) == Some(50));
    let file = saved.path().join("ivo__vtp.test_authoraftergap");
    wait_until("the saved event", || file.exists());
    let series = [
        format!("vtp_catchup_gap_events_total{{url=\"{url}\"}} 39"),
        format!("vtp_catchup_gaps_total{{url=\"{url}\"}} 1"),
        format!("vtp_catchup_errors_total{{url=\"{url}\"}} 3"),
        format!("vtp_catchup_events_total{{url=\"{url}\"}} 1"),
        format!("vtp_catchup_position{{url=\"{url}\"}} 50"),
    ];
    // The position gauge follows the state file's write (CI once read 10 just after the file
    // said 50): wait for the metrics too.
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, metrics) = http_get(metrics_port, "/metrics");
        assert_eq!(status, 200);
        let missing: Vec<&String> = series.iter().filter(|s| !metrics.contains(*s)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{missing:?} in:\n{metrics}");
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

#[test]
fn bad_catch_up_flags_are_refused_with_what_to_do() {
    let run = |args: &[&str]| {
        let out = Command::new(VTP).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} refused");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run(&["listen", "127.0.0.1:1", "--catch-up", "http://127.0.0.1:2"]);
    assert!(e.contains("--catch-up needs --eventdb DIR"), "{e}");
    let db = TempDir::new("cu-flags");
    let d = db.path().to_str().unwrap();
    let e = run(&[
        "listen",
        "127.0.0.1:1",
        "--eventdb",
        d,
        "--catch-up",
        "http://127.0.0.1:2",
        "--filter",
        "//Who",
    ]);
    assert!(e.contains("cannot be combined with --filter"), "{e}");
    let e = run(&[
        "listen",
        "127.0.0.1:1",
        "--eventdb",
        d,
        "--catch-up",
        "127.0.0.1:2",
    ]);
    assert!(e.contains("is not a URL"), "{e}");
    let two = [
        "broker",
        "--eventdb",
        d,
        "--subscribe",
        "127.0.0.1:1",
        "--subscribe",
        "127.0.0.1:3",
    ];
    let e = run(&[&two[..], &["--catch-up", "http://127.0.0.1:2"]].concat());
    assert!(e.contains("say which one it is for"), "{e}");
    let e = run(&[&two[..], &["--catch-up", "127.0.0.1:9=http://127.0.0.1:2"]].concat());
    assert!(e.contains("is not an upstream"), "{e}");
}

/// An `https://` archive (the upstream's API behind stunnel, with a test CA's certificate) is
/// read when `--tls-ca` names that CA, and refused (logged, retried) without it: the default
/// roots do not know a private CA.
#[test]
fn an_https_archive_is_verified_against_tls_ca() {
    let (b, http) = upstream("cu-https");
    let certs = peers::Certs::new("cu-https-certs");
    let tunnel = peers::Stunnel::server(
        "cu-https-tls",
        http,
        &certs.path("server.pem"),
        &certs.path("server.key"),
    );
    for i in 0..3 {
        submit(b.receive, &format!("ivo://vtp.test/author#https-{i}"));
    }
    wait_until("3 events archived", || archive_last_seq(http) >= 3);
    let url = format!("https://localhost:{}", tunnel.port);

    // Without --tls-ca: the certificate is not trusted; logged and retried, never fatal.
    let db = TempDir::new("cu-https-db0");
    let saved = TempDir::new("cu-https-saved0");
    let untrusted = listen_with(b.broadcast, &url, &db, &saved, &["--catch-up-start", "all"]);
    untrusted.log.wait_for("the refused certificate", |l| {
        l.contains("catch-up") && l.to_lowercase().contains("certificate")
    });
    drop(untrusted);

    // With it: the three events.
    let db = TempDir::new("cu-https-db");
    let saved = TempDir::new("cu-https-saved");
    let trusted = listen_with(
        b.broadcast,
        &url,
        &db,
        &saved,
        &["--catch-up-start", "all", "--tls-ca", &certs.arg("ca.pem")],
    );
    wait_until("3 events caught up over https", || {
        (0..3).all(|i| {
            handled(&trusted.log).contains_key(&format!("ivo://vtp.test/author#https-{i}"))
        })
    });
}
