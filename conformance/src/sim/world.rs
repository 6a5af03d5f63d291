//! The simulated world and its scheduler: the [`Sim`] type, what can be scheduled, the phases
//! of a run, and the step loop that jumps from one due thing to the next.
//!
//! Around it, by responsibility: `topology.rs` builds the hosts and the workload, `links.rs`
//! carries bytes between the links and the hosts' drivers, `faults.rs` breaks and heals,
//! `check.rs` holds the invariants, `probes.rs` runs the last phases, and `kafka.rs` holds the
//! log some brokers consume and the stores' group commits.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use vtp_core::driver::Driver;
use vtp_core::{CloseReason, ConnId, EventKey};

use super::kafka::Log;
use super::net::{DOWN, HostId, Link, LinkId, UP};
use super::options::Options;
use super::rng::Rng;
use super::topology::Host;
use super::{Failure, Summary, Violation};

/// Quiet time between "all subscriptions up" and the probes, so authenticate replies land.
pub(crate) const SETTLE: Duration = Duration::from_secs(5);
/// Tries per event when authors resubmit after a failure.
pub(crate) const ATTEMPTS_MAX: u8 = 3;

/// An event the simulation submitted.
#[derive(Debug)]
pub(crate) struct SimEvent {
    /// Who submits it over VTP; `None` for an event only in the log.
    pub(crate) author: Option<HostId>,
    pub(crate) ivorn: Arc<str>,
    pub(crate) payload: Bytes,
    pub(crate) probe: bool,
    /// First acceptance anywhere: when and by whom.
    pub(crate) first_accept: Option<(Instant, HostId)>,
}

/// One call of `submit`.
#[derive(Debug)]
pub(crate) struct Submission {
    /// The broker it went to.
    pub(crate) broker: HostId,
    /// When it was made.
    pub(crate) at: Instant,
    pub(crate) event: usize,
    pub(crate) attempt: u8,
    pub(crate) outcomes: u8,
}

/// Scheduled happenings, other than link deliveries and node deadlines.
#[derive(Debug, Clone)]
pub(crate) enum Timed {
    Submit {
        author: HostId,
        event: usize,
        broker: HostId,
        attempt: u8,
    },
    Fault(FaultKind),
    HealPartition(HostId, HostId),
    /// Retry a stalled write (it fails once the user timeout has passed).
    Writable(HostId, u32, ConnId),
    DialFailed(HostId, u32, ConnId, &'static str),
    MuteDial(HostId),
    /// A host's store commits a group (the host's incarnation then).
    StoreCommit(HostId, u32),
    /// A host's verify jobs are done (the host's incarnation then).
    Verified(HostId, u32),
    /// A consumer polls the log (if this is still the poll it has scheduled).
    Poll(HostId, Instant),
    /// A consuming broker crashes and restarts (during the fault phase only).
    Crash(HostId),
    Heal,
    HealDeadline,
    /// Submit the probes, if the network stayed settled since this instant.
    Probe(Instant),
    ProbeDeadline,
    Finish,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultKind {
    Reset,
    BlackHole,
    Partition,
    SlowReader,
    Restart,
}

/// Where the run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Faults,
    Healing,
    /// Every subscription up since this instant.
    Settling(Instant),
    Probing,
    /// Probes done; waiting for the last fault-phase event's delivery bound.
    Ending,
    Done,
}

/// The earliest thing to do next.
#[derive(Debug, Clone, Copy)]
enum Next {
    Timed,
    Pipe(LinkId, usize),
    Host(HostId),
}

/// One simulated run. Build it with [`Sim::new`] and consume it with [`Sim::run`].
#[derive(Debug)]
pub struct Sim {
    pub(crate) seed: u64,
    pub(crate) options: Options,
    pub(crate) rng: Rng,
    pub(crate) fault_rng: Rng,
    pub(crate) t0: Instant,
    pub(crate) now: Instant,
    pub(crate) step: u64,
    pub(crate) phase: Phase,
    pub(crate) trace: bool,
    pub(crate) hosts: Vec<Host>,
    pub(crate) links: Vec<Link>,
    /// Links with something queued in a pipe.
    pub(crate) active: BTreeSet<LinkId>,
    pub(crate) timed: BTreeMap<(Instant, u64), Timed>,
    pub(crate) seq: u64,
    /// Current partitions: host pair → heal time.
    pub(crate) partitions: BTreeMap<(HostId, HostId), Instant>,
    /// Every partition: host pair, start, end (`None` while on).
    pub(crate) partition_log: Vec<(HostId, HostId, Instant, Option<Instant>)>,
    pub(crate) events: Vec<SimEvent>,
    pub(crate) by_ivorn: BTreeMap<Arc<str>, usize>,
    /// First hand-over to handlers, per node and event.
    pub(crate) delivered: BTreeMap<(HostId, Arc<str>), Instant>,
    /// Acceptances per node and event, with the event's key; one a crash undid (its record
    /// was not durable, so nothing went out for it) is forgotten (`Sim::restart`).
    pub(crate) accepted: BTreeMap<(HostId, Arc<str>), EventKey>,
    pub(crate) submissions: BTreeMap<(HostId, ConnId), Submission>,
    pub(crate) faults: usize,
    /// The Kafka-like log, if the run has one.
    pub(crate) log: Option<Log>,
    /// Log records handed to consumers, and commits they made.
    pub(crate) log_reads: usize,
    pub(crate) log_commits: usize,
    /// Verify jobs run and handed back to a node.
    pub(crate) verified: usize,
    pub(crate) fingerprint: u64,
    pub(crate) failure: Option<Violation>,
}
impl Sim {
    /// Builds the world of `options`, every random choice drawn from `seed`; `trace` prints
    /// every step to standard error.
    pub fn new(seed: u64, options: Options, trace: bool) -> Self {
        let mut rng = Rng::new(seed);
        let fault_rng = rng.fork();
        let t0 = super::origin();
        let mut sim = Self {
            seed,
            options,
            rng,
            fault_rng,
            t0,
            now: t0,
            step: 0,
            phase: Phase::Faults,
            trace,
            hosts: Vec::new(),
            links: Vec::new(),
            active: BTreeSet::new(),
            timed: BTreeMap::new(),
            seq: 0,
            partitions: BTreeMap::new(),
            partition_log: Vec::new(),
            events: Vec::new(),
            by_ivorn: BTreeMap::new(),
            delivered: BTreeMap::new(),
            accepted: BTreeMap::new(),
            submissions: BTreeMap::new(),
            faults: 0,
            log: None,
            log_reads: 0,
            log_commits: 0,
            verified: 0,
            fingerprint: 0xcbf2_9ce4_8422_2325,
            failure: None,
        };
        sim.build();
        sim
    }

    /// Runs until every phase is done or an invariant breaks.
    ///
    /// # Errors
    ///
    /// The first broken invariant, as a [`Failure`].
    pub fn run(mut self) -> Result<Summary, Failure> {
        trace!(self, "options: {:?}", self.options);
        let time_max = self.options.fault_phase
            + self.options.heal_bound
            + SETTLE
            + 2 * self.options.delivery_bound
            + Duration::from_secs(120);
        while self.phase != Phase::Done {
            if self.step >= self.options.steps_max {
                self.fail(Violation::Unfinished {
                    reason: format!("more than {} steps", self.options.steps_max),
                });
            } else if self.now - self.t0 > time_max {
                self.fail(Violation::Unfinished {
                    reason: format!("more than {:.0} s of virtual time", time_max.as_secs_f64()),
                });
            } else {
                self.step();
            }
            if let Some(violation) = self.failure.take() {
                return Err(Failure {
                    seed: self.seed,
                    step: self.step,
                    at: self.now - self.t0,
                    violation: Box::new(violation),
                });
            }
        }
        Ok(Summary {
            seed: self.seed,
            steps: self.step,
            virtual_time: self.now - self.t0,
            events: self.events.len(),
            accepted: self
                .events
                .iter()
                .filter(|e| e.first_accept.is_some())
                .count(),
            deliveries: self.delivered.len(),
            faults: self.faults,
            links: self.links.len(),
            log_reads: self.log_reads,
            log_commits: self.log_commits,
            verified: self.verified,
            fingerprint: self.fingerprint,
        })
    }

    pub(crate) fn schedule(&mut self, at: Instant, what: Timed) {
        self.seq += 1;
        self.timed.insert((at, self.seq), what);
    }

    // -------------------------------------------------------------------- stepping

    fn step(&mut self) {
        let Some((at, next)) = self.next() else {
            self.fail(Violation::Unfinished {
                reason: "nothing left to do: no timer, no segment, no node deadline".into(),
            });
            return;
        };
        if at > self.now {
            self.now = at;
        }
        self.step += 1;
        let (tag, index) = match next {
            Next::Timed => (1, 0),
            Next::Pipe(l, d) => (2, l * 2 + d),
            Next::Host(h) => (3, h),
        };
        self.mix(tag, index as u64);
        match next {
            Next::Timed => {
                if let Some((_, what)) = self.timed.pop_first() {
                    self.handle_timed(what);
                }
            }
            Next::Pipe(l, d) => self.deliver(l, d),
            Next::Host(h) => {
                trace!(self, "{}: timeout", self.hosts[h].name);
                self.drive(h, |d, fx, now| d.handle_wakeup(now, fx));
                self.poll_host(h);
            }
        }
        self.check_step();
    }

    /// The earliest pending thing; ties go to scheduled happenings, then links, then hosts,
    /// each in index order.
    fn next(&mut self) -> Option<(Instant, Next)> {
        let mut best: Option<(Instant, Next)> = self
            .timed
            .first_key_value()
            .map(|(k, _)| (k.0, Next::Timed));
        let better = |at: Instant, what: Next, best: &mut Option<(Instant, Next)>| {
            if best.is_none_or(|(b, _)| at < b) {
                *best = Some((at, what));
            }
        };
        let mut idle = Vec::new();
        for &l in &self.active {
            let link = &self.links[l];
            if link.pipes.iter().all(|p| p.items.is_empty()) {
                idle.push(l);
                continue;
            }
            if self.partitioned(link.ends[0].host, link.ends[1].host) {
                continue;
            }
            for d in [UP, DOWN] {
                if let Some(at) = link.pipes[d].next_delivery() {
                    better(at, Next::Pipe(l, d), &mut best);
                }
            }
        }
        for l in idle {
            self.active.remove(&l);
        }
        for (h, host) in self.hosts.iter().enumerate() {
            if let Some(at) = host.driver.as_ref().and_then(Driver::poll_timeout) {
                better(at, Next::Host(h), &mut best);
            }
        }
        best
    }

    /// A scheduled happening is due.
    fn handle_timed(&mut self, what: Timed) {
        match what {
            Timed::Submit {
                author,
                event,
                broker,
                attempt,
            } => self.submit(author, event, broker, attempt),
            Timed::Fault(kind) => {
                if self.phase == Phase::Faults {
                    self.inject(kind);
                    let mean = match kind {
                        FaultKind::Reset => self.options.faults.resets,
                        FaultKind::BlackHole => self.options.faults.black_holes,
                        FaultKind::Partition => self.options.faults.partitions,
                        FaultKind::SlowReader => self.options.faults.slow_readers,
                        FaultKind::Restart => self.options.faults.restarts,
                    };
                    if let Some(mean) = mean {
                        let at = self.now + self.fault_rng.exponential(mean);
                        self.schedule(at, Timed::Fault(kind));
                    }
                }
            }
            Timed::HealPartition(a, b) => self.heal_partition(a, b),
            Timed::Writable(h, incarnation, conn) => {
                if self.hosts[h].incarnation == incarnation {
                    self.flush(h, conn);
                    self.poll_host(h);
                }
            }
            Timed::DialFailed(h, incarnation, conn, reason) => {
                if self.hosts[h].incarnation == incarnation && self.hosts[h].dialing.remove(&conn) {
                    let reason = CloseReason::ConnectFailed(reason.into());
                    self.drive(h, |d, fx, now| d.handle_closed(conn, reason, now, fx));
                    self.poll_host(h);
                }
            }
            Timed::MuteDial(h) => self.mute_dial(h),
            Timed::StoreCommit(h, incarnation) => self.commit_store(h, incarnation),
            Timed::Verified(h, incarnation) => self.verified(h, incarnation),
            Timed::Poll(h, at) => self.poll_source(h, at),
            Timed::Crash(h) => {
                if self.phase == Phase::Faults {
                    self.restart(h);
                    self.faults += 1;
                }
            }
            Timed::Heal => self.heal(),
            Timed::HealDeadline => {
                if self.phase == Phase::Healing
                    && let Some((node, upstream)) = self.missing_subscription()
                {
                    let bound = self.options.heal_bound;
                    self.fail(Violation::NotReconnected {
                        node,
                        upstream,
                        bound,
                    });
                }
            }
            Timed::Probe(since) => {
                if self.phase == Phase::Settling(since) {
                    self.probe();
                }
            }
            Timed::ProbeDeadline => {
                if self.phase == Phase::Probing {
                    self.check_probes(true);
                }
            }
            Timed::Finish => self.finish(),
        }
    }

    /// Checks run after every step.
    fn check_step(&mut self) {
        self.check_bounds();
        self.check_mutes();
        match self.phase {
            Phase::Healing if self.missing_subscription().is_none() => {
                trace!(
                    self,
                    "every subscription is up again: probing after {SETTLE:?}"
                );
                self.phase = Phase::Settling(self.now);
                self.schedule(self.now + SETTLE, Timed::Probe(self.now));
            }
            Phase::Probing => self.check_probes(false),
            // A subscription that drops again before the probes (a backlog draining after the
            // heal overflowed a queue, say) must come back too, within the same bound.
            Phase::Settling(_) if self.missing_subscription().is_some() => {
                trace!(self, "a subscription dropped while settling: healing again");
                self.phase = Phase::Healing;
            }
            Phase::Faults | Phase::Healing | Phase::Settling(_) | Phase::Ending | Phase::Done => {}
        }
    }

    // ------------------------------------------------------------------- plumbing

    pub(crate) fn fail(&mut self, violation: Violation) {
        trace!(self, "VIOLATION: {violation}");
        self.failure.get_or_insert(violation);
    }

    fn mix(&mut self, tag: u64, index: u64) {
        let nanos = (self.now - self.t0).as_nanos() as u64;
        for word in [tag, index, nanos] {
            self.fingerprint ^= word;
            self.fingerprint = self.fingerprint.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub(crate) fn trace_line(&self, args: std::fmt::Arguments<'_>) {
        eprintln!(
            "[{:>10.3}] #{:<7} {args}",
            (self.now - self.t0).as_secs_f64(),
            self.step
        );
    }

    pub(crate) fn host_sockets(&self, h: HostId) -> impl Iterator<Item = (ConnId, LinkId)> + '_ {
        self.hosts[h].sockets.iter().map(|(&c, &l)| (c, l))
    }

    pub(crate) fn mute_link(&self, h: HostId) -> Option<LinkId> {
        self.hosts[h].mute.and_then(|(_, l)| l)
    }

    pub(crate) fn is_partitioned_during(
        &self,
        a: HostId,
        b: HostId,
        from: Instant,
        to: Instant,
    ) -> bool {
        let pair = (a.min(b), a.max(b));
        self.partition_log
            .iter()
            .any(|&(x, y, s, e)| (x, y) == pair && s <= to && e.is_none_or(|e| e >= from))
    }
}
