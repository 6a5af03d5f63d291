//! The whole suite against real Comet 3.1.0, with Comet's expected deviations.
//!
//! Comet comes from the peers venv (`conformance/peers/setup.sh`, which is idempotent and
//! prints the venv path last; `VTP_PEERS_VENV` overrides the location). A missing or broken
//! peer is a test failure, not a skip. Comet runs under `conformance/peers/comet_twistd.py`,
//! which shortens its iamalive period and author deadline so that the slow scenarios take
//! seconds.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::{TempDir, check_deviations, run_suite, start_node, workspace_root};
use vtp_conformance::Selection;

/// Scenarios Comet 3.1.0 is expected to fail, each with the reason. The test fails if one of
/// them passes, so the list stays true.
const COMET_DEVIATIONS: &[(&str, &str)] = &[
    (
        "duplicate-acked",
        "Comet naks a duplicate submission (`Event rejected: Previously seen by this broker`); \
         VTP 2.0 §6.3 says a nak is not appropriate for a duplicate",
    ),
    (
        "bad-xml-gets-nak",
        "Comet closes an author connection that sends unparsable XML without replying; \
         VTP 2.0 §7.2 says the broker must answer",
    ),
    (
        "subscriber-nak-keeps-connection",
        "Comet disconnects a subscriber on any nak (VTP 1.1 §6.4: it may remove the \
         subscriber); VTP 2.0 §6.3/§7.3: give up on that message only",
    ),
    (
        "dedup-element-bytes",
        "Comet identifies an event by the SHA-1 of the whole frame, so another XML declaration \
         or comment makes a new event; VTP 2.0 §8 identifies the VOEvent element",
    ),
];

/// Comet's iamalive period under the wrapper (Comet: 60 s).
const IAMALIVE_SECS: u64 = 2;
/// Comet's author deadline under the wrapper (Comet: 20 s).
const DEADLINE_SECS: u64 = 3;

#[test]
fn comet_passes_the_suite_except_its_known_deviations() {
    let venv = peers_venv();
    let dir = TempDir::new("comet");
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.current_dir(dir.path())
        .arg(workspace_root().join("conformance/peers/comet_twistd.py"))
        .args(["-n", "--logfile=-", "--pidfile=", "comet"])
        .args([
            "--receive",
            "--receive-port=0",
            "--broadcast",
            "--broadcast-port=0",
        ])
        .arg("--local-ivo=ivo://vtp.test/comet")
        .arg(format!(
            "--eventdb={}",
            dir.path().join("eventdb").display()
        ))
        .arg("--broadcast-test-interval=0")
        .args([
            "--author-whitelist=127.0.0.0/8",
            "--subscriber-whitelist=127.0.0.0/8",
        ])
        .env("VTP_COMET_INTERFACE", "127.0.0.1")
        .env("VTP_COMET_IAMALIVE_INTERVAL", IAMALIVE_SECS.to_string())
        .env("VTP_COMET_RECEIVER_TIMEOUT", DEADLINE_SECS.to_string());
    std::fs::create_dir_all(dir.path().join("eventdb")).unwrap();
    let comet = start_node("comet", cmd);
    let report = run_suite(
        &comet,
        [
            "VOEventReceiverFactory (WhitelistingFactory) starting on",
            "VOEventBroadcasterFactory (WhitelistingFactory) starting on",
        ],
        IAMALIVE_SECS,
        DEADLINE_SECS,
        &Selection::all(),
    );
    check_deviations("Comet 3.1.0", &report, COMET_DEVIATIONS);
    drop(comet);
}

/// Installs (if needed) and returns the peers venv; panics if that is impossible.
fn peers_venv() -> PathBuf {
    let script = workspace_root().join("conformance/peers/setup.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed, so real Comet is unavailable (a missing peer is a failure):\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let venv = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(
        venv.join("bin/python").exists(),
        "{} printed {venv:?}, which is not a venv",
        script.display()
    );
    venv
}
