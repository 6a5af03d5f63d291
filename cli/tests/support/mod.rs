//! Helpers for tests that run the real `vtp` binary on loopback with ephemeral ports.
//!
//! Waiting is always on something observable (a log line, bytes on a socket) with a bounded
//! deadline, never a fixed sleep.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use vtp_core::message::{self, Message};

pub const VTP: &str = env!("CARGO_BIN_EXE_vtp");
/// Every runtime the binary is built with; socket tests run on each.
pub const RUNTIMES: &[&str] = &["tokio", "smol", "mio"];
pub const WAIT: Duration = Duration::from_secs(15);

/// Collected output lines of a child process, with a condition variable to wait on.
#[derive(Clone, Default)]
pub struct Log(Arc<(Mutex<LogState>, Condvar)>);

#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    /// Output streams (stdout, stderr) that reached end of file.
    closed: usize,
}

impl Log {
    fn push(&self, line: String) {
        let (m, c) = &*self.0;
        m.lock().unwrap().lines.push(line);
        c.notify_all();
    }

    fn close_stream(&self) {
        let (m, c) = &*self.0;
        m.lock().unwrap().closed += 1;
        c.notify_all();
    }

    /// Waits (up to [`WAIT`]) until `f` returns `Some` for the lines so far and the number of
    /// closed output streams; returns that. Panics with the whole log on timeout.
    fn wait_until<T>(&self, what: &str, f: impl Fn(&[String], usize) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        let (m, c) = &*self.0;
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

    /// Waits until at least `n` lines satisfy `f`. Panics with the whole log on timeout.
    pub fn wait_count(&self, what: &str, n: usize, f: impl Fn(&str) -> bool) {
        self.wait_until(what, |lines, _| {
            (lines.iter().filter(|l| f(l)).count() >= n).then_some(())
        });
    }

    pub fn count(&self, f: impl Fn(&str) -> bool) -> usize {
        self.0
            .0
            .lock()
            .unwrap()
            .lines
            .iter()
            .filter(|l| f(l))
            .count()
    }

    pub fn text(&self) -> String {
        self.0.0.lock().unwrap().lines.join("\n")
    }
}

/// A child process whose stdout and stderr lines are collected; killed on drop.
pub struct Proc {
    pub child: Child,
    pub log: Log,
    pub name: String,
    /// The child leads its own process group, killed as a whole on drop.
    group: bool,
}

impl Proc {
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

    fn start(name: &str, mut cmd: Command, group: bool) -> Self {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
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
                for line in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
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
    /// the exit code. Panics with the log if it takes longer than [`WAIT`].
    pub fn wait_exit(&mut self) -> Option<i32> {
        let what = format!("{} to close its output", self.name);
        self.log
            .wait_until(&what, |_, closed| (closed == 2).then_some(()));
        self.wait_status()
    }

    /// Bounded wait for the child's exit status.
    fn wait_status(&mut self) -> Option<i32> {
        let deadline = Instant::now() + WAIT;
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
pub struct TempDir(pub PathBuf);

impl TempDir {
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

/// A `vtp broker` on 127.0.0.1 with ephemeral ports.
pub struct Broker {
    pub proc: Proc,
    pub receive: u16,
    pub broadcast: u16,
    pub db: TempDir,
}

impl Broker {
    /// Starts a broker receiving and broadcasting on ephemeral loopback ports, plus `extra`
    /// arguments; waits until both listeners are up.
    pub fn start(name: &str, extra: &[&str]) -> Self {
        let db = TempDir::new(name);
        Self::start_with_db(name, extra, db)
    }

    pub fn start_with_db(name: &str, extra: &[&str], db: TempDir) -> Self {
        let mut cmd = Command::new(VTP);
        cmd.args(["broker", "--local-ivo", &format!("ivo://vtp.test/{name}")])
            .args(["--receive", "127.0.0.1:0", "--broadcast", "127.0.0.1:0"])
            .arg("--eventdb")
            .arg(db.path())
            .args(extra);
        let proc = Proc::spawn(name, cmd);
        let port = |what: &str| -> u16 {
            let line = proc
                .log
                .wait_for(what, |l| l.contains(&format!("listening for {what} on")));
            line.rsplit(':').next().unwrap().trim().parse().unwrap()
        };
        let receive = port("authors");
        let broadcast = port("subscribers");
        Self {
            proc,
            receive,
            broadcast,
            db,
        }
    }
}

pub fn event_xml(ivorn: &str) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <voe:VOEvent xmlns:voe=\"http://www.ivoa.net/xml/VOEvent/v2.0\"\n \
         ivorn=\"{ivorn}\" role=\"observation\" version=\"2.0\">\n  \
         <Who><AuthorIVORN>ivo://vtp.test/author</AuthorIVORN></Who>\n\
         </voe:VOEvent>\n"
    )
    .into_bytes()
}

/// Reads one frame (bounded by the read timeout).
pub fn read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

pub fn write_frame(s: &mut TcpStream, payload: &[u8]) {
    s.write_all(&vtp_core::frame::encode(payload).unwrap())
        .unwrap();
}

/// Submits `payload` over raw TCP and returns the reply's role and Result text.
pub fn submit_raw(port: u16, payload: &[u8]) -> (String, Option<String>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write_frame(&mut s, payload);
    let reply = read_frame(&mut s).unwrap();
    match message::parse(&reply, &Default::default()).unwrap() {
        Message::Transport(t) => (t.role.as_str().to_owned(), t.result.map(|r| r.into_owned())),
        other => panic!("expected a receipt, got {other:?}"),
    }
}

/// A raw subscriber: answers authenticate/iamalive, acks events, collects event payloads.
pub struct RawSubscriber {
    pub stream: TcpStream,
}

impl RawSubscriber {
    pub fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut s = Self { stream };
        // The broker speaks first: authenticate.
        let f = read_frame(&mut s.stream).expect("authenticate from the broker");
        match message::parse(&f, &Default::default()).unwrap() {
            Message::Transport(t) => assert_eq!(t.role.as_str(), "authenticate"),
            other => panic!("expected authenticate, got {other:?}"),
        }
        s
    }

    /// Returns the next event payload, answering Transport messages on the way.
    pub fn next_event(&mut self) -> Vec<u8> {
        loop {
            let f = read_frame(&mut self.stream).expect("a frame before the deadline");
            let reply = match message::parse(&f, &Default::default()).unwrap() {
                Message::VoEvent(ev) => {
                    let ack = message::build_ack(&ev.ivorn, None, "2024-01-01T00:00:00Z");
                    self.stream.write_all(&ack).unwrap();
                    return f;
                }
                Message::Transport(t) if t.role.as_str() == "iamalive" => {
                    message::build_iamalive_reply(&t.origin, None, "2024-01-01T00:00:00Z")
                }
                Message::Transport(_) => continue,
                _ => continue,
            };
            self.stream.write_all(&reply).unwrap();
        }
    }
}
