//! `Durability::BeforeReply`: receipts, forwards and deliveries wait for the seen-index record,
//! in virtual time, with durability reported by hand.

mod common;

use bytes::Bytes;
use common::*;
use vtp_core::config::{DeliveryTiming, Durability};
use vtp_core::message::TransportRole;
use vtp_core::{Action, CloseReason, ConnId, ListenerRole};

/// A broker whose store reports nothing until told to, with one subscriber.
fn broker() -> (Harness, ConnId) {
    let mut h = Harness::broker();
    h.auto_persist = false;
    h.run_until(0.0);
    let feed = h.accept(ListenerRole::Broadcast);
    h.take();
    (h, feed)
}

fn kinds(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::Persist(_) => "persist".to_owned(),
            Action::Ack { conn, .. } => format!("ack {conn}"),
            Action::Nak { conn, .. } => format!("nak {conn}"),
            Action::Close { conn, .. } => format!("close {conn}"),
            Action::Forward { conn, .. } => format!("forward {conn}"),
            Action::Deliver(d) => format!("deliver {}", d.ivorn),
            Action::DropDuplicate { conn, .. } => format!("duplicate {conn}"),
            other => format!("{other:?}"),
        })
        .collect()
}

/// A framed iamalive from `origin`.
fn iamalive(origin: &str) -> Bytes {
    framed(
        format!(
            "<trn:Transport xmlns:trn='http://www.telescope-networks.org/xml/Transport/v1.1' \
             version='1.0' role='iamalive'><Origin>{origin}</Origin></trn:Transport>"
        )
        .as_bytes(),
    )
}

fn submit(h: &mut Harness, ivorn: &str) -> ConnId {
    let a = h.accept(ListenerRole::Receive);
    h.input(a, &framed(&event_xml(ivorn)));
    a
}

#[test]
fn a_new_event_is_acked_forwarded_and_delivered_only_once_its_record_is_durable() {
    let (mut h, feed) = broker();
    let a = submit(&mut h, "ivo://example.org/survey#d1");
    assert_eq!(
        kinds(&h.take()),
        ["persist"],
        "nothing but the record goes out"
    );
    assert!(h.node.reply_pending(a));
    assert_eq!(h.node.persists(), 1);
    assert_eq!(h.node.held(), 4);
    assert!(
        h.node.poll_timeout().is_some_and(|t| t > h.now),
        "held output is no reason to wake up: the driver learns of durability from the store"
    );

    h.persisted(1);
    let acts = h.take();
    assert_eq!(
        kinds(&acts),
        [
            format!("ack {a}"),
            format!("close {a}"),
            format!("forward {feed}"),
            "deliver ivo://example.org/survey#d1".to_owned(),
        ]
    );
    assert_eq!(closed(&acts, a), Some(&CloseReason::Done));
    assert!(!h.node.reply_pending(a));
    assert_eq!(h.node.held(), 0);
    assert_eq!(
        h.node.connections(),
        1,
        "the intake is gone, the feed stays"
    );
}

#[test]
fn held_output_is_released_in_order_up_to_the_count() {
    let (mut h, feed) = broker();
    let a1 = submit(&mut h, "ivo://example.org/survey#o1");
    let a2 = submit(&mut h, "ivo://example.org/survey#o2");
    let a3 = submit(&mut h, "ivo://example.org/survey#o3");
    assert_eq!(kinds(&h.take()), ["persist", "persist", "persist"]);

    h.persisted(2);
    let acts = h.take();
    assert_eq!(
        kinds(&acts),
        [
            format!("ack {a1}"),
            format!("close {a1}"),
            format!("forward {feed}"),
            "deliver ivo://example.org/survey#o1".to_owned(),
            format!("ack {a2}"),
            format!("close {a2}"),
            format!("forward {feed}"),
            "deliver ivo://example.org/survey#o2".to_owned(),
        ]
    );
    assert!(h.node.reply_pending(a3));

    // A stale or repeated count changes nothing.
    h.persisted(1);
    h.persisted(2);
    assert!(h.take().is_empty());

    h.persisted(3);
    assert_eq!(
        kinds(&h.take()),
        [
            format!("ack {a3}"),
            format!("close {a3}"),
            format!("forward {feed}"),
            "deliver ivo://example.org/survey#o3".to_owned(),
        ]
    );
}

#[test]
fn a_duplicates_receipt_waits_for_the_original_record() {
    let (mut h, feed) = broker();
    let a1 = submit(&mut h, "ivo://example.org/survey#dup");
    let a2 = submit(&mut h, "ivo://example.org/survey#dup");
    assert_eq!(
        kinds(&h.take()),
        ["persist".to_owned(), format!("duplicate {a2}")],
        "the duplicate's ack would promise a record that is not durable yet"
    );
    assert!(h.node.reply_pending(a2));

    h.persisted(1);
    assert_eq!(
        kinds(&h.take()),
        [
            format!("ack {a1}"),
            format!("close {a1}"),
            format!("forward {feed}"),
            "deliver ivo://example.org/survey#dup".to_owned(),
            format!("ack {a2}"),
            format!("close {a2}"),
        ],
        "forwarded once; both authors acked, the original first"
    );

    // With nothing pending, a duplicate is answered at once.
    let a3 = submit(&mut h, "ivo://example.org/survey#dup");
    assert_eq!(
        kinds(&h.take()),
        [
            format!("duplicate {a3}"),
            format!("ack {a3}"),
            format!("close {a3}")
        ]
    );
}

#[test]
fn naks_are_never_held() {
    let (mut h, _feed) = broker();
    let _a1 = submit(&mut h, "ivo://example.org/survey#n1");
    h.take();
    let bad = submit(&mut h, "ivo://a2#x");
    let acts = h.take();
    assert_eq!(kinds(&acts), [format!("nak {bad}"), format!("close {bad}")]);
    assert_eq!(
        transport(&frames_to(&acts, bad)[0]).role,
        TransportRole::Nak
    );
}

#[test]
fn the_intake_deadline_closes_without_a_receipt_while_the_record_is_pending() {
    let (mut h, feed) = broker();
    let a = submit(&mut h, "ivo://example.org/survey#slow");
    h.take();
    h.run_until(20.0);
    let acts = h.take();
    assert_eq!(closed(&acts, a), Some(&CloseReason::IntakeDeadline));
    assert!(
        frames_to(&acts, a).is_empty(),
        "no receipt without the record"
    );
    assert!(!h.node.reply_pending(a));

    // The record lands late: subscribers and handlers still get the event; the author, gone,
    // gets nothing (and will resubmit: a duplicate by then).
    h.persisted(1);
    assert_eq!(
        kinds(&h.take()),
        [
            format!("forward {feed}"),
            "deliver ivo://example.org/survey#slow".to_owned()
        ]
    );
}

#[test]
fn a_half_closed_author_still_gets_its_held_receipt() {
    let (mut h, _feed) = broker();
    let a = submit(&mut h, "ivo://example.org/survey#half");
    h.take();
    h.node.handle_closed(a, CloseReason::PeerClosed, h.now);
    assert!(h.node.reply_pending(a), "end of stream may be a half-close");
    // More bytes on it are ignored, as on any answered intake.
    h.input(a, &framed(&event_xml("ivo://example.org/survey#more")));
    h.input(a, b"\xff\xff\xff\xffgarbage");
    assert!(h.take().is_empty());
    assert_eq!(h.node.persists(), 1);

    h.persisted(1);
    let acts = h.take();
    assert_eq!(frames_to(&acts, a).len(), 1);
    assert_eq!(closed(&acts, a), Some(&CloseReason::Done));

    // Any other end of the connection drops the receipt.
    let b = submit(&mut h, "ivo://example.org/survey#gone");
    h.take();
    h.node
        .handle_closed(b, CloseReason::ConnectFailed("reset".into()), h.now);
    assert!(!h.node.reply_pending(b));
    h.persisted(2);
    let acts = h.take();
    assert!(frames_to(&acts, b).is_empty());
    assert_eq!(closed(&acts, b), None);
}

#[test]
fn forwards_go_to_the_subscribers_connected_when_the_record_is_durable() {
    let (mut h, feed) = broker();
    let other = h.accept(ListenerRole::Broadcast);
    h.take();
    let _a = submit(&mut h, "ivo://example.org/survey#left");
    h.node.handle_closed(feed, CloseReason::PeerClosed, h.now);
    let late = h.accept(ListenerRole::Broadcast);
    h.take();
    h.persisted(1);
    assert_eq!(forwards(&h.take()), [other, late]);
}

#[test]
fn held_forwards_do_not_count_as_unacknowledged_until_they_are_sent() {
    let (mut h, feed) = broker();
    for i in 0..12 {
        submit(&mut h, &format!("ivo://example.org/survey#burst-{i}"));
    }
    h.take();
    h.run_until(60.0);
    let acts = h.take();
    assert_eq!(
        closed(&acts, feed),
        None,
        "the feed has not seen those events yet"
    );
    assert_eq!(frames_to(&acts, feed).len(), 1, "its iamalive");
    h.input(feed, &iamalive("ivo://sub"));
    h.persisted(12);
    assert_eq!(forwards(&h.take()).len(), 12);
    // Sent and never acked: they count once a whole period old (the tick after next).
    h.run_until(120.0);
    assert_eq!(closed(&h.take(), feed), None, "younger than a period");
    h.input(feed, &iamalive("ivo://sub"));
    h.run_until(180.0);
    assert_eq!(
        closed(&h.take(), feed),
        Some(&CloseReason::OutstandingAcks(12))
    );
}

#[test]
fn the_ack_to_an_upstream_waits_for_the_record_and_iamalives_do_not() {
    let mut h = Harness::new(upstream_config());
    h.auto_persist = false;
    let (up, feed) = h.connect_upstream_and_feed();

    let mut stream = framed(&event_xml("ivo://example.org/survey#u1")).to_vec();
    stream.extend_from_slice(&framed(&event_xml("ivo://example.org/survey#u1")));
    stream.extend_from_slice(&iamalive("ivo://up/x"));
    h.input(up, &stream);
    let acts = h.take();
    assert_eq!(
        acts.len(),
        2,
        "the event's and the duplicate's acks are held: {acts:?}"
    );
    assert!(matches!(acts[0], Action::Persist(_)));
    assert!(
        matches!(acts[1], Action::IamAlive { conn, .. } if conn == up),
        "an iamalive reply promises nothing: not held"
    );

    h.persisted(1);
    assert_eq!(
        kinds(&h.take()),
        [
            format!("ack {up}"),
            format!("forward {feed}"),
            "deliver ivo://example.org/survey#u1".to_owned(),
            format!("ack {up}"),
            format!("duplicate {up}"),
        ]
    );
}

#[test]
fn shutdown_closes_an_intake_whose_receipt_is_held_without_a_receipt() {
    let (mut h, _feed) = broker();
    let a = submit(&mut h, "ivo://example.org/survey#bye");
    h.take();
    h.node.shutdown(h.now);
    h.drain();
    let acts = h.take();
    assert_eq!(closed(&acts, a), Some(&CloseReason::Shutdown));
    h.persisted(1);
    let acts = h.take();
    assert!(frames_to(&acts, a).is_empty(), "{acts:?}");
    assert_eq!(
        kinds(&acts),
        ["deliver ivo://example.org/survey#bye"],
        "handlers still see an event whose record is durable"
    );
}

#[test]
fn async_durability_replies_at_once() {
    let mut c = broker_config();
    c.policy.durability = Durability::Async;
    let mut h = Harness::new(c);
    h.auto_persist = false;
    let feed = h.accept(ListenerRole::Broadcast);
    h.take();
    let a = submit(&mut h, "ivo://example.org/survey#async");
    assert_eq!(
        kinds(&h.take()),
        [
            "persist".to_owned(),
            format!("ack {a}"),
            format!("close {a}"),
            format!("forward {feed}"),
            "deliver ivo://example.org/survey#async".to_owned(),
        ]
    );
    assert_eq!(h.node.held(), 0);
    assert!(!h.node.reply_pending(a));
    // A duplicate while the record is on its way: also answered at once.
    let b = submit(&mut h, "ivo://example.org/survey#async");
    assert_eq!(
        kinds(&h.take()),
        [
            format!("duplicate {b}"),
            format!("ack {b}"),
            format!("close {b}")
        ]
    );
    h.persisted(1);
    assert!(h.take().is_empty());
}

#[test]
fn with_delivery_before_record_the_delivery_precedes_the_persist_and_is_never_held() {
    let mut c = broker_config();
    c.policy.delivery_timing = DeliveryTiming::BeforeRecord;
    let mut h = Harness::new(c);
    h.auto_persist = false;
    h.run_until(0.0);
    let feed = h.accept(ListenerRole::Broadcast);
    h.take();
    let a = submit(&mut h, "ivo://example.org/survey#ahead");
    assert_eq!(
        kinds(&h.take()),
        ["deliver ivo://example.org/survey#ahead", "persist"],
        "the delivery goes first, so a store committing in order makes it durable first"
    );
    assert!(h.node.reply_pending(a));
    h.persisted(1);
    assert_eq!(
        kinds(&h.take()),
        [
            format!("ack {a}"),
            format!("close {a}"),
            format!("forward {feed}")
        ],
        "the receipt still waits for the record; no second delivery"
    );
    // A duplicate is not delivered at all.
    let b = submit(&mut h, "ivo://example.org/survey#ahead");
    assert_eq!(
        kinds(&h.take()),
        [
            format!("duplicate {b}"),
            format!("ack {b}"),
            format!("close {b}")
        ]
    );
}

#[test]
fn with_delivery_before_record_an_upstream_event_is_delivered_before_its_persist() {
    let mut c = upstream_config();
    c.policy.delivery_timing = DeliveryTiming::BeforeRecord;
    let mut h = Harness::new(c);
    h.auto_persist = false;
    let (up, feed) = h.connect_upstream_and_feed();
    h.input(up, &framed(&event_xml("ivo://example.org/survey#u2")));
    assert_eq!(
        kinds(&h.take()),
        ["deliver ivo://example.org/survey#u2", "persist"]
    );
    h.persisted(1);
    assert_eq!(
        kinds(&h.take()),
        [format!("ack {up}"), format!("forward {feed}")]
    );
}
