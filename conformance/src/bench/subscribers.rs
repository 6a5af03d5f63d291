//! Subscribers multiplexed on a few mio threads.
//!
//! Each subscriber connects (at most [`INFLIGHT_MAX`] over all threads waiting for their broker's
//! first frame, so that a slow broker's accept queue never overflows), answers `iamalive` with an
//! `iamalive` reply (Origin copied), acks every VOEvent (Origin = its IVORN, read by
//! [`peek`] without parsing the event), and does not answer `authenticate`
//! (like pygcn: no filters, so every event is sent). A subscriber is *ready* once its first
//! frame (the broker's `authenticate`) arrives: the broker has registered it by then.
//!
//! With [`Setup::tls`] each subscriber runs a TLS handshake first (rustls driven by hand on the
//! non-blocking socket: ciphertext read in one `read`, fed to rustls from memory; acks
//! encrypted and written as the socket takes them); the broker's `authenticate` then arrives
//! over TLS.
//!
//! Everything a broker sends is peer input: frames are capped, and nothing here panics on it.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rustls::ClientConnection;
use vtp_core::frame::FrameDecoder;
use vtp_core::message::{self, Message, ParseLimits, TransportRole};

use vtp_core::time::UtcStamp;

use super::tls::TlsClient;
use super::{BENCH_IVO, Book, EventTemplate, FRAME_MAX, Peek, peek, timestamp};

/// Subscribers waiting for their first frame, over all threads. Twisted listens with a backlog
/// of 50: with more connections pending, Linux drops handshakes and Comet accepts the rest only
/// after many seconds (or never: a client whose final ACK was dropped waits for a greeting
/// that never comes).
const INFLIGHT_MAX: usize = 32;

/// Acks and replies queued for a broker that does not read them; beyond, the subscriber gives
/// up (the broker is not reading its socket at all).
const OUT_MAX: usize = 16 << 20;

/// What the pool needs to know.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    /// The broker's broadcast address.
    pub(crate) addr: SocketAddr,
    /// Number of subscribers.
    pub(crate) subscribers: usize,
    /// Number of threads they are spread over.
    pub(crate) threads: usize,
    /// This run's events, to recognise them and number deliveries; None: every VOEvent counts
    /// (`subscribe` mode, where another process submits).
    pub(crate) template: Option<Arc<EventTemplate>>,
    /// Per-event bookkeeping in `e2e` mode.
    pub(crate) book: Option<Arc<Book>>,
    /// Connect with TLS.
    pub(crate) tls: Option<TlsClient>,
}

/// Counters shared with the controlling thread.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Stop every thread (each returns within 50 ms).
    pub(crate) stop: AtomicBool,
    /// Subscribers that received their first frame.
    pub(crate) ready: AtomicUsize,
    /// Subscribers whose connection failed or closed before their first frame.
    pub(crate) failed: AtomicUsize,
    /// Subscribers closed by the broker after being ready.
    pub(crate) dropped: AtomicUsize,
    /// VOEvents received, over all subscribers.
    pub(crate) deliveries: AtomicU64,
}

/// One subscriber's record.
#[derive(Debug, Clone, Default)]
pub(crate) struct SubStats {
    /// VOEvents of this run received.
    pub(crate) events: u64,
    /// Other VOEvents received (another run's, broker test events).
    pub(crate) foreign: u64,
    /// `iamalive` messages received (each answered).
    pub(crate) iamalives: u64,
    /// Frames that were neither a VOEvent nor a Transport message the generator understood.
    pub(crate) unparsable: u64,
    /// When the first frame arrived.
    pub(crate) ready_at: Option<Instant>,
    /// Longest time without a keepalive: between the first frame and the first iamalive,
    /// between iamalives, and from the last one to the end of the run.
    pub(crate) keepalive_gap_max: Duration,
    last_keepalive: Option<Instant>,
    /// Why the connection ended before the run did, if it did.
    pub(crate) closed: Option<String>,
}

/// What one thread returns.
#[derive(Debug, Default)]
pub(crate) struct ThreadResult {
    /// Per-subscriber records.
    pub(crate) subs: Vec<SubStats>,
    /// Latency of each delivery of this run's events from its submission start (e2e mode).
    pub(crate) latencies: Vec<Duration>,
    /// First and last delivery of this run's events.
    pub(crate) first_delivery: Option<Instant>,
    pub(crate) last_delivery: Option<Instant>,
    /// The first I/O error that stopped the thread itself, if any.
    pub(crate) error: Option<String>,
}

/// A running pool.
#[derive(Debug)]
pub(crate) struct Pool {
    /// The shared counters.
    pub(crate) shared: Arc<Shared>,
    handles: Vec<JoinHandle<ThreadResult>>,
}

impl Pool {
    /// Starts the threads; subscribers start connecting at once.
    pub(crate) fn start(setup: &Setup) -> io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let threads = setup.threads.clamp(1, setup.subscribers.max(1));
        let mut handles = Vec::with_capacity(threads);
        for t in 0..threads {
            // Spread evenly: the first `subscribers % threads` threads get one more.
            let count = setup.subscribers / threads + usize::from(t < setup.subscribers % threads);
            let mut setup = setup.clone();
            setup.threads = threads;
            let shared = Arc::clone(&shared);
            handles.push(
                std::thread::Builder::new()
                    .name(format!("subscribers {t}"))
                    .spawn(move || Worker::new(setup, shared, count).run())?,
            );
        }
        Ok(Self { shared, handles })
    }

    /// Waits until every subscriber is ready or failed, or `deadline`; returns the number ready.
    pub(crate) fn wait_ready(&self, subscribers: usize, deadline: Instant) -> usize {
        loop {
            let ready = self.shared.ready.load(Ordering::Acquire);
            let failed = self.shared.failed.load(Ordering::Acquire);
            if ready + failed >= subscribers || Instant::now() >= deadline {
                return ready;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the threads and collects their results.
    pub(crate) fn finish(self) -> ThreadResult {
        self.shared.stop.store(true, Ordering::Release);
        let mut total = ThreadResult::default();
        for h in self.handles {
            match h.join() {
                Ok(r) => {
                    total.subs.extend(r.subs);
                    total.latencies.extend(r.latencies);
                    total.first_delivery = match (total.first_delivery, r.first_delivery) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    total.last_delivery = total.last_delivery.max(r.last_delivery);
                    total.error = total.error.or(r.error);
                }
                Err(_) => {
                    total
                        .error
                        .get_or_insert("a subscriber thread panicked".into());
                }
            }
        }
        total
    }
}

struct Sub {
    /// None once closed (dropping the stream closes it and removes it from the poll).
    stream: Option<TcpStream>,
    /// The TLS session over `stream`, if the pool speaks TLS.
    tls: Option<Box<ClientConnection>>,
    decoder: FrameDecoder,
    out: Vec<u8>,
    out_pos: usize,
    stats: SubStats,
}

struct Worker {
    setup: Setup,
    shared: Arc<Shared>,
    count: usize,
    subs: Vec<Sub>,
    waiting: usize,
    inflight_max: usize,
    result: ThreadResult,
    replies: Replies,
}

/// Builds acks and iamalive replies; the ack of the event most recently acked is kept, since
/// every subscriber of the thread acks the same event within microseconds.
struct Replies {
    stamp: UtcStamp,
    ivorn: Vec<u8>,
    ack: Vec<u8>,
}

impl Replies {
    fn new() -> Self {
        Self {
            stamp: timestamp(),
            ivorn: Vec::new(),
            ack: Vec::new(),
        }
    }

    /// Moves the TimeStamp on (once per poll wake-up).
    fn tick(&mut self) {
        let now = timestamp();
        if now.as_str() != self.stamp.as_str() {
            self.stamp = now;
            self.ivorn.clear();
        }
    }

    /// Appends the framed ack of `ivorn` to `out`.
    fn ack(&mut self, ivorn: &str, out: &mut Vec<u8>) {
        if self.ivorn != ivorn.as_bytes() || self.ack.is_empty() {
            self.ivorn.clear();
            self.ivorn.extend_from_slice(ivorn.as_bytes());
            self.ack.clear();
            self.ack.extend_from_slice(&message::build_ack(
                ivorn,
                Some(BENCH_IVO),
                self.stamp.as_str(),
            ));
        }
        out.extend_from_slice(&self.ack);
    }

    /// Appends the framed reply to an iamalive from `origin` to `out`.
    fn iamalive(&self, origin: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(&message::build_iamalive_reply(
            origin,
            Some(BENCH_IVO),
            self.stamp.as_str(),
        ));
    }
}

/// What a frame made the subscriber do.
struct FrameCtx<'a> {
    template: Option<&'a EventTemplate>,
    book: Option<&'a Book>,
    shared: &'a Shared,
    at: Instant,
}

impl Worker {
    fn new(setup: Setup, shared: Arc<Shared>, count: usize) -> Self {
        Self {
            inflight_max: (INFLIGHT_MAX / setup.threads.max(1)).max(1),
            setup,
            shared,
            count,
            subs: Vec::with_capacity(count),
            waiting: 0,
            result: ThreadResult::default(),
            replies: Replies::new(),
        }
    }

    fn run(mut self) -> ThreadResult {
        if let Err(e) = self.serve() {
            self.result.error = Some(format!("subscriber thread: {e}"));
        }
        let end = Instant::now();
        for sub in &mut self.subs {
            if let Some(last) = sub.stats.last_keepalive.filter(|_| sub.stream.is_some()) {
                let gap = end.saturating_duration_since(last);
                sub.stats.keepalive_gap_max = sub.stats.keepalive_gap_max.max(gap);
            }
        }
        self.result.subs = self.subs.into_iter().map(|s| s.stats).collect();
        self.result
    }

    fn serve(&mut self) -> io::Result<()> {
        let mut poll = Poll::new()?;
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; 256 * 1024];
        // One read's plaintext: at most its ciphertext plus the rest of a record begun in the
        // previous read.
        let mut plain = vec![0u8; 256 * 1024 + 64 * 1024];
        loop {
            if self.shared.stop.load(Ordering::Acquire) {
                return Ok(());
            }
            while self.waiting < self.inflight_max && self.subs.len() < self.count {
                self.connect(&poll);
            }
            poll.poll(&mut events, Some(Duration::from_millis(50)))?;
            self.replies.tick();
            for ev in &events {
                let i = ev.token().0;
                if self.subs.get(i).is_none_or(|s| s.stream.is_none()) {
                    continue;
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    self.read(i, &mut buf, &mut plain);
                }
                if ev.is_writable() || ev.is_write_closed() {
                    self.flush(i);
                }
            }
        }
    }

    fn connect(&mut self, poll: &Poll) {
        let token = Token(self.subs.len());
        let stream = TcpStream::connect(self.setup.addr).and_then(|mut s| {
            poll.registry()
                .register(&mut s, token, Interest::READABLE | Interest::WRITABLE)?;
            Ok(s)
        });
        let mut sub = Sub {
            stream: None,
            tls: None,
            decoder: FrameDecoder::new(FRAME_MAX),
            out: Vec::new(),
            out_pos: 0,
            stats: SubStats::default(),
        };
        let tls = self
            .setup
            .tls
            .as_ref()
            .map(TlsClient::connection)
            .transpose();
        match stream
            .map_err(|e| e.to_string())
            .and_then(|s| Ok((s, tls?)))
        {
            Ok((stream, tls)) => {
                // Acks are small writes: do not let Nagle hold them back.
                let _ = stream.set_nodelay(true);
                // Close with a reset at the end of the run: 10,000 subscribers closing
                // gracefully would leave 10,000 local ports in TIME_WAIT for a minute, and
                // back-to-back runs would run out of ephemeral ports.
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                sub.stream = Some(stream);
                // The ClientHello goes out on the first writable event.
                sub.tls = tls.map(Box::new);
                self.waiting += 1;
            }
            Err(e) => {
                // The slot stays (tokens are indices), closed from the start.
                sub.stats.closed = Some(format!("connect: {e}"));
                self.shared.failed.fetch_add(1, Ordering::AcqRel);
            }
        }
        self.subs.push(sub);
    }

    fn read(&mut self, i: usize, buf: &mut [u8], plain: &mut [u8]) {
        loop {
            let Some(stream) = self.subs[i].stream.as_mut() else {
                return;
            };
            let n = match stream.read(buf) {
                Ok(0) => {
                    self.close(i, "the broker closed the connection".into());
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.close(i, format!("read: {e}"));
                    return;
                }
            };
            let data = match self.subs[i].tls.as_deref_mut() {
                None => Ok(&buf[..n]),
                Some(tls) => decrypt(tls, &buf[..n], plain).map(|k| &plain[..k]),
            };
            let data = match data {
                Ok(d) => d,
                Err(why) => {
                    self.close(i, why);
                    return;
                }
            };
            let at = Instant::now();
            let was_ready = self.subs[i].stats.ready_at.is_some();
            let ctx = FrameCtx {
                template: self.setup.template.as_deref(),
                book: self.setup.book.as_deref(),
                shared: &self.shared,
                at,
            };
            let Sub {
                decoder,
                out,
                stats,
                ..
            } = &mut self.subs[i];
            let result = &mut self.result;
            let replies = &mut self.replies;
            let decoded = decoder.decode(data, |payload| {
                on_frame(&ctx, payload, out, stats, result, replies);
            });
            if !was_ready && self.subs[i].stats.ready_at.is_some() {
                self.waiting -= 1;
                self.shared.ready.fetch_add(1, Ordering::AcqRel);
            }
            if let Err(e) = decoded {
                self.close(i, format!("framing: {e}"));
                return;
            }
            if n < buf.len() {
                // A short read from a TCP socket drained its receive queue; new data raises a
                // new edge, so the read that would return WouldBlock can be skipped.
                break;
            }
        }
        self.flush(i);
    }

    fn flush(&mut self, i: usize) {
        let sub = &mut self.subs[i];
        let Some(stream) = sub.stream.as_mut() else {
            return;
        };
        if let Some(tls) = sub.tls.as_deref_mut() {
            if let Err(why) = flush_tls(tls, stream, &sub.out, &mut sub.out_pos) {
                self.close(i, why);
                return;
            }
        } else {
            self.flush_plain(i);
            return;
        }
        let sub = &mut self.subs[i];
        if sub.out_pos == sub.out.len() {
            sub.out.clear();
            sub.out_pos = 0;
        } else if sub.out.len() - sub.out_pos > OUT_MAX {
            self.close(
                i,
                format!("the broker stopped reading: over {OUT_MAX} bytes of replies queued"),
            );
        }
    }

    fn flush_plain(&mut self, i: usize) {
        let sub = &mut self.subs[i];
        let Some(stream) = sub.stream.as_mut() else {
            return;
        };
        while sub.out_pos < sub.out.len() {
            match stream.write(&sub.out[sub.out_pos..]) {
                Ok(0) => {
                    self.close(i, "write returned 0".into());
                    return;
                }
                Ok(n) => sub.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.close(i, format!("write: {e}"));
                    return;
                }
            }
        }
        if sub.out_pos == sub.out.len() {
            sub.out.clear();
            sub.out_pos = 0;
        } else if sub.out.len() - sub.out_pos > OUT_MAX {
            self.close(
                i,
                format!("the broker stopped reading: over {OUT_MAX} bytes of replies queued"),
            );
        }
    }

    fn close(&mut self, i: usize, why: String) {
        let sub = &mut self.subs[i];
        if sub.stream.take().is_none() {
            return;
        }
        sub.stats.closed = Some(why);
        if sub.stats.ready_at.is_none() {
            self.waiting -= 1;
            self.shared.failed.fetch_add(1, Ordering::AcqRel);
        } else {
            self.shared.dropped.fetch_add(1, Ordering::AcqRel);
            if let Some(book) = &self.setup.book {
                book.abort();
            }
        }
    }
}

/// Feeds `ciphertext` (one socket read) to `tls` and copies the plaintext it yields into
/// `plain`; returns its length. `plain` holds more than one read buffer plus one record.
fn decrypt(
    tls: &mut ClientConnection,
    ciphertext: &[u8],
    plain: &mut [u8],
) -> Result<usize, String> {
    let mut rest = ciphertext;
    let mut filled = 0;
    while !rest.is_empty() {
        tls.read_tls(&mut rest)
            .map_err(|e| format!("TLS read: {e}"))?;
        tls.process_new_packets().map_err(|e| format!("TLS: {e}"))?;
        loop {
            match tls.reader().read(&mut plain[filled..]) {
                Ok(0) => break,
                Ok(k) => filled += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("TLS: {e}")),
            }
            if filled == plain.len() {
                return Err("TLS: more plaintext than ciphertext in one read".into());
            }
        }
    }
    Ok(filled)
}

/// Hands the queued plaintext (`out[*pos..]`) to `tls` as far as its buffer takes it, then
/// writes the ciphertext (handshake messages included) until the socket would block.
fn flush_tls(
    tls: &mut ClientConnection,
    stream: &mut TcpStream,
    out: &[u8],
    pos: &mut usize,
) -> Result<(), String> {
    loop {
        if *pos < out.len() && !tls.is_handshaking() {
            let k = tls
                .writer()
                .write(&out[*pos..])
                .map_err(|e| format!("TLS write: {e}"))?;
            *pos += k;
        }
        if !tls.wants_write() {
            return Ok(());
        }
        match tls.write_tls(stream) {
            Ok(0) => return Err("write returned 0".into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("write: {e}")),
        }
    }
}

/// Handles one frame from the broker: counts it and queues the answer.
fn on_frame(
    ctx: &FrameCtx<'_>,
    payload: &[u8],
    out: &mut Vec<u8>,
    stats: &mut SubStats,
    result: &mut ThreadResult,
    replies: &mut Replies,
) {
    if stats.ready_at.is_none() {
        stats.ready_at = Some(ctx.at);
        stats.last_keepalive = Some(ctx.at);
    }
    match peek(payload) {
        Peek::Event { ivorn } => {
            let seq = ctx.template.map(|t| t.seq_of(ivorn));
            if seq.is_some_and(|n| n.is_none()) {
                stats.foreign += 1;
            } else {
                stats.events += 1;
                ctx.shared.deliveries.fetch_add(1, Ordering::Relaxed);
                result.first_delivery.get_or_insert(ctx.at);
                result.last_delivery = Some(ctx.at);
                let book = ctx.book.zip(seq.flatten());
                if let Some(lat) = book.and_then(|(b, n)| b.deliver(n, ctx.at)) {
                    result.latencies.push(lat);
                }
            }
            // The IVORN is echoed as written; this run's IVORNs need no unescaping.
            match std::str::from_utf8(ivorn) {
                Ok(ivorn) if !ivorn.is_empty() => {
                    replies.ack(ivorn, out);
                }
                _ => stats.unparsable += 1,
            }
        }
        Peek::Transport => match message::parse(payload, &ParseLimits::default()) {
            Ok(Message::Transport(t)) if t.role == TransportRole::IamAlive => {
                stats.iamalives += 1;
                if let Some(last) = stats.last_keepalive {
                    let gap = ctx.at.saturating_duration_since(last);
                    stats.keepalive_gap_max = stats.keepalive_gap_max.max(gap);
                }
                stats.last_keepalive = Some(ctx.at);
                replies.iamalive(&t.origin, out);
            }
            Ok(Message::Transport(t)) if t.role == TransportRole::Authenticate => {}
            _ => stats.unparsable += 1,
        },
        Peek::Other => stats.unparsable += 1,
    }
}
