//! The typed syntax tree of an XPath 1.0 filter: expressions with their static type ([`Ty`]),
//! location paths, steps, axes and node tests, and the core function library with the
//! signature each function is checked against. The parser builds it; the cost model, the
//! lowering to XPath 3.1 and the engine read it.

use std::fmt;

/// The static type of an XPath 1.0 expression. XPath 1.0 has exactly four value types and
/// every expression's type is known before evaluation; `Error` marks an expression whose
/// evaluation always fails (libxml2 raises an evaluation error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    NodeSet,
    Boolean,
    Number,
    String,
    Error,
}

/// One node of the syntax tree, with its static type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Expr {
    pub(crate) kind: Kind,
    pub(crate) ty: Ty,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    /// `a or b or ...`, at least two operands, evaluated left to right until one is true.
    Or(Vec<Expr>),
    /// `a and b and ...`, at least two operands, evaluated until one is false.
    And(Vec<Expr>),
    Compare(CmpOp, Box<Expr>, Box<Expr>),
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    Neg(Box<Expr>),
    /// `a | b | ...`, at least two operands.
    Union(Vec<Expr>),
    Literal(Box<str>),
    Number(f64),
    /// `$name`: never bound, so always an evaluation error.
    Var,
    Call(Func, Vec<Expr>),
    Path(Path),
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// `=` and `!=` compare strings or booleans; the others always compare numbers.
    pub(crate) fn is_equality(self) -> bool {
        matches!(self, Self::Eq | Self::Ne)
    }
}

/// Arithmetic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

/// A location path, or a filter expression followed by steps.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Path {
    pub(crate) start: Start,
    pub(crate) steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Start {
    /// `/...`: the document root.
    Root,
    /// A relative location path: the context node.
    Context,
    /// `primary[pred]...`, then the steps, if any.
    Filter(Box<Expr>, Vec<Expr>),
}

/// One location step.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Step {
    pub(crate) axis: Axis,
    pub(crate) test: NodeTest,
    pub(crate) predicates: Vec<Expr>,
}

impl Step {
    /// `descendant-or-self::node()`, the step `//` stands for.
    pub(super) fn descendant_or_self() -> Self {
        Self {
            axis: Axis::DescendantOrSelf,
            test: NodeTest::Node,
            predicates: Vec::new(),
        }
    }
}

/// The thirteen XPath 1.0 axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Axis {
    Ancestor,
    AncestorOrSelf,
    Attribute,
    Child,
    Descendant,
    DescendantOrSelf,
    Following,
    FollowingSibling,
    Namespace,
    Parent,
    Preceding,
    PrecedingSibling,
    /// `self::`
    Myself,
}

impl Axis {
    pub(super) fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "ancestor" => Self::Ancestor,
            "ancestor-or-self" => Self::AncestorOrSelf,
            "attribute" => Self::Attribute,
            "child" => Self::Child,
            "descendant" => Self::Descendant,
            "descendant-or-self" => Self::DescendantOrSelf,
            "following" => Self::Following,
            "following-sibling" => Self::FollowingSibling,
            "namespace" => Self::Namespace,
            "parent" => Self::Parent,
            "preceding" => Self::Preceding,
            "preceding-sibling" => Self::PrecedingSibling,
            "self" => Self::Myself,
            _ => return None,
        })
    }
}

/// A node test.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NodeTest {
    /// `name` or `prefix:name`.
    Name {
        prefix: Option<Box<str>>,
        local: Box<str>,
    },
    /// `*`.
    Any,
    /// `prefix:*`.
    AnyIn(Box<str>),
    /// `node()`.
    Node,
    /// `text()`.
    Text,
    /// `comment()`.
    Comment,
    /// `processing-instruction()` or `processing-instruction('target')`.
    Pi(Option<Box<str>>),
}

impl NodeTest {
    /// Whether the test names a namespace prefix that is not bound. Only `xml` is bound (it
    /// always is, in libxml2 as in every XML processor); Comet binds no other prefix.
    pub(crate) fn has_unbound_prefix(&self) -> bool {
        match self {
            Self::Name {
                prefix: Some(p), ..
            }
            | Self::AnyIn(p) => &**p != "xml",
            _ => false,
        }
    }
}

/// The XPath 1.0 core function library (§4), the only functions libxml2 provides without a
/// namespace prefix. Anything else is [`Func::Unknown`] (an evaluation error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    Last,
    Position,
    Count,
    Id,
    LocalName,
    NamespaceUri,
    Name,
    String,
    Concat,
    StartsWith,
    Contains,
    SubstringBefore,
    SubstringAfter,
    Substring,
    StringLength,
    NormalizeSpace,
    Translate,
    Boolean,
    Not,
    True,
    False,
    Lang,
    Number,
    Sum,
    Floor,
    Ceiling,
    Round,
    Unknown,
}

/// What a function accepts for one argument position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Param {
    /// Anything; converted as the function requires.
    Any,
    /// A node-set; anything else is an evaluation error.
    NodeSet,
}

impl Func {
    pub(super) fn from_name(name: &str) -> Self {
        match name {
            "last" => Self::Last,
            "position" => Self::Position,
            "count" => Self::Count,
            "id" => Self::Id,
            "local-name" => Self::LocalName,
            "namespace-uri" => Self::NamespaceUri,
            "name" => Self::Name,
            "string" => Self::String,
            "concat" => Self::Concat,
            "starts-with" => Self::StartsWith,
            "contains" => Self::Contains,
            "substring-before" => Self::SubstringBefore,
            "substring-after" => Self::SubstringAfter,
            "substring" => Self::Substring,
            "string-length" => Self::StringLength,
            "normalize-space" => Self::NormalizeSpace,
            "translate" => Self::Translate,
            "boolean" => Self::Boolean,
            "not" => Self::Not,
            "true" => Self::True,
            "false" => Self::False,
            "lang" => Self::Lang,
            "number" => Self::Number,
            "sum" => Self::Sum,
            "floor" => Self::Floor,
            "ceiling" => Self::Ceiling,
            "round" => Self::Round,
            _ => Self::Unknown,
        }
    }

    /// (fewest arguments, most arguments, what each accepts, result type).
    fn signature(self) -> (usize, usize, Param, Ty) {
        use Param::{Any, NodeSet};
        match self {
            Self::Last | Self::Position => (0, 0, Any, Ty::Number),
            Self::Count | Self::Sum => (1, 1, NodeSet, Ty::Number),
            Self::Id => (1, 1, Any, Ty::NodeSet),
            Self::LocalName | Self::NamespaceUri | Self::Name => (0, 1, NodeSet, Ty::String),
            Self::String | Self::NormalizeSpace => (0, 1, Any, Ty::String),
            Self::Concat => (2, usize::MAX, Any, Ty::String),
            Self::StartsWith | Self::Contains => (2, 2, Any, Ty::Boolean),
            Self::SubstringBefore | Self::SubstringAfter => (2, 2, Any, Ty::String),
            Self::Substring => (2, 3, Any, Ty::String),
            Self::StringLength | Self::Number => (0, 1, Any, Ty::Number),
            Self::Translate => (3, 3, Any, Ty::String),
            Self::Boolean | Self::Not | Self::Lang => (1, 1, Any, Ty::Boolean),
            Self::True | Self::False => (0, 0, Any, Ty::Boolean),
            Self::Floor | Self::Ceiling | Self::Round => (1, 1, Any, Ty::Number),
            Self::Unknown => (0, 0, Any, Ty::Error),
        }
    }

    /// The static type of a call with these arguments: the function's result type, or
    /// `Error` for an unknown function, a wrong argument count, an argument of the wrong
    /// type, or an argument that always fails.
    pub(super) fn call_type(self, args: &[Expr]) -> Ty {
        let (min, max, param, result) = self.signature();
        if self == Self::Unknown || args.len() < min || args.len() > max {
            return Ty::Error;
        }
        let bad = |a: &Expr| a.ty == Ty::Error || (param == Param::NodeSet && a.ty != Ty::NodeSet);
        if args.iter().any(bad) {
            return Ty::Error;
        }
        result
    }
}

impl Expr {
    pub(super) fn new(kind: Kind, ty: Ty) -> Self {
        Self { kind, ty }
    }

    /// Whether this expression's value depends on the context position or size: a number
    /// (a predicate `[n]` means `[position() = n]`) or a call of `position()` or `last()`
    /// outside any nested predicate.
    pub(crate) fn uses_position(&self) -> bool {
        self.ty == Ty::Number || self.mentions_position()
    }

    fn mentions_position(&self) -> bool {
        match &self.kind {
            Kind::Or(v) | Kind::And(v) | Kind::Union(v) => v.iter().any(Self::mentions_position),
            Kind::Compare(_, a, b) | Kind::Arith(_, a, b) => {
                a.mentions_position() || b.mentions_position()
            }
            Kind::Neg(a) => a.mentions_position(),
            Kind::Call(Func::Position | Func::Last, _) => true,
            Kind::Call(_, args) => args.iter().any(Self::mentions_position),
            Kind::Path(Path {
                start: Start::Filter(primary, _),
                ..
            }) => primary.mentions_position(),
            Kind::Literal(_) | Kind::Number(_) | Kind::Var | Kind::Path(_) => false,
        }
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NodeSet => "node-set",
            Self::Boolean => "boolean",
            Self::Number => "number",
            Self::String => "string",
            Self::Error => "error",
        })
    }
}
