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
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use vtp_core::ListenerRole;
use vtp_core::endpoint::{ListenAddr, ListenEndpoint};
use vtp_core::outbox::OutboxLimits;

use crate::external::Inbox;
use crate::reload::{Reloads, Swap};
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

/// Pause of an accept loop after a failed accept (out of file descriptors and the like): the
/// loop neither spins on the error nor holds up other work meanwhile.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// At most one `accept failed` warning per listener this often; the failures in between are
/// counted and the count is part of the next warning.
pub const ACCEPT_FAILURE_LOG_PERIOD: Duration = Duration::from_secs(1);

/// Rate limit for an accept loop's `accept failed` warning: out of file descriptors, an
/// accept fails at every retry ([`ACCEPT_RETRY`]), and one line each time would flood the log.
/// The first failure is logged at once, then at most one line per
/// [`ACCEPT_FAILURE_LOG_PERIOD`], saying how many failures were not logged since the last.
#[derive(Debug, Default)]
pub struct AcceptFailures {
    last_logged: Option<Instant>,
    suppressed: u64,
}

impl AcceptFailures {
    /// Notes a failed accept at `now`; logs it at WARN unless a line was logged less than
    /// [`ACCEPT_FAILURE_LOG_PERIOD`] ago.
    pub fn failed(&mut self, error: &io::Error, now: Instant) {
        match self.note(now) {
            Some(0) => tracing::warn!("accept failed: {error}; retrying in {ACCEPT_RETRY:?}"),
            Some(suppressed) => tracing::warn!(
                suppressed,
                "accept failed: {error}; retrying in {ACCEPT_RETRY:?} ({suppressed} more \
                 failures since the last warning)"
            ),
            None => {}
        }
    }

    /// `Some(failures not logged since the last line)` when this failure is to be logged.
    fn note(&mut self, now: Instant) -> Option<u64> {
        if self
            .last_logged
            .is_some_and(|t| now.saturating_duration_since(t) < ACCEPT_FAILURE_LOG_PERIOD)
        {
            self.suppressed += 1;
            return None;
        }
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
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
/// the TLS settings of those that speak TLS and of outgoing TLS connections, and the mailbox
/// of configuration reloads ([`crate::reload`]).
///
/// Every TLS configuration is held in a [`Swap`] that the accept path (or the dial) reads
/// each time: a reload replaces it for new handshakes, on every runtime alike.
#[derive(Debug)]
pub struct Bound {
    listeners: Vec<Listening>,
    /// Per endpoint given to [`bind_endpoints`], in order: its TLS configuration, shared by
    /// the sockets bound for it.
    endpoint_tls: Vec<Option<Swap<ServerTls>>>,
    client_tls: Option<Swap<ClientTls>>,
    reloads: Option<Reloads>,
    externals: Option<Inbox>,
}

/// One bound listener, as a runtime registers it.
#[derive(Debug)]
pub struct Listening {
    /// Authors or subscribers.
    pub role: ListenerRole,
    /// The socket.
    pub listener: StdListener,
    /// Its TLS configuration, for an `ssl:`/`tls:` endpoint: read at every accept (a reload
    /// replaces it).
    pub tls: Option<Swap<ServerTls>>,
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
        self.client_tls = Some(Swap::new(config));
        self
    }

    /// Has the runtime apply the configuration reloads sent through this mailbox's
    /// [`Requester`](crate::reload::Requester) while it runs.
    #[must_use]
    pub fn with_reloads(mut self, reloads: Reloads) -> Self {
        self.reloads = Some(reloads);
        self
    }

    /// The TLS configuration of each endpoint given to [`bind_endpoints`], in order (`None`
    /// for a plain one), for a reload to replace.
    pub fn endpoint_tls(&self) -> &[Option<Swap<ServerTls>>] {
        &self.endpoint_tls
    }

    /// The TLS configuration of outgoing connections, if set, for a reload to replace.
    pub fn client_tls(&self) -> Option<&Swap<ClientTls>> {
        self.client_tls.as_ref()
    }

    /// Has the runtime hand the records of external sources (a Kafka consumer) sent through
    /// this inbox's [`Feeder`](crate::external::Feeder)s to the node while it runs.
    #[must_use]
    pub fn with_externals(mut self, inbox: Inbox) -> Self {
        self.externals = Some(inbox);
        self
    }

    /// Takes the external sources' inbox out (a runtime does, before
    /// [`into_parts`](Self::into_parts)).
    pub fn take_externals(&mut self) -> Option<Inbox> {
        self.externals.take()
    }

    /// Takes the reload mailbox out (a runtime does, before [`into_parts`](Self::into_parts)).
    pub fn take_reloads(&mut self) -> Option<Reloads> {
        self.reloads.take()
    }

    /// The listeners and the client TLS configuration, for a runtime to register.
    pub fn into_parts(self) -> (Vec<Listening>, Option<Swap<ClientTls>>) {
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
        endpoint_tls: Vec::new(),
        client_tls: None,
        reloads: None,
        externals: None,
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
    let mut endpoint_tls = Vec::new();
    for (role, ep) in endpoints {
        let tls = load_server_tls(ep)?.map(Swap::new);
        for l in bind_one(&ep.addr)? {
            listeners.push(Listening {
                role: *role,
                listener: l,
                tls: tls.clone(),
            });
        }
        endpoint_tls.push(tls);
    }
    Ok(Bound {
        listeners,
        endpoint_tls,
        client_tls: None,
        reloads: None,
        externals: None,
    })
}

/// The TLS configuration of a listening endpoint (`None` for a plain one), its certificate and
/// key loaded and checked; warnings (an expired certificate) are logged. [`bind_endpoints`]
/// calls it, and a reload does again to take certificates renewed on disk.
///
/// # Errors
///
/// A TLS file that cannot be used (the message names the endpoint, the file and the problem),
/// or a TLS endpoint in a build without TLS.
pub fn load_server_tls(ep: &ListenEndpoint) -> io::Result<Option<ServerTls>> {
    match &ep.tls {
        None => Ok(None),
        Some(files) => server_tls(ep, files).map(Some),
    }
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
    fn accept_failures_are_logged_at_most_once_a_second_with_a_count() {
        let t0 = Instant::now();
        let mut f = AcceptFailures::default();
        assert_eq!(f.note(t0), Some(0), "the first is logged");
        // Ten a second (the retry pause) for three seconds.
        let mut logged = Vec::new();
        for i in 1..30 {
            if let Some(n) = f.note(t0 + ACCEPT_RETRY * i) {
                logged.push((i, n));
            }
        }
        assert_eq!(logged, [(10, 9), (20, 9)]);
        // A failure long after: logged at once with what was left uncounted.
        assert_eq!(f.note(t0 + Duration::from_secs(60)), Some(9));
        assert_eq!(f.note(t0 + Duration::from_secs(120)), Some(0));
    }

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
