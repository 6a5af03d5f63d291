//! Invariants that look at the whole world: queue bounds, mute subscribers, subscriptions
//! after healing, and delivery along undisturbed paths.
//!
//! The per-event safety checks (accepted twice, carried twice, filters) run where the
//! simulator observes the event, in `world.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Violation;
use super::net::{CLIENT, HostId, SERVER};
use super::world::{Kind, Sim};

/// The largest frame the simulation produces (events and test events are about 1 KiB): an
/// outbox may exceed its byte bound by one such frame, when it holds nothing else.
const FRAME_MAX: usize = 16 * 1024;

impl Sim {
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
