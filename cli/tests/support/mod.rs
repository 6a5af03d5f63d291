//! Helpers for tests that run the real `vtp` binary on loopback with ephemeral ports (the
//! process, log and frame helpers are `vtp-testkit`'s, the raw peers `vtp_host::testing`'s).
//!
//! Waiting is always on something observable (a log line, bytes on a socket) with a bounded
//! deadline, never a fixed sleep.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;

// Each test binary uses its own subset.
#[allow(unused_imports)]
pub use vtp_host::testing::RawSubscriber;
#[allow(unused_imports)]
pub use vtp_testkit::{Log, Proc, TempDir, WAIT, loopback, read_frame, voevent, write_frame};

pub const VTP: &str = env!("CARGO_BIN_EXE_vtp");
/// Every runtime the binary is built with; socket tests run on each.
pub const RUNTIMES: &[&str] = &["tokio", "smol", "mio"];

/// A `vtp broker` on 127.0.0.1 with ephemeral ports.
pub struct Broker {
    pub proc: Proc,
    pub receive: u16,
    pub broadcast: u16,
    pub db: TempDir,
}

impl Broker {
    /// Starts a broker receiving and broadcasting on ephemeral loopback ports, plus `extra`
    /// arguments; waits until both listeners are up.
    pub fn start(name: &str, extra: &[&str]) -> Self {
        let db = TempDir::new(name);
        Self::start_with_db(name, extra, db)
    }

    pub fn start_with_db(name: &str, extra: &[&str], db: TempDir) -> Self {
        let plain = ["--receive", "127.0.0.1:0", "--broadcast", "127.0.0.1:0"];
        Self::start_listening(name, &[&plain[..], extra].concat(), db)
    }

    /// Starts a broker with exactly the listeners in `args` (one --receive and one --broadcast,
    /// plain or TLS, whose ports are read from the log) and the other arguments there.
    pub fn start_listening(name: &str, args: &[&str], db: TempDir) -> Self {
        let mut cmd = Command::new(VTP);
        cmd.args(["broker", "--local-ivo", &format!("ivo://vtp.test/{name}")])
            .arg("--eventdb")
            .arg(db.path())
            .args(args);
        Self::spawn(name, cmd, db)
    }

    /// Runs `cmd`, a broker receiving and broadcasting (its event database in `db`); waits
    /// until both listeners are up.
    pub fn spawn(name: &str, cmd: Command, db: TempDir) -> Self {
        let proc = Proc::spawn(name, cmd);
        let port = |what: &str| -> u16 {
            let addr = proc.log.wait_after(&format!("listening for {what} on"));
            addr.rsplit(':').next().unwrap().trim().parse().unwrap()
        };
        let receive = port("authors");
        let broadcast = port("subscribers");
        Self {
            proc,
            receive,
            broadcast,
            db,
        }
    }
}

/// A log line saying a subscriber left or was dropped (it names the subscriber's address).
pub fn subscriber_down(l: &str) -> bool {
    l.contains("subscriber ") && (l.contains(" disconnected") || l.contains(" dropped"))
}

/// A log line saying a subscriber or an upstream connection ended.
pub fn peer_down(l: &str) -> bool {
    subscriber_down(l) || (l.contains("upstream ") && l.contains(" lost after "))
}

/// A minimal VOEvent 2.0 document by `ivo://vtp.test/author`.
pub fn event_xml(ivorn: &str) -> Vec<u8> {
    voevent(ivorn, "ivo://vtp.test/author")
}

/// Writes `event_xml(ivorn)` to `dir/name`; returns the path and the bytes.
pub fn write_event(dir: &TempDir, name: &str, ivorn: &str) -> (PathBuf, Vec<u8>) {
    let bytes = event_xml(ivorn);
    let p = dir.path().join(name);
    std::fs::write(&p, &bytes).unwrap();
    (p, bytes)
}

/// `vtp send 127.0.0.1:PORT FILE EXTRA...`: its exit code and standard error.
pub fn vtp_send(port: u16, file: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(VTP)
        .args(["send", &format!("127.0.0.1:{port}")])
        .arg(file)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`vtp_send`] that must be acked (exit 0); the test fails with its standard error if not.
pub fn vtp_send_ok(port: u16, file: &Path) {
    let (code, err) = vtp_send(port, file, &[]);
    assert_eq!(code, Some(0), "vtp send {}: {err}", file.display());
}

/// Submits `payload` over raw TCP and returns the reply's role and Result text.
pub fn submit_raw(port: u16, payload: &[u8]) -> (String, Option<String>) {
    let s = TcpStream::connect(loopback(port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    vtp_host::testing::submit(s, payload)
}

/// The HTTP port of a process that logged "HTTP endpoint on http://127.0.0.1:PORT: ...".
pub fn http_port(log: &Log) -> u16 {
    let line = log.wait_for("the HTTP endpoint", |l| {
        l.contains("HTTP endpoint on http://")
    });
    let addr = line.split("http://127.0.0.1:").nth(1).unwrap();
    let digits: String = addr.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap()
}

/// `GET path` on 127.0.0.1:port (HTTP/1.0: the answer ends with the connection): the status
/// and the body.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(loopback(port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    (status, body.unwrap_or_default())
}

/// The IVORNs an archive holds (`GET /api/events`, paged), in sequence order.
pub fn archived_ivorns(port: u16) -> Vec<String> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let (status, body) = http_get(port, &format!("/api/events?after={after}&limit=1000"));
        assert_eq!(status, 200, "GET /api/events: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let events = v["events"].as_array().unwrap();
        out.extend(
            events
                .iter()
                .map(|e| e["ivorn"].as_str().unwrap().to_owned()),
        );
        match v["next_after"].as_u64() {
            Some(n) if !events.is_empty() => after = n,
            _ => return out,
        }
    }
}

/// A broker on `runtime` configured by `dir/vtp.toml` (written from `text` first) alone.
pub fn start_configured(name: &str, runtime: &str, dir: &TempDir, text: &str) -> Broker {
    let file = dir.path().join("vtp.toml");
    std::fs::write(&file, text).unwrap();
    let db = TempDir::new(&format!("{name}-db"));
    let mut cmd = Command::new(VTP);
    cmd.args(["broker", "--runtime", runtime, "--config"])
        .arg(&file)
        .arg("--eventdb")
        .arg(db.path());
    Broker::spawn(name, cmd, db)
}

/// Rewrites the configuration file, sends SIGHUP, and waits for the `n`th reload to finish
/// (applied, or refused: `refused`).
pub fn reload_config(b: &Broker, dir: &TempDir, text: &str, n: usize, refused: bool) {
    std::fs::write(dir.path().join("vtp.toml"), text).unwrap();
    b.proc.signal("HUP");
    if refused {
        b.proc.log.wait_count("the reload refused", n, |l| {
            l.contains("reload of") && l.contains("refused")
        });
    } else {
        b.proc.log.wait_count("the reload done", n, |l| {
            l.contains("configuration reloaded from")
        });
    }
}
