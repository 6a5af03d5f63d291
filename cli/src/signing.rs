//! OpenPGP signatures on the command line (`--signatures`, `--trusted-keys`, `--author-key`,
//! `--sign-key`): the checks at start, the keyring and signer the node is given, and `vtp
//! send`'s signing of a submission. The cryptography is `vtp-sig`'s (cargo feature
//! `signatures`); the policy is the core's.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use vtp_core::Config;
use vtp_core::config::SignaturePolicy;
use vtp_core::signature::{AuthorKey, EventSigner, Verifier};

/// Signature options of `vtp broker` and `vtp listen`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub(crate) struct SignatureArgs {
    /// OpenPGP signatures of incoming events, by the Comet manual's convention (README
    /// "Signatures"). off: not looked at. verify: each new event's status (valid, invalid,
    /// unknown-key, unsigned, malformed, invalid-signer) is logged with the event and given to
    /// the handlers (--cmd gets VTP_SIGNATURE and VTP_SIGNER). require: as verify, and an event
    /// whose status is not valid is refused: an author's submission is naked with the
    /// status and its reason, an upstream's or a Kafka record's event is dropped and logged.
    /// require needs --trusted-keys.
    #[arg(long, value_enum, value_name = "POLICY", default_value_t = Signatures::Verify)]
    pub(crate) signatures: Signatures,
    /// OpenPGP public keys whose signatures are trusted: a file of armoured or binary keys,
    /// e.g. `gpg --export --armor KEYID > FILE` (at most 1 MiB and 256 keys in all).
    /// Repeatable. Re-read on SIGHUP (with --config).
    #[arg(long, value_name = "FILE")]
    pub(crate) trusted_keys: Vec<PathBuf>,
    /// Binds a trusted key to the streams it may sign for, as IVO_PREFIX=FINGERPRINT (e.g.
    /// ivo://nasa.gsfc.gcn/SWIFT=0123...CDEF; the fingerprint as `gpg --fingerprint` prints
    /// it). An event under a bound prefix must be signed by a key bound to it, and a bound key
    /// may sign only under its prefixes; otherwise a valid signature is invalid-signer.
    /// Repeatable.
    #[arg(long, value_name = "IVO_PREFIX=FINGERPRINT")]
    pub(crate) author_key: Vec<String>,
    #[command(flatten)]
    pub(crate) sign: SignKeyArgs,
}

/// `--sign-key` and its passphrase (broker, listen and send).
#[derive(Debug, Clone, PartialEq, Eq, Args, Default)]
pub(crate) struct SignKeyArgs {
    /// Sign with the OpenPGP secret key in FILE (armoured or binary, e.g. `gpg
    /// --export-secret-keys --armor KEYID > FILE`), by the Comet manual's convention: vtp send
    /// signs the event it submits; a broker or listener signs the test events it originates
    /// and its authenticate replies.
    #[arg(long, value_name = "FILE")]
    pub(crate) sign_key: Option<PathBuf>,
    /// A file whose first line is the passphrase of --sign-key (default: the key is not
    /// protected). Never given on the command line, where other users could read it.
    #[arg(long, value_name = "FILE", requires = "sign_key")]
    pub(crate) sign_passphrase_file: Option<PathBuf>,
}

/// `--signatures`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Signatures {
    /// Signatures are not looked at.
    Off,
    /// Each new event's status is decided, logged and handed on.
    Verify,
    /// As verify, and only events with a valid signature are accepted.
    Require,
}

/// What the node runs with: its verifier and signer. Built at start and at each reload (the
/// key files are read again).
pub(crate) struct Plan {
    pub(crate) verifier: Option<Box<dyn Verifier>>,
    pub(crate) signer: Option<Box<dyn EventSigner>>,
    /// The number of trusted keys, for the start banner.
    pub(crate) keys: usize,
}

impl Plan {
    /// The start line: the policy, the keys, the bindings and the signer.
    pub(crate) fn log(&self, config: &Config) {
        let policy = config.policy.signatures.as_str();
        let signing = if self.signer.is_some() {
            "; signing test events and authenticate replies (--sign-key)"
        } else {
            ""
        };
        tracing::info!(
            "signatures: {policy}, {} trusted keys, {} key bindings{signing}",
            self.keys,
            config.author_keys.len()
        );
    }
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("keys", &self.keys)
            .field("signer", &self.signer.is_some())
            .finish()
    }
}

/// Checks the options, puts the policy and the bindings into `config`, and loads the keys.
///
/// # Errors
///
/// A message for the operator: a file that cannot be used (and why), a binding that is not
/// IVO_PREFIX=FINGERPRINT or names a key not trusted, `require` without trusted keys, or a
/// build without signature support asked to use keys.
pub(crate) fn plan(a: &SignatureArgs, config: &mut Config) -> Result<Plan, String> {
    config.policy.signatures = match a.signatures {
        Signatures::Off => SignaturePolicy::Off,
        Signatures::Verify => SignaturePolicy::Verify,
        Signatures::Require => SignaturePolicy::Require,
    };
    config.author_keys = a
        .author_key
        .iter()
        .map(|b| AuthorKey::parse(b).map_err(|e| format!("--author-key: {e}")))
        .collect::<Result<_, _>>()?;
    if a.signatures == Signatures::Require && a.trusted_keys.is_empty() {
        return Err(
            "--signatures require needs --trusted-keys FILE: without trusted keys no \
                    signature can be valid, and every event would be refused"
                .into(),
        );
    }
    if !config.author_keys.is_empty() && a.trusted_keys.is_empty() {
        return Err("--author-key binds trusted keys: give them with --trusted-keys FILE".into());
    }
    let (verifier, keys) = keyring(&a.trusted_keys, &config.author_keys)?;
    let signer = match &a.sign.sign_key {
        Some(file) => Some(signer(file, a.sign.sign_passphrase_file.as_deref())?),
        None => None,
    };
    Ok(Plan {
        verifier,
        signer,
        keys,
    })
}

#[cfg(feature = "signatures")]
fn keyring(
    files: &[PathBuf],
    bindings: &[AuthorKey],
) -> Result<(Option<Box<dyn Verifier>>, usize), String> {
    if files.is_empty() {
        return Ok((None, 0));
    }
    let keyring =
        vtp_sig::Keyring::load(files).map_err(|e| format!("--trusted-keys {}", chain(&e)))?;
    for b in bindings {
        if !keyring.fingerprints().any(|f| f.as_str() == b.fingerprint) {
            return Err(format!(
                "--author-key {}={}: no key with this fingerprint in --trusted-keys (gpg \
                 --fingerprint shows the fingerprints; add the key's public part to a trusted \
                 keys file)",
                b.prefix, b.fingerprint
            ));
        }
    }
    let n = keyring.len();
    Ok((Some(Box::new(keyring)), n))
}

#[cfg(not(feature = "signatures"))]
fn keyring(
    files: &[PathBuf],
    _: &[AuthorKey],
) -> Result<(Option<Box<dyn Verifier>>, usize), String> {
    if files.is_empty() {
        return Ok((None, 0));
    }
    Err(NO_SUPPORT.into())
}

/// The secret key of `--sign-key`, unlocked.
#[cfg(feature = "signatures")]
fn signer(file: &Path, passphrase_file: Option<&Path>) -> Result<Box<dyn EventSigner>, String> {
    Ok(Box::new(load_signer(file, passphrase_file)?))
}

#[cfg(not(feature = "signatures"))]
fn signer(_: &Path, _: Option<&Path>) -> Result<Box<dyn EventSigner>, String> {
    Err(NO_SUPPORT.into())
}

#[cfg(not(feature = "signatures"))]
const NO_SUPPORT: &str = "this vtp was built without OpenPGP signatures (cargo feature \
                          `signatures`): --trusted-keys and --sign-key are not available";

#[cfg(feature = "signatures")]
fn load_signer(file: &Path, passphrase_file: Option<&Path>) -> Result<vtp_sig::Signer, String> {
    let passphrase = match passphrase_file {
        Some(p) => passphrase(p)?,
        None => String::new(),
    };
    vtp_sig::Signer::load(file, &passphrase).map_err(|e| {
        let hint = if passphrase_file.is_none() {
            " (if the key is protected, give --sign-passphrase-file)"
        } else {
            ""
        };
        format!("--sign-key {}: {}{hint}", file.display(), chain(&e))
    })
}

/// The first line of a passphrase file (at most 4 KiB read).
fn passphrase(file: &Path) -> Result<String, String> {
    use std::io::Read;
    let name = file.display();
    let f = std::fs::File::open(file)
        .map_err(|e| format!("--sign-passphrase-file {name}: cannot open: {e}"))?;
    let mut text = String::new();
    f.take(4096)
        .read_to_string(&mut text)
        .map_err(|e| format!("--sign-passphrase-file {name}: cannot read: {e}"))?;
    Ok(text.lines().next().unwrap_or("").to_owned())
}

/// `vtp send --sign-key`: `payload` signed by the convention (the signature in a comment
/// after the root element).
///
/// # Errors
///
/// The key cannot be used, the payload is not one VOEvent, or it is already signed.
pub(crate) fn sign_submission(a: &SignKeyArgs, payload: &[u8]) -> Result<Vec<u8>, String> {
    let Some(file) = &a.sign_key else {
        return Ok(payload.to_vec());
    };
    let signer = signer(file, a.sign_passphrase_file.as_deref())?;
    let element = match vtp_core::message::parse(payload, &Default::default()) {
        Ok(vtp_core::message::Message::VoEvent(ev)) => ev.element,
        Ok(_) => return Err("cannot sign: it is a Transport message, not a VOEvent".into()),
        Err(e) => return Err(format!("cannot sign: {e}")),
    };
    let armour = signer.sign(&payload[element.clone()])?;
    vtp_core::signature::append_signature(payload, element, &armour).map_err(|e| e.to_string())
}

/// An error and its causes, on one line.
#[cfg(feature = "signatures")]
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    vtp_host::store::ErrorChain(e).to_string()
}
