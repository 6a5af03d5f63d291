//! The verifier: a pure function of a keyring, the signed bytes and the armour.

use std::fmt;
use std::ops::Range;

use pgp::composed::{Deserializable, DetachedSignature};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::SignatureType;
use vtp_core::ElementHash;
use vtp_core::signature::{self as convention, Extracted, StatusKind};

use crate::fast::{self, Fast};
use crate::keyring::{Fingerprint, Keyring, SignerRef, cut};

/// Verifies the detached signature `armour` over `signed` with the keys of `keyring`.
///
/// Pure: no IO, no clock, no randomness; the same inputs always give the same status. The
/// signature must be one OpenPGP signature packet of a binary or text document, made with
/// SHA-2 or SHA-3 (MD5, SHA-1 and RIPEMD-160 are refused as [`Status::Invalid`]), by a
/// key of the keyring (matched by the issuer fingerprint, or the issuer key id when the
/// signature has no fingerprint).
///
/// The creation time and the key's expiry are not checked (there is no clock here).
///
/// RSA signatures by keys of 2048 to 8192 bits (v4, binary document, SHA-256/384/512) are
/// checked with ring, everything else with rpgp; both give the same verdicts (see
/// `src/fast.rs`).
#[must_use]
pub fn verify(keyring: &Keyring, signed: &[u8], armour: &str) -> Status {
    verify_by(keyring, signed, armour, None, Path::Fastest, &mut false)
}

/// [`verify`], where `element` is the SHA-256 state after exactly the bytes of `signed` (the
/// event key's hash, [`ElementHash`]): a SHA-256 signature by a key other than RSA (Ed25519,
/// GnuPG's default for new keys) continues it instead of hashing `signed` again. The same
/// status as [`verify`].
#[must_use]
pub fn verify_element(
    keyring: &Keyring,
    signed: &[u8],
    armour: &str,
    element: &ElementHash,
) -> Status {
    verify_by(
        keyring,
        signed,
        armour,
        Some(element),
        Path::Fastest,
        &mut false,
    )
}

/// Which implementation verifies the signature (tests compare them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    /// ring for the RSA cases it takes, rpgp for the rest.
    Fastest,
    /// rpgp alone.
    #[cfg(test)]
    Rpgp,
}

/// [`verify`], by `path`, continuing `element` when given ([`verify_element`]); `by_fast` is
/// set when the RSA fast path or the continued hash gave the verdict.
pub(crate) fn verify_by(
    keyring: &Keyring,
    signed: &[u8],
    armour: &str,
    element: Option<&ElementHash>,
    path: Path,
    by_fast: &mut bool,
) -> Status {
    if armour.len() > ARMOUR_LEN_MAX {
        return Status::Malformed(MalformedReason::TooLong);
    }
    let mut signatures = match DetachedSignature::from_string_many(armour) {
        Ok((signatures, _headers)) => signatures,
        Err(e) => return Status::Malformed(MalformedReason::Armour(cut(&e.to_string()))),
    };
    let signature = match (signatures.next(), signatures.next()) {
        (Some(Ok(one)), None) => one,
        (Some(Err(e)), _) => {
            return Status::Malformed(MalformedReason::Armour(cut(&e.to_string())));
        }
        (None, _) | (Some(Ok(_)), Some(_)) => {
            return Status::Malformed(MalformedReason::NotOneSignature);
        }
    };
    let packet = &signature.signature;
    match packet.typ() {
        Some(SignatureType::Binary | SignatureType::Text) => {}
        _ => return Status::Invalid(InvalidReason::NotADocumentSignature),
    }
    match packet.hash_alg() {
        Some(
            HashAlgorithm::Sha256
            | HashAlgorithm::Sha384
            | HashAlgorithm::Sha512
            | HashAlgorithm::Sha224
            | HashAlgorithm::Sha3_256
            | HashAlgorithm::Sha3_512,
        ) => {}
        Some(other) => {
            return Status::Invalid(InvalidReason::WeakHash(other.to_string()));
        }
        None => return Status::Malformed(MalformedReason::NotOneSignature),
    }
    let fingerprints = packet.issuer_fingerprint();
    let key_ids = packet.issuer_key_id();
    let Some((fingerprint, user_id, key, rsa)) = keyring.find(&fingerprints, &key_ids) else {
        let id = match (fingerprints.first(), key_ids.first()) {
            (Some(fp), _) => format!("{fp:X}"),
            (None, Some(id)) => id.as_ref().iter().map(|b| format!("{b:02X}")).collect(),
            (None, None) => return Status::Malformed(MalformedReason::NoIssuer),
        };
        return Status::UnknownKey(KeyId(id));
    };
    let fast = match (path, rsa) {
        (Path::Fastest, Some(rsa)) => fast::verify(rsa, packet, signed),
        _ => Fast::NotHandled,
    };
    // Not RSA (or RSA the fast path does not take): continue the element's hash if given.
    let continued = match (path, fast == Fast::NotHandled, element, &key) {
        (Path::Fastest, true, Some(element), SignerRef::Primary(k)) => {
            fast::verify_continued(*k, packet, element)
        }
        (Path::Fastest, true, Some(element), SignerRef::Subkey(k)) => {
            fast::verify_continued(*k, packet, element)
        }
        _ => None,
    };
    *by_fast = fast != Fast::NotHandled || continued.is_some();
    let checked = match (fast, continued, key) {
        (Fast::Valid, _, _) => Ok(()),
        (Fast::Invalid(why), _, _) => Err(why.to_owned()),
        (Fast::NotHandled, Some(checked), _) => checked,
        (Fast::NotHandled, None, SignerRef::Primary(k)) => {
            signature.verify(k, signed).map_err(|e| e.to_string())
        }
        (Fast::NotHandled, None, SignerRef::Subkey(k)) => {
            signature.verify(k, signed).map_err(|e| e.to_string())
        }
    };
    match checked {
        Ok(()) => Status::Valid {
            fingerprint: fingerprint.clone(),
            user_id: user_id.to_owned(),
        },
        Err(e) => Status::Invalid(InvalidReason::BadSignature(cut(&e))),
    }
}

/// Finds the signature of `payload` by Comet's convention ([`vtp_core::signature::extract`])
/// and verifies it: [`Status::Unsigned`] or [`Status::Malformed`] from the convention, else
/// the verdict of [`verify`] over the root element's bytes.
#[must_use]
pub fn verify_payload(keyring: &Keyring, payload: &[u8], element: Range<usize>) -> Status {
    match convention::extract(payload, element) {
        Extracted::Signed(found) => verify(keyring, &payload[found.signed], &found.armour),
        Extracted::Unsigned => Status::Unsigned,
        Extracted::Malformed(reason) => Status::Malformed(MalformedReason::Convention(reason)),
    }
}

/// A signature's status.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// A good signature by a key of the keyring.
    Valid {
        /// The primary key's fingerprint (also when a signing subkey made the signature).
        fingerprint: Fingerprint,
        /// The key's primary user id (or its first; empty when it has none), lossily decoded.
        user_id: String,
    },
    /// A signature that does not verify, or one that is refused.
    Invalid(InvalidReason),
    /// A well-formed signature by a key not in the keyring.
    UnknownKey(KeyId),
    /// No signature ([`verify_payload`] only).
    Unsigned,
    /// Not a signature: bad armour, not one signature packet, no issuer.
    Malformed(MalformedReason),
}

impl Status {
    /// The kind of status, whose stable name is [`Status::name`].
    #[must_use]
    pub const fn kind(&self) -> StatusKind {
        match self {
            Self::Valid { .. } => StatusKind::Valid,
            Self::Invalid(_) => StatusKind::Invalid,
            Self::UnknownKey(_) => StatusKind::UnknownKey,
            Self::Unsigned => StatusKind::Unsigned,
            Self::Malformed(_) => StatusKind::Malformed,
        }
    }

    /// The stable name: `valid`, `invalid`, `unknown-key`, `unsigned` or `malformed` (the node
    /// adds `invalid-signer`, see [`StatusKind`]).
    #[must_use]
    pub const fn name(&self) -> &'static str {
        self.kind().as_str()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Valid {
                fingerprint,
                user_id,
            } => write!(f, "valid: {fingerprint} {user_id}"),
            Self::Invalid(reason) => write!(f, "invalid: {reason}"),
            Self::UnknownKey(id) => write!(f, "unknown-key: {id}"),
            Self::Unsigned => f.write_str("unsigned"),
            Self::Malformed(reason) => write!(f, "malformed: {reason}"),
        }
    }
}

/// Why a signature is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidReason {
    /// Made with a hash algorithm that is refused (its name: `MD5`, `SHA1`, `RIPEMD160`...).
    #[error("{0} signatures are refused (collisions); sign with SHA-256 or SHA-512")]
    WeakHash(String),
    /// A signature of something else than a document (a key certification, say).
    #[error("not a signature of a document")]
    NotADocumentSignature,
    /// The signature does not match the bytes (the library's message, cut to 200
    /// characters).
    #[error("bad signature: {0}")]
    BadSignature(String),
}

/// Why a signature is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedReason {
    /// The convention is not followed ([`vtp_core::signature::extract`]).
    #[error("{0}")]
    Convention(convention::Malformed),
    /// The armour is longer than [`ARMOUR_LEN_MAX`].
    #[error("armour over 64 KiB")]
    TooLong,
    /// The armour or the packet does not decode (the library's message, cut).
    #[error("armour does not decode: {0}")]
    Armour(String),
    /// The armour holds no signature, or several.
    #[error("not exactly one signature")]
    NotOneSignature,
    /// The signature names no issuer (neither fingerprint nor key id).
    #[error("signature without an issuer")]
    NoIssuer,
}

/// The id of a key not in the keyring: the issuer fingerprint (upper-case hex) when the
/// signature carries one, else its 16-digit key id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyId(pub(crate) String);

impl KeyId {
    /// The hexadecimal digits.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Longest armour accepted: 64 KiB, the convention's comment bound
/// ([`vtp_core::signature::COMMENT_LEN_MAX`]).
pub const ARMOUR_LEN_MAX: usize = convention::COMMENT_LEN_MAX;

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: &[u8] = b"<VOEvent ivorn=\"ivo://a.b/c#1\" role=\"test\"/>";

    #[test]
    fn undecodable_armour_is_malformed_not_a_panic() {
        let keyring = Keyring::new();
        for armour in [
            "",
            "junk",
            "-----BEGIN PGP SIGNATURE-----\n\n!!!!\n-----END PGP SIGNATURE-----",
            "-----BEGIN PGP SIGNATURE-----\n\nAAAA\n=AAAA\n-----END PGP SIGNATURE-----",
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----",
        ] {
            let status = verify(&keyring, PAYLOAD, armour);
            assert_eq!(status.name(), "malformed", "{armour:?}: {status}");
        }
        let long = "A".repeat(ARMOUR_LEN_MAX + 1);
        assert_eq!(
            verify(&keyring, PAYLOAD, &long),
            Status::Malformed(MalformedReason::TooLong)
        );
    }

    #[test]
    fn the_convention_decides_unsigned_and_malformed() {
        let keyring = Keyring::new();
        let element = 0..PAYLOAD.len();
        assert_eq!(
            verify_payload(&keyring, PAYLOAD, element.clone()),
            Status::Unsigned
        );
        let twice = [
            PAYLOAD,
            b"<!--=====BEGIN PGP SIGNATURE=====\n=====END PGP SIGNATURE=====-->".as_slice(),
            b"<!--=====BEGIN PGP SIGNATURE=====\n=====END PGP SIGNATURE=====-->",
        ]
        .concat();
        assert_eq!(
            verify_payload(&keyring, &twice, element),
            Status::Malformed(MalformedReason::Convention(
                convention::Malformed::TwoSignatures
            ))
        );
    }
}
