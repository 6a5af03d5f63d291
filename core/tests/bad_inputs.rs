//! Every way a peer's bytes can be refused, on every connection role that reads them.
//!
//! One table: each row is a hostile or broken input, the role of the connection it arrives on,
//! and what the node must do about it. After every row the node must still serve everyone else:
//! a good submission on a fresh intake is acked and forwarded to a feed that was connected
//! before the bad input, and a connection that was kept open still works.

mod common;

use common::*;
use vtp_core::message::TransportRole;
use vtp_core::{Action, CloseReason, ConnId, ConnRole, Event, ListenerRole, Violation};

/// Where the bad bytes arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// An author's connection to our receive port.
    Intake,
    /// A subscriber's connection to our broadcast port.
    Feed,
    /// Our connection to an upstream broker.
    Subscription,
}

/// What the node must do. Each variant carries a substring of the reason it must give (the nak
/// `Result`, or the detail of the `ProtocolViolation` event).
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// Exactly one nak whose `Result` contains the text, then a close; nothing else written.
    NakAndClose(&'static str),
    /// A close for a framing error whose detail contains the text; nothing written.
    Close(&'static str),
    /// Nothing written, no close, a `ProtocolViolation` whose detail contains the text.
    IgnoredKeepOpen(&'static str),
}

use Outcome::{Close, IgnoredKeepOpen, NakAndClose};
use Role::{Feed, Intake, Subscription};

struct Row {
    name: &'static str,
    bytes: Vec<u8>,
    role: Role,
    outcome: Outcome,
}

fn row(name: &'static str, bytes: &[u8], role: Role, outcome: Outcome) -> Row {
    Row {
        name,
        bytes: bytes.to_vec(),
        role,
        outcome,
    }
}

const V2: &str = "http://www.ivoa.net/xml/VOEvent/v2.0";

/// A framed VOEvent 2.0 document whose root has `attrs` and whose body is `body`.
fn event_with(attrs: &str, body: &str) -> Vec<u8> {
    framed(format!("<voe:VOEvent xmlns:voe=\"{V2}\" {attrs}>{body}</voe:VOEvent>").as_bytes())
        .to_vec()
}

fn good_attrs() -> &'static str {
    "ivorn=\"ivo://example.org/survey#bad\" role=\"observation\" version=\"2.0\""
}

fn doctype() -> Vec<u8> {
    let mut p = b"<?xml version=\"1.0\"?><!DOCTYPE voe:VOEvent>".to_vec();
    p.extend_from_slice(&event_with(good_attrs(), "<Who/>")[4..]);
    framed(&p).to_vec()
}

fn billion_laughs() -> Vec<u8> {
    let mut s = String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n <!ENTITY lol \"lol\">\n");
    for i in 1..=9 {
        let prev = if i == 1 {
            "lol".to_owned()
        } else {
            format!("lol{}", i - 1)
        };
        s.push_str(&format!(
            " <!ENTITY lol{i} \"{}\">\n",
            format!("&{prev};").repeat(10)
        ));
    }
    s.push_str("]>\n<VOEvent ivorn=\"ivo://a.b/c#&lol9;\" role=\"test\">&lol9;</VOEvent>");
    framed(s.as_bytes()).to_vec()
}

fn xxe() -> Vec<u8> {
    framed(
        b"<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>\
          <VOEvent ivorn=\"ivo://a.b/c#1\" role=\"test\"><What>&xxe;</What></VOEvent>",
    )
    .to_vec()
}

fn deep() -> Vec<u8> {
    let depth = 100_000;
    let body = format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth));
    event_with(good_attrs(), &body)
}

fn many_attributes() -> Vec<u8> {
    let attrs: String = (0..65).map(|i| format!(" a{i}=\"{i}\"")).collect();
    event_with(good_attrs(), &format!("<Why{attrs}/>"))
}

fn long_attribute() -> Vec<u8> {
    // The ivorn is captured, so its size is bounded (uncaptured values only by the frame).
    let attrs = format!(
        "ivorn=\"ivo://example.org/survey#{}\" role=\"observation\" version=\"2.0\"",
        "x".repeat(64 * 1024)
    );
    event_with(&attrs, "<Who/>")
}

fn not_utf8() -> Vec<u8> {
    // A Latin-1 'é' (0xE9) in a payload that declares no encoding, so it must be UTF-8.
    let mut p = format!("<voe:VOEvent xmlns:voe=\"{V2}\" {}><Why>caf", good_attrs()).into_bytes();
    p.push(0xE9);
    p.extend_from_slice(b"</Why></voe:VOEvent>");
    framed(&p).to_vec()
}

fn utf16_declared() -> Vec<u8> {
    let mut p = b"<?xml version=\"1.0\" encoding=\"UTF-16\"?>".to_vec();
    p.extend_from_slice(&event_with(good_attrs(), "<Who/>")[4..]);
    framed(&p).to_vec()
}

fn utf16_bom() -> Vec<u8> {
    let text = format!("<VOEvent xmlns=\"{V2}\" {}/>", good_attrs());
    let mut p = vec![0xFF, 0xFE];
    for unit in text.encode_utf16() {
        p.extend_from_slice(&unit.to_le_bytes());
    }
    framed(&p).to_vec()
}

fn transport_xml(attrs: &str, body: &str) -> Vec<u8> {
    framed(
        format!(
            "<trn:Transport xmlns:trn=\"http://www.telescope-networks.org/xml/Transport/v1.1\" \
             version=\"1.0\" {attrs}>{body}</trn:Transport>"
        )
        .as_bytes(),
    )
    .to_vec()
}

fn little_endian_prefix() -> Vec<u8> {
    let payload = event_xml("ivo://example.org/survey#le");
    let mut bytes = (payload.len() as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(&payload);
    bytes
}

fn rows() -> Vec<Row> {
    let doctype = doctype();
    let laughs = billion_laughs();
    let xxe = xxe();
    let entity = event_with(good_attrs(), "<Why>&nbsp;</Why>");
    let malformed = event_with(good_attrs(), "<Who></What>");
    let not_utf8 = not_utf8();
    let utf16 = utf16_declared();
    let utf16_bom = utf16_bom();
    let deep = deep();
    let attrs = many_attributes();
    let long_attr = long_attribute();
    let unknown_root = framed(b"<html><body>hello</body></html>").to_vec();
    let no_root = framed(b"<?xml version=\"1.0\"?>\n<!-- nothing here -->\n").to_vec();
    let two_roots = {
        let one = &event_with(good_attrs(), "<Who/>")[4..];
        framed(&[one, one].concat()).to_vec()
    };
    let text_after = {
        let mut p = event_with(good_attrs(), "<Who/>")[4..].to_vec();
        p.extend_from_slice(b"\ntrailing words");
        framed(&p).to_vec()
    };
    let no_ivorn = event_with("role=\"observation\" version=\"2.0\"", "<Who/>");
    let bad_role = event_with(
        "ivorn=\"ivo://example.org/survey#r\" role=\"alert\" version=\"2.0\"",
        "<Who/>",
    );
    let no_transport_role = transport_xml("", &format!("<Origin>{LOCAL}</Origin>"));
    let no_origin = transport_xml("role=\"iamalive\"", "<TimeStamp>t</TimeStamp>");
    let unknown_transport_role =
        transport_xml("role=\"hello\"", &format!("<Origin>{LOCAL}</Origin>"));
    let zero_length = vec![0u8; 4];
    let oversize = {
        let mut b = 0x7fff_ffffu32.to_be_bytes().to_vec();
        b.extend_from_slice(b"<VOEvent");
        b
    };
    let little_endian = little_endian_prefix();

    const DOCTYPE: &str = "DOCTYPE/entity declarations are not allowed";
    const ENTITY: &str = "undefined entity reference `&nbsp;`";
    const MALFORMED: &str = "malformed XML at byte";
    const NOT_UTF8: &str = "invalid UTF-8 at byte";
    const DEEP: &str = "nested more than 64 levels deep";
    const ATTRS: &str = "more than 64 attributes";
    const LONG: &str = "attribute value (bytes) exceeds the limit of 65536";
    const ROOT: &str = "unknown root element `html`";
    const NO_ROOT: &str = "no root element";
    const TWO: &str = "more than one root element";
    const AFTER: &str = "text after the root element";
    const IVORN: &str = "VOEvent has no ivorn attribute";
    const ROLE: &str = "VOEvent role `alert` is not one of";
    const T_ROLE: &str = "Transport message has no role attribute";
    const ORIGIN: &str = "Transport message has no Origin element";
    const T_UNKNOWN: &str = "Transport role `hello` is not one of";
    const EMPTY: &str = "empty payload";
    const OVERSIZE: &str = "frame length 2147483647 exceeds the limit of 1048576 bytes";
    const LE: &str = "little-endian prefix? byte-swapped it reads";

    vec![
        row("doctype", &doctype, Intake, NakAndClose(DOCTYPE)),
        row("doctype", &doctype, Feed, IgnoredKeepOpen(DOCTYPE)),
        row("doctype", &doctype, Subscription, IgnoredKeepOpen(DOCTYPE)),
        row("billion laughs", &laughs, Intake, NakAndClose(DOCTYPE)),
        row("billion laughs", &laughs, Feed, IgnoredKeepOpen(DOCTYPE)),
        row(
            "billion laughs",
            &laughs,
            Subscription,
            IgnoredKeepOpen(DOCTYPE),
        ),
        row("xxe", &xxe, Intake, NakAndClose(DOCTYPE)),
        row("xxe", &xxe, Feed, IgnoredKeepOpen(DOCTYPE)),
        row("xxe", &xxe, Subscription, IgnoredKeepOpen(DOCTYPE)),
        row("undefined entity", &entity, Intake, NakAndClose(ENTITY)),
        row("undefined entity", &entity, Feed, IgnoredKeepOpen(ENTITY)),
        row(
            "undefined entity",
            &entity,
            Subscription,
            IgnoredKeepOpen(ENTITY),
        ),
        row("malformed", &malformed, Intake, NakAndClose(MALFORMED)),
        row("malformed", &malformed, Feed, IgnoredKeepOpen(MALFORMED)),
        row(
            "malformed",
            &malformed,
            Subscription,
            IgnoredKeepOpen(MALFORMED),
        ),
        row(
            "non-UTF-8 undeclared",
            &not_utf8,
            Intake,
            NakAndClose(NOT_UTF8),
        ),
        row(
            "non-UTF-8 undeclared",
            &not_utf8,
            Feed,
            IgnoredKeepOpen(NOT_UTF8),
        ),
        row(
            "non-UTF-8 undeclared",
            &not_utf8,
            Subscription,
            IgnoredKeepOpen(NOT_UTF8),
        ),
        row(
            "UTF-16 declared",
            &utf16,
            Intake,
            NakAndClose("unsupported encoding `UTF-16`"),
        ),
        row(
            "UTF-16 declared",
            &utf16,
            Feed,
            IgnoredKeepOpen("unsupported encoding `UTF-16`"),
        ),
        row(
            "UTF-16 declared",
            &utf16,
            Subscription,
            IgnoredKeepOpen("unsupported encoding"),
        ),
        row(
            "UTF-16LE BOM",
            &utf16_bom,
            Intake,
            NakAndClose("unsupported encoding `UTF-16LE`"),
        ),
        row(
            "UTF-16LE BOM",
            &utf16_bom,
            Feed,
            IgnoredKeepOpen("`UTF-16LE`"),
        ),
        row(
            "UTF-16LE BOM",
            &utf16_bom,
            Subscription,
            IgnoredKeepOpen("`UTF-16LE`"),
        ),
        row("100,000 deep", &deep, Intake, NakAndClose(DEEP)),
        row("100,000 deep", &deep, Feed, IgnoredKeepOpen(DEEP)),
        row("100,000 deep", &deep, Subscription, IgnoredKeepOpen(DEEP)),
        row("65 attributes", &attrs, Intake, NakAndClose(ATTRS)),
        row("65 attributes", &attrs, Feed, IgnoredKeepOpen(ATTRS)),
        row(
            "65 attributes",
            &attrs,
            Subscription,
            IgnoredKeepOpen(ATTRS),
        ),
        row("64 KiB attribute", &long_attr, Intake, NakAndClose(LONG)),
        row("64 KiB attribute", &long_attr, Feed, IgnoredKeepOpen(LONG)),
        row(
            "64 KiB attribute",
            &long_attr,
            Subscription,
            IgnoredKeepOpen(LONG),
        ),
        row("unknown root", &unknown_root, Intake, NakAndClose(ROOT)),
        row("unknown root", &unknown_root, Feed, IgnoredKeepOpen(ROOT)),
        row(
            "unknown root",
            &unknown_root,
            Subscription,
            IgnoredKeepOpen(ROOT),
        ),
        row("no root", &no_root, Intake, NakAndClose(NO_ROOT)),
        row("no root", &no_root, Feed, IgnoredKeepOpen(NO_ROOT)),
        row("no root", &no_root, Subscription, IgnoredKeepOpen(NO_ROOT)),
        row("two roots", &two_roots, Intake, NakAndClose(TWO)),
        row("two roots", &two_roots, Feed, IgnoredKeepOpen(TWO)),
        row("two roots", &two_roots, Subscription, IgnoredKeepOpen(TWO)),
        row("text after root", &text_after, Intake, NakAndClose(AFTER)),
        row("text after root", &text_after, Feed, IgnoredKeepOpen(AFTER)),
        row(
            "text after root",
            &text_after,
            Subscription,
            IgnoredKeepOpen(AFTER),
        ),
        row(
            "VOEvent without ivorn",
            &no_ivorn,
            Intake,
            NakAndClose(IVORN),
        ),
        row(
            "VOEvent without ivorn",
            &no_ivorn,
            Feed,
            IgnoredKeepOpen(IVORN),
        ),
        row(
            "VOEvent without ivorn",
            &no_ivorn,
            Subscription,
            IgnoredKeepOpen(IVORN),
        ),
        row("bad event role", &bad_role, Intake, NakAndClose(ROLE)),
        row("bad event role", &bad_role, Feed, IgnoredKeepOpen(ROLE)),
        row(
            "bad event role",
            &bad_role,
            Subscription,
            IgnoredKeepOpen(ROLE),
        ),
        row(
            "Transport without role",
            &no_transport_role,
            Intake,
            NakAndClose(T_ROLE),
        ),
        row(
            "Transport without role",
            &no_transport_role,
            Feed,
            IgnoredKeepOpen(T_ROLE),
        ),
        row(
            "Transport without role",
            &no_transport_role,
            Subscription,
            IgnoredKeepOpen(T_ROLE),
        ),
        row(
            "Transport without Origin",
            &no_origin,
            Intake,
            NakAndClose(ORIGIN),
        ),
        row(
            "Transport without Origin",
            &no_origin,
            Feed,
            IgnoredKeepOpen(ORIGIN),
        ),
        row(
            "Transport without Origin",
            &no_origin,
            Subscription,
            IgnoredKeepOpen(ORIGIN),
        ),
        row(
            "unknown Transport role",
            &unknown_transport_role,
            Intake,
            NakAndClose(T_UNKNOWN),
        ),
        row(
            "unknown Transport role",
            &unknown_transport_role,
            Feed,
            IgnoredKeepOpen(T_UNKNOWN),
        ),
        row(
            "unknown Transport role",
            &unknown_transport_role,
            Subscription,
            IgnoredKeepOpen(T_UNKNOWN),
        ),
        row(
            "zero-length frame",
            &zero_length,
            Intake,
            NakAndClose(EMPTY),
        ),
        row(
            "zero-length frame",
            &zero_length,
            Feed,
            IgnoredKeepOpen(EMPTY),
        ),
        row(
            "zero-length frame",
            &zero_length,
            Subscription,
            IgnoredKeepOpen(EMPTY),
        ),
        row("oversize prefix", &oversize, Intake, NakAndClose(OVERSIZE)),
        row("oversize prefix", &oversize, Feed, Close(OVERSIZE)),
        row("oversize prefix", &oversize, Subscription, Close(OVERSIZE)),
        row(
            "little-endian prefix",
            &little_endian,
            Intake,
            NakAndClose(LE),
        ),
        row("little-endian prefix", &little_endian, Feed, Close(LE)),
        row(
            "little-endian prefix",
            &little_endian,
            Subscription,
            Close(LE),
        ),
    ]
}

/// A broker with one healthy feed and one live subscription to an upstream.
struct Setup {
    h: Harness,
    healthy: ConnId,
    upstream: ConnId,
}

fn setup() -> Setup {
    let mut h = Harness::new(upstream_config());
    let (upstream, healthy) = h.connect_upstream_and_feed();
    Setup {
        h,
        healthy,
        upstream,
    }
}

fn violations(events: &[Event], conn: ConnId) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ProtocolViolation { conn: c, detail } if *c == conn => Some(detail.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn every_bad_input_gets_its_outcome_and_the_node_keeps_serving() {
    let rows = rows();
    assert_eq!(rows.len(), 69);
    for (i, r) in rows.iter().enumerate() {
        let ctx = format!("row {i} {:?} on {:?}", r.name, r.role);
        let Setup {
            mut h,
            healthy,
            upstream,
        } = setup();
        let target = match r.role {
            Intake => h.accept(ListenerRole::Receive),
            Feed => h.accept(ListenerRole::Broadcast),
            Subscription => upstream,
        };
        h.take();

        h.input(target, &r.bytes);
        let acts = std::mem::take(&mut h.actions);
        let events = std::mem::take(&mut h.events);
        assert_eq!(deliveries(&acts), 0, "{ctx}: {acts:?}");
        assert!(forwards(&acts).is_empty(), "{ctx}: {acts:?}");
        assert_eq!(h.node.seen_len(), 0, "{ctx}");
        let written = frames_to(&acts, target);
        match r.outcome {
            NakAndClose(why) => {
                assert_eq!(written.len(), 1, "{ctx}: exactly one reply: {acts:?}");
                let nak = transport(&written[0]);
                assert_eq!(nak.role, TransportRole::Nak, "{ctx}");
                let result = nak.result.as_deref().unwrap_or_default();
                assert!(result.starts_with("Event rejected: "), "{ctx}: {result}");
                assert!(result.contains(why), "{ctx}: want {why:?} in {result:?}");
                assert_eq!(
                    &*nak.origin, LOCAL,
                    "{ctx}: unreadable ivorn: our own Origin"
                );
                let nak_at = acts.iter().position(|a| matches!(a, Action::Nak { .. }));
                let close_at = acts
                    .iter()
                    .position(|a| matches!(a, Action::Close { conn, .. } if *conn == target));
                match (nak_at, close_at) {
                    (Some(n), Some(c)) => assert!(n < c, "{ctx}: nak before close: {acts:?}"),
                    _ => panic!("{ctx}: want a nak and a close: {acts:?}"),
                }
                assert_eq!(h.node.role(target), None, "{ctx}: forgotten");
            }
            Close(why) => {
                assert!(written.is_empty(), "{ctx}: nothing written: {acts:?}");
                match closed(&acts, target) {
                    Some(CloseReason::FramingError(detail)) => {
                        assert!(detail.to_string().contains(why), "{ctx}: {detail}");
                    }
                    other => panic!("{ctx}: want a framing-error close, got {other:?}"),
                }
                assert!(
                    violations(&events, target).iter().any(|d| d.contains(why)),
                    "{ctx}: {events:?}"
                );
                assert_eq!(h.node.role(target), None, "{ctx}: forgotten");
            }
            IgnoredKeepOpen(why) => {
                assert!(written.is_empty(), "{ctx}: nothing written: {acts:?}");
                assert!(
                    closed(&acts, target).is_none(),
                    "{ctx}: kept open: {acts:?}"
                );
                let v = violations(&events, target);
                assert_eq!(v.len(), 1, "{ctx}: {events:?}");
                assert!(v[0].contains(why), "{ctx}: want {why:?} in {:?}", v[0]);
                assert!(v[0].contains("ignored"), "{ctx}: {}", v[0]);
                let want = match r.role {
                    Intake => unreachable!("an intake never ignores its submission"),
                    Feed => ConnRole::Feed,
                    Subscription => ConnRole::Subscription,
                };
                assert_eq!(h.node.role(target), Some(want), "{ctx}");
            }
        }
        // The fault is typed: a framing violation, or a parse error naming the connection's role.
        let on = match r.role {
            Intake => ConnRole::Intake,
            Feed => ConnRole::Feed,
            Subscription => ConnRole::Subscription,
        };
        let faults: Vec<&Violation> = events
            .iter()
            .filter_map(|e| match e {
                Event::Rejected { conn, reason, .. }
                | Event::ProtocolViolation {
                    conn,
                    detail: reason,
                } if *conn == target => Some(reason),
                _ => None,
            })
            .collect();
        match faults.as_slice() {
            [Violation::Frame(_)] => assert!(
                matches!(
                    closed(&acts, target),
                    Some(CloseReason::FramingError(Violation::Frame(_)))
                ),
                "{ctx}: {acts:?}"
            ),
            [Violation::Unparsable { on: o, .. }] => assert_eq!(*o, on, "{ctx}"),
            other => panic!("{ctx}: want one typed fault, got {other:?}"),
        }
        if matches!(r.role, Intake) {
            assert!(
                events.iter().all(|e| !matches!(e, Event::Accepted { .. })),
                "{ctx}"
            );
        }

        // Everyone else is still served.
        let ivorn = format!("ivo://example.org/survey#after-{i}");
        let author = h.accept(ListenerRole::Receive);
        h.input(author, &framed(&event_xml(&ivorn)));
        let acts = h.take();
        let reply = frames_to(&acts, author);
        assert_eq!(reply.len(), 1, "{ctx}: {acts:?}");
        let ack = transport(&reply[0]);
        assert_eq!(ack.role, TransportRole::Ack, "{ctx}");
        assert_eq!(&*ack.origin, ivorn, "{ctx}");
        assert_eq!(closed(&acts, author), Some(&CloseReason::Done), "{ctx}");
        assert_eq!(deliveries(&acts), 1, "{ctx}");
        let kept_feed = matches!((r.role, r.outcome), (Feed, IgnoredKeepOpen(_)));
        let want = if kept_feed {
            vec![healthy, target]
        } else {
            vec![healthy]
        };
        assert_eq!(forwards(&acts), want, "{ctx}");

        // The upstream, if it was kept, still delivers.
        if h.node.role(upstream).is_some() {
            let ivorn = format!("ivo://example.org/survey#upstream-{i}");
            h.input(upstream, &framed(&event_xml(&ivorn)));
            let acts = h.take();
            let reply = frames_to(&acts, upstream);
            assert_eq!(reply.len(), 1, "{ctx}: {acts:?}");
            assert_eq!(transport(&reply[0]).role, TransportRole::Ack, "{ctx}");
            assert!(forwards(&acts).contains(&healthy), "{ctx}: {acts:?}");
            assert_eq!(deliveries(&acts), 1, "{ctx}");
        } else {
            assert!(
                matches!((r.role, r.outcome), (Subscription, Close(_))),
                "{ctx}: the subscription was lost"
            );
        }
    }
}
