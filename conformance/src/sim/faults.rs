//! Fault injection and healing, and the restart of a node from its store.

use std::collections::BTreeSet;
use std::time::Duration;

use vtp_core::SeenRecord;

use super::net::{CLIENT, DOWN, HostId, Item, LinkId, SERVER, UP};
use super::topology::Kind;
use super::world::{FaultKind, Phase, Sim, Timed};

impl Sim {
    pub(crate) fn inject(&mut self, kind: FaultKind) {
        let now = self.now;
        match kind {
            FaultKind::Restart => {
                let nodes: Vec<HostId> = (0..self.hosts.len())
                    .filter(|&h| matches!(self.hosts[h].kind, Kind::Broker | Kind::Subscriber))
                    .collect();
                // With a log, half the restarts hit a consuming broker.
                let consumers = self.options.log.as_ref().map(|l| l.consumers.clone());
                let h = match consumers {
                    Some(c) if self.fault_rng.coin() => *self.fault_rng.pick(&c),
                    _ => *self.fault_rng.pick(&nodes),
                };
                self.restart(h);
            }
            FaultKind::Partition => {
                let n = self.hosts.len();
                let a = self.fault_rng.below(n);
                let b = self.fault_rng.below(n);
                let pair = (a.min(b), a.max(b));
                if a == b || self.partitions.contains_key(&pair) {
                    return;
                }
                let heal = now
                    + self
                        .fault_rng
                        .duration(Duration::from_secs(1), Duration::from_secs(150));
                trace!(
                    self,
                    "FAULT partition {} | {} until +{:.1} s",
                    self.hosts[a].name,
                    self.hosts[b].name,
                    (heal - now).as_secs_f64()
                );
                self.partitions.insert(pair, heal);
                self.partition_log.push((pair.0, pair.1, now, None));
                self.schedule(heal, Timed::HealPartition(pair.0, pair.1));
            }
            FaultKind::Reset | FaultKind::BlackHole | FaultKind::SlowReader => {
                let live: Vec<LinkId> = self
                    .active_or_open()
                    .into_iter()
                    .filter(|&l| {
                        self.links[l].established_at.is_some() && !self.links[l].black_hole
                    })
                    .collect();
                if live.is_empty() {
                    return;
                }
                let l = *self.fault_rng.pick(&live);
                let names = format!(
                    "{} <-> {}",
                    self.hosts[self.links[l].ends[CLIENT].host].name,
                    self.hosts[self.links[l].ends[SERVER].host].name
                );
                match kind {
                    FaultKind::Reset => {
                        trace!(self, "FAULT reset {names}");
                        for d in [UP, DOWN] {
                            let at = now + self.latency();
                            let pipe = &mut self.links[l].pipes[d];
                            if pipe.reader_gone {
                                continue;
                            }
                            pipe.discard();
                            pipe.items.push_back((at, Item::Rst));
                            pipe.write_closed = true;
                            pipe.reset = true;
                        }
                        self.active.insert(l);
                    }
                    FaultKind::BlackHole => {
                        trace!(self, "FAULT half-open {names}");
                        let link = &mut self.links[l];
                        link.black_hole = true;
                        link.disturbed.push((now, None));
                        for pipe in &mut link.pipes {
                            pipe.frozen = true;
                            pipe.items.clear();
                        }
                    }
                    FaultKind::SlowReader | FaultKind::Partition | FaultKind::Restart => {
                        let d = if self.fault_rng.coin() { UP } else { DOWN };
                        let until = now
                            + self
                                .fault_rng
                                .duration(Duration::from_secs(1), Duration::from_secs(120));
                        trace!(
                            self,
                            "FAULT slow reader {names} ({}) for {:.1} s",
                            if d == UP { "server" } else { "client" },
                            (until - now).as_secs_f64()
                        );
                        let link = &mut self.links[l];
                        link.pipes[d].paused_until = Some(until);
                        link.disturbed.push((now, Some(until)));
                    }
                }
            }
        }
        self.faults += 1;
    }

    /// Links with at least one end's socket open.
    fn active_or_open(&self) -> Vec<LinkId> {
        let mut open = BTreeSet::new();
        for host in &self.hosts {
            open.extend(host.sockets.values().copied());
            if let Some((_, Some(l))) = host.mute {
                open.insert(l);
            }
        }
        open.into_iter()
            .filter(|&l| self.links[l].ends.iter().all(|e| e.open))
            .collect()
    }

    pub(crate) fn heal_partition(&mut self, a: HostId, b: HostId) {
        if self.partitions.remove(&(a, b)).is_none() {
            return;
        }
        trace!(
            self,
            "heal partition {} | {}", self.hosts[a].name, self.hosts[b].name
        );
        let now = self.now;
        for entry in self.partition_log.iter_mut().rev() {
            if (entry.0, entry.1) == (a, b) && entry.3.is_none() {
                entry.3 = Some(now);
                break;
            }
        }
        // The segments held by the partition are retransmitted now.
        for l in 0..self.links.len() {
            let hosts = (self.links[l].ends[0].host, self.links[l].ends[1].host);
            if (hosts.0.min(hosts.1), hosts.0.max(hosts.1)) == (a, b) {
                for d in [UP, DOWN] {
                    let at = now + self.latency();
                    self.links[l].pipes[d].hold_until(at);
                }
            }
        }
    }

    /// End of the fault phase: partitions heal, readers resume; half-open links stay dead.
    pub(crate) fn heal(&mut self) {
        trace!(self, "HEAL: faults stop");
        self.phase = Phase::Healing;
        let pairs: Vec<(HostId, HostId)> = self.partitions.keys().copied().collect();
        for (a, b) in pairs {
            self.heal_partition(a, b);
        }
        let now = self.now;
        for link in &mut self.links {
            for pipe in &mut link.pipes {
                if pipe.paused_until.is_some_and(|p| p > now) {
                    pipe.paused_until = Some(now);
                }
            }
            for (_, end) in &mut link.disturbed {
                if end.is_some_and(|e| e > now) {
                    *end = Some(now);
                }
            }
        }
        self.schedule(now + self.options.heal_bound, Timed::HealDeadline);
    }

    /// The node's process dies (every connection is reset, what its store had not made
    /// durable is lost) and starts again from its store; a consumer resumes from its group's
    /// committed offsets.
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
        let lost = self.hosts[h].fx.crash();
        trace!(
            self,
            "{} lost {lost} store operations not durable", self.hosts[h].name
        );
        // An acceptance whose record was lost never went out (its forwards and delivery wait
        // for the record): the event may be accepted again.
        let store = &self.hosts[h].fx.store;
        self.accepted
            .retain(|(x, _), key| *x != h || store.contains_key(key));
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
        self.open_source(h);
    }
}
