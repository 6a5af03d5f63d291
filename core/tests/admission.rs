//! Who may connect: the per-address limits on author and subscriber connections (counted per
//! role and per network, released on every kind of close, Unix-socket peers exempt) and the
//! rate limit on reporting refusals.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use common::*;
use vtp_core::{CloseReason, Config, ConnId, Event, ListenerRole, Peer, RefusalCounts};

const AUTHOR: ListenerRole = ListenerRole::Receive;
const SUBSCRIBER: ListenerRole = ListenerRole::Broadcast;

/// A TCP peer at `s`, from a new source port each call: the limits count the address only.
fn ip(s: &str) -> Peer {
    static PORT: AtomicU16 = AtomicU16::new(40000);
    let port = PORT.fetch_add(1, Ordering::Relaxed);
    Peer::Tcp(SocketAddr::new(
        s.parse::<IpAddr>().expect("an IP address"),
        port,
    ))
}

/// A broker with small per-address limits: 2 authors and 3 subscribers per address.
fn capped() -> Config {
    let mut c = broker_config();
    c.limits.author_connections_per_address = 2;
    c.limits.subscriber_connections_per_address = 3;
    c
}

fn accept(h: &mut Harness, role: ListenerRole, peer: Peer) -> Option<ConnId> {
    let conn = h.node.handle_accept(role, peer, h.now);
    h.drain();
    conn
}

/// (per address, connection limit, whitelist, other).
fn causes(c: RefusalCounts) -> (u64, u64, u64, u64) {
    (c.per_address, c.connections_max, c.whitelist, c.other)
}

/// The reasons of the `Refused` events collected so far, cleared.
fn refusals(h: &mut Harness) -> Vec<String> {
    let out = h
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Refused { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    h.events.clear();
    out
}

#[test]
fn each_address_gets_its_own_author_and_subscriber_slots() {
    let mut h = Harness::new(capped());
    let flood = ip("192.0.2.7");
    let healthy = ip("198.51.100.1");
    assert!(accept(&mut h, AUTHOR, flood).is_some());
    assert!(accept(&mut h, AUTHOR, flood).is_some());
    refusals(&mut h);
    assert_eq!(accept(&mut h, AUTHOR, flood), None, "third author refused");
    let reasons = refusals(&mut h);
    assert_eq!(reasons.len(), 1);
    assert!(
        reasons[0].contains("per-address limit reached: 192.0.2.7 holds 2 author connections")
            && reasons[0].contains("--author-connections-per-address 2"),
        "{reasons:?}"
    );
    assert_eq!(h.node.connections_from(AUTHOR, flood), 2);
    // Another address is served; the subscriber slots of the flooding address are its own.
    assert!(accept(&mut h, AUTHOR, healthy).is_some());
    for _ in 0..3 {
        assert!(accept(&mut h, SUBSCRIBER, flood).is_some());
    }
    assert_eq!(accept(&mut h, SUBSCRIBER, flood), None);
    let reasons = refusals(&mut h);
    assert!(
        reasons[0].contains("3 subscriber connections")
            && reasons[0].contains("--subscriber-connections-per-address 3"),
        "{reasons:?}"
    );
    assert!(accept(&mut h, SUBSCRIBER, healthy).is_some());
    assert_eq!(h.node.connections_from(SUBSCRIBER, flood), 3);
    assert_eq!(h.node.connections_from(AUTHOR, healthy), 1);
    let counts = h.node.refusals();
    assert_eq!((counts.per_address, counts.total()), (2, 2), "{counts:?}");
}

#[test]
fn an_ipv6_64_is_one_address_and_an_ipv4_mapped_address_counts_as_ipv4() {
    let mut h = Harness::new(capped());
    assert!(accept(&mut h, AUTHOR, ip("2001:db8:1:2::1")).is_some());
    assert!(accept(&mut h, AUTHOR, ip("2001:db8:1:2:ffff::9")).is_some());
    assert_eq!(accept(&mut h, AUTHOR, ip("2001:db8:1:2::77")), None);
    let reasons = refusals(&mut h);
    assert!(
        reasons[0].contains("2001:db8:1:2::/64 holds 2"),
        "{reasons:?}"
    );
    assert!(accept(&mut h, AUTHOR, ip("2001:db8:1:3::1")).is_some());

    assert!(accept(&mut h, AUTHOR, ip("10.1.2.3")).is_some());
    assert!(accept(&mut h, AUTHOR, ip("::ffff:10.1.2.3")).is_some());
    assert_eq!(accept(&mut h, AUTHOR, ip("10.1.2.3")), None);
    assert_eq!(h.node.connections_from(AUTHOR, ip("::ffff:10.1.2.3")), 2);
}

#[test]
fn unix_socket_peers_are_not_counted() {
    let mut c = capped();
    c.limits.author_connections_per_address = 1;
    c.limits.subscriber_connections_per_address = 1;
    let mut h = Harness::new(c);
    for _ in 0..5 {
        assert!(accept(&mut h, AUTHOR, Peer::Local).is_some());
        assert!(accept(&mut h, SUBSCRIBER, Peer::Local).is_some());
    }
    assert_eq!(h.node.connections_from(AUTHOR, Peer::Local), 0);
    assert_eq!(h.node.refusals().total(), 0);
    // The global limit still holds for them.
    let mut c = capped();
    c.limits.connections_max = 2;
    let mut h = Harness::new(c);
    assert!(accept(&mut h, AUTHOR, Peer::Local).is_some());
    assert!(accept(&mut h, AUTHOR, Peer::Local).is_some());
    assert_eq!(accept(&mut h, AUTHOR, Peer::Local), None);
    assert!(refusals(&mut h)[0].contains("connection limit reached (2 author connections"));
}

#[test]
fn every_kind_of_close_releases_the_address_slot() {
    let mut c = capped();
    c.limits.author_connections_per_address = 1;
    c.limits.subscriber_connections_per_address = 1;
    c.timing.intake_deadline = Duration::from_secs(20);
    c.timing.iamalive_period = Duration::from_secs(60);
    let mut h = Harness::new(c);
    let peer = ip("192.0.2.7");
    let refused = |h: &mut Harness, role| accept(h, role, peer).is_none();

    // An answered submission (ack, then close).
    let a = accept(&mut h, AUTHOR, peer).expect("first author");
    assert!(refused(&mut h, AUTHOR));
    h.input(a, &framed(&event_xml("ivo://example.org/survey#caps-1")));
    // A naked one (not XML).
    let a = accept(&mut h, AUTHOR, peer).expect("freed by the ack");
    h.input(a, &framed(b"not xml"));
    // The intake deadline.
    let a = accept(&mut h, AUTHOR, peer).expect("freed by the nak");
    h.run_until(21.0);
    assert!(matches!(
        closed(&h.actions, a),
        Some(CloseReason::IntakeDeadline)
    ));
    // The peer going away.
    let a = accept(&mut h, AUTHOR, peer).expect("freed by the deadline");
    h.node.handle_closed(a, CloseReason::PeerClosed, h.now);
    h.drain();
    // A framing error (a prefix over the limit).
    let a = accept(&mut h, AUTHOR, peer).expect("freed by the peer's close");
    h.input(a, &u32::MAX.to_be_bytes());
    let _ = accept(&mut h, AUTHOR, peer).expect("freed by the framing error");
    assert_eq!(h.node.connections_from(AUTHOR, peer), 1);

    // A feed closed by its peer, then one dropped for an unanswered iamalive.
    let f = accept(&mut h, SUBSCRIBER, peer).expect("first subscriber");
    assert!(refused(&mut h, SUBSCRIBER));
    h.node.handle_closed(f, CloseReason::OutboxFull, h.now);
    h.drain();
    let f = accept(&mut h, SUBSCRIBER, peer).expect("freed by the close");
    h.actions.clear();
    h.run_until(h.elapsed() + 121.0);
    assert!(matches!(
        closed(&h.actions, f),
        Some(CloseReason::IamaliveUnanswered)
    ));
    assert!(
        accept(&mut h, SUBSCRIBER, peer).is_some(),
        "freed by the tick"
    );

    // Shutdown closes everything: every count is back to zero.
    h.node.shutdown(h.now);
    h.drain();
    assert_eq!(h.node.connections_from(AUTHOR, peer), 0);
    assert_eq!(h.node.connections_from(SUBSCRIBER, peer), 0);
    assert_eq!(h.node.connections(), 0);
}

#[test]
fn refusals_past_the_first_few_of_a_window_are_counted_and_reported_once_at_its_end() {
    let mut c = capped();
    c.limits.author_connections_per_address = 1;
    c.limits.refusals_logged_max = 3;
    c.limits.refusals_window = Duration::from_secs(10);
    // The held author stays for the whole test.
    c.timing.intake_deadline = Duration::from_secs(3600);
    c.author_whitelist = vtp_core::whitelist::Whitelist::new(
        vtp_core::whitelist::Whitelist::parse_list("192.0.2.0/24").expect("a network"),
    );
    let mut h = Harness::new(c);
    let flood = ip("192.0.2.7");
    let _held = accept(&mut h, AUTHOR, flood).expect("the first is served");
    for _ in 0..100 {
        assert_eq!(accept(&mut h, AUTHOR, flood), None);
    }
    assert_eq!(accept(&mut h, AUTHOR, ip("203.0.113.1")), None, "whitelist");
    assert_eq!(refusals(&mut h).len(), 3, "only the first 3 reported");
    assert_eq!(causes(h.node.refusals()), (100, 0, 1, 0));

    // The window's end reports the rest, by cause, once.
    h.run_until(9.9);
    assert!(
        !h.events
            .iter()
            .any(|e| matches!(e, Event::RefusalsSuppressed { .. }))
    );
    h.run_until(10.0);
    let suppressed: Vec<&Event> = h
        .events
        .iter()
        .filter(|e| matches!(e, Event::RefusalsSuppressed { .. }))
        .collect();
    let [Event::RefusalsSuppressed { counts, window }] = suppressed[..] else {
        panic!("one summary expected: {suppressed:?}");
    };
    assert_eq!(*window, Duration::from_secs(10));
    assert_eq!(causes(*counts), (97, 0, 1, 0));
    assert_eq!(
        counts.to_string(),
        "97 over a per-address limit, 1 not whitelisted"
    );
    h.events.clear();

    // A new window reports its first refusals again; shutdown reports what it suppressed.
    h.run_until(30.0);
    for _ in 0..5 {
        assert_eq!(accept(&mut h, AUTHOR, flood), None);
    }
    assert_eq!(refusals(&mut h).len(), 3);
    h.node.shutdown(h.now);
    h.drain();
    assert!(h.events.iter().any(|e| matches!(e,
        Event::RefusalsSuppressed { counts, .. } if counts.per_address == 2)));
    assert_eq!(h.node.refusals().per_address, 105);
    assert_eq!(h.node.poll_timeout(), None, "no timer left after shutdown");
}
