//! One INFO line every few minutes with what the node did since the last one, from the same
//! counters as the metrics (a thread of its own: the core has no clock).
//!
//! ```text
//! stats (last 300 s): 12 events in (10 from authors, 2 from upstreams), 11 accepted,
//! 2400 forwarded, 1 naked, 0 duplicates; 200 subscribers, 1 of 1 upstreams up
//! ```

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::{Metrics, Snapshot};

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
    let accepted = d(
        before.accepted[0] + before.accepted[1],
        now.accepted[0] + now.accepted[1],
    );
    let duplicates = d(
        before.duplicates[0] + before.duplicates[1],
        now.duplicates[0] + now.duplicates[1],
    );
    format!(
        "stats (last {} s): {} events in ({authors} from authors, {upstreams} from upstreams), \
         {accepted} accepted, {} forwarded, {} naked, {duplicates} duplicates; {} subscribers, \
         {} of {} upstreams up",
        interval.as_secs(),
        authors + upstreams,
        d(before.forwards, now.forwards),
        d(before.naks_total(), now.naks_total()),
        now.subscribers(),
        now.upstreams_up(),
        now.upstreams.len(),
    )
}
