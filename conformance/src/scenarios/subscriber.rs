//! The broker → subscriber scenarios (docs/protocol.md §3.2): the authenticate sent first,
//! bit-for-bit relay, the iamalive period and the drop of a subscriber that does not answer it,
//! a subscriber's nak, and the xpath-filter a subscriber asks for (the Comet extension of §3.3).

use std::time::Instant;

use super::{event, event_by};
use crate::Ctx;
use crate::net::{Incoming, Kind, Subscriber, SubscriberOptions, submit_acked};
use crate::report::secs;

/// A 10 kB GCN Swift-BAT notice (VOEvent 2.0); its ivorn is replaced by a unique one.
const GCN_SWIFT_BAT: &str = include_str!("../../../core/tests/data/gcn_swift_bat.xml");
const GCN_SWIFT_BAT_IVORN: &str = "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_532871-729";

pub(super) fn authenticate_first(ctx: &mut Ctx<'_>) -> Result<(), String> {
    let sub = Subscriber::connect(ctx)?;
    match &sub.greeting.kind {
        Kind::Transport { origin, .. } if !origin.trim().is_empty() => Ok(()),
        _ => Err("the authenticate has an empty Origin".to_owned()),
    }
}

pub(super) fn relay_bit_for_bit(ctx: &mut Ctx<'_>) -> Result<(), String> {
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

pub(super) fn iamalive_period(ctx: &mut Ctx<'_>) -> Result<(), String> {
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

pub(super) fn unanswered_iamalive_dropped(ctx: &mut Ctx<'_>) -> Result<(), String> {
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

pub(super) fn subscriber_nak_keeps_connection(ctx: &mut Ctx<'_>) -> Result<(), String> {
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

pub(super) fn xpath_filter(ctx: &mut Ctx<'_>) -> Result<(), String> {
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
