//! The simulated world: hosts (nodes behind drivers), links, the scheduler and the step loop.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use vtp_core::config::{DuplicateReply, InvalidFilters, Upstream};
use vtp_core::driver::{Driver, Effects, Flush, StoreOp};
use vtp_core::{
    CloseReason, Config, ConnId, Delivery, Event, EventKey, ListenerRole, Node, Peer, SeenRecord,
};

use super::filter::{self, SubstringEngine, TAGS};
use super::net::{CLIENT, DOWN, End, HostId, Item, Link, LinkId, PipeWriter, SERVER, UP};
use super::options::Options;
use super::rng::Rng;
use super::{Failure, Summary, Violation};

/// Wall-clock anchor of every node: 2024-05-01T12:00:00Z.
const UNIX0: Duration = Duration::from_secs(1_714_564_800);
/// Quiet time between "all subscriptions up" and the probes, so authenticate replies land.
pub(crate) const SETTLE: Duration = Duration::from_secs(5);
/// Tries per event when authors resubmit after a failure.
pub(crate) const ATTEMPTS_MAX: u8 = 3;

/// What a host is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Broker,
    Subscriber,
    Author,
    Mute,
}

/// Collects what a driver hands out between two looks by the simulator.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    events: Vec<Event>,
    deliveries: Vec<Delivery>,
    /// Seen-index records handed to the store so far.
    persisted: usize,
    /// The durable store: what a restarted node restores.
    store: BTreeMap<EventKey, u64>,
    /// Events handed to the handlers so far.
    handled: usize,
}

impl Effects for Recorder {
    fn store(&mut self, op: StoreOp) {
        match op {
            StoreOp::Persist(r) => {
                self.persisted += 1;
                self.store.insert(r.key, r.unix_secs);
            }
            StoreOp::Forget(key) => {
                self.store.remove(&key);
            }
            StoreOp::Expire { before_unix_secs } => {
                self.store.retain(|_, t| *t > before_unix_secs);
            }
            _ => {}
        }
    }

    fn deliver(&mut self, delivery: Delivery) {
        self.deliveries.push(delivery);
    }

    fn event(&mut self, event: Event) {
        self.events.push(event);
    }
}

/// One machine on the virtual network.
#[derive(Debug)]
pub(crate) struct Host {
    pub(crate) name: String,
    pub(crate) ip: IpAddr,
    pub(crate) kind: Kind,
    /// `None` for hand-written peers.
    pub(crate) driver: Option<Driver>,
    /// The node's configuration, to restart it.
    config: Option<Config>,
    /// Restarts so far: scheduled happenings naming a connection carry it, so a handle
    /// reused by the next incarnation is not mistaken for the old one.
    incarnation: u32,
    fx: Recorder,
    /// Every connection the node ever had, to its link.
    conn_links: BTreeMap<ConnId, LinkId>,
    /// Open sockets (connected or accepted).
    pub(crate) sockets: BTreeMap<ConnId, LinkId>,
    /// Dials in flight.
    dialing: BTreeSet<ConnId>,
    /// Filters the node sends upstream.
    pub(crate) filters: Vec<String>,
    /// Upstreams, each a list of broker hosts (failover endpoints).
    pub(crate) upstreams: Vec<Vec<HostId>>,
    /// Mute subscriber: the broker it dials and its current link.
    pub(crate) mute: Option<(HostId, Option<LinkId>)>,
}

/// An event the simulation submitted.
#[derive(Debug)]
pub(crate) struct SimEvent {
    pub(crate) author: HostId,
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
    broker: HostId,
    /// When it was made.
    pub(crate) at: Instant,
    pub(crate) event: usize,
    attempt: u8,
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
    seed: u64,
    pub(crate) options: Options,
    rng: Rng,
    pub(crate) fault_rng: Rng,
    t0: Instant,
    pub(crate) now: Instant,
    step: u64,
    pub(crate) phase: Phase,
    pub(crate) trace: bool,
    pub(crate) hosts: Vec<Host>,
    pub(crate) links: Vec<Link>,
    /// Links with something queued in a pipe.
    pub(crate) active: BTreeSet<LinkId>,
    pub(crate) timed: BTreeMap<(Instant, u64), Timed>,
    seq: u64,
    /// Current partitions: host pair → heal time.
    pub(crate) partitions: BTreeMap<(HostId, HostId), Instant>,
    /// Every partition: host pair, start, end (`None` while on).
    pub(crate) partition_log: Vec<(HostId, HostId, Instant, Option<Instant>)>,
    pub(crate) events: Vec<SimEvent>,
    by_ivorn: BTreeMap<Arc<str>, usize>,
    /// First hand-over to handlers, per node and event.
    pub(crate) delivered: BTreeMap<(HostId, Arc<str>), Instant>,
    accepted: BTreeSet<(HostId, Arc<str>)>,
    pub(crate) submissions: BTreeMap<(HostId, ConnId), Submission>,
    pub(crate) faults: usize,
    fingerprint: u64,
    failure: Option<Violation>,
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
            accepted: BTreeSet::new(),
            submissions: BTreeMap::new(),
            faults: 0,
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
            fingerprint: self.fingerprint,
        })
    }

    // ------------------------------------------------------------------------ set-up

    fn build(&mut self) {
        let o = self.options.clone();
        let broker_endpoint = |b: usize| format!("sim:broker-{b}:8099");
        for (i, ups) in o.broker_upstreams.iter().enumerate() {
            let mut c = Config::new(Some(format!("ivo://sim.vtp/broker-{i}")));
            c.timing.test_event_interval = o.test_events;
            if o.comet_policies {
                c.policy.duplicate_reply = DuplicateReply::Nak;
                c.policy.invalid_filters = InvalidFilters::SendEverything;
            }
            c.upstreams = ups
                .iter()
                .map(|eps| Upstream {
                    endpoints: eps.iter().map(|&b| broker_endpoint(b)).collect(),
                })
                .collect();
            self.add_host(format!("broker-{i}"), Kind::Broker, c, Vec::new(), ups);
        }
        for (i, s) in o.subscribers.iter().enumerate() {
            let mut c = Config::new(None);
            c.filters = s.filters.clone();
            c.upstreams = s
                .upstreams
                .iter()
                .map(|eps| Upstream {
                    endpoints: eps.iter().map(|&b| broker_endpoint(b)).collect(),
                })
                .collect();
            self.add_host(
                format!("sub-{i}"),
                Kind::Subscriber,
                c,
                s.filters.clone(),
                &s.upstreams,
            );
        }
        for i in 0..o.authors {
            self.add_host(
                format!("author-{i}"),
                Kind::Author,
                Config::new(None),
                Vec::new(),
                &[],
            );
        }
        for (i, &b) in o.mute_subscribers.iter().enumerate() {
            let id = self.hosts.len();
            self.hosts.push(Host {
                name: format!("mute-{i}"),
                ip: ip_of(id),
                kind: Kind::Mute,
                driver: None,
                config: None,
                incarnation: 0,
                fx: Recorder::default(),
                conn_links: BTreeMap::new(),
                sockets: BTreeMap::new(),
                dialing: BTreeSet::new(),
                filters: Vec::new(),
                upstreams: Vec::new(),
                mute: Some((b, None)),
            });
            let at = self.now + self.rng.duration(Duration::ZERO, Duration::from_secs(30));
            self.schedule(at, Timed::MuteDial(id));
        }

        // The workload: events at random times of the fault phase.
        let authors: Vec<HostId> = self.hosts_of(Kind::Author);
        let mut at = self.now;
        let mut burst_left = 0;
        for n in 0..o.events {
            if burst_left == 0 {
                burst_left = self.rng.between(1, o.burst_max);
                at = self.now + self.rng.duration(Duration::ZERO, o.fault_phase);
            }
            burst_left -= 1;
            let author = *self.rng.pick(&authors);
            let event = self.new_event(author, n, false);
            let broker = self.rng.below(o.brokers);
            self.schedule(
                at,
                Timed::Submit {
                    author,
                    event,
                    broker,
                    attempt: 1,
                },
            );
            // The same event again, at once (two paths racing) or much later (a re-sent
            // notice, possibly to a broker restarted in between).
            if o.duplicate_submissions && self.rng.ratio(1, 3) {
                let delay = if self.rng.coin() { 2 } else { 300 };
                let again = at
                    + self
                        .rng
                        .duration(Duration::ZERO, Duration::from_secs(delay));
                let broker = self.rng.below(o.brokers);
                self.schedule(
                    again,
                    Timed::Submit {
                        author,
                        event,
                        broker,
                        attempt: ATTEMPTS_MAX,
                    },
                );
            }
        }
        let faults = self.options.faults;
        for (kind, mean) in [
            (FaultKind::Reset, faults.resets),
            (FaultKind::BlackHole, faults.black_holes),
            (FaultKind::Partition, faults.partitions),
            (FaultKind::SlowReader, faults.slow_readers),
            (FaultKind::Restart, faults.restarts),
        ] {
            if let Some(mean) = mean {
                let at = self.now + self.fault_rng.exponential(mean);
                self.schedule(at, Timed::Fault(kind));
            }
        }
        let heal = self.now + o.fault_phase;
        self.schedule(heal, Timed::Heal);
    }

    fn add_host(
        &mut self,
        name: String,
        kind: Kind,
        config: Config,
        filters: Vec<String>,
        upstreams: &[Vec<usize>],
    ) {
        let id = self.hosts.len();
        let driver = self.new_driver(config.clone());
        self.hosts.push(Host {
            name,
            ip: ip_of(id),
            kind,
            driver: Some(driver),
            config: Some(config),
            incarnation: 0,
            fx: Recorder::default(),
            conn_links: BTreeMap::new(),
            sockets: BTreeMap::new(),
            dialing: BTreeSet::new(),
            filters,
            // Brokers come first, so broker index = host id.
            upstreams: upstreams.to_vec(),
            mute: None,
        });
    }

    /// A node with a fresh seed, its wall clock anchored to the run's, behind a driver.
    fn new_driver(&mut self, config: Config) -> Driver {
        let seed = self.rng.next_u64();
        let unix_now = UNIX0 + (self.now - self.t0);
        let node = Node::new(
            config,
            Box::new(SubstringEngine::default()),
            seed,
            self.now,
            unix_now,
        )
        .expect("the simulator builds valid configurations");
        Driver::new(node, self.options.outbox)
    }

    /// The node's process dies (every connection is reset) and starts again from its store.
    pub(crate) fn restart(&mut self, h: HostId) {
        let Some(config) = self.hosts[h].config.clone() else {
            return;
        };
        trace!(self, "FAULT restart {}", self.hosts[h].name);
        let conns: Vec<LinkId> = self.hosts[h].conn_links.values().copied().collect();
        for l in conns {
            for side in [CLIENT, SERVER] {
                if self.links[l].ends[side].host == h && self.links[l].ends[side].open {
                    self.abort_socket(l, side);
                }
            }
        }
        let mut driver = self.new_driver(config);
        let records: Vec<SeenRecord> = self.hosts[h]
            .fx
            .store
            .iter()
            .map(|(&key, &unix_secs)| SeenRecord { key, unix_secs })
            .collect();
        let now = self.now;
        let host = &mut self.hosts[h];
        let restored = driver.with_node(&mut host.fx, |n| n.restore_seen(records, now));
        trace!(
            self,
            "{} restored {restored} seen-index records", self.hosts[h].name
        );
        let host = &mut self.hosts[h];
        host.driver = Some(driver);
        host.incarnation += 1;
        host.sockets.clear();
        host.dialing.clear();
        host.conn_links.clear();
        self.absorb(h);
        self.poll_host(h);
    }

    pub(crate) fn new_event(&mut self, author: HostId, n: usize, probe: bool) -> usize {
        let what = if probe { "probe" } else { "ev" };
        let ivorn: Arc<str> = Arc::from(format!(
            "ivo://sim.vtp/{}#{what}-{n}",
            self.hosts[author].name
        ));
        let mut tags: Vec<&str> = Vec::new();
        for _ in 0..self.rng.between(0, 2) {
            let t = *self.rng.pick(&TAGS);
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        let payload = filter::event_payload(&ivorn, &tags);
        let id = self.events.len();
        self.by_ivorn.insert(ivorn.clone(), id);
        self.events.push(SimEvent {
            author,
            ivorn,
            payload,
            probe,
            first_accept: None,
        });
        id
    }

    pub(crate) fn hosts_of(&self, kind: Kind) -> Vec<HostId> {
        (0..self.hosts.len())
            .filter(|&h| self.hosts[h].kind == kind)
            .collect()
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

    // ------------------------------------------------------------------- node I/O

    /// Runs `f` on host `h`'s driver, then looks at what it produced.
    fn drive<R>(
        &mut self,
        h: HostId,
        f: impl FnOnce(&mut Driver, &mut Recorder, Instant) -> R,
    ) -> Option<R> {
        let now = self.now;
        let host = &mut self.hosts[h];
        let driver = host.driver.as_mut()?;
        let r = f(driver, &mut host.fx, now);
        self.absorb(h);
        Some(r)
    }

    /// Carries out what host `h`'s driver asks for, as a runtime does after every input:
    /// flushes each connection from [`Driver::poll_writable`], then starts each dial from
    /// [`Driver::poll_dial`].
    fn poll_host(&mut self, h: HostId) {
        while let Some(conn) = self.hosts[h]
            .driver
            .as_mut()
            .and_then(Driver::poll_writable)
        {
            self.flush(h, conn);
        }
        while let Some((conn, endpoint)) = self.hosts[h].driver.as_mut().and_then(Driver::poll_dial)
        {
            self.dial(h, conn, &endpoint);
        }
    }

    /// Writes what `conn` has queued into its link; a connection still dialling is written
    /// once connected (as the runtimes do).
    fn flush(&mut self, h: HostId, conn: ConnId) {
        let Some(&l) = self.hosts[h].sockets.get(&conn) else {
            return;
        };
        let Some(side) = self.links[l].side_of(h, conn) else {
            return;
        };
        let out = if side == CLIENT { UP } else { DOWN };
        let now = self.now;
        let host = &mut self.hosts[h];
        let Some(driver) = host.driver.as_mut() else {
            return;
        };
        let link = &mut self.links[l];
        let mut writer = PipeWriter {
            pipe: &mut link.pipes[out],
            rng: &mut self.rng,
            now,
            latency: self.options.latency,
            window: self.options.window,
            segments_max: self.options.segments_max,
        };
        let flush = driver.flush(conn, &mut writer, now, &mut host.fx);
        if !link.pipes[out].items.is_empty() {
            self.active.insert(l);
        }
        self.absorb(h);
        match flush {
            Flush::Idle => {}
            Flush::Pending => {
                if let Some(since) = self.links[l].pipes[out].stalled_since {
                    let at = (since + super::net::USER_TIMEOUT).max(now);
                    let incarnation = self.hosts[h].incarnation;
                    self.schedule(at, Timed::Writable(h, incarnation, conn));
                }
            }
            Flush::Close(reason) => {
                trace!(self, "{}: close {conn} ({reason})", self.hosts[h].name);
                self.close_socket(l, side);
            }
        }
    }

    fn dial(&mut self, h: HostId, conn: ConnId, endpoint: &str) {
        trace!(self, "{}: dial {conn} {endpoint}", self.hosts[h].name);
        let target = endpoint
            .strip_prefix("sim:")
            .and_then(|rest| rest.rsplit_once(':'))
            .and_then(|(name, port)| {
                let listener = match port {
                    "8098" => ListenerRole::Receive,
                    "8099" => ListenerRole::Broadcast,
                    _ => return None,
                };
                let host = self.hosts.iter().position(|x| x.name == name)?;
                Some((host, listener))
            });
        self.hosts[h].dialing.insert(conn);
        let Some((server, listener)) = target else {
            let at = self.now + Duration::from_millis(1);
            let incarnation = self.hosts[h].incarnation;
            self.schedule(at, Timed::DialFailed(h, incarnation, conn, "no such host"));
            return;
        };
        let upstream = self.hosts[h]
            .upstreams
            .iter()
            .position(|eps| eps.contains(&server));
        let l = self.links.len();
        let mut client = End::new(h, Some(conn));
        client.open = true;
        let mut link = Link::new(client, server, listener, upstream);
        let at = self.now + self.latency();
        link.pipes[UP].push(Item::Syn, at);
        self.links.push(link);
        self.active.insert(l);
        self.hosts[h].conn_links.insert(conn, l);
    }

    fn mute_dial(&mut self, h: HostId) {
        let Some((broker, _)) = self.hosts[h].mute else {
            return;
        };
        trace!(self, "{}: dial broker-{broker}", self.hosts[h].name);
        let l = self.links.len();
        let mut client = End::new(h, None);
        client.open = true;
        let mut link = Link::new(client, broker, ListenerRole::Broadcast, None);
        let at = self.now + self.latency();
        link.pipes[UP].push(Item::Syn, at);
        self.links.push(link);
        self.active.insert(l);
        self.hosts[h].mute = Some((broker, Some(l)));
    }

    pub(crate) fn submit(&mut self, author: HostId, event: usize, broker: usize, attempt: u8) {
        let endpoint = format!("sim:broker-{broker}:8098");
        let payload = self.events[event].payload.clone();
        trace!(
            self,
            "{}: submit {} to {endpoint} (try {attempt})",
            self.hosts[author].name,
            self.events[event].ivorn
        );
        let result = self.drive(author, |d, fx, now| d.submit(&endpoint, &payload, now, fx));
        match result {
            Some(Ok(conn)) => {
                self.submissions.insert(
                    (author, conn),
                    Submission {
                        broker,
                        at: self.now,
                        event,
                        attempt,
                        outcomes: 0,
                    },
                );
            }
            Some(Err(e)) => self.fail(Violation::Panicked(format!(
                "the simulator built an event the node refuses to submit: {e}"
            ))),
            None => {}
        }
        self.poll_host(author);
    }

    // ----------------------------------------------------------------- deliveries

    /// Delivers the head of pipe `d` of link `l` to its reader.
    fn deliver(&mut self, l: LinkId, d: usize) {
        let reader = if d == UP { SERVER } else { CLIENT };
        let pipe = &mut self.links[l].pipes[d];
        let Some((_, item)) = pipe.items.pop_front() else {
            return;
        };
        if pipe.reader_gone {
            if let Item::Data(b) = &item {
                pipe.unread = pipe.unread.saturating_sub(b.len());
            }
            return;
        }
        match item {
            Item::Syn => self.handle_accept(l),
            Item::SynAck => self.handle_connected(l),
            Item::Data(first) => {
                // Sometimes the reader finds several segments waiting and reads them at once.
                let mut bytes = first;
                if self.rng.coin() {
                    let now = self.now;
                    let pipe = &mut self.links[l].pipes[d];
                    let mut merged: Option<Vec<u8>> = None;
                    while let Some((at, Item::Data(next))) = pipe.items.front()
                        && *at <= now
                        && pipe.paused_until.is_none_or(|p| p <= now)
                    {
                        merged
                            .get_or_insert_with(|| bytes.to_vec())
                            .extend_from_slice(next);
                        pipe.items.pop_front();
                    }
                    if let Some(m) = merged {
                        bytes = Bytes::from(m);
                    }
                }
                self.handle_input(l, d, reader, &bytes);
            }
            Item::Fin => self.handle_eof(l, reader, false),
            Item::Rst => self.handle_eof(l, reader, true),
        }
    }

    /// A `Syn` reached the server end of link `l`: its driver accepts the connection
    /// ([`Driver::handle_accept`]) or refuses it.
    fn handle_accept(&mut self, l: LinkId) {
        let server = self.links[l].ends[SERVER].host;
        let client = self.links[l].ends[CLIENT].host;
        let at = self.now + self.latency();
        if self.hosts[server].kind != Kind::Broker {
            self.links[l].pipes[DOWN].push(Item::Rst, at);
            return;
        }
        let listener = self.links[l].listener;
        let peer = Peer::Ip(self.hosts[client].ip);
        let accepted = self
            .drive(server, |d, fx, now| {
                d.handle_accept(listener, peer, now, fx)
            })
            .flatten();
        let link = &mut self.links[l];
        link.pipes[DOWN].push(Item::SynAck, at);
        match accepted {
            Some(conn) => {
                link.ends[SERVER].conn = Some(conn);
                link.ends[SERVER].open = true;
                link.accepted_at = Some(self.now);
                self.hosts[server].sockets.insert(conn, l);
                self.hosts[server].conn_links.insert(conn, l);
                trace!(
                    self,
                    "{}: accepted {conn} from {} ({listener:?})",
                    self.hosts[server].name,
                    self.hosts[client].name
                );
                self.poll_host(server);
            }
            None => {
                link.pipes[DOWN].push(Item::Fin, at);
                link.ends[SERVER].down_at = Some(self.now);
            }
        }
    }

    /// A `SynAck` reached the client end of link `l`: its dial succeeded
    /// ([`Driver::handle_connected`]).
    fn handle_connected(&mut self, l: LinkId) {
        let client = self.links[l].ends[CLIENT];
        let h = client.host;
        self.links[l].established_at = Some(self.now);
        let Some(conn) = client.conn else {
            trace!(self, "{}: connected", self.hosts[h].name);
            return;
        };
        self.hosts[h].dialing.remove(&conn);
        let still_wanted = self.hosts[h]
            .driver
            .as_ref()
            .is_some_and(|d| d.is_open(conn));
        if !still_wanted {
            // The node gave up on this dial: the runtime drops the new stream.
            self.close_socket(l, CLIENT);
            return;
        }
        trace!(self, "{}: connected {conn}", self.hosts[h].name);
        self.hosts[h].sockets.insert(conn, l);
        self.drive(h, |d, fx, now| d.handle_connected(conn, now, fx));
        self.poll_host(h);
    }

    /// Bytes of pipe `d` of link `l` reached its reader ([`Driver::handle_input`]).
    fn handle_input(&mut self, l: LinkId, d: usize, reader: usize, bytes: &[u8]) {
        {
            let pipe = &mut self.links[l].pipes[d];
            pipe.read += bytes.len() as u64;
            pipe.unread = pipe.unread.saturating_sub(bytes.len());
        }
        if d == DOWN && self.links[l].pipes[d].tap.is_some() {
            self.tap(l, bytes);
        }
        let end = self.links[l].ends[reader];
        if let Some(conn) = end.conn
            && end.open
        {
            self.drive(end.host, |dr, fx, now| {
                dr.handle_input(conn, bytes, now, fx)
            });
            self.poll_host(end.host);
        }
        // The read made room: a writer waiting on this pipe can go on.
        let writer = self.links[l].ends[1 - reader];
        if self.links[l].pipes[d].stalled_since.is_some()
            && let Some(conn) = writer.conn
            && writer.open
        {
            self.flush(writer.host, conn);
            self.poll_host(writer.host);
        }
    }

    /// The reader of a pipe reached its end, an orderly `Fin` or a reset
    /// ([`Driver::handle_eof`]; [`Driver::handle_closed`] for a refused dial).
    fn handle_eof(&mut self, l: LinkId, reader: usize, reset: bool) {
        let end = self.links[l].ends[reader];
        let h = end.host;
        let out = if reader == CLIENT { UP } else { DOWN };
        if reset {
            self.links[l].pipes[out].reset = true;
        }
        if self.hosts[h].kind == Kind::Mute {
            trace!(self, "{}: connection ended", self.hosts[h].name);
            self.close_socket(l, reader);
            let at = self.now
                + self
                    .rng
                    .duration(Duration::from_secs(1), Duration::from_secs(20));
            self.schedule(at, Timed::MuteDial(h));
            return;
        }
        let Some(conn) = end.conn else {
            return;
        };
        if reset && self.hosts[h].dialing.remove(&conn) {
            trace!(self, "{}: {conn} refused", self.hosts[h].name);
            let reason = CloseReason::ConnectFailed("connection refused".into());
            self.drive(h, |d, fx, now| d.handle_closed(conn, reason, now, fx));
            self.poll_host(h);
            return;
        }
        if !end.open {
            return;
        }
        trace!(
            self,
            "{}: {} on {conn}",
            self.hosts[h].name,
            if reset { "reset" } else { "eof" }
        );
        // A runtime reports a reset as the end of the stream too; the next write then fails.
        let close_now = self.drive(h, |d, fx, now| d.handle_eof(conn, now, fx));
        if close_now == Some(true) {
            self.close_socket(l, reader);
        }
        self.poll_host(h);
    }

    /// Host-side close of one end's socket: an orderly `Fin` goes out behind queued data, and
    /// whatever arrives from now on is discarded.
    fn close_socket(&mut self, l: LinkId, side: usize) {
        let (out, at) = self.end_down(l, side);
        let link = &mut self.links[l];
        if !link.pipes[out].write_closed {
            link.pipes[out].push(Item::Fin, at);
        }
        let end = &link.ends[side];
        if let Some(conn) = end.conn {
            self.hosts[end.host].sockets.remove(&conn);
        }
    }

    /// The socket of one end vanishes with its process: a reset goes out instead of what was
    /// queued, and whatever arrives is discarded.
    fn abort_socket(&mut self, l: LinkId, side: usize) {
        let (out, at) = self.end_down(l, side);
        let pipe = &mut self.links[l].pipes[out];
        if !pipe.write_closed {
            // A `Syn` still in flight stays ahead of the reset: the server then sees the
            // connection open and reset at once.
            pipe.items.retain(|(_, item)| matches!(item, Item::Syn));
            pipe.unread = 0;
            pipe.push(Item::Rst, at);
        }
    }

    /// What closing and aborting one end's socket share: the end is down from now on, and its
    /// incoming pipe discards what it holds and whatever arrives. Returns the end's outgoing
    /// pipe and when what is sent on it now arrives.
    fn end_down(&mut self, l: LinkId, side: usize) -> (usize, Instant) {
        let at = self.now + self.latency();
        let now = self.now;
        let link = &mut self.links[l];
        let end = &mut link.ends[side];
        end.open = false;
        end.down_at.get_or_insert(now);
        let out = if side == CLIENT { UP } else { DOWN };
        link.pipes[1 - out].reader_gone = true;
        link.pipes[1 - out].discard();
        self.active.insert(l);
        (out, at)
    }

    pub(crate) fn latency(&mut self) -> Duration {
        let (lo, hi) = self.options.latency;
        self.rng.duration(lo, hi)
    }

    fn partitioned(&self, a: HostId, b: HostId) -> bool {
        !self.partitions.is_empty() && self.partitions.contains_key(&(a.min(b), a.max(b)))
    }

    // ------------------------------------------------------------------ observing

    /// Looks at everything host `h`'s driver handed out since the last look.
    fn absorb(&mut self, h: HostId) {
        let events = std::mem::take(&mut self.hosts[h].fx.events);
        let deliveries = std::mem::take(&mut self.hosts[h].fx.deliveries);
        for e in events {
            self.observe(h, e);
        }
        for d in deliveries {
            let key = (h, Arc::clone(&d.ivorn));
            if self.delivered.contains_key(&key) {
                self.fail(Violation::HandledTwice {
                    node: self.hosts[h].name.clone(),
                    ivorn: d.ivorn.to_string(),
                });
            } else {
                trace!(self, "{}: handled {}", self.hosts[h].name, d.ivorn);
                self.delivered.insert(key, self.now);
            }
            self.hosts[h].fx.handled += 1;
        }
        // Every event handed to the handlers was recorded in the store first, once.
        let fx = &self.hosts[h].fx;
        if fx.persisted != fx.handled {
            let v = Violation::StoreMismatch {
                node: self.hosts[h].name.clone(),
                persisted: fx.persisted,
                handled: fx.handled,
            };
            self.fail(v);
        }
    }

    fn observe(&mut self, h: HostId, event: Event) {
        let name = || self.hosts[h].name.clone();
        match event {
            Event::Accepted { ivorn, .. } => {
                // Subscribers relay nothing: a double acceptance there is `HandledTwice`.
                if !self.accepted.insert((h, Arc::clone(&ivorn)))
                    && self.hosts[h].kind == Kind::Broker
                {
                    self.fail(Violation::AcceptedTwice {
                        node: name(),
                        ivorn: ivorn.to_string(),
                    });
                }
                if let Some(&e) = self.by_ivorn.get(&ivorn) {
                    self.events[e].first_accept.get_or_insert((self.now, h));
                }
            }
            Event::FiltersSet {
                conn,
                accepted,
                ref refused,
            } => {
                trace!(
                    self,
                    "{}: filters of {conn}: {accepted} accepted, {} refused",
                    self.hosts[h].name,
                    refused.len()
                );
                if let Some(&l) = self.hosts[h].sockets.get(&conn) {
                    let queued = self.hosts[h]
                        .driver
                        .as_ref()
                        .map_or(0, |d| d.queued_bytes(conn));
                    let link = &mut self.links[l];
                    link.filter_boundary = Some(link.pipes[DOWN].written + queued as u64);
                }
            }
            Event::PeerDown { conn, reason, .. } => {
                trace!(self, "{}: {conn} down ({reason})", self.hosts[h].name);
                if let Some(&l) = self.hosts[h].conn_links.get(&conn)
                    && let Some(side) = self.links[l].side_of(h, conn)
                {
                    self.links[l].ends[side].down_at.get_or_insert(self.now);
                }
            }
            Event::ProtocolViolation { detail, .. } => self.fail(Violation::ProtocolViolation {
                node: name(),
                detail,
            }),
            Event::Refused { reason, .. } => self.fail(Violation::Refused {
                node: name(),
                reason,
            }),
            Event::SubmissionAcked { conn } => self.outcome(h, conn, None),
            Event::SubmissionNaked { conn, reason } => {
                self.outcome(h, conn, Some(Err(reason)));
            }
            Event::SubmissionFailed { conn, reason } => {
                self.outcome(h, conn, Some(Ok(reason)));
            }
            other => trace!(self, "{}: {other:?}", self.hosts[h].name),
        }
    }

    /// A submission's outcome: `None` ack, `Some(Err(reason))` nak, `Some(Ok(reason))` failure.
    fn outcome(
        &mut self,
        h: HostId,
        conn: ConnId,
        outcome: Option<Result<CloseReason, Option<String>>>,
    ) {
        let Some(sub) = self.submissions.get_mut(&(h, conn)) else {
            return;
        };
        sub.outcomes += 1;
        let (event, attempt, outcomes) = (sub.event, sub.attempt, sub.outcomes);
        let broker = sub.broker;
        let author = self.hosts[h].name.clone();
        let ivorn = self.events[event].ivorn.to_string();
        trace!(self, "{author}: outcome of {ivorn}: {outcome:?}");
        if outcomes > 1 {
            return self.fail(Violation::ReceiptTwice { author, ivorn });
        }
        match outcome {
            None => {}
            // Comet's policy: a duplicate is nak'd; fine if that broker had accepted it.
            Some(Err(Some(reason)))
                if self.options.comet_policies
                    && reason.contains("Previously seen")
                    && self
                        .accepted
                        .contains(&(broker, Arc::clone(&self.events[event].ivorn))) => {}
            Some(Err(reason)) => self.fail(Violation::SubmissionNaked {
                author,
                ivorn,
                reason,
            }),
            Some(Ok(reason)) if self.events[event].probe => self.fail(Violation::ProbeFailed {
                author,
                ivorn,
                outcome: reason.to_string(),
            }),
            Some(Ok(_))
                if self.options.resubmit
                    && attempt < ATTEMPTS_MAX
                    && self.phase == Phase::Faults =>
            {
                let at = self.now
                    + self
                        .rng
                        .duration(Duration::from_secs(1), Duration::from_secs(10));
                let broker = self.rng.below(self.options.brokers);
                self.schedule(
                    at,
                    Timed::Submit {
                        author: h,
                        event,
                        broker,
                        attempt: attempt + 1,
                    },
                );
            }
            Some(Ok(_)) => {}
        }
    }

    /// Decodes what a subscriber receives on a broadcast link: each event at most once, and
    /// none its filters reject once the broker had them.
    fn tap(&mut self, l: LinkId, bytes: &[u8]) {
        let client = self.links[l].ends[CLIENT].host;
        let filters = &self.hosts[client].filters;
        let comet = self.options.comet_policies;
        let link = &mut self.links[l];
        let boundary = link.filter_boundary;
        let Some(tap) = link.pipes[DOWN].tap.as_mut() else {
            return;
        };
        let mut frames: Vec<(Arc<str>, bool, bool)> = Vec::new();
        let offset = &mut tap.offset;
        // A framing error would already be reported by the node; the tap just stops.
        let _ = tap.decoder.decode(bytes, |payload| {
            let start = *offset;
            *offset += (vtp_core::frame::PREFIX_LEN + payload.len()) as u64;
            if let Some(ivorn) = filter::ivorn_of(payload) {
                let after_filters = boundary.is_some_and(|b| start >= b);
                frames.push((
                    Arc::from(ivorn),
                    after_filters,
                    filter::wants(filters, comet, payload),
                ));
            }
        });
        let mut violations = Vec::new();
        for (ivorn, after_filters, wanted) in frames {
            let fresh = tap.ivorns.insert(Arc::clone(&ivorn));
            let from = self.hosts[link.ends[SERVER].host].name.clone();
            let to = self.hosts[client].name.clone();
            if !fresh {
                violations.push(Violation::CarriedTwice {
                    from,
                    to,
                    ivorn: ivorn.to_string(),
                });
            } else if after_filters && !wanted {
                violations.push(Violation::FilterBypassed {
                    from,
                    to,
                    ivorn: ivorn.to_string(),
                    filters: filters.clone(),
                });
            }
        }
        for v in violations {
            self.fail(v);
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

/// 10.0.0.x, one per host.
fn ip_of(id: HostId) -> IpAddr {
    let id = u16::try_from(id + 1).unwrap_or(u16::MAX);
    IpAddr::V4(Ipv4Addr::new(10, 0, (id >> 8) as u8, id as u8))
}
