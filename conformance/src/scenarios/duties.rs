//! The broker-duty scenarios (docs/protocol.md §4): de-duplication by the whole frame, and
//! events from authors submitting at once reaching every subscriber exactly once.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{AUTHOR, element, event};
use crate::Ctx;
use crate::net::{Incoming, Kind, Subscriber, submit, submit_acked};
use crate::report::secs;

/// Events submitted at once by each author in `parallel-authors`.
const PARALLEL_EVENTS: usize = 8;

pub(super) fn dedup_element_bytes(ctx: &mut Ctx<'_>) -> Result<(), String> {
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

pub(super) fn parallel_authors(ctx: &mut Ctx<'_>) -> Result<(), String> {
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
