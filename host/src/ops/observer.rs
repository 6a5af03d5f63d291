//! The loop's side of the metrics: counts what the node reports.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::task::Waker;
use std::time::Duration;

use vtp_core::signature::StatusKind;
use vtp_core::{CloseReason, ConnId, ConnRole, Event, RefusalCause, Violation};

use super::board::{Change, Pending, Subscriber, UpstreamState, UpstreamStatus};
use super::{Shared, nak_index, unix_ms_now};

/// Counts the node's events into a [`Metrics`](super::Metrics); owned by the event loop (see
/// the [module docs](super)). Every method is cheap and none waits for another thread.
pub struct Observer {
    shared: Arc<Shared>,
    /// Open connections (once up): their role and, for a subscription, its upstream.
    conns: HashMap<ConnId, (ConnRole, Option<usize>)>,
    /// Identities of TLS peers secured but not up yet.
    identities: HashMap<ConnId, String>,
    /// The upstream of the last [`Event::Reconnecting`]: the node reports it just before the
    /// [`Event::PeerDown`] of the subscription that ended, which names no upstream when it
    /// was never up (a failed dial).
    /// Forwards counted since the last publication.
    forwards: u64,
    pending: Pending,
}

impl Observer {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            conns: HashMap::new(),
            identities: HashMap::new(),
            forwards: 0,
            pending: Pending::default(),
        }
    }

    /// Counts one node event.
    pub fn observe(&mut self, event: &Event) {
        let c = &self.shared.counters;
        match event {
            Event::PeerUp {
                conn,
                role,
                remote,
                upstream,
            } => self.up(*conn, *role, remote.peer(), *upstream),
            Event::PeerDown { conn, reason, .. } => self.down(*conn, reason),
            Event::Secured {
                conn,
                identity: Some(id),
                ..
            } => {
                self.identities.insert(*conn, id.to_string());
            }
            Event::Reconnecting {
                upstream,
                endpoint,
                delay,
                reason,
                ..
            } => self.retrying(*upstream, endpoint, *delay, reason),
            Event::Accepted {
                conn, signature, ..
            } => {
                if let Some(s) = signature {
                    add(&c.signatures[status_index(s.status)], 1);
                }
                if let Some(source) = self.source(*conn) {
                    add(&c.accepted[source], 1);
                    add(&c.received[source], 1);
                }
                let now = unix_ms_now();
                c.last_event_unix_ms.store(now, Ordering::Relaxed);
                self.shared.minutes.record(now);
            }
            Event::Duplicate { conn, .. } => {
                if let Some(source) = self.source(*conn) {
                    add(&c.duplicates[source], 1);
                    add(&c.received[source], 1);
                }
            }
            Event::Rejected { reason, .. } => {
                self.refused_signature(reason);
                self.nak(reason.kind());
            }
            Event::ExternalSkipped { reason, .. } => {
                self.refused_signature(reason);
                add(&c.external_skipped[nak_index(reason.kind())], 1);
                add(&c.received[2], 1);
            }
            Event::ProtocolViolation { conn, detail } => self.violation(*conn, detail),
            Event::Refused { cause, .. } => {
                if let Some(i) = RefusalCause::ALL.iter().position(|c| c == cause) {
                    add(&c.refusals[i], 1);
                }
            }
            Event::RefusalsSuppressed { counts, .. } => {
                for (i, cause) in RefusalCause::ALL.into_iter().enumerate() {
                    add(&c.refusals[i], counts.of(cause));
                }
            }
            Event::FiltersSet { conn, filters, .. } => {
                self.pending.push(Change::Filters(*conn, filters.clone()));
                self.flush();
            }
            Event::SubscriberNak { .. } => add(&c.subscriber_naks, 1),
            _ => {}
        }
    }

    /// Counts one event queued for a subscriber.
    pub fn forwarded(&mut self) {
        self.forwards += 1;
    }

    /// Counts one event handed to the handlers.
    pub fn delivered(&mut self) {
        add(&self.shared.counters.handler_deliveries, 1);
    }

    /// The loop turned: publishes the forwards counted and the time, and applies board
    /// changes that found the board busy.
    pub fn heartbeat(&mut self) {
        let c = &self.shared.counters;
        if self.forwards > 0 {
            add(&c.forwards, std::mem::take(&mut self.forwards));
        }
        let nanos = u64::try_from(self.shared.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        c.heartbeat_nanos.store(nanos, Ordering::Release);
        c.turns.fetch_add(1, Ordering::AcqRel);
        self.flush();
    }

    /// Keeps the loop's waker, for [`Metrics::wake_loop`](super::Metrics::wake_loop).
    pub fn set_waker(&mut self, waker: &Waker) {
        let mut slot = self
            .shared
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *slot = Some(waker.clone());
    }

    fn up(
        &mut self,
        conn: ConnId,
        role: ConnRole,
        peer: Option<vtp_core::Peer>,
        upstream: Option<usize>,
    ) {
        let identity = self.identities.remove(&conn);
        self.conns.insert(conn, (role, upstream));
        add(&self.shared.counters.connections[role_index(role)], 1);
        let now = unix_ms_now();
        match role {
            ConnRole::Feed => self.pending.push(Change::Subscribed(Subscriber {
                conn,
                peer,
                identity,
                filters: Vec::new(),
                since_unix_ms: now,
            })),
            ConnRole::Subscription => {
                let Some(i) = upstream else { return };
                if let Some(u) = self.shared.upstreams.get(i) {
                    u.up.store(1, Ordering::Relaxed);
                }
                self.pending.push(Change::Upstream(
                    i,
                    UpstreamStatus {
                        state: UpstreamState::Up,
                        since_unix_ms: now,
                        ..UpstreamStatus::default()
                    },
                ));
            }
            ConnRole::Intake | ConnRole::Submission | ConnRole::External => return,
        }
        self.flush();
    }

    fn down(&mut self, conn: ConnId, reason: &CloseReason) {
        self.identities.remove(&conn);
        // Never up (a failed dial, a refused handshake): nothing to count. An upstream's
        // reason reaches its status with the retry the node reports right after.
        let Some((role, upstream)) = self.conns.remove(&conn) else {
            return;
        };
        sub(&self.shared.counters.connections[role_index(role)], 1);
        match (role, upstream) {
            (ConnRole::Feed, _) => self.pending.push(Change::Unsubscribed(conn)),
            (ConnRole::Subscription, Some(i)) => {
                if let Some(u) = self.shared.upstreams.get(i) {
                    u.up.store(0, Ordering::Relaxed);
                }
                self.pending
                    .push(Change::UpstreamError(i, reason.to_string()));
            }
            _ => return,
        }
        self.flush();
    }

    fn retrying(
        &mut self,
        upstream: usize,
        endpoint: &Arc<str>,
        delay: Duration,
        reason: &CloseReason,
    ) {
        let Some(u) = self.shared.upstreams.get(upstream) else {
            return;
        };
        add(&u.reconnects, 1);
        let now = unix_ms_now();
        let retry_at = now.saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        self.pending.push(Change::Upstream(
            upstream,
            UpstreamStatus {
                state: UpstreamState::Retrying,
                since_unix_ms: now,
                last_error: Some(reason.to_string()),
                next_endpoint: Some(Arc::clone(endpoint)),
                retry_at_unix_ms: Some(retry_at),
            },
        ));
        self.flush();
    }

    /// 0 for an author's event, 1 for an upstream's, 2 for an external source's (the index
    /// into `SOURCES`); also notes
    /// the upstream's last event.
    fn source(&self, conn: ConnId) -> Option<usize> {
        match self.conns.get(&conn) {
            Some((ConnRole::Intake, _)) => Some(0),
            Some((ConnRole::Subscription, upstream)) => {
                if let Some(u) = upstream.and_then(|i| self.shared.upstreams.get(i)) {
                    u.last_event_unix_ms.store(unix_ms_now(), Ordering::Relaxed);
                }
                Some(1)
            }
            Some((ConnRole::External, _)) => Some(2),
            _ => None,
        }
    }

    fn nak(&self, reason: &str) {
        let c = &self.shared.counters;
        add(&c.naks[nak_index(reason)], 1);
        add(&c.received[0], 1);
    }

    /// Counts an event refused for its signature (`--signatures require`), by its status.
    fn refused_signature(&self, reason: &Violation) {
        if let Violation::Signature { signature, .. } = reason {
            add(
                &self.shared.counters.signatures_refused[status_index(signature.status)],
                1,
            );
        }
    }

    fn violation(&self, conn: ConnId, detail: &Violation) {
        let c = &self.shared.counters;
        add(&c.violations, 1);
        self.refused_signature(detail);
        match (self.conns.get(&conn).map(|(role, _)| role), detail) {
            // A framing error on an intake is naked without a `Rejected` event.
            (Some(ConnRole::Intake), Violation::Frame(_)) => self.nak(detail.kind()),
            // An upstream's invalid event: acked and dropped.
            (
                Some(ConnRole::Subscription),
                Violation::BadIvorn { .. } | Violation::SeenQuota | Violation::Signature { .. },
            ) => {
                add(&c.upstream_invalid, 1);
                add(&c.received[1], 1);
            }
            _ => {}
        }
    }

    fn flush(&mut self) {
        self.pending.flush(&self.shared.board);
    }
}

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observer")
            .field("conns", &self.conns.len())
            .field("forwards", &self.forwards)
            .finish_non_exhaustive()
    }
}

/// The index of `role` in [`ROLES`](super::ROLES).
fn role_index(role: ConnRole) -> usize {
    match role {
        ConnRole::Intake => 0,
        ConnRole::Feed => 1,
        ConnRole::Subscription => 2,
        ConnRole::Submission => 3,
        ConnRole::External => 4,
    }
}

/// Adds to a counter only the loop writes.
fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn sub(counter: &AtomicU64, n: u64) {
    counter.fetch_sub(n, Ordering::Relaxed);
}

/// The index of a signature status in [`StatusKind::ALL`] (the metrics' order).
fn status_index(status: StatusKind) -> usize {
    StatusKind::ALL
        .iter()
        .position(|s| *s == status)
        .unwrap_or(0)
}
