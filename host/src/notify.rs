//! The service manager's notification protocol (systemd's `sd_notify`, `Type=notify`): one
//! datagram per state change to the Unix socket named by `$NOTIFY_SOCKET`.
//!
//! vtp sends `READY=1` with a `STATUS=` line once its listeners are bound and its seen-index is
//! loaded (so `systemctl start` returns when the broker really serves), and `STOPPING=1` when
//! it begins to shut down. A configuration reload (SIGHUP) is bracketed by `RELOADING=1` (with
//! `MONOTONIC_USEC=`, the `CLOCK_MONOTONIC` time, as `Type=notify-reload` of systemd 253 and
//! later asks) before it is prepared and `READY=1` once it is applied or refused, so that
//! `systemctl reload` waits for it; with older systemd, `ExecReload=kill -HUP $MAINPID` still
//! works.
//!
//! With `WatchdogSec=` systemd sets `$WATCHDOG_USEC` (and `$WATCHDOG_PID`): a [`Watchdog`]
//! thread then sends `WATCHDOG=1` every half interval, but only while the event loop is seen
//! to turn ([`Metrics::probe_loop`], the check `/healthz` makes): a stuck loop withholds the
//! pings and systemd restarts the service.
//!
//! Without `$NOTIFY_SOCKET` (not started by a service manager) nothing is sent. A failed send
//! is logged once and never stops the broker: notifications are advice to the manager, not
//! part of serving; a send blocks for at most [`SEND_TIMEOUT`]. Commands run by `--cmd` do not
//! inherit the variables (see [`crate::handlers::Command`]), so they cannot speak for the
//! broker.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::ops::{LOOP_STUCK_AFTER, Metrics};

/// The environment variable naming the manager's socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Longest `STATUS=` text sent (the manager shows one line).
pub const STATUS_LEN_MAX: usize = 512;

/// The environment variable giving the watchdog interval in microseconds.
pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";

/// The environment variable naming the process the watchdog interval is for.
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";

/// Longest a notification may block on a full socket before it is given up (and logged).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Shortest time between two watchdog pings, whatever interval is asked for.
pub const WATCHDOG_PERIOD_MIN: Duration = Duration::from_millis(50);

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
        let socket = UnixDatagram::unbound()?;
        socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        Ok(Self {
            socket,
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

    /// Sends `RELOADING=1` with the time now (`MONOTONIC_USEC=`): a reload begins; end it with
    /// [`ready`](Self::ready), applied or refused.
    pub fn reloading(&self) {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading the configuration\n",
            monotonic_usec()
        ));
    }

    /// Sends `WATCHDOG=1`.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1\n");
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

/// The watchdog interval the service manager asks for: `$WATCHDOG_USEC` microseconds, unless
/// `$WATCHDOG_PID` names another process. `Ok(None)` when unset or meant for another process.
///
/// # Errors
///
/// A value that is not a positive number of microseconds, or a `$WATCHDOG_PID` that is not a
/// process id; the text says which.
pub fn watchdog_interval_from_env() -> Result<Option<Duration>, String> {
    let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
    watchdog_interval(
        var(WATCHDOG_USEC).as_deref(),
        var(WATCHDOG_PID).as_deref(),
        std::process::id(),
    )
}

fn watchdog_interval(
    usec: Option<&str>,
    pid: Option<&str>,
    ours: u32,
) -> Result<Option<Duration>, String> {
    let Some(usec) = usec else {
        return Ok(None);
    };
    if let Some(pid) = pid {
        let pid: u32 = pid
            .trim()
            .parse()
            .map_err(|_| format!("${WATCHDOG_PID}={pid:?} is not a process id"))?;
        if pid != ours {
            return Ok(None);
        }
    }
    match usec.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(Some(Duration::from_micros(n))),
        _ => Err(format!(
            "${WATCHDOG_USEC}={usec:?} is not a positive number of microseconds"
        )),
    }
}

/// `CLOCK_MONOTONIC` now, in microseconds (the clock systemd compares `MONOTONIC_USEC` with).
fn monotonic_usec() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000).saturating_add(nanos / 1000)
}

/// The watchdog thread (see the [module docs](self)); stops, and joins its thread, when
/// dropped.
#[derive(Debug)]
pub struct Watchdog {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Pings `notifier` every half `interval` (at least [`WATCHDOG_PERIOD_MIN`] apart), each
    /// time once the loop `metrics` watches is seen to turn. A loop that does not turn within
    /// a quarter of the interval (at most [`LOOP_STUCK_AFTER`]) is logged at ERROR, once per
    /// stall, and gets no ping until it turns again.
    ///
    /// # Errors
    ///
    /// The thread cannot be started.
    pub fn spawn(
        notifier: Arc<Notifier>,
        interval: Duration,
        metrics: Metrics,
    ) -> io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let period = (interval / 2).max(WATCHDOG_PERIOD_MIN);
        let stuck_after = (interval / 4).min(LOOP_STUCK_AFTER);
        let thread = std::thread::Builder::new()
            .name("vtp-watchdog".into())
            .spawn(move || {
                // Each wait ends early (and the thread returns) when the Watchdog is dropped.
                let wait = |d: Duration| matches!(stopped.recv_timeout(d), Err(RecvTimeoutError::Timeout));
                loop {
                    let probe = metrics.probe_loop(stuck_after);
                    let mut stalled = false;
                    loop {
                        match probe.verdict(&metrics) {
                            Some(true) => break,
                            Some(false) if !stalled => {
                                stalled = true;
                                tracing::error!(
                                    "the event loop has not turned for {:.1} s: systemd watchdog                                      pings withheld (systemd restarts vtp once WatchdogSec has                                      passed without one)",
                                    metrics.loop_idle().as_secs_f64()
                                );
                            }
                            _ => {}
                        }
                        if !wait(PROBE_POLL) {
                            return;
                        }
                    }
                    if stalled {
                        tracing::warn!("the event loop turns again: systemd watchdog pings resume");
                    }
                    notifier.watchdog();
                    if !wait(period) {
                        return;
                    }
                }
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How often the watchdog looks whether a woken loop has turned.
const PROBE_POLL: Duration = Duration::from_millis(5);

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
    use crate::ops::LOOP_IDLE_OK;
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
    fn reloading_carries_the_monotonic_time_and_watchdog_is_one_line() {
        let (s, p) = listen("reload");
        let n = Notifier::to(&p.display().to_string()).unwrap();
        let before = monotonic_usec();
        n.reloading();
        let msg = recv(&s);
        let usec: u64 = msg
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .and_then(|r| r.split('\n').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{msg}"));
        assert!(before <= usec && usec <= monotonic_usec(), "{msg}");
        assert!(
            msg.ends_with("\nSTATUS=reloading the configuration\n"),
            "{msg}"
        );
        n.watchdog();
        assert_eq!(recv(&s), "WATCHDOG=1\n");
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn the_watchdog_interval_is_for_us_only_and_checked() {
        let us = 4242;
        let ok = |usec, pid| watchdog_interval(usec, pid, us);
        assert_eq!(ok(None, None), Ok(None));
        assert_eq!(
            ok(Some("30000000"), None),
            Ok(Some(Duration::from_secs(30)))
        );
        assert_eq!(
            ok(Some("30000000"), Some("4242")),
            Ok(Some(Duration::from_secs(30)))
        );
        assert_eq!(ok(Some("30000000"), Some("1")), Ok(None));
        for bad in ["0", "-5", "30s", ""] {
            let e = ok(Some(bad), None).unwrap_err();
            assert!(e.contains("$WATCHDOG_USEC"), "{e}");
        }
        assert!(
            ok(Some("1000"), Some("x"))
                .unwrap_err()
                .contains("$WATCHDOG_PID")
        );
    }

    /// The event loop as the watchdog sees it: woken, it turns, unless it is stuck.
    struct Loop {
        observer: std::sync::Mutex<crate::ops::Observer>,
        stuck: AtomicBool,
    }

    impl std::task::Wake for Loop {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            if !self.stuck.load(Ordering::Acquire) {
                self.observer.lock().unwrap().heartbeat();
            }
        }
    }

    #[test]
    fn the_watchdog_pings_while_the_loop_turns_and_withholds_pings_while_it_is_stuck() {
        let (s, p) = listen("watchdog");
        let (metrics, observer) = Metrics::new(crate::ops::NodeInfo::default());
        let lp = Arc::new(Loop {
            observer: std::sync::Mutex::new(observer),
            stuck: AtomicBool::new(false),
        });
        let waker = std::task::Waker::from(Arc::clone(&lp));
        lp.observer.lock().unwrap().set_waker(&waker);
        let notifier = Arc::new(Notifier::to(&p.display().to_string()).unwrap());
        // Pings every 100 ms; a woken loop is stuck after 50 ms.
        let dog = Watchdog::spawn(notifier, Duration::from_millis(200), metrics.clone()).unwrap();
        // Past LOOP_IDLE_OK the loop is woken for every ping: those arrive too.
        let deadline = std::time::Instant::now() + LOOP_IDLE_OK + Duration::from_millis(500);
        while std::time::Instant::now() < deadline {
            assert_eq!(recv(&s), "WATCHDOG=1\n");
        }
        assert!(metrics.loop_turns() > 0, "the watchdog woke the loop");
        // Stuck: once the loop has been idle for LOOP_IDLE_OK, no ping comes, for many periods.
        lp.stuck.store(true, Ordering::Release);
        s.set_read_timeout(Some(Duration::from_millis(600)))
            .unwrap();
        let stall_deadline = std::time::Instant::now() + LOOP_IDLE_OK * 3;
        let mut buf = [0u8; 64];
        while s.recv(&mut buf).is_ok() {
            assert!(
                std::time::Instant::now() < stall_deadline,
                "pings go on while the loop is stuck"
            );
        }
        // The loop turns again (as a stuck loop does once it is free): pings resume.
        lp.stuck.store(false, Ordering::Release);
        lp.observer.lock().unwrap().heartbeat();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(recv(&s), "WATCHDOG=1\n");
        drop(dog);
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
