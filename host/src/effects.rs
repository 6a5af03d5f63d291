//! The effects every runtime hands to its [`Driver`](vtp_core::driver::Driver): the durable
//! seen-index, the event handlers, logging, and an optional callback for embedding programs.
//!
//! # Durability
//!
//! The node numbers its persists 1, 2, 3... and holds the receipt and forwards of each new
//! event until [`Effects::durable_persists`] says its record is durable. [`HostEffects`] keeps,
//! for every persist not yet durable, the [`StoreWorker`] sequence number it was queued under,
//! and answers from [`StoreWorker::durable_seq`]; the worker wakes the runtime's loop after each
//! commit (the waker from [`Effects::set_durable_waker`]). Without a store every persist counts
//! as durable at once.
//!
//! When the store cannot take a persist (its queue is full: [`STORE_QUEUE_MAX`] operations are
//! waiting for a slow or failing disk; logged as an error), every persist so far counts as
//! durable: the receipts and forwards held for them go out without durable records. A failing
//! disk thus degrades to the `Async` guarantee instead of stopping the broker or letting the
//! held output grow without bound; once the disk catches up, the guarantee is back. Likewise,
//! once the store thread has stopped, every persist counts as durable.
//!
//! # Handler spool
//!
//! Given a store with a handler spool ([`store::open_with_spool`](crate::store::open_with_spool))
//! and handlers, [`HostEffects`] links them: each delivery goes to the store worker
//! ([`StoreWorker`] spools it in the commit of the operations sent before it, and queues it for
//! the handlers once that commit is durable) instead of straight to the handlers. With the
//! node's [`DeliveryTiming::BeforeRecord`](vtp_core::config::DeliveryTiming::BeforeRecord) the
//! delivery comes just before its event's `Persist`, so the receipt held behind that record is
//! never sent for an event whose handler work is not on disk. Deliveries sent to the store and
//! not durable yet are bounded ([`SPOOL_INFLIGHT_BYTES_MAX`]); beyond that, and when the store
//! cannot take one, a delivery goes straight to the handlers' queue, as without a spool.
//!
//! While the store's commits fail ([`StoreWorker::is_healthy`] is false, a full or failing
//! disk) [`Effects::store_healthy`] says so, and the node naks an author's new event at once
//! ("storage unavailable") instead of holding its ack until the author's deadline.
//!
//! [`STORE_QUEUE_MAX`]: crate::store::STORE_QUEUE_MAX

use std::collections::VecDeque;
use std::task::Waker;
use std::time::Duration;

use vtp_core::driver::{Effects, StoreOp};
use vtp_core::signature::{Verdict, VerifyJob};
use vtp_core::{
    CloseClass, CloseReason, ConnId, ConnRole, Delivery, Event, EventKey, Remote, SeenLevel,
};

use crate::external::Commits;
use crate::handlers::Handlers;
use crate::ops::Observer;
use crate::store::{SendError, StoreWorker};
use crate::verify::VerifyPool;

/// A callback that sees every node event (after it is logged).
pub type EventHook = Box<dyn FnMut(&Event) + Send>;
/// A callback that sees every accepted event, on the event loop: it must not block.
pub type DeliveryHook = Box<dyn FnMut(&Delivery) + Send>;

/// Store + handlers + logs: the [`Effects`] of the `vtp` binary and of embedding programs.
#[derive(Default)]
pub struct HostEffects {
    store: Option<StoreWorker>,
    handlers: Option<Handlers>,
    on_event: Option<EventHook>,
    on_delivery: Option<DeliveryHook>,
    store_dropped: u64,
    /// Persist operations handed to [`Effects::store`].
    persists: u64,
    /// Persists not known durable yet: (persist number, store sequence number), in order.
    unsettled: VecDeque<(u64, u64)>,
    /// Deliveries go to the store's handler spool (it has one, and handlers are linked to it).
    spooling: bool,
    /// Spooled deliveries not known durable yet: (store sequence number, event bytes).
    spool_inflight: VecDeque<(u64, usize)>,
    /// The event bytes of those.
    spool_inflight_bytes: usize,
    /// Counts what the node reports, for the metrics ([`crate::ops`]).
    metrics: Option<Observer>,
    /// Where external sources' commits go ([`crate::external`]).
    externals: Option<Commits>,
    /// Verifies signatures off the event loop ([`crate::verify`]).
    verify: Option<VerifyPool>,
}

impl std::fmt::Debug for HostEffects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostEffects")
            .field("store", &self.store.is_some())
            .field("handlers", &self.handlers.is_some())
            .field("store_dropped", &self.store_dropped)
            .field("persists", &self.persists)
            .field("unsettled", &self.unsettled.len())
            .field("spooling", &self.spooling)
            .field("spool_inflight", &self.spool_inflight.len())
            .finish_non_exhaustive()
    }
}

impl HostEffects {
    /// Effects that only log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Persist the seen-index through this worker. If it has a handler spool and handlers
    /// are given too, deliveries go through the spool (see the module docs).
    pub fn with_store(mut self, store: StoreWorker) -> Self {
        self.store = Some(store);
        self.link_spool();
        self
    }

    /// Verify the signatures the node hands out ([`Effects::verify`]) on these threads. Tell
    /// the node it may ([`vtp_core::Node::set_verify_offload`]).
    pub fn with_verify_pool(mut self, pool: VerifyPool) -> Self {
        self.verify = Some(pool);
        self
    }

    /// Run these handlers on every accepted event.
    pub fn with_handlers(mut self, handlers: Handlers) -> Self {
        self.handlers = Some(handlers);
        self.link_spool();
        self
    }

    /// True when deliveries go through the store's handler spool.
    pub fn is_spooling(&self) -> bool {
        self.spooling
    }

    /// Once both a store with a spool and handlers are here: the worker queues spooled
    /// deliveries for the handlers, which tell it when each is done.
    fn link_spool(&mut self) {
        if self.spooling {
            return;
        }
        if let (Some(store), Some(handlers)) = (&self.store, &self.handlers)
            && store.has_spool()
            && store.attach_handlers(handlers)
        {
            self.spooling = true;
        }
    }

    /// Sends a delivery to the spool; hands it back if it should go straight to the handlers.
    fn spool(&mut self, delivery: Delivery) -> Result<(), Delivery> {
        let Some(store) = &mut self.store else {
            return Err(delivery);
        };
        if store.is_stopped() {
            self.spool_inflight.clear();
            self.spool_inflight_bytes = 0;
        } else {
            let durable = store.durable_seq();
            while let Some(&(seq, size)) = self.spool_inflight.front() {
                if seq > durable {
                    break;
                }
                self.spool_inflight.pop_front();
                self.spool_inflight_bytes -= size;
            }
        }
        let size = delivery.ivorn.len() + delivery.payload.len();
        if !self.spool_inflight.is_empty()
            && self.spool_inflight_bytes + size > SPOOL_INFLIGHT_BYTES_MAX
        {
            return Err(delivery);
        }
        match store.send_spool(delivery) {
            Ok(seq) => {
                self.spool_inflight.push_back((seq, size));
                self.spool_inflight_bytes += size;
                Ok(())
            }
            Err((e, delivery)) => {
                tracing::debug!("handler spool: {e}; event handed to the handlers' queue");
                Err(delivery)
            }
        }
    }

    /// Count every event, forward, delivery and turn of the loop into the metrics this
    /// observer feeds ([`Metrics::new`](crate::ops::Metrics::new)).
    pub fn with_metrics(mut self, observer: Observer) -> Self {
        self.metrics = Some(observer);
        self
    }

    /// Reports the node's commits of external sources ([`Effects::commit`]) to their feeders.
    pub fn with_externals(mut self, commits: Commits) -> Self {
        self.externals = Some(commits);
        self
    }

    /// Call `hook` with every node event.
    pub fn on_event(mut self, hook: impl FnMut(&Event) + Send + 'static) -> Self {
        self.on_event = Some(Box::new(hook));
        self
    }

    /// Call `hook` with every accepted event (on the loop: keep it short).
    pub fn on_delivery(mut self, hook: impl FnMut(&Delivery) + Send + 'static) -> Self {
        self.on_delivery = Some(Box::new(hook));
        self
    }

    /// How many persists are durable, after dropping the settled ones from the front.
    fn settle(&mut self) -> u64 {
        let Some(store) = &self.store else {
            return self.persists;
        };
        if store.is_stopped() {
            self.unsettled.clear();
            return self.persists;
        }
        let durable = store.durable_seq();
        while let Some(&(_, seq)) = self.unsettled.front() {
            if seq > durable {
                break;
            }
            self.unsettled.pop_front();
        }
        self.unsettled
            .front()
            .map_or(self.persists, |&(persist, _)| persist - 1)
    }

    /// Lets handlers finish queued work for up to `grace`, then flushes the store (every
    /// queued record committed, with the done marks of the handled events: what is left in
    /// the handler spool is handled after the next start). Call at shutdown, after the runtime
    /// returned.
    pub fn finish(self, grace: Duration) {
        if let Some(h) = self.handlers
            && !h.shutdown(grace)
        {
            tracing::warn!("event handlers still running after {grace:?}; not waiting");
        }
        if let Some(store) = self.store
            && let Err(e) = store.flush_and_stop()
        {
            tracing::error!("seen-index store: final commit failed: {e}");
        }
    }
}

impl Effects for HostEffects {
    fn store(&mut self, op: StoreOp) {
        let persist = matches!(op, StoreOp::Persist(_));
        if persist {
            self.persists += 1;
        }
        let Some(store) = &mut self.store else {
            return;
        };
        match store.send(op) {
            Ok(seq) if persist => self.unsettled.push_back((self.persists, seq)),
            Ok(_) => {}
            Err(e) => {
                if matches!(e, SendError::Full) {
                    self.store_dropped += 1;
                }
                tracing::error!(
                    dropped = self.store_dropped,
                    "seen-index store: {e}; receipts and forwards waiting for it go out without \
                     durable records (in-memory dedup still holds)"
                );
                self.unsettled.clear();
            }
        }
        // Keeps the queue short even when nobody asks (`Durability::Async`).
        self.settle();
    }

    fn durable_persists(&mut self, handed: u64) -> u64 {
        self.settle().min(handed)
    }

    fn store_healthy(&mut self) -> bool {
        self.store.as_ref().is_none_or(StoreWorker::is_healthy)
    }

    fn set_durable_waker(&mut self, waker: Waker) {
        if let Some(m) = &mut self.metrics {
            m.set_waker(&waker);
        }
        if let Some(pool) = &self.verify {
            pool.set_waker(waker.clone());
        }
        if let Some(store) = &self.store {
            store.set_waker(waker);
        }
    }

    fn flush_persists(&mut self, handed: u64) -> u64 {
        if let (Some(store), Some(&(_, seq))) = (&self.store, self.unsettled.back())
            && !store.wait_durable(seq, SHUTDOWN_DURABLE_WAIT)
        {
            tracing::warn!(
                "seen-index store: records still not durable after {SHUTDOWN_DURABLE_WAIT:?}; \
                 their receipts and forwards are dropped"
            );
        }
        self.durable_persists(handed)
    }

    fn deliver(&mut self, delivery: Delivery) {
        if let Some(hook) = &mut self.on_delivery {
            hook(&delivery);
        }
        if self.handlers.is_none() {
            return;
        }
        if let Some(m) = &mut self.metrics {
            m.delivered();
        }
        let delivery = if self.spooling {
            match self.spool(delivery) {
                Ok(()) => return,
                Err(delivery) => delivery,
            }
        } else {
            delivery
        };
        if let Some(h) = &self.handlers {
            // A delivery not queued is counted and logged (rate-limited) by the handlers.
            h.dispatch(delivery);
        }
    }

    fn duplicate(&mut self, conn: ConnId, key: EventKey) {
        tracing::debug!(%conn, key = %key, "duplicate event dropped");
    }

    fn forwarded(&mut self, _conn: ConnId) {
        if let Some(m) = &mut self.metrics {
            m.forwarded();
        }
    }

    fn heartbeat(&mut self) {
        if let Some(m) = &mut self.metrics {
            m.heartbeat();
        }
    }

    fn verify(&mut self, job: VerifyJob) -> Result<(), VerifyJob> {
        match &self.verify {
            Some(pool) => pool.submit(job),
            None => Err(job),
        }
    }

    fn take_verdicts(&mut self, out: &mut Vec<(u64, Verdict)>) {
        if let Some(pool) = &self.verify {
            pool.take(out);
        }
    }

    fn commit(&mut self, conn: ConnId, lane: u32, next_offset: u64) {
        if let Some(c) = &self.externals {
            c.commit(conn, lane, next_offset);
        }
    }

    fn event(&mut self, event: Event) {
        if let Some(m) = &mut self.metrics {
            m.observe(&event);
        }
        match (&event, &self.externals) {
            // Named with the topic and partition only the source's feeder knows.
            (
                Event::ExternalSkipped {
                    conn,
                    at,
                    ivorn,
                    reason,
                },
                Some(c),
            ) => {
                let place = c
                    .describe(*conn, *at)
                    .unwrap_or_else(|| format!("{conn} {at}"));
                let ivorn = ivorn
                    .as_deref()
                    .map(|i| format!(" ({i})"))
                    .unwrap_or_default();
                tracing::warn!(%conn, "skipped the record at {place}{ivorn}: {reason}");
            }
            _ => log_event(&event),
        }
        if let Some(hook) = &mut self.on_event {
            hook(&event);
        }
    }
}

/// Most event bytes of deliveries sent to the handler spool and not durable yet (a slow or
/// failing disk); beyond it deliveries go straight to the handlers' queue.
pub const SPOOL_INFLIGHT_BYTES_MAX: usize = 64 << 20;

/// How long shutdown waits for the last records to be durable, so that their receipts and
/// forwards still go out.
const SHUTDOWN_DURABLE_WAIT: Duration = Duration::from_secs(5);

pub use crate::text::printable;

/// Logs a node event at the level it deserves; a peer's texts go through [`printable`].
///
/// Every line about a connection names its peer (`127.0.0.1:48272`, with the port) or the
/// endpoint dialled, and carries the connection's handle as the `conn` field; a close also
/// carries its [`CloseClass`] as `class`. At INFO: subscribers and
/// upstreams coming and going (how long they were connected, how many events), every event
/// accepted, naked or duplicated from an author; authors' connections themselves are at DEBUG,
/// and so is the outcome of our own submission (its submitter reports it: `vtp send`'s one
/// line).
pub fn log_event(e: &Event) {
    use tracing::{debug, info, warn};
    match e {
        Event::PeerUp {
            conn, role, remote, ..
        } => match role {
            ConnRole::Feed => info!(%conn, "subscriber {remote} connected"),
            ConnRole::Subscription => info!(%conn, "connected to upstream {remote}"),
            ConnRole::Intake => debug!(%conn, "author {remote} connected"),
            ConnRole::Submission => debug!(%conn, "connected to broker {remote}"),
            ConnRole::External => info!(%conn, "reading events from {remote}"),
        },
        Event::PeerDown {
            conn,
            role,
            remote,
            reason,
            connected_for,
            events_sent,
            events_received,
        } => log_peer_down(
            *conn,
            *role,
            remote,
            reason,
            *connected_for,
            (*events_sent, *events_received),
        ),
        Event::Refused {
            listener,
            peer,
            reason,
            ..
        } => warn!("refused {peer} on the {listener} listener: {reason}"),
        Event::RefusalsSuppressed { counts, window } => warn!(
            refused = counts.total(),
            "{} more connections refused within {} s ({counts}); only the first few refusals \
             of each {} s are logged one by one",
            counts.total(),
            window.as_secs_f64(),
            window.as_secs_f64()
        ),
        Event::Secured {
            conn,
            peer,
            identity,
        } => match identity {
            Some(id) => info!(%conn, "TLS peer {peer}: certificate identity {id}"),
            // Most TLS peers present none: one DEBUG line, not an INFO line per connection.
            None => debug!(%conn, "TLS peer {peer}: no client certificate"),
        },
        Event::UnixPeerNotWhitelisted { conn } => {
            debug!(%conn, "Unix-socket peer accepted without IP whitelist check")
        }
        Event::Accepted {
            conn,
            ivorn,
            remote,
            signature,
            ..
        } => match signature {
            Some(s) => info!(
                %conn,
                signature = %printable(&s.to_string()),
                "accepted event {ivorn} from {}",
                Sender(remote)
            ),
            None => info!(%conn, "accepted event {ivorn} from {}", Sender(remote)),
        },
        Event::SigningFailed { reason } => {
            warn!("cannot sign a message this node originates (sent unsigned): {reason}")
        }
        Event::Rejected {
            conn,
            reason,
            remote,
        } => info!(%conn, "nak sent to author {remote}: {reason}"),
        Event::Duplicate {
            conn,
            ivorn,
            remote,
            ..
        } => match remote {
            // In a mesh every event comes back from each upstream: expected, not news.
            Remote::Dialled(_) => debug!(%conn, "duplicate event {ivorn} from upstream {remote}"),
            Remote::Accepted(_) => info!(%conn, "duplicate event {ivorn} from author {remote}"),
            // A source re-read after a restart: expected.
            Remote::External(_) => debug!(%conn, "duplicate event {ivorn} from {remote}"),
        },
        Event::FiltersSet {
            conn,
            accepted,
            refused,
            ..
        } => {
            info!(%conn, accepted, "subscriber filters set");
            for (expr, why) in refused {
                warn!(%conn, "subscriber filter {expr:?} refused: {why}");
            }
        }
        Event::SubscriberNak {
            conn,
            origin,
            reason,
        } => info!(
            %conn,
            "subscriber nak'd {}: {}",
            printable(origin),
            printable(reason.as_deref().unwrap_or(""))
        ),
        Event::ProtocolViolation { conn, detail } => info!(%conn, "protocol violation: {detail}"),
        Event::ViolationsSuppressed {
            conn,
            reported,
            window,
        } => info!(
            %conn,
            "further protocol violations not logged: only the first {reported} per {} s are",
            window.as_secs_f64()
        ),
        // The submitter reports a submission's outcome (`vtp send`: one line and its exit
        // status), so that a failure is not said twice: here it is context at DEBUG.
        Event::SubmissionAcked { conn } => debug!(%conn, "event acknowledged"),
        Event::SubmissionNaked { conn, reason } => {
            debug!(%conn, "event refused: {}", reason.as_deref().map_or("(no reason given)".into(), printable))
        }
        Event::SubmissionFailed { conn, reason } => debug!(%conn, "submission failed: {reason}"),
        Event::Reconnecting {
            upstream,
            endpoint,
            delay,
            reason,
            previous,
        } => {
            let class = reason.class();
            let delay = delay.as_secs_f64();
            let from = if previous == endpoint {
                String::new()
            } else {
                format!(" (failover from {previous})")
            };
            match reason.class() {
                // A TLS or authorization failure, or a broken upstream, will not cure itself.
                CloseClass::Tls | CloseClass::NotAuthorized | CloseClass::Protocol => warn!(
                    upstream,
                    %class, "reconnecting to {endpoint} in {delay:.1} s{from}: {reason}"
                ),
                _ => info!(
                    upstream,
                    %class, "reconnecting to {endpoint} in {delay:.1} s{from}: {reason}"
                ),
            }
        }
        Event::Pruned { removed } => info!(removed, "expired seen-index entries pruned"),
        Event::SeenIndexLevel {
            level: SeenLevel::Normal,
            entries,
            max,
        } => info!("seen-index back below 70 % full ({entries} of {max} entries)"),
        Event::SeenIndexLevel {
            level: SeenLevel::High,
            entries,
            max,
        } => warn!("seen-index nearly full ({entries} of {max} entries; --seen-max)"),
        Event::SeenIndexLevel {
            level: SeenLevel::Full,
            entries,
            max,
        } => warn!(
            "seen-index full ({entries} of {max} entries; --seen-max): sources over their fair \
             share now recycle their own entries or are naked"
        ),
        Event::ExternalSkipped {
            conn,
            at,
            ivorn,
            reason,
        } => {
            let ivorn = ivorn
                .as_deref()
                .map(|i| format!(" ({i})"))
                .unwrap_or_default();
            warn!(%conn, "skipped the record at {at}{ivorn}: {reason}");
        }
        other => debug!("{other:?}"),
    }
}

/// The end of a connection: subscribers and upstreams at INFO (an upstream lost, or a peer
/// dropped for breaking the protocol, at WARN), with how long they were up and their events;
/// authors at DEBUG unless dropped for a fault; every connection at DEBUG when the node
/// shuts down.
fn log_peer_down(
    conn: ConnId,
    role: ConnRole,
    remote: &Remote,
    reason: &CloseReason,
    connected_for: Option<Duration>,
    (sent, received): (u64, u64),
) {
    use tracing::{debug, info, warn};
    let class = reason.class();
    let c = &class;
    match (role, connected_for, class) {
        (_, _, CloseClass::Shutdown) | (ConnRole::Submission, _, _) => {
            debug!(%conn, class = %c, "{role} {remote} disconnected: {reason}")
        }
        (ConnRole::Feed, Some(up), _) => info!(
            %conn,
            class = %c,
            "subscriber {remote} {} after {}, {sent} events sent: {reason}",
            match class {
                CloseClass::Closed => "disconnected",
                _ => "dropped",
            },
            Elapsed(up)
        ),
        (ConnRole::Subscription, Some(up), _) => warn!(
            %conn,
            class = %c,
            "upstream {remote} lost after {}, {received} events received: {reason}",
            Elapsed(up)
        ),
        // A dial that failed: the reconnect line that follows says why.
        (ConnRole::Subscription, None, _) => {
            debug!(%conn, class = %c, "connection to upstream {remote} failed: {reason}")
        }
        // A TLS handshake that failed, timed out or presented an identity not allowed.
        (ConnRole::Feed | ConnRole::Intake, None, _) => info!(
            %conn,
            class = %c,
            "{role} {remote} dropped before its TLS session was up: {reason}"
        ),
        (
            ConnRole::Intake,
            Some(_),
            CloseClass::Slow | CloseClass::Protocol | CloseClass::Tls | CloseClass::NotAuthorized,
        ) => info!(%conn, class = %c, "author {remote} dropped: {reason}"),
        (ConnRole::Intake, Some(_), _) => {
            debug!(%conn, class = %c, "author {remote} disconnected: {reason}")
        }
        (ConnRole::External, _, _) => {
            info!(%conn, class = %c, "{remote} closed after {received} events: {reason}")
        }
    }
}

/// Who sent an event: `author 127.0.0.1:48272` or `upstream host:8099`.
struct Sender<'a>(&'a Remote);

impl std::fmt::Display for Sender<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Remote::Accepted(peer) => write!(f, "author {peer}"),
            Remote::Dialled(endpoint) => write!(f, "upstream {endpoint}"),
            Remote::External(name) => f.write_str(name),
        }
    }
}

/// A duration as an operator reads it: `850 ms`, `12.3 s`, `4 min 10 s`, `2 h 5 min`,
/// `3 d 4 h`.
struct Elapsed(Duration);

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.0;
        let s = d.as_secs();
        match s {
            0 => write!(f, "{} ms", d.as_millis()),
            1..60 => write!(f, "{:.1} s", d.as_secs_f64()),
            60..3600 => write!(f, "{} min {} s", s / 60, s % 60),
            3600..86_400 => write!(f, "{} h {} min", s / 3600, s % 3600 / 60),
            _ => write!(f, "{} d {} h", s / 86_400, s % 86_400 / 3600),
        }
    }
}

impl std::fmt::Debug for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};

    use vtp_core::SeenRecord;

    use super::*;
    use crate::store::SeenStore;
    use crate::testutil::TempDir;

    fn persist(i: u8) -> StoreOp {
        StoreOp::Persist(SeenRecord {
            key: EventKey([i; 32]),
            unix_secs: 1_700_000_000,
        })
    }

    struct ChannelWake(Mutex<mpsc::Sender<()>>);

    impl std::task::Wake for ChannelWake {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            let _ = self.0.lock().unwrap().send(());
        }
    }

    #[test]
    fn connections_are_logged_with_the_peers_port_time_events_and_class() {
        use vtp_core::{ConnRole, Peer, Remote};
        let peer = Remote::Accepted(Peer::Tcp("192.0.2.7:48272".parse().unwrap()));
        let upstream = Remote::Dialled(Arc::from("tls:broker.example:8099"));
        // Connection handles are minted by the node only: the one of a throwaway delivery.
        let vtp_core::Source::Author(conn) = crate::testutil::delivery("ivo://x/y#z", b"").source
        else {
            unreachable!("an author's delivery");
        };
        let (_, logs) = crate::testutil::capture_logs(|| {
            log_event(&Event::PeerDown {
                conn,
                role: ConnRole::Feed,
                remote: peer.clone(),
                reason: CloseReason::OutboxFull,
                connected_for: Some(Duration::from_secs(250)),
                events_sent: 7,
                events_received: 0,
            });
            log_event(&Event::PeerDown {
                conn,
                role: ConnRole::Subscription,
                remote: upstream.clone(),
                reason: CloseReason::UpstreamSilent,
                connected_for: Some(Duration::from_secs(7500)),
                events_sent: 0,
                events_received: 940,
            });
            log_event(&Event::Reconnecting {
                upstream: 0,
                endpoint: Arc::from("tls:broker.example:8099"),
                delay: Duration::from_millis(3900),
                reason: CloseReason::Tls("invalid peer certificate: UnknownIssuer".into()),
                previous: Arc::from("192.0.2.1:8099"),
            });
        });
        for (level, text) in [
            (
                "INFO",
                "subscriber 192.0.2.7:48272 dropped after 4 min 10 s, 7 events sent: send queue \
                 full: peer is not reading conn=#1 class=slow",
            ),
            (
                "WARN",
                "upstream tls:broker.example:8099 lost after 2 h 5 min, 940 events received: \
                 upstream silent for too long conn=#1 class=silent",
            ),
            (
                "WARN",
                "reconnecting to tls:broker.example:8099 in 3.9 s (failover from \
                 192.0.2.1:8099): TLS: invalid peer certificate: UnknownIssuer upstream=0 \
                 class=tls",
            ),
        ] {
            assert!(
                logs.lines()
                    .any(|l| l.contains(&format!(" {level} ")) && l.ends_with(text)),
                "{level} {text}\n{logs}"
            );
        }
        for debug in ["Feed", "Subscription", "Tcp(", "Dialled"] {
            assert!(!logs.contains(debug), "{debug}: {logs}");
        }
    }

    #[test]
    fn durations_read_as_an_operator_says_them() {
        let text = |secs: f64| Elapsed(Duration::from_secs_f64(secs)).to_string();
        assert_eq!(text(0.85), "850 ms");
        assert_eq!(text(12.34), "12.3 s");
        assert_eq!(text(250.0), "4 min 10 s");
        assert_eq!(text(7500.0), "2 h 5 min");
        assert_eq!(text(273_600.0), "3 d 4 h");
    }

    #[test]
    fn without_a_store_every_persist_is_durable_at_once() {
        let mut fx = HostEffects::new();
        fx.store(persist(1));
        fx.store(StoreOp::Forget(EventKey([9; 32])));
        fx.store(persist(2));
        assert_eq!(fx.durable_persists(2), 2);
        assert_eq!(fx.flush_persists(2), 2);
    }

    #[test]
    fn persists_count_as_durable_once_the_store_committed_them() {
        let tmp = TempDir::new("fx-durable");
        let store = SeenStore::open(tmp.path()).unwrap();
        let mut fx = HostEffects::new().with_store(StoreWorker::spawn(store, None).unwrap());
        let (tx, rx) = mpsc::channel();
        fx.set_durable_waker(Waker::from(Arc::new(ChannelWake(Mutex::new(tx)))));
        // Forgets and expiries share the store's sequence but are not persists.
        fx.store(StoreOp::Forget(EventKey([9; 32])));
        fx.store(persist(1));
        fx.store(StoreOp::Expire {
            before_unix_secs: 1,
        });
        fx.store(persist(2));
        let mut durable = fx.durable_persists(2);
        assert!(durable <= 2);
        while durable < 2 {
            rx.recv_timeout(Duration::from_secs(30))
                .expect("the store wakes the loop after a commit");
            durable = fx.durable_persists(2);
        }
        assert_eq!(fx.durable_persists(1), 1, "never more than handed");
        fx.store(persist(3));
        assert_eq!(fx.flush_persists(3), 3, "shutdown waits for the commit");
        fx.finish(Duration::from_secs(1));
        let store = SeenStore::open(tmp.path()).unwrap();
        assert_eq!(store.load().unwrap().len(), 3);
    }

    #[test]
    fn a_store_too_far_behind_releases_everything_instead_of_holding_it_forever() {
        let tmp = TempDir::new("fx-full");
        let store = SeenStore::open(tmp.path()).unwrap();
        let (started_tx, started_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        // The first commit's callback holds the worker, like a disk that hangs.
        let on_durable: crate::store::OnDurable = Box::new(move |seq| {
            if seq == 1 {
                started_tx.send(()).unwrap();
                let _ = release_rx.lock().unwrap().recv();
            }
        });
        let mut fx =
            HostEffects::new().with_store(StoreWorker::spawn(store, Some(on_durable)).unwrap());
        fx.store(StoreOp::Forget(EventKey([0; 32])));
        started_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        let max = crate::store::STORE_QUEUE_MAX as u64;
        for i in 0..max {
            let mut key = [0xAB; 32];
            key[..8].copy_from_slice(&i.to_be_bytes());
            fx.store(StoreOp::Persist(SeenRecord {
                key: EventKey(key),
                unix_secs: 1_700_000_000,
            }));
        }
        assert_eq!(fx.durable_persists(max), 0, "the store is stuck");
        fx.store(persist(1));
        assert_eq!(fx.store_dropped, 1);
        assert_eq!(
            fx.durable_persists(max + 1),
            max + 1,
            "a full store gives up the guarantee rather than the broker"
        );
        release_tx.send(()).unwrap();
        fx.finish(Duration::from_secs(1));
    }
}
