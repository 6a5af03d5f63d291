//! XPath 1.0 front-end: the grammar lxml (libxml2) accepts, checked against limits, with static
//! types. Pure: no xee, no allocation beyond the syntax tree.
//!
//! # Theory of operation
//!
//! [`check`] (and the crate-internal `parse`) read a filter in one left-to-right pass, a
//! recursive descent that mirrors libxml2's `xmlXPathCompileExpr`, because Comet compiles with
//! lxml: an expression is a syntax error here exactly when `lxml.etree.XPath(expr)` raises
//! `XPathSyntaxError`. That is the XPath 1.0 grammar (REC-xpath-19991116 §3) plus libxml2's
//! lexical habits:
//!
//! - number literals may carry an exponent (`1e5`, `1.5E-3`; even `1e` and `1e+` read as 1);
//! - operator names are recognised by prefix where an operator is expected (`1 div2`,
//!   `@a="x"or@b` parse as `1 div 2`, `@a="x" or @b`);
//! - `/ /a` is two root steps (the same as `/a`).
//!
//! Everything XPath 2.0 and later added is a syntax error, as in lxml: `for`, `let`, `if`,
//! `some`, `!`, `=>`, `||`, `eq`, `to`, maps, arrays, `*:name`, `Q{uri}name`, comments
//! `(: :)`, function calls as steps (`@value/number(.)`), predicates on `.` and `..`.
//!
//! What libxml2 only finds out when it *evaluates* an expression is not a syntax error here
//! either: an unknown function, a wrong number or type of arguments, a variable reference (none
//! are bound), a namespace prefix other than `xml` (none are bound), a predicate or a path on
//! something that is not a node-set. Such a sub-expression gets the static type
//! *error*: evaluating it is an error, and so the filter is false *if* it is evaluated
//! (`true() or foo()` is still true: `or` stops after its first true operand).
//!
//! # Limits
//!
//! Every dimension a hostile subscriber could inflate is bounded by [`XPathLimits`] *while*
//! parsing, so neither this parser nor xee behind it ever sees a large or deep expression:
//! the length in bytes (checked first), the nesting depth (parentheses, predicates, function
//! arguments and unary minus: each costs parser stack), the number of syntax-tree nodes
//! (operators, operands, steps), location steps and predicates.
//!
//! The syntax tree and its static types are in `ast`, the parser in `parser`, and libxml2's
//! way of reading numbers in `numbers`.

mod ast;
mod numbers;
mod parser;
#[cfg(test)]
mod tests;

pub(crate) use ast::{ArithOp, Axis, CmpOp, Expr, Func, Kind, NodeTest, Path, Start, Step, Ty};
// Without the engine, nothing outside this module converts strings to numbers.
#[cfg_attr(not(feature = "xpath"), allow(unused_imports))]
pub(crate) use numbers::string_to_number;
pub(crate) use parser::parse;

/// Bounds on one filter expression and on the work evaluating it may cost.
///
/// The defaults admit every filter seen in the field (Comet's manual, GCN and 4PiSky usage: at
/// most a few dozen terms, nesting below 6) with a wide margin, and keep the worst expression
/// they admit cheap to compile (see the module docs of [`crate::filter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct XPathLimits {
    /// Longest expression, in bytes. Default 2048.
    pub len_max: usize,
    /// Deepest nesting of parentheses, predicates, function arguments and unary minus.
    /// Default 16.
    pub depth_max: usize,
    /// Most syntax-tree nodes (operators, operands, function calls, location steps).
    /// Default 256.
    pub nodes_max: usize,
    /// Most location steps, counting the step each `//` stands for. Default 64.
    pub steps_max: usize,
    /// Most predicates (`[...]`). Default 32.
    pub predicates_max: usize,
    /// Most nodes of the XPath 3.1 form the filter is lowered to for xee, whose compile time
    /// grows with the square of it. Default 600 (a few milliseconds at worst); Comet's
    /// filters lower to 10 to 60.
    pub lowered_max: usize,
    /// Deepest nesting of that XPath 3.1 form, which xee's compiler recurses into (its stack
    /// use grows with it). Default 64: the worst admitted filter compiles on a 2 MiB thread
    /// stack in a debug build. A chain such as `1 + 1 + ... + 1` nests one level per term.
    pub lowered_depth_max: usize,
    /// Most work units one evaluation may cost on a given event, estimated before evaluating
    /// from the expression and the event's counts (visiting a node costs 8 units, converting a
    /// node to a number 512, comparing two values 64, handling 16 bytes of text 1). An
    /// evaluation over budget is not run and counts as false.
    /// Default 2,000,000: 0.3 to 7 ns per unit on a loaded 2-core machine (benches/xpath.rs),
    /// so at most about 15 ms; a typical filter on a 10 kB notice costs a tenth of it.
    pub cost_max: u64,
    /// Deepest element nesting of an event the engine builds a tree for. Default 64, the
    /// message parser's default; an event deeper than this is not evaluated (every filter is
    /// false for it).
    pub doc_depth_max: usize,
    /// Largest event, in bytes, the engine builds a tree for. Default 1 MiB, the default frame
    /// limit.
    pub doc_len_max: usize,
}

impl Default for XPathLimits {
    fn default() -> Self {
        Self {
            len_max: 2048,
            depth_max: 16,
            nodes_max: 256,
            steps_max: 64,
            predicates_max: 32,
            lowered_max: 600,
            lowered_depth_max: 64,
            cost_max: 2_000_000,
            doc_depth_max: 64,
            doc_len_max: 1 << 20,
        }
    }
}

/// Why a filter expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XPathError {
    /// Not XPath 1.0 as lxml reads it.
    #[error(
        "XPath syntax error at character {column}: {message} (filters are XPath 1.0, e.g. \
         //Param[@name=\"Packet_Type\" and @value=61])"
    )]
    Syntax {
        /// 1-based character position of the error.
        column: usize,
        /// What was expected or found there.
        message: String,
    },
    /// Longer than [`XPathLimits::len_max`].
    #[error("filter is {len} bytes long, over the limit of {max}; shorten it")]
    TooLong {
        /// Length of the expression in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Nested deeper than [`XPathLimits::depth_max`].
    #[error(
        "filter nests parentheses, predicates, function arguments or unary minus more than \
         {max} deep; flatten it"
    )]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// More syntax-tree nodes than [`XPathLimits::nodes_max`].
    #[error(
        "filter has more than {max} terms; split it into several filters (an event passes \
         when any filter matches)"
    )]
    TooManyTerms {
        /// The limit.
        max: usize,
    },
    /// More location steps than [`XPathLimits::steps_max`].
    #[error("filter has more than {max} location steps; simplify it or split it")]
    TooManySteps {
        /// The limit.
        max: usize,
    },
    /// More predicates than [`XPathLimits::predicates_max`].
    #[error("filter has more than {max} predicates ([...]); simplify it or split it")]
    TooManyPredicates {
        /// The limit.
        max: usize,
    },
    /// The lowered form is larger than [`XPathLimits::lowered_max`].
    #[error(
        "filter expands to {size} XPath operations, over the limit of {max}; simplify it or \
         split it into several filters (an event passes when any filter matches)"
    )]
    TooComplex {
        /// Size of the lowered form.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The lowered form nests deeper than [`XPathLimits::lowered_depth_max`].
    #[error(
        "filter nests {depth} levels deep once lowered for the XPath engine (a chain such as \
         `a + b + c` counts a level per operator), over the limit of {max}; shorten it or \
         split it into several filters"
    )]
    LoweredTooDeep {
        /// Depth of the lowered form.
        depth: usize,
        /// The limit.
        max: usize,
    },
    /// The XPath engine could not compile the expression (a limitation of the engine, not an
    /// error in the filter).
    #[error("filter is valid XPath 1.0 but this XPath engine cannot run it: {0}")]
    Unsupported(String),
}

/// Checks that `expr` is XPath 1.0 that Comet (lxml) would compile, within `limits`.
///
/// # Errors
///
/// [`XPathError`] naming the syntax error and where it is, or the limit exceeded.
pub fn check(expr: &str, limits: &XPathLimits) -> Result<(), XPathError> {
    parse(expr, limits).map(|_| ())
}
