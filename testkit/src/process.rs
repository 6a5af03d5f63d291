//! Child processes with collected output, and temporary directories.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::WAIT;

/// Collected output lines of a child process, with a condition variable to wait on.
#[derive(Clone, Debug)]
pub struct Log {
    shared: Arc<(Mutex<LogState>, Condvar)>,
    /// The bound on each wait.
    wait: Duration,
}

#[derive(Debug, Default)]
struct LogState {
    lines: Vec<String>,
    /// Output streams (stdout, stderr) that reached end of file.
    closed: usize,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            shared: Arc::default(),
            wait: WAIT,
        }
    }
}

impl Log {
    fn push(&self, line: String) {
        let (m, c) = &*self.shared;
        m.lock().unwrap().lines.push(line);
        c.notify_all();
    }

    fn close_stream(&self) {
        let (m, c) = &*self.shared;
        m.lock().unwrap().closed += 1;
        c.notify_all();
    }

    /// Waits (up to this log's bound) until `f` returns `Some` for the lines so far and the
    /// number of closed output streams; returns that. Panics with the whole log on timeout.
    fn wait_until<T>(&self, what: &str, f: impl Fn(&[String], usize) -> Option<T>) -> T {
        let deadline = Instant::now() + self.wait;
        let (m, c) = &*self.shared;
        let mut st = m.lock().unwrap();
        loop {
            if let Some(t) = f(&st.lines, st.closed) {
                return t;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}; log:\n{}",
                st.lines.join("\n")
            );
            st = c.wait_timeout(st, left).unwrap().0;
        }
    }

    /// Waits until a line satisfies `f`; returns it. Panics with the whole log on timeout.
    pub fn wait_for(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        self.wait_until(what, |lines, _| lines.iter().find(|l| f(l)).cloned())
    }

    /// Waits until a line contains `marker`; returns the rest of that line after it. Panics
    /// with the whole log on timeout.
    pub fn wait_after(&self, marker: &str) -> String {
        let line = self.wait_for(marker, |l| l.contains(marker));
        let at = line.find(marker).unwrap_or_default() + marker.len();
        line[at..].to_owned()
    }

    /// Waits until at least `n` lines satisfy `f`. Panics with the whole log on timeout.
    pub fn wait_count(&self, what: &str, n: usize, f: impl Fn(&str) -> bool) {
        self.wait_until(what, |lines, _| {
            (lines.iter().filter(|l| f(l)).count() >= n).then_some(())
        });
    }

    /// How many lines so far satisfy `f`.
    pub fn count(&self, f: impl Fn(&str) -> bool) -> usize {
        self.shared
            .0
            .lock()
            .unwrap()
            .lines
            .iter()
            .filter(|l| f(l))
            .count()
    }

    /// The lines so far, joined by newlines.
    pub fn text(&self) -> String {
        self.shared.0.lock().unwrap().lines.join("\n")
    }
}

/// A child process whose stdout and stderr lines are collected; killed on drop.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
    pub log: Log,
    pub name: String,
    /// The child leads its own process group, killed as a whole on drop.
    group: bool,
}

impl Proc {
    /// Starts `cmd` with its output collected (stdin: null). `VTP_TEST_ECHO` set in the
    /// environment echoes every line to stderr, tagged with `name`.
    pub fn spawn(name: &str, cmd: Command) -> Self {
        Self::start(name, cmd, false)
    }

    /// Like [`Proc::spawn`], but the child leads a new process group and drop kills the whole
    /// group, so helpers it started (a Comet `--cmd` handler, say) go with it.
    pub fn spawn_group(name: &str, mut cmd: Command) -> Self {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        Self::start(name, cmd, true)
    }

    /// Bounds the waits on this process and its log by `wait` instead of [`WAIT`].
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.log.wait = wait;
        self
    }

    fn start(name: &str, mut cmd: Command, group: bool) -> Self {
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
                // Lossy: a stray non-UTF-8 byte must not stop the collection (and block the
                // child on a full pipe).
                for mut line in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    let line = String::from_utf8_lossy(&line).into_owned();
                    if std::env::var_os("VTP_TEST_ECHO").is_some() {
                        eprintln!("[{tag}] {line}");
                    }
                    log.push(line);
                }
                log.close_stream();
            });
        }
        Self {
            child,
            log,
            name: name.to_owned(),
            group,
        }
    }

    /// Waits (bounded) until the child has exited and all its output is collected; returns
    /// the exit code. Panics with the log if that takes too long.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let what = format!("{} to close its output", self.name);
        self.log
            .wait_until(&what, |_, closed| (closed == 2).then_some(()));
        self.wait_status()
    }

    /// Bounded wait for the child's exit status.
    fn wait_status(&mut self) -> Option<i32> {
        let deadline = Instant::now() + self.log.wait;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit:\n{}",
                self.name,
                self.log.text()
            );
            std::thread::park_timeout(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait (bounded) for the exit; returns the status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.wait_status()
    }

    /// Sends the signal `name` (`HUP`, `STOP`, `CONT`, ...) to the child; panics if `kill`
    /// fails.
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{name} {}", self.name);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.group {
            // The group is ours: the child leads it and is not reaped yet, so its id (the
            // group id) cannot have been reused.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary directory removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh, empty directory whose name holds this process's id, `tag` and a counter.
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("vtp-test-{}-{tag}-{n}", std::process::id()));
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
