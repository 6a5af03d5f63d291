//! Subscriber filters: the hook through which the node asks "does this event pass?".
//!
//! Comet lets a subscriber send XPath 1.0 expressions in its `authenticate` reply (PROTOCOL
//! §3.3); the broker sends an event to that subscriber if **any** of its filters passes, and
//! sends everything when it has none. The node implements that rule once, for every feed, and
//! delegates compiling and evaluating expressions to a [`FilterEngine`]:
//!
//! - each distinct expression is compiled once, however many subscribers send it, and released
//!   when the last of them goes;
//! - per event, each distinct expression in use is evaluated at most once and the verdict is
//!   shared by every feed holding it;
//! - no engine call happens for an event when no connected feed has filters.
//!
//! [`NoFilterEngine`] is the engine of builds without XPath support: it refuses every expression
//! with a clear reason, so such a build fails visibly instead of silently ignoring filters.

#[cfg(feature = "xpath")]
mod cost;
#[cfg(feature = "xpath")]
mod lower;
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
