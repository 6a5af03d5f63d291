//! `Node::reconfigure`: a new configuration taken at run time without dropping a connection;
//! what cannot change live is kept and reported; a bad one is refused and the old one stays.

mod common;

use std::time::Duration;

use common::*;
use vtp_core::config::{DuplicateReply, Durability, Upstream};
use vtp_core::endpoint::{DialAddr, PORT_SUBSCRIBE};
use vtp_core::message::TransportRole;
use vtp_core::node::{ConfigError, Fixed};
use vtp_core::whitelist::Whitelist;
use vtp_core::{Action, Config, ListenerRole, Peer};

fn ip(s: &str) -> Peer {
    Peer::Tcp(std::net::SocketAddr::new(
        s.parse().expect("an IP address"),
        40000,
    ))
}

fn only(net: &str) -> Whitelist {
    Whitelist::new(vec![net.parse().expect("a network")])
}

#[test]
fn a_new_author_whitelist_applies_to_new_connections_and_an_open_feed_keeps_receiving() {
    let mut h = Harness::broker();
    let feed = h.accept(ListenerRole::Broadcast);
    let early = h
        .node
        .handle_accept(ListenerRole::Receive, ip("192.0.2.1"), h.now)
        .expect("everyone may submit at first");
    h.take();

    let mut c = broker_config();
    c.author_whitelist = only("10.0.0.0/8");
    c.subscriber_whitelist = only("10.0.0.0/8");
    let done = h.node.reconfigure(c, h.now).expect("valid");
    assert!(done.ignored.is_empty(), "{done:?}");
    assert!(h.take().is_empty(), "nothing is closed or sent");

    let refused = h
        .node
        .handle_accept(ListenerRole::Receive, ip("192.0.2.1"), h.now);
    assert_eq!(refused, None, "a new author outside the new whitelist");
    assert!(
        h.node
            .handle_accept(ListenerRole::Receive, ip("10.1.2.3"), h.now)
            .is_some()
    );
    // The author accepted before the reload still submits, and the feed opened before it
    // (outside the new subscriber whitelist) still receives the event.
    h.input(early, &framed(&event_xml("ivo://example.org/s#1")));
    let acts = h.take();
    assert_eq!(
        transport(&frames_to(&acts, early)[0]).role,
        TransportRole::Ack
    );
    assert_eq!(forwards(&acts), vec![feed]);
}

#[test]
fn fixed_settings_keep_their_running_values_and_are_reported_in_order() {
    let mut h = Harness::broker();
    let mut c = broker_config();
    c.local_ivo = Some("ivo://example.org/other".into());
    c.upstreams = vec![Upstream {
        endpoints: vec![DialAddr::tcp("192.0.2.9", PORT_SUBSCRIBE)],
    }];
    c.limits.seen_entries_max = 7;
    c.policy.durability = Durability::Async;
    c.policy.duplicate_reply = DuplicateReply::Nak;
    let done = h.node.reconfigure(c, h.now).expect("valid");
    assert_eq!(
        done.ignored,
        [
            Fixed::LocalIvo,
            Fixed::Upstreams,
            Fixed::SeenEntriesMax,
            Fixed::Durability
        ]
    );
    let now = h.node.config();
    assert_eq!(now.local_ivo.as_deref(), Some(LOCAL));
    assert!(now.upstreams.is_empty());
    assert_eq!(now.limits.seen_entries_max, 500_000);
    assert_eq!(now.policy.durability, Durability::BeforeReply);
    assert_eq!(
        now.policy.duplicate_reply,
        DuplicateReply::Nak,
        "taken live"
    );
    assert!(h.take().is_empty(), "no dial for the ignored upstream");
}

#[test]
fn a_config_the_node_cannot_run_with_is_refused_and_the_old_one_stays() {
    let mut h = Harness::broker();
    let mut good = broker_config();
    good.author_whitelist = only("10.0.0.0/8");
    let _ = h.node.reconfigure(good, h.now).expect("valid");
    for bad in [
        {
            let mut c = broker_config();
            c.timing.iamalive_period = Duration::ZERO;
            c
        },
        {
            let mut c = broker_config();
            c.filters = vec!["x".repeat(c.limits.filter_len_max + 1)];
            c
        },
        Config::new(Some("not an ivoid".into())),
    ] {
        let err = h.node.reconfigure(bad, h.now).expect_err("refused");
        assert!(
            matches!(
                err,
                ConfigError::IamalivePeriod { .. }
                    | ConfigError::FilterTooLong { .. }
                    | ConfigError::LocalIvo { .. }
            ),
            "{err:?}"
        );
    }
    assert_eq!(
        h.node.config().author_whitelist,
        only("10.0.0.0/8"),
        "the last good config runs"
    );
    assert_eq!(
        h.node
            .handle_accept(ListenerRole::Receive, ip("192.0.2.1"), h.now),
        None
    );
}

#[test]
fn new_own_filters_are_sent_at_the_next_authenticate() {
    let mut c = upstream_config();
    c.filters = vec!["old".into()];
    let mut h = Harness::new(c.clone());
    let (up, _feed) = h.connect_upstream_and_feed();
    c.filters = vec!["new".into()];
    let _ = h.node.reconfigure(c, h.now).expect("valid");
    assert!(h.take().is_empty(), "the upstream is not disturbed");
    let req = "<trn:Transport xmlns:trn=\"http://www.telescope-networks.org/xml/Transport/v1.1\" \
         version=\"1.0\" role=\"authenticate\"><Origin>ivo://example.org/up</Origin>\
         <TimeStamp>2024-05-01T12:00:00Z</TimeStamp></trn:Transport>";
    h.input(up, &framed(req.as_bytes()));
    let f = frames_to(&h.take(), up);
    let t = transport(&f[0]);
    assert_eq!(t.role, TransportRole::Authenticate);
    assert_eq!(t.xpath_filters().collect::<Vec<_>>(), ["new"]);
}

#[test]
fn a_shorter_iamalive_period_brings_the_next_tick_forward_and_test_events_can_be_turned_on() {
    let mut h = Harness::broker();
    let feed = h.accept(ListenerRole::Broadcast);
    h.take();
    h.run_until(10.0);
    let mut c = broker_config();
    c.timing.iamalive_period = Duration::from_secs(20);
    let _ = h.node.reconfigure(c.clone(), h.now).expect("valid");
    h.run_until(29.9);
    assert!(frames_to(&h.take(), feed).is_empty());
    h.run_until(30.0);
    let f = frames_to(&h.take(), feed);
    assert_eq!(
        transport(&f[0]).role,
        TransportRole::IamAlive,
        "at 10 + 20 s"
    );

    c.timing.test_event_interval = Some(Duration::from_secs(3600));
    let _ = h.node.reconfigure(c, h.now).expect("valid");
    h.run_until(30.0);
    let acts = h.take();
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::Forward { conn, .. } if *conn == feed)),
        "a test event at once: {acts:?}"
    );
}
