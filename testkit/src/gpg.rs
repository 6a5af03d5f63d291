//! GnuPG as an independent peer: a private home, keys made and exported, detached signatures.
//!
//! The `gpg` binary is found (and installed when missing) by
//! `conformance/peers/setup_gnupg.sh`, once per test process; without it every helper
//! panics naming the script.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::TempDir;

/// The gpg binary, found (and installed when missing) once by `setup_gnupg.sh`.
pub fn gpg_bin() -> &'static Path {
    static GPG: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let bin = GPG.get_or_init(|| crate::setup::run("setup_gnupg.sh", "gpg"));
    match bin {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// A private GnuPG home; its agent is stopped on drop.
#[derive(Debug)]
pub struct Gpg {
    /// The home directory (mode 0700), also where the helpers write their files.
    pub home: TempDir,
}

impl Default for Gpg {
    fn default() -> Self {
        Self::new()
    }
}

impl Gpg {
    /// A new, empty home.
    pub fn new() -> Self {
        let home = TempDir::new("gpg");
        // gpg warns about a home others can read.
        let private = std::os::unix::fs::PermissionsExt::from_mode(0o700);
        fs::set_permissions(home.path(), private).expect("private home");
        Self { home }
    }

    /// Runs gpg in batch mode on this home.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(gpg_bin())
            .env("GNUPGHOME", self.home.path())
            .current_dir(self.home.path())
            .args(["--batch", "--no-tty", "--pinentry-mode", "loopback"])
            .args(args)
            .output()
            .expect("gpg runs")
    }

    /// [`run`](Self::run), which must succeed.
    pub fn run_ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Makes a signing key (`algo`: `ed25519`, `rsa2048`...); returns its fingerprint.
    pub fn gen_key(&self, uid: &str, algo: &str, passphrase: &str) -> String {
        self.run_ok(&[
            "--passphrase",
            passphrase,
            "--quick-gen-key",
            uid,
            algo,
            "sign",
            "never",
        ]);
        let out = self.run_ok(&["--with-colons", "--list-keys", uid]);
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .and_then(|l| l.split(':').find(|f| !f.is_empty()))
            .expect("fingerprint")
            .to_owned()
    }

    /// `gpg --export [--armor] KEY` into a file of the home; returns its path.
    pub fn export(&self, key: &str, armoured: bool) -> PathBuf {
        let file = self
            .home
            .path()
            .join(format!("{key}.{}", if armoured { "asc" } else { "gpg" }));
        let mut args = vec!["--export"];
        if armoured {
            args.push("--armor");
        }
        args.push(key);
        fs::write(&file, self.run_ok(&args).stdout).expect("file in the gpg home");
        file
    }

    /// `gpg --export-secret-keys --armor` into a file; returns its path.
    pub fn export_secret(&self, key: &str, passphrase: &str) -> PathBuf {
        let file = self.home.path().join(format!("{key}.sec.asc"));
        let out = self.run_ok(&[
            "--passphrase",
            passphrase,
            "--export-secret-keys",
            "--armor",
            key,
        ]);
        fs::write(&file, out.stdout).expect("file in the gpg home");
        file
    }

    /// `gpg --detach-sign --armor` of `bytes` with `key` (an unprotected key).
    pub fn detach_sign(&self, key: &str, bytes: &[u8], extra: &[&str]) -> String {
        let dir = self.home.path();
        fs::write(dir.join("element.bin"), bytes).expect("file in the gpg home");
        let _ = fs::remove_file(dir.join("element.asc"));
        let mut args = vec!["--passphrase", "", "--local-user", key];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[
            "--detach-sign",
            "--armor",
            "-o",
            "element.asc",
            "element.bin",
        ]);
        self.run_ok(&args);
        fs::read_to_string(dir.join("element.asc")).expect("file in the gpg home")
    }

    /// `gpg --verify` of `armour` over `bytes`: gpg's status lines (`[GNUPG:] GOODSIG ...`)
    /// and whether it succeeded.
    pub fn verify(&self, bytes: &[u8], armour: &str) -> (bool, String) {
        let dir = self.home.path();
        fs::write(dir.join("verify.bin"), bytes).expect("file in the gpg home");
        fs::write(dir.join("verify.asc"), armour).expect("file in the gpg home");
        let out = self.run(&["--status-fd", "1", "--verify", "verify.asc", "verify.bin"]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "gpg-agent"])
            .output();
    }
}
