//! Differential test of the VOEvent 2.0 schema check against lxml, the validator Comet uses.
//!
//! `data/schema/expected.tsv` (one row per corpus packet) and `data/schema/values.tsv` (one row
//! per atomic value or structure snippet, embedded in a small packet) hold lxml's verdicts,
//! written by `data/schema/gen_expected.py` with the `VOEvent-v2.0.xsd` shipped in Comet 3.1.0,
//! exactly as Comet's receiver validates (see the script). vtp's verdict is the receiver's:
//! `message::parse`, then `schema::validate_voevent_2_0` on the VOEvent element. (The IVOID
//! check is a separate receiver check, outside the schema, and is not involved.)
//!
//! Every row must agree, except the deviations listed in [`DEVIATIONS`] with their reason.
//! Run with `--nocapture` to see vtp's message for each invalid packet.

mod common;

use common::*;
use vtp_core::config::{AcceptVersions, SchemaCheck};
use vtp_core::message::{self, Message, ParseLimits, TransportRole};
use vtp_core::schema::{parse_and_validate, validate_voevent_2_0};
use vtp_core::{Config, ListenerRole};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/schema");

/// Rows (file name, or the document of a value case) where vtp knowingly differs from lxml,
/// with the reason.
const DEVIATIONS: &[(&str, &str)] = &[(
    "<voe:VOEvent xmlns:voe=\"http://www.ivoa.net/xml/VOEvent/v2.0\" \
     xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
     xmlns:xs=\"http://www.w3.org/2001/XMLSchema\" ivorn=\"\" role=\"test\" \
     version=\"2.0\"></voe:VOEvent>",
    "an empty ivorn is a valid (empty) xs:anyURI, but vtp's parser refuses an event without an \
     IVORN (ParseError::MissingIvorn) before the schema check; Comet naks it too, at its IVOID \
     check, so the receiver's answer is the same",
)];

/// vtp's verdict on a payload, as the receiver reaches it: `Err(message)` when refused.
///
/// Both ways the receiver can reach it must agree: `parse` then `validate_voevent_2_0` on the
/// element, and the single pass of `parse_and_validate` (what a node runs).
fn vtp_verdict(bytes: &[u8]) -> Result<(), String> {
    let limits = ParseLimits::default();
    let single = parse_and_validate(bytes, &limits);
    let verdict = match message::parse(bytes, &limits) {
        Err(e) => {
            assert_eq!(single.as_ref().err(), Some(&e), "parse error");
            return Err(format!("(parse) {e}"));
        }
        Ok(Message::VoEvent(ev)) => validate_voevent_2_0(bytes, ev.element, &limits),
        Ok(other) => return Err(format!("not a VOEvent: {other:?}")),
    };
    let single = single.expect("parse_and_validate parses what parse does");
    assert_eq!(single.schema.as_ref(), Some(&verdict), "single pass");
    verdict.map_err(|e| e.to_string())
}

/// The data rows of a TSV file: the first two fields and the rest of the line.
fn rows(name: &str) -> Vec<(String, bool, String)> {
    let path = format!("{DATA}/{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let mut fields = line.splitn(3, '\t');
            let first = fields.next().expect("a first field").to_owned();
            let valid = match fields.next() {
                Some("1") => true,
                Some("0") => false,
                other => panic!("{name}: bad verdict {other:?} in {line:?}"),
            };
            (first, valid, fields.next().unwrap_or_default().to_owned())
        })
        .collect()
}

fn deviation(key: &str) -> Option<&'static str> {
    DEVIATIONS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, why)| *why)
}

#[test]
fn corpus_agrees_with_lxml() {
    let rows = rows("expected.tsv");
    let valid = rows.iter().filter(|(_, v, _)| *v).count();
    assert!(rows.len() >= 40, "corpus has {} packets", rows.len());
    assert!(
        valid >= 15 && rows.len() - valid >= 25,
        "{valid} valid of {}",
        rows.len()
    );
    let mut disagreements = Vec::new();
    for (file, lxml_valid, lxml_message) in &rows {
        let bytes = std::fs::read(format!("{DATA}/{file}")).expect("corpus file");
        let verdict = vtp_verdict(&bytes);
        match &verdict {
            Ok(()) => println!("{file}: valid"),
            Err(e) => println!("{file}: {e}\n    lxml: {lxml_message}"),
        }
        if verdict.is_ok() != *lxml_valid && deviation(file).is_none() {
            disagreements.push(format!("{file}: lxml valid={lxml_valid}, vtp {verdict:?}"));
        }
    }
    assert!(
        disagreements.is_empty(),
        "vtp and lxml disagree:\n{}",
        disagreements.join("\n")
    );
}

#[test]
fn value_cases_agree_with_lxml() {
    let rows = rows("values.tsv");
    assert!(rows.len() >= 300, "{} value cases", rows.len());
    let mut disagreements = Vec::new();
    for (kind, lxml_valid, document) in &rows {
        let verdict = vtp_verdict(document.as_bytes());
        if verdict.is_ok() != *lxml_valid && deviation(document).is_none() {
            disagreements.push(format!(
                "[{kind}] lxml valid={lxml_valid}, vtp {verdict:?}\n    {document}"
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of {} value cases disagree:\n{}",
        disagreements.len(),
        rows.len(),
        disagreements.join("\n")
    );
}

/// The messages say which element, what was found and what the schema expects.
#[test]
fn messages_name_the_element_and_the_expectation() {
    let cases = [
        (
            "invalid_unknown_who_child.xml",
            "element VOEvent/Who: unexpected child 'Institution' (expected one of Date, \
             Description, Reference)",
        ),
        (
            "invalid_param_datatype.xml",
            "attribute dataType of VOEvent/What/Param: 'bool' is not one of string, float, int \
             (dataType)",
        ),
        (
            "invalid_position_missing_error2radius.xml",
            "element VOEvent/WhereWhen/ObsDataLocation/ObservationLocation/AstroCoords/\
             Position2D: missing child Error2Radius",
        ),
        (
            "invalid_namespace_1_1.xml",
            "root element {http://www.ivoa.net/xml/VOEvent/v1.1}VOEvent is not a VOEvent 2.0 \
             packet",
        ),
        (
            "invalid_no_namespace.xml",
            "root element VOEvent (no namespace)",
        ),
        (
            "invalid_default_namespace_children.xml",
            "element VOEvent: child 'Who' is in namespace http://www.ivoa.net/xml/VOEvent/v2.0, \
             but VOEvent children have no namespace",
        ),
        (
            "invalid_duplicate_who.xml",
            "element VOEvent: child Who appears more than once",
        ),
        (
            "invalid_citations_description_first.xml",
            "element VOEvent/Citations: unexpected child 'Description' (expected EventIVORN)",
        ),
        (
            "invalid_position_c1_sexagesimal.xml",
            "element VOEvent/WhereWhen/ObsDataLocation/ObservationLocation/AstroCoords/\
             Position2D/Value2/C1: '17:55:54.6' is not a valid xs:float",
        ),
        (
            "invalid_who_date_space.xml",
            "element VOEvent/Who/Date: '2024-05-04 03:54:51' is not a valid xs:dateTime",
        ),
        (
            "invalid_reference_missing_uri.xml",
            "element VOEvent/How/Reference: attribute uri is required",
        ),
        (
            "invalid_param_unknown_attribute.xml",
            "element VOEvent/What/Param: attribute 'id' is not allowed (allowed: name, ucd, \
             value, unit, dataType, utype)",
        ),
        (
            "invalid_text_in_what.xml",
            "element VOEvent/What: text 'assessment: microlensing' is not allowed",
        ),
        (
            "invalid_how_empty.xml",
            "element VOEvent/How: missing a child (one of Description, Reference)",
        ),
        (
            "invalid_inference_probability_above_one.xml",
            "attribute probability of VOEvent/Why/Inference: '88' is not an xs:float between \
             0.0 and 1.0",
        ),
        (
            "invalid_version_1_1_in_2_0_namespace.xml",
            "attribute version of VOEvent: '1.1' is not 2.0 (the fixed value)",
        ),
        (
            "invalid_reference_with_text.xml",
            "element VOEvent/How/Reference: text 'GBM page' is not allowed (the element must \
             be empty",
        ),
        (
            "invalid_description_with_markup.xml",
            "element VOEvent/Description: child elements are not allowed (its type is \
             xs:string), found 'b'",
        ),
        (
            "invalid_xml_lang.xml",
            "attribute '{http://www.w3.org/XML/1998/namespace}lang' is not allowed \
             (xs:string has no attributes)",
        ),
        (
            "invalid_xsi_nil.xml",
            "element VOEvent/Why: xsi:nil is not allowed",
        ),
        (
            "invalid_undeclared_prefix.xml",
            "element VOEvent/Who: namespace prefix 'gcn' is not declared",
        ),
    ];
    for (file, want) in cases {
        let bytes = std::fs::read(format!("{DATA}/{file}")).expect("corpus file");
        let message = vtp_verdict(&bytes).expect_err(file);
        assert!(
            message.contains(want),
            "{file}:\n  got  {message}\n  want {want}"
        );
    }
}

// ------------------------------------------------------------------------------ end to end

fn corpus(file: &str) -> Vec<u8> {
    std::fs::read(format!("{DATA}/{file}")).expect("corpus file")
}

/// The single reply to one submission: (role, `Result` text).
fn reply(h: &mut Harness, payload: &[u8]) -> (TransportRole, Option<String>) {
    let a = h.accept(ListenerRole::Receive);
    h.input(a, &framed(payload));
    let acts = h.take();
    let frames = frames_to(&acts, a);
    assert_eq!(frames.len(), 1, "exactly one reply: {acts:?}");
    assert!(closed(&acts, a).is_some(), "closed after the reply");
    let t = transport(&frames[0]);
    (t.role, t.result.map(|r| r.into_owned()))
}

#[test]
fn broker_naks_a_schema_violation_naming_the_problem() {
    let mut h = Harness::broker();
    let (role, result) = reply(&mut h, &corpus("invalid_unknown_who_child.xml"));
    assert_eq!(role, TransportRole::Nak);
    let result = result.expect("a nak carries its reason");
    assert_eq!(
        result,
        "Event rejected: element VOEvent/Who: unexpected child 'Institution' (expected one of \
         Date, Description, Reference)"
    );
    assert_eq!(h.node.seen_len(), 0, "a refused event is not recorded");
    // The same packet without the violation is accepted.
    let (role, _) = reply(&mut h, &corpus("valid_fermi_gbm_flt_pos.xml"));
    assert_eq!(role, TransportRole::Ack);
    assert_eq!(h.node.seen_len(), 1);
}

#[test]
fn every_invalid_2_0_packet_with_a_good_ivorn_is_nakd_and_every_valid_one_acked() {
    let mut h = Harness::broker();
    for (file, lxml_valid, _) in rows("expected.tsv") {
        let bytes = corpus(&file);
        // Only packets that pass the receiver's other checks say something about the schema.
        let Ok(Message::VoEvent(ev)) = message::parse(&bytes, &ParseLimits::default()) else {
            continue;
        };
        if vtp_core::ivoid::check_event_ivorn(&ev.ivorn).is_err()
            || ev.namespace != message::VoEventNamespace::V2_0
        {
            continue;
        }
        let (role, result) = reply(&mut h, &bytes);
        if lxml_valid {
            assert_eq!(role, TransportRole::Ack, "{file}: {result:?}");
        } else {
            assert_eq!(role, TransportRole::Nak, "{file}");
            let result = result.expect("reason");
            assert!(result.starts_with("Event rejected: "), "{file}: {result}");
        }
    }
}

#[test]
fn schema_check_off_accepts_what_the_schema_refuses() {
    let mut config = Config::new(Some(LOCAL.into()));
    config.timing.test_event_interval = None;
    config.policy.schema = SchemaCheck::Off;
    let mut h = Harness::new(config);
    let (role, result) = reply(&mut h, &corpus("invalid_unknown_who_child.xml"));
    assert_eq!(role, TransportRole::Ack, "{result:?}");
}

#[test]
fn with_any_version_only_2_0_packets_are_schema_checked() {
    let mut config = Config::new(Some(LOCAL.into()));
    config.timing.test_event_interval = None;
    config.policy.accept_versions = AcceptVersions::Any;
    let mut h = Harness::new(config);
    // A 1.1 packet has no schema here: accepted.
    let (role, result) = reply(&mut h, &corpus("invalid_namespace_1_1.xml"));
    assert_eq!(role, TransportRole::Ack, "{result:?}");
    // A 2.0 packet is still checked.
    let (role, result) = reply(&mut h, &corpus("invalid_duplicate_date.xml"));
    assert_eq!(role, TransportRole::Nak);
    assert!(
        result
            .expect("reason")
            .contains("child Date appears more than once"),
        "names the problem"
    );
}
