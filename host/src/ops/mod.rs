//! Operating a node: what it has done and how it is, for operators (metrics, health, status,
//! a periodic stats line).
//!
//! # Theory of operation
//!
//! The numbers come from the node's own reports, never from logs: the event loop owns an
//! [`Observer`] (given to [`HostEffects::with_metrics`](crate::effects::HostEffects::with_metrics)),
//! which sees every [`Event`](vtp_core::Event), every forward to a subscriber
//! ([`Effects::forwarded`](vtp_core::driver::Effects::forwarded)), every delivery to the
//! handlers and every turn of the loop
//! ([`Effects::heartbeat`](vtp_core::driver::Effects::heartbeat)). It counts them into a
//! [`Metrics`], shared with other threads:
//!
//! - counters and gauges are atomics the loop adds to (forwards, the most frequent, are
//!   counted in the observer and published once per turn of the loop);
//! - who is connected (each subscriber's address, certificate identity, filters and
//!   connection time; each upstream's state) is kept on a board behind a mutex the loop only
//!   ever *tries* to take: a change that finds it held waits in the observer's queue until a
//!   later turn, so a reader never makes the loop wait; readers copy the board a few hundred
//!   entries at a time;
//! - the store worker ([`StoreProbe`]: health, commit times), the handlers
//!   ([`HandlersProbe`]: drops), the filter engine ([`FilterCounts`]) and the Kafka bridge
//!   (its ingest's and publisher's counters, [`KafkaSnapshot`]) are read where they are, at
//!   read time.
//!
//! Readers: [`Metrics::snapshot`] (every number at once), [`Metrics::health`] (healthy or why
//! not), [`Metrics::status`] (the board), the stats line ([`stats`]) and, with the cargo
//! feature `http`, the HTTP endpoint (module `http`: `/metrics`, `/healthz`, `/status`).
//!
//! # Health
//!
//! The node is healthy while its loop turns and its store commits. The loop records the time
//! of each turn; a loop idle for a while (nothing to do before its next timer) is told apart
//! from a stuck one by waking it ([`Metrics::wake_loop`], the waker the runtime gave the
//! effects) and seeing whether it turns ([`Metrics::loop_turned_since`]): one check,
//! [`Metrics::probe_loop`], used by `/healthz` and by the systemd watchdog
//! ([`crate::notify::Watchdog`]). The store is unhealthy while its commits fail or once its
//! worker has stopped.

mod board;
#[cfg(feature = "http")]
pub mod http;
mod kafka;
mod observer;
#[cfg(feature = "http")]
pub mod page;
mod rate;
mod recent;
#[cfg(feature = "http")]
mod render;
#[cfg(feature = "http")]
pub mod sky;
pub mod stats;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::Waker;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vtp_core::RefusalCause;
#[cfg(doc)]
use vtp_core::Violation;
#[cfg(doc)]
use vtp_core::signature::StatusKind;

use crate::handlers::HandlersProbe;
use crate::store::{CommitSnapshot, StoreProbe};

use board::StatusBoard;
pub use board::{Subscriber, UpstreamState, UpstreamStatus};
pub use kafka::{ConsumerInfo, ConsumerSnapshot, KafkaInfo, KafkaSnapshot, ProducerSnapshot};
pub use observer::Observer;
pub use rate::MINUTES;
pub use recent::{PageEvent, RecentEvents, SkyPosition};

/// The shared side of the node's metrics: cheap to clone, read from any thread.
#[derive(Clone)]
pub struct Metrics(Arc<Shared>);

/// What a node is and serves, fixed at start: for the status page and the upstream labels.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    /// `broker` or `listener`.
    pub role: &'static str,
    /// The node's IVO (`--local-ivo`), if it has one.
    pub ivo: Option<String>,
    /// The listening sockets.
    pub listeners: Vec<ListenerInfo>,
    /// Each upstream's endpoints (as configured, tried in turn), in configuration order.
    pub upstreams: Vec<Vec<String>>,
}

/// One listening socket.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    /// `authors` or `subscribers`.
    pub serves: &'static str,
    /// The bound address (`127.0.0.1:8099`, `unix:/run/vtp.sock`).
    pub address: String,
    /// True for a TLS listener.
    pub tls: bool,
}

/// The filter engine's counters (see `XPathStats` in `vtp_core::filter`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilterCounts {
    /// Events whose tree was built for evaluation.
    pub events: u64,
    /// Events whose tree could not be built (every filter false).
    pub events_refused: u64,
    /// Filter evaluations.
    pub evaluations: u64,
    /// Evaluations that ended in an error.
    pub errors: u64,
    /// Evaluations skipped as over the cost budget.
    pub over_budget: u64,
}

/// A source of [`FilterCounts`], read at each scrape.
pub type FilterSource = Box<dyn Fn() -> FilterCounts + Send + Sync>;

/// Reads the catch-ups' counters ([`Metrics::attach_catch_up`]).
pub type CatchUpSource = Box<dyn Fn() -> Vec<CatchUpSnapshot> + Send + Sync>;

/// One catch-up's counters (`--catch-up URL`, the `catchup` module).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatchUpSnapshot {
    /// The archive API it reads.
    pub url: String,
    /// Events fetched and handed to the node (new or duplicate).
    pub events: u64,
    /// Failed requests and malformed answers (each retried).
    pub errors: u64,
    /// Gaps found (events the archive no longer held).
    pub gaps: u64,
    /// Events lost in those gaps.
    pub gap_events: u64,
    /// The last sequence number committed.
    pub position: u64,
}

/// Where accepted events come from, as the metrics' `source` label says it.
pub const SOURCES: [&str; 3] = ["author", "upstream", "external"];

/// Connection roles, as the metrics' `role` label says them, in the order of
/// [`Snapshot::connections`]: authors submitting, subscribers fed, our subscriptions to
/// upstreams, our own submissions (`vtp send`).
pub const ROLES: [&str; 5] = ["author", "subscriber", "upstream", "submission", "external"];

/// Every value of the `reason` label of `vtp_naks_total`: the kinds of fault an author's
/// submission is naked for ([`Violation::kind`]), `store_unavailable` for a new event the
/// store cannot record now, `oversize` for an external source's record over the size bound,
/// and `other` for any other.
pub const NAK_REASONS: [&str; 11] = [
    "framing",
    "unparsable",
    "not_an_event",
    "bad_ivorn",
    "version",
    "schema",
    "seen_quota",
    "store_unavailable",
    "oversize",
    "signature",
    "other",
];

/// The index in [`NAK_REASONS`] of a nak for `reason` ([`Violation::kind`] or
/// `store_unavailable`); `other` for anything else.
fn nak_index(reason: &str) -> usize {
    NAK_REASONS
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(NAK_REASONS.len() - 1)
}

/// Every number at one moment (each read on its own: a count may move while others are read).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// How long the metrics have been kept (since the node started).
    pub uptime: Duration,
    /// Events received, by [`SOURCES`]: accepted, duplicates, naked (authors), invalid
    /// events acked and dropped (upstreams) and records skipped (external sources).
    pub received: [u64; 3],
    /// New events accepted, by [`SOURCES`].
    pub accepted: [u64; 3],
    /// Duplicates dropped, by [`SOURCES`].
    pub duplicates: [u64; 3],
    /// Naks sent to authors, by reason ([`NAK_REASONS`] order).
    pub naks: Vec<(&'static str, u64)>,
    /// Invalid events from upstreams, acked and dropped.
    pub upstream_invalid: u64,
    /// New events accepted, by signature status ([`StatusKind::ALL`] order; all zero with
    /// signatures off).
    pub signatures: [u64; 6],
    /// Events refused for their signature (`--signatures require`), by status: naked, dropped
    /// (upstreams: those reported, see [`Violation`]'s log limit) or skipped.
    pub signatures_refused: [u64; 6],
    /// Events queued for subscribers (one per event per subscriber).
    pub forwards: u64,
    /// Events handed to the handlers (`--print-event`, `--save-event`, `--cmd`).
    pub handler_deliveries: u64,
    /// Events the handlers' queue dropped (`None`: no handlers).
    pub handler_dropped: Option<u64>,
    /// Open connections by [`ROLES`].
    pub connections: [u64; 5],
    /// Accepts refused, by [`RefusalCause::ALL`] (refusals beyond the first few of a window are
    /// counted when the window ends).
    pub refusals: [u64; 5],
    /// Protocol violations reported (beyond the first few per connection and window, they are
    /// counted by the node but not reported).
    pub violations: u64,
    /// Naks received from subscribers.
    pub subscriber_naks: u64,
    /// UNIX time of the last event accepted, if any.
    pub last_event_unix: Option<f64>,
    /// Each upstream, in configuration order.
    pub upstreams: Vec<UpstreamSnapshot>,
    /// The filter engine's counters, if it has any.
    pub filters: Option<FilterCounts>,
    /// The store, if the node has one.
    pub store: Option<StoreSnapshot>,
    /// Turns of the event loop.
    pub loop_turns: u64,
    /// Time since the loop last turned.
    pub loop_idle: Duration,
    /// The Kafka bridge, when it runs.
    pub kafka: Option<KafkaSnapshot>,
    /// The catch-ups, one per `--catch-up` URL (empty when none runs).
    pub catch_up: Vec<CatchUpSnapshot>,
}

impl Snapshot {
    /// Subscribers connected now.
    pub fn subscribers(&self) -> u64 {
        self.connections[1]
    }

    /// Naks sent to authors, every reason.
    pub fn naks_total(&self) -> u64 {
        self.naks.iter().map(|(_, n)| n).sum()
    }

    /// Upstreams connected now.
    pub fn upstreams_up(&self) -> usize {
        self.upstreams.iter().filter(|u| u.up).count()
    }
}

/// A loop that turned less than this ago is alive without being woken.
pub const LOOP_IDLE_OK: Duration = Duration::from_secs(1);

/// A loop woken by `/healthz` (or the systemd watchdog) that has not turned within this is
/// reported stuck.
pub const LOOP_STUCK_AFTER: Duration = Duration::from_secs(2);

/// One check of the event loop's liveness, begun by [`Metrics::probe_loop`].
#[derive(Debug, Clone, Copy)]
pub struct LoopProbe {
    /// The loop's turns when the check began.
    turns: u64,
    /// Decided when it began (a loop that turned recently, or no runtime to wake).
    decided: Option<bool>,
    /// A woken loop that has not turned by then is stuck.
    deadline: Instant,
}

impl LoopProbe {
    /// `Some(true)`: the loop is alive (it turned since the check began, or had just turned);
    /// `Some(false)`: it is stuck (it has not turned by the deadline; it becomes alive again
    /// as soon as it turns); `None`: not known yet, ask again shortly (a few milliseconds).
    pub fn verdict(&self, metrics: &Metrics) -> Option<bool> {
        if self.decided == Some(true) || metrics.loop_turned_since(self.turns) {
            return Some(true);
        }
        if self.decided.is_some() || Instant::now() >= self.deadline {
            return Some(false);
        }
        None
    }
}

/// One upstream in a [`Snapshot`].
#[derive(Debug, Clone, Default)]
pub struct UpstreamSnapshot {
    /// Its endpoints, space separated: the `upstream` label.
    pub label: String,
    /// Connected now.
    pub up: bool,
    /// UNIX time of the last event it sent (new or duplicate), if any.
    pub last_event_unix: Option<f64>,
    /// Reconnections scheduled.
    pub reconnects: u64,
}

/// The store in a [`Snapshot`].
#[derive(Debug, Clone, Default)]
pub struct StoreSnapshot {
    /// Its commits succeed.
    pub healthy: bool,
    /// Its worker has stopped.
    pub stopped: bool,
    /// Commit durations.
    pub commits: CommitSnapshot,
}

/// The node's health: `Ok`, or the reasons it is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The loop turns and the store commits.
    Ok,
    /// Why not, one line each.
    Unhealthy(Vec<String>),
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ok => f.write_str("ok"),
            Self::Unhealthy(reasons) => f.write_str(&reasons.join("; ")),
        }
    }
}

impl Metrics {
    /// Metrics for a node described by `info`, and the observer its loop feeds them with
    /// (give it to [`HostEffects::with_metrics`](crate::effects::HostEffects::with_metrics)).
    pub fn new(info: NodeInfo) -> (Self, Observer) {
        let upstreams = info
            .upstreams
            .iter()
            .map(|endpoints| UpstreamCounters {
                label: endpoints.join(" "),
                ..UpstreamCounters::default()
            })
            .collect();
        let board = StatusBoard::new(info.upstreams.len());
        let shared = Arc::new(Shared {
            start: Instant::now(),
            info,
            counters: Counters::default(),
            upstreams,
            board: Mutex::new(board),
            waker: Mutex::new(None),
            store: OnceLock::new(),
            handlers: OnceLock::new(),
            filters: OnceLock::new(),
            kafka: OnceLock::new(),
            catch_up: OnceLock::new(),
            minutes: rate::MinuteRing::new(),
            recent: OnceLock::new(),
            #[cfg(feature = "archive")]
            archive: OnceLock::new(),
        });
        let observer = Observer::new(Arc::clone(&shared));
        (Self(shared), observer)
    }

    /// Reads the store's health and commit times from `probe` from now on.
    pub fn attach_store(&self, probe: StoreProbe) {
        let _ = self.0.store.set(probe);
    }

    /// Serves the archive's API and reads its counters from now on.
    #[cfg(feature = "archive")]
    pub fn attach_archive(&self, archive: ArchiveAttached) {
        let _ = self.0.archive.set(archive);
    }

    /// The archive, when one is attached.
    #[cfg(feature = "archive")]
    pub fn archive(&self) -> Option<&ArchiveAttached> {
        self.0.archive.get()
    }

    /// Reads the handlers' drops from `probe` from now on.
    pub fn attach_handlers(&self, probe: HandlersProbe) {
        let _ = self.0.handlers.set(probe);
    }

    /// Reads the filter engine's counters with `source` from now on.
    pub fn attach_filters(&self, source: impl Fn() -> FilterCounts + Send + Sync + 'static) {
        let _ = self.0.filters.set(Box::new(source));
    }

    /// Reads the Kafka bridge's counters (its ingest's, its publisher's, each if it runs)
    /// from now on; `info` is what it was started with.
    #[cfg(feature = "kafka")]
    pub fn attach_kafka(
        &self,
        info: KafkaInfo,
        ingest: Option<Arc<crate::kafka::IngestStats>>,
        publish: Option<Arc<crate::kafka::PublishStats>>,
    ) {
        let _ = self
            .0
            .kafka
            .set(kafka::KafkaProbe::new(info, ingest, publish));
    }

    /// Reads the catch-ups' counters through `source` from now on.
    pub fn attach_catch_up(
        &self,
        source: impl Fn() -> Vec<CatchUpSnapshot> + Send + Sync + 'static,
    ) {
        let _ = self.0.catch_up.set(Box::new(source));
    }

    /// Reads the latest events for the status page from `source` (the archive) from now on;
    /// without one the page says the archive is off.
    pub fn attach_recent_events(&self, source: impl RecentEvents + 'static) {
        let _ = self.0.recent.set(Box::new(source));
    }

    /// The source of the latest events, once attached.
    pub fn recent_events(&self) -> Option<&dyn RecentEvents> {
        self.0.recent.get().map(|r| &**r)
    }

    /// Events accepted in each of the [`MINUTES`] minutes (24 hours) up to the minute of
    /// `now_unix_ms` (milliseconds since the UNIX epoch), oldest first, the current minute
    /// last.
    pub fn per_minute(&self, now_unix_ms: u64) -> Vec<u64> {
        self.0.minutes.per_minute(now_unix_ms)
    }

    /// What the node is and serves.
    pub fn info(&self) -> &NodeInfo {
        &self.0.info
    }

    /// What the Kafka bridge was started with, when it runs.
    pub fn kafka_info(&self) -> Option<&KafkaInfo> {
        self.0.kafka.get().map(|k| &k.info)
    }

    /// Every number now.
    pub fn snapshot(&self) -> Snapshot {
        let s = &self.0;
        let c = &s.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let pair = |a: &[AtomicU64; 3]| [load(&a[0]), load(&a[1]), load(&a[2])];
        let unix = |a: &AtomicU64| match load(a) {
            0 => None,
            ms => Some(ms as f64 / 1000.0),
        };
        Snapshot {
            uptime: s.start.elapsed(),
            received: pair(&c.received),
            accepted: pair(&c.accepted),
            duplicates: pair(&c.duplicates),
            naks: NAK_REASONS
                .into_iter()
                .zip(&c.naks)
                .map(|(reason, n)| (reason, load(n)))
                .collect(),
            upstream_invalid: load(&c.upstream_invalid),
            signatures: std::array::from_fn(|i| load(&c.signatures[i])),
            signatures_refused: std::array::from_fn(|i| load(&c.signatures_refused[i])),
            forwards: load(&c.forwards),
            handler_deliveries: load(&c.handler_deliveries),
            handler_dropped: s.handlers.get().map(HandlersProbe::dropped),
            connections: std::array::from_fn(|i| load(&c.connections[i])),
            refusals: std::array::from_fn(|i| load(&c.refusals[i])),
            violations: load(&c.violations),
            subscriber_naks: load(&c.subscriber_naks),
            last_event_unix: unix(&c.last_event_unix_ms),
            upstreams: s
                .upstreams
                .iter()
                .map(|u| UpstreamSnapshot {
                    label: u.label.clone(),
                    up: load(&u.up) != 0,
                    last_event_unix: unix(&u.last_event_unix_ms),
                    reconnects: load(&u.reconnects),
                })
                .collect(),
            filters: s.filters.get().map(|f| f()),
            store: s.store.get().map(|p| StoreSnapshot {
                healthy: p.is_healthy(),
                stopped: p.is_stopped(),
                commits: p.commits(),
            }),
            loop_turns: load(&c.turns),
            loop_idle: self.loop_idle(),
            kafka: s.kafka.get().map(|k| KafkaSnapshot {
                skipped: NAK_REASONS
                    .into_iter()
                    .zip(&c.external_skipped)
                    .map(|(reason, n)| (reason, load(n)))
                    .collect(),
                ..k.read()
            }),
            catch_up: s.catch_up.get().map(|f| f()).unwrap_or_default(),
        }
    }

    /// Time since the event loop last turned (since start, before its first turn).
    pub fn loop_idle(&self) -> Duration {
        let beat = Duration::from_nanos(self.0.counters.heartbeat_nanos.load(Ordering::Acquire));
        self.0.start.elapsed().saturating_sub(beat)
    }

    /// Turns of the event loop so far.
    pub fn loop_turns(&self) -> u64 {
        self.0.counters.turns.load(Ordering::Acquire)
    }

    /// True if the loop turned since it had turned `turns` times ([`Metrics::loop_turns`]).
    pub fn loop_turned_since(&self, turns: u64) -> bool {
        self.loop_turns() > turns
    }

    /// Wakes the event loop (with the waker its runtime gave the effects), so that it turns
    /// once even with nothing to do; false if no runtime has given a waker yet.
    pub fn wake_loop(&self) -> bool {
        let waker = self.0.waker.lock().unwrap_or_else(PoisonError::into_inner);
        match &*waker {
            Some(w) => {
                w.wake_by_ref();
                true
            }
            None => false,
        }
    }

    /// Starts a check of the event loop's liveness, decided by [`LoopProbe::verdict`]: a loop
    /// that turned within [`LOOP_IDLE_OK`] is alive at once; an idle one is woken
    /// ([`Metrics::wake_loop`]) and is alive once it turns, stuck if it has not turned
    /// `stuck_after` from now. The one liveness check of `/healthz` and of the systemd
    /// watchdog ([`crate::notify::Watchdog`]).
    pub fn probe_loop(&self, stuck_after: Duration) -> LoopProbe {
        let idle = self.loop_idle();
        let fresh = idle < LOOP_IDLE_OK;
        let turns = self.loop_turns();
        let woken = !fresh && self.wake_loop();
        LoopProbe {
            turns,
            // No runtime to wake yet: decided now, by how long the loop has been idle.
            decided: match (fresh, woken) {
                (true, _) => Some(true),
                (false, true) => None,
                (false, false) => Some(idle < stuck_after),
            },
            deadline: Instant::now() + stuck_after,
        }
    }

    /// The node's health as far as it can be told without waiting: the store, and a loop that
    /// has not turned for `stuck_after` (the caller should first wake it and give it that
    /// long: see the [module docs](self), "Health").
    pub fn health(&self, stuck_after: Duration) -> Health {
        let mut reasons = Vec::new();
        let idle = self.loop_idle();
        if idle >= stuck_after {
            reasons.push(format!(
                "event loop has not turned for {:.1} s",
                idle.as_secs_f64()
            ));
        }
        if let Some(store) = self.0.store.get() {
            if store.is_stopped() {
                reasons.push("seen-index store stopped".to_owned());
            } else if !store.is_healthy() {
                reasons.push("seen-index store commits failing".to_owned());
            }
        }
        if reasons.is_empty() {
            Health::Ok
        } else {
            Health::Unhealthy(reasons)
        }
    }

    /// The subscribers (at most `max`, in connection order) and the upstreams, copied from the
    /// board a few hundred at a time; with the number of subscribers.
    pub fn status(&self, max: usize) -> (Vec<Subscriber>, usize, Vec<UpstreamStatus>) {
        board::read(&self.0.board, max)
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("info", &self.0.info)
            .finish_non_exhaustive()
    }
}

/// State shared by the observer (the loop) and the readers.
struct Shared {
    start: Instant,
    info: NodeInfo,
    counters: Counters,
    upstreams: Vec<UpstreamCounters>,
    board: Mutex<StatusBoard>,
    /// The loop's waker ([`Metrics::wake_loop`]).
    waker: Mutex<Option<Waker>>,
    store: OnceLock<StoreProbe>,
    handlers: OnceLock<HandlersProbe>,
    filters: OnceLock<FilterSource>,
    kafka: OnceLock<kafka::KafkaProbe>,
    catch_up: OnceLock<CatchUpSource>,
    /// Events accepted per minute (the status page's chart).
    minutes: rate::MinuteRing,
    /// The latest events (the archive), for the status page.
    recent: OnceLock<Box<dyn RecentEvents>>,
    /// The archive's counters and its API (feature `archive`).
    #[cfg(feature = "archive")]
    archive: OnceLock<ArchiveAttached>,
}

/// What the metrics and the HTTP endpoint read from the archive.
#[cfg(feature = "archive")]
#[derive(Debug, Clone)]
pub struct ArchiveAttached {
    /// Its counters.
    pub probe: crate::archive::ArchiveProbe,
    /// Its read-only connections.
    pub readers: crate::archive::Readers,
    /// Who may read it.
    pub access: crate::archive::Access,
}

/// Written by the loop only; read by anyone.
#[derive(Default)]
struct Counters {
    received: [AtomicU64; 3],
    accepted: [AtomicU64; 3],
    duplicates: [AtomicU64; 3],
    naks: [AtomicU64; NAK_REASONS.len()],
    /// Records of external sources skipped, by kind of fault ([`NAK_REASONS`]).
    external_skipped: [AtomicU64; NAK_REASONS.len()],
    upstream_invalid: AtomicU64,
    signatures: [AtomicU64; 6],
    signatures_refused: [AtomicU64; 6],
    forwards: AtomicU64,
    handler_deliveries: AtomicU64,
    connections: [AtomicU64; 5],
    refusals: [AtomicU64; RefusalCause::ALL.len()],
    violations: AtomicU64,
    subscriber_naks: AtomicU64,
    last_event_unix_ms: AtomicU64,
    turns: AtomicU64,
    /// When the loop last turned, in nanoseconds since [`Shared::start`].
    heartbeat_nanos: AtomicU64,
}

/// One upstream's counters.
#[derive(Default)]
struct UpstreamCounters {
    label: String,
    /// 1 while connected.
    up: AtomicU64,
    last_event_unix_ms: AtomicU64,
    reconnects: AtomicU64,
}

/// Now, in milliseconds since the UNIX epoch (at least 1, so that 0 can mean "never").
fn unix_ms_now() -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    u64::try_from(ms).unwrap_or(u64::MAX).max(1)
}

/// The resident set size of this process, from `/proc/self/status` (`VmRSS`), in bytes.
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests;
