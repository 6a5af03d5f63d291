//! The seen-index file format: a header, then fixed-size, checksummed records.
//!
//! ```text
//! header (16 bytes): b"VTPSEEN1", u32 LE format version (3), u32 LE record length (48)
//! record (48 bytes): [0] tag: 1 persist, 2 forget, 3 expire, 4 boot
//!                    [1] 1 on the last record of a commit (a batch), else 0
//!                    [2] 1 on a batch's last record once the batch's fdatasync returned
//!                        ("synced"), else 0
//!                    [3] zero
//!                    [4..8] CRC-32 (LE) of bytes 0..4 and 8..48
//!                    [8..40] event key (zero for expire); for boot, the machine's boot id
//!                            (Linux `/proc/sys/kernel/random/boot_id`, hex digits, no dashes)
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
//! everything after it.
//!
//! A process killed while a commit's fdatasync runs leaves that batch whole in the page cache,
//! which outlives the process: the restart would read it as durable although nothing of it was
//! reported durable (no ack, forward or delivery waited on it), and would take those events,
//! when they come again, for duplicates. So once the fdatasync returns, and before the commit
//! is reported durable, the batch's end record is rewritten with the synced flag (one write, no
//! fdatasync of its own: the page cache keeps it through a process kill, and the next commit's
//! fdatasync takes it to the disk). Each start writes a boot record when the file's last one
//! names another boot. At reading, a last batch written during the current boot (after the
//! file's last boot record naming it) and not flagged synced is dropped, like a torn one: the
//! page cache survived, so its fdatasync had not returned. After a reboot, or where the boot id
//! cannot be read, a complete last batch counts as before: a power loss may have lost the flag
//! of a batch that was reported durable, and dropping it would let its events be forwarded
//! again. What is left: a kill after the flag is written and before the event loop has sent the
//! acks and forwards the commit released loses those (a window of the loop's latency, not of
//! the fdatasync); and after a power loss during a commit whose records all reached the disk
//! the batch counts, as in version 2.
//!
//! Files of earlier versions are read as they were written and rewritten as version 3 at
//! open: version 2 (batch-end flags, no synced flags) counts every complete batch; version 1
//! (no batch-end flags) is read up to its first record that does not check out.
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
/// Byte 1 of the last record of a batch.
const FLAG_BATCH_END: u8 = 1;
/// Byte 2 of the last record of a batch once its fdatasync returned.
const FLAG_SYNCED: u8 = 1;
/// First bytes of the length file.
const LEN_MAGIC: [u8; 8] = *b"VTPSLEN1";
/// Length of the length file: magic, u64 LE length, CRC-32 (LE) of the first 16 bytes.
pub(crate) const LEN_RECORD_LEN: usize = 20;

const TAG_PERSIST: u8 = 1;
const TAG_FORGET: u8 = 2;
const TAG_EXPIRE: u8 = 3;
const TAG_BOOT: u8 = 4;

/// A format version of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// No batch-end flags (rewritten at open).
    V1,
    /// Batch-end flags, no synced flags or boot records (rewritten at open).
    V2,
    /// Synced flags and boot records: the version written.
    V3,
}

impl Format {
    const fn number(self) -> u32 {
        match self {
            Self::V1 => 1,
            Self::V2 => 2,
            Self::V3 => 3,
        }
    }
}

/// The header of a new file.
pub(crate) fn header() -> [u8; HEADER_LEN as usize] {
    header_of(Format::V3)
}

/// The header of a file of `format` (tests write older ones).
pub(crate) fn header_of(format: Format) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&format.number().to_le_bytes());
    h[12..16].copy_from_slice(&(RECORD_LEN as u32).to_le_bytes());
    h
}

/// What the first bytes of a file say.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Header {
    /// A seen-index file of this format version.
    Known(Format),
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
    [Format::V1, Format::V2, Format::V3]
        .into_iter()
        .find(|f| bytes[8..12] == f.number().to_le_bytes())
        .map_or(
            Header::Foreign("it is a vtp seen-index file of another format version"),
            Header::Known,
        )
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

/// Which boot of the machine a batch was written in: the kernel's boot id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BootId(pub(crate) [u8; 32]);

impl BootId {
    /// The running kernel's boot id, or `None` where it cannot be read (not Linux).
    pub(crate) fn current() -> Option<Self> {
        let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        Self::parse(&text)
    }

    /// A boot id from the text of `/proc/sys/kernel/random/boot_id` (a UUID).
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let mut id = [0u8; 32];
        let mut n = 0;
        for b in text.trim().bytes().filter(|&b| b != b'-') {
            if !b.is_ascii_hexdigit() || n == id.len() {
                return None;
            }
            id[n] = b.to_ascii_lowercase();
            n += 1;
        }
        (n == id.len()).then_some(Self(id))
    }
}

/// What one record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// An operation of the core.
    Op(StoreOp),
    /// The batches after it were written in this boot of the machine.
    Boot(BootId),
}

/// Where a record stands in its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Not the batch's last record.
    No,
    /// The batch's last record, its fdatasync not known to have returned.
    Written,
    /// The batch's last record, written again once its fdatasync returned.
    Synced,
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
    push(tag, key, value, out);
    true
}

/// Appends the record of a boot to `out` (not marked as a batch's last).
pub(crate) fn encode_boot(boot: &BootId, out: &mut Vec<u8>) {
    push(TAG_BOOT, boot.0, 0, out);
}

fn push(tag: u8, key: [u8; 32], value: u64, out: &mut Vec<u8>) {
    let mut rec = [0u8; RECORD_LEN];
    rec[0] = tag;
    rec[8..40].copy_from_slice(&key);
    rec[40..48].copy_from_slice(&value.to_le_bytes());
    let crc = checksum(&rec);
    rec[4..8].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&rec);
}

/// Marks the last record in `buf` (a whole number of records) as the end of its batch.
pub(crate) fn mark_batch_end(buf: &mut [u8]) {
    set_flag(buf, 1, FLAG_BATCH_END);
}

/// Marks the last record in `buf` (a batch's end record) as synced: its fdatasync returned.
pub(crate) fn mark_synced(buf: &mut [u8]) {
    set_flag(buf, 2, FLAG_SYNCED);
}

fn set_flag(buf: &mut [u8], byte: usize, flag: u8) {
    let Some(start) = buf.len().checked_sub(RECORD_LEN) else {
        return;
    };
    let rec: &mut [u8; RECORD_LEN] = (&mut buf[start..]).try_into().expect("one record");
    rec[byte] = flag;
    let crc = checksum(rec);
    rec[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// What one record holds and where it stands in its batch, or `None` if it does not check out.
pub(crate) fn decode(rec: &[u8; RECORD_LEN]) -> Option<(Entry, End)> {
    let end = match (rec[1], rec[2]) {
        (0, 0) => End::No,
        (FLAG_BATCH_END, 0) => End::Written,
        (FLAG_BATCH_END, FLAG_SYNCED) => End::Synced,
        _ => return None,
    };
    if rec[3] != 0 || rec[4..8] != checksum(rec).to_le_bytes() {
        return None;
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&rec[8..40]);
    let mut value = [0u8; 8];
    value.copy_from_slice(&rec[40..48]);
    let value = u64::from_le_bytes(value);
    let entry = match rec[0] {
        TAG_PERSIST => Entry::Op(StoreOp::Persist(SeenRecord {
            key: EventKey(key),
            unix_secs: value,
        })),
        TAG_FORGET => Entry::Op(StoreOp::Forget(EventKey(key))),
        TAG_EXPIRE => Entry::Op(StoreOp::Expire {
            before_unix_secs: value,
        }),
        TAG_BOOT => Entry::Boot(BootId(key)),
        _ => return None,
    };
    Some((entry, end))
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
    /// Valid operation records read and kept (handed to `each`).
    pub(crate) records: u64,
    /// Offsets of the records before the tail that do not check out (damage, skipped).
    pub(crate) damaged: Vec<u64>,
    /// Valid records at or after the tail, dropped: a last batch cut short, damaged, or not
    /// synced.
    pub(crate) dropped: u64,
    /// Operations of the last batch, among `dropped`, that were dropped because it was written
    /// in this boot and not flagged synced: a process killed during its fdatasync.
    pub(crate) unsynced: u64,
    /// Non-zero bytes at or after the tail in records that do not check out.
    pub(crate) junk_after_tail: u64,
    /// The end record of the last batch kept, if it is not flagged synced (a batch of a file
    /// of an earlier version, or written before a reboot): where to write the flag.
    pub(crate) unflagged_end: Option<u64>,
    /// The boot named by the last boot record kept.
    pub(crate) boot: Option<BootId>,
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
    /// Its end record's offset and whether it is flagged synced (`None`: no end record).
    end: Option<(u64, bool)>,
    /// The boot named by the last boot record up to its end.
    boot: Option<BootId>,
}

/// Reads the records of a file of `format`, `len` bytes, from the header on, handing each
/// operation kept to `each` in order (see the module docs for which are kept). `boot`: the
/// current boot, in which a last batch not flagged synced is dropped; `None` keeps every
/// complete batch (reading up to a tail already found, or no boot id to go by).
pub(crate) fn scan(
    file: &File,
    len: u64,
    format: Format,
    boot: Option<&BootId>,
    mut each: impl FnMut(StoreOp),
) -> io::Result<Scan> {
    const CHUNK: usize = RECORD_LEN * 1365; // about 64 KiB
    let v1 = format == Format::V1;
    let mut buf = vec![0u8; CHUNK];
    let mut at = HEADER_LEN;
    let mut scan = Scan {
        tail: HEADER_LEN,
        records: 0,
        damaged: Vec::new(),
        dropped: 0,
        unsynced: 0,
        junk_after_tail: 0,
        unflagged_end: None,
        boot: None,
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
    // The boot named by the last boot record read.
    let mut last_boot = None;
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
                Some((entry, end)) if !stopped => {
                    match entry {
                        Entry::Op(op) => open.ops.push(op),
                        Entry::Boot(id) => last_boot = Some(id),
                    }
                    if end != End::No || v1 {
                        // `held` is not the last batch: keep it.
                        keep(&mut scan, &mut held, &mut each);
                        open.end = Some((offset, end == End::Synced));
                        open.boot = last_boot;
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
    let unsynced = format == Format::V3
        && boot.is_some()
        && held.boot.as_ref() == boot
        && held.end.is_some_and(|(_, synced)| !synced);
    if held.bad.is_empty() && !unsynced {
        if let Some((end, false)) = held.end
            && format != Format::V1
        {
            scan.unflagged_end = Some(end);
        }
        keep(&mut scan, &mut held, &mut each);
    } else {
        // Damage in the last batch cannot be told from a commit torn by a power loss; a
        // batch not flagged synced in this boot was in its fdatasync when the process died.
        if held.bad.is_empty() {
            scan.unsynced = held.ops.len() as u64;
        }
        scan.tail = held.start;
        scan.dropped += held.ops.len() as u64;
        scan.junk_after_tail += held.junk;
    }
    scan.dropped += open.ops.len() as u64;
    scan.junk_after_tail += open.junk;
    Ok(scan)
}

/// Hands `batch`'s operations to `each`, notes its damage and boot; empties it.
fn keep(scan: &mut Scan, batch: &mut Batch, each: &mut impl FnMut(StoreOp)) {
    scan.records += batch.ops.len() as u64;
    for op in batch.ops.drain(..) {
        each(op);
    }
    scan.damaged.append(&mut batch.bad);
    if batch.boot.is_some() {
        scan.boot = batch.boot;
    }
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
            assert_eq!(
                decode(rec.try_into().unwrap()),
                Some((Entry::Op(op), End::No))
            );
        }
        mark_batch_end(&mut buf);
        let last = |buf: &[u8]| decode(buf[2 * RECORD_LEN..].try_into().unwrap());
        assert_eq!(last(&buf), Some((Entry::Op(ops[2]), End::Written)));
        mark_synced(&mut buf);
        assert_eq!(last(&buf), Some((Entry::Op(ops[2]), End::Synced)));
        for rec in buf.chunks_exact(RECORD_LEN).take(2) {
            assert_eq!(decode(rec.try_into().unwrap()).unwrap().1, End::No);
        }
        let boot = BootId::parse("b4f23a3c-9698-4efa-9bd0-594e5c0f2a50\n").unwrap();
        assert_eq!(&boot.0, b"b4f23a3c96984efa9bd0594e5c0f2a50");
        let mut rec = Vec::new();
        encode_boot(&boot, &mut rec);
        assert_eq!(
            decode(rec[..].try_into().unwrap()),
            Some((Entry::Boot(boot), End::No))
        );
        // A synced flag without a batch end does not check out.
        let mut rec: [u8; RECORD_LEN] = buf[..RECORD_LEN].try_into().unwrap();
        mark_synced(&mut rec);
        assert_eq!(decode(&rec), None);
    }

    #[test]
    fn boot_ids_are_parsed_strictly() {
        assert!(BootId::parse("").is_none());
        assert!(BootId::parse("b4f23a3c-9698-4efa-9bd0-594e5c0f2a5").is_none());
        assert!(BootId::parse("b4f23a3c-9698-4efa-9bd0-594e5c0f2a500").is_none());
        assert!(BootId::parse("x4f23a3c-9698-4efa-9bd0-594e5c0f2a50").is_none());
        assert_eq!(
            BootId::parse("B4F23A3C-9698-4EFA-9BD0-594E5C0F2A50"),
            BootId::parse("b4f23a3c96984efa9bd0594e5c0f2a50")
        );
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
        assert_eq!(check_header(&header()), Header::Known(Format::V3));
        assert_eq!(check_header(&[]), Header::Blank);
        assert_eq!(check_header(&[0; 16]), Header::Blank);
        assert!(matches!(
            check_header(b"SQLite format 3\0"),
            Header::Foreign(_)
        ));
        assert!(matches!(check_header(&header()[..10]), Header::Foreign(_)));
        assert_eq!(
            check_header(&header_of(Format::V1)),
            Header::Known(Format::V1)
        );
        assert_eq!(
            check_header(&header_of(Format::V2)),
            Header::Known(Format::V2)
        );
        let mut other = header();
        other[8] = 4;
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
