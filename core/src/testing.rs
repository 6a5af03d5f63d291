//! Test doubles for the node's pluggable parts (cargo feature `testing`; not part of the stable
//! API).
//!
//! - [`SubstringEngine`]: a [`FilterEngine`] whose filters are `has:TEXT`, which by default also
//!   checks how the node uses its engine.
//!
//! The core's own integration tests, its fuzz targets and the `vtp-conformance` simulator and
//! model all use these, so every test of the filter plumbing speaks the same filters.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::filter::{FilterEngine, FilterError, FilterId};

/// A filter engine for tests: `has:TEXT` passes when the event payload contains `TEXT` (an empty
/// `TEXT` passes every event); any other expression is refused, as a real engine refuses a
/// syntax error.
///
/// Built with [`Default`], it is also a checker of the node: it panics if the node evaluates a
/// released filter, releases one twice or one it never compiled, compiles an expression it
/// already holds (the node shares compilations), or passes an element span outside the
/// payload. [`SubstringEngine::fail_closed`] builds one that behaves like a production engine
/// instead: a released or unknown filter evaluates to `false` and nothing panics (the
/// simulator's brokers, which report a panic as a failed seed).
///
/// The counters are shared handles: clone them before handing the engine to the node.
#[derive(Debug, Default)]
pub struct SubstringEngine {
    /// Verdicts computed so far (one per filter per evaluated event).
    pub evaluations: Arc<AtomicUsize>,
    /// Filters compiled and not released yet.
    pub live: Arc<AtomicUsize>,
    /// The `TEXT` of each compiled filter, indexed by [`FilterId`]; `None` once released.
    exprs: Vec<Option<Box<[u8]>>>,
    /// Released or unknown filters evaluate to `false` instead of panicking.
    fail_closed: bool,
}

impl SubstringEngine {
    /// An engine that never panics: a released or unknown filter evaluates to `false`, as in a
    /// production engine.
    #[must_use]
    pub fn fail_closed() -> Self {
        Self {
            fail_closed: true,
            ..Self::default()
        }
    }
}

impl FilterEngine for SubstringEngine {
    fn compile(&mut self, expr: &str) -> Result<FilterId, FilterError> {
        let Some(text) = expr.strip_prefix("has:") else {
            return Err(FilterError {
                reason: format!("syntax error in {expr:?}: test filters are has:TEXT"),
            });
        };
        assert!(
            self.fail_closed || !self.exprs.iter().flatten().any(|e| **e == *text.as_bytes()),
            "the node compiled {expr:?} twice"
        );
        let id = u32::try_from(self.exprs.len()).map_err(|_| FilterError {
            reason: "too many filters".into(),
        })?;
        self.exprs.push(Some(text.as_bytes().into()));
        self.live.fetch_add(1, Ordering::Relaxed);
        Ok(FilterId(id))
    }

    fn release(&mut self, id: FilterId) {
        let released = self.exprs.get_mut(id.0 as usize).and_then(Option::take);
        if released.is_some() {
            self.live.fetch_sub(1, Ordering::Relaxed);
        } else {
            assert!(
                self.fail_closed,
                "filter {id:?} released twice or never compiled"
            );
        }
    }

    fn evaluate(
        &mut self,
        payload: &[u8],
        element: Range<usize>,
        filters: &[FilterId],
        verdicts: &mut Vec<bool>,
    ) {
        assert!(
            self.fail_closed || element.end <= payload.len(),
            "element span out of the payload"
        );
        for id in filters {
            self.evaluations.fetch_add(1, Ordering::Relaxed);
            let pass = match self.exprs.get(id.0 as usize) {
                Some(Some(text)) => contains(payload, text),
                // Fail closed.
                Some(None) | None if self.fail_closed => false,
                Some(None) | None => panic!("the node evaluated released filter {id:?}"),
            };
            verdicts.push(pass);
        }
    }
}

/// Whether `haystack` contains `needle` (the empty needle is everywhere).
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts(e: &mut SubstringEngine, payload: &[u8], ids: &[FilterId]) -> Vec<bool> {
        let mut v = Vec::new();
        e.evaluate(payload, 0..payload.len(), ids, &mut v);
        v
    }

    #[test]
    fn has_text_is_a_substring_test_and_anything_else_is_refused() {
        let mut e = SubstringEngine::default();
        let grb = e.compile("has:grb").expect("valid");
        let gw = e.compile("has:gw").expect("valid");
        let all = e.compile("has:").expect("valid");
        assert!(e.compile("bad filter").is_err());
        assert_eq!(
            verdicts(&mut e, b"a grb", &[grb, gw, all]),
            [true, false, true]
        );
        assert_eq!(e.evaluations.load(Ordering::Relaxed), 3);
        assert_eq!(e.live.load(Ordering::Relaxed), 3);
        e.release(grb);
        assert_eq!(e.live.load(Ordering::Relaxed), 2);
        let again = e.compile("has:grb").expect("compiled again once released");
        assert_eq!(verdicts(&mut e, b"grb", &[again]), [true]);
    }

    #[test]
    #[should_panic(expected = "evaluated released filter")]
    fn by_default_a_released_filter_evaluated_panics() {
        let mut e = SubstringEngine::default();
        let id = e.compile("has:x").expect("valid");
        e.release(id);
        verdicts(&mut e, b"x", &[id]);
    }

    #[test]
    #[should_panic(expected = "released twice")]
    fn by_default_a_second_release_panics() {
        let mut e = SubstringEngine::default();
        let id = e.compile("has:x").expect("valid");
        e.release(id);
        e.release(id);
    }

    #[test]
    #[should_panic(expected = "compiled \"has:x\" twice")]
    fn by_default_a_second_compile_of_a_live_expression_panics() {
        let mut e = SubstringEngine::default();
        let _ = e.compile("has:x");
        let _ = e.compile("has:x");
    }

    #[test]
    fn fail_closed_a_released_or_unknown_filter_is_false_and_nothing_panics() {
        let mut e = SubstringEngine::fail_closed();
        let x = e.compile("has:x").expect("valid");
        let _ = e.compile("has:x").expect("compiled twice");
        e.release(x);
        e.release(x);
        e.release(FilterId(99));
        assert_eq!(verdicts(&mut e, b"x", &[x, FilterId(99)]), [false, false]);
        assert_eq!(e.live.load(Ordering::Relaxed), 1);
    }
}

/// A [`Verifier`](crate::signature::Verifier) for tests, without cryptography: the
/// "signature" [`DigestSigner`] makes is the signer's fingerprint and the SHA-256 of the signed
/// bytes, in an armour. It is good when the digest matches the bytes and the fingerprint is
/// one of `keys`: enough to test what the node does with each status (the real OpenPGP
/// verifier is the `vtp-sig` crate's, tested against GnuPG).
#[derive(Debug, Default, Clone)]
pub struct DigestVerifier {
    /// Trusted fingerprints and their user ids.
    pub keys: Vec<(String, String)>,
}

impl crate::signature::Verifier for DigestVerifier {
    fn verify(&self, signed: &[u8], armour: &str) -> crate::signature::Verdict {
        use crate::signature::Verdict;
        let field = |name: &str| {
            armour
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::to_owned)
        };
        let (Some(fingerprint), Some(digest)) = (field("FP:"), field("SHA256:")) else {
            return Verdict::Malformed("no FP: and SHA256: lines".into());
        };
        let Some((_, user_id)) = self.keys.iter().find(|(fp, _)| *fp == fingerprint) else {
            return Verdict::UnknownKey(fingerprint);
        };
        if digest != crate::EventKey::of_element(signed).to_hex() {
            return Verdict::Invalid("digest mismatch".into());
        }
        Verdict::Valid {
            fingerprint,
            user_id: user_id.clone(),
        }
    }
}

/// The [`EventSigner`](crate::signature::EventSigner) of [`DigestVerifier`]'s signatures, as
/// `fingerprint`; with `fail` set it refuses every message.
#[derive(Debug, Default, Clone)]
pub struct DigestSigner {
    /// The fingerprint it signs as.
    pub fingerprint: String,
    /// Refuse to sign (to test the node's fallback).
    pub fail: bool,
}

impl DigestSigner {
    /// A signer as `fingerprint`.
    #[must_use]
    pub fn new(fingerprint: &str) -> Self {
        Self {
            fingerprint: fingerprint.to_owned(),
            fail: false,
        }
    }

    /// The armour for `signed`.
    #[must_use]
    pub fn armour(&self, signed: &[u8]) -> String {
        format!(
            "-----BEGIN PGP SIGNATURE-----\n\nFP:{}\nSHA256:{}\n-----END PGP SIGNATURE-----",
            self.fingerprint,
            crate::EventKey::of_element(signed).to_hex()
        )
    }
}

impl crate::signature::EventSigner for DigestSigner {
    fn sign(&self, signed: &[u8]) -> Result<String, String> {
        if self.fail {
            return Err("test signer refuses".into());
        }
        Ok(self.armour(signed))
    }
}

/// [`summarize`](crate::summary::summarize) reading every element, without passing over the
/// subtrees where nothing is wanted: the reference the fuzz body compares it with.
#[must_use]
pub fn summarize_every_element(bytes: &[u8]) -> crate::summary::Summary {
    crate::summary::read(bytes, false)
}
