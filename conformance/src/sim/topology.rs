//! Who is in the world and what they do: the hosts (brokers, subscribers, authors, mute
//! subscribers), their drivers and effects (the durable store among them), and the workload
//! of events drawn from the seed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use vtp_core::config::{DuplicateReply, InvalidFilters, Upstream};
use vtp_core::driver::{Driver, Effects, StoreOp};
use vtp_core::endpoint::{DialAddr, PORT_SUBSCRIBE};
use vtp_core::signature::{Verdict, VerifyJob};
use vtp_core::testing::{DigestSigner, DigestVerifier};
use vtp_core::{Config, ConnId, Delivery, Event, EventKey, Node};

use super::kafka::Consumer;

use super::filter::{self, SubstringEngine, TAGS};
use super::net::{HostId, LinkId};
use super::world::{ATTEMPTS_MAX, FaultKind, Sim, SimEvent, Timed};

/// Wall-clock anchor of every node: 2024-05-01T12:00:00Z.
const UNIX0: Duration = Duration::from_secs(1_714_564_800);

/// What a host is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Broker,
    Subscriber,
    Author,
    Mute,
}

/// Collects what a driver hands out between two looks by the simulator, and is the node's
/// durable store.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    pub(crate) events: Vec<Event>,
    pub(crate) deliveries: Vec<Delivery>,
    /// Seen-index records made durable so far, over all incarnations.
    pub(crate) persisted: usize,
    /// The durable store: what a restarted node restores.
    pub(crate) store: BTreeMap<EventKey, u64>,
    /// Events handed to the handlers so far.
    pub(crate) handled: usize,
    /// The store commits in groups, when the simulator says ([`Recorder::commit_group`]);
    /// otherwise each operation is durable as it is handed over.
    pub(crate) grouped: bool,
    /// Operations handed over and not durable yet, in order: a crash loses them.
    pub(crate) pending: Vec<StoreOp>,
    /// Persists handed over by the current incarnation (the driver's count) and, of those,
    /// made durable.
    pub(crate) handed: u64,
    pub(crate) durable: u64,
    /// A group commit is scheduled.
    pub(crate) commit_due: bool,
    /// Positions the node let its external source commit: source, lane, next offset.
    pub(crate) commits: Vec<(ConnId, u32, u64)>,
    /// Signatures are verified here, off the node's loop ([`Options::verify_lag`]).
    ///
    /// [`Options::verify_lag`]: super::Options::verify_lag
    pub(crate) verifies: bool,
    /// Verify jobs taken and not run yet; a crash loses them.
    pub(crate) jobs: Vec<VerifyJob>,
    /// Verdicts run and not handed back yet.
    pub(crate) verdicts: Vec<(u64, Verdict)>,
    /// A round of verdicts is scheduled.
    pub(crate) verify_due: bool,
}

impl Recorder {
    /// The group commit: everything handed over so far becomes durable.
    pub(crate) fn commit_group(&mut self) {
        for op in std::mem::take(&mut self.pending) {
            self.apply(op);
        }
        self.durable = self.handed;
        self.commit_due = false;
    }

    /// The process dies: what was not durable is lost, and the next incarnation's driver
    /// counts from zero. Returns the operations lost.
    pub(crate) fn crash(&mut self) -> usize {
        let lost = self.pending.len();
        self.pending.clear();
        self.handed = 0;
        self.durable = 0;
        self.commit_due = false;
        self.jobs.clear();
        self.verdicts.clear();
        self.verify_due = false;
        lost
    }

    /// Runs every job taken so far; their verdicts go back at the next look.
    pub(crate) fn run_jobs(&mut self) {
        for job in self.jobs.drain(..) {
            self.verdicts.push((job.id(), job.run()));
        }
        self.verify_due = false;
    }

    fn apply(&mut self, op: StoreOp) {
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
}

impl Effects for Recorder {
    fn store(&mut self, op: StoreOp) {
        if matches!(op, StoreOp::Persist(_)) {
            self.handed += 1;
        }
        if self.grouped {
            self.pending.push(op);
        } else {
            self.apply(op);
            self.durable = self.handed;
        }
    }

    fn durable_persists(&mut self, handed: u64) -> u64 {
        self.durable.min(handed)
    }

    fn deliver(&mut self, delivery: Delivery) {
        self.deliveries.push(delivery);
    }

    fn commit(&mut self, conn: ConnId, lane: u32, next_offset: u64) {
        self.commits.push((conn, lane, next_offset));
    }

    fn verify(&mut self, job: VerifyJob) -> Result<(), VerifyJob> {
        if self.verifies {
            self.jobs.push(job);
            Ok(())
        } else {
            Err(job)
        }
    }

    fn take_verdicts(&mut self, out: &mut Vec<(u64, Verdict)>) {
        out.append(&mut self.verdicts);
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
    pub(crate) config: Option<Config>,
    /// Restarts so far: scheduled happenings naming a connection carry it, so a handle
    /// reused by the next incarnation is not mistaken for the old one.
    pub(crate) incarnation: u32,
    pub(crate) fx: Recorder,
    /// Every connection the node ever had, to its link.
    pub(crate) conn_links: BTreeMap<ConnId, LinkId>,
    /// Open sockets (connected or accepted).
    pub(crate) sockets: BTreeMap<ConnId, LinkId>,
    /// Dials in flight.
    pub(crate) dialing: BTreeSet<ConnId>,
    /// Filters the node sends upstream.
    pub(crate) filters: Vec<String>,
    /// Upstreams, each a list of broker hosts (failover endpoints).
    pub(crate) upstreams: Vec<Vec<HostId>>,
    /// Mute subscriber: the broker it dials and its current link.
    pub(crate) mute: Option<(HostId, Option<LinkId>)>,
    /// A broker consuming the log: its consumer.
    pub(crate) consumer: Option<Consumer>,
}

impl Sim {
    pub(crate) fn build(&mut self) {
        let o = self.options.clone();
        let broker_endpoint = |b: usize| DialAddr::tcp(format!("broker-{b}"), PORT_SUBSCRIBE);
        for (i, ups) in o.broker_upstreams.iter().enumerate() {
            let mut c = Config::new(Some(format!("ivo://sim.vtp/broker-{i}")));
            c.timing.test_event_interval = o.test_events;
            if o.comet_policies {
                c.policy.duplicate_reply = DuplicateReply::Nak;
                c.policy.invalid_filters = InvalidFilters::SendEverything;
            }
            if let Some(log) = o.log.as_ref().filter(|l| l.consumers.contains(&i)) {
                c.limits.external_pending_max = log.pending_max;
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
                consumer: None,
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
        self.build_log();
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
        let fx = Recorder {
            grouped: self.options.store_lag.is_some(),
            verifies: self.options.verify_lag.is_some(),
            ..Recorder::default()
        };
        self.hosts.push(Host {
            name,
            ip: ip_of(id),
            kind,
            driver: Some(driver),
            config: Some(config),
            incarnation: 0,
            fx,
            conn_links: BTreeMap::new(),
            sockets: BTreeMap::new(),
            dialing: BTreeSet::new(),
            filters,
            // Brokers come first, so broker index = host id.
            upstreams: upstreams.to_vec(),
            mute: None,
            consumer: None,
        });
    }

    /// A node with a fresh seed, its wall clock anchored to the run's, behind a driver.
    pub(crate) fn new_driver(&mut self, config: Config) -> Driver {
        let seed = self.rng.next_u64();
        let unix_now = UNIX0 + (self.now - self.t0);
        let mut node = Node::new(
            config,
            Box::new(SubstringEngine::fail_closed()),
            seed,
            self.now,
            unix_now,
        )
        .expect("the simulator builds valid configurations");
        if self.options.verify_lag.is_some() {
            node.set_verifier(Some(Box::new(DigestVerifier {
                keys: vec![(SIGNER.into(), "sim author".into())],
            })));
            node.set_verify_offload(VERIFY_PENDING_MAX);
        }
        Driver::new(node, self.options.outbox)
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
        let mut payload = filter::event_payload(&ivorn, &tags);
        if self.options.verify_lag.is_some() {
            payload = signed(&payload);
        }
        let id = self.events.len();
        self.by_ivorn.insert(ivorn.clone(), id);
        self.events.push(SimEvent {
            author: Some(author),
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
}

/// The fingerprint of the key every author signs with when the run verifies signatures.
const SIGNER: &str = "5111AAAA5111AAAA5111AAAA5111AAAA5111AAAA";
/// Verify jobs a node hands out at once; beyond, it verifies in place.
const VERIFY_PENDING_MAX: usize = 8;

/// `payload` signed by [`SIGNER`] by the convention (the core's test double).
fn signed(payload: &Bytes) -> Bytes {
    let element = match vtp_core::message::parse(payload, &Default::default()) {
        Ok(vtp_core::message::Message::VoEvent(ev)) => ev.element,
        other => panic!("the simulator's event does not parse: {other:?}"),
    };
    let armour = DigestSigner::new(SIGNER).armour(&payload[element.clone()]);
    vtp_core::signature::append_signature(payload, element, &armour)
        .expect("the simulator's event takes a signature")
        .into()
}

/// 10.0.0.x, one per host.
fn ip_of(id: HostId) -> IpAddr {
    let id = u16::try_from(id + 1).unwrap_or(u16::MAX);
    IpAddr::V4(Ipv4Addr::new(10, 0, (id >> 8) as u8, id as u8))
}
