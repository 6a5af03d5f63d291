//! The service manager's readiness protocol (systemd's `sd_notify`, `Type=notify`): one
//! datagram per state change to the Unix socket named by `$NOTIFY_SOCKET`.
//!
//! vtp sends `READY=1` with a `STATUS=` line once its listeners are bound and its seen-index is
//! loaded (so `systemctl start` returns when the broker really serves), and `STOPPING=1` when
//! it begins to shut down. Without `$NOTIFY_SOCKET` (not started by a service manager) nothing
//! is sent. A failed send is logged once and never stops the broker: readiness is advice to
//! the manager, not part of serving. Commands run by `--cmd` do not inherit the variable (see
//! [`crate::handlers::Command`]), so they cannot speak for the broker.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// The environment variable naming the manager's socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Longest `STATUS=` text sent (the manager shows one line).
pub const STATUS_LEN_MAX: usize = 512;

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// A send failed already (logged once).
    failed: AtomicBool,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` asks for, if set: a path, or `@name` for an abstract
    /// socket. `Ok(None)` when unset or empty.
    ///
    /// # Errors
    ///
    /// The variable names no usable address, or no datagram socket can be made.
    pub fn from_env() -> io::Result<Option<Self>> {
        match std::env::var_os(NOTIFY_SOCKET) {
            Some(v) if !v.is_empty() => Self::to(&v.to_string_lossy()).map(Some),
            _ => Ok(None),
        }
    }

    /// A notifier sending to `target` (a socket path, or `@name` for an abstract socket).
    ///
    /// # Errors
    ///
    /// As [`Notifier::from_env`].
    pub fn to(target: &str) -> io::Result<Self> {
        let addr = if let Some(name) = target.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        } else {
            SocketAddr::from_pathname(Path::new(target))?
        };
        Ok(Self {
            socket: UnixDatagram::unbound()?,
            addr,
            failed: AtomicBool::new(false),
        })
    }

    /// Sends `READY=1` and a status line.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}\n", status_line(status)));
    }

    /// Sends a status line.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}\n", status_line(status)));
    }

    /// Sends `STOPPING=1`.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=shutting down\n");
    }

    fn send(&self, message: &str) {
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.addr)
            && !self.failed.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                "cannot notify the service manager through ${NOTIFY_SOCKET}: {e} (further \
                 failures are not logged)"
            );
        }
    }
}

/// One line, bounded, without the newlines that would end the field.
fn status_line(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > STATUS_LEN_MAX {
        let mut cut = STATUS_LEN_MAX;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn listen(name: &str) -> (UnixDatagram, std::path::PathBuf) {
        let p = std::env::temp_dir().join(format!("vtp-notify-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let s = UnixDatagram::bind(&p).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (s, p)
    }

    fn recv(s: &UnixDatagram) -> String {
        let mut buf = [0u8; 2048];
        let n = s.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn ready_status_and_stopping_reach_the_socket() {
        let (s, p) = listen("path");
        let n = Notifier::to(&p.display().to_string()).unwrap();
        n.ready("serving\non two ports");
        assert_eq!(recv(&s), "READY=1\nSTATUS=serving on two ports\n");
        n.status(&"x".repeat(2000));
        assert_eq!(recv(&s).len(), "STATUS=\n".len() + STATUS_LEN_MAX);
        n.stopping();
        assert_eq!(recv(&s), "STOPPING=1\nSTATUS=shutting down\n");
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn abstract_sockets_work_and_a_missing_socket_is_only_logged() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("vtp-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let s = UnixDatagram::bind_addr(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Notifier::to(&format!("@{name}")).unwrap().ready("up");
        assert!(recv(&s).starts_with("READY=1\n"));
        // Nobody listening: the send fails, once logged, never panics.
        let gone = Notifier::to("/nonexistent/vtp-notify.sock").unwrap();
        gone.ready("up");
        gone.stopping();
        assert!(gone.failed.load(Ordering::Relaxed));
    }
}
