//! The suite against nodes that are broken on purpose: no scenario may pass vacuously.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vtp_conformance::{Outcome, Selection, Target, Timing, run, scenarios};

/// Short timers: every wait against a broken node ends within a fraction of a second.
const TIMING: Timing = Timing {
    iamalive: Duration::from_millis(200),
    deadline: Duration::from_millis(200),
    slack: Duration::from_millis(300),
};

/// A listener that accepts every connection and then either holds it silently or closes it.
fn fake_listener(hold: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    // The thread ends with the test process.
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            if hold {
                held.lock().unwrap().push(stream);
            }
        }
    });
    addr
}

fn outcomes(hold: bool) -> Vec<(&'static str, Outcome)> {
    let target = Target::new(fake_listener(hold), fake_listener(hold)).with_timing(TIMING);
    let report = run(&target, &Selection::all());
    eprintln!("{report}");
    report
        .results()
        .iter()
        .map(|r| (r.scenario.name, r.outcome.clone()))
        .collect()
}

#[test]
fn a_node_that_never_answers_fails_every_scenario() {
    let results = outcomes(true);
    assert_eq!(results.len(), scenarios().len());
    for (name, outcome) in results {
        assert!(outcome.is_fail(), "{name} did not fail: {outcome:?}");
    }
}

#[test]
fn a_node_that_closes_every_connection_fails_every_scenario_but_the_deadline() {
    for (name, outcome) in outcomes(false) {
        // Closing an idle author connection at once is within any deadline.
        if name == "author-deadline" {
            assert_eq!(outcome, Outcome::Pass);
        } else {
            assert!(outcome.is_fail(), "{name} did not fail: {outcome:?}");
        }
    }
}

#[test]
fn unknown_scenario_names_are_refused() {
    let err = Selection::new(&["author-ack", "no-such-scenario"], &[]).unwrap_err();
    assert_eq!(err.0, "no-such-scenario");
    assert!(Selection::new(&[], &["author-deadline"]).is_ok());
}

#[test]
fn only_and_skip_select_scenarios() {
    let target = Target::new(fake_listener(false), fake_listener(false)).with_timing(TIMING);
    let report = run(
        &target,
        &Selection::new(&["author-ack", "author-deadline"], &["author-ack"]).unwrap(),
    );
    for r in report.results() {
        match r.scenario.name {
            "author-deadline" => assert_eq!(r.outcome, Outcome::Pass),
            _ => assert!(
                matches!(r.outcome, Outcome::Skipped(_)),
                "{} ran: {:?}",
                r.scenario.name,
                r.outcome
            ),
        }
    }
    assert!(report.all_passed());
    let table = report.to_string();
    assert!(
        table.ends_with(&format!(
            "1 passed, 0 failed, {} skipped in {:.2}s",
            scenarios().len() - 1,
            report.elapsed().as_secs_f64()
        )),
        "{table}"
    );
}

/// Runs the `vtp-conformance` binary; returns its exit code and stdout.
fn binary(args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vtp-conformance"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_binary_lists_runs_and_reports_through_its_exit_status() {
    let (code, list) = binary(&["--list"]);
    assert_eq!(code, Some(0));
    for s in scenarios() {
        assert!(list.contains(s.name), "--list lacks {}", s.name);
    }

    let receive = fake_listener(false).to_string();
    let broadcast = fake_listener(false).to_string();
    let common = [
        "--receive",
        &receive,
        "--broadcast",
        &broadcast,
        "--deadline",
        "0.2",
        "--slack",
        "0.3",
    ];
    // Closing at once satisfies the deadline scenario and fails the ack scenario.
    let (code, table) = binary(&[&common[..], &["--only", "author-deadline"]].concat());
    assert_eq!(code, Some(0), "{table}");
    assert!(table.contains("1 passed, 0 failed"), "{table}");
    let (code, table) =
        binary(&[&common[..], &["--only", "author-ack", "author-deadline"]].concat());
    assert_eq!(code, Some(1), "{table}");
    assert!(table.contains("1 passed, 1 failed"), "{table}");
    // Usage errors: an unknown scenario name, a missing address.
    assert_eq!(
        binary(&[&common[..], &["--skip", "no-such"]].concat()).0,
        Some(2)
    );
    assert_eq!(binary(&["--receive", &receive]).0, Some(2));
}
