//! A peer that keeps breaking the protocol: the node counts each connection's violations in a
//! window of virtual time, reports only the first few of each window, and closes the
//! connection past `Limits::violations_max`.

mod common;

use std::time::Duration;

use common::*;
use vtp_core::{Action, CloseReason, Config, ConnId, Event, ListenerRole};

const MAX: u32 = 20;
const LOGGED: u32 = 3;
const WINDOW: Duration = Duration::from_secs(10);

fn config(base: Config) -> Config {
    let mut c = base;
    c.limits.violations_max = MAX;
    c.limits.violations_logged_max = LOGGED;
    c.limits.violations_window = WINDOW;
    c
}

/// `n` unparsable frames in one read.
fn garbage(n: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.extend_from_slice(&framed(b"not xml"));
    }
    out
}

/// What the node reported about `conn` since the last call: (violations reported,
/// suppression notices, close reason if closed).
fn outcome(h: &mut Harness, conn: ConnId) -> (usize, usize, Option<CloseReason>) {
    let acts: Vec<Action> = std::mem::take(&mut h.actions);
    let events = std::mem::take(&mut h.events);
    let reported = events
        .iter()
        .filter(|e| matches!(e, Event::ProtocolViolation { conn: c, .. } if *c == conn))
        .count();
    let suppressed = events
        .iter()
        .filter(|e| matches!(e, Event::ViolationsSuppressed { conn: c, .. } if *c == conn))
        .count();
    (reported, suppressed, closed(&acts, conn).cloned())
}

#[test]
fn max_violations_in_a_window_keep_the_feed_and_one_more_closes_it() {
    let mut h = Harness::new(config(broker_config()));
    let feed = h.accept(ListenerRole::Broadcast);
    h.take();
    h.events.clear();
    for _ in 0..MAX {
        h.input(feed, &garbage(1));
    }
    assert_eq!(outcome(&mut h, feed), (LOGGED as usize, 1, None));
    assert_eq!(h.node.feeds(), 1);

    h.run_until(9.9);
    h.input(feed, &garbage(1));
    let (reported, suppressed, reason) = outcome(&mut h, feed);
    assert_eq!(
        (reported, suppressed),
        (0, 0),
        "still suppressed in the window"
    );
    let reason = reason.expect("closed past the limit");
    assert_eq!(
        reason,
        CloseReason::TooManyViolations {
            count: MAX + 1,
            window: WINDOW
        }
    );
    assert_eq!(reason.to_string(), "21 protocol violations within 10 s");
    assert_eq!(h.node.feeds(), 0);
}

#[test]
fn max_violations_spread_over_two_windows_do_not_close() {
    let mut h = Harness::new(config(broker_config()));
    let feed = h.accept(ListenerRole::Broadcast);
    h.take();
    h.events.clear();
    h.input(feed, &garbage(MAX));
    assert_eq!(outcome(&mut h, feed), (LOGGED as usize, 1, None));
    // The window ends 10 s after its first violation: the next one starts a new window, and
    // its first violations are reported again.
    h.run_until(10.0);
    h.input(feed, &garbage(MAX));
    assert_eq!(outcome(&mut h, feed), (LOGGED as usize, 1, None));
    assert_eq!(h.node.feeds(), 1);
    h.run_until(19.9);
    h.input(feed, &garbage(1));
    assert!(
        outcome(&mut h, feed).2.is_some(),
        "the second window is full"
    );
}

#[test]
fn a_flood_in_one_read_is_closed_with_a_bounded_number_of_reports() {
    let mut h = Harness::broker();
    let defaults = h.node.config().limits;
    let feed = h.accept(ListenerRole::Broadcast);
    h.take();
    h.events.clear();
    h.input(feed, &garbage(10_000));
    let (reported, suppressed, reason) = outcome(&mut h, feed);
    assert_eq!(reported, defaults.violations_logged_max as usize);
    assert_eq!(suppressed, 1);
    assert_eq!(
        reason,
        Some(CloseReason::TooManyViolations {
            count: defaults.violations_max + 1,
            window: defaults.violations_window
        })
    );
}

#[test]
fn an_upstream_sending_garbage_is_closed_too() {
    let mut h = Harness::new(config(upstream_config()));
    let (up, _feed) = h.connect_upstream_and_feed();
    h.take();
    h.events.clear();
    h.input(up, &garbage(MAX));
    assert_eq!(outcome(&mut h, up), (LOGGED as usize, 1, None));
    h.input(up, &garbage(1));
    assert!(matches!(
        outcome(&mut h, up).2,
        Some(CloseReason::TooManyViolations { count, .. }) if count == MAX + 1
    ));
}

#[test]
fn an_upstream_whose_events_the_full_seen_index_refuses_is_not_closed_for_it() {
    // One entry in all: an author's event fills it, so the upstream's share is zero and each of
    // its events is refused. That is this node's state, not the upstream's fault.
    let mut c = config(upstream_config());
    c.limits.seen_entries_max = 1;
    let mut h = Harness::new(c);
    let (up, _feed) = h.connect_upstream_and_feed();
    let author = h.accept(ListenerRole::Receive);
    h.input(author, &framed(&event_xml("ivo://example.org/author#1")));
    h.take();
    h.events.clear();
    for i in 0..(MAX + 5) {
        let ev = event_xml(&format!("ivo://example.org/up#{i}"));
        h.input(up, &framed(&ev));
    }
    let (reported, _, closed) = outcome(&mut h, up);
    assert_eq!(closed, None, "the upstream is kept");
    assert!(reported >= 1, "the refusal is reported");
    assert!(reported <= LOGGED as usize, "and rate-limited: {reported}");
}
