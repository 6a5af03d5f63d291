//! The scenarios: one function per rule, and the table that names their sources.
//!
//! Sections refer to docs/protocol.md's flows: §3.1 author → broker, §3.2 broker → subscriber,
//! §4 broker duties. Each check returns `Err(what was seen instead)`.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::Instant;

use crate::net::{
    Author, Frame, Incoming, Kind, ReadEnd, SUITE_IVO, Subscriber, SubscriberOptions, expect_ack,
    framed, submit, submit_acked,
};
use crate::report::secs;
use crate::{Ctx, Scenario, Waits};

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

/// A 10 kB GCN Swift-BAT notice (VOEvent 2.0); its ivorn is replaced by a unique one.
const GCN_SWIFT_BAT: &str = include_str!("../../core/tests/data/gcn_swift_bat.xml");
const GCN_SWIFT_BAT_IVORN: &str = "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_532871-729";

/// Events submitted at once by each author in `parallel-authors`.
const PARALLEL_EVENTS: usize = 8;

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

/// A packet with a DOCTYPE (internal subset `subset`) and `body` as the `Who/Description`.
fn event_with_dtd(ivorn: &str, subset: &str, body: &str) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE voe:VOEvent [\n{subset}\n]>\n\
         <voe:VOEvent xmlns:voe=\"http://www.ivoa.net/xml/VOEvent/v2.0\"\n \
         ivorn=\"{ivorn}\" role=\"test\" version=\"2.0\">\n  \
         <Who><AuthorIVORN>{AUTHOR}</AuthorIVORN><Description>{body}</Description></Who>\n\
         </voe:VOEvent>\n"
    )
    .into_bytes()
}

/// An event whose root element is never closed.
fn malformed(ivorn: &str) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <voe:VOEvent xmlns:voe=\"http://www.ivoa.net/xml/VOEvent/v2.0\"\n \
         ivorn=\"{ivorn}\" role=\"test\" version=\"2.0\">\n  \
         <Who><AuthorIVORN>{AUTHOR}</AuthorIVORN></Who>\n"
    )
    .into_bytes()
}

/// An ivorn for a payload the broker must not relay; no other ivorn of the scenario contains it.
fn bad_ivorn(ctx: &mut Ctx<'_>) -> String {
    format!("{}-refused", ctx.ivorn())
}

// ------------------------------------------------------------------ §3.1 author -> broker

fn author_ack(ctx: &mut Ctx<'_>) -> Result<(), String> {
    // CHIME-style local ID (':', '.', '+'): the ack must copy it exactly.
    let ivorn = format!("{}:12:43.164293UTC+0000_ae10", ctx.ivorn());
    let (receipt, _) = submit(ctx, &event(&ivorn))?;
    expect_ack(&receipt, &ivorn)?;
    match &receipt.kind {
        Kind::Transport {
            response: Some(r), ..
        } if !r.trim().is_empty() => Ok(()),
        _ => Err("the ack has no Response (the receiver's identifier)".to_owned()),
    }
}

fn author_nak_invalid_ivoid(ctx: &mut Ctx<'_>) -> Result<(), String> {
    // Authority `a2` is too short (IVOID 2.0 needs at least three characters).
    let ivorn = format!("ivo://a2#{}", ctx.tag());
    let (receipt, _) = submit(ctx, &event(&ivorn))?;
    expect_nak(&receipt, Some(&ivorn))
}

fn author_nak_no_local_id(ctx: &mut Ctx<'_>) -> Result<(), String> {
    let ivorn = format!("ivo://vtp.conformance/{}", ctx.tag());
    let (receipt, _) = submit(ctx, &event(&ivorn))?;
    expect_nak(&receipt, None)
}

/// Checks that `receipt` is a nak with a non-empty `Meta/Result` (and the given `Origin`).
fn expect_nak(receipt: &Frame, origin_want: Option<&str>) -> Result<(), String> {
    match &receipt.kind {
        Kind::Transport {
            role: "nak",
            origin,
            result,
            ..
        } => {
            if result.as_deref().is_none_or(|r| r.trim().is_empty()) {
                return Err("the nak has no Meta/Result reason".to_owned());
            }
            match origin_want {
                Some(want) if origin != want => Err(format!(
                    "the nak's Origin is {origin:?}, not the event's ivorn {want:?}"
                )),
                _ => Ok(()),
            }
        }
        _ => Err(format!("expected a nak, got {}", receipt.describe())),
    }
}

fn author_closed_after_receipt(ctx: &mut Ctx<'_>) -> Result<(), String> {
    let ivorn = ctx.ivorn();
    let (receipt, mut author) = submit(ctx, &event(&ivorn))?;
    expect_ack(&receipt, &ivorn)?;
    author.expect_closed("the receipt")
}

fn duplicate_not_relayed(ctx: &mut Ctx<'_>) -> Result<(), String> {
    let marker = ctx.marker();
    let mut sub = Subscriber::connect(ctx)?;
    let ivorn = ctx.ivorn();
    let packet = event(&ivorn);
    submit_acked(ctx, &packet, &ivorn)?;
    sub.wait_event(&ivorn, marker.as_bytes(), ctx.slack())?;
    // Whatever the receipt (ack per VTP 2.0, nak per Comet), the copy must not go out.
    let _ = submit(ctx, &packet);
    let barrier = ctx.ivorn();
    submit_acked(ctx, &event(&barrier), &barrier)?;
    let (_, before) = sub.wait_event(&barrier, marker.as_bytes(), ctx.slack())?;
    if before.iter().any(|f| f.is_event(&ivorn)) {
        return Err("the duplicate submission was relayed to the subscriber again".to_owned());
    }
    Ok(())
}

fn duplicate_acked(ctx: &mut Ctx<'_>) -> Result<(), String> {
    let ivorn = ctx.ivorn();
    let packet = event(&ivorn);
    submit_acked(ctx, &packet, &ivorn)?;
    let (receipt, _) = submit(ctx, &packet).map_err(|e| format!("duplicate: {e}"))?;
    expect_ack(&receipt, &ivorn).map_err(|e| format!("duplicate submission: {e}"))
}

fn malformed_xml_refused(ctx: &mut Ctx<'_>) -> Result<(), String> {
    let ivorn = bad_ivorn(ctx);
    refused(ctx, &framed(&malformed(&ivorn)), "malformed XML", &ivorn)
}

fn doctype_entity_refused(ctx: &mut Ctx<'_>) -> Result<(), String> {
    let ivorn = bad_ivorn(ctx);
    let packet = event_with_dtd(&ivorn, "<!ENTITY note \"declared in the DTD\">", "&note;");
    refused(ctx, &framed(&packet), "a DOCTYPE with an entity", &ivorn)
}

fn billion_laughs_refused(ctx: &mut Ctx<'_>) -> Result<(), String> {
    let ivorn = bad_ivorn(ctx);
    let mut subset = String::from("<!ENTITY lol0 \"lol\">\n");
    for i in 1..=9 {
        let prev = format!("&lol{};", i - 1).repeat(10);
        subset.push_str(&format!("<!ENTITY lol{i} \"{prev}\">\n"));
    }
    let packet = event_with_dtd(&ivorn, &subset, "&lol9;");
    refused(
        ctx,
        &framed(&packet),
        "a billion-laughs entity bomb",
        &ivorn,
    )
}

fn xxe_refused(ctx: &mut Ctx<'_>) -> Result<(), String> {
    // A listener of ours as the external entity: a broker that resolves it connects here.
    let trap = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr().map(|a| (l, a)))
        .map_err(|e| format!("cannot open the XXE trap listener: {e}"));
    let (trap, trap_addr) = trap?;
    let ivorn = bad_ivorn(ctx);
    let subset = format!("<!ENTITY xxe SYSTEM \"http://{trap_addr}/xxe\">");
    let packet = event_with_dtd(&ivorn, &subset, "&xxe;");
    refused(ctx, &framed(&packet), "an external entity (XXE)", &ivorn)?;
    trap.set_nonblocking(true)
        .map_err(|e| format!("cannot poll the XXE trap listener: {e}"))?;
    match trap.accept() {
        Ok((_, peer)) => Err(format!(
            "the broker fetched the external entity's URL (connection from {peer})"
        )),
        Err(_) => Ok(()),
    }
}

fn transport_instead_of_event_refused(ctx: &mut Ctx<'_>) -> Result<(), String> {
    let ivorn = bad_ivorn(ctx);
    let ack = vtp_core::message::build_ack(&ivorn, Some(SUITE_IVO), "2024-01-01T00:00:00Z");
    refused(ctx, &ack, "a Transport ack submitted as an event", &ivorn)
}

fn zero_length_frame_refused(ctx: &mut Ctx<'_>) -> Result<(), String> {
    refused_with(ctx, &[0, 0, 0, 0], "a zero-length frame", &|f: &Frame| {
        f.bytes.is_empty()
    })
}

fn oversize_prefix_refused(ctx: &mut Ctx<'_>) -> Result<(), String> {
    let ivorn = bad_ivorn(ctx);
    let mut bytes = 100_000_000u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&event(&ivorn));
    refused(ctx, &bytes, "a 100 MB length prefix", &ivorn)
}

fn little_endian_prefix_refused(ctx: &mut Ctx<'_>) -> Result<(), String> {
    let ivorn = bad_ivorn(ctx);
    let mut packet = event(&ivorn);
    // A low byte of zero would read as a small big-endian length; keep it non-zero.
    if packet.len().is_multiple_of(256) {
        packet.push(b'\n');
    }
    let len = u32::try_from(packet.len()).map_err(|_| "event too large".to_owned())?;
    let mut bytes = len.to_le_bytes().to_vec();
    bytes.extend_from_slice(&packet);
    refused(ctx, &bytes, "a little-endian length prefix", &ivorn)
}

/// Sends `bytes` as an author and checks docs/protocol.md §3.1's rule for bad submissions: the
/// connection ends with a nak or a plain close; the payload (any frame containing
/// `bad_ivorn`) is not relayed; the broker still acks and relays the next valid event to a
/// subscriber that stayed connected.
fn refused(ctx: &mut Ctx<'_>, bytes: &[u8], what: &str, bad_ivorn: &str) -> Result<(), String> {
    let needle = bad_ivorn.as_bytes().to_vec();
    refused_with(ctx, bytes, what, &move |f: &Frame| f.contains(&needle))
}

fn refused_with(
    ctx: &mut Ctx<'_>,
    bytes: &[u8],
    what: &str,
    relayed: &dyn Fn(&Frame) -> bool,
) -> Result<(), String> {
    let mut sub = Subscriber::connect(ctx)?;
    let mut author = Author::connect(ctx)?;
    author.send_raw(bytes);
    match author.read() {
        Err(ReadEnd::Closed(_)) => {}
        Err(ReadEnd::Timeout) => {
            return Err(format!(
                "after {what}, neither a nak nor a close within {}",
                secs(ctx.slack())
            ));
        }
        Err(e @ ReadEnd::Broken(_)) => return Err(format!("after {what}: {}", e.describe())),
        Ok(f) if f.role() == Some("nak") => author.expect_closed("the nak")?,
        Ok(f) => return Err(format!("{what} was answered with {}", f.describe())),
    }
    let barrier = ctx.ivorn();
    submit_acked(ctx, &event(&barrier), &barrier)
        .map_err(|e| format!("after {what}, the broker no longer serves: {e}"))?;
    let deadline = Instant::now() + ctx.slack();
    loop {
        match sub.next(deadline) {
            Some(Incoming::Frame(f)) if f.is_event(&barrier) => return Ok(()),
            Some(Incoming::Frame(f)) if relayed(&f) => {
                return Err(format!(
                    "{what} was relayed to a subscriber as {}",
                    f.describe()
                ));
            }
            Some(Incoming::Frame(_)) => {}
            Some(Incoming::End(why)) => {
                return Err(format!(
                    "after {what}, the subscriber's connection ended: {why}"
                ));
            }
            None => {
                return Err(format!(
                    "after {what}, the next valid event did not reach the subscriber within {}",
                    secs(ctx.slack())
                ));
            }
        }
    }
}

fn bad_xml_gets_nak(ctx: &mut Ctx<'_>) -> Result<(), String> {
    let ivorn = bad_ivorn(ctx);
    let mut author = Author::connect(ctx)?;
    author.send_raw(&framed(&malformed(&ivorn)));
    match author.read() {
        Ok(f) => expect_nak(&f, None),
        Err(ReadEnd::Closed(how)) => Err(format!(
            "no reply to malformed XML: {how} (VTP 2.0 §7.2: the broker must answer with a nak)"
        )),
        Err(e) => Err(format!("no reply to malformed XML: {}", e.describe())),
    }
}

fn author_deadline(ctx: &mut Ctx<'_>) -> Result<(), String> {
    let mut author = Author::connect(ctx)?;
    let accepted = Instant::now();
    let limit = ctx.target.timing.deadline + ctx.slack();
    match author.read_until(accepted + limit) {
        Err(ReadEnd::Closed(_)) => Ok(()),
        Ok(f) if f.role() == Some("nak") => author.expect_closed("the nak"),
        Ok(f) => Err(format!(
            "an idle author connection was sent {}",
            f.describe()
        )),
        Err(ReadEnd::Timeout) => Err(format!(
            "an idle author connection was still open {} after it was accepted",
            secs(limit)
        )),
        Err(e @ ReadEnd::Broken(_)) => Err(e.describe()),
    }
}

// ------------------------------------------------------------ §3.2 broker -> subscriber

fn authenticate_first(ctx: &mut Ctx<'_>) -> Result<(), String> {
    let sub = Subscriber::connect(ctx)?;
    match &sub.greeting.kind {
        Kind::Transport { origin, .. } if !origin.trim().is_empty() => Ok(()),
        _ => Err("the authenticate has an empty Origin".to_owned()),
    }
}

fn relay_bit_for_bit(ctx: &mut Ctx<'_>) -> Result<(), String> {
    let ivorn = ctx.ivorn();
    let packet = GCN_SWIFT_BAT.replacen(GCN_SWIFT_BAT_IVORN, &ivorn, 1);
    if !packet.contains(&ivorn) {
        return Err("internal: the GCN fixture's ivorn was not found".to_owned());
    }
    let marker = ctx.marker();
    let mut sub = Subscriber::connect(ctx)?;
    submit_acked(ctx, packet.as_bytes(), &ivorn)?;
    let (got, _) = sub.wait_event(&ivorn, marker.as_bytes(), ctx.slack())?;
    if got.bytes == packet.as_bytes() {
        return Ok(());
    }
    let at = got
        .bytes
        .iter()
        .zip(packet.as_bytes())
        .position(|(a, b)| a != b)
        .unwrap_or(got.bytes.len().min(packet.len()));
    Err(format!(
        "the relayed event differs from the submitted one: {} bytes sent, {} received, first \
         difference at byte {at}",
        packet.len(),
        got.bytes.len()
    ))
}

fn iamalive_period(ctx: &mut Ctx<'_>) -> Result<(), String> {
    let period = ctx.target.timing.iamalive;
    let mut sub = Subscriber::connect(ctx)?;
    let mut since = (sub.connected_at, "subscribing");
    for nth in ["first", "second"] {
        let limit = period + ctx.slack();
        let deadline = since.0 + limit;
        loop {
            match sub.next(deadline) {
                Some(Incoming::Frame(f)) => {
                    if let Kind::Transport {
                        role: "iamalive",
                        origin,
                        ..
                    } = &f.kind
                    {
                        if origin.trim().is_empty() {
                            return Err(format!("the {nth} iamalive has an empty Origin"));
                        }
                        since = (Instant::now(), "the first iamalive");
                        break;
                    }
                }
                Some(Incoming::End(why)) => {
                    return Err(format!(
                        "the subscriber's connection ended before the {nth} iamalive: {why}"
                    ));
                }
                None => {
                    return Err(format!(
                        "no {nth} iamalive within {} of {}",
                        secs(limit),
                        since.1
                    ));
                }
            }
        }
    }
    Ok(())
}

fn unanswered_iamalive_dropped(ctx: &mut Ctx<'_>) -> Result<(), String> {
    let options = SubscriberOptions {
        answer_iamalive: false,
        ..SubscriberOptions::default()
    };
    let mut sub = Subscriber::connect_with(ctx, options)?;
    let limit = ctx.target.timing.iamalive * 2 + ctx.slack();
    let deadline = sub.connected_at + limit;
    let mut unanswered = 0;
    loop {
        match sub.next(deadline) {
            Some(Incoming::Frame(f)) => {
                if f.role() == Some("iamalive") {
                    unanswered += 1;
                }
            }
            Some(Incoming::End(_)) if unanswered > 0 => return Ok(()),
            Some(Incoming::End(why)) => {
                return Err(format!(
                    "the subscriber was disconnected before any iamalive was sent: {why}"
                ));
            }
            None => {
                return Err(format!(
                    "still connected {} after subscribing, with {unanswered} iamalive(s) \
                     unanswered",
                    secs(limit)
                ));
            }
        }
    }
}

fn subscriber_nak_keeps_connection(ctx: &mut Ctx<'_>) -> Result<(), String> {
    let refused = ctx.ivorn();
    let next = ctx.ivorn();
    let marker = ctx.marker();
    let options = SubscriberOptions {
        nak_ivorn: Some(refused.clone()),
        ..SubscriberOptions::default()
    };
    let mut sub = Subscriber::connect_with(ctx, options)?;
    submit_acked(ctx, &event(&refused), &refused)?;
    // The reader naks it before reporting it.
    sub.wait_event(&refused, marker.as_bytes(), ctx.slack())?;
    submit_acked(ctx, &event(&next), &next)?;
    sub.wait_event(&next, marker.as_bytes(), ctx.slack())
        .map(|_| ())
        .map_err(|e| format!("after the subscriber's nak: {e}"))
}

fn xpath_filter(ctx: &mut Ctx<'_>) -> Result<(), String> {
    let marker = ctx.marker();
    let matching_author = format!("ivo://vtp.conformance/{}/match", ctx.tag());
    let other_author = format!("ivo://vtp.conformance/{}/other", ctx.tag());
    let options = SubscriberOptions {
        filters: vec![format!("//Who[AuthorIVORN='{matching_author}']")],
        ..SubscriberOptions::default()
    };
    let mut filtered = Subscriber::connect_with(ctx, options)?;
    let mut plain = Subscriber::connect(ctx)?;
    // The non-matching event first; once the plain subscriber has it, it has been relayed.
    let other = ctx.ivorn();
    submit_acked(ctx, &event_by(&other, &other_author), &other)?;
    plain
        .wait_event(&other, marker.as_bytes(), ctx.slack())
        .map_err(|e| format!("plain subscriber: {e}"))?;
    let matching = [ctx.ivorn(), ctx.ivorn()];
    for ivorn in &matching {
        submit_acked(ctx, &event_by(ivorn, &matching_author), ivorn)?;
    }
    for ivorn in &matching {
        let (_, before) = filtered
            .wait_event(ivorn, marker.as_bytes(), ctx.slack())
            .map_err(|e| format!("the matching event did not arrive: {e}"))?;
        if before.iter().any(|f| f.is_event(&other)) {
            return Err(
                "the event that does not match the subscriber's filter was sent to it".to_owned(),
            );
        }
    }
    Ok(())
}

// ----------------------------------------------------------------- §4 broker duties

fn dedup_element_bytes(ctx: &mut Ctx<'_>) -> Result<(), String> {
    let marker = ctx.marker();
    let mut sub = Subscriber::connect(ctx)?;
    let ivorn = ctx.ivorn();
    let body = element(&ivorn, AUTHOR);
    let first = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{body}\n");
    let second = format!("<!-- the same event, wrapped differently -->\n{body}");
    submit_acked(ctx, first.as_bytes(), &ivorn)?;
    sub.wait_event(&ivorn, marker.as_bytes(), ctx.slack())?;
    // The receipt for the copy is another scenario's business (duplicate-acked).
    let _ = submit(ctx, second.as_bytes());
    let barrier = ctx.ivorn();
    submit_acked(ctx, &event(&barrier), &barrier)?;
    let (_, before) = sub.wait_event(&barrier, marker.as_bytes(), ctx.slack())?;
    if before.iter().any(|f| f.is_event(&ivorn)) {
        return Err(
            "the same VOEvent element in a different wrapper was relayed again (the broker \
             identifies events by the whole frame, not the element)"
                .to_owned(),
        );
    }
    Ok(())
}

fn parallel_authors(ctx: &mut Ctx<'_>) -> Result<(), String> {
    let marker = ctx.marker();
    let mut subs = [Subscriber::connect(ctx)?, Subscriber::connect(ctx)?];
    let batches: [Vec<String>; 2] = [
        (0..PARALLEL_EVENTS).map(|_| ctx.ivorn()).collect(),
        (0..PARALLEL_EVENTS).map(|_| ctx.ivorn()).collect(),
    ];
    let shared: &Ctx<'_> = ctx;
    let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = batches
            .iter()
            .map(|batch| {
                scope.spawn(move || {
                    batch
                        .iter()
                        .try_for_each(|ivorn| submit_acked(shared, &event(ivorn), ivorn))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("an author thread panicked".to_owned()))
            })
            .collect()
    });
    results.into_iter().collect::<Result<Vec<()>, String>>()?;

    let want: Vec<&String> = batches.iter().flatten().collect();
    let wait = ctx.slack() * 2;
    for (n, sub) in subs.iter_mut().enumerate() {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let deadline = Instant::now() + wait;
        while seen.len() < want.len() {
            match sub.next(deadline) {
                Some(Incoming::Frame(f)) => {
                    if let Kind::Event { ivorn } = &f.kind
                        && let Some(w) = want.iter().find(|w| **w == ivorn)
                    {
                        let count = seen.entry(w.as_str()).or_default();
                        *count += 1;
                        if *count > 1 {
                            return Err(format!("subscriber {n} got {ivorn} twice"));
                        }
                    }
                }
                Some(Incoming::End(why)) => {
                    return Err(format!("subscriber {n}'s connection ended: {why}"));
                }
                None => {
                    return Err(format!(
                        "subscriber {n} got {} of the {} events within {}",
                        seen.len(),
                        want.len(),
                        secs(wait)
                    ));
                }
            }
        }
    }
    // Nothing extra in flight: a barrier reaches both with no second copy before it.
    let barrier = ctx.ivorn();
    submit_acked(ctx, &event(&barrier), &barrier)?;
    for (n, sub) in subs.iter_mut().enumerate() {
        let (_, before) = sub.wait_event(&barrier, marker.as_bytes(), ctx.slack())?;
        if let Some(f) = before.iter().find(|f| want.iter().any(|w| f.is_event(w))) {
            return Err(format!(
                "subscriber {n} got a second copy: {}",
                f.describe()
            ));
        }
    }
    Ok(())
}
