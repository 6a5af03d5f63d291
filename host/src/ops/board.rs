//! The status board: who is connected, for the status page. The loop writes it only with
//! `try_lock` (see [`Pending`]); readers copy it in chunks, so neither holds the lock for long.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, PoisonError, TryLockError};

use vtp_core::{ConnId, Peer};

/// Who is connected now: subscribers by connection, upstreams by configuration index.
#[derive(Debug, Default)]
pub(super) struct StatusBoard {
    subscribers: BTreeMap<ConnId, Subscriber>,
    upstreams: Vec<UpstreamStatus>,
}

/// One connected subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    /// Its connection.
    pub conn: ConnId,
    /// Its address.
    pub peer: Option<Peer>,
    /// Its TLS client certificate's identity, if it presented one.
    pub identity: Option<String>,
    /// The filters it set (accepted ones only).
    pub filters: Vec<Arc<str>>,
    /// When it connected, in milliseconds since the UNIX epoch.
    pub since_unix_ms: u64,
}

/// One upstream's connection state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamStatus {
    /// Its state.
    pub state: UpstreamState,
    /// When it entered this state, in milliseconds since the UNIX epoch (0: at start).
    pub since_unix_ms: u64,
    /// Why its last connection ended or failed, if it did.
    pub last_error: Option<String>,
    /// The endpoint of the next attempt, while retrying.
    pub next_endpoint: Option<Arc<str>>,
    /// When the next attempt is due, while retrying, in milliseconds since the UNIX epoch.
    pub retry_at_unix_ms: Option<u64>,
}

/// Where an upstream subscription stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UpstreamState {
    /// Dialling for the first time.
    #[default]
    Connecting,
    /// Connected.
    Up,
    /// Waiting to reconnect.
    Retrying,
}

impl UpstreamState {
    /// `connecting`, `up` or `retrying`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Up => "up",
            Self::Retrying => "retrying",
        }
    }
}

impl StatusBoard {
    pub(super) fn new(upstreams: usize) -> Self {
        Self {
            subscribers: BTreeMap::new(),
            upstreams: vec![UpstreamStatus::default(); upstreams],
        }
    }

    fn apply(&mut self, change: Change) {
        match change {
            Change::Subscribed(s) => {
                self.subscribers.insert(s.conn, s);
            }
            Change::Unsubscribed(conn) => {
                self.subscribers.remove(&conn);
            }
            Change::Filters(conn, filters) => {
                if let Some(s) = self.subscribers.get_mut(&conn) {
                    s.filters = filters;
                }
            }
            Change::Upstream(i, status) => {
                if let Some(slot) = self.upstreams.get_mut(i) {
                    *slot = status;
                }
            }
            Change::UpstreamError(i, error) => {
                if let Some(slot) = self.upstreams.get_mut(i) {
                    slot.last_error = Some(error);
                }
            }
        }
    }
}

/// A change to the board, made by the loop.
#[derive(Debug)]
pub(super) enum Change {
    Subscribed(Subscriber),
    Unsubscribed(ConnId),
    Filters(ConnId, Vec<Arc<str>>),
    Upstream(usize, UpstreamStatus),
    /// Sets the upstream's last error, keeping its state.
    UpstreamError(usize, String),
}

/// The loop's changes not yet on the board: each is applied when the loop next finds the
/// board's lock free (it never waits for it), unless [`PENDING_MAX`] pile up (a reader stuck
/// while holding it), when it waits once.
#[derive(Debug, Default)]
pub(super) struct Pending(Vec<Change>);

impl Pending {
    pub(super) fn push(&mut self, change: Change) {
        self.0.push(change);
    }

    /// Applies what is pending if the lock is free (or too much is pending).
    pub(super) fn flush(&mut self, board: &Mutex<StatusBoard>) {
        if self.0.is_empty() {
            return;
        }
        let mut board = match board.try_lock() {
            Ok(b) => b,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) if self.0.len() < PENDING_MAX => return,
            Err(TryLockError::WouldBlock) => board.lock().unwrap_or_else(PoisonError::into_inner),
        };
        for change in self.0.drain(..) {
            board.apply(change);
        }
    }
}

/// Most changes the loop queues while a reader holds the board before it waits for the lock.
const PENDING_MAX: usize = 65_536;

/// Subscribers copied per lock, so a reader holds the board for microseconds at a time.
const CHUNK: usize = 256;

/// The first `max` subscribers, their number, and the upstreams.
pub(super) fn read(
    board: &Mutex<StatusBoard>,
    max: usize,
) -> (Vec<Subscriber>, usize, Vec<UpstreamStatus>) {
    let lock = || board.lock().unwrap_or_else(PoisonError::into_inner);
    let (total, upstreams) = {
        let b = lock();
        (b.subscribers.len(), b.upstreams.clone())
    };
    let mut out: Vec<Subscriber> = Vec::with_capacity(total.min(max));
    let mut after: Option<ConnId> = None;
    while out.len() < max {
        let b = lock();
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let before = out.len();
        out.extend(
            b.subscribers
                .range((lower, Bound::Unbounded))
                .take(CHUNK.min(max - before))
                .map(|(_, s)| s.clone()),
        );
        drop(b);
        if out.len() == before {
            break;
        }
        after = out.last().map(|s| s.conn);
    }
    (out, total, upstreams)
}
