//! Starting the nodes under test (`vtp broker`, Comet 3.1.0) on loopback with ephemeral ports,
//! and checking a report against a node's expected deviations.
//!
//! Waiting is always on something observable (a log line) with a bounded deadline.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use vtp_conformance::{Outcome, Report, scenarios};

/// How long to wait for a process to be ready.
pub const WAIT: Duration = Duration::from_secs(30);

/// Collected output lines of a child process, with a condition variable to wait on.
#[derive(Clone, Default)]
pub struct Log(Arc<(Mutex<Vec<String>>, Condvar)>);

impl Log {
    fn push(&self, line: String) {
        let (m, c) = &*self.0;
        m.lock().unwrap().push(line);
        c.notify_all();
    }

    /// Waits until a line satisfies `f` and returns it; panics with the whole log on timeout.
    pub fn wait_for(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        let (m, c) = &*self.0;
        let mut lines = m.lock().unwrap();
        loop {
            if let Some(l) = lines.iter().find(|l| f(l)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}; log:\n{}",
                lines.join("\n")
            );
            lines = c.wait_timeout(lines, left).unwrap().0;
        }
    }

    pub fn text(&self) -> String {
        self.0.0.lock().unwrap().join("\n")
    }
}

/// A child process whose stdout and stderr lines are collected; killed on drop.
pub struct Proc {
    pub child: Child,
    pub log: Log,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command) -> Self {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let log = Log::default();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = log.clone();
            let tag = name.to_owned();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if std::env::var_os("VTP_TEST_ECHO").is_some() {
                        eprintln!("[{tag}] {line}");
                    }
                    log.push(line);
                }
            });
        }
        Self {
            child,
            log,
            name: name.to_owned(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("vtp-conf-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

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
