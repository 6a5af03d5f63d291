//! Tests of IVOID checking: identifiers Comet accepts and how they split, Comet's table of
//! rejections, the wording of every error and nak reason, and a property test that parsing is
//! total and lossless.

use super::*;

/// `(input, authority, resource key, marker, local id)` for identifiers Comet accepts.
const GOOD: &[(&str, &str, Option<&str>, bool, &str)] = &[
    (
        "ivo://ca.chimenet.frb/FRB-DETECTION-#2022-11-19-02:12:43.164293UTC+0000_ae104a28a784",
        "ca.chimenet.frb",
        Some("/FRB-DETECTION-"),
        true,
        "2022-11-19-02:12:43.164293UTC+0000_ae104a28a784",
    ),
    (
        "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_532871-729",
        "nasa.gsfc.gcn",
        Some("/SWIFT"),
        true,
        "BAT_GRB_Pos_532871-729",
    ),
    ("ivo://auth/rsrc+x", "auth", Some("/rsrc"), false, "+x"),
    ("ivo://auth:8080/x", "auth", None, false, ":8080/x"),
    ("ivo://a.b#x", "a.b", None, true, "x"),
    ("ivo://authreskey#local", "authreskey", None, true, "local"),
    ("ivo://auth/rsrc", "auth", Some("/rsrc"), false, ""),
    ("ivo://auth/rsrc#", "auth", Some("/rsrc"), true, ""),
    ("ivo://auth", "auth", None, false, ""),
    ("ivo://auth#", "auth", None, true, ""),
    ("ivo://123/rsrc#local", "123", Some("/rsrc"), true, "local"),
    (
        "ivo://nasa.heasarc/rsrc#local",
        "nasa.heasarc",
        Some("/rsrc"),
        true,
        "local",
    ),
    (
        "ivo://n_1a.alph-0.02/rsrc#local",
        "n_1a.alph-0.02",
        Some("/rsrc"),
        true,
        "local",
    ),
    (
        "ivo://auth/reskey#local",
        "auth",
        Some("/reskey"),
        true,
        "local",
    ),
    (
        "ivo://auth/user/STScI_1/1a-7z.u#local",
        "auth",
        Some("/user/STScI_1/1a-7z.u"),
        true,
        "local",
    ),
    (
        "ivo://auth~*'()/r~*'()._-/x#l",
        "auth~*'()",
        Some("/r~*'()._-/x"),
        true,
        "l",
    ),
    (
        "ivo://auth/rsrc#local/ID/with/slashes",
        "auth",
        Some("/rsrc"),
        true,
        "local/ID/with/slashes",
    ),
    (
        "ivo://auth/rsrc#-._~%!$&'()*+,;=:@/?",
        "auth",
        Some("/rsrc"),
        true,
        "-._~%!$&'()*+,;=:@/?",
    ),
    // A `#` right after a slash-free run: the local ID may start with `/`.
    ("ivo://auth#/x", "auth", None, true, "/x"),
    // `..` and `.` as the last segment are not followed by `/`, so Comet accepts them.
    ("ivo://auth/data/..#x", "auth", Some("/data/.."), true, "x"),
    ("ivo://auth/.#x", "auth", Some("/."), true, "x"),
    // Unicode letters after the first authority character (Python's `\w` is Unicode).
    ("ivo://aé中/Müller#ß", "aé中", Some("/Müller"), true, "ß"),
    ("ivo://abc/rsrc#%41", "abc", Some("/rsrc"), true, "%41"),
    // `DAT%41` without a `#` anywhere parses, as authority `DAT` and local ID `%41`.
    ("ivo://DAT%41", "DAT", None, false, "%41"),
];

#[test]
fn good_identifiers_split_like_comet() {
    for &(input, auth, rsrc, marker, local) in GOOD {
        let id = Ivoid::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(id.as_str(), input);
        assert_eq!(id.authority(), auth, "{input}");
        assert_eq!(id.resource_key(), rsrc, "{input}");
        assert_eq!(id.has_fragment_marker(), marker, "{input}");
        assert_eq!(id.local_id(), local, "{input}");
        assert_eq!(id.to_string(), input);
    }
}

/// Comet's own table tests (`test_voevent.py`): `ivo://{auth}{rsrc}#{local}` must fail.
#[test]
fn comet_table_rejections() {
    let bad_auth = [
        "a2",
        "au",
        "_temporary.id",
        "DAT%41",
        "de!uni-hd!physics#ari",
    ];
    for auth in bad_auth {
        let input = format!("ivo://{auth}/rsrc#local");
        assert!(Ivoid::parse(&input).is_err(), "{input}");
    }
    for ch in "!?;:@&$,+=%<>#\"`{}|\\^[]".chars() {
        for input in [
            format!("ivo://auth{ch}/rsrc#local"),
            format!("ivo://{ch}auth/rsrc#local"),
            format!("ivo://auth/rsrc{ch}#local"),
            format!("ivo://auth/{ch}rsrc#local"),
        ] {
            assert!(Ivoid::parse(&input).is_err(), "{input}");
        }
    }
    let bad_rsrc = [
        "/",
        "/data/",
        "/data//other",
        "/data/c/../d",
        "/data!g-vo.org",
        "/user/M%fcller",
        "/rsrc/",
    ];
    for rsrc in bad_rsrc {
        let input = format!("ivo://auth{rsrc}#local");
        assert!(Ivoid::parse(&input).is_err(), "{input}");
    }
    for ch in [
        '#', '[', ']', ' ', '"', '<', '>', '\\', '^', '`', '{', '|', '}',
    ] {
        for input in [
            format!("ivo://auth/rsrc#local{ch}"),
            format!("ivo://auth/rsrc#{ch}local"),
        ] {
            assert!(Ivoid::parse(&input).is_err(), "{input}");
        }
    }
    for input in ["ivo://#localID", "ivo:///resourceKey#", "ivo://", ""] {
        assert!(Ivoid::parse(input).is_err(), "{input:?}");
    }
}

#[test]
fn errors_name_the_problem() {
    use AuthorityProblem as A;
    use IvoidError as E;
    use ResourceKeyProblem as R;
    let auth = |at, problem| E::BadAuthority { at, problem };
    let rsrc = |at, problem| E::BadResourceKey { at, problem };
    let cases: &[(&str, IvoidError)] = &[
        ("IVO://auth/rsrc#x", E::NotIvoScheme),
        ("ivo:/auth/rsrc#x", E::NotIvoScheme),
        ("http://auth/rsrc#x", E::NotIvoScheme),
        ("ivo://", auth(6, A::BadFirstChar(None))),
        (
            "ivo://_temporary.id/r#x",
            auth(6, A::BadFirstChar(Some('_'))),
        ),
        ("ivo://éab/r#x", auth(6, A::BadFirstChar(Some('é')))),
        ("ivo://a2/r#x", auth(6, A::TooShort { chars: 2 })),
        ("ivo://a2", auth(6, A::TooShort { chars: 2 })),
        ("ivo://DAT%41/rsrc#local", auth(9, A::BadChar('%'))),
        ("ivo://auth:8080/x#y", auth(10, A::BadChar(':'))),
        ("ivo://auth/", rsrc(10, R::TrailingSlash)),
        ("ivo://auth/#x", rsrc(10, R::TrailingSlash)),
        ("ivo://auth/data/#x", rsrc(15, R::TrailingSlash)),
        ("ivo://auth/data//other#x", rsrc(15, R::EmptySegment)),
        ("ivo://auth/data/c/../d#x", rsrc(17, R::DotSegment)),
        ("ivo://auth/./d#x", rsrc(10, R::DotSegment)),
        // Rejected, not re-split as `/rsrc` + `/+x`.
        ("ivo://auth/rsrc/+x", rsrc(15, R::TrailingSlash)),
        ("ivo://auth/data!g-vo.org#x", rsrc(15, R::BadChar('!'))),
        ("ivo://auth/user/M%fcller#x", rsrc(17, R::BadChar('%'))),
        ("ivo://auth/rsrc#lo cal", E::BadLocalId { ch: ' ', at: 18 }),
        ("ivo://auth/rsrc#a#b", E::BadLocalId { ch: '#', at: 17 }),
        ("ivo://auth/rsrc#[x]", E::BadLocalId { ch: '[', at: 16 }),
        ("ivo://auth/rsrc\"x", E::BadLocalId { ch: '"', at: 15 }),
        // Our decision against Python's `$` quirk: no trailing newline.
        ("ivo://a.b/c#x\n", E::BadLocalId { ch: '\n', at: 13 }),
        ("ivo://auth/rsrc\n", E::BadLocalId { ch: '\n', at: 15 }),
    ];
    for (input, want) in cases {
        assert_eq!(Ivoid::parse(input).as_ref(), Err(want), "{input:?}");
    }
}

#[test]
fn error_messages_say_what_and_how() {
    let e = Ivoid::parse("ivo://a2/r#x").expect_err("too short");
    assert_eq!(
        e.to_string(),
        "bad IVOID authority at byte 6: it has 2 character(s); it needs at least 3 \
         (letters, digits, `_-.~*'()`)"
    );
    let e = Ivoid::parse("ivo://auth/data//x#y").expect_err("empty segment");
    assert_eq!(
        e.to_string(),
        "bad IVOID resource key at byte 15: it contains `//`; remove the empty segment"
    );
    let e = Ivoid::parse("ivo://auth/r#a b").expect_err("space");
    assert!(
        e.to_string()
            .starts_with("bad IVOID local ID: ' ' at byte 14"),
        "{e}"
    );
}

#[test]
fn event_ivorn_needs_a_local_id() {
    let ok =
        check_event_ivorn("ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_532871-729").expect("GCN IVORN");
    assert_eq!(ok.local_id(), "BAT_GRB_Pos_532871-729");
    assert_eq!(
        check_event_ivorn("ivo://auth/rsrc+x").map(|i| i.local_id()),
        Ok("+x")
    );
    for input in ["ivo://auth/rsrc", "ivo://auth/rsrc#", "ivo://auth"] {
        assert_eq!(
            check_event_ivorn(input),
            Err(EventIdError::NoLocalId),
            "{input}"
        );
    }
    let bad = "ivo://auth/rsrc/#x";
    let err = check_event_ivorn(bad).expect_err("trailing slash");
    assert!(matches!(
        err,
        EventIdError::Invalid(IvoidError::BadResourceKey { .. })
    ));
}

#[test]
fn nak_reasons_match_comet_byte_for_byte() {
    let bad = "ivo://au/x#y";
    let err = check_event_ivorn(bad).expect_err("short authority");
    assert_eq!(
        err.nak_reason(bad).to_string(),
        "Invalid IVOID: ivo://au/x#y"
    );
    let none = check_event_ivorn("ivo://auth/rsrc#").expect_err("no local id");
    assert_eq!(
        none.nak_reason("ivo://auth/rsrc#").to_string(),
        "No per-event local ID"
    );
}

#[test]
fn invalid_display_does_not_repeat_its_source() {
    use std::error::Error as _;
    let err = check_event_ivorn("ivo://au/x#y").expect_err("short authority");
    let source = err.source().expect("Invalid has a source").to_string();
    assert!(!err.to_string().contains(&source));
    assert!(source.contains("at least 3"));
}

#[test]
fn class_table_matches_comet_classes() {
    let auth = |c: char| c.is_ascii_alphanumeric() || "_-.~*'()".contains(c);
    let rsrc = |c: char| auth(c) || c == '/';
    let local = |c: char| rsrc(c) || "+=%!$&,;:@?".contains(c);
    for b in 0u8..128 {
        let c = char::from(b);
        let bits = ASCII_CLASSES[usize::from(b)];
        assert_eq!(bits & AUTH != 0, auth(c), "{c:?}");
        assert_eq!(bits & RSRC != 0, rsrc(c), "{c:?}");
        assert_eq!(bits & LOCAL != 0, local(c), "{c:?}");
    }
}

proptest::proptest! {
    /// Parsing never panics, and a success always reassembles to the input.
    #[test]
    fn parse_is_total_and_lossless(s in "(ivo://)?[a-zA-Z0-9_/#.:+%!é ~\\-\n]{0,24}") {
        if let Ok(id) = Ivoid::parse(&s) {
            let mut rebuilt = String::from("ivo://");
            rebuilt.push_str(id.authority());
            rebuilt.push_str(id.resource_key().unwrap_or(""));
            if id.has_fragment_marker() {
                rebuilt.push('#');
            }
            rebuilt.push_str(id.local_id());
            proptest::prop_assert_eq!(rebuilt, s);
        }
    }
}
