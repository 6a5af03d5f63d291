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
    let status = vtp_core::signature::status_of(
        payload,
        element(payload),
        None,
        "",
        Some(&*verifier()),
        &[],
    );
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

/// The `Verify` jobs among `actions`.
fn jobs(actions: &[Action]) -> Vec<vtp_core::signature::VerifyJob> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Verify(job) => Some(job.clone()),
            _ => None,
        })
        .collect()
}

/// Runs each job and hands its verdict back, then collects what the node did.
fn answer(h: &mut Harness, jobs: &[vtp_core::signature::VerifyJob]) -> Vec<Action> {
    for job in jobs {
        let now = h.now;
        h.node.handle_verdict(job.id(), job.run(), now);
    }
    h.drain();
    std::mem::take(&mut h.actions)
}

#[test]
fn offloaded_verification_holds_the_receipt_and_decides_as_in_place() {
    let cases = [
        (signed("ivo://example.org/s#v", FP_A), "ack", None),
        (tampered("ivo://example.org/s#t"), "nak", Some("invalid")),
        (
            signed(
                "ivo://example.org/s#k",
                "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
            ),
            "nak",
            Some("unknown-key"),
        ),
    ];
    for (payload, receipt, reason) in cases {
        // In place, the reference.
        let mut inline = harness(SignaturePolicy::Require);
        let reference = submit(&mut inline, &payload);
        assert_eq!(reference.receipt, receipt);
        assert!(jobs(&reference.actions).is_empty());

        let mut h = harness(SignaturePolicy::Require);
        h.node.set_verify_offload(8);
        let (_, feed) = h.connect_upstream_and_feed();
        let author = h.accept(ListenerRole::Receive);
        h.take();
        h.input(author, &framed(&payload));
        h.drain();
        let parked = std::mem::take(&mut h.actions);
        let waiting = jobs(&parked);
        assert_eq!(waiting.len(), 1, "{parked:?}");
        assert!(frames_to(&parked, author).is_empty(), "no receipt yet");
        assert!(forwards(&parked).is_empty() && delivered(&parked).is_empty());
        assert_eq!(h.node.verifying(), 1);
        // More bytes from the author while it waits are ignored, like after a receipt.
        h.input(author, b"junk");
        h.drain();
        assert!(frames_to(&h.take(), author).is_empty());

        let done = answer(&mut h, &waiting);
        assert_eq!(h.node.verifying(), 0);
        let frames = frames_to(&done, author);
        assert_eq!(frames.len(), 1, "{done:?}");
        let t = transport(&frames[0]);
        assert_eq!(t.role.as_str(), receipt);
        if let Some(reason) = reason {
            let text = t.result.map(|r| r.into_owned()).unwrap_or_default();
            assert!(text.contains(reason), "{text}");
            assert_eq!(Some(text), reference.nak_reason);
            assert!(forwards(&done).is_empty());
        } else {
            assert_eq!(forwards(&done), vec![feed]);
            let d = delivered(&done);
            assert_eq!(d.len(), 1);
            assert_eq!(
                d[0].signature.as_ref().map(|s| s.status),
                Some(StatusKind::Valid)
            );
        }
        assert!(closed(&done, author).is_some(), "the intake ends: {done:?}");
    }
}

#[test]
fn offload_leaves_unsigned_events_and_duplicates_in_place_and_is_bounded() {
    let mut h = harness(SignaturePolicy::Require);
    h.node.set_verify_offload(1);
    // Unsigned: decided at once, no job.
    let out = submit(&mut h, &event_xml("ivo://example.org/s#u"));
    assert_eq!(out.receipt, "nak");
    assert!(jobs(&out.actions).is_empty());
    // The first signed submission is parked; the second, beyond the bound, verified in place.
    let first = submit(&mut h, &signed("ivo://example.org/s#1", FP_A));
    assert_eq!(first.receipt, "");
    let waiting = jobs(&first.actions);
    assert_eq!(waiting.len(), 1);
    let second = submit(&mut h, &signed("ivo://example.org/s#2", FP_A));
    assert_eq!(second.receipt, "ack");
    assert!(jobs(&second.actions).is_empty());
    let done = answer(&mut h, &waiting);
    let acks = done.iter().filter(|a| matches!(a, Action::Ack { .. }));
    assert_eq!(acks.count(), 1, "{done:?}");
    assert_eq!(delivered(&done).len(), 1, "{done:?}");
    // A duplicate of an accepted event is not verified again.
    let again = submit(&mut h, &signed("ivo://example.org/s#2", FP_A));
    assert_eq!(again.receipt, "ack");
    assert!(jobs(&again.actions).is_empty());
}

#[test]
fn an_author_gone_before_the_verdict_gets_nothing_and_nothing_is_accepted() {
    let mut h = harness(SignaturePolicy::Verify);
    h.node.set_verify_offload(8);
    let (_, feed) = h.connect_upstream_and_feed();
    let author = h.accept(ListenerRole::Receive);
    h.take();
    let payload = signed("ivo://example.org/s#gone", FP_A);
    h.input(author, &framed(&payload));
    h.drain();
    let waiting = jobs(&h.take());
    assert_eq!(waiting.len(), 1);
    let now = h.now;
    h.node
        .handle_closed(author, vtp_core::CloseReason::IntakeDeadline, now);
    h.drain();
    h.take();
    let done = answer(&mut h, &waiting);
    assert!(done.is_empty(), "{done:?}");
    assert_eq!(h.node.verifying(), 0);
    // Not accepted: the same event submitted again is new, and forwarded.
    let again = submit(&mut h, &payload);
    let waiting = jobs(&again.actions);
    let done = answer(&mut h, &waiting);
    assert_eq!(forwards(&done), vec![feed]);
    // An unknown job number is ignored.
    let now = h.now;
    h.node.handle_verdict(
        9_999,
        vtp_core::signature::Verdict::Invalid("x".into()),
        now,
    );
    h.drain();
    assert!(h.take().is_empty());
}

#[test]
fn a_half_closed_author_still_gets_its_receipt_after_the_verdict() {
    let mut h = harness(SignaturePolicy::Require);
    h.node.set_verify_offload(8);
    let author = h.accept(ListenerRole::Receive);
    h.take();
    h.input(author, &framed(&signed("ivo://example.org/s#h", FP_A)));
    h.drain();
    let waiting = jobs(&h.take());
    let now = h.now;
    h.node
        .handle_closed(author, vtp_core::CloseReason::PeerClosed, now);
    let done = answer(&mut h, &waiting);
    let frames = frames_to(&done, author);
    assert_eq!(frames.len(), 1, "{done:?}");
    assert_eq!(transport(&frames[0]).role.as_str(), "ack");
}

/// Effects that keep the `Verify` jobs they are given (`take`: true) or give them back for the
/// driver to run in place, and hand back the verdicts the test puts in `verdicts`.
#[derive(Default)]
struct Offload {
    take: bool,
    jobs: Vec<vtp_core::signature::VerifyJob>,
    verdicts: Vec<(u64, vtp_core::signature::Verdict)>,
}

impl vtp_core::driver::Effects for Offload {
    fn store(&mut self, _: vtp_core::driver::StoreOp) {}
    fn deliver(&mut self, _: vtp_core::Delivery) {}
    fn event(&mut self, _: Event) {}
    fn verify(
        &mut self,
        job: vtp_core::signature::VerifyJob,
    ) -> Result<(), vtp_core::signature::VerifyJob> {
        if self.take {
            self.jobs.push(job);
            Ok(())
        } else {
            Err(job)
        }
    }
    fn take_verdicts(&mut self, out: &mut Vec<(u64, vtp_core::signature::Verdict)>) {
        out.append(&mut self.verdicts);
    }
}

#[test]
fn the_driver_verifies_in_place_or_through_its_effects_with_the_same_receipts() {
    use vtp_core::driver::Driver;
    use vtp_core::outbox::OutboxLimits;
    for take in [false, true] {
        let mut c = broker_config();
        c.policy.signatures = SignaturePolicy::Require;
        let t0 = origin();
        let mut node = vtp_core::Node::new(
            c,
            Box::new(vtp_core::filter::NoFilterEngine),
            7,
            t0,
            std::time::Duration::from_secs(UNIX0),
        )
        .expect("config");
        node.set_verifier(Some(verifier()));
        node.set_verify_offload(8);
        let mut d = Driver::new(node, OutboxLimits::default());
        let fx = &mut Offload {
            take,
            ..Offload::default()
        };
        let mut authors = Vec::new();
        for payload in [
            signed("ivo://example.org/s#d1", FP_A),
            tampered("ivo://example.org/s#d2"),
        ] {
            let a = d
                .handle_accept(ListenerRole::Receive, peer(), t0, fx)
                .expect("accepted");
            d.handle_input(a, &framed(&payload), t0, fx);
            d.handle_wakeup(t0, fx);
            authors.push(a);
        }
        let mut wires = vec![Vec::new(); authors.len()];
        let flush = |d: &mut Driver, fx: &mut Offload, wires: &mut Vec<Vec<u8>>| {
            while let Some(c) = d.poll_writable() {
                if let Some(i) = authors.iter().position(|&a| a == c) {
                    let _ = d.flush(c, &mut wires[i], t0, fx);
                }
            }
        };
        flush(&mut d, fx, &mut wires);
        if take {
            assert_eq!(fx.jobs.len(), 2);
            assert!(
                wires.iter().all(Vec::is_empty),
                "receipts wait for the verdicts"
            );
            assert_eq!(d.node().verifying(), 2);
            // Verdicts come back in any order.
            let jobs = std::mem::take(&mut fx.jobs);
            fx.verdicts = jobs.iter().rev().map(|j| (j.id(), j.run())).collect();
            d.handle_durable(fx);
            flush(&mut d, fx, &mut wires);
        }
        assert_eq!(d.node().verifying(), 0);
        let text: Vec<String> = wires
            .iter()
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect();
        assert!(text[0].contains("role=\"ack\""), "take {take}: {}", text[0]);
        assert!(text[1].contains("role=\"nak\""), "take {take}: {}", text[1]);
        assert!(text[1].contains("invalid"), "take {take}: {}", text[1]);
    }
}

/// A verifier that records, for each call, whether it was given the element's hash and that
/// the hash was of exactly the signed bytes.
#[derive(Debug)]
struct Recording {
    inner: DigestVerifier,
    calls: Calls,
}

/// What a [`Recording`] verifier was asked, call by call.
type Calls = std::sync::Arc<std::sync::Mutex<Vec<&'static str>>>;

impl Recording {
    fn new(calls: &Calls) -> Self {
        Self {
            inner: *verifier(),
            calls: std::sync::Arc::clone(calls),
        }
    }
}

/// A `require` harness whose verifier records its calls.
fn recording_harness() -> (Harness, Calls) {
    let calls = Calls::default();
    let mut h = harness(SignaturePolicy::Require);
    h.node.set_verifier(Some(Box::new(Recording::new(&calls))));
    (h, calls)
}

impl vtp_core::signature::Verifier for Recording {
    fn verify(&self, signed: &[u8], armour: &str) -> vtp_core::signature::Verdict {
        self.calls.lock().expect("calls").push("verify");
        self.inner.verify(signed, armour)
    }

    fn verify_element(
        &self,
        signed: &[u8],
        armour: &str,
        element: &vtp_core::ElementHash,
    ) -> vtp_core::signature::Verdict {
        let right = element.key() == vtp_core::EventKey::of_element(signed)
            && element.finish_with(b"tail") == {
                let mut all = signed.to_vec();
                all.extend_from_slice(b"tail");
                vtp_core::EventKey::of_element(&all).0
            };
        self.calls
            .lock()
            .expect("calls")
            .push(if right { "element" } else { "wrong element" });
        self.inner.verify(signed, armour)
    }
}

#[test]
fn an_offloaded_job_hands_the_verifier_the_event_keys_hash_of_the_signed_bytes() {
    let (mut h, calls) = recording_harness();
    h.node.set_verify_offload(8);
    let author = h.accept(ListenerRole::Receive);
    h.take();
    h.input(author, &framed(&signed("ivo://example.org/s#e", FP_A)));
    h.drain();
    let waiting = jobs(&std::mem::take(&mut h.actions));
    assert_eq!(waiting.len(), 1);
    let done = answer(&mut h, &waiting);
    assert_eq!(transport(&frames_to(&done, author)[0]).role.as_str(), "ack");
    assert_eq!(*calls.lock().expect("calls"), ["element"]);
    // A job made by a host (no hash) asks `verify`.
    let job = vtp_core::signature::VerifyJob::new(
        7,
        std::sync::Arc::new(Recording::new(&calls)),
        Bytes::from_static(b"<VOEvent/>"),
        String::new(),
    );
    let _ = job.run();
    assert_eq!(*calls.lock().expect("calls"), ["element", "verify"]);
}

#[test]
fn in_place_verification_of_authors_and_upstreams_hands_the_hash_too() {
    let (mut h, calls) = recording_harness();
    // An author, verified on the loop (no offload).
    let reply = submit(&mut h, &signed("ivo://example.org/s#p", FP_A));
    assert_eq!(reply.receipt, "ack");
    // An upstream's event.
    let (upstream, feed) = h.connect_upstream_and_feed();
    let good = signed("ivo://example.org/s#u", FP_B);
    h.input(upstream, &framed(&good));
    let actions = h.take();
    assert_eq!(&frames_to(&actions, feed)[0][4..], &good[..]);
    assert_eq!(*calls.lock().expect("calls"), ["element", "element"]);
}
