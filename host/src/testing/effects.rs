//! Effects that report to the test, and a one-shot shutdown signal built from std.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use vtp_core::driver::{Effects, StoreOp};
use vtp_core::{Delivery, Event};

use super::WAIT;

/// A one-shot signal: [`Stop::fire`] completes every future from [`Stop::wait`], waking the
/// task that polls it. Any runtime can wait on it (it is a plain [`Future`]); any thread can
/// fire it.
#[derive(Clone, Debug, Default)]
pub struct Stop(Arc<Mutex<(bool, Option<Waker>)>>);

impl Stop {
    /// Completes every future from [`Stop::wait`], now and later.
    pub fn fire(&self) {
        let mut g = self.lock();
        g.0 = true;
        if let Some(w) = g.1.take() {
            w.wake();
        }
    }

    /// A future that completes once the signal fires.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + use<> {
        self.clone()
    }

    fn lock(&self) -> MutexGuard<'_, (bool, Option<Waker>)> {
        // Nothing can panic while the lock is held.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Future for Stop {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut g = self.lock();
        if g.0 {
            Poll::Ready(())
        } else {
            g.1 = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

/// Fire this stop on the first event matching the predicate.
pub type StopWhen = (Stop, fn(&Event) -> bool);

/// Effects that forward deliveries and events to the test, count persisted records, and
/// optionally fire a [`Stop`] on the first event matching a predicate. Made by [`collect`].
#[derive(Debug)]
pub struct Collect {
    /// Where deliveries go ([`Reports::deliveries`]).
    pub deliveries: mpsc::Sender<Delivery>,
    /// Where events go ([`Reports::events`]).
    pub events: mpsc::Sender<Event>,
    /// How many records the node asked to persist.
    pub stored: usize,
    /// Fired on the first matching event.
    pub stop_when: Option<StopWhen>,
    /// Where external sources' commits go, if the test has any.
    pub commits: Option<crate::external::Commits>,
}

impl Effects for Collect {
    fn store(&mut self, op: StoreOp) {
        if matches!(op, StoreOp::Persist(_)) {
            self.stored += 1;
        }
    }

    fn deliver(&mut self, delivery: Delivery) {
        let _ = self.deliveries.send(delivery);
    }

    fn commit(&mut self, conn: vtp_core::ConnId, lane: u32, next_offset: u64) {
        if let Some(c) = &self.commits {
            c.commit(conn, lane, next_offset);
        }
    }

    fn event(&mut self, event: Event) {
        if let Some((stop, when)) = &self.stop_when
            && when(&event)
        {
            stop.fire();
        }
        let _ = self.events.send(event);
    }
}

/// The receiving ends of a [`Collect`].
#[derive(Debug)]
pub struct Reports {
    /// Every delivery, in order.
    pub deliveries: mpsc::Receiver<Delivery>,
    /// Every event, in order.
    pub events: mpsc::Receiver<Event>,
}

impl Reports {
    /// Waits for an event matching `f`, skipping the others.
    ///
    /// # Panics
    ///
    /// If none comes within [`WAIT`].
    pub fn wait_event(&self, what: &str, f: impl Fn(&Event) -> bool) -> Event {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) if f(&e) => return e,
                Ok(_) => {}
                Err(e) => panic!("no {what} event: {e}"),
            }
        }
    }
}

/// Effects for a node under test and the test's ends of them; `stop_when` fires a stop on the
/// first matching event.
pub fn collect(stop_when: Option<StopWhen>) -> (Collect, Reports) {
    let (dtx, drx) = mpsc::channel();
    let (etx, erx) = mpsc::channel();
    let fx = Collect {
        deliveries: dtx,
        events: etx,
        stored: 0,
        stop_when,
        commits: None,
    };
    let reports = Reports {
        deliveries: drx,
        events: erx,
    };
    (fx, reports)
}
