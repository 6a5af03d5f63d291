//! Hot-path numbers for the sans-IO core: parse throughput, allocations per parse and per
//! event, receipt building, fan-out cost, and the cost of a subscriber's ack. Run with
//! `cargo bench -p vtp-core --bench core`; `-- ack` runs only the ack figures (handy under
//! `valgrind --tool=callgrind`, whose instruction counts do not move with machine load), and
//! `-- parse` only the parse figures and `-- submit` only the 0-feed broker submission
//! (`--toggle-collect='*submit_one*'` counts the submissions alone).
//!
//! A plain `main` (no harness): throughputs are the best of several runs, per-submission times
//! the median of all submissions, and allocations are counted by a global allocator that wraps
//! the system one.

// A benchmark reads the clock: that is its job. The sans-IO clock ban is for the core itself.
#![allow(clippy::disallowed_methods)]
// Counting allocations needs a `GlobalAlloc` impl, which is an unsafe trait; each method only
// forwards to `System` with the caller's own arguments.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use vtp_core::filter::NoFilterEngine;
use vtp_core::frame::{self, FRAME_LEN_MAX_DEFAULT, FrameDecoder};
use vtp_core::message::{self, Message, ParseLimits};
use vtp_core::{Action, Config, ListenerRole, Node, Peer};

const GCN: &[u8] = include_bytes!("../tests/data/gcn_swift_bat.xml");
const LOCAL: &str = "ivo://example.org/broker";
const RUNS: usize = 5;

/// The receipt pygcn 1.1.3 sends for an event (`gcn/voeventclient.py::_form_response`, ack role),
/// for the fixture's ivorn: 502 bytes (a fixture the message tests share).
const PYGCN_ACK: &str = include_str!("../tests/data/pygcn_ack.xml");

// ------------------------------------------------------------------ counting allocator

static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static ALLOC_BYTES: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting every allocation and reallocation and their sizes.
struct Counting;

// SAFETY: every method forwards to `System` with exactly the arguments it was given, so the
// `GlobalAlloc` contract is upheld by `System`; the counters are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` came from `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: forwarded unchanged; `ptr` came from `System` through this allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn count(bytes: usize) {
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    ALLOC_BYTES.fetch_add(bytes, Ordering::Relaxed);
}

/// Allocations and bytes allocated so far.
fn allocs() -> (usize, usize) {
    (
        ALLOCS.load(Ordering::Relaxed),
        ALLOC_BYTES.load(Ordering::Relaxed),
    )
}

// ---------------------------------------------------------------------------- helpers

/// Best (shortest) time of `RUNS` runs of `f`.
fn best_of(mut f: impl FnMut()) -> Duration {
    (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn ns_per(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e9 / n as f64
}

/// The GCN fixture with a distinct ivorn (same length) for each `i`, framed.
fn unique_event(i: usize) -> Bytes {
    let marker = b"532871-729";
    let at = GCN
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("fixture ivorn");
    let mut payload = GCN.to_vec();
    payload[at..at + marker.len()].copy_from_slice(format!("{i:010}").as_bytes());
    frame::encode(&payload).expect("fits a frame")
}

fn broker(now: Instant) -> Node {
    let mut config = Config::new(Some(LOCAL.into()));
    config.timing.test_event_interval = None;
    // Every simulated peer is one address: lift the per-address limits (as the vtp-bench
    // workloads do).
    config.limits.author_connections_per_address = usize::MAX;
    config.limits.subscriber_connections_per_address = usize::MAX;
    Node::new(
        config,
        Box::new(NoFilterEngine),
        1,
        now,
        Duration::from_secs(1_714_564_800),
    )
    .expect("valid configuration")
}

/// Drains every output; returns the number of `Forward` actions.
fn drain(node: &mut Node) -> usize {
    let mut forwards = 0;
    loop {
        while let Some(a) = node.poll_action() {
            if matches!(a, Action::Forward { .. }) {
                forwards += 1;
            }
            drop(black_box(a));
        }
        if node.held() == 0 {
            break;
        }
        // A store that commits at once: what the node held for its records goes out now.
        node.handle_persisted(node.persists(), node.last_now());
    }
    while let Some(e) = node.poll_event() {
        drop(black_box(e));
    }
    forwards
}

// ----------------------------------------------------------------------------- benches

struct ParseFigures {
    mb_per_s: f64,
    ns_per_event: f64,
    allocs_per_parse: f64,
    bytes_per_parse: f64,
}

/// Frame decode + classify of the 10 KB fixture.
fn parse_bench() -> ParseFigures {
    let iterations = 20_000;
    let framed = frame::encode(GCN).expect("fits a frame");
    let limits = ParseLimits::default();
    let mut decoder = FrameDecoder::new(FRAME_LEN_MAX_DEFAULT);
    let once = |decoder: &mut FrameDecoder| {
        decoder
            .decode(black_box(&framed), |payload| {
                let m = message::parse(black_box(payload), &limits);
                assert!(matches!(m, Ok(Message::VoEvent(_))));
                drop(black_box(m));
            })
            .expect("well framed");
    };
    let best = best_of(|| {
        for _ in 0..iterations {
            once(&mut decoder);
        }
    });
    let (a0, b0) = allocs();
    let counted = 1_000;
    for _ in 0..counted {
        once(&mut decoder);
    }
    let (a1, b1) = allocs();
    ParseFigures {
        mb_per_s: (framed.len() * iterations) as f64 / best.as_secs_f64() / 1e6,
        ns_per_event: ns_per(best, iterations),
        allocs_per_parse: (a1 - a0) as f64 / counted as f64,
        bytes_per_parse: (b1 - b0) as f64 / counted as f64,
    }
}

struct BrokerFigures {
    feeds: usize,
    allocs_per_event: f64,
    bytes_per_event: f64,
    ns_per_event: f64,
    /// Every call of [`submit_one`], warm-up included (what callgrind counts).
    submissions: usize,
}

/// One author submission at a time (accept, input, drain) on a broker with `feeds` feeds.
///
/// Each submission is timed on its own and the median over all runs is reported: on a shared
/// machine a preempted submission is an outlier, not a shift of the mean.
fn broker_bench(feeds: usize, events: usize) -> BrokerFigures {
    let warmup = 256;
    let frames: Vec<Bytes> = (0..RUNS * (warmup + events))
        .map(|i| unique_event(feeds * 1_000_000 + i))
        .collect();
    let now = Instant::now();
    let peer = Peer::Tcp((Ipv4Addr::LOCALHOST, 40000).into());
    let mut times: Vec<Duration> = Vec::with_capacity(RUNS * events);
    let (mut alloc_count, mut alloc_bytes) = (usize::MAX, usize::MAX);
    for run in frames.chunks(warmup + events) {
        let mut node = broker(now);
        for _ in 0..feeds {
            let feed = node.handle_accept(ListenerRole::Broadcast, peer, now);
            assert!(feed.is_some());
        }
        drain(&mut node);
        let submit = |node: &mut Node, frame: &Bytes| {
            assert_eq!(submit_one(node, frame, peer, now), feeds);
        };
        // Warm up: queues and tables reach their working capacity.
        for frame in &run[..warmup] {
            submit(&mut node, frame);
        }
        let (a0, b0) = allocs();
        for frame in &run[warmup..] {
            let started = Instant::now();
            submit(&mut node, frame);
            times.push(started.elapsed());
        }
        let (a1, b1) = allocs();
        assert_eq!(node.seen_len(), warmup + events);
        // `times` had its capacity reserved up front: pushing allocates nothing.
        alloc_count = alloc_count.min(a1 - a0);
        alloc_bytes = alloc_bytes.min(b1 - b0);
    }
    times.sort_unstable();
    BrokerFigures {
        feeds,
        allocs_per_event: alloc_count as f64 / events as f64,
        bytes_per_event: alloc_bytes as f64 / events as f64,
        ns_per_event: ns_per(times[times.len() / 2], 1),
        submissions: frames.len(),
    }
}

/// One author submission: accept, input, drain; returns the number of forwards. Out of line
/// so that callgrind can count it alone (`--toggle-collect='*submit_one*'`).
#[inline(never)]
fn submit_one(node: &mut Node, frame: &Bytes, peer: Peer, now: Instant) -> usize {
    let author = node
        .handle_accept(ListenerRole::Receive, peer, now)
        .expect("accepted");
    node.handle_input(author, black_box(frame), now);
    drain(node)
}

/// Building an ack and a nak (a framed Transport message each).
fn receipt_bench() -> (f64, f64) {
    let iterations = 100_000;
    let ivorn = "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_532871-729";
    let ts = "2024-05-01T12:00:00Z";
    let ack = best_of(|| {
        for _ in 0..iterations {
            black_box(message::build_ack(
                black_box(ivorn),
                Some(LOCAL),
                black_box(ts),
            ));
        }
    });
    let reason = "Event rejected: Invalid IVOID: ivo://a2#x (authority too short)";
    let nak = best_of(|| {
        for _ in 0..iterations {
            black_box(message::build_nak(
                black_box(ivorn),
                Some(LOCAL),
                black_box(ts),
                black_box(reason),
            ));
        }
    });
    (ns_per(ack, iterations), ns_per(nak, iterations))
}

struct AckFigures {
    parse_ns: f64,
    handled_ns: f64,
    allocs_per_ack: f64,
    /// Acks given to the node over every call of [`feed_acks`] (what callgrind counts).
    acks_fed: usize,
}

/// A subscriber's ack: `message::parse` alone on the pygcn ack, and the whole
/// `Node::handle_input` of its frame on a feed connection of a broker with 100 feeds that has
/// just forwarded one event to each.
fn ack_bench() -> AckFigures {
    let iterations = 100_000;
    let limits = ParseLimits::default();
    let payload = PYGCN_ACK.as_bytes();
    let parse = best_of(|| parse_acks(payload, &limits, iterations));

    let feeds = 100;
    let rounds = 400;
    let ack = frame::encode(payload).expect("fits a frame");
    let now = Instant::now();
    let peer = Peer::Tcp((Ipv4Addr::LOCALHOST, 40000).into());
    let mut node = broker(now);
    let conns: Vec<_> = (0..feeds)
        .map(|_| {
            node.handle_accept(ListenerRole::Broadcast, peer, now)
                .expect("accepted")
        })
        .collect();
    drain(&mut node);
    let mut times: Vec<Duration> = Vec::with_capacity(rounds);
    let (mut alloc_count, mut acks) = (0, 0);
    for round in 0..RUNS * rounds {
        let author = node
            .handle_accept(ListenerRole::Receive, peer, now)
            .expect("accepted");
        node.handle_input(author, &unique_event(round), now);
        assert_eq!(drain(&mut node), feeds);
        let (a0, _) = allocs();
        let started = Instant::now();
        feed_acks(&mut node, &conns, &ack, now);
        let elapsed = started.elapsed();
        let (a1, _) = allocs();
        if round >= (RUNS - 1) * rounds {
            times.push(elapsed);
            alloc_count += a1 - a0;
            acks += feeds;
        }
        // An ack neither acts nor reports: nothing may be queued.
        assert!(node.poll_action().is_none() && node.poll_event().is_none());
    }
    times.sort_unstable();
    AckFigures {
        parse_ns: ns_per(parse, iterations),
        handled_ns: ns_per(times[times.len() / 2], feeds),
        allocs_per_ack: alloc_count as f64 / acks as f64,
        acks_fed: RUNS * rounds * feeds,
    }
}

/// Parses `payload` `n` times. Out of line so that callgrind can count it alone:
/// `valgrind --tool=callgrind --toggle-collect='*parse_acks*' <bench> --bench ack`.
#[inline(never)]
fn parse_acks(payload: &[u8], limits: &ParseLimits, n: usize) {
    for _ in 0..n {
        let m = message::parse(black_box(payload), limits);
        assert!(matches!(m, Ok(Message::Transport(_))));
        drop(black_box(m));
    }
}

/// Gives `ack` to the node on each of `conns`. Out of line so that callgrind can count it
/// alone (`--toggle-collect='*feed_acks*'`).
#[inline(never)]
fn feed_acks(node: &mut Node, conns: &[vtp_core::ConnId], ack: &[u8], now: Instant) {
    for &conn in conns {
        node.handle_input(conn, black_box(ack), now);
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this unoptimised with
    // no argument: skip the measurements then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("skipped: run with `cargo bench -p vtp-core --bench core`");
        return;
    }
    let only = |name: &str| std::env::args().skip(1).any(|a| a == name);
    if only("parse") {
        print_parse(&parse_bench());
        return;
    }
    if only("submit") {
        let b = broker_bench(0, 2_000);
        println!(
            "broker, 0 feeds: {:.2} allocs/event, {:.0} bytes/event, {:.0} ns/event",
            b.allocs_per_event, b.bytes_per_event, b.ns_per_event
        );
        println!("submit_one calls: {}", b.submissions);
        return;
    }
    let a = ack_bench();
    if only("ack") {
        print_ack(&a);
        println!("acks fed by feed_acks: {}", a.acks_fed);
        return;
    }
    let p = parse_bench();
    let (ack_ns, nak_ns) = receipt_bench();
    let broker: Vec<BrokerFigures> = [0, 1, 10, 100, 1000]
        .iter()
        .map(|&feeds| broker_bench(feeds, if feeds >= 1000 { 500 } else { 2_000 }))
        .collect();

    println!(
        "vtp-core bench ({} byte GCN event; throughput: best of {RUNS} runs; broker: median)",
        GCN.len()
    );
    println!();
    print_parse(&p);
    println!("{:<34} {:>12}", "build ack", format!("{ack_ns:.0} ns"));
    println!("{:<34} {:>12}", "build nak", format!("{nak_ns:.0} ns"));
    print_ack(&a);
    println!();
    println!("broker, one author submission (accept + input + drain all actions):");
    println!(
        "{:>7} {:>12} {:>12} {:>12} {:>14}",
        "feeds", "allocs/event", "bytes/event", "ns/event", "ns/feed fan-out"
    );
    let base = broker.first().map_or(0.0, |b| b.ns_per_event);
    for b in &broker {
        // Below 100 feeds the difference drowns in timing noise.
        let per_feed = if b.feeds < 100 {
            "-".to_owned()
        } else {
            format!("{:.1}", (b.ns_per_event - base) / b.feeds as f64)
        };
        println!(
            "{:>7} {:>12.2} {:>12.0} {:>12.0} {:>14}",
            b.feeds, b.allocs_per_event, b.bytes_per_event, b.ns_per_event, per_feed
        );
    }
    if let Some(b) = broker.iter().find(|b| b.feeds == 1000) {
        println!();
        println!(
            "fan-out of one event to 1,000 feeds: {:.1} us (whole submission), {:.1} us over 0 feeds",
            b.ns_per_event / 1e3,
            (b.ns_per_event - base) / 1e3
        );
    }
}

/// One row of the table: a label and its figure.
fn line(label: impl std::fmt::Display, value: String) {
    println!("{label:<34} {value:>12}");
}

fn print_parse(p: &ParseFigures) {
    line(
        "decode + parse throughput",
        format!("{:.0} MB/s", p.mb_per_s),
    );
    line(
        "decode + parse per event",
        format!("{:.0} ns", p.ns_per_event),
    );
    line(
        "allocations per parse",
        format!("{:.1} ({:.0} B)", p.allocs_per_parse, p.bytes_per_parse),
    );
}

fn print_ack(a: &AckFigures) {
    line(
        format!("ack parse ({} B pygcn ack)", PYGCN_ACK.len()),
        format!("{:.0} ns", a.parse_ns),
    );
    line(
        "subscriber ack handled (100 feeds)",
        format!("{:.0} ns", a.handled_ns),
    );
    line(
        "allocations per ack handled",
        format!("{:.2}", a.allocs_per_ack),
    );
}
