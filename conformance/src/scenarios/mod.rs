//! The scenarios: the table that names each rule's sources, and the helpers that build the
//! suite's events.
//!
//! The scenario functions, one per rule, live in one submodule per flow of docs/protocol.md:
//! [`author`] §3.1 author → broker, [`subscriber`] §3.2 broker → subscriber, [`duties`] §4
//! broker duties. Each check returns `Err(what was seen instead)`.

mod author;
mod duties;
mod subscriber;

use self::author::{
    author_ack, author_closed_after_receipt, author_deadline, author_nak_invalid_ivoid,
    author_nak_no_local_id, bad_xml_gets_nak, billion_laughs_refused, doctype_entity_refused,
    duplicate_acked, duplicate_not_relayed, little_endian_prefix_refused, malformed_xml_refused,
    oversize_prefix_refused, transport_instead_of_event_refused, xxe_refused,
    zero_length_frame_refused,
};
use self::duties::{dedup_element_bytes, parallel_authors};
use self::subscriber::{
    authenticate_first, iamalive_period, relay_bit_for_bit, subscriber_nak_keeps_connection,
    unanswered_iamalive_dropped, xpath_filter,
};
use crate::{Scenario, Waits};

/// Every scenario, in protocol order.
pub(crate) static ALL: &[Scenario] = &[
    // ------------------------------------------------------------- §3.1 author -> broker
    Scenario {
        name: "author-ack",
        source: "VTP 2.0 §6.3, §7.2",
        description: "a valid event is acked; the ack's Origin is the event's ivorn byte for \
                      byte and it carries a Response",
        slow: false,
        waits: Waits::Prompt,
        check: author_ack,
    },
    Scenario {
        name: "author-nak-invalid-ivoid",
        source: "VTP 2.0 §6.3; Comet receiver",
        description: "an event whose ivorn is not a valid IVOID is nak'd with a Meta/Result \
                      reason and Origin = its ivorn",
        slow: false,
        waits: Waits::Prompt,
        check: author_nak_invalid_ivoid,
    },
    Scenario {
        name: "author-nak-no-local-id",
        source: "VOEvent 2.0 §3.1.1; Comet receiver",
        description: "an event whose ivorn has no per-event local ID is nak'd with a Meta/Result \
                      reason",
        slow: false,
        waits: Waits::Prompt,
        check: author_nak_no_local_id,
    },
    Scenario {
        name: "author-closed-after-receipt",
        source: "VTP 2.0 §3.1; Comet receiver",
        description: "the broker closes the author connection right after its receipt (one \
                      event per transaction)",
        slow: false,
        waits: Waits::Prompt,
        check: author_closed_after_receipt,
    },
    Scenario {
        name: "duplicate-not-relayed",
        source: "VTP 2.0 §8",
        description: "an event submitted twice is relayed once",
        slow: false,
        waits: Waits::Prompt,
        check: duplicate_not_relayed,
    },
    Scenario {
        name: "duplicate-acked",
        source: "VTP 2.0 §6.3",
        description: "a duplicate submission is acked: a nak is not appropriate for a duplicate",
        slow: false,
        waits: Waits::Prompt,
        check: duplicate_acked,
    },
    Scenario {
        name: "malformed-xml-refused",
        source: "VTP 2.0 §7.2; Comet receiver",
        description: "a frame that is not well-formed XML gets a nak or a close, is not \
                      relayed, and the broker still serves",
        slow: false,
        waits: Waits::Prompt,
        check: malformed_xml_refused,
    },
    Scenario {
        name: "doctype-entity-refused",
        source: "Comet receiver (no DTD entities)",
        description: "an event with a DOCTYPE declaring and using an internal entity gets a nak \
                      or a close, is not relayed, and the broker still serves",
        slow: false,
        waits: Waits::Prompt,
        check: doctype_entity_refused,
    },
    Scenario {
        name: "billion-laughs-refused",
        source: "Comet receiver (no DTD entities)",
        description: "a billion-laughs entity bomb gets a nak or a close, is not relayed, and \
                      the broker still serves",
        slow: false,
        waits: Waits::Prompt,
        check: billion_laughs_refused,
    },
    Scenario {
        name: "xxe-refused",
        source: "Comet receiver (no DTD entities)",
        description: "an external-entity (XXE) event gets a nak or a close, is not relayed, the \
                      entity's URL is never fetched, and the broker still serves",
        slow: false,
        waits: Waits::Prompt,
        check: xxe_refused,
    },
    Scenario {
        name: "transport-instead-of-event-refused",
        source: "VTP 2.0 §7.2; Comet receiver",
        description: "a Transport message submitted as an event gets a nak or a close, is not \
                      relayed, and the broker still serves",
        slow: false,
        waits: Waits::Prompt,
        check: transport_instead_of_event_refused,
    },
    Scenario {
        name: "zero-length-frame-refused",
        source: "VTP 2.0 §3.2; Comet receiver",
        description: "a zero-length frame gets a nak or a close, is not relayed, and the broker \
                      still serves",
        slow: false,
        waits: Waits::Prompt,
        check: zero_length_frame_refused,
    },
    Scenario {
        name: "oversize-prefix-refused",
        source: "VTP 2.0 §3.2; Comet receiver",
        description: "a 100 MB length prefix gets a nak or a close without the broker waiting \
                      for the bytes, nothing is relayed, and the broker still serves",
        slow: false,
        waits: Waits::Prompt,
        check: oversize_prefix_refused,
    },
    Scenario {
        name: "little-endian-prefix-refused",
        source: "VTP 2.0 §3.2",
        description: "an event framed with a little-endian length prefix gets a nak or a close, \
                      is not relayed, and the broker still serves",
        slow: false,
        waits: Waits::Prompt,
        check: little_endian_prefix_refused,
    },
    Scenario {
        name: "bad-xml-gets-nak",
        source: "VTP 2.0 §7.2",
        description: "a frame that is not well-formed XML is answered with a nak (the broker \
                      must answer every submission), not just a close",
        slow: false,
        waits: Waits::Prompt,
        check: bad_xml_gets_nak,
    },
    Scenario {
        name: "author-deadline",
        source: "Comet receiver (20 s from accept)",
        description: "an author connection that sends nothing is closed within the author \
                      deadline (plus slack) after it was accepted",
        slow: true,
        waits: Waits::Deadline,
        check: author_deadline,
    },
    // ------------------------------------------------------ §3.2 broker -> subscriber
    Scenario {
        name: "authenticate-first",
        source: "VTP 2.0 §9.2; VTP 1.1 §7.2.2; Comet broadcaster",
        description: "a new subscriber is sent an authenticate with a non-empty Origin before \
                      anything else",
        slow: false,
        waits: Waits::Prompt,
        check: authenticate_first,
    },
    Scenario {
        name: "relay-bit-for-bit",
        source: "VTP 2.0 §3.1, §7.3",
        description: "a 10 kB GCN event reaches a subscriber byte for byte as the author sent it",
        slow: false,
        waits: Waits::Prompt,
        check: relay_bit_for_bit,
    },
    Scenario {
        name: "iamalive-period",
        source: "VTP 2.0 §5, §6.1",
        description: "a subscriber gets an iamalive with an Origin within one period (plus \
                      slack) of subscribing, and, having answered it, another one a period later",
        slow: true,
        waits: Waits::Iamalive(2),
        check: iamalive_period,
    },
    Scenario {
        name: "unanswered-iamalive-dropped",
        source: "VTP 2.0 §5, §7.3; Comet broadcaster",
        description: "a subscriber that does not answer iamalive is disconnected by the second \
                      tick (two periods plus slack after subscribing)",
        slow: true,
        waits: Waits::Iamalive(2),
        check: unanswered_iamalive_dropped,
    },
    Scenario {
        name: "subscriber-nak-keeps-connection",
        source: "VTP 2.0 §6.3, §7.3",
        description: "a subscriber that naks an event stays connected and gets the next event",
        slow: false,
        waits: Waits::Prompt,
        check: subscriber_nak_keeps_connection,
    },
    Scenario {
        name: "xpath-filter",
        source: "Comet broadcaster (xpath-filter); VTP 2.0 §3.4",
        description: "a subscriber whose authenticate reply carries an xpath-filter gets the \
                      matching events and not the others",
        slow: false,
        waits: Waits::Prompt,
        check: xpath_filter,
    },
    // ----------------------------------------------------------- §4 broker duties
    Scenario {
        name: "dedup-element-bytes",
        source: "VTP 2.0 §8",
        description: "the same VOEvent element submitted twice in different wrappers (XML \
                      declaration, comment) is relayed once",
        slow: false,
        waits: Waits::Prompt,
        check: dedup_element_bytes,
    },
    Scenario {
        name: "parallel-authors",
        source: "VTP 2.0 §3.4, §8",
        description: "events from two authors submitting at the same time all reach each of two \
                      subscribers exactly once",
        slow: false,
        waits: Waits::Prompt,
        check: parallel_authors,
    },
];

/// `AuthorIVORN` of the suite's events.
const AUTHOR: &str = "ivo://vtp.conformance/author";

/// The `VOEvent` element of a minimal valid VOEvent 2.0 packet (docs/protocol.md §2.1).
fn element(ivorn: &str, author: &str) -> String {
    format!(
        "<voe:VOEvent xmlns:voe=\"http://www.ivoa.net/xml/VOEvent/v2.0\"\n \
         ivorn=\"{ivorn}\" role=\"test\" version=\"2.0\">\n  \
         <Who><AuthorIVORN>{author}</AuthorIVORN></Who>\n\
         </voe:VOEvent>"
    )
}

/// A minimal valid VOEvent 2.0 packet: declaration, element, newline.
fn event(ivorn: &str) -> Vec<u8> {
    event_by(ivorn, AUTHOR)
}

fn event_by(ivorn: &str, author: &str) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{}\n",
        element(ivorn, author)
    )
    .into_bytes()
}
