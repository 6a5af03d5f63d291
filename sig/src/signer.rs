//! The signer: a secret key, unlocked once, that makes detached armoured signatures.

use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use pgp::composed::{ArmorOptions, Deserializable, DetachedSignature, SignedSecretKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::crypto::public_key::PublicKeyAlgorithm;
use pgp::types::{KeyDetails, Password};

use crate::keyring::{Fingerprint, KEY_FILE_LEN_MAX, cut};

/// A secret key that signs VOEvents: what `gpg --export-secret-keys [--armor]` writes.
///
/// Signs with the primary key (GnuPG's default for `--quick-gen-key ... sign`), or with its
/// first signing subkey when the primary key may not sign, as a binary-document signature
/// with the issuer fingerprint, so every GnuPG from 1.4 on verifies it. The digest is the one
/// GnuPG 2.2 chooses for the key (`digest_for`): SHA-256 for an Ed25519 key, SHA-512 for
/// RSA.
pub struct Signer {
    key: SignedSecretKey,
    passphrase: Password,
    fingerprint: Fingerprint,
}

impl Signer {
    /// Loads the secret key in `file` and checks that `passphrase` unlocks it (an
    /// unprotected key takes any passphrase, conventionally empty).
    ///
    /// # Errors
    ///
    /// [`SignerError`] when the file cannot be read, is over 1 MiB, is not one secret key, or
    /// the passphrase does not unlock it.
    pub fn load(file: impl AsRef<Path>, passphrase: &str) -> Result<Self, SignerError> {
        let file = file.as_ref();
        let mut bytes = Vec::new();
        let limit = u64::try_from(KEY_FILE_LEN_MAX + 1).unwrap_or(u64::MAX);
        File::open(file)
            .and_then(|f| BufReader::new(f).take(limit).read_to_end(&mut bytes))
            .map_err(|source| SignerError::Io {
                file: file.display().to_string(),
                source,
            })?;
        Self::from_bytes(&bytes, passphrase)
    }

    /// [`Signer::load`] from the file's bytes.
    ///
    /// # Errors
    ///
    /// As [`Signer::load`], except reading.
    pub fn from_bytes(bytes: &[u8], passphrase: &str) -> Result<Self, SignerError> {
        if bytes.len() > KEY_FILE_LEN_MAX {
            return Err(SignerError::Key("key file over 1 MiB".to_owned()));
        }
        let (key, _headers) = SignedSecretKey::from_reader_single(bytes)
            .map_err(|e| SignerError::Key(cut(&e.to_string())))?;
        let fingerprint = Fingerprint(format!("{:X}", key.primary_key.fingerprint()));
        let signer = Self {
            key,
            passphrase: Password::from(passphrase),
            fingerprint,
        };
        // Unlock once now, so a wrong passphrase is an error at start, not at the first event.
        signer.sign(b"").map_err(|e| match e {
            SignerError::Sign(reason) => SignerError::Unlock(reason),
            other => other,
        })?;
        Ok(signer)
    }

    /// The primary key's fingerprint.
    #[must_use]
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// Signs `signed` (by the convention, the root element's bytes): a detached signature,
    /// ASCII-armoured, ready for [`vtp_core::signature::append_signature`].
    ///
    /// # Errors
    ///
    /// [`SignerError::Sign`] when the key cannot sign (a wrong passphrase, an algorithm
    /// rpgp cannot sign with).
    pub fn sign(&self, signed: &[u8]) -> Result<String, SignerError> {
        let sign_err = |e: pgp::errors::Error| SignerError::Sign(cut(&e.to_string()));
        let rng = rand::thread_rng();
        let signature = match self.signing_subkey() {
            None => DetachedSignature::sign_binary_data(
                rng,
                &self.key.primary_key,
                &self.passphrase,
                digest_for(self.key.primary_key.algorithm()),
                signed,
            ),
            Some(sub) => DetachedSignature::sign_binary_data(
                rng,
                &sub.key,
                &self.passphrase,
                digest_for(sub.key.algorithm()),
                signed,
            ),
        }
        .map_err(sign_err)?;
        signature
            .to_armored_string(ArmorOptions::default())
            .map_err(sign_err)
    }

    /// The first signing subkey, when the primary key's self-signatures do not allow signing.
    fn signing_subkey(&self) -> Option<&pgp::composed::SignedSecretSubKey> {
        let primary_signs = self
            .key
            .details
            .users
            .iter()
            .flat_map(|u| &u.signatures)
            .chain(&self.key.details.direct_signatures)
            .any(|s| s.key_flags().sign());
        if primary_signs {
            return None;
        }
        self.key
            .secret_subkeys
            .iter()
            .find(|sub| sub.signatures.iter().any(|s| s.key_flags().sign()))
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Why a signing key cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignerError {
    /// The file could not be read.
    #[error("{file}: cannot read")]
    Io {
        /// The file.
        file: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// Not one OpenPGP secret key (the library's message, cut to 200 characters).
    #[error("not an OpenPGP secret key: {0}")]
    Key(String),
    /// The passphrase does not unlock the key.
    #[error("cannot unlock the secret key (wrong passphrase?): {0}")]
    Unlock(String),
    /// Signing failed.
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// The digest GnuPG 2.2 signs with by default for a key of `algorithm`: for an Ed25519 key
/// the hash that matches the curve's size (SHA-256), for RSA the first of the key's
/// preferences (SHA-512 in every key GnuPG 2.1 and later makes); SHA-512 for anything else. SHA-256 is also the digest that CPUs hash in hardware (x86 SHA
/// extensions, ARMv8's SHA2 instructions), so every receiver verifies such a signature of a
/// 10 KB event in a few microseconds less than with SHA-512.
fn digest_for(algorithm: PublicKeyAlgorithm) -> HashAlgorithm {
    match algorithm {
        PublicKeyAlgorithm::EdDSALegacy | PublicKeyAlgorithm::Ed25519 => HashAlgorithm::Sha256,
        _ => HashAlgorithm::Sha512,
    }
}
