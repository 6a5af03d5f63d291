//! Verification cost: a 10 KB GCN event (the Swift-BAT notice of the core's tests) signed by GnuPG with an Ed25519 key and an RSA-2048
//! key, verified in process (extract by the convention, then verify). Prints µs per verify;
//! not a timed test. Targets (issue 16): Ed25519 ≤ 100 µs, RSA-2048 ≤ 200 µs; the Comet
//! manual measured 10 ms by forking `gpg`.
//!
//! ```sh
//! cargo bench -p vtp-sig --bench verify
//! ```
//!
//! Needs gpg (`conformance/peers/setup_gnupg.sh`) to make the keys and signatures.

use std::fs;
use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use vtp_core::message::{self, Message};
use vtp_core::signature::append_signature;
use vtp_sig::{Keyring, Signer, verify_element, verify_payload};

const GCN: &[u8] = include_bytes!("../../core/tests/data/gcn_swift_bat.xml");

fn main() {
    let home = tempfile::Builder::new()
        .prefix("vtp-gpg-bench")
        .tempdir()
        .expect("temporary directory");
    let private = std::os::unix::fs::PermissionsExt::from_mode(0o700);
    fs::set_permissions(home.path(), private).expect("private home");
    let event = GCN.to_vec();
    let element = match message::parse(&event, &Default::default()) {
        Ok(Message::VoEvent(ev)) => ev.element,
        other => panic!("not an event: {other:?}"),
    };
    println!(
        "event {} bytes, element {} bytes",
        event.len(),
        element.len()
    );
    for algo in ["ed25519", "rsa2048", "rsa4096"] {
        let uid = format!("bench {algo} <{algo}@example.org>");
        gpg(
            home.path(),
            &["--quick-gen-key", &uid, algo, "sign", "never"],
        );
        fs::write(home.path().join("element.bin"), &event[element.clone()])
            .expect("file in the bench home");
        let _ = fs::remove_file(home.path().join("element.asc"));
        gpg(
            home.path(),
            &[
                "--local-user",
                &uid,
                "--detach-sign",
                "--armor",
                "-o",
                "element.asc",
                "element.bin",
            ],
        );
        let armour =
            fs::read_to_string(home.path().join("element.asc")).expect("file in the bench home");
        let public = gpg(home.path(), &["--export", "--armor", &uid]);
        let mut keyring = Keyring::new();
        keyring.add("bench", &public).expect("key");
        let signed = append_signature(&event, element.clone(), &armour).expect("signable");
        assert_eq!(
            verify_payload(&keyring, &signed, element.clone()).name(),
            "valid"
        );

        let per_verify = time(|| {
            black_box(verify_payload(
                &keyring,
                black_box(&signed),
                element.clone(),
            ));
        });
        // As the node verifies an author's submission off the loop: the armour found by the
        // convention, and the SHA-256 state of the element the event key was hashed from.
        let found = match vtp_core::signature::extract(&signed, element.clone()) {
            vtp_core::signature::Extracted::Signed(found) => found,
            other => panic!("not signed: {other:?}"),
        };
        let hash = vtp_core::ElementHash::of(&signed[element.clone()]);
        let per_verify_element = time(|| {
            black_box(verify_element(
                &keyring,
                black_box(&signed[found.signed.clone()]),
                &found.armour,
                &hash,
            ));
        });
        let secret = gpg(home.path(), &["--export-secret-keys", "--armor", &uid]);
        let signer = Signer::from_bytes(&secret, "").expect("signer");
        let per_sign = time(|| {
            black_box(
                signer
                    .sign(black_box(&event[element.clone()]))
                    .expect("signed"),
            );
        });
        println!(
            "{algo:>8}: verify {:>7.1} µs ({:.1} µs continuing the event key's hash), sign {:>8.1} µs",
            micros(per_verify),
            micros(per_verify_element),
            micros(per_sign)
        );
    }
}

/// Median time of one call, over batches of about 0.1 s each.
fn time(mut f: impl FnMut()) -> Duration {
    f();
    let start = Instant::now();
    f();
    let once = start.elapsed().max(Duration::from_nanos(100));
    let batch = u32::try_from((Duration::from_millis(100).as_nanos() / once.as_nanos()).max(1))
        .unwrap_or(u32::MAX);
    let mut samples: Vec<Duration> = (0..9)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..batch {
                f();
            }
            start.elapsed() / batch
        })
        .collect();
    samples.sort();
    samples[samples.len() / 2]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn gpg(home: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("gpg")
        .env("GNUPGHOME", home)
        .current_dir(home)
        .args([
            "--batch",
            "--no-tty",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ])
        .args(args)
        .output()
        .expect("gpg runs (conformance/peers/setup_gnupg.sh installs it)");
    assert!(
        out.status.success(),
        "gpg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
