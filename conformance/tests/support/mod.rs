//! Starting the nodes under test (`vtp broker`, Comet 3.1.0) on loopback with ephemeral ports,
//! running the suite against them, and checking a report against a node's expected deviations.
//! The process helpers are `vtp-testkit`'s.
//!
//! Waiting is always on something observable (a log line) with a bounded deadline.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vtp_conformance::{Outcome, Report, Selection, Target, Timing, run, scenarios};
use vtp_testkit::loopback;
pub use vtp_testkit::{Proc, TempDir};

/// The bound on waits for a node under test (Comet takes a while to start).
pub const WAIT: Duration = Duration::from_secs(30);

/// The port in the last `:`- or space-separated field of a log line.
pub fn port_in(line: &str) -> u16 {
    line.rsplit([':', ' '])
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port at the end of {line:?}"))
}

/// The workspace root (this crate's parent directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Starts a node under test: `cmd`, its output collected, waits on it bounded by [`WAIT`].
pub fn start_node(name: &str, cmd: Command) -> Proc {
    Proc::spawn(name, cmd).with_wait(WAIT)
}

/// Runs `selection` against `node` on loopback: first waits for the log lines containing
/// `listening[0]` and `listening[1]`, which end in its receive and broadcast ports; the node
/// promises an iamalive every `iamalive_secs` and closes authors after `deadline_secs`.
pub fn run_suite(
    node: &Proc,
    listening: [&str; 2],
    iamalive_secs: u64,
    deadline_secs: u64,
    selection: &Selection,
) -> Report {
    let port = |what: &str, text: &str| {
        let listener = format!("{}'s {what} listener", node.name);
        port_in(&node.log.wait_for(&listener, |l| l.contains(text)))
    };
    let receive = port("receive", listening[0]);
    let broadcast = port("broadcast", listening[1]);
    let target = Target::new(loopback(receive), loopback(broadcast)).with_timing(Timing {
        iamalive: Duration::from_secs(iamalive_secs),
        deadline: Duration::from_secs(deadline_secs),
        ..Timing::default()
    });
    run(&target, selection)
}

/// Checks `report` against a node's expected deviations: exactly the scenarios listed in
/// `deviations` failed, every other scenario that ran passed. A listed deviation that passes is
/// a failure too, so the list stays true.
pub fn check_deviations(node: &str, report: &Report, deviations: &[(&str, &str)]) {
    for (name, _) in deviations {
        assert!(
            scenarios().iter().any(|s| s.name == *name),
            "{node}: deviation list names unknown scenario {name}"
        );
    }
    let mut problems = Vec::new();
    for r in report.results() {
        let expected = deviations.iter().find(|(n, _)| *n == r.scenario.name);
        match (&r.outcome, expected) {
            (Outcome::Pass, Some((_, reason))) => problems.push(format!(
                "{}: passes now, but is listed as a deviation ({reason}); remove it from the list",
                r.scenario.name
            )),
            (Outcome::Fail(why), None) => {
                problems.push(format!("{}: FAILED: {why}", r.scenario.name));
            }
            (Outcome::Skipped(_), Some((_, reason))) => problems.push(format!(
                "{}: listed as a deviation ({reason}) but was not run",
                r.scenario.name
            )),
            _ => {}
        }
    }
    assert!(
        problems.is_empty(),
        "{node}: the conformance run does not match the expected deviations:\n  {}\n\n{report}",
        problems.join("\n  ")
    );
    eprintln!("{node}:\n{report}");
}
