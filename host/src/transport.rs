//! The byte transform between a socket and the core's [`Driver`]: plain, or TLS.
//!
//! Every runtime (the async owner loop and the mio loop alike) keeps one [`Transport`] per
//! connection and routes its socket events through it, so TLS lives here once:
//!
//! | the runtime saw | it calls | plain | TLS |
//! |---|---|---|---|
//! | bytes read | [`Transport::input`] | [`Driver::handle_input`] | decrypt; report the completed handshake ([`Driver::handle_secured`] for a listener's connection, [`Driver::handle_connected`] for a dial); pass the plaintext on |
//! | the socket is writable, or the driver has output | [`Transport::flush`] | [`Driver::flush`] | write pending TLS records first, then encrypt the outbox |
//! | end of stream | [`Transport::eof`] | [`Driver::handle_eof`] | during the handshake: a failed handshake |
//! | a dial connected | [`Transport::connected`] | [`Driver::handle_connected`] | start the handshake (reported connected once it completes) |
//!
//! rustls is itself sans-IO: it takes bytes and gives bytes, so no runtime brings its own TLS
//! crate. Bounds: rustls keeps at most one incoming record and the plaintext read from it
//! (drained into the driver after every record); outgoing, at most [`TLS_SEND_BUFFER`] bytes
//! of records wait for the socket, and nothing more is encrypted until they are written.
//! What the handshake may take (time, how many at once) is the core's decision: see
//! [`Node::handle_accept_tls`](vtp_core::Node::handle_accept_tls).

#[cfg(feature = "tls")]
use std::io::IoSlice;
use std::io::{self, Write};
use std::time::Instant;

#[cfg(feature = "tls")]
use vtp_core::CloseReason;
use vtp_core::driver::{Driver, Effects, Flush};
use vtp_core::{ConnId, ListenerRole, Peer};

/// Most bytes of TLS records queued for a socket (64 KiB) before the connection's outbox
/// waits.
pub const TLS_SEND_BUFFER: usize = 64 * 1024;

/// A listener's TLS configuration (shared by its connections).
#[cfg(feature = "tls")]
pub type ServerTls = std::sync::Arc<rustls::ServerConfig>;
/// A listener's TLS configuration: this build has no TLS (cargo feature `tls` off).
#[cfg(not(feature = "tls"))]
pub type ServerTls = NoTls;
/// The TLS configuration of outgoing connections.
#[cfg(feature = "tls")]
pub type ClientTls = std::sync::Arc<rustls::ClientConfig>;
/// The TLS configuration of outgoing connections: this build has no TLS.
#[cfg(not(feature = "tls"))]
pub type ClientTls = NoTls;

/// Stands for a TLS configuration in a build without TLS: it has no value, so no TLS
/// listener or dial can exist there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoTls {}

/// One connection's transport.
#[derive(Debug)]
pub enum Transport {
    /// Bytes as they are.
    Plain,
    /// TLS, through rustls.
    #[cfg(feature = "tls")]
    Tls(Box<Tls>),
}

/// A TLS session and its state.
#[cfg(feature = "tls")]
#[derive(Debug)]
pub struct Tls {
    session: rustls::Connection,
    /// The completed handshake was reported to the driver.
    reported: bool,
    /// Plaintext read from the last records, handed to the driver at once.
    plain: Vec<u8>,
}

/// Accepts a connection on a listener: plain, or TLS with `tls`. `None`: the node refused it;
/// close the socket without writing.
#[must_use]
pub fn accept(
    driver: &mut Driver,
    listener: ListenerRole,
    peer: Peer,
    tls: Option<&ServerTls>,
    now: Instant,
    fx: &mut impl Effects,
) -> Option<(ConnId, Transport)> {
    let Some(config) = tls else {
        let conn = driver.handle_accept(listener, peer, now, fx)?;
        return Some((conn, Transport::Plain));
    };
    #[cfg(feature = "tls")]
    {
        let conn = driver.handle_accept_tls(listener, peer, now, fx)?;
        match rustls::ServerConnection::new(config.clone()) {
            Ok(s) => Some((conn, Transport::tls(s.into()))),
            Err(e) => {
                driver.handle_closed(conn, CloseReason::Tls(e.to_string()), now, fx);
                None
            }
        }
    }
    #[cfg(not(feature = "tls"))]
    match *config {}
}

/// The transport of a dial to `addr`: plain, or a TLS client session that verifies the server
/// is `host` ([`vtp_core::endpoint::DialAddr::Tls`]).
///
/// # Errors
///
/// TLS asked for without a client configuration (or in a build without TLS), or a host that
/// is not a valid server name.
pub fn dial(tls_host: Option<&str>, config: Option<&ClientTls>) -> io::Result<Transport> {
    let Some(host) = tls_host else {
        return Ok(Transport::Plain);
    };
    let Some(config) = config else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "cannot dial tls:{host}: {}",
                if cfg!(feature = "tls") {
                    "no TLS client configuration was given to the runtime"
                } else {
                    "this build has no TLS (cargo feature `tls`)"
                }
            ),
        ));
    };
    #[cfg(feature = "tls")]
    {
        let name = rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("tls:{host}: not a valid server name: {e}"),
            )
        })?;
        let session = rustls::ClientConnection::new(config.clone(), name)
            .map_err(|e| io::Error::other(format!("tls:{host}: {e}")))?;
        Ok(Transport::tls(session.into()))
    }
    #[cfg(not(feature = "tls"))]
    match *config {}
}

impl Transport {
    #[cfg(feature = "tls")]
    fn tls(mut session: rustls::Connection) -> Self {
        session.set_buffer_limit(Some(TLS_SEND_BUFFER));
        Self::Tls(Box::new(Tls {
            session,
            reported: false,
            plain: Vec::new(),
        }))
    }

    /// A dial's socket connected. Plain: the driver is told at once. TLS: the handshake starts
    /// (flush the connection to send the first message) and the driver is told when it
    /// completes.
    pub fn connected(
        &mut self,
        driver: &mut Driver,
        conn: ConnId,
        now: Instant,
        fx: &mut impl Effects,
    ) {
        match self {
            Self::Plain => driver.handle_connected(conn, now, fx),
            #[cfg(feature = "tls")]
            Self::Tls(_) => {}
        }
    }

    /// Bytes read from `conn`'s socket. Returns `Ok(true)` when the transport has bytes to
    /// send of its own (a handshake message): flush the connection. `Err(())`: the TLS session
    /// failed and the driver was told ([`CloseReason::Tls`]); write what
    /// [`Transport::flush_final`] can (the alert), then drop the socket.
    #[allow(clippy::result_unit_err)]
    pub fn input(
        &mut self,
        driver: &mut Driver,
        conn: ConnId,
        bytes: &[u8],
        now: Instant,
        fx: &mut impl Effects,
    ) -> Result<bool, ()> {
        match self {
            Self::Plain => {
                driver.handle_input(conn, bytes, now, fx);
                Ok(false)
            }
            #[cfg(feature = "tls")]
            Self::Tls(t) => t.input(driver, conn, bytes, now, fx),
        }
    }

    /// End of stream from `conn`'s socket: as [`Driver::handle_eof`] (true: close the socket
    /// now). A TLS peer that leaves during its handshake failed it.
    pub fn eof(
        &mut self,
        driver: &mut Driver,
        conn: ConnId,
        now: Instant,
        fx: &mut impl Effects,
    ) -> bool {
        match self {
            #[cfg(feature = "tls")]
            Self::Tls(t) if t.session.is_handshaking() => {
                let reason = CloseReason::Tls("connection closed during the handshake".into());
                driver.handle_closed(conn, reason, now, fx);
                true
            }
            _ => driver.handle_eof(conn, now, fx),
        }
    }

    /// Writes what is queued for `conn` into the non-blocking `sock`: TLS records pending from
    /// before first, then the driver's outbox (encrypted for TLS). As [`Driver::flush`];
    /// [`Flush::Pending`] also while TLS records wait for the socket.
    pub fn flush<W: Write>(
        &mut self,
        driver: &mut Driver,
        conn: ConnId,
        sock: &mut W,
        now: Instant,
        fx: &mut impl Effects,
    ) -> Flush {
        match self {
            Self::Plain => driver.flush(conn, sock, now, fx),
            #[cfg(feature = "tls")]
            Self::Tls(t) => t.flush(driver, conn, sock, now, fx),
        }
    }

    /// Best effort, for a connection being dropped: writes the TLS records still pending (an
    /// alert, a close_notify) without waiting.
    pub fn flush_final<W: Write>(&mut self, sock: &mut W) {
        #[cfg(not(feature = "tls"))]
        let _ = sock;
        match self {
            Self::Plain => {}
            #[cfg(feature = "tls")]
            Self::Tls(t) => {
                let _ = t.drain(sock);
            }
        }
    }

    /// True for TLS.
    pub fn is_tls(&self) -> bool {
        !matches!(self, Self::Plain)
    }
}

#[cfg(feature = "tls")]
impl Tls {
    fn input(
        &mut self,
        driver: &mut Driver,
        conn: ConnId,
        bytes: &[u8],
        now: Instant,
        fx: &mut impl Effects,
    ) -> Result<bool, ()> {
        use std::io::Read;
        let mut rest = bytes;
        while !rest.is_empty() {
            let state = self
                .session
                .read_tls(&mut rest)
                .map_err(|e| e.to_string())
                .and_then(|_| {
                    self.session
                        .process_new_packets()
                        .map_err(|e| e.to_string())
                });
            let state = match state {
                Ok(s) => s,
                Err(e) => {
                    driver.handle_closed(conn, CloseReason::Tls(e), now, fx);
                    return Err(());
                }
            };
            let waiting = state.plaintext_bytes_to_read();
            if !self.reported && !self.session.is_handshaking() {
                self.reported = true;
                self.report_secured(driver, conn, now, fx);
            }
            if waiting > 0 {
                self.plain.resize(waiting, 0);
                if self.session.reader().read_exact(&mut self.plain).is_ok() {
                    driver.handle_input(conn, &self.plain, now, fx);
                }
                self.plain.clear();
            }
        }
        Ok(self.session.wants_write())
    }

    fn report_secured(
        &mut self,
        driver: &mut Driver,
        conn: ConnId,
        now: Instant,
        fx: &mut impl Effects,
    ) {
        match &self.session {
            rustls::Connection::Server(s) => {
                let identity = s
                    .peer_certificates()
                    .and_then(<[_]>::first)
                    .map(|der| crate::tls::identity(der));
                driver.handle_secured(conn, identity, now, fx);
            }
            rustls::Connection::Client(_) => driver.handle_connected(conn, now, fx),
        }
    }

    /// Writes pending TLS records until none is left (`Ok`) or the socket is full
    /// (`WouldBlock`).
    fn drain<W: Write>(&mut self, sock: &mut W) -> io::Result<()> {
        while self.session.wants_write() {
            if self.session.write_tls(sock)? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }

    fn flush<W: Write>(
        &mut self,
        driver: &mut Driver,
        conn: ConnId,
        sock: &mut W,
        now: Instant,
        fx: &mut impl Effects,
    ) -> Flush {
        match self.drain(sock) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flush::Pending,
            Err(_) => {
                driver.handle_closed(conn, CloseReason::PeerClosed, now, fx);
                return Flush::Close(CloseReason::PeerClosed);
            }
        }
        let mut w = Encrypt { tls: self, sock };
        match driver.flush(conn, &mut w, now, fx) {
            Flush::Idle if self.session.wants_write() => Flush::Pending,
            Flush::Close(reason) => {
                self.session.send_close_notify();
                let _ = self.drain(sock);
                Flush::Close(reason)
            }
            other => other,
        }
    }
}

/// The writer the driver's outbox is flushed into for a TLS connection: encrypts, and says
/// `WouldBlock` while earlier records still wait for the socket.
#[cfg(feature = "tls")]
struct Encrypt<'a, W> {
    tls: &'a mut Tls,
    sock: &'a mut W,
}

#[cfg(feature = "tls")]
impl<W: Write> Write for Encrypt<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.tls.drain(self.sock)?;
        let n = self.tls.session.writer().write_vectored(bufs)?;
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.tls.drain(self.sock) {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
