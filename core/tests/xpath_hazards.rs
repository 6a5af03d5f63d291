//! Hostile subscribers and events against the XPath engine: every hazard measured on xee-xpath
//! 0.1.5 (docs/filters.md) is defused, and each test shows where.
//!
//! - Compile time exponential in nesting, quadratic in length, `or` chains that panic or
//!   overflow the stack: refused by the front-end's limits before xee sees anything (and xee's
//!   text parser, the exponential part, is never used: the engine builds xee's syntax tree).
//! - Regex backtracking: `matches()` and every other non-XPath-1.0 function is an unknown
//!   function (an evaluation error, as in lxml) that never reaches xee's regex engine.
//! - Deep or huge documents, or with more names than xot can number: refused by the
//!   engine's byte scan before the tree is built.
//! - Evaluation blow-up (`//*[//*[//*]]`): refused per event by the cost bound.
//! - A panic inside xee anyway: caught, counted, and a false verdict or a refused filter.
//!   (xee's jump-offset overflow also yields programs whose evaluation fails without a
//!   panic: an error, so a false verdict where lxml says true; the limits refuse such
//!   filters long before.)
//!
//! No test measures time; each checks what was refused, by what, and that the process lives.
#![cfg(feature = "xpath")]

use std::sync::atomic::Ordering;
use std::thread;

use vtp_core::filter::xpath1::{XPathError, XPathLimits, check};
use vtp_core::filter::{FilterEngine, FilterId, XPathEngine};

const GCN: &[u8] = include_bytes!("data/gcn_swift_bat.xml");

/// Runs `f` on a thread with the 2 MiB stack of a default Rust thread (tokio's workers too).
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("no panic, no stack overflow")
}

fn verdicts(engine: &mut XPathEngine, payload: &[u8], ids: &[FilterId]) -> Vec<bool> {
    let mut out = Vec::new();
    engine.evaluate(payload, 0..payload.len(), ids, &mut out);
    out
}

fn or_chain(n: usize) -> String {
    vec!["true()"; n].join(" or ")
}

#[test]
fn nesting_bombs_are_refused_by_the_depth_limit() {
    let l = XPathLimits::default();
    // 61 characters hung a core for over a minute in xee's parser.
    for bomb in [
        format!("{}1{}", "(".repeat(25), ")".repeat(25)),
        format!("{}true(){}", "not(".repeat(25), ")".repeat(25)),
        format!("//a{}", "[b".repeat(25) + &"]".repeat(25)),
        format!("{}'x'{}", "concat('a',".repeat(25), ")".repeat(25)),
        "-".repeat(25) + "1",
    ] {
        assert_eq!(
            check(&bomb, &l),
            Err(XPathError::TooDeep { max: l.depth_max }),
            "{bomb}"
        );
        let mut engine = XPathEngine::default();
        assert!(engine.compile(&bomb).is_err());
    }
}

#[test]
fn long_or_chains_are_refused_before_xee_even_on_a_small_stack() {
    // 3000 terms: ~6 s of compile in xee; ~900: a panic at evaluation; ~2000: a panic at
    // compile; ~1000: a stack overflow on a 2 MiB stack (the process dies).
    for n in [900, 1000, 2000, 3000] {
        let expr = or_chain(n);
        let refused = on_small_stack(move || {
            let mut engine = XPathEngine::default();
            engine.compile(&expr).map(|_| ()).map_err(|e| e.reason)
        });
        let reason = refused.expect_err("refused");
        assert!(
            reason.contains("bytes long") || reason.contains("terms"),
            "{n} terms: {reason}"
        );
    }
    // Within the byte limit, the term limit refuses: the front-end counts while it parses.
    let mut l = XPathLimits::default();
    l.len_max = 1 << 20;
    assert_eq!(
        check(&or_chain(3000), &l),
        Err(XPathError::TooManyTerms { max: l.nodes_max })
    );
}

#[test]
fn the_largest_filters_the_limits_admit_compile_and_run_on_a_small_stack() {
    let l = XPathLimits::default();
    let engine = XPathEngine::default();
    let largest = |shape: &dyn Fn(usize) -> String| {
        let mut n = 1;
        while engine.check(&shape(n + 1)).is_ok() {
            n += 1;
        }
        assert!(n > 1, "{}", shape(1));
        shape(n)
    };
    let worst = [
        largest(&|n| format!("{}1{}", "(".repeat(n), ")".repeat(n))),
        largest(&|n| format!("{}true(){}", "not(".repeat(n), ")".repeat(n))),
        largest(&|n| format!("//a{}", "[b".repeat(n) + &"]".repeat(n))),
        largest(&|n| or_chain(n)),
        largest(&|n| vec!["1"; n].join("+")),
        largest(&|n| {
            (0..n)
                .map(|i| format!("//Param[@name='p{i}']/@value > {i}"))
                .collect::<Vec<_>>()
                .join(" and ")
        }),
        largest(&|n| {
            (0..n)
                .map(|i| format!("string(//p{i} * 2)"))
                .collect::<Vec<_>>()
                .join(" = ")
        }),
    ];
    assert!(worst.iter().all(|w| w.len() <= l.len_max));
    let ran = on_small_stack(move || {
        let mut engine = XPathEngine::default();
        let ids: Vec<FilterId> = worst
            .iter()
            .map(|w| engine.compile(w).expect("admitted"))
            .collect();
        let mut out = Vec::new();
        engine.evaluate(GCN, 0..GCN.len(), &ids, &mut out);
        (out.len(), engine.stats().panics.load(Ordering::Relaxed))
    });
    assert_eq!(ran, (7, 0));
}

#[test]
fn regex_functions_never_run() {
    // A 24-character pattern backtracked for over a second in xee's matches().
    let mut engine = XPathEngine::default();
    let evil = "matches(//Who/AuthorIVORN, '^(a+)+$')";
    let id = engine.compile(evil).expect("compiles, as in lxml");
    let also = [
        "replace(//Who/AuthorIVORN, '(a+)+b', 'x')",
        "tokenize('aaaa', '(a|aa)+c')",
        "true() and matches('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!', '(a+)+$')",
    ];
    let mut ids = vec![id];
    ids.extend(also.iter().map(|e| engine.compile(e).expect("compiles")));
    let payload = b"<VOEvent ivorn='ivo://x/y#1' role='test'><Who><AuthorIVORN>aaaaaaaaaaaaaaaaaaaaaaaaaaaaa!</AuthorIVORN></Who></VOEvent>";
    assert_eq!(
        verdicts(&mut engine, payload, &ids),
        vec![false; 4],
        "unknown functions: evaluation errors"
    );
    // Lowered to error(): xee ran nothing but the call of fn:error.
    assert_eq!(engine.stats().errors.load(Ordering::Relaxed), 4);
    // lxml agrees: `true() or matches(...)` is true without calling matches.
    let id = engine
        .compile("true() or matches(., '(a+)+$')")
        .expect("compiles");
    assert_eq!(verdicts(&mut engine, payload, &[id]), vec![true]);
}

#[test]
fn deep_and_huge_documents_are_refused_before_the_tree_is_built() {
    let mut engine = XPathEngine::default();
    let id = engine.compile("count(//*) > 0").expect("compiles");
    let deep = |n: usize| {
        let mut s = String::from("<VOEvent ivorn='ivo://x/y#1' role='test'>");
        s.push_str(&"<a>".repeat(n));
        s.push_str(&"</a>".repeat(n));
        s.push_str("</VOEvent>");
        s.into_bytes()
    };
    let limit = engine.limits().doc_depth_max;
    // Within the depth limit (the root counts), the filter runs.
    assert_eq!(verdicts(&mut engine, &deep(limit - 1), &[id]), vec![true]);
    // 100,000 deep took seconds in xot and exhausted memory in queries: never parsed.
    for n in [limit, 100_000] {
        assert_eq!(verdicts(&mut engine, &deep(n), &[id]), vec![false]);
    }
    let huge = format!(
        "<VOEvent ivorn='ivo://x/y#1' role='test'>{}</VOEvent>",
        "<a/>".repeat(engine.limits().doc_len_max / 4)
    );
    assert_eq!(verdicts(&mut engine, huge.as_bytes(), &[id]), vec![false]);
    // 70,000 distinct names overflow xot's 16-bit name ids (a panic): never parsed.
    let names: String = (0..70_000).map(|i| format!("<n{i}/>")).collect();
    let names = format!("<VOEvent ivorn='ivo://x/y#1' role='test'>{names}</VOEvent>");
    assert!(names.len() < engine.limits().doc_len_max);
    assert_eq!(verdicts(&mut engine, names.as_bytes(), &[id]), vec![false]);
    let stats = engine.stats();
    assert_eq!(stats.documents.load(Ordering::Relaxed), 1);
    assert_eq!(stats.documents_refused.load(Ordering::Relaxed), 4);
    assert_eq!(stats.panics.load(Ordering::Relaxed), 0);
    // A DOCTYPE (the message parser refuses it anyway) is refused too: no entity expansion.
    let doctype = b"<!DOCTYPE VOEvent [<!ENTITY a 'aaaa'>]><VOEvent role='test'>&a;</VOEvent>";
    assert_eq!(verdicts(&mut engine, doctype, &[id]), vec![false]);
}

#[test]
fn evaluations_over_budget_are_not_run() {
    let mut engine = XPathEngine::default();
    let costly = [
        "//*[//*[//*]]",
        "count(//*[count(//*[count(//*) > 0]) > 0]) > 0",
        "//*[following::*[preceding::*]]",
        "//@*[. = //@*][. = //text()]",
    ];
    let ids: Vec<FilterId> = costly
        .iter()
        .map(|e| engine.compile(e).expect("valid XPath 1.0"))
        .collect();
    for &id in &ids {
        let est = engine.estimate(id, GCN).expect("estimable");
        assert!(est > engine.limits().cost_max as f64, "{est}");
    }
    assert_eq!(verdicts(&mut engine, GCN, &ids), vec![false; ids.len()]);
    let stats = engine.stats();
    assert_eq!(stats.over_budget.load(Ordering::Relaxed), ids.len() as u64);
    assert_eq!(stats.evaluations.load(Ordering::Relaxed), 0);
    assert_eq!(
        stats.documents.load(Ordering::Relaxed),
        0,
        "no filter to run: no tree built"
    );
    // The same filters on a tiny event are cheap, so they run (and match, as in lxml).
    let tiny = b"<VOEvent ivorn='ivo://x/y#1' role='test'><a><b/></a></VOEvent>";
    let v = verdicts(&mut engine, tiny, &ids[..1]);
    assert_eq!(v, vec![true]);
}

/// xee overflows its 16-bit jump offsets on programs over 64 KiB of bytecode: a panic while
/// compiling, or a broken program that fails while evaluating. The limits keep every filter
/// far below (the largest admitted lowers to a few hundred nodes), so this test lifts them
/// to show the last line of defence.
#[test]
fn panics_inside_xee_are_caught_and_counted() {
    let mut unlimited = XPathLimits::default();
    unlimited.len_max = 1 << 24;
    unlimited.depth_max = 1 << 20;
    unlimited.nodes_max = 1 << 24;
    unlimited.lowered_max = 1 << 24;
    unlimited.lowered_depth_max = 1 << 20;
    let outcomes = thread::Builder::new()
        .stack_size(1 << 30)
        .spawn(move || {
            let mut engine = XPathEngine::new(unlimited);
            let mut outcomes = Vec::new();
            for n in [3_000, 6_000, 12_000, 30_000] {
                let stats = engine.stats();
                let noticed =
                    || stats.panics.load(Ordering::Relaxed) + stats.errors.load(Ordering::Relaxed);
                let before = noticed();
                let outcome = match engine.compile(&vec!["true()"; n].join(" or ")) {
                    Err(_) => "refused",
                    Ok(id) => {
                        let mut out = Vec::new();
                        engine.evaluate(GCN, 0..GCN.len(), &[id], &mut out);
                        if out == [true] { "true" } else { "false" }
                    }
                };
                outcomes.push((n, outcome, noticed() > before));
            }
            outcomes
        })
        .expect("spawn")
        .join()
        .expect("every panic is caught inside the engine");
    println!("{outcomes:?}");
    for &(n, outcome, noticed) in &outcomes {
        // lxml says true; a panic (or an error) makes a refused filter or a false verdict,
        // never a crash.
        assert_eq!(outcome == "true", !noticed, "{n} terms: {outcome}");
    }
    assert!(outcomes.iter().any(|o| o.2), "some size fails in xee");
}
