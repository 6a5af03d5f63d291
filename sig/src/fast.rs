//! RSA PKCS#1 v1.5 verification with ring: the fast path for the signatures GnuPG makes with
//! RSA keys (v4 signature of a binary document, SHA-256/384/512, key of 2048 to 8192 bits).
//!
//! rpgp's RSA verification spends about 90% of its time in the `rsa` 0.9 crate's public
//! operation (big integers from `num-bigint-dig`, generic Montgomery multiplication); ring's
//! (assembly Montgomery multiplication) is about 8 times faster for a 2048-bit key: 48-56 µs
//! against 380-480 µs with the same signature on the same loaded 2-core machine. rpgp still
//! parses the packet and serialises the hashed part of the signature: ring gets exactly the
//! bytes rpgp would hash (the document, the signature's hashed data, the trailer), and the
//! hash's left 16 bits are checked against the packet as rpgp checks them. The document is
//! hashed twice (once for that check, once inside ring, whose API takes the message, not a
//! digest): one more SHA-512 of 10 KB, 15 to 35 µs here depending on load; ring also
//! recomputes the key's Montgomery constant each time (it offers no way to keep it).
//!
//! Anything else (another signature version or type, another hash, a key ring would refuse:
//! under 2048 bits, an unusual exponent, a non-minimal encoding) is left to rpgp: [`verify`]
//! says [`Fast::NotHandled`].

use pgp::crypto::hash::HashAlgorithm;
use pgp::crypto::public_key::PublicKeyAlgorithm;
use pgp::packet::{Signature, SignatureConfig, SignatureType, SignatureVersion};
use pgp::types::{KeyDetails, KeyVersion, PublicParams, SignatureBytes, VerifyingKey};
use ring::signature::{self as ring_sig, RsaPublicKeyComponents};
use rsa::traits::PublicKeyParts;
use vtp_core::ElementHash;

/// An RSA public key ring verifies with, taken from the key at load: the modulus and the
/// exponent, big-endian, no leading zero (ring's encoding).
#[derive(Debug, Clone)]
pub(crate) struct RsaKey {
    n: Vec<u8>,
    e: Vec<u8>,
}

/// Smallest modulus handled: 2048 bits (ring's `RSA_PKCS1_2048_8192_*`; rpgp verifies smaller).
const N_BYTES_MIN: usize = 2048 / 8;
/// Largest modulus handled: 8192 bits (ring's bound, and rpgp's without `large-rsa`).
const N_BYTES_MAX: usize = 8192 / 8;
/// Largest exponent ring accepts: 2^33 - 1 (the `rsa` crate's bound too).
const E_MAX: u64 = (1 << 33) - 1;

impl RsaKey {
    /// The key's RSA components when ring accepts them exactly as rpgp does: a v4 RSA key, a
    /// modulus of 2048 to 8192 bits (whole bytes) that is odd, an odd exponent from 3 to
    /// 2^33 - 1. `None` for any other key (rpgp verifies with it).
    pub(crate) fn new(key: &impl KeyDetails) -> Option<Self> {
        if key.version() != KeyVersion::V4
            || !matches!(
                key.algorithm(),
                PublicKeyAlgorithm::RSA | PublicKeyAlgorithm::RSASign
            )
        {
            return None;
        }
        let PublicParams::RSA(params) = key.public_params() else {
            return None;
        };
        let n = params.key.n().to_bytes_be();
        let e = params.key.e().to_bytes_be();
        Self::from_components(n, e)
    }

    fn from_components(n: Vec<u8>, e: Vec<u8>) -> Option<Self> {
        // ring measures the lower bound in whole bytes (a 2047-bit modulus of 256 bytes
        // passes): demand 2048 bits, counted exactly, and no leading zero byte.
        let bits = n
            .first()
            .map_or(0, |&top| n.len() * 8 - top.leading_zeros() as usize);
        let n_ok = (N_BYTES_MIN * 8..=N_BYTES_MAX * 8).contains(&bits)
            && n.first().is_some_and(|&top| top != 0)
            && n.last().is_some_and(|b| b & 1 == 1);
        let e_value = (e.len() <= 8 && e.first().is_some_and(|&b| b != 0))
            .then(|| e.iter().fold(0u64, |v, &b| (v << 8) | u64::from(b)));
        let e_ok = e_value.is_some_and(|v| (3..=E_MAX).contains(&v) && v & 1 == 1);
        (n_ok && e_ok).then_some(Self { n, e })
    }

    /// The modulus length in bytes.
    fn len(&self) -> usize {
        self.n.len()
    }
}

/// The fast path's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fast {
    /// The signature verifies.
    Valid,
    /// It does not (why, for [`crate::InvalidReason::BadSignature`]).
    Invalid(&'static str),
    /// Not a case the fast path takes: ask rpgp.
    NotHandled,
}

/// Verifies `signature` over `signed` with `key`, when it is a v4 RSA signature of a binary
/// document with SHA-256, SHA-384 or SHA-512; else [`Fast::NotHandled`].
///
/// The caller has matched the signature's issuer to the key (as rpgp does before verifying).
pub(crate) fn verify(key: &RsaKey, signature: &Signature, signed: &[u8]) -> Fast {
    let Some(config) = signature.config() else {
        return Fast::NotHandled;
    };
    if config.version() != SignatureVersion::V4
        || config.typ != SignatureType::Binary
        || !matches!(
            config.pub_alg,
            PublicKeyAlgorithm::RSA | PublicKeyAlgorithm::RSASign
        )
    {
        return Fast::NotHandled;
    }
    let params: &ring_sig::RsaParameters = match config.hash_alg {
        HashAlgorithm::Sha256 => &ring_sig::RSA_PKCS1_2048_8192_SHA256,
        HashAlgorithm::Sha384 => &ring_sig::RSA_PKCS1_2048_8192_SHA384,
        HashAlgorithm::Sha512 => &ring_sig::RSA_PKCS1_2048_8192_SHA512,
        _ => return Fast::NotHandled,
    };
    let Ok(mut hasher) = config.hash_alg.new_hasher() else {
        return Fast::NotHandled;
    };
    let (Some(SignatureBytes::Mpis(mpis)), Some(left16)) =
        (signature.signature(), signature.signed_hash_value())
    else {
        return Fast::NotHandled;
    };
    let [mpi] = mpis.as_slice() else {
        return Fast::NotHandled;
    };
    let s = mpi.as_ref();
    if s.len() > key.len() {
        return Fast::NotHandled;
    }
    // What rpgp hashes: the document, then the signature's tail.
    let Some(tail) = hashed_tail(config) else {
        return Fast::NotHandled;
    };
    let mut message = Vec::with_capacity(signed.len() + tail.len());
    message.extend_from_slice(signed);
    message.extend_from_slice(&tail);

    // rpgp checks the left 16 bits of the hash before the public-key operation: so do we,
    // with rpgp's own hasher.
    hasher.update(&message);
    if hasher.finalize().get(..2) != Some(left16.as_slice()) {
        return Fast::Invalid(LEFT16_MISMATCH);
    }
    // OpenPGP allows a signature shorter than the modulus (leading zeros dropped); ring wants
    // it at the modulus length, as rpgp pads it for the `rsa` crate.
    let mut padded = vec![0u8; key.len()];
    padded[key.len() - s.len()..].copy_from_slice(s);
    let components = RsaPublicKeyComponents {
        n: key.n.as_slice(),
        e: key.e.as_slice(),
    };
    match components.verify(params, &message, &padded) {
        Ok(()) => Fast::Valid,
        Err(_) => Fast::Invalid("RSA signature does not verify"),
    }
}

/// What rpgp hashes after the document for a v4 signature: the signature's hashed data
/// (serialised by rpgp, which refuses unknown critical subpackets) and the v4 trailer. `None`
/// when rpgp cannot serialise them (rpgp's own verification then decides).
fn hashed_tail(config: &SignatureConfig) -> Option<Vec<u8>> {
    let mut collect: Box<dyn digest::DynDigest + Send> = Box::new(Collect(Vec::new()));
    let len = config.hash_signature_data(&mut collect).ok()?;
    let trailer = config.trailer(len).ok()?;
    let mut tail = collect.finalize_reset().into_vec();
    tail.extend_from_slice(&trailer);
    Some(tail)
}

/// Verifies a v4 signature of a binary document made with SHA-256 by a v4 key, continuing
/// `element` (the SHA-256 state after exactly the signed bytes: the event key's hash) with the
/// signature's tail instead of hashing the document again, then checking the left 16 bits
/// and the digest with the key as rpgp's `Signature::verify` does after its own hashing (the
/// key's `VerifyingKey::verify`: Ed25519, ECDSA, RSA with the `rsa` crate...). `None` for any
/// other case (rpgp, or the RSA path, decides).
///
/// The caller has matched the signature's issuer to the key (as rpgp does before verifying).
pub(crate) fn verify_continued(
    key: &impl VerifyingKey,
    signature: &Signature,
    element: &ElementHash,
) -> Option<Result<(), String>> {
    let config = signature.config()?;
    if config.version() != SignatureVersion::V4
        || config.typ != SignatureType::Binary
        || config.hash_alg != HashAlgorithm::Sha256
        || key.version() != KeyVersion::V4
    {
        return None;
    }
    let (Some(bytes), Some(left16)) = (signature.signature(), signature.signed_hash_value()) else {
        return None;
    };
    let digest = element.finish_with(&hashed_tail(config)?);
    if digest[..2] != left16[..] {
        return Some(Err(LEFT16_MISMATCH.to_owned()));
    }
    Some(
        key.verify(HashAlgorithm::Sha256, &digest, bytes)
            .map_err(|e| e.to_string()),
    )
}

/// Why a signature whose hash does not start as its packet says is invalid.
const LEFT16_MISMATCH: &str = "the hash's left 16 bits do not match the signature packet";

/// A "digest" that keeps its input, to get the bytes rpgp hashes for the signature's part.
#[derive(Clone)]
struct Collect(Vec<u8>);

impl digest::DynDigest for Collect {
    fn update(&mut self, data: &[u8]) {
        self.0.extend_from_slice(data);
    }

    fn finalize_into(mut self, buf: &mut [u8]) -> Result<(), digest::InvalidBufferSize> {
        self.finalize_into_reset(buf)
    }

    fn finalize_into_reset(&mut self, out: &mut [u8]) -> Result<(), digest::InvalidBufferSize> {
        if out.len() != self.0.len() {
            return Err(digest::InvalidBufferSize);
        }
        out.copy_from_slice(&self.0);
        self.0.clear();
        Ok(())
    }

    fn reset(&mut self) {
        self.0.clear();
    }

    fn output_size(&self) -> usize {
        self.0.len()
    }

    fn box_clone(&self) -> Box<dyn digest::DynDigest> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_ring_would_refuse_are_left_to_rpgp() {
        let n2048 = |first: u8, last: u8| {
            let mut n = vec![0x5a; 256];
            n[0] = first;
            n[255] = last;
            n
        };
        let f4 = vec![1, 0, 1];
        assert!(RsaKey::from_components(n2048(0xc1, 0x01), f4.clone()).is_some());
        assert!(RsaKey::from_components(n2048(0xc1, 0x01), vec![3]).is_some());
        // 2047 bits in 256 bytes, a leading zero, an even modulus, 1024 bits, 8200 bits.
        assert!(RsaKey::from_components(n2048(0x41, 0x01), f4.clone()).is_none());
        assert!(
            RsaKey::from_components([&[0], &n2048(0xc1, 1)[..]].concat(), f4.clone()).is_none()
        );
        assert!(
            RsaKey::from_components([&[1], &n2048(0xc1, 1)[..]].concat(), f4.clone()).is_some()
        );
        assert!(RsaKey::from_components(n2048(0xc1, 0x02), f4.clone()).is_none());
        assert!(RsaKey::from_components(vec![0xc1; 128], f4.clone()).is_none());
        assert!(RsaKey::from_components(vec![0xc1; 1025], f4.clone()).is_none());
        // Exponents: 1, even, over 2^33 - 1, a leading zero, empty.
        for e in [
            vec![1],
            vec![1, 0, 0],
            vec![2, 0, 0, 0, 1],
            vec![0, 1, 0, 1],
            vec![],
        ] {
            assert!(
                RsaKey::from_components(n2048(0xc1, 0x01), e.clone()).is_none(),
                "{e:?}"
            );
        }
        // The largest exponent both libraries take.
        assert!(
            RsaKey::from_components(n2048(0xc1, 0x01), vec![1, 0xff, 0xff, 0xff, 0xff]).is_some()
        );
    }
}
