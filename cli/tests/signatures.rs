//! OpenPGP signatures end to end, with the real peers: GnuPG (Debian's `gnupg`, installed by
//! `conformance/peers/setup_gnupg.sh`) makes the keys and signs a real GCN notice by the
//! Comet manual's convention; `vtp broker` verifies it, requires it, forwards it byte-exact to
//! Comet 3.1.0 and pygcn 1.1.3 subscribers (for whom the comment is invisible) and hands the
//! status to `--cmd`; `comet-sendvo` submits unsigned and signed events; `gpg --verify`
//! verifies what `vtp send --sign-key` signs. Nothing is skipped: a missing peer fails the
//! test, naming its setup script.

#![allow(clippy::unwrap_used)]

mod peers;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use peers::*;
use support::*;
use vtp_core::message::{self, Message};
use vtp_core::signature::{Extracted, append_signature, extract};
use vtp_testkit::gpg::Gpg;

const GCN: &[u8] = include_bytes!("../../core/tests/data/gcn_swift_bat.xml");

fn element(payload: &[u8]) -> std::ops::Range<usize> {
    match message::parse(payload, &Default::default()) {
        Ok(Message::VoEvent(ev)) => ev.element,
        other => panic!("not an event: {other:?}"),
    }
}

fn ivorn_of(payload: &[u8]) -> String {
    match message::parse(payload, &Default::default()) {
        Ok(Message::VoEvent(ev)) => ev.ivorn.into_owned(),
        other => panic!("not an event: {other:?}"),
    }
}

/// `payload` signed by gpg with `key`, by the convention.
fn gpg_signed(gpg: &Gpg, key: &str, payload: &[u8]) -> Vec<u8> {
    let span = element(payload);
    let armour = gpg.detach_sign(key, &payload[span.clone()], &[]);
    append_signature(payload, span, &armour).unwrap()
}

/// The GCN notice with another IVORN (a new event for the broker).
fn gcn_as(ivorn: &str) -> Vec<u8> {
    let text = String::from_utf8(GCN.to_vec()).unwrap();
    let old = ivorn_of(GCN);
    text.replacen(&old, ivorn, 1).into_bytes()
}

fn write(dir: &TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Waits for the broker's "accepted event IVORN ... signature=STATUS" line; returns it.
fn accepted_line(b: &Broker, ivorn: &str) -> String {
    let said = format!("accepted event {ivorn} from");
    b.proc.log.wait_for(&said, |l| l.contains(&said))
}

#[test]
fn gnupg_signatures_are_verified_tampering_inside_is_invalid_outside_is_not() {
    let gpg = Gpg::new();
    let ed = gpg.gen_key("GCN test Ed25519 <ed25519@example.org>", "ed25519", "");
    let rsa = gpg.gen_key("GCN test RSA <rsa@example.org>", "rsa2048", "");
    let unknown = gpg.gen_key("Not trusted <nobody@example.org>", "ed25519", "");
    let trusted = [gpg.export(&ed, true), gpg.export(&rsa, false)];
    let b = Broker::start(
        "sig1",
        &[
            "--broadcast-test-interval",
            "0",
            "--trusted-keys",
            trusted[0].to_str().unwrap(),
            "--trusted-keys",
            trusted[1].to_str().unwrap(),
        ],
    );
    b.proc.log.wait_for("start line", |l| {
        l.contains("signatures: verify, 2 trusted keys")
    });
    let files = TempDir::new("sig1-files");
    let cases: Vec<(&str, Vec<u8>, String)> = {
        let ed_signed = gpg_signed(&gpg, &ed, &gcn_as("ivo://nasa.gsfc.gcn/SWIFT#sig1-ed"));
        let mut tampered = gpg_signed(&gpg, &ed, &gcn_as("ivo://nasa.gsfc.gcn/SWIFT#sig1-tamper"));
        let span = element(&tampered);
        // The first digit of Who/Date: still a valid VOEvent, no longer the signed one.
        let at = span.start
            + tampered[span]
                .windows(6)
                .position(|w| w == b"<Date>")
                .unwrap()
            + 6;
        tampered[at] = if tampered[at] == b'1' { b'2' } else { b'1' };
        // Outside the element: the XML declaration's encoding name, in another case.
        let mut outside = gpg_signed(
            &gpg,
            &rsa,
            &gcn_as("ivo://nasa.gsfc.gcn/SWIFT#sig1-outside"),
        );
        let at = outside.windows(5).position(|w| w == b"UTF-8").unwrap();
        outside[at..at + 5].copy_from_slice(b"utf-8");
        vec![
            ("valid", ed_signed, format!("signature=valid ({ed} ")),
            (
                "rsa",
                gpg_signed(&gpg, &rsa, &gcn_as("ivo://nasa.gsfc.gcn/SWIFT#sig1-rsa")),
                format!("signature=valid ({rsa} \"GCN test RSA <rsa@example.org>\")"),
            ),
            (
                "tampered",
                tampered,
                "signature=invalid: bad signature".into(),
            ),
            ("outside", outside, format!("signature=valid ({rsa} ")),
            (
                "unknown",
                gpg_signed(
                    &gpg,
                    &unknown,
                    &gcn_as("ivo://nasa.gsfc.gcn/SWIFT#sig1-unknown"),
                ),
                format!("signature=unknown-key: key {unknown} is not trusted"),
            ),
            (
                "unsigned",
                gcn_as("ivo://nasa.gsfc.gcn/SWIFT#sig1-unsigned"),
                "signature=unsigned".into(),
            ),
        ]
    };
    for (name, bytes, expect) in &cases {
        let file = write(&files, &format!("{name}.xml"), bytes);
        let (code, err) = vtp_send(b.receive, &file, &[]);
        // --signatures verify refuses nothing.
        assert_eq!(code, Some(0), "{name}: {err}");
        let line = accepted_line(&b, &ivorn_of(bytes));
        assert!(
            line.contains(expect.as_str()),
            "{name}: expected {expect:?} in\n{line}"
        );
    }
}

#[test]
fn require_naks_unsigned_comet_sendvo_and_forwards_signed_events_to_comet_and_pygcn() {
    let gpg = Gpg::new();
    let key = gpg.gen_key("GCN test Ed25519 <ed25519@example.org>", "ed25519", "");
    let trusted = gpg.export(&key, true);
    let dir = TempDir::new("sig2");
    let env_out = dir.path().join("env.txt");
    let script = write(
        &dir,
        "env.sh",
        format!(
            "#!/bin/sh\necho \"$VTP_SIGNATURE $VTP_SIGNER $VTP_SIGNER_UID\" >> {}\n",
            env_out.display()
        )
        .as_bytes(),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let b = Broker::start(
        "sig2",
        &[
            "--broadcast-test-interval",
            "0",
            "--author-whitelist",
            "127.0.0.0/8",
            "--subscriber-whitelist",
            "127.0.0.0/8",
            "--signatures",
            "require",
            "--trusted-keys",
            trusted.to_str().unwrap(),
            "--cmd",
            script.to_str().unwrap(),
        ],
    );
    let comet = CometSubscriber::start("sig2-comet-sub", b.broadcast, &[]);
    let pygcn = Pygcn::start("sig2-pygcn", b.broadcast);

    let unsigned = write(&dir, "unsigned.xml", GCN);
    let (code, out) = comet_sendvo(b.receive, &unsigned);
    assert_eq!(code, Some(1), "comet-sendvo of an unsigned event:\n{out}");
    assert!(
        out.contains("a valid OpenPGP signature is required; this event's signature is unsigned"),
        "comet-sendvo prints vtp's reason:\n{out}"
    );
    let signed_bytes = gpg_signed(&gpg, &key, GCN);
    let signed = write(&dir, "signed.xml", &signed_bytes);
    let (code, out) = comet_sendvo(b.receive, &signed);
    assert_eq!(code, Some(0), "comet-sendvo of a signed event:\n{out}");
    // Byte-exact, signature comment included; both peers process it as usual.
    assert!(comet.received(1) == signed_bytes, "Comet got other bytes");
    assert!(pygcn.received(1) == signed_bytes, "pygcn got other bytes");
    // The handler saw the status and the signer.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(&env_out).unwrap_or_default();
        if !text.is_empty() {
            assert_eq!(
                text,
                format!("valid {key} GCN test Ed25519 <ed25519@example.org>\n")
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "--cmd did not run:\n{}",
            b.proc.log.text()
        );
        std::thread::park_timeout(std::time::Duration::from_millis(20));
    }
    // The refused event was not recorded, nor forwarded: nothing before the signed one.
    assert!(!comet.raw.join("2.xml").exists());
}

#[test]
fn gpg_verifies_what_vtp_send_signs_and_a_broker_signs_its_test_events() {
    let gpg = Gpg::new();
    let key = gpg.gen_key("vtp author <author@example.org>", "ed25519", "secret words");
    let secret = gpg.export_secret(&key, "secret words");
    let dir = TempDir::new("sig3");
    let pass = write(&dir, "pass", b"secret words\n");
    let saved = dir.path().join("saved");
    let b = Broker::start(
        "sig3",
        &[
            "--broadcast-test-interval",
            "0",
            "--save-event-directory",
            saved.to_str().unwrap(),
        ],
    );
    let file = write(&dir, "gcn.xml", GCN);
    // A wrong passphrase is refused before anything is sent, saying what to do.
    let wrong = write(&dir, "wrong", b"other words\n");
    let send_signed = |passphrase: &Path| {
        let passphrase = passphrase.to_str().unwrap();
        let args = [
            "--sign-key",
            secret.to_str().unwrap(),
            "--sign-passphrase-file",
            passphrase,
        ];
        vtp_send(b.receive, &file, &args)
    };
    let (code, err) = send_signed(&wrong);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot unlock the secret key"), "{err}");
    let (code, err) = send_signed(&pass);
    assert_eq!(code, Some(0), "{err}");
    // What the broker received and saved, gpg verifies: the element against the armour.
    let deadline = std::time::Instant::now() + WAIT;
    let saved_file = loop {
        if let Some(f) = std::fs::read_dir(&saved).ok().and_then(|mut d| d.next()) {
            break f.unwrap().path();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not saved:\n{}",
            b.proc.log.text()
        );
        std::thread::park_timeout(std::time::Duration::from_millis(20));
    };
    let received = std::fs::read(&saved_file).unwrap();
    let span = element(&received);
    assert_eq!(
        &received[span.clone()],
        &GCN[element(GCN)],
        "the element is unchanged"
    );
    let Extracted::Signed(found) = extract(&received, span) else {
        panic!("not signed:\n{}", String::from_utf8_lossy(&received));
    };
    let (ok, status) = gpg.verify(&received[found.signed], &found.armour);
    assert!(
        ok && status.contains(&format!("[GNUPG:] VALIDSIG {key}")),
        "{status}"
    );

    // A broker with --sign-key signs the test events it sends; a listener with the key trusted
    // finds them valid.
    let trusted = gpg.export(&key, true);
    let b = Broker::start(
        "sig3-signing",
        &[
            "--broadcast-test-interval",
            "1",
            "--sign-key",
            secret.to_str().unwrap(),
            "--sign-passphrase-file",
            pass.to_str().unwrap(),
        ],
    );
    let listener = Proc::spawn("sig3-listen", {
        let mut c = Command::new(VTP);
        c.args([
            "listen",
            &format!("127.0.0.1:{}", b.broadcast),
            "--stdout",
            "jsonl",
        ])
        .args(["--trusted-keys", trusted.to_str().unwrap()]);
        c
    });
    let line = listener
        .log
        .wait_for("a test event in jsonl", |l| l.contains("\"role\":\"test\""));
    assert!(
        line.contains(&format!("\"signature\":\"valid\",\"signer\":\"{key}\"")),
        "{line}"
    );
}

#[test]
fn bad_signature_options_are_refused_at_start_with_what_to_do() {
    let gpg = Gpg::new();
    let key = gpg.gen_key("k <k@example.org>", "ed25519", "");
    let trusted = gpg.export(&key, true);
    let secret = gpg.export_secret(&key, "");
    let run = |args: &[&str]| {
        let out = Command::new(VTP)
            .args([
                "broker",
                "--local-ivo",
                "ivo://vtp.test/b",
                "--receive",
                "127.0.0.1:0",
            ])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let other = "0123456789ABCDEF0123456789ABCDEF01234567";
    for (args, says) in [
        (
            vec!["--signatures", "require"],
            "--signatures require needs --trusted-keys FILE",
        ),
        (
            vec!["--trusted-keys", secret.to_str().unwrap()],
            "a secret key; export the public key with gpg --export",
        ),
        (
            vec!["--trusted-keys", "/nonexistent/keys.asc"],
            "/nonexistent/keys.asc: cannot read",
        ),
        (
            vec![
                "--trusted-keys",
                trusted.to_str().unwrap(),
                "--author-key",
                &format!("ivo://nasa.gsfc.gcn/SWIFT={other}"),
            ],
            "no key with this fingerprint in --trusted-keys",
        ),
        (
            vec!["--author-key", "ivo://a.b/c"],
            "is not IVO_PREFIX=FINGERPRINT",
        ),
    ] {
        let (code, err) = run(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: expected {says:?} in {err}");
    }
}

#[test]
fn a_key_bound_to_its_stream_cannot_sign_for_another() {
    let gpg = Gpg::new();
    let swift = gpg.gen_key("Swift <swift@example.org>", "ed25519", "");
    let fermi = gpg.gen_key("Fermi <fermi@example.org>", "ed25519", "");
    let both = gpg.export(&swift, true);
    let fermi_file = gpg.export(&fermi, true);
    let b = Broker::start(
        "sig5",
        &[
            "--broadcast-test-interval",
            "0",
            "--signatures",
            "require",
            "--trusted-keys",
            both.to_str().unwrap(),
            "--trusted-keys",
            fermi_file.to_str().unwrap(),
            "--author-key",
            &format!("ivo://nasa.gsfc.gcn/SWIFT={swift}"),
            "--author-key",
            &format!("ivo://nasa.gsfc.gcn/Fermi={fermi}"),
        ],
    );
    let dir = TempDir::new("sig5-files");
    // Fermi's key signing a Swift notice: a valid signature, refused as impersonation.
    let forged = write(
        &dir,
        "forged.xml",
        &gpg_signed(&gpg, &fermi, &gcn_as("ivo://nasa.gsfc.gcn/SWIFT#sig5-1")),
    );
    let (code, err) = vtp_send(b.receive, &forged, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("signature is invalid-signer: key"), "{err}");
    let good = write(
        &dir,
        "good.xml",
        &gpg_signed(&gpg, &swift, &gcn_as("ivo://nasa.gsfc.gcn/SWIFT#sig5-1")),
    );
    let (code, err) = vtp_send(b.receive, &good, &[]);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn sighup_reads_the_trusted_keys_again() {
    let gpg = Gpg::new();
    let old = gpg.gen_key("Old <old@example.org>", "ed25519", "");
    let new = gpg.gen_key("New <new@example.org>", "ed25519", "");
    let old_file = gpg.export(&old, true);
    let new_file = gpg.export(&new, true);
    let dir = TempDir::new("sig6");
    let text = |files: &[&Path]| {
        let list: Vec<String> = files
            .iter()
            .map(|f| format!("{:?}", f.display().to_string()))
            .collect();
        format!(
            "local-ivo = \"ivo://vtp.test/sig6\"\n\
             receive = [\"127.0.0.1:0\"]\n\
             broadcast = [\"127.0.0.1:0\"]\n\
             broadcast-test-interval = 0\n\
             signatures = \"require\"\n\
             trusted-keys = [{}]\n",
            list.join(", ")
        )
    };
    let b = start_configured("sig6", "tokio", &dir, &text(&[&old_file]));
    let event = write(
        &dir,
        "new.xml",
        &gpg_signed(&gpg, &new, &gcn_as("ivo://nasa.gsfc.gcn/SWIFT#sig6-1")),
    );
    let (code, err) = vtp_send(b.receive, &event, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("unknown-key: key {new} is not trusted")),
        "{err}"
    );
    // The new key trusted, the old one no longer.
    reload_config(&b, &dir, &text(&[&new_file]), 1, false);
    b.proc.log.wait_for("the new keyring", |l| {
        l.contains("configuration reloaded") && l.contains("(1 trusted keys)")
    });
    let (code, err) = vtp_send(b.receive, &event, &[]);
    assert_eq!(code, Some(0), "{err}");
    let by_old = write(
        &dir,
        "old.xml",
        &gpg_signed(&gpg, &old, &gcn_as("ivo://nasa.gsfc.gcn/SWIFT#sig6-2")),
    );
    let (code, err) = vtp_send(b.receive, &by_old, &[]);
    assert_eq!(code, Some(1), "{err}");
    // A key file that no longer loads: the reload is refused, the running keys stay.
    std::fs::write(&new_file, b"not a key").unwrap();
    reload_config(&b, &dir, &text(&[&new_file]), 1, true);
    let again = write(
        &dir,
        "new2.xml",
        &gpg_signed(&gpg, &new, &gcn_as("ivo://nasa.gsfc.gcn/SWIFT#sig6-3")),
    );
    let (code, err) = vtp_send(b.receive, &again, &[]);
    assert_eq!(code, Some(0), "{err}");
}
