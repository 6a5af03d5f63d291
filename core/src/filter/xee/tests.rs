//! Tests of the engine's mechanics: panics in xee caught, filter ids reused, programs
//! compiled again on another thread and dropped with the engine, one tree per event.

use super::programs::PROGRAMS;
use super::*;
use crate::filter::lower::{L, LPath, LStart};

const GCN: &[u8] = include_bytes!("../../../tests/data/gcn_swift_bat.xml");

fn run(engine: &mut XPathEngine, ids: &[FilterId]) -> Vec<bool> {
    let mut out = Vec::new();
    engine.evaluate(GCN, 0..GCN.len(), ids, &mut out);
    out
}

#[test]
fn a_panic_inside_xee_while_compiling_is_caught() {
    // A relative path without steps is a shape the lowering never makes: xee indexes its
    // first step and panics.
    let broken = Lowered {
        expr: L::Path(Box::new(LPath {
            start: LStart::Context,
            steps: Vec::new(),
        })),
        indexes: Vec::new(),
    };
    let stats = XPathStats::default();
    assert!(matches!(
        compile_program(&broken, &stats),
        Err(XPathError::Unsupported(_))
    ));
    assert_eq!(stats.panics.load(Ordering::Relaxed), 1);
}

#[test]
fn released_ids_are_reused_and_their_programs_replaced() {
    let mut engine = XPathEngine::default();
    let a = engine.compile("count(//Param) > 100").expect("compiles");
    let b = engine.compile("count(//Param) > 1000").expect("compiles");
    assert_eq!(run(&mut engine, &[a, b]), vec![true, false]);
    engine.release(a);
    let c = engine.compile("count(//Param) < 0").expect("compiles");
    assert_eq!(c, a, "the slot is reused");
    assert_eq!(
        run(&mut engine, &[c, b]),
        vec![false, false],
        "not a's program"
    );
    let serial = engine.serial;
    drop(engine);
    let left = PROGRAMS.with(|p| p.borrow().keys().filter(|k| k.0 == serial).count());
    assert_eq!(left, 0, "dropping the engine empties this thread's cache");
}

#[test]
fn the_engine_moves_between_threads_and_compiles_again_there() {
    let mut engine = XPathEngine::default();
    let id = engine
        .compile(r#"//Who[AuthorIVORN="ivo://nasa.gsfc.tan/gcn"]"#)
        .expect("compiles");
    let (mut engine, verdict) = std::thread::spawn(move || {
        let v = run(&mut engine, &[id]);
        (engine, v)
    })
    .join()
    .expect("no panic");
    assert_eq!(verdict, vec![true]);
    assert_eq!(run(&mut engine, &[id]), vec![true]);
    engine.release(id);
    // The other thread's program was dropped with its thread; this thread's, by release.
    let serial = engine.serial;
    let left = PROGRAMS.with(|p| p.borrow().keys().filter(|k| k.0 == serial).count());
    assert_eq!(left, 0);
}

#[test]
fn one_tree_per_event_and_none_when_no_filter_needs_it() {
    let mut engine = XPathEngine::default();
    let ids: Vec<FilterId> = ["count(//Param) > 1", "//Who", "@role = 'observation'"]
        .iter()
        .map(|e| engine.compile(e).expect("compiles"))
        .collect();
    assert_eq!(run(&mut engine, &ids), vec![true, true, true]);
    let stats = engine.stats();
    assert_eq!(stats.documents.load(Ordering::Relaxed), 1);
    assert_eq!(stats.evaluations.load(Ordering::Relaxed), 3);
    let mut out = Vec::new();
    engine.evaluate(GCN, 0..GCN.len(), &[], &mut out);
    assert!(out.is_empty());
    assert_eq!(stats.documents.load(Ordering::Relaxed), 1, "nothing to run");
}

#[test]
fn check_reports_what_compile_would() {
    let engine = XPathEngine::default();
    assert!(engine.check("//Param[@name='x']").is_ok());
    assert!(matches!(
        engine.check("//Param["),
        Err(XPathError::Syntax { .. })
    ));
    assert!(matches!(
        engine.check("namespace::*"),
        Err(XPathError::Unsupported(_))
    ));
    let many = (0..12)
        .map(|i| format!("string(//p{i} * 2)"))
        .collect::<Vec<_>>()
        .join(" = ");
    assert!(matches!(
        engine.check(&many),
        Err(XPathError::TooComplex { .. })
    ));
}
