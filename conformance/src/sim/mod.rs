//! Deterministic simulation of VTP broker networks: many nodes, one virtual clock, seeded faults.
//!
//! Everything in a run comes from one `u64` seed: the topology, the workload, which fault kinds
//! are enabled and how often (VOPR's "swarm testing"), when each fault strikes, every latency
//! and every chunk boundary. A failing run prints its seed and a command that replays it
//! exactly. Nothing here opens a socket, spawns a thread or sleeps.
//!
//! # What is simulated
//!
//! - **Nodes** are real [`vtp_core::Node`]s, each behind a [`vtp_core::driver::Driver`], the
//!   same outbox and dispatch code the tokio, smol and mio runtimes use, so slow readers and
//!   outbox overflow play out exactly as in production:
//!   - *brokers* `broker-0…` receive (port 8098) and broadcast (port 8099), and subscribe to
//!     each other in a directed ring plus random chords (a mesh with cycles), some upstreams
//!     with failover endpoints;
//!   - *subscribers* `sub-0…` (the `vtp listen` role) subscribe to one or two brokers, with no
//!     filters, with filters, or with filters the brokers refuse;
//!   - *authors* `author-0…` submit events with [`vtp_core::Node::submit`], sometimes the same
//!     event to two brokers, sometimes again after a failure;
//!   - *mute subscribers* `mute-0…` are hand-written peers that connect, read and never answer.
//! - **A Kafka-like log** (a quarter of the seeds, and every seed with [`Options::LOG_SEED`]
//!   set): topics of partitions of records appended during the fault phase (VOEvents of its
//!   own, VOEvents authors also submit, repeats, garbage), consumed by some brokers as an
//!   external source ([`vtp_core::Node::handle_external`]), each in its own consumer group
//!   whose committed offsets survive its restarts. The node says when an offset may be
//!   committed; the broker's effects commit it to the group. In those seeds every store
//!   commits in groups a few milliseconds late, and a restart loses what was not durable;
//!   consuming brokers also crash now and then right after reading records.
//! - **Signatures verified off the loop** (a third of the seeds, [`Options::verify_lag`]):
//!   authors sign every event (the core's test double), and every node hands the verification
//!   of authors' signed submissions to its effects ([`vtp_core::Action::Verify`]), which give
//!   each verdict back a little later; the receipts wait for them, and a restart loses the
//!   verdicts not back yet.
//! - **Links** are TCP connections: ordered byte pipes with latency and a bounded window, that
//!   cut every write at random boundaries ("one read is one frame" is the classic framing bug).
//!   Nodes dial addresses such as `broker-3:8099`: the simulator resolves the host name to
//!   the host of that name and the port to its listener.
//! - **Faults** (each kind on or off per seed, at a seeded rate): connection resets,
//!   half-open connections (a link silently stops carrying anything, for good), partitions
//!   between two hosts (segments and connects wait until it heals), slow readers, and
//!   restarts (a broker or subscriber process dies, its connections reset, and it starts again
//!   from its seen-index store). A quarter of the seeds run the brokers with Comet's policies
//!   (duplicates nak'd, all-refused filters mean everything) instead of VTP 2.0's.
//! - **Time** is one virtual clock; a node's monotonic `now` and its wall clock move together
//!   (its wall clock is an anchor plus `now`). Each step jumps to the earliest of: the next
//!   segment due on a link, the next node deadline (`poll_timeout`), the next scheduled fault or
//!   submission. Runs are bounded in steps and in virtual time.
//!
//! # Phases and invariants
//!
//! 1. **Faults** (2 to 20 virtual minutes): events are submitted while faults strike. After
//!    *every* step the safety invariants are checked:
//!    - no broker accepts (and so forwards) an event twice, and no node hands one to its
//!      handlers twice, across restarts too;
//!    - no connection carries an event twice (with the above: no event loops in the cyclic
//!      mesh, whatever the faults);
//!    - a subscriber never receives an event its filters reject, once the broker has its filters
//!      (before that, a broker sends everything, as Comet does: the window is tracked per
//!      connection to the byte);
//!    - every queue stays within its bound: each driver outbox and each seen-index (link
//!      windows are bounded by construction);
//!    - every event a node hands to its handlers was recorded in its store, once;
//!    - well-behaved nodes never report a protocol violation to each other, never refuse a
//!      connection, and never nak a valid event (under Comet's policies, only a duplicate, at
//!      a broker that had accepted it); each submission gets at most one outcome;
//!    - a broker drops a mute subscriber within two iamalive periods of accepting it;
//!    - with a log: a group's committed offset never goes backwards and never passes a record
//!      whose event is not durable at that broker or, for garbage, that it did not report
//!      skipped; no valid record is skipped and no garbage is accepted or crosses a link.
//! 2. **Healing**: faults stop, partitions heal and readers resume (half-open links stay dead:
//!    their ends must find out by their timers). Every subscription of every node must be back
//!    up within [`Options::heal_bound`] ("dropped subscribers come back").
//! 3. **Probes**: each broker receives one fresh event, which must reach every node whose
//!    filters want it within [`Options::delivery_bound`].
//! 4. **End**: every event accepted anywhere during the fault phase must have reached every
//!    node connected to its origin *throughout*: through a chain of subscriptions, each
//!    established before the event was first accepted and neither closed nor disturbed (slow
//!    reader, half-open, partition) until the delivery bound after it. Every submission got
//!    exactly one outcome. With a log, every group committed every partition to its end and
//!    every valid event of the log reached the handlers of every consuming broker (and, by the
//!    above, every node connected to it throughout).
//!
//! # Running it
//!
//! `cargo test -p vtp-conformance --test sim` runs a fixed set of seeds (a few seconds). On
//! failure it prints, for example:
//!
//! ```text
//! seed=0x00000000000000a3 ; replay: VTP_SIM_SEED=0x00000000000000a3 cargo test -p vtp-conformance --test sim -- replay --nocapture
//! ```
//!
//! The replay prints the options of the run and a trace of every step. Many seeds (each one a
//! different swarm configuration), in release mode:
//!
//! ```text
//! VTP_SIM_SEEDS=10000 cargo test --release -p vtp-conformance --test sim -- --ignored many_seeds --nocapture
//! ```
//!
//! `VTP_SIM_FROM` picks the first seed of that range (default 0); `VTP_SIM_FROM=0x4000000000000000`
//! runs seeds that all have a log.
//!
//! ```
//! let summary = vtp_conformance::sim::run(7).map_err(|f| f.to_string())?;
//! assert!(summary.accepted > 0);
//! # Ok::<(), String>(())
//! ```

/// Prints a trace line when the run is traced; formats nothing otherwise.
macro_rules! trace {
    ($sim:expr, $($arg:tt)*) => {
        if $sim.trace {
            $sim.trace_line(format_args!($($arg)*));
        }
    };
}

mod check;
mod faults;
mod filter;
mod kafka;
mod links;
mod net;
mod options;
mod probes;
mod rng;
mod topology;
mod world;

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

pub use options::{Faults, LogSpec, Options, SubscriberSpec};
pub use world::Sim;

/// Runs the simulation for `seed` with the options drawn from it ([`Options::swarm`]).
///
/// # Errors
///
/// A [`Failure`] naming the broken invariant, the step and virtual time it broke at, and the
/// command that replays the run.
pub fn run(seed: u64) -> Result<Summary, Failure> {
    run_with(seed, Options::swarm(seed), false)
}

/// Runs the simulation for `seed` with the given options; `trace` prints every step to
/// standard error.
///
/// A panic inside the run (a bug: the core must never panic on peer input) is caught and
/// reported as a [`Violation::Panicked`] failure, with the seed.
///
/// # Errors
///
/// As [`run`].
pub fn run_with(seed: u64, options: Options, trace: bool) -> Result<Summary, Failure> {
    match catch_unwind(AssertUnwindSafe(|| Sim::new(seed, options, trace).run())) {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "(non-string panic payload)".to_owned());
            Err(Failure {
                seed,
                step: 0,
                at: Duration::ZERO,
                violation: Box::new(Violation::Panicked(message)),
            })
        }
    }
}

/// The command that replays the run of `seed`.
pub fn replay_command(seed: u64) -> String {
    format!(
        "VTP_SIM_SEED={seed:#018x} cargo test -p vtp-conformance --test sim -- replay --nocapture"
    )
}

/// What a successful run did. Two runs of one seed give equal summaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The seed.
    pub seed: u64,
    /// Steps taken.
    pub steps: u64,
    /// Virtual time elapsed.
    pub virtual_time: Duration,
    /// Events submitted (fault phase and probes).
    pub events: usize,
    /// Events accepted by at least one broker.
    pub accepted: usize,
    /// Events handed to handlers, over all nodes.
    pub deliveries: usize,
    /// Faults injected.
    pub faults: usize,
    /// Connections opened.
    pub links: usize,
    /// Records of the log handed to consuming brokers (re-reads after a restart included).
    pub log_reads: usize,
    /// Commits consuming brokers made to their groups.
    pub log_commits: usize,
    /// Signatures verified off a node's loop and handed back ([`Options::verify_lag`]).
    pub verified: usize,
    /// A hash of every step (what, where, when): equal fingerprints mean identical runs.
    pub fingerprint: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed={:#018x}: {} steps, {:.0} s virtual, {} events ({} accepted), {} deliveries, \
             {} faults, {} connections, {} log reads, {} commits, {} verified off the loop",
            self.seed,
            self.steps,
            self.virtual_time.as_secs_f64(),
            self.events,
            self.accepted,
            self.deliveries,
            self.faults,
            self.links,
            self.log_reads,
            self.log_commits,
            self.verified
        )
    }
}

/// A run that broke an invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The seed: [`replay_command`] replays it.
    pub seed: u64,
    /// The step at which the invariant broke (0 for a panic).
    pub step: u64,
    /// Virtual time since the start of the run.
    pub at: Duration,
    /// What broke.
    pub violation: Box<Violation>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "simulation failed at step {}, {:.3} s virtual: {}",
            self.step,
            self.at.as_secs_f64(),
            self.violation
        )?;
        write!(
            f,
            "seed={:#018x} ; replay: {}",
            self.seed,
            replay_command(self.seed)
        )
    }
}

impl std::error::Error for Failure {}

/// A broken invariant. Node names are the simulator's (`broker-2`, `sub-0`, `author-1`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// A broker accepted one event twice, so it forwarded it twice.
    AcceptedTwice {
        /// The broker.
        node: String,
        /// The event.
        ivorn: String,
    },
    /// A node handed one event to its handlers twice.
    HandledTwice {
        /// The node.
        node: String,
        /// The event.
        ivorn: String,
    },
    /// One connection carried one event twice: an event loop.
    CarriedTwice {
        /// The sending broker.
        from: String,
        /// The receiving node.
        to: String,
        /// The event.
        ivorn: String,
    },
    /// A broker sent a subscriber an event its filters reject, after it had the filters.
    FilterBypassed {
        /// The broker.
        from: String,
        /// The subscriber.
        to: String,
        /// The event.
        ivorn: String,
        /// The subscriber's filters.
        filters: Vec<String>,
    },
    /// A node handed events to its handlers without recording each in its store once.
    StoreMismatch {
        /// The node.
        node: String,
        /// Records persisted.
        persisted: usize,
        /// Events handled.
        handled: usize,
    },
    /// A queue grew past its bound.
    QueueOverBound {
        /// The node.
        node: String,
        /// Which queue.
        queue: String,
        /// Its length.
        len: usize,
        /// Its bound.
        max: usize,
    },
    /// A node reported a protocol violation by a well-behaved peer.
    ProtocolViolation {
        /// The node reporting it.
        node: String,
        /// Its report.
        detail: String,
    },
    /// A node refused a connection.
    Refused {
        /// The node.
        node: String,
        /// Its reason.
        reason: String,
    },
    /// A broker nak'd a valid event.
    SubmissionNaked {
        /// The author.
        author: String,
        /// The event.
        ivorn: String,
        /// The nak's reason.
        reason: Option<String>,
    },
    /// A submission got more than one outcome (ack, nak, failure).
    ReceiptTwice {
        /// The author.
        author: String,
        /// The event.
        ivorn: String,
    },
    /// A submission never got an outcome.
    SubmissionUnresolved {
        /// The author.
        author: String,
        /// The event.
        ivorn: String,
    },
    /// A probe submission failed although the network was healed.
    ProbeFailed {
        /// The author.
        author: String,
        /// The probe event.
        ivorn: String,
        /// What happened.
        outcome: String,
    },
    /// An event did not reach a node connected to its origin throughout, within the bound.
    NotDelivered {
        /// The event.
        ivorn: String,
        /// Where it was first accepted.
        origin: String,
        /// The node it did not reach.
        node: String,
        /// The delivery bound.
        bound: Duration,
    },
    /// A subscription was not back up within the bound after healing.
    NotReconnected {
        /// The subscribing node.
        node: String,
        /// The upstream's endpoints.
        upstream: String,
        /// The bound.
        bound: Duration,
    },
    /// A broker kept a subscriber that never answers for more than two iamalive periods.
    MuteNotDropped {
        /// The broker.
        broker: String,
        /// The mute subscriber.
        subscriber: String,
    },
    /// The run did not finish within its step or time bound (a livelock or a runaway loop).
    Unfinished {
        /// Which bound.
        reason: String,
    },
    /// A consumer group's committed offset went backwards.
    CommitBackwards {
        /// The consuming broker.
        node: String,
        /// The topic-partition.
        partition: String,
        /// The group's offset.
        committed: u64,
        /// The offset the node let its source commit.
        next_offset: u64,
    },
    /// A broker let its source commit past a record that was not done.
    CommittedTooEarly {
        /// The consuming broker.
        node: String,
        /// The record (`topic[partition]@offset`).
        record: String,
        /// Why it was not done.
        why: String,
    },
    /// A broker skipped a valid record of the log.
    ValidRecordSkipped {
        /// The consuming broker.
        node: String,
        /// The record (`topic[partition]@offset`).
        record: String,
        /// Its event.
        ivorn: String,
        /// The node's reason.
        reason: String,
    },
    /// A garbage record of the log was accepted, or crossed a link.
    GarbageForwarded {
        /// The node, or the link (`from -> to`).
        node: String,
        /// The IVORN the garbage carries.
        ivorn: String,
    },
    /// At the end, a consumer group had not committed a partition to its end.
    LogNotConsumed {
        /// The consuming broker.
        node: String,
        /// The topic-partition.
        partition: String,
        /// The group's offset.
        committed: u64,
        /// The partition's end.
        end: u64,
    },
    /// At the end, a valid event of the log had not reached a consuming broker's handlers.
    LogEventMissing {
        /// The consuming broker.
        node: String,
        /// The event.
        ivorn: String,
    },
    /// Something panicked.
    Panicked(String),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AcceptedTwice { node, ivorn } => write!(
                f,
                "{node} accepted {ivorn} twice, so it forwarded it twice: its seen-index let \
                 a duplicate through"
            ),
            Self::HandledTwice { node, ivorn } => {
                write!(f, "{node} handed {ivorn} to its handlers twice")
            }
            Self::CarriedTwice { from, to, ivorn } => write!(
                f,
                "the connection {from} -> {to} carried {ivorn} twice: an event loop"
            ),
            Self::FilterBypassed {
                from,
                to,
                ivorn,
                filters,
            } => write!(
                f,
                "{from} sent {ivorn} to {to} after receiving its filters {filters:?}, which \
                 reject it"
            ),
            Self::StoreMismatch {
                node,
                persisted,
                handled,
            } => write!(
                f,
                "{node} handled {handled} events but persisted {persisted} seen-index records: \
                 after a restart it would relay or handle some again"
            ),
            Self::QueueOverBound {
                node,
                queue,
                len,
                max,
            } => write!(f, "{node}: {queue} holds {len}, over its bound of {max}"),
            Self::ProtocolViolation { node, detail } => write!(
                f,
                "{node} reported a protocol violation by a well-behaved peer: {detail}"
            ),
            Self::Refused { node, reason } => write!(f, "{node} refused a connection: {reason}"),
            Self::SubmissionNaked {
                author,
                ivorn,
                reason,
            } => write!(
                f,
                "{ivorn} from {author} was nak'd although valid: {reason:?}"
            ),
            Self::ReceiptTwice { author, ivorn } => {
                write!(f, "the submission of {ivorn} by {author} got two outcomes")
            }
            Self::SubmissionUnresolved { author, ivorn } => write!(
                f,
                "the submission of {ivorn} by {author} never got an ack, a nak or a failure"
            ),
            Self::ProbeFailed {
                author,
                ivorn,
                outcome,
            } => write!(
                f,
                "probe {ivorn} from {author} was not accepted after healing: {outcome}"
            ),
            Self::NotDelivered {
                ivorn,
                origin,
                node,
                bound,
            } => write!(
                f,
                "{ivorn}, first accepted by {origin}, did not reach {node} within {:.0} s \
                 although {node} was connected to {origin} throughout",
                bound.as_secs_f64()
            ),
            Self::NotReconnected {
                node,
                upstream,
                bound,
            } => write!(
                f,
                "{node} was not subscribed to {upstream} again within {:.0} s of healing",
                bound.as_secs_f64()
            ),
            Self::MuteNotDropped { broker, subscriber } => write!(
                f,
                "{broker} kept {subscriber}, which never answers, for more than two iamalive \
                 periods"
            ),
            Self::Unfinished { reason } => write!(f, "the run did not finish: {reason}"),
            Self::CommitBackwards {
                node,
                partition,
                committed,
                next_offset,
            } => write!(
                f,
                "{node} committed {partition}@{next_offset}, behind its group's offset \
                 {committed}"
            ),
            Self::CommittedTooEarly { node, record, why } => write!(
                f,
                "{node} committed past {record} although {why}: a crash now would lose it"
            ),
            Self::ValidRecordSkipped {
                node,
                record,
                ivorn,
                reason,
            } => write!(f, "{node} skipped {record}, the valid {ivorn}: {reason}"),
            Self::GarbageForwarded { node, ivorn } => write!(
                f,
                "{node}: the garbage record {ivorn} of the log was accepted or forwarded"
            ),
            Self::LogNotConsumed {
                node,
                partition,
                committed,
                end,
            } => write!(
                f,
                "{node}'s group committed {partition} up to {committed} only, of {end} records"
            ),
            Self::LogEventMissing { node, ivorn } => write!(
                f,
                "{ivorn}, in the log {node} consumes, never reached {node}'s handlers"
            ),
            Self::Panicked(message) => write!(f, "panicked: {message}"),
        }
    }
}

/// The origin of virtual time: the one real instant each run reads. Every other instant is it
/// plus a duration, so nothing depends on its value.
pub(crate) fn origin() -> Instant {
    Instant::now()
}
