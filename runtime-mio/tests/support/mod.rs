//! Helpers for the mio runtime tests: a one-shot shutdown future built from std, effects that
//! report to the test over channels, a node running `vtp_mio::run` on its own thread, and a raw
//! author over std sockets (the raw subscriber is `vtp_host::testing`'s). Every wait has a deadline;
//! nothing sleeps.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::disallowed_methods
)]

use std::future::Future;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use vtp_core::driver::{Effects, StoreOp};
use vtp_core::endpoint::ListenAddr;
use vtp_core::filter::NoFilterEngine;
use vtp_core::{Config, Delivery, Event, ListenerRole, Node};
#[allow(unused_imports)] // Each test binary uses its own subset.
pub use vtp_host::testing::{RawSubscriber, WAIT};
use vtp_mio::{Bound, Options};

/// A one-shot signal: `fire` completes every future from `wait`, waking the task that polls it.
#[derive(Clone, Default)]
pub struct Stop(Arc<Mutex<(bool, Option<Waker>)>>);

impl Stop {
    pub fn fire(&self) {
        let mut g = self.0.lock().unwrap();
        g.0 = true;
        if let Some(w) = g.1.take() {
            w.wake();
        }
    }

    pub fn wait(&self) -> impl Future<Output = ()> + use<> {
        self.clone()
    }
}

impl Future for Stop {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut g = self.0.lock().unwrap();
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
/// optionally fire a [`Stop`] on the first event matching a predicate.
pub struct Collect {
    pub deliveries: mpsc::Sender<Delivery>,
    pub events: mpsc::Sender<Event>,
    pub stored: usize,
    pub stop_when: Option<StopWhen>,
}

impl Effects for Collect {
    fn store(&mut self, op: StoreOp) {
        if matches!(op, StoreOp::Persist(_)) {
            self.stored += 1;
        }
    }
    fn deliver(&mut self, d: Delivery) {
        let _ = self.deliveries.send(d);
    }
    fn event(&mut self, e: Event) {
        if let Some((stop, when)) = &self.stop_when
            && when(&e)
        {
            stop.fire();
        }
        let _ = self.events.send(e);
    }
}

/// The receiving ends of a [`Collect`].
pub struct Reports {
    pub deliveries: mpsc::Receiver<Delivery>,
    pub events: mpsc::Receiver<Event>,
}

impl Reports {
    /// Waits for an event matching `f`; panics after [`WAIT`].
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

pub fn collect(stop_when: Option<StopWhen>) -> (Collect, Reports) {
    let (dtx, drx) = mpsc::channel();
    let (etx, erx) = mpsc::channel();
    let fx = Collect {
        deliveries: dtx,
        events: etx,
        stored: 0,
        stop_when,
    };
    let reports = Reports {
        deliveries: drx,
        events: erx,
    };
    (fx, reports)
}

pub fn node(local_ivo: Option<&str>) -> Node {
    let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let mut config = Config::new(local_ivo.map(str::to_owned));
    config.timing.test_event_interval = None;
    Node::new(config, Box::new(NoFilterEngine), 1, Instant::now(), unix).unwrap()
}

pub fn bind(endpoints: &[(ListenerRole, &str)]) -> Bound {
    let eps: Vec<_> = endpoints
        .iter()
        .map(|(r, a)| (*r, ListenAddr::parse(a).unwrap()))
        .collect();
    vtp_mio::bind(&eps).unwrap()
}

/// A broker running `vtp_mio::run` on its own thread.
pub struct Running {
    pub stop: Stop,
    pub reports: Reports,
    pub handle: JoinHandle<io::Result<Collect>>,
}

impl Running {
    pub fn start(bound: Bound, options: Options) -> Self {
        let (fx, reports) = collect(None);
        let stop = Stop::default();
        let wait = stop.wait();
        let node = node(Some("ivo://vtp.test/mio"));
        let handle = std::thread::spawn(move || vtp_mio::run(node, bound, fx, wait, options));
        Self {
            stop,
            reports,
            handle,
        }
    }

    /// Fires the shutdown signal and returns the effects `run` handed back.
    pub fn stop(self) -> Collect {
        self.stop.fire();
        self.handle.join().unwrap().unwrap()
    }
}

/// A VOEvent with `pad` bytes of description text.
pub fn event_xml(ivorn: &str, pad: usize) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <voe:VOEvent xmlns:voe=\"http://www.ivoa.net/xml/VOEvent/v2.0\"\n \
         ivorn=\"{ivorn}\" role=\"observation\" version=\"2.0\">\n  \
         <Who><AuthorIVORN>ivo://vtp.test/author</AuthorIVORN></Who>\n  \
         <Description>{}</Description>\n\
         </voe:VOEvent>\n",
        "x".repeat(pad)
    )
    .into_bytes()
}

/// Submits `payload` on `s` and returns the receipt's role (`ack` or `nak`).
pub fn submit_raw(s: impl Read + Write, payload: &[u8]) -> String {
    vtp_host::testing::submit(s, payload).0
}
