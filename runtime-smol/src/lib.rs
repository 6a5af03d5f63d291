//! vtp on smol: moves bytes and timers for a [`vtp_core::Node`] with async-io.
//!
//! The owner loop (one future owning the node, bounded channel from the IO tasks, budget per
//! wake-up, writes from the owner, clean shutdown) is [`vtp_host::aio`], shared with every async
//! runtime; this crate only tells it how smol spawns (`smol::spawn`, the global executor),
//! sleeps (`async_io::Timer`), accepts and connects (`async_io::Async` over std sockets, host
//! names resolved with `smol::net::resolve`).
//!
//! [`run`] is a future for any executor; [`block_on_run`] drives it on the current thread.
//!
//! ```no_run
//! use std::time::{Instant, SystemTime, UNIX_EPOCH};
//! use vtp_core::{Config, ListenerRole, Node, filter::NoFilterEngine};
//! use vtp_core::endpoint::ListenAddr;
//! # struct MyEffects;
//! # impl vtp_core::driver::Effects for MyEffects {
//! #   fn store(&mut self, _: vtp_core::driver::StoreOp) {}
//! #   fn deliver(&mut self, d: vtp_core::Delivery) { println!("{}", d.ivorn) }
//! #   fn event(&mut self, _: vtp_core::Event) {}
//! # }
//! # fn main() -> std::io::Result<()> {
//! let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
//! let config = Config::new(Some("ivo://example.org/broker".into()));
//! let node = Node::new(config, Box::new(NoFilterEngine), 7, Instant::now(), unix).unwrap();
//! let listeners = vtp_smol::bind(&[
//!     (ListenerRole::Receive, ListenAddr::parse("127.0.0.1:8098").unwrap()),
//!     (ListenerRole::Broadcast, ListenAddr::parse("127.0.0.1:8099").unwrap()),
//! ])?;
//! // Stop when something is sent on (or when the program drops) `stop_tx`.
//! let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
//! # drop(stop_tx);
//! let shutdown = async move { let _ = stop_rx.recv().await; };
//! let _effects = vtp_smol::block_on_run(node, listeners, MyEffects, shutdown, Default::default())?;
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
//! This crate is one of the three runtimes: it moves bytes and timers between smol and the
//! core's `Driver`, using `vtp-host` for everything else; it decides nothing about the protocol.

use std::future::Future;
use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Instant;

use smol::{Async, Task, Timer};
use vtp_core::Node;
use vtp_core::driver::Effects;
use vtp_host::aio::{self, AsyncRuntime, AsyncStream};
pub use vtp_host::net::{Bound, Options, bind, bind_endpoints};

/// Runs `node` on the bound listeners until `shutdown` completes, then closes every connection
/// (flushing what can be flushed without waiting) and returns the effects. IO tasks run on
/// smol's global executor; this future may be polled by any executor.
///
/// # Errors
///
/// Only if a listener cannot be registered with async-io; peer errors never end the loop.
pub async fn run<E: Effects>(
    node: Node,
    bound: Bound,
    fx: E,
    shutdown: impl Future<Output = ()>,
    options: Options,
) -> io::Result<E> {
    aio::run::<Smol, E>(node, bound, fx, shutdown, options).await
}

/// [`run`] on the current thread (`smol::block_on`): for programs without an executor of their
/// own, such as the `vtp` binary.
///
/// # Errors
///
/// As [`run`].
pub fn block_on_run<E: Effects>(
    node: Node,
    bound: Bound,
    fx: E,
    shutdown: impl Future<Output = ()>,
    options: Options,
) -> io::Result<E> {
    smol::block_on(run(node, bound, fx, shutdown, options))
}

/// smol, as [`vtp_host::aio`] sees it.
struct Smol;

impl AsyncRuntime for Smol {
    type Tcp = Conn<TcpStream>;
    type Unix = Conn<UnixStream>;
    type TcpListener = Async<TcpListener>;
    type UnixListener = Async<UnixListener>;
    type Task = Task<()>;

    fn spawn(task: impl Future<Output = ()> + Send + 'static) -> Task<()> {
        smol::spawn(task)
    }

    async fn sleep_until(deadline: Instant) {
        Timer::at(deadline).await;
    }

    fn listen_tcp(listener: TcpListener) -> io::Result<Async<TcpListener>> {
        Async::new(listener)
    }

    fn listen_unix(listener: UnixListener) -> io::Result<Async<UnixListener>> {
        Async::new(listener)
    }

    async fn accept_tcp(
        listener: &Async<TcpListener>,
    ) -> io::Result<(Conn<TcpStream>, SocketAddr)> {
        listener.accept().await.map(|(s, peer)| (Conn(s), peer))
    }

    async fn accept_unix(listener: &Async<UnixListener>) -> io::Result<Conn<UnixStream>> {
        listener.accept().await.map(|(s, _)| Conn(s))
    }

    /// Tries every resolved address in turn, like `TcpStream::connect`.
    async fn connect_tcp(host: &str, port: u16) -> io::Result<Conn<TcpStream>> {
        let mut last = None;
        for addr in smol::net::resolve((host, port)).await? {
            match Async::<TcpStream>::connect(addr).await {
                Ok(s) => return Ok(Conn(s)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host}: the name resolved to no address"),
            )
        }))
    }

    async fn connect_unix(path: &Path) -> io::Result<Conn<UnixStream>> {
        Async::<UnixStream>::connect(path).await.map(Conn)
    }
}

/// An async-io stream behind [`AsyncStream`]: the std socket does the non-blocking IO,
/// async-io the readiness.
struct Conn<S>(Async<S>);

impl<S> AsyncStream for Conn<S>
where
    S: AsFd + Send + Sync + 'static,
    for<'a> &'a S: Read + Write,
{
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        self.0.readable()
    }

    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send {
        self.0.writable()
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.get_ref().read(buf)
    }

    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.get_ref().write_vectored(bufs)
    }
}

impl<S: AsFd> AsFd for Conn<S> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.get_ref().as_fd()
    }
}
