//! What one run looks like: topology, workload, fault configuration and bounds.
//!
//! [`Options::swarm`] draws all of it from the seed (TigerBeetle VOPR's `options_swarm`): the
//! seed picks not only *when* faults happen but *which kinds* are enabled and how often, so
//! that across many seeds some runs hammer one fault kind, others combine several, and a few
//! run clean. Options are plain data: a test may build or edit them by hand.

use std::time::Duration;

use vtp_core::outbox::OutboxLimits;

use super::filter::{BAD_FILTER, TAGS};
use super::rng::Rng;

/// The set-up of one simulated run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Options {
    /// Brokers `broker-0 … broker-(n-1)`, each receiving (port 8098) and broadcasting (8099).
    pub brokers: usize,
    /// For each broker, the upstream brokers it subscribes to: one inner list per upstream,
    /// holding the broker indices of its failover endpoints. The brokers form a directed ring
    /// (each subscribes to its predecessor) plus random chords, so the mesh has cycles and every
    /// broker reaches every other.
    pub broker_upstreams: Vec<Vec<Vec<usize>>>,
    /// Subscriber nodes (`vtp listen` role): their upstreams and filters.
    pub subscribers: Vec<SubscriberSpec>,
    /// Hand-written subscribers that read everything and never answer, one per entry, each
    /// dialling the broker of that index: the broker must drop them within two iamalive
    /// periods, and they dial again.
    pub mute_subscribers: Vec<usize>,
    /// Author nodes submitting events.
    pub authors: usize,
    /// Events submitted during the fault phase.
    pub events: usize,
    /// Events come in bursts of up to this many, submitted at once (to fill slow readers'
    /// outboxes and outstanding-ack counts).
    pub burst_max: usize,
    /// Authors submit some events twice, to any broker, at once or minutes later (the mesh
    /// must still relay each once, across restarts too).
    pub duplicate_submissions: bool,
    /// Authors resubmit an event whose submission failed, to a random broker (at most 3 tries).
    pub resubmit: bool,
    /// One-way latency of every segment, drawn from this range.
    pub latency: (Duration, Duration),
    /// Bytes a connection holds in flight and unread per direction (socket buffers); a writer
    /// facing a full window gets `WouldBlock`.
    pub window: usize,
    /// Each write is cut into at most this many segments, at random boundaries.
    pub segments_max: usize,
    /// Send-queue bounds of every node's driver.
    pub outbox: OutboxLimits,
    /// Brokers run Comet's policies where they differ from VTP 2.0: a duplicate submission is
    /// nak'd, and a subscriber whose filters were all refused gets everything.
    pub comet_policies: bool,
    /// Test events from brokers, every this long (`None`: disabled).
    pub test_events: Option<Duration>,
    /// Fault kinds enabled and their rates.
    pub faults: Faults,
    /// Length of the fault phase (virtual time). Events are submitted during it.
    pub fault_phase: Duration,
    /// After healing, every subscription must be back up within this bound.
    pub heal_bound: Duration,
    /// An event must reach every subscriber connected to its origin throughout this long.
    pub delivery_bound: Duration,
    /// A run that takes more steps than this fails (a livelock or a runaway loop).
    pub steps_max: u64,
    /// A Kafka-like log some brokers consume as an external source (`None`: no log).
    pub log: Option<LogSpec>,
    /// Every node's store makes what it is handed durable in group commits, this long after
    /// the first record of a group (`None`: at once); a restart loses what was not durable.
    pub store_lag: Option<Duration>,
    /// Authors sign every event (the core's test double), and brokers verify authors' signed
    /// submissions through their effects, off the event loop (at most 8 at once, the rest in
    /// place), each verdict coming back this long later; a restart loses the verdicts not
    /// back yet (`None`: no signatures, every event as before).
    pub verify_lag: Option<Duration>,
}

/// A Kafka-like log: topics of partitions of records, appended during the fault phase and
/// consumed by some brokers, each in its own consumer group whose committed offsets survive
/// the broker's restarts (they live in the log, as Kafka's do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSpec {
    /// Topics (`gcn.classic.voevent.T0`, …).
    pub topics: usize,
    /// Partitions per topic; the source's lanes are the topic-partitions, numbered in order.
    pub partitions: usize,
    /// Records appended during the fault phase, at random times and partitions: VOEvents
    /// only in the log, VOEvents authors also submit over VTP, repeats of earlier records, and
    /// garbage.
    pub records: usize,
    /// Of every 100 records, about this many are garbage: JSON notices, VOEvents with a bad
    /// IVORN or of version 1.1, Transport messages.
    pub garbage_percent: u64,
    /// The consuming brokers (indices), each with its own consumer group.
    pub consumers: Vec<usize>,
    /// Records a consumer hands in per poll at most (Kafka's `max.poll.records`).
    pub batch: usize,
    /// The consuming brokers' `external_pending_max`: small, so that a store behind makes the
    /// source busy.
    pub pending_max: usize,
}

/// A subscriber node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberSpec {
    /// Upstreams, each a list of broker indices (failover endpoints, one connection at a time).
    pub upstreams: Vec<Vec<usize>>,
    /// Filters sent to every upstream (`has:TEXT`, or refused expressions).
    pub filters: Vec<String>,
}

/// Fault kinds and their mean gaps (`None`: the kind is disabled in this run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Faults {
    /// Connection resets (RST both ways; in-flight data lost).
    pub resets: Option<Duration>,
    /// Half-open connections: a connection silently stops carrying anything, both ways, for
    /// good (a lost NAT entry); the ends find out only by their timers.
    pub black_holes: Option<Duration>,
    /// Network partitions between two hosts: segments (and connects) wait until it heals.
    pub partitions: Option<Duration>,
    /// Slow readers: one end of a connection stops reading for a while.
    pub slow_readers: Option<Duration>,
    /// Restarts: a broker or subscriber process dies (its connections reset) and starts again
    /// at once from its seen-index store.
    pub restarts: Option<Duration>,
}

impl Faults {
    /// True when no fault kind is enabled.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl Options {
    /// Seeds with this bit set always run with a [`LogSpec`] and frequent restarts (the
    /// Kafka-like source's crash tests); `swarm` draws the rest as for any seed.
    pub const LOG_SEED: u64 = 1 << 62;

    /// Draws the whole set-up from `seed`.
    pub fn swarm(seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x6F70_7469_6F6E_7321);
        let brokers = rng.between(2, 5);
        let mut broker_upstreams: Vec<Vec<Vec<usize>>> = (0..brokers)
            .map(|i| vec![vec![(i + brokers - 1) % brokers]])
            .collect();
        for _ in 0..rng.between(0, brokers) {
            let from = rng.below(brokers);
            let to = rng.below(brokers);
            let taken = |ups: &Vec<Vec<usize>>, b: usize| ups.iter().flatten().any(|&x| x == b);
            if from == to || taken(&broker_upstreams[from], to) {
                continue;
            }
            // The ring upstreams stay single-endpoint so the mesh stays strongly connected
            // whichever failover endpoint a chord happens to use.
            let mut chord = vec![to];
            let spare = rng.below(brokers);
            if rng.ratio(1, 3)
                && spare != from
                && spare != to
                && !taken(&broker_upstreams[from], spare)
            {
                chord.push(spare);
            }
            broker_upstreams[from].push(chord);
        }

        let subscribers = (0..rng.between(1, 5))
            .map(|_| {
                let mut upstreams: Vec<Vec<usize>> = Vec::new();
                let mut used = Vec::new();
                for _ in 0..rng.between(1, 2.min(brokers)) {
                    let mut endpoints = Vec::new();
                    for _ in 0..rng.between(1, 2) {
                        let b = rng.below(brokers);
                        if !used.contains(&b) {
                            used.push(b);
                            endpoints.push(b);
                        }
                    }
                    if !endpoints.is_empty() {
                        upstreams.push(endpoints);
                    }
                }
                let filters = match rng.below(6) {
                    0..=2 => Vec::new(),
                    3 | 4 => (0..rng.between(1, 2))
                        .map(|_| format!("has:tag:{}", rng.pick(&TAGS)))
                        .collect(),
                    _ if rng.coin() => vec![BAD_FILTER.to_owned()],
                    _ => vec![
                        BAD_FILTER.to_owned(),
                        format!("has:tag:{}", rng.pick(&TAGS)),
                    ],
                };
                SubscriberSpec { upstreams, filters }
            })
            .collect();
        let mute_subscribers = (0..rng.between(0, 1)).map(|_| rng.below(brokers)).collect();

        let mean = |rng: &mut Rng| {
            rng.coin()
                .then(|| Duration::from_secs(rng.between(15, 240) as u64))
        };
        let faults = Faults {
            resets: mean(&mut rng),
            black_holes: mean(&mut rng),
            partitions: mean(&mut rng),
            slow_readers: mean(&mut rng),
            restarts: mean(&mut rng),
        };
        let lat_lo = Duration::from_millis(rng.between(1, 50) as u64);
        let lat_hi = lat_lo + Duration::from_millis(rng.between(0, 200) as u64);
        let outbox = if rng.ratio(1, 3) {
            OutboxLimits {
                // Small enough for slow readers to overflow, large enough for a healthy
                // subscriber to ack a burst: 2 frames would drop a healthy subscription.
                bytes_max: rng.between(8 * 1024, 64 * 1024),
                frames_max: rng.between(8, 32),
            }
        } else {
            OutboxLimits::default()
        };
        Self {
            brokers,
            broker_upstreams,
            subscribers,
            mute_subscribers,
            authors: rng.between(1, 3),
            events: rng.between(5, 60),
            burst_max: *rng.pick(&[1, 1, 4, 12]),
            duplicate_submissions: rng.coin(),
            resubmit: rng.coin(),
            latency: (lat_lo, lat_hi),
            window: *rng.pick(&[2048, 4096, 16 * 1024, 64 * 1024]),
            segments_max: rng.between(1, 4),
            outbox,
            comet_policies: rng.ratio(1, 4),
            test_events: rng
                .ratio(1, 3)
                .then(|| Duration::from_secs(rng.between(60, 600) as u64)),
            faults,
            fault_phase: Duration::from_secs(rng.between(120, 1200) as u64),
            heal_bound: HEAL_BOUND,
            delivery_bound: DELIVERY_BOUND,
            steps_max: STEPS_MAX,
            log: None,
            store_lag: None,
            verify_lag: None,
        }
        .with_log_drawn(seed)
        .with_verify_drawn(seed)
    }

    /// A third of the seeds sign their events and verify them off the loop, with a verdict
    /// lag of 0.5 to 20 ms. Drawn from a stream of its own, like the log.
    fn with_verify_drawn(mut self, seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x7665_7269_6679_2121);
        if rng.ratio(1, 3) {
            self.verify_lag =
                Some(rng.duration(Duration::from_micros(500), Duration::from_millis(20)));
        }
        self
    }

    /// A quarter of the seeds get a log (and stores that lag, so that commits wait for
    /// them), and every seed with [`Options::LOG_SEED`] set gets one, with restarts at least
    /// every 90 s on average. Drawn from a stream of its own: the rest of a seed's options do
    /// not depend on it.
    fn with_log_drawn(mut self, seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x6b61_666b_615f_6c6f);
        let forced = seed & Self::LOG_SEED != 0;
        if !rng.ratio(1, 4) && !forced {
            return self;
        }
        if forced {
            let mean = self
                .faults
                .restarts
                .map_or(Duration::from_secs(90), |m| m.min(Duration::from_secs(90)));
            self.faults.restarts = Some(mean);
        }
        self.with_log(&mut rng)
    }

    /// Adds a log, consumed by one to all brokers, and stores that lag (1 to 30 ms), drawn
    /// from `rng`.
    fn with_log(mut self, rng: &mut Rng) -> Self {
        let mut consumers: Vec<usize> = (0..self.brokers).filter(|_| rng.coin()).collect();
        if consumers.is_empty() {
            consumers.push(rng.below(self.brokers));
        }
        self.log = Some(LogSpec {
            topics: rng.between(1, 3),
            partitions: rng.between(1, 3),
            records: rng.between(10, 80),
            garbage_percent: *rng.pick(&[0, 10, 25]),
            consumers,
            batch: *rng.pick(&[1, 4, 16]),
            pending_max: *rng.pick(&[2, 8, 64]),
        });
        self.store_lag = Some(rng.duration(Duration::from_millis(1), Duration::from_millis(30)));
        self
    }
}

/// Worst case to come back after healing: 120 s to notice a half-open upstream, up to 60 s of
/// back-off, the connect itself, and slack.
const HEAL_BOUND: Duration = Duration::from_secs(300);
/// Generous against the worst path (5 brokers, 250 ms per hop, a few round trips of backlog).
const DELIVERY_BOUND: Duration = Duration::from_secs(30);
const STEPS_MAX: u64 = 2_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swarm_is_a_function_of_the_seed_and_varies() {
        assert_eq!(Options::swarm(1), Options::swarm(1));
        let all: Vec<Options> = (0..64).map(Options::swarm).collect();
        assert!(
            all.iter()
                .any(|o| o.faults.is_empty() || o.faults.resets.is_none())
        );
        assert!(all.iter().any(|o| o.faults.resets.is_some()));
        assert!(all.iter().any(|o| o.brokers == 2) && all.iter().any(|o| o.brokers == 5));
        for o in &all {
            for (i, ups) in o.broker_upstreams.iter().enumerate() {
                assert!(ups.iter().flatten().all(|&b| b != i && b < o.brokers));
            }
            assert!(o.subscribers.iter().all(|s| !s.upstreams.is_empty()));
        }
        assert!(all.iter().any(|o| o.log.is_some()) && all.iter().any(|o| o.log.is_none()));
        for seed in 0..16 {
            let o = Options::swarm(seed | Options::LOG_SEED);
            let log = o.log.expect("a log seed has a log");
            assert!(!log.consumers.is_empty() && log.consumers.iter().all(|&b| b < o.brokers));
            assert!(o.store_lag.is_some() && o.faults.restarts.is_some());
        }
    }
}
