//! The per-thread cache of compiled programs: xee's programs are not `Send`, so each thread
//! compiles a filter on first use and keeps the program, keyed by engine and filter, for as
//! long as the engine's entry lives; dropping an engine empties this thread's share.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use xee_xpath_ast::WithSpan;
use xee_xpath_ast::ast;
use xee_xpath_compiler::context::StaticContextBuilder;
use xee_xpath_compiler::interpreter::Program;

use super::syntax::{index_variable, to_xee};
use super::{Entry, XPathEngine, XPathStats};
use crate::filter::FilterId;
use crate::filter::lower::Lowered;
use crate::filter::xpath1::XPathError;

impl Drop for XPathEngine {
    fn drop(&mut self) {
        let serial = self.serial;
        // `try_with`: the thread may be tearing down its thread-locals.
        let _ = PROGRAMS.try_with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                c.retain(|&(s, _), _| s != serial);
            }
        });
    }
}

/// A compiled program, valid while the engine entry whose token it watches is alive.
pub(super) struct Cached {
    token: Weak<()>,
    program: Rc<Program>,
}

thread_local! {
    /// Compiled programs of every engine used on this thread, by (engine serial, filter id).
    pub(super) static PROGRAMS: RefCell<BTreeMap<(u64, u32), Cached>> =
        const { RefCell::new(BTreeMap::new()) };
}

pub(super) fn remember_program(serial: u64, id: FilterId, token: &Arc<()>, program: Program) {
    PROGRAMS.with(|c| {
        let mut c = c.borrow_mut();
        // Entries of filters released on another thread are swept here.
        c.retain(|_, v| v.token.strong_count() > 0);
        c.insert(
            (serial, id.0),
            Cached {
                token: Arc::downgrade(token),
                program: Rc::new(program),
            },
        );
    });
}

pub(super) fn forget_program(serial: u64, id: FilterId) {
    PROGRAMS.with(|c| {
        c.borrow_mut().remove(&(serial, id.0));
    });
}

/// The program of `entry` on this thread, compiled now if this thread has none (or a stale
/// one for a reused id).
pub(super) fn cached_program(
    serial: u64,
    id: FilterId,
    entry: &Entry,
    stats: &XPathStats,
) -> Option<Rc<Program>> {
    let hit = PROGRAMS.with(|c| {
        c.borrow()
            .get(&(serial, id.0))
            .filter(|v| Weak::ptr_eq(&v.token, &Arc::downgrade(&entry.token)))
            .map(|v| v.program.clone())
    });
    if hit.is_some() {
        return hit;
    }
    let Ok(program) = compile_program(&entry.lowered, stats) else {
        // It compiled on the thread that accepted it; it cannot fail here, but if it does,
        // the filter is false, counted as an error.
        stats.errors.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    remember_program(serial, id, &entry.token, program);
    PROGRAMS.with(|c| c.borrow().get(&(serial, id.0)).map(|v| v.program.clone()))
}

/// Builds xee's syntax tree for `lowered` and compiles it, catching panics.
pub(super) fn compile_program(
    lowered: &Lowered,
    stats: &XPathStats,
) -> Result<Program, XPathError> {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let xpath = ast::XPath(ast::Expr(vec![to_xee(&lowered.expr)]).with_empty_span());
        let static_context = StaticContextBuilder::default()
            .variable_names((0..lowered.indexes.len()).map(index_variable))
            .build();
        xee_xpath_compiler::compile(static_context, xpath)
    }));
    match outcome {
        Ok(Ok(program)) => Ok(program),
        Ok(Err(e)) => Err(XPathError::Unsupported(e.to_string())),
        Err(_) => {
            stats.panics.fetch_add(1, Ordering::Relaxed);
            Err(XPathError::Unsupported(
                "the XPath engine failed while compiling it".into(),
            ))
        }
    }
}
