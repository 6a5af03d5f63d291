//! A Kafka-like log consumed by brokers as an external source, and the stores' group commits.
//!
//! # Theory of operation
//!
//! The log ([`Log`]) holds topics of partitions of records, each appended at a time of the
//! fault phase: VOEvents only in the log, VOEvents that authors also submit over VTP, repeats
//! of earlier records (in any partition), and garbage (JSON notices, a VOEvent with a bad
//! IVORN, a VOEvent 1.1, a Transport message). The source's lanes are the topic-partitions.
//!
//! Each consuming broker has a [`Consumer`]: its group's committed offsets, which live with
//! the log and survive the broker's restarts, as Kafka's do; and, for the current process, the
//! source's connection and the next offset to read per lane. A poll hands the node
//! ([`vtp_core::Node::handle_external`]) up to a batch of the records appended by now; when
//! the node answers `Busy` the consumer waits for the store's next group commit. With nothing
//! to read it sleeps until the next append (a long poll). The broker's effects record each
//! [`vtp_core::Action::Commit`] (`Effects::commit`), and the simulator applies it to the group.
//! A restart (`faults.rs`) loses what the store had not made durable and what the consumer
//! had read; the new process opens a new source and resumes from the committed offsets.
//! Besides the seed's restarts, when restarts are on, a tenth of the polls that hand records
//! over during the fault phase are followed by a crash of that broker within the store's lag:
//! most often before the records are durable.
//!
//! Stores that lag ([`Options::store_lag`](super::Options::store_lag)): every operation a node
//! hands its store waits for a group commit, scheduled that long after the first one of the
//! group, which makes them durable and tells the driver (`Driver::handle_durable`).
//!
//! # Invariants
//!
//! - After every input: a commit never goes backwards, and never passes a record that is not
//!   done: a valid event whose seen-index record is not durable at that broker (in the store
//!   a restart restores), or garbage the node did not report skipped. A valid record is never
//!   skipped; garbage is never accepted, and never crosses a link.
//! - At the end: every group has committed every partition to its end, and every valid event
//!   of the log reached the handlers of every consuming broker; the delivery invariants of the
//!   end (`check_paths`) then carry each event on to every node connected to it throughout.
//!   No connection carries an event twice and no node handles one twice, across restarts:
//!   the simulator's per-event checks, which re-reads after a crash go through.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use vtp_core::message::{self, Message, ParseLimits};
use vtp_core::{ConnId, EventKey, ExternalError, Position};

use super::Violation;
use super::filter::{self, TAGS};
use super::net::HostId;
use super::rng::Rng;
use super::world::{Phase, Sim, SimEvent, Timed};

/// How long a busy consumer waits for a store commit before it polls again anyway.
const BUSY_RETRY: Duration = Duration::from_secs(1);
/// The gap between two polls while records wait beyond one batch.
const POLL_GAP: Duration = Duration::from_millis(1);

/// The log: records per lane, in offset order.
#[derive(Debug, Default)]
pub(crate) struct Log {
    pub(crate) lanes: Vec<Vec<Record>>,
    /// Partitions per topic (to name a lane).
    partitions: usize,
    /// The key of each event of the log (by event index), to find it in a store.
    keys: BTreeMap<usize, EventKey>,
    /// The IVORNs garbage records carry: none may be accepted or forwarded.
    pub(crate) garbage: BTreeSet<Arc<str>>,
}

/// One record.
#[derive(Debug)]
pub(crate) struct Record {
    /// When it is appended.
    at: Instant,
    body: Body,
}

#[derive(Debug)]
enum Body {
    /// A valid VOEvent: an index into the simulation's events.
    Event(usize),
    /// Anything the node must skip.
    Garbage(Bytes),
}

/// A broker's consumer: its group's state, in the log, and its process's.
#[derive(Debug)]
pub(crate) struct Consumer {
    /// Committed offsets per lane (the next offset to read after a restart).
    pub(crate) group: Vec<u64>,
    /// The source in the current process.
    conn: Option<ConnId>,
    /// Next offset to read per lane.
    next: Vec<u64>,
    /// Records the current process reported skipped.
    skipped: BTreeSet<(u32, u64)>,
    /// Where the next poll starts, so that no lane starves the others.
    first_lane: usize,
    /// The poll scheduled, if any (a scheduled poll for another instant is stale).
    poll_at: Option<Instant>,
    /// The node answered `Busy`: poll again after the next group commit.
    busy: bool,
}

impl Log {
    fn name(&self, lane: u32) -> String {
        let (t, p) = (
            lane as usize / self.partitions,
            lane as usize % self.partitions,
        );
        format!("gcn.classic.voevent.T{t}[{p}]")
    }
}

impl Sim {
    /// Builds the log of the options, if any, and a consumer in each consuming broker.
    pub(crate) fn build_log(&mut self) {
        let Some(spec) = self.options.log.clone() else {
            return;
        };
        let mut rng = self.rng.fork();
        let submitted: Vec<usize> = (0..self.events.len()).collect();
        let lanes = spec.topics * spec.partitions;
        let mut log = Log {
            lanes: (0..lanes).map(|_| Vec::new()).collect(),
            partitions: spec.partitions,
            ..Log::default()
        };
        let mut own: Vec<usize> = Vec::new();
        // Records come in bursts (a backlog at the start, a flurry of notices), so that
        // consumers read faster than their stores commit.
        let (mut at, mut burst_left) = (self.now, 0);
        for n in 0..spec.records {
            if burst_left == 0 {
                burst_left = *rng.pick(&[1, 1, 4, 16]);
                at = self.now + rng.duration(Duration::ZERO, self.options.fault_phase);
            }
            burst_left -= 1;
            let body = if rng.below(100) < spec.garbage_percent as usize {
                let (payload, ivorn) = garbage(n, rng.below(4));
                log.garbage.extend(ivorn);
                Body::Garbage(payload)
            } else {
                let e = match rng.below(4) {
                    0 if !submitted.is_empty() => *rng.pick(&submitted),
                    1 if !own.is_empty() => *rng.pick(&own),
                    _ => {
                        let e = self.new_log_event(n, &mut rng);
                        own.push(e);
                        e
                    }
                };
                log.keys.insert(e, key_of(&self.events[e].payload));
                Body::Event(e)
            };
            log.lanes[rng.below(lanes)].push(Record { at, body });
        }
        for lane in &mut log.lanes {
            lane.sort_by_key(|r| r.at);
        }
        self.log = Some(log);
        for b in spec.consumers {
            self.hosts[b].consumer = Some(Consumer {
                group: vec![0; lanes],
                conn: None,
                next: vec![0; lanes],
                skipped: BTreeSet::new(),
                first_lane: 0,
                poll_at: None,
                busy: false,
            });
            self.open_source(b);
        }
    }

    /// The broker's process (new, or restarted) opens its source and reads from the group's
    /// committed offsets at once.
    pub(crate) fn open_source(&mut self, h: HostId) {
        if self.hosts[h].consumer.is_none() {
            return;
        }
        let conn = self.drive(h, |d, fx, now| {
            d.with_node(fx, |n| n.open_external("kafka gcn.classic.voevent.*", now))
        });
        let now = self.now;
        let Some(c) = self.hosts[h].consumer.as_mut() else {
            return;
        };
        let Some(conn) = conn else {
            return;
        };
        c.conn = Some(conn);
        c.next = c.group.clone();
        c.skipped.clear();
        c.busy = false;
        c.poll_at = None;
        trace!(
            self,
            "{}: source {conn} resumes at {:?}",
            self.hosts[h].name,
            self.hosts[h].consumer.as_ref().map(|c| &c.group)
        );
        self.schedule_poll(h, now);
    }

    /// A poll of host `h`'s consumer scheduled for `at` is due.
    pub(crate) fn poll_source(&mut self, h: HostId, at: Instant) {
        let Some(c) = self.hosts[h].consumer.as_mut() else {
            return;
        };
        if c.poll_at != Some(at) {
            return;
        }
        c.poll_at = None;
        c.busy = false;
        let Some(conn) = c.conn else {
            return;
        };
        let first = c.first_lane;
        let lanes = c.next.len();
        c.first_lane = (first + 1) % lanes.max(1);
        let batch = self.options.log.as_ref().map_or(1, |l| l.batch);
        let mut handed = 0;
        let mut busy = false;
        'lanes: for i in 0..lanes {
            let lane = (first + i) % lanes;
            while handed < batch {
                let Some(c) = self.hosts[h].consumer.as_ref() else {
                    return;
                };
                let offset = c.next[lane];
                let Some(payload) = self.record_payload(lane, offset) else {
                    break;
                };
                let at = Position {
                    lane: lane as u32,
                    offset,
                };
                let result = self.drive(h, |d, fx, now| {
                    d.with_node(fx, |n| n.handle_external(conn, at, &payload, now))
                });
                match result {
                    Some(Ok(())) => {
                        if let Some(c) = self.hosts[h].consumer.as_mut() {
                            c.next[lane] += 1;
                        }
                        handed += 1;
                        self.log_reads += 1;
                    }
                    Some(Err(ExternalError::Busy)) => {
                        busy = true;
                        break 'lanes;
                    }
                    Some(Err(e)) => {
                        let v = Violation::Panicked(format!(
                            "{}: the source {conn} refused a record: {e}",
                            self.hosts[h].name
                        ));
                        return self.fail(v);
                    }
                    None => return,
                }
            }
        }
        self.poll_host(h);
        // A crash with records read and not yet durable, now and then.
        if handed > 0
            && self.phase == Phase::Faults
            && self.options.faults.restarts.is_some()
            && self.fault_rng.ratio(1, 10)
        {
            let lag = self.options.store_lag.unwrap_or_default();
            let at = self.now + self.fault_rng.duration(Duration::ZERO, lag);
            self.schedule(at, Timed::Crash(h));
        }
        let next = if busy {
            trace!(self, "{}: source busy", self.hosts[h].name);
            if let Some(c) = self.hosts[h].consumer.as_mut() {
                c.busy = true;
            }
            Some(self.now + BUSY_RETRY)
        } else if handed == batch {
            Some(self.now + POLL_GAP)
        } else {
            self.next_append(h)
        };
        if let Some(next) = next {
            self.schedule_poll(h, next);
        }
    }

    /// Host `h`'s store makes what it was handed durable (a group commit), and the driver
    /// releases what waited for it; a consumer the node had found busy polls again.
    pub(crate) fn commit_store(&mut self, h: HostId, incarnation: u32) {
        if self.hosts[h].incarnation != incarnation {
            return;
        }
        trace!(
            self,
            "{}: store commits {} operations",
            self.hosts[h].name,
            self.hosts[h].fx.pending.len()
        );
        self.drive(h, |d, fx, _| {
            fx.commit_group();
            d.handle_durable(fx);
        });
        self.poll_host(h);
        if self.hosts[h].consumer.as_ref().is_some_and(|c| c.busy) {
            let now = self.now;
            self.schedule_poll(h, now);
        }
    }

    /// Host `h`'s verify jobs are done: their verdicts go back to its node.
    pub(crate) fn verified(&mut self, h: HostId, incarnation: u32) {
        if self.hosts[h].incarnation != incarnation {
            return;
        }
        trace!(
            self,
            "{}: {} signatures verified",
            self.hosts[h].name,
            self.hosts[h].fx.jobs.len()
        );
        self.verified += self.hosts[h].fx.jobs.len();
        self.drive(h, |d, fx, _| {
            fx.run_jobs();
            d.handle_durable(fx);
        });
        self.poll_host(h);
    }

    /// Schedules the verdicts of host `h`'s verify jobs, when it has some.
    pub(crate) fn schedule_verified(&mut self, h: HostId) {
        let Some(lag) = self.options.verify_lag else {
            return;
        };
        let fx = &mut self.hosts[h].fx;
        if fx.jobs.is_empty() || fx.verify_due {
            return;
        }
        fx.verify_due = true;
        let incarnation = self.hosts[h].incarnation;
        self.schedule(self.now + lag, Timed::Verified(h, incarnation));
    }

    /// Schedules host `h`'s group commit when its store holds something not durable.
    pub(crate) fn schedule_store_commit(&mut self, h: HostId) {
        let Some(lag) = self.options.store_lag else {
            return;
        };
        let fx = &mut self.hosts[h].fx;
        if fx.pending.is_empty() || fx.commit_due {
            return;
        }
        fx.commit_due = true;
        let incarnation = self.hosts[h].incarnation;
        self.schedule(self.now + lag, Timed::StoreCommit(h, incarnation));
    }

    /// Checks what host `h`'s node let its source commit since the last look, and applies
    /// it to the group: never backwards, never past a record that is not done.
    pub(crate) fn absorb_commits(&mut self, h: HostId) {
        let commits = std::mem::take(&mut self.hosts[h].fx.commits);
        for (conn, lane, next) in commits {
            if let Some(v) = self.commit_violation(h, conn, lane, next) {
                return self.fail(v);
            }
            trace!(
                self,
                "{}: commit {}@{next}",
                self.hosts[h].name,
                self.log_name(lane)
            );
            if let Some(c) = self.hosts[h].consumer.as_mut() {
                c.group[lane as usize] = next;
            }
            self.log_commits += 1;
        }
    }

    fn commit_violation(&self, h: HostId, conn: ConnId, lane: u32, next: u64) -> Option<Violation> {
        let node = || self.hosts[h].name.clone();
        let (Some(c), Some(log)) = (self.hosts[h].consumer.as_ref(), self.log.as_ref()) else {
            return Some(Violation::Panicked(format!(
                "{}: a commit without a log",
                node()
            )));
        };
        if Some(conn) != c.conn {
            return Some(Violation::Panicked(format!(
                "{}: a commit for {conn}, not its source {:?}",
                node(),
                c.conn
            )));
        }
        let committed = c.group.get(lane as usize).copied().unwrap_or(0);
        if next < committed {
            return Some(Violation::CommitBackwards {
                node: node(),
                partition: log.name(lane),
                committed,
                next_offset: next,
            });
        }
        for offset in committed..next {
            let record = log
                .lanes
                .get(lane as usize)
                .and_then(|records| records.get(offset as usize));
            let why = match record.map(|r| &r.body) {
                None => Some("there is no such record".to_owned()),
                Some(Body::Event(e)) => {
                    let durable = log
                        .keys
                        .get(e)
                        .is_some_and(|k| self.hosts[h].fx.store.contains_key(k));
                    (!durable).then(|| {
                        format!(
                            "its event {} is not durable at {}",
                            self.events[*e].ivorn,
                            node()
                        )
                    })
                }
                Some(Body::Garbage(_)) => (!c.skipped.contains(&(lane, offset)))
                    .then(|| "it is garbage the node never reported skipped".to_owned()),
            };
            if let Some(why) = why {
                return Some(Violation::CommittedTooEarly {
                    node: node(),
                    record: format!("{}@{offset}", log.name(lane)),
                    why,
                });
            }
        }
        None
    }

    /// The node of host `h` skipped the record at `at` of source `conn`: garbage must be, a
    /// valid event never.
    pub(crate) fn source_skipped(&mut self, h: HostId, conn: ConnId, at: Position, why: String) {
        let Some(c) = self.hosts[h].consumer.as_mut() else {
            return;
        };
        if c.conn != Some(conn) {
            return;
        }
        c.skipped.insert((at.lane, at.offset));
        let Some(log) = self.log.as_ref() else {
            return;
        };
        let record = log
            .lanes
            .get(at.lane as usize)
            .and_then(|l| l.get(at.offset as usize));
        trace!(
            self,
            "{}: skipped {}@{} ({why})",
            self.hosts[h].name,
            log.name(at.lane),
            at.offset
        );
        if let Some(Record {
            body: Body::Event(e),
            ..
        }) = record
        {
            let v = Violation::ValidRecordSkipped {
                node: self.hosts[h].name.clone(),
                record: format!("{}@{}", log.name(at.lane), at.offset),
                ivorn: self.events[*e].ivorn.to_string(),
                reason: why,
            };
            self.fail(v);
        }
    }

    /// At the end: every group committed every partition to its end, and every valid event of
    /// the log reached every consuming broker's handlers.
    pub(crate) fn check_log(&self) -> Option<Violation> {
        let log = self.log.as_ref()?;
        for (h, host) in self.hosts.iter().enumerate() {
            let Some(c) = host.consumer.as_ref() else {
                continue;
            };
            for (lane, records) in log.lanes.iter().enumerate() {
                if c.group[lane] != records.len() as u64 {
                    return Some(Violation::LogNotConsumed {
                        node: host.name.clone(),
                        partition: log.name(lane as u32),
                        committed: c.group[lane],
                        end: records.len() as u64,
                    });
                }
                for r in records {
                    let Body::Event(e) = r.body else {
                        continue;
                    };
                    let ivorn = &self.events[e].ivorn;
                    if !self.delivered.contains_key(&(h, Arc::clone(ivorn))) {
                        return Some(Violation::LogEventMissing {
                            node: host.name.clone(),
                            ivorn: ivorn.to_string(),
                        });
                    }
                }
            }
        }
        None
    }

    fn schedule_poll(&mut self, h: HostId, at: Instant) {
        let Some(c) = self.hosts[h].consumer.as_mut() else {
            return;
        };
        if c.poll_at.is_some_and(|p| p <= at) {
            return;
        }
        c.poll_at = Some(at);
        self.schedule(at, Timed::Poll(h, at));
    }

    /// The payload of the record at `offset` of `lane`, if it is appended by now.
    fn record_payload(&self, lane: usize, offset: u64) -> Option<Bytes> {
        let record = self.log.as_ref()?.lanes[lane].get(offset as usize)?;
        if record.at > self.now {
            return None;
        }
        Some(match &record.body {
            Body::Event(e) => self.events[*e].payload.clone(),
            Body::Garbage(payload) => payload.clone(),
        })
    }

    /// When the next record host `h`'s consumer has not read is appended, if any is left.
    fn next_append(&self, h: HostId) -> Option<Instant> {
        let c = self.hosts[h].consumer.as_ref()?;
        let log = self.log.as_ref()?;
        log.lanes
            .iter()
            .zip(&c.next)
            .filter_map(|(records, &next)| records.get(next as usize).map(|r| r.at))
            .min()
            .map(|at| at.max(self.now))
    }

    fn log_name(&self, lane: u32) -> String {
        self.log.as_ref().map_or_else(String::new, |l| l.name(lane))
    }

    /// A fresh event that only the log carries.
    fn new_log_event(&mut self, n: usize, rng: &mut Rng) -> usize {
        let ivorn: Arc<str> = Arc::from(format!("ivo://sim.vtp/kafka#ev-{n}"));
        let mut tags: Vec<&str> = Vec::new();
        for _ in 0..rng.between(0, 2) {
            let t = *rng.pick(&TAGS);
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        let payload = filter::event_payload(&ivorn, &tags);
        let id = self.events.len();
        self.by_ivorn.insert(Arc::clone(&ivorn), id);
        self.events.push(SimEvent {
            author: None,
            ivorn,
            payload,
            probe: false,
            first_accept: None,
        });
        id
    }
}

/// Garbage record `n` of kind `kind` (0 to 3), and the IVORN it carries if any.
fn garbage(n: usize, kind: usize) -> (Bytes, Option<Arc<str>>) {
    match kind {
        0 => (
            Bytes::from(format!(
                "{{\"notice_type\":\"SWIFT_BAT_GRB_POS_ACK\",\"trig_id\":{n}}}"
            )),
            None,
        ),
        1 => {
            let ivorn = format!("ivo://sim vtp/kafka#bad-{n}");
            (filter::event_payload(&ivorn, &[]), Some(Arc::from(ivorn)))
        }
        2 => {
            let ivorn = format!("ivo://sim.vtp/kafka#v11-{n}");
            let v2 = String::from_utf8_lossy(&filter::event_payload(&ivorn, &[])).into_owned();
            let v11 = v2
                .replace("VOEvent/v2.0", "VOEvent/v1.1")
                .replace("version=\"2.0\"", "version=\"1.1\"");
            (Bytes::from(v11), Some(Arc::from(ivorn)))
        }
        _ => (
            Bytes::from(format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
                 <trn:Transport xmlns:trn=\"http://www.telescope-networks.org/xml/Transport/v1.1\" \
                 role=\"iamalive\" version=\"1.0\"><Origin>ivo://sim.vtp/kafka-{n}</Origin>\
                 <TimeStamp>2024-05-01T12:00:00Z</TimeStamp></trn:Transport>"
            )),
            None,
        ),
    }
}

/// The seen-index key of a valid VOEvent payload, as the node computes it.
fn key_of(payload: &[u8]) -> EventKey {
    match message::parse(payload, &ParseLimits::default()) {
        Ok(Message::VoEvent(ev)) => EventKey::of_element(&payload[ev.element]),
        other => panic!("the simulator built an unparsable event: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use vtp_core::{Config, Event, Node};

    use super::*;

    /// Each kind of garbage is skipped by a broker with the simulator's configuration, and a
    /// valid record is not.
    #[test]
    fn garbage_is_skipped_and_events_are_not() {
        let now = Instant::now();
        let mut node = Node::new(
            Config::new(Some("ivo://sim.vtp/broker-0".into())),
            Box::new(filter::SubstringEngine::fail_closed()),
            1,
            now,
            Duration::from_secs(1_714_564_800),
        )
        .expect("valid");
        let src = node.open_external("kafka", now);
        for kind in 0..4 {
            let (payload, _) = garbage(kind, kind);
            let at = Position {
                lane: 0,
                offset: kind as u64,
            };
            node.handle_external(src, at, &payload, now).expect("taken");
            let skipped = std::iter::from_fn(|| node.poll_event())
                .any(|e| matches!(e, Event::ExternalSkipped { at: a, .. } if a == at));
            assert!(skipped, "garbage of kind {kind} was not skipped");
        }
        let payload = filter::event_payload("ivo://sim.vtp/kafka#ev-1", &["grb"]);
        let at = Position { lane: 0, offset: 4 };
        node.handle_external(src, at, &payload, now).expect("taken");
        let events: Vec<Event> = std::iter::from_fn(|| node.poll_event()).collect();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Accepted { key, .. } if *key == key_of(&payload))),
            "{events:?}"
        );
    }
}
