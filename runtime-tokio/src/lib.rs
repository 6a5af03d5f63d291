//! vtp on tokio: moves bytes and timers for a [`vtp_core::Node`].
//!
//! The node and its [`Driver`] live in one task, [`run`], which owns all protocol state. Around
//! it, small tasks only move bytes: one accept loop per listener, one reader per connection
//! (bytes in, over a bounded channel), one waiter per connection whose socket buffer is full
//! (a wake-up when it becomes writable), one task per outgoing dial. Writes happen in the owner
//! task with non-blocking `try_write_vectored` from each connection's outbox. No protocol rule
//! and no XML lives here.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
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
//! let listeners = vtp_tokio::bind(&[
//!     (ListenerRole::Receive, ListenAddr::parse("127.0.0.1:8098").unwrap()),
//!     (ListenerRole::Broadcast, ListenAddr::parse("127.0.0.1:8099").unwrap()),
//! ])?;
//! let shutdown = tokio::signal::ctrl_c();
//! vtp_tokio::run(node, listeners, MyEffects, async { let _ = shutdown.await; }, Default::default()).await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use vtp_core::driver::{Driver, Effects, Flush};
use vtp_core::endpoint::DialAddr;
use vtp_core::{CloseReason, ConnId, ListenerRole, Node, Peer};
use vtp_host::net::StdListener;
pub use vtp_host::net::{Bound, Options, bind};

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
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
    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.try_read_buf(buf),
            Self::Unix(s) => s.try_read_buf(buf),
        }
    }
}

/// A non-blocking `Write` over a tokio stream (WouldBlock when the socket buffer is full).
struct TryWrite<'a>(&'a Stream);

impl Write for TryWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0 {
            Stream::Tcp(s) => s.try_write(buf),
            Stream::Unix(s) => s.try_write(buf),
        }
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self.0 {
            Stream::Tcp(s) => s.try_write_vectored(bufs),
            Stream::Unix(s) => s.try_write_vectored(bufs),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Msg {
    Accepted(ListenerRole, Stream, Peer),
    Input(ConnId, Bytes),
    Ended(ConnId),
    Writable(ConnId),
    Dialed(ConnId, io::Result<Stream>),
}

struct Io {
    stream: Arc<Stream>,
    reader: JoinHandle<()>,
    waiter: Option<JoinHandle<()>>,
}

impl Drop for Io {
    fn drop(&mut self) {
        self.reader.abort();
        if let Some(w) = &self.waiter {
            w.abort();
        }
    }
}

/// Runs `node` on the bound listeners until `shutdown` completes, then closes every connection
/// (flushing what can be flushed without waiting) and returns the effects.
///
/// # Errors
///
/// Only if a listener cannot be registered with tokio; peer errors never end the loop.
pub async fn run<E: Effects>(
    node: Node,
    bound: Bound,
    mut fx: E,
    shutdown: impl Future<Output = ()>,
    options: Options,
) -> io::Result<E> {
    let (tx, mut rx) = mpsc::channel::<Msg>(options.channel);
    let mut accepters = Vec::new();
    for (role, l) in bound.into_listeners() {
        accepters.push(spawn_accept(role, l, tx.clone())?);
    }
    let mut owner = Owner {
        driver: Driver::new(node, options.outbox),
        ios: HashMap::new(),
        tx,
        options,
    };
    // Output queued before the run (a submission, a restore) is dispatched first.
    owner.driver.with_node(&mut fx, |_| ());
    owner.settle(&mut fx);
    tokio::pin!(shutdown);
    loop {
        let deadline = owner.driver.poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                owner.handle(msg, &mut fx);
                for _ in 1..owner.options.budget {
                    match rx.try_recv() {
                        Ok(msg) => owner.handle(msg, &mut fx),
                        Err(_) => break,
                    }
                }
            }
            () = sleep => {}
        }
        owner.settle(&mut fx);
    }
    for a in &accepters {
        a.abort();
    }
    owner.driver.shutdown(Instant::now(), &mut fx);
    owner.flush_ready(&mut fx);
    Ok(fx)
}

fn spawn_accept(
    role: ListenerRole,
    l: StdListener,
    tx: mpsc::Sender<Msg>,
) -> io::Result<JoinHandle<()>> {
    Ok(match l {
        StdListener::Tcp(l) => {
            let l = TcpListener::from_std(l)?;
            tokio::spawn(async move {
                loop {
                    match l.accept().await {
                        Ok((s, addr)) => {
                            let _ = s.set_nodelay(true);
                            let peer = Peer::Ip(addr.ip());
                            if tx
                                .send(Msg::Accepted(role, Stream::Tcp(s), peer))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        Err(e) => accept_error(e).await,
                    }
                }
            })
        }
        StdListener::Unix(l, _path) => {
            let l = UnixListener::from_std(l)?;
            tokio::spawn(async move {
                loop {
                    match l.accept().await {
                        Ok((s, _)) => {
                            let msg = Msg::Accepted(role, Stream::Unix(s), Peer::Local);
                            if tx.send(msg).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => accept_error(e).await,
                    }
                }
            })
        }
    })
}

/// Out of file descriptors and the like: log, back off briefly, keep serving.
async fn accept_error(e: io::Error) {
    tracing::warn!("accept failed: {e}; retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

struct Owner {
    driver: Driver,
    ios: HashMap<ConnId, Io>,
    tx: mpsc::Sender<Msg>,
    options: Options,
}

impl Owner {
    fn handle(&mut self, msg: Msg, fx: &mut impl Effects) {
        let now = Instant::now();
        match msg {
            Msg::Accepted(role, stream, peer) => {
                if let Some(conn) = self.driver.accept(role, peer, now, fx) {
                    self.register(conn, stream);
                }
            }
            Msg::Input(conn, bytes) => self.driver.input(conn, &bytes, now, fx),
            // End of stream: a receipt already queued is still written (half-close).
            Msg::Ended(conn) => {
                if self.driver.eof(conn, now, fx) {
                    self.ios.remove(&conn);
                }
            }
            Msg::Writable(conn) => {
                if let Some(io) = self.ios.get_mut(&conn) {
                    io.waiter = None;
                    self.flush(conn, fx);
                }
            }
            Msg::Dialed(conn, Ok(stream)) => {
                if self.driver.is_open(conn) {
                    self.register(conn, stream);
                    self.driver.connected(conn, now, fx);
                }
            }
            Msg::Dialed(conn, Err(e)) => {
                let reason = CloseReason::ConnectFailed(e.to_string());
                self.driver.closed(conn, reason, now, fx);
            }
        }
    }

    /// Due timers, pending writes, pending dials.
    fn settle(&mut self, fx: &mut impl Effects) {
        if self
            .driver
            .poll_timeout()
            .is_some_and(|t| t <= Instant::now())
        {
            self.driver.timeout(Instant::now(), fx);
        }
        self.flush_ready(fx);
        while let Some((conn, endpoint)) = self.driver.pop_dial() {
            self.dial(conn, &endpoint);
        }
    }

    fn flush_ready(&mut self, fx: &mut impl Effects) {
        while let Some(conn) = self.driver.pop_ready() {
            self.flush(conn, fx);
        }
    }

    fn register(&mut self, conn: ConnId, stream: Stream) {
        let stream = Arc::new(stream);
        let reader = tokio::spawn(read_loop(
            conn,
            stream.clone(),
            self.tx.clone(),
            self.options.read_chunk,
        ));
        self.ios.insert(
            conn,
            Io {
                stream,
                reader,
                waiter: None,
            },
        );
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
        match self
            .driver
            .flush(conn, &mut TryWrite(&stream), Instant::now(), fx)
        {
            Flush::Idle => {}
            Flush::Pending => {
                let tx = self.tx.clone();
                io.waiter = Some(tokio::spawn(async move {
                    let _ = stream.writable().await;
                    let _ = tx.send(Msg::Writable(conn)).await;
                }));
            }
            Flush::Close(_) => {
                if let Some(io) = self.ios.remove(&conn)
                    && let Stream::Tcp(s) = &*io.stream
                {
                    let _ = socket2::SockRef::from(s).shutdown(std::net::Shutdown::Write);
                }
            }
        }
    }

    fn dial(&mut self, conn: ConnId, endpoint: &str) {
        let tx = self.tx.clone();
        let addr = DialAddr::parse(endpoint, 8099);
        tokio::spawn(async move {
            let result = match addr {
                Ok(DialAddr::Tcp { host, port }) => {
                    TcpStream::connect((host.as_str(), port)).await.map(|s| {
                        let _ = s.set_nodelay(true);
                        Stream::Tcp(s)
                    })
                }
                Ok(DialAddr::Unix(path)) => UnixStream::connect(path).await.map(Stream::Unix),
                Ok(other) => Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("cannot dial {other}"),
                )),
                Err(e) => Err(io::Error::new(io::ErrorKind::InvalidInput, e.to_string())),
            };
            let _ = tx.send(Msg::Dialed(conn, result)).await;
        });
    }
}

async fn read_loop(conn: ConnId, stream: Arc<Stream>, tx: mpsc::Sender<Msg>, chunk: usize) {
    let mut buf = BytesMut::with_capacity(chunk);
    loop {
        if stream.readable().await.is_err() {
            break;
        }
        if buf.capacity() - buf.len() < chunk / 4 {
            buf.reserve(chunk);
        }
        match stream.try_read_buf(&mut buf) {
            Ok(0) => break,
            Ok(_) => {
                let bytes = buf.split().freeze();
                if tx.send(Msg::Input(conn, bytes)).await.is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = tx.send(Msg::Ended(conn)).await;
}
