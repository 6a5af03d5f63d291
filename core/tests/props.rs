//! Properties of the node under hostile and arbitrary input, in virtual time.
//!
//! - arbitrary bytes, in arbitrary chunks, on any role never panic and never stop the node
//!   from serving everyone else;
//! - the chunking of a stream never changes what the node does;
//! - mutated events never panic, and an intake always answers a well-framed submission once;
//! - queues and state stay bounded by the input (floods do not bank credit or grow state);
//! - the `Driver` drops a subscriber that never reads, once its outbox bound trips, while a
//!   healthy one receives every event.
//!
//! Proptest prints the minimal failing input when a property fails; failures are not persisted
//! to files so runs do not depend on the working tree.

mod common;

use std::collections::BTreeSet;
use std::io;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use proptest::sample::Index;
use vtp_core::config::Durability;
use vtp_core::driver::{Driver, Effects, Flush, StoreOp};
use vtp_core::frame::{FRAME_LEN_MAX_DEFAULT, FrameDecoder};
use vtp_core::message::TransportRole;
use vtp_core::outbox::OutboxLimits;
use vtp_core::{Action, CloseReason, ConnId, Delivery, Event, ListenerRole, Peer};

const GCN: &[u8] = include_bytes!("data/gcn_swift_bat.xml");
const UPSTREAM: &str = "ivo://example.org/upstream";
const TRN_NS: &str = "http://www.telescope-networks.org/xml/Transport/v1.1";

fn proptest_config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ------------------------------------------------------------------------------ fixtures

/// Where bytes are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Intake,
    Feed,
    Subscription,
}

fn any_role() -> impl Strategy<Value = Role> {
    prop::sample::select(vec![Role::Intake, Role::Feed, Role::Subscription])
}

/// A broker with a live subscription to one upstream and one healthy feed.
struct Broker {
    h: Harness,
    upstream: ConnId,
    healthy: ConnId,
}

fn broker() -> Broker {
    broker_with(Durability::BeforeReply)
}

fn broker_with(durability: Durability) -> Broker {
    let mut c = upstream_config();
    c.policy.durability = durability;
    let mut h = Harness::new(c);
    let (upstream, healthy) = h.connect_upstream_and_feed();
    Broker {
        h,
        upstream,
        healthy,
    }
}

impl Broker {
    fn target(&mut self, role: Role) -> ConnId {
        let c = match role {
            Role::Intake => self.h.accept(ListenerRole::Receive),
            Role::Feed => self.h.accept(ListenerRole::Broadcast),
            Role::Subscription => self.upstream,
        };
        self.h.take();
        c
    }

    /// A good submission on a fresh intake is acked, closed, delivered and forwarded to the
    /// healthy feed.
    fn still_serves(&mut self, ivorn: &str) -> Result<(), TestCaseError> {
        let author = self.h.accept(ListenerRole::Receive);
        self.h.input(author, &framed(&event_xml(ivorn)));
        let acts = self.h.take();
        let reply = frames_to(&acts, author);
        prop_assert_eq!(reply.len(), 1, "{:?}", acts);
        let ack = transport(&reply[0]);
        prop_assert_eq!(ack.role, TransportRole::Ack);
        prop_assert_eq!(&*ack.origin, ivorn);
        prop_assert_eq!(closed(&acts, author), Some(&CloseReason::Done));
        prop_assert_eq!(deliveries(&acts), 1);
        prop_assert!(forwards(&acts).contains(&self.healthy), "{:?}", acts);
        Ok(())
    }
}

fn transport_frame(role: &str, origin: &str, meta: &str) -> Vec<u8> {
    framed(
        format!(
            "<trn:Transport xmlns:trn=\"{TRN_NS}\" version=\"1.0\" role=\"{role}\">\
             <Origin>{origin}</Origin><TimeStamp>2024-05-01T12:00:00Z</TimeStamp>\
             <Meta>{meta}</Meta></trn:Transport>"
        )
        .as_bytes(),
    )
    .to_vec()
}

/// Splits `bytes` at the given cut points (any order, duplicates allowed).
fn chunks<'a>(bytes: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    at.push(0);
    at.push(bytes.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
}

/// How to cut a stream: at random points, or one byte at a time.
#[derive(Debug, Clone)]
enum Chunking {
    Cuts(Vec<Index>),
    Bytewise,
}

fn any_chunking() -> impl Strategy<Value = Chunking> {
    prop_oneof![
        4 => prop::collection::vec(any::<Index>(), 0..24).prop_map(Chunking::Cuts),
        1 => Just(Chunking::Bytewise),
    ]
}

fn split<'a>(bytes: &'a [u8], chunking: &Chunking) -> Vec<&'a [u8]> {
    match chunking {
        Chunking::Cuts(cuts) => chunks(bytes, cuts),
        Chunking::Bytewise => bytes.chunks(1).collect(),
    }
}

/// Hostile byte strings: raw noise, framed noise, framed markup soup, several frames.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    let noise = prop::collection::vec(any::<u8>(), 0..1024);
    let soup = prop::collection::vec(
        prop::sample::select(vec![
            "<",
            ">",
            "/",
            "&",
            ";",
            "\"",
            "=",
            " ",
            "<!--",
            "-->",
            "<![CDATA[",
            "]]>",
            "<?",
            "?>",
            "<!DOCTYPE",
            "VOEvent",
            "Transport",
            "Origin",
            "Meta",
            "Param",
            "Result",
            "ivorn",
            "role",
            "name",
            "value",
            "iamalive",
            "ack",
            "nak",
            "authenticate",
            "test",
            "xmlns",
            ":",
            "voe",
            "ivo://a.b/c#1",
            "&amp;",
            "&#0;",
            "\u{e9}",
            "\r\n",
        ]),
        0..64,
    )
    .prop_map(|parts| parts.concat().into_bytes());
    prop_oneof![
        noise.clone(),
        noise.clone().prop_map(|b| framed(&b).to_vec()),
        soup.clone().prop_map(|b| framed(&b).to_vec()),
        prop::collection::vec(prop_oneof![noise, soup], 1..4)
            .prop_map(|frames| { frames.iter().flat_map(|f| framed(f).to_vec()).collect() }),
    ]
}

// ---------------------------------------------------------------------- properties

proptest! {
    #![proptest_config(proptest_config())]

    /// Arbitrary bytes, arbitrarily chunked, on an intake, a feed or a subscription never
    /// panic, and the node then still acks a good submission and forwards it to a healthy feed.
    #[test]
    fn arbitrary_bytes_never_panic_and_the_node_keeps_serving(
        bytes in hostile_bytes(),
        chunking in any_chunking(),
        role in any_role(),
    ) {
        let mut b = broker();
        let target = b.target(role);
        let connections = b.h.node.connections();
        for chunk in split(&bytes, &chunking) {
            b.h.input(target, chunk);
            // An input on one connection never writes to, or closes, another.
            for a in &b.h.actions {
                if let Some((conn, _)) = a.frame() {
                    prop_assert_eq!(conn, target, "{:?}", a);
                }
                if let Action::Close { conn, .. } = a {
                    prop_assert_eq!(*conn, target, "{:?}", a);
                }
            }
            prop_assert!(b.h.node.connections() <= connections);
            prop_assert!(b.h.node.connections() + 1 >= connections);
        }
        let acts = b.h.take();
        if role == Role::Intake {
            prop_assert!(frames_to(&acts, target).len() <= 1, "one reply at most: {:?}", acts);
        }
        b.still_serves("ivo://example.org/survey#after-noise")?;
    }

    /// Any chunking of a stream of valid frames gives the same actions and events as feeding
    /// it in one piece: here a subscriber's replies on a feed, then an upstream's stream. With
    /// `BeforeReply` the held output is released at the end of each input here, so only its
    /// interleaving with immediate output may differ: the same actions, in any order.
    #[test]
    fn chunking_never_changes_what_the_node_does(
        feed_msgs in prop::collection::vec(feed_message(), 0..12),
        up_msgs in prop::collection::vec(upstream_message(), 1..24),
        feed_chunking in any_chunking(),
        up_chunking in any_chunking(),
        durability in prop::sample::select(vec![Durability::Async, Durability::BeforeReply]),
    ) {
        let feed_stream: Vec<u8> = feed_msgs.concat();
        let up_stream: Vec<u8> = up_msgs.concat();

        let mut whole = broker_with(durability);
        let wf = whole.target(Role::Feed);
        whole.h.input(wf, &feed_stream);
        whole.h.input(whole.upstream, &up_stream);

        let mut cut = broker_with(durability);
        let cf = cut.target(Role::Feed);
        prop_assert_eq!(wf, cf);
        for chunk in split(&feed_stream, &feed_chunking) {
            cut.h.input(cf, chunk);
        }
        for chunk in split(&up_stream, &up_chunking) {
            cut.h.input(cut.upstream, chunk);
        }

        if durability == Durability::Async {
            prop_assert_eq!(&whole.h.actions, &cut.h.actions);
        } else {
            prop_assert_eq!(sorted_actions(&whole.h.actions), sorted_actions(&cut.h.actions));
        }
        prop_assert_eq!(&whole.h.events, &cut.h.events);
        // The stream did something: every frame from the upstream is answered or logged.
        let acks = frames_to(&whole.h.actions, whole.upstream).len();
        let events = up_msgs.iter().filter(|m| is_event(m)).count();
        prop_assert!(acks >= events, "every event is acked: {} < {}", acks, events);
        prop_assert_eq!(whole.h.node.seen_len(), cut.h.node.seen_len());
    }

    /// Random byte flips, insertions, removals and truncations of a real 10 KB event never
    /// panic on any role; a well-framed submission is always answered exactly once.
    #[test]
    fn mutated_events_never_panic(
        edits in prop::collection::vec((any::<Index>(), any::<u8>(), 0u8..4), 1..8),
        frame_edit in prop::option::weighted(0.2, (0usize..4, any::<u8>())),
        chunking in any_chunking(),
        role in any_role(),
    ) {
        let mut payload = GCN.to_vec();
        for (index, byte, kind) in edits {
            if payload.is_empty() {
                break;
            }
            let i = index.index(payload.len());
            match kind {
                0 => payload[i] = byte,
                1 => payload.insert(i, byte),
                2 => {
                    payload.remove(i);
                }
                _ => payload.truncate(i),
            }
        }
        let mut bytes = framed(&payload).to_vec();
        if let Some((i, byte)) = frame_edit {
            bytes[i] = byte;
        }
        let well_framed = frame_edit.is_none() || bytes[..4] == framed(&payload)[..4];

        let mut b = broker();
        let target = b.target(role);
        for chunk in split(&bytes, &chunking) {
            b.h.input(target, chunk);
        }
        let acts = b.h.take();
        let reply = frames_to(&acts, target);
        match role {
            Role::Intake => {
                if well_framed {
                    prop_assert_eq!(reply.len(), 1, "{:?}", acts);
                } else {
                    prop_assert!(reply.len() <= 1, "{:?}", acts);
                }
                if let Some(r) = reply.first() {
                    let t = transport(r);
                    prop_assert!(!t.origin.is_empty());
                    match t.role {
                        TransportRole::Ack => {
                            prop_assert_eq!(deliveries(&acts), 1);
                            prop_assert_eq!(forwards(&acts), vec![b.healthy]);
                        }
                        TransportRole::Nak => prop_assert_eq!(deliveries(&acts), 0),
                        other => prop_assert!(false, "intake replied {:?}", other),
                    }
                    prop_assert!(closed(&acts, target).is_some());
                }
            }
            // A feed never answers anything; it may be closed for a framing error only.
            Role::Feed => prop_assert!(reply.is_empty(), "{:?}", acts),
            // An upstream's event is acked whatever it contains, unless it does not parse (then
            // ignored). A damaged prefix may leave a second frame behind it.
            Role::Subscription if well_framed => prop_assert!(reply.len() <= 1, "{:?}", acts),
            Role::Subscription => {}
        }
        b.still_serves("ivo://example.org/survey#after-mutation")?;
    }

    /// A feed flooding iamalive replies, acks and naks produces no action, grows no state and
    /// banks no credit: after the flood, two silent ticks still drop it.
    #[test]
    fn feed_floods_grow_nothing_and_bank_no_credit(
        kinds in prop::collection::vec(0u8..3, 1..400),
        chunking in any_chunking(),
    ) {
        let mut b = broker();
        let noisy = b.target(Role::Feed);
        let connections = b.h.node.connections();
        let one_of_each = [
            transport_frame("iamalive", LOCAL, ""),
            transport_frame("ack", "ivo://example.org/survey#x", ""),
            transport_frame("nak", "ivo://example.org/survey#x", "<Result>no</Result>"),
        ];
        let flood: Vec<u8> = kinds
            .iter()
            .flat_map(|&k| one_of_each[usize::from(k)].iter().copied())
            .collect();
        for chunk in split(&flood, &chunking) {
            b.h.input(noisy, chunk);
            prop_assert!(b.h.actions.is_empty(), "a feed's replies need no action");
            prop_assert!(b.h.node.poll_action().is_none());
            prop_assert_eq!(b.h.node.connections(), connections);
            prop_assert_eq!(b.h.node.seen_len(), 0);
            b.h.events.clear();
        }
        // The healthy feed answers its iamalives; the noisy one stays silent from now on.
        b.h.run_until(60.0);
        let acts = b.h.take();
        prop_assert_eq!(frames_to(&acts, noisy).len(), 1, "one iamalive per tick: {:?}", acts);
        prop_assert!(closed(&acts, noisy).is_none());
        b.h.input(b.healthy, &transport_frame("iamalive", LOCAL, ""));
        // The upstream keeps its subscription alive too (120 s silence limit).
        b.h.input(b.upstream, &transport_frame("iamalive", UPSTREAM, ""));
        b.h.run_until(120.0);
        let acts = b.h.take();
        prop_assert_eq!(closed(&acts, noisy), Some(&CloseReason::IamaliveUnanswered));
        prop_assert!(closed(&acts, b.healthy).is_none());
        prop_assert_eq!(b.h.node.connections(), connections - 1);
    }

    /// Under any sequence of inputs, each input's actions are bounded by a function of that
    /// input, the node holds exactly the connections a model of the runtime believes open, the
    /// seen-index holds at most the distinct events received, and no deadline is left in the
    /// past (a runtime that honours `poll_timeout` never spins).
    #[test]
    fn state_and_queues_stay_bounded(ops in prop::collection::vec(op(), 1..40)) {
        let b = broker();
        let mut m = Model {
            open: [b.upstream, b.healthy].into(),
            feeds: vec![b.healthy],
            dialing: None,
            upstream: b.upstream,
        };
        let mut h = b.h;
        let mut distinct: BTreeSet<u8> = BTreeSet::new();
        let mut secs = 0.0;
        let peer = Peer::Tcp(([127, 0, 0, 1], 40000).into());
        for op in ops {
            let before = h.node.connections();
            let bound = match &op {
                Op::OpenFeed => {
                    let f = h.node.handle_accept(ListenerRole::Broadcast, peer, h.now);
                    let f = f.expect("accepted");
                    m.open.insert(f);
                    m.feeds.push(f);
                    1
                }
                Op::FeedSends(which, kind, n) => {
                    let Some(&f) = m.feeds.get(which.index(m.feeds.len().max(1))) else {
                        continue;
                    };
                    h.node.handle_input(f, &feed_reply(*kind).repeat(*n), h.now);
                    // Replies cause nothing; more violations than `Limits::violations_max`
                    // close the feed.
                    1
                }
                Op::UpstreamSends(ids) => {
                    let frames: Vec<u8> = ids
                        .iter()
                        .flat_map(|&id| {
                            distinct.insert(id);
                            upstream_event(id)
                        })
                        .collect();
                    h.node.handle_input(m.upstream, &frames, h.now);
                    ids.len() * (4 + m.feeds.len())
                }
                Op::UpstreamIamAlive(n) => {
                    let frame = transport_frame("iamalive", UPSTREAM, "");
                    h.node.handle_input(m.upstream, &frame.repeat(*n), h.now);
                    *n
                }
                Op::Submit(id) => {
                    distinct.insert(*id);
                    let a = h.node.handle_accept(ListenerRole::Receive, peer, h.now);
                    let a = a.expect("accepted");
                    m.open.insert(a);
                    h.node.handle_input(a, &upstream_event(*id), h.now);
                    5 + m.feeds.len()
                }
                Op::IdleIntake(partial) => {
                    let a = h.node.handle_accept(ListenerRole::Receive, peer, h.now);
                    let a = a.expect("accepted");
                    m.open.insert(a);
                    let bytes = framed(&event_xml("ivo://example.org/survey#idle"));
                    h.node.handle_input(a, &bytes[..*partial], h.now);
                    0
                }
                Op::Advance(d) => {
                    secs += f64::from(*d);
                    let ticks = usize::from(*d) / 60 + 2;
                    let bound = ticks * (before + 4);
                    let target = h.t0 + std::time::Duration::from_secs_f64(secs);
                    // Step through every deadline like a runtime, checking each wake-up.
                    let mut count = 0;
                    while let Some(t) = h.node.poll_timeout() {
                        if t > target {
                            break;
                        }
                        prop_assert!(t >= h.now, "deadline in the past");
                        h.now = t;
                        h.node.handle_timeout(t);
                        count += m.drain(&mut h.node);
                    }
                    h.now = target;
                    h.node.handle_timeout(target);
                    count += m.drain(&mut h.node);
                    prop_assert!(count <= bound, "{:?}: {} actions > {}", op, count, bound);
                    bound
                }
                Op::CloseFeed(which) => {
                    let Some(&f) = m.feeds.get(which.index(m.feeds.len().max(1))) else {
                        continue;
                    };
                    h.node.handle_closed(f, CloseReason::PeerClosed, h.now);
                    m.open.remove(&f);
                    0
                }
            };
            let count = m.drain(&mut h.node);
            prop_assert!(count <= bound, "{:?}: {} actions > {}", op, count, bound);
            if let Some(up) = m.dialing.take() {
                // The runtime's dial succeeds at once.
                h.node.handle_connected(up, h.now);
                m.upstream = up;
                m.drain(&mut h.node);
            }
            m.feeds.retain(|f| m.open.contains(f));
            prop_assert_eq!(h.node.connections(), m.open.len(), "{:?}", op);
            prop_assert_eq!(h.node.feeds(), m.feeds.len());
            prop_assert!(h.node.seen_len() <= distinct.len());
            prop_assert!(h.node.poll_action().is_none());
            if let Some(t) = h.node.poll_timeout() {
                prop_assert!(t > h.node.last_now(), "{:?}: wake-up not in the future", op);
            }
        }
    }
}

/// The actions as comparable strings (frames in full), sorted.
fn sorted_actions(actions: &[Action]) -> Vec<String> {
    let mut all: Vec<String> = actions
        .iter()
        .map(|a| match a.frame() {
            Some((conn, frame)) => format!("{conn} {frame:?}"),
            None => format!("{a:?}"),
        })
        .collect();
    all.sort();
    all
}

/// What a runtime knows about the node's connections, from the actions it performed.
struct Model {
    open: BTreeSet<ConnId>,
    feeds: Vec<ConnId>,
    dialing: Option<ConnId>,
    upstream: ConnId,
}

impl Model {
    /// Performs every pending action (as far as connections go) and discards the events;
    /// returns how many actions there were.
    fn drain(&mut self, node: &mut vtp_core::Node) -> usize {
        let mut count = 0;
        loop {
            while let Some(a) = node.poll_action() {
                count += 1;
                match a {
                    Action::Close { conn, .. } => {
                        self.open.remove(&conn);
                    }
                    Action::Connect { conn, .. } => {
                        self.open.insert(conn);
                        self.dialing = Some(conn);
                    }
                    _ => {}
                }
            }
            if node.held() == 0 {
                break;
            }
            // A store that commits at once.
            node.handle_persisted(node.persists(), node.last_now());
        }
        while node.poll_event().is_some() {}
        count
    }
}

// --------------------------------------------------------------- stream generators

fn event_ivorn(id: u8) -> String {
    format!("ivo://example.org/survey#e{id}")
}

fn upstream_event(id: u8) -> Vec<u8> {
    framed(&event_xml(&event_ivorn(id))).to_vec()
}

fn is_event(frame: &[u8]) -> bool {
    frame.windows(8).any(|w| w == b"VOEvent ")
}

/// One valid frame an upstream may send: events (some repeated, some with an invalid IVORN),
/// keep-alives, authenticate requests, unsolicited receipts and garbage.
fn upstream_message() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (0u8..8).prop_map(upstream_event),
        1 => (0u8..4).prop_map(|id| framed(&event_xml(&format!("ivo://a2#{id}"))).to_vec()),
        2 => Just(transport_frame("iamalive", UPSTREAM, "")),
        1 => Just(transport_frame("authenticate", UPSTREAM, "")),
        1 => Just(transport_frame("ack", "ivo://example.org/survey#e1", "")),
        1 => Just(framed(b"not xml at all").to_vec()),
        1 => Just(framed(b"").to_vec()),
    ]
}

/// One valid frame a subscriber may send on its feed.
fn feed_message() -> impl Strategy<Value = Vec<u8>> {
    let filters = prop::collection::vec(
        prop::sample::select(vec!["has:#e1", "has:#e2", "has:e", "bad filter"]),
        0..3,
    )
    .prop_map(|fs| {
        let meta: String = fs
            .iter()
            .map(|f| format!("<Param name=\"xpath-filter\" value=\"{f}\"/>"))
            .collect();
        transport_frame("authenticate", LOCAL, &meta)
    });
    prop_oneof![
        filters,
        Just(transport_frame("iamalive", LOCAL, "")),
        Just(transport_frame("ack", "ivo://example.org/survey#e1", "")),
        Just(transport_frame(
            "nak",
            "ivo://example.org/survey#e2",
            "<Result>no</Result>"
        )),
        Just(framed(b"<garbage").to_vec()),
    ]
}

fn feed_reply(kind: u8) -> Vec<u8> {
    match kind % 4 {
        0 => transport_frame("iamalive", LOCAL, ""),
        1 => transport_frame("ack", "ivo://example.org/survey#e1", ""),
        2 => transport_frame("nak", "ivo://example.org/survey#e1", ""),
        _ => framed(b"<junk/>").to_vec(),
    }
}

#[derive(Debug, Clone)]
enum Op {
    OpenFeed,
    FeedSends(Index, u8, usize),
    UpstreamSends(Vec<u8>),
    UpstreamIamAlive(usize),
    Submit(u8),
    IdleIntake(usize),
    Advance(u16),
    CloseFeed(Index),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::OpenFeed),
        (any::<Index>(), any::<u8>(), 1usize..200).prop_map(|(i, k, n)| Op::FeedSends(i, k, n)),
        prop::collection::vec(0u8..16, 1..8).prop_map(Op::UpstreamSends),
        (1usize..50).prop_map(Op::UpstreamIamAlive),
        (0u8..16).prop_map(Op::Submit),
        (0usize..40).prop_map(Op::IdleIntake),
        (0u16..400).prop_map(Op::Advance),
        any::<Index>().prop_map(Op::CloseFeed),
    ]
}

// ------------------------------------------------------------------------ driver

/// Records everything a `Driver` hands out.
#[derive(Debug, Default)]
struct Recorder {
    stores: Vec<StoreOp>,
    deliveries: Vec<Delivery>,
    events: Vec<Event>,
}

impl Effects for Recorder {
    fn store(&mut self, op: StoreOp) {
        self.stores.push(op);
    }
    fn deliver(&mut self, delivery: Delivery) {
        self.deliveries.push(delivery);
    }
    fn event(&mut self, event: Event) {
        self.events.push(event);
    }
}

/// A socket whose peer never reads: every write would block.
struct NeverWritable;

impl io::Write for NeverWritable {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
    fn flush(&mut self) -> io::Result<()> {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

#[test]
fn driver_drops_a_subscriber_that_never_reads_and_keeps_feeding_the_healthy_one() {
    let frames_max = 4;
    let t0 = origin();
    let node = vtp_core::Node::new(
        broker_config(),
        Box::new(SubstringEngine::default()),
        7,
        t0,
        std::time::Duration::from_secs(UNIX0),
    )
    .expect("config");
    let limits = OutboxLimits {
        bytes_max: 64 * 1024,
        frames_max,
    };
    let mut driver = Driver::new(node, limits);
    let mut fx = Recorder::default();
    let peer = Peer::Tcp(([127, 0, 0, 1], 40000).into());
    let healthy = driver
        .handle_accept(ListenerRole::Broadcast, peer, t0, &mut fx)
        .expect("accepted");
    let stuck = driver
        .handle_accept(ListenerRole::Broadcast, peer, t0, &mut fx)
        .expect("accepted");
    let mut healthy_wire: Vec<u8> = Vec::new();
    let mut stuck_result = None;

    let events = 12;
    let mut sent = Vec::new();
    for i in 0..events {
        let payload = event_xml(&format!("ivo://example.org/survey#driver-{i}"));
        let author = driver
            .handle_accept(ListenerRole::Receive, peer, t0, &mut fx)
            .expect("accepted");
        driver.handle_input(author, &framed(&payload), t0, &mut fx);
        sent.push(payload);
        let mut author_wire = Vec::new();
        while let Some(conn) = driver.poll_writable() {
            let flush = if conn == healthy {
                driver.flush(conn, &mut healthy_wire, t0, &mut fx)
            } else if conn == stuck {
                driver.flush(conn, &mut NeverWritable, t0, &mut fx)
            } else {
                assert_eq!(conn, author);
                driver.flush(conn, &mut author_wire, t0, &mut fx)
            };
            match (conn, flush) {
                (c, Flush::Idle) => assert_eq!(c, healthy, "only the healthy feed idles"),
                (c, Flush::Pending) => {
                    assert_eq!(c, stuck);
                    assert!(stuck_result.is_none(), "pending after it was dropped");
                }
                (c, Flush::Close(reason)) if c == stuck => {
                    assert!(stuck_result.is_none(), "closed twice");
                    stuck_result = Some((i, reason));
                }
                (c, Flush::Close(reason)) => {
                    assert_eq!(c, author);
                    assert_eq!(reason, CloseReason::Done);
                }
            }
        }
        // The author got its ack before the close.
        let mut ack = Vec::new();
        FrameDecoder::new(FRAME_LEN_MAX_DEFAULT)
            .decode(&author_wire, |p| ack.push(Bytes::copy_from_slice(p)))
            .expect("well framed");
        assert_eq!(ack.len(), 1);
        assert_eq!(transport(&framed(&ack[0])).role, TransportRole::Ack);
        assert!(!driver.is_open(author));
    }

    // The stuck feed held its authenticate plus `frames_max - 1` events; the next one tripped
    // the bound, and the driver closed it and told the node.
    let (tripped_at, reason) = stuck_result.expect("the stuck feed was dropped");
    assert_eq!(tripped_at, frames_max - 1);
    assert_eq!(reason, CloseReason::OutboxFull);
    assert!(!driver.is_open(stuck));
    assert_eq!(driver.node().role(stuck), None);
    assert_eq!(driver.node().feeds(), 1);
    assert!(fx.events.iter().any(|e| matches!(e,
        Event::PeerDown { conn, reason: CloseReason::OutboxFull, .. } if *conn == stuck)));

    // The healthy feed got the authenticate and every event, byte for byte, in order.
    let mut received = Vec::new();
    FrameDecoder::new(FRAME_LEN_MAX_DEFAULT)
        .decode(&healthy_wire, |p| received.push(p.to_vec()))
        .expect("well framed");
    assert_eq!(received.len(), 1 + events);
    assert_eq!(
        transport(&framed(&received[0])).role,
        TransportRole::Authenticate
    );
    assert_eq!(&received[1..], &sent[..]);
    assert_eq!(fx.deliveries.len(), events);
    assert_eq!(
        fx.stores
            .iter()
            .filter(|s| matches!(s, StoreOp::Persist(_)))
            .count(),
        events
    );
    assert_eq!(driver.queued_bytes(healthy), 0);
}

// ------------------------------------------------------------------- connection limit

fn refused_for_limit(h: &Harness) -> bool {
    h.events.iter().any(|e| {
        matches!(e, Event::Refused { reason, .. } if reason.contains("connection limit reached"))
    })
}

#[test]
fn connection_limit_is_per_role_and_frees_slots_on_every_kind_of_close() {
    let mut c = upstream_config();
    c.limits.connections_max = 2;
    let mut h = Harness::new(c);
    h.run_until(0.0);
    h.take();
    let peer = Peer::Tcp(([127, 0, 0, 1], 40000).into());
    let accept = |h: &mut Harness, role| {
        let conn = h.node.handle_accept(role, peer, h.now);
        h.drain();
        conn
    };
    // The subscription to the upstream does not count; each role has its own slots, so idle
    // subscribers never lock authors out.
    let f1 = accept(&mut h, ListenerRole::Broadcast).expect("feed slot 1");
    let f2 = accept(&mut h, ListenerRole::Broadcast).expect("feed slot 2");
    assert_eq!(accept(&mut h, ListenerRole::Broadcast), None);
    assert!(refused_for_limit(&h));
    h.events.clear();
    let a1 = accept(&mut h, ListenerRole::Receive).expect("author slot 1");
    let _a2 = accept(&mut h, ListenerRole::Receive).expect("author slot 2");
    assert_eq!(accept(&mut h, ListenerRole::Receive), None);
    assert!(refused_for_limit(&h));

    // An answered submission frees its slot.
    h.input(a1, &framed(&event_xml("ivo://example.org/survey#limit-1")));
    let a3 = accept(&mut h, ListenerRole::Receive).expect("freed by the answer");
    assert_eq!(accept(&mut h, ListenerRole::Receive), None);
    // A peer close frees one.
    h.node.handle_closed(f1, CloseReason::PeerClosed, h.now);
    let f3 = accept(&mut h, ListenerRole::Broadcast).expect("freed by the peer");
    assert_eq!(accept(&mut h, ListenerRole::Broadcast), None);
    // A framing error frees one.
    h.input(f2, &0x7fff_ffffu32.to_be_bytes());
    let f4 = accept(&mut h, ListenerRole::Broadcast).expect("freed by the framing error");
    // The intake deadline frees both author slots; the unanswered feeds go at the second tick.
    h.run_until(20.0);
    assert_eq!(h.node.role(a3), None);
    for _ in 0..2 {
        accept(&mut h, ListenerRole::Receive).expect("freed by the deadline");
    }
    h.run_until(120.0);
    assert_eq!(h.node.feeds(), 0, "{f3} and {f4} never answered");
    for _ in 0..2 {
        accept(&mut h, ListenerRole::Broadcast).expect("feed slots free again");
    }
    h.events.clear();
    assert_eq!(accept(&mut h, ListenerRole::Broadcast), None);
    assert!(refused_for_limit(&h));
    // Shutdown closes everything; no slot leaks even then.
    h.node.shutdown(h.now);
    h.drain();
    assert_eq!(h.node.connections(), 0);
}
