//! The endpoint's bodies: Prometheus text (prometheus-client's encoder) and the status JSON.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use vtp_core::RefusalCause;
use vtp_core::signature::StatusKind;
use vtp_core::time::format_utc;

use super::{
    Health, KafkaInfo, KafkaSnapshot, Metrics, ROLES, SOURCES, Snapshot, Subscriber, UpstreamStatus,
};

/// Subscribers listed in `/status` at most (the count is always given).
pub const STATUS_SUBSCRIBERS_MAX: usize = 10_000;

/// The `/metrics` body, Prometheus text format 0.0.4.
pub(super) fn prometheus(metrics: &Metrics) -> String {
    let snapshot = Scrape {
        s: metrics.snapshot(),
        rss: super::resident_memory_bytes(),
        #[cfg(feature = "archive")]
        archive: metrics.archive().map(|a| a.probe.clone()),
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

/// One scrape's numbers, encoded by prometheus-client.
#[derive(Debug)]
struct Scrape {
    s: Snapshot,
    rss: Option<u64>,
    #[cfg(feature = "archive")]
    archive: Option<crate::archive::ArchiveProbe>,
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), fmt::Error> {
        let s = &self.s;
        let sources = |v: &[u64; 3]| SOURCES.iter().zip(v).map(|(l, n)| (*l, *n)).collect();
        labelled(
            &mut e,
            "vtp_events_received",
            "Events received: from authors (accepted, duplicates, naked), from upstreams \
             (accepted, duplicates, invalid ones dropped) and external sources (accepted, \
             duplicates, skipped)",
            "source",
            sources(&s.received),
        )?;
        labelled(
            &mut e,
            "vtp_events_accepted",
            "New events accepted (and forwarded)",
            "source",
            sources(&s.accepted),
        )?;
        labelled(
            &mut e,
            "vtp_events_duplicate",
            "Duplicate events dropped",
            "source",
            sources(&s.duplicates),
        )?;
        labelled(
            &mut e,
            "vtp_naks",
            "Naks sent to authors, by the kind of fault",
            "reason",
            s.naks.clone(),
        )?;
        let statuses = |v: &[u64; 6]| {
            StatusKind::ALL
                .iter()
                .map(|k| k.as_str())
                .zip(v.iter().copied())
                .collect()
        };
        labelled(
            &mut e,
            "vtp_signatures",
            "New events accepted, by OpenPGP signature status (--signatures verify or require)",
            "status",
            statuses(&s.signatures),
        )?;
        labelled(
            &mut e,
            "vtp_signatures_refused",
            "Events refused for their signature (--signatures require): naked, dropped or \
             skipped, by status",
            "status",
            statuses(&s.signatures_refused),
        )?;
        counter(
            &mut e,
            "vtp_upstream_events_invalid",
            "Invalid events from upstreams, acked and dropped",
            s.upstream_invalid,
        )?;
        counter(
            &mut e,
            "vtp_deliveries",
            "Events queued for subscribers (one per event per subscriber)",
            s.forwards,
        )?;
        counter(
            &mut e,
            "vtp_handler_deliveries",
            "Events handed to the event handlers (print, save, cmd)",
            s.handler_deliveries,
        )?;
        if let Some(dropped) = s.handler_dropped {
            counter(
                &mut e,
                "vtp_handler_dropped",
                "Events the handlers' queue had no room for",
                dropped,
            )?;
        }
        gauge(
            &mut e,
            "vtp_subscribers",
            "Subscribers connected",
            s.subscribers(),
        )?;
        let roles = ROLES.iter().zip(&s.connections).map(|(l, n)| (*l, *n));
        family(
            &mut e,
            "vtp_connections",
            "Open connections by role",
            MetricType::Gauge,
            "role",
            roles.collect(),
        )?;
        let refusals = RefusalCause::ALL
            .iter()
            .zip(&s.refusals)
            .map(|(c, n)| (c.as_str(), *n));
        labelled(
            &mut e,
            "vtp_refusals",
            "Connections refused at accept, by cause (those past the first few of a 10 s \
             window are counted when it ends)",
            "cause",
            refusals.collect(),
        )?;
        counter(
            &mut e,
            "vtp_protocol_violations",
            "Protocol violations reported (ignored or closed on)",
            s.violations,
        )?;
        counter(
            &mut e,
            "vtp_subscriber_naks",
            "Naks received from subscribers",
            s.subscriber_naks,
        )?;
        let up = s
            .upstreams
            .iter()
            .map(|u| (u.label.as_str(), u64::from(u.up)));
        family(
            &mut e,
            "vtp_upstream_up",
            "1 while the subscription to the upstream is connected",
            MetricType::Gauge,
            "upstream",
            up.collect(),
        )?;
        let reconnects = s.upstreams.iter().map(|u| (u.label.as_str(), u.reconnects));
        family(
            &mut e,
            "vtp_upstream_reconnects",
            "Reconnections to the upstream scheduled",
            MetricType::Counter,
            "upstream",
            reconnects.collect(),
        )?;
        if let Some(t) = s.last_event_unix {
            let m = ConstGauge::new(t);
            let enc = e.encode_descriptor(
                "vtp_last_event_timestamp_seconds",
                "UNIX time of the last event accepted",
                None,
                m.metric_type(),
            )?;
            m.encode(enc)?;
        }
        if let Some(f) = s.filters {
            counter(
                &mut e,
                "vtp_filter_evaluations",
                "Subscriber filter evaluations (XPath)",
                f.evaluations,
            )?;
            counter(
                &mut e,
                "vtp_filter_events",
                "Events whose tree was built to evaluate filters",
                f.events,
            )?;
            counter(
                &mut e,
                "vtp_filter_errors",
                "Filter evaluations that ended in an error (false)",
                f.errors,
            )?;
            counter(
                &mut e,
                "vtp_filter_over_budget",
                "Filter evaluations skipped as over the cost budget (false)",
                f.over_budget,
            )?;
        }
        if let Some(store) = &s.store {
            let c = &store.commits;
            let mut enc = e.encode_descriptor(
                "vtp_store_commit_seconds",
                "Time the seen-index store took per commit (write and fdatasync)",
                None,
                MetricType::Histogram,
            )?;
            // The encoder adds the buckets up itself.
            enc.encode_histogram::<NoLabelSet>(c.sum.as_secs_f64(), c.count(), &c.buckets(), None)?;
            counter(
                &mut e,
                "vtp_store_commit_failures",
                "Seen-index commits that failed (retried)",
                c.failed,
            )?;
            gauge(
                &mut e,
                "vtp_store_healthy",
                "1 while the seen-index store commits",
                u64::from(store.healthy && !store.stopped),
            )?;
        }
        #[cfg(feature = "archive")]
        if let Some(a) = &self.archive {
            archive_metrics(&mut e, a)?;
        }
        counter(
            &mut e,
            "vtp_loop_turns",
            "Turns of the event loop",
            s.loop_turns,
        )?;
        let m = ConstGauge::new(s.loop_idle.as_secs_f64());
        let enc = e.encode_descriptor(
            "vtp_loop_idle_seconds",
            "Time since the event loop last turned",
            None,
            m.metric_type(),
        )?;
        m.encode(enc)?;
        if let Some(k) = &s.kafka {
            kafka(&mut e, k)?;
        }
        if !s.catch_up.is_empty() {
            catch_up(&mut e, &s.catch_up)?;
        }
        // No `process_open_fds`: listing /proc/self/fd takes ~10 ms with 10,000 connections.
        if let Some(rss) = self.rss {
            gauge(
                &mut e,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                rss,
            )?;
        }
        Ok(())
    }
}

/// The Kafka bridge's series: the consumer's only when it reads, the producer's only when it
/// publishes.
fn kafka(e: &mut DescriptorEncoder, k: &KafkaSnapshot) -> Result<(), fmt::Error> {
    let mut records = Vec::new();
    let mut up = Vec::new();
    let mut errors = Vec::new();
    if let Some(c) = &k.consumer {
        records.push(("in", c.records));
        up.push(("consumer", u64::from(c.up)));
        errors.push(("consumer", c.errors));
    }
    if let Some(p) = &k.producer {
        records.push(("out", p.published));
        up.push(("producer", u64::from(p.up)));
        errors.push(("producer", p.errors));
    }
    labelled(
        e,
        "vtp_kafka_records",
        "Kafka records: read and handed to the node (in), events published and acknowledged \
         (out)",
        "direction",
        records,
    )?;
    family(
        e,
        "vtp_kafka_up",
        "1 while the consumer's last poll succeeded; 0 from a failed publish until the next \
         success (producer)",
        MetricType::Gauge,
        "role",
        up,
    )?;
    labelled(
        e,
        "vtp_kafka_errors",
        "Failed Kafka requests (polls, commits, publishes; each retried)",
        "role",
        errors,
    )?;
    if let Some(c) = &k.consumer {
        labelled(
            e,
            "vtp_kafka_skipped",
            "Kafka records skipped (not a VOEvent, failed checks, over the size bound), by \
             the kind of fault",
            "reason",
            k.skipped.clone(),
        )?;
        gauge(
            e,
            "vtp_kafka_consumer_lag",
            "Records not yet read, summed over the partitions, at the last poll",
            c.lag,
        )?;
        counter(
            e,
            "vtp_kafka_commits",
            "Offsets committed to the consumer group (once the events' records are durable)",
            c.commits,
        )?;
    }
    if let Some(p) = &k.producer {
        gauge(
            e,
            "vtp_kafka_publish_backlog",
            "Events waiting to be published",
            p.backlog,
        )?;
        gauge(
            e,
            "vtp_kafka_publish_backlog_bytes",
            "Bytes of events waiting in the publish backlog",
            p.backlog_bytes,
        )?;
        counter(
            e,
            "vtp_kafka_publish_overflow",
            "Events not published because the backlog was full",
            p.overflow,
        )?;
    }
    Ok(())
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Result<(), fmt::Error> {
    let m = ConstCounter::new(v);
    let enc = e.encode_descriptor(name, help, None, m.metric_type())?;
    m.encode(enc)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Result<(), fmt::Error> {
    let m = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    let enc = e.encode_descriptor(name, help, None, m.metric_type())?;
    m.encode(enc)
}

/// The catch-ups' series, one per URL.
fn catch_up(e: &mut DescriptorEncoder, c: &[super::CatchUpSnapshot]) -> Result<(), fmt::Error> {
    let each = |f: fn(&super::CatchUpSnapshot) -> u64| -> Vec<(&str, u64)> {
        c.iter().map(|x| (x.url.as_str(), f(x))).collect()
    };
    labelled(
        e,
        "vtp_catchup_events",
        "Events fetched from an upstream's archive and handed to the node (new or duplicate)",
        "url",
        each(|x| x.events),
    )?;
    labelled(
        e,
        "vtp_catchup_errors",
        "Failed catch-up requests and malformed answers (each retried)",
        "url",
        each(|x| x.errors),
    )?;
    labelled(
        e,
        "vtp_catchup_gaps",
        "Gaps found by catch-up: missed events the archive no longer held",
        "url",
        each(|x| x.gaps),
    )?;
    labelled(
        e,
        "vtp_catchup_gap_events",
        "Events lost in catch-up gaps (the archive's retention passed)",
        "url",
        each(|x| x.gap_events),
    )?;
    family(
        e,
        "vtp_catchup_position",
        "The last archive sequence number handled and committed",
        MetricType::Gauge,
        "url",
        each(|x| x.position),
    )
}

/// A counter with one label.
fn labelled(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: Vec<(&str, u64)>,
) -> Result<(), fmt::Error> {
    family(e, name, help, MetricType::Counter, label, values)
}

/// A counter or gauge with one label, one series per value.
fn family(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    label: &str,
    values: Vec<(&str, u64)>,
) -> Result<(), fmt::Error> {
    let mut enc = e.encode_descriptor(name, help, None, kind)?;
    for (value, n) in values {
        let labels = [(label, value)];
        let series = enc.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(n).encode(series)?,
            _ => ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX)).encode(series)?,
        }
    }
    Ok(())
}

/// The `/status` body.
pub(super) fn status(metrics: &Metrics, health: &Health) -> String {
    let reading = Reading::take(metrics, STATUS_SUBSCRIBERS_MAX);
    let body = Status::new(metrics, &reading, health);
    // Serialising plain data to a String cannot fail.
    serde_json::to_string_pretty(&body).unwrap_or_default() + "\n"
}

/// Every number and the board, read once: what [`Status`] is made of.
pub(super) struct Reading {
    s: Snapshot,
    subscribers: Vec<Subscriber>,
    count: usize,
    upstreams: Vec<UpstreamStatus>,
}

impl Reading {
    /// Reads `metrics` now, listing at most `subscribers_max` subscribers.
    pub(super) fn take(metrics: &Metrics, subscribers_max: usize) -> Self {
        let (subscribers, count, upstreams) = metrics.status(subscribers_max);
        Self {
            s: metrics.snapshot(),
            subscribers,
            count,
            upstreams,
        }
    }
}

impl<'a> Status<'a> {
    /// The status of the node `metrics` describes, from `reading`: the `/status` JSON and the
    /// status page's data.
    pub(super) fn new(metrics: &'a Metrics, reading: &'a Reading, health: &Health) -> Self {
        let Reading {
            s,
            subscribers,
            count,
            upstreams,
        } = reading;
        let count = *count;
        let info = metrics.info();
        Status {
            version: env!("CARGO_PKG_VERSION"),
            role: info.role,
            ivo: info.ivo.as_deref(),
            uptime_seconds: s.uptime.as_secs_f64(),
            health: health.to_string(),
            healthy: *health == Health::Ok,
            listeners: info
                .listeners
                .iter()
                .map(|l| Listener {
                    serves: l.serves,
                    address: &l.address,
                    tls: l.tls,
                })
                .collect(),
            subscribers: Subscribers {
                count,
                listed: subscribers.len(),
                list: subscribers.iter().map(SubscriberJson::from).collect(),
            },
            upstreams: info
                .upstreams
                .iter()
                .zip(upstreams)
                .zip(&s.upstreams)
                .enumerate()
                .map(|(index, ((endpoints, u), counts))| UpstreamJson {
                    index,
                    endpoints,
                    state: u.state.as_str(),
                    since: stamp_ms(u.since_unix_ms),
                    last_error: u.last_error.as_deref(),
                    next_endpoint: u.next_endpoint.as_deref(),
                    retry_at: u.retry_at_unix_ms.and_then(stamp_ms),
                    last_event: counts.last_event_unix.and_then(stamp_secs),
                    reconnects: counts.reconnects,
                })
                .collect(),
            counters: Counters::from(s),
            connections: ROLES
                .iter()
                .zip(s.connections)
                .map(|(r, n)| (*r, n))
                .collect(),
            store: s.store.as_ref().map(|st| StoreJson {
                healthy: st.healthy && !st.stopped,
                commits: st.commits.count(),
                commit_failures: st.commits.failed,
            }),
            last_event: s.last_event_unix.and_then(stamp_secs),
            #[cfg(feature = "archive")]
            archive: metrics.archive().map(|a| ArchiveJson {
                rows: a.probe.rows(),
                bytes: a.probe.bytes(),
                inserted: a.probe.inserted(),
                write_failures: a.probe.write_failures(),
                deleted: a.probe.deleted(),
                batches: a.probe.batches(),
                batch_seconds_last: a.probe.batch_seconds_last(),
            }),
            kafka: metrics
                .kafka_info()
                .zip(s.kafka.as_ref())
                .map(|(info, k)| KafkaJson::new(info, k)),
        }
    }
}

fn stamp_ms(ms: u64) -> Option<String> {
    (ms > 0).then(|| format_utc(ms / 1000).as_str().to_owned())
}

fn stamp_secs(secs: f64) -> Option<String> {
    (secs > 0.0).then(|| format_utc(secs as u64).as_str().to_owned())
}

#[derive(Serialize)]
pub(super) struct Status<'a> {
    pub(super) version: &'static str,
    pub(super) role: &'static str,
    pub(super) ivo: Option<&'a str>,
    pub(super) uptime_seconds: f64,
    pub(super) healthy: bool,
    pub(super) health: String,
    pub(super) listeners: Vec<Listener<'a>>,
    pub(super) subscribers: Subscribers<'a>,
    pub(super) upstreams: Vec<UpstreamJson<'a>>,
    pub(super) counters: Counters,
    pub(super) connections: std::collections::BTreeMap<&'static str, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) store: Option<StoreJson>,
    pub(super) last_event: Option<String>,
    #[cfg(feature = "archive")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) archive: Option<ArchiveJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) kafka: Option<KafkaJson<'a>>,
}

/// The archive in `/status`.
#[cfg(feature = "archive")]
#[derive(Serialize)]
pub(super) struct ArchiveJson {
    rows: u64,
    bytes: u64,
    inserted: u64,
    write_failures: u64,
    deleted: u64,
    batches: u64,
    batch_seconds_last: f64,
}

/// The archive's lines of `/metrics`.
#[cfg(feature = "archive")]
fn archive_metrics(
    e: &mut DescriptorEncoder,
    p: &crate::archive::ArchiveProbe,
) -> Result<(), fmt::Error> {
    gauge(e, "vtp_archive_rows", "Events in the archive", p.rows())?;
    gauge(
        e,
        "vtp_archive_bytes",
        "Bytes the archive's database uses",
        p.bytes(),
    )?;
    counter(
        e,
        "vtp_archive_inserted",
        "Events archived since start",
        p.inserted(),
    )?;
    counter(
        e,
        "vtp_archive_write_failures",
        "Events the archive failed to write (and retention passes that failed)",
        p.write_failures(),
    )?;
    counter(
        e,
        "vtp_archive_deleted",
        "Events deleted by the archive's retention",
        p.deleted(),
    )?;
    counter(
        e,
        "vtp_archive_batches",
        "Transactions the archive's writer committed or tried",
        p.batches(),
    )?;
    let m = ConstCounter::new(p.batch_seconds_total());
    let enc = e.encode_descriptor(
        "vtp_archive_batch_seconds",
        "Time the archive's writer spent on its transactions",
        None,
        m.metric_type(),
    )?;
    m.encode(enc)
}

/// The Kafka bridge in `/status`.
#[derive(Serialize)]
pub(super) struct KafkaJson<'a> {
    pub(super) bootstrap: &'a [String],
    pub(super) security: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) sasl_mechanism: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) consumer: Option<ConsumerJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) producer: Option<ProducerJson<'a>>,
}

#[derive(Serialize)]
pub(super) struct ConsumerJson<'a> {
    pub(super) topics: &'a [String],
    pub(super) group: &'a str,
    pub(super) start: &'static str,
    pub(super) up: bool,
    pub(super) lag: u64,
    pub(super) records: u64,
    /// Only the reasons that occurred.
    pub(super) skipped: std::collections::BTreeMap<&'static str, u64>,
    pub(super) oversize: u64,
    pub(super) commits: u64,
    pub(super) errors: u64,
}

#[derive(Serialize)]
pub(super) struct ProducerJson<'a> {
    pub(super) topic: &'a str,
    pub(super) up: bool,
    pub(super) published: u64,
    pub(super) backlog: u64,
    pub(super) backlog_bytes: u64,
    pub(super) overflow: u64,
    pub(super) errors: u64,
}

impl<'a> KafkaJson<'a> {
    fn new(info: &'a KafkaInfo, k: &KafkaSnapshot) -> Self {
        Self {
            bootstrap: &info.bootstrap,
            security: info.security,
            sasl_mechanism: info.sasl,
            consumer: info
                .consumer
                .as_ref()
                .zip(k.consumer)
                .map(|(i, c)| ConsumerJson {
                    topics: &i.topics,
                    group: &i.group,
                    start: i.start,
                    up: c.up,
                    lag: c.lag,
                    records: c.records,
                    skipped: k.skipped.iter().filter(|(_, n)| *n > 0).copied().collect(),
                    oversize: c.oversize,
                    commits: c.commits,
                    errors: c.errors,
                }),
            producer: info
                .publish_topic
                .as_deref()
                .zip(k.producer)
                .map(|(topic, p)| ProducerJson {
                    topic,
                    up: p.up,
                    published: p.published,
                    backlog: p.backlog,
                    backlog_bytes: p.backlog_bytes,
                    overflow: p.overflow,
                    errors: p.errors,
                }),
        }
    }
}

#[derive(Serialize)]
pub(super) struct Listener<'a> {
    pub(super) serves: &'static str,
    pub(super) address: &'a str,
    pub(super) tls: bool,
}

#[derive(Serialize)]
pub(super) struct Subscribers<'a> {
    /// Connected now.
    pub(super) count: usize,
    /// Listed below (at most [`STATUS_SUBSCRIBERS_MAX`]).
    pub(super) listed: usize,
    pub(super) list: Vec<SubscriberJson<'a>>,
}

#[derive(Serialize)]
pub(super) struct SubscriberJson<'a> {
    pub(super) conn: u64,
    pub(super) address: Option<String>,
    pub(super) identity: Option<&'a str>,
    pub(super) filters: Vec<&'a str>,
    pub(super) connected_since: Option<String>,
}

impl<'a> From<&'a Subscriber> for SubscriberJson<'a> {
    fn from(s: &'a Subscriber) -> Self {
        Self {
            conn: s.conn.get(),
            address: s.peer.map(|p| match p {
                vtp_core::Peer::Local => "unix".to_owned(),
                p => p.to_string(),
            }),
            identity: s.identity.as_deref(),
            filters: s.filters.iter().map(|f| &**f).collect(),
            connected_since: stamp_ms(s.since_unix_ms),
        }
    }
}

#[derive(Serialize)]
pub(super) struct UpstreamJson<'a> {
    pub(super) index: usize,
    pub(super) endpoints: &'a [String],
    pub(super) state: &'static str,
    pub(super) since: Option<String>,
    pub(super) last_error: Option<&'a str>,
    pub(super) next_endpoint: Option<&'a str>,
    pub(super) retry_at: Option<String>,
    pub(super) last_event: Option<String>,
    pub(super) reconnects: u64,
}

#[derive(Serialize)]
pub(super) struct StoreJson {
    pub(super) healthy: bool,
    pub(super) commits: u64,
    pub(super) commit_failures: u64,
}

#[derive(Serialize)]
pub(super) struct Counters {
    pub(super) events_received: std::collections::BTreeMap<&'static str, u64>,
    pub(super) events_accepted: std::collections::BTreeMap<&'static str, u64>,
    pub(super) events_duplicate: std::collections::BTreeMap<&'static str, u64>,
    pub(super) naks: std::collections::BTreeMap<&'static str, u64>,
    pub(super) upstream_events_invalid: u64,
    pub(super) signatures: std::collections::BTreeMap<&'static str, u64>,
    pub(super) signatures_refused: std::collections::BTreeMap<&'static str, u64>,
    pub(super) deliveries: u64,
    pub(super) handler_deliveries: u64,
    pub(super) handler_dropped: Option<u64>,
    pub(super) refusals: std::collections::BTreeMap<&'static str, u64>,
    pub(super) protocol_violations: u64,
    pub(super) subscriber_naks: u64,
}

impl From<&Snapshot> for Counters {
    fn from(s: &Snapshot) -> Self {
        let sources = |v: [u64; 3]| SOURCES.iter().copied().zip(v).collect();
        Self {
            events_received: sources(s.received),
            events_accepted: sources(s.accepted),
            events_duplicate: sources(s.duplicates),
            // Only the reasons that occurred: the full set is on /metrics.
            naks: s.naks.iter().filter(|(_, n)| *n > 0).copied().collect(),
            upstream_events_invalid: s.upstream_invalid,
            // Only the statuses that occurred, as naks.
            signatures: nonzero(&s.signatures),
            signatures_refused: nonzero(&s.signatures_refused),
            deliveries: s.forwards,
            handler_deliveries: s.handler_deliveries,
            handler_dropped: s.handler_dropped,
            refusals: RefusalCause::ALL
                .iter()
                .map(|c| c.as_str())
                .zip(s.refusals)
                .collect(),
            protocol_violations: s.violations,
            subscriber_naks: s.subscriber_naks,
        }
    }
}

/// The signature statuses counted at least once, by name.
fn nonzero(v: &[u64; 6]) -> std::collections::BTreeMap<&'static str, u64> {
    StatusKind::ALL
        .iter()
        .map(|k| k.as_str())
        .zip(v.iter().copied())
        .filter(|(_, n)| *n > 0)
        .collect()
}
