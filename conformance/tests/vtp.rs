//! The whole suite against `vtp broker`, once per runtime, with vtp's expected deviations.
//!
//! # Which `vtp` binary
//!
//! A test cannot use `CARGO_BIN_EXE_vtp` across packages, and a bin-only crate cannot be a
//! dependency. So the test asks cargo itself: it runs `$CARGO build -p vtp-cli --bin vtp` with
//! the profile this test was built with and takes the executable's path from cargo's JSON
//! messages. When the binary is up to date (`cargo test --workspace` has just built it) this
//! costs about 0.2 s; after `cargo test -p vtp-conformance` alone it builds vtp first, so the
//! suite never runs against a stale binary. If that build fails, the test fails and says so.
//!
//! # What runs
//!
//! Every scenario except [`VTP_SKIP`]: the iamalive scenarios run against a broker started with
//! `--iamalive-interval 1`. Exactly the scenarios in [`VTP_DEVIATIONS`] must fail.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use support::{TempDir, check_deviations, run_suite, start_node, workspace_root};
use vtp_conformance::Selection;

/// Runtimes `vtp broker --runtime` offers; the suite runs once against each.
const RUNTIMES: &[&str] = &["tokio", "smol", "mio"];

/// Scenarios vtp is expected to fail, each with the reason.
const VTP_DEVIATIONS: &[(&str, &str)] = &[];

/// Scenarios not run against vtp, each with the reason.
const VTP_SKIP: &[(&str, &str)] = &[];

/// The author deadline the broker under test is started with (`--receive-timeout`).
const DEADLINE_SECS: u64 = 2;

/// iamalive period given to the broker (`--iamalive-interval`), so the iamalive scenarios are
/// quick.
const IAMALIVE_SECS: u64 = 1;

#[test]
fn vtp_broker_passes_the_suite_on_every_runtime() {
    let vtp = vtp_binary();
    std::thread::scope(|scope| {
        let runs: Vec<_> = RUNTIMES
            .iter()
            .map(|runtime| scope.spawn(move || run_against(vtp, runtime)))
            .collect();
        for r in runs {
            if let Err(panic) = r.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
}

fn run_against(vtp: &PathBuf, runtime: &str) {
    let db = TempDir::new(&format!("vtp-{runtime}"));
    let mut cmd = Command::new(vtp);
    cmd.args(["broker", "--runtime", runtime])
        .args([
            "--local-ivo",
            &format!("ivo://vtp.test/conformance-{runtime}"),
        ])
        .args(["--receive", "127.0.0.1:0", "--broadcast", "127.0.0.1:0"])
        .args(["--broadcast-test-interval", "0"])
        .args(["--iamalive-interval", &IAMALIVE_SECS.to_string()])
        .args(["--receive-timeout", &DEADLINE_SECS.to_string()])
        .arg("--eventdb")
        .arg(db.path());
    let broker = start_node(&format!("vtp-{runtime}"), cmd);
    let skip: Vec<&str> = VTP_SKIP.iter().map(|(n, _)| *n).collect();
    let report = run_suite(
        &broker,
        ["listening for authors on", "listening for subscribers on"],
        IAMALIVE_SECS,
        DEADLINE_SECS,
        &Selection::new(&[], &skip).unwrap(),
    );
    check_deviations(
        &format!("vtp broker --runtime {runtime}"),
        &report,
        VTP_DEVIATIONS,
    );
    drop(broker);
}

/// Environment variables cargo sets for a test run (not for a build), by prefix.
const TEST_ENV_PREFIXES: &[&str] = &[
    "CARGO_MANIFEST_",
    "CARGO_PKG_",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
];

/// Builds (if needed) and locates the `vtp` binary; see the module documentation.
fn vtp_binary() -> &'static PathBuf {
    static VTP: OnceLock<PathBuf> = OnceLock::new();
    VTP.get_or_init(|| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(workspace_root())
            .args(["build", "--quiet", "-p", "vtp-cli", "--bin", "vtp"])
            .arg("--message-format=json-render-diagnostics");
        // Without the variables cargo sets for this test (CARGO_MANIFEST_DIR, CARGO_PKG_*,
        // ...): build scripts that watch them (ring's does) would see them change, and this
        // build and a plain `cargo build -p vtp-cli` would each rebuild ring and everything
        // above it after the other.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if TEST_ENV_PREFIXES.iter().any(|p| key.starts_with(p)) {
                cmd.env_remove(&*key);
            }
        }
        // Same profile as this test: target/<profile>/deps/<this test>.
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .unwrap_or("debug")
            .to_owned();
        match profile_dir.as_str() {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        let out = cmd.output().unwrap_or_else(|e| {
            panic!("cannot run cargo to build vtp ({e}); build it with `cargo build -p vtp-cli`")
        });
        assert!(
            out.status.success(),
            "`cargo build -p vtp-cli` failed; fix the build (or run it yourself) first:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let path = stdout
            .lines()
            .filter(|l| {
                l.contains("\"reason\":\"compiler-artifact\"") && l.contains("\"name\":\"vtp\"")
            })
            .find_map(executable)
            .unwrap_or_else(|| panic!("cargo did not report the vtp executable:\n{stdout}"));
        assert!(
            path.exists(),
            "cargo reported {path:?}, which does not exist"
        );
        path
    })
}

/// The `"executable"` path of one cargo JSON message (paths carry no JSON escapes but `\\`
/// and `\"`).
fn executable(line: &str) -> Option<PathBuf> {
    let key = "\"executable\":\"";
    let start = line.find(key)? + key.len();
    let mut path = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(PathBuf::from(path)),
            '\\' => path.push(chars.next()?),
            c => path.push(c),
        }
    }
    None
}
