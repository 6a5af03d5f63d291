//! Every flow of docs/protocol.md §3 as a scripted exchange, in virtual time.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use vtp_core::config::{DuplicateReply, SubscriberNak, Upstream};
use vtp_core::endpoint::{DialAddr, PORT_SUBMIT, PORT_SUBSCRIBE};
use vtp_core::message::{Message, TransportRole};
use vtp_core::{Action, CloseReason, Config, Event, ListenerRole, SeenLevel};

// ------------------------------------------------------------------ author -> broker (§3.1)

#[test]
fn submission_is_acked_closed_persisted_and_delivered_in_order() {
    let mut h = Harness::broker();
    let a = h.accept(ListenerRole::Receive);
    assert!(
        h.take().iter().all(|x| x.frame().is_none()),
        "intake never speaks first"
    );
    let ev = event_xml("ivo://example.org/survey#alert-0001");
    h.input(a, &framed(&ev));
    let acts = h.take();
    let kinds: Vec<&str> = acts
        .iter()
        .map(|x| match x {
            Action::Persist(_) => "persist",
            Action::Ack { .. } => "ack",
            Action::Close { .. } => "close",
            Action::Deliver(_) => "deliver",
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(kinds, ["persist", "ack", "close", "deliver"]);
    let ack = &frames_to(&acts, a)[0];
    let t = transport(ack);
    assert_eq!(t.role, TransportRole::Ack);
    assert_eq!(&*t.origin, "ivo://example.org/survey#alert-0001");
    assert_eq!(t.response.as_deref(), Some(LOCAL));
    assert_eq!(t.timestamp.as_deref(), Some("2024-05-01T12:00:00Z"));
    assert_eq!(closed(&acts, a), Some(&CloseReason::Done));
    let Some(Action::Deliver(d)) = acts.last() else {
        panic!()
    };
    assert_eq!(&d.payload[..], &ev[..], "handlers get the author's bytes");
}

fn nak_reason(h: &mut Harness, bytes: &[u8]) -> String {
    let a = h.accept(ListenerRole::Receive);
    h.input(a, bytes);
    let acts = h.take();
    let frames = frames_to(&acts, a);
    assert_eq!(frames.len(), 1, "exactly one reply: {acts:?}");
    assert!(closed(&acts, a).is_some(), "closed after the nak");
    assert_eq!(deliveries(&acts), 0);
    let t = transport(&frames[0]);
    assert_eq!(t.role, TransportRole::Nak, "{t:?}");
    t.result.expect("nak has a Result").into_owned()
}

#[test]
fn each_nak_reason() {
    let mut h = Harness::broker();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (framed(&event_xml("ivo://a2#x")).to_vec(), "Invalid IVOID: ivo://a2#x"),
        (framed(&event_xml("ivo://example.org/survey")).to_vec(), "No per-event local ID"),
        (framed(&event_xml("ivo://example.org/survey#")).to_vec(), "No per-event local ID"),
        (
            framed(
                &String::from_utf8(event_xml("ivo://example.org/s#1"))
                    .unwrap()
                    .replace("VOEvent/v2.0", "VOEvent/v1.1")
                    .into_bytes(),
            )
            .to_vec(),
            "accepts only VOEvent 2.0",
        ),
        (framed(b"<VOEvent ivorn='ivo://a.b/c#1'><Who></VOEvent>").to_vec(), "Event rejected"),
        (framed(b"").to_vec(), "Event rejected"),
        (
            framed(
                b"<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>]>\
                  <VOEvent ivorn='ivo://a.b/c#1'>&lol;</VOEvent>",
            )
            .to_vec(),
            "Event rejected",
        ),
        (
            framed(b"<trn:Transport xmlns:trn='x' role='iamalive' version='1.0'><Origin>o</Origin></trn:Transport>")
                .to_vec(),
            "expected a VOEvent",
        ),
        (0x7fff_ffffu32.to_be_bytes().to_vec(), "exceeds the limit"),
    ];
    for (bytes, want) in cases {
        let reason = nak_reason(&mut h, &bytes);
        assert!(reason.starts_with("Event rejected: "), "{reason}");
        assert!(reason.contains(want), "want {want:?} in {reason:?}");
    }
    assert_eq!(h.node.seen_len(), 0, "refused events are not recorded");
}

#[test]
fn nak_names_the_little_endian_mistake() {
    let mut h = Harness::broker();
    let mut bytes = 300u32.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[b'x'; 16]);
    let reason = nak_reason(&mut h, &bytes);
    assert!(reason.contains("little-endian"), "{reason}");
}

#[test]
fn duplicate_is_acked_not_relayed_by_default_and_nakd_in_comet_mode() {
    for (policy, want) in [
        (DuplicateReply::Ack, TransportRole::Ack),
        (DuplicateReply::Nak, TransportRole::Nak),
    ] {
        let mut c = Config::new(Some(LOCAL.into()));
        c.timing.test_event_interval = None;
        c.policy.duplicate_reply = policy;
        let mut h = Harness::new(c);
        let s = h.accept(ListenerRole::Broadcast);
        let ev = framed(&event_xml("ivo://example.org/survey#dup"));
        let a = h.accept(ListenerRole::Receive);
        h.input(a, &ev);
        assert_eq!(forwards(&h.take()), vec![s]);
        let b = h.accept(ListenerRole::Receive);
        h.input(b, &ev);
        let acts = h.take();
        assert!(forwards(&acts).is_empty(), "a duplicate is never relayed");
        assert_eq!(deliveries(&acts), 0);
        assert!(
            acts.iter()
                .any(|x| matches!(x, Action::DropDuplicate { conn, .. } if *conn == b))
        );
        let frames = frames_to(&acts, b);
        let t = transport(&frames[0]);
        assert_eq!(t.role, want);
        if want == TransportRole::Nak {
            assert_eq!(
                t.result.as_deref(),
                Some("Event rejected: Previously seen by this broker")
            );
        }
    }
}

#[test]
fn author_connection_closes_20s_after_accept_whatever_it_sends() {
    let mut h = Harness::broker();
    let a = h.accept(ListenerRole::Receive);
    h.run_until(10.0);
    // A partial frame does not reset the deadline.
    h.input(a, &[0, 0, 1]);
    h.run_until(19.9);
    assert!(closed(&h.take(), a).is_none());
    h.run_until(20.0);
    let acts = h.take();
    assert_eq!(closed(&acts, a), Some(&CloseReason::IntakeDeadline));
    assert!(frames_to(&acts, a).is_empty(), "no reply on the deadline");
}

#[test]
fn only_the_first_frame_of_an_author_counts() {
    let mut h = Harness::broker();
    let a = h.accept(ListenerRole::Receive);
    let mut two = framed(&event_xml("ivo://example.org/s#1")).to_vec();
    two.extend_from_slice(&framed(&event_xml("ivo://example.org/s#2")));
    h.input(a, &two);
    let acts = h.take();
    assert_eq!(frames_to(&acts, a).len(), 1);
    assert_eq!(deliveries(&acts), 1);
}

// -------------------------------------------------------------- broker -> subscriber (§3.2)

fn answer(h: &mut Harness, conn: vtp_core::ConnId, role: &str) {
    let xml = format!(
        "<trn:Transport xmlns:trn=\"http://telescope-networks.org/schema/Transport/v1.1\" \
         version=\"1.0\" role=\"{role}\"><Origin>{LOCAL}</Origin>\
         <TimeStamp>2026-11-22T01:50:13.960722</TimeStamp></trn:Transport>"
    );
    h.input(conn, &framed(xml.as_bytes()));
}

fn ack(h: &mut Harness, conn: vtp_core::ConnId, origin: &str) {
    let xml = format!(
        "<trn:Transport xmlns:trn=\"http://telescope-networks.org/schema/Transport/v1.1\" \
         version=\"1.0\" role=\"ack\"><Origin>{origin}</Origin>\
         <Response>ivo://python_voeventclient/anonymous</Response>\
         <TimeStamp>2026-11-22T01:50:13.960722</TimeStamp></trn:Transport>"
    );
    h.input(conn, &framed(xml.as_bytes()));
}

#[test]
fn feed_gets_authenticate_then_iamalive_every_60s_and_is_dropped_after_one_missed_reply() {
    let mut h = Harness::broker();
    let s = h.accept(ListenerRole::Broadcast);
    let acts = h.take();
    let f = frames_to(&acts, s);
    assert_eq!(f.len(), 1);
    let t = transport(&f[0]);
    assert_eq!(t.role, TransportRole::Authenticate);
    assert_eq!(&*t.origin, LOCAL);
    assert!(t.response.is_none() && t.params.is_empty());

    h.run_until(59.9);
    assert!(frames_to(&h.take(), s).is_empty());
    for tick in 1..=3 {
        h.run_until(60.0 * tick as f64);
        let acts = h.take();
        let f = frames_to(&acts, s);
        assert_eq!(f.len(), 1, "tick {tick}");
        assert_eq!(transport(&f[0]).role, TransportRole::IamAlive);
        answer(&mut h, s, "iamalive");
    }
    // Stop answering: the iamalive of tick 4 goes unanswered, tick 5 closes.
    h.run_until(240.0);
    assert_eq!(frames_to(&h.take(), s).len(), 1);
    h.run_until(299.0);
    assert!(closed(&h.take(), s).is_none());
    h.run_until(300.0);
    let acts = h.take();
    assert_eq!(closed(&acts, s), Some(&CloseReason::IamaliveUnanswered));
    assert!(frames_to(&acts, s).is_empty());
}

#[test]
fn feed_is_dropped_when_10_events_stay_unacknowledged_for_a_whole_period() {
    let mut h = Harness::broker();
    let s = h.accept(ListenerRole::Broadcast);
    for i in 0..10 {
        let a = h.accept(ListenerRole::Receive);
        h.input(a, &framed(&event_xml(&format!("ivo://example.org/s#{i}"))));
    }
    assert_eq!(forwards(&h.take()).len(), 10);
    // At the first tick the events are younger than a period: acks may be in flight.
    h.run_until(60.0);
    assert!(closed(&h.take(), s).is_none());
    answer(&mut h, s, "iamalive");
    h.run_until(120.0);
    assert_eq!(
        closed(&h.take(), s),
        Some(&CloseReason::OutstandingAcks(10))
    );

    // Nine overdue is tolerated; receipts (any Origin, as Comet) pay them off; events sent
    // after the last tick never count, however many.
    let mut h = Harness::broker();
    let s = h.accept(ListenerRole::Broadcast);
    let submit = |h: &mut Harness, i: u32| {
        let a = h.accept(ListenerRole::Receive);
        h.input(a, &framed(&event_xml(&format!("ivo://example.org/t#{i}"))));
    };
    for i in 0..11 {
        submit(&mut h, i);
    }
    ack(&mut h, s, "ivo://example.org/t#0");
    ack(&mut h, s, "whatever");
    h.run_until(60.0);
    answer(&mut h, s, "iamalive");
    for i in 11..100 {
        submit(&mut h, i);
    }
    h.take();
    h.run_until(120.0);
    let acts = h.take();
    assert!(closed(&acts, s).is_none(), "{acts:?}");
    let to_s: Vec<&Action> = acts.iter().filter(|a| a.frame().is_some()).collect();
    assert!(
        matches!(to_s.as_slice(), [Action::IamAlive { conn, .. }] if *conn == s),
        "{acts:?}"
    );
}

#[test]
fn subscriber_nak_keeps_connection_by_default_and_closes_in_comet_mode() {
    for (policy, keep) in [
        (SubscriberNak::Keep, true),
        (SubscriberNak::Disconnect, false),
    ] {
        let mut c = Config::new(Some(LOCAL.into()));
        c.timing.test_event_interval = None;
        c.policy.subscriber_nak = policy;
        let mut h = Harness::new(c);
        let s = h.accept(ListenerRole::Broadcast);
        let a = h.accept(ListenerRole::Receive);
        h.input(a, &framed(&event_xml("ivo://example.org/s#1")));
        h.take();
        let nak = "<trn:Transport xmlns:trn=\"x\" version=\"1.0\" role=\"nak\">\
             <Origin>ivo://example.org/s#1</Origin><TimeStamp>t</TimeStamp>\
             <Meta><Result>no thanks</Result></Meta></trn:Transport>";
        h.input(s, &framed(nak.as_bytes()));
        h.drain();
        assert!(h.events.iter().any(|e| matches!(e,
            Event::SubscriberNak { reason: Some(r), .. } if r == "no thanks")));
        let acts = h.take();
        assert_eq!(closed(&acts, s).is_none(), keep);
    }
}

#[test]
fn filters_from_authenticate_reply_select_events_and_test_events() {
    let mut c = Config::new(Some(LOCAL.into()));
    c.timing.test_event_interval = Some(Duration::from_secs(100));
    let mut h = Harness::new(c);
    // The first test event goes out at start-up, to nobody yet.
    h.run_until(0.0);
    assert!(forwards(&h.take()).is_empty());
    let plain = h.accept(ListenerRole::Broadcast);
    let picky = h.accept(ListenerRole::Broadcast);
    let tests_only = h.accept(ListenerRole::Broadcast);
    let auth = |filters: &[&str]| {
        let params: String = filters
            .iter()
            .map(|f| format!("<Param name=\"xpath-filter\" value=\"{f}\"/>"))
            .collect();
        format!(
            "<trn:Transport xmlns:trn=\"http://www.telescope-networks.org/xml/Transport/v1.1\" \
             version=\"1.0\" role=\"authenticate\"><Origin>{LOCAL}</Origin>\
             <Response>ivo://example.net/listener</Response><TimeStamp>2024-05-01T12:00:01Z</TimeStamp>\
             <Meta>{params}</Meta></trn:Transport>"
        )
    };
    h.input(picky, &framed(auth(&["has:#grb", "bad filter"]).as_bytes()));
    h.input(
        tests_only,
        &framed(auth(&["has:role=&quot;test&quot;"]).as_bytes()),
    );
    assert!(h.events.iter().any(|e| matches!(e,
        Event::FiltersSet { conn, accepted: 1, filters, refused }
            if *conn == picky && refused.len() == 1 && filters.len() == 1
                && &*filters[0] == "has:#grb")));
    h.take();
    for ivorn in ["ivo://example.org/s#grb1", "ivo://example.org/s#sn1"] {
        let a = h.accept(ListenerRole::Receive);
        h.input(a, &framed(&event_xml(ivorn)));
    }
    let f = forwards(&h.take());
    assert_eq!(
        f,
        vec![plain, picky, plain],
        "grb to plain+picky, sn to plain only"
    );

    h.run_until(100.0);
    let acts = h.take();
    assert_eq!(
        forwards(&acts),
        vec![plain, tests_only],
        "test event through filters"
    );
    let frame = acts
        .iter()
        .find_map(|a| match a {
            Action::Forward { frame, .. } => Some(frame),
            _ => None,
        })
        .unwrap();
    let Ok(Message::VoEvent(ev)) = vtp_core::message::parse(&frame[4..], &Default::default())
    else {
        panic!("test event parses")
    };
    assert!(
        ev.ivorn
            .starts_with("ivo://example.org/broker#TestEvent-2024-05-01T12:01:40Z"),
        "{}",
        ev.ivorn
    );
    assert_eq!(deliveries(&acts), 0, "test events skip handlers");
    // A test event enters the seen-index (not the store), so it cannot come back around a
    // cycle of brokers and be relayed twice (found by the simulator, seed 3).
    assert_eq!(h.node.seen_len(), 3, "the test event is in the seen-index");
    assert!(
        !acts.iter().any(|a| matches!(a, Action::Persist(_))),
        "test events are not persisted"
    );
}

#[test]
fn each_distinct_filter_is_evaluated_once_per_event() {
    let engine = SubstringEngine::default();
    let evaluations = engine.evaluations.clone();
    let mut c = Config::new(Some(LOCAL.into()));
    c.timing.test_event_interval = None;
    let mut h = Harness::with_engine(c, Box::new(engine));
    let mut subs = Vec::new();
    for _ in 0..50 {
        let s = h.accept(ListenerRole::Broadcast);
        let xml = format!(
            "<trn:Transport xmlns:trn=\"x\" version=\"1.0\" role=\"authenticate\"><Origin>{LOCAL}</Origin>\
             <TimeStamp>t</TimeStamp><Meta><Param name=\"xpath-filter\" value=\"has:grb\"/>\
             <Param name=\"xpath-filter\" value=\"has:sn\"/></Meta></trn:Transport>"
        );
        h.input(s, &framed(xml.as_bytes()));
        subs.push(s);
    }
    assert_eq!(h.node.distinct_filters(), 2);
    let a = h.accept(ListenerRole::Receive);
    h.input(a, &framed(&event_xml("ivo://example.org/s#grb")));
    assert_eq!(forwards(&h.take()).len(), 50);
    assert_eq!(
        evaluations.load(Ordering::Relaxed),
        2,
        "two distinct filters, two evaluations"
    );
    // Disconnecting every subscriber releases the compiled filters; then no evaluation at all.
    for s in subs {
        h.node.handle_closed(s, CloseReason::PeerClosed, h.now);
    }
    assert_eq!(h.node.distinct_filters(), 0);
    let plain = h.accept(ListenerRole::Broadcast);
    let a = h.accept(ListenerRole::Receive);
    h.input(a, &framed(&event_xml("ivo://example.org/s#grb2")));
    assert_eq!(forwards(&h.take()), vec![plain]);
    assert_eq!(
        evaluations.load(Ordering::Relaxed),
        2,
        "no filters in use: engine not called"
    );
}

// ------------------------------------------------------------ subscriber side (§3.2 as S)

fn subscriber(filters: &[&str]) -> Harness {
    let mut c = Config::new(Some("ivo://example.net/listener".into()));
    c.timing.test_event_interval = None;
    c.filters = filters.iter().map(|s| s.to_string()).collect();
    c.upstreams = vec![Upstream {
        endpoints: vec![DialAddr::tcp("127.0.0.1", PORT_SUBSCRIBE)],
    }];
    Harness::new(c)
}

fn connect_action(acts: &[Action]) -> Option<vtp_core::ConnId> {
    acts.iter().find_map(|a| match a {
        Action::Connect { conn, addr } => {
            assert_eq!(*addr, DialAddr::tcp("127.0.0.1", PORT_SUBSCRIBE));
            Some(*conn)
        }
        _ => None,
    })
}

#[test]
fn subscriber_answers_authenticate_with_filters_and_iamalive_and_never_speaks_first() {
    let mut h = subscriber(&["//Param[@name='Packet_Type' and @value=61]"]);
    h.run_until(0.0);
    let up = connect_action(&h.take()).expect("dials at start");
    h.node.handle_connected(up, h.now);
    assert!(
        h.take().iter().all(|a| a.frame().is_none()),
        "silent until spoken to"
    );

    let req = format!(
        "<trn:Transport xmlns:trn=\"http://www.telescope-networks.org/xml/Transport/v1.1\" \
         version=\"1.0\" role=\"authenticate\"><Origin>{LOCAL}</Origin>\
         <TimeStamp>2024-05-01T12:00:00Z</TimeStamp></trn:Transport>"
    );
    h.input(up, &framed(req.as_bytes()));
    let f = frames_to(&h.take(), up);
    let t = transport(&f[0]);
    assert_eq!(t.role, TransportRole::Authenticate);
    assert_eq!(&*t.origin, LOCAL, "Origin copied");
    assert_eq!(t.response.as_deref(), Some("ivo://example.net/listener"));
    assert_eq!(
        t.xpath_filters().collect::<Vec<_>>(),
        ["//Param[@name='Packet_Type' and @value=61]"]
    );

    answer(&mut h, up, "iamalive");
    let f = frames_to(&h.take(), up);
    let t = transport(&f[0]);
    assert_eq!(t.role, TransportRole::IamAlive);
    assert_eq!(&*t.origin, LOCAL);
}

#[test]
fn subscriber_acks_new_duplicate_and_invalid_events_and_relays_only_new_valid_ones() {
    let mut h = subscriber(&[]);
    h.run_until(0.0);
    let up = connect_action(&h.take()).unwrap();
    h.node.handle_connected(up, h.now);
    let good = framed(&event_xml("ivo://example.org/s#1"));
    let bad = framed(&event_xml("ivo://a2#1"));
    for (bytes, delivered) in [(&good, 1), (&good, 0), (&bad, 0)] {
        h.input(up, bytes);
        let acts = h.take();
        let f = frames_to(&acts, up);
        assert_eq!(f.len(), 1);
        assert_eq!(transport(&f[0]).role, TransportRole::Ack);
        assert_eq!(deliveries(&acts), delivered);
    }
}

#[test]
fn subscriber_reconnects_after_120s_of_silence_with_backoff_reset_only_after_5s() {
    let mut h = subscriber(&[]);
    h.run_until(0.0);
    let up = connect_action(&h.take()).unwrap();
    h.node.handle_connected(up, h.now);
    h.run_until(100.0);
    answer(&mut h, up, "iamalive"); // resets the silence timer
    h.run_until(219.9);
    assert!(closed(&h.take(), up).is_none());
    // Garbage does not count as a sign of life.
    h.input(up, &framed(b"not xml"));
    h.run_until(220.0);
    let acts = h.take();
    assert_eq!(closed(&acts, up), Some(&CloseReason::UpstreamSilent));

    // It lived 220 s: the first retry comes after about 1 s (initial delay ±25 %).
    h.run_until(221.5);
    let up2 = connect_action(&h.take()).expect("redialled");
    assert_ne!(up2, up);
    // Refused at once three times: delays grow (≈2, 4, 8 s) because none lived 5 s.
    let mut last = h.elapsed();
    let mut gaps = Vec::new();
    let mut conn = up2;
    for _ in 0..3 {
        h.node.handle_closed(conn, CloseReason::PeerClosed, h.now);
        let mut t = last;
        let next = loop {
            t += 0.05;
            h.run_until(t);
            if let Some(c) = connect_action(&h.take()) {
                break c;
            }
            assert!(t < last + 100.0);
        };
        gaps.push(h.elapsed() - last);
        last = h.elapsed();
        conn = next;
    }
    assert!(gaps[0] >= 1.5 && gaps[0] <= 2.6, "{gaps:?}");
    assert!(gaps[1] >= 3.0 && gaps[1] <= 5.1, "{gaps:?}");
    assert!(gaps[2] >= 6.0 && gaps[2] <= 10.1, "{gaps:?}");
}

#[test]
fn same_element_bytes_from_two_upstreams_are_forwarded_once() {
    let mut c = Config::new(Some(LOCAL.into()));
    c.timing.test_event_interval = None;
    c.upstreams = vec![
        Upstream {
            endpoints: vec![DialAddr::tcp("127.0.0.1", PORT_SUBSCRIBE)],
        },
        Upstream {
            endpoints: vec![DialAddr::tcp("127.0.0.2", PORT_SUBSCRIBE)],
        },
    ];
    let mut h = Harness::new(c);
    h.run_until(0.0);
    let ups: Vec<_> = h
        .take()
        .iter()
        .filter_map(|a| match a {
            Action::Connect { conn, .. } => Some(*conn),
            _ => None,
        })
        .collect();
    assert_eq!(ups.len(), 2);
    for &u in &ups {
        h.node.handle_connected(u, h.now);
    }
    let s = h.accept(ListenerRole::Broadcast);
    h.take();
    let ev = event_xml("ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_1");
    // The second copy has a different declaration and trailing comment: same element bytes.
    let mut other = b"<?xml version='1.0' encoding='UTF-8'?>".to_vec();
    other.extend_from_slice(&ev[ev.iter().position(|&b| b == b'\n').unwrap()..]);
    other.extend_from_slice(b"<!-- relayed -->\n");
    h.input(ups[0], &framed(&ev));
    h.input(ups[1], &framed(&other));
    let acts = h.take();
    assert_eq!(forwards(&acts), vec![s]);
    assert_eq!(deliveries(&acts), 1);
    // Both upstreams got their ack.
    assert_eq!(frames_to(&acts, ups[0]).len(), 1);
    assert_eq!(frames_to(&acts, ups[1]).len(), 1);
}

#[test]
fn seen_entries_expire_after_30_virtual_days() {
    let mut h = Harness::broker();
    let s = h.accept(ListenerRole::Broadcast);
    let ev = framed(&event_xml("ivo://example.org/s#old"));
    let a = h.accept(ListenerRole::Receive);
    h.input(a, &ev);
    assert_eq!(h.node.seen_len(), 1);
    // Keep the subscriber alive across the days with answers at each tick.
    let day = 86_400.0;
    let mut t = 0.0;
    while t < 29.0 * day {
        t += 60.0;
        h.run_until(t);
        answer(&mut h, s, "iamalive");
        ack(&mut h, s, "x");
    }
    assert_eq!(h.node.seen_len(), 1, "still remembered on day 29");
    h.take();
    while t < 30.0 * day + 6.0 * 3600.0 {
        t += 60.0;
        h.run_until(t);
        answer(&mut h, s, "iamalive");
    }
    assert_eq!(
        h.node.seen_len(),
        0,
        "expired by the first prune after day 30"
    );
    assert!(h.take().iter().any(|x| matches!(x, Action::Expire { .. })));
    let a = h.accept(ListenerRole::Receive);
    h.input(a, &ev);
    assert_eq!(forwards(&h.take()), vec![s], "a new sighting after expiry");
}

// ------------------------------------------------------------------ author role (§3.1 as A)

#[test]
fn author_submission_succeeds_on_matching_ack_and_fails_cleanly_otherwise() {
    let ev = event_xml("ivo://example.org/s#7");
    // ack
    let mut h = Harness::new(Config::default());
    let c = h.node.submit(submit_addr(), &ev, h.now).unwrap();
    assert!(matches!(
        h.take().as_slice(),
        [Action::Connect { addr, .. }] if *addr == submit_addr()
    ));
    h.node.handle_connected(c, h.now);
    let acts = h.take();
    assert_eq!(&frames_to(&acts, c)[0][4..], &ev[..]);
    // An ack for another event is not ours.
    ack(&mut h, c, "ivo://example.org/s#8");
    assert!(closed(&h.take(), c).is_none());
    ack(&mut h, c, "ivo://example.org/s#7");
    h.drain();
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, Event::SubmissionAcked { .. }))
    );
    assert_eq!(closed(&h.actions, c), Some(&CloseReason::Done));

    // timeout
    let mut h = Harness::new(Config::default());
    let c = h.node.submit(submit_addr(), &ev, h.now).unwrap();
    h.node.handle_connected(c, h.now);
    h.run_until(20.0);
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::SubmissionFailed {
            reason: CloseReason::ReceiptTimeout,
            ..
        }
    )));

    // early close
    let mut h = Harness::new(Config::default());
    let c = h.node.submit(submit_addr(), &ev, h.now).unwrap();
    h.node.handle_closed(c, CloseReason::PeerClosed, h.now);
    h.drain();
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::SubmissionFailed {
            reason: CloseReason::PeerClosed,
            ..
        }
    )));

    // not an event
    let mut h = Harness::new(Config::default());
    assert!(h.node.submit(submit_addr(), b"<nope", h.now).is_err());

    // after shutdown: refused, nothing dialled
    let mut h = Harness::new(Config::default());
    h.node.shutdown(h.now);
    h.drain();
    assert_eq!(
        h.node.submit(submit_addr(), &ev, h.now),
        Err(vtp_core::node::SubmitError::ShuttingDown)
    );
    assert!(h.take().is_empty(), "no Connect after shutdown");
}

/// The broker an author submits to: `127.0.0.1` on the submit port.
fn submit_addr() -> DialAddr {
    DialAddr::tcp("127.0.0.1", PORT_SUBMIT)
}

#[test]
fn accepts_beyond_the_connection_limit_and_off_whitelist_are_refused_silently() {
    let mut c = Config::new(Some(LOCAL.into()));
    c.timing.test_event_interval = None;
    c.limits.connections_max = 2;
    c.author_whitelist = vtp_core::whitelist::Whitelist::new(vec!["10.0.0.0/8".parse().unwrap()]);
    let mut h = Harness::new(c);
    let local: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let inside: std::net::IpAddr = "::ffff:10.1.2.3".parse().unwrap();
    assert!(
        h.node
            .handle_accept(
                ListenerRole::Receive,
                vtp_core::Peer::Tcp(std::net::SocketAddr::new(local, 40000)),
                h.now
            )
            .is_none()
    );
    let a = h.node.handle_accept(
        ListenerRole::Receive,
        vtp_core::Peer::Tcp(std::net::SocketAddr::new(inside, 40000)),
        h.now,
    );
    assert!(
        a.is_some(),
        "IPv4-mapped address matched against the IPv4 whitelist"
    );
    let s = h.node.handle_accept(
        ListenerRole::Broadcast,
        vtp_core::Peer::Tcp(std::net::SocketAddr::new(local, 40000)),
        h.now,
    );
    assert!(s.is_some());
    // The limit is per listener role: the author above does not take a subscriber slot.
    let s2 = h.node.handle_accept(
        ListenerRole::Broadcast,
        vtp_core::Peer::Tcp(std::net::SocketAddr::new(local, 40000)),
        h.now,
    );
    assert!(s2.is_some());
    assert!(
        h.node
            .handle_accept(
                ListenerRole::Broadcast,
                vtp_core::Peer::Tcp(std::net::SocketAddr::new(local, 40000)),
                h.now
            )
            .is_none()
    );
    h.drain();
    let refusals: Vec<&str> = h
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Refused { reason, .. } => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(refusals.len(), 2);
    assert!(
        refusals[0].contains("non-whitelisted 127.0.0.1"),
        "{refusals:?}"
    );
    assert!(refusals[1].contains("connection limit"), "{refusals:?}");
    // Nothing was ever written to a refused peer (they have no handle); a slot frees on close.
    h.node
        .handle_closed(s.unwrap(), CloseReason::PeerClosed, h.now);
    assert!(
        h.node
            .handle_accept(
                ListenerRole::Broadcast,
                vtp_core::Peer::Tcp(std::net::SocketAddr::new(local, 40000)),
                h.now
            )
            .is_some()
    );
}

// ------------------------------------------------------------------ seen-index fairness

/// One submission from an author at `ip`; returns the actions and events it caused.
fn submit_from(h: &mut Harness, ip: &str, ev: &[u8]) -> (Vec<Action>, Vec<Event>) {
    let peer = vtp_core::Peer::Tcp(std::net::SocketAddr::new(
        ip.parse().expect("an IP address"),
        40000,
    ));
    let a = h
        .node
        .handle_accept(ListenerRole::Receive, peer, h.now)
        .expect("accepted");
    h.input(a, &framed(ev));
    h.drain();
    let events = std::mem::take(&mut h.events);
    (h.take(), events)
}

#[test]
fn a_flooding_author_cannot_evict_or_block_another_and_is_naked_with_the_reason() {
    let mut c = broker_config();
    c.limits.seen_entries_max = 10;
    let mut h = Harness::new(c);
    let s = h.accept(ListenerRole::Broadcast);
    h.take();
    let real = event_xml("ivo://example.org/real#1");
    let (acts, _) = submit_from(&mut h, "192.0.2.1", &real);
    assert_eq!(forwards(&acts), vec![s]);

    let mut naks = Vec::new();
    let mut levels = Vec::new();
    for i in 0..30 {
        let ev = event_xml(&format!("ivo://example.org/flood#{i}"));
        let (acts, events) = submit_from(&mut h, "198.51.100.7", &ev);
        for e in events {
            if let Event::SeenIndexLevel {
                level,
                entries,
                max,
            } = e
            {
                levels.push((level, entries, max));
            }
        }
        if let [frame] = &frames_to(&acts, receipt_conn(&acts))[..] {
            let t = transport(frame);
            if t.role == TransportRole::Nak {
                assert!(forwards(&acts).is_empty(), "a naked event is not forwarded");
                naks.push(t.result.expect("reason").into_owned());
            }
        }
    }
    // 9 flood entries fill the index; the other 21 are naked, and evict nothing.
    assert_eq!(naks.len(), 21);
    assert!(
        naks.iter()
            .all(|r| r == "Event rejected: seen-index quota for this source exhausted; try later")
    );
    assert_eq!(h.node.seen_len(), 10);
    assert_eq!(
        levels,
        [(SeenLevel::High, 8, 10), (SeenLevel::Full, 10, 10)],
        "80 % and 100 % reported once each"
    );

    // The real author's entry survived the flood: resubmitted, it is still a duplicate.
    let (acts, events) = submit_from(&mut h, "192.0.2.1", &real);
    assert!(forwards(&acts).is_empty(), "not forwarded again");
    assert!(events.iter().any(|e| matches!(e, Event::Duplicate { .. })));
    // And it is not blocked: its new event is accepted, the flooder's oldest entry gives way.
    let (acts, _) = submit_from(&mut h, "192.0.2.1", &event_xml("ivo://example.org/real#2"));
    assert_eq!(forwards(&acts), vec![s]);
    assert!(acts.iter().any(|a| matches!(a, Action::Forget(_))));
    let flood = vtp_core::Peer::Tcp(std::net::SocketAddr::new(
        "198.51.100.7".parse().expect("an IP address"),
        40000,
    ));
    assert_eq!(h.node.seen_len_of_author(flood), 8);
}

/// The intake connection an action list answers (the one its first receipt goes to).
fn receipt_conn(acts: &[Action]) -> vtp_core::ConnId {
    acts.iter()
        .find_map(|a| match a {
            Action::Ack { conn, .. } | Action::Nak { conn, .. } => Some(*conn),
            _ => None,
        })
        .expect("a receipt")
}
