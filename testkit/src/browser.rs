//! A real browser for the status page's tests: Debian's Chromium, headless, installed by
//! `conformance/peers/setup_chromium.sh`.
//!
//! [`chromium`] finds it: `VTP_CHROMIUM` (exported by `.ci/test.sh`), else, outside CI, the
//! setup script (which installs it when it can). Under CI (`CI=true`) an unset `VTP_CHROMIUM`
//! fails the test: the browser test never skips. Each run gets a profile directory of its own,
//! so tests may run browsers in parallel, and a deadline ([`BROWSER_WAIT`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::TempDir;

/// The longest a browser run may take (a start is about a second).
pub const BROWSER_WAIT: Duration = Duration::from_secs(60);

/// The Chromium binary. Panics (failing the test) when there is none, saying how to get one.
pub fn chromium() -> &'static Path {
    static CHROMIUM: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = CHROMIUM.get_or_init(|| match std::env::var_os("VTP_CHROMIUM") {
        Some(p) => {
            let p = PathBuf::from(p);
            if p.is_file() {
                Ok(p)
            } else {
                Err(format!(
                    "VTP_CHROMIUM={} is not a file: run `bash conformance/peers/setup_chromium.sh` \
                     and set VTP_CHROMIUM to the path it prints",
                    p.display()
                ))
            }
        }
        None if std::env::var("CI").is_ok_and(|v| v == "true") => Err(
            "VTP_CHROMIUM is not set under CI: .ci/test.sh exports it from \
             conformance/peers/setup_chromium.sh; the status page's browser test never skips"
                .to_owned(),
        ),
        None => crate::setup::run("setup_chromium.sh", "chromium"),
    });
    match found {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// The DOM of `url` once loaded, as Chromium serialises it (`--dump-dom`).
pub fn dump_dom(url: &str) -> String {
    let out = run("dump-dom", &["--dump-dom", url]);
    String::from_utf8(out).unwrap()
}

/// A screenshot of `url` in a 1280x1600 window, as PNG bytes (`--screenshot`), also left at
/// `file`.
pub fn screenshot(url: &str, file: &Path) -> Vec<u8> {
    let arg = format!("--screenshot={}", file.display());
    run("screenshot", &[&arg, "--window-size=1280,1600", url]);
    fs::read(file).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", file.display()))
}

/// Width and height of a PNG image, if `bytes` is one (its signature and IHDR chunk).
pub fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if bytes.len() < 24 || !bytes.starts_with(SIGNATURE) || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Some((be(&bytes[16..20]), be(&bytes[20..24])))
}

/// Runs headless Chromium with `args` and a fresh profile; its stdout. Panics with its
/// stderr if it fails or outlives [`BROWSER_WAIT`].
fn run(what: &str, args: &[&str]) -> Vec<u8> {
    let dir = TempDir::new(&format!("chromium-{what}"));
    let stdout = dir.path().join("stdout");
    let stderr = dir.path().join("stderr");
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&stdout).unwrap())
        .stderr(fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium().display()));
    let deadline = Instant::now() + BROWSER_WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium {what} still running after {BROWSER_WAIT:?}; stderr:\n{}",
                fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "chromium {what} failed ({status}); stderr:\n{}",
        fs::read_to_string(&stderr).unwrap_or_default()
    );
    fs::read(&stdout).unwrap()
}
