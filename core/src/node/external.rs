//! External sources: events from outside VTP (a Kafka consumer, any log with positions) enter
//! the node like an upstream's: IVORN and version checks, the schema, dedup against the
//! seen-index, fan-out to subscribers and delivery to handlers. Each record carries its
//! [`Position`] (lane and offset: a partition and an offset in Kafka's terms), and the node
//! decides when a position may be committed back to the source: only once every record of
//! its lane up to it is done, and a record is done only when its seen-index record (or, for a
//! duplicate, the original's) is durable; a record that is skipped (not a VOEvent, a bad
//! IVORN, a schema fault) is done at once. So after a crash a source resumes at the first
//! record not yet durable: nothing is lost, and what was durable comes back as a duplicate,
//! never forwarded twice.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::message::Message;
use crate::output::{Action, ConnId, ConnRole, Event, Position, Remote, Source};
use crate::seen::{ElementHash, Seen, SeenSource};
use crate::violation::Violation;

use super::durability::Held;
use super::feed::Accepted;
use super::{Kind, Node};

/// Why [`Node::handle_external`] did not take a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExternalError {
    /// `conn` is not an open external source (never opened, or closed).
    UnknownSource,
    /// The source has [`Limits::external_pending_max`](crate::config::Limits::external_pending_max)
    /// records not yet committable: wait for [`Action::Commit`]s (the store catching up)
    /// before reading more. The record was not processed; hand it in again later.
    Busy,
}

impl std::fmt::Display for ExternalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::UnknownSource => "not an open external source",
            Self::Busy => "too many records of this source wait for the store; retry later",
        })
    }
}

impl std::error::Error for ExternalError {}

/// The commit state of one external source: per lane, the records handed in and not yet
/// committable, in offset order.
#[derive(Debug, Default)]
pub(super) struct External {
    lanes: HashMap<u32, Lane>,
    /// Records tracked in all lanes.
    pending: usize,
    /// Events accepted from this source.
    pub(super) received: u64,
}

#[derive(Debug, Default)]
struct Lane {
    /// Offsets handed in and not yet committed, ascending, with whether each is done.
    pending: VecDeque<(u64, bool)>,
    /// The highest offset handed in: a record at or below it is a re-read (a source that
    /// rewound after a reconnect) and is not tracked again.
    highest: Option<u64>,
}

impl External {
    /// Tracks `at`; false when it is a re-read (at or below the lane's highest offset).
    fn track(&mut self, at: Position) -> bool {
        let lane = self.lanes.entry(at.lane).or_default();
        if lane.highest.is_some_and(|h| at.offset <= h) {
            return false;
        }
        lane.highest = Some(at.offset);
        lane.pending.push_back((at.offset, false));
        self.pending += 1;
        true
    }

    /// Marks `at` done; returns the offset to commit (one past the last record of the
    /// lane's done prefix) when that prefix grew.
    fn done(&mut self, at: Position) -> Option<u64> {
        let lane = self.lanes.get_mut(&at.lane)?;
        let i = lane
            .pending
            .binary_search_by_key(&at.offset, |&(offset, _)| offset)
            .ok()?;
        lane.pending[i].1 = true;
        let mut next = None;
        while let Some(&(offset, true)) = lane.pending.front() {
            lane.pending.pop_front();
            self.pending -= 1;
            next = Some(offset + 1);
        }
        next
    }
}

impl Node {
    /// Opens an external source named `name` (for logs and metrics: `kafka
    /// gcn.classic.voevent.*`, say) and returns the connection id its records are handed in
    /// with ([`Node::handle_external`]). It is reported as [`Event::PeerUp`] with
    /// [`ConnRole::External`] and [`Remote::External`]; it counts against no connection
    /// limit, has no deadline and is never closed for the faults of its records (each is
    /// skipped: [`Event::ExternalSkipped`]). [`Node::handle_closed`] closes it.
    pub fn open_external(&mut self, name: &str, now: Instant) -> ConnId {
        self.advance(now);
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        let remote = Remote::External(Arc::from(name));
        self.insert_conn(conn, Kind::External(External::default()), remote, now);
        self.peer_up(conn, now);
        conn
    }

    /// A record from the external source `conn`, at `at`, whose bytes `payload` should be one
    /// VOEvent document (unframed). It is checked like an author's submission (IVORN, version,
    /// schema) and deduplicated against the seen-index; a new event is forwarded and delivered
    /// as [`Source::External`]. [`Action::Commit`] follows, in offset order per lane, once the
    /// record and every earlier one of its lane are done (see the module documentation).
    ///
    /// Offsets of a lane must be handed in ascending; one at or below the highest so far is a
    /// re-read: processed (usually a duplicate) but not tracked again.
    pub fn handle_external(
        &mut self,
        conn: ConnId,
        at: Position,
        payload: &[u8],
        now: Instant,
    ) -> Result<(), ExternalError> {
        self.advance(now);
        let max = self.config.limits.external_pending_max;
        let Some(Kind::External(source)) = self.conns.get_mut(&conn).map(|c| &mut c.kind) else {
            return Err(ExternalError::UnknownSource);
        };
        if source.pending >= max {
            return Err(ExternalError::Busy);
        }
        let tracked = source.track(at);
        let max = self.config.limits.frame_len_max;
        let checked = if payload.len() <= max as usize {
            self.external_event(conn, payload, now)
        } else {
            // Too long to forward in a VTP frame: no subscriber would take it.
            let (len, max) = (payload.len() as u64, u64::from(max));
            Err((None, Violation::Oversize { len, max }))
        };
        match checked {
            Ok(()) => {
                if tracked {
                    self.commit_when_durable(conn, at);
                }
            }
            Err((ivorn, reason)) => {
                self.events.push_back(Event::ExternalSkipped {
                    conn,
                    at,
                    ivorn: ivorn.map(Arc::from),
                    reason,
                });
                if tracked {
                    self.external_done(conn, at);
                }
            }
        }
        self.flush_commits();
        Ok(())
    }

    /// Skips the record at `at` of the source `conn` without its bytes (the host did not
    /// read them: a record larger than it takes, say): reported as [`Event::ExternalSkipped`]
    /// with `reason` and done at once, like a record that fails the checks.
    pub fn skip_external(
        &mut self,
        conn: ConnId,
        at: Position,
        reason: Violation,
        now: Instant,
    ) -> Result<(), ExternalError> {
        self.advance(now);
        let Some(Kind::External(source)) = self.conns.get_mut(&conn).map(|c| &mut c.kind) else {
            return Err(ExternalError::UnknownSource);
        };
        let tracked = source.track(at);
        self.events.push_back(Event::ExternalSkipped {
            conn,
            at,
            ivorn: None,
            reason,
        });
        if tracked {
            self.external_done(conn, at);
        }
        self.flush_commits();
        Ok(())
    }

    /// Checks, dedups and accepts one record's event; the error names what was skipped.
    fn external_event(
        &mut self,
        conn: ConnId,
        payload: &[u8],
        now: Instant,
    ) -> Result<(), (Option<String>, Violation)> {
        let on = ConnRole::External;
        let (ev, schema) = match self.parse_event(payload) {
            Ok((Message::VoEvent(ev), schema)) => (ev, schema),
            Ok((Message::Transport(t), _)) => {
                return Err((None, Violation::UnexpectedTransport { role: t.role }));
            }
            Err(error) => return Err((None, Violation::Unparsable { on, error })),
        };
        self.check_event(payload, &ev, schema, on)
            .map_err(|v| (Some(ev.ivorn.to_string()), v))?;
        let hash = ElementHash::of(&payload[ev.element.clone()]);
        let key = hash.key();
        let signature = self
            .check_signature(payload, &ev, &hash, &key)
            .map_err(|signature| {
                let ivorn = ev.ivorn.to_string();
                let violation = Violation::Signature {
                    on,
                    ivorn: ivorn.clone(),
                    signature,
                };
                (Some(ivorn), violation)
            })?;
        let remote = self.remote(conn).ok_or((None, Violation::SeenQuota))?;
        let unix = self.clock.unix_secs_at(now);
        let seen = self
            .seen
            .check_and_insert(key, unix, SeenSource::External(conn));
        self.note_seen_level();
        let ivorn: Arc<str> = Arc::from(ev.ivorn.as_ref());
        match seen {
            Seen::Refused => Err((Some(ivorn.to_string()), Violation::SeenQuota)),
            Seen::Duplicate => {
                self.actions.push_back(Action::DropDuplicate { conn, key });
                self.events.push_back(Event::Duplicate {
                    conn,
                    key,
                    ivorn,
                    remote,
                });
                Ok(())
            }
            Seen::New { evicted } => {
                if let Some(Kind::External(s)) = self.conns.get_mut(&conn).map(|c| &mut c.kind) {
                    s.received += 1;
                }
                let accepted = Accepted {
                    source: Source::External(conn),
                    ivorn,
                    key,
                    role: ev.role,
                    signature: signature.map(Arc::new),
                    spans: ev.spans.clone().map(Arc::new),
                };
                let frame = self.frame_event(&accepted, payload);
                self.persist(key, unix, evicted);
                if let Some(frame) = frame {
                    self.accept_event(conn, accepted, frame, ev.element.clone(), remote);
                }
                Ok(())
            }
        }
    }

    /// `at` is done once every record emitted so far is durable (its own, or for a duplicate
    /// the original's, may still be on its way): at once if they are, else held behind the
    /// latest persist, whatever the durability policy (a commit is a promise that the event
    /// survives a crash).
    fn commit_when_durable(&mut self, conn: ConnId, at: Position) {
        if self.persisted < self.persists {
            self.held
                .push_back((self.persists, Held::Commit { conn, at }));
        } else {
            self.external_done(conn, at);
        }
    }

    /// Marks `at` done and queues the commit it allows, if any.
    pub(super) fn external_done(&mut self, conn: ConnId, at: Position) {
        let Some(Kind::External(source)) = self.conns.get_mut(&conn).map(|c| &mut c.kind) else {
            return;
        };
        let Some(next) = source.done(at) else {
            return;
        };
        // Several records released at once (one durable batch) make one commit per lane.
        match self
            .commits
            .iter_mut()
            .find(|(c, lane, _)| *c == conn && *lane == at.lane)
        {
            Some(pending) => pending.2 = next,
            None => self.commits.push((conn, at.lane, next)),
        }
    }

    /// Queues the commits decided since the last flush.
    pub(super) fn flush_commits(&mut self) {
        for (conn, lane, next_offset) in self.commits.drain(..) {
            self.actions.push_back(Action::Commit {
                conn,
                lane,
                next_offset,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(lane: u32, offset: u64) -> Position {
        Position { lane, offset }
    }

    #[test]
    fn a_lane_commits_its_done_prefix_only() {
        let mut x = External::default();
        for o in 10..14 {
            assert!(x.track(at(0, o)));
        }
        assert!(x.track(at(1, 0)));
        assert_eq!(x.pending, 5);
        assert_eq!(x.done(at(0, 12)), None, "10 and 11 are not done");
        assert_eq!(x.done(at(1, 0)), Some(1), "lanes are independent");
        assert_eq!(x.done(at(0, 10)), Some(11));
        assert_eq!(x.done(at(0, 11)), Some(13), "11 and the done 12");
        assert_eq!(x.done(at(0, 13)), Some(14));
        assert_eq!(x.pending, 0);
        assert_eq!(x.done(at(0, 13)), None, "done twice: nothing more");
    }

    #[test]
    fn a_re_read_is_not_tracked_again() {
        let mut x = External::default();
        assert!(x.track(at(0, 5)));
        assert!(!x.track(at(0, 5)));
        assert!(!x.track(at(0, 3)));
        assert!(x.track(at(0, 6)));
        assert_eq!(x.pending, 2);
        assert_eq!(x.done(at(0, 3)), None, "never tracked");
    }
}
