//! What an operator reads at INFO, on every runtime: the start-up banner; each peer named with
//! its address and port (never Rust debug output); every accepted, naked and duplicate
//! submission with its author; subscribers and upstreams coming and going with how long they
//! were connected, their events and why they left; why a reconnect happens; a failing `--cmd`
//! with its stderr. And `--log-format json`: one JSON object per line.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use support::*;

/// Submits `payload` from a fresh connection; returns the receipt's role and the address the
/// broker saw it from.
fn submit_from(port: u16, payload: &[u8]) -> (String, SocketAddr) {
    let s = TcpStream::connect(loopback(port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let me = s.local_addr().unwrap();
    (vtp_host::testing::submit(s, payload).0, me)
}

/// An executable script in `dir` that reports a problem on stderr (with a control character)
/// and fails.
fn failing_script(dir: &TempDir) -> std::path::PathBuf {
    let path = dir.path().join("alert.sh");
    std::fs::write(
        &path,
        "#!/bin/sh\ncat > /dev/null\necho 'cannot reach the pager' >&2\n\
         printf 'retry \\033[1mlater\\n' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn the_info_log_names_every_peer_with_its_port_and_says_why_it_left() {
    for rt in RUNTIMES {
        let files = TempDir::new("logs-files");
        let script = failing_script(&files);
        let script = script.to_str().unwrap();
        // Without -v: everything below is at INFO or WARN.
        let a = Broker::start(
            &format!("logs-a-{rt}"),
            &[
                "--runtime",
                rt,
                "--broadcast-test-interval",
                "0",
                "--cmd",
                script,
            ],
        );
        // Kept past the broker's end, to check it all at the end.
        let a_log = a.proc.log.clone();
        let log = &a_log;

        // The banner.
        let version = env!("CARGO_PKG_VERSION");
        log.wait_for("the banner", |l| {
            l.contains(&format!(
                "INFO vtp {version} starting (runtime {rt}): local IVO ivo://vtp.test/logs-a-{rt}"
            ))
        });
        for line in [
            "authors: plain 127.0.0.1:0; whitelist everyone; at most 32 connections per address",
            "subscribers: plain 127.0.0.1:0; whitelist everyone; at most 64 connections per address",
            &format!(
                "event database {}, durability before-reply",
                a.db.path().display()
            ),
            "upstreams: none",
            &format!("handlers: cmd {script} (timeout 30 s); handler spool up to 256 MiB"),
            "filters sent upstream: none",
        ] {
            log.wait_for(line, |l| l.contains(" INFO ") && l.contains(line));
        }

        // A subscriber, named with its port.
        let mut sub = RawSubscriber::connect(loopback(a.broadcast));
        let sub_addr = sub.stream.local_addr().unwrap();
        log.wait_for("the subscriber", |l| {
            l.contains(" INFO ") && l.contains(&format!("subscriber {sub_addr} connected conn=#"))
        });

        // Accepted, duplicate and naked submissions, each with its author's port.
        let event = event_xml("ivo://vtp.test/author#logs-1");
        let (role, first) = submit_from(a.receive, &event);
        assert_eq!(role, "ack");
        log.wait_for("the accepted event", |l| {
            l.contains(" INFO ")
                && l.contains(&format!(
                    "accepted event ivo://vtp.test/author#logs-1 from author {first}"
                ))
        });
        let (role, again) = submit_from(a.receive, &event);
        assert_eq!(role, "ack");
        log.wait_for("the duplicate", |l| {
            l.contains(" INFO ")
                && l.contains(&format!(
                    "duplicate event ivo://vtp.test/author#logs-1 from author {again}"
                ))
        });
        let (role, bad) = submit_from(a.receive, &event_xml("ivo://a2#x"));
        assert_eq!(role, "nak");
        log.wait_for("the nak", |l| {
            l.contains(" INFO ")
                && l.contains(&format!(
                    "nak sent to author {bad}: Event rejected: Invalid IVOID: ivo://a2#x"
                ))
        });

        // The handler failed: its stderr's tail, escaped, on the one WARN line.
        log.wait_for("the failed --cmd", |l| {
            l.contains(" WARN ")
                && l.contains(&format!("`{script}` returned non-zero (3); stderr: "))
                && l.contains(r"cannot reach the pager\nretry \u{1b}[1mlater")
        });

        // The subscriber leaves: how long it stayed, what it got, why.
        assert_eq!(sub.next_event(), event);
        drop(sub);
        let line = log.wait_for("the subscriber gone", |l| {
            l.contains(&format!("subscriber {sub_addr} disconnected after "))
        });
        assert!(
            line.contains(" INFO ")
                && line.contains(", 1 events sent: closed by peer")
                && line.contains("class=closed"),
            "{rt}: {line}"
        );

        // A relay subscribes to it: the upstream's address, its events, its loss and why it
        // reconnects.
        let upstream = format!("127.0.0.1:{}", a.broadcast);
        let b = Broker::start(
            &format!("logs-b-{rt}"),
            &[
                "--runtime",
                rt,
                "--broadcast-test-interval",
                "0",
                "--subscribe",
                &upstream,
            ],
        );
        b.proc.log.wait_for("upstreams in the banner", |l| {
            l.contains(&format!("upstreams: {upstream}"))
        });
        b.proc.log.wait_for("the upstream up", |l| {
            l.contains(" INFO ") && l.contains(&format!("connected to upstream {upstream} conn=#"))
        });
        log.wait_for("the relay's authenticate reply", |l| {
            l.contains("subscriber filters set")
        });
        let (role, _) = submit_from(a.receive, &event_xml("ivo://vtp.test/author#logs-2"));
        assert_eq!(role, "ack");
        b.proc.log.wait_for("the relayed event", |l| {
            l.contains(&format!(
                "accepted event ivo://vtp.test/author#logs-2 from upstream {upstream}"
            ))
        });
        drop(a);
        let line = b.proc.log.wait_for("the upstream lost", |l| {
            l.contains(&format!("upstream {upstream} lost after "))
        });
        assert!(
            line.contains(" WARN ")
                && line.contains(", 1 events received: closed by peer")
                && line.contains("class=closed"),
            "{rt}: {line}"
        );
        b.proc.log.wait_for("the reconnect after the loss", |l| {
            l.contains(&format!("reconnecting to {upstream} in "))
                && l.contains(" s: closed by peer")
                && l.contains("class=closed")
        });
        b.proc.log.wait_for("the refused reconnect", |l| {
            l.contains(" INFO ")
                && l.contains(&format!("reconnecting to {upstream} in "))
                && l.contains(" s: connection refused")
                && l.contains("class=refused")
        });
        for text in [a_log.text(), b.proc.log.text()] {
            assert_no_debug_output(rt, &text);
        }
    }
}

/// Rust debug output of the core's types (`Receive`, `Ip(127.0.0.1)`, `role=Feed`) has no
/// place in a log line.
fn assert_no_debug_output(rt: &str, text: &str) {
    for debug in [
        "role=",
        "listener=",
        "peer=",
        "Ip(",
        "Tcp(",
        "Some(",
        "Feed",
        "Intake",
    ] {
        assert!(!text.contains(debug), "{rt}: {debug:?} in the log:\n{text}");
    }
}

#[test]
fn vtp_listen_logs_each_connection_to_its_broker_and_why_it_reconnects() {
    for rt in RUNTIMES {
        // Nobody listens on the first broker's port; the second accepts and hangs up, twice.
        let dead = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let broker = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = broker.local_addr().unwrap();
        let mut cmd = Command::new(VTP);
        cmd.args([
            "listen",
            &dead.to_string(),
            &addr.to_string(),
            "--runtime",
            rt,
        ]);
        let listen = Proc::spawn(&format!("listen-{rt}"), cmd);
        for round in 1..=2 {
            listen.log.wait_count("the failover", round, |l| {
                l.contains(" INFO ")
                    && l.contains(&format!("reconnecting to {addr} in "))
                    && l.contains(&format!(" s (failover from {dead}): connection refused"))
                    && l.contains("class=refused")
            });
            let (s, _) = broker.accept().unwrap();
            listen
                .log
                .wait_count("connected to its broker", round, |l| {
                    l.contains(" INFO ") && l.contains(&format!("connected to upstream {addr}"))
                });
            drop(s);
            listen.log.wait_count("the reconnect", round, |l| {
                l.contains(" INFO ")
                    && l.contains(&format!("reconnecting to {dead} in "))
                    && l.contains(&format!(" s (failover from {addr}): closed by peer"))
            });
        }
        let lost = listen.log.wait_for("the loss", |l| {
            l.contains(&format!("upstream {addr} lost after "))
        });
        assert!(
            lost.contains(", 0 events received: closed by peer"),
            "{rt}: {lost}"
        );
        assert_no_debug_output(rt, &listen.log.text());
    }
}

#[test]
fn json_logs_are_one_object_per_line_with_level_and_message() {
    let db = TempDir::new("logs-json");
    let mut cmd = Command::new(VTP);
    cmd.env("VTP_LOG", "debug")
        .args(["broker", "--local-ivo", "ivo://vtp.test/json"])
        .args(["--receive", "127.0.0.1:0", "--broadcast", "127.0.0.1:0"])
        .args(["--broadcast-test-interval", "0", "--log-format", "json"])
        .arg("--eventdb")
        .arg(db.path());
    let mut proc = Proc::spawn("json", cmd);
    let port = |what: &str| -> u16 {
        let line = proc.log.wait_for(what, |l| l.contains(what));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let message = v["message"].as_str().unwrap();
        message.rsplit(':').next().unwrap().parse().unwrap()
    };
    let receive = port("listening for authors on 127.0.0.1:");
    let (role, author) = submit_from(receive, &event_xml("ivo://vtp.test/author#json"));
    assert_eq!(role, "ack");
    proc.log.wait_for("the accepted event", |l| {
        l.contains("accepted event ivo://vtp.test/author#json")
    });
    assert_eq!(proc.terminate(), Some(0));
    proc.wait_exit();
    let text = proc.log.text();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for v in &lines {
        assert!(
            v["level"].is_string() && v["message"].is_string() && v["timestamp"].is_string(),
            "{v}"
        );
    }
    let accepted = lines
        .iter()
        .find(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("accepted event"))
        })
        .unwrap();
    assert_eq!(accepted["level"], "INFO");
    assert_eq!(
        accepted["message"],
        format!("accepted event ivo://vtp.test/author#json from author {author}")
    );
    assert!(
        accepted["conn"]
            .as_str()
            .is_some_and(|c| c.starts_with('#')),
        "{accepted}"
    );
    // VTP_LOG=debug: the author's own connection, at DEBUG.
    assert!(
        lines
            .iter()
            .any(|v| v["level"] == "DEBUG" && v["message"] == format!("author {author} connected")),
        "{text}"
    );
}

#[test]
fn help_documents_vtp_log_and_the_log_format() {
    let out = Command::new(VTP).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("VTP_LOG=LEVEL"), "{help}");
    let out = Command::new(VTP)
        .args(["broker", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--log-format <FORMAT>") && help.contains("VTP_LOG=LEVEL overrides"),
        "{help}"
    );
}
