//! Durability: the seen-index's records in the store. Persist actions are numbered in emission
//! order; with [`Durability::BeforeReply`] the output that promises an event was recorded is
//! held behind its persist and released, in order, once the caller reports it durable; old
//! records are expired on the prune timer.

use std::ops::Range;
use std::time::Instant;

use bytes::Bytes;

use crate::config::Durability;
use crate::output::{Action, ConnId, Event, Position};
use crate::seen::{EventKey, SeenRecord};

use super::{Node, TimerKey};

/// Output held until a persist is durable.
#[derive(Debug)]
pub(super) enum Held {
    /// A receipt, a close or a delivery.
    Action(Action),
    /// An event's forwards, decided at release: filters are evaluated then, for the feeds
    /// connected then, so holding costs nothing per subscriber.
    FanOut {
        /// The event, framed once.
        frame: Bytes,
        /// Its `VOEvent` element within the payload (for filters).
        element: Range<usize>,
    },
    /// A record of an external source, done once this persist is durable.
    Commit {
        /// The external source.
        conn: ConnId,
        /// The record.
        at: Position,
    },
}

impl Node {
    pub(super) fn persist(&mut self, key: EventKey, unix_secs: u64, evicted: Option<EventKey>) {
        if let Some(old) = evicted {
            self.actions.push_back(Action::Forget(old));
        }
        self.persists += 1;
        self.actions
            .push_back(Action::Persist(SeenRecord { key, unix_secs }));
    }

    /// True when output queued now must wait for a persist: the policy holds replies and some
    /// record emitted so far is not durable yet.
    pub(super) fn holding(&self) -> bool {
        self.config.policy.durability == Durability::BeforeReply && self.persisted < self.persists
    }

    /// Moves the actions queued since `mark` to the held queue, behind the latest persist, when
    /// [`Self::holding`]. Every record emitted so far is then durable before they go out: the
    /// event's own and, for a duplicate, the original's if it is still on its way.
    pub(super) fn hold(&mut self, mark: usize) {
        if !self.holding() {
            return;
        }
        let seq = self.persists;
        self.held
            .extend(self.actions.drain(mark..).map(|a| (seq, Held::Action(a))));
    }

    /// Queues one held action whose record is now durable. A held close ends its intake; frames
    /// for connections that closed meanwhile are dropped.
    pub(super) fn release(&mut self, action: Action, now: Instant) {
        match action {
            Action::Close { conn, reason } => {
                if self.replying.remove(&conn) {
                    self.close(conn, reason, now);
                }
            }
            action => match action.frame() {
                Some((conn, _)) if !self.conns.contains_key(&conn) => {}
                _ => self.actions.push_back(action),
            },
        }
    }

    pub(super) fn prune(&mut self, now: Instant) {
        self.timers
            .set(TimerKey::Prune, now + self.config.timing.prune_interval);
        let unix = self.clock.unix_secs_at(now);
        let cutoff = unix.saturating_sub(self.config.timing.seen_retention.as_secs());
        let removed = self.seen.expire(cutoff);
        self.actions.push_back(Action::Expire {
            before_unix_secs: cutoff,
        });
        if removed > 0 {
            self.events.push_back(Event::Pruned { removed });
        }
        self.note_seen_level();
    }

    /// Reports a change of the seen-index's fill level (80 %, 100 %, with hysteresis).
    pub(super) fn note_seen_level(&mut self) {
        if let Some(level) = self.seen.level_change() {
            self.events.push_back(Event::SeenIndexLevel {
                level,
                entries: self.seen.len(),
                max: self.seen.entries_max(),
            });
        }
    }
}
