//! [`Command`]: a program run for every event, the event on its stdin (`--cmd`).

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{self, Child, ChildStderr, ChildStdin, ChildStdout, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions, kill_process_group, waitid};
use tracing::debug;
use vtp_core::Delivery;

use crate::text::printable;

use super::{Handler, HandlerError};

/// Runs a program for every event, the event's bytes on its stdin (`--cmd`).
///
/// The program is run directly (no shell) with the given arguments and this process's
/// environment and working directory. The raw payload is written to its stdin, which is then
/// closed. Its stdout and stderr are captured (at most 64 KiB of each is kept) and logged at
/// DEBUG. A non-zero exit is reported as [`HandlerError::NonZero`], which the pool logs at WARN
/// as `` `PROGRAM` returned non-zero (CODE); stderr: ... ``, with the last
/// [`STDERR_TAIL_MAX`] bytes the program wrote to its stderr (control characters escaped). A
/// program still running after the timeout (default 30 s; Comet has none) is killed and
/// reported as [`HandlerError::Timeout`], with its stderr's tail too.
///
/// Each run is the leader of a process group of its own. When the program exits, when it
/// times out, and when the pool gives up on it at shutdown ([`Handler::stop`]), the whole group
/// is killed (`SIGKILL`): background processes the program started do not outlive it. (A
/// descendant that leaves the group, e.g. with `setsid`, is out of reach.)
///
/// Implementation note: the worker itself writes stdin and reads stdout and stderr, all
/// non-blocking, between checks of the program: no helper thread, so a program that never
/// reads its stdin, or fills its output pipes, cannot deadlock the worker (it runs into the
/// timeout), and a run holds no thread or pipe once it returns. At most as many programs run
/// at once as the pool has workers. Output still arriving after the program ended (from a
/// descendant that left the group) is collected for at most one second, then the pipes are
/// closed.
#[derive(Debug, Clone)]
pub struct Command {
    program: PathBuf,
    args: Vec<String>,
    timeout: Duration,
    name: String,
    /// The process groups of the runs in progress, shared by the clones.
    running: Arc<Running>,
}

impl Command {
    /// The default run-time limit of one execution.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// A handler running `program` with `args` and the default timeout.
    ///
    /// A `program` without a path separator is looked up in `PATH`; the path found is used
    /// from then on.
    ///
    /// # Errors
    ///
    /// [`HandlerError::NotExecutable`] naming `program` if it is not found, not a file, or
    /// not executable.
    pub fn new(program: impl Into<PathBuf>, args: Vec<String>) -> Result<Self, HandlerError> {
        let program = resolve_program(program.into())?;
        let name = format!("cmd {}", program.display());
        Ok(Self {
            program,
            args,
            timeout: Self::DEFAULT_TIMEOUT,
            name,
            running: Arc::default(),
        })
    }

    /// Sets the time after which a running program is killed.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The program run (after the `PATH` lookup).
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Runs the program once with `payload` on its stdin and waits for it (or the timeout).
    ///
    /// # Errors
    ///
    /// [`HandlerError::Spawn`], [`HandlerError::Wait`] if it cannot be run or watched,
    /// [`HandlerError::NonZero`] if it fails, [`HandlerError::Timeout`] if it was killed at
    /// its timeout, [`HandlerError::Stopped`] if it was killed (or not started) because the
    /// pool is shutting down.
    pub fn run(&self, payload: Bytes) -> Result<(), HandlerError> {
        self.run_with(payload, &SignatureEnv::default())
    }

    /// [`run`](Self::run), with the event's signature status in the program's environment.
    fn run_with(&self, payload: Bytes, env: &SignatureEnv) -> Result<(), HandlerError> {
        let stopped = || HandlerError::Stopped {
            program: self.program.clone(),
        };
        let mut run = {
            // Spawned and registered under the lock: `stop` sees every group it must kill.
            let mut groups = self.running.lock();
            if groups.stopped {
                return Err(stopped());
            }
            let mut command = process::Command::new(&self.program);
            for name in SignatureEnv::NAMES {
                command.env_remove(name);
            }
            let child = command
                .args(&self.args)
                .process_group(0)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .env_remove(crate::notify::NOTIFY_SOCKET)
                .env_remove(crate::notify::WATCHDOG_USEC)
                .env_remove(crate::notify::WATCHDOG_PID)
                .envs(env.set())
                .spawn()
                .map_err(|source| HandlerError::Spawn {
                    program: self.program.clone(),
                    source,
                })?;
            let pgid = Pid::from_child(&child);
            groups.pgids.insert(pgid);
            Run {
                child,
                pgid,
                running: &self.running,
                reaped: None,
            }
        };
        let wait_err = |source| HandlerError::Wait {
            program: self.program.clone(),
            source,
        };
        let mut pipes = Pipes::take(&mut run.child, payload).map_err(wait_err)?;
        let exited = self.watch(&run, &mut pipes).map_err(wait_err)?;
        let status = run.end().map_err(wait_err)?;
        pipes.log(&self.program);
        if self.running.lock().stopped && !status.success() {
            return Err(stopped());
        }
        match exited {
            true if status.success() => Ok(()),
            true => Err(HandlerError::NonZero {
                program: self.program.clone(),
                status,
                stderr: pipes.err.tail(),
            }),
            false => Err(HandlerError::Timeout {
                program: self.program.clone(),
                timeout: self.timeout,
                stderr: pipes.err.tail(),
            }),
        }
    }

    /// Feeds and drains the pipes until the program exits (`true`, output collected for at
    /// most [`OUTPUT_GRACE`] more) or the timeout (`false`). The program is left unreaped.
    fn watch(&self, run: &Run<'_>, pipes: &mut Pipes) -> io::Result<bool> {
        let deadline = Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            if run.exited()? {
                // Its descendants go with it; what they wrote is still in the pipes.
                run.kill_group();
                pipes.stdin = None;
                let grace = Instant::now() + OUTPUT_GRACE;
                while pipes.reading() {
                    let now = Instant::now();
                    if now >= grace {
                        debug!(
                            program = %self.program.display(),
                            "output not collected: a process that left the group holds the pipe"
                        );
                        break;
                    }
                    pipes.pump(grace - now)?;
                }
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            // Wakes on pipe activity; otherwise sleeps, up to WAIT_PAUSE_MAX, to check again.
            if !pipes.pump(pause.min(deadline - now))? {
                pause = (pause * 2).min(WAIT_PAUSE_MAX);
            }
        }
    }
}

/// The process groups of a [`Command`]'s runs in progress.
#[derive(Debug, Default)]
struct Running(Mutex<Groups>);

#[derive(Debug, Default)]
struct Groups {
    /// Leaders spawned and not yet reaped: their group ids cannot be reused.
    pgids: HashSet<Pid>,
    /// Set by [`Handler::stop`]: every group was killed, no new run starts.
    stopped: bool,
}

impl Running {
    fn lock(&self) -> std::sync::MutexGuard<'_, Groups> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One run of a [`Command`]: its child, the leader of group `pgid`, until reaped.
struct Run<'a> {
    child: Child,
    pgid: Pid,
    running: &'a Running,
    reaped: Option<ExitStatus>,
}

impl Run<'_> {
    /// Whether the leader has exited; it stays unreaped (a zombie keeps the group id).
    fn exited(&self) -> io::Result<bool> {
        let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
        Ok(waitid(WaitId::Pid(self.pgid), options)?.is_some())
    }

    /// Kills every process of the group (none left is fine).
    fn kill_group(&self) {
        let _ = kill_process_group(self.pgid, Signal::KILL);
    }

    /// Kills the group, forgets it and reaps the leader.
    fn end(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.reaped {
            return Ok(status);
        }
        self.kill_group();
        // Forgotten before the reap frees the group id for reuse: `stop` never kills a stranger.
        self.running.lock().pgids.remove(&self.pgid);
        let status = self.child.wait()?;
        self.reaped = Some(status);
        Ok(status)
    }
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        // On an early return or a panic: no process is left behind.
        let _ = self.end();
    }
}

/// A run's pipes, non-blocking, served by the worker; each is closed once done.
struct Pipes {
    stdin: Option<ChildStdin>,
    payload: Bytes,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    out: Captured,
    err: Captured,
}

impl Pipes {
    /// Takes the child's pipes and makes them non-blocking.
    fn take(child: &mut Child, payload: Bytes) -> io::Result<Self> {
        let pipes = Self {
            stdin: child.stdin.take(),
            payload,
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            out: Captured::new("stdout"),
            err: Captured::new("stderr"),
        };
        if let Some(p) = &pipes.stdin {
            rustix::io::ioctl_fionbio(p, true)?;
        }
        if let Some(p) = &pipes.stdout {
            rustix::io::ioctl_fionbio(p, true)?;
        }
        if let Some(p) = &pipes.stderr {
            rustix::io::ioctl_fionbio(p, true)?;
        }
        Ok(pipes)
    }

    /// Whether an output pipe is still open.
    fn reading(&self) -> bool {
        self.stdout.is_some() || self.stderr.is_some()
    }

    /// Waits at most `timeout` for a pipe to be ready and serves it; whether one was.
    fn pump(&mut self, timeout: Duration) -> io::Result<bool> {
        let mut fds = Vec::with_capacity(3);
        if let Some(p) = &self.stdin {
            fds.push(PollFd::new(p, PollFlags::OUT));
        }
        if let Some(p) = &self.stdout {
            fds.push(PollFd::new(p, PollFlags::IN));
        }
        if let Some(p) = &self.stderr {
            fds.push(PollFd::new(p, PollFlags::IN));
        }
        let timeout = Timespec::try_from(timeout).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        let ready = match poll(&mut fds, Some(&timeout)) {
            Ok(n) => n > 0,
            Err(rustix::io::Errno::INTR) => false,
            Err(e) => return Err(e.into()),
        };
        let mut ready_fds = fds.iter().map(|fd| !fd.revents().is_empty());
        let stdin_ready = self.stdin.is_some() && ready_fds.next() == Some(true);
        let stdout_ready = self.stdout.is_some() && ready_fds.next() == Some(true);
        let stderr_ready = self.stderr.is_some() && ready_fds.next() == Some(true);
        drop(fds);
        if stdin_ready {
            self.write_stdin();
        }
        if stdout_ready && !self.out.read_from(self.stdout.as_mut()) {
            self.stdout = None;
        }
        if stderr_ready && !self.err.read_from(self.stderr.as_mut()) {
            self.stderr = None;
        }
        Ok(ready)
    }

    /// Writes what the pipe takes of the payload; closes stdin when all is written or the
    /// program closed it (not an error: a program may ignore its stdin).
    fn write_stdin(&mut self) {
        let Some(stdin) = &mut self.stdin else { return };
        loop {
            if self.payload.is_empty() {
                self.stdin = None;
                return;
            }
            match stdin.write(&self.payload) {
                Ok(n) => {
                    let _ = self.payload.split_to(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    if e.kind() != io::ErrorKind::BrokenPipe {
                        debug!(error = %e, "writing the event to stdin");
                    }
                    self.stdin = None;
                    return;
                }
            }
        }
    }

    fn log(&self, program: &Path) {
        self.out.log(program);
        self.err.log(program);
    }
}

impl Handler for Command {
    fn name(&self) -> &str {
        &self.name
    }

    fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        self.run_with(delivery.payload.clone(), &SignatureEnv::of(delivery))
    }

    /// Kills every run in progress with its process group; no run starts after this.
    fn stop(&self) {
        let mut groups = self.running.lock();
        groups.stopped = true;
        for &pgid in &groups.pgids {
            let _ = kill_process_group(pgid, Signal::KILL);
        }
    }
}

/// Output captured from one of a command's streams: its first [`OUTPUT_MAX`] bytes (logged at
/// DEBUG) and its last [`STDERR_TAIL_MAX`] (for the error of a failed run).
struct Captured {
    stream: &'static str,
    kept: Vec<u8>,
    /// The last bytes read: at most twice [`STDERR_TAIL_MAX`], trimmed as it grows.
    last: Vec<u8>,
    total: u64,
}

impl Captured {
    fn new(stream: &'static str) -> Self {
        Self {
            stream,
            kept: Vec::new(),
            last: Vec::new(),
            total: 0,
        }
    }

    /// The last [`STDERR_TAIL_MAX`] bytes, as text: a character cut at the start dropped,
    /// trailing white space trimmed, control characters escaped ([`printable`]), `...` in
    /// front when earlier output is left out.
    fn tail(&self) -> String {
        let start = self.last.len().saturating_sub(STDERR_TAIL_MAX);
        let mut tail = &self.last[start..];
        // Skip the rest of a UTF-8 character cut at the start (continuation bytes).
        while let [b, rest @ ..] = tail
            && self.total > tail.len() as u64
            && (b & 0xC0) == 0x80
        {
            tail = rest;
        }
        let cut = self.total > tail.len() as u64;
        let text = String::from_utf8_lossy(tail);
        let text = printable(text.trim_end());
        if cut && !text.is_empty() {
            format!("...{text}")
        } else {
            text.into_owned()
        }
    }

    /// Reads what `pipe` has now (at most [`READ_MAX`], so a writer that never stops cannot
    /// hold the worker here), keeping the first [`OUTPUT_MAX`] bytes; whether it is still open
    /// (`false` at its end or on an error).
    fn read_from(&mut self, pipe: Option<&mut impl Read>) -> bool {
        let Some(pipe) = pipe else { return false };
        let mut buf = [0u8; 8192];
        for _ in 0..READ_MAX / buf.len() {
            match pipe.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => {
                    self.total += n as u64;
                    let room = OUTPUT_MAX - self.kept.len();
                    self.kept.extend_from_slice(&buf[..n.min(room)]);
                    self.last.extend_from_slice(&buf[..n]);
                    if self.last.len() > 2 * STDERR_TAIL_MAX {
                        let cut = self.last.len() - STDERR_TAIL_MAX;
                        self.last.drain(..cut);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
        true
    }

    fn log(&self, program: &Path) {
        if self.total == 0 {
            return;
        }
        let text = String::from_utf8_lossy(&self.kept);
        if self.total > self.kept.len() as u64 {
            debug!(
                program = %program.display(),
                "{}: {text}... ({} bytes in all, first {} kept)",
                self.stream,
                self.total,
                self.kept.len()
            );
        } else {
            debug!(program = %program.display(), "{}: {text}", self.stream);
        }
    }
}

/// Finds `program` (in `PATH` if it has no separator) and checks that it is executable.
fn resolve_program(program: PathBuf) -> Result<PathBuf, HandlerError> {
    let not = |reason| HandlerError::NotExecutable {
        program: program.clone(),
        reason,
    };
    if program.components().count() == 1 && !program.is_absolute() {
        let found = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(&program))
                .find(|candidate| executable(candidate).is_ok())
        });
        return found.ok_or_else(|| not("was not found in PATH"));
    }
    executable(&program).map_err(not)?;
    Ok(program)
}

/// Whether `path` is a file this process may execute; the reason if not.
fn executable(path: &Path) -> Result<(), &'static str> {
    let meta = fs::metadata(path).map_err(|_| "does not exist or cannot be read")?;
    if !meta.is_file() {
        return Err("is not a file");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o111 == 0 {
            return Err("is not executable");
        }
    }
    Ok(())
}

/// Bytes of each output stream of a [`Command`] kept for the log.
const OUTPUT_MAX: usize = 64 * 1024;

/// Most bytes of a failed run's stderr reported with its error (the last ones: 2 KiB).
pub const STDERR_TAIL_MAX: usize = 2 * 1024;

/// Bytes read from one output pipe before the worker checks the program again.
const READ_MAX: usize = 64 * 1024;

/// How long output collection may outlast a [`Command`]'s process.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// Longest pause between two checks of a running [`Command`].
const WAIT_PAUSE_MAX: Duration = Duration::from_millis(20);

/// The signature variables of a `--cmd` program's environment: `VTP_SIGNATURE` (the status:
/// `valid`, `invalid`, `unknown-key`, `unsigned`, `malformed` or `invalid-signer`),
/// `VTP_SIGNER` (the signer's fingerprint, for `valid` and `invalid-signer`),
/// `VTP_SIGNER_UID` (its user id) and `VTP_SIGNATURE_DETAIL` (why the status is not `valid`).
/// None is set when signatures are off; vtp's own values never leak from its environment.
#[derive(Debug, Default)]
struct SignatureEnv(Vec<(&'static str, String)>);

impl SignatureEnv {
    const NAMES: [&'static str; 4] = [
        "VTP_SIGNATURE",
        "VTP_SIGNER",
        "VTP_SIGNER_UID",
        "VTP_SIGNATURE_DETAIL",
    ];

    fn of(delivery: &Delivery) -> Self {
        let mut vars = Vec::new();
        if let Some(s) = &delivery.signature {
            vars.push((Self::NAMES[0], s.status.as_str().to_owned()));
            if let Some(signer) = &s.signer {
                vars.push((Self::NAMES[1], signer.fingerprint.to_string()));
                vars.push((Self::NAMES[2], printable(&signer.user_id).into_owned()));
            }
            if let Some(detail) = &s.detail {
                vars.push((Self::NAMES[3], printable(detail).into_owned()));
            }
        }
        Self(vars)
    }

    fn set(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.0.iter().map(|(k, v)| (*k, v.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::GCN;
    use crate::testutil::{TempDir, capture_logs, delivery};
    use std::thread;

    fn sh(script: &str) -> Command {
        Command::new("/bin/sh", vec!["-c".into(), script.into()]).unwrap()
    }

    #[test]
    fn command_gets_the_event_on_stdin() {
        let tmp = TempDir::new("cmd-cat");
        let out = tmp.path().join("out.xml");
        let cmd = sh(&format!("cat > '{}'", out.display()));
        let payload = b"<VOEvent>\xff raw</VOEvent>\n";
        cmd.handle(&delivery(GCN, payload)).unwrap();
        assert_eq!(fs::read(&out).unwrap(), payload);
    }

    #[test]
    fn command_output_is_logged_at_debug_and_bounded() {
        let cmd = sh("echo hello; echo oops >&2; head -c 200000 /dev/zero | tr '\\0' a >&2");
        let (result, logs) = capture_logs(|| cmd.run(Bytes::from_static(b"x")));
        result.unwrap();
        assert!(
            logs.contains("DEBUG") && logs.contains("stdout: hello"),
            "{logs}"
        );
        assert!(logs.contains("stderr: oops"), "{logs}");
        assert!(
            logs.contains("(200005 bytes in all, first 65536 kept)"),
            "{logs}"
        );
        assert!(
            logs.len() < 100_000,
            "log not bounded: {} bytes",
            logs.len()
        );
    }

    #[test]
    fn a_failed_run_reports_the_tail_of_its_stderr_escaped_and_bounded() {
        let err = sh(r"echo starting >&2; printf 'bad \033[31minput\n\n' >&2; exit 2")
            .run(Bytes::from_static(b"x"))
            .unwrap_err();
        let want = r"starting\nbad \u{1b}[31minput";
        assert!(
            matches!(&err, HandlerError::NonZero { stderr, .. } if stderr == want),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("`/bin/sh` returned non-zero (2); stderr: {want}")
        );
        // 100,000 bytes, then the end: the last 2 KiB are kept, after "...".
        let err = sh(r"head -c 100000 /dev/zero | tr '\0' a >&2; echo ' the end' >&2; exit 1")
            .run(Bytes::new())
            .unwrap_err();
        let HandlerError::NonZero { stderr, .. } = &err else {
            panic!("{err:?}");
        };
        assert!(
            stderr.starts_with("...aaa") && stderr.ends_with("a the end"),
            "{stderr}"
        );
        assert_eq!(
            stderr.len(),
            3 + STDERR_TAIL_MAX - 1,
            "the trailing newline trimmed"
        );
        // A multi-byte character cut at the start of the tail is dropped, never garbled.
        let err = sh("i=0; while [ $i -lt 1500 ]; do printf 'é' >&2; i=$((i+1)); done; exit 1")
            .run(Bytes::new())
            .unwrap_err();
        let HandlerError::NonZero { stderr, .. } = &err else {
            panic!("{err:?}");
        };
        assert!(
            stderr
                .strip_prefix("...")
                .is_some_and(|t| !t.is_empty() && t.chars().all(|c| c == 'é')),
            "{stderr}"
        );
        // A timeout reports what the program wrote before it was killed.
        let err = sh("echo 'still waiting for the database' >&2; sleep 5")
            .with_timeout(Duration::from_millis(300))
            .run(Bytes::new())
            .unwrap_err();
        assert!(
            err.to_string()
                .ends_with("; stderr: still waiting for the database"),
            "{err}"
        );
        // Nothing written: nothing added.
        let err = sh("exit 4").run(Bytes::new()).unwrap_err();
        assert_eq!(err.to_string(), "`/bin/sh` returned non-zero (4)");
    }

    #[test]
    fn command_non_zero_exit_is_an_error() {
        let err = sh("exit 3").run(Bytes::from_static(b"x")).unwrap_err();
        assert!(matches!(err, HandlerError::NonZero { .. }), "{err:?}");
        assert_eq!(err.to_string(), "`/bin/sh` returned non-zero (3)");
        let err = sh("kill -9 $$").run(Bytes::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`/bin/sh` returned non-zero (killed by signal 9)"
        );
    }

    #[test]
    fn command_that_runs_too_long_is_killed() {
        let cmd = Command::new("sleep", vec!["5".into()])
            .unwrap()
            .with_timeout(Duration::from_millis(300));
        let start = Instant::now();
        let err = cmd.run(Bytes::from_static(b"x")).unwrap_err();
        assert!(matches!(err, HandlerError::Timeout { .. }), "{err:?}");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn command_that_never_reads_stdin_cannot_deadlock() {
        let big = Bytes::from(vec![b'a'; 2 << 20]);
        // Never reads and never exits: the timeout ends it.
        let cmd = Command::new("sleep", vec!["5".into()])
            .unwrap()
            .with_timeout(Duration::from_millis(300));
        let start = Instant::now();
        let err = cmd.run(big.clone()).unwrap_err();
        assert!(matches!(err, HandlerError::Timeout { .. }), "{err:?}");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        // Exits at once without reading: success, the broken pipe is not an error.
        Command::new("true", Vec::new()).unwrap().run(big).unwrap();
    }

    /// A `#!/bin/sh` script with `body`, written into `tmp` and made executable.
    fn script(tmp: &TempDir, body: &str) -> Command {
        use std::os::unix::fs::PermissionsExt;
        let path = tmp.path().join("script.sh");
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        Command::new(&path, Vec::new()).unwrap()
    }

    /// Reads a pid the script wrote, waiting for the file at most 10 s.
    fn read_pid(path: &Path) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(text) = fs::read_to_string(path)
                && text.ends_with('\n')
            {
                return text.trim().parse().unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "{} never written",
                path.display()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether `pid` is gone or a zombie (dead, not yet reaped by its new parent).
    fn dead(pid: u32) -> bool {
        fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        })
    }

    /// Waits at most 5 s for `pid` to die; whether it did.
    fn dies(pid: u32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !dead(pid) {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Waits at most 5 s for no process of the group led by `pgid` to be left (zombies
    /// included: their new parent reaps them soon).
    fn group_gone(pgid: u32) -> bool {
        use rustix::process::{Pid, test_kill_process_group};
        let pgid = Pid::from_raw(i32::try_from(pgid).unwrap()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while test_kill_process_group(pgid) != Err(rustix::io::Errno::SRCH) {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// A script that starts `sleep 60` in the background, writes its pid to `bg.pid` and its
    /// own to `me.pid`, then runs `then`. Returns the command and the two pid files.
    fn leaves_a_child(tmp: &TempDir, then: &str) -> (Command, PathBuf, PathBuf) {
        let bg = tmp.path().join("bg.pid");
        let me = tmp.path().join("me.pid");
        let body = format!(
            "sleep 60 &\necho $! > '{}'\necho $$ > '{}'\n{then}",
            bg.display(),
            me.display()
        );
        (script(tmp, &body), bg, me)
    }

    #[test]
    fn command_descendants_are_killed_when_it_exits() {
        let tmp = TempDir::new("cmd-bg-exit");
        let (cmd, bg, me) = leaves_a_child(&tmp, "");
        let start = Instant::now();
        cmd.run(Bytes::from_static(b"x")).unwrap();
        let took = start.elapsed();
        let (bg, me) = (read_pid(&bg), read_pid(&me));
        assert!(dies(bg), "background process {bg} still runs");
        assert!(group_gone(me), "process group {me} still has members");
        // The background process held the output pipes: they were not waited for.
        assert!(took < OUTPUT_GRACE, "{took:?}");
    }

    #[test]
    fn command_descendants_are_killed_at_the_timeout() {
        let tmp = TempDir::new("cmd-bg-timeout");
        let (cmd, bg, me) = leaves_a_child(&tmp, "sleep 60");
        let cmd = cmd.with_timeout(Duration::from_millis(300));
        let err = cmd.run(Bytes::from_static(b"x")).unwrap_err();
        assert!(matches!(err, HandlerError::Timeout { .. }), "{err:?}");
        let (bg, me) = (read_pid(&bg), read_pid(&me));
        assert!(dies(bg), "background process {bg} still runs");
        assert!(group_gone(me), "process group {me} still has members");
    }

    #[test]
    fn running_commands_are_killed_when_the_pool_gives_up_at_shutdown() {
        let tmp = TempDir::new("cmd-shutdown");
        let (cmd, bg, me) = leaves_a_child(&tmp, "sleep 60");
        let pool = crate::handlers::Handlers::new(vec![std::sync::Arc::new(cmd)], 1, 4);
        assert!(pool.dispatch(delivery(GCN, b"x")));
        let (bg, me) = (read_pid(&bg), read_pid(&me));
        assert!(!pool.shutdown(Duration::from_millis(50)));
        assert!(dies(me), "command {me} still runs after shutdown");
        assert!(
            dies(bg),
            "background process {bg} still runs after shutdown"
        );
    }

    #[test]
    fn command_must_be_executable() {
        let tmp = TempDir::new("cmd-exec");
        let plain = tmp.path().join("plain.sh");
        fs::write(&plain, b"#!/bin/sh\n").unwrap();
        let cases = [
            (tmp.path().join("missing"), "does not exist"),
            (plain.clone(), "is not executable"),
            (tmp.path().to_owned(), "is not a file"),
            (
                PathBuf::from("vtp-no-such-program-xyz"),
                "was not found in PATH",
            ),
        ];
        for (program, reason) in cases {
            let err = Command::new(&program, Vec::new()).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(&program.display().to_string()), "{text}");
            assert!(text.contains(reason), "{text}");
        }
        // Found in PATH: the resolved path is kept.
        let cmd = Command::new("sh", Vec::new()).unwrap();
        assert!(cmd.program().is_absolute(), "{:?}", cmd.program());
    }
}
