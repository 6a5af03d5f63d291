//! The fast path of [`parse`] against the quick-xml pass ([`parse_full`]): same verdict, same
//! message, on the messages every peer sends and on mutations of them.

use proptest::prelude::*;

use super::parse::{KNOWN_ROOTS, parse_full, parse_plain};
use super::*;

/// pygcn 1.1.3's ack (`gcn/voeventclient.py::_form_response`), byte for byte (a fixture the core bench shares).
const PYGCN_ACK: &str = include_str!("../../tests/data/pygcn_ack.xml");

/// Comet 3.1.0's root start tag (`comet/protocol/messages.py`, as lxml writes it), before the
/// role value.
const COMET_ROOT: &str = concat!(
    r#"<trn:Transport xmlns:trn="http://www.telescope-networks.org/xml/Transport/v1.1" "#,
    r#"xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" version="1.0" "#,
    r#"xsi:schemaLocation="http://telescope-networks.org/schema/Transport/v1.1 "#,
    r#"http://www.telescope-networks.org/schema/Transport-v1.1.xsd" role=""#,
);

/// A Comet message: `role`, then the children as lxml indents them.
fn comet(role: &str, children: &str) -> String {
    format!(
        "<?xml version='1.0' encoding='UTF-8'?>\n{COMET_ROOT}{role}\">\n{children}</trn:Transport>\n"
    )
}

/// The messages peers send, which the fast path must read itself.
fn peer_messages() -> Vec<Vec<u8>> {
    let origin = "  <Origin>ivo://example.org/survey#alert-0001</Origin>\n";
    let response = "  <Response>ivo://example.org/broker</Response>\n";
    let timestamp = "  <TimeStamp>2024-05-01T12:00:02Z</TimeStamp>\n";
    let result = "  <Meta>\n    <Result>Event rejected: bad</Result>\n  </Meta>\n";
    let frames = [
        build_ack(
            "ivo://example.org/survey#1",
            Some("ivo://me/x"),
            "2024-05-01T12:00:00Z",
        ),
        build_nak(
            "ivo://example.org/survey#1",
            Some("ivo://me/x"),
            "t",
            "Event rejected: x",
        ),
        build_iamalive("ivo://me/x", "2024-05-01T12:00:00Z"),
        build_iamalive_reply("ivo://you/y", Some("ivo://me/x"), "2024-05-01T12:00:00Z"),
        build_authenticate("ivo://me/x", "2024-05-01T12:00:00Z"),
        build_authenticate_reply("ivo://you/y", Some("ivo://me/x"), "t", &["//Param"]),
    ];
    let mut messages: Vec<Vec<u8>> = frames.iter().map(|f| f[4..].to_vec()).collect();
    messages.push(PYGCN_ACK.into());
    messages.push(PYGCN_ACK.replace("\"ack\"", "\"iamalive\"").into_bytes());
    messages.push(comet("ack", &[origin, response, timestamp].concat()).into_bytes());
    messages.push(comet("nak", &[origin, response, timestamp, result].concat()).into_bytes());
    messages.push(comet("iamalive", &[origin, timestamp].concat()).into_bytes());
    messages
}

/// Other shapes: some the fast path reads, some it leaves to quick-xml.
fn other_messages() -> Vec<Vec<u8>> {
    let mut messages: Vec<Vec<u8>> = [
        r#"<Transport role="ack"><Origin>o</Origin></Transport>"#,
        "\u{FEFF}<?xml version='1.0' encoding='UTF-8'?><Transport role=\"ack\"><Origin>o</Origin></Transport>",
        r#"<Transport role="ack"><Origin>a&amp;b</Origin></Transport>"#,
        r#"<Transport role="ack"><Origin><![CDATA[o]]></Origin></Transport>"#,
        r#"<Transport role="ack"><!-- c --><Origin>o</Origin><?pi x?></Transport>"#,
        "<Transport role=\"nak\">\r\n<Origin>o\r\n</Origin><Meta><Result>a\r\nb</Result></Meta></Transport>",
        r#"<Transport role="ack"><Origin>o</Origin ></Transport>"#,
        r#"<Transport role='ack' version = "1.0"><Origin a="x&lt;y">o</Origin></Transport>"#,
        r#"<Transport role="authenticate"><Origin>o</Origin><Meta><Param name="xpath-filter" value="//a[@b>1]"/><filter type="xpath">//x</filter></Meta></Transport>"#,
        r#"<Transport role="ack"><Origin>o</Origin><Origin>p</Origin><Response/><Response>r</Response></Transport>"#,
        r#"<VOEvent ivorn="ivo://a/b#c" role="test"/>"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    // A legacy encoding: é is 0xE9.
    let mut latin1 =
        b"<?xml version='1.0' encoding='ISO-8859-1'?><Transport role=\"ack\"><Origin>ivo://a/"
            .to_vec();
    latin1.push(0xE9);
    latin1.extend_from_slice(b"</Origin></Transport>");
    messages.push(latin1);
    messages
}

/// `message` as [`parse_routing`] returns it.
fn routed(message: Message<'_>) -> Message<'_> {
    match message {
        Message::Transport(mut t) => {
            t.response = None;
            t.timestamp = None;
            Message::Transport(t)
        }
        other => other,
    }
}

/// Every entry point gives quick-xml's verdict and message.
fn assert_agree(payload: &[u8], limits: &ParseLimits) -> Result<(), TestCaseError> {
    let full = parse_full(payload, limits);
    prop_assert_eq!(
        &parse(payload, limits),
        &full,
        "payload {:?}",
        payload.escape_ascii()
    );
    prop_assert_eq!(
        parse_routing(payload, limits),
        full.clone().map(routed),
        "payload {:?}",
        payload.escape_ascii()
    );
    // The schema check fed by the parser (the fast path when it reads the payload, else the
    // quick-xml pass after a reset) gives the verdict of the check reading the element itself.
    let single = crate::schema::parse_and_validate(payload, limits);
    prop_assert_eq!(
        single
            .as_ref()
            .map(|read| &read.message)
            .map_err(Clone::clone),
        full.as_ref().map_err(Clone::clone),
        "payload {:?}",
        payload.escape_ascii()
    );
    if let (Ok(read), Ok(Message::VoEvent(ev))) = (&single, &full) {
        let alone = crate::schema::validate_voevent_2_0(payload, ev.element.clone(), limits);
        prop_assert_eq!(
            read.schema.as_ref(),
            Some(&alone),
            "payload {:?}",
            payload.escape_ascii()
        );
    }
    if let Some(message) = parse_plain(payload, limits) {
        prop_assert_eq!(Ok(message), full);
    }
    Ok(())
}

#[test]
fn the_fast_path_reads_every_peer_shape() {
    let limits = ParseLimits::default();
    for payload in peer_messages() {
        let text = String::from_utf8_lossy(&payload).into_owned();
        let plain = parse_plain(&payload, &limits);
        assert!(plain.is_some(), "left to quick-xml: {text}");
        assert_eq!(plain.map(Ok), Some(parse_full(&payload, &limits)), "{text}");
        assert!(matches!(plain_transport(&payload), Some(t) if !t.origin.is_empty()));
        assert_agree(&payload, &limits).expect("agree");
    }
}

fn plain_transport(payload: &[u8]) -> Option<Transport<'_>> {
    match parse_plain(payload, &ParseLimits::default()) {
        Some(Message::Transport(t)) => Some(t),
        _ => None,
    }
}

#[test]
fn other_shapes_agree_and_some_are_read_fast() {
    let limits = ParseLimits::default();
    let mut fast = Vec::new();
    for (i, payload) in other_messages().iter().enumerate() {
        assert!(
            parse(payload, &limits).is_ok(),
            "{:?}",
            payload.escape_ascii()
        );
        if parse_plain(payload, &limits).is_some() {
            fast.push(i);
        }
        assert_agree(payload, &limits).expect("agree");
    }
    // Not the PI, `</Origin >`, `>` in a value.
    assert_eq!(fast, [0, 1, 2, 3, 5, 7, 9, 10, 11]);
}

/// GCN's packet (with a reference and a CDATA section in its descriptions, as the fixture has).
const GCN: &[u8] = include_bytes!("../../tests/data/gcn_swift_bat.xml");

/// VOEvents: GCN's packet, signed by the convention (a comment after the root), with comments
/// inside, a small valid one and schema failures of several kinds.
fn voevents() -> Vec<Vec<u8>> {
    let gcn = String::from_utf8(GCN.to_vec()).expect("UTF-8 fixture");
    let signed = format!(
        "{}<!--\n=====BEGIN PGP SIGNATURE=====\n\niHUEABYKAB0WIQ\n=====END PGP SIGNATURE=====\n-->\n",
        gcn.trim_end()
    );
    let small = |body: &str| {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<voe:VOEvent \
             xmlns:voe=\"http://www.ivoa.net/xml/VOEvent/v2.0\" ivorn=\"ivo://a.b/c#d\" \
             role=\"test\" version=\"2.0\">{body}</voe:VOEvent>\n"
        )
    };
    let mut events = vec![
        GCN.to_vec(),
        signed.into_bytes(),
        gcn.replacen("<Who>", "<Who><!-- who -->", 1).into_bytes(),
        gcn.replacen("<What>", "<!-- a -- b --><What>", 1)
            .into_bytes(),
        gcn.replacen("<Why", "<?pi x?><Why", 1).into_bytes(),
        small("").into_bytes(),
        small("<Who><Date>2024-05-01T12:00:00</Date></Who>").into_bytes(),
        small("<Who><Date>2024-05-01T12:00:00&#x5A;</Date></Who>").into_bytes(),
        small("<Who><Date>2024-05-01T<![CDATA[12:00:00]]></Date></Who>").into_bytes(),
        small("<Who><Date>yesterday</Date></Who>").into_bytes(),
        small("<Who><Foo/></Who>").into_bytes(),
        small("<Who x=\"1\"/>").into_bytes(),
        small("text").into_bytes(),
        small("<How><Description>a &lt; b</Description><Description/></How>").into_bytes(),
        small(
            "<WhereWhen><ObsDataLocation><ObservatoryLocation id=\"x\"/><ObservationLocation>\
             <AstroCoordSystem id=\"UTC-FK5-GEO\"/><AstroCoords coord_system_id=\"UTC-FK5-GEO\">\
             <Time unit=\"s\"><TimeInstant><ISOTime>2024-05-01T12:00:00</ISOTime></TimeInstant>\
             </Time><Position2D unit=\"deg\"><Name1>RA</Name1><Name2>Dec</Name2><Value2>\
             <C1>1.5</C1><C2>-2</C2></Value2><Error2Radius>0.1</Error2Radius></Position2D>\
             </AstroCoords></ObservationLocation></ObsDataLocation></WhereWhen>",
        )
        .into_bytes(),
    ];
    events.push(
        small("<Who><Date>2024-05-01T12:00:00</Date></Who>")
            .replace("voe:", "v:")
            .into_bytes(),
    );
    events
}

#[test]
fn a_text_of_many_references_is_read_by_the_fast_path() {
    // 20,000 references in one description (read once: the name search stops at the `;`), and
    // one without its `;` before the next tag (left to quick-xml, which refuses it).
    let gcn = String::from_utf8(GCN.to_vec()).expect("UTF-8 fixture");
    let many = "a &amp; b &#x3C; ".repeat(10_000);
    let payload = gcn.replacen(
        "<Who>",
        &format!("<Who><Description>{many}</Description>"),
        1,
    );
    let limits = ParseLimits::default();
    assert!(parse_plain(payload.as_bytes(), &limits).is_some());
    assert_agree(payload.as_bytes(), &limits).expect("agree");
    let broken = gcn.replacen("<Who>", "<Who><Description>a &amp b</Description>", 1);
    assert!(parse_plain(broken.as_bytes(), &limits).is_none());
    assert!(parse(broken.as_bytes(), &limits).is_err());
    assert_agree(broken.as_bytes(), &limits).expect("agree");
}

#[test]
fn the_fast_path_reads_voevents_and_the_schema_check_agrees() {
    let limits = ParseLimits::default();
    let (mut fast, mut refused) = (Vec::new(), Vec::new());
    for (i, payload) in voevents().iter().enumerate() {
        if parse(payload, &limits).is_err() {
            refused.push(i);
        }
        if parse_plain(payload, &limits).is_some() {
            fast.push(i);
        }
        assert_agree(payload, &limits).expect("agree");
    }
    // Not well-formed: the comment with `--` in it, the undeclared prefix `v:`.
    assert_eq!(refused, [3, 15]);
    // And the PI is left to quick-xml.
    assert_eq!(fast, [0, 1, 2, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
}

#[test]
fn known_roots_are_what_peers_send() {
    let vtp = build_ack("o", None, "t");
    let comet = comet("ack", "");
    let tags = [PYGCN_ACK.as_bytes(), comet.as_bytes(), &vtp[4..]];
    for ((head, tail, _), sent) in KNOWN_ROOTS.iter().zip(tags) {
        let tag = [b"<", *head, b"ack", *tail, b">"].concat();
        assert!(
            sent.windows(tag.len()).any(|w| w == tag),
            "{} not in {}",
            tag.escape_ascii(),
            sent.escape_ascii()
        );
    }
}

#[test]
fn known_roots_read_as_the_attributes_say_under_any_limits() {
    for (head, tail, attrs) in KNOWN_ROOTS {
        for role in ["ack", "nak", "iamalive", "authenticate", "bogus"] {
            let payload = [
                b"<?xml version='1.0' encoding='UTF-8'?><".as_slice(),
                head,
                role.as_bytes(),
                tail,
                b"><Origin>o</Origin></trn:Transport>",
            ]
            .concat();
            for attrs_max in [attrs - 1, attrs, 64] {
                for text_max in [2, 3, 11, 12, 1024] {
                    let limits = ParseLimits {
                        attrs_max,
                        text_max,
                        ..ParseLimits::default()
                    };
                    assert_agree(&payload, &limits).expect("agree");
                }
            }
            let plain = parse_plain(&payload, &ParseLimits::default());
            assert_eq!(plain.is_some(), role != "bogus", "{role}");
        }
    }
}

#[test]
fn common_declarations_read_as_written() {
    for decl in [
        "<?xml version='1.0' encoding='UTF-8'?>",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
        "<?xml version='1.0' encoding='utf-8'?>",
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>",
        "<?xml version='1.0' encoding='UTF-8'?",
        "<?xml version='1.0' encoding='UTF-8' ?>",
        "<?xml version='1.0' encoding='UTF-8'?><?xml version='1.0'?>",
    ] {
        let payload = format!("{decl}<Transport role=\"ack\"><Origin>o</Origin></Transport>");
        assert_agree(payload.as_bytes(), &ParseLimits::default()).expect("agree");
    }
}

// ---------------------------------------------------------------------------------------------
// Mutations

/// Byte strings worth splicing into a message.
const TOKENS: &[&[u8]] = &[
    b"<",
    b">",
    b"/",
    b"/>",
    b"</",
    b"&",
    b";",
    b"&amp;",
    b"&lt;",
    b"&#x41;",
    b"&#0;",
    b"&bogus;",
    b"\"",
    b"'",
    b"=",
    b" ",
    b"\t",
    b"\n",
    b"\r",
    b"\r\n",
    b"<!-- c -->",
    b"<!--",
    b"-->",
    b"<![CDATA[x]]>",
    b"]]>",
    b"<?pi x?>",
    b"<?xml version='1.0'?>",
    b"<!DOCTYPE x>",
    b"\xEF\xBB\xBF",
    b"\xC3\xA9",
    b"\xE9",
    b"\xFF",
    b"\x00",
    b"\x01",
    b"\xEF\xBF\xBE",
    b":",
    b"xmlns",
    b" xmlns:trn=\"u\"",
    b" role=\"nak\"",
    b" role=\"ack\"",
    b" version=\"2\"",
    b"<Origin>",
    b"</Origin>",
    b"<Origin/>",
    b"<Response>",
    b"</Response>",
    b"<TimeStamp>",
    b"<Meta>",
    b"</Meta>",
    b"<Result>",
    b"</Result>",
    b"<Param name=\"xpath-filter\" value=\"//x\"/>",
    b"<filter type=\"xpath\">//x</filter>",
    b"<b>",
    b"</b>",
    b"trn:",
    b"Transport",
    b"VOEvent",
    b" encoding='ISO-8859-1'",
    b"<a><b><c><d><e><f><g><h><i>",
    b"</i></h></g></f></e></d></c></b></a>",
    b"<Who>",
    b"</Who>",
    b"<Date>2024-05-01T12:00:00</Date>",
    b"<Param name=\"a\" value=\"1\"/>",
    b"<Group>",
    b"</Group>",
    b"<C1>1.5</C1>",
    b" role=\"test\"",
    b" ivorn=\"ivo://a.b/c#d\"",
    b" xmlns:voe=\"http://www.ivoa.net/xml/VOEvent/v2.0\"",
    b"<!-- x -- y -->",
    b"<!---->",
    b"<!-- a --->",
];

#[derive(Debug, Clone)]
enum Edit {
    Set(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Remove(prop::sample::Index),
    Truncate(prop::sample::Index),
    Splice(prop::sample::Index, prop::sample::Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    let index = any::<prop::sample::Index>;
    prop_oneof![
        1 => (index(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        1 => (index(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        1 => index().prop_map(Edit::Remove),
        1 => index().prop_map(Edit::Truncate),
        3 => (index(), index()).prop_map(|(i, t)| Edit::Splice(i, t)),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    let at = |i: &prop::sample::Index, len: usize| i.index(len + 1).min(len);
    match edit {
        Edit::Set(i, b) if !bytes.is_empty() => {
            let i = i.index(bytes.len());
            bytes[i] = *b;
        }
        Edit::Insert(i, b) => {
            let i = at(i, bytes.len());
            bytes.insert(i, *b);
        }
        Edit::Remove(i) if !bytes.is_empty() => {
            bytes.remove(i.index(bytes.len()));
        }
        Edit::Truncate(i) => {
            let i = at(i, bytes.len());
            bytes.truncate(i);
        }
        Edit::Splice(i, token) => {
            let i = at(i, bytes.len());
            let token = TOKENS[token.index(TOKENS.len())];
            bytes.splice(i..i, token.iter().copied());
        }
        Edit::Set(..) | Edit::Remove(_) => {}
    }
}

/// A Transport-like document built from parts: attributes in any order, children of every
/// kind, any separators.
fn assembled() -> impl Strategy<Value = Vec<u8>> {
    let decl = prop::sample::select(vec![
        "",
        "<?xml version='1.0' encoding='UTF-8'?>",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
        "<?xml version=\"1.0\"?>",
        "<?xml version='1.0' encoding='ISO-8859-1'?>",
        "<?xml version='1.0' standalone='yes'?>",
        "\u{FEFF}<?xml version='1.0' encoding='utf-8'?>",
        "<?xml encoding='UTF-8' version='1.0'?>",
    ]);
    let name = prop::sample::select(vec![
        "trn:Transport",
        "Transport",
        "Transport",
        "Transport",
        "x:Transport",
        "trn:Transport2",
        "VOEvent",
    ]);
    let role = prop::sample::select(vec![
        r#"role="ack""#,
        r#"role="ack""#,
        r#"role="iamalive""#,
        r#"role='nak'"#,
        r#"role="authenticate""#,
        r#"role="bogus""#,
        r#"role="ack" role="nak""#,
        "",
    ]);
    let others = prop::sample::subsequence(
        vec![
            r#"version="1.0""#,
            r#"xmlns:trn="http://telescope-networks.org/schema/Transport/v1.1""#,
            r#"xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance""#,
            r#"xsi:schemaLocation="a b""#,
            r#"xmlns="urn:x""#,
            r#"a="x&amp;y""#,
            r#"b="x>y""#,
            "c = 'q\"q'",
            r#"ivorn="ivo://a/b#c""#,
        ],
        0..=6,
    );
    let attrs = (role, others)
        .prop_map(|(role, mut others)| {
            others.push(role);
            others
        })
        .prop_shuffle();
    let child = prop::sample::select(vec![
        "<Origin>ivo://a/b#c</Origin>",
        "<Origin> ivo://a/b </Origin>",
        "<Origin></Origin>",
        "<Origin/>",
        "<Origin>ivo://&amp;x</Origin>",
        "<Origin><![CDATA[ivo://x]]></Origin>",
        "<Origin>ivo://\u{e9}</Origin>",
        "<Origin>a\r\nb</Origin>",
        "<Origin>x<!-- c -->y</Origin>",
        "<Origin>x<b>y</b>z</Origin>",
        "<Origin a='1'>o</Origin>",
        "<trn:Origin>p</trn:Origin>",
        "<Response>ivo://me</Response>",
        "<Response/>",
        "<TimeStamp>2024-05-01T12:00:00</TimeStamp>",
        "<TimeStamp>\r\n t \r\n</TimeStamp>",
        "<Meta><Result>Event rejected: x</Result></Meta>",
        "<Meta><Result>a&lt;b</Result><Result>second</Result></Meta>",
        "<Meta><Param name=\"xpath-filter\" value=\"//a\"/><Param name=\"n\"/></Meta>",
        "<Meta><filter type=\"xpath\">//x</filter><filter>y</filter></Meta>",
        "<Meta/>",
        "<Other x=\"1\" x=\"2\"/>",
        "<Other><Origin>nested</Origin></Other>",
        "<a><b><c><d><e><f><g><h><i/></h></g></f></e></d></c></b></a>",
    ]);
    let children = (
        prop::sample::select(vec![
            "<Origin>ivo://a/b#c</Origin>",
            "<Origin>o</Origin>",
            "",
        ]),
        prop::collection::vec(child, 0..6),
    )
        .prop_map(|(origin, mut children)| {
            children.push(origin);
            children
        })
        .prop_shuffle();
    let sep = prop::sample::select(vec!["", "\n", "\n  ", "\r\n", "\t", " "]);
    let tail = prop::sample::select(vec![
        "",
        "",
        "",
        "\n",
        "\n",
        "<!-- x -->",
        "<?pi?>",
        " junk",
        "<a/>",
        "&amp;",
    ]);
    (decl, name, attrs, children, sep, tail).prop_map(|(decl, name, attrs, children, sep, tail)| {
        let mut doc = format!("{decl}{sep}<{name}");
        for attr in attrs {
            doc.push(' ');
            doc.push_str(attr);
        }
        doc.push('>');
        for child in children {
            doc.push_str(sep);
            doc.push_str(child);
        }
        doc.push_str(&format!("{sep}</{name}>{tail}"));
        doc.into_bytes()
    })
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    let mut seeds = peer_messages();
    seeds.extend(other_messages());
    seeds.extend(voevents());
    let seed = prop_oneof![prop::sample::select(seeds), assembled()];
    let edits = prop_oneof![
        2 => Just(Vec::new()),
        3 => prop::collection::vec(edit(), 1..4),
    ];
    (seed, edits).prop_map(|(mut bytes, edits)| {
        for edit in &edits {
            apply(&mut bytes, edit);
        }
        bytes
    })
}

fn limits() -> impl Strategy<Value = ParseLimits> {
    prop_oneof![
        Just(ParseLimits::default()),
        (1usize..10, 0usize..8, 0usize..4, 0usize..80).prop_map(
            |(depth_max, attrs_max, transport_params_max, text_max)| ParseLimits {
                depth_max,
                attrs_max,
                transport_params_max,
                text_max,
            }
        ),
    ]
}

proptest! {
    // A fixed seed: the same cases on every run (many, as each takes microseconds).
    #![proptest_config(ProptestConfig {
        cases: 20_000,
        rng_seed: prop::test_runner::RngSeed::Fixed(0x5EED_AC4D),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn fast_path_agrees_with_quick_xml(payload in payload(), limits in limits()) {
        assert_agree(&payload, &limits)?;
    }
}
