//! The `vtp` binary on loopback: submit -> broadcast -> listen, relay chains with a cycle,
//! restart with the seen-index, handlers, whitelists, and `vtp send`'s exit statuses.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::process::Command;

use support::*;

fn write_event(dir: &TempDir, name: &str, ivorn: &str) -> (std::path::PathBuf, Vec<u8>) {
    let bytes = event_xml(ivorn);
    let p = dir.path().join(name);
    std::fs::write(&p, &bytes).unwrap();
    (p, bytes)
}

#[test]
fn submit_broadcast_listen_delivers_the_authors_bytes() {
    for rt in RUNTIMES {
        let b = Broker::start(
            "b1",
            &["-v", "--broadcast-test-interval", "0", "--runtime", rt],
        );
        let mut raw = RawSubscriber::connect(loopback(b.broadcast));
        let saved = TempDir::new("saved");
        let mut cmd = Command::new(VTP);
        cmd.args([
            "listen",
            &format!("127.0.0.1:{}", b.broadcast),
            "--save-event",
        ])
        .arg("--save-event-directory")
        .arg(saved.path())
        .args(["--runtime", rt]);
        let _listener = Proc::spawn("listen", cmd);
        // Both named with their port, at INFO.
        b.proc.log.wait_count("two subscribers", 2, |l| {
            l.contains(" INFO ") && l.contains("subscriber 127.0.0.1:") && l.contains(" connected")
        });

        let files = TempDir::new("files");
        let (path, bytes) = write_event(&files, "e.xml", "ivo://vtp.test/author#e1");
        let (code, err) = vtp_send(b.receive, &path, &[]);
        assert_eq!(code, Some(0), "vtp send: {err}");

        assert_eq!(
            raw.next_event(),
            bytes,
            "raw subscriber gets the exact bytes"
        );
        let want = saved.path().join("ivo__vtp.test_authore1");
        let deadline = std::time::Instant::now() + WAIT;
        while !want.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "vtp listen did not save {want:?}"
            );
            std::thread::park_timeout(std::time::Duration::from_millis(20));
        }
        // The handler writes with create_new then fills the file: wait for the full length.
        while std::fs::read(&want).unwrap().len() < bytes.len() {
            assert!(std::time::Instant::now() < deadline);
            std::thread::park_timeout(std::time::Duration::from_millis(20));
        }
        assert_eq!(
            std::fs::read(&want).unwrap(),
            bytes,
            "vtp listen saved the exact bytes"
        );
    }
}

#[test]
fn send_exit_statuses_distinguish_ack_nak_timeout_and_connection_failure() {
    let b = Broker::start("b2", &["--broadcast-test-interval", "0"]);
    let files = TempDir::new("send");
    let (good, _) = write_event(&files, "good.xml", "ivo://vtp.test/author#s1");
    let (bad, _) = write_event(&files, "bad.xml", "ivo://a2#x");
    // Each outcome is said once, on one line of stderr (no log line repeating it).
    let (code, err) = vtp_send(b.receive, &good, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            " INFO event acknowledged by 127.0.0.1:{}",
            b.receive
        )),
        "{err}"
    );
    let (code, err) = vtp_send(b.receive, &bad, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("vtp: event refused by 127.0.0.1:{}: ", b.receive))
            && err.contains("Invalid IVOID: ivo://a2#x"),
        "{err}"
    );

    // A peer that accepts and never answers: timeout.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let (code, err) = vtp_send(port, &good, &["--timeout", "1"]);
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(
        err,
        format!("vtp: no receipt from 127.0.0.1:{port} within 1 s (--timeout)\n")
    );
    drop(silent);
    // Nobody listening: connection failure.
    let (code, err) = vtp_send(port, &good, &[]);
    assert_eq!(code, Some(4), "{err}");
    assert_eq!(
        err,
        format!("vtp: cannot submit to 127.0.0.1:{port}: connection refused\n")
    );
    // comet-sendvo's spelling works too.
    let out = Command::new(VTP)
        .args([
            "send",
            "-h",
            "127.0.0.1",
            "-p",
            &b.receive.to_string(),
            "-f",
        ])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Transport nak from a fake broker.
fn nak_xml(origin: &str, result: &str) -> Vec<u8> {
    format!(
        "<trn:Transport xmlns:trn=\"http://telescope-networks.org/schema/Transport/v1.1\" \
         version=\"1.0\" role=\"nak\"><Origin>{origin}</Origin>\
         <TimeStamp>2026-11-22T01:50:13</TimeStamp><Meta><Result>{result}</Result></Meta>\
         </trn:Transport>"
    )
    .into_bytes()
}

#[test]
fn send_ignores_a_nak_for_another_event_and_escapes_the_brokers_text() {
    let files = TempDir::new("send-nak");
    let (good, _) = write_event(&files, "good.xml", "ivo://vtp.test/author#n1");
    for rt in RUNTIMES {
        let fake = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = fake.local_addr().unwrap().port();
        let broker = std::thread::spawn(move || {
            let (mut s, _) = fake.accept().unwrap();
            s.set_read_timeout(Some(WAIT)).unwrap();
            read_frame(&mut s).unwrap();
            write_frame(&mut s, &nak_xml("ivo://vtp.test/author#other", "not yours"));
            // XML 1.0 has no ESC, but it allows the C1 controls (U+009B is CSI, the 8-bit ANSI
            // escape) and line breaks.
            write_frame(
                &mut s,
                &nak_xml(
                    "ivo://vtp.test/author#n1",
                    "\u{9b}31mred\r\nvtp: event acknowledged \u{9b}0m ünïcode",
                ),
            );
            // Until vtp send hangs up.
            let _ = s.read_to_end(&mut Vec::new());
        });
        let (code, err) = vtp_send(port, &good, &["--timeout", "10", "--runtime", rt]);
        broker.join().unwrap();
        assert_eq!(code, Some(1), "{rt}: refused by its own nak: {err}");
        assert!(
            err.contains("broker sent nak with Origin \"ivo://vtp.test/author#other\""),
            "{rt}: the other event's nak is a protocol error: {err}"
        );
        assert!(
            !err.contains("refused by 127.0.0.1:{port}: not yours"),
            "{rt}: {err}"
        );
        assert!(
            err.contains(&format!(
                "vtp: event refused by 127.0.0.1:{port}: \\u{{9b}}31mred\\nvtp: event \
                 acknowledged \\u{{9b}}0m ünïcode"
            )),
            "{rt}: the broker's text escaped on one line: {err}"
        );
        assert!(!err.contains('\u{9b}'), "{rt}: no raw CSI: {err:?}");
        assert!(
            !err.lines()
                .any(|l| l.starts_with("vtp: event acknowledged")),
            "{rt}: no forged line: {err}"
        );
    }
}

#[test]
fn relay_chain_with_a_cycle_delivers_each_event_once_and_never_loops() {
    // A (entry) -> B -> C, and C <-> D subscribe to each other: a chain feeding a cycle.
    let quiet = ["-v", "--broadcast-test-interval", "0"];
    let up = |port: u16| format!("127.0.0.1:{port}");
    let a = Broker::start("x-a", &quiet);
    let b = Broker::start(
        "x-b",
        &[&quiet[..], &["--subscribe", &up(a.broadcast)]].concat(),
    );
    // D must know C's broadcast port before C exists: reserve an ephemeral port, release it,
    // and give it to C. D dials it on its back-off schedule until C is up.
    let placeholder = TcpListener::bind("127.0.0.1:0").unwrap();
    let c_bcast = placeholder.local_addr().unwrap().port();
    drop(placeholder);
    let d = Broker::start(
        "x-d",
        &[&quiet[..], &["--subscribe", &up(c_bcast)]].concat(),
    );
    let db = TempDir::new("x-c");
    let mut cmd = Command::new(VTP);
    cmd.args(["broker", "--local-ivo", "ivo://vtp.test/x-c"])
        .args(quiet)
        .args(["--receive", "127.0.0.1:0", "--broadcast", &up(c_bcast)])
        .args([
            "--subscribe",
            &up(b.broadcast),
            "--subscribe",
            &up(d.broadcast),
        ])
        .arg("--eventdb")
        .arg(db.path());
    let c = Proc::spawn("x-c", cmd);
    let up_line = |l: &str| l.contains("connected to upstream 127.0.0.1:");
    b.proc.log.wait_for("B subscribed to A", up_line);
    let deadline = std::time::Instant::now() + WAIT;
    while c.log.count(up_line) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "C not subscribed to B and D:\n{}",
            c.log.text()
        );
        std::thread::park_timeout(std::time::Duration::from_millis(20));
    }
    d.proc.log.wait_for("D subscribed to C", up_line);

    let mut sub_c = RawSubscriber::connect(loopback(c_bcast));
    let mut sub_d = RawSubscriber::connect(loopback(d.broadcast));
    let e1 = event_xml("ivo://vtp.test/author#cycle-1");
    assert_eq!(submit_raw(a.receive, &e1).0, "ack");
    assert_eq!(sub_c.next_event(), e1);
    assert_eq!(sub_d.next_event(), e1);
    // The copy that went round the cycle came back and was dropped as a duplicate.
    let dup = |l: &str| l.contains("duplicate");
    let deadline = std::time::Instant::now() + WAIT;
    while c.log.count(dup) + d.proc.log.count(dup) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no duplicate dropped in the cycle"
        );
        std::thread::park_timeout(std::time::Duration::from_millis(20));
    }
    // Nothing else of e1 is in flight: the next event each subscriber sees is e2.
    let e2 = event_xml("ivo://vtp.test/author#cycle-2");
    assert_eq!(submit_raw(a.receive, &e2).0, "ack");
    assert_eq!(sub_c.next_event(), e2, "C forwarded e1 once");
    assert_eq!(sub_d.next_event(), e2, "D forwarded e1 once");
}

#[test]
fn sighup_is_logged_and_ignored_and_the_broker_keeps_serving() {
    for rt in RUNTIMES {
        let mut b = Broker::start("hup", &["--broadcast-test-interval", "0", "--runtime", rt]);
        b.proc.signal("HUP");
        let line = b
            .proc
            .log
            .wait_for("the SIGHUP warning", |l| l.contains("SIGHUP"));
        assert!(
            line.contains("WARN") && line.contains("reload needs a configuration file"),
            "{rt}: {line}"
        );
        let e = event_xml("ivo://vtp.test/author#after-hup");
        assert_eq!(
            submit_raw(b.receive, &e).0,
            "ack",
            "{rt}: serving after SIGHUP"
        );
        assert!(
            b.proc.child.try_wait().unwrap().is_none(),
            "{rt}: still running"
        );
        assert_eq!(b.proc.terminate(), Some(0), "{rt}: clean stop on SIGTERM");
    }
}

#[test]
fn restarted_broker_keeps_its_seen_index() {
    for rt in RUNTIMES {
        let db = TempDir::new("restart");
        let path = db.path().to_path_buf();
        let mut b = Broker::start_with_db(
            "r1",
            &["--broadcast-test-interval", "0", "--runtime", rt],
            db,
        );
        let e = event_xml("ivo://vtp.test/author#restart-1");
        assert_eq!(submit_raw(b.receive, &e).0, "ack");
        assert_eq!(b.proc.terminate(), Some(0), "clean stop on SIGTERM");
        let db = std::mem::replace(&mut b.db, TempDir::new("unused"));
        drop(b);
        assert!(path.exists());

        let b = Broker::start_with_db(
            "r2",
            &["--broadcast-test-interval", "0", "--runtime", rt],
            db,
        );
        b.proc
            .log
            .wait_for("restore", |l| l.contains("1 entries restored"));
        let mut sub = RawSubscriber::connect(loopback(b.broadcast));
        assert_eq!(
            submit_raw(b.receive, &e).0,
            "ack",
            "a duplicate is acked (VTP 2.0)"
        );
        let e2 = event_xml("ivo://vtp.test/author#restart-2");
        assert_eq!(submit_raw(b.receive, &e2).0, "ack");
        assert_eq!(
            sub.next_event(),
            e2,
            "the event seen before the restart was not re-forwarded"
        );
    }
}

#[test]
fn handlers_print_save_and_cmd_see_every_event() {
    let dir = TempDir::new("handlers");
    let script = dir.path().join("handler.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ncat > \"$1.tmp\" && mv \"$1.tmp\" \"$1\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = dir.path().join("cmd-out.xml");
    let saved = dir.path().join("saved");
    let cmd_arg = format!("{} {}", script.display(), out.display());
    let b = Broker::start(
        "h1",
        &[
            "--broadcast-test-interval",
            "0",
            "--print-event",
            "--save-event",
            "--save-event-directory",
            saved.to_str().unwrap(),
            "--cmd",
            &cmd_arg,
        ],
    );
    let e = event_xml("ivo://vtp.test/author#handled-1");
    assert_eq!(submit_raw(b.receive, &e).0, "ack");
    b.proc.log.wait_for("print-event", |l| {
        l.contains("<Who><AuthorIVORN>ivo://vtp.test/author</AuthorIVORN>")
    });
    let deadline = std::time::Instant::now() + WAIT;
    let saved_file = saved.join("ivo__vtp.test_authorhandled1");
    while !(out.exists()
        && saved_file.exists()
        && std::fs::read(&saved_file).unwrap().len() == e.len())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "handlers did not run:\n{}",
            b.proc.log.text()
        );
        std::thread::park_timeout(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        std::fs::read(&out).unwrap(),
        e,
        "--cmd got the event on stdin"
    );
    assert_eq!(
        std::fs::read(&saved_file).unwrap(),
        e,
        "--save-event wrote the raw bytes"
    );
}

#[test]
fn save_event_skip_test_saves_every_event_but_test_ones() {
    let dir = TempDir::new("skip-test");
    let saved = dir.path().join("saved");
    let b = Broker::start(
        "skip-test",
        &[
            "-v",
            "--broadcast-test-interval",
            "0",
            "--save-event-directory",
            saved.to_str().unwrap(),
            "--save-event-skip-test",
        ],
    );
    let test = String::from_utf8(event_xml("ivo://vtp.test/author#t1"))
        .unwrap()
        .replace("role=\"observation\"", "role=\"test\"");
    assert_eq!(submit_raw(b.receive, test.as_bytes()).0, "ack");
    let e = event_xml("ivo://vtp.test/author#o1");
    assert_eq!(submit_raw(b.receive, &e).0, "ack");
    b.proc.log.wait_for("the test event passed over", |l| {
        l.contains("test event not saved") && l.contains("ivo://vtp.test/author#t1")
    });
    let saved_file = saved.join("ivo__vtp.test_authoro1");
    let deadline = std::time::Instant::now() + WAIT;
    while std::fs::read(&saved_file).map_or(0, |b| b.len()) < e.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            b.proc.log.text()
        );
        std::thread::park_timeout(std::time::Duration::from_millis(20));
    }
    let names: Vec<String> = std::fs::read_dir(&saved)
        .unwrap()
        .map(|f| f.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["ivo__vtp.test_authoro1"]);
    assert!(
        b.proc.log.text().contains("save-event skips test events"),
        "the banner says so"
    );
    // Without a save-event handler the flag is an error naming what it needs.
    let out = Command::new(VTP)
        .args(["listen", "127.0.0.1:1", "--save-event-skip-test"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--save-event-skip-test needs --save-event"),
        "{err}"
    );
}

#[test]
fn whitelists_refuse_with_nothing_sent() {
    for rt in RUNTIMES {
        let b = Broker::start(
            "w1",
            &[
                "--runtime",
                rt,
                "--author-whitelist",
                "10.0.0.0/8",
                "--subscriber-whitelist",
                "192.168.0.0/16,::1/128",
            ],
        );
        for port in [b.receive, b.broadcast] {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(WAIT)).unwrap();
            let _ = std::io::Write::write_all(
                &mut s,
                &vtp_core::frame::encode(&event_xml("ivo://vtp.test/a#w")).unwrap(),
            );
            let mut buf = [0u8; 16];
            // Closed without a byte: read returns 0 (EOF) or a reset.
            match s.read(&mut buf) {
                Ok(0) | Err(_) => {}
                Ok(n) => panic!("refused peer was sent {n} bytes"),
            }
        }
        b.proc.log.wait_for("refusal logged", |l| {
            l.contains("non-whitelisted 127.0.0.1")
        });
    }
}

#[test]
fn several_listeners_per_role_ipv6_and_unix_sockets() {
    for rt in RUNTIMES {
        let dir = TempDir::new("multi");
        let sock = dir.path().join("receive.sock");
        let bsock = dir.path().join("broadcast.sock");
        let mut cmd = Command::new(VTP);
        cmd.args(["broker", "--runtime", rt])
            .args([
                "--local-ivo",
                "ivo://vtp.test/multi",
                "--broadcast-test-interval",
                "0",
            ])
            .args(["--receive", &format!("unix:{}", sock.display())])
            .args(["--receive", "[::1]:0", "--receive", "127.0.0.1:0"])
            .args(["--broadcast", &format!("unix:{}", bsock.display())])
            .args(["--broadcast", "127.0.0.1:0"])
            .arg("--eventdb")
            .arg(dir.path().join("db"));
        let b = Proc::spawn("multi", cmd);
        let v6 = b.log.wait_for("v6 listener", |l| {
            l.contains("listening for authors on [::1]:")
        });
        let v6_port: u16 = v6.rsplit(':').next().unwrap().trim().parse().unwrap();
        let v4 = b.log.wait_for("v4 subscribers", |l| {
            l.contains("listening for subscribers on 127.0.0.1:")
        });
        let v4_port: u16 = v4.rsplit(':').next().unwrap().trim().parse().unwrap();
        b.log.wait_for("unix listener", |l| {
            l.contains("listening for subscribers on unix:")
        });

        // A subscriber on the Unix broadcast socket and one on TCP.
        let mut unix_sub = std::os::unix::net::UnixStream::connect(&bsock).unwrap();
        unix_sub.set_read_timeout(Some(WAIT)).unwrap();
        let mut tcp_sub = RawSubscriber::connect(loopback(v4_port));
        let mut len = [0u8; 4];
        unix_sub.read_exact(&mut len).unwrap(); // authenticate
        let mut skip = vec![0u8; u32::from_be_bytes(len) as usize];
        unix_sub.read_exact(&mut skip).unwrap();

        let files = TempDir::new("multi-files");
        for (i, target) in [
            format!("unix:{}", sock.display()),
            format!("[::1]:{v6_port}"),
        ]
        .iter()
        .enumerate()
        {
            let (path, bytes) = write_event(
                &files,
                &format!("{i}.xml"),
                &format!("ivo://vtp.test/a#m{i}"),
            );
            let out = Command::new(VTP)
                .args(["send", target])
                .arg(&path)
                .output()
                .unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "send to {target}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(tcp_sub.next_event(), bytes);
            unix_sub.read_exact(&mut len).unwrap();
            let mut got = vec![0u8; u32::from_be_bytes(len) as usize];
            unix_sub.read_exact(&mut got).unwrap();
            assert_eq!(got, bytes, "Unix-socket subscriber");
        }
    }
}

#[test]
fn bad_arguments_get_one_line_naming_them() {
    for (args, want) in [
        (&["broker", "--receive-port", "x"][..], "--receive-port"),
        (&["broker", "--receive", "8098"][..], "--local-ivo"),
        (
            &["broker", "--local-ivo", "ivo://a2", "--receive", "0"][..],
            "ivo://a2",
        ),
        (
            &["broker", "--local-ivo", "ivo://a.b/c", "--receive", "tcp:"][..],
            "--receive",
        ),
        (
            &[
                "broker",
                "--local-ivo",
                "ivo://a.b/c",
                "--broadcast",
                "0",
                "--author-whitelist",
                "10.0.0.0/99",
            ][..],
            "--author-whitelist",
        ),
        (
            &[
                "broker",
                "--local-ivo",
                "ivo://a.b/c",
                "--broadcast",
                "0",
                "--iamalive-interval",
                "91",
            ][..],
            "--iamalive-interval",
        ),
        (
            &[
                "broker",
                "--local-ivo",
                "ivo://a.b/c",
                "--broadcast",
                "0",
                "--iamalive-interval",
                "0",
            ][..],
            "at most 90s",
        ),
        (&["broker", "--seen-max", "0"][..], "--seen-max"),
        (
            &["broker", "--max-connections", "0"][..],
            "--max-connections",
        ),
        (
            &["broker", "--author-connections-per-address", "0"][..],
            "--author-connections-per-address",
        ),
        (
            &["broker", "--subscriber-connections-per-address", "x"][..],
            "--subscriber-connections-per-address",
        ),
        (&["broker", "--seen-retention", "x"][..], "--seen-retention"),
        (&["broker", "--seen-retention", "0"][..], "--seen-retention"),
        (
            &[
                "broker",
                "--local-ivo",
                "ivo://a.b/c",
                "--receive",
                "127.0.0.1:0",
                "--author-identity",
                "author1",
            ][..],
            "--author-identity is given, but 127.0.0.1:0 is a plain listener",
        ),
        (
            &[
                "broker",
                "--local-ivo",
                "ivo://a.b/c",
                "--broadcast",
                "0",
                "--subscriber-identity",
                "sha256:zz",
            ][..],
            "--subscriber-identity",
        ),
        (
            &["broker", "--local-ivo", "ivo://a.b/c", "--receive", "ssl:0"][..],
            "privateKey=",
        ),
        (
            &["send", "--tls-client-cert", "c.pem"][..],
            "--tls-client-key",
        ),
        (&["send", "--bogus"][..], "--bogus"),
        (&["listen"][..], "HOST"),
    ] {
        let out = Command::new(VTP).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // A TLS listener whose key cannot be read: the file and the problem, before serving.
    let out = Command::new(VTP)
        .args([
            "broker",
            "--local-ivo",
            "ivo://a.b/c",
            "--eventdb",
            &std::env::temp_dir()
                .join(format!("vtp-tls-args-{}", std::process::id()))
                .display()
                .to_string(),
            "--receive",
            "ssl:0:interface=127.0.0.1:privateKey=/nonexistent/key.pem:certKey=/nonexistent/cert.pem",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("/nonexistent/cert.pem: cannot open the certificate"),
        "{err}"
    );
    let help = Command::new(VTP)
        .args(["broker", "--help"])
        .output()
        .unwrap();
    assert_eq!(help.status.code(), Some(0));
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--subscriber-whitelist",
        "--seen-max",
        "--seen-retention",
        "--max-connections",
        "--author-connections-per-address",
        "--subscriber-connections-per-address",
        "ssl:PORT:privateKey=KEY.pem:certKey=CERT.pem",
        "--author-identity",
        "--subscriber-identity",
        "--tls-ca",
        "--tls-handshake-timeout",
        "--tls-handshakes-max",
        "--handler-spool-bytes",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    assert!(
        help.contains("[default: 32]") && help.contains("[default: 64]"),
        "{help}"
    );
}

#[test]
fn handler_queue_bytes_is_documented_and_checked_on_every_runtime() {
    for rt in RUNTIMES {
        let help = Command::new(VTP)
            .args(["broker", "--runtime", rt, "--help"])
            .output()
            .unwrap();
        assert_eq!(help.status.code(), Some(0), "{rt}");
        let help = String::from_utf8_lossy(&help.stdout);
        assert!(help.contains("--handler-queue-bytes"), "{rt}: {help}");
        for bad in ["0", "x", "64MiB"] {
            let out = Command::new(VTP)
                .args(["broker", "--runtime", rt, "--handler-queue-bytes", bad])
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{rt} {bad}: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "{rt} {bad}: {err}");
            assert!(err.contains("--handler-queue-bytes"), "{rt} {bad}: {err}");
        }
    }
}

#[test]
fn an_author_that_half_closes_after_sending_still_gets_its_receipt() {
    for rt in RUNTIMES {
        let b = Broker::start("half", &["--broadcast-test-interval", "0", "--runtime", rt]);
        let mut s = TcpStream::connect(("127.0.0.1", b.receive)).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        write_frame(&mut s, &event_xml("ivo://vtp.test/a#half"));
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let reply = read_frame(&mut s).unwrap_or_else(|e| panic!("{rt}: no receipt: {e}"));
        let text = String::from_utf8_lossy(&reply);
        assert!(text.contains("role=\"ack\""), "{rt}: {text}");
    }
}

/// Without `--eventdb`, the seen-index goes to the per-user default (here `$STATE_DIRECTORY`,
/// which comes first for every user, root too), created with mode 0700 and its parents; the
/// start-up log names it. A user other than root without it gets `$XDG_STATE_HOME/vtp`.
#[test]
fn without_eventdb_the_seen_index_goes_to_the_per_user_state_directory() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new("default-db");
    let home = tmp.path().join("home");
    let xdg = tmp.path().join("xdg");
    let state = tmp.path().join("systemd/vtp");
    let run = |name: &str, state_directory: Option<&std::path::Path>, want: &std::path::Path| {
        let mut cmd = Command::new(VTP);
        cmd.args(["broker", "--local-ivo", "ivo://vtp.test/default-db"])
            .args(["--receive", "127.0.0.1:0", "--broadcast", "127.0.0.1:0"])
            .env("HOME", &home)
            .env("XDG_STATE_HOME", &xdg)
            .env_remove("STATE_DIRECTORY");
        if let Some(s) = state_directory {
            cmd.env("STATE_DIRECTORY", s);
        }
        let mut proc = Proc::spawn(name, cmd);
        let line = proc.log.wait_for("the seen-index opened", |l| {
            l.contains("entries restored from")
        });
        assert!(line.contains(&want.display().to_string()), "{line}");
        proc.log.wait_after("listening for subscribers on");
        proc.terminate();
        let mode = std::fs::metadata(want).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", want.display());
        assert!(want.join("vtp-seen.log").is_file());
    };
    run("default-db-systemd", Some(&state), &state);
    let parent = std::fs::metadata(tmp.path().join("systemd")).unwrap();
    assert_eq!(parent.permissions().mode() & 0o777, 0o700);
    if !running_as_root() {
        run("default-db-xdg", None, &xdg.join("vtp"));
    }
}

/// Whether this test runs as root (which would get `/var/lib/vtp`, not a temp directory).
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(true)
}
