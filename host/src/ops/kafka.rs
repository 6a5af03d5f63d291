//! The Kafka bridge's side of the metrics: what it was started with, and its counters, read
//! where they are kept (the ingest's [`IngestStats`] and the publisher's [`PublishStats`],
//! cargo feature `kafka`) at read time.

#[cfg(feature = "kafka")]
use std::sync::Arc;
#[cfg(feature = "kafka")]
use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(feature = "kafka")]
use crate::kafka::{IngestStats, PublishStats};

/// The bridge as started, for the status page.
#[derive(Debug, Clone, Default)]
pub struct KafkaInfo {
    /// The bootstrap brokers.
    pub bootstrap: Vec<String>,
    /// Kafka's security.protocol (`plaintext`, `ssl`, `sasl_plaintext`, `sasl_ssl`).
    pub security: &'static str,
    /// The SASL mechanism, if any.
    pub sasl: Option<&'static str>,
    /// The ingest, if the bridge reads topics.
    pub consumer: Option<ConsumerInfo>,
    /// The topic accepted events are published to, if any.
    pub publish_topic: Option<String>,
}

/// What the ingest reads.
#[derive(Debug, Clone, Default)]
pub struct ConsumerInfo {
    /// Topic names or globs.
    pub topics: Vec<String>,
    /// The consumer group.
    pub group: String,
    /// Where a partition without a stored offset starts (`earliest`, `latest`).
    pub start: &'static str,
}

/// The bridge's numbers at one moment (in a [`Snapshot`](super::Snapshot) once attached).
#[derive(Debug, Clone, Default)]
pub struct KafkaSnapshot {
    /// The ingest's, if it runs.
    pub consumer: Option<ConsumerSnapshot>,
    /// The publisher's, if it runs.
    pub producer: Option<ProducerSnapshot>,
    /// Records the node skipped (not a VOEvent, failed checks, over the size bound), by the
    /// kind of fault ([`NAK_REASONS`](super::NAK_REASONS) order).
    pub skipped: Vec<(&'static str, u64)>,
}

impl KafkaSnapshot {
    /// Records skipped, every reason.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.iter().map(|(_, n)| n).sum()
    }
}

/// The ingest's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerSnapshot {
    /// Records handed to the node.
    pub records: u64,
    /// Records over the size bound, skipped unread (also in `skipped`, as `framing`).
    pub oversize: u64,
    /// Offsets committed to the group.
    pub commits: u64,
    /// Failed polls or commits (each retried).
    pub errors: u64,
    /// Records behind the end of the partitions, at the last poll.
    pub lag: u64,
    /// The last poll succeeded.
    pub up: bool,
}

/// The publisher's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProducerSnapshot {
    /// Events produced and acknowledged.
    pub published: u64,
    /// Events dropped because the backlog was full.
    pub overflow: u64,
    /// Events waiting.
    pub backlog: u64,
    /// Bytes waiting in the backlog.
    pub backlog_bytes: u64,
    /// Failed sends (each retried).
    pub errors: u64,
    /// No send has failed since the last success.
    pub up: bool,
}

/// Where the bridge's counters are read from.
pub(super) struct KafkaProbe {
    pub(super) info: KafkaInfo,
    #[cfg(feature = "kafka")]
    ingest: Option<Arc<IngestStats>>,
    #[cfg(feature = "kafka")]
    publish: Option<Arc<PublishStats>>,
}

impl KafkaProbe {
    #[cfg(feature = "kafka")]
    pub(super) fn new(
        info: KafkaInfo,
        ingest: Option<Arc<IngestStats>>,
        publish: Option<Arc<PublishStats>>,
    ) -> Self {
        Self {
            info,
            ingest,
            publish,
        }
    }

    /// The counters now (`skipped` is the observer's, filled by the caller).
    pub(super) fn read(&self) -> KafkaSnapshot {
        #[cfg(feature = "kafka")]
        {
            let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
            KafkaSnapshot {
                consumer: self.ingest.as_deref().map(|s| ConsumerSnapshot {
                    records: load(&s.records),
                    oversize: load(&s.oversize),
                    commits: load(&s.commits),
                    errors: load(&s.errors),
                    lag: load(&s.lag),
                    up: load(&s.up) != 0,
                }),
                producer: self.publish.as_deref().map(|s| ProducerSnapshot {
                    published: load(&s.published),
                    overflow: load(&s.overflow),
                    backlog: load(&s.backlog),
                    backlog_bytes: load(&s.backlog_bytes),
                    errors: load(&s.errors),
                    up: load(&s.up) != 0,
                }),
                skipped: Vec::new(),
            }
        }
        #[cfg(not(feature = "kafka"))]
        KafkaSnapshot::default()
    }
}
