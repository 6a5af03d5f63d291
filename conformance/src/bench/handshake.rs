//! The `handshake` mode: N connections to the broker's broadcast address from C blocking
//! threads. Each is a TCP connect, a full TLS handshake (with `--tls-ca`; a plain connect
//! without it, the baseline), and the broker's first frame (its `authenticate`: the broker has
//! finished the handshake and admitted the subscriber), then a reset (no TIME_WAIT, so that
//! thousands of connections do not use up local ports).

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls::StreamOwned;

use super::FRAME_MAX;
use super::tls::TlsClient;

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The broker's broadcast address.
    pub(crate) addr: SocketAddr,
    /// Connections in all.
    pub(crate) connections: u64,
    /// Threads, each with one connection at a time.
    pub(crate) concurrency: usize,
    /// TLS, or plain TCP when `None`.
    pub(crate) tls: Option<TlsClient>,
    /// Bound on each connection, and on the whole run.
    pub(crate) timeout: Duration,
}

/// What the threads saw.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Connections that got the broker's first frame.
    pub(crate) done: u64,
    /// Connections that failed (connect, handshake, no frame).
    pub(crate) failed: u64,
    pub(crate) first_failure: Option<String>,
    /// Connect to first frame, per successful connection.
    pub(crate) latencies: Vec<Duration>,
    /// Start of the first connection and end of the last.
    pub(crate) first_start: Option<Instant>,
    pub(crate) last_end: Option<Instant>,
}

/// Runs the plan on `concurrency` threads.
pub(crate) fn run(plan: &Plan) -> Outcome {
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + plan.timeout;
    let handles: Vec<_> = (0..plan.concurrency.max(1))
        .map(|i| {
            let plan = plan.clone();
            let next = Arc::clone(&next);
            std::thread::Builder::new()
                .name(format!("handshake {i}"))
                .spawn(move || {
                    let mut out = Outcome::default();
                    while next.fetch_add(1, Ordering::Relaxed) < plan.connections
                        && Instant::now() < deadline
                    {
                        let start = Instant::now();
                        out.first_start.get_or_insert(start);
                        match one(&plan) {
                            Ok(()) => {
                                out.done += 1;
                                out.latencies.push(start.elapsed());
                            }
                            Err(e) => {
                                out.failed += 1;
                                out.first_failure.get_or_insert(e);
                            }
                        }
                        out.last_end = Some(Instant::now());
                    }
                    out
                })
        })
        .collect();
    let mut total = Outcome::default();
    for h in handles {
        let o = match h.map(std::thread::JoinHandle::join) {
            Ok(Ok(o)) => o,
            Ok(Err(_)) => fail("a handshake thread panicked".into()),
            Err(e) => fail(format!("cannot start a handshake thread: {e}")),
        };
        total.done += o.done;
        total.failed += o.failed;
        total.first_failure = total.first_failure.take().or(o.first_failure);
        total.latencies.extend(o.latencies);
        total.first_start = match (total.first_start, o.first_start) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        total.last_end = total.last_end.max(o.last_end);
    }
    total
}

fn fail(why: String) -> Outcome {
    Outcome {
        failed: 1,
        first_failure: Some(why),
        ..Outcome::default()
    }
}

/// One connection: connect, handshake, first frame, reset.
fn one(plan: &Plan) -> Result<(), String> {
    let tcp = TcpStream::connect_timeout(&plan.addr, plan.timeout)
        .map_err(|e| format!("connect to {}: {e}", plan.addr))?;
    let options = tcp
        .set_nodelay(true)
        .and_then(|()| tcp.set_read_timeout(Some(plan.timeout)))
        .and_then(|()| tcp.set_write_timeout(Some(plan.timeout)))
        .and_then(|()| socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO)));
    options.map_err(|e| format!("socket options: {e}"))?;
    match &plan.tls {
        None => first_frame(tcp),
        // The handshake runs inside the first read.
        Some(tls) => first_frame(StreamOwned::new(tls.connection()?, tcp)),
    }
}

fn first_frame(mut s: impl Read) -> Result<(), String> {
    let mut prefix = [0u8; 4];
    s.read_exact(&mut prefix).map_err(|e| describe(&e))?;
    let len = u32::from_be_bytes(prefix);
    if len > FRAME_MAX {
        return Err(format!("first frame prefix of {len} bytes"));
    }
    let mut frame = vec![0u8; len as usize];
    s.read_exact(&mut frame).map_err(|e| describe(&e))
}

fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => "the broker closed the connection".into(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "timed out".into(),
        io::ErrorKind::InvalidData => format!("TLS: {e}"),
        _ => e.to_string(),
    }
}
