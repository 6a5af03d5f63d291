//! What the node's events tell a host that counts them (metrics, a status page): who a
//! connection is and which upstream it serves, why an accept was refused, a nak for a store
//! that cannot record, and the kind of each violation as a bounded label.

mod common;

use std::net::SocketAddr;

use common::*;
use vtp_core::config::Durability;
use vtp_core::whitelist::Whitelist;
use vtp_core::{ConnRole, Event, ListenerRole, Peer, RefusalCause, Remote, Violation};

fn ip(s: &str) -> Peer {
    Peer::Tcp(SocketAddr::new(s.parse().expect("an IP address"), 40000))
}

#[test]
fn peer_up_names_the_peer_of_an_accepted_connection_and_the_upstream_of_a_subscription() {
    let mut h = Harness::new(upstream_config());
    let author = h
        .node
        .handle_accept(ListenerRole::Receive, ip("192.0.2.9"), h.now)
        .expect("accepted");
    h.run_until(0.0);
    let dial = h
        .actions
        .iter()
        .find_map(|a| match a {
            vtp_core::Action::Connect { conn, .. } => Some(*conn),
            _ => None,
        })
        .expect("the broker dials its upstream at start");
    h.node.handle_connected(dial, h.now);
    h.drain();
    assert!(h.events.iter().any(|e| matches!(e,
        Event::PeerUp { conn, role: ConnRole::Intake, remote: Remote::Accepted(p), upstream: None }
            if *conn == author && *p == ip("192.0.2.9"))));
    assert!(h.events.iter().any(|e| matches!(e,
        Event::PeerUp { conn, role: ConnRole::Subscription, remote: Remote::Dialled(_), upstream: Some(0) }
            if *conn == dial)));
}

#[test]
fn a_refusal_says_its_cause() {
    let mut c = broker_config();
    c.subscriber_whitelist = Whitelist::new(Whitelist::parse_list("10.0.0.0/8").expect("a net"));
    let mut h = Harness::new(c);
    assert_eq!(
        h.node
            .handle_accept(ListenerRole::Broadcast, ip("192.0.2.1"), h.now),
        None
    );
    h.drain();
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::Refused {
            cause: RefusalCause::Whitelist,
            ..
        }
    )));
    assert_eq!(h.node.refusals().of(RefusalCause::Whitelist), 1);
    assert_eq!(RefusalCause::Whitelist.as_str(), "whitelist");
}

#[test]
fn a_nak_for_a_store_that_cannot_record_is_reported() {
    let mut c = broker_config();
    c.policy.durability = Durability::BeforeReply;
    let mut h = Harness::new(c);
    h.node.handle_store_status(false, h.now);
    let author = h.accept(ListenerRole::Receive);
    h.input(author, &framed(&event_xml("ivo://example.org/a#1")));
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, Event::Rejected { conn, reason: Violation::StoreUnavailable, .. } if *conn == author))
    );
    assert!(!h.events.iter().any(|e| matches!(e, Event::Accepted { .. })));
}

#[test]
fn a_naked_submission_s_violation_has_a_kind_from_the_fixed_set() {
    let mut h = Harness::broker();
    let author = h.accept(ListenerRole::Receive);
    h.input(author, &framed(b"<not-xml"));
    let kinds: Vec<&str> = h
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Rejected { reason, .. } => Some(reason.kind()),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, ["unparsable"]);
    assert!(Violation::KINDS.contains(&"unparsable"));
}
