//! `--archive`: events submitted with `vtp send` to a broker with `--http` come back from the
//! archive's API with their metadata and exact bytes; a restart keeps them and the sequence
//! goes on; an address that may not subscribe gets 403 (the bearer token works); hostile
//! queries get 400/414/431 or are capped, and the broker keeps serving.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// Sends `request` as is; the status code (0 if none came), the head and the body.
fn http(port: u16, request: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(loopback(port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    // A server that answers before reading all of a huge request may reset: fine.
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(out.len());
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let body = out.get(split + 4..).unwrap_or_default().to_vec();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head, body)
}

fn get(port: u16, path: &str, extra_headers: &str) -> (u16, String, Vec<u8>) {
    http(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra_headers}\r\n").as_bytes(),
    )
}

fn get_json(port: u16, path: &str) -> (u16, Value) {
    let (status, _, body) = get(port, path, "");
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {}", String::from_utf8_lossy(&body)));
    (status, v)
}

fn http_port(log: &Log) -> u16 {
    let line = log.wait_for("the HTTP endpoint", |l| {
        l.contains("HTTP endpoint on http://")
    });
    let addr = line.split("http://127.0.0.1:").nth(1).unwrap();
    let digits: String = addr.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap()
}

/// Polls `/api/events` until it lists `n` events (bounded by [`WAIT`]).
fn wait_events(port: u16, n: usize) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, v) = get_json(port, "/api/events?include=payload");
        if status == 200 && v["events"].as_array().is_some_and(|e| e.len() >= n) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "waiting for {n} events: {status} {v}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

const GCN: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../core/tests/data/gcn_swift_bat.xml"
));

#[test]
fn events_sent_come_back_with_metadata_and_exact_bytes_across_a_restart() {
    let files = TempDir::new("archive-files");
    // A real GCN packet with a position, and two minimal events without one.
    let gcn = files.path().join("gcn.xml");
    std::fs::write(&gcn, GCN).unwrap();
    let (a1, a1_bytes) = write_event(&files, "a1.xml", "ivo://vtp.test/author#a1");
    let (a2, a2_bytes) = write_event(&files, "a2.xml", "ivo://vtp.test/author#a2");
    let args = [
        "--broadcast-test-interval",
        "0",
        "--http",
        "127.0.0.1:0",
        "--author-whitelist",
        "127.0.0.0/8",
    ];
    let mut b = Broker::start("archive-a", &args);
    let port = http_port(&b.proc.log);
    vtp_send_ok(b.receive, &gcn);
    vtp_send_ok(b.receive, &a1);
    // The same event again: a duplicate, archived once.
    vtp_send_ok(b.receive, &a1);
    let v = wait_events(port, 2);
    let events = v["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{v}");
    let g = &events[0];
    assert_eq!(g["seq"], 1);
    assert_eq!(
        g["ivorn"],
        "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_532871-729"
    );
    assert_eq!(g["role"], "observation");
    assert_eq!(g["stream"], "nasa.gsfc.gcn/SWIFT");
    assert_eq!(g["source"]["kind"], "author");
    assert!(
        g["source"]["address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{g}"
    );
    assert!(g["source"]["identity"].is_null());
    // Signatures are verified by default: this notice is unsigned.
    assert_eq!(g["signature"], "unsigned");
    assert!(g["signer"].is_null());
    assert_eq!(g["author_ivorn"], "ivo://nasa.gsfc.tan/gcn");
    assert_eq!(g["date"], "2012-09-05T11:19:43");
    assert_eq!(g["position"]["ra"], 22.413);
    assert_eq!(g["position"]["dec"], -14.6364);
    assert_eq!(g["position"]["error"], 0.05);
    assert_eq!(g["bytes"], GCN.len());
    assert_eq!(g["xml"], "/api/events/1");
    assert_eq!(g["sha256"].as_str().unwrap().len(), 64);
    assert!(g["received"].as_str().unwrap().ends_with('Z'));
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(b64.decode(g["payload"].as_str().unwrap()).unwrap(), GCN);
    assert_eq!(events[1]["seq"], 2);
    assert!(events[1]["position"].is_null());
    assert_eq!(
        b64.decode(events[1]["payload"].as_str().unwrap()).unwrap(),
        a1_bytes
    );
    assert_eq!(
        (v["first_seq"].clone(), v["last_seq"].clone()),
        (1.into(), 2.into())
    );
    assert_eq!(v["next_after"], 2);
    // Without include=payload there is none.
    let (_, v) = get_json(port, "/api/events?after=1");
    assert!(v["events"][0].get("payload").is_none(), "{v}");
    // The exact bytes, by seq and by ivorn.
    let (status, head, body) = get(port, "/api/events/1", "");
    assert_eq!(status, 200);
    assert_eq!(body, GCN);
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-type: application/xml"), "{head}");
    assert!(head.contains("x-vtp-seq: 1"), "{head}");
    assert!(head.contains("x-vtp-ivorn: ivo://nasa.gsfc.gcn/swift#bat_grb_pos_532871-729"));
    let (status, _, body) = get(port, "/api/event?ivorn=ivo://vtp.test/author%23a1", "");
    assert_eq!((status, body), (200, a1_bytes.clone()));
    assert_eq!(get(port, "/api/events/99", "").0, 404);
    // Filters.
    let (_, v) = get_json(port, "/api/events?cone=22,-14.5,1");
    assert_eq!(v["events"].as_array().unwrap().len(), 1, "{v}");
    let (_, v) = get_json(port, "/api/events?cone=200,14,1");
    assert_eq!(v["events"].as_array().unwrap().len(), 0, "{v}");
    let (_, v) = get_json(port, "/api/events?stream=vtp.test/author");
    assert_eq!(v["events"][0]["seq"], 2, "{v}");
    // The metrics count the archive.
    let (_, _, metrics) = get(port, "/metrics", "");
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(metrics.contains("vtp_archive_rows 2"), "{metrics}");

    // A restart keeps them, and the sequence goes on.
    assert_eq!(b.proc.terminate(), Some(0));
    let db = std::mem::replace(&mut b.db, TempDir::new("unused"));
    drop(b);
    let b = Broker::start_with_db("archive-b", &args, db);
    let port = http_port(&b.proc.log);
    vtp_send_ok(b.receive, &a2);
    let v = wait_events(port, 3);
    let seqs: Vec<i64> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3], "{v}");
    assert_eq!(
        b64.decode(v["events"][2]["payload"].as_str().unwrap())
            .unwrap(),
        a2_bytes
    );
    assert_eq!(get(port, "/api/events/1", "").2, GCN);
}

#[test]
fn a_client_that_may_not_subscribe_gets_403_and_the_token_works() {
    let files = TempDir::new("archive-token");
    let token = "archive-test-token-0123456789";
    let token_file = files.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let (a1, _) = write_event(&files, "a1.xml", "ivo://vtp.test/author#private");
    let b = Broker::start(
        "archive-403",
        &[
            "--broadcast-test-interval",
            "0",
            "--http",
            "127.0.0.1:0",
            // Loopback may not subscribe.
            "--subscriber-whitelist",
            "10.0.0.0/8",
            "--http-token-file",
            token_file.to_str().unwrap(),
        ],
    );
    let port = http_port(&b.proc.log);
    vtp_send_ok(b.receive, &a1);
    for path in [
        "/api/events",
        "/api/events?include=payload",
        "/api/events/1",
        "/api/event?ivorn=ivo://vtp.test/author%23private",
    ] {
        let (status, _, body) = get(port, path, "");
        assert_eq!(status, 403, "{path}");
        let text = String::from_utf8_lossy(&body);
        assert!(
            !text.contains("private") && !text.contains("VOEvent"),
            "{text}"
        );
        let (status, _, _) = get(port, path, "Authorization: Bearer wrong-token\r\n");
        assert_eq!(status, 403, "{path}");
    }
    b.proc.log.wait_for("the refusal's log line", |l| {
        l.contains("archive API: refused 127.0.0.1:")
    });
    // With the token: the event.
    let auth = format!("Authorization: Bearer {token}\r\n");
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, _, body) = get(port, "/api/events/1", &auth);
        if status == 200 {
            assert!(String::from_utf8_lossy(&body).contains("#private"));
            break;
        }
        assert_eq!(status, 404);
        assert!(Instant::now() < deadline, "the event never came");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn hostile_queries_are_refused_or_capped_and_the_broker_keeps_serving() {
    let files = TempDir::new("archive-hostile");
    let (a1, _) = write_event(&files, "a1.xml", "ivo://vtp.test/author#h1");
    let b = Broker::start(
        "archive-hostile",
        &["--broadcast-test-interval", "0", "--http", "127.0.0.1:0"],
    );
    let port = http_port(&b.proc.log);
    vtp_send_ok(b.receive, &a1);
    wait_events(port, 1);
    for (path, want) in [
        ("/api/events?foo=1", "unknown parameter \"foo\""),
        ("/api/events?limit=1&limit=1", "given twice"),
        (
            "/api/events?since=2026-13-01T00:00:00Z",
            "bad time in \"since\"",
        ),
        ("/api/events?until=tomorrow", "bad time in \"until\""),
        (
            "/api/events?cone=1,2",
            "bad cone \"1,2\": expected RA,DEC,RADIUS in degrees",
        ),
        ("/api/events?cone=1,2,-3", "bad cone"),
        ("/api/events?limit=ten", "bad limit"),
        (
            "/api/events?ivorn=x'%20OR%201=1;%20DROP%20TABLE%20events;--&role=test'--",
            "bad role",
        ),
        ("/api/events/1;DROP", "bad sequence number"),
        ("/api/event?ivorn=a&x=b", "unknown parameter \"x\""),
    ] {
        let (status, v) = get_json(port, path);
        assert_eq!(status, 400, "{path}: {v}");
        let m = v["error"].as_str().unwrap();
        assert!(m.contains(want), "{path}: {m}");
    }
    // SQL in a value is a value: nothing matches, nothing breaks.
    let (status, v) = get_json(port, "/api/events?ivorn=x'%20OR%20'1'='1");
    assert_eq!(
        (status, v["events"].as_array().unwrap().len()),
        (200, 0),
        "{v}"
    );
    // A huge limit is capped.
    let (status, v) = get_json(port, "/api/events?limit=1000000000000");
    assert_eq!(
        (status, v["events"].as_array().unwrap().len()),
        (200, 1),
        "{v}"
    );
    // 33 parameters; then 10,000 (a head over the bound).
    let many = vec!["after=1"; 33].join("&");
    let (status, v) = get_json(port, &format!("/api/events?{many}"));
    assert_eq!(status, 400, "{v}");
    let many = (0..10_000)
        .map(|i| format!("p{i}=1"))
        .collect::<Vec<_>>()
        .join("&");
    let (status, _, _) = get(port, &format!("/api/events?{many}"), "");
    assert!(matches!(status, 400 | 414 | 431), "{status}");
    // A 1 MB URL.
    let long = "a".repeat(1 << 20);
    let (status, _, _) = get(port, &format!("/api/events?ivorn={long}"), "");
    assert!(matches!(status, 0 | 400 | 414 | 431), "{status}");
    let (status, _, _) = get(port, &format!("/api/{long}"), "");
    assert!(matches!(status, 0 | 414 | 431), "{status}");
    // Still serving.
    let (status, v) = get_json(port, "/api/events");
    assert_eq!(
        (status, v["events"].as_array().unwrap().len()),
        (200, 1),
        "{v}"
    );
}
