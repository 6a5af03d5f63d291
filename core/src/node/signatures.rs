//! Signatures: the status of each new event (policy [`SignaturePolicy`]), and the node's own
//! signature on the messages it originates (test events, authenticate replies).

use std::ops::Range;

use bytes::Bytes;

use crate::config::SignaturePolicy;
use crate::frame;
use crate::message::VoEvent;
use crate::signature::{self, EventSigner, Signature, StatusKind, Verifier};

use super::Node;

impl Node {
    /// Sets the verifier of signed events (a keyring), or removes it: from the next event on.
    /// Without one, every signed event's status is `unknown-key`. Call again to reload keys.
    pub fn set_verifier(&mut self, verifier: Option<Box<dyn Verifier>>) {
        self.verifier = verifier;
    }

    /// Sets the signer of the messages the node originates (its test events and authenticate
    /// replies), or removes it. A message the signer fails on goes out unsigned, and
    /// [`Event::SigningFailed`](crate::Event::SigningFailed) says why.
    pub fn set_signer(&mut self, signer: Option<Box<dyn EventSigner>>) {
        self.signer = signer;
    }

    /// The signature status of a new event, `None` with [`SignaturePolicy::Off`].
    pub(super) fn signature_of(&self, payload: &[u8], ev: &VoEvent<'_>) -> Option<Signature> {
        if self.config.policy.signatures == SignaturePolicy::Off {
            return None;
        }
        Some(signature::status_of(
            payload,
            ev.element.clone(),
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
        key: &crate::seen::EventKey,
    ) -> Result<Option<Signature>, Signature> {
        if self.seen.contains(key) {
            return Ok(None);
        }
        match self.signature_of(payload, ev) {
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
