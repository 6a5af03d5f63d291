//! [`Command`]: a program run for every event, the event on its stdin (`--cmd`).

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{self, Child, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::debug;
use vtp_core::Delivery;

use super::{Handler, HandlerError};

/// Runs a program for every event, the event's bytes on its stdin (`--cmd`).
///
/// The program is run directly (no shell) with the given arguments and this process's
/// environment and working directory. The raw payload is written to its stdin, which is then
/// closed. Its stdout and stderr are captured (at most 64 KiB of each is kept) and logged at
/// DEBUG. A non-zero exit is reported as [`HandlerError::NonZero`], which the pool logs at WARN
/// as `` `PROGRAM` returned non-zero (CODE) ``. A program still running after the timeout
/// (default 30 s; Comet has none) is killed and reported as [`HandlerError::Timeout`].
///
/// Implementation note: stdin is written and stdout and stderr are read on three short-lived
/// threads while the worker waits, so a program that never reads its stdin, or fills its
/// output pipes, cannot deadlock the worker: it just runs into the timeout. At most as many
/// programs run at once as the pool has workers. If the program leaves a descendant holding its
/// pipes open, output collection is abandoned one second after the program itself ends.
#[derive(Debug, Clone)]
pub struct Command {
    program: PathBuf,
    args: Vec<String>,
    timeout: Duration,
    name: String,
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
    /// [`HandlerError::Spawn`], [`HandlerError::Wait`], [`HandlerError::Thread`] if it cannot be
    /// run, [`HandlerError::NonZero`] if it fails, [`HandlerError::Timeout`] if it was killed.
    pub fn run(&self, payload: Bytes) -> Result<(), HandlerError> {
        let mut child = process::Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| HandlerError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        let (out_tx, out_rx) = mpsc::channel();
        if let Err(e) = self.start_io(&mut child, payload, &out_tx) {
            kill(&mut child);
            return Err(e);
        }
        drop(out_tx);
        let status = self.wait(&mut child);
        self.log_output(&out_rx);
        match status? {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(HandlerError::NonZero {
                program: self.program.clone(),
                status,
            }),
            None => Err(HandlerError::Timeout {
                program: self.program.clone(),
                timeout: self.timeout,
            }),
        }
    }

    /// Starts the stdin writer and the two output readers.
    fn start_io(
        &self,
        child: &mut Child,
        payload: Bytes,
        out_tx: &Sender<Captured>,
    ) -> Result<(), HandlerError> {
        if let Some(mut stdin) = child.stdin.take() {
            let program = self.program.clone();
            spawn_io("vtp-cmd-stdin", move || {
                // A program may exit or close stdin without reading it all: not an error.
                if let Err(e) = stdin.write_all(&payload)
                    && e.kind() != io::ErrorKind::BrokenPipe
                {
                    debug!(program = %program.display(), error = %e, "writing the event to stdin");
                }
            })?;
        }
        if let Some(stdout) = child.stdout.take() {
            let tx = out_tx.clone();
            spawn_io("vtp-cmd-stdout", move || {
                let _ = tx.send(Captured::read("stdout", stdout));
            })?;
        }
        if let Some(stderr) = child.stderr.take() {
            let tx = out_tx.clone();
            spawn_io("vtp-cmd-stderr", move || {
                let _ = tx.send(Captured::read("stderr", stderr));
            })?;
        }
        Ok(())
    }

    /// Waits for the child; `None` if it timed out and was killed.
    fn wait(&self, child: &mut Child) -> Result<Option<ExitStatus>, HandlerError> {
        let deadline = Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(Some(status)),
                Ok(None) => {}
                Err(source) => {
                    kill(child);
                    return Err(HandlerError::Wait {
                        program: self.program.clone(),
                        source,
                    });
                }
            }
            let now = Instant::now();
            if now >= deadline {
                kill(child);
                return Ok(None);
            }
            thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(WAIT_PAUSE_MAX);
        }
    }

    /// Logs what the readers captured, waiting at most [`OUTPUT_GRACE`] for them.
    fn log_output(&self, out_rx: &Receiver<Captured>) {
        let deadline = Instant::now() + OUTPUT_GRACE;
        loop {
            match out_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(out) => out.log(&self.program),
                Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {
                    debug!(
                        program = %self.program.display(),
                        "output not collected: a descendant process still holds the pipe"
                    );
                    return;
                }
            }
        }
    }
}

impl Handler for Command {
    fn name(&self) -> &str {
        &self.name
    }

    fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        self.run(delivery.payload.clone())
    }
}

/// Output captured from one of a command's streams.
struct Captured {
    stream: &'static str,
    kept: Vec<u8>,
    total: u64,
}

impl Captured {
    /// Reads `pipe` to its end, keeping the first [`OUTPUT_MAX`] bytes.
    fn read(stream: &'static str, mut pipe: impl Read) -> Self {
        let mut kept = Vec::new();
        let mut total = 0u64;
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    total += n as u64;
                    let room = OUTPUT_MAX - kept.len();
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        Self {
            stream,
            kept,
            total,
        }
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

/// Starts a detached helper thread.
fn spawn_io(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), HandlerError> {
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .map(drop)
        .map_err(HandlerError::Thread)
}

/// Kills and reaps a child, ignoring errors (it may have exited already).
fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Bytes of each output stream of a [`Command`] kept for the log.
const OUTPUT_MAX: usize = 64 * 1024;

/// How long output collection may outlast a [`Command`]'s process.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// Longest pause between two checks of a running [`Command`].
const WAIT_PAUSE_MAX: Duration = Duration::from_millis(20);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::GCN;
    use crate::testutil::{TempDir, capture_logs, delivery};

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
