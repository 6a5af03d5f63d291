use std::borrow::Cow;

use bytes::Bytes;
use proptest::prelude::*;

use super::parse::is_xml_char;
use super::*;

const GCN: &[u8] = include_bytes!("../../tests/data/gcn_swift_bat.xml");

fn try_parse(payload: &[u8]) -> Result<Message<'_>, ParseError> {
    parse(payload, &ParseLimits::default())
}

fn voevent(payload: &[u8]) -> VoEvent<'_> {
    match try_parse(payload) {
        Ok(Message::VoEvent(event)) => event,
        other => panic!("expected a VOEvent, got {other:?}"),
    }
}

fn transport(payload: &[u8]) -> Transport<'_> {
    match try_parse(payload) {
        Ok(Message::Transport(message)) => message,
        other => panic!("expected a Transport message, got {other:?}"),
    }
}

fn error(payload: &[u8]) -> ParseError {
    match try_parse(payload) {
        Err(e) => e,
        Ok(message) => panic!("expected an error, got {message:?}"),
    }
}

/// The payload of a frame, after checking its big-endian length prefix.
fn payload(frame: &Bytes) -> &[u8] {
    assert!(frame.len() >= 4, "frame shorter than its prefix");
    let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    assert_eq!(
        len,
        frame.len() - 4,
        "length prefix must count the payload bytes"
    );
    &frame[4..]
}

fn span_of<'p>(payload: &'p [u8], event: &VoEvent<'_>) -> &'p [u8] {
    &payload[event.element.clone()]
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle present")
}

/// Strings as a conforming parser reports them: characters XML cannot carry replaced.
fn replaced(s: &str) -> String {
    s.chars()
        .map(|c| if is_xml_char(c) { c } else { '\u{FFFD}' })
        .collect()
}

fn trim_xml(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'))
}

// ---------------------------------------------------------------------------------------------
// Good inputs

const MINIMAL_2_1: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<voe:VOEvent xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0"
             ivorn="ivo://example.org/survey#alert-0001" role="test" version="2.0">
  <Who><AuthorIVORN>ivo://example.org/survey</AuthorIVORN></Who>
</voe:VOEvent>"#;

#[test]
fn minimal_packet_of_protocol_2_1() {
    let payload = MINIMAL_2_1.as_bytes();
    let event = voevent(payload);
    assert_eq!(event.ivorn, "ivo://example.org/survey#alert-0001");
    assert_eq!(event.role, EventRole::Test);
    assert!(event.role_given);
    assert_eq!(event.version.as_deref(), Some("2.0"));
    assert_eq!(event.namespace, VoEventNamespace::V2_0);
    assert_eq!(event.namespace_uri.as_deref(), Some(VOEVENT_2_0_NS));
    assert_eq!(event.element.start, find(payload, b"<voe:VOEvent"));
    assert_eq!(event.element.end, payload.len());
    assert!(
        matches!(event.ivorn, Cow::Borrowed(_)),
        "plain values must not be copied"
    );
}

const IAMALIVE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<trn:Transport xmlns:trn="http://www.telescope-networks.org/xml/Transport/v1.1"
               version="1.0" role="iamalive">
  <Origin>ivo://example.org/broker</Origin>
  <TimeStamp>2024-05-01T12:00:00Z</TimeStamp>
</trn:Transport>"#;

const IAMALIVE_REPLY: &str = r#"<trn:Transport xmlns:trn="http://www.telescope-networks.org/xml/Transport/v1.1"
               version="1.0" role="iamalive">
  <Origin>ivo://example.org/broker</Origin>
  <Response>ivo://example.net/listener</Response>
  <TimeStamp>2024-05-01T12:00:01Z</TimeStamp>
</trn:Transport>"#;

const AUTHENTICATE: &str = r#"<trn:Transport xmlns:trn="http://www.telescope-networks.org/xml/Transport/v1.1"
               version="1.0" role="authenticate">
  <Origin>ivo://example.org/broker</Origin>
  <TimeStamp>2024-05-01T12:00:00Z</TimeStamp>
</trn:Transport>"#;

const AUTHENTICATE_REPLY: &str = r#"<trn:Transport xmlns:trn="http://www.telescope-networks.org/xml/Transport/v1.1"
               version="1.0" role="authenticate">
  <Origin>ivo://example.org/broker</Origin>
  <Response>ivo://example.net/listener</Response>
  <TimeStamp>2024-05-01T12:00:01Z</TimeStamp>
  <Meta>
    <Param name="xpath-filter" value="//Param[@name='Packet_Type' and @value=61]"/>
    <Param name="xpath-filter" value="/*[local-name()='VOEvent' and @role!='test']"/>
  </Meta>
</trn:Transport>"#;

const ACK: &str = r#"<trn:Transport xmlns:trn="http://www.telescope-networks.org/xml/Transport/v1.1"
               version="1.0" role="ack">
  <Origin>ivo://example.org/survey#alert-0001</Origin>
  <Response>ivo://example.org/broker</Response>
  <TimeStamp>2024-05-01T12:00:02Z</TimeStamp>
</trn:Transport>"#;

const NAK: &str = r#"<trn:Transport xmlns:trn="http://www.telescope-networks.org/xml/Transport/v1.1"
               version="1.0" role="nak">
  <Origin>ivo://example.org/survey#alert-0001</Origin>
  <Response>ivo://example.org/broker</Response>
  <TimeStamp>2024-05-01T12:00:02Z</TimeStamp>
  <Meta><Result>Event rejected: No per-event local ID</Result></Meta>
</trn:Transport>"#;

/// One expected Transport message: role, origin, response, timestamp, params, result.
type Expected = (
    TransportRole,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    &'static [(&'static str, &'static str)],
    Option<&'static str>,
);

fn assert_transport(message: &Transport<'_>, expected: &Expected) {
    let (role, origin, response, timestamp, params, result) = *expected;
    assert_eq!(message.role, role);
    assert_eq!(message.version.as_deref(), Some("1.0"));
    assert_eq!(message.origin, origin);
    assert_eq!(message.response.as_deref(), response);
    assert_eq!(message.timestamp.as_deref(), timestamp);
    let got: Vec<(&str, &str)> = message
        .params
        .iter()
        .map(|(n, v)| (n.as_ref(), v.as_ref()))
        .collect();
    assert_eq!(got, params);
    assert_eq!(message.result.as_deref(), result);
    assert!(message.legacy_filters.is_empty());
}

#[test]
fn transport_examples_of_protocol_2_3() {
    let filters: &[(&str, &str)] = &[
        ("xpath-filter", "//Param[@name='Packet_Type' and @value=61]"),
        (
            "xpath-filter",
            "/*[local-name()='VOEvent' and @role!='test']",
        ),
    ];
    let table: &[(&str, Expected)] = &[
        (
            IAMALIVE,
            (
                TransportRole::IamAlive,
                "ivo://example.org/broker",
                None,
                Some("2024-05-01T12:00:00Z"),
                &[],
                None,
            ),
        ),
        (
            IAMALIVE_REPLY,
            (
                TransportRole::IamAlive,
                "ivo://example.org/broker",
                Some("ivo://example.net/listener"),
                Some("2024-05-01T12:00:01Z"),
                &[],
                None,
            ),
        ),
        (
            AUTHENTICATE,
            (
                TransportRole::Authenticate,
                "ivo://example.org/broker",
                None,
                Some("2024-05-01T12:00:00Z"),
                &[],
                None,
            ),
        ),
        (
            AUTHENTICATE_REPLY,
            (
                TransportRole::Authenticate,
                "ivo://example.org/broker",
                Some("ivo://example.net/listener"),
                Some("2024-05-01T12:00:01Z"),
                filters,
                None,
            ),
        ),
        (
            ACK,
            (
                TransportRole::Ack,
                "ivo://example.org/survey#alert-0001",
                Some("ivo://example.org/broker"),
                Some("2024-05-01T12:00:02Z"),
                &[],
                None,
            ),
        ),
        (
            NAK,
            (
                TransportRole::Nak,
                "ivo://example.org/survey#alert-0001",
                Some("ivo://example.org/broker"),
                Some("2024-05-01T12:00:02Z"),
                &[],
                Some("Event rejected: No per-event local ID"),
            ),
        ),
    ];
    for (xml, expected) in table {
        let message = transport(xml.as_bytes());
        assert_transport(&message, expected);
    }
    let reply = transport(AUTHENTICATE_REPLY.as_bytes());
    let got: Vec<&str> = reply.xpath_filters().collect();
    assert_eq!(got, [filters[0].1, filters[1].1]);
}

#[test]
fn pygcn_style_ack() {
    let xml = concat!(
        "<?xml version='1.0' encoding='UTF-8'?>\n",
        "<trn:Transport role=\"ack\" version=\"1.0\" ",
        "xmlns:trn=\"http://telescope-networks.org/schema/Transport/v1.1\" ",
        "xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" ",
        "xsi:schemaLocation=\"http://telescope-networks.org/schema/Transport/v1.1 ",
        "http://telescope-networks.org/schema/Transport-v1.1.xsd\">",
        "<Origin>ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_532871-729</Origin>",
        "<Response>ivo://python_voeventclient/anonymous</Response>",
        "<TimeStamp>2026-11-22T01:50:13.960722</TimeStamp></trn:Transport>"
    );
    let message = transport(xml.as_bytes());
    assert_transport(
        &message,
        &(
            TransportRole::Ack,
            "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_532871-729",
            Some("ivo://python_voeventclient/anonymous"),
            Some("2026-11-22T01:50:13.960722"),
            &[],
            None,
        ),
    );
}

#[test]
fn transport_without_namespace_and_with_prefixed_children() {
    let plain = transport(
        b"<Transport version=\"1.0\" role=\"iamalive\"><Origin>x.example.org</Origin>\
          <TimeStamp>t</TimeStamp></Transport>",
    );
    assert_eq!(plain.role, TransportRole::IamAlive);
    assert_eq!(plain.origin, "x.example.org");
    let prefixed = transport(
        b"<t:Transport xmlns:t=\"urn:other\" role=\"ack\"><t:Origin>o</t:Origin>\
          <t:Meta><t:Result>why</t:Result></t:Meta></t:Transport>",
    );
    assert_eq!(prefixed.role, TransportRole::Ack);
    assert_eq!(prefixed.origin, "o");
    assert_eq!(prefixed.version, None);
    assert_eq!(prefixed.timestamp, None);
    assert_eq!(prefixed.result.as_deref(), Some("why"));
}

#[test]
fn voevent_1_1_and_without_namespace() {
    let v11 = voevent(
        b"<voe:VOEvent xmlns:voe=\"http://www.ivoa.net/xml/VOEvent/v1.1\" \
          ivorn=\"ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_1\" version=\"1.1\"><Who/></voe:VOEvent>",
    );
    assert_eq!(v11.namespace, VoEventNamespace::V1_1);
    assert_eq!(v11.role, EventRole::Observation);
    assert!(!v11.role_given);
    assert_eq!(v11.version.as_deref(), Some("1.1"));

    let bare = voevent(b"<VOEvent ivorn=\"ivo://dakota/test#1\" role=\"utility\"/>");
    assert_eq!(bare.namespace, VoEventNamespace::None);
    assert_eq!(bare.namespace_uri, None);
    assert_eq!(bare.role, EventRole::Utility);
    assert_eq!(bare.version, None);

    let other = voevent(b"<VOEvent xmlns=\"urn:x\" ivorn=\"i\" role=\"prediction\"></VOEvent>");
    assert_eq!(other.namespace, VoEventNamespace::Other);
    assert_eq!(other.namespace_uri.as_deref(), Some("urn:x"));
    assert_eq!(other.role, EventRole::Prediction);
}

#[test]
fn element_span_excludes_declaration_and_outer_comments() {
    let payload = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- before -->\n\
        <voe:VOEvent xmlns:voe=\"http://www.ivoa.net/xml/VOEvent/v2.0\" ivorn=\"ivo://a.b/c#d\" \
        role=\"observation\" version=\"2.0\">\n  <What><Param name=\"x\" value=\"1\"/></What>\n\
        </voe:VOEvent><!--\n=====BEGIN PGP SIGNATURE=====\nabc\n=====END PGP SIGNATURE=====\n-->\n";
    let event = voevent(payload);
    let span = span_of(payload, &event);
    assert!(span.starts_with(b"<voe:VOEvent"));
    assert!(span.ends_with(b"</voe:VOEvent>"));
    assert_eq!(event.element.start, find(payload, b"<voe:VOEvent"));
    assert_eq!(
        event.element.end,
        find(payload, b"</voe:VOEvent>") + b"</voe:VOEvent>".len()
    );
}

#[test]
fn self_closing_root_span() {
    let payload = b"<!--c--><voe:VOEvent xmlns:voe=\"http://www.ivoa.net/xml/VOEvent/v2.0\" \
        ivorn=\"ivo://a.b/c#d\" role=\"test\" version=\"2.0\" />\n";
    let event = voevent(payload);
    assert_eq!(event.element, 8..payload.len() - 1);
    assert_eq!(event.role, EventRole::Test);
}

#[test]
fn element_span_counts_the_byte_order_mark() {
    let mut payload = vec![0xEF, 0xBB, 0xBF];
    payload.extend_from_slice(MINIMAL_2_1.as_bytes());
    let event = voevent(&payload);
    assert_eq!(
        event.element.start,
        3 + find(MINIMAL_2_1.as_bytes(), b"<voe:VOEvent")
    );
    assert_eq!(event.element.end, payload.len());
}

#[test]
fn legacy_filter_carrier() {
    let message = transport(
        b"<trn:Transport xmlns:trn=\"http://telescope-networks.org/schema/Transport/v1.1\" \
          version=\"1.0\" role=\"authenticate\"><Origin>ivo://b/r#</Origin>\
          <Response>ivo://s/r</Response><TimeStamp>2024-05-01T12:00:01Z</TimeStamp><Meta>\
          <Param name=\"xpath-filter\" value=\"//Param[@name='a']\"/>\
          <filter type=\"xpath\">//Who[AuthorIVORN=\"ivo://x.y/z\"]</filter>\
          <filter type=\"other\">ignored</filter>\
          <filter type=\"xpath\"><![CDATA[//Param[@value>600]]]></filter>\
          </Meta></trn:Transport>",
    );
    assert_eq!(
        message.legacy_filters,
        ["//Who[AuthorIVORN=\"ivo://x.y/z\"]", "//Param[@value>600]"]
    );
    let filters: Vec<&str> = message.xpath_filters().collect();
    assert_eq!(
        filters,
        [
            "//Param[@name='a']",
            "//Who[AuthorIVORN=\"ivo://x.y/z\"]",
            "//Param[@value>600]"
        ]
    );
}

#[test]
fn params_keep_order_and_skip_incomplete_or_misplaced_ones() {
    let message = transport(
        b"<Transport role=\"authenticate\"><Origin>o</Origin><Param name=\"outside\" value=\"1\"/>\
          <Meta><Param name=\"b\" value=\"2\"/><Param name=\"only-name\"/>\
          <Param value=\"only-value\"/><Param value=\"1\" name=\"a\"></Param>\
          <Group><Param name=\"nested\" value=\"3\"/></Group><Param name=\"c\" value=\"\"/>\
          </Meta></Transport>",
    );
    let got: Vec<(&str, &str)> = message
        .params
        .iter()
        .map(|(n, v)| (n.as_ref(), v.as_ref()))
        .collect();
    assert_eq!(got, [("b", "2"), ("a", "1"), ("c", "")]);
    assert_eq!(message.xpath_filters().count(), 0);
}

#[test]
fn escaped_values_are_unescaped() {
    let event = voevent(b"<VOEvent ivorn=\"ivo://a.b/c#x&amp;y&quot;&#x3C;&#60;&apos;&gt;\"/>");
    assert_eq!(event.ivorn, "ivo://a.b/c#x&y\"<<'>");
    let message = transport(
        b"<Transport role=\"nak\"><Origin>a&amp;b&#x3C;c</Origin><Meta>\
          <Param name=\"q&quot;\" value=\"&lt;&#9;&#10;&#13;\"/>\
          <Result>x &lt; y &amp;&amp; <![CDATA[<raw> &amp;]]> &#x1F600;</Result></Meta></Transport>",
    );
    assert_eq!(message.origin, "a&b<c");
    assert_eq!(message.params[0].0, "q\"");
    assert_eq!(message.params[0].1, "<\t\n\r");
    assert_eq!(
        message.result.as_deref(),
        Some("x < y && <raw> &amp; \u{1F600}")
    );
}

#[test]
fn line_ends_and_attribute_whitespace_are_normalised() {
    let message = transport(
        b"<Transport role=\"nak\"><Origin>o</Origin><Meta>\
          <Param name=\"n\" value=\"a\tb\nc\r\nd\re\"/>\
          <Result>one\r\ntwo\rthree\n</Result></Meta></Transport>",
    );
    assert_eq!(message.params[0].1, "a b c d e");
    assert_eq!(message.result.as_deref(), Some("one\ntwo\nthree\n"));
}

#[test]
fn origin_response_and_timestamp_are_trimmed_result_is_not() {
    let message = transport(
        b"<Transport role=\"nak\">\n  <Origin>\n   ivo://a.b/c#d \t</Origin>\
          <Response>  r  </Response><TimeStamp>\n2024-05-01T12:00:02Z\n</TimeStamp>\
          <Meta><Result>  spaced  </Result></Meta></Transport>",
    );
    assert_eq!(message.origin, "ivo://a.b/c#d");
    assert!(matches!(message.origin, Cow::Borrowed(_)));
    assert_eq!(message.response.as_deref(), Some("r"));
    assert_eq!(message.timestamp.as_deref(), Some("2024-05-01T12:00:02Z"));
    assert_eq!(message.result.as_deref(), Some("  spaced  "));
}

#[test]
fn first_of_each_transport_child_wins_and_nested_text_is_skipped() {
    let message = transport(
        b"<Transport role=\"ack\"><Origin>first<!-- c --><?pi x?>-part<b>inner</b></Origin>\
          <Origin>second</Origin><Meta><Result>r1</Result></Meta><Meta><Result>r2</Result>\
          </Meta><x><Origin>deep</Origin></x></Transport>",
    );
    assert_eq!(message.origin, "first-part");
    assert_eq!(message.result.as_deref(), Some("r1"));
}

#[test]
fn timestamp_is_never_validated() {
    let message = transport(
        b"<Transport role=\"iamalive\"><Origin>o</Origin><TimeStamp>not a time</TimeStamp>\
          </Transport>",
    );
    assert_eq!(message.timestamp.as_deref(), Some("not a time"));
}

#[test]
fn declaration_forms_and_misc_markup_are_accepted() {
    let payloads: &[&[u8]] = &[
        b"<?xml version = '1.0' encoding = 'UTF-8'?><VOEvent ivorn=\"i\"/>",
        b"<?xml version=\"1.0\" standalone=\"yes\"?><VOEvent ivorn=\"i\"/>",
        b"<?xml version=\"1.0\" encoding=\"us-ascii\" standalone='no' ?>\n<VOEvent ivorn=\"i\"/>",
        b"<?xml-stylesheet href=\"a.xsl\"?><VOEvent ivorn='i'/><?after x?>\n\n",
        b"<VOEvent ivorn=\"i\"><![CDATA[ <not> &markup; ]]><a  b = 'x>y' c=\"\"/></VOEvent >",
        b"<VOEvent ivorn=\"i\"><x:y xmlns:x=\"urn:u\" x:z=\"1\">\xC3\xA9\xE2\x82\xAC</x:y></VOEvent>",
    ];
    for payload in payloads {
        let event = voevent(payload);
        assert_eq!(event.ivorn, "i", "{}", String::from_utf8_lossy(payload));
    }
}

#[test]
fn legacy_encodings_decode_captured_values() {
    let latin1 = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\
        <Transport role=\"nak\"><Origin>ivo://a.b/caf\xE9</Origin>\
        <Meta><Result>na\xEFve</Result></Meta></Transport>";
    let message = transport(latin1);
    assert_eq!(message.origin, "ivo://a.b/caf\u{e9}");
    assert_eq!(message.result.as_deref(), Some("na\u{ef}ve"));

    let (sjis, _, _) = encoding_rs::SHIFT_JIS.encode("\u{65e5}\u{672c}\u{8a9e}");
    let mut payload =
        b"<?xml version=\"1.0\" encoding=\"Shift_JIS\"?><VOEvent ivorn=\"ivo://j.p/".to_vec();
    payload.extend_from_slice(&sjis);
    payload.extend_from_slice(b"\"><Description>");
    payload.extend_from_slice(&sjis);
    payload.extend_from_slice(b"</Description></VOEvent>");
    let event = voevent(&payload);
    assert_eq!(event.ivorn, "ivo://j.p/\u{65e5}\u{672c}\u{8a9e}");
}

#[test]
fn limits_are_inclusive() {
    let limits = ParseLimits {
        depth_max: 3,
        attrs_max: 2,
        transport_params_max: 2,
        text_max: 5,
    };
    let ok = b"<Transport role=\"ack\" a=\"\"><Origin>12345</Origin><Meta>\
        <Param name=\"a\" value=\"12345\"/><Param name=\"b\" value=\"2\"/></Meta></Transport>";
    assert!(parse(ok, &limits).is_ok());
    let deep = b"<VOEvent ivorn=\"i\"><a><b/></a></VOEvent>";
    assert!(parse(deep, &limits).is_ok());
    let too_deep = b"<VOEvent ivorn=\"i\"><a><b><c/></b></a></VOEvent>";
    assert_eq!(
        parse(too_deep, &limits),
        Err(ParseError::TooDeep { max: 3 })
    );
    let d = ParseLimits::default();
    assert_eq!(
        d,
        ParseLimits {
            depth_max: 64,
            attrs_max: 64,
            transport_params_max: 64,
            text_max: 65536
        }
    );
}

#[test]
fn gcn_fixture_parses() {
    assert!(
        (9_000..12_000).contains(&GCN.len()),
        "fixture should stay ~9-10 KB"
    );
    let event = voevent(GCN);
    assert_eq!(
        event.ivorn,
        "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_532871-729"
    );
    assert_eq!(event.role, EventRole::Observation);
    assert!(event.role_given);
    assert_eq!(event.version.as_deref(), Some("2.0"));
    assert_eq!(event.namespace, VoEventNamespace::V2_0);
    assert_eq!(event.element.start, find(GCN, b"<voe:VOEvent"));
    assert_eq!(
        event.element.end,
        GCN.len() - 1,
        "only the final newline follows the root"
    );
    let params = GCN.windows(7).filter(|w| w == b"<Param ").count();
    assert!(
        params >= 140,
        "fixture should carry ~150 Params, has {params}"
    );
}

// ---------------------------------------------------------------------------------------------
// Bad inputs

const BILLION_LAUGHS: &str = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<VOEvent ivorn="ivo://a.b/c#&lol9;" role="test">&lol9;</VOEvent>"#;

const XXE: &str = r#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Transport role="ack"><Origin>&xxe;</Origin></Transport>"#;

fn malformed(payload: &[u8]) -> (usize, String) {
    match error(payload) {
        ParseError::Malformed { offset, reason } => (offset, reason),
        other => panic!(
            "expected Malformed for {:?}, got {other:?}",
            String::from_utf8_lossy(payload)
        ),
    }
}

#[test]
fn one_row_per_error_variant() {
    let deep = {
        let mut s = String::from("<VOEvent ivorn=\"i\">");
        s.push_str(&"<a>".repeat(10_000));
        s.push_str(&"</a>".repeat(10_000));
        s.push_str("</VOEvent>");
        s
    };
    let many_attrs = {
        let attrs: String = (0..65).map(|i| format!(" a{i}=\"{i}\"")).collect();
        format!("<VOEvent ivorn=\"i\"><x{attrs}/></VOEvent>")
    };
    let many_params = {
        let params: String = (0..65)
            .map(|i| format!("<Param name=\"p\" value=\"{i}\"/>"))
            .collect();
        format!(
            "<Transport role=\"authenticate\"><Origin>o</Origin><Meta>{params}</Meta></Transport>"
        )
    };
    let long_text = format!(
        "<Transport role=\"nak\"><Origin>o</Origin><Meta><Result>{}</Result></Meta></Transport>",
        "x".repeat(64 * 1024 + 1)
    );
    let long_attr = format!("<VOEvent ivorn=\"{}\"/>", "i".repeat(64 * 1024 + 1));
    let table: Vec<(&[u8], ParseError)> = vec![
        (b"", ParseError::Empty),
        (BILLION_LAUGHS.as_bytes(), ParseError::Doctype),
        (XXE.as_bytes(), ParseError::Doctype),
        (
            b"<!DOCTYPE VOEvent><VOEvent ivorn=\"i\"/>",
            ParseError::Doctype,
        ),
        (b"<VOEvent ivorn=\"i\"/><!DOCTYPE x>", ParseError::Doctype),
        (b"<!DOCTYPE x [<!ENTITY a \"b\">", ParseError::Doctype),
        (
            b"<VOEvent ivorn=\"i\"><!doctype x></VOEvent>",
            ParseError::Doctype,
        ),
        (
            b"<VOEvent ivorn=\"i\"><a>&lol;</a></VOEvent>",
            ParseError::UndefinedEntity("lol".into()),
        ),
        (
            b"<VOEvent ivorn=\"i\"><a b=\"x&nbsp;\"/></VOEvent>",
            ParseError::UndefinedEntity("nbsp".into()),
        ),
        (
            b"<VOEvent ivorn=\"&ivo;\"/>",
            ParseError::UndefinedEntity("ivo".into()),
        ),
        (
            b"<VOEvent ivorn=\"i\">\xFF</VOEvent>",
            ParseError::NotUtf8 { offset: 19 },
        ),
        (
            b"<?xml version=\"1.0\" encoding=\"UTF-16\"?><VOEvent ivorn=\"i\"/>",
            ParseError::UnsupportedEncoding("UTF-16".into()),
        ),
        (
            b"\xFF\xFE<\0V\0",
            ParseError::UnsupportedEncoding("UTF-16LE".into()),
        ),
        (
            b"\0<\0V\0O",
            ParseError::UnsupportedEncoding("UTF-16BE".into()),
        ),
        (
            b"<?xml version=\"1.0\" encoding=\"x-no-such\"?><VOEvent ivorn=\"i\"/>",
            ParseError::UnsupportedEncoding("x-no-such".into()),
        ),
        (deep.as_bytes(), ParseError::TooDeep { max: 64 }),
        (
            many_attrs.as_bytes(),
            ParseError::TooManyAttributes { max: 64 },
        ),
        (
            many_params.as_bytes(),
            ParseError::TooLarge {
                what: "number of Transport parameters",
                max: 64,
            },
        ),
        (
            long_text.as_bytes(),
            ParseError::TooLarge {
                what: "element text (bytes)",
                max: 65536,
            },
        ),
        (
            long_attr.as_bytes(),
            ParseError::TooLarge {
                what: "attribute value (bytes)",
                max: 65536,
            },
        ),
        (
            b"<html><body/></html>",
            ParseError::UnknownRoot("html".into()),
        ),
        (
            b"<voe:Event xmlns:voe=\"x\"/>",
            ParseError::UnknownRoot("voe:Event".into()),
        ),
        (b"  <!-- nothing -->\n<?pi?>\n", ParseError::NoRoot),
        (b"\xEF\xBB\xBF", ParseError::NoRoot),
        (
            b"<VOEvent ivorn=\"i\"/><VOEvent ivorn=\"j\"/>",
            ParseError::MultipleRoots,
        ),
        (
            b"<VOEvent ivorn=\"i\"/>\n<!--ok-->x",
            ParseError::TrailingContent,
        ),
        (
            b"<VOEvent ivorn=\"i\"/><![CDATA[x]]>",
            ParseError::TrailingContent,
        ),
        (b"<VOEvent ivorn=\"i\"/>&amp;", ParseError::TrailingContent),
        (
            b"<VOEvent role=\"test\" version=\"2.0\"><Who/></VOEvent>",
            ParseError::MissingIvorn,
        ),
        (b"<VOEvent ivorn=\"\"/>", ParseError::MissingIvorn),
        (
            b"<VOEvent ivorn=\"i\" role=\"alert\"/>",
            ParseError::BadEventRole("alert".into()),
        ),
        (
            b"<VOEvent ivorn=\"i\" role=\"Test\"/>",
            ParseError::BadEventRole("Test".into()),
        ),
        (
            b"<Transport version=\"1.0\"><Origin>o</Origin></Transport>",
            ParseError::MissingTransportRole,
        ),
        (
            b"<Transport role=\"hello\"><Origin>o</Origin></Transport>",
            ParseError::UnknownTransportRole("hello".into()),
        ),
        (
            b"<Transport role=\"ack\"><TimeStamp>t</TimeStamp></Transport>",
            ParseError::MissingOrigin,
        ),
        (
            b"<Transport role=\"ack\"><Origin> </Origin></Transport>",
            ParseError::MissingOrigin,
        ),
        (b"<Transport role=\"iamalive\"/>", ParseError::MissingOrigin),
        (
            b"<Transport role=\"ack\"><Meta><Origin>o</Origin></Meta></Transport>",
            ParseError::MissingOrigin,
        ),
    ];
    for (payload, expected) in &table {
        assert_eq!(
            try_parse(payload).as_ref().err(),
            Some(expected),
            "payload {:?}",
            String::from_utf8_lossy(&payload[..payload.len().min(80)])
        );
    }
}

#[test]
fn malformed_inputs() {
    let table: &[(&[u8], &str)] = &[
        (b"<VOEvent ivorn=\"i\"><a></b></VOEvent>", "expected `</a>`"),
        (b"<VOEvent ivorn=\"i\"><a>", "not closed"),
        (b"<VOEvent ivorn=\"i\"", "not closed"),
        (
            b"<VOEvent ivorn=\"i\"></VOEvent></VOEvent>",
            "does not match",
        ),
        (b"<VOEvent ivorn=i/>", "quoted"),
        (b"<VOEvent ivorn=\"i/>", "not closed"),
        (
            b"<VOEvent ivorn=\"i\" ivorn=\"j\"/>",
            "duplicate attribute `ivorn`",
        ),
        (b"<VOEvent ivorn=\"i\"a=\"b\"/>", "separated by whitespace"),
        (b"<VOEvent ivorn=\"i\" a/>", "expected `=`"),
        (b"<VOEvent ivorn=\"<\"/>", "`<` is not allowed"),
        (b"<VOEvent ivorn=\"a & b\"/>", "reference ending in `;`"),
        (b"<VOEvent ivorn=\"i\">a & b</VOEvent>", "not closed"),
        (
            b"<VOEvent ivorn=\"i\">&#0;</VOEvent>",
            "invalid character reference",
        ),
        (
            b"<VOEvent ivorn=\"i\">&#xD800;</VOEvent>",
            "invalid character reference",
        ),
        (
            b"<VOEvent ivorn=\"i\">&#x110000;</VOEvent>",
            "invalid character reference",
        ),
        (
            b"<VOEvent ivorn=\"i\">&#X41;</VOEvent>",
            "invalid character reference",
        ),
        (
            b"<VOEvent ivorn=\"i\">&#99999999999;</VOEvent>",
            "invalid character reference",
        ),
        (
            b"<VOEvent ivorn=\"i\">& x;</VOEvent>",
            "invalid entity reference",
        ),
        (b"<VOEvent ivorn=\"i\">\x01</VOEvent>", "U+0001"),
        (b"<VOEvent ivorn=\"i\">\xEF\xBF\xBF</VOEvent>", "U+FFFF"),
        (b"<VOEvent ivorn=\"i\"><!-- a -- b --></VOEvent>", "--"),
        (b"<VOEvent ivorn=\"i\"><1a/></VOEvent>", "invalid name"),
        (b"<VOEvent ivorn=\"i\"><a/ ></VOEvent>", "invalid name"),
        (
            b"<VOEvent ivorn=\"i\"><a b=\"1\" / ></VOEvent>",
            "invalid name",
        ),
        (b"< VOEvent ivorn=\"i\"/>", "invalid name"),
        (b"<VOEvent ivorn=\"i\"><a:b:c/></VOEvent>", "invalid name"),
        (
            b"<VOEvent ivorn=\"i\"><?xml version=\"1.0\"?></VOEvent>",
            "XML declaration",
        ),
        (
            b" <?xml version=\"1.0\"?><VOEvent ivorn=\"i\"/>",
            "XML declaration",
        ),
        (
            b"<?xml encoding=\"UTF-8\"?><VOEvent ivorn=\"i\"/>",
            "XML declaration",
        ),
        (b"<?xml version=\"1.0\"", "not closed"),
        (b"text<VOEvent ivorn=\"i\"/>", "text before the root"),
        (b"&amp;<VOEvent ivorn=\"i\"/>", "reference before the root"),
        (
            b"<voe:VOEvent ivorn=\"i\"/>",
            "prefix `voe` is not declared",
        ),
        (
            b"<?xml-stylesheet?><?XmL x?><VOEvent ivorn=\"i\"/>",
            "reserved",
        ),
        (b"<?1pi?><VOEvent ivorn=\"i\"/>", "invalid name"),
    ];
    for (payload, needle) in table {
        let (offset, reason) = malformed(payload);
        assert!(
            reason.contains(needle),
            "{:?}: reason {reason:?} lacks {needle:?}",
            String::from_utf8_lossy(payload)
        );
        assert!(offset <= payload.len(), "offset {offset} beyond payload");
    }
}

#[test]
fn error_offsets_point_at_the_problem() {
    let payload = b"<VOEvent ivorn=\"i\"><a>\x02</a></VOEvent>";
    assert_eq!(malformed(payload).0, 22);
    let payload = b"<VOEvent ivorn=\"i\"><a b=\"1\" b=\"2\"/></VOEvent>";
    assert_eq!(malformed(payload).0, 28);
    let mut with_bom = vec![0xEF, 0xBB, 0xBF];
    with_bom.extend_from_slice(b"<VOEvent ivorn=\"i\">\xC3</VOEvent>");
    assert_eq!(error(&with_bom), ParseError::NotUtf8 { offset: 22 });
}

#[test]
fn invalid_bytes_in_a_legacy_encoding_are_malformed() {
    let payload =
        b"<?xml version=\"1.0\" encoding=\"Shift_JIS\"?><VOEvent ivorn=\"i\">\x81</VOEvent>";
    let (offset, reason) = malformed(payload);
    assert!(reason.contains("Shift_JIS"), "{reason}");
    assert_eq!(offset, 61);
}

#[test]
fn error_messages_say_what_is_wrong() {
    assert_eq!(
        ParseError::Doctype.to_string(),
        "DOCTYPE/entity declarations are not allowed"
    );
    let long = "x".repeat(200);
    let e = error(format!("<{long}/>").as_bytes());
    let text = e.to_string();
    assert!(text.starts_with("unknown root element `xxxx"), "{text}");
    assert!(text.chars().count() < 140, "peer text must be cut: {text}");
    assert!(
        error(b"<VOEvent ivorn=\"i\"><a>&lol;</a></VOEvent>")
            .to_string()
            .contains("&lol;")
    );
    assert!(
        ParseError::NotUtf8 { offset: 7 }
            .to_string()
            .contains("byte 7")
    );
}

// ---------------------------------------------------------------------------------------------
// Builders

#[test]
fn iamalive_exact_bytes() {
    let frame = build_iamalive("ivo://example.org/broker", "2024-05-01T12:00:00Z");
    let expected = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
        <trn:Transport xmlns:trn=\"http://www.telescope-networks.org/xml/Transport/v1.1\" \
        version=\"1.0\" role=\"iamalive\">\n\
        \x20 <Origin>ivo://example.org/broker</Origin>\n\
        \x20 <TimeStamp>2024-05-01T12:00:00Z</TimeStamp>\n\
        </trn:Transport>\n";
    assert_eq!(std::str::from_utf8(payload(&frame)), Ok(expected));
}

#[test]
fn nak_exact_bytes() {
    let frame = build_nak(
        "ivo://example.org/survey#alert-0001",
        Some("ivo://example.org/broker"),
        "2024-05-01T12:00:02Z",
        "Event rejected: No per-event local ID",
    );
    let expected = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
        <trn:Transport xmlns:trn=\"http://www.telescope-networks.org/xml/Transport/v1.1\" \
        version=\"1.0\" role=\"nak\">\n\
        \x20 <Origin>ivo://example.org/survey#alert-0001</Origin>\n\
        \x20 <Response>ivo://example.org/broker</Response>\n\
        \x20 <TimeStamp>2024-05-01T12:00:02Z</TimeStamp>\n\
        \x20 <Meta>\n\
        \x20   <Result>Event rejected: No per-event local ID</Result>\n\
        \x20 </Meta>\n\
        </trn:Transport>\n";
    assert_eq!(std::str::from_utf8(payload(&frame)), Ok(expected));
}

const HOSTILE: &str = "ivo://a.b/c#<x>&amp;\"q\"'s' ]]> &lt; \t\r\n end";

#[test]
fn every_builder_round_trips_through_parse() {
    let ts = "2024-05-01T12:00:00Z";
    let cases: Vec<(Bytes, Expected)> = vec![
        (
            build_ack("ivo://a.b/c#1", Some("ivo://me/x"), ts),
            (
                TransportRole::Ack,
                "ivo://a.b/c#1",
                Some("ivo://me/x"),
                Some(ts),
                &[],
                None,
            ),
        ),
        (
            build_ack("ivo://a.b/c#1", None, ts),
            (
                TransportRole::Ack,
                "ivo://a.b/c#1",
                None,
                Some(ts),
                &[],
                None,
            ),
        ),
        (
            build_nak("ivo://a.b/c#1", None, ts, "Event rejected: bad"),
            (
                TransportRole::Nak,
                "ivo://a.b/c#1",
                None,
                Some(ts),
                &[],
                Some("Event rejected: bad"),
            ),
        ),
        (
            build_iamalive("ivo://b/r", ts),
            (
                TransportRole::IamAlive,
                "ivo://b/r",
                None,
                Some(ts),
                &[],
                None,
            ),
        ),
        (
            build_iamalive_reply("broker.example.org", Some("ivo://me/x"), ts),
            (
                TransportRole::IamAlive,
                "broker.example.org",
                Some("ivo://me/x"),
                Some(ts),
                &[],
                None,
            ),
        ),
        (
            build_authenticate("ivo://b/r", ts),
            (
                TransportRole::Authenticate,
                "ivo://b/r",
                None,
                Some(ts),
                &[],
                None,
            ),
        ),
        (
            build_authenticate_reply("ivo://b/r", None, ts, &["//a", "//b[@c='d']"]),
            (
                TransportRole::Authenticate,
                "ivo://b/r",
                None,
                Some(ts),
                &[("xpath-filter", "//a"), ("xpath-filter", "//b[@c='d']")],
                None,
            ),
        ),
        (
            build_transport(
                TransportRole::Ack,
                "o",
                Some("r"),
                ts,
                &[("k", "v"), ("k2", "")],
                Some(""),
            ),
            (
                TransportRole::Ack,
                "o",
                Some("r"),
                Some(ts),
                &[("k", "v"), ("k2", "")],
                Some(""),
            ),
        ),
    ];
    for (frame, expected) in &cases {
        let message = transport(payload(frame));
        assert_transport(&message, expected);
    }
}

#[test]
fn hostile_text_round_trips() {
    let ts = "2024-05-01T12:00:00Z";
    let frame = build_nak(HOSTILE, Some(HOSTILE), HOSTILE, HOSTILE);
    let message = transport(payload(&frame));
    assert_eq!(message.origin, trim_xml(HOSTILE));
    assert_eq!(message.response.as_deref(), Some(trim_xml(HOSTILE)));
    assert_eq!(message.timestamp.as_deref(), Some(trim_xml(HOSTILE)));
    assert_eq!(message.result.as_deref(), Some(HOSTILE));

    let frame = build_authenticate_reply(HOSTILE, None, ts, &[HOSTILE, "a\tb\nc"]);
    let message = transport(payload(&frame));
    let filters: Vec<&str> = message.xpath_filters().collect();
    assert_eq!(filters, [HOSTILE, "a\tb\nc"]);

    let frame = build_test_event(HOSTILE, HOSTILE, HOSTILE);
    let event = voevent(payload(&frame));
    assert_eq!(event.ivorn, format!("{HOSTILE}#TestEvent-{HOSTILE}"));
}

#[test]
fn characters_xml_cannot_carry_become_replacement_characters() {
    let nasty = "a\0b\x07c\u{FFFE}d\u{FFFF}e\u{1b}f\u{7f}\u{85}";
    let frame = build_nak("o", None, "t", nasty);
    let message = transport(payload(&frame));
    assert_eq!(
        message.result.as_deref(),
        Some("a\u{FFFD}b\u{FFFD}c\u{FFFD}d\u{FFFD}e\u{FFFD}f\u{7f}\u{85}")
    );
    let frame = build_authenticate_reply("o", None, "t", &[nasty]);
    let message = transport(payload(&frame));
    assert_eq!(message.params[0].1, replaced(nasty));
}

#[test]
fn test_event_is_a_valid_test_voevent() {
    let frame = build_test_event(
        "ivo://example.org/broker",
        "2024-05-01T12:00:00Z",
        "vtp 0.1.0",
    );
    let bytes = payload(&frame);
    let event = voevent(bytes);
    assert_eq!(
        event.ivorn,
        "ivo://example.org/broker#TestEvent-2024-05-01T12:00:00Z"
    );
    assert_eq!(event.role, EventRole::Test);
    assert!(event.role_given);
    assert_eq!(event.version.as_deref(), Some("2.0"));
    assert_eq!(event.namespace, VoEventNamespace::V2_0);
    assert_eq!(event.element.start, find(bytes, b"<voe:VOEvent"));
    let text = std::str::from_utf8(bytes).expect("UTF-8");
    let order = [
        "<Who>",
        "<AuthorIVORN>ivo://example.org/broker</AuthorIVORN>",
        "<Date>2024-05-01T12:00:00Z</Date>",
        "</Who>",
        "<What>",
        "<Description>Broker test event generated by vtp 0.1.0.</Description>",
        "<Reference uri=\"https://example.invalid/vtp\"/>",
        "</What>",
    ];
    let positions: Vec<usize> = order.iter().map(|s| text.find(s).expect(s)).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "schema order: {positions:?}"
    );

    let hashed = build_test_event("ivo://example.org/broker#", "T", "p");
    assert_eq!(
        voevent(payload(&hashed)).ivorn,
        "ivo://example.org/broker#TestEvent-T"
    );
}

// ---------------------------------------------------------------------------------------------
// Properties

/// Strings rich in characters that need escaping, plus arbitrary Unicode.
fn tricky_string() -> impl Strategy<Value = String> {
    let c = prop_oneof![
        4 => any::<char>(),
        1 => prop::sample::select(vec![
            '&', '<', '>', '"', '\'', ';', '#', ']', '\t', '\n', '\r', ' ', '\0', '\u{1}',
            '\u{FFFE}', '\u{FFFF}', '\u{FFFD}', '\u{85}', '\u{2028}', 'x', '\u{10FFFF}',
        ]),
    ];
    prop::collection::vec(c, 0..48).prop_map(String::from_iter)
}

proptest! {
    #[test]
    fn builder_values_round_trip(origin in tricky_string(), reason in tricky_string(),
                                 f1 in tricky_string(), f2 in tricky_string()) {
        let nak = build_nak(&origin, Some("ivo://me/x"), "2024-05-01T12:00:00Z", &reason);
        let expected_origin = replaced(&origin);
        let expected_origin = trim_xml(&expected_origin);
        match try_parse(payload(&nak)) {
            Ok(Message::Transport(message)) => {
                prop_assert_eq!(message.origin.as_ref(), expected_origin);
                let expected_reason = replaced(&reason);
                prop_assert_eq!(message.result.as_deref(), Some(expected_reason.as_str()));
            }
            Err(ParseError::MissingOrigin) => prop_assert!(expected_origin.is_empty()),
            other => prop_assert!(false, "unexpected {:?}", other),
        }
        let reply = build_authenticate_reply("o", None, "t", &[&f1, &f2]);
        let message = transport(payload(&reply));
        let filters: Vec<&str> = message.xpath_filters().collect();
        prop_assert_eq!(filters, vec![replaced(&f1), replaced(&f2)]);
    }

    #[test]
    fn valid_xml_strings_round_trip_exactly(s in tricky_string()) {
        let s: String = s.chars().filter(|&c| is_xml_char(c)).collect();
        let reply = build_authenticate_reply("o", None, "t", &[&s]);
        let message = transport(payload(&reply));
        prop_assert_eq!(message.params[0].1.as_ref(), s.as_str());
        let nak = build_nak("o", None, "t", &s);
        let message = transport(payload(&nak));
        prop_assert_eq!(message.result.as_deref(), Some(s.as_str()));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(Message::VoEvent(event)) = try_parse(&bytes) {
            prop_assert!(event.element.end <= bytes.len());
            prop_assert_eq!(bytes[event.element.start], b'<');
            prop_assert_eq!(bytes[event.element.end - 1], b'>');
        }
    }

    #[test]
    fn markup_soup_never_panics(parts in prop::collection::vec(prop::sample::select(vec![
        "<", ">", "/", "&", ";", "\"", "'", "=", " ", "<!--", "-->", "<![CDATA[", "]]>", "<?",
        "?>", "<!DOCTYPE", "VOEvent", "Transport", "Origin", "Meta", "Param", "Result", "filter",
        "ivorn", "role", "name", "value", "type", "xpath", "ack", "test", "xmlns", ":", "a",
        "&amp;", "&#x3C;", "&#0;", "\u{e9}", "\r\n",
    ]), 0..64)) {
        let payload = parts.concat();
        let _ = try_parse(payload.as_bytes());
    }

    #[test]
    fn mutated_event_never_panics(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..8),
    ) {
        let mut bytes = GCN.to_vec();
        for (index, byte, kind) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = index.index(bytes.len());
            match kind {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                2 => { bytes.remove(i); }
                _ => bytes.truncate(i),
            }
        }
        if let Ok(Message::VoEvent(event)) = try_parse(&bytes) {
            prop_assert!(event.element.end <= bytes.len());
            prop_assert_eq!(bytes[event.element.start], b'<');
        }
    }
}
