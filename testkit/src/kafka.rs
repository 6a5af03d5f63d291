//! A real Kafka-protocol broker for tests: tansu 0.6.0 on a loopback port with in-memory
//! storage, and the kafka-python helper scripts of `conformance/peers`.
//!
//! Nothing here installs anything: a missing tansu binary or peers venv fails the test with
//! the setup script to run (`conformance/peers/setup_tansu.sh`, `conformance/peers/setup.sh`).
//!
//! - [`tansu_bin`]: `VTP_TANSU`, else the binary `setup_tansu.sh` caches under
//!   `${VTP_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/vtp}/tansu-0.6.0/bin/tansu`;
//! - [`Tansu`]: a broker on an ephemeral port, killed on drop; [`Tansu::create_topic`];
//! - [`peers_python`], [`peer_script`]: the venv's interpreter (`VTP_PEERS_VENV`, else
//!   `<repo>/target/peers-venv`) with kafka-python importable, and the scripts beside it.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{Proc, WAIT};

/// The tansu version the tests are written against.
pub const TANSU_VERSION: &str = "0.6.0";

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `conformance/peers/NAME`.
pub fn peer_script(name: &str) -> PathBuf {
    repo().join("conformance/peers").join(name)
}

/// The tansu binary. Panics, naming the setup script, if it is not there.
pub fn tansu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("VTP_TANSU") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "VTP_TANSU={} is not a file", p.display());
        return p;
    }
    let cache = std::env::var_os("VTP_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|x| PathBuf::from(x).join("vtp")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/vtp")))
        .expect("no HOME to find the tansu cache under");
    let bin = cache.join(format!("tansu-{TANSU_VERSION}/bin/tansu"));
    assert!(
        bin.is_file(),
        "tansu {TANSU_VERSION} is not built ({} is missing): run `bash conformance/peers/setup_tansu.sh` \
         (once per machine, 20-35 minutes), or set VTP_TANSU to a tansu binary",
        bin.display()
    );
    bin
}

/// The peers venv's Python, checked to import kafka-python. Panics, naming the setup
/// script, if it does not.
pub fn peers_python() -> PathBuf {
    let venv = std::env::var_os("VTP_PEERS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/peers-venv"));
    let python = venv.join("bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import kafka, zstandard, lz4"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the peers venv {} cannot import kafka-python (with zstandard and lz4): run \
         `bash conformance/peers/setup.sh` (or set VTP_PEERS_VENV to its venv)",
        venv.display()
    );
    python
}

/// A Python command running `conformance/peers/SCRIPT` with these arguments.
pub fn peer_command(script: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(peers_python());
    cmd.arg(peer_script(script)).args(args);
    cmd
}

/// A tansu broker on `127.0.0.1:port` with in-memory storage; killed on drop.
#[derive(Debug)]
pub struct Tansu {
    /// The broker process (its log is collected).
    pub proc: Proc,
    /// The port it listens on.
    pub port: u16,
}

impl Tansu {
    /// Starts a broker without authentication.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a broker with these extra `tansu broker` arguments (for example
    /// `--authentication`), on a free loopback port (tried again on another port if the
    /// broker exits, as when the port was taken in between), and waits until it accepts
    /// connections.
    pub fn start_with(extra: &[&str]) -> Self {
        let bin = tansu_bin();
        let mut last_log = String::new();
        for _ in 0..3 {
            let port = free_port();
            let url = format!("tcp://127.0.0.1:{port}");
            let mut cmd = Command::new(&bin);
            cmd.args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("VTP_TANSU_LOG").unwrap_or("warn".into()),
            );
            let mut proc = Proc::spawn_group("tansu", cmd);
            let deadline = Instant::now() + WAIT;
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Tansu { proc, port };
                }
                if let Ok(Some(_)) = proc.child.try_wait() {
                    break;
                }
                std::thread::park_timeout(Duration::from_millis(20));
            }
            last_log = proc.log.text();
        }
        panic!("tansu did not start listening:\n{last_log}");
    }

    /// `127.0.0.1:PORT`, the bootstrap address.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `tcp://127.0.0.1:PORT`, as tansu's own commands take it.
    pub fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// Creates a topic with this many partitions (tansu does not create topics on use).
    pub fn create_topic(&self, name: &str, partitions: u32) {
        self.tansu_command(&[
            "topic",
            "create",
            name,
            "--broker",
            &self.url(),
            "--partitions",
            &partitions.to_string(),
        ]);
    }

    /// Runs `tansu ARGS` to completion, panicking with its output if it fails.
    pub fn tansu_command(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(tansu_bin());
        cmd.args(args);
        let mut p = Proc::spawn("tansu-cli", cmd);
        let code = p.wait_exit();
        let text = p.log.text();
        assert_eq!(code, Some(0), "tansu {args:?} failed:\n{text}");
        text
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Runs `kafka_consume.py BOOTSTRAP ARGS...` (kafka-python) to completion against `broker`;
/// returns its standard output. Panics with both outputs unless it succeeded and said `done`.
pub fn kafka_consume(broker: &Tansu, args: &[&str]) -> String {
    let addr = broker.addr();
    let mut all = vec![addr.as_str()];
    all.extend_from_slice(args);
    let out = peer_command("kafka_consume.py", &all).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("done"),
        "kafka_consume.py {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// What `kafka_produce.py` reported, once it has exited: (topic, partition, offset) of each of
/// the `sent` records, in input order. Panics with both outputs unless it succeeded and said
/// `done SENT`.
pub fn produced(out: &std::process::Output, sent: usize) -> Vec<(String, i32, i64)> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("done {sent}")),
        "kafka_produce.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("produced "))
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (
                f[0].to_owned(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect()
}
