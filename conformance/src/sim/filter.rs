//! Filters in the simulation: a substring engine for the brokers, the reference verdict the
//! invariants compare against, and the events authors submit.
//!
//! A filter `has:TEXT` passes when the event payload contains `TEXT`; any other expression is
//! refused by the engine (as a real engine refuses a syntax error). Events carry tags such as
//! `tag:grb` in their `Description`, so `has:tag:grb` selects them. The XPath engine is not
//! used: the simulator tests the node's filter plumbing (per-feed filter sets, any-of, refused
//! filters, shared compilation), not XPath.

use bytes::Bytes;

/// Tags events may carry; filters select on them.
pub(crate) const TAGS: [&str; 4] = ["grb", "gw", "sn", "nu"];

/// An expression the engine refuses (a syntax error).
pub(crate) const BAD_FILTER: &str = "bad filter";

/// The broker-side engine: `has:TEXT` is a substring test on the payload. The brokers use
/// [`SubstringEngine::fail_closed`], as a production engine behaves: a released filter
/// evaluates to false, never panics.
pub(crate) use vtp_core::testing::SubstringEngine;

/// The reference verdict: does a subscriber that sent `filters` want `payload`?
///
/// No filters: everything. Otherwise any valid filter passing; when every filter is refused,
/// nothing (the node's default policy, `InvalidFilters::SendNothing`), or everything if
/// `refused_means_all` (Comet's, `InvalidFilters::SendEverything`).
pub(crate) fn wants(filters: &[String], refused_means_all: bool, payload: &[u8]) -> bool {
    let mut valid = filters
        .iter()
        .filter_map(|f| f.strip_prefix("has:"))
        .peekable();
    if filters.is_empty() || refused_means_all && valid.peek().is_none() {
        return true;
    }
    valid.any(|text| contains(payload, text.as_bytes()))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// The payload of a simulated event: a minimal valid VOEvent 2.0 with its tags in the
/// description.
pub(crate) fn event_payload(ivorn: &str, tags: &[&str]) -> Bytes {
    let mut description = String::new();
    for t in tags {
        if !description.is_empty() {
            description.push(' ');
        }
        description.push_str("tag:");
        description.push_str(t);
    }
    Bytes::from(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <voe:VOEvent xmlns:voe=\"http://www.ivoa.net/xml/VOEvent/v2.0\" \
         ivorn=\"{ivorn}\" role=\"observation\" version=\"2.0\">\
         <Who><AuthorIVORN>ivo://sim.vtp/authors</AuthorIVORN>\
         <Date>2024-05-01T12:00:00</Date></Who>\
         <What><Description>{description}</Description></What>\
         </voe:VOEvent>\n"
    ))
}

/// The `ivorn` attribute of a VOEvent payload, found without parsing; `None` for anything
/// else (Transport messages have no `ivorn` attribute).
pub(crate) fn ivorn_of(payload: &[u8]) -> Option<&str> {
    const KEY: &[u8] = b" ivorn=\"";
    let start = payload.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let len = payload[start..].iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&payload[start..start + len]).ok()
}

#[cfg(test)]
mod tests {
    use vtp_core::filter::FilterEngine;

    use super::*;

    #[test]
    fn engine_and_reference_agree() {
        let payload = event_payload("ivo://sim.vtp/a#1", &["grb", "sn"]);
        let mut e = SubstringEngine::fail_closed();
        let grb = e.compile("has:tag:grb").expect("valid");
        let gw = e.compile("has:tag:gw").expect("valid");
        assert!(e.compile(BAD_FILTER).is_err());
        let mut v = Vec::new();
        e.evaluate(&payload, 0..payload.len(), &[grb, gw], &mut v);
        assert_eq!(v, [true, false]);
        e.release(grb);
        v.clear();
        e.evaluate(&payload, 0..payload.len(), &[grb], &mut v);
        assert_eq!(v, [false], "a released filter fails closed");

        let f = |fs: &[&str]| fs.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(wants(&f(&[]), false, &payload));
        assert!(wants(&f(&["has:tag:gw", "has:tag:sn"]), false, &payload));
        assert!(!wants(&f(&["has:tag:gw"]), false, &payload));
        assert!(
            !wants(&f(&[BAD_FILTER]), false, &payload),
            "all refused: nothing"
        );
        assert!(
            wants(&f(&[BAD_FILTER]), true, &payload),
            "Comet: all refused, all"
        );
        assert!(wants(&f(&[BAD_FILTER, "has:tag:grb"]), false, &payload));
        assert!(!wants(&f(&[BAD_FILTER, "has:tag:gw"]), true, &payload));
    }

    #[test]
    fn ivorn_is_found_in_events_only() {
        let payload = event_payload("ivo://sim.vtp/a#7", &[]);
        assert_eq!(ivorn_of(&payload), Some("ivo://sim.vtp/a#7"));
        assert_eq!(ivorn_of(b"<trn:Transport role=\"ack\"/>"), None);
    }
}
