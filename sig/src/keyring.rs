//! Trusted public keys, loaded once, with every dimension bounded.

use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use pgp::composed::{PublicOrSecret, SignedPublicKey};
use pgp::packet::{PublicKey, PublicSubkey};
use pgp::types::KeyDetails;

use crate::fast::RsaKey;

/// The keys whose signatures can be verified: primary keys and their signing subkeys.
///
/// Load it from the files `gpg --export` or `gpg --export --armor` writes ([`Keyring::load`]),
/// or from bytes ([`Keyring::add`]). Every input is bounded before it costs memory or time:
/// a file is at most [`KEY_FILE_LEN_MAX`] bytes, a keyring holds at most [`KEYS_MAX`] keys,
/// and a user id is at most [`USER_ID_LEN_MAX`] bytes; over a bound, loading fails with a
/// [`LoadError`] naming the file and the bound.
///
/// Each key's self-signatures (user id and subkey bindings) are checked at load; a key whose
/// bindings do not verify is refused, as is a secret key (a trust file holds public keys).
/// Signing subkeys are usable when their binding carries the "sign" key flag.
///
/// Implementation note: expiry and revocation are not looked at (verification takes no
/// clock); remove a revoked key from the file and reload.
#[derive(Default)]
pub struct Keyring {
    keys: Vec<Entry>,
}

/// One trusted key: who it is and the keys that may have made a signature.
struct Entry {
    fingerprint: Fingerprint,
    user_id: String,
    signers: Vec<Signer>,
}

/// A key that verifies signatures (the primary key, or a signing subkey), with what is
/// computed once at load rather than at each verification: its fingerprint and key id (each a
/// SHA-1 of the key) and, for an RSA key ring can verify with, its components.
struct Signer {
    key: SignerKey,
    fingerprint: pgp::types::Fingerprint,
    key_id: pgp::types::KeyId,
    rsa: Option<RsaKey>,
}

enum SignerKey {
    Primary(PublicKey),
    Subkey(PublicSubkey),
}

impl Signer {
    fn new(key: SignerKey) -> Self {
        let (fingerprint, key_id, rsa) = match &key {
            SignerKey::Primary(k) => (k.fingerprint(), k.legacy_key_id(), RsaKey::new(k)),
            SignerKey::Subkey(k) => (k.fingerprint(), k.legacy_key_id(), RsaKey::new(k)),
        };
        Self {
            key,
            fingerprint,
            key_id,
            rsa,
        }
    }

    /// Whether a signature with these issuer subpackets names this key.
    fn issued(
        &self,
        fingerprints: &[&pgp::types::Fingerprint],
        key_ids: &[&pgp::types::KeyId],
    ) -> bool {
        if fingerprints.is_empty() {
            key_ids.contains(&&self.key_id)
        } else {
            fingerprints.contains(&&self.fingerprint)
        }
    }
}

impl Keyring {
    /// An empty keyring: every signature checked against it is [`Status::UnknownKey`].
    ///
    /// [`Status::UnknownKey`]: crate::Status::UnknownKey
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads every public key in `files` (armoured or binary, one or many keys a file).
    ///
    /// # Errors
    ///
    /// A [`LoadError`] for the first file that cannot be read, is over a bound, holds a secret
    /// key or no key, or does not parse.
    pub fn load<P: AsRef<Path>>(files: &[P]) -> Result<Self, LoadError> {
        let mut keyring = Self::new();
        for path in files {
            let path = path.as_ref();
            let name = path.display().to_string();
            let io = |source| LoadError::Io {
                file: name.clone(),
                source,
            };
            let file = File::open(path).map_err(io)?;
            let mut bytes = Vec::new();
            // One byte over the bound is enough to know the file is too long.
            let limit = u64::try_from(KEY_FILE_LEN_MAX + 1).unwrap_or(u64::MAX);
            BufReader::new(file)
                .take(limit)
                .read_to_end(&mut bytes)
                .map_err(io)?;
            keyring.add(&name, &bytes)?;
        }
        Ok(keyring)
    }

    /// Adds the public keys in `bytes` (one file's content, armoured or binary); `file` names
    /// it in errors. Returns how many keys were added.
    ///
    /// # Errors
    ///
    /// A [`LoadError`] when the bytes are over a bound, hold a secret key or no key, or do not
    /// parse. Nothing is added then.
    pub fn add(&mut self, file: &str, bytes: &[u8]) -> Result<usize, LoadError> {
        let err = |reason: Reason| LoadError::Key {
            file: file.to_owned(),
            reason,
        };
        if bytes.len() > KEY_FILE_LEN_MAX {
            return Err(err(Reason::FileTooLong));
        }
        let (keys, _headers) =
            PublicOrSecret::from_reader_many(bytes).map_err(|e| err(Reason::parse(&e)))?;
        let mut added = Vec::new();
        for key in keys {
            if self.keys.len() + added.len() >= KEYS_MAX {
                return Err(err(Reason::TooManyKeys));
            }
            let key = match key.map_err(|e| err(Reason::parse(&e)))? {
                PublicOrSecret::Public(key) => key,
                PublicOrSecret::Secret(_) => return Err(err(Reason::SecretKey)),
            };
            added.push(Entry::new(key).map_err(err)?);
        }
        if added.is_empty() {
            return Err(err(Reason::NoKey));
        }
        let count = added.len();
        self.keys.append(&mut added);
        Ok(count)
    }

    /// How many keys (primary keys) the keyring holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the keyring holds no key.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The fingerprints of the keys, in load order.
    pub fn fingerprints(&self) -> impl Iterator<Item = &Fingerprint> {
        self.keys.iter().map(|e| &e.fingerprint)
    }

    /// The key that made a signature with this issuer: its fingerprint, user id, the (sub)key
    /// to verify with, and its RSA components for the fast path.
    pub(crate) fn find(
        &self,
        fingerprints: &[&pgp::types::Fingerprint],
        key_ids: &[&pgp::types::KeyId],
    ) -> Option<(&Fingerprint, &str, SignerRef<'_>, Option<&RsaKey>)> {
        self.keys.iter().find_map(|entry| {
            entry.signers.iter().find_map(|signer| {
                signer.issued(fingerprints, key_ids).then(|| {
                    let key = match &signer.key {
                        SignerKey::Primary(k) => SignerRef::Primary(k),
                        SignerKey::Subkey(k) => SignerRef::Subkey(k),
                    };
                    (
                        &entry.fingerprint,
                        entry.user_id.as_str(),
                        key,
                        signer.rsa.as_ref(),
                    )
                })
            })
        })
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|e| (&e.fingerprint, &e.user_id)))
            .finish()
    }
}

impl Entry {
    fn new(key: SignedPublicKey) -> Result<Self, Reason> {
        for user in &key.details.users {
            let len = user.id.id().len();
            if len > USER_ID_LEN_MAX {
                return Err(Reason::UserIdTooLong(len));
            }
        }
        key.verify_bindings()
            .map_err(|e| Reason::Bindings(cut(&e.to_string())))?;
        let fingerprint = Fingerprint(format!("{:X}", key.primary_key.fingerprint()));
        let user = key
            .details
            .users
            .iter()
            .find(|u| u.is_primary())
            .or_else(|| key.details.users.first());
        let user_id = user.map_or_else(String::new, |u| {
            String::from_utf8_lossy(u.id.id()).into_owned()
        });
        let mut signers = vec![Signer::new(SignerKey::Primary(key.primary_key.clone()))];
        for sub in &key.public_subkeys {
            if sub.signatures.iter().any(|s| s.key_flags().sign()) {
                signers.push(Signer::new(SignerKey::Subkey(sub.key.clone())));
            }
        }
        Ok(Self {
            fingerprint,
            user_id,
            signers,
        })
    }
}

/// A borrowed verifying key.
pub(crate) enum SignerRef<'a> {
    Primary(&'a PublicKey),
    Subkey(&'a PublicSubkey),
}

/// A key's fingerprint, in upper-case hexadecimal as `gpg --with-colons` prints it (40 digits
/// for a v4 key).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub(crate) String);

impl Fingerprint {
    /// The hexadecimal digits.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a key file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("{file}: cannot read")]
    Io {
        /// The file.
        file: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The file's content was refused.
    #[error("{file}: {reason}")]
    Key {
        /// The file.
        file: String,
        /// Why.
        reason: Reason,
    },
}

/// Why a key file's content was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reason {
    /// The file is longer than [`KEY_FILE_LEN_MAX`].
    #[error("key file over {} KiB", KEY_FILE_LEN_MAX / 1024)]
    FileTooLong,
    /// The keyring would hold more than [`KEYS_MAX`] keys.
    #[error("more than {KEYS_MAX} keys")]
    TooManyKeys,
    /// A user id is longer than [`USER_ID_LEN_MAX`] (its length in bytes).
    #[error("a user id of {0} bytes (at most {USER_ID_LEN_MAX})")]
    UserIdTooLong(usize),
    /// A secret key where public keys were expected.
    #[error("a secret key; export the public key with gpg --export")]
    SecretKey,
    /// No key in the file.
    #[error("no OpenPGP public key")]
    NoKey,
    /// Not OpenPGP key material (the parser's message, cut to 200 characters).
    #[error("not an OpenPGP key: {0}")]
    Parse(String),
    /// A key whose self-signatures do not verify.
    #[error("key self-signatures do not verify: {0}")]
    Bindings(String),
}

impl Reason {
    fn parse(e: &pgp::errors::Error) -> Self {
        Self::Parse(cut(&e.to_string()))
    }
}

/// A library message, cut to 200 characters.
pub(crate) fn cut(text: &str) -> String {
    text.chars().take(200).collect()
}

/// Longest key file: 1 MiB (an exported RSA-4096 key with a few signatures is about 3 KiB).
pub const KEY_FILE_LEN_MAX: usize = 1024 * 1024;
/// Most keys in one keyring: 256.
pub const KEYS_MAX: usize = 256;
/// Longest user id: 1 KiB.
pub const USER_ID_LEN_MAX: usize = 1024;
