//! The archive's numbers (prints them; not a test): with ARCHIVE_EVENTS (1,000,000) archived
//! events spread over 30 days, the time of a time-range page of 100 events and of a 1° cone
//! search (each the whole `GET /api/events` answer, JSON built, on one reader connection;
//! p50/p99/max of ARCHIVE_QUERIES (200) queries); then the bytes on disk per 10 KB event
//! (ARCHIVE_BIG (10,000) real 10 KB GCN-sized events) and the writer's CPU per event, for them
//! and for ARCHIVE_COMMITS_OF_18 (5,000) more handed to it 18 at a time. Run with
//! `cargo bench -p vtp-host --features archive --bench archive`; the database goes under
//! `CARGO_TARGET_TMPDIR` (or `VTP_BENCH_DIR`) and is removed at the end.
//!
//! The million events are small (about 400 bytes each: their bytes are not what the queries
//! read) and are written through the archive's own writer (group commits of 512), then given
//! received times 2.6 s apart with one UPDATE, as 30 days of a busy broker would.

// A benchmark reads the clock: that is its job.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use vtp_core::EventKey;
use vtp_core::summary::{SkyPosition, Summary};
use vtp_host::archive::{Archive, ArchiveConfig, EventsQuery, Row, SourceInfo};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn row(i: usize, size: usize, rng: &mut Rng) -> Row {
    let ivorn = format!("ivo://bench.vtp/stream{}#{i}", i % 16);
    let mut payload = format!(
        "<voe:VOEvent xmlns:voe='http://www.ivoa.net/xml/VOEvent/v2.0' ivorn='{ivorn}' \
         role='observation' version='2.0'><Who><AuthorIVORN>ivo://bench.vtp/a</AuthorIVORN>\
         <Date>2026-12-07T09:00:00</Date></Who></voe:VOEvent>"
    )
    .into_bytes();
    while payload.len() < size {
        payload.extend_from_slice(format!("<!-- {} -->", rng.next()).as_bytes());
    }
    // Uniform on the sphere.
    let ra = rng.unit() * 360.0;
    let dec = (2.0 * rng.unit() - 1.0).asin().to_degrees();
    let source = SourceInfo {
        kind: "author",
        address: Some("127.0.0.1:40000".into()),
        ..SourceInfo::default()
    };
    let summary = Summary {
        author_ivorn: Some("ivo://bench.vtp/a".into()),
        position: (!i.is_multiple_of(10)).then_some(SkyPosition {
            ra,
            dec,
            error: Some(0.05),
            system: Some("UTC-ICRS-GEO".into()),
        }),
        ..Summary::default()
    };
    Row::new(
        EventKey::of_element(&payload),
        ivorn,
        "observation",
        source,
        Bytes::from(payload),
        summary,
    )
}

fn fill(archive: &Archive, n: usize, size: usize, seed: u64) -> Duration {
    fill_by(archive, n, size, seed, 10_000)
}

/// [`fill`], handing the writer `chunk` rows at a time (it commits what it has been handed).
fn fill_by(archive: &Archive, n: usize, size: usize, seed: u64, chunk: usize) -> Duration {
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let chunk: Vec<Row> = (i..(i + chunk).min(n))
            .map(|j| row(j, size, &mut rng))
            .collect();
        i += chunk.len();
        archive.write_now(chunk).unwrap();
    }
    started.elapsed()
}

fn stats(name: &str, mut times: Vec<Duration>, target_ms: f64) {
    times.sort();
    let p = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    let p99 = p(0.99);
    println!(
        "{name:<34} p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  (target <= {target_ms} ms: {})",
        p(0.5),
        p99,
        p(1.0),
        if p99 <= target_ms {
            "met at p99"
        } else {
            "NOT met at p99"
        }
    );
}

/// CPU time so far of this process's archive writer threads (`vtp-archive`), from their
/// schedstat (Linux); zero where that cannot be read.
fn writer_cpu() -> Duration {
    let mut ns = 0u64;
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == "vtp-archive" {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            ns += stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_nanos(ns)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.blocks() * 512
        })
        .sum()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("skipped: run with `cargo bench -p vtp-host --features archive --bench archive`");
        return;
    }
    let base = std::env::var_os("VTP_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    let dir = base.join(format!("vtp-archive-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let events = env("ARCHIVE_EVENTS", 1_000_000);
    let queries = env("ARCHIVE_QUERIES", 200);
    let big = env("ARCHIVE_BIG", 10_000);

    let archive = Archive::open(&ArchiveConfig::new(dir.join("million"))).unwrap();
    let took = fill(&archive, events, 400, 1);
    println!(
        "archived {events} events of ~400 bytes in {:.1} s ({:.0} events/s through the writer)",
        took.as_secs_f64(),
        events as f64 / took.as_secs_f64()
    );
    drop(archive);
    // 30 days of received times, 2.6 s apart.
    let t0: i64 = 1_796_000_000_000;
    let step = 30 * 86_400_000 / events.max(1) as i64;
    {
        let c = rusqlite::Connection::open(dir.join("million").join("archive.sqlite")).unwrap();
        c.execute(
            "UPDATE events SET received_ms = ?1 + seq * ?2",
            rusqlite::params![t0, step],
        )
        .unwrap();
    }
    let archive = Archive::open(&ArchiveConfig::new(dir.join("million"))).unwrap();
    let readers = archive.readers();
    let mut rng = Rng(7);
    let iso = |ms: i64| {
        vtp_core::time::format_utc(u64::try_from(ms / 1000).unwrap_or(0))
            .as_str()
            .to_owned()
    };
    let mut times = Vec::new();
    for _ in 0..queries {
        let from = t0 + (rng.unit() * 29.0 * 86_400_000.0) as i64;
        let q = EventsQuery::parse(Some(&format!(
            "since={}&until={}&limit=100",
            iso(from),
            iso(from + 86_400_000)
        )))
        .unwrap();
        let started = Instant::now();
        let v = readers.events(&q).unwrap();
        times.push(started.elapsed());
        assert_eq!(v["events"].as_array().unwrap().len(), 100);
    }
    stats("time-range page of 100 (1 day)", times, 20.0);
    let mut times = Vec::new();
    let mut found = 0;
    for _ in 0..queries {
        let ra = rng.unit() * 360.0;
        let dec = (2.0 * rng.unit() - 1.0).asin().to_degrees();
        let q = EventsQuery::parse(Some(&format!("cone={ra},{dec},1&limit=1000"))).unwrap();
        let started = Instant::now();
        let v = readers.events(&q).unwrap();
        times.push(started.elapsed());
        found += v["events"].as_array().unwrap().len();
    }
    stats("cone of 1 degree (all matches)", times, 50.0);
    println!(
        "  ({:.1} events per 1-degree cone on average)",
        found as f64 / queries as f64
    );
    let mut times = Vec::new();
    for _ in 0..queries {
        let after = (rng.unit() * events as f64) as u64;
        let q = EventsQuery::parse(Some(&format!("after={after}&limit=100"))).unwrap();
        let started = Instant::now();
        readers.events(&q).unwrap();
        times.push(started.elapsed());
    }
    stats("page of 100 by after=SEQ", times, 20.0);
    drop(readers);
    drop(archive);
    println!(
        "database with {events} small events: {:.0} MB on disk",
        dir_bytes(&dir.join("million")) as f64 / 1e6
    );

    let archive = Archive::open(&ArchiveConfig::new(dir.join("big"))).unwrap();
    let cpu = writer_cpu();
    let took = fill(&archive, big, 10_240, 3);
    let cpu = writer_cpu().saturating_sub(cpu);
    drop(archive);
    let bytes = dir_bytes(&dir.join("big"));
    println!(
        "{big} events of 10 KB: {:.0} bytes on disk per event ({:.2}x the event), archived at \
         {:.0} events/s, writer CPU {:.1} us per event",
        bytes as f64 / big as f64,
        bytes as f64 / big as f64 / 10_240.0,
        big as f64 / took.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / big as f64
    );
    // As in the fan-out benchmark, where a commit holds about 18 events: the writer's CPU per
    // event then counts the pages each commit writes again (index leaves, the sky index).
    let small = env("ARCHIVE_COMMITS_OF_18", 5_000);
    let archive = Archive::open(&ArchiveConfig::new(dir.join("by18"))).unwrap();
    let cpu = writer_cpu();
    let took = fill_by(&archive, small, 10_240, 5, 18);
    let cpu = writer_cpu().saturating_sub(cpu);
    drop(archive);
    println!(
        "{small} events of 10 KB handed 18 at a time: archived at {:.0} events/s, writer CPU \
         {:.1} us per event",
        small as f64 / took.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / small.max(1) as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}
