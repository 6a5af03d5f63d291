//! The real peers vtp must interoperate with, as processes on 127.0.0.1: Comet 3.1.0 (broker,
//! subscriber, `comet-sendvo`) and pygcn 1.1.3 from the venv `conformance/peers/setup.sh`
//! makes, and stunnel, the TLS shim put in front of them (`conformance/peers/setup_stunnel.sh`).
//!
//! A peer that cannot be installed or started fails the test: nothing is skipped. Every wait is
//! on a log line, with a bounded deadline; every peer is killed with its process group on drop.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::support::*;

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// `conformance/peers`: the scripts that drive the peers.
pub fn peers_dir() -> PathBuf {
    repo().join("conformance/peers")
}

/// The peers venv, set up once per test binary by `setup.sh` (which uses `VTP_PEERS_VENV` when
/// set, as CI does, and then only checks it). Panics, failing the test, if setup fails.
pub fn venv() -> &'static Path {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let venv = VENV.get_or_init(|| {
        let script = peers_dir().join("setup.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let path = stdout.lines().rev().find(|l| !l.trim().is_empty());
        match path {
            Some(p) if out.status.success() && Path::new(p.trim()).join("bin").is_dir() => {
                Ok(PathBuf::from(p.trim()))
            }
            _ => Err(format!(
                "{} failed ({}): the real Comet and pygcn are required for these tests\n\
                 stdout:\n{stdout}\nstderr:\n{stderr}",
                script.display(),
                out.status
            )),
        }
    });
    match venv {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

pub fn venv_bin(name: &str) -> PathBuf {
    venv().join("bin").join(name)
}

/// A command for a Comet/twistd program, with none of `comet_twistd.py`'s knobs inherited from
/// the environment by accident, running in `cwd` (Comet may write lock files there).
pub fn comet_command(program: impl AsRef<std::ffi::OsStr>, cwd: &Path) -> Command {
    let mut cmd = Command::new(program);
    for knob in [
        "VTP_COMET_INTERFACE",
        "VTP_COMET_IAMALIVE_INTERVAL",
        "VTP_COMET_ALIVE_INTERVAL",
        "VTP_COMET_RECEIVER_TIMEOUT",
    ] {
        cmd.env_remove(knob);
    }
    cmd.current_dir(cwd);
    cmd
}

/// The port in a Twisted line `... <factory> (WhitelistingFactory) starting on <port>`.
pub fn port_after(line: &str, marker: &str) -> u16 {
    let at = line.find(marker).unwrap() + marker.len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|e| panic!("no port in {line:?}: {e}"))
}

/// How Twisted names a loopback TCP peer at `port` in Comet's log lines.
pub fn ipv4(port: u16) -> String {
    format!("IPv4Address(type='TCP', host='127.0.0.1', port={port})")
}

/// A Comet 3.1.0 broker (receiver and broadcaster) on 127.0.0.1, ephemeral ports, `-v`.
pub struct CometBroker {
    pub proc: Proc,
    pub receive: u16,
    pub broadcast: u16,
    _dir: TempDir,
}

impl CometBroker {
    pub fn start(name: &str) -> Self {
        let dir = TempDir::new(name);
        let db = dir.path().join("eventdb");
        std::fs::create_dir(&db).unwrap();
        let mut cmd = comet_command(venv_bin("python"), dir.path());
        cmd.arg(peers_dir().join("comet_twistd.py"))
            .env("VTP_COMET_INTERFACE", "127.0.0.1")
            .args(["-n", "--logfile=-", "--pidfile=", "comet", "-v"])
            .args([
                "--receive",
                "--receive-port=0",
                "--broadcast",
                "--broadcast-port=0",
            ])
            .arg(format!("--local-ivo=ivo://vtp.test/{name}"))
            .arg(format!("--eventdb={}", db.display()))
            .arg("--broadcast-test-interval=0")
            .args([
                "--author-whitelist=127.0.0.0/8",
                "--subscriber-whitelist=127.0.0.0/8",
            ]);
        let proc = Proc::spawn_group(name, cmd);
        let port = |factory: &str| {
            let marker = format!("{factory} (WhitelistingFactory) starting on ");
            let line = proc.log.wait_for(&marker, |l| l.contains(&marker));
            port_after(&line, &marker)
        };
        let receive = port("VOEventReceiverFactory");
        let broadcast = port("VOEventBroadcasterFactory");
        // comet_twistd.py applied the bind address (it reports each patch on stderr).
        assert_eq!(
            proc.log
                .count(|l| l.contains("vtp-comet: listen interface = 127.0.0.1")),
            1,
            "{}",
            proc.log.text()
        );
        Self {
            proc,
            receive,
            broadcast,
            _dir: dir,
        }
    }
}

/// A Comet 3.1.0 subscriber (`-v`) whose `--cmd` handler, `comet_save_raw.py`, saves the exact
/// bytes of every event it accepts as `<raw>/<n>.xml`.
pub struct CometSubscriber {
    pub proc: Proc,
    pub raw: PathBuf,
    /// How Comet names the broker in its log lines.
    pub broker: String,
    _dir: TempDir,
}

impl CometSubscriber {
    /// Starts it against the broker at 127.0.0.1:`port`; returns once the broker's authenticate
    /// has arrived (the broker has registered it).
    pub fn start(name: &str, port: u16, filters: &[&str]) -> Self {
        let dir = TempDir::new(name);
        let db = dir.path().join("eventdb");
        std::fs::create_dir(&db).unwrap();
        let raw = dir.path().join("raw");
        let mut cmd = comet_command(venv_bin("twistd"), dir.path());
        cmd.env("VTP_SAVE_DIR", &raw)
            .args(["-n", "--logfile=-", "--pidfile=", "comet", "-v"])
            .arg(format!("--remote=127.0.0.1:{port}"))
            .arg(format!("--local-ivo=ivo://vtp.test/{name}"))
            .arg(format!("--eventdb={}", db.display()))
            .arg(format!(
                "--cmd={}",
                peers_dir().join("comet_save_raw.py").display()
            ));
        for f in filters {
            cmd.arg(format!("--filter={f}"));
        }
        let proc = Proc::spawn_group(name, cmd);
        let broker = ipv4(port);
        let auth = format!("Authenticate received from {broker}");
        proc.log.wait_for(&auth, |l| l.contains(&auth));
        Self {
            proc,
            raw,
            broker,
            _dir: dir,
        }
    }

    /// Waits until the `--cmd` handler reports `<n>.xml` saved; returns its bytes.
    pub fn received(&self, n: usize) -> Vec<u8> {
        let said = format!("External process said: saved {n}.xml ");
        self.proc.log.wait_for(&said, |l| l.contains(&said));
        std::fs::read(self.raw.join(format!("{n}.xml"))).unwrap()
    }

    pub fn iamalives(&self) -> usize {
        let line = format!("IAmAlive received from {}", self.broker);
        self.proc.log.count(|l| l.contains(&line))
    }

    pub fn wait_iamalives(&self, n: usize) {
        let line = format!("IAmAlive received from {}", self.broker);
        self.proc.log.wait_count(&line, n, |l| l.contains(&line));
    }
}

/// pygcn 1.1.3's `listen()` through `pygcn_listen.py`, saving the exact bytes of every event
/// as `<out>/<n>.xml`.
pub struct Pygcn {
    pub proc: Proc,
    pub out: PathBuf,
    _dir: TempDir,
}

impl Pygcn {
    /// Starts it against the broker at 127.0.0.1:`port`; returns once the broker's authenticate
    /// has arrived (the broker has registered it).
    pub fn start(name: &str, port: u16) -> Self {
        let dir = TempDir::new(name);
        let out = dir.path().join("out");
        let mut cmd = Command::new(venv_bin("python"));
        cmd.arg(peers_dir().join("pygcn_listen.py"))
            .args(["127.0.0.1", &port.to_string()])
            .arg(&out)
            .current_dir(dir.path());
        let proc = Proc::spawn_group(name, cmd);
        proc.log.wait_for("pygcn registered", |l| {
            l.contains("vtp.pygcn INFO frame n=1 ") && l.ends_with(" role=authenticate")
        });
        Self {
            proc,
            out,
            _dir: dir,
        }
    }

    /// Waits until pygcn's handler reports `<n>.xml` saved; returns its bytes.
    pub fn received(&self, n: usize) -> Vec<u8> {
        let said = format!("vtp.pygcn INFO saved {n}.xml ");
        self.proc.log.wait_for(&said, |l| l.contains(&said));
        std::fs::read(self.out.join(format!("{n}.xml"))).unwrap()
    }
}

/// `comet-sendvo -h 127.0.0.1 -p <port> -f <file>` under a deadline (it has no timeout of its
/// own): exit code and output (it logs to stdout).
pub fn comet_sendvo(port: u16, file: &Path) -> (Option<i32>, String) {
    let mut cmd = comet_command(venv_bin("comet-sendvo"), &std::env::temp_dir());
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-f"])
        .arg(file);
    let mut p = Proc::spawn_group("comet-sendvo", cmd);
    let code = p.wait_exit();
    (code, p.log.text())
}

// ------------------------------------------------------------------------------ TLS peers

/// The stunnel binary, found (and installed when missing) once per test binary by
/// `setup_stunnel.sh`. Panics, failing the test, if there is none.
pub fn stunnel_bin() -> &'static Path {
    static STUNNEL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let bin = STUNNEL.get_or_init(|| vtp_testkit::setup::run("setup_stunnel.sh", "stunnel"));
    match bin {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// The test certificates `conformance/peers/tls_certs.sh` makes with the openssl command (see
/// there for each file), in a directory removed on drop.
pub struct Certs(TempDir);

impl Certs {
    pub fn new(name: &str) -> Self {
        let dir = TempDir::new(name);
        let script = peers_dir().join("tls_certs.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} failed ({}):\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Self(dir)
    }

    /// The path of `file` (`ca.pem`, `server.key`, ...).
    pub fn path(&self, file: &str) -> PathBuf {
        self.0.path().join(file)
    }

    /// Its path as a string, for command lines.
    pub fn arg(&self, file: &str) -> String {
        self.path(file).to_str().unwrap().to_owned()
    }
}

/// stunnel 5 (Debian's stunnel4) with one service, accepting on 127.0.0.1, in the foreground
/// and logging connections and certificate checks (`debug = info`) to stderr.
pub struct Stunnel {
    pub proc: Proc,
    /// Where it accepts.
    pub port: u16,
    _dir: TempDir,
}

impl Stunnel {
    /// Client mode: plain TCP in, TLS out to 127.0.0.1:`connect`, verifying that the server's
    /// certificate chains to `ca` and names `host`; presenting `cert` (certificate and key
    /// files) when given.
    pub fn client(
        name: &str,
        connect: u16,
        ca: &Path,
        host: &str,
        cert: Option<(&Path, &Path)>,
    ) -> Self {
        let mut service = format!(
            "client = yes\nconnect = 127.0.0.1:{connect}\nCAfile = {}\nverifyChain = yes\n\
             checkHost = {host}\n",
            ca.display()
        );
        if let Some((cert, key)) = cert {
            service += &format!("cert = {}\nkey = {}\n", cert.display(), key.display());
        }
        Self::start(name, &service)
    }

    /// Server mode: TLS in with `cert` and `key`, plain TCP out to 127.0.0.1:`connect`.
    pub fn server(name: &str, connect: u16, cert: &Path, key: &Path) -> Self {
        let service = format!(
            "connect = 127.0.0.1:{connect}\ncert = {}\nkey = {}\n",
            cert.display(),
            key.display()
        );
        Self::start(name, &service)
    }

    /// Starts it on an ephemeral port (`accept = 127.0.0.1:0`); returns once it reports the
    /// port it bound.
    fn start(name: &str, service: &str) -> Self {
        let dir = TempDir::new(name);
        let conf = dir.path().join("stunnel.conf");
        let text = format!(
            "foreground = yes\npid =\nsyslog = no\ndebug = info\n\n[{name}]\n\
             accept = 127.0.0.1:0\n{service}"
        );
        std::fs::write(&conf, text).unwrap();
        let mut cmd = Command::new(stunnel_bin());
        cmd.arg(&conf);
        let proc = Proc::spawn_group(name, cmd);
        let marker = format!("Service [{name}] (FD=");
        let line = proc.log.wait_for("stunnel to bind", |l| {
            l.contains(&marker) || l.contains("failed")
        });
        assert!(
            line.contains(&marker),
            "stunnel {name} did not start:\n{}",
            proc.log.text()
        );
        let port = port_after(&line, "bound to 127.0.0.1:");
        Self {
            proc,
            port,
            _dir: dir,
        }
    }
}

/// `conformance/peers/tls_peer.py` (Python's ssl module) run to completion with `args`: its
/// exit code and output (it bounds its own waits by `--timeout`, 10 s by default).
pub fn tls_peer(name: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = Command::new(venv_bin("python"));
    cmd.arg(peers_dir().join("tls_peer.py")).args(args);
    let mut p = Proc::spawn_group(name, cmd);
    let code = p.wait_exit();
    (code, p.log.text())
}
