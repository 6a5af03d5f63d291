//! `message_parse`: the classifier on arbitrary payloads.
//!
//! Input format: the whole input is one frame payload (so any XML file is a seed as it is).
//! Checked: no panic; results are well-formed (spans inside the payload, required fields
//! present and trimmed, bounded error messages); a parse under tight limits that succeeds gives
//! exactly the result of the default limits; and every accepted Transport message, rebuilt with
//! [`build_transport`], parses back to the same values.

use vtp_core::message::{
    self, EventRole, Message, ParseError, ParseLimits, Transport, VOEVENT_1_1_NS, VOEVENT_2_0_NS,
    VoEvent, VoEventNamespace, build_transport,
};
use vtp_core::{EventKey, schema};

/// Limits small enough that fuzzed inputs hit every one of them.
pub(crate) const TIGHT: ParseLimits = ParseLimits {
    depth_max: 4,
    attrs_max: 4,
    transport_params_max: 2,
    text_max: 64,
};

/// Longest error message, in characters, that a hostile payload may cause. Peer strings in
/// messages are cut to 64 characters, so this leaves room for two of them and the wording.
const ERROR_CHARS_MAX: usize = 400;

/// The fuzz body.
pub(crate) fn message_parse(data: &[u8]) {
    let loose = ParseLimits::default();
    let full = message::parse(data, &loose);
    check(data, &full);
    let tight = message::parse(data, &TIGHT);
    check(data, &tight);
    if let Ok(small) = &tight {
        assert_eq!(
            full.as_ref().ok(),
            Some(small),
            "tight limits changed the result"
        );
    }
    if let Ok(Message::Transport(t)) = &full {
        round_trip(t);
    }
    single_pass(data, &full, &loose);
    single_pass(data, &tight, &TIGHT);
    summary(data, &full);
}

/// The archive's summary: bounded values, and, for a payload the parser accepts within the
/// summary's depth (reading every element stops at it, skipping reads on), the same summary as
/// reading every element.
fn summary(data: &[u8], parsed: &Result<Message<'_>, ParseError>) {
    let fast = vtp_core::summary::summarize(data);
    for text in [&fast.author_ivorn, &fast.date].into_iter().flatten() {
        assert!(!text.is_empty() && text.len() <= vtp_core::summary::TEXT_MAX);
    }
    if let Some(p) = &fast.position {
        assert!((0.0..360.0).contains(&p.ra) && (-90.0..=90.0).contains(&p.dec));
        assert!(p.error.is_none_or(|e| e.is_finite() && e >= 0.0));
    }
    let shallow = ParseLimits {
        depth_max: vtp_core::summary::DEPTH_MAX - 1,
        ..ParseLimits::default()
    };
    if parsed.is_ok() && message::parse(data, &shallow).is_ok() {
        assert_eq!(
            fast,
            vtp_core::testing::summarize_every_element(data),
            "summary: skipping subtrees changed it"
        );
    }
    // An accepted event's Who and WhereWhen, where the parser located them, summarise it.
    if let Ok(Message::VoEvent(ev)) = parsed
        && let Some(spans) = &ev.spans
    {
        assert_eq!(
            vtp_core::summary::summarize_spans(data, spans),
            fast,
            "summary: the parser's spans changed it"
        );
    }
}

/// The parse with the schema check in its pass gives `parse`'s result, and for a VOEvent the
/// verdict of the schema check reading the element on its own.
fn single_pass(data: &[u8], parsed: &Result<Message<'_>, ParseError>, limits: &ParseLimits) {
    let single = schema::parse_and_validate(data, limits);
    match (parsed, single) {
        (Err(e), Err(single)) => assert_eq!(*e, single, "single pass: another parse error"),
        (Ok(message), Ok(single)) => {
            assert_eq!(*message, single.message, "single pass: another message");
            let alone = match message {
                Message::VoEvent(ev) => Some(schema::validate_voevent_2_0(
                    data,
                    ev.element.clone(),
                    limits,
                )),
                _ => None,
            };
            assert_eq!(single.schema, alone, "single pass: another schema verdict");
        }
        (parsed, single) => panic!("single pass: {single:?} where parse gave {parsed:?}"),
    }
}

fn check(data: &[u8], result: &Result<Message<'_>, ParseError>) {
    match result {
        Ok(Message::VoEvent(ev)) => check_event(data, ev),
        Ok(Message::Transport(t)) => check_transport(t),
        Ok(other) => panic!("unknown message kind {other:?}"),
        Err(e) => {
            let text = e.to_string();
            assert!(!text.is_empty());
            assert!(
                text.chars().count() <= ERROR_CHARS_MAX,
                "error message of {} characters: {text:.200}",
                text.chars().count()
            );
            if let ParseError::Malformed { offset, .. } | ParseError::NotUtf8 { offset } = e {
                assert!(*offset <= data.len(), "error offset {offset} past the end");
            }
        }
    }
}

fn check_event(data: &[u8], ev: &VoEvent<'_>) {
    assert!(!ev.ivorn.is_empty(), "empty ivorn accepted");
    let span = ev.element.clone();
    assert!(
        span.start < span.end && span.end <= data.len(),
        "span {span:?}"
    );
    assert_eq!(data[span.start], b'<');
    assert_eq!(data[span.end - 1], b'>');
    if !ev.role_given {
        assert_eq!(ev.role, EventRole::Observation);
    }
    let expected = match ev.namespace_uri.as_deref() {
        None | Some("") => VoEventNamespace::None,
        Some(VOEVENT_2_0_NS) => VoEventNamespace::V2_0,
        Some(VOEVENT_1_1_NS) => VoEventNamespace::V1_1,
        Some(_) => VoEventNamespace::Other,
    };
    assert_eq!(ev.namespace, expected);
    let _ = EventKey::of_element(&data[span]);
}

fn check_transport(t: &Transport<'_>) {
    assert!(!t.origin.is_empty(), "empty Origin accepted");
    assert_trimmed(&t.origin);
    if let Some(r) = &t.response {
        assert_trimmed(r);
    }
    if let Some(ts) = &t.timestamp {
        assert_trimmed(ts);
    }
    assert!(t.params.len() + t.legacy_filters.len() <= ParseLimits::default().transport_params_max);
    let _ = t.xpath_filters().count();
}

fn assert_trimmed(s: &str) {
    let xml_ws = [' ', '\t', '\n', '\r'];
    assert_eq!(s.trim_matches(xml_ws), s, "value not trimmed");
}

/// Rebuilding a parsed Transport message and parsing it again gives the same values.
fn round_trip(t: &Transport<'_>) {
    let params: Vec<(&str, &str)> = t.params.iter().map(|(n, v)| (&**n, &**v)).collect();
    let frame = build_transport(
        t.role,
        &t.origin,
        t.response.as_deref(),
        t.timestamp.as_deref().unwrap_or(""),
        &params,
        t.result.as_deref(),
    );
    // Escaping may lengthen a value past the original's text limit; that limit is not the point.
    let unlimited = ParseLimits {
        text_max: usize::MAX,
        ..ParseLimits::default()
    };
    let back = match message::parse(&frame[4..], &unlimited) {
        Ok(Message::Transport(back)) => back,
        other => panic!("rebuilt Transport does not parse back: {other:?}"),
    };
    assert_eq!(back.role, t.role);
    assert_eq!(back.origin, t.origin);
    assert_eq!(back.response, t.response);
    if t.timestamp.is_some() {
        assert_eq!(back.timestamp, t.timestamp);
    }
    assert_eq!(back.params, t.params);
    assert_eq!(back.result, t.result);
}
