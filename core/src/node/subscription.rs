//! Subscriptions: us connected to an upstream broker. Dial its endpoints in turn, reconnect
//! after a back-off when the connection ends, answer its authenticate (with our filters) and
//! iamalives, ack and relay its events, and give up on it when it stays silent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::endpoint::DialAddr;
use crate::ivoid;
use crate::message::{self, Message, TransportRole};
use crate::output::{Action, CloseReason, ConnId, ConnRole, Event, Remote, Source};
use crate::seen::{ElementHash, Seen, SeenSource};
use crate::violation::Violation;

use super::feed::Accepted;
use super::{Kind, Node, TimerKey};

#[derive(Debug)]
pub(super) struct Subscription {
    pub(super) upstream: usize,
    pub(super) connected_at: Option<Instant>,
    /// Events received (new, duplicate or refused).
    pub(super) received: u64,
}

#[derive(Debug)]
pub(super) struct UpstreamState {
    pub(super) endpoints: Vec<DialAddr>,
    pub(super) next_endpoint: usize,
    pub(super) backoff: Backoff,
    pub(super) conn: Option<ConnId>,
}

impl Node {
    pub(super) fn dial(&mut self, upstream: usize, now: Instant) {
        if self.shut_down {
            return;
        }
        let Some(up) = self.upstreams.get_mut(upstream) else {
            return;
        };
        if up.conn.is_some() {
            return;
        }
        let addr = up.endpoints[up.next_endpoint % up.endpoints.len()].clone();
        up.next_endpoint = (up.next_endpoint + 1) % up.endpoints.len();
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        up.conn = Some(conn);
        self.insert_conn(
            conn,
            Kind::Subscription(Subscription {
                upstream,
                connected_at: None,
                received: 0,
            }),
            Remote::Dialled(Arc::from(addr.to_string())),
            now,
        );
        // Bound the connect attempt by the silence timeout.
        self.timers.set(
            TimerKey::Conn(conn),
            now + self.config.timing.subscriber_silence,
        );
        self.actions.push_back(Action::Connect { conn, addr });
    }

    /// Schedules the next dial of `upstream`, whose connection to `previous` (up for `lived`)
    /// or attempt ended for `reason`.
    pub(super) fn schedule_reconnect(
        &mut self,
        upstream: usize,
        lived: Duration,
        reason: CloseReason,
        previous: Arc<str>,
        now: Instant,
    ) {
        let Some(up) = self.upstreams.get_mut(upstream) else {
            return;
        };
        up.conn = None;
        if self.shut_down {
            return;
        }
        up.backoff.connection_ended(lived);
        let delay = up.backoff.next_delay();
        let endpoint = Arc::from(up.endpoints[up.next_endpoint % up.endpoints.len()].to_string());
        self.timers.set(TimerKey::Reconnect(upstream), now + delay);
        self.events.push_back(Event::Reconnecting {
            upstream,
            endpoint,
            delay,
            reason,
            previous,
        });
    }

    pub(super) fn subscription_frame(&mut self, conn: ConnId, payload: &[u8], now: Instant) {
        let msg = match message::parse(payload, &self.config.limits.parse) {
            Ok(m) => m,
            Err(error) => {
                self.violation(
                    conn,
                    Violation::Unparsable {
                        on: ConnRole::Subscription,
                        error,
                    },
                    now,
                );
                return;
            }
        };
        // Any valid frame proves the upstream alive.
        self.timers.set(
            TimerKey::Conn(conn),
            now + self.config.timing.subscriber_silence,
        );
        let local = self.local_ivo.clone();
        match msg {
            Message::Transport(t) => match t.role {
                TransportRole::IamAlive => {
                    let ts = self.stamp(now);
                    let frame =
                        message::build_iamalive_reply(&t.origin, local.as_deref(), ts.as_str());
                    self.actions.push_back(Action::IamAlive { conn, frame });
                }
                TransportRole::Authenticate => {
                    let ts = self.stamp(now);
                    let filters: Vec<&str> =
                        self.config.filters.iter().map(String::as_str).collect();
                    let frame = message::build_authenticate_reply(
                        &t.origin,
                        local.as_deref(),
                        ts.as_str(),
                        &filters,
                    );
                    let frame = self.sign_own(frame);
                    self.actions.push_back(Action::Authenticate { conn, frame });
                }
                TransportRole::Ack | TransportRole::Nak => {
                    self.violation(conn, Violation::UnsolicitedReceipt { role: t.role }, now);
                }
            },
            Message::VoEvent(ev) => {
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                if let Kind::Subscription(s) = &mut c.kind {
                    s.received += 1;
                }
                let remote = c.remote.clone();
                // Always ack, valid or not, new or not, so the upstream keeps us (Comet); the
                // ack of a new event or a duplicate waits for the store like an author's.
                if let Err(error) = ivoid::check_event_ivorn(&ev.ivorn) {
                    self.ack(conn, &ev.ivorn, now);
                    self.violation(
                        conn,
                        Violation::BadIvorn {
                            on: ConnRole::Subscription,
                            ivorn: ev.ivorn.to_string(),
                            error,
                        },
                        now,
                    );
                    return;
                }
                let hash = ElementHash::of(&payload[ev.element.clone()]);
                let key = hash.key();
                let signature = match self.check_signature(payload, &ev, &hash, &key) {
                    Ok(signature) => signature,
                    Err(signature) => {
                        let mark = self.actions.len();
                        self.ack(conn, &ev.ivorn, now);
                        self.hold(mark);
                        let violation = Violation::Signature {
                            on: ConnRole::Subscription,
                            ivorn: ev.ivorn.to_string(),
                            signature,
                        };
                        self.report_fault(conn, violation, false, now);
                        return;
                    }
                };
                let unix = self.clock.unix_secs_at(now);
                let source = match self.conns.get(&conn).map(|c| &c.kind) {
                    Some(Kind::Subscription(s)) => SeenSource::Upstream(s.upstream),
                    _ => SeenSource::Other,
                };
                let seen = self.seen.check_and_insert(key, unix, source);
                self.note_seen_level();
                match seen {
                    Seen::Refused => {
                        let mark = self.actions.len();
                        self.ack(conn, &ev.ivorn, now);
                        self.hold(mark);
                        self.report_fault(conn, Violation::SeenQuota, false, now);
                    }
                    Seen::Duplicate => {
                        let mark = self.actions.len();
                        self.ack(conn, &ev.ivorn, now);
                        self.actions.push_back(Action::DropDuplicate { conn, key });
                        self.hold(mark);
                        self.events.push_back(Event::Duplicate {
                            conn,
                            key,
                            ivorn: Arc::from(ev.ivorn.as_ref()),
                            remote,
                        });
                    }
                    Seen::New { evicted } => {
                        let ivorn: Arc<str> = Arc::from(ev.ivorn.as_ref());
                        let accepted = Accepted {
                            source: Source::Upstream(conn),
                            ivorn,
                            key,
                            role: ev.role,
                            signature: signature.map(Arc::new),
                            spans: ev.spans.clone().map(Arc::new),
                        };
                        let frame = self.frame_event(&accepted, payload);
                        self.persist(key, unix, evicted);
                        let mark = self.actions.len();
                        self.ack(conn, &ev.ivorn, now);
                        self.hold(mark);
                        if let Some(frame) = frame {
                            self.accept_event(conn, accepted, frame, ev.element.clone(), remote);
                        }
                    }
                }
            }
        }
    }
}
