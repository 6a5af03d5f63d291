use proptest::prelude::*;

use super::*;
use crate::message::{self, Message};

const ARMOUR: &str = "-----BEGIN PGP SIGNATURE-----\n\n\
iHUEABYIAB0WIQQG+HCHgTu88opgQXdQhoGPsaD98gUCaxZbdgAKCRBQhoGPsaD9\n\
8sL3AP9E6Z7Dk111BK/RUOwvTP0U+SQQVDykJjTyQqySOl0xHQD+Ip/mPl53+C6X\n\
CAvuPQBahJqEQX6xGzntgvQIJ6JjhAQ=\n=fbTN\n-----END PGP SIGNATURE-----";

const EVENT: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- before -->\n\
<voe:VOEvent xmlns:voe=\"http://www.ivoa.net/xml/VOEvent/v2.0\" \
ivorn=\"ivo://example.org/s#1\" role=\"test\" version=\"2.0\"><!-- inside --><Who/></voe:VOEvent>\n";

fn element(payload: &[u8]) -> Range<usize> {
    match message::parse(payload, &Default::default()) {
        Ok(Message::VoEvent(ev)) => ev.element,
        other => panic!("not an event: {other:?}"),
    }
}

fn signed(payload: &[u8]) -> Signed {
    match extract(payload, element(payload)) {
        Extracted::Signed(s) => s,
        other => panic!("not signed: {other:?}"),
    }
}

/// The root element's span, found by text (for payloads the parser would refuse).
fn span_of(payload: &str) -> Range<usize> {
    let end_tag = "</voe:VOEvent>";
    payload.find("<voe:VOEvent").unwrap()..payload.find(end_tag).unwrap() + end_tag.len()
}

fn malformed(payload: &str) -> Malformed {
    match extract(payload.as_bytes(), span_of(payload)) {
        Extracted::Malformed(m) => m,
        other => panic!("not malformed: {other:?}"),
    }
}

fn with_comment(comment: &str) -> String {
    format!("{EVENT}<!--{comment}-->\n")
}

#[test]
fn an_appended_signature_is_found_and_leaves_the_element_alone() {
    let payload = EVENT.as_bytes();
    let span = element(payload);
    let out = append_signature(payload, span.clone(), &format!("\n{ARMOUR}\n")).unwrap();
    let text = std::str::from_utf8(&out).unwrap();
    assert!(
        text.contains("\n<!--\n=====BEGIN PGP SIGNATURE=====\n"),
        "{text}"
    );
    assert!(!text.contains("-----"));
    // The parser accepts it, and the element is where it was, byte for byte.
    assert_eq!(element(&out), span);
    assert_eq!(out[span.clone()], payload[span.clone()]);
    let found = signed(&out);
    assert_eq!(found.armour, ARMOUR);
    assert_eq!(found.signed, span);
    // Removing the comment gives back the original payload.
    let removed = [&out[..found.comment.start - 1], &out[found.comment.end..]].concat();
    assert_eq!(removed, payload);
}

#[test]
fn an_unsigned_event_is_unsigned_whatever_its_other_comments() {
    let payload = format!("{EVENT}<!-- a note --><?pi x?>\n <!-- another -->");
    assert_eq!(
        extract(payload.as_bytes(), element(payload.as_bytes())),
        Extracted::Unsigned
    );
    // A signature-looking comment inside the element is signed content, not a signature.
    let inside = EVENT.replace(
        "<!-- inside -->",
        &format!("<!--\n{}\n-->", ARMOUR.replace("-----", "=====")),
    );
    assert_eq!(
        extract(inside.as_bytes(), element(inside.as_bytes())),
        Extracted::Unsigned
    );
}

#[test]
fn crlf_armour_is_accepted() {
    let crlf = ARMOUR.replace('\n', "\r\n");
    let out = append_signature(EVENT.as_bytes(), element(EVENT.as_bytes()), &crlf).unwrap();
    assert_eq!(signed(&out).armour, crlf);
}

#[test]
fn every_malformed_case_has_its_reason() {
    let sub = ARMOUR.replace("-----", "=====");
    let two = format!("{EVENT}<!--\n{sub}\n-->\n<!--\n{sub}\n-->");
    assert_eq!(malformed(&two), Malformed::TwoSignatures);
    let before = EVENT.replace("<!-- before -->", &format!("<!--\n{sub}\n-->"));
    assert_eq!(malformed(&before), Malformed::BeforeRoot);
    let huge = sub.replace(
        "\n=fbTN",
        &format!("\n{}\n=fbTN", "A".repeat(COMMENT_LEN_MAX)),
    );
    assert_eq!(malformed(&with_comment(&huge)), Malformed::TooLong);
    assert_eq!(
        malformed(&with_comment(&sub.replace("iHUE", "iHUÉ"))),
        Malformed::NotAscii
    );
    assert_eq!(
        malformed(&with_comment(&sub.replace("iHUE", "iH\u{1}E"))),
        Malformed::NotAscii
    );
    for broken in [
        "BEGIN PGP SIGNATURE".to_owned(),
        sub.replace("=====END PGP SIGNATURE=====", ""),
        sub.replace("=====BEGIN", "==BEGIN"),
        format!("x{sub}"),
        format!("{sub}\n{sub}"),
        sub.replace(
            "=====BEGIN PGP SIGNATURE=====",
            "=====BEGIN PGP MESSAGE=====\nBEGIN PGP SIGNATURE",
        ),
    ] {
        assert_eq!(
            malformed(&with_comment(&broken)),
            Malformed::Framing,
            "{broken}"
        );
    }
}

#[test]
fn odd_ranges_and_surroundings_are_malformed_not_panics() {
    let p = EVENT.as_bytes();
    let span = element(p);
    for range in [
        0..0,
        span.start..span.end - 1,
        span.start + 1..span.end,
        span.end..span.start,
        0..p.len() + 1,
    ] {
        assert_eq!(
            extract(p, range.clone()),
            Extracted::Malformed(Malformed::ElementRange),
            "{range:?}"
        );
    }
    let text_after = format!("{EVENT}junk");
    assert_eq!(
        extract(text_after.as_bytes(), span.clone()),
        Extracted::Malformed(Malformed::Outside)
    );
    let open_comment = format!("{EVENT}<!-- never closed");
    assert_eq!(
        extract(open_comment.as_bytes(), span.clone()),
        Extracted::Malformed(Malformed::Unterminated)
    );
    let open_pi = format!("{EVENT}<?pi");
    assert_eq!(
        extract(open_pi.as_bytes(), span),
        Extracted::Malformed(Malformed::Unterminated)
    );
}

#[test]
fn append_refuses_what_it_cannot_carry() {
    let p = EVENT.as_bytes();
    let span = element(p);
    let once = append_signature(p, span.clone(), ARMOUR).unwrap();
    assert_eq!(
        append_signature(&once, span.clone(), ARMOUR),
        Err(AppendError::Malformed(Malformed::AlreadySigned))
    );
    for bad in [
        "",
        "not armour",
        &ARMOUR.replace("\n\n", "\nComment: a -- b\n\n"),
        &ARMOUR.replace("\n\n", "\nComment: =====\n\n"),
        &ARMOUR.replace("\n\n", "\nComment: -->\n\n"),
        &ARMOUR.replace("\n\n", "\nComment: é\n\n"),
        &ARMOUR.replace("SIGNATURE", "MESSAGE"),
    ] {
        assert!(
            matches!(
                append_signature(p, span.clone(), bad),
                Err(AppendError::Armour(_))
            ),
            "{bad}"
        );
    }
    assert_eq!(
        append_signature(p, 0..1, ARMOUR),
        Err(AppendError::Malformed(Malformed::ElementRange))
    );
}

#[test]
fn status_names_are_stable() {
    let names: Vec<&str> = StatusKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "valid",
            "invalid",
            "unknown-key",
            "unsigned",
            "malformed",
            "invalid-signer"
        ]
    );
}

/// Armour-like text: a BEGIN line, headers and base64 lines from a small alphabet that
/// includes `-`, `=` and spaces, an END line.
fn armour_text() -> impl Strategy<Value = String> {
    let line = "[A-Za-z0-9+/= :.-]{0,70}";
    (
        proptest::collection::vec(line, 0..4),
        proptest::collection::vec("[A-Za-z0-9+/=]{1,64}", 1..8),
        prop::bool::ANY,
    )
        .prop_map(|(headers, body, crlf)| {
            let mut lines = vec!["-----BEGIN PGP SIGNATURE-----".to_owned()];
            lines.extend(headers.into_iter().map(|h| format!("Comment: {h}")));
            lines.push(String::new());
            lines.extend(body);
            lines.push("-----END PGP SIGNATURE-----".to_owned());
            lines.join(if crlf { "\r\n" } else { "\n" })
        })
}

proptest! {
    /// Whatever the armour, append either refuses it or extract gives it back exactly, the
    /// element unchanged and the payload still parsing to the same element.
    #[test]
    fn append_then_extract_round_trips(armour in armour_text(), tail in "[ \n]{0,3}(<!-- x -->)?") {
        let payload = format!("{EVENT}{tail}");
        let span = element(payload.as_bytes());
        match append_signature(payload.as_bytes(), span.clone(), &armour) {
            Ok(out) => {
                prop_assert_eq!(element(&out), span.clone());
                prop_assert_eq!(&out[span.clone()], &payload.as_bytes()[span.clone()]);
                let found = signed(&out);
                prop_assert_eq!(found.armour, armour);
                prop_assert_eq!(found.signed, span);
            }
            Err(e) => {
                // Only armour the comment cannot carry is refused.
                let sub = armour.replace("-----", "=====");
                prop_assert!(
                    sub.contains("--") || sub.replace("=====", "-----") != armour
                        || sub.lines().skip(1).filter(|l| l.starts_with("=====BEGIN") || l.starts_with("=====END")).count() > 1,
                    "{e}: {armour:?}"
                );
            }
        }
    }

    /// Arbitrary bytes and ranges never panic extract or append.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), a in 0usize..600, b in 0usize..600) {
        let _ = extract(&bytes, a..b);
        let _ = append_signature(&bytes, a..b, ARMOUR);
    }

    /// Bytes around a real element: any result, never a panic, and a signature found lies
    /// after the element.
    #[test]
    fn arbitrary_surroundings_never_panic(head in "[ <!->?=a-zA-Z\n]{0,64}", tail in proptest::collection::vec(any::<u8>(), 0..256)) {
        let core_event = &EVENT[EVENT.find("<voe:").unwrap()..EVENT.len() - 1];
        let payload = [head.as_bytes(), core_event.as_bytes(), &tail].concat();
        let span = head.len()..head.len() + core_event.len();
        if let Extracted::Signed(s) = extract(&payload, span.clone()) {
            prop_assert!(s.comment.start >= span.end && s.comment.end <= payload.len());
            prop_assert!(s.armour.len() <= COMMENT_LEN_MAX);
        }
    }
}

const FP_A: &str = "0123456789ABCDEF0123456789ABCDEF01234567";
const FP_B: &str = "89ABCDEF0123456789ABCDEF0123456789ABCDEF";

fn bind(prefix: &str, fp: &str) -> AuthorKey {
    AuthorKey::parse(&format!("{prefix}={fp}")).unwrap()
}

#[test]
fn author_keys_parse_as_gpg_prints_fingerprints_and_refuse_the_rest_with_a_reason() {
    let k = AuthorKey::parse(
        "ivo://nasa.gsfc.gcn/SWIFT = 0123 4567 89ab cdef 0123  4567 89AB CDEF 0123 4567",
    )
    .unwrap();
    assert_eq!(k.prefix, "ivo://nasa.gsfc.gcn/SWIFT");
    assert_eq!(k.fingerprint, FP_A);
    for (bad, says) in [
        ("ivo://a.b/c", "IVO_PREFIX=FINGERPRINT"),
        (
            "http://a.b/c=0123456789ABCDEF0123456789ABCDEF01234567",
            "must start with ivo://",
        ),
        (
            "ivo://=0123456789ABCDEF0123456789ABCDEF01234567",
            "must start with ivo://",
        ),
        ("ivo://a.b/c=0123", "40 (v4) or 64 (v6)"),
        (
            "ivo://a.b/c=0123456789ABCDEF0123456789ABCDEF0123456G",
            "hexadecimal",
        ),
    ] {
        let e = AuthorKey::parse(bad).unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn a_prefix_covers_its_own_streams_only() {
    let k = bind("ivo://nasa.gsfc.gcn/SWIFT", FP_A);
    assert!(k.covers("ivo://nasa.gsfc.gcn/SWIFT"));
    assert!(k.covers("ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_1"));
    assert!(k.covers("ivo://nasa.gsfc.gcn/SWIFT/sub#1"));
    assert!(!k.covers("ivo://nasa.gsfc.gcn/SWIFTX#1"));
    assert!(!k.covers("ivo://nasa.gsfc.gcn/Fermi#1"));
    let authority = bind("ivo://nasa.gsfc.gcn/", FP_A);
    assert!(authority.covers("ivo://nasa.gsfc.gcn/Fermi#1"));
}

#[test]
fn bindings_refuse_impersonation_both_ways() {
    let bindings = [bind("ivo://nasa.gsfc.gcn/SWIFT", FP_A)];
    // The bound key on its stream; anyone's key on unbound streams.
    assert!(check_binding(&bindings, "ivo://nasa.gsfc.gcn/SWIFT#1", FP_A).is_ok());
    assert!(check_binding(&bindings, "ivo://other.org/x#1", FP_B).is_ok());
    assert!(check_binding(&[], "ivo://nasa.gsfc.gcn/SWIFT#1", FP_B).is_ok());
    // Another key on the bound stream, and the bound key elsewhere.
    let e = check_binding(&bindings, "ivo://nasa.gsfc.gcn/SWIFT#1", FP_B).unwrap_err();
    assert!(
        e.contains("may not sign for ivo://nasa.gsfc.gcn/SWIFT"),
        "{e}"
    );
    let e = check_binding(&bindings, "ivo://other.org/x#1", FP_A).unwrap_err();
    assert!(
        e.contains("may sign only for ivo://nasa.gsfc.gcn/SWIFT"),
        "{e}"
    );
    // Two keys bound to one stream: either signs.
    let two = [bind("ivo://a.b/c", FP_A), bind("ivo://a.b/c", FP_B)];
    assert!(check_binding(&two, "ivo://a.b/c#1", FP_B).is_ok());
}

#[test]
fn status_of_walks_convention_verifier_and_bindings() {
    use crate::testing::{DigestSigner, DigestVerifier};
    let payload = EVENT.as_bytes();
    let span = element(payload);
    let ivorn = "ivo://example.org/s#1";
    let verifier = DigestVerifier {
        keys: vec![(FP_A.into(), "Alice <a@example.org>".into())],
    };
    let v: Option<&dyn Verifier> = Some(&verifier);
    assert_eq!(
        status_of(payload, span.clone(), None, ivorn, v, &[]),
        Signature::unsigned()
    );
    let sign = |fp: &str, bytes: &[u8]| {
        let armour = DigestSigner::new(fp).armour(&bytes[span.clone()]);
        append_signature(bytes, span.clone(), &armour).unwrap()
    };
    let good = sign(FP_A, payload);
    let s = status_of(&good, span.clone(), None, ivorn, v, &[]);
    assert_eq!(s.status, StatusKind::Valid);
    assert_eq!(&*s.signer.as_ref().unwrap().fingerprint, FP_A);
    assert_eq!(
        s.to_string(),
        format!("valid ({FP_A} \"Alice <a@example.org>\")")
    );
    // No verifier: unknown key, saying why.
    let s = status_of(&good, span.clone(), None, ivorn, None, &[]);
    assert_eq!(s.status, StatusKind::UnknownKey);
    assert!(s.to_string().contains("no trusted keys"), "{s}");
    // An unknown key, a tampered element, a malformed comment, a refused binding.
    let s = status_of(&sign(FP_B, payload), span.clone(), None, ivorn, v, &[]);
    assert_eq!(s.status, StatusKind::UnknownKey);
    let mut tampered = good.clone();
    let at = span.start + 20;
    tampered[at] ^= 1;
    let s = status_of(&tampered, span.clone(), None, ivorn, v, &[]);
    assert_eq!(s.status, StatusKind::Invalid);
    let broken = with_comment(" BEGIN PGP SIGNATURE but nothing else ");
    let s = status_of(broken.as_bytes(), span.clone(), None, ivorn, v, &[]);
    assert_eq!(s.status, StatusKind::Malformed);
    let s = status_of(
        &good,
        span.clone(),
        None,
        ivorn,
        v,
        &[bind("ivo://example.org/s", FP_B)],
    );
    assert_eq!(s.status, StatusKind::InvalidSigner);
    assert!(
        s.to_string()
            .starts_with(&format!("invalid-signer ({FP_A}")),
        "{s}"
    );
}
