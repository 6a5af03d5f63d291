//! Pieces of the `vtp-bench` load generator: the event stream, a cheap frame classifier, the
//! author threads, the subscriber pool, process accounting and the report.
//!
//! # Why the generator is cheap
//!
//! - Events are one template (the 10 KB GCN fixture) whose IVORN ends in fixed-width digits:
//!   event `n` is a `memcpy` of the template and nine digit writes, never an XML rewrite.
//! - Subscribers do not parse events: [`peek`] reads the root start tag only (about 300 bytes
//!   of a 10 KB event) to find the IVORN for the ack. Only the rare Transport messages
//!   (authenticate, iamalive) go through the full `vtp_core::message` parser.
//! - Subscribers are multiplexed on a few mio threads; all acks produced by one read are
//!   written with one `write` call.
//! - The generator measures its own CPU time ([`proc_stat`]) and reports it next to the
//!   broker's, so a run shows directly how much of the machine it took.

pub(crate) mod author;
pub(crate) mod handshake;
pub(crate) mod report;
pub(crate) mod sign;
pub(crate) mod subscribers;
pub(crate) mod tls;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The default event: the GCN Swift BAT fixture (10,322 bytes, VOEvent 2.0).
pub(crate) const GCN_FIXTURE: &[u8] = include_bytes!("../../../core/tests/data/gcn_swift_bat.xml");

/// The generator's IVOID, sent as `Response` in its acks and iamalive replies.
pub(crate) const BENCH_IVO: &str = "ivo://vtp.bench/generator";

/// Digits of the event number at the end of every IVORN (fixed width: every event has the
/// same size).
const SEQ_DIGITS: usize = 9;

/// Largest frame the generator accepts from a broker.
pub(crate) const FRAME_MAX: u32 = 4 << 20;

/// The events of one run: one framed template, numbered by rewriting the IVORN's last digits.
#[derive(Debug, Clone)]
pub(crate) struct EventTemplate {
    /// Length prefix and payload, with the sequence digits all `0`.
    framed: Vec<u8>,
    /// Offset of the first sequence digit in `framed`.
    seq_at: usize,
    /// The IVORN up to (not including) the sequence digits.
    ivorn_prefix: Vec<u8>,
}

impl EventTemplate {
    /// Builds the template from an event document: its `ivorn` attribute gets
    /// `-<run tag>-<9 digits>` appended, so that every event of every run is distinct (the
    /// brokers de-duplicate) and all have the same size.
    pub(crate) fn new(event: &[u8], run_tag: &str) -> Result<Self, String> {
        let Peek::Event { ivorn } = peek(event) else {
            return Err("the event file is not a VOEvent (its root element is not VOEvent)".into());
        };
        // `ivorn` borrows from `event`: its offset gives the place to extend.
        let start = ivorn.as_ptr() as usize - event.as_ptr() as usize;
        let end = start + ivorn.len();
        let mut ivorn_prefix = ivorn.to_vec();
        ivorn_prefix.push(b'-');
        ivorn_prefix.extend_from_slice(run_tag.as_bytes());
        ivorn_prefix.push(b'-');
        let mut payload = Vec::with_capacity(event.len() + ivorn_prefix.len() + SEQ_DIGITS);
        payload.extend_from_slice(&event[..start]);
        payload.extend_from_slice(&ivorn_prefix);
        let seq_at_payload = payload.len();
        payload.extend_from_slice(&[b'0'; SEQ_DIGITS]);
        payload.extend_from_slice(&event[end..]);
        let len = u32::try_from(payload.len()).map_err(|_| "the event is over 4 GiB")?;
        let mut framed = Vec::with_capacity(payload.len() + 4);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&payload);
        Ok(Self {
            framed,
            seq_at: seq_at_payload + 4,
            ivorn_prefix,
        })
    }

    /// Writes the framed event number `n` into `out` (replacing its contents).
    pub(crate) fn write(&self, n: u64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.framed);
        let mut n = n;
        for d in out[self.seq_at..self.seq_at + SEQ_DIGITS].iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
    }

    /// The IVORN of event `n`, as it appears in the event.
    pub(crate) fn ivorn(&self, n: u64) -> Vec<u8> {
        let mut v = self.ivorn_prefix.clone();
        v.extend(format!("{n:0SEQ_DIGITS$}").bytes());
        v
    }

    /// The event number carried by `ivorn`, if it is one of this run's events.
    pub(crate) fn seq_of(&self, ivorn: &[u8]) -> Option<u64> {
        let digits = ivorn.strip_prefix(self.ivorn_prefix.as_slice())?;
        if digits.len() != SEQ_DIGITS {
            return None;
        }
        digits.iter().try_fold(0u64, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + u64::from(d - b'0'))
        })
    }

    /// Length of one framed event (prefix included).
    pub(crate) fn frame_len(&self) -> usize {
        self.framed.len()
    }

    /// Largest event number the fixed-width digits can hold, plus one.
    pub(crate) fn capacity() -> u64 {
        10u64.pow(SEQ_DIGITS as u32)
    }
}

/// What a frame is, read from its root start tag only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peek<'a> {
    /// A VOEvent; its `ivorn` attribute value as written (empty if absent).
    Event {
        /// The raw attribute value (entities not expanded).
        ivorn: &'a [u8],
    },
    /// A Transport message (parse it fully to learn more).
    Transport,
    /// Anything else: not XML, another root, a DOCTYPE.
    Other,
}

/// Classifies a payload by its root element's local name, reading only up to the end of the
/// root start tag. Never panics, whatever the bytes.
pub(crate) fn peek(payload: &[u8]) -> Peek<'_> {
    let mut rest = payload;
    // Byte-order mark, then the prolog: whitespace, declaration, comments, PIs.
    rest = rest.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(rest);
    loop {
        rest = trim_start(rest);
        if let Some(r) = rest.strip_prefix(b"<?") {
            let Some(end) = find(r, b"?>") else {
                return Peek::Other;
            };
            rest = &r[end + 2..];
        } else if let Some(r) = rest.strip_prefix(b"<!--") {
            let Some(end) = find(r, b"-->") else {
                return Peek::Other;
            };
            rest = &r[end + 3..];
        } else {
            break;
        }
    }
    let Some(tag) = rest.strip_prefix(b"<") else {
        return Peek::Other;
    };
    let name_len = tag
        .iter()
        .position(|&b| b.is_ascii_whitespace() || b == b'>' || b == b'/')
        .unwrap_or(tag.len());
    let name = &tag[..name_len];
    let local = match name.iter().rposition(|&b| b == b':') {
        Some(i) => &name[i + 1..],
        None => name,
    };
    match local {
        b"VOEvent" => Peek::Event {
            ivorn: attribute(&tag[name_len..], b"ivorn").unwrap_or(&[]),
        },
        b"Transport" => Peek::Transport,
        _ => Peek::Other,
    }
}

/// The value of attribute `want` in the rest of a start tag (after the element name).
fn attribute<'a>(tag: &'a [u8], want: &[u8]) -> Option<&'a [u8]> {
    let mut rest = tag;
    loop {
        rest = trim_start(rest);
        let first = *rest.first()?;
        if first == b'>' || first == b'/' {
            return None;
        }
        let name_len = rest
            .iter()
            .position(|&b| b == b'=' || b.is_ascii_whitespace() || b == b'>')?;
        let name = &rest[..name_len];
        rest = trim_start(&rest[name_len..]);
        rest = trim_start(rest.strip_prefix(b"=")?);
        let quote = *rest.first()?;
        if quote != b'"' && quote != b'\'' {
            return None;
        }
        let value_len = rest[1..].iter().position(|&b| b == quote)?;
        let value = &rest[1..1 + value_len];
        if name == want {
            return Some(value);
        }
        rest = &rest[value_len + 2..];
    }
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    &s[n..]
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Per-event bookkeeping shared by authors and subscribers in `e2e` mode: when each event's
/// submission started, and how many subscribers have it.
#[derive(Debug)]
pub(crate) struct Book {
    /// Time base of every stored instant.
    pub(crate) epoch: Instant,
    /// Submission start of event `n`, in nanoseconds since `epoch` plus one (0: not started).
    starts: Box<[AtomicU64]>,
    /// Subscribers that received event `n`.
    delivered: Box<[AtomicU32]>,
    /// Subscribers that count for completion (set once they are connected).
    subscribers: AtomicU32,
    /// Events received by every counted subscriber.
    complete: AtomicU64,
    /// A counted subscriber was dropped: the run cannot complete.
    aborted: AtomicBool,
    /// Signalled when an event completes.
    lock: Mutex<()>,
    cond: Condvar,
}

impl Book {
    /// A book for `events` events.
    pub(crate) fn new(events: u64, epoch: Instant) -> Self {
        let n = usize::try_from(events).unwrap_or(usize::MAX);
        Self {
            epoch,
            starts: (0..n).map(|_| AtomicU64::new(0)).collect(),
            delivered: (0..n).map(|_| AtomicU32::new(0)).collect(),
            subscribers: AtomicU32::new(u32::MAX),
            complete: AtomicU64::new(0),
            aborted: AtomicBool::new(false),
            lock: Mutex::new(()),
            cond: Condvar::new(),
        }
    }

    /// Sets how many subscribers must receive an event for it to be complete.
    pub(crate) fn set_subscribers(&self, n: u32) {
        self.subscribers.store(n, Ordering::Release);
    }

    /// Records that event `n`'s submission starts now.
    pub(crate) fn start(&self, n: u64, at: Instant) {
        if let Some(slot) = self.starts.get(idx(n)) {
            slot.store(nanos_since(self.epoch, at) + 1, Ordering::Release);
        }
    }

    /// Records a delivery of event `n` at `at`; returns its latency from the submission start
    /// (None if the event is unknown or was not started by this process).
    pub(crate) fn deliver(&self, n: u64, at: Instant) -> Option<Duration> {
        let start = self.starts.get(idx(n))?.load(Ordering::Acquire);
        let count = self.delivered[idx(n)].fetch_add(1, Ordering::AcqRel) + 1;
        if count == self.subscribers.load(Ordering::Acquire) {
            self.complete.fetch_add(1, Ordering::AcqRel);
            let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.cond.notify_all();
        }
        (start != 0)
            .then(|| Duration::from_nanos(nanos_since(self.epoch, at).saturating_sub(start - 1)))
    }

    /// Whether event `n` reached every counted subscriber.
    pub(crate) fn is_complete(&self, n: u64) -> bool {
        self.delivered
            .get(idx(n))
            .is_some_and(|d| d.load(Ordering::Acquire) >= self.subscribers.load(Ordering::Acquire))
    }

    /// Marks the run as unable to complete (a subscriber was dropped) and wakes the waiters.
    pub(crate) fn abort(&self) {
        self.aborted.store(true, Ordering::Release);
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.cond.notify_all();
    }

    /// Whether [`abort`](Self::abort) was called.
    pub(crate) fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Acquire)
    }

    /// Events received by every counted subscriber so far.
    pub(crate) fn completed(&self) -> u64 {
        self.complete.load(Ordering::Acquire)
    }

    /// Waits until `done()` holds or `deadline` passes; returns whether it holds. Woken each
    /// time an event completes (and every 50 ms, so that other conditions are seen too).
    pub(crate) fn wait_until(&self, deadline: Instant, done: impl Fn() -> bool) -> bool {
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if done() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let wait = (deadline - now).min(Duration::from_millis(50));
            guard = self
                .cond
                .wait_timeout(guard, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

fn idx(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Nanoseconds from `epoch` to `at` (0 if `at` is earlier).
pub(crate) fn nanos_since(epoch: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// CPU and memory of a process, from `/proc`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ProcSample {
    /// utime + stime from `/proc/PID/stat`, in clock ticks (USER_HZ, 100 per second).
    pub(crate) cpu_ticks: u64,
    /// Sum of every live thread's run time from `/proc/PID/task/*/schedstat`, in nanoseconds
    /// (exact, where the kernel has schedstats; threads that exited are missing).
    pub(crate) sched_ns: Option<u64>,
    /// Resident set size now (VmRSS), KiB.
    pub(crate) rss_kib: u64,
    /// Peak resident set size (VmHWM), KiB.
    pub(crate) hwm_kib: u64,
}

/// Clock ticks per second of `/proc/PID/stat` times (USER_HZ, 100 on every Linux ABI).
const USER_HZ: u64 = 100;

impl ProcSample {
    /// CPU time between two samples: the exact schedstat figure when both have it and it
    /// agrees with the tick count (threads that exited in between are missing from schedstat
    /// but counted in the ticks; then the ticks are used).
    pub(crate) fn cpu_since(&self, before: &Self) -> Duration {
        let ticks = self.ticks_since(before);
        match (self.sched_ns, before.sched_ns) {
            (Some(a), Some(b)) if a >= b => {
                let sched = Duration::from_nanos(a - b);
                let tick = Duration::from_millis(1000 / USER_HZ);
                if sched + tick * 2 >= ticks {
                    sched
                } else {
                    ticks
                }
            }
            _ => ticks,
        }
    }

    /// CPU time between two samples from utime + stime (10 ms resolution).
    pub(crate) fn ticks_since(&self, before: &Self) -> Duration {
        let ticks = self.cpu_ticks.saturating_sub(before.cpu_ticks);
        Duration::from_millis(ticks * 1000 / USER_HZ)
    }
}

/// Samples process `pid` (`None`: this process).
///
/// # Errors
///
/// A message naming the file when `/proc` cannot be read (the process is gone, or no procfs).
pub(crate) fn proc_stat(pid: Option<u32>) -> Result<ProcSample, String> {
    let dir = pid.map_or_else(|| "/proc/self".to_owned(), |p| format!("/proc/{p}"));
    let stat = std::fs::read_to_string(format!("{dir}/stat"))
        .map_err(|e| format!("cannot read {dir}/stat: {e}"))?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| format!("{dir}/stat has no command field"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line; `after` starts at field 3.
    let field = |n: usize| -> Result<u64, String> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("{dir}/stat: field {n} missing"))
    };
    let cpu_ticks = field(14)? + field(15)?;
    let status = std::fs::read_to_string(format!("{dir}/status"))
        .map_err(|e| format!("cannot read {dir}/status: {e}"))?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(ProcSample {
        cpu_ticks,
        sched_ns: sched_ns(&dir),
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
    })
}

fn sched_ns(dir: &str) -> Option<u64> {
    let mut total = 0u64;
    for entry in std::fs::read_dir(format!("{dir}/task")).ok()? {
        let path = entry.ok()?.path().join("schedstat");
        // A thread may exit between listing and reading: skip it.
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// A tag unique to this process and start time, part of every IVORN it submits.
pub(crate) fn run_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:x}{:x}",
        std::process::id(),
        (nanos as u64) & 0xffff_ffff_ffff
    )
}

/// The current UTC time as a Transport `TimeStamp`.
pub(crate) fn timestamp() -> vtp_core::time::UtcStamp {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    vtp_core::time::format_utc(secs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn template_numbers_events_and_reads_them_back() {
        let t = EventTemplate::new(GCN_FIXTURE, "abc").unwrap();
        let mut a = Vec::new();
        let mut b = Vec::new();
        t.write(7, &mut a);
        t.write(123_456_789, &mut b);
        assert_eq!(a.len(), b.len());
        assert_eq!(a.len(), t.frame_len());
        assert_ne!(a, b);
        let len = u32::from_be_bytes(a[..4].try_into().unwrap()) as usize;
        assert_eq!(len + 4, a.len());
        let Peek::Event { ivorn } = peek(&a[4..]) else {
            panic!("not an event");
        };
        assert_eq!(
            ivorn,
            b"ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_532871-729-abc-000000007"
        );
        assert_eq!(t.ivorn(7), ivorn);
        assert_eq!(t.seq_of(ivorn), Some(7));
        let Peek::Event { ivorn } = peek(&b[4..]) else {
            panic!("not an event");
        };
        assert_eq!(t.seq_of(ivorn), Some(123_456_789));
        // Another run's event, or a test event, is not ours.
        let other = EventTemplate::new(GCN_FIXTURE, "abd").unwrap();
        assert_eq!(t.seq_of(&other.ivorn(7)), None);
        assert_eq!(t.seq_of(b"ivo://nasa.gsfc.gcn/SWIFT#x"), None);
        // The rest of the document is the fixture, byte for byte.
        let payload = &a[4..];
        assert!(payload.starts_with(&GCN_FIXTURE[..100]));
        assert!(payload.ends_with(&GCN_FIXTURE[GCN_FIXTURE.len() - 100..]));
    }

    #[test]
    fn every_event_passes_the_ivoid_check() {
        let t = EventTemplate::new(GCN_FIXTURE, &run_tag()).unwrap();
        let ivorn = String::from_utf8(t.ivorn(42)).unwrap();
        assert!(
            vtp_core::ivoid::check_event_ivorn(&ivorn).is_ok(),
            "{ivorn}"
        );
    }

    #[test]
    fn peek_classifies_roots() {
        let ev = br#"<?xml version="1.0"?><!-- c --><voe:VOEvent role='test' ivorn = 'ivo://a.b/c#d' version="2.0"><Who/></voe:VOEvent>"#;
        assert_eq!(
            peek(ev),
            Peek::Event {
                ivorn: b"ivo://a.b/c#d"
            }
        );
        assert_eq!(
            peek(b"<VOEvent version=\"2.0\">"),
            Peek::Event { ivorn: b"" }
        );
        assert_eq!(
            peek(b"\n<trn:Transport role=\"iamalive\"/>"),
            Peek::Transport
        );
        assert_eq!(peek(b"<Other/>"), Peek::Other);
        assert_eq!(peek(b""), Peek::Other);
        assert_eq!(peek(b"<?xml "), Peek::Other);
        assert_eq!(peek(b"not xml"), Peek::Other);
        assert_eq!(
            peek(b"<VOEvent ivorn=\"unterminated"),
            Peek::Event { ivorn: b"" }
        );
    }

    #[test]
    fn peek_never_panics_on_truncations() {
        for end in 0..600 {
            let _ = peek(&GCN_FIXTURE[..end]);
        }
    }

    #[test]
    fn book_counts_completion_and_latency() {
        let epoch = Instant::now();
        let book = Book::new(3, epoch);
        book.set_subscribers(2);
        book.start(1, epoch + Duration::from_millis(1));
        assert!(!book.is_complete(1));
        let lat = book.deliver(1, epoch + Duration::from_millis(4)).unwrap();
        assert_eq!(lat, Duration::from_millis(3));
        assert_eq!(book.completed(), 0);
        book.deliver(1, epoch + Duration::from_millis(5));
        assert!(book.is_complete(1));
        assert_eq!(book.completed(), 1);
        // Not started by us: counted, but no latency.
        assert_eq!(book.deliver(2, epoch), None);
        // Out of range: ignored.
        assert_eq!(book.deliver(9, epoch), None);
    }

    #[test]
    fn proc_stat_reads_this_process() {
        let s = proc_stat(None).unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib);
    }
}
