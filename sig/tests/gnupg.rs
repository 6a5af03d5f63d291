//! GnuPG as the independent peer: it makes the keys (RSA-2048 and Ed25519, as GnuPG 2.2
//! makes them) and signs a real GCN notice by the convention; vtp verifies; and GnuPG
//! verifies what vtp's [`Signer`] signs.
//!
//! GnuPG is installed by `conformance/peers/setup_gnupg.sh` (also run by `setup.sh`); these
//! tests never skip: without gpg they fail, naming the script.

use std::fs;
use std::ops::Range;

use vtp_core::message::{self, Message};
use vtp_core::signature::{StatusKind, append_signature};
use vtp_sig::{InvalidReason, Keyring, LoadError, Reason, Signer, Status, verify_payload};
use vtp_testkit::gpg::Gpg;

const GCN: &[u8] = include_bytes!("../../core/tests/data/gcn_swift_bat.xml");

#[test]
fn gnupg_ed25519_signature_is_valid_and_tampering_inside_is_invalid() {
    let gpg = Gpg::new();
    let key = gpg.gen_key("GCN test Ed25519 <ed25519@example.org>", "ed25519", "");
    check_peer_signature(&gpg, &key);
}

#[test]
fn gnupg_rsa2048_signature_is_valid_and_tampering_inside_is_invalid() {
    let gpg = Gpg::new();
    let key = gpg.gen_key("GCN test RSA <rsa@example.org>", "rsa2048", "");
    check_peer_signature(&gpg, &key);
}

/// The whole ladder for one key signed by gpg.
fn check_peer_signature(gpg: &Gpg, key: &str) {
    let element = element(GCN);
    let armour = gpg.detach_sign(key, &GCN[element.clone()], &[]);
    let signed = append_signature(GCN, element.clone(), &armour).expect("signable");
    // Binary and armoured exports both load.
    for armoured in [true, false] {
        let keyring = keyring(gpg, key, armoured);
        match verify_payload(&keyring, &signed, element.clone()) {
            Status::Valid {
                fingerprint,
                user_id,
            } => {
                assert_eq!(fingerprint.as_str(), key);
                assert!(user_id.starts_with("GCN test"), "{user_id}");
            }
            other => panic!("expected valid: {other}"),
        }
    }
    let keyring = keyring(gpg, key, true);

    // The signature itself damaged, with its key trusted (so the crypto runs on the damaged
    // values): a character of the armour's base64 changed, 300 times over. Never a panic;
    // valid only where the change falls in what OpenPGP leaves unsigned (the unhashed issuer
    // key id, the armour checksum, which RFC 9580 says not to insist on), and then still as
    // this key's; most changes are invalid or malformed.
    let body = armour.find("\n\n").expect("armour header") + 2
        ..armour.rfind("\n=").expect("armour checksum");
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    let (mut tried, mut refused) = (0, 0);
    while tried < 300 {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let i = body.start + (seed >> 33) as usize % body.len();
        let mut damaged = armour.clone().into_bytes();
        let new = alphabet[(seed >> 20) as usize % alphabet.len()];
        if damaged[i] == b'\n' || damaged[i] == new {
            continue;
        }
        damaged[i] = new;
        tried += 1;
        let damaged = String::from_utf8(damaged).expect("ASCII");
        match vtp_sig::verify(&keyring, &GCN[element.clone()], &damaged) {
            Status::Valid { fingerprint, .. } => assert_eq!(fingerprint.as_str(), key),
            _ => refused += 1,
        }
    }
    assert!(
        refused >= 200,
        "only {refused} of {tried} damaged signatures refused"
    );

    // A byte inside the element (in a parameter's value): invalid.
    let mut inside = signed.clone();
    let at = find(&inside, b"value=\"61\"") + 7;
    inside[at] = b'7';
    let status = verify_payload(&keyring, &inside, element.clone());
    assert_eq!(status.name(), "invalid", "{status}");

    // A byte outside the element (in the XML declaration): still valid.
    let mut outside = signed.clone();
    let at = find(&outside, b"encoding = 'UTF-8'") + 12;
    outside[at] = b'u';
    assert!(matches!(
        message::parse(&outside, &Default::default()),
        Ok(Message::VoEvent(_))
    ));
    let status = verify_payload(&keyring, &outside, element.clone());
    assert_eq!(status.name(), "valid", "{status}");

    // The unsigned original, and another key's keyring.
    assert_eq!(
        verify_payload(&keyring, GCN, element.clone()),
        Status::Unsigned
    );
    let status = verify_payload(&Keyring::new(), &signed, element.clone());
    assert_eq!(status.kind(), StatusKind::UnknownKey, "{status}");
    match status {
        Status::UnknownKey(id) => assert_eq!(id.as_str(), key),
        other => panic!("{other}"),
    }
}

#[test]
fn gnupg_sha1_and_md5_free_zone() {
    let gpg = Gpg::new();
    let key = gpg.gen_key("GCN test RSA <rsa@example.org>", "rsa2048", "");
    let keyring = keyring(&gpg, &key, true);
    let element = element(GCN);
    let armour = gpg.detach_sign(&key, &GCN[element.clone()], &["--digest-algo", "SHA1"]);
    let signed = append_signature(GCN, element.clone(), &armour).expect("signable");
    let status = verify_payload(&keyring, &signed, element.clone());
    assert_eq!(
        status,
        Status::Invalid(InvalidReason::WeakHash("SHA1".to_owned()))
    );
    assert!(
        status.to_string().contains("SHA1 signatures are refused"),
        "{status}"
    );
    // SHA-256, asked for explicitly, is fine.
    let armour = gpg.detach_sign(&key, &GCN[element.clone()], &["--digest-algo", "SHA256"]);
    let signed = append_signature(GCN, element.clone(), &armour).expect("signable");
    assert_eq!(verify_payload(&keyring, &signed, element).name(), "valid");
}

#[test]
fn gnupg_verifies_what_our_signer_signs() {
    let gpg = Gpg::new();
    for (uid, algo, passphrase) in [
        ("vtp Ed25519 <ed@example.org>", "ed25519", ""),
        ("vtp RSA <rsa@example.org>", "rsa2048", "correct horse"),
    ] {
        let key = gpg.gen_key(uid, algo, passphrase);
        let secret = gpg.export_secret(&key, passphrase);
        if !passphrase.is_empty() {
            let wrong = Signer::load(&secret, "wrong").expect_err("wrong passphrase");
            assert!(wrong.to_string().contains("cannot unlock"), "{wrong}");
        }
        let signer = Signer::load(&secret, passphrase).expect("signer");
        assert_eq!(signer.fingerprint().as_str(), key);

        let element = element(GCN);
        let armour = signer.sign(&GCN[element.clone()]).expect("signed");
        let signed = append_signature(GCN, element.clone(), &armour).expect("signable");
        // gpg verifies the element against the armour, substitution undone.
        let found = match vtp_core::signature::extract(&signed, element.clone()) {
            vtp_core::signature::Extracted::Signed(found) => found,
            other => panic!("{other:?}"),
        };
        let (ok, status) = gpg.verify(&signed[found.signed.clone()], &found.armour);
        assert!(
            ok && status.contains("[GNUPG:] GOODSIG"),
            "{algo}: {status}"
        );
        // VALIDSIG <fpr> <date> <time> <expiry> <version> <reserved> <pk-algo> <hash-algo> ...
        let validsig = |status: &str| -> Vec<String> {
            status
                .lines()
                .find_map(|l| l.strip_prefix("[GNUPG:] VALIDSIG "))
                .expect("VALIDSIG line")
                .split(' ')
                .map(str::to_owned)
                .collect()
        };
        let ours = validsig(&status);
        assert_eq!(ours[0], key);
        // The digest is GnuPG's own choice for the key: SHA-256 (8) for Ed25519, SHA-512 (10)
        // for RSA.
        let gpg_armour =
            gpg.detach_sign(&key, &GCN[element.clone()], &["--passphrase", passphrase]);
        let (gpg_ok, gpg_status) = gpg.verify(&GCN[element.clone()], &gpg_armour);
        assert!(gpg_ok, "{gpg_status}");
        let want = if algo == "ed25519" { "8" } else { "10" };
        assert_eq!(
            validsig(&gpg_status)[7],
            want,
            "{algo}: gpg's own: {gpg_status}"
        );
        assert_eq!(ours[7], want, "{algo}: digest: {status}");
        // And we agree.
        let keyring = keyring(&gpg, &key, true);
        assert_eq!(verify_payload(&keyring, &signed, element).name(), "valid");
    }
}

#[test]
fn key_files_over_a_bound_are_refused_clearly() {
    let gpg = Gpg::new();
    let key = gpg.gen_key("Many <many@example.org>", "ed25519", "");
    let binary = gpg.run_ok(&["--export", &key]).stdout;
    // Thousands of keys (the same key 2,000 times, 0.3 MB): refused at the 257th.
    let many = binary.repeat(2_000);
    let err = Keyring::new()
        .add("many.gpg", &many)
        .expect_err("too many keys");
    assert!(
        matches!(
            err,
            LoadError::Key {
                reason: Reason::TooManyKeys,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.to_string(), "many.gpg: more than 256 keys");
    // A file over 1 MiB is refused before parsing.
    let huge = vec![0x99u8; 2 * 1024 * 1024];
    let err = Keyring::new().add("huge.gpg", &huge).expect_err("too long");
    assert!(
        matches!(
            err,
            LoadError::Key {
                reason: Reason::FileTooLong,
                ..
            }
        ),
        "{err}"
    );
    // A huge user id.
    let long_uid = format!("{} <long@example.org>", "x".repeat(1_500));
    let long = gpg.gen_key(&long_uid, "ed25519", "");
    let file = gpg.home.path().join("long.asc");
    fs::write(&file, gpg.run_ok(&["--export", "--armor", &long]).stdout)
        .expect("file in the gpg home");
    let err = Keyring::load(&[&file]).expect_err("long user id");
    assert!(
        matches!(
            err,
            LoadError::Key {
                reason: Reason::UserIdTooLong(_),
                ..
            }
        ),
        "{err}"
    );
    // Not a key, a secret key, a missing file: each its own error.
    let err = Keyring::new().add("junk", b"hello").expect_err("junk");
    assert!(err.to_string().starts_with("junk: "), "{err}");
    let secret = fs::read(gpg.export_secret(&key, "")).expect("file in the gpg home");
    let err = Keyring::new()
        .add("secret.asc", &secret)
        .expect_err("secret");
    assert!(
        matches!(
            err,
            LoadError::Key {
                reason: Reason::SecretKey,
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        Keyring::load(&["/nonexistent/key.asc"]),
        Err(LoadError::Io { .. })
    ));
}

// ------------------------------------------------------------------------------ helpers

fn element(payload: &[u8]) -> Range<usize> {
    match message::parse(payload, &Default::default()) {
        Ok(Message::VoEvent(ev)) => ev.element,
        other => panic!("not an event: {other:?}"),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("present")
}

/// A keyring with this key alone, from `gpg --export [--armor]`.
fn keyring(gpg: &Gpg, key: &str, armoured: bool) -> Keyring {
    Keyring::load(&[gpg.export(key, armoured)]).expect("keyring")
}
