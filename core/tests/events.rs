//! What the events tell logs and metrics about each connection: who is at the far end (an
//! accepted peer with its port, or the endpoint dialled), how long it was up, how many events
//! went each way, and why it ended (the close reason, its class, and the reason a reconnect
//! names).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use vtp_core::endpoint::DialAddr;
use vtp_core::{
    Action, CloseClass, CloseReason, ConnId, ConnRole, Event, ListenerRole, Peer, Remote, Violation,
};

fn ack(origin: &str) -> Vec<u8> {
    format!(
        "<trn:Transport xmlns:trn=\"http://telescope-networks.org/schema/Transport/v1.1\" \
         version=\"1.0\" role=\"ack\"><Origin>{origin}</Origin>\
         <TimeStamp>2024-05-01T12:00:00</TimeStamp></trn:Transport>"
    )
    .into_bytes()
}

fn peer_down(events: &[Event], of: ConnId) -> Option<&Event> {
    events
        .iter()
        .find(|e| matches!(e, Event::PeerDown { conn, .. } if *conn == of))
}

fn submit_from(h: &mut Harness, peer: Peer, ivorn: &str) -> ConnId {
    let conn = h
        .node
        .handle_accept(ListenerRole::Receive, peer, h.now)
        .expect("accepted");
    h.input(conn, &framed(&event_xml(ivorn)));
    conn
}

#[test]
fn a_subscriber_is_named_with_its_port_and_leaves_with_its_time_and_events_sent() {
    let mut h = Harness::broker();
    let feed = h.accept(ListenerRole::Broadcast);
    assert!(h.events.contains(&Event::PeerUp {
        conn: feed,
        role: ConnRole::Feed,
        remote: Remote::Accepted(peer()),
        upstream: None,
    }));
    assert_eq!(Remote::Accepted(peer()).to_string(), PEER);
    h.take();
    h.run_until(5.0);
    for i in 0..3 {
        submit_from(&mut h, peer(), &format!("ivo://example.org/survey#e{i}"));
        h.input(
            feed,
            &framed(&ack(&format!("ivo://example.org/survey#e{i}"))),
        );
    }
    h.run_until(12.5);
    h.node.handle_closed(feed, CloseReason::PeerClosed, h.now);
    h.drain();
    let Some(Event::PeerDown {
        role,
        remote,
        reason,
        connected_for,
        events_sent,
        events_received,
        ..
    }) = peer_down(&h.events, feed)
    else {
        panic!("no PeerDown for the feed: {:?}", h.events);
    };
    assert_eq!(*role, ConnRole::Feed);
    assert_eq!(*remote, Remote::Accepted(peer()));
    assert_eq!(*reason, CloseReason::PeerClosed);
    assert_eq!(reason.class(), CloseClass::Closed);
    assert_eq!(*connected_for, Some(Duration::from_secs_f64(12.5)));
    assert_eq!((*events_sent, *events_received), (3, 0));
}

#[test]
fn accepted_naked_and_duplicate_submissions_name_the_author_with_its_port() {
    let mut h = Harness::broker();
    let author: Peer = Peer::Tcp("198.51.100.7:51234".parse().unwrap());
    let at = Remote::Accepted(author);
    let a = submit_from(&mut h, author, "ivo://example.org/survey#a");
    let b = submit_from(&mut h, author, "ivo://example.org/survey#a");
    let c = submit_from(&mut h, author, "ivo://example.org/survey");
    let accepted = h.events.iter().find_map(|e| match e {
        Event::Accepted {
            conn,
            ivorn,
            remote,
            ..
        } if *conn == a => Some((ivorn.clone(), remote.clone())),
        _ => None,
    });
    assert_eq!(
        accepted,
        Some((Arc::from("ivo://example.org/survey#a"), at.clone()))
    );
    let duplicate = h.events.iter().find_map(|e| match e {
        Event::Duplicate {
            conn,
            ivorn,
            remote,
            ..
        } if *conn == b => Some((ivorn.clone(), remote.clone())),
        _ => None,
    });
    assert_eq!(
        duplicate,
        Some((Arc::from("ivo://example.org/survey#a"), at.clone()))
    );
    let naked = h.events.iter().find_map(|e| match e {
        Event::Rejected {
            conn,
            reason,
            remote,
        } if *conn == c => Some((reason.to_string(), remote.clone())),
        _ => None,
    });
    assert_eq!(
        naked,
        Some(("Event rejected: No per-event local ID".into(), at))
    );
    assert_eq!(author.to_string(), "198.51.100.7:51234");
}

#[test]
fn a_submission_naked_because_the_store_fails_is_reported_with_its_reason() {
    let mut h = Harness::broker();
    h.node.handle_store_status(false, h.now);
    let a = submit_from(&mut h, peer(), "ivo://example.org/survey#s");
    let naked = h.events.iter().find_map(|e| match e {
        Event::Rejected {
            conn,
            reason,
            remote,
        } if *conn == a => Some((reason.clone(), remote.clone())),
        _ => None,
    });
    assert_eq!(
        naked,
        Some((Violation::StoreUnavailable, Remote::Accepted(peer())))
    );
    let nak = frames_to(&h.take(), a);
    let nak = transport(&nak[0]);
    assert_eq!(
        nak.result.as_deref(),
        Some(vtp_core::node::NAK_STORE_UNAVAILABLE)
    );
}

#[test]
fn an_upstream_is_named_by_its_endpoint_and_its_loss_is_the_reconnects_reason() {
    let mut h = Harness::new(upstream_config());
    h.run_until(0.0);
    let up = h
        .actions
        .iter()
        .find_map(|a| match a {
            Action::Connect { conn, .. } => Some(*conn),
            _ => None,
        })
        .expect("a dial");
    h.take();
    h.node.handle_connected(up, h.now);
    h.drain();
    let endpoint = Remote::Dialled(Arc::from("127.0.0.1:8099"));
    assert!(h.events.contains(&Event::PeerUp {
        conn: up,
        role: ConnRole::Subscription,
        remote: endpoint.clone(),
        upstream: Some(0),
    }));
    h.run_until(2.0);
    for i in 0..2 {
        h.input(
            up,
            &framed(&event_xml(&format!("ivo://example.org/survey#u{i}"))),
        );
    }
    let accepted = h.events.iter().find_map(|e| match e {
        Event::Accepted { remote, .. } => Some(remote.clone()),
        _ => None,
    });
    assert_eq!(accepted, Some(endpoint.clone()), "from the upstream");
    h.input(up, &framed(&event_xml("ivo://example.org/survey#u0")));
    h.take();
    h.run_until(7.0);
    h.node.handle_closed(up, CloseReason::PeerClosed, h.now);
    h.drain();
    let down = h
        .events
        .iter()
        .position(|e| matches!(e, Event::PeerDown { conn, .. } if *conn == up))
        .expect("a PeerDown");
    let Event::PeerDown {
        remote,
        connected_for,
        events_received,
        events_sent,
        ..
    } = &h.events[down]
    else {
        unreachable!()
    };
    assert_eq!(*remote, endpoint);
    assert_eq!(*connected_for, Some(Duration::from_secs(7)));
    assert_eq!(
        (*events_received, *events_sent),
        (3, 0),
        "new and duplicate alike"
    );
    let Some(Event::Reconnecting {
        endpoint,
        reason,
        previous,
        ..
    }) = h.events.get(down + 1)
    else {
        panic!("the reconnect follows the PeerDown: {:?}", h.events);
    };
    assert_eq!(&**endpoint, "127.0.0.1:8099");
    assert_eq!(*reason, CloseReason::PeerClosed);
    assert_eq!(previous, endpoint, "one endpoint: no failover");
}

#[test]
fn a_failover_reconnect_names_the_endpoint_that_failed() {
    let mut c = broker_config();
    c.upstreams = vec![vtp_core::config::Upstream {
        endpoints: vec![
            DialAddr::tcp("192.0.2.1", 8099),
            DialAddr::Tls {
                host: "broker.example".into(),
                port: 8099,
            },
        ],
    }];
    let mut h = Harness::new(c);
    h.run_until(0.0);
    let up = h
        .take()
        .iter()
        .find_map(|a| match a {
            Action::Connect { conn, .. } => Some(*conn),
            _ => None,
        })
        .expect("a dial");
    let failed = CloseReason::ConnectFailed("no route to host".into());
    h.node.handle_closed(up, failed.clone(), h.now);
    h.drain();
    let reconnect = h.events.iter().find_map(|e| match e {
        Event::Reconnecting {
            endpoint,
            reason,
            previous,
            ..
        } => Some((endpoint.to_string(), reason.clone(), previous.to_string())),
        _ => None,
    });
    assert_eq!(
        reconnect,
        Some((
            "tls:broker.example:8099".into(),
            failed,
            "192.0.2.1:8099".into()
        ))
    );
}

#[test]
fn a_refused_dial_never_came_up_and_the_reconnect_says_refused() {
    let mut h = Harness::new(upstream_config());
    h.run_until(0.0);
    let up = h
        .take()
        .iter()
        .find_map(|a| match a {
            Action::Connect { conn, .. } => Some(*conn),
            _ => None,
        })
        .expect("a dial");
    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    h.node
        .handle_closed(up, CloseReason::connect_failed(&refused), h.now);
    h.drain();
    let Some(Event::PeerDown {
        reason,
        connected_for,
        ..
    }) = peer_down(&h.events, up)
    else {
        panic!("no PeerDown: {:?}", h.events);
    };
    assert_eq!(*reason, CloseReason::ConnectRefused);
    assert_eq!(*connected_for, None, "never up");
    let reconnect = h.events.iter().find_map(|e| match e {
        Event::Reconnecting { reason, .. } => Some(reason.class()),
        _ => None,
    });
    assert_eq!(reconnect, Some(CloseClass::Refused));
    let timeout = std::io::Error::from(std::io::ErrorKind::TimedOut);
    assert_eq!(
        CloseReason::connect_failed(&timeout).class(),
        CloseClass::Unreachable
    );
}

#[test]
fn per_address_limits_count_the_address_not_the_port() {
    let mut c = broker_config();
    c.limits.subscriber_connections_per_address = 2;
    let mut h = Harness::new(c);
    let from = |port| Peer::Tcp(SocketAddr::from(([192, 0, 2, 1], port)));
    for port in [40001, 40002] {
        assert!(
            h.node
                .handle_accept(ListenerRole::Broadcast, from(port), h.now)
                .is_some()
        );
    }
    assert_eq!(
        h.node
            .connections_from(ListenerRole::Broadcast, from(40003)),
        2
    );
    assert_eq!(
        h.node
            .handle_accept(ListenerRole::Broadcast, from(40003), h.now),
        None,
        "a third port of the same address is over the limit"
    );
    h.drain();
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::Refused { peer, .. } if peer.to_string() == "192.0.2.1:40003"
    )));
}
