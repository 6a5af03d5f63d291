//! Model-based property tests of the node: random transitions against a small reference model.
//!
//! A broker with one upstream subscription is driven by random transitions: subscribers
//! connect, set filters, answer (or not) and leave; authors submit events (some duplicates,
//! arbitrarily chunked); the upstream relays events and keep-alives; idle authors connect;
//! virtual time advances through every deadline. A reference model, a few dozen lines of
//! plain rules written from docs/protocol.md rather than from the node's code, predicts for each
//! transition the exact multiset of actions (who gets an ack, a forward, an iamalive or a
//! close, and why), and the node's counters. Any difference fails with the minimal sequence
//! of transitions proptest can find.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::Index;
use vtp_core::config::Upstream;
use vtp_core::endpoint::{DialAddr, PORT_SUBSCRIBE};
use vtp_core::testing::SubstringEngine;
use vtp_core::{Action, CloseReason, Config, ConnId, ListenerRole, Node, Peer};

const LOCAL: &str = "ivo://example.org/broker";
const UPSTREAM: &str = "ivo://example.org/upstream";
const TRN_NS: &str = "http://www.telescope-networks.org/xml/Transport/v1.1";
const FILTERS: [&str; 3] = ["has:tag:grb", "has:tag:gw", "bad filter"];
const TICK: Duration = Duration::from_secs(60);
const SILENCE: Duration = Duration::from_secs(120);
const INTAKE_DEADLINE: Duration = Duration::from_secs(20);
const PRUNE: Duration = Duration::from_secs(6 * 3600);

// ----------------------------------------------------------------------------- transitions

/// How a byte stream is cut into reads.
#[derive(Debug, Clone)]
struct Cuts(Vec<Index>);

#[derive(Debug, Clone)]
enum Transition {
    OpenFeed,
    SetFilters(Index, Vec<usize>),
    FeedIamAlive(Index),
    FeedAcks(Index, usize),
    FeedNak(Index),
    FeedJunk(Index),
    FeedBadPrefix(Index),
    CloseFeed(Index),
    Submit(u8, Cuts),
    /// Several authors submit events `first..first + n` one after the other.
    Burst(u8, u8),
    IdleIntake,
    UpstreamEvent(u8, Cuts),
    UpstreamIamAlive,
    Advance(u16),
}

fn transition() -> impl Strategy<Value = Transition> {
    let cuts = || prop::collection::vec(any::<Index>(), 0..6).prop_map(Cuts);
    prop_oneof![
        3 => Just(Transition::OpenFeed),
        2 => (any::<Index>(), prop::collection::vec(0..FILTERS.len(), 0..3))
            .prop_map(|(i, f)| Transition::SetFilters(i, f)),
        3 => any::<Index>().prop_map(Transition::FeedIamAlive),
        2 => (any::<Index>(), 1usize..5).prop_map(|(i, n)| Transition::FeedAcks(i, n)),
        2 => any::<Index>().prop_map(Transition::FeedNak),
        1 => any::<Index>().prop_map(Transition::FeedJunk),
        1 => any::<Index>().prop_map(Transition::FeedBadPrefix),
        1 => any::<Index>().prop_map(Transition::CloseFeed),
        6 => (0u8..32, cuts()).prop_map(|(id, c)| Transition::Submit(id, c)),
        1 => (0u8..32, 1u8..14).prop_map(|(first, n)| Transition::Burst(first, n)),
        1 => Just(Transition::IdleIntake),
        4 => (0u8..32, cuts()).prop_map(|(id, c)| Transition::UpstreamEvent(id, c)),
        2 => Just(Transition::UpstreamIamAlive),
        4 => (0u16..200).prop_map(Transition::Advance),
    ]
}

// ------------------------------------------------------------------------- the model

/// What a subscriber asked for.
#[derive(Debug, Clone, PartialEq)]
enum Wants {
    /// No filters: everything.
    All,
    /// Any of these substrings.
    Any(Vec<&'static str>),
    /// Every filter was refused: nothing (the default policy).
    Nothing,
}

#[derive(Debug)]
struct Feed {
    conn: ConnId,
    wants: Wants,
    unanswered: u32,
    /// Events sent, receipts received, and `sent` at the previous tick: an event is overdue
    /// when it was sent before the previous tick and receipts have not caught up with it.
    sent: u64,
    receipts: u64,
    sent_at_tick: u64,
}

impl Feed {
    fn overdue(&self) -> u64 {
        self.sent_at_tick.saturating_sub(self.receipts)
    }
}

/// An action as the model predicts it: who, what, and for forwards and deliveries, which event.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Act {
    Ack(ConnId),
    Nak(ConnId),
    IamAlive(ConnId),
    Authenticate(ConnId),
    Forward(ConnId, u8),
    Close(ConnId, String),
    DropDuplicate(ConnId),
    Persist,
    Forget,
    Expire,
    Deliver(u8),
    Connect(ConnId),
    Other(String),
}

/// The reference model: docs/protocol.md's rules for a broker with one upstream.
#[derive(Debug)]
struct Model {
    t0: Instant,
    feeds: Vec<Feed>,
    idle_intakes: Vec<(ConnId, Instant)>,
    /// The subscription and its silence deadline; `None` while reconnecting.
    upstream: Option<(ConnId, Instant)>,
    seen: BTreeSet<u8>,
    ticks: u32,
    prunes: u32,
}

impl Model {
    fn next_tick(&self) -> Instant {
        self.t0 + TICK * (self.ticks + 1)
    }

    fn next_prune(&self) -> Instant {
        self.t0 + PRUNE * self.prunes
    }

    /// A new event `id` arrives (from an author or the upstream): forwards and delivery.
    fn accept(&mut self, id: u8, out: &mut Vec<Act>) -> bool {
        if !self.seen.insert(id) {
            return false;
        }
        out.push(Act::Persist);
        for f in &mut self.feeds {
            let pass = match &f.wants {
                Wants::All => true,
                Wants::Any(texts) => texts.iter().any(|t| tags(id).contains(t)),
                Wants::Nothing => false,
            };
            if pass {
                f.sent += 1;
                out.push(Act::Forward(f.conn, id));
            }
        }
        out.push(Act::Deliver(id));
        true
    }

    /// Everything due at `t`, in any order; `None` if nothing the model knows of is due.
    fn due(&mut self, t: Instant) -> Option<Vec<Act>> {
        let mut out = Vec::new();
        let mut any = false;
        if t == self.next_tick() {
            any = true;
            self.ticks += 1;
            self.feeds.retain_mut(|f| {
                if f.unanswered >= 1 {
                    out.push(close(f.conn, &CloseReason::IamaliveUnanswered));
                    false
                } else if f.overdue() >= 10 {
                    let n = u32::try_from(f.overdue()).unwrap_or(u32::MAX);
                    out.push(close(f.conn, &CloseReason::OutstandingAcks(n)));
                    false
                } else {
                    f.unanswered += 1;
                    f.sent_at_tick = f.sent;
                    out.push(Act::IamAlive(f.conn));
                    true
                }
            });
        }
        self.idle_intakes.retain(|&(c, deadline)| {
            let due = deadline == t;
            if due {
                any = true;
                out.push(close(c, &CloseReason::IntakeDeadline));
            }
            !due
        });
        if let Some((c, deadline)) = self.upstream
            && deadline == t
        {
            any = true;
            out.push(close(c, &CloseReason::UpstreamSilent));
            self.upstream = None;
        }
        if t == self.next_prune() {
            any = true;
            self.prunes += 1;
            out.push(Act::Expire);
        }
        any.then_some(out)
    }

    fn filters(&self) -> usize {
        let mut distinct = BTreeSet::new();
        for f in &self.feeds {
            if let Wants::Any(texts) = &f.wants {
                distinct.extend(texts.iter().copied());
            }
        }
        distinct.len()
    }
}

fn close(conn: ConnId, reason: &CloseReason) -> Act {
    Act::Close(conn, format!("{reason:?}"))
}

/// The tags of event `id`: grb, gw, both or none.
fn tags(id: u8) -> &'static [&'static str] {
    match id % 4 {
        0 => &["tag:grb"],
        1 => &["tag:gw"],
        2 => &["tag:grb", "tag:gw"],
        _ => &[],
    }
}

// ------------------------------------------------------------------- system under test

fn event(id: u8) -> Vec<u8> {
    framed(&format!(
        "<voe:VOEvent xmlns:voe=\"http://www.ivoa.net/xml/VOEvent/v2.0\" \
         ivorn=\"ivo://example.org/survey#e{id}\" role=\"observation\" version=\"2.0\">\
         <What><Description>{}</Description></What></voe:VOEvent>",
        tags(id).join(" ")
    ))
}

fn transport(role: &str, origin: &str, meta: &str) -> Vec<u8> {
    framed(&format!(
        "<trn:Transport xmlns:trn=\"{TRN_NS}\" version=\"1.0\" role=\"{role}\">\
         <Origin>{origin}</Origin><TimeStamp>2024-05-01T12:00:00Z</TimeStamp>\
         <Meta>{meta}</Meta></trn:Transport>"
    ))
}

fn framed(payload: &str) -> Vec<u8> {
    vtp_core::frame::encode(payload.as_bytes())
        .unwrap()
        .to_vec()
}

fn split<'a>(bytes: &'a [u8], cuts: &Cuts) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.0.iter().map(|c| c.index(bytes.len() + 1)).collect();
    at.extend([0, bytes.len()]);
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
}

/// The event id in a framed VOEvent or a delivery's ivorn (`…#e7`).
fn event_id(bytes: &[u8]) -> u8 {
    let at = bytes
        .windows(2)
        .rposition(|w| w == b"#e")
        .expect("one of ours")
        + 2;
    let digits: String = bytes[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .map(|&b| char::from(b))
        .collect();
    digits.parse().expect("an event id")
}

fn normalise(a: Action) -> Act {
    match a {
        Action::Ack { conn, .. } => Act::Ack(conn),
        Action::Nak { conn, .. } => Act::Nak(conn),
        Action::IamAlive { conn, .. } => Act::IamAlive(conn),
        Action::Authenticate { conn, .. } => Act::Authenticate(conn),
        Action::Forward { conn, frame } => Act::Forward(conn, event_id(&frame)),
        Action::Close { conn, reason } => close(conn, &reason),
        Action::DropDuplicate { conn, .. } => Act::DropDuplicate(conn),
        Action::Persist(_) => Act::Persist,
        Action::Forget(_) => Act::Forget,
        Action::Expire { .. } => Act::Expire,
        Action::Deliver(d) => Act::Deliver(event_id(d.ivorn.as_bytes())),
        Action::Connect { conn, .. } => Act::Connect(conn),
        other => Act::Other(format!("{other:?}")),
    }
}

struct Sut {
    node: Node,
    now: Instant,
}

impl Sut {
    /// Every pending action, normalised; events are discarded.
    fn drain(&mut self) -> Vec<Act> {
        let mut out = Vec::new();
        while let Some(a) = self.node.poll_action() {
            out.push(normalise(a));
        }
        while self.node.poll_event().is_some() {}
        out
    }

    fn input(&mut self, conn: ConnId, bytes: &[u8], cuts: Option<&Cuts>) -> Vec<Act> {
        let chunks = match cuts {
            Some(c) => split(bytes, c),
            None => vec![bytes],
        };
        for chunk in chunks {
            self.node.handle_input(conn, chunk, self.now);
        }
        self.drain()
    }
}

fn sorted(mut v: Vec<Act>) -> Vec<Act> {
    v.sort();
    v
}

/// A broker subscribed to one upstream, after its start-up wake-up; and the matching model.
fn start() -> (Sut, Model) {
    #[allow(clippy::disallowed_methods)]
    let t0 = Instant::now();
    let mut c = Config::new(Some(LOCAL.into()));
    c.timing.test_event_interval = None;
    // The model covers the protocol; holding output until records are durable is covered by
    // core/tests/durability.rs and the simulator (which reports persists through its store).
    c.policy.durability = vtp_core::config::Durability::Async;
    c.upstreams = vec![Upstream {
        endpoints: vec![DialAddr::tcp("upstream.example.org", PORT_SUBSCRIBE)],
    }];
    let node = Node::new(
        c,
        Box::new(SubstringEngine::default()),
        1,
        t0,
        Duration::from_secs(1_714_564_800),
    )
    .unwrap();
    let mut sut = Sut { node, now: t0 };
    sut.node.handle_timeout(t0);
    let mut up = None;
    while let Some(a) = sut.node.poll_action() {
        if let Action::Connect { conn, .. } = a {
            up = Some(conn);
        }
    }
    while sut.node.poll_event().is_some() {}
    let up = up.expect("the broker dials its upstream at start-up");
    sut.node.handle_connected(up, t0);
    sut.drain();
    let model = Model {
        t0,
        feeds: Vec::new(),
        idle_intakes: Vec::new(),
        upstream: Some((up, t0 + SILENCE)),
        seen: BTreeSet::new(),
        ticks: 0,
        prunes: 1,
    };
    (sut, model)
}

/// Applies one transition to both; fails on the first difference.
fn apply(sut: &mut Sut, m: &mut Model, t: &Transition) -> Result<(), TestCaseError> {
    let peer = Peer::Tcp(([127, 0, 0, 1], 40000).into());
    let feed = |m: &Model, i: &Index| (!m.feeds.is_empty()).then(|| i.index(m.feeds.len()));
    let (expected, actual) = match t {
        Transition::OpenFeed => {
            let c = sut
                .node
                .handle_accept(ListenerRole::Broadcast, peer, sut.now);
            let c = c.expect("accepted");
            m.feeds.push(Feed {
                conn: c,
                wants: Wants::All,
                unanswered: 0,
                sent: 0,
                receipts: 0,
                sent_at_tick: 0,
            });
            (vec![Act::Authenticate(c)], sut.drain())
        }
        Transition::SetFilters(i, choice) => {
            let Some(i) = feed(m, i) else { return Ok(()) };
            let exprs: Vec<&'static str> = choice.iter().map(|&k| FILTERS[k]).collect();
            let meta: String = exprs
                .iter()
                .map(|f| format!("<Param name=\"xpath-filter\" value=\"{f}\"/>"))
                .collect();
            let mut valid: Vec<&'static str> = exprs
                .iter()
                .filter_map(|e| e.strip_prefix("has:"))
                .collect();
            valid.dedup();
            m.feeds[i].wants = match (exprs.is_empty(), valid.is_empty()) {
                (true, _) => Wants::All,
                (false, true) => Wants::Nothing,
                (false, false) => Wants::Any(valid),
            };
            let c = m.feeds[i].conn;
            (
                Vec::new(),
                sut.input(c, &transport("authenticate", LOCAL, &meta), None),
            )
        }
        Transition::FeedIamAlive(i) => {
            let Some(i) = feed(m, i) else { return Ok(()) };
            let f = &mut m.feeds[i];
            f.unanswered = f.unanswered.saturating_sub(1);
            let c = f.conn;
            (
                Vec::new(),
                sut.input(c, &transport("iamalive", LOCAL, ""), None),
            )
        }
        Transition::FeedAcks(i, n) => {
            let Some(i) = feed(m, i) else { return Ok(()) };
            let f = &mut m.feeds[i];
            f.receipts += *n as u64;
            let c = f.conn;
            let acks = transport("ack", "ivo://example.org/survey#e1", "").repeat(*n);
            (Vec::new(), sut.input(c, &acks, None))
        }
        Transition::FeedNak(i) => {
            let Some(i) = feed(m, i) else { return Ok(()) };
            let f = &mut m.feeds[i];
            f.receipts += 1;
            let c = f.conn;
            let nak = transport("nak", "ivo://example.org/survey#e1", "<Result>no</Result>");
            (Vec::new(), sut.input(c, &nak, None))
        }
        Transition::FeedJunk(i) => {
            let Some(i) = feed(m, i) else { return Ok(()) };
            let c = m.feeds[i].conn;
            (Vec::new(), sut.input(c, &framed("<not-xml"), None))
        }
        Transition::FeedBadPrefix(i) => {
            let Some(i) = feed(m, i) else { return Ok(()) };
            let c = m.feeds.remove(i).conn;
            let actual = sut.input(c, &0x7fff_ffffu32.to_be_bytes(), None);
            // The reason names the bad length; the model checks it is a framing error.
            let actual = actual
                .into_iter()
                .map(|a| match a {
                    Act::Close(c, r) if r.starts_with("FramingError") => {
                        Act::Close(c, "FramingError".into())
                    }
                    other => other,
                })
                .collect();
            (vec![Act::Close(c, "FramingError".into())], actual)
        }
        Transition::CloseFeed(i) => {
            let Some(i) = feed(m, i) else { return Ok(()) };
            let c = m.feeds.remove(i).conn;
            sut.node.handle_closed(c, CloseReason::PeerClosed, sut.now);
            (Vec::new(), sut.drain())
        }
        Transition::Submit(id, cuts) => {
            let c = sut.node.handle_accept(ListenerRole::Receive, peer, sut.now);
            let c = c.expect("accepted");
            sut.drain();
            let mut expected = vec![Act::Ack(c), close(c, &CloseReason::Done)];
            if !m.accept(*id, &mut expected) {
                expected.push(Act::DropDuplicate(c));
            }
            (expected, sut.input(c, &event(*id), Some(cuts)))
        }
        Transition::Burst(first, n) => {
            let (mut expected, mut actual) = (Vec::new(), Vec::new());
            for id in (*first..first.saturating_add(*n)).map(|id| id % 32) {
                let c = sut.node.handle_accept(ListenerRole::Receive, peer, sut.now);
                let c = c.expect("accepted");
                sut.drain();
                expected.extend([Act::Ack(c), close(c, &CloseReason::Done)]);
                if !m.accept(id, &mut expected) {
                    expected.push(Act::DropDuplicate(c));
                }
                actual.extend(sut.input(c, &event(id), None));
            }
            (expected, actual)
        }
        Transition::IdleIntake => {
            let c = sut.node.handle_accept(ListenerRole::Receive, peer, sut.now);
            m.idle_intakes
                .push((c.expect("accepted"), sut.now + INTAKE_DEADLINE));
            (Vec::new(), sut.drain())
        }
        Transition::UpstreamEvent(id, cuts) => {
            let Some((up, _)) = m.upstream else {
                return Ok(());
            };
            m.upstream = Some((up, sut.now + SILENCE));
            let mut expected = vec![Act::Ack(up)];
            if !m.accept(*id, &mut expected) {
                expected.push(Act::DropDuplicate(up));
            }
            (expected, sut.input(up, &event(*id), Some(cuts)))
        }
        Transition::UpstreamIamAlive => {
            let Some((up, _)) = m.upstream else {
                return Ok(());
            };
            m.upstream = Some((up, sut.now + SILENCE));
            let frame = transport("iamalive", UPSTREAM, "");
            (vec![Act::IamAlive(up)], sut.input(up, &frame, None))
        }
        Transition::Advance(secs) => {
            let target = sut.now + Duration::from_secs(u64::from(*secs));
            // Wake up at every deadline the node names, like a runtime; each wake-up must be
            // one the model expects (or the upstream's reconnect, whose jitter it does not
            // know), and do exactly what the model says.
            while let Some(t) = sut.node.poll_timeout() {
                if t > target {
                    break;
                }
                prop_assert!(t > sut.now, "a deadline in the past");
                sut.now = t;
                sut.node.handle_timeout(t);
                let mut actual = sut.drain();
                let reconnecting = m.upstream.is_none();
                let expected = m.due(t);
                let dial = actual.iter().position(|a| matches!(a, Act::Connect(_)));
                if let Some(at) = dial
                    && let Act::Connect(up) = actual.remove(at)
                {
                    prop_assert!(reconnecting, "a dial while subscribed");
                    // The dial succeeds at once.
                    sut.node.handle_connected(up, t);
                    prop_assert_eq!(sut.drain(), Vec::<Act>::new());
                    m.upstream = Some((up, t + SILENCE));
                    let expected = expected.unwrap_or_default();
                    prop_assert_eq!(sorted(actual), sorted(expected), "at +{:?}", t - m.t0);
                    continue;
                }
                let Some(expected) = expected else {
                    prop_assert!(
                        reconnecting && actual.is_empty(),
                        "unexpected wake-up at +{:?}: {:?}",
                        t - m.t0,
                        actual
                    );
                    continue;
                };
                prop_assert_eq!(sorted(actual), sorted(expected), "at +{:?}", t - m.t0);
            }
            sut.now = target;
            sut.node.handle_timeout(target);
            (Vec::new(), sut.drain())
        }
    };
    prop_assert_eq!(sorted(actual), sorted(expected), "{:?}", t);
    // Counters agree with the model.
    prop_assert_eq!(sut.node.feeds(), m.feeds.len());
    prop_assert_eq!(
        sut.node.connections(),
        m.feeds.len() + m.idle_intakes.len() + usize::from(m.upstream.is_some()),
        "connections"
    );
    prop_assert_eq!(sut.node.seen_len(), m.seen.len());
    prop_assert_eq!(sut.node.distinct_filters(), m.filters());
    if let Some(next) = sut.node.poll_timeout() {
        prop_assert!(next > sut.node.last_now(), "a deadline not in the future");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// The node and the reference model agree on every transition.
    #[test]
    fn node_matches_the_reference_model(ts in prop::collection::vec(transition(), 1..80)) {
        let (mut sut, mut model) = start();
        for t in &ts {
            apply(&mut sut, &mut model, t)?;
        }
    }
}
