//! vtp on tokio: moves bytes and timers for a [`vtp_core::Node`].
//!
//! The owner loop (one task owning the node, bounded channel from the IO tasks, budget per
//! wake-up, writes from the owner, clean shutdown) is [`vtp_host::aio`], shared with every async
//! runtime; this crate only tells it how tokio spawns, sleeps, accepts and connects.
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
//!
//! # Layering
//!
//! ```text
//! cli  ->  runtime-tokio | runtime-smol | runtime-mio  ->  host  ->  core
//! conformance  ->  core  (no host: the simulator gives the Driver in-memory effects)
//! testkit: helpers for tests only
//! ```
//!
//! This crate is one of the three runtimes: it moves bytes and timers between tokio and the
//! core's `Driver`, using `vtp-host` for everything else; it decides nothing about the protocol.

use std::future::Future;
use std::io::{self, IoSlice, Read};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::time::Instant;

use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::task::JoinHandle;
use vtp_core::Node;
use vtp_core::driver::Effects;
use vtp_host::aio::{self, AsyncRuntime, AsyncStream};
pub use vtp_host::net::{Bound, Options, bind, bind_endpoints};

/// Runs `node` on the bound listeners until `shutdown` completes, then closes every connection
/// (flushing what can be flushed without waiting) and returns the effects. Call it within a
/// tokio runtime (any flavour) with timers and IO enabled.
///
/// # Errors
///
/// Only if a listener cannot be registered with tokio; peer errors never end the loop.
pub async fn run<E: Effects>(
    node: Node,
    bound: Bound,
    fx: E,
    shutdown: impl Future<Output = ()>,
    options: Options,
) -> io::Result<E> {
    aio::run::<Tokio, E>(node, bound, fx, shutdown, options).await
}

/// tokio, as [`vtp_host::aio`] sees it.
struct Tokio;

impl AsyncRuntime for Tokio {
    type Tcp = Conn<TcpStream>;
    type Unix = Conn<UnixStream>;
    type TcpListener = TcpListener;
    type UnixListener = UnixListener;
    type Task = AbortOnDrop;

    fn spawn(task: impl Future<Output = ()> + Send + 'static) -> AbortOnDrop {
        AbortOnDrop(tokio::spawn(task))
    }

    fn sleep_until(deadline: Instant) -> impl Future<Output = ()> + Send {
        tokio::time::sleep_until(deadline.into())
    }

    fn listen_tcp(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        TcpListener::from_std(listener)
    }

    fn listen_unix(listener: std::os::unix::net::UnixListener) -> io::Result<UnixListener> {
        UnixListener::from_std(listener)
    }

    async fn accept_tcp(listener: &TcpListener) -> io::Result<(Conn<TcpStream>, SocketAddr)> {
        listener.accept().await.map(|(s, peer)| (Conn(s), peer))
    }

    async fn accept_unix(listener: &UnixListener) -> io::Result<Conn<UnixStream>> {
        listener.accept().await.map(|(s, _)| Conn(s))
    }

    async fn connect_tcp(host: &str, port: u16) -> io::Result<Conn<TcpStream>> {
        TcpStream::connect((host, port)).await.map(Conn)
    }

    async fn connect_unix(path: &Path) -> io::Result<Conn<UnixStream>> {
        UnixStream::connect(path).await.map(Conn)
    }
}

/// A tokio `JoinHandle` that aborts its task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A tokio stream behind [`AsyncStream`]; tokio's `TcpStream` and `UnixStream` share these
/// methods but no trait, hence the macro.
struct Conn<S>(S);

macro_rules! async_stream {
    ($stream:ty) => {
        impl AsyncStream for Conn<$stream> {
            fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
                self.0.readable()
            }
            fn writable(&self) -> impl Future<Output = io::Result<()>> + Send {
                self.0.writable()
            }
            fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
                // A short read drained the socket: tokio is told so (as its own `poll_read`
                // does), and the next `readable` waits for new data instead of costing a read
                // that returns `WouldBlock` (one syscall saved per subscriber ack).
                let mut got = 0;
                let read = self.0.try_io(Interest::READABLE, || {
                    let n = (&*SockRef::from(&self.0)).read(buf)?;
                    if n > 0 && n < buf.len() {
                        got = n;
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                    Ok(n)
                });
                match read {
                    Err(e) if got > 0 && e.kind() == io::ErrorKind::WouldBlock => Ok(got),
                    other => other,
                }
            }
            fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                self.0.try_write_vectored(bufs)
            }
        }

        impl AsFd for Conn<$stream> {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.0.as_fd()
            }
        }
    };
}

async_stream!(TcpStream);
async_stream!(UnixStream);
