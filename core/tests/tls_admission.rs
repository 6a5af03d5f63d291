//! TLS connections as the node sees them: silent until secured, a handshake deadline and cap,
//! certificate identities authorized per role. The TLS itself is the host's; here it is only
//! the three inputs `handle_accept_tls`, `handle_secured` and `handle_closed`.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use vtp_core::identity::{Identity, IdentityRule};
use vtp_core::message::TransportRole;
use vtp_core::{Action, CloseReason, Config, ConnId, Event, ListenerRole, Peer};

const PEER: &str = "127.0.0.1";

fn peer() -> Peer {
    Peer::Tcp(std::net::SocketAddr::new(
        PEER.parse().expect("PEER is an IP address"),
        40000,
    ))
}

fn identity(cn: &str, hash: u8) -> Identity {
    Identity {
        common_name: Some(cn.into()),
        dns_names: vec![format!("{cn}.example.org")],
        sha256: [hash; 32],
    }
}

fn accept_tls(h: &mut Harness, role: ListenerRole) -> Option<ConnId> {
    let c = h.node.handle_accept_tls(role, peer(), h.now);
    h.drain();
    c
}

fn secured(h: &mut Harness, conn: ConnId, id: Option<Identity>) -> Vec<Action> {
    h.node.handle_secured(conn, id, h.now);
    h.take()
}

fn with_rules(authors: &[&str], subscribers: &[&str]) -> Harness {
    let mut c: Config = broker_config();
    c.author_identities = authors
        .iter()
        .map(|s| IdentityRule::parse(s).expect("a valid identity rule"))
        .collect();
    c.subscriber_identities = subscribers
        .iter()
        .map(|s| IdentityRule::parse(s).expect("a valid identity rule"))
        .collect();
    Harness::new(c)
}

#[test]
fn a_tls_subscriber_hears_nothing_until_secured_then_gets_authenticate() {
    let mut h = Harness::broker();
    let s = accept_tls(&mut h, ListenerRole::Broadcast).expect("accepted");
    assert!(h.take().is_empty(), "silent during the handshake");
    assert_eq!(h.node.feeds(), 1, "counts against the subscriber limit");
    // Events arriving meanwhile are not forwarded to it.
    let a = h.accept(ListenerRole::Receive);
    h.input(a, &framed(&event_xml("ivo://example.org/survey#1")));
    assert!(forwards(&h.take()).is_empty());
    let acts = secured(&mut h, s, None);
    let frames = frames_to(&acts, s);
    assert_eq!(frames.len(), 1, "{acts:?}");
    assert_eq!(transport(&frames[0]).role, TransportRole::Authenticate);
    // And now it is a feed like any other.
    let a = h.accept(ListenerRole::Receive);
    h.input(a, &framed(&event_xml("ivo://example.org/survey#2")));
    assert_eq!(forwards(&h.take()), vec![s]);
}

#[test]
fn plaintext_before_the_handshake_completes_is_never_read() {
    let mut h = Harness::broker();
    let a = accept_tls(&mut h, ListenerRole::Receive).unwrap();
    h.input(a, &framed(&event_xml("ivo://example.org/survey#1")));
    let acts = h.take();
    assert!(acts.is_empty(), "{acts:?}");
    assert_eq!(h.node.seen_len(), 0);
}

#[test]
fn a_tls_author_is_acked_after_the_handshake_and_its_deadline_starts_then() {
    let mut h = Harness::broker();
    let a = accept_tls(&mut h, ListenerRole::Receive).unwrap();
    h.run_until(9.0);
    h.take();
    assert!(secured(&mut h, a, Some(identity("author", 1))).is_empty());
    // 20 s from the handshake, not from accept: still open at 25 s.
    h.run_until(25.0);
    assert!(closed(&h.take(), a).is_none());
    h.input(a, &framed(&event_xml("ivo://example.org/survey#1")));
    let acts = h.take();
    assert_eq!(transport(&frames_to(&acts, a)[0]).role, TransportRole::Ack);
}

#[test]
fn a_handshake_not_completed_in_10_s_is_closed_and_frees_its_slot() {
    let mut h = Harness::broker();
    let a = accept_tls(&mut h, ListenerRole::Receive).unwrap();
    h.run_until(9.9);
    assert!(closed(&h.take(), a).is_none());
    h.run_until(10.0);
    h.drain();
    let down = h.events.iter().find_map(|e| match e {
        Event::PeerDown {
            conn,
            remote,
            reason,
            connected_for,
            ..
        } if *conn == a => Some((remote.clone(), reason.clone(), *connected_for)),
        _ => None,
    });
    assert_eq!(
        down,
        Some((
            vtp_core::Remote::Accepted(peer()),
            CloseReason::TlsHandshakeTimeout,
            None
        )),
        "never up: no connected time"
    );
    assert_eq!(
        closed(&h.take(), a),
        Some(&CloseReason::TlsHandshakeTimeout)
    );
    assert_eq!(h.node.connections(), 0);
    // A later secured report for it is ignored.
    assert!(secured(&mut h, a, None).is_empty());
}

#[test]
fn concurrent_handshakes_are_capped_and_a_failed_one_frees_its_place() {
    let mut c = broker_config();
    c.limits.handshakes_max = 2;
    let mut h = Harness::new(c);
    let a = accept_tls(&mut h, ListenerRole::Receive).unwrap();
    let b = accept_tls(&mut h, ListenerRole::Broadcast).unwrap();
    assert_eq!(accept_tls(&mut h, ListenerRole::Receive), None);
    assert!(h.events.iter().any(|e| matches!(e,
        Event::Refused { reason, .. } if reason.contains("TLS handshake limit reached (2")
    )));
    // Plain connections are not handshakes.
    h.accept(ListenerRole::Receive);
    // A completed handshake and a failed one each free a place.
    secured(&mut h, a, None);
    assert!(accept_tls(&mut h, ListenerRole::Receive).is_some());
    assert_eq!(accept_tls(&mut h, ListenerRole::Receive), None);
    h.node
        .handle_closed(b, CloseReason::Tls("bad certificate".into()), h.now);
    h.drain();
    assert!(accept_tls(&mut h, ListenerRole::Receive).is_some());
    assert_eq!(h.node.feeds(), 0, "the failed subscriber is gone");
}

#[test]
fn identities_restrict_each_role_separately() {
    let mut h = with_rules(&["author"], &[&format!("sha256:{}", "07".repeat(32))]);
    // Author: the CN matches.
    let a = accept_tls(&mut h, ListenerRole::Receive).unwrap();
    let acts = secured(&mut h, a, Some(identity("author", 1)));
    assert!(closed(&acts, a).is_none(), "{acts:?}");
    // Author: a DNS name matches too, case-insensitively.
    let mut c = broker_config();
    c.author_identities = vec![IdentityRule::parse("AUTHOR.example.ORG").unwrap()];
    let mut h2 = Harness::new(c);
    let a2 = accept_tls(&mut h2, ListenerRole::Receive).unwrap();
    assert!(closed(&secured(&mut h2, a2, Some(identity("author", 1))), a2).is_none());
    // Author: wrong name, no certificate.
    for id in [Some(identity("mallory", 1)), None] {
        let a = accept_tls(&mut h, ListenerRole::Receive).unwrap();
        let acts = secured(&mut h, a, id.clone());
        match closed(&acts, a) {
            Some(CloseReason::NotAuthorized(why)) => {
                assert!(why.contains("--author-identity"), "{why}");
                if let Some(id) = &id {
                    assert!(why.contains(&id.fingerprint()), "names the identity: {why}");
                } else {
                    assert!(why.contains("no client certificate"), "{why}");
                }
            }
            other => panic!("{other:?}"),
        }
        assert!(
            frames_to(&acts, a).is_empty(),
            "nothing sent to a refused peer"
        );
    }
    // Subscriber: pinned by fingerprint; the author's certificate is not enough.
    let s = accept_tls(&mut h, ListenerRole::Broadcast).unwrap();
    let acts = secured(&mut h, s, Some(identity("author", 1)));
    assert!(matches!(
        closed(&acts, s),
        Some(CloseReason::NotAuthorized(_))
    ));
    assert!(
        frames_to(&acts, s).is_empty(),
        "no authenticate for a refused subscriber"
    );
    let s = accept_tls(&mut h, ListenerRole::Broadcast).unwrap();
    h.node
        .handle_secured(s, Some(identity("anything", 7)), h.now);
    h.drain();
    assert!(h.events.iter().any(|e| matches!(e,
        Event::Secured { conn, identity: Some(id), .. } if *conn == s && id.sha256 == [7; 32]
    )));
    let acts = h.take();
    assert_eq!(frames_to(&acts, s).len(), 1, "authenticate: {acts:?}");
}

#[test]
fn plain_connections_are_refused_for_a_role_that_requires_an_identity_only() {
    let mut h = with_rules(&["author"], &[]);
    let refused = h.node.handle_accept(ListenerRole::Receive, peer(), h.now);
    assert_eq!(refused, None);
    h.drain();
    assert!(h.events.iter().any(|e| matches!(e,
        Event::Refused { reason, .. } if reason.contains("--author-identity")
    )));
    // Subscribers have no rule: plain is fine.
    assert!(
        h.node
            .handle_accept(ListenerRole::Broadcast, peer(), h.now)
            .is_some()
    );
}

#[test]
fn the_whitelist_still_applies_to_tls_peers() {
    let mut c = broker_config();
    c.author_whitelist = vtp_core::whitelist::Whitelist::new(
        vtp_core::whitelist::Whitelist::parse_list("10.0.0.0/8").unwrap(),
    );
    let mut h = Harness::new(c);
    assert_eq!(accept_tls(&mut h, ListenerRole::Receive), None);
}
