//! The handler spool's file format: a segment header, then variable-length checksummed records.
//!
//! ```text
//! segment header (32 bytes): [0..8]   b"VTPSPOOL"
//!                            [8..12]  u32 LE format version (3; 1 and 2 are read too)
//!                            [12..16] CRC-32 (LE) of bytes 16..32
//!                            [16..24] u64 LE segment number (as in the file name)
//!                            [24..32] u64 LE first id: every entry in the segment has an id at
//!                                     least this (ids keep growing when segments are deleted)
//! record head (24 bytes):    [0..4]   CRC-32 (LE) of bytes 4..24
//!                            [4]      kind: 1 entry, 2 done
//!                            [5]      an entry's event role: 1 observation, 2 prediction,
//!                                     3 utility, 4 test; 0 not recorded (always 0 in a done
//!                                     record, and in every record of a version 1 segment)
//!                            [6]      an entry's signature flag: 1 when its body holds a
//!                                     signature block (version 3), else 0
//!                            [7]      zero
//!                            [8..12]  u32 LE body length
//!                            [12..16] CRC-32 (LE) of the body
//!                            [16..24] u64 LE: the entry's id (entry), the number of ids (done)
//! entry body:                [0..32]  event key
//!                            [32..34] u16 LE ivorn length, then the ivorn (UTF-8), then, when
//!                                     the signature flag is set, u16 LE block length and the
//!                                     signature block, then the payload as received (the rest
//!                                     of the body)
//! signature block:           [0]      status: 1 valid, 2 invalid, 3 unknown-key, 4 unsigned,
//!                                     5 malformed, 6 invalid-signer
//!                            then three UTF-8 strings, each after its u16 LE length: the
//!                            signer's fingerprint and user id (both empty without a signer)
//!                            and the detail (empty without one); each string at most
//!                            [`SIGNATURE_TEXT_MAX`] bytes
//! done body:                 u64 LE ids of entries whose handlers have all run
//! ```
//!
//! Version 2 added the role byte, version 3 the signature block (the status `--cmd` and the
//! other handlers get, `Delivery::signature`). Older segments are read as they are: an entry
//! without a recorded role gets it from its payload when it is read back, one without a
//! signature block has no status (`None`). Appends never go to an older segment (a new one is
//! started), so that a vtp that only knows an older version refuses the newer segments by
//! their header (clearly, naming the file) instead of taking their bytes for damage.
//!
//! The head has its own checksum so that a damaged body costs that record only: its length
//! still says where the next record starts. A head that does not check out (zeros past the
//! last record, a write cut short, damage) ends what can be read of the segment.

use std::sync::Arc;

use vtp_core::EventKey;
use vtp_core::message::EventRole;
use vtp_core::signature::{Signature, SignerId, StatusKind};

/// First bytes of every spool segment.
const MAGIC: [u8; 8] = *b"VTPSPOOL";
/// The format version written.
pub(crate) const VERSION: u32 = 3;
/// The oldest version read.
const VERSION_OLDEST: u32 = 1;
/// Length of a segment header.
pub(crate) const HEADER_LEN: u64 = 32;
/// Length of a record head.
pub(crate) const HEAD_LEN: usize = 24;
/// Most ids in one done record (64 KiB of body).
pub(crate) const DONE_IDS_MAX: usize = 8192;
/// Bytes of an entry body before the ivorn: the key and the ivorn's length.
const ENTRY_FIXED: usize = 34;
/// Longest text of a signature block (fingerprint, user id, detail): longer ones are cut at a
/// character boundary (a keyring's user ids are at most 1 KiB).
pub(crate) const SIGNATURE_TEXT_MAX: usize = 1024;
/// The first version with signature blocks.
pub(crate) const VERSION_SIGNATURES: u32 = 3;
/// The first version with role bytes.
pub(crate) const VERSION_ROLES: u32 = 2;

/// What kind of record a head introduces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An event for the handlers.
    Entry,
    /// Ids of entries done with.
    Done,
}

/// A record head that checks out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) kind: Kind,
    pub(crate) len: u32,
    pub(crate) body_crc: u32,
    /// The entry's id, or the number of ids in a done record.
    pub(crate) id: u64,
    /// An entry's role byte (0: not recorded; see [`role_of`]).
    pub(crate) role: u8,
    /// An entry's body holds a signature block.
    pub(crate) signed: bool,
}

/// The header of a new segment.
pub(crate) fn header(number: u64, first_id: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&number.to_le_bytes());
    h[24..32].copy_from_slice(&first_id.to_le_bytes());
    let crc = crc32fast::hash(&h[16..32]);
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

/// What the first bytes of a segment say.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Header {
    /// A segment: its number, first id and format version.
    Ours {
        number: u64,
        first_id: u64,
        version: u32,
    },
    /// Shorter than a header, or only zeros: a segment whose creation was cut short.
    Blank,
    /// Something else; the reason says what.
    Foreign(&'static str),
}

/// Checks the first bytes of a segment (`bytes` is shorter than [`HEADER_LEN`] only when the
/// file is).
pub(crate) fn check_header(bytes: &[u8]) -> Header {
    if bytes.iter().all(|&b| b == 0) {
        return Header::Blank;
    }
    if bytes.len() < HEADER_LEN as usize || bytes[..8] != MAGIC {
        return Header::Foreign("it does not start like a vtp handler spool segment");
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if !(VERSION_OLDEST..=VERSION).contains(&version) {
        return Header::Foreign(
            "it is a vtp handler spool segment of another format version (from a newer vtp?)",
        );
    }
    if bytes[12..16] != crc32fast::hash(&bytes[16..32]).to_le_bytes() {
        return Header::Foreign("its header does not check out (damage)");
    }
    Header::Ours {
        number: u64_at(bytes, 16),
        first_id: u64_at(bytes, 24),
        version,
    }
}

/// Bytes an entry record of this event takes: head and body, with a signature block of
/// `block` bytes (0: none). `None` if it cannot be spooled (an ivorn longer than 65,535 bytes,
/// or a body over 4 GiB).
pub(crate) fn entry_len(ivorn: &str, block: usize, payload_len: usize) -> Option<usize> {
    u16::try_from(ivorn.len()).ok()?;
    let block = if block > 0 { 2 + block } else { 0 };
    let body = ENTRY_FIXED + ivorn.len() + block + payload_len;
    u32::try_from(body).ok()?;
    Some(HEAD_LEN + body)
}

/// The signature block of `signature` (see the module docs).
pub(crate) fn encode_signature(signature: &Signature) -> Vec<u8> {
    let status = StatusKind::ALL
        .iter()
        .position(|k| *k == signature.status)
        .map_or(0, |i| i as u8 + 1);
    let (fingerprint, user_id) = signature
        .signer
        .as_ref()
        .map_or(("", ""), |s| (&*s.fingerprint, &*s.user_id));
    let detail = signature.detail.as_deref().unwrap_or("");
    let mut out = Vec::with_capacity(7 + fingerprint.len() + user_id.len() + detail.len());
    out.push(status);
    for text in [fingerprint, user_id, detail] {
        let text = cut(text, SIGNATURE_TEXT_MAX);
        out.extend_from_slice(&(text.len() as u16).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    out
}

/// The signature a block records; `None` if it does not parse.
pub(crate) fn decode_signature(block: &[u8]) -> Option<Signature> {
    let (&status, mut rest) = block.split_first()?;
    let status = *StatusKind::ALL.get(usize::from(status).checked_sub(1)?)?;
    let mut texts = [""; 3];
    for text in &mut texts {
        let len = usize::from(u16::from_le_bytes(rest.get(..2)?.try_into().ok()?));
        *text = std::str::from_utf8(rest.get(2..2 + len)?).ok()?;
        rest = &rest[2 + len..];
    }
    if !rest.is_empty() {
        return None;
    }
    let [fingerprint, user_id, detail] = texts;
    Some(Signature {
        status,
        signer: (!fingerprint.is_empty()).then(|| SignerId {
            fingerprint: Arc::from(fingerprint),
            user_id: Arc::from(user_id),
        }),
        detail: (!detail.is_empty()).then(|| Arc::from(detail)),
    })
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Appends an entry record to `out`, with the role byte `role` ([`role_byte`], or 0 for a
/// version 1 segment) and the signature block `block` ([`encode_signature`]; empty for none,
/// and for a segment older than version 3); false (nothing appended) if it cannot be spooled
/// ([`entry_len`]).
pub(crate) fn encode_entry(
    id: u64,
    key: &EventKey,
    role: u8,
    block: &[u8],
    ivorn: &str,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> bool {
    let Some(len) = entry_len(ivorn, block.len(), payload.len()) else {
        return false;
    };
    let Ok(block_len) = u16::try_from(block.len()) else {
        return false;
    };
    let start = out.len();
    out.reserve(len);
    out.extend_from_slice(&[0; HEAD_LEN]);
    out.extend_from_slice(&key.0);
    out.extend_from_slice(&(ivorn.len() as u16).to_le_bytes());
    out.extend_from_slice(ivorn.as_bytes());
    if !block.is_empty() {
        out.extend_from_slice(&block_len.to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(payload);
    finish(&mut out[start..], Kind::Entry, id, role, !block.is_empty());
    true
}

/// Appends a done record for `ids` (at most [`DONE_IDS_MAX`]) to `out`.
pub(crate) fn encode_done(ids: &[u64], out: &mut Vec<u8>) {
    debug_assert!(ids.len() <= DONE_IDS_MAX);
    let start = out.len();
    out.extend_from_slice(&[0; HEAD_LEN]);
    for id in ids {
        out.extend_from_slice(&id.to_le_bytes());
    }
    finish(&mut out[start..], Kind::Done, ids.len() as u64, 0, false);
}

/// The role byte of an entry (see the module docs).
pub(crate) fn role_byte(role: EventRole) -> u8 {
    match role {
        EventRole::Observation => 1,
        EventRole::Prediction => 2,
        EventRole::Utility => 3,
        EventRole::Test => 4,
        // A role added to the core later is not recorded: it is read from the payload.
        _ => 0,
    }
}

/// The role a role byte records; `None` for 0 (not recorded).
pub(crate) fn role_of(byte: u8) -> Option<EventRole> {
    match byte {
        1 => Some(EventRole::Observation),
        2 => Some(EventRole::Prediction),
        3 => Some(EventRole::Utility),
        4 => Some(EventRole::Test),
        _ => None,
    }
}

/// Largest role byte a head may hold.
const ROLE_BYTE_MAX: u8 = 4;

/// Fills in the head of the record in `rec` (head and body).
fn finish(rec: &mut [u8], kind: Kind, id: u64, role: u8, signed: bool) {
    let (head, body) = rec.split_at_mut(HEAD_LEN);
    head[4] = match kind {
        Kind::Entry => 1,
        Kind::Done => 2,
    };
    head[5] = role;
    head[6] = u8::from(signed);
    let len = u32::try_from(body.len()).expect("checked by the caller");
    head[8..12].copy_from_slice(&len.to_le_bytes());
    head[12..16].copy_from_slice(&crc32fast::hash(body).to_le_bytes());
    head[16..24].copy_from_slice(&id.to_le_bytes());
    let crc = crc32fast::hash(&head[4..]);
    head[..4].copy_from_slice(&crc.to_le_bytes());
}

/// The head in `bytes`, or `None` if it does not check out.
pub(crate) fn decode_head(bytes: &[u8; HEAD_LEN]) -> Option<Head> {
    if bytes[..4] != crc32fast::hash(&bytes[4..]).to_le_bytes() || bytes[7] != 0 {
        return None;
    }
    let role = bytes[5];
    let signed = bytes[6];
    let kind = match (bytes[4], role, signed) {
        (1, 0..=ROLE_BYTE_MAX, 0..=1) => Kind::Entry,
        (2, 0, 0) => Kind::Done,
        _ => return None,
    };
    let len = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let body_crc = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    let id = u64_at(bytes, 16);
    if kind == Kind::Done && (!len.is_multiple_of(8) || id != u64::from(len) / 8) {
        return None;
    }
    Some(Head {
        kind,
        len,
        body_crc,
        id,
        role,
        signed: signed == 1,
    })
}

/// An entry body's key, ivorn, signature (when `signed`: its head's flag) and the offset of
/// its payload; `None` if it does not parse. A signature block that does not parse costs the
/// status only (`None`), not the event.
pub(crate) fn decode_entry(
    body: &[u8],
    signed: bool,
) -> Option<(EventKey, &str, Option<Signature>, usize)> {
    if body.len() < ENTRY_FIXED {
        return None;
    }
    let key = EventKey(body[..32].try_into().expect("32 bytes"));
    let ivorn_len = usize::from(u16::from_le_bytes([body[32], body[33]]));
    let ivorn = body.get(ENTRY_FIXED..ENTRY_FIXED + ivorn_len)?;
    let ivorn = std::str::from_utf8(ivorn).ok()?;
    let mut at = ENTRY_FIXED + ivorn_len;
    let mut signature = None;
    if signed {
        let len = usize::from(u16::from_le_bytes(body.get(at..at + 2)?.try_into().ok()?));
        signature = decode_signature(body.get(at + 2..at + 2 + len)?);
        at += 2 + len;
    }
    Some((key, ivorn, signature, at))
}

/// The ids in a done body.
pub(crate) fn done_ids(body: &[u8]) -> impl Iterator<Item = u64> + '_ {
    body.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(buf: &[u8]) -> Head {
        decode_head(buf[..HEAD_LEN].try_into().unwrap()).unwrap()
    }

    #[test]
    fn an_entry_round_trips() {
        let key = EventKey([7; 32]);
        let mut buf = Vec::new();
        assert!(encode_entry(
            42,
            &key,
            4,
            &[],
            "ivo://a/b#1",
            b"<xml/>",
            &mut buf
        ));
        assert_eq!(buf.len(), entry_len("ivo://a/b#1", 0, 6).unwrap());
        let head = head_of(&buf);
        assert_eq!(head.kind, Kind::Entry);
        assert_eq!(head.id, 42);
        assert_eq!(role_of(head.role), Some(EventRole::Test));
        assert_eq!(head.len as usize, buf.len() - HEAD_LEN);
        let body = &buf[HEAD_LEN..];
        assert_eq!(head.body_crc, crc32fast::hash(body));
        assert!(!head.signed);
        let (k, ivorn, signature, at) = decode_entry(body, false).unwrap();
        assert_eq!(signature, None);
        assert_eq!(
            (k, ivorn, &body[at..]),
            (key, "ivo://a/b#1", &b"<xml/>"[..])
        );
    }

    #[test]
    fn a_done_record_round_trips() {
        let mut buf = Vec::new();
        encode_done(&[1, 5, u64::MAX], &mut buf);
        let head = head_of(&buf);
        assert_eq!((head.kind, head.id, head.len), (Kind::Done, 3, 24));
        assert_eq!(
            done_ids(&buf[HEAD_LEN..]).collect::<Vec<_>>(),
            [1, 5, u64::MAX]
        );
    }

    #[test]
    fn zeros_and_any_flipped_bit_of_a_head_do_not_decode() {
        assert_eq!(decode_head(&[0; HEAD_LEN]), None);
        let mut buf = Vec::new();
        encode_entry(1, &EventKey([1; 32]), 1, &[], "ivo://a/b#1", b"x", &mut buf);
        for bit in 0..HEAD_LEN * 8 {
            let mut head: [u8; HEAD_LEN] = buf[..HEAD_LEN].try_into().unwrap();
            head[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(decode_head(&head), None, "bit {bit}");
        }
    }

    #[test]
    fn role_bytes_round_trip_and_a_version_1_head_without_one_decodes() {
        for role in [
            EventRole::Observation,
            EventRole::Prediction,
            EventRole::Utility,
            EventRole::Test,
        ] {
            assert_eq!(role_of(role_byte(role)), Some(role));
        }
        assert_eq!(role_of(0), None);
        let mut buf = Vec::new();
        encode_entry(1, &EventKey([1; 32]), 0, &[], "ivo://a/b#1", b"x", &mut buf);
        assert_eq!(head_of(&buf).role, 0);
        // A role byte beyond the known ones, or one on a done record, is damage.
        let mut done = Vec::new();
        encode_done(&[1], &mut done);
        for (record, role) in [(&buf, 5u8), (&done, 1)] {
            let mut head: [u8; HEAD_LEN] = record[..HEAD_LEN].try_into().unwrap();
            assert!(decode_head(&head).is_some());
            head[5] = role;
            let crc = crc32fast::hash(&head[4..]);
            head[..4].copy_from_slice(&crc.to_le_bytes());
            assert_eq!(decode_head(&head), None, "role {role}");
        }
    }

    #[test]
    fn what_cannot_be_spooled_is_refused() {
        let long = "x".repeat(70_000);
        assert_eq!(entry_len(&long, 0, 0), None);
        let mut buf = Vec::new();
        assert!(!encode_entry(
            1,
            &EventKey([0; 32]),
            1,
            &[],
            &long,
            b"",
            &mut buf
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn a_signature_block_round_trips_with_its_entry_and_cuts_long_texts() {
        use vtp_core::signature::{Signature, SignerId, StatusKind};
        let long_uid = "é".repeat(SIGNATURE_TEXT_MAX); // 2 bytes each: cut at a boundary
        for signature in [
            Signature::unsigned(),
            Signature::with_detail(StatusKind::Invalid, "bad signature"),
            Signature {
                status: StatusKind::Valid,
                signer: Some(SignerId {
                    fingerprint: Arc::from("0123456789ABCDEF0123456789ABCDEF01234567"),
                    user_id: Arc::from("GCN <gcn@example.org>"),
                }),
                detail: None,
            },
            Signature {
                status: StatusKind::InvalidSigner,
                signer: Some(SignerId {
                    fingerprint: Arc::from("89AB"),
                    user_id: Arc::from(long_uid.as_str()),
                }),
                detail: Some(Arc::from("key 89AB may sign only for ivo://a.b/c")),
            },
        ] {
            let block = encode_signature(&signature);
            let mut buf = Vec::new();
            assert!(encode_entry(
                7,
                &EventKey([3; 32]),
                1,
                &block,
                "ivo://a/b#1",
                b"<x/>",
                &mut buf
            ));
            assert_eq!(buf.len(), entry_len("ivo://a/b#1", block.len(), 4).unwrap());
            let head = head_of(&buf);
            assert!(head.signed);
            let (_, ivorn, got, at) = decode_entry(&buf[HEAD_LEN..], true).unwrap();
            assert_eq!(
                (ivorn, &buf[HEAD_LEN + at..]),
                ("ivo://a/b#1", &b"<x/>"[..])
            );
            let got = got.expect("a signature");
            assert_eq!(got.status, signature.status);
            assert_eq!(got.detail, signature.detail);
            match (&got.signer, &signature.signer) {
                (Some(g), Some(s)) => {
                    assert_eq!(g.fingerprint, s.fingerprint);
                    assert!(s.user_id.starts_with(&*g.user_id));
                    assert!(g.user_id.len() <= SIGNATURE_TEXT_MAX);
                }
                (None, None) => {}
                other => panic!("{other:?}"),
            }
        }
        // A damaged block costs the status, not the event; a damaged flag byte, the record.
        let mut bad = vec![9u8];
        bad.extend_from_slice(&[0; 6]);
        assert_eq!(decode_signature(&bad), None);
        assert_eq!(decode_signature(&[1, 0, 0, 0, 0, 0, 0, 1]), None);
        let mut head: [u8; HEAD_LEN] = {
            let mut buf = Vec::new();
            encode_entry(1, &EventKey([1; 32]), 1, &[], "ivo://a/b#1", b"x", &mut buf);
            buf[..HEAD_LEN].try_into().unwrap()
        };
        head[6] = 2;
        let crc = crc32fast::hash(&head[4..]);
        head[..4].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_head(&head), None);
    }

    #[test]
    fn headers_are_told_apart() {
        assert_eq!(
            check_header(&header(3, 77)),
            Header::Ours {
                number: 3,
                first_id: 77,
                version: VERSION
            }
        );
        let mut v1 = header(3, 77);
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        assert!(matches!(check_header(&v1), Header::Ours { version: 1, .. }));
        assert_eq!(check_header(&[]), Header::Blank);
        assert_eq!(check_header(&[0; 32]), Header::Blank);
        assert!(matches!(check_header(b"VTPSEEN1"), Header::Foreign(_)));
        let mut bad = header(3, 77);
        bad[20] ^= 1;
        assert!(matches!(check_header(&bad), Header::Foreign(r) if r.contains("damage")));
        let mut other = header(3, 77);
        other[8] = 9;
        assert!(matches!(check_header(&other), Header::Foreign(r) if r.contains("version")));
    }
}
