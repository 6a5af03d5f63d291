//! Every invariant of a run, in one place.
//!
//! - Per event, checked as the simulator looks at what each driver handed out (after every
//!   input) and at what each subscriber link carries: no broker accepts an event twice, no
//!   node hands one to its handlers twice, nothing is handed over before it is stored, no
//!   connection carries an event twice, no subscriber gets an event its filters reject, every
//!   submission gets at most one outcome, and no well-behaved peer reports a violation; the
//!   log's invariants (commits, skipped records, garbage: `kafka.rs`).
//! - Over the whole world, after every step or at the end of a phase: queue bounds, mute
//!   subscribers dropped, subscriptions back after healing, and delivery along undisturbed
//!   paths.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vtp_core::{CloseReason, ConnId, Event, ListenerRole, RefusalCause};

use super::Violation;
use super::filter;
use super::net::{CLIENT, DOWN, HostId, LinkId, SERVER};
use super::topology::Kind;
use super::world::{ATTEMPTS_MAX, Phase, Sim, Timed};

/// The largest frame the simulation produces (events and test events are about 1 KiB): an
/// outbox may exceed its byte bound by one such frame, when it holds nothing else.
const FRAME_MAX: usize = 16 * 1024;

impl Sim {
    // ------------------------------------------------------------------ per event

    /// Looks at everything host `h`'s driver handed out since the last look.
    pub(crate) fn absorb(&mut self, h: HostId) {
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
        self.absorb_commits(h);
        self.schedule_store_commit(h);
        self.schedule_verified(h);
        // Every event handed to the handlers was made durable in the store first, once.
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

    /// Connections host `h` holds open on its `listener` from the host at `ip`.
    fn open_from(&self, h: HostId, ip: Option<IpAddr>, listener: ListenerRole) -> usize {
        self.links
            .iter()
            .filter(|l| {
                l.listener == listener
                    && l.ends[SERVER].host == h
                    && l.ends[SERVER].open
                    && Some(self.hosts[l.ends[CLIENT].host].ip) == ip
            })
            .count()
    }

    fn observe(&mut self, h: HostId, event: Event) {
        let name = || self.hosts[h].name.clone();
        match event {
            Event::Accepted { ivorn, key, .. } => {
                // Subscribers relay nothing: a double acceptance there is `HandledTwice`.
                if self.accepted.insert((h, Arc::clone(&ivorn)), key).is_some()
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
                if self
                    .log
                    .as_ref()
                    .is_some_and(|l| l.garbage.contains(&ivorn))
                {
                    let node = self.hosts[h].name.clone();
                    self.fail(Violation::GarbageForwarded {
                        node,
                        ivorn: ivorn.to_string(),
                    });
                }
            }
            Event::FiltersSet {
                conn,
                accepted,
                ref refused,
                ..
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
                detail: detail.to_string(),
            }),
            Event::Refused {
                listener,
                peer,
                cause,
                reason,
            } => {
                // What the per-address limit promises: an author that dialled again and again
                // through a long partition connects all at once when it heals, and what is over
                // its share is refused. Anything else is a failure.
                let limit = self.hosts[h].driver.as_ref().map_or(usize::MAX, |d| {
                    let limits = &d.node().config().limits;
                    match listener {
                        ListenerRole::Receive => limits.author_connections_per_address,
                        ListenerRole::Broadcast => limits.subscriber_connections_per_address,
                    }
                });
                let held = self.open_from(h, peer.ip(), listener);
                if cause == RefusalCause::PerAddress && held >= limit {
                    trace!(
                        self,
                        "{}: refused over the per-address limit ({held} held)",
                        name()
                    );
                } else {
                    self.fail(Violation::Refused {
                        node: name(),
                        reason,
                    });
                }
            }
            Event::ExternalSkipped {
                conn, at, reason, ..
            } => self.source_skipped(h, conn, at, reason.to_string()),
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
                        .contains_key(&(broker, Arc::clone(&self.events[event].ivorn))) => {}
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
    pub(crate) fn tap(&mut self, l: LinkId, bytes: &[u8]) {
        let client = self.links[l].ends[CLIENT].host;
        let filters = &self.hosts[client].filters;
        let comet = self.options.comet_policies;
        let garbage = self.log.as_ref().map(|l| &l.garbage);
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
            if garbage.is_some_and(|g| g.contains(&ivorn)) {
                violations.push(Violation::GarbageForwarded {
                    node: format!("{from} -> {to}"),
                    ivorn: ivorn.to_string(),
                });
            } else if !fresh {
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

    // ---------------------------------------------------------------- whole world

    /// Every driver outbox and seen-index within its bound.
    pub(crate) fn check_bounds(&mut self) {
        if let Some(v) = self.bounds_violation() {
            self.fail(v);
        }
    }

    fn bounds_violation(&self) -> Option<Violation> {
        let outbox_max = self.options.outbox.bytes_max.max(FRAME_MAX);
        for h in 0..self.hosts.len() {
            let Some(driver) = self.hosts[h].driver.as_ref() else {
                continue;
            };
            let node = driver.node();
            let seen_max = node.config().limits.seen_entries_max;
            if node.seen_len() > seen_max {
                return Some(Violation::QueueOverBound {
                    node: self.hosts[h].name.clone(),
                    queue: "the seen-index".into(),
                    len: node.seen_len(),
                    max: seen_max,
                });
            }
            for (conn, _) in self.host_sockets(h) {
                let queued = driver.queued_bytes(conn);
                if queued > outbox_max {
                    return Some(Violation::QueueOverBound {
                        node: self.hosts[h].name.clone(),
                        queue: format!("the outbox of {conn} (bytes)"),
                        len: queued,
                        max: outbox_max,
                    });
                }
            }
        }
        None
    }

    /// A broker drops a subscriber that never answers at its second iamalive tick.
    pub(crate) fn check_mutes(&mut self) {
        for h in self.hosts_of(Kind::Mute) {
            let Some(l) = self.mute_link(h) else {
                continue;
            };
            let link = &self.links[l];
            let server = link.ends[SERVER];
            let (Some(accepted), None) = (link.accepted_at, server.down_at) else {
                continue;
            };
            let period = self.hosts[server.host]
                .driver
                .as_ref()
                .map_or(Duration::from_secs(60), |d| {
                    d.node().config().timing.iamalive_period
                });
            if self.now > accepted + 2 * period + Duration::from_secs(1) {
                let v = Violation::MuteNotDropped {
                    broker: self.hosts[server.host].name.clone(),
                    subscriber: self.hosts[h].name.clone(),
                };
                return self.fail(v);
            }
        }
    }

    /// The first subscription (node, upstream endpoints) that is not up and healthy.
    pub(crate) fn missing_subscription(&self) -> Option<(String, String)> {
        for (h, host) in self.hosts.iter().enumerate() {
            for (u, endpoints) in host.upstreams.iter().enumerate() {
                let up = self.host_sockets(h).any(|(_, l)| {
                    let link = &self.links[l];
                    link.ends[CLIENT].host == h && link.upstream == Some(u) && link.healthy()
                });
                if !up {
                    let names: Vec<&str> = endpoints
                        .iter()
                        .map(|&b| self.hosts[b].name.as_str())
                        .collect();
                    return Some((host.name.clone(), names.join(" or ")));
                }
            }
        }
        None
    }

    /// Every event accepted during the run reached every node connected to its origin
    /// throughout: through subscriptions established before the event was first accepted and
    /// neither closed, disturbed nor partitioned until the delivery bound after it.
    pub(crate) fn check_paths(&self) -> Option<Violation> {
        let bound = self.options.delivery_bound;
        // Broadcast links by serving broker.
        let mut feeds: Vec<Vec<usize>> = vec![Vec::new(); self.hosts.len()];
        for (l, link) in self.links.iter().enumerate() {
            if link.listener == vtp_core::ListenerRole::Broadcast && link.accepted_at.is_some() {
                feeds[link.ends[SERVER].host].push(l);
            }
        }
        for (e, event) in self.events.iter().enumerate() {
            let Some((t0, origin)) = event.first_accept else {
                continue;
            };
            let end = t0 + bound;
            let mut reached = vec![false; self.hosts.len()];
            reached[origin] = true;
            let mut frontier = vec![origin];
            while let Some(x) = frontier.pop() {
                for &l in &feeds[x] {
                    let y = self.links[l].ends[CLIENT].host;
                    if reached[y] || !self.clean(l, t0, end) {
                        continue;
                    }
                    reached[y] = true;
                    if self.wants(y, e) && !self.delivered_by(y, &event.ivorn, end) {
                        return Some(self.not_delivered(e, origin, y));
                    }
                    if self.hosts[y].kind == Kind::Broker {
                        frontier.push(y);
                    }
                }
            }
        }
        None
    }

    /// Link `l` was established by `from` and carried data promptly until `to`.
    fn clean(&self, l: usize, from: Instant, to: Instant) -> bool {
        let link = &self.links[l];
        let (a, b) = (link.ends[CLIENT].host, link.ends[SERVER].host);
        link.established_at.is_some_and(|t| t <= from)
            && link.down_at().is_none_or(|t| t > to)
            && !link.disturbed_during(from, to)
            && !self.is_partitioned_during(a, b, from, to)
    }

    fn delivered_by(&self, h: HostId, ivorn: &Arc<str>, by: Instant) -> bool {
        self.delivered
            .get(&(h, Arc::clone(ivorn)))
            .is_some_and(|&t| t <= by)
    }
}
