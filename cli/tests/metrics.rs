//! `--http`: /metrics, /healthz and /status scraped from a running broker, on every runtime,
//! while events flow; the values checked against what was sent. Bad requests get a 4xx and
//! the broker keeps serving; a store whose commits fail turns /healthz to 503.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;
use vtp_core::message;

/// Sends `request` as is and returns the status code (0 if no response came) and the body.
fn http(port: u16, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(loopback(port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    // The server closes after each response; a reset after it is fine.
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn get(port: u16, path: &str) -> (u16, String) {
    http(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes(),
    )
}

/// The value of one series (`name` or `name{labels}`) in a Prometheus text body.
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}

/// Scrapes /metrics until `ok` holds for the body (bounded by [`WAIT`]); returns that body.
fn scrape_until(port: u16, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = get(port, "/metrics");
        assert_eq!(status, 200, "{body}");
        if ok(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "waiting for {what}; last scrape:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn submit(port: u16, payload: &[u8]) -> String {
    submit_raw(port, payload).0
}

/// Submits `payload`; the receipt's role and Result, or `None` if the connection ends first.
fn try_submit(port: u16, payload: &[u8]) -> Option<(String, Option<String>)> {
    let mut s = TcpStream::connect(loopback(port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write_frame(&mut s, payload);
    let reply = read_frame(&mut s).ok()?;
    match message::parse(&reply, &Default::default()).unwrap() {
        message::Message::Transport(t) => {
            Some((t.role.as_str().to_owned(), t.result.map(|r| r.into_owned())))
        }
        other => panic!("expected a receipt, got {other:?}"),
    }
}

#[test]
fn metrics_health_and_status_follow_what_was_sent_on_every_runtime() {
    for rt in RUNTIMES {
        let up = Broker::start(
            &format!("up-{rt}"),
            &["--broadcast-test-interval", "0", "--runtime", rt],
        );
        let b = Broker::start(
            &format!("metrics-{rt}"),
            &[
                "--broadcast-test-interval",
                "0",
                "--runtime",
                rt,
                "--http",
                "127.0.0.1:0",
                "--subscribe",
                &format!("127.0.0.1:{}", up.broadcast),
            ],
        );
        let port = http_port(&b.proc.log);
        let mut subs: Vec<RawSubscriber> = (0..3)
            .map(|_| RawSubscriber::connect(loopback(b.broadcast)))
            .collect();
        // One subscriber sets a filter (every test event matches it).
        let filter = "//AuthorIVORN[contains(., 'vtp.test')]";
        let reply = message::build_authenticate_reply(
            &format!("ivo://vtp.test/metrics-{rt}"),
            Some("ivo://vtp.test/reader"),
            "2026-01-01T00:00:00Z",
            &[filter],
        );
        subs[0].stream.write_all(&reply).unwrap();
        let upstream = format!("vtp_upstream_up{{upstream=\"127.0.0.1:{}\"}}", up.broadcast);
        scrape_until(port, "3 subscribers and the upstream up", |m| {
            value(m, "vtp_subscribers") == Some(3.0) && value(m, &upstream) == Some(1.0)
        });

        // From authors: 2 new, 1 duplicate, 3 naked; from the upstream: 1 new.
        assert_eq!(submit(b.receive, &event_xml("ivo://vtp.test/a#1")), "ack");
        assert_eq!(submit(b.receive, &event_xml("ivo://vtp.test/a#2")), "ack");
        assert_eq!(submit(b.receive, &event_xml("ivo://vtp.test/a#1")), "ack");
        assert_eq!(submit(b.receive, &event_xml("ivo://bad id#1")), "nak");
        assert_eq!(submit(b.receive, b"<not-xml"), "nak");
        let no_who = b"<voe:VOEvent xmlns:voe=\"http://www.ivoa.net/xml/VOEvent/v2.0\" \
                       ivorn=\"ivo://vtp.test/a#3\" role=\"observation\" version=\"2.0\">\
                       <Oops/></voe:VOEvent>";
        assert_eq!(submit(b.receive, no_who), "nak");
        assert_eq!(submit(up.receive, &event_xml("ivo://vtp.test/u#1")), "ack");
        for s in &mut subs {
            for _ in 0..3 {
                s.next_event();
            }
        }

        // Scraped while more events flow: the counts only grow, and end where they must.
        let flow = std::thread::spawn({
            let receive = b.receive;
            move || {
                for i in 0..20 {
                    let ivorn = format!("ivo://vtp.test/flow#{i}");
                    assert_eq!(submit(receive, &event_xml(&ivorn)), "ack");
                }
            }
        });
        let mut last = 0.0;
        while !flow.is_finished() {
            let (_, m) = get(port, "/metrics");
            let accepted = value(&m, "vtp_events_accepted_total{source=\"author\"}").unwrap();
            assert!(accepted >= last, "{accepted} after {last}");
            last = accepted;
        }
        flow.join().unwrap();
        for s in &mut subs {
            for _ in 0..20 {
                s.next_event();
            }
        }
        let m = scrape_until(port, "every forward counted", |m| {
            value(m, "vtp_deliveries_total") == Some(3.0 * 23.0)
        });
        for (series, want) in [
            ("vtp_events_received_total{source=\"author\"}", 26.0),
            ("vtp_events_received_total{source=\"upstream\"}", 1.0),
            ("vtp_events_accepted_total{source=\"author\"}", 22.0),
            ("vtp_events_accepted_total{source=\"upstream\"}", 1.0),
            ("vtp_events_duplicate_total{source=\"author\"}", 1.0),
            ("vtp_naks_total{reason=\"bad_ivorn\"}", 1.0),
            ("vtp_naks_total{reason=\"unparsable\"}", 1.0),
            ("vtp_naks_total{reason=\"schema\"}", 1.0),
            ("vtp_naks_total{reason=\"store_unavailable\"}", 0.0),
            ("vtp_subscribers", 3.0),
            ("vtp_connections{role=\"subscriber\"}", 3.0),
            ("vtp_connections{role=\"upstream\"}", 1.0),
            (upstream.as_str(), 1.0),
            ("vtp_store_healthy", 1.0),
        ] {
            assert_eq!(value(&m, series), Some(want), "{series} in\n{m}");
        }
        assert!(
            value(&m, "vtp_filter_evaluations_total").unwrap() >= 23.0,
            "{m}"
        );
        assert!(
            value(&m, "vtp_store_commit_seconds_count").unwrap() >= 1.0,
            "{m}"
        );
        assert_eq!(
            value(&m, "vtp_store_commit_seconds_bucket{le=\"+Inf\"}"),
            value(&m, "vtp_store_commit_seconds_count"),
            "{m}"
        );
        assert!(
            value(&m, "process_resident_memory_bytes").unwrap() > 1e6,
            "{m}"
        );
        let last_event = value(&m, "vtp_last_event_timestamp_seconds").unwrap();
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!((unix - last_event).abs() < 60.0, "{last_event} vs {unix}");

        assert_eq!(get(port, "/healthz"), (200, "ok\n".to_owned()));
        let (status, body) = get(port, "/status");
        assert_eq!(status, 200);
        let s: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(s["role"], "broker");
        assert_eq!(s["healthy"], true);
        assert_eq!(s["subscribers"]["count"], 3);
        let list = s["subscribers"]["list"].as_array().unwrap();
        assert_eq!(list.len(), 3);
        assert!(
            list.iter().all(|x| x["address"]
                .as_str()
                .is_some_and(|a| a.starts_with("127.0.0.1:"))),
            "{body}"
        );
        assert!(
            list.iter().all(|x| x["connected_since"].is_string()),
            "{body}"
        );
        assert_eq!(list[0]["filters"][0], filter, "{body}");
        assert_eq!(s["upstreams"][0]["state"], "up", "{body}");
        assert!(s["upstreams"][0]["last_event"].is_string(), "{body}");
        assert_eq!(s["counters"]["events_accepted"]["author"], 22);
        assert_eq!(s["counters"]["naks"]["schema"], 1);
        assert_eq!(s["counters"]["deliveries"], 69);
        let listeners = s["listeners"].as_array().unwrap();
        assert!(
            listeners
                .iter()
                .any(|l| l["address"] == format!("127.0.0.1:{}", b.broadcast)),
            "{body}"
        );

        // Bad requests: a clear 4xx each, and the broker keeps serving.
        let (status, _) = http(
            port,
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        );
        assert_eq!(status, 405);
        assert_eq!(get(port, "/nope").0, 404);
        assert_eq!(get(port, &format!("/{}", "a".repeat(4000))).0, 414);
        let (status, _) = http(
            port,
            format!(
                "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "b".repeat(20_000)
            )
            .as_bytes(),
        );
        assert!(
            status == 431 || status == 0,
            "an oversized head is refused (431, or a reset before it is read): {status}"
        );
        assert_eq!(http(port, b"NOT HTTP AT ALL\r\n\r\n").0, 400);
        // A client that never finishes its request holds one connection, not the server.
        let _slow = {
            let mut s = TcpStream::connect(loopback(port)).unwrap();
            s.write_all(b"GET /metr").unwrap();
            s
        };
        assert_eq!(get(port, "/healthz").0, 200);
        assert_eq!(
            submit(b.receive, &event_xml("ivo://vtp.test/a#after")),
            "ack"
        );
        for s in &mut subs {
            s.next_event();
        }
        drop(subs);
        scrape_until(port, "the subscribers gone", |m| {
            value(m, "vtp_subscribers") == Some(0.0)
        });
    }
}

#[test]
fn vtp_listen_serves_the_endpoint_too_with_its_upstream() {
    let up = Broker::start("listen-up", &["--broadcast-test-interval", "0"]);
    let mut cmd = Command::new(VTP);
    cmd.args([
        "listen",
        &format!("127.0.0.1:{}", up.broadcast),
        "--http",
        "127.0.0.1:0",
    ]);
    let listener = Proc::spawn("listen", cmd);
    let port = http_port(&listener.log);
    let upstream = format!("vtp_upstream_up{{upstream=\"127.0.0.1:{}\"}}", up.broadcast);
    scrape_until(port, "the upstream up", |m| {
        value(m, &upstream) == Some(1.0)
    });
    assert_eq!(submit(up.receive, &event_xml("ivo://vtp.test/l#1")), "ack");
    scrape_until(port, "the event counted", |m| {
        value(m, "vtp_events_accepted_total{source=\"upstream\"}") == Some(1.0)
            && value(m, "vtp_handler_deliveries_total") == Some(1.0)
    });
    let s: serde_json::Value = serde_json::from_str(&get(port, "/status").1).unwrap();
    assert_eq!(s["role"], "listener");
    assert_eq!(s["upstreams"][0]["state"], "up");
    assert_eq!(get(port, "/healthz").0, 200);
}

#[test]
fn the_stats_line_counts_the_interval() {
    let b = Broker::start(
        "stats",
        &["--broadcast-test-interval", "0", "--stats-interval", "2"],
    );
    let mut sub = RawSubscriber::connect(loopback(b.broadcast));
    // In step with the ticker: both submissions fall in the next interval.
    b.proc
        .log
        .wait_for("a first stats line", |l| l.contains("stats (last 2 s)"));
    assert_eq!(submit(b.receive, &event_xml("ivo://vtp.test/s#1")), "ack");
    assert_eq!(submit(b.receive, &event_xml("ivo://vtp.test/s#1")), "ack");
    sub.next_event();
    let line = b.proc.log.wait_for("a stats line with the events", |l| {
        l.contains("stats (last 2 s): 2 events in")
    });
    assert!(
        line.contains(
            "2 events in (2 from authors, 0 from upstreams), 1 accepted, 1 forwarded, 0 naked, \
             1 duplicates; 1 subscribers, 0 of 0 upstreams up"
        ),
        "{line}"
    );
}

/// A store whose file cannot grow (a file-size limit just past its preallocated space, with
/// SIGXFSZ ignored so the write fails with EFBIG instead of killing the broker): once its
/// commits fail, /healthz says 503 and why, and new events are naked as `store_unavailable`.
#[test]
fn healthz_is_503_with_the_reason_while_the_store_cannot_commit() {
    use vtp_host::store::{SeenStore, StoreOp};
    let db = TempDir::new("full-store");
    // Fill the preallocated log but for a few records, with live entries.
    let mut store = SeenStore::open(db.path()).unwrap();
    let log = db.path().join("vtp-seen.log");
    let len = std::fs::metadata(&log).unwrap().len();
    let room = 3;
    let records = (len - 16) / 48 - room;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ops: Vec<StoreOp> = (0..records)
        .map(|i| {
            let mut key = [0x5a; 32];
            key[..8].copy_from_slice(&i.to_be_bytes());
            StoreOp::Persist(vtp_core::SeenRecord {
                key: vtp_core::EventKey(key),
                unix_secs: now,
            })
        })
        .collect();
    store.apply(&ops).unwrap();
    drop(store);
    assert_eq!(std::fs::metadata(&log).unwrap().len(), len, "not grown");
    // `ulimit -f` counts 512-byte blocks.
    let blocks = len.div_ceil(512);
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {blocks} && exec \"$0\" \"$@\""
        ))
        .arg(VTP)
        .args([
            "broker",
            "--local-ivo",
            "ivo://vtp.test/full",
            "--receive",
            "127.0.0.1:0",
            "--broadcast",
            "127.0.0.1:0",
            "--broadcast-test-interval",
            "0",
            "--receive-timeout",
            "2",
            "--http",
            "127.0.0.1:0",
            "--eventdb",
        ])
        .arg(db.path());
    let b = Broker::spawn("full", cmd, db);
    let port = http_port(&b.proc.log);
    assert_eq!(get(port, "/healthz").0, 200);
    // Each new event takes a record; past the limit a commit fails and later events are
    // naked at once.
    let mut naked = false;
    for i in 0..64 {
        // The event whose commit fails gets no receipt (its author's deadline closes it).
        let Some((role, result)) =
            try_submit(b.receive, &event_xml(&format!("ivo://vtp.test/f#{i}")))
        else {
            continue;
        };
        if role == "nak" {
            assert!(
                result
                    .as_deref()
                    .unwrap_or("")
                    .contains("storage unavailable"),
                "{result:?}"
            );
            naked = true;
            break;
        }
    }
    assert!(naked, "the store never failed:\n{}", b.proc.log.text());
    let (status, body) = get(port, "/healthz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("seen-index store commits failing"), "{body}");
    let m = scrape_until(port, "the nak counted", |m| {
        value(m, "vtp_naks_total{reason=\"store_unavailable\"}") >= Some(1.0)
    });
    assert_eq!(value(&m, "vtp_store_healthy"), Some(0.0), "{m}");
    assert!(
        value(&m, "vtp_store_commit_failures_total").unwrap() >= 1.0,
        "{m}"
    );
    let s: serde_json::Value = serde_json::from_str(&get(port, "/status").1).unwrap();
    assert_eq!(s["healthy"], false);
    assert_eq!(s["store"]["healthy"], false);
}
