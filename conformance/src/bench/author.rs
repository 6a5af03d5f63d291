//! Authors: blocking threads, one TCP connection per event (as comet-sendvo and `vtp send`
//! do), or one long stream of frames without receipts (for the null relay).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vtp_core::message::{self, Message, ParseLimits, TransportRole};

use super::sign::SignedEvents;
use super::{Book, EventTemplate, FRAME_MAX};

/// How the authors submit.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The broker's receive address.
    pub(crate) addr: SocketAddr,
    /// Events to submit, numbered `0..events`.
    pub(crate) events: u64,
    /// Concurrent author threads (ignored with `stream`: one).
    pub(crate) authors: usize,
    /// Events per second over all authors; `None`: as fast as receipts (and the window) allow.
    pub(crate) rate: Option<f64>,
    /// Event `n` is submitted only once event `n - window` reached every subscriber.
    pub(crate) window: Option<u64>,
    /// One connection, frames back to back, no receipts (the null relay answers nothing).
    pub(crate) stream: bool,
    /// Bound on each connect and on each receipt, and on the whole run.
    pub(crate) timeout: Duration,
    /// Each event's signature, made before the run: event `n` is submitted with it appended
    /// by the convention.
    pub(crate) signed: Option<Arc<SignedEvents>>,
}

/// What the authors saw.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Events answered with an ack whose `Origin` is the event's IVORN.
    pub(crate) acked: u64,
    /// Events answered with a nak.
    pub(crate) naked: u64,
    /// Events written on the stream (stream mode).
    pub(crate) streamed: u64,
    /// Submissions that failed otherwise (connect, write, no receipt, bad receipt).
    pub(crate) failed: u64,
    /// The first nak reason and the first failure, for the report.
    pub(crate) first_nak: Option<String>,
    pub(crate) first_failure: Option<String>,
    /// Receipt latency of each acked submission (connect to receipt).
    pub(crate) receipt_latencies: Vec<Duration>,
    /// Start of the first submission and end of the last.
    pub(crate) first_start: Option<Instant>,
    pub(crate) last_end: Option<Instant>,
}

impl Outcome {
    fn merge(&mut self, other: Self) {
        self.acked += other.acked;
        self.naked += other.naked;
        self.streamed += other.streamed;
        self.failed += other.failed;
        self.first_nak = self.first_nak.take().or(other.first_nak);
        self.first_failure = self.first_failure.take().or(other.first_failure);
        self.receipt_latencies.extend(other.receipt_latencies);
        self.first_start = min_opt(self.first_start, other.first_start);
        self.last_end = self.last_end.max(other.last_end);
    }

    fn fail(&mut self, why: String) {
        self.failed += 1;
        self.first_failure.get_or_insert(why);
    }
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Runs the plan to completion (or its timeout) on `authors` threads.
///
/// `book`, when given, gets each event's submission start and provides the window.
pub(crate) fn run(plan: &Plan, template: &Arc<EventTemplate>, book: Option<&Arc<Book>>) -> Outcome {
    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let deadline = t0 + plan.timeout;
    let threads = if plan.stream { 1 } else { plan.authors.max(1) };
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let plan = plan.clone();
            let template = Arc::clone(template);
            let book = book.cloned();
            let next = Arc::clone(&next);
            std::thread::Builder::new()
                .name(format!("author {i}"))
                .spawn(move || {
                    let ctx = Ctx {
                        plan: &plan,
                        template: &template,
                        book: book.as_deref(),
                        next: &next,
                        t0,
                        deadline,
                    };
                    if plan.stream {
                        ctx.stream()
                    } else {
                        ctx.submit_loop()
                    }
                })
        })
        .collect();
    let mut total = Outcome::default();
    for h in handles {
        match h {
            Ok(h) => match h.join() {
                Ok(o) => total.merge(o),
                Err(_) => total.fail("an author thread panicked".into()),
            },
            Err(e) => total.fail(format!("cannot start an author thread: {e}")),
        }
    }
    total
}

struct Ctx<'a> {
    plan: &'a Plan,
    template: &'a EventTemplate,
    book: Option<&'a Book>,
    next: &'a AtomicU64,
    t0: Instant,
    deadline: Instant,
}

impl Ctx<'_> {
    /// Takes the next event number, waits for its slot (rate) and the window; None when done
    /// or out of time.
    fn next_event(&self, out: &mut Outcome) -> Option<u64> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if n >= self.plan.events {
            return None;
        }
        if let Some(rate) = self.plan.rate {
            let slot = self.t0 + Duration::from_secs_f64(n as f64 / rate);
            let now = Instant::now();
            if slot > self.deadline {
                return None;
            }
            if slot > now {
                std::thread::sleep(slot - now);
            }
        }
        if let (Some(w), Some(book)) = (self.plan.window, self.book)
            && n >= w
        {
            let arrived = book.wait_until(self.deadline, || {
                book.is_complete(n - w) || book.is_aborted()
            });
            if !arrived || book.is_aborted() {
                out.fail(format!(
                    "event {} did not reach every subscriber (a subscriber was dropped, or the \
                     broker stalled past the run's timeout)",
                    n - w
                ));
                // Stop every author: the run cannot complete.
                self.next.store(self.plan.events, Ordering::Relaxed);
                return None;
            }
        }
        (Instant::now() < self.deadline).then_some(n)
    }

    /// Writes event `n` into `frame` (signed with `--sign-key`; `scratch` holds the unsigned
    /// event meanwhile) and records its submission start (now).
    fn begin(
        &self,
        n: u64,
        frame: &mut Vec<u8>,
        scratch: &mut Vec<u8>,
        out: &mut Outcome,
    ) -> Result<Instant, String> {
        match &self.plan.signed {
            Some(signed) => signed.write(self.template, n, scratch, frame)?,
            None => self.template.write(n, frame),
        }
        let start = Instant::now();
        if let Some(book) = self.book {
            book.start(n, start);
        }
        out.first_start = min_opt(out.first_start, Some(start));
        Ok(start)
    }

    fn submit_loop(&self) -> Outcome {
        let mut out = Outcome::default();
        let mut frame = Vec::with_capacity(self.template.frame_len());
        let mut scratch = Vec::new();
        let mut reply = Vec::with_capacity(1024);
        while let Some(n) = self.next_event(&mut out) {
            let start = match self.begin(n, &mut frame, &mut scratch, &mut out) {
                Ok(start) => start,
                Err(e) => {
                    out.fail(e);
                    continue;
                }
            };
            match self.submit_one(&frame, &mut reply) {
                Ok(received) => match receipt(&reply, &self.template.ivorn(n)) {
                    Receipt::Ack => {
                        out.acked += 1;
                        out.receipt_latencies
                            .push(received.saturating_duration_since(start));
                    }
                    Receipt::Nak(reason) => {
                        out.naked += 1;
                        out.first_nak.get_or_insert(reason);
                    }
                    Receipt::Bad(why) => out.fail(why),
                },
                Err(e) => out.fail(e),
            }
            out.last_end = Some(Instant::now());
        }
        out
    }

    /// Connects, writes the event, reads one frame into `reply`; returns when it was read.
    fn submit_one(&self, frame: &[u8], reply: &mut Vec<u8>) -> Result<Instant, String> {
        let mut s = TcpStream::connect_timeout(&self.plan.addr, self.plan.timeout)
            .map_err(|e| format!("connect to {}: {e}", self.plan.addr))?;
        s.set_nodelay(true)
            .map_err(|e| format!("set_nodelay: {e}"))?;
        s.set_read_timeout(Some(self.plan.timeout))
            .map_err(|e| format!("set_read_timeout: {e}"))?;
        s.write_all(frame).map_err(|e| format!("write: {e}"))?;
        let mut prefix = [0u8; 4];
        s.read_exact(&mut prefix)
            .map_err(|e| format!("no receipt: {}", describe(&e)))?;
        let len = u32::from_be_bytes(prefix);
        if len > FRAME_MAX {
            return Err(format!("receipt frame prefix of {len} bytes"));
        }
        reply.clear();
        reply.resize(len as usize, 0);
        s.read_exact(reply)
            .map_err(|e| format!("receipt cut short: {}", describe(&e)))?;
        let received = Instant::now();
        // Let the broker close first (vtp and Comet close right after the receipt), so that
        // TIME_WAIT stays on its side and thousands of submissions do not use up local ports.
        // Anything but a prompt EOF is ignored: the receipt is what counts.
        let _ = s.set_read_timeout(Some(CLOSE_WAIT));
        let _ = s.read(&mut prefix);
        Ok(received)
    }

    /// One connection, every event written back to back; nothing is read.
    fn stream(&self) -> Outcome {
        let mut out = Outcome::default();
        let mut s = match TcpStream::connect_timeout(&self.plan.addr, self.plan.timeout) {
            Ok(s) => s,
            Err(e) => {
                out.fail(format!("connect to {}: {e}", self.plan.addr));
                return out;
            }
        };
        if let Err(e) = s
            .set_nodelay(true)
            .and_then(|()| s.set_write_timeout(Some(self.plan.timeout)))
        {
            out.fail(format!("socket options: {e}"));
            return out;
        }
        let mut frame = Vec::with_capacity(self.template.frame_len());
        let mut scratch = Vec::new();
        while let Some(n) = self.next_event(&mut out) {
            if let Err(e) = self.begin(n, &mut frame, &mut scratch, &mut out) {
                out.fail(e);
                break;
            }
            if let Err(e) = s.write_all(&frame) {
                out.fail(format!("stream write: {e}"));
                break;
            }
            out.streamed += 1;
            out.last_end = Some(Instant::now());
        }
        out
    }
}

/// How long an author waits for the broker to close after the receipt before closing itself.
const CLOSE_WAIT: Duration = Duration::from_millis(200);

fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => "the broker closed the connection".into(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "timed out".into(),
        _ => e.to_string(),
    }
}

enum Receipt {
    Ack,
    Nak(String),
    Bad(String),
}

fn receipt(payload: &[u8], ivorn: &[u8]) -> Receipt {
    match message::parse(payload, &ParseLimits::default()) {
        Ok(Message::Transport(t)) => {
            if t.origin.as_bytes() != ivorn {
                return Receipt::Bad(format!(
                    "receipt Origin {:?} is not the event's IVORN {:?}",
                    t.origin,
                    String::from_utf8_lossy(ivorn)
                ));
            }
            match t.role {
                TransportRole::Ack => Receipt::Ack,
                TransportRole::Nak => Receipt::Nak(
                    t.result
                        .map_or_else(|| "(no reason)".to_owned(), |r| r.into_owned()),
                ),
                other => Receipt::Bad(format!(
                    "a Transport {} instead of a receipt",
                    other.as_str()
                )),
            }
        }
        Ok(_) => Receipt::Bad("a VOEvent instead of a receipt".into()),
        Err(e) => Receipt::Bad(format!("unparsable receipt: {e}")),
    }
}
