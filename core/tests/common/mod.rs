//! Test harness: one node driven with virtual time, outputs collected for assertions.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod tsv;

use std::time::{Duration, Instant};

use bytes::Bytes;
use vtp_core::config::Upstream;
use vtp_core::endpoint::{DialAddr, PORT_SUBSCRIBE};
use vtp_core::filter::FilterEngine;
use vtp_core::message::{self, Message, Transport};
pub use vtp_core::testing::SubstringEngine;
use vtp_core::{Action, Config, ConnId, Event, ListenerRole, Node, Peer};

pub const LOCAL: &str = "ivo://example.org/broker";
/// Where [`Harness::accept`]'s peers connect from.
pub const PEER: &str = "127.0.0.1:40000";

/// The TCP peer at [`PEER`].
pub fn peer() -> Peer {
    Peer::Tcp(PEER.parse().unwrap())
}
/// Wall-clock anchor: 2024-05-01T12:00:00Z.
pub const UNIX0: u64 = 1_714_564_800;

/// The origin of virtual time. An `Instant` can only be obtained from the clock; every other
/// instant in the tests is this one plus a duration.
#[allow(clippy::disallowed_methods)]
pub fn origin() -> Instant {
    Instant::now()
}

/// A minimal VOEvent 2.0 document by `ivo://example.org/survey`.
pub fn event_xml(ivorn: &str) -> Vec<u8> {
    vtp_testkit::voevent(ivorn, "ivo://example.org/survey")
}

pub fn framed(payload: &[u8]) -> Bytes {
    vtp_core::frame::encode(payload).expect("test payload fits a frame")
}

/// Parses a framed Transport message.
pub fn transport(frame: &Bytes) -> Transport<'_> {
    match message::parse(&frame[4..], &Default::default()).expect("our own output parses") {
        Message::Transport(t) => t,
        other => panic!("expected Transport, got {other:?}"),
    }
}

/// A broker's configuration: [`LOCAL`], no test events.
pub fn broker_config() -> Config {
    let mut c = Config::new(Some(LOCAL.into()));
    c.timing.test_event_interval = None;
    c
}

/// [`broker_config`] with one upstream broker to subscribe to.
pub fn upstream_config() -> Config {
    let mut c = broker_config();
    c.upstreams = vec![Upstream {
        endpoints: vec![DialAddr::tcp("127.0.0.1", PORT_SUBSCRIBE)],
    }];
    c
}

pub struct Harness {
    pub node: Node,
    pub t0: Instant,
    pub now: Instant,
    pub actions: Vec<Action>,
    pub events: Vec<Event>,
    /// Report every `Persist` durable as soon as it is drained (a store that commits at once).
    /// Turn off to drive durability by hand with [`Harness::persisted`].
    pub auto_persist: bool,
}

impl Harness {
    pub fn new(config: Config) -> Self {
        Self::with_engine(config, Box::new(SubstringEngine::default()))
    }

    pub fn with_engine(config: Config, engine: Box<dyn FilterEngine + Send>) -> Self {
        let t0 = origin();
        let node = Node::new(config, engine, 42, t0, Duration::from_secs(UNIX0)).expect("config");
        let mut h = Self {
            node,
            t0,
            now: t0,
            actions: Vec::new(),
            events: Vec::new(),
            auto_persist: true,
        };
        h.drain();
        h
    }

    pub fn broker() -> Self {
        Self::new(broker_config())
    }

    /// Starts a node configured with one upstream ([`upstream_config`]): runs the timers due at
    /// time 0, completes the dial to the upstream and accepts a feed; returns the upstream
    /// subscription and the feed, with the outputs so far taken.
    pub fn connect_upstream_and_feed(&mut self) -> (ConnId, ConnId) {
        self.run_until(0.0);
        let upstream = self
            .take()
            .iter()
            .find_map(|a| match a {
                Action::Connect { conn, .. } => Some(*conn),
                _ => None,
            })
            .expect("the broker dials its upstream at start");
        self.node.handle_connected(upstream, self.now);
        let feed = self.accept(ListenerRole::Broadcast);
        self.take();
        (upstream, feed)
    }

    /// Collects every pending output into `actions` / `events` (appending). With
    /// `auto_persist`, every persist drained is reported durable and what it released drained.
    pub fn drain(&mut self) {
        loop {
            while let Some(a) = self.node.poll_action() {
                self.actions.push(a);
            }
            if !self.auto_persist || self.node.held() == 0 {
                break;
            }
            self.node.handle_persisted(self.node.persists(), self.now);
        }
        while let Some(e) = self.node.poll_event() {
            self.events.push(e);
        }
    }

    /// Reports the first `count` persists durable and collects what that released.
    pub fn persisted(&mut self, count: u64) {
        self.node.handle_persisted(count, self.now);
        self.drain();
    }

    /// Returns and clears the collected actions.
    pub fn take(&mut self) -> Vec<Action> {
        self.drain();
        self.events.clear();
        std::mem::take(&mut self.actions)
    }

    pub fn accept(&mut self, role: ListenerRole) -> ConnId {
        let c = self
            .node
            .handle_accept(role, peer(), self.now)
            .expect("accepted");
        self.drain();
        c
    }

    pub fn input(&mut self, conn: ConnId, bytes: &[u8]) {
        self.node.handle_input(conn, bytes, self.now);
        self.drain();
    }

    /// Advances virtual time to `t0 + secs`, firing every timer on the way, in order.
    pub fn run_until(&mut self, secs: f64) {
        let target = self.t0 + Duration::from_secs_f64(secs);
        loop {
            self.drain();
            match self.node.poll_timeout() {
                Some(t) if t <= target => {
                    let t = t.max(self.now);
                    self.now = t;
                    self.node.handle_timeout(t);
                }
                _ => break,
            }
        }
        self.now = target;
        self.node.handle_timeout(target);
        self.drain();
    }

    pub fn elapsed(&self) -> f64 {
        (self.now - self.t0).as_secs_f64()
    }
}

/// Frames written to `conn`, in order.
pub fn frames_to(actions: &[Action], conn: ConnId) -> Vec<Bytes> {
    actions
        .iter()
        .filter_map(|a| a.frame())
        .filter(|(c, _)| *c == conn)
        .map(|(_, f)| f.clone())
        .collect()
}

pub fn closed(actions: &[Action], conn: ConnId) -> Option<&vtp_core::CloseReason> {
    actions.iter().find_map(|a| match a {
        Action::Close { conn: c, reason } if *c == conn => Some(reason),
        _ => None,
    })
}

pub fn forwards(actions: &[Action]) -> Vec<ConnId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Forward { conn, .. } => Some(*conn),
            _ => None,
        })
        .collect()
}

pub fn deliveries(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Deliver(_)))
        .count()
}
