//! One INFO line every few minutes with what the node did since the last one, from the same
//! counters as the metrics (a thread of its own: the core has no clock).
//!
//! ```text
//! stats (last 300 s): 12 events in (10 from authors, 2 from upstreams), 11 accepted,
//! 2400 forwarded, 1 naked, 0 duplicates; 200 subscribers, 1 of 1 upstreams up
//! ```
//!
//! With the Kafka bridge, the events from Kafka are in the count and its numbers follow:
//!
//! ```text
//! stats (last 300 s): 40 events in (0 from authors, 0 from upstreams, 40 from Kafka), ...;
//! kafka: 41 records in, 1 skipped, lag 0, consumer up; 40 published, backlog 0 (0 bytes),
//! 0 dropped, producer up
//! ```

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::{KafkaSnapshot, Metrics, Snapshot};

/// The interval of `vtp broker` and `vtp listen` (`--stats-interval`).
pub const STATS_INTERVAL_DEFAULT: Duration = Duration::from_secs(300);

/// The thread that logs the stats line; stops when dropped.
#[derive(Debug)]
pub struct StatsLine {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl StatsLine {
    /// Starts logging one line every `interval` (named `vtp-stats`).
    ///
    /// # Errors
    ///
    /// If the thread cannot be started.
    pub fn spawn(metrics: Metrics, interval: Duration) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("vtp-stats".into())
            .spawn(move || {
                let mut last = metrics.snapshot();
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    let now = metrics.snapshot();
                    tracing::info!("{}", line(&last, &now, interval));
                    last = now;
                }
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for StatsLine {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The line for the interval from `before` to `now`.
pub fn line(before: &Snapshot, now: &Snapshot, interval: Duration) -> String {
    let d = |a: u64, b: u64| b.saturating_sub(a);
    let authors = d(before.received[0], now.received[0]);
    let upstreams = d(before.received[1], now.received[1]);
    let kafka = d(before.received[2], now.received[2]);
    let sum = |v: &[u64; 3]| v.iter().sum::<u64>();
    let accepted = d(sum(&before.accepted), sum(&now.accepted));
    let duplicates = d(sum(&before.duplicates), sum(&now.duplicates));
    let from_kafka = match now.kafka {
        Some(_) => format!(", {kafka} from Kafka"),
        None => String::new(),
    };
    let mut line = format!(
        "stats (last {} s): {} events in ({authors} from authors, {upstreams} from \
         upstreams{from_kafka}), {accepted} accepted, {} forwarded, {} naked, {duplicates} \
         duplicates; {} subscribers, {} of {} upstreams up",
        interval.as_secs(),
        authors + upstreams + kafka,
        d(before.forwards, now.forwards),
        d(before.naks_total(), now.naks_total()),
        now.subscribers(),
        now.upstreams_up(),
        now.upstreams.len(),
    );
    if let Some(k) = &now.kafka {
        line.push_str(&kafka_part(before.kafka.as_ref(), k));
    }
    line
}

/// `; kafka: 12 records in, 1 skipped, lag 0, consumer up; 11 published, backlog 0 (0 bytes),
/// 0 dropped, producer up`: the consumer's part only when it reads, the producer's only when
/// it publishes.
fn kafka_part(before: Option<&KafkaSnapshot>, now: &KafkaSnapshot) -> String {
    let d = |a: u64, b: u64| b.saturating_sub(a);
    let up = |up: bool| if up { "up" } else { "down" };
    let mut parts = Vec::new();
    if let Some(c) = &now.consumer {
        let was = before.and_then(|b| b.consumer).unwrap_or_default();
        let skipped = d(
            before.map_or(0, KafkaSnapshot::skipped_total),
            now.skipped_total(),
        );
        parts.push(format!(
            "{} records in, {skipped} skipped, lag {}, consumer {}",
            d(was.records, c.records),
            c.lag,
            up(c.up)
        ));
    }
    if let Some(p) = &now.producer {
        let was = before.and_then(|b| b.producer).unwrap_or_default();
        parts.push(format!(
            "{} published, backlog {} ({} bytes), {} dropped, producer {}",
            d(was.published, p.published),
            p.backlog,
            p.backlog_bytes,
            d(was.overflow, p.overflow),
            up(p.up)
        ));
    }
    format!("; kafka: {}", parts.join("; "))
}
