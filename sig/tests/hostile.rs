//! Hostile armour for the verifier: whatever a peer puts in a signature comment (the armour's
//! base64, its checksum, its packets, its length), `verify` returns one of the statuses an
//! armour can have (`malformed`, `unknown-key`, `invalid`) and never panics. The convention's
//! own parser is fuzzed in the core (`signature_extract`); this covers rpgp's decoding behind
//! it. (`sig/tests/gnupg.rs` damages signatures whose key is trusted, so the cryptography runs
//! on the damaged values too.)

use proptest::prelude::*;
use vtp_sig::{Keyring, Status, verify};

/// A real detached Ed25519 signature, as `gpg --detach-sign --armor` writes it (its key is not
/// in any keyring here: untouched, it is `unknown-key`).
const ARMOUR: &str = "-----BEGIN PGP SIGNATURE-----\n\n\
iHUEABYIAB0WIQQG+HCHgTu88opgQXdQhoGPsaD98gUCaxZbdgAKCRBQhoGPsaD9\n\
8sL3AP9E6Z7Dk111BK/RUOwvTP0U+SQQVDykJjTyQqySOl0xHQD+Ip/mPl53+C6X\n\
CAvuPQBahJqEQX6xGzntgvQIJ6JjhAQ=\n=fbTN\n-----END PGP SIGNATURE-----";

const SIGNED: &[u8] = b"<VOEvent ivorn=\"ivo://a.b/c#1\" role=\"test\"/>";

fn name(status: &Status) -> &'static str {
    status.name()
}

/// What an armour without a trusted key can be.
fn possible(status: &Status) -> bool {
    matches!(name(status), "malformed" | "unknown-key" | "invalid")
}

#[test]
fn the_untouched_signature_is_unknown_key_without_its_key() {
    assert_eq!(
        name(&verify(&Keyring::new(), SIGNED, ARMOUR)),
        "unknown-key"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Bytes of the armour's body replaced by any printable character.
    #[test]
    fn a_changed_armour_has_a_status_and_never_panics(
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0x20u8..0x7f), 1..8)
    ) {
        let mut bytes = ARMOUR.as_bytes().to_vec();
        let body = "-----BEGIN PGP SIGNATURE-----\n\n".len()..bytes.len() - "\n-----END PGP SIGNATURE-----".len();
        for (at, b) in edits {
            let i = body.start + at.index(body.len());
            bytes[i] = b;
        }
        let armour = String::from_utf8(bytes).expect("ASCII");
        let status = verify(&Keyring::new(), SIGNED, &armour);
        prop_assert!(possible(&status), "{status}");
    }

    /// The armour cut anywhere, or followed by anything.
    #[test]
    fn a_cut_or_extended_armour_never_panics(cut in 0usize..400, tail in "[ -~\n]{0,200}") {
        let cut = cut.min(ARMOUR.len());
        let armour = format!("{}{tail}", &ARMOUR[..cut]);
        let status = verify(&Keyring::new(), SIGNED, &armour);
        prop_assert!(possible(&status), "{status}");
    }

    /// Any base64 between the armour lines: packets of any kind and length.
    #[test]
    fn any_base64_body_never_panics(body in "[A-Za-z0-9+/]{0,600}={0,2}", crc in "[A-Za-z0-9+/]{4}") {
        let armour = format!(
            "-----BEGIN PGP SIGNATURE-----\n\n{body}\n={crc}\n-----END PGP SIGNATURE-----"
        );
        let status = verify(&Keyring::new(), SIGNED, &armour);
        prop_assert!(possible(&status), "{status}");
    }
}
