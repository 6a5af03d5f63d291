//! `vtp` against the real peers it must interoperate with: Comet 3.1.0 (broker, subscriber,
//! `comet-sendvo`) and pygcn 1.1.3, run as separate processes on 127.0.0.1.
//!
//! The peers live in a Python venv made by `conformance/peers/setup.sh` (idempotent; see
//! `conformance/peers/README.md`); the helpers that run them are in `peers/`. A peer that cannot
//! be installed or started fails the test: nothing here is skipped. Every wait is on a log line
//! or bytes, with a bounded deadline; every peer process is killed (with its process group) when
//! its test ends, panics included.
//!
//! Comet 3.1.0 listens on every interface and has no option to change that, so Comet brokers
//! run through `comet_twistd.py` with `VTP_COMET_INTERFACE=127.0.0.1`, and always with
//! 127.0.0.0/8 whitelists as well. pygcn is always given 127.0.0.1 explicitly.

#![allow(clippy::unwrap_used)]

mod peers;
mod support;

use std::path::Path;
use std::process::Command;

use peers::*;
use support::*;

const GCN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../core/tests/data/gcn_swift_bat.xml"
);

// ------------------------------------------------------------------------------- vtp side

/// The filter of tests 5 and 6: matches `event_xml`'s author, not the GCN fixture's.
const AUTHOR_FILTER: &str = "//Who[AuthorIVORN='ivo://vtp.test/author']";

// ---------------------------------------------------------------------------------- tests

#[test]
fn comet_sendvo_to_vtp_broker_gets_ack_and_invalid_ivoid_nak() {
    let b = Broker::start("i1-broker", &["--broadcast-test-interval", "0"]);
    let files = TempDir::new("i1-files");
    let (good, _) = write_event(&files, "good.xml", "ivo://vtp.test/author#sendvo-1");
    let (code, out) = comet_sendvo(b.receive, &good);
    assert_eq!(code, Some(0), "comet-sendvo:\n{out}");
    assert!(out.contains("Acknowledgement received from"), "{out}");
    assert!(out.contains("Event was sent successfully"), "{out}");
    b.proc.log.wait_for("vtp accepted it", |l| {
        l.contains("accepted event ivo://vtp.test/author#sendvo-1")
    });

    let (bad, _) = write_event(&files, "bad.xml", "ivo://a2#x");
    let (code, out) = comet_sendvo(b.receive, &bad);
    assert_eq!(code, Some(1), "comet-sendvo:\n{out}");
    let nak = out
        .lines()
        .find(|l| l.contains("Nak received:"))
        .unwrap_or_else(|| panic!("no nak line:\n{out}"));
    assert!(
        nak.contains("refused to accept VOEvent (") && nak.contains("Invalid IVOID: ivo://a2#x"),
        "comet-sendvo prints vtp's reason: {nak}"
    );
    assert!(out.contains("Event was NOT sent successfully"), "{out}");
}

#[test]
fn vtp_send_to_comet_broker_gets_ack_and_comets_nak_reasons() {
    let c = CometBroker::start("i2-comet");
    let files = TempDir::new("i2-files");
    let (good, _) = write_event(&files, "good.xml", "ivo://vtp.test/author#send-1");
    let (code, err) = vtp_send(c.receive, &good, &[]);
    assert_eq!(code, Some(0), "vtp send: {err}");
    assert!(err.contains("event acknowledged by"), "{err}");
    c.proc.log.wait_for("Comet took it", |l| {
        l.contains("VOEvent ivo://vtp.test/author#send-1 received from")
    });
    // The real GCN notice goes through Comet's schema validation too.
    let (code, err) = vtp_send(c.receive, Path::new(GCN), &[]);
    assert_eq!(code, Some(0), "vtp send (GCN fixture): {err}");

    // Comet naks a duplicate and an invalid IVOID; vtp send exits 1 and shows the reason.
    let (code, err) = vtp_send(c.receive, &good, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("Previously seen by this broker"), "{err}");
    let (bad, _) = write_event(&files, "bad.xml", "ivo://a2#x");
    let (code, err) = vtp_send(c.receive, &bad, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("Invalid IVOID"), "{err}");
}

#[test]
fn vtp_broker_delivers_the_authors_exact_bytes_to_comet_and_pygcn() {
    let b = Broker::start("i3-broker", &["-v", "--broadcast-test-interval", "0"]);
    let comet = CometSubscriber::start("i3-comet-sub", b.broadcast, &[]);
    let pygcn = Pygcn::start("i3-pygcn", b.broadcast);

    let files = TempDir::new("i3-files");
    let (small, small_bytes) = write_event(&files, "small.xml", "ivo://vtp.test/author#exact-1");
    let gcn_bytes = std::fs::read(GCN).unwrap();
    assert!(gcn_bytes.len() > 10_000, "the realistic 10 KB notice");
    // One at a time: each peer numbers its files in arrival order, and Comet runs its --cmd
    // handlers concurrently.
    for (n, (file, bytes)) in [(Path::new(GCN), &gcn_bytes), (&small, &small_bytes)]
        .into_iter()
        .enumerate()
    {
        let (code, err) = vtp_send(b.receive, file, &[]);
        assert_eq!(code, Some(0), "vtp send {}: {err}", file.display());
        assert!(
            pygcn.received(n + 1) == *bytes,
            "pygcn got other bytes than {}",
            file.display()
        );
        assert!(
            comet.received(n + 1) == *bytes,
            "Comet got other bytes than {}",
            file.display()
        );
    }
    // Both acked every event: vtp logged no nak, and the connections are still the first ones.
    assert_eq!(
        b.proc.log.count(|l| l.contains("subscriber nak'd")),
        0,
        "{}",
        b.proc.log.text()
    );
    assert_eq!(b.proc.log.count(subscriber_down), 0);
}

#[test]
fn pygcn_and_comet_subscriber_answer_iamalive_and_stay_connected() {
    // A bounded wait of about 5 s real time is inherent: four 1 s iamalive periods.
    let b = Broker::start(
        "i4-broker",
        &[
            "-v",
            "--broadcast-test-interval",
            "0",
            "--iamalive-interval",
            "1",
        ],
    );
    let pygcn = Pygcn::start("i4-pygcn", b.broadcast);
    let comet = CometSubscriber::start("i4-comet-sub", b.broadcast, &[]);
    let answered = "vtp.pygcn INFO answered iamalive origin=ivo://vtp.test/i4-broker ";
    pygcn
        .proc
        .log
        .wait_count("pygcn answered 4 iamalives", 4, |l| l.contains(answered));
    comet.wait_iamalives(4);

    // vtp closes a feed whose iamalive is still unanswered at the next tick: after four ticks
    // with no drop, both answered every one. Neither side saw a reconnect.
    let blog = &b.proc.log;
    assert_eq!(
        blog.count(|l| l.contains("subscriber 127.0.0.1:") && l.contains(" connected")),
        2,
        "{}",
        blog.text()
    );
    assert_eq!(
        blog.count(peer_down),
        0,
        "vtp dropped a subscriber:\n{}",
        blog.text()
    );
    let plog = &pygcn.proc.log;
    assert_eq!(
        plog.count(|l| l.contains(" socket local=")),
        1,
        "{}",
        plog.text()
    );
    assert_eq!(
        plog.count(|l| l.contains("timed out") || l.contains("closed socket")),
        0,
        "{}",
        plog.text()
    );
    let clog = &comet.proc.log;
    assert_eq!(
        clog.count(|l| l.contains("Authenticate received from")),
        1,
        "{}",
        clog.text()
    );
    assert_eq!(
        clog.count(|l| l.contains("Connection to") || l.contains("No iamalive received")),
        0,
        "{}",
        clog.text()
    );
}

#[test]
fn comet_broker_delivers_exact_bytes_to_vtp_listen_and_gets_its_filter() {
    let c = CometBroker::start("i5-comet");
    let saved = TempDir::new("i5-saved");
    let mut cmd = Command::new(VTP);
    cmd.args(["listen", &format!("127.0.0.1:{}", c.broadcast), "-v"])
        .args(["--local-ivo", "ivo://vtp.test/i5-listen", "--save-event"])
        .arg("--save-event-directory")
        .arg(saved.path())
        .args(["--filter", AUTHOR_FILTER]);
    let listen = Proc::spawn("i5-listen", cmd);
    // vtp listen answered Comet's authenticate, and its filter arrived: Comet installs it.
    c.proc
        .log
        .wait_for("Comet got the authenticate reply", |l| {
            l.contains("Authentication received from IPv4Address(type='TCP', host='127.0.0.1'")
        });
    let install = format!("Installing filter {AUTHOR_FILTER} for IPv4Address(");
    c.proc.log.wait_for(&install, |l| l.contains(&install));

    let files = TempDir::new("i5-files");
    // Not matching the filter: Comet keeps it from vtp listen.
    let (code, out) = comet_sendvo(c.receive, Path::new(GCN));
    assert_eq!(code, Some(0), "comet-sendvo:\n{out}");
    c.proc.log.wait_for("Comet filtered the GCN notice", |l| {
        l.contains("Event rejected by filter")
    });
    // Matching: delivered, saved byte for byte.
    let (file, bytes) = write_event(&files, "e.xml", "ivo://vtp.test/author#listen-1");
    let (code, out) = comet_sendvo(c.receive, &file);
    assert_eq!(code, Some(0), "comet-sendvo:\n{out}");
    let line = listen.log.wait_for("vtp listen saved the event", |l| {
        l.contains("event saved") && l.contains("ivo://vtp.test/author#listen-1")
    });
    let path = saved.path().join("ivo__vtp.test_authorlisten1");
    assert!(line.contains(&*path.to_string_lossy()), "{line}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "vtp listen saved the exact bytes"
    );
    let names: Vec<_> = std::fs::read_dir(saved.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names.len(),
        1,
        "only the matching event was delivered: {names:?}"
    );
    c.proc
        .log
        .wait_for("vtp listen acked it", |l| l.contains("Ack received from"));
}

#[test]
fn comet_subscribers_xpath_filter_reaches_vtp_and_is_honoured() {
    // The Comet subscriber's `--filter` reaches vtp in its authenticate reply; vtp's XPath 1.0
    // engine (issue #5) sends it the matching event (`event_xml`'s author) and not the GCN
    // notice.
    let b = Broker::start(
        "i6-broker",
        &[
            "-v",
            "--broadcast-test-interval",
            "0",
            "--iamalive-interval",
            "1",
        ],
    );
    let comet = CometSubscriber::start("i6-comet-sub", b.broadcast, &[AUTHOR_FILTER]);
    let blog = &b.proc.log;
    let set = blog.wait_for("filters received", |l| {
        l.contains("INFO") && l.contains("subscriber filters set") && l.contains("accepted=1")
    });
    assert_eq!(
        blog.count(|l| l.contains("subscriber filters set")),
        1,
        "{set}"
    );
    assert_eq!(blog.count(|l| l.contains("refused")), 0, "{}", blog.text());
    let mut plain = RawSubscriber::connect(loopback(b.broadcast));

    let files = TempDir::new("i6-files");
    let (matching, matching_bytes) =
        write_event(&files, "match.xml", "ivo://vtp.test/author#filtered-1");
    let (code, err) = vtp_send(b.receive, &matching, &[]);
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = vtp_send(b.receive, Path::new(GCN), &[]);
    assert_eq!(code, Some(0), "{err}");
    // Barrier 1: the plain subscriber has both.
    assert_eq!(plain.next_event(), matching_bytes);
    assert_eq!(plain.next_event(), std::fs::read(GCN).unwrap());
    // Barrier 2: frames on one connection keep their order. Two more iamalives reach the Comet
    // subscriber, so at least one was sent after both events were fanned out (and acked).
    let seen = comet.iamalives();
    comet.wait_iamalives(seen + 2);

    let clog = &comet.proc.log;
    assert_eq!(
        comet.received(1),
        matching_bytes,
        "the matching event, exact bytes"
    );
    assert_eq!(
        clog.count(|l| l.contains("VOEvent ") && l.contains(" received from")),
        1,
        "the filtered Comet subscriber got the non-matching event too:\n{}",
        clog.text()
    );
    assert!(
        !comet.raw.join("2.xml").exists(),
        "a second event was saved"
    );
    // The Comet subscriber's connection (the one whose filters were set) is still up. (The
    // plain subscriber may be gone: it answers iamalives only while it reads events.)
    let conn = set
        .split_whitespace()
        .find(|w| w.starts_with("conn=#"))
        .unwrap();
    let down = |l: &str| subscriber_down(l) && l.split_whitespace().any(|w| w == conn);
    assert_eq!(blog.count(down), 0, "{}", blog.text());
}
