//! vtp as a systemd service: the readiness protocol (`Type=notify`) against a test socket on
//! every runtime, and the shipped unit file checked by `systemd-analyze verify`.

#![allow(clippy::unwrap_used)]

mod support;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use support::*;

fn recv(s: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = s.recv(&mut buf).expect("a notification before the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn the_broker_notifies_ready_once_serving_and_stopping_at_sigterm_on_every_runtime() {
    for rt in RUNTIMES {
        let dir = TempDir::new(&format!("notify-{rt}"));
        let sock_path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&sock_path).unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        // A --cmd that records its environment: it must not see $NOTIFY_SOCKET.
        let script = dir.path().join("env.sh");
        let env_out = dir.path().join("env.txt");
        std::fs::write(&script, format!("#!/bin/sh\nenv > {}\n", env_out.display())).unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let mut cmd = Command::new(VTP);
        cmd.args([
            "broker",
            "--runtime",
            rt,
            "--local-ivo",
            "ivo://vtp.test/notify",
        ])
        .args(["--receive", "127.0.0.1:0", "--broadcast", "127.0.0.1:0"])
        .arg("--eventdb")
        .arg(dir.path().join("db"))
        .arg("--cmd")
        .arg(&script)
        .env("NOTIFY_SOCKET", &sock_path);
        let db = TempDir::new(&format!("notify-db-{rt}"));
        let mut b = Broker::spawn(&format!("notify-{rt}"), cmd, db);
        let ready = recv(&sock);
        assert!(
            ready.starts_with("READY=1\nSTATUS=serving authors on 127.0.0.1:"),
            "{rt}: {ready}"
        );
        assert!(
            ready.contains(&format!("authors on 127.0.0.1:{}", b.receive)),
            "{rt}: {ready}"
        );
        assert!(
            ready.contains(&format!("subscribers on 127.0.0.1:{}", b.broadcast)),
            "{rt}: {ready}"
        );
        // The event's --cmd runs without the variable.
        assert_eq!(
            submit_raw(b.receive, &event_xml(&format!("ivo://vtp.test/a#{rt}"))).0,
            "ack"
        );
        let deadline = std::time::Instant::now() + WAIT;
        let env = loop {
            let text = std::fs::read_to_string(&env_out).unwrap_or_default();
            if text.contains("PATH=") || std::time::Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(env.contains("PATH="), "{rt}: {env}");
        assert!(
            !env.contains("NOTIFY_SOCKET"),
            "{rt}: the command inherited it"
        );
        assert_eq!(b.proc.terminate(), Some(0), "{rt}");
        assert_eq!(recv(&sock), "STOPPING=1\nSTATUS=shutting down\n", "{rt}");
    }
}

/// The next notification that is not a watchdog ping; counts the pings skipped.
fn recv_skipping_pings(s: &UnixDatagram, pings: &mut usize) -> String {
    loop {
        let m = recv(s);
        if m != "WATCHDOG=1\n" {
            return m;
        }
        *pings += 1;
    }
}

#[test]
fn watchdog_pings_while_the_loop_turns_and_a_reload_is_bracketed_by_reloading_and_ready() {
    for rt in RUNTIMES {
        let dir = TempDir::new(&format!("watchdog-{rt}"));
        let sock_path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&sock_path).unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        let config = dir.path().join("vtp.toml");
        let text = "local-ivo = \"ivo://vtp.test/watchdog\"\n\
                    receive = [\"127.0.0.1:0\"]\n\
                    broadcast = [\"127.0.0.1:0\"]\n\
                    broadcast-test-interval = 0\n";
        std::fs::write(&config, text).unwrap();
        let mut cmd = Command::new(VTP);
        cmd.args(["broker", "--runtime", rt, "--config"])
            .arg(&config)
            .arg("--eventdb")
            .arg(dir.path().join("db"))
            .env("NOTIFY_SOCKET", &sock_path)
            // 300 ms: a ping every 150 ms.
            .env("WATCHDOG_USEC", "300000");
        let db = TempDir::new(&format!("watchdog-db-{rt}"));
        let mut b = Broker::spawn(&format!("watchdog-{rt}"), cmd, db);
        let ready = recv(&sock);
        assert!(
            ready.starts_with("READY=1\nSTATUS=serving "),
            "{rt}: {ready}"
        );
        b.proc.log.wait_for("the watchdog line", |l| {
            l.contains("systemd watchdog: WATCHDOG=1 every 0.1 s")
        });
        // Pings go on past a second of idleness, when each one wakes the loop first.
        let start = std::time::Instant::now();
        let mut pings = 0;
        while start.elapsed() < Duration::from_millis(1600) {
            assert_eq!(recv(&sock), "WATCHDOG=1\n", "{rt}");
            pings += 1;
        }
        assert!(pings >= 6, "{rt}: {pings} pings in 1.6 s");

        // A reload: RELOADING=1 with the monotonic time, then READY=1 once applied.
        b.proc.signal("HUP");
        let reloading = recv_skipping_pings(&sock, &mut pings);
        assert!(
            reloading.starts_with("RELOADING=1\nMONOTONIC_USEC=")
                && reloading.ends_with("\nSTATUS=reloading the configuration\n"),
            "{rt}: {reloading}"
        );
        let usec: u64 = reloading.lines().nth(1).unwrap()["MONOTONIC_USEC=".len()..]
            .parse()
            .unwrap();
        assert!(usec > 0, "{rt}");
        let again = recv_skipping_pings(&sock, &mut pings);
        assert_eq!(
            again, ready,
            "{rt}: READY=1 with the same status after the reload"
        );
        b.proc
            .log
            .wait_for("the reload", |l| l.contains("configuration reloaded from"));

        // A broken file: refused, and still READY=1 (systemd must not wait for ever).
        std::fs::write(&config, "receive = [\n").unwrap();
        b.proc.signal("HUP");
        let reloading = recv_skipping_pings(&sock, &mut pings);
        assert!(reloading.starts_with("RELOADING=1\n"), "{rt}: {reloading}");
        let refused = recv_skipping_pings(&sock, &mut pings);
        assert!(
            refused.starts_with("READY=1\nSTATUS=serving ")
                && refused.contains("the last reload was refused"),
            "{rt}: {refused}"
        );

        assert_eq!(b.proc.terminate(), Some(0), "{rt}");
        assert_eq!(
            recv_skipping_pings(&sock, &mut pings),
            "STOPPING=1\nSTATUS=shutting down\n",
            "{rt}"
        );
        // Nothing after STOPPING=1: the watchdog stopped before it.
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 64];
        assert!(
            sock.recv(&mut buf).is_err(),
            "{rt}: a notification after STOPPING=1"
        );
    }
}

#[test]
fn without_notify_socket_nothing_is_sent_and_a_bad_one_is_an_error_naming_it() {
    let dir = TempDir::new("notify-bad");
    let out = Command::new(VTP)
        .args([
            "broker",
            "--local-ivo",
            "ivo://vtp.test/n",
            "--receive",
            "127.0.0.1:0",
        ])
        .arg("--eventdb")
        .arg(dir.path().join("db"))
        .env("NOTIFY_SOCKET", format!("@{}", "x".repeat(200)))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("$NOTIFY_SOCKET"), "{err}");
}

#[test]
fn the_shipped_unit_file_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/vtp.service"))
        .unwrap();
    for needed in [
        "Type=notify",
        "StateDirectory=vtp",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "WatchdogSec=30",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.contains(needed), "dist/vtp.service lacks {needed}");
    }
    // Verified with this build's binary in place of the installed path.
    let dir = TempDir::new("unit");
    let path = dir.path().join("vtp.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/vtp", VTP)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd package) to check dist/vtp.service");
    let err = String::from_utf8_lossy(&out.stderr);
    let problems: Vec<&str> = err.lines().filter(|l| l.contains("vtp.service")).collect();
    assert!(out.status.success() && problems.is_empty(), "{err}");
}

#[test]
fn completions_man_global_flags_suggestions_and_a_misplaced_event_file() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(VTP)
            .args(["completions", shell])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        assert!(
            text.contains("broker") && text.contains("local-ivo"),
            "{shell}"
        );
    }
    let man = Command::new(VTP).arg("man").output().unwrap();
    let roff = String::from_utf8_lossy(&man.stdout);
    assert_eq!(man.status.code(), Some(0));
    assert!(
        roff.starts_with(".ie") && roff.contains(".TH vtp 1"),
        "{roff}"
    );
    assert!(roff.contains("broker") && roff.contains("listen"), "{roff}");
    // -v / -q before or after the subcommand.
    for args in [
        &["-q", "broker", "--help"][..],
        &["broker", "-q", "--help"][..],
    ] {
        let out = Command::new(VTP).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
    }
    // clap's suggestion survives the one-line error.
    let out = Command::new(VTP)
        .args(["broker", "--local-iv", "x"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("similar argument exists: '--local-ivo'"),
        "{err}"
    );
    // The event file given where the broker belongs.
    let dir = TempDir::new("misplaced");
    let file = dir.path().join("event.xml");
    std::fs::write(&file, event_xml("ivo://vtp.test/a#1")).unwrap();
    let out = Command::new(VTP).arg("send").arg(&file).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("TARGET (the broker) comes first"), "{err}");
}
