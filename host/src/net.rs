//! Listening sockets, created once with std and socket2 and handed to each runtime.
//!
//! Every runtime converts these non-blocking std listeners into its own types
//! (`tokio::net::TcpListener::from_std`, `async_io::Async::new`, `mio::net::TcpListener::from_std`),
//! so binding rules live here once: `PORT` alone listens on IPv4 and IPv6 (two sockets,
//! `IPV6_V6ONLY` on the second so they do not clash), addresses reuse `SO_REUSEADDR` so a
//! restarted broker binds at once, and a stale Unix socket file left by a dead process is
//! replaced (a live one, or a file that is not a socket, is an error).

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use socket2::{Domain, Protocol, Socket, Type};
use vtp_core::ListenerRole;
use vtp_core::endpoint::{ListenAddr, ListenEndpoint};
use vtp_core::outbox::OutboxLimits;

use crate::transport::{ClientTls, ServerTls};

/// A bound, listening, non-blocking socket.
#[derive(Debug)]
pub enum StdListener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix-domain socket, with its path (removed when the listener is dropped by [`unlink`]).
    Unix(UnixListener, PathBuf),
}

impl StdListener {
    /// The address, for logs and for tests that bind port 0.
    pub fn local_addr(&self) -> String {
        match self {
            Self::Tcp(l) => l
                .local_addr()
                .map_or_else(|e| format!("tcp:? ({e})"), |a| a.to_string()),
            Self::Unix(_, p) => format!("unix:{}", p.display()),
        }
    }

    /// The TCP address, if TCP.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Tcp(l) => l.local_addr().ok(),
            Self::Unix(..) => None,
        }
    }
}

/// Removes a Unix listener's socket file (at shutdown).
pub fn unlink(listener: &StdListener) {
    if let StdListener::Unix(_, p) = listener {
        let _ = std::fs::remove_file(p);
    }
}

/// Binds `addr`. `AnyTcp` yields two listeners (IPv4 and IPv6) where the machine has both; one
/// of the two failing is tolerated, both failing is an error.
///
/// # Errors
///
/// The OS error, with the address in its message.
pub fn bind_one(addr: &ListenAddr) -> io::Result<Vec<StdListener>> {
    let with_addr = |e: io::Error, a: &dyn std::fmt::Display| {
        io::Error::new(e.kind(), format!("cannot listen on {a}: {e}"))
    };
    match addr {
        ListenAddr::AnyTcp(port) => {
            let mut out = Vec::new();
            let mut first_err = None;
            for ip in ListenAddr::wildcards() {
                let sa = SocketAddr::new(ip, *port);
                // With port 0 both sockets must share the port the first one got.
                let sa = match (out.first(), *port) {
                    (Some(StdListener::Tcp(l)), 0) => {
                        SocketAddr::new(ip, l.local_addr().map_or(0, |a| a.port()))
                    }
                    _ => sa,
                };
                match bind_tcp(sa) {
                    Ok(l) => out.push(StdListener::Tcp(l)),
                    Err(e) => {
                        first_err.get_or_insert(with_addr(e, &sa));
                    }
                }
            }
            match (out.is_empty(), first_err) {
                (true, Some(e)) => Err(e),
                _ => Ok(out),
            }
        }
        ListenAddr::Tcp { host, port } => {
            let addrs: Vec<SocketAddr> = (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(|e| with_addr(e, addr))?
                .collect();
            let mut last = None;
            for sa in addrs {
                match bind_tcp(sa) {
                    Ok(l) => return Ok(vec![StdListener::Tcp(l)]),
                    Err(e) => last = Some(with_addr(e, &sa)),
                }
            }
            Err(last.unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no address found"))
            }))
        }
        ListenAddr::Unix(path) => {
            let l = bind_unix(path).map_err(|e| with_addr(e, addr))?;
            Ok(vec![StdListener::Unix(l, path.clone())])
        }
        other => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("unsupported listening endpoint {other}"),
        )),
    }
}

fn bind_tcp(sa: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(sa), Type::STREAM, Some(Protocol::TCP))?;
    if sa.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&sa.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket; remove it or choose another path",
            ));
        }
        match UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another process is listening on this socket",
                ));
            }
            // Nobody listening: a stale file from a process that died.
            Err(_) => std::fs::remove_file(path)?,
        }
    }
    let l = UnixListener::bind(path)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Tuning of a runtime (not of the protocol: that is the node's [`vtp_core::Config`]).
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Per-connection send queue bounds.
    pub outbox: OutboxLimits,
    /// Bytes read per `read` call.
    pub read_chunk: usize,
    /// Messages handled per wake-up before flushing and yielding.
    pub budget: usize,
    /// Capacity of the channel from IO tasks to the owner task.
    pub channel: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            outbox: OutboxLimits::default(),
            read_chunk: 64 * 1024,
            budget: 512,
            channel: 4096,
        }
    }
}

/// Listeners bound before the node runs (so a test can bind port 0 and learn the port), with
/// the TLS settings of those that speak TLS and of outgoing TLS connections.
#[derive(Debug)]
pub struct Bound {
    listeners: Vec<Listening>,
    client_tls: Option<ClientTls>,
}

/// One bound listener, as a runtime registers it.
#[derive(Debug)]
pub struct Listening {
    /// Authors or subscribers.
    pub role: ListenerRole,
    /// The socket.
    pub listener: StdListener,
    /// Its TLS configuration, for an `ssl:`/`tls:` endpoint.
    pub tls: Option<ServerTls>,
}

impl Bound {
    /// The bound addresses, per role, as text (`127.0.0.1:40123`, `tls:127.0.0.1:40124`,
    /// `unix:/path`).
    pub fn addrs(&self) -> Vec<(ListenerRole, String)> {
        self.listeners
            .iter()
            .map(|l| {
                let addr = l.listener.local_addr();
                let addr = if l.tls.is_some() {
                    format!("tls:{addr}")
                } else {
                    addr
                };
                (l.role, addr)
            })
            .collect()
    }

    /// The first TCP port bound for `role` (plain or TLS).
    pub fn port(&self, role: ListenerRole) -> Option<u16> {
        self.listeners
            .iter()
            .filter(|l| l.role == role)
            .find_map(|l| l.listener.tcp_addr())
            .map(|a| a.port())
    }

    /// The first TCP port bound for `role` that speaks TLS (`tls`) or not.
    pub fn port_of(&self, role: ListenerRole, tls: bool) -> Option<u16> {
        self.listeners
            .iter()
            .filter(|l| l.role == role && l.tls.is_some() == tls)
            .find_map(|l| l.listener.tcp_addr())
            .map(|a| a.port())
    }

    /// Sets the TLS configuration of outgoing connections (`tls:HOST:PORT` dials); without
    /// it such a dial fails with a message saying so.
    #[must_use]
    pub fn with_client_tls(mut self, config: ClientTls) -> Self {
        self.client_tls = Some(config);
        self
    }

    /// The listeners and the client TLS configuration, for a runtime to register.
    pub fn into_parts(self) -> (Vec<Listening>, Option<ClientTls>) {
        (self.listeners, self.client_tls)
    }
}

/// Binds every plain listener; fails on the first that cannot be bound, naming it.
///
/// # Errors
///
/// The OS error, with the endpoint in its message.
pub fn bind(endpoints: &[(ListenerRole, ListenAddr)]) -> io::Result<Bound> {
    let mut listeners = Vec::new();
    for (role, addr) in endpoints {
        for l in bind_one(addr)? {
            listeners.push(Listening {
                role: *role,
                listener: l,
                tls: None,
            });
        }
    }
    Ok(Bound {
        listeners,
        client_tls: None,
    })
}

/// Binds every listener, plain or TLS; each TLS listener's certificate and key are loaded and
/// checked first. Warnings (an expired certificate) are logged.
///
/// # Errors
///
/// A TLS file that cannot be used (the message names it and the problem), a TLS endpoint in a
/// build without TLS, or the OS error of a bind, with the endpoint in its message.
pub fn bind_endpoints(endpoints: &[(ListenerRole, ListenEndpoint)]) -> io::Result<Bound> {
    let mut listeners = Vec::new();
    for (role, ep) in endpoints {
        let tls = match &ep.tls {
            None => None,
            Some(files) => Some(server_tls(ep, files)?),
        };
        for l in bind_one(&ep.addr)? {
            listeners.push(Listening {
                role: *role,
                listener: l,
                tls: tls.clone(),
            });
        }
    }
    Ok(Bound {
        listeners,
        client_tls: None,
    })
}

#[cfg(feature = "tls")]
fn server_tls(ep: &ListenEndpoint, files: &vtp_core::endpoint::TlsListen) -> io::Result<ServerTls> {
    let (config, warnings) = crate::tls::server_config(files)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{ep}: {e}")))?;
    for w in warnings {
        tracing::warn!("{ep}: {w}");
    }
    Ok(config)
}

#[cfg(not(feature = "tls"))]
fn server_tls(
    ep: &ListenEndpoint,
    _files: &vtp_core::endpoint::TlsListen,
) -> io::Result<ServerTls> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!("{ep}: this build has no TLS (cargo feature `tls`); use a plain endpoint"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_port_zero_binds_both_families_on_one_port() {
        let ls = bind_one(&ListenAddr::AnyTcp(0)).unwrap();
        assert!(!ls.is_empty());
        let ports: Vec<u16> = ls
            .iter()
            .filter_map(|l| l.tcp_addr())
            .map(|a| a.port())
            .collect();
        assert!(ports.iter().all(|p| *p == ports[0] && *p != 0), "{ports:?}");
    }

    #[test]
    fn unix_replaces_stale_socket_but_not_live_one_or_plain_file() {
        let dir = std::env::temp_dir().join(format!("vtp-net-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("s.sock");
        let _ = std::fs::remove_file(&p);
        let live = bind_one(&ListenAddr::Unix(p.clone())).unwrap();
        let e = bind_one(&ListenAddr::Unix(p.clone())).unwrap_err();
        assert!(e.to_string().contains("another process"), "{e}");
        drop(live); // the file stays behind: stale
        assert!(bind_one(&ListenAddr::Unix(p.clone())).is_ok());
        let f = dir.join("plain");
        std::fs::write(&f, b"x").unwrap();
        let e = bind_one(&ListenAddr::Unix(f)).unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
