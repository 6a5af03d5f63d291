//! Unit tests of the schema check. The differential test against lxml, over a corpus and a
//! table of values, is `core/tests/schema_diff.rs`.

use proptest::prelude::*;

use super::lexical::{is_any_uri, is_date_time, is_ncname, parse_float};
use super::{SchemaError, parse_and_validate, validate_voevent_2_0};
use crate::message::{Message, ParseLimits};

const V2: &str = "http://www.ivoa.net/xml/VOEvent/v2.0";
const GCN: &[u8] = include_bytes!("../../tests/data/gcn_swift_bat.xml");

/// Validates a whole payload that is one root element; where the parser accepts it as a
/// VOEvent, the single pass ([`parse_and_validate`]) must give the same verdict.
fn check(xml: &str) -> Result<(), SchemaError> {
    let limits = ParseLimits::default();
    let verdict = validate_voevent_2_0(xml.as_bytes(), 0..xml.len(), &limits);
    if let Ok(read) = parse_and_validate(xml.as_bytes(), &limits)
        && let Message::VoEvent(ev) = read.message
    {
        assert_eq!(ev.element, 0..xml.len(), "{xml}");
        assert_eq!(read.schema.as_ref(), Some(&verdict), "{xml}");
    }
    verdict
}

/// A packet with the given body, and `extra` attributes on the root.
fn packet(extra: &str, body: &str) -> String {
    format!(
        "<voe:VOEvent xmlns:voe=\"{V2}\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
         ivorn=\"ivo://a.b/c#d\" version=\"2.0\"{extra}>{body}</voe:VOEvent>"
    )
}

/// The span of the root element of a payload (from the first `<` of an element).
fn root_span(payload: &[u8]) -> std::ops::Range<usize> {
    let text = std::str::from_utf8(payload).expect("UTF-8 fixture");
    let start = text.find("<voe:VOEvent").expect("root start");
    let end = text.rfind("</voe:VOEvent>").expect("root end") + "</voe:VOEvent>".len();
    start..end
}

#[test]
fn gcn_fixture_is_valid() {
    let span = root_span(GCN);
    assert_eq!(
        validate_voevent_2_0(GCN, span, &ParseLimits::default()),
        Ok(())
    );
}

/// Every variant, reached by a packet, with the text it must show.
#[test]
fn one_row_per_error_variant() {
    let rows: [(String, &str); 18] = [
        (
            "<VOEvent xmlns=\"urn:x\" ivorn=\"a\" version=\"2.0\"/>".to_owned(),
            "root element {urn:x}VOEvent is not a VOEvent 2.0 packet",
        ),
        (
            packet("", "<Who><Foo/></Who>"),
            "element VOEvent/Who: unexpected child 'Foo' (expected one of AuthorIVORN, Date, \
             Description, Reference, Author)",
        ),
        (
            packet("", "<How><Description/></How><How/>"),
            "element VOEvent: child How appears more than once",
        ),
        (
            packet("", "<Who xmlns=\"urn:x\"/>"),
            "element VOEvent: child 'Who' is in namespace urn:x",
        ),
        (
            packet("", "<Who><p:Date/></Who>"),
            "element VOEvent/Who: namespace prefix 'p' is not declared",
        ),
        (
            packet(
                "",
                "<How><Reference uri=\"x\"><Reference uri=\"y\"/></Reference></How>",
            ),
            "element VOEvent/How/Reference: child elements are not allowed (the element must \
             be empty), found 'Reference'",
        ),
        (
            packet(
                "",
                "<Citations><EventIVORN/><Description/></Citations><Why/>",
            ),
            "element VOEvent/Why: missing a child (one of Name, Concept, Inference, \
             Description, Reference)",
        ),
        (
            packet("", "<Who>text</Who>"),
            "element VOEvent/Who: text 'text' is not allowed (only child elements and \
             whitespace may appear here)",
        ),
        (
            packet("", "<Who><Date>2024-13-01T00:00:00</Date></Who>"),
            "element VOEvent/Who/Date: '2024-13-01T00:00:00' is not a valid xs:dateTime",
        ),
        (
            "<voe:VOEvent xmlns:voe=\"http://www.ivoa.net/xml/VOEvent/v2.0\" ivorn=\"a\"/>"
                .to_owned(),
            "element VOEvent: attribute version is required",
        ),
        (
            packet(" lang=\"en\"", ""),
            "element VOEvent: attribute 'lang' is not allowed (allowed: version, ivorn, role)",
        ),
        (
            packet(" role=\"bogus\"", ""),
            "attribute role of VOEvent: 'bogus' is not one of observation, prediction, \
             utility, test (roleValues)",
        ),
        (
            packet(
                "",
                "<Who xsi:type=\"voe:What\" xmlns:voe=\"http://www.ivoa.net/xml/VOEvent/v2.0\"/>",
            ),
            "element VOEvent/Who: xsi:type 'voe:What' is not accepted (only the declared type \
             Who is",
        ),
        (
            packet("", "<Who xsi:nil=\"true\"/>"),
            "element VOEvent/Who: xsi:nil is not allowed",
        ),
        (
            packet(
                " xmlns:i2=\"http://www.w3.org/2001/XMLSchema-instance\"",
                "<Who xsi:schemaLocation=\"a\" i2:schemaLocation=\"b\"/>",
            ),
            "element VOEvent/Who: attribute {http://www.w3.org/2001/XMLSchema-instance}\
             schemaLocation appears more than once",
        ),
        (
            packet(
                "",
                "<Who><Date>2024-01-01T00:00:00.0000000000000000000000000000</Date></Who>",
            ),
            "element VOEvent/Who/Date: element text (bytes) exceeds the limit of 32",
        ),
        (
            "<voe:VOEvent xmlns:voe=\"http://www.ivoa.net/xml/VOEvent/v2.0\" ivorn=\"a\" \
             version=\"2.0\"><Who></voe:VOEvent>"
                .to_owned(),
            "malformed XML",
        ),
        (
            packet(" a1=\"1\" a2=\"2\" a3=\"3\"", ""),
            "element VOEvent: attribute 'a1' is not allowed",
        ),
    ];
    let limits = ParseLimits {
        text_max: 32,
        ..ParseLimits::default()
    };
    for (xml, want) in rows {
        let got = validate_voevent_2_0(xml.as_bytes(), 0..xml.len(), &limits)
            .expect_err(&xml)
            .to_string();
        assert!(got.contains(want), "{xml}\n  got  {got}\n  want {want}");
    }
}

#[test]
fn attributes_beyond_the_limit_are_refused() {
    let limits = ParseLimits {
        attrs_max: 2,
        ..ParseLimits::default()
    };
    let xml = packet("", "");
    let got = validate_voevent_2_0(xml.as_bytes(), 0..xml.len(), &limits).expect_err("3 > 2");
    assert!(matches!(got, SchemaError::TooLarge { max: 2, .. }), "{got}");
}

#[test]
fn a_span_outside_the_payload_is_an_error_not_a_panic() {
    let xml = packet("", "");
    let backwards = std::ops::Range { start: 5, end: 2 };
    for span in [
        0..xml.len() + 1,
        backwards,
        xml.len()..xml.len(),
        1..xml.len(),
    ] {
        let got = validate_voevent_2_0(xml.as_bytes(), span.clone(), &ParseLimits::default());
        assert!(got.is_err(), "{span:?}");
    }
}

#[test]
fn the_span_is_what_is_validated() {
    // Content around the element (declaration, comments) is not the element's business.
    let payload = format!(
        "<?xml version=\"1.0\"?>\n<!-- x -->{}\n<!-- y -->",
        packet("", "")
    );
    let span = root_span(payload.as_bytes());
    assert_eq!(
        validate_voevent_2_0(payload.as_bytes(), span, &ParseLimits::default()),
        Ok(())
    );
}

#[test]
fn values_in_a_legacy_encoding_are_decoded() {
    // ISO-8859-1 'é' (0xE9) in an NCName: a letter once decoded.
    let mut payload = b"<?xml version='1.0' encoding='ISO-8859-1'?>".to_vec();
    let start = payload.len();
    payload.extend_from_slice(packet("", "<WhereWhen id=\"caf\u{0}\"/>").as_bytes());
    let at = payload.iter().position(|&b| b == 0).expect("placeholder");
    payload[at] = 0xE9;
    let span = start..payload.len();
    assert_eq!(
        validate_voevent_2_0(&payload, span.clone(), &ParseLimits::default()),
        Ok(())
    );
    // The same byte read as (invalid) UTF-8 is a replacement character: not a name character.
    payload.drain(..start);
    let span = 0..payload.len();
    assert!(validate_voevent_2_0(&payload, span, &ParseLimits::default()).is_err());
}

#[test]
fn packet_with_every_section_is_valid() {
    // Structural smoke test of the common shapes: prefixed root, xsi hints, every section.
    let xml = packet(
        " role=\"observation\" xsi:schemaLocation=\"a b\"",
        "<Who><AuthorIVORN>ivo://a.b/c</AuthorIVORN><Date>2024-01-01T00:00:00</Date></Who>\
         <What><Param name=\"x\" value=\"1\" dataType=\"int\"/><Group><Param/></Group></What>\
         <WhereWhen><ObsDataLocation><ObservatoryLocation id=\"GEOLUN\"/><ObservationLocation>\
         <AstroCoordSystem id=\"UTC-FK5-GEO\"/><AstroCoords coord_system_id=\"UTC-FK5-GEO\">\
         <Time unit=\"s\"><TimeInstant><ISOTime>2024-01-01T00:00:00</ISOTime></TimeInstant>\
         </Time><Position2D unit=\"deg\"><Value2><C1>1.5</C1><C2>-2</C2></Value2>\
         <Error2Radius>0.1</Error2Radius></Position2D></AstroCoords></ObservationLocation>\
         </ObsDataLocation></WhereWhen><How><Description>d</Description></How>\
         <Why importance=\"1\"><Inference probability=\"0.5\"><Name>n</Name></Inference></Why>\
         <Citations><EventIVORN cite=\"followup\">ivo://a.b/c#e</EventIVORN></Citations>",
    );
    assert_eq!(check(&xml), Ok(()));
}

#[test]
fn date_time_follows_libxml2() {
    let valid = [
        "2024-01-01T00:00:00",
        "2024-01-01T00:00:00Z",
        "2024-01-01T00:00:00.123+14:00",
        "2024-01-01T24:00:00",
        "2000-02-29T00:00:00",
        "-0004-02-29T00:00:00",
        "12024-01-01T00:00:00",
        "2024-01-01T00:00:00Z \n",
    ];
    let invalid = [
        "2024-01-01",
        "2024-01-01T00:00",
        "2024-01-01 00:00:00",
        " 2024-01-01T00:00:00",
        "2024-01-01T00:00:00 ",
        "2024-01-01T24:00:01",
        "2024-01-01T23:59:60",
        "2023-02-29T00:00:00",
        "1900-02-29T00:00:00",
        "0000-01-01T00:00:00",
        "02024-01-01T00:00:00",
        "+2024-01-01T00:00:00",
        "2024-01-01T00:00:00+14:01",
        "2024-01-01T00:00:00.",
        "9999999999999999999-01-01T00:00:00",
        "",
    ];
    for v in valid {
        assert!(is_date_time(v.as_bytes()), "{v:?} should be valid");
    }
    for v in invalid {
        assert!(!is_date_time(v.as_bytes()), "{v:?} should be invalid");
    }
}

#[test]
fn float_follows_libxml2() {
    let cases: [(&str, Option<f32>); 14] = [
        ("1.5", Some(1.5)),
        (" -2E3 ", Some(-2000.0)),
        ("1e", Some(1.0)),
        ("5e-", Some(5.0)),
        (".5", Some(0.5)),
        ("+5", Some(5.0)),
        ("-INF", Some(f32::NEG_INFINITY)),
        ("1e400", Some(f32::INFINITY)),
        ("INF ", None),
        ("+INF", None),
        (".", None),
        ("1 5", None),
        ("-NaN", None),
        ("", None),
    ];
    for (text, want) in cases {
        assert_eq!(parse_float(text), want, "{text:?}");
    }
    assert!(parse_float(" NaN").is_some_and(f32::is_nan));
}

#[test]
fn any_uri_follows_libxml2() {
    let valid = [
        "",
        "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_532871-729",
        "a b",
        "http://[::1]:80/x",
        "a#b[1]",
        "urn:isbn:0451450523",
        "é",
    ];
    let invalid = [
        "a#b#c",
        "a%zz",
        "http://h:x/",
        "http://h:2147483648/",
        "1a:b",
        ":b",
        "a/b[1]",
        "a?b[1]",
    ];
    for v in valid {
        assert!(is_any_uri(v), "{v:?} should be valid");
    }
    for v in invalid {
        assert!(!is_any_uri(v), "{v:?} should be invalid");
    }
}

#[test]
fn ncname_allows_surrounding_whitespace_only() {
    for v in ["a", "_a-1.b", " a ", "\na\n", "é"] {
        assert!(is_ncname(v), "{v:?}");
    }
    for v in ["", " ", "1a", "-a", "a:b", "a b"] {
        assert!(!is_ncname(v), "{v:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any bytes and any span: an answer, never a panic.
    #[test]
    fn never_panics_on_mutated_packets(
        edits in proptest::collection::vec((0usize..GCN.len(), any::<u8>()), 0..8),
        cut in 0usize..GCN.len(),
        start in 0usize..64,
    ) {
        let mut payload = GCN.to_vec();
        for (at, byte) in edits {
            payload[at] = byte;
        }
        payload.truncate(cut.max(1));
        let span = root_span(GCN);
        let limits = ParseLimits::default();
        let _ = validate_voevent_2_0(&payload, span.start.min(start)..span.end, &limits);
        let _ = validate_voevent_2_0(&payload, start..payload.len(), &limits);
    }

    /// Small documents over the schema's own vocabulary, in any nesting.
    #[test]
    fn never_panics_on_schema_vocabulary(names in proptest::collection::vec(0usize..12, 0..40)) {
        const PIECES: [&str; 12] = [
            "<Who>", "</Who>", "<What>", "</What>", "<Param/>", "<Group>", "</Group>",
            "<Citations>", "</Citations>", "<EventIVORN>x</EventIVORN>", " text ", "&amp;",
        ];
        let body: String = names.into_iter().map(|i| PIECES[i]).collect();
        let _ = check(&packet("", &body));
    }
}
