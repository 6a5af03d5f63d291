//! Feeds: subscribers connected to us. An accepted event is forwarded to every feed whose
//! filters pass; the node-wide iamalive tick pings every feed and drops the silent or lagging
//! ones; test events go out on their own timer; a subscriber's acks, naks, iamalive replies and
//! authenticate replies (its filters) come in here.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::config::{DeliveryTiming, InvalidFilters, SubscriberNak};
use crate::frame;
use crate::message::{self, EventRole, Message, TransportRole};
use crate::output::{Action, CloseReason, ConnId, ConnRole, Delivery, Event, Remote, Source};
use crate::seen::{EventKey, Seen, SeenSource};
use crate::signature::Signature;
use crate::time::format_utc;

use super::durability::Held;
use super::filters::FeedFilters;
use super::{Conn, Kind, Node, TimerKey};

#[derive(Debug, Default)]
pub(super) struct Feed {
    iamalive_unanswered: u32,
    /// Events sent, and receipts (ack or nak, any Origin, as Comet) received.
    sent: u64,
    receipts: u64,
    /// `sent` at the previous iamalive tick: events older than that are overdue if unanswered.
    sent_at_tick: u64,
    pub(super) filters: FeedFilters,
    naks: u64,
}

impl Feed {
    /// Events sent before the previous tick still without a receipt. Receipts are counted, not
    /// matched (Comet matches nothing either), and the oldest events are taken as answered
    /// first; an event sent since the last tick cannot be overdue, so acks still in flight
    /// during a burst never count against the subscriber.
    fn overdue(&self) -> u64 {
        self.sent_at_tick.saturating_sub(self.receipts)
    }

    /// Events forwarded to this feed so far (test events included).
    pub(super) fn sent(&self) -> u64 {
        self.sent
    }
}

impl Node {
    pub(super) fn feed_frame(&mut self, conn: ConnId, payload: &[u8], now: Instant) {
        let Some(t) = self.expect_transport(conn, payload, ConnRole::Feed, now) else {
            return;
        };
        let Some(Conn {
            kind: Kind::Feed(feed),
            ..
        }) = self.conns.get_mut(&conn)
        else {
            return;
        };
        match t.role {
            TransportRole::IamAlive => {
                feed.iamalive_unanswered = feed.iamalive_unanswered.saturating_sub(1);
            }
            TransportRole::Ack => {
                feed.receipts += 1;
            }
            TransportRole::Nak => {
                feed.receipts += 1;
                feed.naks += 1;
                self.events.push_back(Event::SubscriberNak {
                    conn,
                    origin: t.origin.to_string(),
                    reason: t.result.as_deref().map(str::to_owned),
                });
                if self.config.policy.subscriber_nak == SubscriberNak::Disconnect {
                    self.close(conn, CloseReason::SubscriberNak, now);
                }
            }
            TransportRole::Authenticate => {
                let exprs: Vec<&str> = t.xpath_filters().collect();
                self.set_filters(conn, &exprs);
            }
        }
    }

    /// Frames a new event's payload once, before its record is persisted; with
    /// [`DeliveryTiming::BeforeRecord`] also queues its delivery now, ahead of the `Persist`
    /// (never held). `None` only if the payload cannot be framed, which cannot happen: it came
    /// through a frame.
    pub(super) fn frame_event(&mut self, accepted: &Accepted, payload: &[u8]) -> Option<Bytes> {
        let frame = frame::encode(payload).ok()?;
        if self.config.policy.delivery_timing == DeliveryTiming::BeforeRecord {
            self.actions
                .push_back(Action::Deliver(accepted.delivery(&frame)));
        }
        Some(frame)
    }

    /// A new event from any source (`remote`), framed by [`frame_event`](Self::frame_event):
    /// forward to every feed whose filters pass, then deliver to the handlers (unless already
    /// delivered ahead), at once or held behind its persist. Every feed shares the one framed
    /// `Bytes`.
    pub(super) fn accept_event(
        &mut self,
        conn: ConnId,
        accepted: Accepted,
        frame: Bytes,
        element: Range<usize>,
        remote: Remote,
    ) {
        let mark = self.actions.len();
        if self.holding() {
            let fan_out = Held::FanOut {
                frame: frame.clone(),
                element,
            };
            self.held.push_back((self.persists, fan_out));
        } else {
            self.fan_out(&frame, &frame[frame::PREFIX_LEN..], element);
        }
        if self.config.policy.delivery_timing == DeliveryTiming::WithReceipt {
            self.actions
                .push_back(Action::Deliver(accepted.delivery(&frame)));
        }
        self.events.push_back(Event::Accepted {
            conn,
            ivorn: accepted.ivorn,
            key: accepted.key,
            remote,
            signature: accepted.signature,
        });
        self.hold(mark);
    }

    pub(super) fn fan_out(&mut self, frame: &Bytes, payload: &[u8], element: Range<usize>) {
        let ft = &mut self.filters;
        let evaluate = ft.feeds_with_filters > 0;
        if evaluate {
            ft.ids.clear();
            ft.ids.extend(ft.by_id.keys().copied());
            ft.verdicts.clear();
            ft.engine
                .evaluate(payload, element, &ft.ids, &mut ft.verdicts);
            // An engine that returns too few verdicts fails closed for the missing ones.
            ft.verdicts.resize(ft.ids.len(), false);
        }
        let invalid = self.config.policy.invalid_filters;
        for (&conn, c) in self.conns.iter_mut() {
            let Kind::Feed(feed) = &mut c.kind else {
                continue;
            };
            let pass = match &feed.filters {
                FeedFilters::None => true,
                FeedFilters::AllRefused => invalid == InvalidFilters::SendEverything,
                FeedFilters::Some(ids) => ids
                    .iter()
                    .any(|id| ft.ids.binary_search(id).is_ok_and(|i| ft.verdicts[i])),
            };
            if pass {
                feed.sent += 1;
                self.actions.push_back(Action::Forward {
                    conn,
                    frame: frame.clone(),
                });
            }
        }
    }

    pub(super) fn iamalive_tick(&mut self, now: Instant) {
        let period = self.config.timing.iamalive_period;
        self.timers.set(TimerKey::IamaliveTick, now + period);
        let Some(local_ivo) = self.local_ivo.clone() else {
            return;
        };
        let limits = self.config.limits;
        let mut frame: Option<Bytes> = None;
        let mut drop: Vec<(ConnId, CloseReason)> = Vec::new();
        for (&conn, c) in self.conns.iter_mut() {
            let Kind::Feed(feed) = &mut c.kind else {
                continue;
            };
            if feed.iamalive_unanswered >= limits.iamalive_missed_max {
                drop.push((conn, CloseReason::IamaliveUnanswered));
            } else if feed.overdue() >= u64::from(limits.outstanding_acks_max) {
                let overdue = u32::try_from(feed.overdue()).unwrap_or(u32::MAX);
                drop.push((conn, CloseReason::OutstandingAcks(overdue)));
            } else {
                feed.iamalive_unanswered += 1;
                feed.sent_at_tick = feed.sent;
                let frame = frame
                    .get_or_insert_with(|| {
                        let ts = format_utc(self.clock.unix_secs_at(now));
                        message::build_iamalive(&local_ivo, ts.as_str())
                    })
                    .clone();
                self.actions.push_back(Action::IamAlive { conn, frame });
            }
        }
        for (conn, reason) in drop {
            self.close(conn, reason, now);
        }
    }

    pub(super) fn test_event(&mut self, now: Instant) {
        let Some(interval) = self.config.timing.test_event_interval else {
            return;
        };
        self.timers.set(TimerKey::TestEvent, now + interval);
        let Some(local_ivo) = self.local_ivo.clone() else {
            return;
        };
        if self.feeds() == 0 {
            return;
        }
        let ts = self.stamp(now);
        let frame = message::build_test_event(&local_ivo, ts.as_str(), &self.config.product);
        let frame = self.sign_own(frame);
        let payload = frame.slice(frame::PREFIX_LEN..);
        // Test events skip the handlers and the store (Comet) and go through filters. They do
        // enter the seen-index: in a cyclic mesh our own test event comes back through a
        // downstream broker, and must not be relayed (and handled) a second time.
        match message::parse(&payload, &self.config.limits.parse) {
            Ok(Message::VoEvent(ev)) => {
                let key = EventKey::of_element(&payload[ev.element.clone()]);
                let unix = self.clock.unix_secs_at(now);
                let seen = self.seen.check_and_insert(key, unix, SeenSource::Local);
                if let Seen::New { evicted: Some(old) } = seen {
                    self.actions.push_back(Action::Forget(old));
                }
                self.note_seen_level();
                self.fan_out(&frame, &payload, ev.element.clone());
            }
            Ok(Message::Transport(_)) | Err(_) => {
                debug_assert!(false, "test event must parse as a VOEvent");
            }
        }
    }
}

/// A new event, as accepted: what its delivery and its [`Event::Accepted`] carry.
#[derive(Debug)]
pub(super) struct Accepted {
    pub(super) source: Source,
    pub(super) ivorn: Arc<str>,
    pub(super) key: EventKey,
    pub(super) role: EventRole,
    pub(super) signature: Option<Arc<Signature>>,
    pub(super) spans: Option<Arc<crate::summary::Spans>>,
}

impl Accepted {
    /// The delivery of this event, whose framed bytes are `frame`: the payload shares them.
    fn delivery(&self, frame: &Bytes) -> Delivery {
        Delivery {
            ivorn: self.ivorn.clone(),
            key: self.key,
            payload: frame.slice(frame::PREFIX_LEN..),
            source: self.source.clone(),
            role: self.role,
            signature: self.signature.clone(),
            spans: self.spans.clone(),
        }
    }
}
