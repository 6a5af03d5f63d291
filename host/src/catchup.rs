//! Catch-up after outages (cargo feature `catchup`): the events an upstream's archive holds
//! and this node missed while it was down or disconnected, fetched over the upstream's HTTP
//! API (`GET /api/events?after=SEQ&include=payload&limit=1000`) and handed to the node as an
//! external source ([`crate::external`]).
//!
//! [`CatchUp::spawn`] runs one reader thread per archive URL. Each event is one record of lane
//! 0 (lane 1, 2... after the archive was reset, see below) at the position of its archive
//! sequence number; the node checks it, deduplicates it against its seen-index (so an event
//! that also came live, or was caught up before a crash, is handled once) and says when the
//! position may be committed ([`vtp_core::Node::handle_external`]). Only then is the new
//! position written to the state file (`catch-up-URL.seq` in the node's state directory;
//! written to a temporary file, synced, renamed, the directory synced), so a crash never skips
//! an event: the next start fetches again from the last committed position, and what was
//! already handled comes back as a duplicate.
//!
//! A pass fetches pages from the position until the archive has no more; it runs at start,
//! each time [`Trigger::reconnected`] is called (the host calls it when the upstream's
//! subscription comes up), [`SETTLE`] after each of those (the upstream archives off its event
//! loop, so an event accepted just before the connection may show up a moment later), and
//! every [`Settings::interval`] (keeping the remembered position near the newest event).
//!
//! Without a state file, a first pass starts at the archive's newest event
//! ([`Start::Now`]: from now on, no history) or at its oldest ([`Start::All`]: everything the
//! archive still holds). A position older than the archive's oldest event is a gap that cannot
//! be filled (the archive's retention passed): it is logged with its range and counted. An
//! archive whose newest event is older than the position was reset (its sequence started
//! again): logged, and everything it holds is fetched on a new lane (duplicates are dropped).
//!
//! Every answer is bounded ([`PAGE_BYTES_MAX`], [`TIMEOUT`]); a failed request, an HTTP error,
//! a malformed answer are each logged with the URL and what was wrong, and retried with the
//! node's back-off (capped at a minute).

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use vtp_core::Position;
use vtp_core::backoff::{Backoff, BackoffConfig};

use crate::external::{Closed, Feeder, Worker};

/// Events asked for per page (the API's cap).
pub const PAGE_EVENTS: usize = 1000;
/// Largest answer read for one page (64 MiB): 1,000 events of up to about 48 KiB each in
/// base64; a larger answer is an error, never buffered.
pub const PAGE_BYTES_MAX: u64 = 64 << 20;
/// Bound on one HTTP exchange, connection and whole answer included.
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// Delay of the pass that follows each reconnection's.
pub const SETTLE: Duration = Duration::from_secs(5);
/// Default period of the passes while nothing else asks for one ([`Settings::interval`]).
pub const INTERVAL: Duration = Duration::from_secs(60);

/// Where a first pass starts when no position is remembered for the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At the archive's newest event: events from now on (the default).
    Now,
    /// At the archive's oldest event: everything it still holds.
    All,
}

impl fmt::Display for Start {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Now => "now",
            Self::All => "all",
        })
    }
}

/// What one catch-up reads, and where it keeps its position.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The upstream's HTTP API base, `http://HOST:PORT` or `https://HOST[:PORT][/PREFIX]`.
    pub url: String,
    /// The node's state directory (its `--eventdb`): the position is kept in a file there.
    pub state_dir: PathBuf,
    /// Where a first pass starts.
    pub start: Start,
    /// Period of the passes while nothing else asks for one (default [`INTERVAL`]).
    pub interval: Duration,
    /// CA certificates (PEM) an `https://` archive must be signed by (`--tls-ca`); without,
    /// Mozilla's root certificates (webpki-roots).
    pub tls_ca: Option<PathBuf>,
}

/// Counters of one catch-up, readable from any thread.
#[derive(Debug, Default)]
pub struct Stats {
    /// Events fetched and handed to the node (new or duplicate alike).
    pub events: AtomicU64,
    /// Passes that reached the archive's end.
    pub passes: AtomicU64,
    /// Failed requests and malformed answers (each retried).
    pub errors: AtomicU64,
    /// Gaps found (events the archive no longer holds).
    pub gaps: AtomicU64,
    /// Events lost in those gaps.
    pub gap_events: AtomicU64,
    /// The last sequence number committed (0: none yet).
    pub position: AtomicU64,
}

/// A running catch-up: stops (writing the last committed position) when dropped.
#[derive(Debug)]
pub struct CatchUp {
    worker: Worker,
    wanted: Arc<AtomicBool>,
    stats: Arc<Stats>,
}

/// Asks a [`CatchUp`] for a pass; cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct Trigger(Arc<AtomicBool>);

impl Trigger {
    /// The upstream came up: fetch what was missed.
    pub fn reconnected(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl CatchUp {
    /// Reads the remembered position and starts the reader thread, which hands what it
    /// fetches to the node through `feeder`.
    ///
    /// # Errors
    ///
    /// The URL is not `http://` or `https://`, the state file cannot be read or is damaged
    /// (the message names it and says what to do), or the thread cannot be started.
    pub fn spawn(settings: Settings, feeder: Feeder) -> std::io::Result<Self> {
        let url = base_url(&settings.url)?;
        let state = state_path(&settings.state_dir, &url);
        let position = read_state(&state)?;
        let wanted = Arc::new(AtomicBool::new(true));
        let stats = Arc::new(Stats::default());
        stats
            .position
            .store(position.unwrap_or(0), Ordering::Relaxed);
        let roots = match &settings.tls_ca {
            Some(file) => ureq::tls::RootCerts::new_with_certs(&ca_certificates(file)?),
            None => ureq::tls::RootCerts::WebPki,
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            .user_agent(concat!("vtp/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let mut reader = Reader {
            url,
            state,
            start: settings.start,
            interval: settings.interval.max(Duration::from_millis(100)),
            feeder,
            agent,
            stop: Arc::default(),
            wanted: Arc::clone(&wanted),
            stats: Arc::clone(&stats),
            committed: position,
            fetched: position,
            lane: 0,
            backoff: Backoff::new(BACKOFF, u64::from(std::process::id())),
        };
        let worker = Worker::spawn("vtp-catch-up", move |stop| {
            reader.stop = stop;
            reader.run();
        })?;
        Ok(Self {
            worker,
            wanted,
            stats,
        })
    }

    /// A handle that asks for a pass (give it to whatever sees the upstream come up).
    pub fn trigger(&self) -> Trigger {
        Trigger(Arc::clone(&self.wanted))
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// Stops it and waits for its thread (which writes the last committed position).
    pub fn stop(self) {
        self.worker.stop();
    }
}

/// The back-off between failed passes: 1 s doubling to a minute.
const BACKOFF: BackoffConfig = BackoffConfig {
    initial: Duration::from_secs(1),
    factor: 2.0,
    cap: Duration::from_secs(60),
    jitter: 0.2,
    reset_after: Duration::ZERO,
};
/// How long the reader waits for commits (and for room in the inbox) between checks of its
/// stop flag and trigger.
const TICK: Duration = Duration::from_millis(100);

struct Reader {
    url: String,
    state: PathBuf,
    start: Start,
    interval: Duration,
    feeder: Feeder,
    agent: ureq::Agent,
    stop: Arc<AtomicBool>,
    wanted: Arc<AtomicBool>,
    stats: Arc<Stats>,
    /// The last sequence number committed (in the state file); `None` before a first pass.
    committed: Option<u64>,
    /// The last sequence number handed to the node (committed or not).
    fetched: Option<u64>,
    /// The lane records go on: bumped when the archive was reset, so positions grow per lane.
    lane: u32,
    backoff: Backoff,
}

/// Why a pass stopped early.
enum PassError {
    /// The loop stopped (or we were asked to): nothing to retry.
    Stopped,
    /// A request failed or its answer was malformed; retried later.
    Failed(String),
}

/// One page of `GET /api/events`.
#[derive(Debug, Deserialize)]
struct Page {
    events: Vec<PageEvent>,
    next_after: Option<u64>,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct PageEvent {
    seq: u64,
    #[serde(default)]
    payload: Option<String>,
}

impl Reader {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn run(mut self) {
        let mut due = Some(Instant::now());
        let mut settle: Option<Instant> = None;
        let mut periodic = Instant::now() + self.interval;
        while !self.stopping() {
            self.absorb_commits();
            let now = Instant::now();
            if self.wanted.swap(false, Ordering::Relaxed) {
                due = Some(now);
                settle = Some(now + SETTLE);
            }
            if settle.is_some_and(|t| t <= now) {
                settle = None;
                due.get_or_insert(now);
            }
            if periodic <= now {
                periodic = now + self.interval;
                due.get_or_insert(now);
            }
            if due.is_some_and(|t| t <= now) {
                match self.pass() {
                    Ok(()) => {
                        due = None;
                        self.backoff = Backoff::new(BACKOFF, u64::from(std::process::id()));
                        self.stats.passes.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(PassError::Stopped) => break,
                    Err(PassError::Failed(reason)) => {
                        self.stats.errors.fetch_add(1, Ordering::Relaxed);
                        let delay = self.backoff.next_delay();
                        tracing::warn!(
                            "catch-up from {}: {reason}; retrying in {:.1} s",
                            self.url,
                            delay.as_secs_f64()
                        );
                        due = Some(Instant::now() + delay);
                    }
                }
                continue;
            }
            let waited = Instant::now();
            if !self.feeder.wait_commits(TICK) && waited.elapsed() < TICK / 2 {
                // The loop has stopped (the inbox is closed): wait for our own stop.
                std::thread::park_timeout(TICK);
            }
        }
        // What the node made durable before it stopped.
        self.absorb_commits();
    }

    /// Takes the node's commits of the current lane and writes the new position.
    fn absorb_commits(&mut self) {
        let commits = self.feeder.take_commits();
        let Some(&next) = commits.get(&self.lane) else {
            return;
        };
        let position = next.saturating_sub(1);
        if self.committed == Some(position) {
            return;
        }
        match write_state(&self.state, &self.url, position) {
            Ok(()) => {
                self.committed = Some(position);
                self.stats.position.store(position, Ordering::Relaxed);
            }
            Err(e) => tracing::error!(
                "catch-up from {}: cannot write {}: {e}; the position (seq {position}) is kept \
                 in memory and written at the next commit (after a crash, events since the \
                 last written position are fetched again, and dropped as duplicates)",
                self.url,
                self.state.display()
            ),
        }
    }

    /// Fetches and hands in pages from the position until the archive has no more. The next
    /// page is fetched (on a scoped thread) while this one is handed in: at most two pages
    /// are in memory.
    fn pass(&mut self) -> Result<(), PassError> {
        let mut after = match self.fetched {
            Some(after) => after,
            None => self.first_position()?,
        };
        let mut page = self.get(&page_url(&self.url, after))?;
        if page.last_seq.unwrap_or(0) < after {
            self.lane += 1;
            tracing::warn!(
                "catch-up from {}: the archive's newest event is seq {} but this node had \
                 reached seq {after}: the archive was reset (its sequence started again); \
                 fetching everything it holds (events handled before are dropped as \
                 duplicates)",
                self.url,
                page.last_seq
                    .map_or_else(|| "none".into(), |s| s.to_string()),
            );
            after = 0;
            self.fetched = Some(0);
            page = self.get(&page_url(&self.url, 0))?;
        }
        let began = Instant::now();
        let from = after;
        let mut fetched = 0u64;
        let (agent, base, stop) = (self.agent.clone(), self.url.clone(), Arc::clone(&self.stop));
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Page, String>>(0);
            match next_after(&page) {
                Some(next) => {
                    scope.spawn(move || prefetch(&agent, &base, next, &stop, &tx));
                }
                None => drop(tx),
            }
            loop {
                let more = next_after(&page).is_some();
                self.consume(page, &mut after, &mut fetched)?;
                if !more {
                    return Ok(());
                }
                page = match rx.recv() {
                    Ok(Ok(page)) => page,
                    Ok(Err(reason)) => return Err(PassError::Failed(reason)),
                    Err(_) if self.stopping() => return Err(PassError::Stopped),
                    Err(_) => {
                        return Err(PassError::Failed("the page fetcher ended early".into()));
                    }
                };
            }
        })?;
        if fetched > 0 {
            tracing::info!(
                "catch-up from {}: {fetched} events fetched (after seq {from}, up to seq \
                 {after}) in {:.3} s; each is handled unless it was before",
                self.url,
                began.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }

    /// Checks one page against the position `after` (a gap is logged), hands its events in
    /// and moves `after` to its last.
    fn consume(&mut self, page: Page, after: &mut u64, fetched: &mut u64) -> Result<(), PassError> {
        if let Some(oldest) = page.first_seq
            && after.saturating_add(1) < oldest
        {
            let lost = oldest - *after - 1;
            self.stats.gaps.fetch_add(1, Ordering::Relaxed);
            self.stats.gap_events.fetch_add(lost, Ordering::Relaxed);
            tracing::warn!(
                "catch-up from {}: gap: events seq {}..={} ({lost}) are no longer in the \
                 archive (its retention passed) and cannot be caught up",
                self.url,
                *after + 1,
                oldest - 1
            );
        }
        for ev in page.events {
            if ev.seq <= *after {
                return Err(PassError::Failed(format!(
                    "malformed answer: event seq {} follows seq {after} (sequence numbers \
                     must grow)",
                    ev.seq
                )));
            }
            let Some(b64) = ev.payload else {
                return Err(PassError::Failed(format!(
                    "malformed answer: event seq {} has no \"payload\" (the server ignored \
                     include=payload: is it a vtp archive API?)",
                    ev.seq
                )));
            };
            let payload = base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| {
                    PassError::Failed(format!(
                        "malformed answer: the payload of event seq {} is not base64 ({e})",
                        ev.seq
                    ))
                })?;
            drop(b64);
            self.hand_in(ev.seq, Bytes::from(payload))?;
            *after = ev.seq;
            *fetched += 1;
        }
        Ok(())
    }

    /// The position of a first pass (no state file): the archive's newest event, or 0.
    fn first_position(&mut self) -> Result<u64, PassError> {
        let position = match self.start {
            Start::All => 0,
            Start::Now => {
                let page = self.get(&format!("{}/api/events?limit=1", self.url))?;
                page.last_seq.unwrap_or(0)
            }
        };
        tracing::info!(
            "catch-up from {}: no position remembered yet; starting after seq {position} \
             (--catch-up-start {}{})",
            self.url,
            self.start,
            if self.start == Start::Now {
                ": events from now on; `all` fetches everything the archive holds"
            } else {
                ""
            }
        );
        write_state(&self.state, &self.url, position).map_err(|e| {
            PassError::Failed(format!("cannot write {}: {e}", self.state.display()))
        })?;
        self.committed = Some(position);
        self.fetched = Some(position);
        self.stats.position.store(position, Ordering::Relaxed);
        Ok(position)
    }

    /// Hands one event to the node, waiting for room (commits taken meanwhile).
    fn hand_in(&mut self, seq: u64, payload: Bytes) -> Result<(), PassError> {
        let at = Position {
            lane: self.lane,
            offset: seq,
        };
        loop {
            if self.stopping() {
                return Err(PassError::Stopped);
            }
            match self.feeder.send(at, payload.clone(), TICK) {
                Ok(true) => break,
                Ok(false) => self.absorb_commits(),
                Err(Closed) => return Err(PassError::Stopped),
            }
        }
        self.fetched = Some(seq);
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// One bounded GET of a page, parsed.
    fn get(&self, url: &str) -> Result<Page, PassError> {
        get_page(&self.agent, url).map_err(PassError::Failed)
    }
}

/// The page of events after `after`, with their bytes.
fn page_url(base: &str, after: u64) -> String {
    format!("{base}/api/events?after={after}&include=payload&limit={PAGE_EVENTS}")
}

/// Where the page after `page` starts (its last event), if there may be one: a full page with
/// a `next_after`.
fn next_after(page: &Page) -> Option<u64> {
    if page.events.len() < PAGE_EVENTS || page.next_after.is_none() {
        return None;
    }
    page.events.last().map(|e| e.seq)
}

/// Fetches pages from `after` on into `tx` until the archive has no more, a request fails
/// (sent as the last item), the receiver is gone or `stop` is set.
fn prefetch(
    agent: &ureq::Agent,
    base: &str,
    mut after: u64,
    stop: &AtomicBool,
    tx: &std::sync::mpsc::SyncSender<Result<Page, String>>,
) {
    while !stop.load(Ordering::Relaxed) {
        match get_page(agent, &page_url(base, after)) {
            Ok(page) => {
                let next = next_after(&page);
                if tx.send(Ok(page)).is_err() {
                    return;
                }
                match next {
                    Some(n) if n > after => after = n,
                    // Not past `after`: the receiver finds the page malformed.
                    _ => return,
                }
            }
            Err(reason) => {
                let _ = tx.send(Err(reason));
                return;
            }
        }
    }
}

/// One bounded GET of a page, parsed; the error says what was wrong.
/// Largest `--tls-ca` file read (1 MiB).
const CA_FILE_MAX: u64 = 1 << 20;

/// The certificates of a PEM file (`--tls-ca`).
///
/// # Errors
///
/// The file cannot be read, is over [`CA_FILE_MAX`], or holds no PEM certificate.
fn ca_certificates(file: &Path) -> std::io::Result<Vec<ureq::tls::Certificate<'static>>> {
    use std::io::Read;
    let name = file.display();
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut pem = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(CA_FILE_MAX + 1).read_to_end(&mut pem))
        .map_err(|e| invalid(format!("--tls-ca {name}: cannot read: {e}")))?;
    if pem.len() as u64 > CA_FILE_MAX {
        return Err(invalid(format!(
            "--tls-ca {name}: over 1 MiB: not a CA file?"
        )));
    }
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(invalid(format!(
            "--tls-ca {name}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it"
        )));
    }
    Ok(certs)
}

fn get_page(agent: &ureq::Agent, url: &str) -> Result<Page, String> {
    let mut resp = agent
        .get(url)
        .header("Accept", "application/json")
        .call()
        .map_err(|e| format!("request failed ({e})"))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(PAGE_BYTES_MAX)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => format!(
                "the answer is larger than {} MiB; not read",
                PAGE_BYTES_MAX >> 20
            ),
            e => format!("cannot read the answer ({e})"),
        })?;
    if status != 200 {
        let detail = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .map_or_else(String::new, |m| format!(": {}", crate::text::printable(&m)));
        let hint = match status {
            403 => {
                " (this node may not read the archive: check the upstream's subscriber \
                     whitelist or identities, or its HTTP listener's access rules)"
            }
            404 => {
                " (no archive API there: is the URL the upstream's --http address, and does \
                     it keep an archive?)"
            }
            _ => "",
        };
        return Err(format!("HTTP {status}{detail}{hint}"));
    }
    serde_json::from_slice::<Page>(&body).map_err(|e| {
        format!(
            "malformed answer: not an events page ({e}); is the URL the upstream's --http \
             address?"
        )
    })
}

/// `url` without trailing slashes, checked to be `http://` or `https://`.
fn base_url(url: &str) -> std::io::Result<String> {
    let trimmed = url.trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['?', '#']) => Ok(trimmed.to_owned()),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "catch-up URL {url:?}: expected the upstream's HTTP API base, \
                 http://HOST:PORT or https://HOST[:PORT] (no query)"
            ),
        )),
    }
}

/// The state file of `url` in `dir`: `catch-up-` and the URL with every character but
/// letters, digits, `.` and `-` replaced by `_` (`catch-up-http___127.0.0.1_8080.seq`).
pub fn state_path(dir: &Path, url: &str) -> PathBuf {
    let mut name: String = url
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.len() > 180 {
        // Long URLs keep a readable start and a hash of the whole.
        let hash = crc32fast::hash(url.as_bytes());
        name.truncate(160);
        name.push_str(&format!("-{hash:08x}"));
    }
    dir.join(format!("catch-up-{name}.seq"))
}

/// The position in `path`, `None` if there is no such file.
fn read_state(path: &Path) -> std::io::Result<Option<u64>> {
    let text = match std::fs::read(path) {
        Ok(bytes) if bytes.len() <= 4096 => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(_) => String::new(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(std::io::Error::new(
                e.kind(),
                format!("catch-up state {}: cannot read: {e}", path.display()),
            ));
        }
    };
    text.lines()
        .find_map(|l| l.strip_prefix("after "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "catch-up state {} is damaged (no line `after SEQ`): write the last \
                     sequence number handled as `after SEQ`, or delete the file to start \
                     again as on a first run (--catch-up-start)",
                    path.display()
                ),
            )
        })
}

/// Writes `position` to `path` atomically: a temporary file, synced, renamed over it, the
/// directory synced.
fn write_state(path: &Path, url: &str, position: u64) -> std::io::Result<()> {
    let tmp = path.with_extension("seq.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        write!(
            f,
            "# vtp catch-up position: the last archive sequence number handled\nurl {url}\nafter {position}\n"
        )?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_damage_is_reported() {
        let dir = crate::testutil::TempDir::new("catch-up");
        let path = state_path(dir.path(), "http://127.0.0.1:8080");
        assert!(
            path.ends_with("catch-up-http___127.0.0.1_8080.seq"),
            "{path:?}"
        );
        assert_eq!(read_state(&path).expect("no file is fine"), None);
        write_state(&path, "http://127.0.0.1:8080", 42).expect("written");
        assert_eq!(read_state(&path).expect("read"), Some(42));
        write_state(&path, "http://127.0.0.1:8080", 43).expect("replaced");
        assert_eq!(read_state(&path).expect("read"), Some(43));
        std::fs::write(&path, "after x\n").expect("damaged");
        let e = read_state(&path).expect_err("damaged");
        assert!(e.to_string().contains("is damaged"), "{e}");
    }

    #[test]
    fn only_a_full_page_with_next_after_has_a_next_one() {
        let page = |n: u64, next: Option<u64>| Page {
            events: (1..=n)
                .map(|seq| PageEvent { seq, payload: None })
                .collect(),
            next_after: next,
            first_seq: Some(1),
            last_seq: Some(5000),
        };
        let full = PAGE_EVENTS as u64;
        assert_eq!(next_after(&page(full, Some(full))), Some(full));
        assert_eq!(
            next_after(&page(full, None)),
            None,
            "next_after null: the end"
        );
        assert_eq!(
            next_after(&page(full - 1, Some(full - 1))),
            None,
            "short: the end"
        );
        assert_eq!(next_after(&page(0, None)), None);
        let parsed: Page = serde_json::from_str(
            r#"{"events":[{"seq":7,"ivorn":"ivo://a/b#c","payload":"PHgvPg=="}],
               "next_after":7,"first_seq":1,"last_seq":7,"extra":true}"#,
        )
        .expect("unknown fields are ignored");
        assert_eq!(parsed.events[0].payload.as_deref(), Some("PHgvPg=="));
        assert_eq!(
            page_url("http://h", 7),
            "http://h/api/events?after=7&include=payload&limit=1000"
        );
    }

    #[test]
    fn urls_are_checked_and_long_ones_hashed() {
        assert_eq!(
            base_url("http://h:8080/").expect("ok"),
            "http://h:8080".to_owned()
        );
        assert!(base_url("https://h/vtp").is_ok());
        for bad in ["h:8080", "ftp://h", "http://", "http://h/?a=1"] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
        let long = format!("https://h/{}", "a".repeat(300));
        let name = state_path(Path::new("/s"), &long);
        let file = name.file_name().and_then(|n| n.to_str()).expect("name");
        assert!(file.len() < 200, "{file}");
        assert_ne!(
            state_path(Path::new("/s"), &format!("{long}b")),
            name,
            "the hash tells long URLs apart"
        );
    }
}
