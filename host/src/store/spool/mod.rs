//! The handler spool: accepted events whose handlers have not all run yet, kept on disk beside
//! the seen-index so that handler work survives a restart or a crash.
//!
//! # Theory of operation
//!
//! The spool is a sequence of segment files in the store's directory, `vtp-spool.NNNNNNNNNN`
//! (oldest first, the last one taking appends), each a header and records (`format.rs`):
//! **entries** (an id, the event's key, role, ivorn and payload) and **done marks** (ids of entries
//! whose handlers have all run). The [`StoreWorker`](super::StoreWorker) owns it: an entry is
//! written in the same commit as (or a commit before) the event's seen-index record, its
//! `fdatasync` running beside the seen-index's (on a helper thread), and the commit is
//! published durable once both are done, so an ack that waits for the record also waits for
//! the entry. Done marks are written with the next entries, or once 1,024 wait or the oldest
//! has waited a second, and are not synced on their own: losing some in a crash only means
//! their events are handled again (handlers are at-least-once). A clean stop syncs them.
//!
//! Every entry not yet done is **pending**, and is either **handed** (queued in memory for
//! the handlers, or being handled) or **parked** (on disk only). Entries are handed in id
//! order: every pending id at or below a mark is in memory, every one above it is parked. A
//! new entry is handed at once when it is the only parked one and the handlers' queue has
//! room; otherwise it waits, and the worker reads parked entries back whenever that queue
//! drains. After a restart every pending entry is parked, so the events accepted but not
//! handled before it are handled first.
//!
//! # Bounds and deletion
//!
//! The records in all segments take at most the spool's cap (`--handler-spool-bytes`); an
//! entry that does not fit is not spooled (the worker hands it to the in-memory queue, or
//! drops it, counted and logged). A new segment is started once the last one holds a
//! sixteenth of the cap (at least 64 KiB, at most 16 MiB). It is prepared on another thread
//! once the last one is half full: written with zeros to its full size and made durable, so
//! that a commit overwrites allocated blocks and its `fdatasync` flushes data only, as the
//! seen-index log's does (the cap does not count those zeros; without a spare ready, a segment
//! is created at once and grown 1 MiB at a time). The oldest segment is deleted once none of
//! its entries is pending. A done mark lives in its entry's segment or a later one, and
//! segments go oldest first, so a mark is never deleted while its entry is kept. (One entry
//! pending for long, behind a stuck handler, keeps the segments after it, and their bytes
//! count against the cap, until it is done.) Only the last segment is kept open, plus the
//! older one entries are being read back from and the spare being prepared: a few file
//! descriptors, whatever the cap.
//!
//! # Crashes and damage
//!
//! Each record head carries its own checksum and the body's length and checksum. Opening reads
//! every segment: a record whose body does not check out is skipped (logged at WARN with its
//! id and, if it can still be read, its ivorn: handler work lost to damage); a head that does
//! not check out ends what can be read of that segment. At the end of the last segment that is
//! a write cut short by a crash (none of it was reported durable): it is zeroed before new
//! records go there. A segment whose header is zeros (its creation cut short) is removed; a
//! file with a segment's name that is not one is refused. New segments are created under a
//! temporary name with `O_EXCL`, made durable, then renamed into place, all relative to the
//! store's directory handle without following symbolic links.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;
use tracing::{debug, error, info, warn};
use vtp_core::message::{self, EventRole, Message, ParseLimits};
use vtp_core::{Delivery, Source};

use super::dir::{How, open_in, remove_in, rename_in};
use super::{ErrorChain, write_zeros};

mod format;

use format::{HEAD_LEN, HEADER_LEN, Head, Header, Kind};

/// Default cap of the handler spool's records (`--handler-spool-bytes`): 256 MiB.
pub const SPOOL_BYTES_DEFAULT: u64 = 256 << 20;

/// Prefix of the segment file names; the segment's number follows.
pub const SEGMENT_PREFIX: &str = "vtp-spool.";

/// A segment being created, renamed to its real name once complete.
const TMP_NAME: &str = "vtp-spool.tmp";

/// How far ahead of its last record the last segment is filled with zeros (at most).
const GROW_BYTES: u64 = 1024 * 1024;

/// Smallest and largest segment size the cap chooses.
const SEGMENT_MIN: u64 = 64 * 1024;
const SEGMENT_MAX: u64 = 16 * 1024 * 1024;

/// Where an entry's record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    segment: u64,
    /// Offset of its head.
    at: u64,
    /// Length of its body.
    len: u32,
    body_crc: u32,
    /// The entry's role byte (0: not recorded).
    role: u8,
    /// The entry's body holds a signature block.
    signed: bool,
}

impl Loc {
    /// Bytes of the record.
    pub(crate) fn record_len(&self) -> u64 {
        HEAD_LEN as u64 + u64::from(self.len)
    }
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    number: u64,
    /// Open only while it is the last one (appends); older ones are opened to read back.
    file: Option<Arc<File>>,
    /// Offset just past its last record.
    tail: u64,
    /// Length of the file (zeros past `tail`).
    len: u64,
    /// Its entries still pending.
    live: u64,
    /// Its format version (appends go only to one of [`format::VERSION`]).
    version: u32,
}

/// A write begun ([`Spool::begin`]), waiting for its `fdatasync`.
#[derive(Debug, Default)]
pub(crate) struct Staged {
    /// The segment to `fdatasync` before [`Spool::end`], if the write needs it.
    pub(crate) sync: Option<Arc<File>>,
    /// Entries written, with their ids and places.
    new: Vec<(u64, Loc, Delivery)>,
    /// Bytes written (0 if the write failed).
    len: u64,
    /// The error writing them, if any.
    failed: Option<io::Error>,
    /// What is known already: the entries not spooled.
    written: Written,
}

/// What [`Spool::end`] did with a batch.
#[derive(Debug, Default)]
pub(crate) struct Written {
    /// Entries now durable in the spool, with their ids (parked until handed).
    pub(crate) spooled: Vec<(u64, Delivery)>,
    /// Entries not spooled: the cap was reached, the write failed, or they cannot be encoded.
    pub(crate) unspooled: Vec<Delivery>,
}

/// The handler spool (see the module docs). Owned by the store worker.
pub(crate) struct Spool {
    dir: File,
    dir_path: PathBuf,
    /// Oldest first; the last one takes appends.
    segments: VecDeque<Segment>,
    next_id: u64,
    /// Bytes of headers and records in all segments (not the zeros written ahead).
    bytes: u64,
    cap: u64,
    segment_target: u64,
    /// Entries not done, by id.
    pending: BTreeMap<u64, Loc>,
    /// Every pending id at or below this one is in memory; every one above it is parked.
    handed: u64,
    /// Pending entries above `handed`.
    parked: usize,
    /// Encoding buffer, reused.
    buf: Vec<u8>,
    /// Entries refused for the cap since it was last reached (0: not full).
    refused: u64,
    /// The older segment last read back from, kept open for the next reads.
    reader: Option<(u64, Arc<File>)>,
    /// The next segment being prepared ([`Spool::prepare_spare`]): the file and its length.
    spare: Option<JoinHandle<io::Result<(File, u64)>>>,
    /// Test seam: called before each write; an error fails it.
    #[cfg(test)]
    pub(crate) fail_write: Option<Box<dyn FnMut() -> io::Result<()> + Send>>,
}

impl Spool {
    /// Opens the spool in the store's directory (`dir`, a handle on `dir_path`), reading every
    /// segment; `cap` bounds its records' bytes. Logs at INFO how many entries are pending
    /// (to be replayed), at WARN what was damaged or cut short.
    ///
    /// # Errors
    ///
    /// The path of the file at fault and the error: a segment that cannot be read or repaired,
    /// or a file named like a segment that is not one.
    pub(crate) fn open(
        dir: &File,
        dir_path: &Path,
        cap: u64,
    ) -> Result<Self, (PathBuf, io::Error)> {
        let dir = dir.try_clone().map_err(|e| (dir_path.to_owned(), e))?;
        let at = |name: &str| dir_path.join(name);
        // Only the holder of the seen-index lock opens the spool: a creation cut short leaves
        // its temporary file behind.
        remove_in(&dir, TMP_NAME).map_err(|e| (at(TMP_NAME), e))?;
        let numbers = segment_numbers(&dir).map_err(|e| (dir_path.to_owned(), e))?;
        let mut spool = Self {
            dir,
            dir_path: dir_path.to_owned(),
            segments: VecDeque::new(),
            next_id: 1,
            bytes: 0,
            cap,
            segment_target: (cap / 16).clamp(SEGMENT_MIN, SEGMENT_MAX),
            pending: BTreeMap::new(),
            handed: 0,
            parked: 0,
            buf: Vec::new(),
            refused: 0,
            reader: None,
            spare: None,
            #[cfg(test)]
            fail_write: None,
        };
        let last = numbers.last().copied();
        for number in numbers {
            let name = segment_name(number);
            spool
                .load_segment(number, Some(number) == last)
                .map_err(|e| (at(&name), e))?;
        }
        if let Some(last) = spool.segments.back_mut()
            && last.file.is_none()
        {
            // The last one was empty and removed: appends go to the one before.
            let name = segment_name(last.number);
            let file = open_in(&spool.dir, &name, How::ReadWrite).map_err(|e| (at(&name), e))?;
            last.file = Some(Arc::new(file));
        }
        for loc in spool.pending.values() {
            if let Ok(i) = spool.find(loc.segment) {
                spool.segments[i].live += 1;
            }
        }
        spool.parked = spool.pending.len();
        spool.delete_done_segments();
        if !spool.pending.is_empty() {
            let bytes: u64 = spool.pending.values().map(Loc::record_len).sum();
            info!(
                events = spool.pending.len(),
                bytes,
                "handler spool: {} events accepted before the restart were not handled yet; \
                 they are handed to the handlers first",
                spool.pending.len()
            );
        }
        Ok(spool)
    }

    /// Sets the segment size (tests make it small).
    #[cfg(test)]
    pub(crate) fn with_segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_target = bytes;
        self
    }

    /// Writes `entries` (each with a new id, as long as they fit the cap) and done marks for
    /// the pending ones of `dones`, then `fdatasync`s if any entry was written or `sync` asks
    /// (at shutdown). Deletes the segments left with no pending entry. [`begin`](Self::begin)
    /// and [`end`](Self::end) in one, for a caller with nothing to do meanwhile.
    #[cfg(test)]
    pub(crate) fn write(&mut self, entries: Vec<Delivery>, dones: &[u64], sync: bool) -> Written {
        let staged = self.begin(entries, dones, sync);
        let synced = staged.sync.as_ref().map_or(Ok(()), |f| f.sync_data());
        self.end(staged, synced)
    }

    /// The first half of a write: the records written (not yet synced). Sync
    /// [`Staged::sync`] if it is there (the caller may do so on another thread, while it
    /// commits the seen-index), then pass the outcome to [`end`](Self::end).
    pub(crate) fn begin(&mut self, entries: Vec<Delivery>, dones: &[u64], sync: bool) -> Staged {
        let mut staged = Staged::default();
        let mut done = Vec::with_capacity(dones.len());
        for &id in dones {
            if self.finish(id) {
                done.push(id);
            }
        }
        if !entries.is_empty()
            && self
                .segments
                .back()
                .is_none_or(|s| s.tail >= self.segment_target || s.version < format::VERSION)
            && let Err(e) = self.rotate()
        {
            error!(
                dir = %self.dir_path.display(),
                "handler spool: cannot start a new segment: {}; events go on into the last one \
                 (if any) within the cap",
                ErrorChain(&e)
            );
        }
        self.buf.clear();
        for chunk in done.chunks(format::DONE_IDS_MAX) {
            format::encode_done(chunk, &mut self.buf);
        }
        let Some((segment, version)) = self.segments.back().map(|s| (s.number, s.version)) else {
            staged.written.unspooled = entries;
            return staged;
        };
        let start = self.segments.back().map_or(0, |s| s.tail);
        for d in entries {
            // An older segment (when no new one could be started) records no signature, and
            // a version 1 segment no role either.
            let block = match &d.signature {
                Some(s) if version >= format::VERSION_SIGNATURES => format::encode_signature(s),
                _ => Vec::new(),
            };
            let len = format::entry_len(&d.ivorn, block.len(), d.payload.len());
            let fits = len.is_some_and(|l| self.bytes + (self.buf.len() + l) as u64 <= self.cap);
            if !fits {
                if len.is_some() {
                    self.note_full();
                }
                staged.written.unspooled.push(d);
                continue;
            }
            if self.refused > 0 {
                info!(
                    not_spooled = self.refused,
                    "handler spool has room again ({} events were not spooled while it was full)",
                    self.refused
                );
                self.refused = 0;
            }
            let id = self.next_id;
            self.next_id += 1;
            let at = start + self.buf.len() as u64;
            let role = match version {
                v if v >= format::VERSION_ROLES => format::role_byte(d.role),
                _ => 0,
            };
            format::encode_entry(
                id,
                &d.key,
                role,
                &block,
                &d.ivorn,
                &d.payload,
                &mut self.buf,
            );
            let head: &[u8; HEAD_LEN] = self.buf[(at - start) as usize..][..HEAD_LEN]
                .try_into()
                .expect("a head");
            let head = format::decode_head(head).expect("just encoded");
            staged.new.push((id, loc(segment, at, &head), d));
        }
        if self.buf.is_empty() {
            return staged;
        }
        match self.append() {
            Ok(()) => {
                staged.len = self.buf.len() as u64;
                if !staged.new.is_empty() || sync {
                    staged.sync = self.segments.back().and_then(|s| s.file.clone());
                }
            }
            Err(e) => staged.failed = Some(e),
        }
        self.prepare_spare();
        staged
    }

    /// The second half of a write: with its `fdatasync`'s outcome, the new entries become
    /// pending (parked), or, if the write or the sync failed, are handed back unspooled (the
    /// records written are then overwritten by the next write).
    pub(crate) fn end(&mut self, mut staged: Staged, synced: io::Result<()>) -> Written {
        let mut written = std::mem::take(&mut staged.written);
        match staged.failed.take().map_or(synced, Err) {
            Ok(()) => {
                if let Some(last) = self.segments.back_mut() {
                    for (id, loc, d) in staged.new {
                        self.pending.insert(id, loc);
                        last.live += 1;
                        self.parked += 1;
                        written.spooled.push((id, d));
                    }
                }
            }
            Err(e) => {
                error!(
                    dir = %self.dir_path.display(),
                    events = staged.new.len(),
                    "handler spool: cannot write: {}; these events are handed to the \
                     handlers' in-memory queue only",
                    ErrorChain(&e)
                );
                if let Some(last) = self.segments.back_mut()
                    && let Some(file) = &last.file
                    && staged.len > 0
                {
                    // Written but not known durable: zeroed (best effort), so that no record
                    // of it is read at the next start, and the next write goes there.
                    last.tail -= staged.len;
                    self.bytes -= staged.len;
                    let _ = write_zeros(file, last.tail, last.tail + staged.len);
                }
                written
                    .unspooled
                    .extend(staged.new.into_iter().map(|(_, _, d)| d));
            }
        }
        self.delete_done_segments();
        written
    }

    /// The first parked entry, if any: the next to hand to the handlers.
    pub(crate) fn next_parked(&self) -> Option<(u64, Loc)> {
        self.pending
            .range(self.handed + 1..)
            .next()
            .map(|(&id, &loc)| (id, loc))
    }

    /// Entry `id`, the first parked one, is in memory now.
    pub(crate) fn set_handed(&mut self, id: u64) {
        debug_assert_eq!(self.next_parked().map(|(i, _)| i), Some(id));
        if id > self.handed && self.pending.contains_key(&id) {
            self.parked -= 1;
        }
        self.handed = self.handed.max(id);
    }

    /// Reads a parked entry back. `Ok(None)` if its record does not check out any more
    /// (damage since it was written).
    ///
    /// # Errors
    ///
    /// The error reading its segment.
    pub(crate) fn read(&mut self, loc: Loc) -> io::Result<Option<Delivery>> {
        let i = self
            .find(loc.segment)
            .map_err(|()| io::Error::other("its segment is gone"))?;
        let file = match &self.segments[i].file {
            Some(file) => Arc::clone(file),
            None => match &self.reader {
                Some((n, file)) if *n == loc.segment => Arc::clone(file),
                _ => {
                    let name = segment_name(loc.segment);
                    let file = Arc::new(open_in(&self.dir, &name, How::Read)?);
                    self.reader = Some((loc.segment, Arc::clone(&file)));
                    file
                }
            },
        };
        let mut body = vec![0u8; loc.len as usize];
        file.read_exact_at(&mut body, loc.at + HEAD_LEN as u64)?;
        if crc32fast::hash(&body) != loc.body_crc {
            return Ok(None);
        }
        let Some((key, ivorn, signature, payload_at)) = format::decode_entry(&body, loc.signed)
        else {
            return Ok(None);
        };
        let ivorn: Arc<str> = Arc::from(ivorn);
        let payload = Bytes::from(body).slice(payload_at..);
        let role = format::role_of(loc.role).unwrap_or_else(|| role_in(&payload));
        Ok(Some(Delivery {
            ivorn,
            key,
            payload,
            source: Source::Spool,
            role,
            signature: signature.map(Arc::new),
            // Not kept on disk: a delivery read back is summarised from its bytes.
            spans: None,
        }))
    }

    /// Entries not done (handed or parked).
    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Entries parked on disk.
    pub(crate) fn parked(&self) -> usize {
        self.parked
    }

    /// The highest id in memory (see the module docs).
    #[cfg(test)]
    pub(crate) fn handed(&self) -> u64 {
        self.handed
    }

    /// Bytes of the records (and segment headers) kept.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Segment numbers, oldest first.
    #[cfg(test)]
    pub(crate) fn segment_numbers(&self) -> Vec<u64> {
        self.segments.iter().map(|s| s.number).collect()
    }

    /// Marks `id` done in memory; true if it was pending.
    fn finish(&mut self, id: u64) -> bool {
        let Some(loc) = self.pending.remove(&id) else {
            return false;
        };
        if id > self.handed {
            self.parked -= 1;
        }
        if let Ok(i) = self.find(loc.segment) {
            self.segments[i].live -= 1;
        }
        true
    }

    /// Notes an entry refused for the cap; the first since the spool had room is logged.
    fn note_full(&mut self) {
        if self.refused == 0 {
            warn!(
                cap = self.cap,
                bytes = self.bytes,
                "handler spool full (--handler-spool-bytes): events that do not fit go to the \
                 handlers' in-memory queue only, and are lost if the broker stops before they \
                 are handled"
            );
        }
        self.refused += 1;
    }

    /// Writes `buf` at the tail of the last segment (not synced), growing the file ahead with
    /// zeros.
    fn append(&mut self) -> io::Result<()> {
        #[cfg(test)]
        if let Some(fail) = &mut self.fail_write {
            fail()?;
        }
        let grow = GROW_BYTES.min(self.segment_target);
        let seg = self.segments.back_mut().expect("a segment");
        let file = Arc::clone(seg.file.as_ref().expect("the last segment is open"));
        let end = seg.tail + self.buf.len() as u64;
        if end > seg.len {
            // As the seen-index: a commit then overwrites allocated zeros and its fdatasync
            // flushes data only. Without room for them, the records alone extend the file.
            let new_len = end + grow;
            if write_zeros(&file, seg.len, new_len).is_ok() {
                seg.len = new_len;
            }
        }
        if let Err(e) = file.write_all_at(&self.buf, seg.tail) {
            // Part of it may be there: zeroed (best effort), as a failed sync's would be.
            let _ = write_zeros(&file, seg.tail, end);
            return Err(e);
        }
        seg.len = seg.len.max(end);
        seg.tail = end;
        self.bytes += self.buf.len() as u64;
        Ok(())
    }

    /// Starts a new last segment: the spare prepared ahead if there is one, else one created
    /// now; its header written and made durable under the temporary name, then renamed.
    fn rotate(&mut self) -> io::Result<()> {
        let number = self.segments.back().map_or(1, |s| s.number + 1);
        let name = segment_name(number);
        let header = format::header(number, self.next_id);
        let spare = match self.spare.take().map(JoinHandle::join) {
            Some(Ok(Ok(spare))) => Some(spare),
            Some(Ok(Err(e))) => {
                debug!("handler spool: no spare segment ({e}); creating one now");
                None
            }
            Some(Err(_)) | None => None,
        };
        let (file, len) = match spare {
            Some((file, len)) => {
                file.write_all_at(&header, 0)?;
                file.sync_data()?;
                (file, len)
            }
            None => {
                remove_in(&self.dir, TMP_NAME)?;
                let file = open_in(&self.dir, TMP_NAME, How::CreateNew)?;
                let len = HEADER_LEN + GROW_BYTES.min(self.segment_target);
                file.write_all_at(&header, 0)?;
                write_zeros(&file, HEADER_LEN, len)?;
                file.sync_all()?;
                (file, len)
            }
        };
        rename_in(&self.dir, TMP_NAME, &name)?;
        self.dir.sync_all()?;
        if let Some(last) = self.segments.back_mut() {
            // Only the last segment stays open: the spool holds few descriptors however many
            // segments its cap allows.
            last.file = None;
        }
        self.segments.push_back(Segment {
            number,
            file: Some(Arc::new(file)),
            tail: HEADER_LEN,
            len,
            live: 0,
            version: format::VERSION,
        });
        self.bytes += HEADER_LEN;
        Ok(())
    }

    /// Once the last segment is half full, prepares the next one on another thread: the
    /// temporary file, written with zeros to the segment size and made durable, so that
    /// neither filling it nor growing it costs a commit anything.
    fn prepare_spare(&mut self) {
        if self.spare.is_some()
            || self
                .segments
                .back()
                .is_some_and(|s| s.tail < self.segment_target / 2)
        {
            return;
        }
        let Ok(dir) = self.dir.try_clone() else {
            return;
        };
        let len = HEADER_LEN + self.segment_target;
        let spawned = std::thread::Builder::new()
            .name("vtp-spool-spare".into())
            .spawn(move || {
                remove_in(&dir, TMP_NAME)?;
                let file = open_in(&dir, TMP_NAME, How::CreateNew)?;
                write_zeros(&file, 0, len)?;
                file.sync_all()?;
                Ok((file, len))
            });
        self.spare = spawned.ok();
    }

    /// Deletes the oldest segments while none of their entries is pending (never the last).
    fn delete_done_segments(&mut self) {
        while self.segments.len() > 1 && self.segments[0].live == 0 {
            let name = segment_name(self.segments[0].number);
            if let Err(e) = remove_in(&self.dir, &name) {
                warn!(
                    file = %self.dir_path.join(&name).display(),
                    "handler spool: cannot delete a segment whose events are all handled: {e}"
                );
                return;
            }
            let gone = self.segments.pop_front().expect("checked");
            self.bytes -= gone.tail;
            if self.reader.as_ref().is_some_and(|r| r.0 == gone.number) {
                self.reader = None;
            }
        }
    }

    fn find(&self, number: u64) -> Result<usize, ()> {
        self.segments
            .binary_search_by_key(&number, |s| s.number)
            .map_err(|_| ())
    }

    /// Reads segment `number` at open: its entries become pending, its done marks finish
    /// them. `last`: the segment appends go to, whose cut-short tail is zeroed.
    fn load_segment(&mut self, number: u64, last: bool) -> io::Result<()> {
        let name = segment_name(number);
        let path = self.dir_path.join(&name);
        let file = open_in(&self.dir, &name, How::ReadWrite)?;
        let len = file.metadata()?.len();
        let mut head = [0u8; HEADER_LEN as usize];
        let got = usize::try_from(len).map_or(head.len(), |l| l.min(head.len()));
        file.read_exact_at(&mut head[..got], 0)?;
        let (first_id, version) = match format::check_header(&head[..got]) {
            Header::Ours {
                number: n,
                first_id,
                version,
            } if n == number => (first_id, version),
            Header::Ours { number: n, .. } => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("its header names segment {n}: it was renamed; move it aside"),
                ));
            }
            Header::Blank if len <= HEADER_LEN || is_zero(&file, 0, len)? => {
                warn!(path = %path.display(), "handler spool: an empty segment is removed");
                return remove_in(&self.dir, &name);
            }
            Header::Blank => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "its header is zeros but it holds data (damage): move it aside",
                ));
            }
            Header::Foreign(why) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("not a vtp handler spool segment: {why}; move it aside"),
                ));
            }
        };
        self.next_id = self.next_id.max(first_id);
        let mut scan = self.scan(number, &file, len)?;
        if last {
            // Past the last record that checks out: the write a crash cut short, not damage.
            scan.damaged.retain(|d| d.0 < scan.tail);
        }
        if !scan.damaged.is_empty() {
            let lost = scan.damaged.iter().filter(|d| d.1 != 0).count();
            warn!(
                path = %path.display(),
                records = scan.damaged.len(),
                events = lost,
                ivorns = %Ivorns(&scan.damaged),
                "handler spool: records that do not check out (damage) are skipped, and the \
                 handler work of those events is lost; the records after them are kept. Check \
                 the disk (see the system log)"
            );
        }
        let junk = count_nonzero(&file, scan.stop, len)?;
        if last {
            if scan.stop > scan.tail || junk > 0 {
                warn!(
                    path = %path.display(),
                    offset = scan.tail,
                    "handler spool: the last write does not check out (a write cut short by a \
                     crash: none of it was acknowledged) and is discarded"
                );
                write_zeros(&file, scan.tail, len)?;
                file.sync_data()?;
            }
        } else if junk > 0 {
            warn!(
                path = %path.display(),
                offset = scan.stop,
                bytes = junk,
                "handler spool: a record head does not check out (damage): the rest of this \
                 segment cannot be read"
            );
        }
        let tail = if last { scan.tail } else { scan.stop };
        self.bytes += tail;
        self.segments.push_back(Segment {
            number,
            file: last.then(|| Arc::new(file)),
            tail,
            len,
            live: 0,
            version,
        });
        Ok(())
    }

    /// Reads the records of one segment (see the module docs).
    fn scan(&mut self, number: u64, file: &File, len: u64) -> io::Result<Scan> {
        let mut scan = Scan {
            tail: HEADER_LEN,
            stop: HEADER_LEN,
            damaged: Vec::new(),
        };
        let mut at = HEADER_LEN;
        let mut head = [0u8; HEAD_LEN];
        while at + HEAD_LEN as u64 <= len {
            file.read_exact_at(&mut head, at)?;
            let Some(h) = format::decode_head(&head) else {
                break;
            };
            let end = at + HEAD_LEN as u64 + u64::from(h.len);
            if end > len {
                break;
            }
            match self.read_body(file, at, &h)? {
                Some(ok) => {
                    match ok {
                        Body::Entry => {
                            self.pending.insert(h.id, loc(number, at, &h));
                            self.next_id = self.next_id.max(h.id + 1);
                        }
                        Body::Done(ids) => {
                            for id in ids {
                                self.pending.remove(&id);
                            }
                        }
                    }
                    scan.tail = end;
                }
                None if h.kind == Kind::Entry => {
                    self.next_id = self.next_id.max(h.id + 1);
                    scan.damaged.push((at, h.id, damaged_ivorn(file, at, &h)));
                }
                None => scan.damaged.push((at, 0, None)),
            }
            at = end;
        }
        scan.stop = at;
        Ok(scan)
    }

    /// Checks a record's body: an entry's by streaming it through the checksum, a done
    /// record's by reading it (at most 64 KiB). `None` if it does not check out.
    fn read_body(&self, file: &File, at: u64, h: &Head) -> io::Result<Option<Body>> {
        let from = at + HEAD_LEN as u64;
        match h.kind {
            Kind::Entry => {
                let mut crc = crc32fast::Hasher::new();
                let mut buf = [0u8; 64 * 1024];
                let mut done = 0u64;
                let len = u64::from(h.len);
                while done < len {
                    let n = usize::try_from(len - done).map_or(buf.len(), |r| r.min(buf.len()));
                    file.read_exact_at(&mut buf[..n], from + done)?;
                    crc.update(&buf[..n]);
                    done += n as u64;
                }
                Ok((crc.finalize() == h.body_crc).then_some(Body::Entry))
            }
            Kind::Done => {
                let mut body = vec![0u8; h.len as usize];
                file.read_exact_at(&mut body, from)?;
                if crc32fast::hash(&body) != h.body_crc {
                    return Ok(None);
                }
                Ok(Some(Body::Done(format::done_ids(&body).collect())))
            }
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        // Not left running: a spool opened next in this directory starts by removing its file.
        if let Some(spare) = self.spare.take() {
            let _ = spare.join();
        }
    }
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.dir_path)
            .field("segments", &self.segments.len())
            .field("pending", &self.pending.len())
            .field("parked", &self.parked)
            .field("bytes", &self.bytes)
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

/// What reading one segment found.
struct Scan {
    /// Offset just past the last record that checks out.
    tail: u64,
    /// Where reading stopped: past the last record whose head checks out.
    stop: u64,
    /// Records whose body does not check out: (offset, entry id or 0 for a done record, the
    /// ivorn if it can still be read).
    damaged: Vec<(u64, u64, Option<String>)>,
}

/// A record body that checks out.
enum Body {
    Entry,
    Done(Vec<u64>),
}

/// The location of a record whose head is `h`, at `at` in segment `segment`.
fn loc(segment: u64, at: u64, h: &Head) -> Loc {
    Loc {
        segment,
        at,
        len: h.len,
        body_crc: h.body_crc,
        role: h.role,
        signed: h.signed,
    }
}

/// The role of an event spooled without one (by a vtp before spool format 2): read from its
/// payload, which the node parsed when it accepted it (observation, the default, if it does
/// not parse any more).
fn role_in(payload: &[u8]) -> EventRole {
    match message::parse(payload, &ParseLimits::default()) {
        Ok(Message::VoEvent(ev)) => ev.role,
        _ => EventRole::Observation,
    }
}

/// The ivorn of a damaged entry, if its body still parses (for the log; may be damaged too).
fn damaged_ivorn(file: &File, at: u64, h: &Head) -> Option<String> {
    let len = (h.len as usize).min(34 + usize::from(u16::MAX));
    let mut body = vec![0u8; len];
    file.read_exact_at(&mut body, at + HEAD_LEN as u64).ok()?;
    format::decode_entry(&body, h.signed).map(|(_, ivorn, _, _)| ivorn.to_owned())
}

/// Ivorns (or ids) of damaged entries for a log line, at most 16.
struct Ivorns<'a>(&'a [(u64, u64, Option<String>)]);

impl std::fmt::Display for Ivorns<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (_, id, ivorn)) in self.0.iter().filter(|d| d.1 != 0).enumerate() {
            if i == 16 {
                return write!(f, " and more");
            }
            if i > 0 {
                write!(f, ", ")?;
            }
            match ivorn {
                Some(ivorn) => write!(f, "{}", crate::text::printable(ivorn))?,
                None => write!(f, "id {id} (ivorn unreadable)")?,
            }
        }
        Ok(())
    }
}

/// The file name of segment `number`.
fn segment_name(number: u64) -> String {
    format!("{SEGMENT_PREFIX}{number:010}")
}

/// The numbers of the segment files in `dir`, in order.
fn segment_numbers(dir: &File) -> io::Result<Vec<u64>> {
    let mut numbers = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if let Some(n) = name
            .strip_prefix(SEGMENT_PREFIX)
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u64>().ok())
        {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Whether any file named like a segment is in `dir` (for a warning when the spool is off).
pub(crate) fn any_segment(dir: &File) -> bool {
    segment_numbers(dir).is_ok_and(|n| !n.is_empty())
}

/// Non-zero bytes of `file` in `from..to`.
fn count_nonzero(file: &File, from: u64, to: u64) -> io::Result<u64> {
    let mut buf = [0u8; 64 * 1024];
    let mut at = from;
    let mut n = 0;
    while at < to {
        let len = usize::try_from(to - at).map_or(buf.len(), |r| r.min(buf.len()));
        file.read_exact_at(&mut buf[..len], at)?;
        n += buf[..len].iter().filter(|&&b| b != 0).count() as u64;
        at += len as u64;
    }
    Ok(n)
}

fn is_zero(file: &File, from: u64, to: u64) -> io::Result<bool> {
    count_nonzero(file, from, to).map(|n| n == 0)
}

#[cfg(test)]
mod flow_tests;
#[cfg(test)]
mod tests;
