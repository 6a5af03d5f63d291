//! OpenPGP signatures by Comet's convention: where the signature sits in a payload.
//!
//! # The convention
//!
//! The Comet manual (appendix "OpenPGP Signatures, Comet and VOEvents") defines how a VOEvent
//! is signed; this module implements its byte-level part, without any cryptography:
//!
//! - the **signed bytes** are exactly those of the root element, from its `<` to the `>` of its
//!   end tag (the span [`message::parse`](crate::message::parse) gives as
//!   [`VoEvent::element`](crate::message::VoEvent::element)); nothing before it (XML
//!   declaration, comments) or after it is signed;
//! - the signature is a **detached, ASCII-armoured OpenPGP signature** (what
//!   `gpg --detach-sign --armor` writes) placed **after the root element in an XML comment**;
//!   inside the comment every `-----` of the armour is written `=====`, because an XML comment
//!   may not contain `--`; the receiver reverses the substitution before decoding;
//! - a payload carries one root element, so the signature is unambiguous; a system that does
//!   not know the convention sees an ordinary comment and treats the event as unsigned.
//!
//! Applying or removing a signature never changes the element's bytes, so an event's identity
//! (the SHA-256 of its element, [`EventKey`](crate::EventKey)) is the same signed or not. A
//! signed payload looks like this:
//!
//! ```text
//! <?xml version="1.0" encoding="UTF-8"?>
//! <voe:VOEvent ivorn="ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_1234" ...>
//!   ...
//! </voe:VOEvent>
//! <!--
//! =====BEGIN PGP SIGNATURE=====
//!
//! iHUEABYIAB0WIQQG+HCHgTu88opgQXdQhoGPsaD98gUCaxZbdgAKCRBQhoGPsaD9
//! ...
//! =====END PGP SIGNATURE=====
//! -->
//! ```
//!
//! # What this module does
//!
//! [`extract`] finds the signature of a payload: [`Extracted::Signed`] with the signed range
//! and the armour (substitution undone), [`Extracted::Unsigned`] when no comment holds one, or
//! [`Extracted::Malformed`] with a [`Malformed`] reason. [`append_signature`] is its inverse.
//! Whether the armour decodes and the signature is good is the verifier's business (the
//! `vtp-sig` crate); whether a status is acceptable is the node's policy. [`StatusKind`] holds
//! the stable names of every status, shared by both.
//!
//! # Limits and panics
//!
//! Both functions read the payload once, allocate only the armour (at most
//! [`COMMENT_LEN_MAX`] bytes), and never panic, whatever the bytes and the range: a range that
//! is not an element of the payload is [`Malformed::ElementRange`].

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use crate::seen::ElementHash;

/// Finds the signature of `payload` whose root element spans `element`.
///
/// The bytes outside the element are read as XML "misc" items: a byte order mark, whitespace,
/// processing instructions (the XML declaration is one) and comments. A comment whose text
/// mentions `BEGIN PGP SIGNATURE` is a **signature comment**. The result is:
///
/// - [`Extracted::Signed`] when exactly one comment after the element is a signature comment,
///   none before it, and its text is one well-framed armour (see [`Malformed`] for what is
///   checked); comments without a signature are ignored wherever they are;
/// - [`Extracted::Unsigned`] when there is no signature comment (comments inside the element
///   are part of the signed bytes and never looked at);
/// - [`Extracted::Malformed`] otherwise, with the first problem found.
///
/// Implementation note: the armour's base64 and checksum are not decoded here; a signature
/// comment with well-framed but undecodable content is `Signed` here and malformed for the
/// verifier.
pub fn extract(payload: &[u8], element: Range<usize>) -> Extracted {
    match find(payload, &element) {
        Ok(Some(comment)) => match armour_of(&payload[comment.clone()]) {
            Ok(armour) => Extracted::Signed(Signed {
                signed: element,
                comment,
                armour,
            }),
            Err(reason) => Extracted::Malformed(reason),
        },
        Ok(None) => Extracted::Unsigned,
        Err(reason) => Extracted::Malformed(reason),
    }
}

/// Signs `payload` by the convention: returns it with the armoured detached signature
/// `armoured` in a comment right after the root element (spanning `element`).
///
/// The comment is `<!--`, a line feed, the armour (surrounding whitespace trimmed) with every
/// `-----` written `=====`, a line feed and `-->`; the bytes before and after are kept as they
/// are, so the element is unchanged. [`extract`] on the result gives back `armoured`, trimmed.
///
/// # Errors
///
/// [`AppendError::Malformed`] when the payload already carries a signature comment or cannot
/// be read around `element` (the reason [`extract`] would give), and
/// [`AppendError::Armour`] when `armoured` is not one ASCII-armoured signature or would not
/// come back unchanged from the comment (a header holding `=====` or `--`, say).
pub fn append_signature(
    payload: &[u8],
    element: Range<usize>,
    armoured: &str,
) -> Result<Vec<u8>, AppendError> {
    match find(payload, &element) {
        Ok(None) => {}
        Ok(Some(_)) => return Err(AppendError::Malformed(Malformed::AlreadySigned)),
        Err(reason) => return Err(AppendError::Malformed(reason)),
    }
    let armour = armoured.trim_matches(XML_WS);
    let written = armour.replace(DASHES, EQUALS);
    let mut out = Vec::with_capacity(payload.len() + written.len() + 10);
    out.extend_from_slice(&payload[..element.end]);
    out.extend_from_slice(b"\n<!--\n");
    out.extend_from_slice(written.as_bytes());
    out.extend_from_slice(b"\n-->");
    out.extend_from_slice(&payload[element.end..]);
    // The convention is checked on what was written: the comment must read back as exactly
    // this armour, which rules out every armour the substitution cannot carry.
    match extract(&out, element) {
        Extracted::Signed(signed) if signed.armour == armour => Ok(out),
        Extracted::Signed(_) => Err(AppendError::Armour(Malformed::NotReversible)),
        Extracted::Malformed(reason) => Err(AppendError::Armour(reason)),
        Extracted::Unsigned => Err(AppendError::Armour(Malformed::Framing)),
    }
}

/// What [`extract`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Extracted {
    /// One signature comment after the root element, well framed.
    Signed(Signed),
    /// No signature comment anywhere outside the root element.
    Unsigned,
    /// Something that is meant as a signature but is not one by the convention.
    Malformed(Malformed),
}

/// A signature found by [`extract`].
#[derive(Clone, PartialEq, Eq)]
pub struct Signed {
    /// The signed bytes: the root element's range, as given to [`extract`].
    pub signed: Range<usize>,
    /// The whole signature comment, from `<!--` through `-->` (removing it unsigns the
    /// payload).
    pub comment: Range<usize>,
    /// The ASCII armour with the substitution undone, from `-----BEGIN PGP SIGNATURE-----`
    /// through `-----END PGP SIGNATURE-----` (no surrounding whitespace; lines end as they
    /// did in the comment).
    pub armour: String,
}

impl fmt::Debug for Signed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signed")
            .field("signed", &self.signed)
            .field("comment", &self.comment)
            .field("armour_len", &self.armour.len())
            .finish()
    }
}

/// Why a payload's signature is malformed; `Display` is the reason for logs and naks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    /// The range given is not an element of the payload (it must start with `<`, end with `>`
    /// and lie inside the payload).
    #[error("the root element range is not an element of the payload")]
    ElementRange,
    /// Before or after the root element there is something other than comments, processing
    /// instructions and whitespace.
    #[error("content other than comments and whitespace outside the root element")]
    Outside,
    /// A comment or processing instruction outside the root element is not closed.
    #[error("unterminated comment or processing instruction outside the root element")]
    Unterminated,
    /// A signature comment comes before the root element (the convention puts it after).
    #[error("signature comment before the root element")]
    BeforeRoot,
    /// More than one signature comment after the root element.
    #[error("more than one signature comment")]
    TwoSignatures,
    /// A signature comment longer than [`COMMENT_LEN_MAX`].
    #[error("signature comment over 64 KiB")]
    TooLong,
    /// A signature comment with bytes other than printable ASCII, spaces, tabs and line
    /// breaks.
    #[error("signature comment with non-ASCII or control characters")]
    NotAscii,
    /// A signature comment that is not exactly one armour: `=====BEGIN PGP SIGNATURE=====` on
    /// the first line, `=====END PGP SIGNATURE=====` on the last, no other armour line, no
    /// `--` (which an XML comment may not hold).
    #[error("signature comment is not one armoured signature (=====BEGIN/END PGP SIGNATURE=====)")]
    Framing,
    /// An armour the substitution cannot carry: it would not come back unchanged (only from
    /// [`append_signature`]).
    #[error("armour does not survive the ----- to ===== substitution")]
    NotReversible,
    /// The payload already carries a signature comment (only from [`append_signature`]).
    #[error("the payload is already signed")]
    AlreadySigned,
}

/// Why [`append_signature`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The payload: already signed, or unreadable around the element.
    #[error("cannot sign this payload: {0}")]
    Malformed(Malformed),
    /// The armour given.
    #[error("cannot carry this signature: {0}")]
    Armour(Malformed),
}

/// Every signature status, by its stable name (for logs, handler environments and metrics).
///
/// [`extract`] decides `unsigned` and `malformed`; the verifier decides `valid`, `invalid`,
/// `unknown-key` and `malformed` (armour that does not decode); the node decides
/// `invalid-signer` (a valid signature by a key not bound to the event's stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StatusKind {
    /// A good signature by a trusted key.
    Valid,
    /// A bad signature: tampered bytes, a signature over other bytes, a refused algorithm.
    Invalid,
    /// A well-formed signature by a key not in the keyring.
    UnknownKey,
    /// No signature comment.
    Unsigned,
    /// A signature comment that is not a signature by the convention.
    Malformed,
    /// A valid signature by a trusted key that may not sign for the event's stream.
    InvalidSigner,
}

impl StatusKind {
    /// Every status, in declaration order.
    pub const ALL: [Self; 6] = [
        Self::Valid,
        Self::Invalid,
        Self::UnknownKey,
        Self::Unsigned,
        Self::Malformed,
        Self::InvalidSigner,
    ];

    /// The stable name: `valid`, `invalid`, `unknown-key`, `unsigned`, `malformed` or
    /// `invalid-signer`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Invalid => "invalid",
            Self::UnknownKey => "unknown-key",
            Self::Unsigned => "unsigned",
            Self::Malformed => "malformed",
            Self::InvalidSigner => "invalid-signer",
        }
    }
}

impl fmt::Display for StatusKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a [`Verifier`] found about one signature; the node turns it into a [`Signature`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// A good signature by a trusted key.
    Valid {
        /// The key's fingerprint, upper-case hexadecimal without spaces (the primary key's,
        /// also when a subkey signed).
        fingerprint: String,
        /// The key's primary user id (empty when it has none).
        user_id: String,
    },
    /// A bad or refused signature; the reason.
    Invalid(String),
    /// A signature by a key the verifier does not hold; the key's id or fingerprint.
    UnknownKey(String),
    /// Armour that does not decode to one signature; the reason.
    Malformed(String),
}

/// The cryptography the node calls on a signed event: given the signed bytes and the armour
/// ([`Signed::armour`]), say whether the signature is good and whose it is.
///
/// Implementations must be pure (no IO, no clock) and bounded in time for any input: the node
/// calls it on its event loop, once per new signed event, or hands it to the host to call on
/// another thread ([`VerifyJob`], [`Node::set_verify_offload`](crate::Node::set_verify_offload)). The `vtp-sig` crate provides one
/// (an OpenPGP keyring). Set one with [`Node::set_verifier`](crate::Node::set_verifier).
pub trait Verifier: fmt::Debug + Send + Sync {
    /// Verifies the detached signature `armour` over `signed`.
    fn verify(&self, signed: &[u8], armour: &str) -> Verdict;

    /// [`Verifier::verify`], where `element` is the SHA-256 state after exactly the bytes of
    /// `signed` (the event key's hash): a verifier may continue it for a SHA-256 signature
    /// instead of hashing `signed` again. The verdict must be the one `verify` gives; by
    /// default it is `verify`'s.
    fn verify_element(&self, signed: &[u8], armour: &str, element: &ElementHash) -> Verdict {
        let _ = element;
        self.verify(signed, armour)
    }
}

/// Signs on behalf of the node: the test events it originates and its authenticate replies
/// ([`Node::set_signer`](crate::Node::set_signer)), by the convention.
pub trait EventSigner: fmt::Debug + Send {
    /// An ASCII-armoured detached signature over `signed` (the root element's bytes).
    ///
    /// # Errors
    ///
    /// A text saying why the signature could not be made; the node then sends the message
    /// unsigned and reports it.
    fn sign(&self, signed: &[u8]) -> Result<String, String>;
}

/// Who made a good signature.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SignerId {
    /// The key's fingerprint, upper-case hexadecimal.
    pub fingerprint: Arc<str>,
    /// The key's primary user id (may be empty).
    pub user_id: Arc<str>,
}

/// An event's signature status as the node decided it: the status, who signed (for `valid`
/// and `invalid-signer`) and why (for the other statuses but `unsigned`).
///
/// Cheap to clone (shared strings): every [`Delivery`](crate::Delivery) of the event carries
/// one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The status.
    pub status: StatusKind,
    /// The signer of a `valid` or `invalid-signer` signature.
    pub signer: Option<SignerId>,
    /// Why the status is not `valid`: the verifier's or the convention's reason, the unknown
    /// key's id, or the binding that refused the signer. `None` for `valid` and `unsigned`.
    pub detail: Option<Arc<str>>,
}

impl Signature {
    /// The status of an event without a signature.
    #[must_use]
    pub const fn unsigned() -> Self {
        Self {
            status: StatusKind::Unsigned,
            signer: None,
            detail: None,
        }
    }

    /// A status without a signer, with its reason.
    #[must_use]
    pub fn with_detail(status: StatusKind, detail: &str) -> Self {
        Self {
            status,
            signer: None,
            detail: Some(Arc::from(detail)),
        }
    }
}

impl fmt::Display for Signature {
    /// `valid (FINGERPRINT "USER ID")`, `unsigned`, or the status and its reason.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.status.as_str())?;
        if let Some(signer) = &self.signer {
            write!(f, " ({} {:?})", signer.fingerprint, &*signer.user_id)?;
        }
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

/// A binding of a key to the streams it may sign for (`--author-key IVO_PREFIX=FINGERPRINT`).
///
/// An event whose IVORN starts with a bound prefix must be signed by a key bound to a prefix
/// it starts with; a bound key signing an event outside all its prefixes is refused too. A
/// valid signature a binding refuses is `invalid-signer`: impersonation refused. Events under
/// no bound prefix, signed by unbound keys, are checked by the keyring alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorKey {
    /// The IVORN prefix, e.g. `ivo://nasa.gsfc.gcn/SWIFT`: matches that IVORN and every IVORN
    /// that continues it at a `/`, `#` or `?` (or any IVORN it is a prefix of when it ends
    /// with one of those).
    pub prefix: String,
    /// The key's fingerprint, upper-case hexadecimal without spaces (40 or 64 digits).
    pub fingerprint: String,
}

impl AuthorKey {
    /// Reads `IVO_PREFIX=FINGERPRINT`; the fingerprint may hold spaces and lower-case digits
    /// (as `gpg --fingerprint` prints it).
    ///
    /// # Errors
    ///
    /// A text naming what is wrong: no `=`, a prefix that is not `ivo://` and an authority,
    /// or a fingerprint that is not 40 or 64 hexadecimal digits.
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some((prefix, fingerprint)) = text.split_once('=') else {
            return Err(format!(
                "`{text}` is not IVO_PREFIX=FINGERPRINT (e.g. ivo://nasa.gsfc.gcn/SWIFT=0123...)"
            ));
        };
        let prefix = prefix.trim();
        let authority = prefix.strip_prefix("ivo://").unwrap_or("");
        if authority.is_empty() || authority.starts_with(['/', '#', '?']) {
            return Err(format!(
                "`{prefix}` is not an IVORN prefix: it must start with ivo:// and an authority"
            ));
        }
        let fingerprint: String = fingerprint
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let hex = fingerprint.chars().all(|c| c.is_ascii_hexdigit());
        if !hex || !(fingerprint.len() == 40 || fingerprint.len() == 64) {
            return Err(format!(
                "`{fingerprint}` is not a key fingerprint: expected 40 (v4) or 64 (v6) \
                 hexadecimal digits, as `gpg --fingerprint` prints"
            ));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
            fingerprint,
        })
    }

    /// True when `ivorn` is under this binding's prefix.
    #[must_use]
    pub fn covers(&self, ivorn: &str) -> bool {
        let p = self.prefix.as_str();
        match ivorn.strip_prefix(p) {
            None => false,
            Some(rest) => {
                rest.is_empty() || p.ends_with(['/', '#', '?']) || rest.starts_with(['/', '#', '?'])
            }
        }
    }
}

/// The binding rule of [`AuthorKey`] for a valid signature by `fingerprint` on `ivorn`:
/// `Err` with the reason when the bindings refuse the signer.
///
/// # Errors
///
/// The reason, naming the prefix the event falls under or the streams the key is bound to.
pub fn check_binding(bindings: &[AuthorKey], ivorn: &str, fingerprint: &str) -> Result<(), String> {
    let mut covering = bindings.iter().filter(|b| b.covers(ivorn)).peekable();
    if covering.peek().is_some() {
        let mut prefixes = Vec::new();
        for b in covering {
            if b.fingerprint.eq_ignore_ascii_case(fingerprint) {
                return Ok(());
            }
            if !prefixes.contains(&b.prefix.as_str()) {
                prefixes.push(b.prefix.as_str());
            }
        }
        return Err(format!(
            "key {fingerprint} may not sign for {} (bound to other keys)",
            prefixes.join(", ")
        ));
    }
    let own: Vec<&str> = bindings
        .iter()
        .filter(|b| b.fingerprint.eq_ignore_ascii_case(fingerprint))
        .map(|b| b.prefix.as_str())
        .collect();
    if own.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "key {fingerprint} may sign only for {}",
            own.join(", ")
        ))
    }
}

/// The signature status of `payload` (root element at `element`, IVORN `ivorn`): the
/// convention ([`extract`]), then `verifier` (none: every signature is `unknown-key`, with
/// that reason; given the element's `hash`, the event key's SHA-256 state, through
/// [`Verifier::verify_element`]), then the `bindings` ([`check_binding`]). Pure; the node's one way to decide a
/// status.
pub fn status_of(
    payload: &[u8],
    element: Range<usize>,
    hash: Option<&ElementHash>,
    ivorn: &str,
    verifier: Option<&dyn Verifier>,
    bindings: &[AuthorKey],
) -> Signature {
    let signed = match extract(payload, element) {
        Extracted::Signed(signed) => signed,
        Extracted::Unsigned => return Signature::unsigned(),
        Extracted::Malformed(reason) => {
            return Signature::with_detail(StatusKind::Malformed, &reason.to_string());
        }
    };
    let Some(verifier) = verifier else {
        return Signature::with_detail(StatusKind::UnknownKey, "no trusted keys are configured");
    };
    let signed_bytes = &payload[signed.signed];
    let verdict = match hash {
        Some(hash) => verifier.verify_element(signed_bytes, &signed.armour, hash),
        None => verifier.verify(signed_bytes, &signed.armour),
    };
    status_from_verdict(verdict, ivorn, bindings)
}

/// The status a [`Verifier`]'s `verdict` gives an event with IVORN `ivorn`, after the
/// `bindings` ([`check_binding`]): the second half of [`status_of`], for a verdict reached
/// elsewhere ([`VerifyJob`]).
#[must_use]
pub fn status_from_verdict(verdict: Verdict, ivorn: &str, bindings: &[AuthorKey]) -> Signature {
    match verdict {
        Verdict::Valid {
            fingerprint,
            user_id,
        } => {
            let signer = Some(SignerId {
                fingerprint: Arc::from(fingerprint.as_str()),
                user_id: Arc::from(user_id.as_str()),
            });
            match check_binding(bindings, ivorn, &fingerprint) {
                Ok(()) => Signature {
                    status: StatusKind::Valid,
                    signer,
                    detail: None,
                },
                Err(reason) => Signature {
                    status: StatusKind::InvalidSigner,
                    signer,
                    detail: Some(Arc::from(reason.as_str())),
                },
            }
        }
        Verdict::Invalid(reason) => Signature::with_detail(StatusKind::Invalid, &reason),
        Verdict::UnknownKey(id) => {
            Signature::with_detail(StatusKind::UnknownKey, &format!("key {id} is not trusted"))
        }
        Verdict::Malformed(reason) => Signature::with_detail(StatusKind::Malformed, &reason),
    }
}

/// One signature for the host to verify off the event loop ([`Action::Verify`]): the signed
/// bytes, the armour and the verifier to run. Run it anywhere ([`VerifyJob::run`] is pure) and
/// hand the verdict back with [`Node::handle_verdict`] under [`VerifyJob::id`].
///
/// [`Action::Verify`]: crate::Action::Verify
/// [`Node::handle_verdict`]: crate::Node::handle_verdict
#[derive(Clone)]
pub struct VerifyJob {
    pub(crate) id: u64,
    pub(crate) verifier: Arc<dyn Verifier>,
    pub(crate) signed: bytes::Bytes,
    pub(crate) armour: String,
    /// The SHA-256 state after `signed`, when the node has it (the event key's hash); boxed,
    /// as ring's state is a few hundred bytes and an `Action` carries the job.
    pub(crate) element: Option<Box<ElementHash>>,
}

impl VerifyJob {
    /// A job: `verifier` on `signed` and `armour`, its verdict handed back under `id`. The node
    /// makes its own; this is for tests and for hosts that drive a verifier themselves.
    #[must_use]
    pub fn new(id: u64, verifier: Arc<dyn Verifier>, signed: bytes::Bytes, armour: String) -> Self {
        Self {
            id,
            verifier,
            signed,
            armour,
            element: None,
        }
    }

    /// The number the verdict is handed back under.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Verifies: the verifier on the signed bytes and the armour (continuing the event key's
    /// hash when the node made the job, [`Verifier::verify_element`]). Pure and bounded, like
    /// [`Verifier::verify`]; may run on any thread.
    #[must_use]
    pub fn run(&self) -> Verdict {
        match &self.element {
            Some(element) => self
                .verifier
                .verify_element(&self.signed, &self.armour, element),
            None => self.verifier.verify(&self.signed, &self.armour),
        }
    }
}

impl fmt::Debug for VerifyJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyJob")
            .field("id", &self.id)
            .field("signed_len", &self.signed.len())
            .finish_non_exhaustive()
    }
}

/// Jobs are the same job when their numbers are.
impl PartialEq for VerifyJob {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for VerifyJob {}

/// Longest signature comment accepted, `<!--` through `-->`: 64 KiB. An armoured signature by
/// a 4096-bit RSA key is under 1 KiB; the bound leaves room for headers and keeps the armour
/// copy small.
pub const COMMENT_LEN_MAX: usize = 64 * 1024;

/// Text that makes a comment a signature comment.
const MARKER: &[u8] = b"BEGIN PGP SIGNATURE";
const BEGIN_LINE: &str = "=====BEGIN PGP SIGNATURE=====";
const END_LINE: &str = "=====END PGP SIGNATURE=====";
const DASHES: &str = "-----";
const EQUALS: &str = "=====";
const XML_WS: [char; 4] = [' ', '\t', '\r', '\n'];
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The range of the one signature comment after the element, if any.
fn find(payload: &[u8], element: &Range<usize>) -> Result<Option<Range<usize>>, Malformed> {
    let is_element = element.start < element.end
        && element.end <= payload.len()
        && payload[element.start] == b'<'
        && payload[element.end - 1] == b'>';
    if !is_element {
        return Err(Malformed::ElementRange);
    }
    let head = &payload[..element.start];
    let head = head.strip_prefix(BOM).unwrap_or(head);
    if misc(head, 0)?.is_some() {
        return Err(Malformed::BeforeRoot);
    }
    let mut found = None;
    let mut from = element.end;
    while let Some(comment) = misc(&payload[from..], from)? {
        if found.is_some() {
            return Err(Malformed::TwoSignatures);
        }
        from = comment.end;
        found = Some(comment);
    }
    Ok(found)
}

/// Reads `bytes` (at `offset` in the payload) as XML misc items; returns the first signature
/// comment, with `bytes`' offset added.
fn misc(bytes: &[u8], offset: usize) -> Result<Option<Range<usize>>, Malformed> {
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if matches!(rest[0], b' ' | b'\t' | b'\r' | b'\n') {
            at += 1;
        } else if rest.starts_with(b"<!--") {
            let len = memchr::memmem::find(&rest[4..], b"-->").ok_or(Malformed::Unterminated)? + 7;
            let text = &rest[4..len - 3];
            if memchr::memmem::find(text, MARKER).is_some() {
                return Ok(Some(offset + at..offset + at + len));
            }
            at += len;
        } else if rest.starts_with(b"<?") {
            at += memchr::memmem::find(rest, b"?>").ok_or(Malformed::Unterminated)? + 2;
        } else {
            return Err(Malformed::Outside);
        }
    }
    Ok(None)
}

/// The armour in a signature comment (`<!--` through `-->`), substitution undone.
fn armour_of(comment: &[u8]) -> Result<String, Malformed> {
    if comment.len() > COMMENT_LEN_MAX {
        return Err(Malformed::TooLong);
    }
    let text = &comment[4..comment.len() - 3];
    let printable = |b: &u8| matches!(b, b' '..=b'~' | b'\t' | b'\r' | b'\n');
    if !text.iter().all(printable) {
        return Err(Malformed::NotAscii);
    }
    let text = std::str::from_utf8(text)
        .map_err(|_| Malformed::NotAscii)?
        .trim_matches(XML_WS);
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("");
    let last = lines.next_back().unwrap_or("");
    let framing_in_body = lines.any(|l| l.starts_with("=====BEGIN") || l.starts_with("=====END"));
    // `--` may not appear in an XML comment; here it would also come back as `--`.
    let double_hyphen = text.contains("--");
    if first != BEGIN_LINE || last != END_LINE || framing_in_body || double_hyphen {
        return Err(Malformed::Framing);
    }
    Ok(text.replace(EQUALS, DASHES))
}

#[cfg(test)]
mod tests;
