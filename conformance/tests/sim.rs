//! Deterministic simulation of broker networks (see `vtp_conformance::sim`).
//!
//! - `fixed_seeds`: a fixed set of seeds, every `cargo test`;
//! - `replay`: `VTP_SIM_SEED=0x… cargo test -p vtp-conformance --test sim -- replay --nocapture`
//!   replays one seed with a trace of every step (`VTP_SIM_TRACE=0` to silence it);
//! - `many_seeds` (ignored): `VTP_SIM_SEEDS=10000 cargo test --release -p vtp-conformance
//!   --test sim -- --ignored many_seeds --nocapture`, from seed `VTP_SIM_FROM` (default 0).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use vtp_conformance::sim::{self, Failure, Faults, Options, SubscriberSpec, Violation};

/// Seeds run by every `cargo test`.
const FIXED_SEEDS: u64 = 64;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}")))
}

fn report(failures: &[Failure]) -> String {
    failures
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[test]
fn fixed_seeds() {
    let start = Instant::now();
    let mut failures = Vec::new();
    let (mut verifying_seeds, mut verified) = (0, 0);
    for seed in 0..FIXED_SEEDS {
        if Options::swarm(seed).verify_lag.is_some() {
            verifying_seeds += 1;
        }
        match sim::run(seed) {
            Ok(summary) => {
                eprintln!("{summary}");
                verified += summary.verified;
            }
            Err(f) => {
                eprintln!("{f}");
                failures.push(f);
            }
        }
    }
    eprintln!(
        "{FIXED_SEEDS} seeds in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "\n{}", report(&failures));
    // The fixed seeds cover the signature path off the loop, and it runs.
    assert!(
        verifying_seeds > 0 && verified > 0,
        "{verifying_seeds} seeds, {verified} verified"
    );
}

#[test]
fn replay() {
    let Some(seed) = env_u64("VTP_SIM_SEED") else {
        eprintln!("set VTP_SIM_SEED=0x… to replay one seed");
        return;
    };
    let trace = std::env::var("VTP_SIM_TRACE").map_or(true, |v| v != "0");
    let options = Options::swarm(seed);
    eprintln!("seed={seed:#018x}\n{options:#?}");
    match sim::run_with(seed, options, trace) {
        Ok(summary) => eprintln!("{summary}"),
        Err(f) => panic!("\n{f}"),
    }
}

#[test]
#[ignore = "thousands of seeds: run in release mode, see the module docs"]
fn many_seeds() {
    let count = env_u64("VTP_SIM_SEEDS").unwrap_or(10_000);
    let from = env_u64("VTP_SIM_FROM").unwrap_or(0);
    let start = Instant::now();
    let mut failures = Vec::new();
    let (mut steps, mut virtual_time, mut faults) = (0u64, Duration::ZERO, 0usize);
    for seed in from..from + count {
        match sim::run(seed) {
            Ok(s) => {
                steps += s.steps;
                virtual_time += s.virtual_time;
                faults += s.faults;
            }
            Err(f) => {
                eprintln!("{f}\n");
                failures.push(f);
            }
        }
    }
    eprintln!(
        "{count} seeds from {from:#x} in {:.1} s: {} failed; {steps} steps, {:.1} h virtual, \
         {faults} faults",
        start.elapsed().as_secs_f64(),
        failures.len(),
        virtual_time.as_secs_f64() / 3600.0
    );
    assert!(failures.is_empty(), "\n{}", report(&failures));
}

#[test]
fn same_seed_same_run_and_seeds_differ() {
    for seed in [3, 0xdead_beef, Options::LOG_SEED | 1] {
        let a = sim::run(seed).unwrap();
        let b = sim::run(seed).unwrap();
        assert_eq!(a, b, "two runs of {seed:#x} differ");
    }
    let a = sim::run(1).unwrap();
    let b = sim::run(2).unwrap();
    assert_ne!(a.fingerprint, b.fingerprint);
}

/// The liveness checks are not vacuous: an impossible delivery bound fails, and names the seed
/// and the replay command.
#[test]
fn impossible_bounds_fail_and_print_the_seed() {
    let seed = 5;
    let mut options = Options::swarm(seed);
    options.delivery_bound = Duration::ZERO;
    let failure = sim::run_with(seed, options, false).unwrap_err();
    assert!(
        matches!(*failure.violation, Violation::NotDelivered { .. }),
        "{failure}"
    );
    let text = failure.to_string();
    assert!(
        text.contains(
            "seed=0x0000000000000005 ; replay: VTP_SIM_SEED=0x0000000000000005 cargo test"
        ),
        "{text}"
    );

    let mut options = Options::swarm(seed);
    options.steps_max = 10;
    let failure = sim::run_with(seed, options, false).unwrap_err();
    assert!(
        matches!(*failure.violation, Violation::Unfinished { .. }),
        "{failure}"
    );
}

/// Seeds run with a Kafka-like log whatever their swarm (`Options::LOG_SEED`; a quarter of
/// the fixed seeds draw one too), restarts at least every 90 s and stores that lag: consuming
/// brokers crash with records read and not durable, and resume from their groups' committed
/// offsets.
const LOG_SEEDS: u64 = 16;

#[test]
fn a_kafka_like_source_with_crashes_loses_nothing_and_forwards_nothing_twice() {
    let start = Instant::now();
    let mut failures = Vec::new();
    for seed in 0..LOG_SEEDS {
        let seed = seed | Options::LOG_SEED;
        match sim::run(seed) {
            Ok(summary) => eprintln!("{summary}"),
            Err(f) => {
                eprintln!("{f}");
                failures.push(f);
            }
        }
    }
    eprintln!(
        "{LOG_SEEDS} seeds in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "\n{}", report(&failures));
}

/// Seeds that failed for a real bug in vtp-core, kept as regression tests. A seed names a whole
/// swarm configuration, so a change to `Options::swarm` changes what it runs: the pinned
/// scenario below keeps each bug's conditions whatever the seeds become.
///
/// - `0x1`, `0x10` (found as seed 3 of an earlier swarm; `0x1` has since drawn a log, and
///   stores that lag, on top of its options): a broker's own test event came back
///   around the cycle of brokers, was accepted as new, handed to the handlers and relayed a
///   second time to every subscriber. Fixed: test events enter the seen-index.
const REGRESSION_SEEDS: [u64; 2] = [0x1, 0x10];

#[test]
fn regression_seeds() {
    let failures: Vec<Failure> = REGRESSION_SEEDS
        .iter()
        .filter_map(|&seed| sim::run(seed).err())
        .collect();
    assert!(failures.is_empty(), "\n{}", report(&failures));
}

/// The test-event loop, pinned: two brokers subscribed to each other, one subscriber, test
/// events every minute, no faults.
#[test]
fn own_test_events_are_not_relayed_back_around_a_cycle() {
    let mut options = Options::swarm(3);
    options.brokers = 2;
    options.broker_upstreams = vec![vec![vec![1]], vec![vec![0]]];
    options.subscribers = vec![SubscriberSpec {
        upstreams: vec![vec![0]],
        filters: Vec::new(),
    }];
    options.mute_subscribers = Vec::new();
    options.test_events = Some(Duration::from_secs(60));
    options.faults = Faults::default();
    options.fault_phase = Duration::from_secs(300);
    let summary = sim::run_with(3, options, false).unwrap_or_else(|f| panic!("\n{f}"));
    assert!(summary.accepted > 0, "{summary}");
}
