//! Signatures: the status of each new event (policy [`SignaturePolicy`]), and the node's own
//! signature on the messages it originates (test events, authenticate replies).

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::config::SignaturePolicy;
use crate::frame;
use crate::message::{EventRole, VoEvent};
use crate::output::{Action, ConnId};
use crate::seen::{ElementHash, EventKey};
use crate::signature::{
    self, EventSigner, Extracted, Signature, StatusKind, Verdict, Verifier, VerifyJob,
};
use crate::violation::Violation;

use super::Node;

/// An author's submission waiting for the verdict on its signature ([`Action::Verify`]):
/// what the rest of its intake needs, the payload copied out of the input.
#[derive(Debug)]
pub(super) struct Parked {
    conn: ConnId,
    payload: Bytes,
    ivorn: Arc<str>,
    role: EventRole,
    element: Range<usize>,
    spans: Option<crate::summary::Spans>,
    key: EventKey,
}

impl Node {
    /// Sets the verifier of signed events (a keyring), or removes it: from the next event on.
    /// Without one, every signed event's status is `unknown-key`. Call again to reload keys.
    pub fn set_verifier(&mut self, verifier: Option<Box<dyn Verifier>>) {
        self.verifier = verifier.map(Arc::from);
    }

    /// Lets the node hand the verification of authors' signed submissions to the host, up to
    /// `max_pending` at once ([`Action::Verify`]; 0, the default: every signature is verified
    /// in place, on the event loop). The host runs each job where it likes and hands the
    /// verdict back with [`Node::handle_verdict`]; meanwhile the author's receipt waits, as it
    /// waits for the store. Beyond `max_pending`, signatures are verified in place again, so
    /// the jobs in flight stay bounded. Events from upstreams and external sources are always
    /// verified in place (their order is kept).
    pub fn set_verify_offload(&mut self, max_pending: usize) {
        self.verify_offload = max_pending;
    }

    /// Author submissions whose verdict the node waits for ([`Node::set_verify_offload`]).
    #[must_use]
    pub fn verifying(&self) -> usize {
        self.verifying.len()
    }

    /// The verdict of the [`Action::Verify`] numbered `id`: the submission's intake goes on
    /// (receipt, forward, handlers) as if the signature had been verified in place. An unknown
    /// `id`, or a submission whose author has gone, is ignored (nothing was accepted).
    pub fn handle_verdict(&mut self, id: u64, verdict: Verdict, now: Instant) {
        self.advance(now);
        let Some(p) = self.verifying.remove(&id) else {
            return;
        };
        self.replying.remove(&p.conn);
        if !self.conns.contains_key(&p.conn) {
            return;
        }
        if self.refuses_for_store(&p.key) {
            return self.reject(p.conn, &p.ivorn, Violation::StoreUnavailable, now);
        }
        let signature = if self.seen.contains(&p.key) {
            None
        } else {
            let s = signature::status_from_verdict(verdict, &p.ivorn, &self.config.author_keys);
            if self.config.policy.signatures == SignaturePolicy::Require
                && s.status != StatusKind::Valid
            {
                let violation = Violation::Signature {
                    on: crate::output::ConnRole::Intake,
                    ivorn: p.ivorn.to_string(),
                    signature: s,
                };
                return self.reject(p.conn, &p.ivorn, violation, now);
            }
            Some(s)
        };
        let event = super::intake::NewEvent {
            ivorn: &p.ivorn,
            role: p.role,
            element: p.element,
            spans: p.spans,
            key: p.key,
            signature,
        };
        self.intake_accept(p.conn, &p.payload, event, now);
    }

    /// Parks an author's new signed submission while the host verifies its signature, when
    /// the node may ([`Node::set_verify_offload`]): true if it did (the intake goes on in
    /// [`Node::handle_verdict`]). Unsigned and malformed ones are decided in place (no
    /// cryptography).
    pub(super) fn verify_later(
        &mut self,
        conn: ConnId,
        payload: &[u8],
        ev: &VoEvent<'_>,
        key: EventKey,
        hash: &ElementHash,
    ) -> bool {
        if self.verify_offload == 0
            || self.verifying.len() >= self.verify_offload
            || self.config.policy.signatures == SignaturePolicy::Off
            || self.seen.contains(&key)
        {
            return false;
        }
        let Some(verifier) = self.verifier.clone() else {
            return false;
        };
        let Extracted::Signed(found) = signature::extract(payload, ev.element.clone()) else {
            return false;
        };
        let payload = Bytes::copy_from_slice(payload);
        let id = self.next_verify;
        self.next_verify += 1;
        self.actions.push_back(Action::Verify(VerifyJob {
            id,
            verifier,
            signed: payload.slice(found.signed),
            armour: found.armour,
            element: Some(Box::new(hash.clone())),
        }));
        self.verifying.insert(
            id,
            Parked {
                conn,
                payload,
                ivorn: Arc::from(ev.ivorn.as_ref()),
                role: ev.role,
                element: ev.element.clone(),
                spans: ev.spans.clone(),
                key,
            },
        );
        // Like a receipt held for the store: later input ignored, a half-close survived.
        self.replying.insert(conn);
        true
    }

    /// Sets the signer of the messages the node originates (its test events and authenticate
    /// replies), or removes it. A message the signer fails on goes out unsigned, and
    /// [`Event::SigningFailed`](crate::Event::SigningFailed) says why.
    pub fn set_signer(&mut self, signer: Option<Box<dyn EventSigner>>) {
        self.signer = signer;
    }

    /// The signature status of a new event, `None` with [`SignaturePolicy::Off`].
    pub(super) fn signature_of(
        &self,
        payload: &[u8],
        ev: &VoEvent<'_>,
        hash: &ElementHash,
    ) -> Option<Signature> {
        if self.config.policy.signatures == SignaturePolicy::Off {
            return None;
        }
        Some(signature::status_of(
            payload,
            ev.element.clone(),
            Some(hash),
            &ev.ivorn,
            self.verifier.as_deref(),
            &self.config.author_keys,
        ))
    }

    /// The status of a new event (not of one already seen: a duplicate is dropped whatever
    /// its signature), and whether the policy refuses it: `Err` with the status to report.
    pub(super) fn check_signature(
        &self,
        payload: &[u8],
        ev: &VoEvent<'_>,
        hash: &ElementHash,
        key: &EventKey,
    ) -> Result<Option<Signature>, Signature> {
        if self.seen.contains(key) {
            return Ok(None);
        }
        match self.signature_of(payload, ev, hash) {
            Some(s)
                if self.config.policy.signatures == SignaturePolicy::Require
                    && s.status != StatusKind::Valid =>
            {
                Err(s)
            }
            other => Ok(other),
        }
    }

    /// `frame` (a message this node built) signed by the node's signer, or `frame` itself when
    /// there is no signer or signing fails (reported).
    pub(super) fn sign_own(&mut self, frame: Bytes) -> Bytes {
        let Some(signer) = self.signer.as_deref() else {
            return frame;
        };
        let payload = &frame[frame::PREFIX_LEN..];
        let signed = own_element(payload)
            .ok_or_else(|| "cannot find the root element".to_owned())
            .and_then(|element| {
                let armour = signer.sign(&payload[element.clone()])?;
                let out = signature::append_signature(payload, element, &armour)
                    .map_err(|e| e.to_string())?;
                frame::encode(&out).map_err(|e| e.to_string())
            });
        match signed {
            Ok(signed) => signed,
            Err(reason) => {
                self.events
                    .push_back(crate::output::Event::SigningFailed { reason });
                frame
            }
        }
    }
}

/// The root element of a document this node built: after the XML declaration, to the last
/// `>` (builders write nothing after the root but whitespace).
fn own_element(payload: &[u8]) -> Option<Range<usize>> {
    let decl_end = memchr::memmem::find(payload, b"?>")? + 2;
    let start = decl_end + payload[decl_end..].iter().position(|&b| b == b'<')?;
    let end = payload.iter().rposition(|&b| b == b'>')? + 1;
    (start < end).then_some(start..end)
}
