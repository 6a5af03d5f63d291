//! vtp in one blocking mio poll loop: moves bytes and timers for a [`vtp_core::Node`], with no
//! async runtime anywhere.
//!
//! [`run`] owns the node (through a [`Driver`]) and every socket on the calling thread. Each
//! iteration it polls the shutdown future, wakes the driver ([`Driver::handle_wakeup`]: durable
//! records, due timers), flushes the connections with queued output, opens requested dials,
//! then sleeps in [`mio::Poll::poll`] until a socket is ready,
//! the next timer is due or the [`mio::Waker`] fires. No protocol rule and no XML lives here.
//!
//! - **Reads** are edge-triggered and drained until `WouldBlock`, but at most
//!   [`READS_PER_WAKE`] reads of [`Options::read_chunk`] bytes (256 KiB by default) per
//!   connection per wake-up: a connection with more to read is re-queued and served after the
//!   others, so one chatty peer cannot starve the rest. At most
//!   [`Options::budget`] readiness events are taken per wake-up; accepts are bounded the same
//!   way.
//! - **Writes** go from each connection's outbox straight into the non-blocking socket
//!   ([`Driver::flush`]). `WRITABLE` interest is registered only while a flush is pending.
//! - **Dials** never block the loop: a host name is resolved on a short-lived helper thread,
//!   which sends the addresses back over a channel and wakes the loop; connecting is a
//!   non-blocking `connect`, completed on `WRITABLE` and checked with `take_error` and
//!   `peer_addr`. Each resolved address is tried in turn. Unix-socket endpoints dial the same
//!   way, without resolution.
//! - **Durability**: the effects get the loop's waker ([`Effects::set_durable_waker`]); the
//!   store wakes the loop after each commit, and every iteration releases the receipts and
//!   forwards the node held for records now durable ([`Driver::handle_durable`]).
//! - **Reload**: a configuration reload ([`vtp_host::reload`], given with
//!   [`Bound::with_reloads`]) is polled once per iteration with the same waker, and applied
//!   before the wake-up's work.
//! - **Shutdown**: the future is polled once per iteration with a [`std::task::Waker`] that
//!   fires the loop's [`mio::Waker`], so any future works (a channel, a signal flag). When it
//!   completes, the node shuts down, what can be written without blocking is written, every
//!   socket is closed and Unix listener files are removed.
//!
//! Handlers and the seen-index store run on their own threads (see `vtp_host::effects`).
//!
//! ```no_run
//! # fn demo() -> std::io::Result<()> {
//! use std::time::{Instant, SystemTime, UNIX_EPOCH};
//! use vtp_core::{Config, ListenerRole, Node, filter::NoFilterEngine};
//! use vtp_core::endpoint::ListenAddr;
//! # struct MyEffects;
//! # impl vtp_core::driver::Effects for MyEffects {
//! #   fn store(&mut self, _: vtp_core::driver::StoreOp) {}
//! #   fn deliver(&mut self, d: vtp_core::Delivery) { println!("{}", d.ivorn) }
//! #   fn event(&mut self, _: vtp_core::Event) {}
//! # }
//! let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
//! let config = Config::new(Some("ivo://example.org/broker".into()));
//! let node = Node::new(config, Box::new(NoFilterEngine), 7, Instant::now(), unix).unwrap();
//! let listeners = vtp_mio::bind(&[
//!     (ListenerRole::Receive, ListenAddr::parse("127.0.0.1:8098").unwrap()),
//!     (ListenerRole::Broadcast, ListenAddr::parse("127.0.0.1:8099").unwrap()),
//! ])?;
//! // Never completes: runs until the process is killed.
//! vtp_mio::run(node, listeners, MyEffects, std::future::pending(), Default::default())?;
//! # Ok(()) }
//! ```
//!
//! # Layering
//!
//! ```text
//! cli  ->  runtime-tokio | runtime-smol | runtime-mio  ->  host  ->  core
//! conformance  ->  core  (no host: the simulator gives the Driver in-memory effects)
//! testkit: helpers for tests only
//! ```
//!
//! This crate is one of the three runtimes: it moves bytes and timers between a mio poll loop
//! and the core's `Driver`, using `vtp-host` for everything else; it decides nothing about the
//! protocol.

#![warn(missing_docs)]

use std::collections::HashMap;
use std::future::Future;
use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::pin::pin;
use std::sync::{Arc, mpsc};
use std::task::{Context, Poll as TaskPoll, Wake};
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use vtp_core::driver::{Driver, Effects, Flush};
use vtp_core::endpoint::DialAddr;
use vtp_core::{CloseReason, ConnId, ListenerRole, Node, Peer};
use vtp_host::net::{ACCEPT_RETRY, AcceptFailures, StdListener};
pub use vtp_host::net::{Bound, Options, bind, bind_endpoints};
use vtp_host::reload::{self, Swap};
use vtp_host::transport::{self, ClientTls, ServerTls, Transport};

/// Most reads (of [`Options::read_chunk`] bytes each) from one connection per wake-up before
/// the others get their turn.
pub const READS_PER_WAKE: usize = 4;

/// Runs `node` on the bound listeners until `shutdown` completes, then closes every connection
/// (flushing what can be flushed without blocking) and returns the effects. Blocks the calling
/// thread; output queued on the node before the call (a submission) is dispatched first.
///
/// # Errors
///
/// Only if the poller cannot be created, a listener cannot be registered, or polling itself
/// fails; peer errors never end the loop.
pub fn run<E: Effects>(
    node: Node,
    mut bound: Bound,
    mut fx: E,
    shutdown: impl Future<Output = ()>,
    options: Options,
) -> io::Result<E> {
    let poll = Poll::new()?;
    let waker = Arc::new(LoopWaker(mio::Waker::new(poll.registry(), WAKER)?));
    let mut listeners = Vec::new();
    let reloads = bound.take_reloads();
    let externals = bound.take_externals();
    let (bound, client_tls) = bound.into_parts();
    for (i, l) in bound.into_iter().enumerate() {
        let (role, tls) = (l.role, l.tls);
        let (mut listener, path) = match l.listener {
            StdListener::Tcp(l) => (Listener::Tcp(TcpListener::from_std(l)), None),
            StdListener::Unix(l, p) => (Listener::Unix(UnixListener::from_std(l)), Some(p)),
        };
        let source: &mut dyn Source = match &mut listener {
            Listener::Tcp(l) => l,
            Listener::Unix(l) => l,
        };
        poll.registry()
            .register(source, listener_token(i), Interest::READABLE)?;
        listeners.push(ListenerSlot {
            role,
            tls,
            listener,
            path,
            retry_at: None,
            failures: AcceptFailures::default(),
        });
    }
    let (resolved_tx, resolved_rx) = mpsc::channel();
    let mut lp = Loop {
        poll,
        driver: Driver::new(node, options.outbox),
        ios: HashMap::new(),
        listeners,
        again: Vec::new(),
        waker: waker.clone(),
        resolved_tx,
        resolved_rx,
        buf: vec![0; options.read_chunk.max(1)],
        options,
        client_tls,
        tls_dials: HashMap::new(),
    };
    lp.driver.with_node(&mut fx, |_| ());
    let task_waker = std::task::Waker::from(waker);
    fx.set_durable_waker(task_waker.clone());
    let mut cx = Context::from_waker(&task_waker);
    let mut shutdown = pin!(shutdown);
    let mut events = Events::with_capacity(options.budget.max(1));
    loop {
        if shutdown.as_mut().poll(&mut cx).is_ready() {
            break;
        }
        if let Some(r) = &reloads
            && let TaskPoll::Ready(request) = r.poll_next(&mut cx)
        {
            reload::apply(&mut lp.driver, request, Instant::now(), &mut fx);
        }
        // Records of external sources: a batch per turn; with more waiting, the poll below
        // does not block.
        let mut more = false;
        if let Some(inbox) = &externals
            && inbox.poll_ready(&mut cx).is_ready()
        {
            inbox.apply(&mut lp.driver, Instant::now(), &mut fx);
            more = inbox.has_ready();
        }
        lp.settle(&mut fx);
        let timeout = if more {
            Some(Duration::ZERO)
        } else {
            lp.poll_timeout(Instant::now())
        };
        match lp.poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        let again = std::mem::take(&mut lp.again);
        for ev in &events {
            let read = if ev.is_read_closed() || ev.is_error() {
                ReadHint::ToEnd
            } else if ev.is_readable() {
                ReadHint::Data
            } else {
                ReadHint::No
            };
            lp.ready(ev.token(), read, ev.is_writable(), &mut fx);
        }
        for token in again {
            lp.ready(token, ReadHint::ToEnd, false, &mut fx);
        }
    }
    lp.driver.shutdown(Instant::now(), &mut fx);
    lp.flush_writable(&mut fx);
    for slot in &lp.listeners {
        if let Some(p) = &slot.path {
            let _ = std::fs::remove_file(p);
        }
    }
    Ok(fx)
}

/// What a readiness event asks of a connection's read side.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ReadHint {
    /// Nothing to read.
    No,
    /// Data arrived: read until a short read (the socket is then drained; epoll is
    /// edge-triggered, so data arriving later raises a new event). Saves the `EAGAIN` read per
    /// small message (a subscriber's ack) that reading until `WouldBlock` costs.
    Data,
    /// The peer closed, an error is pending, or the source is retried after its budget: read
    /// until `WouldBlock` or end of stream, so the end is seen even when it came with the data.
    ToEnd,
}

const WAKER: Token = Token(usize::MAX);

/// Listener `i` has token `MAX - 1 - i`; connections have their `ConnId` (never reused).
fn listener_token(i: usize) -> Token {
    Token(usize::MAX - 1 - i)
}

fn conn_token(conn: ConnId) -> Token {
    // ConnIds count up from zero; they would reach the listener tokens only after 2^64 - 2
    // connections (on 64-bit targets).
    Token(conn.get() as usize)
}

/// Wakes the poll loop from another thread (a resolver) or from the shutdown future's waker.
struct LoopWaker(mio::Waker);

impl Wake for LoopWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if let Err(e) = self.0.wake() {
            tracing::error!("cannot wake the poll loop: {e}");
        }
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

struct ListenerSlot {
    role: ListenerRole,
    /// For a TLS listener: read at every accept (a reload replaces it).
    tls: Option<Swap<ServerTls>>,
    listener: Listener,
    path: Option<PathBuf>,
    /// Set after an accept error (out of file descriptors...): retry then.
    retry_at: Option<Instant>,
    /// Rate limit of the `accept failed` warning.
    failures: AcceptFailures,
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// Runs `$body` with `$s` bound to the TCP or Unix stream inside `$stream`.
macro_rules! either {
    ($stream:expr, $s:ident => $body:expr) => {
        match $stream {
            Stream::Tcp($s) => $body,
            Stream::Unix($s) => $body,
        }
    };
}

impl Stream {
    fn source(&mut self) -> &mut dyn Source {
        either!(self, s => s)
    }
    /// `Ok(())` once a non-blocking connect completed, `NotConnected` while it is in progress.
    fn connect_result(&self) -> io::Result<()> {
        if let Some(e) = either!(self, s => s.take_error())? {
            return Err(e);
        }
        either!(self, s => s.peer_addr().map(|_| ()))
    }
    fn shutdown_write(&self) {
        let _ = either!(self, s => s.shutdown(Shutdown::Write));
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        either!(self, s => s.read(buf))
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        either!(self, s => s.write(buf))
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        either!(self, s => s.write_vectored(bufs))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The writer of a connection not connected yet: lets the driver perform a pending close while
/// keeping any queued bytes for later.
struct NotYet;

impl Write for NotYet {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Io {
    conn: ConnId,
    stream: Stream,
    transport: Transport,
    /// `Some` while connecting: the addresses to try next (last first).
    dialing: Option<Vec<SocketAddr>>,
    /// `WRITABLE` interest is registered (a flush is pending).
    writable: bool,
    /// The peer finished sending; what is queued for it is still being written.
    read_closed: bool,
}

type Resolved = (ConnId, io::Result<Vec<SocketAddr>>);

struct Loop {
    poll: Poll,
    driver: Driver,
    ios: HashMap<Token, Io>,
    listeners: Vec<ListenerSlot>,
    /// Sources with more to read or accept than one wake-up's budget.
    again: Vec<Token>,
    waker: Arc<LoopWaker>,
    resolved_tx: mpsc::Sender<Resolved>,
    resolved_rx: mpsc::Receiver<Resolved>,
    buf: Vec<u8>,
    options: Options,
    client_tls: Option<Swap<ClientTls>>,
    /// Dials in progress to `tls:` endpoints: the host name the server must prove.
    tls_dials: HashMap<ConnId, String>,
}

impl Loop {
    /// The wake-up (durable records, due timers), accept retries, finished resolutions, then
    /// pending writes and dials.
    fn settle(&mut self, fx: &mut impl Effects) {
        let now = Instant::now();
        self.driver.handle_wakeup(now, fx);
        for (i, slot) in self.listeners.iter_mut().enumerate() {
            if slot.retry_at.is_some_and(|t| t <= now) {
                slot.retry_at = None;
                self.again.push(listener_token(i));
            }
        }
        while let Ok((conn, addrs)) = self.resolved_rx.try_recv() {
            if self.driver.is_open(conn) {
                match addrs {
                    Ok(mut addrs) => {
                        addrs.reverse();
                        self.connect_next(conn, addrs, None, fx);
                    }
                    Err(e) => self.dial_failed(conn, &e, fx),
                }
            }
        }
        // A dial that fails at once is reported inline, which may queue more output.
        loop {
            let mut idle = true;
            while let Some(conn) = self.driver.poll_writable() {
                idle = false;
                self.flush(conn, fx);
            }
            while let Some((conn, addr)) = self.driver.poll_dial() {
                idle = false;
                self.dial(conn, addr, fx);
            }
            if idle {
                break;
            }
        }
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.again.is_empty() {
            return Some(Duration::ZERO);
        }
        let retries = self.listeners.iter().filter_map(|l| l.retry_at);
        let deadline = retries.chain(self.driver.poll_timeout()).min();
        deadline.map(|d| d.saturating_duration_since(now))
    }

    fn ready(&mut self, token: Token, read: ReadHint, writable: bool, fx: &mut impl Effects) {
        let readable = read != ReadHint::No;
        if token == WAKER {
            return;
        }
        if let Some(i) = (usize::MAX - 1).checked_sub(token.0)
            && i < self.listeners.len()
        {
            self.accept(i, fx);
            return;
        }
        let Some(io) = self.ios.get(&token) else {
            return;
        };
        let (conn, dialing) = (io.conn, io.dialing.is_some());
        if dialing {
            if writable || readable {
                self.finish_dial(conn, fx);
            }
            return;
        }
        if writable {
            self.flush(conn, fx);
        }
        if readable {
            self.read(token, read, fx);
        }
    }

    fn accept(&mut self, i: usize, fx: &mut impl Effects) {
        for _ in 0..self.options.budget.max(1) {
            let slot = &mut self.listeners[i];
            let accepted = match &slot.listener {
                Listener::Tcp(l) => l.accept().map(|(s, addr)| {
                    let _ = s.set_nodelay(true);
                    (Stream::Tcp(s), Peer::Tcp(addr))
                }),
                Listener::Unix(l) => l.accept().map(|(s, _)| (Stream::Unix(s), Peer::Local)),
            };
            match accepted {
                Ok((stream, peer)) => {
                    let (role, tls) = (slot.role, slot.tls.as_ref().map(Swap::load));
                    let now = Instant::now();
                    let accepted =
                        transport::accept(&mut self.driver, role, peer, tls.as_ref(), now, fx);
                    if let Some((conn, transport)) = accepted {
                        self.register(conn, stream, transport, None, fx);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Out of file descriptors, typically: this listener waits (every other
                // source is still served) and tries again; the warning is rate-limited.
                Err(e) => {
                    let now = Instant::now();
                    slot.failures.failed(&e, now);
                    slot.retry_at = Some(now + ACCEPT_RETRY);
                    return;
                }
            }
        }
        self.again.push(listener_token(i));
    }

    /// Reads until `WouldBlock` (or a short read, for [`ReadHint::Data`]), end of stream or the
    /// budget.
    fn read(&mut self, token: Token, read: ReadHint, fx: &mut impl Effects) {
        let mut reads = 0;
        while let Some(io) = self.ios.get_mut(&token) {
            let conn = io.conn;
            if io.read_closed {
                return;
            }
            match io.stream.read(&mut self.buf) {
                Ok(0) => {
                    // End of stream: a receipt already queued is still written (half-close).
                    if io.transport.eof(&mut self.driver, conn, Instant::now(), fx) {
                        drop(self.remove(token));
                    } else {
                        io.read_closed = true;
                    }
                    return;
                }
                Ok(n) => {
                    let drained = n < self.buf.len() && read == ReadHint::Data;
                    let now = Instant::now();
                    match io
                        .transport
                        .input(&mut self.driver, conn, &self.buf[..n], now, fx)
                    {
                        Ok(false) => {}
                        // A handshake message to send.
                        Ok(true) => self.flush(conn, fx),
                        Err(()) => {
                            io.transport.flush_final(&mut io.stream);
                            drop(self.remove(token));
                            return;
                        }
                    }
                    if drained {
                        return;
                    }
                    reads += 1;
                    if reads >= READS_PER_WAKE {
                        self.again.push(token);
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        // A read error (a connection closed meanwhile was removed: no-op).
        if let Some(io) = self.remove(token) {
            let conn = io.conn;
            drop(io);
            self.driver
                .handle_closed(conn, CloseReason::PeerClosed, Instant::now(), fx);
        }
    }

    fn flush_writable(&mut self, fx: &mut impl Effects) {
        while let Some(conn) = self.driver.poll_writable() {
            self.flush(conn, fx);
        }
    }

    fn flush(&mut self, conn: ConnId, fx: &mut impl Effects) {
        let token = conn_token(conn);
        let now = Instant::now();
        let result = match self.ios.get_mut(&token) {
            Some(io) if io.dialing.is_none() => {
                io.transport
                    .flush(&mut self.driver, conn, &mut io.stream, now, fx)
            }
            // Resolving or connecting: only a close can be carried out; bytes wait.
            _ => self.driver.flush(conn, &mut NotYet, now, fx),
        };
        match result {
            Flush::Idle => self.set_writable(token, false, fx),
            Flush::Pending => self.set_writable(token, true, fx),
            Flush::Close(_) => {
                self.tls_dials.remove(&conn);
                if let Some(io) = self.remove(token) {
                    io.stream.shutdown_write();
                }
            }
        }
    }

    /// Registers or drops `WRITABLE` interest on an open connection.
    fn set_writable(&mut self, token: Token, on: bool, fx: &mut impl Effects) {
        let Some(io) = self.ios.get_mut(&token) else {
            return;
        };
        if io.dialing.is_some() || io.writable == on {
            return;
        }
        let interest = if on {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        io.writable = on;
        let source = io.stream.source();
        if let Err(e) = self.poll.registry().reregister(source, token, interest) {
            self.lost(token, &e, fx);
        }
    }

    fn register(
        &mut self,
        conn: ConnId,
        mut stream: Stream,
        transport: Transport,
        dialing: Option<Vec<SocketAddr>>,
        fx: &mut impl Effects,
    ) {
        let token = conn_token(conn);
        let interest = match dialing {
            Some(_) => Interest::WRITABLE,
            None => Interest::READABLE,
        };
        if let Err(e) = self
            .poll
            .registry()
            .register(stream.source(), token, interest)
        {
            let reason = match dialing {
                Some(_) => CloseReason::connect_failed(&e),
                None => CloseReason::PeerClosed,
            };
            tracing::warn!(%conn, "cannot register the socket: {e}");
            self.driver.handle_closed(conn, reason, Instant::now(), fx);
            return;
        }
        let io = Io {
            conn,
            stream,
            transport,
            dialing,
            writable: false,
            read_closed: false,
        };
        self.ios.insert(token, io);
    }

    /// Forgets a socket the poller failed on, and tells the driver.
    fn lost(&mut self, token: Token, e: &io::Error, fx: &mut impl Effects) {
        if let Some(io) = self.remove(token) {
            tracing::warn!(conn = %io.conn, "socket dropped: poller error: {e}");
            self.driver
                .handle_closed(io.conn, CloseReason::PeerClosed, Instant::now(), fx);
        }
    }

    fn remove(&mut self, token: Token) -> Option<Io> {
        let mut io = self.ios.remove(&token)?;
        let _ = self.poll.registry().deregister(io.stream.source());
        Some(io)
    }

    fn dial(&mut self, conn: ConnId, addr: DialAddr, fx: &mut impl Effects) {
        let (host, port) = match addr {
            DialAddr::Tcp { host, port } => (host, port),
            DialAddr::Tls { host, port } => {
                self.tls_dials.insert(conn, host.clone());
                (host, port)
            }
            DialAddr::Unix(path) => {
                match UnixStream::connect(&path) {
                    Ok(s) => {
                        let plain = Transport::Plain;
                        self.register(conn, Stream::Unix(s), plain, Some(Vec::new()), fx);
                    }
                    Err(e) => self.dial_failed(conn, &e, fx),
                }
                return;
            }
            other => {
                let e = io::Error::new(io::ErrorKind::Unsupported, format!("cannot dial {other}"));
                return self.dial_failed(conn, &e, fx);
            }
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.connect_next(conn, vec![SocketAddr::new(ip, port)], None, fx);
        }
        let (tx, waker) = (self.resolved_tx.clone(), self.waker.clone());
        let spawned = std::thread::Builder::new()
            .name("vtp-resolve".into())
            .spawn(move || {
                let addrs = (host.as_str(), port)
                    .to_socket_addrs()
                    .map(Iterator::collect);
                if tx.send((conn, addrs)).is_ok() {
                    waker.wake_by_ref();
                }
            });
        if let Err(e) = spawned {
            self.dial_failed(conn, &e, fx);
        }
    }

    /// Starts connecting to the last of `addrs`; reports the dial failed when none is left.
    fn connect_next(
        &mut self,
        conn: ConnId,
        mut addrs: Vec<SocketAddr>,
        mut last: Option<io::Error>,
        fx: &mut impl Effects,
    ) {
        while let Some(addr) = addrs.pop() {
            match TcpStream::connect(addr) {
                Ok(s) => {
                    let plain = Transport::Plain;
                    return self.register(conn, Stream::Tcp(s), plain, Some(addrs), fx);
                }
                Err(e) => last = Some(e),
            }
        }
        let e = last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the host name has no address")
        });
        self.dial_failed(conn, &e, fx);
    }

    /// A connecting socket became writable (or failed).
    fn finish_dial(&mut self, conn: ConnId, fx: &mut impl Effects) {
        let token = conn_token(conn);
        let Some(io) = self.ios.get_mut(&token) else {
            return;
        };
        match io.stream.connect_result() {
            Ok(()) => {
                let tls_host = self.tls_dials.remove(&conn);
                let config = self.client_tls.as_ref().map(Swap::load);
                match transport::dial(tls_host.as_deref(), config.as_ref()) {
                    Ok(t) => io.transport = t,
                    Err(e) => {
                        drop(self.remove(token));
                        return self.dial_failed(conn, &e, fx);
                    }
                }
                io.dialing = None;
                if let Stream::Tcp(s) = &io.stream {
                    let _ = s.set_nodelay(true);
                }
                let source = io.stream.source();
                let reregistered =
                    self.poll
                        .registry()
                        .reregister(source, token, Interest::READABLE);
                match reregistered {
                    Ok(()) => {
                        if let Some(io) = self.ios.get_mut(&token) {
                            io.transport
                                .connected(&mut self.driver, conn, Instant::now(), fx);
                        }
                        // Bytes queued while connecting, or a TLS ClientHello.
                        self.flush(conn, fx);
                    }
                    Err(e) => self.lost(token, &e, fx),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
            Err(e) => {
                let rest = self.remove(token).and_then(|io| io.dialing);
                self.connect_next(conn, rest.unwrap_or_default(), Some(e), fx);
            }
        }
    }

    fn dial_failed(&mut self, conn: ConnId, e: &io::Error, fx: &mut impl Effects) {
        self.tls_dials.remove(&conn);
        let reason = CloseReason::connect_failed(e);
        self.driver.handle_closed(conn, reason, Instant::now(), fx);
    }
}
