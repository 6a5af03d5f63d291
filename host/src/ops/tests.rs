#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use vtp_core::driver::{Driver, Effects};
use vtp_core::filter::NoFilterEngine;
use vtp_core::outbox::OutboxLimits;
use vtp_core::{CloseReason, Config, ConnId, ListenerRole, Node, Peer};

use super::*;
use crate::effects::HostEffects;

const AUTHOR: Peer = Peer::Tcp(std::net::SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7)),
    40007,
));
const READER: Peer = Peer::Tcp(std::net::SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)),
    40001,
));

/// A broker driven in memory, its effects feeding fresh metrics.
struct Rig {
    driver: Driver,
    fx: HostEffects,
    metrics: Metrics,
    now: Instant,
}

impl Rig {
    fn new() -> Self {
        Self::with(Config::new(Some("ivo://vtp.test/broker".into())))
    }

    fn with(mut config: Config) -> Self {
        let now = Instant::now();
        config.timing.test_event_interval = None;
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| u.endpoints.iter().map(ToString::to_string).collect())
            .collect();
        let node = Node::new(
            config,
            Box::new(NoFilterEngine),
            1,
            now,
            Duration::from_secs(1_700_000_000),
        )
        .unwrap();
        let (metrics, observer) = Metrics::new(NodeInfo {
            role: "broker",
            upstreams,
            ..NodeInfo::default()
        });
        Self {
            driver: Driver::new(node, OutboxLimits::default()),
            fx: HostEffects::new().with_metrics(observer),
            metrics,
            now,
        }
    }

    fn accept(&mut self, role: ListenerRole, peer: Peer) -> ConnId {
        let conn = self
            .driver
            .handle_accept(role, peer, self.now, &mut self.fx)
            .unwrap();
        self.settle();
        conn
    }

    /// One submission on a new author connection.
    fn submit(&mut self, payload: &[u8]) {
        let author = self.accept(ListenerRole::Receive, AUTHOR);
        let frame = vtp_core::frame::encode(payload).unwrap();
        self.driver
            .handle_input(author, &frame, self.now, &mut self.fx);
        self.settle();
    }

    /// A turn of the loop: the wake-up and the writes.
    fn settle(&mut self) {
        self.driver.handle_wakeup(self.now, &mut self.fx);
        while let Some(c) = self.driver.poll_writable() {
            let _ = self
                .driver
                .flush(c, &mut Vec::new(), self.now, &mut self.fx);
        }
    }
}

fn event(n: u32) -> Vec<u8> {
    format!(
        "<VOEvent xmlns='http://www.ivoa.net/xml/VOEvent/v2.0' \
         ivorn='ivo://example.org/a#{n}' version='2.0'/>"
    )
    .into_bytes()
}

#[test]
fn the_counts_follow_the_node_s_events() {
    let mut rig = Rig::new();
    let feeds = [
        rig.accept(ListenerRole::Broadcast, READER),
        rig.accept(ListenerRole::Broadcast, READER),
    ];
    rig.submit(&event(1));
    rig.submit(&event(2));
    rig.submit(&event(1));
    rig.submit(b"<not-xml");
    let s = rig.metrics.snapshot();
    assert_eq!(s.received, [4, 0, 0]);
    assert_eq!(s.accepted, [2, 0, 0]);
    assert_eq!(s.duplicates, [1, 0, 0]);
    assert_eq!(s.naks_total(), 1);
    assert!(s.naks.contains(&("unparsable", 1)), "{:?}", s.naks);
    assert_eq!(s.forwards, 4, "two events to two subscribers");
    assert_eq!(s.subscribers(), 2);
    assert_eq!(s.connections[0], 0, "the authors are gone");
    assert!(s.last_event_unix.is_some());
    assert!(s.loop_turns >= 6);
    assert!(s.loop_idle < Duration::from_secs(5));

    let (list, count, upstreams) = rig.metrics.status(10);
    assert_eq!(count, 2);
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].conn, feeds[0]);
    assert_eq!(list[0].peer, Some(READER));
    assert!(list[0].since_unix_ms > 0);
    assert!(upstreams.is_empty());
    let (list, count, _) = rig.metrics.status(1);
    assert_eq!(
        (list.len(), count),
        (1, 2),
        "the list is capped, the count is not"
    );

    rig.driver
        .handle_closed(feeds[1], CloseReason::PeerClosed, rig.now, &mut rig.fx);
    rig.settle();
    assert_eq!(rig.metrics.snapshot().subscribers(), 1);
    assert_eq!(rig.metrics.status(10).1, 1);
}

#[test]
fn a_tls_subscriber_is_listed_with_its_certificate_identity() {
    let mut rig = Rig::new();
    let feed = rig
        .driver
        .handle_accept_tls(ListenerRole::Broadcast, READER, rig.now, &mut rig.fx)
        .unwrap();
    rig.settle();
    assert_eq!(
        rig.metrics.snapshot().subscribers(),
        0,
        "not up before its handshake"
    );
    let identity = vtp_core::identity::Identity {
        common_name: Some("reader.example.org".into()),
        dns_names: Vec::new(),
        sha256: [0xab; 32],
    };
    rig.driver
        .handle_secured(feed, Some(identity.clone()), rig.now, &mut rig.fx);
    rig.settle();
    let (list, count, _) = rig.metrics.status(10);
    assert_eq!(count, 1);
    assert_eq!(list[0].identity, Some(identity.to_string()));
    // A handshake that never completes is never counted, nor uncounted.
    let other = rig
        .driver
        .handle_accept_tls(ListenerRole::Broadcast, READER, rig.now, &mut rig.fx)
        .unwrap();
    rig.driver.handle_closed(
        other,
        CloseReason::Tls("bad certificate".into()),
        rig.now,
        &mut rig.fx,
    );
    rig.settle();
    assert_eq!(rig.metrics.snapshot().subscribers(), 1);
}

#[test]
fn an_upstream_s_state_last_error_and_events_are_followed() {
    let mut config = Config::new(Some("ivo://vtp.test/broker".into()));
    config.upstreams.push(vtp_core::config::Upstream {
        endpoints: vec![vtp_core::endpoint::DialAddr::tcp("192.0.2.50", 8099)],
    });
    let mut rig = Rig::with(config);
    rig.settle();
    let (dial, _) = rig
        .driver
        .poll_dial()
        .expect("the upstream is dialled at start");
    let (_, _, up) = rig.metrics.status(10);
    assert_eq!(up[0].state, UpstreamState::Connecting);
    rig.driver.handle_closed(
        dial,
        CloseReason::ConnectFailed("connection refused".into()),
        rig.now,
        &mut rig.fx,
    );
    rig.settle();
    let (_, _, up) = rig.metrics.status(10);
    assert_eq!(up[0].state, UpstreamState::Retrying);
    assert_eq!(
        up[0].last_error.as_deref(),
        Some("connect failed: connection refused")
    );
    assert_eq!(up[0].next_endpoint.as_deref(), Some("192.0.2.50:8099"));
    let s = rig.metrics.snapshot();
    assert_eq!((s.upstreams[0].up, s.upstreams[0].reconnects), (false, 1));
    assert_eq!(s.upstreams[0].label, "192.0.2.50:8099");

    rig.now += Duration::from_secs(120);
    rig.settle();
    let (dial, _) = rig
        .driver
        .poll_dial()
        .expect("dialled again after the back-off");
    rig.driver.handle_connected(dial, rig.now, &mut rig.fx);
    let frame = vtp_core::frame::encode(&event(7)).unwrap();
    rig.driver.handle_input(dial, &frame, rig.now, &mut rig.fx);
    rig.settle();
    let (_, _, up) = rig.metrics.status(10);
    assert_eq!(up[0].state, UpstreamState::Up);
    assert_eq!(up[0].last_error, None);
    let s = rig.metrics.snapshot();
    assert!(s.upstreams[0].up);
    assert!(s.upstreams[0].last_event_unix.is_some());
    assert_eq!((s.accepted, s.received), ([0, 1, 0], [0, 1, 0]));
    assert_eq!(s.connections[2], 1);
}

#[test]
fn a_board_held_by_a_reader_never_blocks_the_loop_and_catches_up_on_a_later_turn() {
    let mut rig = Rig::new();
    let held = rig.metrics.0.board.lock().unwrap();
    let feed = rig
        .driver
        .handle_accept(ListenerRole::Broadcast, READER, rig.now, &mut rig.fx)
        .unwrap();
    assert_eq!(rig.metrics.snapshot().subscribers(), 1, "the counters move");
    drop(held);
    assert_eq!(rig.metrics.status(10).1, 0, "the board waits");
    rig.settle();
    let (list, count, _) = rig.metrics.status(10);
    assert_eq!(count, 1);
    assert_eq!(list[0].conn, feed);
}

#[test]
fn health_names_a_loop_that_does_not_turn() {
    let mut rig = Rig::new();
    rig.settle();
    assert_eq!(rig.metrics.health(Duration::from_secs(60)), Health::Ok);
    match rig.metrics.health(Duration::ZERO) {
        Health::Unhealthy(reasons) => {
            assert!(
                reasons[0].starts_with("event loop has not turned for"),
                "{reasons:?}"
            );
        }
        Health::Ok => panic!("a zero threshold is always passed"),
    }
    assert!(!rig.metrics.wake_loop(), "no runtime gave a waker");
    let turns = rig.metrics.loop_turns();
    rig.fx.heartbeat();
    assert!(rig.metrics.loop_turned_since(turns));
}

#[test]
fn the_stats_line_gives_what_changed_and_what_is() {
    let mut rig = Rig::new();
    let before = rig.metrics.snapshot();
    rig.accept(ListenerRole::Broadcast, READER);
    rig.submit(&event(1));
    rig.submit(&event(1));
    let now = rig.metrics.snapshot();
    let line = stats::line(&before, &now, Duration::from_secs(300));
    assert_eq!(
        line,
        "stats (last 300 s): 2 events in (2 from authors, 0 from upstreams), 1 accepted, 1 \
         forwarded, 0 naked, 1 duplicates; 1 subscribers, 0 of 0 upstreams up"
    );
}

#[test]
fn the_resident_memory_is_read_from_proc() {
    let rss = resident_memory_bytes().unwrap();
    assert!(rss > 1 << 20, "{rss}");
}

#[cfg(feature = "http")]
#[test]
fn the_prometheus_text_and_the_status_json_carry_the_counts() {
    let mut rig = Rig::new();
    rig.accept(ListenerRole::Broadcast, READER);
    rig.submit(&event(1));
    rig.submit(b"<not-xml");
    let text = render::prometheus(&rig.metrics);
    for line in [
        "vtp_events_received_total{source=\"author\"} 2",
        "vtp_events_accepted_total{source=\"author\"} 1",
        "vtp_naks_total{reason=\"unparsable\"} 1",
        "vtp_deliveries_total 1",
        "vtp_subscribers 1",
        "vtp_connections{role=\"subscriber\"} 1",
        "# TYPE process_resident_memory_bytes gauge",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from\n{text}"
        );
    }
    // The store's histogram: cumulative buckets ending at the count.
    let tmp = crate::testutil::TempDir::new("ops-histogram");
    let store = crate::store::SeenStore::open(tmp.path()).unwrap();
    let mut worker = crate::store::StoreWorker::spawn(store, None).unwrap();
    rig.metrics.attach_store(worker.probe());
    for i in 0..3u8 {
        let seq = worker
            .send(crate::store::StoreOp::Persist(vtp_core::SeenRecord {
                key: vtp_core::EventKey([i; 32]),
                unix_secs: 1_700_000_000,
            }))
            .unwrap();
        assert!(worker.wait_durable(seq, Duration::from_secs(30)));
    }
    let text = render::prometheus(&rig.metrics);
    let series = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
    };
    let count = series("vtp_store_commit_seconds_count");
    assert!(count >= 1.0);
    assert_eq!(
        series("vtp_store_commit_seconds_bucket{le=\"+Inf\"}"),
        count
    );
    assert!(series("vtp_store_commit_seconds_bucket{le=\"10\"}") <= count);
    worker.flush_and_stop().unwrap();

    let json: serde_json::Value =
        serde_json::from_str(&render::status(&rig.metrics, &Health::Ok)).unwrap();
    assert_eq!(json["subscribers"]["count"], 1);
    assert_eq!(json["subscribers"]["list"][0]["address"], "192.0.2.1:40001");
    assert_eq!(json["counters"]["events_accepted"]["author"], 1);
    assert_eq!(json["counters"]["naks"]["unparsable"], 1);
    assert_eq!(json["healthy"], true);
}
