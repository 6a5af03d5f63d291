//! Comet's filtering through a real node with the XPath engine: filters from both carriers of
//! the authenticate reply, any-of, none = everything, syntax errors dropped (logged), the
//! verdict rule (NaN passes), test events filtered too.
#![cfg(feature = "xpath")]

mod common;

use common::*;
use vtp_core::config::InvalidFilters;
use vtp_core::filter::XPathEngine;
use vtp_core::{ConnId, Event, ListenerRole};

/// An authenticate reply carrying `params` as `Meta/Param[@name="xpath-filter"]` and `legacy`
/// as `Meta/filter[@type="xpath"]` text (Comet accepts both).
fn auth(params: &[&str], legacy: &[&str]) -> Vec<u8> {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('"', "&quot;")
    };
    let mut meta = String::new();
    for p in params {
        meta.push_str(&format!(
            "<Param name=\"xpath-filter\" value=\"{}\"/>",
            esc(p)
        ));
    }
    for l in legacy {
        meta.push_str(&format!("<filter type=\"xpath\">{}</filter>", esc(l)));
    }
    format!(
        "<trn:Transport xmlns:trn=\"http://www.telescope-networks.org/xml/Transport/v1.1\" \
         version=\"1.0\" role=\"authenticate\"><Origin>{LOCAL}</Origin>\
         <Response>ivo://example.net/listener</Response>\
         <TimeStamp>2024-05-01T12:00:01Z</TimeStamp><Meta>{meta}</Meta></trn:Transport>"
    )
    .into_bytes()
}

fn broker(invalid: InvalidFilters) -> Harness {
    let mut c = broker_config();
    c.policy.invalid_filters = invalid;
    Harness::with_engine(c, Box::new(XPathEngine::default()))
}

fn publish(h: &mut Harness, xml: &[u8]) -> Vec<ConnId> {
    h.take();
    let a = h.accept(ListenerRole::Receive);
    h.input(a, &framed(xml));
    forwards(&h.take())
}

/// Filters refused, each with its reason.
type Refused<'a> = &'a [(String, String)];

/// Every `FiltersSet` event so far: the subscriber, how many filters it set, and the refused
/// ones.
fn filters_set(h: &Harness) -> Vec<(ConnId, usize, Refused<'_>)> {
    h.events
        .iter()
        .filter_map(|e| match e {
            Event::FiltersSet {
                conn,
                accepted,
                refused,
                ..
            } => Some((*conn, *accepted, refused.as_slice())),
            _ => None,
        })
        .collect()
}

fn gcn_like(ivorn: &str, packet_type: &str, sc_lat: &str) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\"?>\n<voe:VOEvent xmlns:voe=\"http://www.ivoa.net/xml/VOEvent/v2.0\" \
         ivorn=\"{ivorn}\" role=\"observation\" version=\"2.0\"><Who>\
         <AuthorIVORN>ivo://nasa.gsfc.tan/gcn</AuthorIVORN></Who><What>\
         <Param name=\"Packet_Type\" value=\"{packet_type}\"/>\
         <Param name=\"Soln_Status\" value=\"0x3\"/>\
         <Param name=\"SC_Lat\" value=\"{sc_lat}\"/></What></voe:VOEvent>"
    )
    .into_bytes()
}

#[test]
fn comets_filters_from_both_carriers_select_events() {
    let mut h = broker(InvalidFilters::SendNothing);
    let everything = h.accept(ListenerRole::Broadcast);
    let param = h.accept(ListenerRole::Broadcast);
    let legacy = h.accept(ListenerRole::Broadcast);
    let any_of = h.accept(ListenerRole::Broadcast);
    h.input(
        param,
        &framed(&auth(&[r#"//Param[@name="SC_Lat" and @value>600]"#], &[])),
    );
    h.input(
        legacy,
        &framed(&auth(
            &[],
            &[r#"//Param[@name='Packet_Type' and @value=61]"#],
        )),
    );
    h.input(
        any_of,
        &framed(&auth(
            &[r#"//Who[AuthorIVORN="ivo://x.y/z"]"#],
            &[r#"/*[local-name()="VOEvent" and @role!="test"]"#],
        )),
    );
    let accepted: Vec<(ConnId, usize)> = filters_set(&h)
        .into_iter()
        .filter(|(_, _, refused)| refused.is_empty())
        .map(|(conn, accepted, _)| (conn, accepted))
        .collect();
    assert_eq!(accepted, vec![(param, 1), (legacy, 1), (any_of, 2)]);
    // The manual's filter works although other Params hold "0x3" (xee alone: never).
    assert_eq!(
        publish(&mut h, &gcn_like("ivo://example.org/a#1", "61", "620")),
        vec![everything, param, legacy, any_of]
    );
    assert_eq!(
        publish(&mut h, &gcn_like("ivo://example.org/a#2", "97", "12")),
        vec![everything, any_of]
    );
    assert_eq!(h.node.distinct_filters(), 4);
}

#[test]
fn invalid_filters_are_dropped_and_reported() {
    for (policy, gets_all) in [
        (InvalidFilters::SendNothing, false),
        (InvalidFilters::SendEverything, true),
    ] {
        let mut h = broker(policy);
        let picky = h.accept(ListenerRole::Broadcast);
        let broken = h.accept(ListenerRole::Broadcast);
        h.input(
            picky,
            &framed(&auth(&["//Param[@name=", "@role='test'"], &[])),
        );
        h.input(
            broken,
            &framed(&auth(&["for $x in //Param return $x", "//*:Param"], &[])),
        );
        let refusals: Vec<(ConnId, usize, usize)> = filters_set(&h)
            .into_iter()
            .map(|(conn, accepted, refused)| (conn, accepted, refused.len()))
            .collect();
        assert_eq!(refusals, vec![(picky, 1, 1), (broken, 0, 2)]);
        let reason = filters_set(&h)
            .into_iter()
            .find_map(|(_, _, refused)| refused.first())
            .map(|(_, reason)| reason.clone())
            .expect("a reason");
        assert!(
            reason.contains("XPath syntax error at character"),
            "{reason}"
        );
        let expected = if gets_all { vec![broken] } else { vec![] };
        assert_eq!(
            publish(&mut h, &gcn_like("ivo://example.org/a#1", "61", "620")),
            expected,
            "{policy:?}"
        );
        assert_eq!(
            publish(
                &mut h,
                &event_xml("ivo://example.org/a#t").replace_role_test()
            ),
            [vec![picky], expected].concat(),
            "{policy:?}"
        );
    }
}

#[test]
fn verdict_rule_nan_passes_errors_fail() {
    let mut h = broker(InvalidFilters::SendNothing);
    let nan = h.accept(ListenerRole::Broadcast);
    let error = h.accept(ListenerRole::Broadcast);
    let empty_string = h.accept(ListenerRole::Broadcast);
    h.input(nan, &framed(&auth(&["number(//Who/AuthorIVORN)"], &[])));
    h.input(error, &framed(&auth(&["foo(1)"], &[])));
    h.input(empty_string, &framed(&auth(&["string(//Nothing)"], &[])));
    assert_eq!(
        publish(&mut h, &event_xml("ivo://example.org/a#1")),
        vec![nan],
        "NaN counts as true (Python's bool), an evaluation error and '' as false"
    );
}

trait TestRole {
    fn replace_role_test(self) -> Vec<u8>;
}

impl TestRole for Vec<u8> {
    fn replace_role_test(self) -> Vec<u8> {
        String::from_utf8(self)
            .expect("UTF-8")
            .replace("role=\"observation\"", "role=\"test\"")
            .into_bytes()
    }
}
