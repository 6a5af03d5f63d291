//! The file-descriptor budget of a broker.
//!
//! Every accepted connection holds one file descriptor. A broker that reaches its
//! `RLIMIT_NOFILE` can no longer accept: connections pile up in the kernel's listen queue and
//! each slot freed is refilled from it, so a few hundred idle connections from one address
//! lock every other author out. Two things prevent that:
//!
//! - at start, [`raise_nofile`] raises the soft limit to the hard one (the soft limit is often
//!   1,024 while the hard one is far higher), and
//! - [`connection_cap`] derives the most connections per listener role that fit under the
//!   limit once everything else a broker keeps open is set aside ([`FdReserve`]), so the node
//!   refuses (accepts and closes at once, keeping the queue draining) before the process runs
//!   out of descriptors.

use std::io;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// The `RLIMIT_NOFILE` of this process; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit: the most descriptors the process may have open.
    pub soft: Option<u64>,
    /// The hard limit: the most the soft limit may be raised to without privileges.
    pub hard: Option<u64>,
}

impl NofileLimit {
    /// The current limits of this process.
    pub fn current() -> Self {
        let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
        Self {
            soft: current,
            hard: maximum,
        }
    }
}

/// What [`raise_nofile`] did.
#[derive(Debug)]
pub struct Raised {
    /// The limits before.
    pub before: NofileLimit,
    /// The limits after (the same as before when nothing was raised).
    pub after: NofileLimit,
    /// Why the soft limit could not be raised, if it could not.
    pub error: Option<io::Error>,
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (an unlimited hard limit: to
/// the kernel's ceiling, `/proc/sys/fs/nr_open`, 1,048,576 where that cannot be read). Never
/// lowers it. The returned numbers are for the start-up log.
pub fn raise_nofile() -> Raised {
    let before = NofileLimit::current();
    let target = before.hard.unwrap_or_else(nr_open);
    let error = match before.soft {
        Some(soft) if target > soft => setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(target),
                maximum: before.hard,
            },
        )
        .err()
        .map(io::Error::from),
        _ => None,
    };
    Raised {
        before,
        after: NofileLimit::current(),
        error,
    }
}

/// The kernel's ceiling on a soft `RLIMIT_NOFILE` when the hard limit is unlimited.
fn nr_open() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(NR_OPEN_DEFAULT)
}

/// Linux's default `fs.nr_open`.
const NR_OPEN_DEFAULT: u64 = 1 << 20;

/// What a broker keeps open besides the connections it accepts: set aside before the
/// connection cap is derived ([`FdReserve::total`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FdReserve {
    /// Listening sockets (a bare port binds two: IPv4 and IPv6).
    pub listeners: usize,
    /// Upstream subscriptions: one connection each, plus a descriptor while its name is
    /// resolved.
    pub upstreams: usize,
    /// Handler worker threads: each may run one `--cmd` (three pipes) or write one
    /// `--save-event` file at a time.
    pub handler_workers: usize,
    /// Whether a seen-index store is open (its log, lock and directory handles, a compaction
    /// file).
    pub store: bool,
    /// Whether the HTTP endpoint is served (`--http`: its listener, connections and runtime).
    pub http: bool,
}

/// Descriptors set aside whatever the configuration: standard streams, the runtime's poller,
/// its wakers and timers, the signal handler, the resolver, files read at start, and slack for
/// connections being closed while new ones are accepted.
pub const FIXED_RESERVE: u64 = 64;
/// Descriptors set aside for the seen-index store.
pub const STORE_FDS: u64 = 8;
/// Descriptors set aside for the HTTP endpoint: its listener, its connections (16 at most,
/// `vtp_host::ops::http::HttpLimits`) and its runtime's poller and waker.
pub const HTTP_FDS: u64 = 20;
/// Descriptors set aside per upstream subscription.
pub const FDS_PER_UPSTREAM: u64 = 2;
/// Descriptors set aside per handler worker (three pipes of a `--cmd` run and a pidfd, or a
/// `--save-event` file and its directory).
pub const FDS_PER_HANDLER_WORKER: u64 = 4;

impl FdReserve {
    /// The descriptors set aside: [`FIXED_RESERVE`], plus one per listener,
    /// [`FDS_PER_UPSTREAM`] per upstream, [`FDS_PER_HANDLER_WORKER`] per handler worker and
    /// [`STORE_FDS`] with a store and [`HTTP_FDS`] with the HTTP endpoint.
    pub fn total(&self) -> u64 {
        let n = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        FIXED_RESERVE
            .saturating_add(n(self.listeners))
            .saturating_add(n(self.upstreams).saturating_mul(FDS_PER_UPSTREAM))
            .saturating_add(n(self.handler_workers).saturating_mul(FDS_PER_HANDLER_WORKER))
            .saturating_add(if self.store { STORE_FDS } else { 0 })
            .saturating_add(if self.http { HTTP_FDS } else { 0 })
    }
}

/// The most connections each of `roles` listener roles (authors, subscribers: 1 or 2) may
/// hold so that all of them together, plus `reserve`, stay within `fd_limit` (the soft
/// `RLIMIT_NOFILE`; `None` is unlimited, and so is the cap). At least 1, even when the
/// reserve alone exceeds the limit (the caller should warn then: [`FdReserve::total`]).
pub fn connection_cap(fd_limit: Option<u64>, reserve: &FdReserve, roles: usize) -> usize {
    let Some(limit) = fd_limit else {
        return usize::MAX;
    };
    let roles = u64::try_from(roles.max(1)).unwrap_or(u64::MAX);
    let per_role = limit.saturating_sub(reserve.total()) / roles;
    usize::try_from(per_role).unwrap_or(usize::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BROKER: FdReserve = FdReserve {
        listeners: 4,
        upstreams: 1,
        handler_workers: 4,
        store: true,
        http: false,
    };

    #[test]
    fn the_reserve_counts_every_kind_of_descriptor() {
        assert_eq!(FdReserve::default().total(), FIXED_RESERVE);
        assert_eq!(BROKER.total(), 64 + 4 + 2 + 16 + 8);
        let with_http = FdReserve {
            http: true,
            ..BROKER
        };
        assert_eq!(with_http.total(), BROKER.total() + HTTP_FDS);
    }

    #[test]
    fn the_cap_splits_what_is_left_between_the_roles() {
        // 256 - 94 = 162 descriptors for connections: 81 per role with both roles.
        assert_eq!(connection_cap(Some(256), &BROKER, 2), 81);
        assert_eq!(connection_cap(Some(256), &BROKER, 1), 162);
        // Authors and subscribers at their caps plus the reserve stay within the limit.
        for limit in [100, 256, 1024, 4096, 1 << 20] {
            let cap = connection_cap(Some(limit), &BROKER, 2) as u64;
            assert!(2 * cap + BROKER.total() <= limit.max(BROKER.total() + 2));
        }
    }

    #[test]
    fn an_unlimited_limit_gives_an_unlimited_cap_and_a_tiny_one_still_one() {
        assert_eq!(connection_cap(None, &BROKER, 2), usize::MAX);
        assert_eq!(connection_cap(Some(10), &BROKER, 2), 1);
        assert_eq!(connection_cap(Some(0), &FdReserve::default(), 0), 1);
    }

    #[test]
    fn raising_never_lowers_and_reaches_the_hard_limit() {
        let raised = raise_nofile();
        assert!(raised.error.is_none(), "{:?}", raised.error);
        let (before, after) = (raised.before, raised.after);
        assert_eq!(after.hard, before.hard, "the hard limit is left alone");
        if let (Some(soft), Some(hard)) = (before.soft, before.hard) {
            assert_eq!(after.soft, Some(hard.max(soft)));
        }
        // Again: nothing left to raise.
        let again = raise_nofile();
        assert_eq!(again.before, again.after);
    }
}
