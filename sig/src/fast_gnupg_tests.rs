//! The fast paths against rpgp, on signatures and keys GnuPG makes: the RSA path (ring) and the
//! continued element hash (SHA-256 signatures by Ed25519 keys and subkeys, and by RSA keys ring
//! does not take) must give the same verdict on valid, tampered-document, tampered-signature,
//! tampered-left-16-bits and wrong-key cases (RSA with SHA-256, SHA-384 and SHA-512), and the
//! cases neither takes (SHA-224, SHA-512 with Ed25519, a text-mode signature) rpgp's verdict.
//!
//! Unit tests (not in `tests/`) because they compare with the crate's internal paths. GnuPG is
//! installed by `conformance/peers/setup_gnupg.sh`; without it they fail, naming the script.

use std::ops::Range;

use pgp::composed::{ArmorOptions, Deserializable, DetachedSignature, SignedPublicKey};
use pgp::ser::Serialize;
use pgp::types::{KeyDetails, SignatureBytes};
use vtp_core::message::{self, Message};
use vtp_testkit::gpg::Gpg;

use crate::fast::{self, Fast, RsaKey};
use crate::verify::{Path, verify_by};
use crate::{Keyring, Status};
use vtp_core::ElementHash;

const GCN: &[u8] = include_bytes!("../../core/tests/data/gcn_swift_bat.xml");

/// Verifies by both paths, and by the fastest continuing the element's hash, asserts they
/// agree (the same status, reason aside for `invalid`), and returns the status and whether the
/// fast path gave it (without the element's hash).
fn both(keyring: &Keyring, signed: &[u8], armour: &str) -> (Status, bool) {
    let (status, by_fast, _, _) = all(keyring, signed, armour);
    (status, by_fast)
}

/// [`both`], and whether the continued hash gave the verdict, and its status.
fn all(keyring: &Keyring, signed: &[u8], armour: &str) -> (Status, bool, bool, Status) {
    let mut by_fast = false;
    let fastest = verify_by(keyring, signed, armour, None, Path::Fastest, &mut by_fast);
    let mut rpgp_by_fast = false;
    let rpgp = verify_by(keyring, signed, armour, None, Path::Rpgp, &mut rpgp_by_fast);
    assert!(!rpgp_by_fast);
    let element = ElementHash::of(signed);
    let mut by_continued = false;
    let continued = verify_by(
        keyring,
        signed,
        armour,
        Some(&element),
        Path::Fastest,
        &mut by_continued,
    );
    // Only a signature the RSA path does not take continues the hash.
    let by_continued = by_continued && !by_fast;
    for (name, other) in [("fast", &fastest), ("continued", &continued)] {
        assert_eq!(other.kind(), rpgp.kind(), "{name}: {other}; rpgp: {rpgp}");
        if !matches!(other, Status::Invalid(_)) {
            assert_eq!(other, &rpgp, "{name}");
        }
    }
    (fastest, by_fast, by_continued, continued)
}

/// Where the first byte of the left 16 bits of the hash is, from the packet's end: before the
/// signature's MPIs (each with its 2-byte length).
fn left16_from_end(signature: &DetachedSignature) -> usize {
    match signature.signature.signature() {
        Some(SignatureBytes::Mpis(mpis)) => {
            mpis.iter().map(|m| 2 + m.as_ref().len()).sum::<usize>() + 2
        }
        other => panic!("not an MPI signature: {other:?}"),
    }
}

fn element() -> Range<usize> {
    match message::parse(GCN, &Default::default()) {
        Ok(Message::VoEvent(ev)) => ev.element,
        other => panic!("not an event: {other:?}"),
    }
}

/// The armour with one byte of the signature packet changed: `at` counts from the packet's end.
fn tamper_signature(armour: &str, from_end: impl Fn(&DetachedSignature) -> usize) -> String {
    let signature = DetachedSignature::from_string(armour).expect("armour").0;
    let mut bytes = signature.to_bytes().expect("serialises");
    let at = bytes.len() - from_end(&signature);
    bytes[at] ^= 0x01;
    DetachedSignature::from_bytes(&bytes[..])
        .expect("still a signature packet")
        .to_armored_string(ArmorOptions::default())
        .expect("armours")
}

fn keyring(gpg: &Gpg, key: &str) -> Keyring {
    Keyring::load(&[gpg.export(key, true)]).expect("keyring")
}

/// Every RSA case of a GnuPG key, by both paths.
fn rsa_ladder(gpg: &Gpg, key: &str) {
    let keyring = keyring(gpg, key);
    let element = element();
    let document = &GCN[element];
    for digest in ["SHA256", "SHA384", "SHA512"] {
        let armour = gpg.detach_sign(key, document, &["--digest-algo", digest]);
        // Valid.
        let (status, by_fast) = both(&keyring, document, &armour);
        assert_eq!(status.name(), "valid", "{digest}: {status}");
        assert!(
            by_fast,
            "{digest}: the fast path takes a GnuPG RSA signature"
        );
        // A byte of the document changed.
        let mut tampered = document.to_vec();
        tampered[100] ^= 0x20;
        let (status, by_fast) = both(&keyring, &tampered, &armour);
        assert_eq!(status.name(), "invalid", "{digest}: {status}");
        assert!(by_fast);
        // The RSA value's last bit flipped: the left 16 bits match, the RSA check fails.
        let bad_value = tamper_signature(&armour, |_| 1);
        let (status, by_fast) = both(&keyring, document, &bad_value);
        assert_eq!(status.name(), "invalid", "{digest}: {status}");
        assert!(by_fast);
        assert!(status.to_string().contains("RSA"), "{status}");
        // The left 16 bits of the hash changed: refused before the RSA operation.
        let bad_left16 = tamper_signature(&armour, left16_from_end);
        let (status, by_fast) = both(&keyring, document, &bad_left16);
        assert_eq!(status.name(), "invalid", "{digest}: {status}");
        assert!(by_fast);
        assert!(status.to_string().contains("16 bits"), "{status}");
    }
    // Not taken by the fast path, rpgp's verdict: SHA-224, a text-mode signature.
    for extra in [&["--digest-algo", "SHA224"][..], &["--textmode"]] {
        let armour = gpg.detach_sign(key, document, extra);
        let (status, by_fast) = both(&keyring, document, &armour);
        assert_eq!(status.name(), "valid", "{extra:?}: {status}");
        assert!(!by_fast, "{extra:?}");
    }
}

#[test]
fn fast_path_agrees_with_rpgp_on_gnupg_rsa2048_and_rsa3072() {
    let gpg = Gpg::new();
    for algo in ["rsa2048", "rsa3072"] {
        let key = gpg.gen_key(&format!("{algo} <{algo}@example.org>"), algo, "");
        rsa_ladder(&gpg, &key);
    }
}

#[test]
fn fast_path_agrees_with_rpgp_for_a_signing_subkey() {
    let gpg = Gpg::new();
    let key = gpg.gen_key("Subkey <sub@example.org>", "rsa2048", "");
    // GnuPG signs with the newest signing subkey.
    gpg.run_ok(&[
        "--passphrase",
        "",
        "--quick-add-key",
        &key,
        "rsa2048",
        "sign",
        "never",
    ]);
    let keyring = keyring(&gpg, &key);
    let document = &GCN[element()];
    let armour = gpg.detach_sign(&key, document, &[]);
    let (status, by_fast) = both(&keyring, document, &armour);
    match status {
        Status::Valid { fingerprint, .. } => assert_eq!(fingerprint.as_str(), key),
        other => panic!("{other}"),
    }
    assert!(by_fast);
}

#[test]
fn a_wrong_rsa_key_is_refused_by_both() {
    let gpg = Gpg::new();
    let signer = gpg.gen_key("Signer <signer@example.org>", "rsa2048", "");
    let other = gpg.gen_key("Other <other@example.org>", "rsa2048", "");
    let document = &GCN[element()];
    let armour = gpg.detach_sign(&signer, document, &["--digest-algo", "SHA512"]);
    let signature = DetachedSignature::from_string(&armour).expect("armour").0;
    let public = |key: &str| {
        let bytes = gpg.run_ok(&["--export", key]).stdout;
        SignedPublicKey::from_bytes(&bytes[..]).expect("public key")
    };
    let (signer, other) = (public(&signer), public(&other));
    let rsa = |key: &SignedPublicKey| RsaKey::new(&key.primary_key).expect("2048-bit RSA");
    assert_eq!(
        fast::verify(&rsa(&signer), &signature.signature, document),
        Fast::Valid
    );
    assert_eq!(
        fast::verify(&rsa(&other), &signature.signature, document),
        Fast::Invalid("RSA signature does not verify")
    );
    signature
        .verify(&signer.primary_key, document)
        .expect("rpgp: valid with the signer's key");
    signature
        .verify(&other.primary_key, document)
        .expect_err("rpgp: not with another key");
    // In a keyring, the other key is not the issuer: unknown-key by both paths.
    let keyring = keyring(&gpg, &format!("{:X}", other.primary_key.fingerprint()));
    let (status, by_fast) = both(&keyring, document, &armour);
    assert_eq!(status.name(), "unknown-key", "{status}");
    assert!(!by_fast);
}

/// Every Ed25519 case of a GnuPG key: a SHA-256 signature continues the element's hash, any
/// other gets rpgp's own hashing; the verdicts are rpgp's.
fn ed25519_ladder(gpg: &Gpg, key: &str, keyring: &Keyring) {
    let document = &GCN[element()];
    // GnuPG's default digest for Ed25519 is SHA-256; say it anyway.
    let armour = gpg.detach_sign(key, document, &["--digest-algo", "SHA256"]);
    let (status, _, continued, _) = all(keyring, document, &armour);
    assert_eq!(status.name(), "valid", "{status}");
    assert!(continued, "a SHA-256 Ed25519 signature continues the hash");
    // A byte of the document changed (the element's hash is of the changed bytes).
    let mut tampered = document.to_vec();
    tampered[100] ^= 0x20;
    let (status, _, continued, _) = all(keyring, &tampered, &armour);
    assert_eq!(status.name(), "invalid", "{status}");
    assert!(continued);
    // S's last bit flipped: the left 16 bits match, Ed25519 refuses.
    let bad_value = tamper_signature(&armour, |_| 1);
    let (status, _, continued, _) = all(keyring, document, &bad_value);
    assert_eq!(status.name(), "invalid", "{status}");
    assert!(continued);
    // The left 16 bits changed: refused before the curve.
    let bad_left16 = tamper_signature(&armour, left16_from_end);
    let (status, _, continued, by_hash) = all(keyring, document, &bad_left16);
    assert_eq!(status.name(), "invalid", "{status}");
    assert!(continued);
    assert!(by_hash.to_string().contains("16 bits"), "{by_hash}");
    // Not continued, rpgp's verdict: SHA-512, SHA-224 (too short for Ed25519, rpgp says), a
    // text-mode signature.
    for (extra, expected) in [
        (&["--digest-algo", "SHA512"][..], "valid"),
        (&["--digest-algo", "SHA224"], "invalid"),
        (&["--textmode"], "valid"),
    ] {
        let armour = gpg.detach_sign(key, document, extra);
        let (status, _, continued, _) = all(keyring, document, &armour);
        assert_eq!(status.name(), expected, "{extra:?}: {status}");
        assert!(!continued, "{extra:?}");
    }
}

#[test]
fn a_continued_hash_agrees_with_rpgp_on_gnupg_ed25519_keys_and_subkeys() {
    let gpg = Gpg::new();
    let key = gpg.gen_key("Ed <ed@example.org>", "ed25519", "");
    ed25519_ladder(&gpg, &key, &keyring(&gpg, &key));
    // A signing subkey (GnuPG signs with the newest).
    gpg.run_ok(&[
        "--passphrase",
        "",
        "--quick-add-key",
        &key,
        "ed25519",
        "sign",
        "never",
    ]);
    ed25519_ladder(&gpg, &key, &keyring(&gpg, &key));
    // Another key in the keyring is not the issuer: unknown-key, nothing verified.
    let other = gpg.gen_key("Other <other-ed@example.org>", "ed25519", "");
    let armour = gpg.detach_sign(&key, &GCN[element()], &[]);
    let (status, _, continued, _) = all(&keyring(&gpg, &other), &GCN[element()], &armour);
    assert_eq!(status.name(), "unknown-key", "{status}");
    assert!(!continued);
}

#[test]
fn rsa_signatures_keep_the_ring_path_when_a_hash_is_given() {
    let gpg = Gpg::new();
    let key = gpg.gen_key("R <r@example.org>", "rsa2048", "");
    let ring_key = keyring(&gpg, &key);
    let document = &GCN[element()];
    let armour = gpg.detach_sign(&key, document, &["--digest-algo", "SHA256"]);
    let (status, by_fast, continued, _) = all(&ring_key, document, &armour);
    assert_eq!(status.name(), "valid", "{status}");
    assert!(by_fast && !continued);
    // A 1024-bit RSA key is not ring's: its SHA-256 signature continues the hash (rpgp's
    // `rsa` crate checks the digest).
    let small = gpg.gen_key("S <s@example.org>", "rsa1024", "");
    let armour = gpg.detach_sign(&small, document, &["--digest-algo", "SHA256"]);
    let (status, by_fast, continued, _) = all(&keyring(&gpg, &small), document, &armour);
    assert_eq!(status.name(), "valid", "{status}");
    assert!(!by_fast && continued);
}

#[test]
fn keys_the_fast_path_does_not_take_get_rpgp_verdicts() {
    let gpg = Gpg::new();
    let document = &GCN[element()];
    for algo in ["rsa1024", "ed25519"] {
        let key = gpg.gen_key(&format!("{algo} <{algo}@example.org>"), algo, "");
        let keyring = keyring(&gpg, &key);
        let armour = gpg.detach_sign(&key, document, &[]);
        let (status, by_fast) = both(&keyring, document, &armour);
        assert!(!by_fast, "{algo}");
        assert_eq!(status.name(), "valid", "{algo}: {status}");
        let mut tampered = document.to_vec();
        tampered[100] ^= 0x20;
        let (status, by_fast) = both(&keyring, &tampered, &armour);
        assert!(!by_fast, "{algo}");
        assert_eq!(status.name(), "invalid", "{algo}: {status}");
    }
}
