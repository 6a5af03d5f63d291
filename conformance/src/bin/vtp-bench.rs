//! `vtp-bench`: a load generator that drives any VTP broker (vtp, Comet, ...) over TCP.
//!
//! Modes:
//!
//! - `submit`: N events from C concurrent authors, one connection per event (as comet-sendvo
//!   does); submissions/s and receipt latency.
//! - `subscribe`: S subscribers that answer iamalive and ack every event, until each has N
//!   events; deliveries/s and per-subscriber counts. Events come from elsewhere.
//! - `e2e`: both at once: latency from each submission's start to its receipt at each
//!   subscriber (p50/p99/max), events/s and deliveries/s; paced (`--rate R`) or closed-loop
//!   (`--rate 0`: at most `--window` events not yet at every subscriber).
//! - `hold`: S subscribers connected for T seconds; checks that each got its iamalives on time.
//! - `handshake`: N connections to the broadcast address from C threads, each a full TLS
//!   handshake (with `--tls-ca`; a plain connect without) and the broker's first frame;
//!   connections/s, and with `--pid` the broker's CPU per connection.
//!
//! With `--tls-ca FILE` subscribers connect with TLS (authors always submit over plain TCP):
//! full handshakes, one key-exchange group (`--tls-group`, X25519 by default), the broker's
//! certificate verified for `--tls-name`.
//!
//! With `--pid PID` the broker's CPU time (utime+stime from `/proc/PID/stat`, and the exact
//! per-thread schedstat sum) and memory are sampled around the measured phase. The
//! generator's own CPU time is always reported (`bench_cpu_ms`).
//!
//! Output: a compact table, then one JSON line (the last line of stdout). Exit status 0 when
//! the run completed as expected, 1 when it did not (the report says why), 2 on a usage error.

#[path = "../bench/mod.rs"]
mod bench;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

use bench::report::{Report, quantile, rate, round3};
use bench::sign::SignedEvents;
use bench::subscribers::{Pool, Setup, ThreadResult};
use bench::tls::TlsClient;
use bench::{Book, EventTemplate, ProcSample, author, handshake, proc_stat};

/// Load generator for VTP brokers: submit, subscribe, end-to-end latency, hold many
/// subscribers.
#[derive(Debug, Parser)]
#[command(name = "vtp-bench", version)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Submit N distinct events from C concurrent authors (one connection per event).
    Submit {
        /// The broker's receive (author) address.
        #[arg(long, value_name = "HOST:PORT", value_parser = addr)]
        receive: SocketAddr,
        /// Events to submit.
        #[arg(long, value_name = "N")]
        events: u64,
        /// Concurrent authors.
        #[arg(long, value_name = "C", default_value_t = 8)]
        authors: usize,
        #[command(flatten)]
        sign: SignArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Connect S subscribers and count the events they receive until each has N.
    Subscribe {
        /// The broker's broadcast (subscriber) address.
        #[arg(long, value_name = "HOST:PORT", value_parser = addr)]
        broadcast: SocketAddr,
        /// Subscribers.
        #[arg(long, value_name = "S")]
        subscribers: usize,
        /// Events each subscriber waits for.
        #[arg(long, value_name = "N")]
        expect: u64,
        #[command(flatten)]
        common: Common,
    },
    /// Subscribers and authors together: latency from submission start to receipt.
    E2e {
        #[command(flatten)]
        args: E2eArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Hold S subscribers for T seconds and check their iamalives arrive on time.
    Hold {
        /// The broker's broadcast (subscriber) address.
        #[arg(long, value_name = "HOST:PORT", value_parser = addr)]
        broadcast: SocketAddr,
        /// Subscribers.
        #[arg(long, value_name = "S")]
        subscribers: usize,
        /// Seconds to hold them once all are connected.
        #[arg(long, value_name = "T")]
        seconds: f64,
        /// The broker's iamalive period, in seconds.
        #[arg(long, value_name = "SECS")]
        iamalive: f64,
        /// Lateness allowed on top of the iamalive period, in seconds.
        #[arg(long, value_name = "SECS", default_value_t = 1.0)]
        slack: f64,
        #[command(flatten)]
        common: Common,
    },
    /// Open N connections to the broadcast address from C threads: connect, TLS handshake
    /// (with --tls-ca; plain without), the broker's first frame, reset.
    Handshake {
        /// The broker's broadcast (subscriber) address.
        #[arg(long, value_name = "HOST:PORT", value_parser = addr)]
        broadcast: SocketAddr,
        /// Connections in all.
        #[arg(long, value_name = "N")]
        connections: u64,
        /// Concurrent connections (one per thread).
        #[arg(long, value_name = "C", default_value_t = 8)]
        concurrency: usize,
        #[command(flatten)]
        common: Common,
    },
}

/// `submit --sign-key`: signed submissions.
#[derive(Debug, Args)]
struct SignArgs {
    /// Sign every event with the OpenPGP secret key in FILE (what `gpg --export-secret-keys
    /// --armor` writes): each event its own detached signature over its root element, in a
    /// comment after it (Comet's convention). All are made before the timed run (the report
    /// gives the signing time apart); each frame is built at submission time.
    #[arg(long, value_name = "FILE")]
    sign_key: Option<PathBuf>,
    /// A file whose first line is the passphrase of --sign-key (default: the key is not
    /// protected).
    #[arg(long, value_name = "FILE", requires = "sign_key")]
    sign_passphrase_file: Option<PathBuf>,
}

impl SignArgs {
    /// Signs events `0..events` of `template` (None without --sign-key).
    fn sign(&self, template: &EventTemplate, events: u64) -> Result<Option<SignedEvents>, String> {
        let Some(key) = &self.sign_key else {
            return Ok(None);
        };
        let passphrase = match &self.sign_passphrase_file {
            Some(file) => {
                let text = std::fs::read_to_string(file).map_err(|e| {
                    format!(
                        "--sign-passphrase-file {}: cannot read: {e}",
                        file.display()
                    )
                })?;
                text.lines().next().unwrap_or("").to_owned()
            }
            None => String::new(),
        };
        let signer = vtp_sig::Signer::load(key, &passphrase).map_err(|e| {
            let hint = if self.sign_passphrase_file.is_none() {
                " (if the key is protected, give --sign-passphrase-file)"
            } else {
                ""
            };
            format!("--sign-key {}: {e}{hint}", key.display())
        })?;
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        SignedEvents::sign_all(template, events, &signer, threads).map(Some)
    }
}

#[derive(Debug, Args)]
struct Common {
    /// The broker's process id: sample its CPU time and memory around the measured phase.
    #[arg(long, value_name = "PID")]
    pid: Option<u32>,
    /// Bound on connecting the subscribers, and separately on the measured phase, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 120.0)]
    timeout: f64,
    /// Threads the subscribers are multiplexed on.
    #[arg(long, value_name = "N", default_value_t = 2)]
    threads: usize,
    /// Event document to submit (default: the built-in 10 KB GCN Swift BAT fixture); its
    /// IVORN gets a unique suffix per event.
    #[arg(long, value_name = "FILE")]
    event: Option<PathBuf>,
    /// A name for the run, copied into the report (e.g. the broker's).
    #[arg(long, value_name = "NAME", default_value = "")]
    label: String,
    /// Subscribers (and the handshake mode) connect with TLS, trusting only the CA
    /// certificates in this PEM file; authors always submit over plain TCP.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// The name the broker's certificate must be valid for (DNS name or IP address).
    #[arg(long, value_name = "NAME", default_value = "localhost")]
    tls_name: String,
    /// The only key-exchange group offered: x25519 (what OpenSSL clients offer first), p256,
    /// or p384 (rustls's own first choice).
    #[arg(long, value_name = "GROUP", default_value = "x25519")]
    tls_group: String,
}

impl Common {
    /// The TLS client settings, when --tls-ca is given.
    fn tls(&self) -> Result<Option<TlsClient>, String> {
        self.tls_ca
            .as_deref()
            .map(|ca| TlsClient::new(ca, &self.tls_name, &self.tls_group))
            .transpose()
    }

    /// Records whether the run used TLS, and with which group.
    fn put_tls(&self, r: &mut Report) {
        r.put("tls", self.tls_ca.is_some());
        r.put(
            "tls_group",
            self.tls_ca.as_ref().map(|_| self.tls_group.as_str()),
        );
    }
}

fn addr(s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .map_err(|e| format!("{s}: {e}"))?
        .next()
        .ok_or_else(|| format!("{s}: no address"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.mode {
        Mode::Submit {
            receive,
            events,
            authors,
            sign,
            common,
        } => submit(receive, events, authors, &sign, &common),
        Mode::Subscribe {
            broadcast,
            subscribers,
            expect,
            common,
        } => subscribe(broadcast, subscribers, expect, &common),
        Mode::E2e { args, common } => e2e(&args, &common),
        Mode::Hold {
            broadcast,
            subscribers,
            seconds,
            iamalive,
            slack,
            common,
        } => hold(broadcast, subscribers, seconds, iamalive, slack, &common),
        Mode::Handshake {
            broadcast,
            connections,
            concurrency,
            common,
        } => handshakes(broadcast, connections, concurrency, &common),
    };
    match result {
        Ok((report, ok)) => {
            print!("{report}");
            println!("{}", report.json());
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(msg) => {
            eprintln!("vtp-bench: {msg}");
            ExitCode::from(2)
        }
    }
}

/// A finished run: the report and whether everything expected happened.
type Run = Result<(Report, bool), String>;

fn secs(s: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|_| format!("{what} must be a number of seconds ≥ 0"))
}

fn template(common: &Common) -> Result<Arc<EventTemplate>, String> {
    let doc = match &common.event {
        Some(p) => std::fs::read(p).map_err(|e| format!("--event {}: {e}", p.display()))?,
        None => bench::GCN_FIXTURE.to_vec(),
    };
    EventTemplate::new(&doc, &bench::run_tag()).map(Arc::new)
}

fn check_events(events: u64) -> Result<(), String> {
    if events >= EventTemplate::capacity() {
        return Err(format!(
            "--events must be below {} (the IVORN's sequence digits)",
            EventTemplate::capacity()
        ));
    }
    Ok(())
}

/// Samples of the broker and of this process, before or after the measured phase.
struct Samples {
    broker: Option<ProcSample>,
    me: Option<ProcSample>,
}

impl Samples {
    fn take(pid: Option<u32>) -> Result<Self, String> {
        let broker = pid.map(|p| proc_stat(Some(p))).transpose()?;
        Ok(Self {
            broker,
            me: proc_stat(None).ok(),
        })
    }
}

/// Appends CPU and memory figures; `per` is the event count for the per-event figure.
fn put_costs(r: &mut Report, before: &Samples, after: &Samples, per: u64) {
    match (&before.broker, &after.broker) {
        (Some(b), Some(a)) => {
            let cpu = a.cpu_since(b);
            r.put("broker_cpu_ms", round3(cpu.as_secs_f64() * 1e3));
            r.put(
                "broker_cpu_ticks_ms",
                round3(a.ticks_since(b).as_secs_f64() * 1e3),
            );
            r.put(
                "broker_cpu_us_per_event",
                (per > 0).then(|| round3(cpu.as_secs_f64() * 1e6 / per as f64)),
            );
            r.put("broker_rss_kib", a.rss_kib);
            r.put("broker_hwm_kib", a.hwm_kib);
        }
        _ => {
            for k in [
                "broker_cpu_ms",
                "broker_cpu_ticks_ms",
                "broker_cpu_us_per_event",
                "broker_rss_kib",
                "broker_hwm_kib",
            ] {
                r.put(k, None::<u64>);
            }
        }
    }
    let me = before
        .me
        .zip(after.me)
        .map(|(b, a)| round3(a.cpu_since(&b).as_secs_f64() * 1e3));
    r.put("bench_cpu_ms", me);
}

/// The report's keys for receipt latencies (p50, p99, max, mean).
const RECEIPT_KEYS: &[&str; 4] = &[
    "receipt_p50_ms",
    "receipt_p99_ms",
    "receipt_max_ms",
    "receipt_mean_ms",
];

/// The report's keys for end-to-end latencies (p50, p99, max, mean).
const LATENCY_KEYS: &[&str; 4] = &[
    "latency_p50_ms",
    "latency_p99_ms",
    "latency_max_ms",
    "latency_mean_ms",
];

fn put_latencies(r: &mut Report, prefix: &'static [&'static str; 4], lat: &mut [Duration]) {
    lat.sort_unstable();
    r.ms(prefix[0], quantile(lat, 0.5));
    r.ms(prefix[1], quantile(lat, 0.99));
    r.ms(prefix[2], lat.last().copied());
    let mean = (!lat.is_empty()).then(|| {
        Duration::from_secs_f64(
            lat.iter().map(Duration::as_secs_f64).sum::<f64>() / lat.len() as f64,
        )
    });
    r.ms(prefix[3], mean);
}

/// Starts `subscribers` subscribers to `broadcast` on the `--threads` threads (matching events
/// to `track`'s template and book of submissions, if given) and waits up to `timeout` until
/// they are ready; returns the pool and how many are.
fn start_subscribers(
    broadcast: SocketAddr,
    subscribers: usize,
    track: Option<(&Arc<EventTemplate>, &Arc<Book>)>,
    common: &Common,
    timeout: Duration,
) -> Result<(Pool, usize), String> {
    let pool = Pool::start(&Setup {
        addr: broadcast,
        subscribers,
        threads: common.threads,
        template: track.map(|(t, _)| Arc::clone(t)),
        book: track.map(|(_, b)| Arc::clone(b)),
        tls: common.tls()?,
    })
    .map_err(|e| format!("cannot start the subscriber threads: {e}"))?;
    let ready = pool.wait_ready(subscribers, Instant::now() + timeout);
    Ok((pool, ready))
}

fn span(from: Option<Instant>, to: Option<Instant>) -> Option<Duration> {
    Some(to?.saturating_duration_since(from?))
}

// ----------------------------------------------------------------------------------- submit

fn submit(
    receive: SocketAddr,
    events: u64,
    authors: usize,
    sign: &SignArgs,
    common: &Common,
) -> Run {
    check_events(events)?;
    let template = template(common)?;
    let signed = sign.sign(&template, events)?.map(Arc::new);
    let plan = author::Plan {
        addr: receive,
        events,
        authors,
        rate: None,
        window: None,
        stream: false,
        timeout: secs(common.timeout, "--timeout")?,
        signed: signed.clone(),
    };
    let before = Samples::take(common.pid)?;
    let out = author::run(&plan, &template, None);
    let after = Samples::take(common.pid)?;
    let mut r = Report::default();
    r.put("mode", "submit");
    r.put("label", common.label.as_str());
    r.put("events", events);
    r.put("authors", authors);
    r.put("event_bytes", template.frame_len() - 4);
    put_signing(&mut r, signed.as_deref(), events);
    r.put("acked", out.acked);
    r.put("naked", out.naked);
    r.put("failed", out.failed);
    let wall = span(out.first_start, out.last_end);
    r.ms("wall_ms", wall);
    r.put("submissions_per_s", rate(out.acked, wall));
    let mut lat = out.receipt_latencies;
    put_latencies(&mut r, RECEIPT_KEYS, &mut lat);
    put_costs(&mut r, &before, &after, out.acked);
    r.put("first_nak", out.first_nak);
    r.put("first_failure", out.first_failure);
    let ok = out.acked == events;
    r.put("ok", ok);
    Ok((r, ok))
}

/// What signing cost, before the timed run (`signed`: false and nulls without --sign-key).
fn put_signing(r: &mut Report, signed: Option<&SignedEvents>, events: u64) {
    r.put("signed", signed.is_some());
    r.put("signed_event_bytes", signed.map(|s| s.event_bytes));
    r.put("sign_key", signed.map(|s| s.fingerprint.as_str()));
    r.ms("sign_wall_ms", signed.map(|s| s.wall));
    r.put("sign_threads", signed.map(|s| s.threads));
    r.put(
        "sign_us_per_event",
        signed
            .filter(|_| events > 0)
            .map(|s| round3(s.busy.as_secs_f64() * 1e6 / events as f64)),
    );
}

// -------------------------------------------------------------------------------- subscribe

fn subscribe(broadcast: SocketAddr, subscribers: usize, expect: u64, common: &Common) -> Run {
    let timeout = secs(common.timeout, "--timeout")?;
    let (pool, ready) = start_subscribers(broadcast, subscribers, None, common, timeout)?;
    eprintln!("vtp-bench: {ready} of {subscribers} subscribers ready");
    let before = Samples::take(common.pid)?;
    let want = expect * ready as u64;
    let deadline = Instant::now() + timeout;
    let shared = Arc::clone(&pool.shared);
    while shared.deliveries.load(Ordering::Acquire) < want
        && shared.dropped.load(Ordering::Acquire) < ready
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let after = Samples::take(common.pid)?;
    let res = pool.finish();
    let counts: Vec<u64> = res.subs.iter().map(|s| s.events).collect();
    let deliveries: u64 = counts.iter().sum();
    let complete = counts.iter().filter(|&&c| c >= expect).count();
    let mut r = Report::default();
    r.put("mode", "subscribe");
    r.put("label", common.label.as_str());
    common.put_tls(&mut r);
    put_subscribers(&mut r, subscribers, ready, &res);
    r.put("expect", expect);
    r.put("deliveries", deliveries);
    let wall = span(res.first_delivery, res.last_delivery);
    r.ms("wall_ms", wall);
    r.put("deliveries_per_s", rate(deliveries, wall));
    r.put("count_min", counts.iter().min().copied());
    r.put("count_max", counts.iter().max().copied());
    r.put("subscribers_complete", complete);
    if counts.len() <= 200 {
        let list: Vec<String> = counts.iter().map(u64::to_string).collect();
        r.put("counts", list.join(" "));
    }
    put_costs(&mut r, &before, &after, expect);
    let ok = complete == subscribers && res.error.is_none();
    r.put("ok", ok);
    Ok((r, ok))
}

fn put_subscribers(r: &mut Report, subscribers: usize, ready: usize, res: &ThreadResult) {
    r.put("subscribers", subscribers);
    r.put("subscribers_ready", ready);
    let dropped: Vec<&String> = res
        .subs
        .iter()
        .filter(|s| s.ready_at.is_some())
        .filter_map(|s| s.closed.as_ref())
        .collect();
    r.put("subscribers_dropped", dropped.len());
    let never: Option<&String> = res
        .subs
        .iter()
        .filter(|s| s.ready_at.is_none())
        .find_map(|s| s.closed.as_ref());
    r.put("first_drop", dropped.first().map(|s| s.as_str()));
    r.put("first_connect_failure", never.map(String::as_str));
    r.put(
        "foreign_events",
        res.subs.iter().map(|s| s.foreign).sum::<u64>(),
    );
    r.put(
        "unparsable_frames",
        res.subs.iter().map(|s| s.unparsable).sum::<u64>(),
    );
    r.put("thread_error", res.error.as_deref());
}

// -------------------------------------------------------------------------------------- e2e

/// The `e2e` mode's options.
#[derive(Debug, Args)]
struct E2eArgs {
    /// The broker's receive (author) address.
    #[arg(long, value_name = "HOST:PORT", value_parser = addr)]
    receive: SocketAddr,
    /// The broker's broadcast (subscriber) address.
    #[arg(long, value_name = "HOST:PORT", value_parser = addr)]
    broadcast: SocketAddr,
    /// Subscribers.
    #[arg(long, value_name = "S")]
    subscribers: usize,
    /// Events per second over all authors; 0: as fast as the window allows.
    #[arg(long, value_name = "R")]
    rate: f64,
    /// Events to submit.
    #[arg(long, value_name = "N")]
    events: u64,
    /// Concurrent authors.
    #[arg(long, value_name = "C", default_value_t = 2)]
    authors: usize,
    /// Event n is submitted only once event n-W reached every subscriber (keeps brokers'
    /// per-subscriber queues short: Comet drops a subscriber with 10 unacked events).
    #[arg(long, value_name = "W", default_value_t = 8)]
    window: u64,
    /// Write every event on one author connection without waiting for receipts (for the
    /// null relay, which answers nothing).
    #[arg(long)]
    stream: bool,
}

fn e2e(a: &E2eArgs, common: &Common) -> Run {
    check_events(a.events)?;
    if !(a.rate >= 0.0 && a.rate.is_finite()) {
        return Err("--rate must be a number ≥ 0".into());
    }
    let timeout = secs(common.timeout, "--timeout")?;
    let template = template(common)?;
    let book = Arc::new(Book::new(a.events, Instant::now()));
    let (pool, ready) = start_subscribers(
        a.broadcast,
        a.subscribers,
        Some((&template, &book)),
        common,
        timeout,
    )?;
    book.set_subscribers(u32::try_from(ready).unwrap_or(u32::MAX));
    let plan = author::Plan {
        addr: a.receive,
        events: a.events,
        authors: a.authors,
        rate: (a.rate > 0.0).then_some(a.rate),
        window: (a.window > 0).then_some(a.window),
        stream: a.stream,
        timeout,
        signed: None,
    };
    let before = Samples::take(common.pid)?;
    let out = if ready > 0 {
        author::run(&plan, &template, Some(&book))
    } else {
        author::Outcome::default()
    };
    // Every accepted event must reach every ready subscriber (or one is dropped: give up).
    let accepted = if a.stream { out.streamed } else { out.acked };
    book.wait_until(Instant::now() + timeout, || {
        book.completed() >= accepted || book.is_aborted()
    });
    let after = Samples::take(common.pid)?;
    let mut res = pool.finish();
    let complete = book.completed();
    let deliveries: u64 = res.subs.iter().map(|s| s.events).sum();

    let mut r = Report::default();
    r.put("mode", "e2e");
    r.put("label", common.label.as_str());
    common.put_tls(&mut r);
    put_subscribers(&mut r, a.subscribers, ready, &res);
    r.put("events", a.events);
    r.put("rate", a.rate);
    r.put("authors", if a.stream { 1 } else { a.authors });
    r.put("window", a.window);
    r.put("stream", a.stream);
    r.put("event_bytes", template.frame_len() - 4);
    r.put("acked", out.acked);
    r.put("naked", out.naked);
    r.put("failed", out.failed);
    r.put("events_complete", complete);
    r.put("deliveries", deliveries);
    // From the first submission's start to the last delivery.
    let wall = span(out.first_start, res.last_delivery);
    r.ms("wall_ms", wall);
    r.put("events_per_s", rate(complete, wall));
    r.put("deliveries_per_s", rate(deliveries, wall));
    put_latencies(&mut r, LATENCY_KEYS, &mut res.latencies);
    r.put("latency_samples", res.latencies.len());
    let mut receipts = out.receipt_latencies;
    put_latencies(&mut r, RECEIPT_KEYS, &mut receipts);
    put_costs(&mut r, &before, &after, complete);
    r.put("first_nak", out.first_nak);
    r.put("first_failure", out.first_failure);
    let ok = ready == a.subscribers
        && complete == a.events
        && deliveries == a.events * ready as u64
        && res.error.is_none();
    r.put("ok", ok);
    Ok((r, ok))
}

// ------------------------------------------------------------------------------------- hold

fn hold(
    broadcast: SocketAddr,
    subscribers: usize,
    seconds: f64,
    iamalive: f64,
    slack: f64,
    common: &Common,
) -> Run {
    let timeout = secs(common.timeout, "--timeout")?;
    let hold_for = secs(seconds, "--seconds")?;
    let period = secs(iamalive, "--iamalive")?;
    let allowed = period + secs(slack, "--slack")?;
    if hold_for < period * 2 {
        eprintln!("vtp-bench: warning: holding for less than two iamalive periods checks little");
    }
    let connect_start = Instant::now();
    let (pool, ready) = start_subscribers(broadcast, subscribers, None, common, timeout)?;
    let connect_time = connect_start.elapsed();
    eprintln!(
        "vtp-bench: {ready} of {subscribers} subscribers ready in {:.1} s; holding {seconds} s",
        connect_time.as_secs_f64()
    );
    let before = Samples::take(common.pid)?;
    let end = Instant::now() + hold_for;
    while Instant::now() < end {
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(100)));
    }
    let after = Samples::take(common.pid)?;
    let res = pool.finish();
    let held: Vec<_> = res
        .subs
        .iter()
        .filter(|s| s.ready_at.is_some() && s.closed.is_none())
        .collect();
    let on_time = held
        .iter()
        .filter(|s| s.iamalives > 0 && s.keepalive_gap_max <= allowed)
        .count();
    let mut gaps: Vec<Duration> = held.iter().map(|s| s.keepalive_gap_max).collect();
    gaps.sort_unstable();

    let mut r = Report::default();
    r.put("mode", "hold");
    r.put("label", common.label.as_str());
    common.put_tls(&mut r);
    put_subscribers(&mut r, subscribers, ready, &res);
    r.ms("connect_ms", Some(connect_time));
    r.put("seconds", seconds);
    r.put("iamalive_s", iamalive);
    r.put("held", held.len());
    r.put("on_time", on_time);
    r.put("iamalives_min", held.iter().map(|s| s.iamalives).min());
    r.put("iamalives_max", held.iter().map(|s| s.iamalives).max());
    r.ms("gap_p50_ms", quantile(&gaps, 0.5));
    r.ms("gap_p99_ms", quantile(&gaps, 0.99));
    r.ms("gap_max_ms", gaps.last().copied());
    put_costs(&mut r, &before, &after, 0);
    let ok = on_time == subscribers && res.error.is_none();
    r.put("ok", ok);
    Ok((r, ok))
}

// -------------------------------------------------------------------------------- handshake

fn handshakes(broadcast: SocketAddr, connections: u64, concurrency: usize, common: &Common) -> Run {
    let plan = handshake::Plan {
        addr: broadcast,
        connections,
        concurrency,
        tls: common.tls()?,
        timeout: secs(common.timeout, "--timeout")?,
    };
    let before = Samples::take(common.pid)?;
    let mut out = handshake::run(&plan);
    let after = Samples::take(common.pid)?;
    let mut r = Report::default();
    r.put("mode", "handshake");
    r.put("label", common.label.as_str());
    common.put_tls(&mut r);
    r.put("connections", connections);
    r.put("concurrency", concurrency);
    r.put("done", out.done);
    r.put("failed", out.failed);
    let wall = span(out.first_start, out.last_end);
    r.ms("wall_ms", wall);
    r.put("connections_per_s", rate(out.done, wall));
    put_latencies(&mut r, CONNECT_KEYS, &mut out.latencies);
    put_costs(&mut r, &before, &after, out.done);
    r.put("first_failure", out.first_failure);
    let ok = out.done == connections;
    r.put("ok", ok);
    Ok((r, ok))
}

/// The report's keys for connection latencies, connect to first frame (p50, p99, max, mean).
const CONNECT_KEYS: &[&str; 4] = &[
    "connect_p50_ms",
    "connect_p99_ms",
    "connect_max_ms",
    "connect_mean_ms",
];
