//! External sources (a Kafka consumer): records enter like an upstream's events, and each
//! position is committed back only once its event's record (or its original's) is durable,
//! in offset order per lane; skipped records are committable at once. In virtual time, with
//! durability reported by hand, plus a property: a crash at any point, then a restart from
//! the durable seen-index and the committed offsets, forwards every event exactly once.

mod common;

use std::collections::{BTreeMap, HashMap};

use common::*;
use proptest::prelude::*;
use vtp_core::config::Durability;
use vtp_core::{
    Action, CloseReason, ConnId, ConnRole, Event, ExternalError, ListenerRole, Position, Remote,
    SeenRecord, Source, Violation,
};

fn at(lane: u32, offset: u64) -> Position {
    Position { lane, offset }
}

/// A broker whose store reports nothing until told to, with one subscriber and one
/// external source; outputs so far taken.
fn rig(durability: Durability) -> (Harness, ConnId, ConnId) {
    let mut c = broker_config();
    c.policy.durability = durability;
    let mut h = Harness::new(c);
    h.auto_persist = false;
    h.run_until(0.0);
    let feed = h.accept(ListenerRole::Broadcast);
    let kafka = h
        .node
        .open_external("kafka gcn.classic.voevent.TEST", h.now);
    h.take();
    (h, feed, kafka)
}

fn commits(actions: &[Action]) -> Vec<(u32, u64)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Commit {
                lane, next_offset, ..
            } => Some((*lane, *next_offset)),
            _ => None,
        })
        .collect()
}

fn forwards(actions: &[Action], feed: ConnId) -> usize {
    frames_to(actions, feed).len()
}

fn record(h: &mut Harness, src: ConnId, pos: Position, payload: &[u8]) {
    h.node
        .handle_external(src, pos, payload, h.now)
        .expect("taken");
    h.drain();
}

#[test]
fn an_external_source_is_up_and_down_like_a_connection_and_named_by_its_name() {
    let mut h = Harness::broker();
    let src = h.node.open_external("kafka t", h.now);
    h.drain();
    assert!(h.events.contains(&Event::PeerUp {
        conn: src,
        role: ConnRole::External,
        remote: Remote::External("kafka t".into()),
        upstream: None,
    }));
    assert_eq!(h.node.feeds(), 0, "it counts against no connection limit");
    h.node.handle_closed(src, CloseReason::PeerClosed, h.now);
    h.drain();
    assert!(h.events.iter().any(
        |e| matches!(e, Event::PeerDown { conn, role: ConnRole::External, .. } if *conn == src)
    ));
    assert_eq!(
        h.node.handle_external(
            src,
            at(0, 0),
            &event_xml("ivo://example.org/survey#x"),
            h.now
        ),
        Err(ExternalError::UnknownSource)
    );
    let feed = h.accept(ListenerRole::Broadcast);
    assert_eq!(
        h.node.handle_external(
            feed,
            at(0, 0),
            &event_xml("ivo://example.org/survey#x"),
            h.now
        ),
        Err(ExternalError::UnknownSource),
        "a subscriber's connection is not a source"
    );
}

#[test]
fn a_new_event_is_forwarded_delivered_and_committed_once_durable_whatever_the_policy() {
    for durability in [Durability::BeforeReply, Durability::Async] {
        let (mut h, feed, src) = rig(durability);
        record(
            &mut h,
            src,
            at(0, 7),
            &event_xml("ivo://example.org/survey#k1"),
        );
        let out = h.take();
        assert!(commits(&out).is_empty(), "{durability:?}: not durable yet");
        let delivered: Vec<_> = out
            .iter()
            .filter_map(|a| match a {
                Action::Deliver(d) => Some(d.source.clone()),
                _ => None,
            })
            .collect();
        match durability {
            // Forwards and deliveries wait for the record too.
            Durability::BeforeReply => {
                assert_eq!(forwards(&out, feed), 0);
                assert!(delivered.is_empty());
            }
            _ => {
                assert_eq!(forwards(&out, feed), 1);
                assert_eq!(delivered, [Source::External(src)]);
            }
        }
        h.persisted(1);
        let out = h.take();
        assert_eq!(commits(&out), [(0, 8)], "{durability:?}");
        if durability == Durability::BeforeReply {
            assert_eq!(forwards(&out, feed), 1);
        }
    }
}

#[test]
fn the_same_event_from_an_upstream_and_from_kafka_is_forwarded_once() {
    let mut c = upstream_config();
    c.policy.durability = Durability::BeforeReply;
    let mut h = Harness::new(c);
    h.auto_persist = false;
    let (up, feed) = h.connect_upstream_and_feed();
    let src = h.node.open_external("kafka", h.now);
    let xml = event_xml("ivo://example.org/survey#both");
    h.input(up, &framed(&xml));
    record(&mut h, src, at(0, 0), &xml);
    let out = h.take();
    assert!(commits(&out).is_empty(), "the original is not durable yet");
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::DropDuplicate { conn, .. } if *conn == src))
    );
    h.persisted(1);
    let out = h.take();
    assert_eq!(forwards(&out, feed), 1);
    assert_eq!(commits(&out), [(0, 1)], "done once the original is durable");
}

#[test]
fn skipped_records_are_reported_with_their_position_and_committed_in_order() {
    let (mut h, feed, src) = rig(Durability::BeforeReply);
    record(
        &mut h,
        src,
        at(3, 10),
        &event_xml("ivo://example.org/survey#s1"),
    );
    h.take();
    let bad: [&[u8]; 4] = [
        b"not xml at all",
        b"{\"json\": \"notice\"}",
        &event_xml("not-an-ivorn"),
        b"<trn:Transport xmlns:trn='http://www.telescope-networks.org/xml/Transport/v1.1' \
          version='1.0' role='iamalive'><Origin>ivo://x/y</Origin></trn:Transport>",
    ];
    for (i, payload) in bad.iter().enumerate() {
        record(&mut h, src, at(3, 11 + i as u64), payload);
    }
    let skipped: Vec<Position> = h
        .events
        .iter()
        .filter_map(|e| match e {
            Event::ExternalSkipped { conn, at, .. } if *conn == src => Some(*at),
            _ => None,
        })
        .collect();
    assert_eq!(skipped, (11..15).map(|o| at(3, o)).collect::<Vec<_>>());
    let out = h.take();
    assert!(
        commits(&out).is_empty(),
        "offset 10 still waits for the store"
    );
    h.persisted(1);
    let out = h.take();
    assert_eq!(commits(&out), [(3, 15)], "10 and the skipped 11-14 at once");
    assert_eq!(forwards(&out, feed), 1);
    // A skipped record with nothing pending is committed at once, and the source stays open.
    record(&mut h, src, at(3, 15), b"garbage");
    assert_eq!(commits(&h.take()), [(3, 16)]);
    // Too long for a VTP frame: skipped, whether the host read it or not.
    let mut big = event_xml("ivo://example.org/survey#big");
    big.resize(1024 * 1024 + 1, b' ');
    record(&mut h, src, at(3, 16), &big);
    h.node
        .skip_external(src, at(3, 17), Violation::SeenQuota, h.now)
        .unwrap();
    h.drain();
    let reasons: Vec<String> = h
        .events
        .iter()
        .filter_map(|e| match e {
            Event::ExternalSkipped { at: p, reason, .. } if p.offset >= 16 => {
                Some(reason.to_string())
            }
            _ => None,
        })
        .collect();
    assert!(
        reasons[0].contains("over the limit of 1048576 bytes"),
        "{reasons:?}"
    );
    assert_eq!(commits(&h.take()), [(3, 17), (3, 18)]);
    assert_eq!(h.node.role(src), Some(ConnRole::External));
}

#[test]
fn a_source_with_too_many_records_waiting_for_the_store_is_told_to_wait() {
    let mut c = broker_config();
    c.limits.external_pending_max = 2;
    let mut h = Harness::new(c);
    h.auto_persist = false;
    let src = h.node.open_external("kafka", h.now);
    for o in 0..2 {
        let xml = event_xml(&format!("ivo://example.org/survey#b{o}"));
        h.node.handle_external(src, at(0, o), &xml, h.now).unwrap();
    }
    let third = event_xml("ivo://example.org/survey#b2");
    assert_eq!(
        h.node.handle_external(src, at(0, 2), &third, h.now),
        Err(ExternalError::Busy)
    );
    h.drain();
    assert!(
        !h.events.iter().any(|e| matches!(e, Event::Accepted { ivorn, .. } if &**ivorn == "ivo://example.org/survey#b2")),
        "a refused record is not processed"
    );
    h.persisted(2);
    assert_eq!(commits(&h.take()), [(0, 2)]);
    h.node
        .handle_external(src, at(0, 2), &third, h.now)
        .unwrap();
}

#[test]
fn a_re_read_after_a_rewind_is_a_duplicate_and_commits_stay_monotonic() {
    let (mut h, feed, src) = rig(Durability::BeforeReply);
    for o in 0..3 {
        record(
            &mut h,
            src,
            at(0, o),
            &event_xml(&format!("ivo://example.org/survey#r{o}")),
        );
    }
    h.persisted(3);
    let out = h.take();
    assert_eq!(forwards(&out, feed), 3);
    assert_eq!(commits(&out).last(), Some(&(0, 3)));
    // The source reconnected and rewound to offset 1.
    for o in 1..4 {
        record(
            &mut h,
            src,
            at(0, o),
            &event_xml(&format!("ivo://example.org/survey#r{o}")),
        );
    }
    h.persisted(4);
    let out = h.take();
    assert_eq!(forwards(&out, feed), 1, "only #r3 is new");
    assert_eq!(commits(&out), [(0, 4)]);
}

/// One record of the modelled topic: an event (by number; the same number twice is the same
/// event) or garbage.
#[derive(Debug, Clone)]
enum Rec {
    Event(u8),
    Garbage,
}

fn payload(r: &Rec) -> Vec<u8> {
    match r {
        Rec::Event(n) => event_xml(&format!("ivo://example.org/survey#p{n}")),
        Rec::Garbage => b"<<not a voevent".to_vec(),
    }
}

/// Runs one node on `records` (lane = index % lanes) from the committed offsets in
/// `committed`, with the durable records `durable`, reporting persists durable in steps given
/// by `steps` and crashing after `crash_after` records: returns the ivorns forwarded, the
/// durable seen-records at the crash and the committed offsets then.
fn run(
    records: &[(u32, u64, Rec)],
    committed: &BTreeMap<u32, u64>,
    durable: &[SeenRecord],
    steps: &[u8],
    crash_after: usize,
) -> (Vec<String>, Vec<SeenRecord>, BTreeMap<u32, u64>) {
    let mut h = Harness::new({
        let mut c = broker_config();
        c.policy.durability = Durability::BeforeReply;
        c
    });
    h.auto_persist = false;
    h.node.restore_seen(durable.iter().cloned(), h.now);
    let feed = h.accept(ListenerRole::Broadcast);
    let src = h.node.open_external("kafka", h.now);
    h.take();
    let mut persisted: Vec<SeenRecord> = Vec::new();
    let mut reported = 0u64;
    let mut commits_now = committed.clone();
    let mut forwarded = Vec::new();
    let mut collect = |h: &mut Harness,
                       persisted: &mut Vec<SeenRecord>,
                       c: &mut BTreeMap<u32, u64>| {
        for a in h.take() {
            match a {
                Action::Persist(r) => persisted.push(r),
                Action::Commit {
                    lane, next_offset, ..
                } => {
                    let prev = c.insert(lane, next_offset);
                    assert!(prev.is_none_or(|p| p <= next_offset), "commits go back");
                }
                Action::Forward { conn, frame } if conn == feed => {
                    let t = String::from_utf8_lossy(&frame[4..]).into_owned();
                    let i = t.find("ivorn=\"").expect("an ivorn") + 7;
                    forwarded.push(t[i..i + t[i..].find('"').expect("a closing quote")].to_owned());
                }
                _ => {}
            }
        }
    };
    let todo: Vec<_> = records
        .iter()
        .filter(|(lane, offset, _)| committed.get(lane).is_none_or(|c| offset >= c))
        .collect();
    for (i, (lane, offset, rec)) in todo.iter().enumerate() {
        if i == crash_after {
            break;
        }
        h.node
            .handle_external(src, at(*lane, *offset), &payload(rec), h.now)
            .expect("well under the bound");
        collect(&mut h, &mut persisted, &mut commits_now);
        // The store makes some of what it was handed durable.
        let step = u64::from(steps[i % steps.len()] % 3);
        let target = (reported + step).min(persisted.len() as u64);
        if target > reported {
            reported = target;
            h.persisted(reported);
            collect(&mut h, &mut persisted, &mut commits_now);
        }
    }
    if crash_after >= todo.len() {
        reported = persisted.len() as u64;
        h.persisted(reported);
        collect(&mut h, &mut persisted, &mut commits_now);
    }
    let mut durable_now = durable.to_vec();
    durable_now.extend(persisted.into_iter().take(reported as usize));
    (forwarded, durable_now, commits_now)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// A crash at any point: what was committed is durable, and after a restart from the
    /// durable seen-index and the committed offsets every event is forwarded exactly once.
    #[test]
    fn a_crash_and_restart_forwards_each_event_exactly_once(
        recs in prop::collection::vec(prop_oneof![
            8 => (0u8..12).prop_map(Rec::Event),
            1 => Just(Rec::Garbage),
        ], 1..40),
        lanes in 1u32..4,
        steps in prop::collection::vec(any::<u8>(), 1..8),
        crash_after in 0usize..45,
    ) {
        let mut next: HashMap<u32, u64> = HashMap::new();
        let records: Vec<(u32, u64, Rec)> = recs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let lane = i as u32 % lanes;
                let o = next.entry(lane).or_insert(0);
                *o += 1;
                (lane, *o - 1, r.clone())
            })
            .collect();
        let (first, durable, committed) =
            run(&records, &BTreeMap::new(), &[], &steps, crash_after);
        let (second, _, finally) = run(&records, &committed, &durable, &steps, usize::MAX);
        let mut all = first.clone();
        all.extend(second);
        let mut expected: Vec<String> = recs
            .iter()
            .filter_map(|r| match r {
                Rec::Event(n) => Some(format!("ivo://example.org/survey#p{n}")),
                Rec::Garbage => None,
            })
            .collect();
        expected.sort();
        expected.dedup();
        let mut got = all.clone();
        got.sort();
        prop_assert_eq!(got, expected, "first run forwarded {:?}", first);
        for (lane, end) in next {
            prop_assert_eq!(finally.get(&lane).copied(), Some(end), "lane {} fully committed", lane);
        }
    }
}
