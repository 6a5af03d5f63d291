//! The seen-index file format: a header, then fixed-size, checksummed operation records.
//!
//! ```text
//! header (16 bytes): b"VTPSEEN1", u32 LE format version (2), u32 LE record length (48)
//! record (48 bytes): [0] tag: 1 persist, 2 forget, 3 expire
//!                    [1] 1 on the last record of a commit (a batch), else 0
//!                    [2..4] zero
//!                    [4..8] CRC-32 (LE) of bytes 0..4 and 8..48
//!                    [8..40] event key (zero for expire)
//!                    [40..48] u64 LE: the UNIX second seen (persist), the cut-off (expire), 0
//! ```
//!
//! The file is preallocated with written zeros, so a commit overwrites zeros in place and its
//! fdatasync flushes data only.
//!
//! Reading tells damage from a commit cut short by a crash with the batch-end flag: a commit
//! is durable once its fdatasync returns, so every batch but the last one written was complete
//! on disk. The tail, where the next record goes, is the end of the last batch whose end record
//! checks out and which holds no record that does not; a record that does not check out before
//! that batch is damage, skipped, and the valid records around it are kept. The last batch
//! itself, if any record of it does not check out, cannot be told from a commit torn by a power
//! loss (written out of order, its fdatasync never returned), so it is dropped whole, like
//! everything after it. Version 1 files (no batch-end flags, written by earlier vtp versions)
//! are read up to their first record that does not check out and rewritten as version 2.
//!
//! The length of the file is also kept in a separate file ([`len_record`]), written after the
//! log grows or is rewritten, never ahead of the log: a log shorter than it was truncated.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use vtp_core::driver::StoreOp;
use vtp_core::{EventKey, SeenRecord};

/// First bytes of every seen-index file.
pub(crate) const MAGIC: [u8; 8] = *b"VTPSEEN1";
/// Length of the header: magic, version, record length.
pub(crate) const HEADER_LEN: u64 = 16;
/// Length of one record.
pub(crate) const RECORD_LEN: usize = 48;
const VERSION: u32 = 2;
/// The format of earlier versions: records without batch-end flags.
const VERSION_1: u32 = 1;
/// Byte 1 of the last record of a batch.
const FLAG_BATCH_END: u8 = 1;
/// First bytes of the length file.
const LEN_MAGIC: [u8; 8] = *b"VTPSLEN1";
/// Length of the length file: magic, u64 LE length, CRC-32 (LE) of the first 16 bytes.
pub(crate) const LEN_RECORD_LEN: usize = 20;

const TAG_PERSIST: u8 = 1;
const TAG_FORGET: u8 = 2;
const TAG_EXPIRE: u8 = 3;

/// The header of a new file.
pub(crate) fn header() -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(RECORD_LEN as u32).to_le_bytes());
    h
}

/// What the first bytes of a file say.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Header {
    /// A seen-index file of this version.
    Ours,
    /// A seen-index file of format version 1 (no batch-end flags).
    V1,
    /// Empty, or only zeros: a file whose creation was cut short.
    Blank,
    /// Something else; the reason says what.
    Foreign(&'static str),
}

/// Checks the first bytes of a file (`bytes` is at most [`HEADER_LEN`] long when shorter).
pub(crate) fn check_header(bytes: &[u8]) -> Header {
    if bytes.iter().all(|&b| b == 0) {
        return Header::Blank;
    }
    if bytes.len() < HEADER_LEN as usize || bytes[..8] != MAGIC {
        return Header::Foreign("it does not start like a vtp seen-index file");
    }
    if bytes[12..16] != (RECORD_LEN as u32).to_le_bytes() {
        return Header::Foreign("it is a vtp seen-index file of another format version");
    }
    if bytes[8..12] == VERSION.to_le_bytes() {
        Header::Ours
    } else if bytes[8..12] == VERSION_1.to_le_bytes() {
        Header::V1
    } else {
        Header::Foreign("it is a vtp seen-index file of another format version")
    }
}

/// The length file's contents for a log of `len` bytes.
pub(crate) fn len_record(len: u64) -> [u8; LEN_RECORD_LEN] {
    let mut r = [0u8; LEN_RECORD_LEN];
    r[..8].copy_from_slice(&LEN_MAGIC);
    r[8..16].copy_from_slice(&len.to_le_bytes());
    let crc = crc32fast::hash(&r[..16]);
    r[16..20].copy_from_slice(&crc.to_le_bytes());
    r
}

/// The log length a length file holds, or `None` if it does not check out.
pub(crate) fn decode_len(bytes: &[u8]) -> Option<u64> {
    let r: &[u8; LEN_RECORD_LEN] = bytes.try_into().ok()?;
    if r[..8] != LEN_MAGIC || r[16..20] != crc32fast::hash(&r[..16]).to_le_bytes() {
        return None;
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&r[8..16]);
    Some(u64::from_le_bytes(len))
}

/// Appends the record of `op` to `out`; false (nothing appended) for an operation this format
/// does not know. The record is not marked as a batch's last: see [`mark_batch_end`].
pub(crate) fn encode(op: &StoreOp, out: &mut Vec<u8>) -> bool {
    let (tag, key, value) = match *op {
        StoreOp::Persist(r) => (TAG_PERSIST, r.key.0, r.unix_secs),
        StoreOp::Forget(key) => (TAG_FORGET, key.0, 0),
        StoreOp::Expire { before_unix_secs } => (TAG_EXPIRE, [0; 32], before_unix_secs),
        _ => return false,
    };
    let mut rec = [0u8; RECORD_LEN];
    rec[0] = tag;
    rec[8..40].copy_from_slice(&key);
    rec[40..48].copy_from_slice(&value.to_le_bytes());
    let crc = checksum(&rec);
    rec[4..8].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&rec);
    true
}

/// Marks the last record in `buf` (a whole number of records) as the end of its batch.
pub(crate) fn mark_batch_end(buf: &mut [u8]) {
    let Some(start) = buf.len().checked_sub(RECORD_LEN) else {
        return;
    };
    let rec: &mut [u8; RECORD_LEN] = (&mut buf[start..]).try_into().expect("one record");
    rec[1] = FLAG_BATCH_END;
    let crc = checksum(rec);
    rec[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// The operation in one record and whether it ends its batch, or `None` if the record does
/// not check out.
pub(crate) fn decode(rec: &[u8; RECORD_LEN]) -> Option<(StoreOp, bool)> {
    if rec[1] > FLAG_BATCH_END || rec[2..4] != [0, 0] || rec[4..8] != checksum(rec).to_le_bytes() {
        return None;
    }
    let end = rec[1] == FLAG_BATCH_END;
    let mut key = [0u8; 32];
    key.copy_from_slice(&rec[8..40]);
    let mut value = [0u8; 8];
    value.copy_from_slice(&rec[40..48]);
    let value = u64::from_le_bytes(value);
    let op = match rec[0] {
        TAG_PERSIST => Some(StoreOp::Persist(SeenRecord {
            key: EventKey(key),
            unix_secs: value,
        })),
        TAG_FORGET => Some(StoreOp::Forget(EventKey(key))),
        TAG_EXPIRE => Some(StoreOp::Expire {
            before_unix_secs: value,
        }),
        _ => None,
    }?;
    Some((op, end))
}

fn checksum(rec: &[u8; RECORD_LEN]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&rec[..4]);
    h.update(&rec[8..]);
    h.finalize()
}

/// What reading the records of a file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scan {
    /// Offset just after the last batch kept: where the next record goes.
    pub(crate) tail: u64,
    /// Valid records read and kept (handed to `each`).
    pub(crate) records: u64,
    /// Offsets of the records before the tail that do not check out (damage, skipped).
    pub(crate) damaged: Vec<u64>,
    /// Valid records at or after the tail, dropped: a last batch cut short, or damaged.
    pub(crate) dropped: u64,
    /// Non-zero bytes at or after the tail in records that do not check out.
    pub(crate) junk_after_tail: u64,
}

/// The records of one batch, as read.
#[derive(Debug, Default)]
struct Batch {
    /// Offset of its first record.
    start: u64,
    ops: Vec<StoreOp>,
    /// Offsets of its records that do not check out.
    bad: Vec<u64>,
    /// Non-zero bytes in those records.
    junk: u64,
}

/// Reads the records of a file of `len` bytes from the header on, handing each record kept to
/// `each` in order (see the module docs for which are kept). `v1`: a version 1 file, read up
/// to its first record that does not check out.
pub(crate) fn scan(
    file: &File,
    len: u64,
    v1: bool,
    mut each: impl FnMut(StoreOp),
) -> io::Result<Scan> {
    const CHUNK: usize = RECORD_LEN * 1365; // about 64 KiB
    let mut buf = vec![0u8; CHUNK];
    let mut at = HEADER_LEN;
    let mut scan = Scan {
        tail: HEADER_LEN,
        records: 0,
        damaged: Vec::new(),
        dropped: 0,
        junk_after_tail: 0,
    };
    // The last complete batch: kept once a later batch ends.
    let mut held = Batch {
        start: HEADER_LEN,
        ..Batch::default()
    };
    // The records after it.
    let mut open = Batch {
        start: HEADER_LEN,
        ..Batch::default()
    };
    let mut stopped = false;
    while at < len {
        let want = usize::try_from(len - at).map_or(CHUNK, |rest| rest.min(CHUNK));
        let chunk = &mut buf[..want];
        file.read_exact_at(chunk, at)?;
        let mut recs = chunk.chunks_exact(RECORD_LEN);
        for (i, rec) in recs.by_ref().enumerate() {
            let rec: &[u8; RECORD_LEN] = rec.try_into().expect("chunks_exact length");
            let offset = at + (i * RECORD_LEN) as u64;
            match decode(rec) {
                Some((op, end)) if !stopped => {
                    open.ops.push(op);
                    if end || v1 {
                        // `held` is not the last batch: keep it.
                        keep(&mut scan, &mut held, &mut each);
                        let next = Batch {
                            start: offset + RECORD_LEN as u64,
                            ..Batch::default()
                        };
                        held = std::mem::replace(&mut open, next);
                        scan.tail = offset + RECORD_LEN as u64;
                    }
                }
                _ => {
                    stopped |= v1;
                    open.bad.push(offset);
                    open.junk += count_nonzero(rec);
                }
            }
        }
        // A partial record at the end of the file.
        open.junk += count_nonzero(recs.remainder());
        at += want as u64;
    }
    if held.bad.is_empty() {
        keep(&mut scan, &mut held, &mut each);
    } else {
        // Damage in the last batch cannot be told from a commit torn by a power loss.
        scan.tail = held.start;
        scan.dropped += held.ops.len() as u64;
        scan.junk_after_tail += held.junk;
    }
    scan.dropped += open.ops.len() as u64;
    scan.junk_after_tail += open.junk;
    Ok(scan)
}

/// Hands `batch`'s operations to `each` and notes its damage; empties it.
fn keep(scan: &mut Scan, batch: &mut Batch, each: &mut impl FnMut(StoreOp)) {
    scan.records += batch.ops.len() as u64;
    for op in batch.ops.drain(..) {
        each(op);
    }
    scan.damaged.append(&mut batch.bad);
}

fn count_nonzero(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b != 0).count() as u64
}

/// Applies operations in order to an in-memory table: what the file holds.
#[derive(Debug, Default)]
pub(crate) struct Replay(pub(crate) HashMap<[u8; 32], u64>);

impl Replay {
    /// Applies one operation.
    pub(crate) fn apply(&mut self, op: StoreOp) {
        match op {
            StoreOp::Persist(r) => {
                self.0.insert(r.key.0, r.unix_secs);
            }
            StoreOp::Forget(key) => {
                self.0.remove(&key.0);
            }
            StoreOp::Expire { before_unix_secs } => {
                self.0.retain(|_, secs| *secs > before_unix_secs);
            }
            // `decode` makes no other kind.
            _ => {}
        }
    }

    /// The records, in key order.
    pub(crate) fn into_records(self) -> Vec<SeenRecord> {
        let mut records: Vec<SeenRecord> = self
            .0
            .into_iter()
            .map(|(key, unix_secs)| SeenRecord {
                key: EventKey(key),
                unix_secs,
            })
            .collect();
        records.sort_unstable_by_key(|r| r.key);
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> EventKey {
        EventKey([i; 32])
    }

    #[test]
    fn every_operation_round_trips() {
        let ops = [
            StoreOp::Persist(SeenRecord {
                key: key(1),
                unix_secs: 1_700_000_000,
            }),
            StoreOp::Forget(key(2)),
            StoreOp::Expire {
                before_unix_secs: u64::MAX,
            },
        ];
        let mut buf = Vec::new();
        for op in &ops {
            assert!(encode(op, &mut buf));
        }
        assert_eq!(buf.len(), 3 * RECORD_LEN);
        for (rec, op) in buf.chunks_exact(RECORD_LEN).zip(ops) {
            assert_eq!(decode(rec.try_into().unwrap()), Some((op, false)));
        }
        mark_batch_end(&mut buf);
        let last = buf[2 * RECORD_LEN..].try_into().unwrap();
        assert_eq!(decode(last), Some((ops[2], true)));
        for rec in buf.chunks_exact(RECORD_LEN).take(2) {
            assert!(!decode(rec.try_into().unwrap()).unwrap().1);
        }
    }

    #[test]
    fn zeros_and_any_flipped_bit_do_not_decode() {
        assert_eq!(decode(&[0; RECORD_LEN]), None);
        let mut buf = Vec::new();
        encode(
            &StoreOp::Persist(SeenRecord {
                key: key(9),
                unix_secs: 42,
            }),
            &mut buf,
        );
        for bit in 0..RECORD_LEN * 8 {
            let mut rec: [u8; RECORD_LEN] = buf[..].try_into().unwrap();
            rec[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(decode(&rec), None, "bit {bit}");
        }
    }

    #[test]
    fn headers_are_told_apart() {
        assert_eq!(check_header(&header()), Header::Ours);
        assert_eq!(check_header(&[]), Header::Blank);
        assert_eq!(check_header(&[0; 16]), Header::Blank);
        assert!(matches!(
            check_header(b"SQLite format 3\0"),
            Header::Foreign(_)
        ));
        assert!(matches!(check_header(&header()[..10]), Header::Foreign(_)));
        let mut v1 = header();
        v1[8] = 1;
        assert_eq!(check_header(&v1), Header::V1);
        let mut other = header();
        other[8] = 3;
        assert!(matches!(check_header(&other), Header::Foreign(r) if r.contains("version")));
    }

    #[test]
    fn replay_applies_in_order() {
        let mut r = Replay::default();
        r.apply(StoreOp::Persist(SeenRecord {
            key: key(1),
            unix_secs: 10,
        }));
        r.apply(StoreOp::Persist(SeenRecord {
            key: key(2),
            unix_secs: 20,
        }));
        r.apply(StoreOp::Forget(key(1)));
        r.apply(StoreOp::Persist(SeenRecord {
            key: key(3),
            unix_secs: 30,
        }));
        r.apply(StoreOp::Expire {
            before_unix_secs: 20,
        });
        assert_eq!(
            r.into_records(),
            vec![SeenRecord {
                key: key(3),
                unix_secs: 30
            }]
        );
    }
}
