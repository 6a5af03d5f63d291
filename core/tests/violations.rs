//! Peer faults as typed values: each fault the node detects is reported as a [`Violation`]
//! variant, and its `Display` is, byte for byte, the nak reason the node sent or the text it
//! logs (Comet-compatible texts that authors, scripts and the other tests compare).

mod common;

use common::*;
use vtp_core::frame::FrameError;
use vtp_core::ivoid::EventIdError;
use vtp_core::message::{ParseError, TransportRole, VoEventNamespace};
use vtp_core::schema::SchemaError;
use vtp_core::{Action, CloseReason, Config, ConnId, ConnRole, Event, ListenerRole, Violation};

/// Submits `bytes` on a fresh intake. Returns the violation of the one `Rejected` event; checks
/// that its text is the `Result` of the one nak sent.
fn rejected(h: &mut Harness, bytes: &[u8]) -> Violation {
    let a = h.accept(ListenerRole::Receive);
    h.take();
    h.input(a, bytes);
    let acts = std::mem::take(&mut h.actions);
    let events = std::mem::take(&mut h.events);
    let frames = frames_to(&acts, a);
    assert_eq!(frames.len(), 1, "exactly one reply: {acts:?}");
    let nak = transport(&frames[0]);
    assert_eq!(nak.role, TransportRole::Nak);
    assert_eq!(closed(&acts, a), Some(&CloseReason::Done));
    let mut reasons = events.into_iter().filter_map(|e| match e {
        Event::Rejected { conn, reason, .. } if conn == a => Some(reason),
        _ => None,
    });
    let violation = reasons.next().expect("a Rejected event");
    assert!(reasons.next().is_none(), "one Rejected event");
    assert_eq!(
        violation.to_string(),
        nak.result.as_deref().expect("a nak carries its reason"),
        "the violation's text is the nak's reason"
    );
    violation
}

/// Feeds `bytes` to `conn` and returns what the node reported about it: its violations, and
/// whether it closed the connection.
fn reported(h: &mut Harness, conn: ConnId, bytes: &[u8]) -> (Vec<Violation>, Vec<Action>) {
    h.take();
    h.input(conn, bytes);
    let acts = std::mem::take(&mut h.actions);
    let violations = std::mem::take(&mut h.events)
        .into_iter()
        .filter_map(|e| match e {
            Event::ProtocolViolation { conn: c, detail } if c == conn => Some(detail),
            _ => None,
        })
        .collect();
    (violations, acts)
}

/// The only violation reported for `bytes` on `conn`, with nothing written or closed.
fn ignored(h: &mut Harness, conn: ConnId, bytes: &[u8]) -> Violation {
    let (mut violations, acts) = reported(h, conn, bytes);
    assert!(
        frames_to(&acts, conn).is_empty(),
        "nothing written: {acts:?}"
    );
    assert!(closed(&acts, conn).is_none(), "kept open: {acts:?}");
    assert_eq!(violations.len(), 1, "{violations:?}");
    violations.remove(0)
}

fn transport_xml(role: &str, origin: &str) -> Vec<u8> {
    format!(
        "<trn:Transport xmlns:trn=\"http://telescope-networks.org/schema/Transport/v1.1\" \
         version=\"1.0\" role=\"{role}\"><Origin>{origin}</Origin>\
         <TimeStamp>2026-11-22T01:50:13.960722</TimeStamp></trn:Transport>"
    )
    .into_bytes()
}

// ---------------------------------------------------------------------- intake: naked

#[test]
fn a_schema_invalid_submission_is_a_schema_violation_whose_text_is_the_nak() {
    let mut h = Harness::broker();
    let ev = String::from_utf8(event_xml("ivo://example.org/survey#s1"))
        .unwrap()
        .replace("<Who>", "<Who><Institution>x</Institution>");
    let v = rejected(&mut h, &framed(ev.as_bytes()));
    let Violation::Schema(SchemaError::UnexpectedChild { element, child, .. }) = &v else {
        panic!("want a schema violation, got {v:?}");
    };
    assert_eq!(
        (element.as_str(), child.as_str()),
        ("VOEvent/Who", "Institution")
    );
    assert!(
        v.to_string()
            .starts_with("Event rejected: element VOEvent/Who: unexpected child 'Institution'"),
        "{v}"
    );
    assert_eq!(h.node.seen_len(), 0);
}

#[test]
fn a_bad_ivorn_is_a_bad_ivorn_violation_with_comets_reason() {
    let mut h = Harness::broker();
    let v = rejected(&mut h, &framed(&event_xml("ivo://a2#x")));
    let Violation::BadIvorn {
        on: ConnRole::Intake,
        ivorn,
        error: EventIdError::Invalid(e),
    } = &v
    else {
        panic!("want an invalid IVOID, got {v:?}");
    };
    assert_eq!(ivorn, "ivo://a2#x");
    assert_eq!(
        v.to_string(),
        format!("Event rejected: Invalid IVOID: ivo://a2#x ({e})")
    );

    let v = rejected(&mut h, &framed(&event_xml("ivo://example.org/survey")));
    assert!(
        matches!(
            &v,
            Violation::BadIvorn {
                on: ConnRole::Intake,
                error: EventIdError::NoLocalId,
                ..
            }
        ),
        "{v:?}"
    );
    assert_eq!(v.to_string(), "Event rejected: No per-event local ID");
}

#[test]
fn a_1_1_event_is_an_unsupported_version_when_only_2_0_is_accepted() {
    let mut h = Harness::broker();
    let ev = String::from_utf8(event_xml("ivo://example.org/s#1"))
        .unwrap()
        .replace("VOEvent/v2.0", "VOEvent/v1.1");
    let v = rejected(&mut h, &framed(ev.as_bytes()));
    assert_eq!(
        v,
        Violation::UnsupportedVersion {
            namespace: VoEventNamespace::V1_1,
            namespace_uri: Some("http://www.ivoa.net/xml/VOEvent/v1.1".into()),
        }
    );
    assert_eq!(
        v.to_string(),
        "Event rejected: this broker accepts only VOEvent 2.0 \
         (namespace http://www.ivoa.net/xml/VOEvent/v2.0); got VOEvent 1.1"
    );
}

#[test]
fn a_transport_message_or_garbage_from_an_author_is_naked_as_such() {
    let mut h = Harness::broker();
    let v = rejected(&mut h, &framed(&transport_xml("iamalive", LOCAL)));
    assert_eq!(
        v,
        Violation::UnexpectedTransport {
            role: TransportRole::IamAlive
        }
    );
    assert_eq!(
        v.to_string(),
        "Event rejected: expected a VOEvent, got a Transport message (role iamalive)"
    );

    let v = rejected(&mut h, &framed(b""));
    assert_eq!(
        v,
        Violation::Unparsable {
            on: ConnRole::Intake,
            error: ParseError::Empty
        }
    );
    assert_eq!(
        v.to_string(),
        "Event rejected: empty payload: a frame must carry one XML document"
    );
}

#[test]
fn an_oversize_prefix_is_a_frame_violation_naked_logged_and_closed_on() {
    let mut h = Harness::broker();
    let a = h.accept(ListenerRole::Receive);
    let (violations, acts) = reported(&mut h, a, &0x7fff_ffffu32.to_be_bytes());
    let [v] = violations.as_slice() else {
        panic!("one violation: {violations:?}");
    };
    let Violation::Frame(e @ FrameError::TooLong { len, .. }) = v else {
        panic!("want a framing violation, got {v:?}");
    };
    assert_eq!(*len, 0x7fff_ffff);
    // Logged as the frame error alone; the author's nak is in Comet's form; the close names it.
    assert_eq!(v.to_string(), e.to_string());
    let nak = transport(&frames_to(&acts, a)[0])
        .result
        .unwrap()
        .into_owned();
    assert_eq!(nak, format!("Event rejected: {v}"));
    let reason = closed(&acts, a).expect("closed");
    assert_eq!(reason, &CloseReason::FramingError(v.clone()));
    assert_eq!(reason.to_string(), format!("framing error: {v}"));
}

// ------------------------------------------------------------- feed and upstream: ignored

#[test]
fn a_subscriber_sending_an_event_or_garbage_is_logged_with_its_role() {
    let mut h = Harness::broker();
    let feed = h.accept(ListenerRole::Broadcast);
    let v = ignored(&mut h, feed, &framed(&event_xml("ivo://example.org/s#1")));
    assert_eq!(
        v,
        Violation::UnexpectedEvent {
            on: ConnRole::Feed,
            ivorn: "ivo://example.org/s#1".into(),
        }
    );
    assert_eq!(
        v.to_string(),
        "subscriber sent an event (ivo://example.org/s#1) where only Transport messages \
         belong; ignored"
    );

    let v = ignored(&mut h, feed, &framed(b""));
    assert_eq!(
        v,
        Violation::Unparsable {
            on: ConnRole::Feed,
            error: ParseError::Empty
        }
    );
    assert_eq!(
        v.to_string(),
        "unparsable message from subscriber, ignored: empty payload: a frame must carry one \
         XML document"
    );
}

#[test]
fn an_upstreams_receipt_garbage_or_bad_ivorn_is_logged_and_the_event_dropped() {
    let mut h = Harness::new(upstream_config());
    let (up, _feed) = h.connect_upstream_and_feed();
    let v = ignored(&mut h, up, &framed(&transport_xml("ack", LOCAL)));
    assert_eq!(
        v,
        Violation::UnsolicitedReceipt {
            role: TransportRole::Ack
        }
    );
    assert_eq!(
        v.to_string(),
        "upstream sent an unsolicited ack receipt, ignored"
    );

    let v = ignored(&mut h, up, &framed(b""));
    assert!(
        matches!(
            v,
            Violation::Unparsable {
                on: ConnRole::Subscription,
                error: ParseError::Empty
            }
        ),
        "{v:?}"
    );
    assert_eq!(
        v.to_string(),
        "unparsable message from upstream, ignored: empty payload: a frame must carry one XML \
         document"
    );

    // An event with a bad IVORN is acked (so the upstream keeps us) and dropped.
    let (violations, acts) = reported(&mut h, up, &framed(&event_xml("ivo://a2#1")));
    let f = frames_to(&acts, up);
    assert_eq!(f.len(), 1);
    assert_eq!(transport(&f[0]).role, TransportRole::Ack);
    assert_eq!(deliveries(&acts), 0);
    let [v] = violations.as_slice() else {
        panic!("one violation: {violations:?}");
    };
    assert!(
        matches!(
            v,
            Violation::BadIvorn {
                on: ConnRole::Subscription,
                error: EventIdError::Invalid(_),
                ..
            }
        ),
        "{v:?}"
    );
    assert_eq!(
        v.to_string(),
        "event with invalid IVORN ivo://a2#1 dropped: event IVORN is not a valid IVOID"
    );
}

#[test]
fn a_broker_answering_our_submission_with_something_else_is_logged() {
    let ev = event_xml("ivo://example.org/s#7");
    let mut h = Harness::new(Config::default());
    let c = h
        .node
        .submit(
            vtp_core::endpoint::DialAddr::tcp("127.0.0.1", 8098),
            &ev,
            h.now,
        )
        .unwrap();
    h.node.handle_connected(c, h.now);

    let v = ignored(&mut h, c, &framed(&transport_xml("iamalive", LOCAL)));
    assert_eq!(
        v,
        Violation::NotOurReceipt {
            role: TransportRole::IamAlive,
            origin: LOCAL.into(),
            ivorn: "ivo://example.org/s#7".into(),
        }
    );
    assert_eq!(
        v.to_string(),
        "broker sent iamalive with Origin \"ivo://example.org/broker\", not a receipt for \
         ivo://example.org/s#7; ignored"
    );

    // A nak naming another event is no refusal of ours: reported and ignored, like an ack.
    let v = ignored(
        &mut h,
        c,
        &framed(&transport_xml("nak", "ivo://example.org/s#6")),
    );
    assert_eq!(
        v,
        Violation::NotOurReceipt {
            role: TransportRole::Nak,
            origin: "ivo://example.org/s#6".into(),
            ivorn: "ivo://example.org/s#7".into(),
        }
    );

    let v = ignored(&mut h, c, &framed(&event_xml("ivo://example.org/s#8")));
    assert_eq!(
        v,
        Violation::UnexpectedEvent {
            on: ConnRole::Submission,
            ivorn: "ivo://example.org/s#8".into(),
        }
    );
    assert_eq!(
        v.to_string(),
        "broker sent an event (ivo://example.org/s#8) where only Transport messages belong; \
         ignored"
    );

    // The submission is still waiting: its own nak refuses it and closes the connection.
    h.take();
    h.input(c, &framed(&transport_xml("nak", "ivo://example.org/s#7")));
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, Event::SubmissionNaked { conn, .. } if *conn == c)),
        "{:?}",
        h.events
    );
    assert!(closed(&h.actions, c).is_some());
}
