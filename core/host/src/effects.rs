//! The effects every runtime hands to its driver: the durable seen-index, the event handlers,
//! logging, and an optional callback for embedding programs.

use std::time::Duration;

use vtp_core::driver::{Effects, StoreOp};
use vtp_core::{ConnId, Delivery, Event, EventKey};

use crate::handlers::Handlers;
use crate::store::{SendError, StoreWorker};

/// A callback that sees every node event (after it is logged).
pub type EventHook = Box<dyn FnMut(&Event) + Send>;
/// A callback that sees every accepted event, on the event loop: it must not block.
pub type DeliveryHook = Box<dyn FnMut(&Delivery) + Send>;

/// Store + handlers + logs: the [`Effects`] of the `vtp` binary and of embedding programs.
#[derive(Default)]
pub struct HostEffects {
    store: Option<StoreWorker>,
    handlers: Option<Handlers>,
    on_event: Option<EventHook>,
    on_delivery: Option<DeliveryHook>,
    store_dropped: u64,
}

impl std::fmt::Debug for HostEffects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostEffects")
            .field("store", &self.store.is_some())
            .field("handlers", &self.handlers.is_some())
            .field("store_dropped", &self.store_dropped)
            .finish_non_exhaustive()
    }
}

impl HostEffects {
    /// Effects that only log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Persist the seen-index through this worker.
    pub fn with_store(mut self, store: StoreWorker) -> Self {
        self.store = Some(store);
        self
    }

    /// Run these handlers on every accepted event.
    pub fn with_handlers(mut self, handlers: Handlers) -> Self {
        self.handlers = Some(handlers);
        self
    }

    /// Call `hook` with every node event.
    pub fn on_event(mut self, hook: impl FnMut(&Event) + Send + 'static) -> Self {
        self.on_event = Some(Box::new(hook));
        self
    }

    /// Call `hook` with every accepted event (on the loop: keep it short).
    pub fn on_delivery(mut self, hook: impl FnMut(&Delivery) + Send + 'static) -> Self {
        self.on_delivery = Some(Box::new(hook));
        self
    }

    /// Flushes the store (every queued record committed) and lets handlers finish queued work
    /// for up to `grace`. Call at shutdown, after the runtime returned.
    pub fn finish(self, grace: Duration) {
        if let Some(store) = self.store
            && let Err(e) = store.flush_and_stop()
        {
            tracing::error!("seen-index store: final commit failed: {e}");
        }
        if let Some(h) = self.handlers
            && !h.shutdown(grace)
        {
            tracing::warn!("event handlers still running after {grace:?}; not waiting");
        }
    }
}

impl Effects for HostEffects {
    fn store(&mut self, op: StoreOp) {
        let Some(store) = &mut self.store else {
            return;
        };
        match store.send(op) {
            Ok(_) => {}
            Err(SendError::Full) => {
                self.store_dropped += 1;
                tracing::warn!(
                    dropped = self.store_dropped,
                    "seen-index store is {} behind; record not persisted (in-memory dedup still holds)",
                    "too far"
                );
            }
            Err(e) => tracing::error!("seen-index store: {e}"),
        }
    }

    fn deliver(&mut self, delivery: Delivery) {
        if let Some(hook) = &mut self.on_delivery {
            hook(&delivery);
        }
        if let Some(h) = &self.handlers
            && !h.dispatch(delivery)
        {
            tracing::warn!("handler queue full: event not passed to handlers");
        }
    }

    fn duplicate(&mut self, conn: ConnId, key: EventKey) {
        tracing::debug!(%conn, key = %key, "duplicate event dropped");
    }

    fn event(&mut self, event: Event) {
        log_event(&event);
        if let Some(hook) = &mut self.on_event {
            hook(&event);
        }
    }
}

/// Logs a node event at the level it deserves.
pub fn log_event(e: &Event) {
    use tracing::{debug, info, warn};
    match e {
        Event::PeerUp { conn, role } => debug!(%conn, ?role, "connection up"),
        Event::PeerDown { conn, role, reason } => debug!(%conn, ?role, %reason, "connection down"),
        Event::Refused {
            listener,
            peer,
            reason,
        } => warn!(?listener, ?peer, "refused: {reason}"),
        Event::UnixPeerNotWhitelisted { conn } => {
            debug!(%conn, "Unix-socket peer accepted without IP whitelist check")
        }
        Event::Accepted { conn, ivorn, .. } => info!(%conn, "accepted event {ivorn}"),
        Event::Rejected { conn, reason } => info!(%conn, "nak sent: {reason}"),
        Event::Duplicate { conn, key } => debug!(%conn, key = %key, "duplicate"),
        Event::FiltersSet {
            conn,
            accepted,
            refused,
        } => {
            info!(%conn, accepted, "subscriber filters set");
            for (expr, why) in refused {
                warn!(%conn, "subscriber filter {expr:?} refused: {why}");
            }
        }
        Event::SubscriberNak {
            conn,
            origin,
            reason,
        } => info!(%conn, "subscriber nak'd {origin}: {}", reason.as_deref().unwrap_or("")),
        Event::ProtocolViolation { conn, detail } => info!(%conn, "protocol violation: {detail}"),
        Event::SubmissionAcked { conn } => info!(%conn, "event acknowledged"),
        Event::SubmissionNaked { conn, reason } => {
            warn!(%conn, "event refused: {}", reason.as_deref().unwrap_or("(no reason given)"))
        }
        Event::SubmissionFailed { conn, reason } => warn!(%conn, "submission failed: {reason}"),
        Event::Reconnecting {
            upstream,
            endpoint,
            delay,
        } => info!(
            upstream,
            "reconnecting to {endpoint} in {:.1} s",
            delay.as_secs_f64()
        ),
        Event::Pruned { removed } => info!(removed, "expired seen-index entries pruned"),
        other => debug!("{other:?}"),
    }
}
