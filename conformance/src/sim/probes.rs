//! The probe phase and the end of a run.

use std::sync::Arc;
use std::time::Duration;

use super::Violation;
use super::filter;
use super::net::HostId;
use super::topology::Kind;
use super::world::{ATTEMPTS_MAX, Phase, Sim, Timed};

impl Sim {
    /// Submits one fresh event to each broker.
    pub(crate) fn probe(&mut self) {
        trace!(self, "PROBE: one fresh event per broker");
        self.phase = Phase::Probing;
        let authors = self.hosts_of(Kind::Author);
        for b in 0..self.options.brokers {
            let author = authors[b % authors.len()];
            let event = self.new_event(author, b, true);
            self.submit(author, event, b, ATTEMPTS_MAX);
        }
        let receipt = Duration::from_secs(20);
        let at = self.now + receipt + self.options.delivery_bound + Duration::from_secs(1);
        self.schedule(at, Timed::ProbeDeadline);
    }

    /// Probes must reach every node that wants them within the delivery bound; at the
    /// deadline, any that has not is a failure.
    pub(crate) fn check_probes(&mut self, deadline: bool) {
        let bound = self.options.delivery_bound;
        let mut complete = true;
        for e in 0..self.events.len() {
            if !self.events[e].probe {
                continue;
            }
            let Some((t0, origin)) = self.events[e].first_accept else {
                complete = false;
                continue;
            };
            for h in 0..self.hosts.len() {
                if !self.wants(h, e) {
                    continue;
                }
                let key = (h, Arc::clone(&self.events[e].ivorn));
                match self.delivered.get(&key) {
                    Some(&at) if at <= t0 + bound => {}
                    Some(_) => {
                        return self.fail(self.not_delivered(e, origin, h));
                    }
                    None if self.now > t0 + bound || deadline => {
                        return self.fail(self.not_delivered(e, origin, h));
                    }
                    None => complete = false,
                }
            }
        }
        if deadline && !complete {
            // Some probe was never accepted; its submission outcome says why.
            if let Some(e) = self
                .events
                .iter()
                .find(|e| e.probe && e.first_accept.is_none())
            {
                let v = Violation::ProbeFailed {
                    author: e
                        .author
                        .map_or_else(String::new, |a| self.hosts[a].name.clone()),
                    ivorn: e.ivorn.to_string(),
                    outcome: "never accepted".into(),
                };
                return self.fail(v);
            }
        }
        if complete {
            trace!(self, "every probe reached every node that wants it");
            // Fault-phase events may still be within their delivery bound: `finish` waits.
            self.phase = Phase::Ending;
            self.schedule(self.now, Timed::Finish);
        }
    }

    pub(crate) fn not_delivered(&self, e: usize, origin: HostId, h: HostId) -> Violation {
        Violation::NotDelivered {
            ivorn: self.events[e].ivorn.to_string(),
            origin: self.hosts[origin].name.clone(),
            node: self.hosts[h].name.clone(),
            bound: self.options.delivery_bound,
        }
    }

    /// True if node `h` handles event `e` when it receives it (brokers and subscribers whose
    /// filters want it).
    pub(crate) fn wants(&self, h: HostId, e: usize) -> bool {
        match self.hosts[h].kind {
            Kind::Broker => true,
            Kind::Subscriber => filter::wants(
                &self.hosts[h].filters,
                self.options.comet_policies,
                &self.events[e].payload,
            ),
            Kind::Author | Kind::Mute => false,
        }
    }

    pub(crate) fn finish(&mut self) {
        let last = self
            .events
            .iter()
            .filter_map(|e| e.first_accept.map(|(t, _)| t))
            .max()
            .unwrap_or(self.now);
        if last + self.options.delivery_bound > self.now {
            let at = last + self.options.delivery_bound;
            self.schedule(at, Timed::Finish);
            return;
        }
        if let Some(v) = self.check_paths().or_else(|| self.check_log()) {
            return self.fail(v);
        }
        // Every submission gets its outcome by the receipt deadline (20 s), and a late duplicate
        // may still be on its way.
        let receipt = Duration::from_secs(21);
        let pending = self
            .timed
            .values()
            .any(|t| matches!(t, Timed::Submit { .. }));
        let open = self
            .submissions
            .values()
            .filter(|s| s.outcomes == 0)
            .map(|s| s.at + receipt)
            .max();
        if pending || open.is_some_and(|by| by > self.now) {
            let at = open
                .unwrap_or(self.now)
                .max(self.now + Duration::from_secs(1));
            self.schedule(at, Timed::Finish);
            return;
        }
        for (&(h, _), sub) in &self.submissions {
            if sub.outcomes == 0 {
                let v = Violation::SubmissionUnresolved {
                    author: self.hosts[h].name.clone(),
                    ivorn: self.events[sub.event].ivorn.to_string(),
                };
                return self.fail(v);
            }
        }
        trace!(self, "DONE");
        self.phase = Phase::Done;
    }
}
