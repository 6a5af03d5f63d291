//! The lowered form: the small XPath 3.1 syntax tree ([`L`]) the lowering produces and the
//! engine turns into xee's own, its size and depth (what xee's compile time and stack grow
//! with), and its `Display` as XPath 3.1 text, for tests and for reading.

use std::fmt;

use crate::filter::xpath1::Axis;

/// An XPath 3.1 expression (the subset the lowering produces).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum L {
    /// `true()` or `false()`.
    Bool(bool),
    /// An `xs:double` literal (also NaN and the infinities).
    Num(f64),
    /// A string literal.
    Str(Box<str>),
    /// `$vN`.
    Var(u32),
    /// `.`
    Dot,
    /// `()`
    Empty,
    /// A call of a standard function: `fn:` unless the name has the prefix `math:`.
    Call(&'static str, Vec<L>),
    /// `x cast as xs:integer` or `x cast as xs:decimal`.
    Cast(Box<L>, CastTo),
    If(Box<L>, Box<L>, Box<L>),
    /// `let $vN := x return y`.
    Let(u32, Box<L>, Box<L>),
    Bin(Op, Box<L>, Box<L>),
    /// Unary minus.
    Neg(Box<L>),
    /// `a ! b`
    Map(Box<L>, Box<L>),
    Path(Box<LPath>),
    /// `(x)[p]...`
    Filter(Box<L>, Vec<L>),
    /// The node-set of [`Lowered::indexes`](super::Lowered::indexes)`[i]`, computed by the
    /// engine for each event.
    Index(u32),
}

impl L {
    /// Nesting depth (1 for a leaf): what xee's compiler recursion grows with.
    pub(crate) fn depth(&self) -> usize {
        let max = |v: &[L]| v.iter().map(Self::depth).max().unwrap_or(0);
        1 + match self {
            Self::Bool(_)
            | Self::Num(_)
            | Self::Str(_)
            | Self::Var(_)
            | Self::Dot
            | Self::Empty
            | Self::Index(_) => 0,
            Self::Call(_, args) => max(args),
            Self::Cast(x, _) | Self::Neg(x) => x.depth(),
            Self::If(a, b, c) => a.depth().max(b.depth()).max(c.depth()),
            Self::Let(_, a, b) | Self::Bin(_, a, b) | Self::Map(a, b) => a.depth().max(b.depth()),
            Self::Path(p) => {
                let start = match &p.start {
                    LStart::Expr(e) => e.depth(),
                    LStart::Root | LStart::Context => 0,
                };
                let steps = p.steps.iter().map(|s| 1 + max(&s.predicates)).max();
                start.max(steps.unwrap_or(0))
            }
            Self::Filter(x, preds) => x.depth().max(1 + max(preds)),
        }
    }

    /// Syntax-tree nodes, steps and predicates included.
    pub(crate) fn size(&self) -> usize {
        1 + match self {
            Self::Bool(_)
            | Self::Num(_)
            | Self::Str(_)
            | Self::Var(_)
            | Self::Dot
            | Self::Empty
            | Self::Index(_) => 0,
            Self::Call(_, args) => args.iter().map(Self::size).sum(),
            Self::Cast(x, _) | Self::Neg(x) => x.size(),
            Self::If(a, b, c) => a.size() + b.size() + c.size(),
            Self::Let(_, a, b) | Self::Bin(_, a, b) | Self::Map(a, b) => a.size() + b.size(),
            Self::Path(p) => {
                let start = match &p.start {
                    LStart::Expr(e) => e.size(),
                    LStart::Root | LStart::Context => 0,
                };
                start
                    + p.steps
                        .iter()
                        .map(|s| 1 + s.predicates.iter().map(Self::size).sum::<usize>())
                        .sum::<usize>()
            }
            Self::Filter(x, preds) => x.size() + preds.iter().map(Self::size).sum::<usize>(),
        }
    }
}

/// Target types of casts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CastTo {
    Integer,
    Decimal,
}

/// Binary operators of the lowered form (`=` and friends are general comparisons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Union,
}

/// A path: where it starts, then axis steps.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LPath {
    pub(crate) start: LStart,
    pub(crate) steps: Vec<LStep>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LStart {
    /// The root of the context node's tree.
    Root,
    /// The context item.
    Context,
    /// Any expression (a filter expression).
    Expr(L),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LStep {
    pub(crate) axis: Axis,
    pub(crate) test: LTest,
    pub(crate) predicates: Vec<L>,
}

/// Node tests, names resolved to namespace URIs (`""` for no namespace).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LTest {
    Name { ns: &'static str, local: Box<str> },
    Any,
    AnyIn(&'static str),
    Node,
    Text,
    Comment,
    Pi,
}

impl fmt::Display for L {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bool(b) => write!(f, "{b}()"),
            Self::Num(x) => write_double(f, *x),
            Self::Str(s) => write!(f, "\"{}\"", s.replace('"', "\"\"")),
            Self::Var(v) => write!(f, "$v{v}"),
            Self::Dot => f.write_str("."),
            Self::Empty => f.write_str("()"),
            Self::Call(name, args) => {
                write!(f, "{name}(")?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
            Self::Cast(x, CastTo::Integer) => write!(f, "(({x}) cast as xs:integer)"),
            Self::Cast(x, CastTo::Decimal) => write!(f, "(({x}) cast as xs:decimal)"),
            Self::If(c, a, b) => write!(f, "(if ({c}) then ({a}) else ({b}))"),
            Self::Let(v, x, y) => write!(f, "(let $v{v} := ({x}) return ({y}))"),
            Self::Bin(op, a, b) => write!(f, "(({a}) {} ({b}))", op.text()),
            Self::Neg(x) => write!(f, "(-({x}))"),
            Self::Map(a, b) => write!(f, "(({a}) ! ({b}))"),
            Self::Path(p) => write!(f, "{p}"),
            Self::Index(i) => write!(f, "$index{i}"),
            Self::Filter(x, preds) => {
                write!(f, "(({x})")?;
                for p in preds {
                    write!(f, "[{p}]")?;
                }
                f.write_str(")")
            }
        }
    }
}

fn write_double(f: &mut fmt::Formatter<'_>, x: f64) -> fmt::Result {
    if x.is_nan() {
        f.write_str("xs:double(\"NaN\")")
    } else if x.is_infinite() {
        let sign = if x > 0.0 { "" } else { "-" };
        write!(f, "xs:double(\"{sign}INF\")")
    } else if x.is_sign_negative() {
        write!(f, "(-{:e})", -x)
    } else {
        write!(f, "{x:e}")
    }
}

impl Op {
    fn text(self) -> &'static str {
        match self {
            Self::Or => "or",
            Self::And => "and",
            Self::Eq => "=",
            Self::Ne => "!=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Add => "+",
            Self::Sub => "-",
            Self::Mul => "*",
            Self::Div => "div",
            Self::Mod => "mod",
            Self::Union => "|",
        }
    }
}

impl fmt::Display for LPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(")?;
        match &self.start {
            LStart::Root if self.steps.is_empty() => f.write_str("/")?,
            LStart::Root => {}
            LStart::Context => {}
            LStart::Expr(e) => write!(f, "({e})")?,
        }
        for (i, s) in self.steps.iter().enumerate() {
            if i > 0 || !matches!(self.start, LStart::Context) {
                f.write_str("/")?;
            }
            write!(f, "{}::{}", axis_name(s.axis), s.test)?;
            for p in &s.predicates {
                write!(f, "[{p}]")?;
            }
        }
        f.write_str(")")
    }
}

impl fmt::Display for LTest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name { ns: "", local } => f.write_str(local),
            Self::Name { ns, local } => write!(f, "Q{{{ns}}}{local}"),
            Self::Any => f.write_str("*"),
            Self::AnyIn(ns) => write!(f, "Q{{{ns}}}*"),
            Self::Node => f.write_str("node()"),
            Self::Text => f.write_str("text()"),
            Self::Comment => f.write_str("comment()"),
            Self::Pi => f.write_str("processing-instruction()"),
        }
    }
}

pub(crate) fn axis_name(axis: Axis) -> &'static str {
    match axis {
        Axis::Ancestor => "ancestor",
        Axis::AncestorOrSelf => "ancestor-or-self",
        Axis::Attribute => "attribute",
        Axis::Child => "child",
        Axis::Descendant => "descendant",
        Axis::DescendantOrSelf => "descendant-or-self",
        Axis::Following => "following",
        Axis::FollowingSibling => "following-sibling",
        Axis::Namespace => "namespace",
        Axis::Parent => "parent",
        Axis::Preceding => "preceding",
        Axis::PrecedingSibling => "preceding-sibling",
        Axis::Myself => "self",
    }
}
