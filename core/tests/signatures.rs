//! Signature policy in the node: the status of every new event from authors, upstreams and
//! external sources, what `require` refuses and how, the bindings of keys to streams, and the
//! node's own signature on what it originates. The cryptography here is the core's test double
//! (`DigestVerifier`); the OpenPGP verifier is tested in `vtp-sig` against GnuPG.

mod common;

use bytes::Bytes;
use common::*;
use vtp_core::config::SignaturePolicy;
use vtp_core::message::{self, Message};
use vtp_core::signature::{AuthorKey, StatusKind, append_signature};
use vtp_core::testing::{DigestSigner, DigestVerifier};
use vtp_core::{Action, ConnRole, Event, ListenerRole, Position, Violation};

const FP_A: &str = "0123456789ABCDEF0123456789ABCDEF01234567";
const FP_B: &str = "89ABCDEF0123456789ABCDEF0123456789ABCDEF";

fn verifier() -> Box<DigestVerifier> {
    Box::new(DigestVerifier {
        keys: vec![
            (FP_A.into(), "Alice <a@example.org>".into()),
            (FP_B.into(), "Bob <b@example.org>".into()),
        ],
    })
}

fn harness(policy: SignaturePolicy) -> Harness {
    let mut c = upstream_config();
    c.policy.signatures = policy;
    let mut h = Harness::new(c);
    h.node.set_verifier(Some(verifier()));
    h
}

fn element(payload: &[u8]) -> std::ops::Range<usize> {
    match message::parse(payload, &Default::default()) {
        Ok(Message::VoEvent(ev)) => ev.element,
        other => panic!("{other:?}"),
    }
}

/// `event_xml(ivorn)` signed by `fp`.
fn signed(ivorn: &str, fp: &str) -> Vec<u8> {
    let payload = event_xml(ivorn);
    let span = element(&payload);
    let armour = DigestSigner::new(fp).armour(&payload[span.clone()]);
    append_signature(&payload, span, &armour).expect("signable")
}

fn tampered(ivorn: &str) -> Vec<u8> {
    let mut p = signed(ivorn, FP_A);
    let span = element(&p);
    // A byte of the element's text: the ivorn's last character.
    let at = span.start
        + p[span.clone()]
            .iter()
            .position(|&b| b == b'#')
            .expect("an ivorn")
        + 1;
    p[at] = if p[at] == b'x' { b'y' } else { b'x' };
    p
}

fn submit(h: &mut Harness, payload: &[u8]) -> Submitted {
    let author = h.accept(ListenerRole::Receive);
    h.take();
    h.input(author, &framed(payload));
    h.drain();
    let events = std::mem::take(&mut h.events);
    let actions = std::mem::take(&mut h.actions);
    let receipt = frames_to(&actions, author)
        .first()
        .map(|f| transport(f).role.as_str().to_owned())
        .unwrap_or_default();
    let nak_reason = frames_to(&actions, author)
        .first()
        .and_then(|f| transport(f).result.map(|r| r.into_owned()));
    Submitted {
        receipt,
        nak_reason,
        actions,
        events,
    }
}

struct Submitted {
    receipt: String,
    nak_reason: Option<String>,
    actions: Vec<Action>,
    events: Vec<Event>,
}

fn delivered(actions: &[Action]) -> Vec<vtp_core::Delivery> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Deliver(d) => Some(d.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn verify_reports_every_status_and_refuses_none() {
    let mut h = harness(SignaturePolicy::Verify);
    let (_, feed) = h.connect_upstream_and_feed();
    let cases: [(Vec<u8>, StatusKind); 4] = [
        (event_xml("ivo://example.org/s#u"), StatusKind::Unsigned),
        (signed("ivo://example.org/s#v", FP_A), StatusKind::Valid),
        (tampered("ivo://example.org/s#t"), StatusKind::Invalid),
        (
            format!(
                "{}<!-- BEGIN PGP SIGNATURE, broken -->",
                String::from_utf8(event_xml("ivo://example.org/s#m")).unwrap()
            )
            .into_bytes(),
            StatusKind::Malformed,
        ),
    ];
    let mut events = Vec::new();
    for (payload, status) in cases {
        let mut out = submit(&mut h, &payload);
        events.append(&mut out.events);
        assert_eq!(out.receipt, "ack", "{status}");
        let d = delivered(&out.actions);
        assert_eq!(d.len(), 1, "{status}");
        let s = d[0]
            .signature
            .as_ref()
            .expect("a status with signatures on");
        assert_eq!(s.status, status);
        // Forwarded byte-exact, signature comment included.
        let fwd = frames_to(&out.actions, feed);
        assert_eq!(&fwd[0][4..], &payload[..], "{status}");
    }
    // The valid one names its signer; the accepted event carries the status for logs.
    assert!(events.iter().any(|e| matches!(e,
        Event::Accepted { signature: Some(s), .. }
            if s.status == StatusKind::Valid && &*s.signer.as_ref().unwrap().user_id == "Alice <a@example.org>")));
}

#[test]
fn require_naks_an_author_unless_valid_and_says_why() {
    let mut h = harness(SignaturePolicy::Require);
    let (_, feed) = h.connect_upstream_and_feed();
    let out = submit(&mut h, &event_xml("ivo://example.org/s#1"));
    assert_eq!(out.receipt, "nak");
    assert_eq!(
        out.nak_reason.as_deref(),
        Some(
            "Event rejected: a valid OpenPGP signature is required; this event's signature is unsigned"
        )
    );
    assert!(frames_to(&out.actions, feed).is_empty());
    let out = submit(&mut h, &tampered("ivo://example.org/s#1"));
    assert_eq!(out.receipt, "nak");
    assert!(
        out.nak_reason
            .as_deref()
            .unwrap()
            .ends_with("signature is invalid: digest mismatch"),
        "{:?}",
        out.nak_reason
    );
    assert!(out.events.iter().any(|e| matches!(
        e,
        Event::Rejected {
            reason: Violation::Signature {
                on: ConnRole::Intake,
                ..
            },
            ..
        }
    )));
    // Refused events were not recorded: the same element, signed, is new and goes through.
    let good = signed("ivo://example.org/s#1", FP_A);
    let out = submit(&mut h, &good);
    assert_eq!(out.receipt, "ack");
    assert_eq!(&frames_to(&out.actions, feed)[0][4..], &good[..]);
    assert_eq!(
        Violation::Signature {
            on: ConnRole::Intake,
            ivorn: String::new(),
            signature: vtp_core::signature::Signature::unsigned(),
        }
        .kind(),
        "signature"
    );
}

#[test]
fn require_acks_and_drops_an_upstreams_bad_event_and_keeps_the_upstream() {
    let mut h = harness(SignaturePolicy::Require);
    let (upstream, feed) = h.connect_upstream_and_feed();
    h.input(upstream, &framed(&event_xml("ivo://example.org/s#1")));
    h.drain();
    let actions = std::mem::take(&mut h.actions);
    assert_eq!(
        transport(&frames_to(&actions, upstream)[0]).role.as_str(),
        "ack"
    );
    assert!(frames_to(&actions, feed).is_empty());
    assert!(closed(&actions, upstream).is_none());
    assert!(h.events.iter().any(|e| matches!(e,
        Event::ProtocolViolation { detail: v @ Violation::Signature { on: ConnRole::Subscription, .. }, .. }
            if v.to_string() == "event ivo://example.org/s#1 from upstream dropped: a valid OpenPGP signature is required; its signature is unsigned")));
    let good = signed("ivo://example.org/s#1", FP_B);
    h.input(upstream, &framed(&good));
    let actions = h.take();
    assert_eq!(&frames_to(&actions, feed)[0][4..], &good[..]);
    // Dropping for a signature is no fault of the upstream's: 200 of them do not close it.
    for i in 0..200 {
        h.input(
            upstream,
            &framed(&event_xml(&format!("ivo://example.org/s#n{i}"))),
        );
    }
    assert!(closed(&h.take(), upstream).is_none());
}

#[test]
fn require_skips_an_external_record_and_commits_past_it() {
    let mut h = harness(SignaturePolicy::Require);
    let src = h.node.open_external("kafka:test", h.now);
    h.node
        .handle_external(
            src,
            Position { lane: 0, offset: 7 },
            &event_xml("ivo://example.org/s#1"),
            h.now,
        )
        .unwrap();
    h.drain();
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::ExternalSkipped {
            reason: Violation::Signature {
                on: ConnRole::External,
                ..
            },
            ..
        }
    )));
    assert!(
        h.actions
            .iter()
            .any(|a| matches!(a, Action::Commit { next_offset: 8, .. }))
    );
    assert_eq!(deliveries(&h.actions), 0);
}

#[test]
fn bindings_make_a_valid_signature_by_the_wrong_key_invalid_signer() {
    let mut c = upstream_config();
    c.policy.signatures = SignaturePolicy::Require;
    c.author_keys = vec![AuthorKey::parse(&format!("ivo://example.org/s={FP_A}")).unwrap()];
    let mut h = Harness::new(c);
    h.node.set_verifier(Some(verifier()));
    let out = submit(&mut h, &signed("ivo://example.org/s#1", FP_B));
    assert_eq!(out.receipt, "nak");
    let reason = out.nak_reason.unwrap();
    assert!(
        reason.contains("signature is invalid-signer: key"),
        "{reason}"
    );
    // The nak does not name the trusted signer's user id.
    assert!(!reason.contains("Bob"), "{reason}");
    let out = submit(&mut h, &signed("ivo://example.org/other#1", FP_A));
    assert_eq!(out.receipt, "nak");
    let out = submit(&mut h, &signed("ivo://example.org/s#1", FP_A));
    assert_eq!(out.receipt, "ack");
}

#[test]
fn off_looks_at_nothing_and_a_duplicate_is_not_verified_again() {
    let mut h = harness(SignaturePolicy::Off);
    let out = submit(&mut h, &tampered("ivo://example.org/s#1"));
    assert_eq!(out.receipt, "ack");
    assert_eq!(delivered(&out.actions)[0].signature, None);

    let mut h = harness(SignaturePolicy::Require);
    let good = signed("ivo://example.org/s#1", FP_A);
    assert_eq!(submit(&mut h, &good).receipt, "ack");
    // The same element with its signature stripped is the same event: a duplicate, acked
    // (VTP 2.0) and not forwarded, whatever its signature.
    let out = submit(&mut h, &event_xml("ivo://example.org/s#1"));
    assert_eq!(out.receipt, "ack");
    assert!(
        out.actions
            .iter()
            .any(|a| matches!(a, Action::DropDuplicate { .. }))
    );
}

#[test]
fn the_node_signs_its_test_events_and_authenticate_replies() {
    let mut c = upstream_config();
    c.timing.test_event_interval = Some(std::time::Duration::from_secs(60));
    let mut h = Harness::new(c);
    h.node.set_verifier(Some(verifier()));
    h.node.set_signer(Some(Box::new(DigestSigner::new(FP_A))));
    let (upstream, feed) = h.connect_upstream_and_feed();
    h.run_until(61.0);
    let test_event: Bytes = frames_to(&h.take(), feed)
        .into_iter()
        .find(|f| {
            matches!(
                message::parse(&f[4..], &Default::default()),
                Ok(Message::VoEvent(_))
            )
        })
        .expect("a test event");
    let payload = &test_event[4..];
    let status =
        vtp_core::signature::status_of(payload, element(payload), "", Some(&*verifier()), &[]);
    assert_eq!(
        status.status,
        StatusKind::Valid,
        "{}",
        String::from_utf8_lossy(payload)
    );
    // An authenticate reply, signed by the same convention over the Transport element.
    let auth = vtp_core::message::build_transport(
        vtp_core::message::TransportRole::Authenticate,
        "ivo://upstream.org/broker",
        None,
        "2024-05-01T12:00:00",
        &[],
        None,
    );
    h.input(upstream, &auth);
    let reply = frames_to(&h.take(), upstream).remove(0);
    let text = String::from_utf8_lossy(&reply[4..]).into_owned();
    assert!(
        text.contains("</trn:Transport>\n<!--\n=====BEGIN PGP SIGNATURE====="),
        "{text}"
    );
    assert_eq!(transport(&reply).role.as_str(), "authenticate");

    // A signer that fails: the message goes out unsigned, and the node says why.
    let mut fail = DigestSigner::new(FP_A);
    fail.fail = true;
    h.node.set_signer(Some(Box::new(fail)));
    h.input(upstream, &auth);
    h.drain();
    let reply = frames_to(&std::mem::take(&mut h.actions), upstream).remove(0);
    assert!(!String::from_utf8_lossy(&reply[4..]).contains("PGP SIGNATURE"));
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, Event::SigningFailed { reason } if reason.contains("refuses")))
    );
}
