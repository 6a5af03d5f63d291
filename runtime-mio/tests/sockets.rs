//! The mio loop on real sockets: exact bytes from author to subscriber over IPv4, IPv6 and
//! Unix listeners, and a subscriber that stops reading dropped while a healthy one keeps up.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;

use support::*;
use vtp_core::outbox::OutboxLimits;
use vtp_core::{CloseReason, ConnRole, Event, ListenerRole};
use vtp_mio::Options;

#[test]
fn submit_then_broadcast_exact_bytes_over_ipv4_ipv6_and_unix() {
    let dir = std::env::temp_dir().join(format!("vtp-mio-sockets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("receive.sock");
    let bound = bind(&[
        (ListenerRole::Receive, "127.0.0.1:0"),
        (ListenerRole::Receive, &format!("unix:{}", sock.display())),
        (ListenerRole::Broadcast, "[::1]:0"),
    ]);
    let receive = bound.port(ListenerRole::Receive).unwrap();
    let broadcast = bound.port(ListenerRole::Broadcast).unwrap();
    let broker = Running::start(bound, Default::default());
    let mut sub =
        RawSubscriber::connect(SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], broadcast)));
    let _ = broker.reports.wait_event("subscriber up", |e| {
        matches!(
            e,
            Event::PeerUp {
                role: ConnRole::Feed,
                ..
            }
        )
    });

    let over_tcp = event_xml("ivo://vtp.test/a#tcp", 100);
    let s = TcpStream::connect(("127.0.0.1", receive)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(submit_raw(s, &over_tcp), "ack");
    assert_eq!(sub.next_event(), over_tcp, "exact bytes, IPv4 in, IPv6 out");

    let over_unix = event_xml("ivo://vtp.test/a#unix", 200);
    let s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(submit_raw(s, &over_unix), "ack");
    assert_eq!(sub.next_event(), over_unix, "exact bytes, Unix in");

    let fx = broker.stop();
    assert_eq!(fx.stored, 2);
    // Shutdown closed the subscriber's connection: it reads end of stream.
    let mut rest = Vec::new();
    assert!(
        sub.stream.read_to_end(&mut rest).is_ok(),
        "EOF, not a timeout"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_connection_over_its_read_budget_is_served_again_without_a_new_wakeup() {
    // 16-byte reads: the budget is 64 bytes per wake-up. The event arrives in one segment, so
    // no further readiness edge comes; only the re-queue lets the rest be read.
    let options = Options {
        read_chunk: 16,
        ..Default::default()
    };
    let bound = bind(&[(ListenerRole::Receive, "127.0.0.1:0")]);
    let receive = bound.port(ListenerRole::Receive).unwrap();
    let broker = Running::start(bound, options);
    let ev = event_xml("ivo://vtp.test/a#budget", 10);
    assert!(
        ev.len() > 16 * vtp_mio::READS_PER_WAKE,
        "more than one wake-up of reads"
    );
    let s = TcpStream::connect(("127.0.0.1", receive)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(submit_raw(s, &ev), "ack");
    assert_eq!(broker.stop().stored, 1);
}

#[test]
fn a_frame_much_larger_than_socket_buffers_arrives_whole() {
    let bound = bind(&[
        (ListenerRole::Receive, "127.0.0.1:0"),
        (ListenerRole::Broadcast, "127.0.0.1:0"),
    ]);
    let receive = bound.port(ListenerRole::Receive).unwrap();
    let broadcast = bound.port(ListenerRole::Broadcast).unwrap();
    let broker = Running::start(bound, Default::default());
    let mut sub = RawSubscriber::connect(SocketAddr::from(([127, 0, 0, 1], broadcast)));
    let _ = broker.reports.wait_event("subscriber up", |e| {
        matches!(
            e,
            Event::PeerUp {
                role: ConnRole::Feed,
                ..
            }
        )
    });
    // 900 KB of padding in a comment (captured texts are capped at 64 KiB).
    let mut big = event_xml("ivo://vtp.test/a#huge", 10);
    let at = big.len() - "</voe:VOEvent>\n".len();
    let comment = format!("<!-- {} -->\n", "y".repeat(900 * 1000));
    big.splice(at..at, comment.into_bytes());
    let s = TcpStream::connect(("127.0.0.1", receive)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(submit_raw(s, &big), "ack");
    assert!(
        sub.next_event() == big,
        "the subscriber gets the exact bytes"
    );
    broker.stop();
}

/// A subscriber socket with a tiny receive buffer that never reads.
fn slow_subscriber(port: u16) -> TcpStream {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

#[test]
fn a_subscriber_that_never_reads_is_dropped_while_a_healthy_one_keeps_receiving() {
    let options = Options {
        outbox: OutboxLimits {
            bytes_max: 256 * 1024,
            frames_max: 64,
        },
        ..Default::default()
    };
    let bound = bind(&[
        (ListenerRole::Receive, "127.0.0.1:0"),
        (ListenerRole::Broadcast, "127.0.0.1:0"),
    ]);
    let receive = bound.port(ListenerRole::Receive).unwrap();
    let broadcast = bound.port(ListenerRole::Broadcast).unwrap();
    let broker = Running::start(bound, options);
    let is_feed_up = |e: &Event| {
        matches!(
            e,
            Event::PeerUp {
                role: ConnRole::Feed,
                ..
            }
        )
    };

    let mut healthy = RawSubscriber::connect(SocketAddr::from(([127, 0, 0, 1], broadcast)));
    let Event::PeerUp {
        conn: healthy_id, ..
    } = broker.reports.wait_event("healthy up", is_feed_up)
    else {
        unreachable!()
    };
    let mut slow = slow_subscriber(broadcast);
    let Event::PeerUp { conn: slow_id, .. } = broker.reports.wait_event("slow up", is_feed_up)
    else {
        unreachable!()
    };

    let (got_tx, got_rx) = mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        while let Some(ev) = healthy.try_next_event() {
            if got_tx.send(ev).is_err() {
                break;
            }
        }
    });

    // ~64 KB events until the slow subscriber is dropped, then a few more.
    let mut sent = Vec::new();
    let mut dropped_at = None;
    for i in 0..400 {
        let ev = event_xml(&format!("ivo://vtp.test/a#big{i}"), 64 * 1000);
        let s = TcpStream::connect(("127.0.0.1", receive)).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        assert_eq!(submit_raw(s, &ev), "ack");
        sent.push(ev);
        while let Ok(e) = broker.reports.events.try_recv() {
            if let Event::PeerDown {
                conn,
                reason,
                role: ConnRole::Feed,
            } = e
            {
                assert_eq!(
                    conn, slow_id,
                    "only the slow subscriber is dropped: {reason:?}"
                );
                assert_eq!(reason, CloseReason::OutboxFull);
                dropped_at.get_or_insert(i);
            }
        }
        if dropped_at.is_some_and(|d| i >= d + 3) {
            break;
        }
    }
    let dropped_at = dropped_at.expect("the slow subscriber was dropped for a full outbox");
    assert!(
        dropped_at >= 2,
        "dropped only after its outbox filled, at event {dropped_at}"
    );
    for (i, want) in sent.iter().enumerate() {
        let got = got_rx.recv_timeout(WAIT).unwrap();
        assert!(
            got == *want,
            "healthy subscriber: event {i} differs or is missing"
        );
    }
    assert!(
        broker
            .reports
            .events
            .try_iter()
            .all(|e| !matches!(e, Event::PeerDown { conn, .. } if conn == healthy_id)),
        "the healthy subscriber stays connected"
    );
    // The dropped subscriber's socket was closed: what it had buffered, then end of stream.
    let mut rest = Vec::new();
    assert!(slow.read_to_end(&mut rest).is_ok(), "EOF, not a timeout");

    broker.stop();
    reader.join().unwrap();
}
