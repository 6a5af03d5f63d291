//! The real peers' setup scripts of `conformance/peers` (`setup_stunnel.sh`,
//! `setup_gnupg.sh`, ...): each installs its program when it is missing, where it can, and
//! prints the program's path on its last line.

use std::path::PathBuf;
use std::process::Command;

use crate::kafka::peer_script;

/// Runs `conformance/peers/SCRIPT` and returns the path it printed last. The error says which
/// script failed, why, and that `needed` is required for these tests; a caller panics with it
/// (tests never skip).
pub fn run(script: &str, needed: &str) -> Result<PathBuf, String> {
    let script = peer_script(script);
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(p) if out.status.success() => Ok(PathBuf::from(p.trim())),
        _ => Err(format!(
            "{} failed ({}): {needed} is required for these tests\nstderr:\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}
