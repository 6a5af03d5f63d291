//! The seen-index file format: a header, then fixed-size, checksummed operation records.
//!
//! ```text
//! header (16 bytes): b"VTPSEEN1", u32 LE format version (1), u32 LE record length (48)
//! record (48 bytes): [0] tag: 1 persist, 2 forget, 3 expire
//!                    [1..4] zero
//!                    [4..8] CRC-32 (LE) of bytes 0..4 and 8..48
//!                    [8..40] event key (zero for expire)
//!                    [40..48] u64 LE: the UNIX second seen (persist), the cut-off (expire), 0
//! ```
//!
//! The file is preallocated with written zeros, so a commit overwrites zeros in place and its
//! fdatasync flushes data only. Reading stops at the first record that does not check out
//! (zeros, or a record cut short by a crash): that is the tail, where the next record goes.

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
const VERSION: u32 = 1;

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
    if bytes[8..12] != VERSION.to_le_bytes() || bytes[12..16] != (RECORD_LEN as u32).to_le_bytes() {
        return Header::Foreign("it is a vtp seen-index file of another format version");
    }
    Header::Ours
}

/// Appends the record of `op` to `out`; false (nothing appended) for an operation this format
/// does not know.
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

/// The operation in one record, or `None` if the record does not check out.
pub(crate) fn decode(rec: &[u8; RECORD_LEN]) -> Option<StoreOp> {
    if rec[1..4] != [0, 0, 0] || rec[4..8] != checksum(rec).to_le_bytes() {
        return None;
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&rec[8..40]);
    let mut value = [0u8; 8];
    value.copy_from_slice(&rec[40..48]);
    let value = u64::from_le_bytes(value);
    match rec[0] {
        TAG_PERSIST => Some(StoreOp::Persist(SeenRecord {
            key: EventKey(key),
            unix_secs: value,
        })),
        TAG_FORGET => Some(StoreOp::Forget(EventKey(key))),
        TAG_EXPIRE => Some(StoreOp::Expire {
            before_unix_secs: value,
        }),
        _ => None,
    }
}

fn checksum(rec: &[u8; RECORD_LEN]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&rec[..4]);
    h.update(&rec[8..]);
    h.finalize()
}

/// Where reading the records of a file stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scan {
    /// Offset just after the last valid record: where the next one goes.
    pub(crate) tail: u64,
    /// Valid records read.
    pub(crate) records: u64,
    /// Non-zero bytes found after the tail (a record cut short by a crash, or damage).
    pub(crate) junk_after_tail: u64,
}

/// Reads the records of a file of `len` bytes from the header on, handing each to `each`.
pub(crate) fn scan(file: &File, len: u64, mut each: impl FnMut(StoreOp)) -> io::Result<Scan> {
    const CHUNK: usize = RECORD_LEN * 1365; // about 64 KiB
    let mut buf = vec![0u8; CHUNK];
    let mut at = HEADER_LEN;
    let mut records = 0;
    let mut tail = None;
    let mut junk = 0u64;
    while at < len {
        let want = usize::try_from(len - at).map_or(CHUNK, |rest| rest.min(CHUNK));
        let chunk = &mut buf[..want];
        file.read_exact_at(chunk, at)?;
        match tail {
            Some(_) => junk += count_nonzero(chunk),
            None => {
                let mut recs = chunk.chunks_exact(RECORD_LEN);
                for (i, rec) in recs.by_ref().enumerate() {
                    let rec: &[u8; RECORD_LEN] = rec.try_into().expect("chunks_exact length");
                    match decode(rec) {
                        Some(op) if tail.is_none() => {
                            records += 1;
                            each(op);
                        }
                        _ => {
                            if tail.is_none() {
                                tail = Some(at + (i * RECORD_LEN) as u64);
                            }
                            junk += count_nonzero(rec);
                        }
                    }
                }
                let rest = recs.remainder();
                if !rest.is_empty() {
                    // A partial record at the end of the file.
                    tail.get_or_insert(len - rest.len() as u64);
                    junk += count_nonzero(rest);
                }
            }
        }
        at += want as u64;
    }
    Ok(Scan {
        tail: tail.unwrap_or(len.max(HEADER_LEN)),
        records,
        junk_after_tail: junk,
    })
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
            assert_eq!(decode(rec.try_into().unwrap()), Some(op));
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
        let mut other = header();
        other[8] = 2;
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
