//! Black-box VTP conformance scenarios over TCP.
//!
//! The node under test is any VTP broker reachable over TCP: vtp on any runtime, Comet, or
//! another implementation. The suite only needs its **receive** address (where authors submit)
//! and its **broadcast** address (where subscribers connect), plus the [`Timing`] it promises
//! (iamalive period, author deadline). Each [`Scenario`] checks one rule and names its source
//! (a VTP 2.0 section, or Comet's behaviour where the standard is silent).
//!
//! # Running
//!
//! ```no_run
//! use vtp_conformance::{Selection, Target, run};
//!
//! let target = Target::new("127.0.0.1:8098".parse()?, "127.0.0.1:8099".parse()?);
//! let report = run(&target, &Selection::new(&[] as &[&str], &["author-deadline"])?);
//! println!("{report}");
//! assert!(report.all_passed());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The `vtp-conformance` binary does the same from the command line; with `--tls-ca FILE` every
//! connection speaks TLS ([`Target::with_tls`]).
//!
//! # How scenarios work
//!
//! - Every scenario runs on its own thread, in parallel with the others, over its own
//!   connections, with IVORNs of its own (`ivo://vtp.conformance/<scenario>#<run>-<n>`, unique
//!   per run), so scenarios never see each other's events as theirs, even though every
//!   subscriber receives every event.
//! - Sockets are plain blocking `std::net` with read deadlines. Nothing sleeps to wait for an
//!   observable outcome: positive outcomes are read with a deadline and return as soon as they
//!   happen. A negative outcome ("X was not relayed") is shown with a **barrier**: a valid event
//!   submitted after X; once the barrier reaches the subscriber, X would have arrived before it.
//! - Subscribers are served by a reader thread that answers `iamalive`, acks every event (or
//!   naks the ones a scenario chooses) and answers `authenticate` with filters when the
//!   scenario has any, so a subscriber stays healthy however long its scenario is busy
//!   elsewhere.
//! - Each scenario has a time bound derived from the [`Timing`] ([`Scenario::time_bound`]); one
//!   that overruns it is reported as failed and left behind (its sockets time out on their own).
//!
//! # Simulation
//!
//! The [`sim`] module runs many real VTP nodes (brokers in a cyclic mesh, subscribers,
//! authors) over a virtual network with seeded faults and virtual time, checking safety and
//! liveness invariants; a failing seed replays exactly. No sockets: it runs in `cargo test`
//! (`--test sim`), and thousands of seeds with one documented command.
//!
//! # Deviations
//!
//! The suite reports facts; it does not know which node it talks to. Known, intended
//! differences of a node from a rule are kept by the caller as an explicit list (scenario name
//! and reason), as in this crate's tests for vtp and Comet 3.1.0.
//!
//! # Layering
//!
//! ```text
//! cli  ->  runtime-tokio | runtime-smol | runtime-mio  ->  host  ->  core
//! conformance  ->  core  (no host: the simulator gives the Driver in-memory effects)
//! testkit: helpers for tests only
//! ```
//!
//! This crate sits beside the stack: its simulator drives the core's `Driver` directly, with
//! in-memory effects of its own, and its scenarios speak to any node over TCP.

#![warn(missing_docs)]

mod net;
mod report;
mod scenarios;
pub mod sim;
mod tls;
pub use tls::load_roots;

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use report::{Outcome, Report, ScenarioResult};
pub use tls::Tls;

/// The node under test: where to submit events, where to subscribe, its timers, and whether
/// it speaks TLS on both addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Address of the node's receive (author submission) listener.
    pub receive: SocketAddr,
    /// Address of the node's broadcast (subscriber) listener.
    pub broadcast: SocketAddr,
    /// How long the suite waits for timed behaviour.
    pub timing: Timing,
    /// TLS on every connection (both addresses), or plain TCP when `None`.
    pub tls: Option<Tls>,
}

impl Target {
    /// A target with the default [`Timing`] (Comet's: 60 s iamalive, 20 s author deadline).
    pub fn new(receive: SocketAddr, broadcast: SocketAddr) -> Self {
        Self {
            receive,
            broadcast,
            timing: Timing::default(),
            tls: None,
        }
    }

    /// The same target with `timing`.
    #[must_use]
    pub fn with_timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// The same target over TLS: every author and subscriber connection runs a handshake first
    /// and verifies the node's certificate (see [`Tls`]).
    #[must_use]
    pub fn with_tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// Timed behaviour of the node under test, and the suite's tolerance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The node's iamalive period (Comet and vtp: 60 s; VTP 2.0 §5 allows at most 90 s).
    pub iamalive: Duration,
    /// How long the node lets an author connection live after accepting it (Comet: 20 s).
    pub deadline: Duration,
    /// Time allowed for anything the node should do promptly (reply, relay, close), and added
    /// on top of every promised period. Waits end as soon as the outcome is seen, so a large
    /// slack only slows down failing scenarios.
    pub slack: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            iamalive: Duration::from_secs(60),
            deadline: Duration::from_secs(20),
            slack: Duration::from_secs(5),
        }
    }
}

/// One conformance rule, checked against a live node.
#[derive(Debug)]
pub struct Scenario {
    /// Unique kebab-case name, used by [`Selection`] and in reports.
    pub name: &'static str,
    /// Where the rule comes from, e.g. `VTP 2.0 §7.2` or `Comet receiver`.
    pub source: &'static str,
    /// What is checked, in one sentence.
    pub description: &'static str,
    /// Its run time scales with the node's iamalive period or author deadline (minutes with
    /// the defaults) rather than being a few round trips.
    pub slow: bool,
    waits: Waits,
    check: fn(&mut Ctx<'_>) -> Result<(), String>,
}

impl Scenario {
    /// The longest the scenario may take against a node with `timing` before the runner
    /// reports it as failed.
    pub fn time_bound(&self, timing: &Timing) -> Duration {
        let base = timing.slack * 6 + Duration::from_secs(5);
        match self.waits {
            Waits::Prompt => base,
            Waits::Iamalive(n) => base + timing.iamalive * n,
            Waits::Deadline => base + timing.deadline,
        }
    }
}

/// Which timed behaviour a scenario waits for (for its time bound).
#[derive(Debug, Clone, Copy)]
enum Waits {
    /// Only prompt replies and relays.
    Prompt,
    /// Up to this many iamalive periods.
    Iamalive(u32),
    /// The author deadline.
    Deadline,
}

/// Every scenario of the suite, in a stable order (protocol sections in order).
pub fn scenarios() -> &'static [Scenario] {
    scenarios::ALL
}

/// Which scenarios to run: all of them, only some, or all but some.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    only: BTreeSet<&'static str>,
    skip: BTreeSet<&'static str>,
}

impl Selection {
    /// Every scenario.
    pub fn all() -> Self {
        Self::default()
    }

    /// The scenarios named in `only` (every scenario when `only` is empty), minus those named
    /// in `skip`.
    ///
    /// # Errors
    ///
    /// [`UnknownScenario`] if a name is not one of [`scenarios`], so that a typo cannot
    /// silently run or skip the wrong thing.
    pub fn new<S: AsRef<str>>(only: &[S], skip: &[S]) -> Result<Self, UnknownScenario> {
        Ok(Self {
            only: names(only)?,
            skip: names(skip)?,
        })
    }

    /// Whether `scenario` runs under this selection, and if not, why.
    fn verdict(&self, scenario: &Scenario) -> Result<(), &'static str> {
        if self.skip.contains(scenario.name) {
            Err("skipped by request")
        } else if !self.only.is_empty() && !self.only.contains(scenario.name) {
            Err("not selected")
        } else {
            Ok(())
        }
    }
}

fn names<S: AsRef<str>>(list: &[S]) -> Result<BTreeSet<&'static str>, UnknownScenario> {
    list.iter()
        .map(|n| {
            let n = n.as_ref();
            scenarios()
                .iter()
                .find(|s| s.name == n)
                .map(|s| s.name)
                .ok_or_else(|| UnknownScenario(n.to_owned()))
        })
        .collect()
}

/// A scenario name that the suite does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownScenario(pub String);

impl fmt::Display for UnknownScenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown scenario `{}`: list the scenarios with --list (or vtp_conformance::scenarios())",
            self.0
        )
    }
}

impl std::error::Error for UnknownScenario {}

/// Runs the selected scenarios against `target`, in parallel, each within its time bound.
///
/// Returns one result per scenario of [`scenarios`], in that order; unselected scenarios are
/// [`Outcome::Skipped`].
pub fn run(target: &Target, selection: &Selection) -> Report {
    let started = Instant::now();
    let run_tag = run_tag();
    let all = scenarios();
    let mut outcomes: Vec<Option<(Outcome, Duration)>> = vec![None; all.len()];
    let (tx, rx) = mpsc::channel();
    let mut pending = Vec::new();
    for (i, scenario) in all.iter().enumerate() {
        if let Err(why) = selection.verdict(scenario) {
            outcomes[i] = Some((Outcome::Skipped(why.to_owned()), Duration::ZERO));
            continue;
        }
        let deadline = Instant::now() + scenario.time_bound(&target.timing);
        pending.push((i, deadline));
        let spawned = spawn_scenario(i, scenario, target, &run_tag, tx.clone());
        if let Err(e) = spawned {
            pending.pop();
            outcomes[i] = Some((
                Outcome::Fail(format!("could not start a thread for the scenario: {e}")),
                Duration::ZERO,
            ));
        }
    }
    drop(tx);
    while !pending.is_empty() {
        let next_deadline = pending.iter().map(|&(_, d)| d).min();
        let wait = next_deadline.map_or(Duration::ZERO, |d| {
            d.saturating_duration_since(Instant::now())
        });
        match rx.recv_timeout(wait) {
            Ok((i, outcome, elapsed)) => {
                // A late result of a scenario already failed for overrunning is dropped.
                if pending.iter().any(|&(p, _)| p == i) {
                    pending.retain(|&(p, _)| p != i);
                    outcomes[i] = Some((outcome, elapsed));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                pending.retain(|&(i, deadline)| {
                    if deadline > now {
                        return true;
                    }
                    let bound = all[i].time_bound(&target.timing);
                    outcomes[i] = Some((
                        Outcome::Fail(format!(
                            "did not finish within its time bound of {}",
                            report::secs(bound)
                        )),
                        bound,
                    ));
                    false
                });
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Every thread has reported or died without reporting (impossible: panics are
                // caught); whatever is left did not report.
                for &(i, _) in &pending {
                    outcomes[i] = Some((
                        Outcome::Fail("the scenario thread ended without a result".to_owned()),
                        Duration::ZERO,
                    ));
                }
                pending.clear();
            }
        }
    }
    let results = all
        .iter()
        .zip(outcomes)
        .map(|(scenario, o)| {
            let (outcome, elapsed) = o.unwrap_or_else(|| {
                (
                    Outcome::Fail("no result recorded".to_owned()),
                    Duration::ZERO,
                )
            });
            ScenarioResult {
                scenario,
                outcome,
                elapsed,
            }
        })
        .collect();
    Report::new(results, started.elapsed())
}

/// Result of one scenario thread: its index, outcome and run time.
type Finished = (usize, Outcome, Duration);

/// Runs `scenario` on a thread of its own; it reports on `tx`.
fn spawn_scenario(
    i: usize,
    scenario: &'static Scenario,
    target: &Target,
    run_tag: &str,
    tx: mpsc::Sender<Finished>,
) -> std::io::Result<()> {
    let target = target.clone();
    let run_tag = run_tag.to_owned();
    std::thread::Builder::new()
        .name(format!("scenario {}", scenario.name))
        .spawn(move || {
            let t0 = Instant::now();
            let mut ctx = Ctx::new(&target, scenario.name, &run_tag);
            let outcome = match catch_unwind(AssertUnwindSafe(|| (scenario.check)(&mut ctx))) {
                Ok(Ok(())) => Outcome::Pass,
                Ok(Err(reason)) => Outcome::Fail(reason),
                Err(panic) => {
                    Outcome::Fail(format!("the scenario panicked: {}", panic_text(&panic)))
                }
            };
            // The runner may have given up on us; then nobody listens any more.
            let _ = tx.send((i, outcome, t0.elapsed()));
        })
        .map(drop)
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// A tag unique to this run (process and start time), part of every IVORN the run submits, so
/// that a long-lived node's seen-index never treats this run's events as old ones.
fn run_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // Fold to 64 bits: still unique per process and start instant for our purposes.
    let folded = (nanos as u64) ^ ((nanos >> 64) as u64);
    format!("{:x}{:x}", std::process::id(), folded)
}

/// What a scenario gets: the target, and IVORNs of its own.
pub(crate) struct Ctx<'a> {
    pub(crate) target: &'a Target,
    pub(crate) name: &'static str,
    run_tag: &'a str,
    counter: u32,
}

impl<'a> Ctx<'a> {
    fn new(target: &'a Target, name: &'static str, run_tag: &'a str) -> Self {
        Self {
            target,
            name,
            run_tag,
            counter: 0,
        }
    }

    /// A fresh IVORN of this scenario: `ivo://vtp.conformance/<name>#<run>-<n>`.
    pub(crate) fn ivorn(&mut self) -> String {
        self.counter += 1;
        format!("{}-{}", self.marker(), self.counter)
    }

    /// The prefix shared by every IVORN of this scenario in this run; a frame containing it
    /// belongs to this scenario.
    pub(crate) fn marker(&self) -> String {
        format!("ivo://vtp.conformance/{}#{}", self.name, self.run_tag)
    }

    /// A value unique to this scenario and run, usable where an IVORN's characters are not.
    pub(crate) fn tag(&self) -> String {
        format!("{}-{}", self.name, self.run_tag)
    }

    /// The slack of the target's timing.
    pub(crate) fn slack(&self) -> Duration {
        self.target.timing.slack
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn scenario_names_are_unique_kebab_case_with_a_source() {
        let mut seen = BTreeSet::new();
        for s in scenarios() {
            assert!(seen.insert(s.name), "duplicate scenario name {}", s.name);
            assert!(
                s.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{} is not kebab-case",
                s.name
            );
            assert!(
                !s.source.is_empty() && !s.description.is_empty(),
                "{}",
                s.name
            );
        }
    }

    #[test]
    fn slow_scenarios_are_exactly_those_waiting_for_a_timer() {
        let short = Timing {
            iamalive: Duration::from_secs(1),
            deadline: Duration::from_secs(1),
            slack: Duration::from_secs(1),
        };
        let long = Timing {
            iamalive: Duration::from_secs(100),
            deadline: Duration::from_secs(100),
            ..short
        };
        for s in scenarios() {
            let grows = s.time_bound(&long) > s.time_bound(&short);
            assert_eq!(grows, s.slow, "{}: slow flag vs time bound", s.name);
        }
    }

    #[test]
    fn selection_verdicts() {
        let all = scenarios();
        let first = &all[0];
        let second = &all[1];
        assert!(Selection::all().verdict(first).is_ok());
        let only = Selection::new(&[first.name], &[]).unwrap();
        assert!(only.verdict(first).is_ok());
        assert_eq!(only.verdict(second), Err("not selected"));
        let skip = Selection::new(&[first.name], &[first.name]).unwrap();
        assert_eq!(skip.verdict(first), Err("skipped by request"));
    }

    #[test]
    fn ctx_ivorns_are_unique_and_carry_the_marker() {
        let target = Target::new(
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        let mut ctx = Ctx::new(&target, "author-ack", "run1");
        let (a, b) = (ctx.ivorn(), ctx.ivorn());
        assert_ne!(a, b);
        assert!(a.starts_with(&ctx.marker()) && b.starts_with(&ctx.marker()));
        assert_eq!(a, "ivo://vtp.conformance/author-ack#run1-1");
        assert!(vtp_core::ivoid::check_event_ivorn(&a).is_ok(), "{a}");
    }
}
