//! The Kafka bridge (cargo feature `kafka`): Kafka topics read into the node as an external
//! source, and accepted events published to a topic.
//!
//! **Ingest.** [`Ingest::spawn`] runs a [`vtp_kafka::Consumer`] on a thread of its own: every
//! partition of the subscribed topics (names or globs such as `gcn.classic.voevent.*`), each
//! partition one lane of the external source, each record handed to the node through its
//! [`Feeder`]. The node decides when an offset may be committed (once the event's seen-index
//! record is durable, or the record was skipped: [`vtp_core::Node::handle_external`]); this
//! thread commits those offsets to the consumer group, so a restart resumes at the first
//! record not yet durable. Records over the size bound are skipped without being read. A
//! broker that cannot be reached is retried with the node's back-off; a topic the credentials
//! may not read is logged and the others go on.
//!
//! **Publish.** [`Publish`] is a handler ([`crate::handlers`]): each accepted event, after
//! its record is durable, is produced with the IVORN as key and the exact bytes as value by
//! an idempotent [`vtp_kafka::Producer`] on a thread of its own, through a bounded backlog.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vtp_core::backoff::{Backoff, BackoffConfig};
use vtp_core::{Position, Violation};
use vtp_kafka::{Consumer, Item, StartFrom};

use crate::external::{Closed, Feeder, Worker};

/// Most partitions (lanes) one ingest follows.
pub const LANES_MAX: usize = 65_536;

/// What one ingest reads.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// The client's settings (bootstrap, security, bounds).
    pub config: vtp_kafka::Config,
    /// The consumer group its offsets are stored under.
    pub group: String,
    /// Topic names or globs.
    pub topics: Vec<String>,
    /// Where a partition without a stored offset starts.
    pub start: StartFrom,
}

/// Counters of one ingest, readable from any thread.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Records handed to the node.
    pub records: AtomicU64,
    /// Records over the size bound, skipped unread.
    pub oversize: AtomicU64,
    /// Offsets committed to the group.
    pub commits: AtomicU64,
    /// Failed polls or commits (each retried).
    pub errors: AtomicU64,
    /// Sum over partitions of high watermark minus position, at the last poll.
    pub lag: AtomicU64,
    /// 1 while the last poll succeeded.
    pub up: AtomicU64,
}

/// A running ingest: stops (committing what it can) when dropped.
#[derive(Debug)]
pub struct Ingest {
    worker: Worker,
    stats: Arc<IngestStats>,
}

impl Ingest {
    /// Starts reading `settings`' topics into the node through `feeder`.
    ///
    /// # Errors
    ///
    /// The thread cannot be started.
    pub fn spawn(settings: IngestSettings, feeder: Feeder) -> std::io::Result<Self> {
        let stats = Arc::new(IngestStats::default());
        let st = Arc::clone(&stats);
        let worker = Worker::spawn("vtp-kafka-ingest", move |stop| {
            Reader::new(settings, feeder, stop, st).run();
        })?;
        Ok(Self { worker, stats })
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<IngestStats> {
        Arc::clone(&self.stats)
    }

    /// Stops it and waits for its thread (which commits what the node has made durable).
    pub fn stop(self) {
        self.worker.stop();
    }
}

/// Topic and partition of each lane, both ways.
#[derive(Debug, Default)]
struct Lanes {
    by_part: BTreeMap<(Arc<str>, i32), u32>,
    parts: Vec<(Arc<str>, i32)>,
}

impl Lanes {
    /// The lane of `topic`/`partition`, numbered on first sight; `None` past [`LANES_MAX`].
    fn lane(&mut self, topic: &Arc<str>, partition: i32, feeder: &Feeder) -> Option<u32> {
        if let Some(l) = self.by_part.get(&(Arc::clone(topic), partition)) {
            return Some(*l);
        }
        if self.parts.len() >= LANES_MAX {
            return None;
        }
        let lane = u32::try_from(self.parts.len()).ok()?;
        self.by_part.insert((Arc::clone(topic), partition), lane);
        self.parts.push((Arc::clone(topic), partition));
        feeder.name_lane(lane, &format!("{topic} partition {partition}"));
        Some(lane)
    }
}

struct Reader {
    settings: IngestSettings,
    feeder: Feeder,
    stop: Arc<AtomicBool>,
    stats: Arc<IngestStats>,
    lanes: Lanes,
    /// Commits the node made and the group has not taken yet (a failed commit is retried).
    uncommitted: BTreeMap<u32, u64>,
    backoff: Backoff,
    /// Topic errors already logged, so each is logged once.
    reported: BTreeMap<String, String>,
    lanes_full_logged: bool,
    /// When a failed commit was last logged (at most one line per 30 s).
    commit_failure_logged: Option<Instant>,
}

/// How long one poll waits at the broker (a broker answers as soon as a record is there, so
/// this costs only requests while idle: 10 per second; tansu always waits it out, so it bounds
/// the latency there), and a feeder for room: short, so a stop is quick.
const POLL: Duration = Duration::from_millis(100);
const SEND_WAIT: Duration = Duration::from_millis(200);

impl Reader {
    fn new(
        settings: IngestSettings,
        feeder: Feeder,
        stop: Arc<AtomicBool>,
        stats: Arc<IngestStats>,
    ) -> Self {
        let seed = std::process::id().into();
        Self {
            settings,
            feeder,
            stop,
            stats,
            lanes: Lanes::default(),
            uncommitted: BTreeMap::new(),
            backoff: Backoff::new(BackoffConfig::default(), seed),
            reported: BTreeMap::new(),
            lanes_full_logged: false,
            commit_failure_logged: None,
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn run(mut self) {
        let name = self.feeder.name();
        let topics: Vec<&str> = self.settings.topics.iter().map(String::as_str).collect();
        let mut consumer = match Consumer::new(
            self.settings.config.clone(),
            &self.settings.group,
            &topics,
            self.settings.start,
        ) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("{name}: cannot start: {e}");
                return;
            }
        };
        tracing::info!(
            "{name}: consuming {} from {} as group {}",
            self.settings.topics.join(", "),
            self.settings.config.bootstrap.join(","),
            self.settings.group
        );
        let mut up = false;
        while !self.stopping() {
            match consumer.poll(POLL) {
                Ok(items) => {
                    if !up {
                        up = true;
                        tracing::info!("{name}: connected");
                    }
                    self.stats.up.store(1, Ordering::Relaxed);
                    self.backoff.connection_ended(Duration::MAX);
                    self.report_topics(&consumer);
                    let lag: i64 = consumer.lag().iter().filter_map(|l| l.lag()).sum();
                    self.stats
                        .lag
                        .store(u64::try_from(lag).unwrap_or(0), Ordering::Relaxed);
                    if self.hand_in(items).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    up = false;
                    self.stats.up.store(0, Ordering::Relaxed);
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    let delay = self.backoff.next_delay();
                    if e.is_retryable() {
                        tracing::warn!("{name}: {e}; retrying in {:.1} s", delay.as_secs_f64());
                    } else {
                        tracing::error!("{name}: {e}; retrying in {:.1} s", delay.as_secs_f64());
                    }
                    self.pause(delay);
                }
            }
            self.commit(&mut consumer);
        }
        // What the node made durable before the stop is committed, so a restart does not
        // read it again (it would be a duplicate, not lost, if this fails).
        self.feeder.wait_commits(Duration::from_millis(100));
        self.commit(&mut consumer);
    }

    /// Hands `items` to the node, in order, waiting for room; commits while it waits.
    fn hand_in(&mut self, items: Vec<Item>) -> Result<(), Closed> {
        for item in items {
            let (topic, partition, offset) = match &item {
                Item::Record(r) => (Arc::clone(&r.topic), r.partition, r.offset),
                Item::Oversize(o) => (Arc::clone(&o.topic), o.partition, o.offset),
            };
            let Some(lane) = self.lanes.lane(&topic, partition, &self.feeder) else {
                if !self.lanes_full_logged {
                    self.lanes_full_logged = true;
                    tracing::error!(
                        "{}: more than {LANES_MAX} partitions; {topic} partition {partition} \
                         and later ones are not read (subscribe to fewer topics)",
                        self.feeder.name()
                    );
                }
                continue;
            };
            let at = Position {
                lane,
                offset: u64::try_from(offset).unwrap_or(0),
            };
            loop {
                let taken = match &item {
                    Item::Record(r) => self.feeder.send(at, r.value.clone(), SEND_WAIT)?,
                    Item::Oversize(o) => {
                        let reason = Violation::Oversize {
                            len: o.size as u64,
                            max: self.settings.config.bounds.record_value_max as u64,
                        };
                        self.feeder.skip(at, reason, SEND_WAIT)?
                    }
                };
                if taken {
                    let counter = match item {
                        Item::Record(_) => &self.stats.records,
                        Item::Oversize(_) => &self.stats.oversize,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                if self.stopping() {
                    return Err(Closed);
                }
            }
        }
        Ok(())
    }

    /// Commits to the group what the node has made durable since the last commit.
    fn commit(&mut self, consumer: &mut Consumer) {
        self.uncommitted.extend(self.feeder.take_commits());
        if self.uncommitted.is_empty() {
            return;
        }
        let offsets: Vec<(&str, i32, i64)> = self
            .uncommitted
            .iter()
            .filter_map(|(lane, next)| {
                let (topic, partition) = self.lanes.parts.get(usize::try_from(*lane).ok()?)?;
                Some((&**topic, *partition, i64::try_from(*next).ok()?))
            })
            .collect();
        match consumer.commit(&offsets) {
            Ok(()) => {
                self.stats
                    .commits
                    .fetch_add(offsets.len() as u64, Ordering::Relaxed);
                self.uncommitted.clear();
            }
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                if self
                    .commit_failure_logged
                    .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(30))
                {
                    self.commit_failure_logged = Some(now);
                    tracing::warn!(
                        "{}: committing offsets failed (kept, retried; logged at most every \
                         30 s): {e}",
                        self.feeder.name()
                    );
                }
            }
        }
    }

    /// Logs each topic's error once (and when it changes or clears).
    fn report_topics(&mut self, consumer: &Consumer) {
        let now: BTreeMap<String, String> = consumer
            .topic_errors()
            .iter()
            .map(|(t, e)| (t.clone(), format!("{e:?}")))
            .collect();
        if now == self.reported {
            return;
        }
        let name = self.feeder.name();
        for (topic, error) in &now {
            if self.reported.get(topic) != Some(error) {
                tracing::warn!(
                    "{name}: topic {topic} cannot be read ({error}); the other topics go on"
                );
            }
        }
        for topic in self.reported.keys() {
            if !now.contains_key(topic) {
                tracing::info!("{name}: topic {topic} can be read again");
            }
        }
        self.reported = now;
    }

    /// Sleeps `delay`, in short steps so a stop is quick.
    fn pause(&self, delay: Duration) {
        let until = Instant::now() + delay;
        while !self.stopping() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }
}

/// Counters of the publisher, readable from any thread.
#[derive(Debug, Default)]
pub struct PublishStats {
    /// Events produced and acknowledged by the broker.
    pub published: AtomicU64,
    /// Events dropped because the backlog was full.
    pub overflow: AtomicU64,
    /// Events waiting (backlog and producer queue).
    pub backlog: AtomicU64,
    /// Bytes waiting in the backlog.
    pub backlog_bytes: AtomicU64,
    /// Failed sends (each retried).
    pub errors: AtomicU64,
    /// 0 from a failed send until the next success, else 1 (the producer connects with the
    /// first event, so an idle publisher reads 1).
    pub up: AtomicU64,
}

/// What the publisher produces, and where.
#[derive(Debug, Clone)]
pub struct PublishSettings {
    /// The client's settings.
    pub config: vtp_kafka::Config,
    /// The topic.
    pub topic: String,
    /// Publish test events too (`role="test"`).
    pub test_events: bool,
    /// Most bytes of events waiting to be produced; beyond it events are dropped and counted.
    pub backlog_bytes: usize,
}

#[derive(Debug, Default)]
struct Backlog {
    queue: std::collections::VecDeque<(Arc<str>, bytes::Bytes)>,
    bytes: usize,
    closed: bool,
}

/// The publisher: a thread with an idempotent producer, fed through a bounded backlog.
#[derive(Debug)]
pub struct Publish {
    settings: PublishSettings,
    backlog: Arc<(Mutex<Backlog>, std::sync::Condvar)>,
    stats: Arc<PublishStats>,
    handle: Option<JoinHandle<()>>,
    /// When an overflow was last logged (at most one line per 10 s).
    overflow_logged: Mutex<Option<Instant>>,
}

impl Publish {
    /// Starts the producer thread.
    ///
    /// # Errors
    ///
    /// The thread cannot be started.
    pub fn spawn(settings: PublishSettings) -> std::io::Result<Self> {
        let backlog = Arc::new((Mutex::new(Backlog::default()), std::sync::Condvar::new()));
        let stats = Arc::new(PublishStats::default());
        stats.up.store(1, Ordering::Relaxed);
        let (b, st, s) = (Arc::clone(&backlog), Arc::clone(&stats), settings.clone());
        let handle = std::thread::Builder::new()
            .name("vtp-kafka-publish".into())
            .spawn(move || produce(s, b, st))?;
        Ok(Self {
            settings,
            backlog,
            stats,
            handle: Some(handle),
            overflow_logged: Mutex::new(None),
        })
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<PublishStats> {
        Arc::clone(&self.stats)
    }

    /// Whether an event of `role` is published.
    pub fn wants(&self, role: vtp_core::message::EventRole) -> bool {
        self.settings.test_events || role != vtp_core::message::EventRole::Test
    }

    /// Queues one event (never blocks): false, counted and logged, when the backlog is full.
    pub fn offer(&self, ivorn: Arc<str>, payload: bytes::Bytes) -> bool {
        let (lock, cv) = &*self.backlog;
        let mut b = lock.lock().unwrap_or_else(PoisonError::into_inner);
        if b.bytes + payload.len() > self.settings.backlog_bytes {
            drop(b);
            let n = self.stats.overflow.fetch_add(1, Ordering::Relaxed) + 1;
            let mut last = self
                .overflow_logged
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                *last = Some(Instant::now());
                tracing::error!(
                    "kafka publish to {}: backlog full ({} bytes); {ivorn} not published \
                     ({n} dropped so far): is the Kafka broker reachable?",
                    self.settings.topic,
                    self.settings.backlog_bytes
                );
            }
            return false;
        }
        b.bytes += payload.len();
        b.queue.push_back((ivorn, payload));
        self.stats.backlog.fetch_add(1, Ordering::Relaxed);
        self.stats
            .backlog_bytes
            .store(b.bytes as u64, Ordering::Relaxed);
        cv.notify_one();
        true
    }

    /// Stops the thread after it tried, for up to `grace`, to produce what waits.
    pub fn finish(mut self, grace: Duration) {
        self.close(grace);
    }

    fn close(&mut self, grace: Duration) {
        {
            let mut b = self
                .backlog
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            b.closed = true;
        }
        self.backlog.1.notify_all();
        if let Some(h) = self.handle.take() {
            let deadline = Instant::now() + grace;
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if h.is_finished() {
                let _ = h.join();
            } else {
                tracing::warn!(
                    "kafka publish to {}: stopped with events not yet acknowledged",
                    self.settings.topic
                );
            }
        }
    }
}

impl Drop for Publish {
    fn drop(&mut self) {
        self.close(Duration::from_secs(5));
    }
}

/// The producer thread: moves events from the backlog into the producer's bounded queue,
/// flushes, and after a failed flush waits out the back-off before the next (events arriving
/// meanwhile only queue). Ends once closed and drained, or at the first failure after the close.
fn produce(
    settings: PublishSettings,
    backlog: Arc<(Mutex<Backlog>, std::sync::Condvar)>,
    stats: Arc<PublishStats>,
) {
    let topic = settings.topic.clone();
    let mut producer = match vtp_kafka::Producer::new(settings.config.clone()) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("kafka publish to {topic}: cannot start: {e}");
            return;
        }
    };
    let mut backoff = Backoff::new(BackoffConfig::default(), u64::from(std::process::id()));
    let mut retry_at: Option<Instant> = None;
    let (lock, cv) = &*backlog;
    loop {
        let closed = {
            let mut b = lock.lock().unwrap_or_else(PoisonError::into_inner);
            // Sleep while there is nothing to do, or until the back-off ends.
            let idle = b.queue.is_empty() && producer.pending() == 0;
            let waiting = retry_at.is_some_and(|t| t > Instant::now());
            if !b.closed && (idle || waiting) {
                let nap = retry_at.map_or(Duration::from_millis(500), |t| {
                    t.saturating_duration_since(Instant::now())
                });
                b = cv
                    .wait_timeout(b, nap.min(Duration::from_millis(500)))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            while let Some((ivorn, payload)) = b.queue.pop_front() {
                let len = payload.len();
                let key = bytes::Bytes::copy_from_slice(ivorn.as_bytes());
                if producer.send(&topic, Some(key), payload.clone()).is_ok() {
                    b.bytes -= len;
                } else {
                    // The producer's queue is full: the rest waits in the backlog.
                    b.queue.push_front((ivorn, payload));
                    break;
                }
            }
            stats.backlog_bytes.store(b.bytes as u64, Ordering::Relaxed);
            b.closed
        };
        if producer.pending() > 0 && retry_at.is_none_or(|t| t <= Instant::now() || closed) {
            match producer.flush(Duration::from_secs(2)) {
                Ok(reports) => {
                    retry_at = None;
                    backoff.connection_ended(Duration::MAX);
                    stats.up.store(1, Ordering::Relaxed);
                    for r in reports {
                        stats.backlog.fetch_sub(1, Ordering::Relaxed);
                        match r.result {
                            Ok(_) => {
                                stats.published.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                stats.errors.fetch_add(1, Ordering::Relaxed);
                                tracing::error!(
                                    "kafka publish to {topic}: the broker refused a record: {e:?}"
                                );
                            }
                        }
                    }
                }
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    stats.up.store(0, Ordering::Relaxed);
                    if closed {
                        tracing::warn!(
                            "kafka publish to {topic}: {e}; stopping with {} events not \
                             published",
                            stats.backlog.load(Ordering::Relaxed)
                        );
                        return;
                    }
                    let delay = backoff.next_delay();
                    retry_at = Some(Instant::now() + delay);
                    tracing::warn!(
                        "kafka publish to {topic}: {e}; retrying in {:.1} s",
                        delay.as_secs_f64()
                    );
                }
            }
        }
        if closed {
            let b = lock.lock().unwrap_or_else(PoisonError::into_inner);
            if b.queue.is_empty() && producer.pending() == 0 {
                return;
            }
        }
    }
}

/// The publisher as an event handler ([`crate::handlers`]): runs after the event's record is
/// durable, with the other handlers (and through the handler spool when there is one).
#[derive(Debug, Clone)]
pub struct PublishHandler(pub Arc<Publish>);

impl crate::handlers::Handler for PublishHandler {
    fn name(&self) -> &str {
        "kafka-publish"
    }

    fn handle(&self, d: &vtp_core::Delivery) -> Result<(), crate::handlers::HandlerError> {
        if self.0.wants(d.role) {
            // Never blocks; a full backlog is counted and logged by `offer`.
            self.0.offer(Arc::clone(&d.ivorn), d.payload.clone());
        }
        Ok(())
    }
}
