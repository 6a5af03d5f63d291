//! Subscriber filters: the hook through which the node asks "does this event pass?", and
//! `XPathEngine`, Comet's XPath 1.0 filters evaluated with xee (cargo feature `xpath`, on
//! by default).
//!
//! Comet lets a subscriber send XPath 1.0 expressions in its `authenticate` reply
//! (docs/protocol.md §3.3); the broker sends an event to that subscriber if **any** of its
//! filters passes, and sends everything when it has none. The node implements that rule once,
//! for every feed, and delegates compiling and evaluating expressions to a [`FilterEngine`]:
//!
//! - each distinct expression is compiled once, however many subscribers send it, and released
//!   when the last of them goes;
//! - per event, each distinct expression in use is evaluated at most once and the verdict is
//!   shared by every feed holding it;
//! - no engine call happens for an event when no connected feed has filters.
//!
//! [`NoFilterEngine`] is the engine of builds without XPath support: it refuses every expression
//! with a clear reason, so such a build fails visibly instead of silently ignoring filters (the
//! CLI refuses `--filter` at start-up; a subscriber's filters are refused and reported in
//! [`Event::FiltersSet`](crate::Event::FiltersSet)).
//!
//! # Comet's semantics
//!
//! `XPathEngine` reproduces what Comet does with lxml (docs/protocol.md §3.3, §7.1 item 11):
//!
//! - **Syntax**: an expression compiles exactly when `lxml.etree.XPath(expr)` does (the XPath
//!   1.0 grammar with libxml2's habits, see [`xpath1`]). A syntax error is a refused filter:
//!   the node drops it and reports it; the CLI refuses to start on an invalid `--filter`.
//!   What libxml2 only notices while evaluating (an unknown function such as `matches`, a
//!   wrong argument count or type, a variable, a namespace prefix: none is bound) compiles,
//!   and evaluating it is an error, unless short-circuited (`true() or foo()` is true).
//! - **Context**: the event's root element; no namespace prefix bound, so the root is matched
//!   with `local-name()` and the unqualified children directly (`//Param`, `Who/AuthorIVORN`).
//! - **Verdict**, Python's truth of lxml's result: a node-set passes when not empty, a string
//!   when not empty, a number when not zero (**NaN passes**), a boolean as it is; an
//!   evaluation error is false. Any filter passing sends the event.
//!
//! # Design
//!
//! Four stages, each in its own module:
//!
//! 1. [`xpath1`] parses XPath 1.0 as libxml2 does and checks the limits *while parsing*
//!    (length first; nesting, terms, steps, predicates), so nothing large or deep goes further.
//!    XPath 1.0 is statically typed: every sub-expression gets its type (node-set, boolean,
//!    number, string, or "always an evaluation error").
//! 2. `lower` rewrites the typed tree into an XPath 3.1 expression with XPath 1.0 meaning:
//!    every conversion the 1.0 rules imply is written out (`number()` with libxml2's grammar:
//!    `"0x3"`, `"INF"`, `"+5"` are NaN; the first node's string-value for string arguments;
//!    existential comparisons over doubles; booleans against node-sets; IEEE doubles
//!    everywhere, so `1 div 0` is `INF`), `and`/`or` become `if` (short-circuit), predicates
//!    are always booleans or numbers (never a bare node sequence: xee bug #147), numbers are
//!    written back to strings as libxml2 writes them, and two more xee bugs are avoided (NaN
//!    ordered above every number; `processing-instruction("t")` matching nothing). Costly
//!    forms are rewritten: `A//name[p]` becomes `A/descendant::name[p]`, and from the root
//!    `//name` and `//name[@a = "v"]` read a per-event *index* (below). The result is then
//!    checked against two more limits: its size and its nesting depth.
//! 3. The engine builds **xee's syntax tree directly** from the lowered form and compiles it:
//!    xee's text parser, whose time is exponential in nesting, is never used. Compiled
//!    programs are not `Send`; they live in a per-thread cache (see `XPathEngine`).
//! 4. Per event, `evaluate` scans the frame payload once (no tree): size, element depth, a
//!    DOCTYPE, the declared encoding, and counts (nodes, depth, fan-out, names, text) from
//!    which it bounds each filter's cost on *this* event; a filter over budget is false without
//!    running. If any filter is left to run, the event's tree is built once (`tree`: quick-xml
//!    into xot through its public API, the tree xot's own parser makes in half its time) in a
//!    fresh xee store (dropped after the call: xee's store never frees documents), the indexes
//!    the filters read
//!    are filled in one pass over the tree (elements by name, optionally by one attribute
//!    value, in document order), and each filter runs with the root element as context item,
//!    under `catch_unwind`.
//!
//! The differential test (`tests/xpath_diff.rs`) compares every verdict with lxml's on 189
//! filters by 8 packets (GCN 2.0 and 1.1, Gaia, ASAS-SN with a default namespace, MOA without
//! a namespace, LVK and broker test events, an ISO-8859-1 packet): all agree.
//!
//! # Limits ([`xpath1::XPathLimits`], defaults)
//!
//! | limit | default | why |
//! |---|---|---|
//! | length | 2048 bytes | checked first; real filters are under 200 |
//! | nesting (parentheses, predicates, arguments, unary minus) | 16 | xee's compile was exponential in nesting (20 levels: 7 s), and each level costs parser stack |
//! | terms (syntax-tree nodes) | 256 | 3000 `or` terms compiled for 6 s; ~900 broke at evaluation, ~2000 panicked, ~1000 overflowed a 2 MiB stack |
//! | location steps / predicates | 64 / 32 | |
//! | lowered size | 600 nodes | xee's compile time grows with its square: the worst admitted compiles in about 1.5 ms |
//! | lowered depth | 64 | xee's compiler recursion: the worst admitted compiles on a 2 MiB stack in a debug build |
//! | cost per evaluation | 2,000,000 units | estimated per event before running; 0.3–7 ns per unit here, so ~15 ms at most |
//! | event depth / size | 64 / 1 MiB | re-checked before xot (no depth limit) parses |
//!
//! # Costs (`benches/xpath.rs`, release, this loaded 2-core machine)
//!
//! Building the tree of a 10 kB GCN notice: about 140 µs (2.5 kB: 40 µs). Evaluating one filter
//! once the tree exists: median 5–9 µs over the corpus's (event, filter) pairs, p90 under
//! 100 µs. Through a real node, 100 subscribers holding 10 distinct filters: about 2,700
//! events/s (GCN and Gaia notices alternating). Compiling: median 20–30 µs.
//!
//! # Compiling on the event loop
//!
//! Filters are compiled where the node runs, on the event loop, because every compile is
//! bounded by the front-end limits: the worst filters they admit compile in 0.1–1.5 ms
//! (`benches/xpath.rs`: or-chains, comparison chains, number-to-string conversions, sums and
//! nests at the limits), the corpus's median is about 30 µs, and the first compile in a
//! process pays xee's one-time set-up (5–9 ms). Compiling happens only when a subscriber
//! (re)authenticates, never per event, and a distinct expression is compiled once. A filter
//! thread would need threads in a sans-IO core and a round trip per event for every verdict,
//! to move a cost that the limits already keep below a few milliseconds.
//!
//! # Purity notes
//!
//! The engine keeps xee's compiled programs in a thread-local cache (keyed by engine and
//! filter; a program compiled on another thread is recompiled on first use there, and swept
//! once its filter is released), and xee reads the wall clock (`chrono::Local::now`) when it
//! builds an evaluation context, for `fn:current-dateTime`, which no lowered filter calls:
//! verdicts do not depend on it. Panics inside xee are caught; a build with `panic = "abort"`
//! loses that safety net (the limits still keep every known panic away).
//!
//! # Deviations from lxml
//!
//! None on the differential corpus. Known, outside it:
//!
//! - the `namespace::` axis: xee does not implement it, so a filter using it is refused
//!   ("this XPath engine cannot run it");
//! - `id()` is always empty: without a DTD only `xml:id` attributes are IDs, which lxml finds
//!   and VOEvents do not use;
//! - `number()` of a string at run time uses xee's `number()` behind libxml2's grammar checks:
//!   strings libxml2 reads with a bare exponent (`"1e"`, `"1e+"`, as 1) are NaN here;
//! - events deeper than 64 elements or larger than 1 MiB, and evaluations over the cost budget,
//!   are false here and evaluated by Comet (which has no bound at all);
//! - number literals are read with Rust's correctly rounded parser; libxml2's own may differ in
//!   the last bit of a long literal.

#[cfg(feature = "xpath")]
mod cost;
#[cfg(feature = "xpath")]
mod lower;
#[cfg(feature = "xpath")]
mod tree;
#[cfg(feature = "xpath")]
mod xee;
// Without the engine, only `check` reads the syntax tree.
#[cfg_attr(not(feature = "xpath"), allow(dead_code))]
pub mod xpath1;

#[cfg(feature = "xpath")]
pub use xee::{XPathEngine, XPathStats};

use std::fmt;
use std::ops::Range;

/// Identifies a compiled expression inside one engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FilterId(pub u32);

/// Why an expression was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    /// Human-readable reason, e.g. the syntax error and where it is.
    pub reason: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for FilterError {}

/// Compiles and evaluates filter expressions for the node.
///
/// Implementations must be deterministic and must not block for long; an engine that needs to
/// bound its own cost (time, memory) does so inside these calls and reports a failed evaluation
/// as `false`.
pub trait FilterEngine: fmt::Debug {
    /// Compiles `expr`.
    ///
    /// # Errors
    ///
    /// A [`FilterError`] naming what is wrong with the expression (syntax, limits, or "not
    /// supported in this build").
    fn compile(&mut self, expr: &str) -> Result<FilterId, FilterError>;

    /// Releases a compiled expression that no subscriber holds any more.
    fn release(&mut self, id: FilterId);

    /// Evaluates each of `filters` against one event. `payload` is the whole frame payload and
    /// `element` the span of the `VOEvent` root element within it. Pushes one verdict per filter,
    /// in order, into `verdicts` (cleared by the caller). An evaluation error is `false`.
    fn evaluate(
        &mut self,
        payload: &[u8],
        element: Range<usize>,
        filters: &[FilterId],
        verdicts: &mut Vec<bool>,
    );
}

/// The engine of builds without XPath: refuses every expression.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoFilterEngine;

impl FilterEngine for NoFilterEngine {
    fn compile(&mut self, expr: &str) -> Result<FilterId, FilterError> {
        Err(FilterError {
            reason: format!(
                "XPath filters are not supported by this build of vtp (built without the `xpath` \
                 feature); filter {expr:?} refused"
            ),
        })
    }

    fn release(&mut self, _id: FilterId) {}

    fn evaluate(
        &mut self,
        _payload: &[u8],
        _element: Range<usize>,
        filters: &[FilterId],
        verdicts: &mut Vec<bool>,
    ) {
        verdicts.extend(filters.iter().map(|_| false));
    }
}
