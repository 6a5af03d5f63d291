//! The seen-index store's numbers on the disk under `CARGO_TARGET_TMPDIR` (or `VTP_BENCH_DIR`):
//! commit latency and the committing thread's CPU for a group commit of 8 records (what 8
//! authors waiting for their acks make), the same for 1 and 64 records, the latency of one
//! event through the store worker with and without its delivery in the handler spool, loading
//! 100,000 records, and compacting a log of mostly dead records. Run with
//! `cargo bench -p vtp-host --bench store`.
//!
//! A plain `main` (no harness). CPU time is the calling thread's own (`/proc/thread-self/
//! schedstat`, nanoseconds), which is the store worker's thread in a broker; work the kernel does
//! for the disk on other threads is not in it. Latency varies with the disk: run on an idle
//! machine, and look at p99 and max as well as p50.

// A benchmark reads the clock: that is its job.
#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;
use std::time::Instant;

use std::sync::Arc;

use bytes::Bytes;
use vtp_core::driver::{Effects, StoreOp};
use vtp_core::{Delivery, EventKey, SeenRecord, Source};
use vtp_host::effects::HostEffects;
use vtp_host::handlers::{Handler, HandlerError, Handlers};
use vtp_host::store::spool::SPOOL_BYTES_DEFAULT;
use vtp_host::store::{COMPACT_MIN_RECORDS, SeenStore, StoreWorker};

const COMMITS: usize = 2_000;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("skipped: run with `cargo bench -p vtp-host --bench store`");
        return;
    }
    let base = std::env::var_os("VTP_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    let dir = base.join(format!("vtp-store-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    println!("seen-index store on {}", base.display());
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>12}",
        "", "p50 ms", "p99 ms", "max ms", "CPU us"
    );
    let mut next = 0u64;
    for batch in [1usize, 8, 64] {
        let mut store = SeenStore::open(&dir).expect("open the store");
        let mut lat = Vec::with_capacity(COMMITS);
        let cpu0 = thread_cpu_ns();
        for _ in 0..COMMITS {
            let ops: Vec<StoreOp> = (0..batch)
                .map(|_| {
                    next += 1;
                    StoreOp::Persist(record(next))
                })
                .collect();
            let t = Instant::now();
            store.apply(&ops).expect("commit");
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let cpu = (thread_cpu_ns() - cpu0) as f64 / 1e3 / COMMITS as f64;
        lat.sort_by(f64::total_cmp);
        println!(
            "{:<44} {:>9.3} {:>9.3} {:>9.3} {:>12.1}",
            format!("group commit, {batch} record(s)"),
            lat[lat.len() / 2],
            lat[lat.len() * 99 / 100],
            lat[lat.len() - 1],
            cpu
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    // Through the worker, one event at a time as one author makes them: its record alone,
    // or its record and its 10 KB delivery in the handler spool (the same commit).
    for spool in [false, true] {
        let mut store = SeenStore::open(&dir).expect("open the store");
        if spool {
            store
                .open_spool(SPOOL_BYTES_DEFAULT)
                .expect("open the spool");
        }
        let worker = StoreWorker::spawn(store, None).expect("start the worker");
        let handlers = Handlers::new(vec![Arc::new(Nop)], 1, 4096);
        let mut fx = HostEffects::new()
            .with_store(worker)
            .with_handlers(handlers);
        let mut lat = Vec::with_capacity(COMMITS);
        for i in 0..COMMITS as u64 {
            next += 1;
            let r = record(next);
            let d = Delivery {
                ivorn: format!("ivo://bench/spool#{next}").into(),
                key: r.key,
                payload: Bytes::from(vec![b'x'; 10_000]),
                source: Source::Spool,
                signature: None,
                role: vtp_core::message::EventRole::Observation,
                spans: None,
            };
            let t = Instant::now();
            fx.deliver(d);
            fx.store(StoreOp::Persist(r));
            assert_eq!(fx.flush_persists(i + 1), i + 1, "durable");
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
        fx.finish(std::time::Duration::from_secs(30));
        lat.sort_by(f64::total_cmp);
        println!(
            "{:<44} {:>9.3} {:>9.3} {:>9.3}",
            if spool {
                "worker, record + 10 KB spooled delivery"
            } else {
                "worker, record (delivery in memory)"
            },
            lat[lat.len() / 2],
            lat[lat.len() * 99 / 100],
            lat[lat.len() - 1],
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    // Load: 100,000 live records.
    let mut store = SeenStore::open(&dir).expect("open the store");
    let ops: Vec<StoreOp> = (0..100_000).map(|i| StoreOp::Persist(record(i))).collect();
    store.apply(&ops).expect("commit");
    drop(store);
    let t = Instant::now();
    let store = SeenStore::open(&dir).expect("reopen the store");
    let records = store.load().expect("load");
    let ms = t.elapsed().as_secs_f64() * 1e3;
    println!("open + load of {} records: {ms:.1} ms", records.len());
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);

    // Compaction: the commit that crosses the threshold rewrites the file.
    let mut store = SeenStore::open(&dir).expect("open the store");
    let live: Vec<StoreOp> = (0..10_000).map(|i| StoreOp::Persist(record(i))).collect();
    store.apply(&live).expect("commit");
    let dead = COMPACT_MIN_RECORDS / 2;
    let churn: Vec<StoreOp> = (1 << 32..(1 << 32) + dead)
        .map(|i| StoreOp::Persist(record(i)))
        .collect();
    store.apply(&churn).expect("commit");
    let forget: Vec<StoreOp> = (1 << 32..(1 << 32) + dead)
        .map(|i| StoreOp::Forget(record(i).key))
        .collect();
    let len_before = file_len(&dir);
    let t = Instant::now();
    store.apply(&forget).expect("commit");
    let ms = t.elapsed().as_secs_f64() * 1e3;
    println!(
        "commit that compacts {} records to 10,000: {ms:.1} ms (file {:.1} -> {:.1} MiB)",
        10_000 + 2 * dead,
        len_before as f64 / 1048576.0,
        file_len(&dir) as f64 / 1048576.0
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A handler that does nothing.
struct Nop;

impl Handler for Nop {
    fn name(&self) -> &str {
        "nop"
    }

    fn handle(&self, _: &Delivery) -> Result<(), HandlerError> {
        Ok(())
    }
}

fn record(i: u64) -> SeenRecord {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    SeenRecord {
        key: EventKey(key),
        unix_secs: 1_700_000_000 + i % 1_000_000,
    }
}

fn file_len(dir: &std::path::Path) -> u64 {
    std::fs::metadata(dir.join(vtp_host::store::STORE_FILE_NAME)).map_or(0, |m| m.len())
}

/// CPU time of the calling thread so far, in nanoseconds (0 where the kernel does not say).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
