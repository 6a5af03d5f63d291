//! The owner loop every async runtime shares: tokio, smol, or your own.
//!
//! A runtime crate implements [`AsyncRuntime`] (spawn, sleep, listen, accept, connect) and
//! [`AsyncStream`] (readiness and non-blocking reads and writes), a few lines each; [`run`] does
//! everything else, once:
//!
//! - the node and its [`Driver`] live in one owner future, [`run`], which holds all protocol
//!   state and is never shared;
//! - around it, small tasks only move bytes: one accept loop per listener, one reader per
//!   connection, one dial per outgoing connection, and one waiter per connection whose socket
//!   buffer is full. Each sends a message to the owner over one bounded channel, so a flood of
//!   input slows the readers, never grows memory;
//! - the owner handles at most [`Options::budget`] messages per wake-up, then wakes the driver
//!   ([`Driver::handle_wakeup`]: durable records, due timers), writes what the node queued and
//!   starts the dials it asked for;
//! - writes happen in the owner with [`AsyncStream::try_write_vectored`] straight from each
//!   connection's outbox; a socket that is full gets a waiter task and no further write until
//!   it is writable again;
//! - a read goes into a reused buffer (one allocation per several reads at most) and is handed
//!   to the owner as [`Bytes`] without copying;
//! - the timer is re-armed only when the node's deadline changes;
//! - a configuration reload ([`crate::reload`], given with [`Bound::with_reloads`]) is awaited
//!   beside the shutdown and the messages, and applied in the owner between two batches;
//! - the effects get a waker ([`Effects::set_durable_waker`]) that sends the owner a message
//!   when the store has committed, so receipts held for durable records go out at once;
//! - at shutdown the accept loops stop, the node closes every connection, what can be written
//!   without waiting is written, every task is cancelled (a [`AsyncRuntime::Task`] cancels its
//!   task when dropped) and the Unix socket files the listeners created are removed.
//!
//! No protocol rule and no XML lives here: that is [`vtp_core`].

use std::collections::HashMap;
use std::future::{Future, pending};
use std::io::{self, IoSlice, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use async_channel::{Receiver, Sender};
use bytes::{Bytes, BytesMut};
use futures_lite::future;
use socket2::SockRef;
use vtp_core::driver::{Driver, Effects, Flush};
use vtp_core::endpoint::DialAddr;
use vtp_core::{CloseReason, ConnId, ListenerRole, Node, Peer};

use crate::net::{ACCEPT_RETRY, AcceptFailures, Bound, Listening, Options, StdListener};
use crate::reload::{self, Request, Swap};
use crate::transport::{self, ClientTls, ServerTls, Transport};

/// What an async runtime provides to [`run`]: tasks, a timer, listeners and dials.
///
/// Implemented on a marker type by each runtime crate (`vtp-tokio`, `vtp-smol`). Every method is
/// a thin call into the runtime; none holds protocol logic.
pub trait AsyncRuntime: 'static {
    /// A connected TCP stream.
    type Tcp: AsyncStream;
    /// A connected Unix-domain stream.
    type Unix: AsyncStream;
    /// A TCP listener registered with the runtime.
    type TcpListener: Send + Sync + 'static;
    /// A Unix-domain listener registered with the runtime.
    type UnixListener: Send + Sync + 'static;
    /// A spawned task; dropping it cancels the task.
    type Task: Send + 'static;

    /// Runs `task` in the background until it ends or the returned handle is dropped.
    fn spawn(task: impl Future<Output = ()> + Send + 'static) -> Self::Task;

    /// Completes at `deadline` (at once if it has passed).
    fn sleep_until(deadline: Instant) -> impl Future<Output = ()> + Send;

    /// Registers a bound, listening, non-blocking std TCP listener.
    ///
    /// # Errors
    ///
    /// The runtime cannot register the socket.
    fn listen_tcp(listener: TcpListener) -> io::Result<Self::TcpListener>;

    /// Registers a bound, listening, non-blocking std Unix-domain listener.
    ///
    /// # Errors
    ///
    /// The runtime cannot register the socket.
    fn listen_unix(listener: UnixListener) -> io::Result<Self::UnixListener>;

    /// Accepts one TCP connection, with the peer's address.
    ///
    /// # Errors
    ///
    /// The accept failed (out of file descriptors, a connection reset before it was accepted);
    /// [`run`] logs it and retries.
    fn accept_tcp(
        listener: &Self::TcpListener,
    ) -> impl Future<Output = io::Result<(Self::Tcp, SocketAddr)>> + Send;

    /// Accepts one Unix-domain connection.
    ///
    /// # Errors
    ///
    /// As [`AsyncRuntime::accept_tcp`].
    fn accept_unix(
        listener: &Self::UnixListener,
    ) -> impl Future<Output = io::Result<Self::Unix>> + Send;

    /// Resolves `host` (a name or an address) and connects to the first address that answers.
    ///
    /// # Errors
    ///
    /// Resolution failed, or every address refused (the last error).
    fn connect_tcp(host: &str, port: u16) -> impl Future<Output = io::Result<Self::Tcp>> + Send;

    /// Connects to a Unix-domain socket.
    ///
    /// # Errors
    ///
    /// The OS error (no such file, nobody listening, permission denied).
    fn connect_unix(path: &Path) -> impl Future<Output = io::Result<Self::Unix>> + Send;
}

/// A connected, non-blocking stream registered with an async runtime.
///
/// The `try_*` methods never wait: they return `WouldBlock` when the socket is empty (read) or
/// full (write), after which the matching readiness future says when to try again.
pub trait AsyncStream: AsFd + Send + Sync + 'static {
    /// Completes when the stream may have bytes to read (or EOF, or an error).
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;

    /// Completes when the stream may accept bytes again.
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send;

    /// Reads into `buf` without waiting; `Ok(0)` is EOF. A read shorter than `buf` drained the
    /// socket: the caller waits for [`AsyncStream::readable`] before reading again, and an
    /// implementation may clear its readiness then (the end of stream must still be reported).
    ///
    /// # Errors
    ///
    /// `WouldBlock` when nothing is there yet; any other error ends the connection.
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;

    /// Writes from `bufs` without waiting, returning how many bytes were taken.
    ///
    /// # Errors
    ///
    /// `WouldBlock` when the socket buffer is full; any other error ends the connection.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}

/// Runs `node` on `R` on the bound listeners until `shutdown` completes, then closes every
/// connection (writing what can be written without waiting) and returns the effects.
///
/// Output the node queued before the call (a submission, a restored seen-index) is dispatched
/// first. Must be polled inside `R`'s context (for tokio: within a runtime).
///
/// # Errors
///
/// Only if a listener cannot be registered with the runtime; peer errors never end the loop.
pub async fn run<R: AsyncRuntime, E: Effects>(
    node: Node,
    mut bound: Bound,
    mut fx: E,
    shutdown: impl Future<Output = ()>,
    options: Options,
) -> io::Result<E> {
    let (tx, rx) = async_channel::bounded(options.channel.max(1));
    let reloads = bound.take_reloads();
    let externals = bound.take_externals();
    let (listeners, client_tls) = bound.into_parts();
    // Unix socket files this broker created, removed when it stops.
    let socket_files: Vec<PathBuf> = listeners
        .iter()
        .filter_map(|l| match &l.listener {
            StdListener::Unix(_, path) => Some(path.clone()),
            StdListener::Tcp(_) => None,
        })
        .collect();
    // Accepted connections not yet handed to the node hold a file descriptor each: at most
    // ACCEPTS_IN_FLIGHT at once, so a flood cannot exhaust the descriptors before the node
    // refuses what is over its limits (each refusal frees a permit at once).
    let (permits, accepted) = async_channel::bounded(ACCEPTS_IN_FLIGHT);
    let accepters = listeners
        .into_iter()
        .map(|l| {
            let permits = (permits.clone(), accepted.clone());
            spawn_accept::<R>(l, tx.clone(), permits)
        })
        .collect::<io::Result<Vec<_>>>()?;
    fx.set_durable_waker(Waker::from(Arc::new(DurableWake(tx.clone()))));
    let mut owner = Owner::<R> {
        driver: Driver::new(node, options.outbox),
        ios: HashMap::new(),
        dials: HashMap::new(),
        tx,
        accepted,
        options,
        client_tls,
    };
    owner.driver.with_node(&mut fx, |_| ());
    owner.settle(&mut fx);
    let mut shutdown = pin!(shutdown);
    let mut timer = pin!(None);
    let mut armed = None;
    loop {
        let deadline = owner.driver.poll_timeout();
        if deadline != armed {
            armed = deadline;
            timer.set(deadline.map(R::sleep_until));
        }
        // Polled in this order: shutdown, reload, messages, external records, then the timer.
        // Records also go in after each batch of messages, so neither starves the other.
        let stop = async {
            shutdown.as_mut().await;
            Wake::Stop
        };
        let reload = async {
            match &reloads {
                Some(r) => Wake::Reload(Box::new(r.next().await)),
                None => pending().await,
            }
        };
        let external = async {
            match &externals {
                Some(inbox) => inbox.ready().await,
                None => pending().await,
            }
            Wake::External
        };
        let message = async { rx.recv().await.map_or(Wake::Stop, Wake::Message) };
        let tick = async {
            match timer.as_mut().as_pin_mut() {
                Some(sleep) => sleep.await,
                None => pending().await,
            }
            Wake::Timer
        };
        let wake = future::or(
            stop,
            future::or(reload, future::or(message, future::or(external, tick))),
        );
        match wake.await {
            Wake::Stop => break,
            Wake::Reload(request) => {
                reload::apply(&mut owner.driver, *request, Instant::now(), &mut fx);
            }
            Wake::External => {
                if let Some(inbox) = &externals {
                    inbox.apply(&mut owner.driver, Instant::now(), &mut fx);
                }
            }
            Wake::Message(msg) => {
                owner.handle_batch(msg, &rx, &mut fx);
                if let Some(inbox) = externals.as_ref().filter(|i| i.has_ready()) {
                    inbox.apply(&mut owner.driver, Instant::now(), &mut fx);
                }
            }
            // A fired sleep is not polled again: some runtimes' sleeps never complete twice.
            Wake::Timer => armed = None,
        }
        owner.settle(&mut fx);
    }
    drop(accepters);
    owner.driver.shutdown(Instant::now(), &mut fx);
    owner.flush_writable(&mut fx);
    for path in &socket_files {
        let _ = std::fs::remove_file(path);
    }
    Ok(fx)
}

/// Most connections accepted but not yet handled by the owner, over every listener.
const ACCEPTS_IN_FLIGHT: usize = 16;

enum Wake<R: AsyncRuntime> {
    Stop,
    Reload(Box<Request>),
    External,
    Message(Msg<R>),
    Timer,
}

/// From the IO tasks to the owner.
enum Msg<R: AsyncRuntime> {
    /// With the listener's TLS configuration as it was at the accept.
    Accepted(ListenerRole, Stream<R>, Peer, Option<ServerTls>),
    Input(ConnId, Bytes),
    Ended(ConnId),
    Writable(ConnId),
    /// A dial finished; with the host name the server must prove, for a TLS dial.
    Dialed(ConnId, io::Result<Stream<R>>, Option<String>),
    /// The store committed: held output may be released (by `settle`).
    Durable,
}

/// Wakes the owner from the store's thread with [`Msg::Durable`].
///
/// If the channel is full the message is dropped: the owner has messages to handle, and it
/// checks durability after every batch anyway.
struct DurableWake<R: AsyncRuntime>(Sender<Msg<R>>);

impl<R: AsyncRuntime> std::task::Wake for DurableWake<R> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let _ = self.0.try_send(Msg::Durable);
    }
}

enum Stream<R: AsyncRuntime> {
    Tcp(R::Tcp),
    Unix(R::Unix),
}

impl<R: AsyncRuntime> Stream<R> {
    async fn readable(&self) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.readable().await,
            Self::Unix(s) => s.readable().await,
        }
    }

    async fn writable(&self) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.writable().await,
            Self::Unix(s) => s.writable().await,
        }
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.try_read(buf),
            Self::Unix(s) => s.try_read(buf),
        }
    }

    fn tcp(s: R::Tcp) -> Self {
        // Frames are written whole; Nagle would only delay acks and iamalives.
        let _ = SockRef::from(&s).set_tcp_nodelay(true);
        Self::Tcp(s)
    }
}

impl<R: AsyncRuntime> AsFd for Stream<R> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Tcp(s) => s.as_fd(),
            Self::Unix(s) => s.as_fd(),
        }
    }
}

/// The non-blocking writer [`Driver::flush`] writes an outbox into.
impl<R: AsyncRuntime> Write for &Stream<R> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_write_vectored(bufs),
            Stream::Unix(s) => s.try_write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Listener<R: AsyncRuntime> {
    Tcp(R::TcpListener),
    Unix(R::UnixListener),
}

impl<R: AsyncRuntime> Listener<R> {
    async fn accept(&self) -> io::Result<(Stream<R>, Peer)> {
        Ok(match self {
            Self::Tcp(l) => {
                let (s, addr) = R::accept_tcp(l).await?;
                (Stream::tcp(s), Peer::Tcp(addr))
            }
            Self::Unix(l) => (Stream::Unix(R::accept_unix(l).await?), Peer::Local),
        })
    }
}

/// The accept loop of one listener. Before each accept it takes a permit (sends into
/// `permits`, waiting while [`ACCEPTS_IN_FLIGHT`] accepted connections are not handled yet);
/// the owner gives it back (receives) when it handles the connection, the loop itself when the
/// accept fails.
fn spawn_accept<R: AsyncRuntime>(
    l: Listening,
    tx: Sender<Msg<R>>,
    permits: (Sender<()>, Receiver<()>),
) -> io::Result<R::Task> {
    let Listening {
        role,
        listener,
        tls,
    } = l;
    let listener = match listener {
        StdListener::Tcp(l) => Listener::<R>::Tcp(R::listen_tcp(l)?),
        StdListener::Unix(l, _path) => Listener::Unix(R::listen_unix(l)?),
    };
    Ok(R::spawn(async move {
        let mut failures = AcceptFailures::default();
        loop {
            if permits.0.send(()).await.is_err() {
                return;
            }
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let msg = Msg::Accepted(role, stream, peer, tls.as_ref().map(Swap::load));
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
                // Out of file descriptors, typically: this task pauses (the others go on)
                // and tries again; the warning is rate-limited.
                Err(e) => {
                    let _ = permits.1.try_recv();
                    let now = Instant::now();
                    failures.failed(&e, now);
                    R::sleep_until(now + ACCEPT_RETRY).await;
                }
            }
        }
    }))
}

/// A connection's IO tasks; dropping it cancels them.
struct Io<R: AsyncRuntime> {
    stream: Arc<Stream<R>>,
    transport: Transport,
    _reader: R::Task,
    waiter: Option<R::Task>,
}

struct Owner<R: AsyncRuntime> {
    driver: Driver,
    ios: HashMap<ConnId, Io<R>>,
    dials: HashMap<ConnId, R::Task>,
    tx: Sender<Msg<R>>,
    /// Permits of the accept loops: one is taken back per accepted connection handled.
    accepted: Receiver<()>,
    options: Options,
    client_tls: Option<Swap<ClientTls>>,
}

impl<R: AsyncRuntime> Owner<R> {
    /// `first`, then up to the budget of messages already queued.
    fn handle_batch(&mut self, first: Msg<R>, rx: &Receiver<Msg<R>>, fx: &mut impl Effects) {
        self.handle(first, fx);
        for _ in 1..self.options.budget {
            match rx.try_recv() {
                Ok(msg) => self.handle(msg, fx),
                Err(_) => break,
            }
        }
    }

    fn handle(&mut self, msg: Msg<R>, fx: &mut impl Effects) {
        let now = Instant::now();
        match msg {
            Msg::Accepted(role, stream, peer, tls) => {
                let _ = self.accepted.try_recv();
                let accepted =
                    transport::accept(&mut self.driver, role, peer, tls.as_ref(), now, fx);
                if let Some((conn, transport)) = accepted {
                    self.register(conn, stream, transport);
                }
            }
            Msg::Input(conn, bytes) => {
                let Some(io) = self.ios.get_mut(&conn) else {
                    return;
                };
                match io.transport.input(&mut self.driver, conn, &bytes, now, fx) {
                    Ok(false) => {}
                    // A handshake message to send.
                    Ok(true) => self.flush(conn, fx),
                    Err(()) => {
                        io.transport.flush_final(&mut &*io.stream);
                        let _ = SockRef::from(&*io.stream).shutdown(Shutdown::Both);
                        self.ios.remove(&conn);
                    }
                }
            }
            // End of stream: a receipt already queued is still written (half-close).
            Msg::Ended(conn) => {
                let Some(io) = self.ios.get_mut(&conn) else {
                    return;
                };
                if io.transport.eof(&mut self.driver, conn, now, fx) {
                    self.ios.remove(&conn);
                }
            }
            Msg::Writable(conn) => {
                if let Some(io) = self.ios.get_mut(&conn) {
                    io.waiter = None;
                    self.flush(conn, fx);
                }
            }
            Msg::Dialed(conn, result, tls_host) => {
                self.dials.remove(&conn);
                let result = result.and_then(|stream| {
                    let config = self.client_tls.as_ref().map(Swap::load);
                    let t = transport::dial(tls_host.as_deref(), config.as_ref())?;
                    Ok((stream, t))
                });
                match result {
                    Ok((stream, transport)) if self.driver.is_open(conn) => {
                        self.register(conn, stream, transport);
                        if let Some(io) = self.ios.get_mut(&conn) {
                            io.transport.connected(&mut self.driver, conn, now, fx);
                        }
                        // Bytes queued while connecting, or a TLS ClientHello.
                        self.flush(conn, fx);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let reason = CloseReason::connect_failed(&e);
                        self.driver.handle_closed(conn, reason, now, fx);
                    }
                }
            }
            Msg::Durable => {}
        }
    }

    /// The wake-up (durable records, due timers), then pending writes and dials.
    fn settle(&mut self, fx: &mut impl Effects) {
        self.driver.handle_wakeup(Instant::now(), fx);
        self.flush_writable(fx);
        while let Some((conn, addr)) = self.driver.poll_dial() {
            self.dial(conn, addr);
        }
    }

    fn flush_writable(&mut self, fx: &mut impl Effects) {
        while let Some(conn) = self.driver.poll_writable() {
            self.flush(conn, fx);
        }
    }

    fn register(&mut self, conn: ConnId, stream: Stream<R>, transport: Transport) {
        let stream = Arc::new(stream);
        let reader = R::spawn(read_loop(
            conn,
            stream.clone(),
            self.tx.clone(),
            self.options.read_chunk,
        ));
        let io = Io {
            stream,
            transport,
            _reader: reader,
            waiter: None,
        };
        self.ios.insert(conn, io);
    }

    fn flush(&mut self, conn: ConnId, fx: &mut impl Effects) {
        let Some(io) = self.ios.get_mut(&conn) else {
            // Not connected yet (a dial in flight): flushed once it is.
            return;
        };
        if io.waiter.is_some() {
            return;
        }
        let stream = io.stream.clone();
        let now = Instant::now();
        match io
            .transport
            .flush(&mut self.driver, conn, &mut &*stream, now, fx)
        {
            Flush::Idle => {}
            Flush::Pending => {
                let tx = self.tx.clone();
                io.waiter = Some(R::spawn(async move {
                    let _ = stream.writable().await;
                    let _ = tx.send(Msg::Writable(conn)).await;
                }));
            }
            Flush::Close(_) => {
                // The reader task may outlive this for a moment and keep the socket open: the
                // peer gets its EOF now.
                let _ = SockRef::from(&*stream).shutdown(Shutdown::Write);
                self.ios.remove(&conn);
            }
        }
    }

    fn dial(&mut self, conn: ConnId, addr: DialAddr) {
        let tx = self.tx.clone();
        let task = R::spawn(async move {
            let mut tls_host = None;
            let result = match addr {
                DialAddr::Tcp { host, port } => R::connect_tcp(&host, port).await.map(Stream::tcp),
                DialAddr::Tls { host, port } => {
                    let r = R::connect_tcp(&host, port).await.map(Stream::tcp);
                    tls_host = Some(host);
                    r
                }
                DialAddr::Unix(path) => R::connect_unix(&path).await.map(Stream::Unix),
                other => Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("cannot dial {other}: unsupported endpoint kind"),
                )),
            };
            let _ = tx.send(Msg::Dialed(conn, result, tls_host)).await;
        });
        self.dials.insert(conn, task);
    }
}

/// Reads until EOF or error, handing each read to the owner as one [`Bytes`].
///
/// The buffer is allocated (zeroed) `chunk` bytes at a time and split after each read, so a
/// read costs no allocation until the rest of the chunk runs low.
/// First read buffer of a connection.
const READ_START: usize = 4096;

async fn read_loop<R: AsyncRuntime>(
    conn: ConnId,
    stream: Arc<Stream<R>>,
    tx: Sender<Msg<R>>,
    chunk: usize,
) {
    // The buffer starts small and doubles (up to `chunk`) whenever a read fills it, so an idle
    // subscriber costs a few KiB, not a full chunk.
    let chunk = chunk.max(1);
    let mut size = READ_START.min(chunk);
    let mut buf = BytesMut::new();
    loop {
        if buf.len() < (size / 4).max(1) {
            buf = BytesMut::zeroed(size);
        }
        match stream.try_read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let drained = n < buf.len();
                if !drained {
                    size = (size * 2).min(chunk);
                }
                let bytes = buf.split_to(n).freeze();
                if tx.send(Msg::Input(conn, bytes)).await.is_err() {
                    return;
                }
                // A short read emptied the socket: wait for more rather than spend a read on
                // `WouldBlock` (one syscall per small message, such as a subscriber's ack).
                if drained && stream.readable().await.is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if stream.readable().await.is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = tx.send(Msg::Ended(conn)).await;
}
