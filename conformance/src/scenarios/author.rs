//! The author → broker scenarios (docs/protocol.md §3.1): receipts for valid and invalid
//! submissions, the close after each receipt, duplicates, refused payloads (malformed XML, DTD
//! entities, Transport messages, bad length prefixes) and the author deadline, with the
//! helpers that build those payloads and check a refusal.

use std::net::TcpListener;
use std::time::Instant;

use super::{AUTHOR, event};
use crate::Ctx;
use crate::net::{
    Author, Frame, Incoming, Kind, ReadEnd, SUITE_IVO, Subscriber, expect_ack, framed, submit,
    submit_acked,
};
use crate::report::secs;

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

pub(super) fn author_ack(ctx: &mut Ctx<'_>) -> Result<(), String> {
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

pub(super) fn author_nak_invalid_ivoid(ctx: &mut Ctx<'_>) -> Result<(), String> {
    // Authority `a2` is too short (IVOID 2.0 needs at least three characters).
    let ivorn = format!("ivo://a2#{}", ctx.tag());
    let (receipt, _) = submit(ctx, &event(&ivorn))?;
    expect_nak(&receipt, Some(&ivorn))
}

pub(super) fn author_nak_no_local_id(ctx: &mut Ctx<'_>) -> Result<(), String> {
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

pub(super) fn author_closed_after_receipt(ctx: &mut Ctx<'_>) -> Result<(), String> {
    let ivorn = ctx.ivorn();
    let (receipt, mut author) = submit(ctx, &event(&ivorn))?;
    expect_ack(&receipt, &ivorn)?;
    author.expect_closed("the receipt")
}

pub(super) fn duplicate_not_relayed(ctx: &mut Ctx<'_>) -> Result<(), String> {
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

pub(super) fn duplicate_acked(ctx: &mut Ctx<'_>) -> Result<(), String> {
    let ivorn = ctx.ivorn();
    let packet = event(&ivorn);
    submit_acked(ctx, &packet, &ivorn)?;
    let (receipt, _) = submit(ctx, &packet).map_err(|e| format!("duplicate: {e}"))?;
    expect_ack(&receipt, &ivorn).map_err(|e| format!("duplicate submission: {e}"))
}

pub(super) fn malformed_xml_refused(ctx: &mut Ctx<'_>) -> Result<(), String> {
    let ivorn = bad_ivorn(ctx);
    refused(ctx, &framed(&malformed(&ivorn)), "malformed XML", &ivorn)
}

pub(super) fn doctype_entity_refused(ctx: &mut Ctx<'_>) -> Result<(), String> {
    let ivorn = bad_ivorn(ctx);
    let packet = event_with_dtd(&ivorn, "<!ENTITY note \"declared in the DTD\">", "&note;");
    refused(ctx, &framed(&packet), "a DOCTYPE with an entity", &ivorn)
}

pub(super) fn billion_laughs_refused(ctx: &mut Ctx<'_>) -> Result<(), String> {
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

pub(super) fn xxe_refused(ctx: &mut Ctx<'_>) -> Result<(), String> {
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

pub(super) fn transport_instead_of_event_refused(ctx: &mut Ctx<'_>) -> Result<(), String> {
    let ivorn = bad_ivorn(ctx);
    let ack = vtp_core::message::build_ack(&ivorn, Some(SUITE_IVO), "2024-01-01T00:00:00Z");
    refused(ctx, &ack, "a Transport ack submitted as an event", &ivorn)
}

pub(super) fn zero_length_frame_refused(ctx: &mut Ctx<'_>) -> Result<(), String> {
    refused_with(ctx, &[0, 0, 0, 0], "a zero-length frame", &|f: &Frame| {
        f.bytes.is_empty()
    })
}

pub(super) fn oversize_prefix_refused(ctx: &mut Ctx<'_>) -> Result<(), String> {
    let ivorn = bad_ivorn(ctx);
    let mut bytes = 100_000_000u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&event(&ivorn));
    refused(ctx, &bytes, "a 100 MB length prefix", &ivorn)
}

pub(super) fn little_endian_prefix_refused(ctx: &mut Ctx<'_>) -> Result<(), String> {
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

pub(super) fn bad_xml_gets_nak(ctx: &mut Ctx<'_>) -> Result<(), String> {
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

pub(super) fn author_deadline(ctx: &mut Ctx<'_>) -> Result<(), String> {
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
