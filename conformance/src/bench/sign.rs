//! Signed submissions (`vtp-bench submit --sign-key`): every event gets its own detached
//! OpenPGP signature by Comet's convention (`vtp_core::signature`), made **before** the timed
//! run, so that signing does not take CPU from the authors (and the broker) while they are
//! measured.
//!
//! Only each event's armour is kept (a few hundred bytes, not a 10 KB copy of the event); the
//! signed frame is built at submission time: the template's event `n`, its armour appended
//! after the root element in a comment by `append_signature`, a new length prefix.

use std::fmt;
use std::ops::Range;
use std::time::{Duration, Instant};

use vtp_core::message::{self, Message, ParseLimits};
use vtp_core::signature::append_signature;
use vtp_sig::Signer;

use super::EventTemplate;

/// The armours of events `0..events` of one template, and where the root element sits.
pub(crate) struct SignedEvents {
    /// Span of the root element in every event's payload (the same for all: the sequence
    /// digits have a fixed width).
    element: Range<usize>,
    /// Event `n`'s armoured detached signature over its root element.
    armours: Vec<String>,
    /// The signing key's fingerprint.
    pub(crate) fingerprint: String,
    /// Wall time of signing every event.
    pub(crate) wall: Duration,
    /// Sum over the signing threads of their CPU time (their wall time where the kernel has
    /// no schedstats): the cost of the signatures, whatever else runs on the machine.
    pub(crate) busy: Duration,
    /// Threads that signed.
    pub(crate) threads: usize,
    /// Payload size of signed event 0 (the template's plus the signature comment).
    pub(crate) event_bytes: usize,
}

impl fmt::Debug for SignedEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedEvents")
            .field("events", &self.armours.len())
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl SignedEvents {
    /// Signs events `0..events` of `template` with `signer` on up to `threads` threads, and
    /// checks that each signature can be appended by the convention.
    ///
    /// # Errors
    ///
    /// The template is not a VOEvent the core parses, or a signature cannot be made or
    /// appended (the reason, for the usage error).
    pub(crate) fn sign_all(
        template: &EventTemplate,
        events: u64,
        signer: &Signer,
        threads: usize,
    ) -> Result<Self, String> {
        let mut frame = Vec::with_capacity(template.frame_len());
        template.write(0, &mut frame);
        let element = match message::parse(&frame[4..], &ParseLimits::default()) {
            Ok(Message::VoEvent(ev)) => ev.element,
            Ok(_) => return Err("the event to sign is not a VOEvent".into()),
            Err(e) => return Err(format!("the event to sign does not parse: {e}")),
        };
        let n = usize::try_from(events).map_err(|_| "--events is too large to sign")?;
        let threads = threads.clamp(1, n.max(1));
        let per = n.div_ceil(threads).max(1);
        let start = Instant::now();
        let chunks: Vec<Result<(Vec<String>, Duration), String>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .step_by(per)
                .map(|from| {
                    let to = (from + per).min(n);
                    let element = element.clone();
                    s.spawn(move || sign_range(template, &element, signer, from..to))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("a signing thread panicked".into()))
                })
                .collect()
        });
        let wall = start.elapsed();
        let mut armours = Vec::with_capacity(n);
        let mut busy = Duration::ZERO;
        for chunk in chunks {
            let (mut a, t) = chunk?;
            armours.append(&mut a);
            busy += t;
        }
        let mut signed = Self {
            element,
            armours,
            fingerprint: signer.fingerprint().as_str().to_owned(),
            wall,
            busy,
            threads,
            event_bytes: 0,
        };
        if n > 0 {
            let mut scratch = Vec::new();
            signed.write(template, 0, &mut scratch, &mut frame)?;
            signed.event_bytes = frame.len() - 4;
        }
        Ok(signed)
    }

    /// Writes the framed, signed event `n` into `out` (replacing its contents); `scratch`
    /// holds the unsigned frame meanwhile.
    ///
    /// # Errors
    ///
    /// `n` was not signed, or the signature cannot be appended (checked for every event by
    /// [`SignedEvents::sign_all`], so not expected).
    pub(crate) fn write(
        &self,
        template: &EventTemplate,
        n: u64,
        scratch: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let armour = usize::try_from(n)
            .ok()
            .and_then(|i| self.armours.get(i))
            .ok_or_else(|| format!("event {n} was not signed"))?;
        template.write(n, scratch);
        let payload = append_signature(&scratch[4..], self.element.clone(), armour)
            .map_err(|e| format!("cannot append the signature of event {n}: {e}"))?;
        let len = u32::try_from(payload.len()).map_err(|_| "a signed event is over 4 GiB")?;
        out.clear();
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&payload);
        Ok(())
    }
}

/// Signs events `range` (one thread's share); returns the armours and the CPU time it took.
fn sign_range(
    template: &EventTemplate,
    element: &Range<usize>,
    signer: &Signer,
    range: Range<usize>,
) -> Result<(Vec<String>, Duration), String> {
    let start = Instant::now();
    let cpu_start = thread_cpu();
    let mut frame = Vec::with_capacity(template.frame_len());
    let mut armours = Vec::with_capacity(range.len());
    for i in range {
        template.write(i as u64, &mut frame);
        let payload = &frame[4..];
        let armour = signer
            .sign(&payload[element.clone()])
            .map_err(|e| format!("cannot sign event {i}: {e}"))?;
        // The convention must carry it (append_signature checks the comment reads back).
        append_signature(payload, element.clone(), &armour)
            .map_err(|e| format!("cannot append the signature of event {i}: {e}"))?;
        armours.push(armour);
    }
    let took = match (cpu_start, thread_cpu()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => start.elapsed(),
    };
    Ok((armours, took))
}

/// This thread's CPU time so far, from `/proc/thread-self/schedstat` (its first field, in
/// nanoseconds); None where the kernel does not have it.
fn thread_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::GCN_FIXTURE;
    use vtp_sig::{Keyring, verify_payload};
    use vtp_testkit::gpg::Gpg;

    /// Each event carries its own signature by GnuPG's key, valid for that event only, in a
    /// frame whose length prefix counts the comment.
    #[test]
    fn every_event_carries_its_own_valid_signature() {
        let gpg = Gpg::new();
        let fpr = gpg.gen_key("bench <bench@example.org>", "ed25519", "");
        let signer = Signer::load(gpg.export_secret(&fpr, ""), "").unwrap();
        let mut keyring = Keyring::new();
        keyring
            .add("bench", &std::fs::read(gpg.export(&fpr, true)).unwrap())
            .unwrap();
        let template = EventTemplate::new(GCN_FIXTURE, "sig").unwrap();
        let signed = SignedEvents::sign_all(&template, 5, &signer, 2).unwrap();
        assert_eq!(signed.fingerprint, fpr);
        assert_eq!(signed.armours.len(), 5);
        let (mut scratch, mut a, mut b) = (Vec::new(), Vec::new(), Vec::new());
        signed.write(&template, 1, &mut scratch, &mut a).unwrap();
        signed.write(&template, 4, &mut scratch, &mut b).unwrap();
        for (frame, n) in [(&a, 1), (&b, 4)] {
            let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
            assert_eq!(len + 4, frame.len());
            assert_eq!(len, signed.event_bytes);
            let status = verify_payload(&keyring, &frame[4..], signed.element.clone());
            assert_eq!(status.name(), "valid", "event {n}: {status}");
            // The element is the unsigned event's, byte for byte.
            template.write(n, &mut scratch);
            assert_eq!(
                frame[4..][signed.element.clone()],
                scratch[4..][signed.element.clone()]
            );
        }
        // Event 1's signature does not fit event 4: the signatures are per event.
        let element = signed.element.clone();
        template.write(4, &mut scratch);
        let swapped = append_signature(&scratch[4..], element.clone(), &signed.armours[1]).unwrap();
        assert_eq!(
            verify_payload(&keyring, &swapped, element).name(),
            "invalid"
        );
        // Past the signed events: an error, not a panic.
        assert!(signed.write(&template, 5, &mut scratch, &mut a).is_err());
    }
}
