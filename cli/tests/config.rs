//! `vtp broker --config FILE` and `vtp config check`, and SIGHUP reloading that file on every
//! runtime: a new whitelist for new connections while an open subscriber keeps receiving, a
//! broken file refused with the old configuration kept, a TLS certificate renewed on disk
//! served to new handshakes, a new log level. (Without --config, SIGHUP is logged and ignored:
//! `broker.rs`.)

#![allow(clippy::unwrap_used)]

mod support;

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;
use vtp_host::testing::connect_from;
use vtp_host::testing::tls::{Pki, submit_tls};

/// The shipped example.
fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/vtp.toml")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The settings of every broker here: loopback listeners on ephemeral ports, no test events.
fn base(name: &str) -> String {
    format!(
        "local-ivo = \"ivo://vtp.test/{name}\"\n\
         broadcast = [\"127.0.0.1:0\"]\n\
         broadcast-test-interval = 0\n"
    )
}

/// True when a connection from `from` to `port` is closed without a byte (a refusal).
fn refused(from: &str, port: u16) -> bool {
    let mut s = connect_from(ip(from), SocketAddr::new(ip("127.0.0.1"), port));
    let _ = std::io::Write::write_all(
        &mut s,
        &vtp_core::frame::encode(&event_xml("ivo://vtp.test/a#refused")).unwrap(),
    );
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(0) | Err(_))
}

fn submit_from(from: &str, port: u16, ivorn: &str) -> String {
    let s = connect_from(ip(from), SocketAddr::new(ip("127.0.0.1"), port));
    vtp_host::testing::submit(s, &event_xml(ivorn)).0
}

#[test]
fn config_check_passes_the_shipped_example_and_names_the_line_of_a_problem() {
    let out = Command::new(VTP)
        .args(["config", "check"])
        .arg(example())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));

    let dir = TempDir::new("check");
    let bad = dir.path().join("bad.toml");
    for (text, want) in [
        (
            "local-ivo = \"ivo://vtp.test/x\"\nreceive = [\"8098\"]\nauthor-whitelist = [\"10.0.0.300/8\"]\n",
            "bad.toml:3: `author-whitelist`",
        ),
        (
            "local-ivo = \"ivo://vtp.test/x\"\n\nrecieve = [\"8098\"]\n",
            "bad.toml:3: unknown key `recieve`",
        ),
        // Parsed, then refused by the checks a start makes: a TLS file that is not there.
        (
            "local-ivo = \"ivo://vtp.test/x\"\nreceive = [\"ssl:0:privateKey=/nonexistent/k.pem:certKey=/nonexistent/c.pem\"]\n",
            "/nonexistent/c.pem: cannot open",
        ),
        ("receive = [\"8098\"]\n", "--local-ivo is required"),
    ] {
        std::fs::write(&bad, text).unwrap();
        let out = Command::new(VTP)
            .args(["config", "check"])
            .arg(&bad)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains(want), "{text}: {err}");
    }
}

#[test]
fn a_broker_from_a_config_file_serves_as_with_the_same_flags() {
    let dir = TempDir::new("file-run");
    let text = format!(
        "{}receive = [\"127.0.0.1:0\"]\nauthor-whitelist = [\"127.0.0.1/32\"]\nduplicate-reply = \"nak\"\n",
        base("file-run")
    );
    let b = start_configured("file-run", "tokio", &dir, &text);
    let mut sub = RawSubscriber::connect(loopback(b.broadcast));
    let e = event_xml("ivo://vtp.test/author#file-1");
    assert_eq!(submit_raw(b.receive, &e).0, "ack");
    assert_eq!(sub.next_event(), e);
    assert_eq!(
        submit_raw(b.receive, &e).0,
        "nak",
        "duplicate-reply from the file"
    );
    assert!(
        refused("127.0.0.2", b.receive),
        "author-whitelist from the file"
    );
}

#[test]
fn sighup_applies_a_new_whitelist_to_new_connections_while_a_subscriber_keeps_receiving() {
    for rt in RUNTIMES {
        let name = format!("hup-wl-{rt}");
        let dir = TempDir::new(&name);
        let text = |authors: &str, subscribers: &str| {
            format!(
                "{}receive = [\"127.0.0.1:0\"]\nauthor-whitelist = [\"{authors}\"]\n\
                 subscriber-whitelist = [\"{subscribers}\"]\n",
                base(&name)
            )
        };
        let b = start_configured(&name, rt, &dir, &text("127.0.0.1/32", "127.0.0.1/32"));
        let mut sub = RawSubscriber::connect(loopback(b.broadcast));
        assert_eq!(
            submit_from("127.0.0.1", b.receive, "ivo://vtp.test/a#wl-1"),
            "ack"
        );
        assert_eq!(sub.next_event(), event_xml("ivo://vtp.test/a#wl-1"));
        assert!(refused("127.0.0.2", b.receive), "{rt}: not whitelisted yet");

        reload_config(&b, &dir, &text("127.0.0.2/32", "127.0.0.3/32"), 1, false);
        assert!(refused("127.0.0.1", b.receive), "{rt}: author now refused");
        assert!(
            refused("127.0.0.1", b.broadcast),
            "{rt}: new subscriber refused"
        );
        assert_eq!(
            submit_from("127.0.0.2", b.receive, "ivo://vtp.test/a#wl-2"),
            "ack",
            "{rt}: author now allowed"
        );
        // The subscriber connected before the reload (from 127.0.0.1, no longer allowed to
        // connect) still receives, on the same connection.
        assert_eq!(sub.next_event(), event_xml("ivo://vtp.test/a#wl-2"), "{rt}");
        assert_eq!(
            b.proc.log.count(|l| l.contains("needs a restart")),
            0,
            "{rt}: nothing ignored: {}",
            b.proc.log.text()
        );
    }
}

#[test]
fn sighup_with_a_broken_file_keeps_the_running_configuration_and_logs_an_error() {
    for rt in RUNTIMES {
        let name = format!("hup-bad-{rt}");
        let dir = TempDir::new(&name);
        let good = format!(
            "{}receive = [\"127.0.0.1:0\"]\nauthor-whitelist = [\"127.0.0.1/32\"]\n",
            base(&name)
        );
        let b = start_configured(&name, rt, &dir, &good);
        let mut sub = RawSubscriber::connect(loopback(b.broadcast));
        // Refused on the signal thread (the file), then by the node (iamalive over 90 s),
        // then a listener that cannot change (needs a restart, the rest applies).
        reload_config(
            &b,
            &dir,
            &format!("{good}author-whitelist = [\"127.0.0.2/32\"]\n"),
            1,
            true,
        );
        reload_config(
            &b,
            &dir,
            &format!("{good}authr-whitelist = [\"127.0.0.2/32\"]\n"),
            2,
            true,
        );
        reload_config(
            &b,
            &dir,
            &(good.replace("127.0.0.1/32", "127.0.0.2/32") + "iamalive-interval = 100\n"),
            3,
            true,
        );
        let errors: Vec<String> = b
            .proc
            .log
            .text()
            .lines()
            .filter(|l| l.contains("ERROR"))
            .map(str::to_owned)
            .collect();
        assert_eq!(errors.len(), 3, "{rt}: {errors:?}");
        assert!(
            errors[0].contains("vtp.toml:6: not valid TOML: duplicate key `author-whitelist`"),
            "{errors:?}"
        );
        assert!(
            errors[1].contains("unknown key `authr-whitelist`"),
            "{errors:?}"
        );
        assert!(
            errors[2].contains("--iamalive-interval: iamalive period 100s is out of range"),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .all(|e| e.contains("the running configuration stays")),
            "{errors:?}"
        );
        // The old whitelist still rules, and the broker still relays.
        assert!(refused("127.0.0.2", b.receive), "{rt}");
        assert_eq!(
            submit_from("127.0.0.1", b.receive, "ivo://vtp.test/a#bad-1"),
            "ack"
        );
        assert_eq!(
            sub.next_event(),
            event_xml("ivo://vtp.test/a#bad-1"),
            "{rt}"
        );

        // A new listener needs a restart: reported, the rest is applied.
        let moved = good.replace("127.0.0.1:0\"]\nauthor", "127.0.0.1:1\"]\nauthor");
        reload_config(
            &b,
            &dir,
            &moved.replace("127.0.0.1/32", "127.0.0.2/32"),
            1,
            false,
        );
        b.proc.log.wait_for("the restart warning", |l| {
            l.contains("WARN")
                && l.contains("--receive / --broadcast")
                && l.contains("needs a restart")
        });
        assert_eq!(
            submit_from("127.0.0.2", b.receive, "ivo://vtp.test/a#bad-2"),
            "ack"
        );
    }
}

#[test]
fn sighup_serves_a_certificate_renewed_on_disk_to_new_handshakes() {
    for rt in RUNTIMES {
        let name = format!("hup-tls-{rt}");
        let dir = TempDir::new(&name);
        let old = Pki::new(&format!("{name}-old"));
        let new = Pki::new(&format!("{name}-new"));
        let cert = dir.path().join("server.pem");
        let key = dir.path().join("server.key");
        std::fs::copy(&old.server_cert, &cert).unwrap();
        std::fs::copy(&old.server_key, &key).unwrap();
        let text = format!(
            "{}receive = [\"ssl:0:interface=127.0.0.1:privateKey={}:certKey={}\"]\n",
            base(&name),
            key.display(),
            cert.display()
        );
        let b = start_configured(&name, rt, &dir, &text);
        let e = |n: u32| event_xml(&format!("ivo://vtp.test/a#tls-{n}"));
        assert_eq!(
            submit_tls(b.receive, old.client(None, None), &e(1))
                .unwrap()
                .0,
            "ack"
        );
        assert!(submit_tls(b.receive, new.client(None, None), &e(2)).is_err());

        // Renewed on disk (written whole, then renamed, as certbot does), then SIGHUP.
        for (from, to) in [(&new.server_cert, &cert), (&new.server_key, &key)] {
            let tmp = to.with_extension("tmp");
            std::fs::copy(from, &tmp).unwrap();
            std::fs::rename(&tmp, to).unwrap();
        }
        reload_config(&b, &dir, &text, 1, false);
        assert_eq!(
            submit_tls(b.receive, new.client(None, None), &e(3))
                .unwrap()
                .0,
            "ack",
            "{rt}: the new certificate is served"
        );
        let err = submit_tls(b.receive, old.client(None, None), &e(4)).unwrap_err();
        assert!(
            err.contains("certificate") || err.contains("UnknownIssuer"),
            "{rt}: {err}"
        );

        // A key that does not match the certificate: refused, the renewed pair stays.
        std::fs::copy(&old.server_key, &key).unwrap();
        reload_config(&b, &dir, &text, 1, true);
        assert_eq!(
            submit_tls(b.receive, new.client(None, None), &e(5))
                .unwrap()
                .0,
            "ack",
            "{rt}"
        );
    }
}

#[test]
fn sighup_changes_the_log_level() {
    for rt in RUNTIMES {
        let name = format!("hup-log-{rt}");
        let dir = TempDir::new(&name);
        let text = |verbose: u8| {
            format!(
                "{}receive = [\"127.0.0.1:0\"]\nverbose = {verbose}\n",
                base(&name)
            )
        };
        let b = start_configured(&name, rt, &dir, &text(0));
        assert_eq!(
            submit_raw(b.receive, &event_xml("ivo://vtp.test/a#log-1")).0,
            "ack"
        );
        assert_eq!(
            b.proc.log.count(|l| l.contains("DEBUG")),
            0,
            "{rt}: nothing at DEBUG before: {}",
            b.proc.log.text()
        );
        reload_config(&b, &dir, &text(1), 1, false);
        b.proc
            .log
            .wait_for("the level line", |l| l.contains("log level info -> debug"));
        assert_eq!(
            submit_raw(b.receive, &event_xml("ivo://vtp.test/a#log-2")).0,
            "ack"
        );
        b.proc.log.wait_for("a DEBUG line", |l| l.contains("DEBUG"));
        reload_config(&b, &dir, &text(0), 2, false);
        let before = b.proc.log.count(|l| l.contains("DEBUG"));
        assert!(b.proc.log.count(|l| l.contains("log level debug -> info")) == 1);
        assert_eq!(
            submit_raw(b.receive, &event_xml("ivo://vtp.test/a#log-3")).0,
            "ack"
        );
        // Not a single DEBUG line for the third event (its store commit would log one).
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(b.proc.log.count(|l| l.contains("DEBUG")), before, "{rt}");
    }
}
