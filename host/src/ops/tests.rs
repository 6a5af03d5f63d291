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
    let per_minute = rig.metrics.per_minute(unix_ms_now());
    assert_eq!(per_minute.len(), MINUTES);
    assert_eq!(
        per_minute.iter().sum::<u64>(),
        2,
        "the accepted events, in the chart's minutes"
    );
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

/// Opens an external source on the rig's node and hands it `records` (a `None` is a record
/// skipped unread, as an oversize Kafka record is).
fn external(rig: &mut Rig, records: &[Option<Vec<u8>>]) {
    let now = rig.now;
    rig.driver.with_node(&mut rig.fx, |node| {
        let conn = node.open_external("kafka t", now);
        for (offset, r) in (0u64..).zip(records) {
            let at = vtp_core::Position { lane: 0, offset };
            match r {
                Some(payload) => node.handle_external(conn, at, payload, now).unwrap(),
                None => {
                    let reason = vtp_core::Violation::Oversize {
                        len: 2_000_000,
                        max: 1_000_000,
                    };
                    node.skip_external(conn, at, reason, now).unwrap();
                }
            }
        }
    });
    rig.settle();
}

#[test]
fn records_skipped_from_an_external_source_are_counted_by_kind() {
    let mut rig = Rig::new();
    external(
        &mut rig,
        &[
            Some(event(1)),
            Some(b"<not-xml".to_vec()),
            None,
            Some(event(1)),
        ],
    );
    let s = rig.metrics.snapshot();
    assert_eq!(s.received, [0, 0, 4]);
    assert_eq!(s.accepted, [0, 0, 1]);
    assert_eq!(s.duplicates, [0, 0, 1]);
    assert_eq!(s.naks_total(), 0, "a skipped record is not a nak");
    assert!(s.kafka.is_none(), "no bridge attached: no Kafka numbers");
}

#[cfg(feature = "kafka")]
mod kafka {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::kafka::{IngestStats, PublishStats};

    fn info() -> KafkaInfo {
        KafkaInfo {
            bootstrap: vec!["127.0.0.1:9092".into()],
            security: "plaintext",
            sasl: None,
            consumer: Some(ConsumerInfo {
                topics: vec!["gcn.classic.voevent.*".into()],
                group: "vtp.test".into(),
                start: "earliest",
            }),
            publish_topic: Some("vtp.events".into()),
        }
    }

    /// A rig with the bridge attached: its stats, for the test to move.
    fn bridged() -> (Rig, Arc<IngestStats>, Arc<PublishStats>) {
        let rig = Rig::new();
        let (ingest, publish) = (
            Arc::new(IngestStats::default()),
            Arc::new(PublishStats::default()),
        );
        rig.metrics.attach_kafka(
            info(),
            Some(Arc::clone(&ingest)),
            Some(Arc::clone(&publish)),
        );
        (rig, ingest, publish)
    }

    #[test]
    fn the_bridge_s_counters_are_read_where_they_are_kept() {
        let (mut rig, ingest, publish) = bridged();
        ingest.records.store(3, Ordering::Relaxed);
        ingest.lag.store(7, Ordering::Relaxed);
        ingest.up.store(1, Ordering::Relaxed);
        publish.published.store(2, Ordering::Relaxed);
        publish.backlog.store(1, Ordering::Relaxed);
        publish.overflow.store(4, Ordering::Relaxed);
        external(&mut rig, &[Some(event(1)), Some(b"<x".to_vec()), None]);
        let k = rig.metrics.snapshot().kafka.unwrap();
        let c = k.consumer.unwrap();
        assert_eq!((c.records, c.lag, c.up), (3, 7, true));
        let p = k.producer.unwrap();
        assert_eq!((p.published, p.backlog, p.overflow, p.up), (2, 1, 4, false));
        assert_eq!(k.skipped_total(), 2);
        assert!(k.skipped.contains(&("unparsable", 1)), "{:?}", k.skipped);
        assert!(k.skipped.contains(&("oversize", 1)), "{:?}", k.skipped);
        assert_eq!(
            rig.metrics.kafka_info().unwrap().publish_topic.as_deref(),
            Some("vtp.events")
        );
    }

    #[test]
    fn the_stats_line_adds_kafka() {
        let (mut rig, ingest, publish) = bridged();
        let before = rig.metrics.snapshot();
        ingest.records.store(2, Ordering::Relaxed);
        ingest.up.store(1, Ordering::Relaxed);
        publish.published.store(1, Ordering::Relaxed);
        publish.up.store(1, Ordering::Relaxed);
        external(&mut rig, &[Some(event(1)), Some(b"<x".to_vec())]);
        let line = stats::line(&before, &rig.metrics.snapshot(), Duration::from_secs(300));
        assert_eq!(
            line,
            "stats (last 300 s): 2 events in (0 from authors, 0 from upstreams, 2 from Kafka), \
             1 accepted, 0 forwarded, 0 naked, 0 duplicates; 0 subscribers, 0 of 0 upstreams \
             up; kafka: 2 records in, 1 skipped, lag 0, consumer up; 1 published, backlog 0 \
             (0 bytes), 0 dropped, producer up"
        );
    }

    #[cfg(feature = "http")]
    #[test]
    fn the_prometheus_text_and_the_status_json_carry_the_bridge() {
        let (mut rig, ingest, publish) = bridged();
        ingest.records.store(3, Ordering::Relaxed);
        ingest.lag.store(7, Ordering::Relaxed);
        ingest.up.store(1, Ordering::Relaxed);
        ingest.commits.store(2, Ordering::Relaxed);
        publish.published.store(2, Ordering::Relaxed);
        publish.backlog_bytes.store(512, Ordering::Relaxed);
        publish.errors.store(5, Ordering::Relaxed);
        external(&mut rig, &[Some(b"<x".to_vec())]);
        let text = render::prometheus(&rig.metrics);
        for line in [
            "vtp_kafka_records_total{direction=\"in\"} 3",
            "vtp_kafka_records_total{direction=\"out\"} 2",
            "vtp_kafka_up{role=\"consumer\"} 1",
            "vtp_kafka_up{role=\"producer\"} 0",
            "vtp_kafka_errors_total{role=\"producer\"} 5",
            "vtp_kafka_skipped_total{reason=\"unparsable\"} 1",
            "vtp_kafka_skipped_total{reason=\"framing\"} 0",
            "vtp_kafka_consumer_lag 7",
            "vtp_kafka_commits_total 2",
            "vtp_kafka_publish_backlog 0",
            "vtp_kafka_publish_backlog_bytes 512",
            "vtp_kafka_publish_overflow_total 0",
            "vtp_events_received_total{source=\"external\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        let json: serde_json::Value =
            serde_json::from_str(&render::status(&rig.metrics, &Health::Ok)).unwrap();
        let k = &json["kafka"];
        assert_eq!(k["bootstrap"][0], "127.0.0.1:9092");
        assert_eq!(k["security"], "plaintext");
        assert_eq!(k["consumer"]["topics"][0], "gcn.classic.voevent.*");
        assert_eq!(k["consumer"]["group"], "vtp.test");
        assert_eq!(k["consumer"]["start"], "earliest");
        assert_eq!(k["consumer"]["up"], true);
        assert_eq!(k["consumer"]["lag"], 7);
        assert_eq!(k["consumer"]["records"], 3);
        assert_eq!(k["consumer"]["commits"], 2);
        assert_eq!(k["consumer"]["skipped"]["unparsable"], 1);
        assert_eq!(k["producer"]["topic"], "vtp.events");
        assert_eq!(k["producer"]["published"], 2);
        assert_eq!(k["producer"]["backlog_bytes"], 512);
        assert_eq!(k["producer"]["up"], false);
    }

    #[cfg(feature = "http")]
    #[test]
    fn without_the_bridge_there_is_no_kafka_section() {
        let rig = Rig::new();
        assert!(!render::prometheus(&rig.metrics).contains("vtp_kafka"));
        let json: serde_json::Value =
            serde_json::from_str(&render::status(&rig.metrics, &Health::Ok)).unwrap();
        assert!(json.get("kafka").is_none());
    }
}

/// The nak reasons are a fixed subset of the core's violation kinds (the ones an author's
/// submission can be naked or a record skipped for), plus `other`: a kind added to the core
/// must be listed here, or it is counted as `other`.
#[test]
fn every_nak_reason_is_a_violation_kind_and_every_nak_kind_a_reason() {
    for r in super::NAK_REASONS {
        assert!(
            r == "other" || vtp_core::Violation::KINDS.contains(&r),
            "{r} is not a kind of the core's Violation"
        );
    }
    // Kinds that never answer a submission nor skip a record: about other peers' messages.
    let not_naks = [
        "unexpected_event",
        "unsolicited_receipt",
        "not_our_receipt",
        "other",
    ];
    for k in vtp_core::Violation::KINDS {
        assert!(
            not_naks.contains(&k) || super::NAK_REASONS.contains(&k),
            "the core's violation kind {k} is missing from NAK_REASONS"
        );
    }
}
