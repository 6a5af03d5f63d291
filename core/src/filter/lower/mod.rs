//! Lowering: an XPath 1.0 syntax tree to an XPath 3.1 expression with XPath 1.0 meaning.
//!
//! The output ([`L`]) is a small XPath 3.1 syntax tree. The xee engine turns it into xee's own
//! syntax tree directly (xee's text parser is never used: its time is exponential in nesting);
//! its `Display` prints it as XPath 3.1 text, for tests and for reading.
//!
//! # XPath 1.0 meaning in XPath 3.1 terms
//!
//! XPath 1.0 is statically typed (node-set, boolean, number, string), so every conversion the
//! 1.0 rules call for is written out explicitly and xee never converts implicitly:
//!
//! | 1.0 | lowered to |
//! |---|---|
//! | boolean(node-set) | `exists(ns)` |
//! | string(node-set): the first node in document order | `string((ns)[1])` |
//! | number(string): libxml2's grammar, NaN otherwise | `let $v := s return if (contains($v,"N") or starts-with(normalize-space($v),"+")) then NaN else number($v)` (xs:double's grammar minus `INF`, `NaN` and a leading `+`) |
//! | number(node-set) | number(string(node-set)) |
//! | string(number) | libxml2's format computed at run time: `NaN`, `Infinity`, integers in the C `int` range without a fraction, 15 digits in fixed notation from 1e-5 to 1e9 (`round-half-to-even` on `xs:decimal`), else a 14-decimal mantissa and a signed 2-digit exponent (`1e+20`) |
//! | number literals, all arithmetic | `xs:double` (IEEE: `1 div 0` is `INF`, `0.1+0.2=0.3` is false) |
//! | `count()`, `position()`, `last()`, `string-length()` | wrapped in `number()` (xs:double) |
//! | `a or b`, `a and b` (short-circuit) | `if (a) then true() else b`, `if (a) then b else false()`, long chains split in halves (nesting grows with the logarithm of the length) |
//! | node-set `=`/`!=` node-set or string | 3.1 general comparison (untyped atomization compares strings) |
//! | node-set `<` ..., node-set vs number | `(ns ! number-of-string(.)) op n` (existential over doubles) |
//! | `<`, `<=`, `>`, `>=` on numbers | operands filtered with `[. = .]`: xee orders NaN above every number, XPath says any comparison with NaN is false |
//! | node-set vs boolean | `exists(ns) op b` |
//! | no node-set: `=`/`!=` | as booleans if either is boolean, else numbers if either is a number, else strings |
//! | no node-set: `<`, `<=`, `>`, `>=` | as numbers (`"10" < "9"` is false) |
//! | predicate of type number | `[n]` (position), any other type: `[boolean(p)]` (never a bare node sequence) |
//! | `sum(ns)` | `sum(ns ! number-of-string(.), 0e0)` |
//! | `id(x)` | `()` (no DTD, so no IDs; see the deviations) |
//! | a sub-expression whose evaluation always fails (unknown function, variable, unbound prefix, wrong argument type or count, predicate on a non-node-set) | `error()` |
//!
//! Costly forms are rewritten: `A//name[p]` (descendant-or-self::node()/child::name) becomes
//! `A/descendant::name[p]` when no predicate depends on position, and `A//@x` becomes
//! `A/descendant-or-self::*/@x` (only elements have attributes). From the root, `//name[p]`
//! reads an index instead ([`L::Index`]): the engine lists, once per event and in one pass,
//! the elements of each name the filters need, taking a first predicate `@a = "v"` into the
//! index too. Ten filters on `//Param[@name = ...]` then walk the tree once, not ten times.
//!
//! Two xee bugs are worked around: xee orders NaN above every number (`NaN > 1` is true), so
//! the operands of `<`, `<=`, `>`, `>=` are filtered with `[. = .]`; and xee's
//! `processing-instruction("target")` matches nothing, so it becomes
//! `processing-instruction()[name(.) = "target"]`.

use std::fmt;

use super::xpath1::{ArithOp, Axis, CmpOp, Expr, Func, Kind, NodeTest, Path, Start, Step, Ty};

/// The namespace the `xml` prefix is always bound to.
pub(crate) const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

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
    /// The node-set of [`Lowered::indexes`]`[i]`, computed by the engine for each event.
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

/// Lowers a whole filter to a boolean expression computing Comet's verdict: a node-set passes
/// when it is not empty, a string when it is not empty, a number when it is not zero (NaN
/// passes), a boolean as it is.
pub(crate) fn lower_filter(e: &Expr) -> Lowered {
    let mut l = Lowering {
        next_var: 0,
        indexes: Vec::new(),
    };
    let expr = match e.ty {
        // NaN != 0 is true, as Python's bool(nan).
        Ty::Number => bin(Op::Ne, l.number(e), L::Num(0.0)),
        _ => l.boolean(e),
    };
    Lowered {
        expr,
        indexes: l.indexes,
    }
}

/// A lowered filter: its expression, and the node-sets it reads from the engine
/// ([`L::Index`] `i` is `indexes[i]`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Lowered {
    pub(crate) expr: L,
    pub(crate) indexes: Vec<IndexKey>,
}

impl Lowered {
    /// Syntax-tree nodes of the lowered form: what xee's compile time grows with.
    pub(crate) fn size(&self) -> usize {
        self.expr.size()
    }

    /// Nesting depth of the lowered form: what xee's compiler stack grows with.
    pub(crate) fn depth(&self) -> usize {
        self.expr.depth()
    }
}

/// A node-set the engine computes once per event, in one pass over the tree, for every
/// filter that reads it: the elements with a local name and no namespace, in document order,
/// optionally only those whose attribute (no namespace) has a given value. It stands for
/// `/descendant::name` and `/descendant::name[@attribute = "value"]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct IndexKey {
    pub(crate) element: Box<str>,
    pub(crate) attribute: Option<(Box<str>, Box<str>)>,
}

struct Lowering {
    next_var: u32,
    indexes: Vec<IndexKey>,
}

impl Lowering {
    fn var(&mut self) -> u32 {
        self.next_var += 1;
        self.next_var
    }

    // ------------------------------------------------------------------------ conversions

    fn boolean(&mut self, e: &Expr) -> L {
        match e.ty {
            Ty::Boolean => self.value(e),
            Ty::NodeSet => call("exists", vec![self.value(e)]),
            Ty::Number | Ty::String => call("boolean", vec![self.value(e)]),
            Ty::Error => error(),
        }
    }

    fn number(&mut self, e: &Expr) -> L {
        match e.ty {
            Ty::Number => self.value(e),
            Ty::String => {
                let s = self.value(e);
                self.number_of_string(s)
            }
            Ty::NodeSet => {
                let s = first_string(self.value(e));
                self.number_of_string(s)
            }
            Ty::Boolean => call("number", vec![self.value(e)]),
            Ty::Error => error(),
        }
    }

    fn string(&mut self, e: &Expr) -> L {
        match e.ty {
            Ty::String => self.value(e),
            Ty::NodeSet => first_string(self.value(e)),
            Ty::Number => {
                let n = self.value(e);
                self.string_of_number(n)
            }
            Ty::Boolean => call("string", vec![self.value(e)]),
            Ty::Error => error(),
        }
    }

    /// XPath 1.0 `number()` of a string, libxml2's grammar.
    fn number_of_string(&mut self, s: L) -> L {
        if let L::Str(text) = &s {
            return L::Num(super::xpath1::string_to_number(text));
        }
        let v = self.var();
        let bad = bin(
            Op::Or,
            call("contains", vec![L::Var(v), str_lit("N")]),
            call(
                "starts-with",
                vec![call("normalize-space", vec![L::Var(v)]), str_lit("+")],
            ),
        );
        let body = L::If(
            Box::new(bad),
            Box::new(L::Num(f64::NAN)),
            Box::new(call("number", vec![L::Var(v)])),
        );
        L::Let(v, Box::new(s), Box::new(body))
    }

    /// XPath 1.0 `string()` of a number, written as libxml2 writes it (see
    /// [`number_to_string`], which this computes at run time with decimal arithmetic).
    fn string_of_number(&mut self, n: L) -> L {
        if let L::Num(x) = n {
            return L::Str(number_to_string(x).into());
        }
        let (v, a, p, e, m) = (self.var(), self.var(), self.var(), self.var(), self.var());
        let x = || L::Var(v);
        let num = |k: f64| L::Num(k);
        let if_ = |c: L, t: L, f: L| L::If(Box::new(c), Box::new(t), Box::new(f));
        let let_ = |var: u32, value: L, body: L| L::Let(var, Box::new(value), Box::new(body));
        let cast = |value: L, to: CastTo| L::Cast(Box::new(value), to);
        let log10 = |value: L| call("math:log10", vec![value]);
        let rounded = |value: L, digits: L| {
            call(
                "string",
                vec![call(
                    "round-half-to-even",
                    vec![cast(value, CastTo::Decimal), digits],
                )],
            )
        };
        // libxml2 prints integers strictly inside the C `int` range without a fraction.
        let integer = bin(
            Op::And,
            bin(Op::Eq, x(), call("floor", vec![x()])),
            bin(
                Op::And,
                bin(Op::Gt, x(), num(-2_147_483_648.0)),
                bin(Op::Lt, x(), num(2_147_483_647.0)),
            ),
        );
        // From 1e-5 to 1e9: fixed notation, 15 digits from the truncated decimal exponent.
        let places = if_(
            bin(Op::Gt, L::Var(p), num(0.0)),
            bin(Op::Sub, num(14.0), L::Var(p)),
            bin(Op::Sub, num(15.0), L::Var(p)),
        );
        let fixed = let_(
            p,
            cast(log10(L::Var(a)), CastTo::Integer),
            rounded(x(), cast(places, CastTo::Integer)),
        );
        // Otherwise: a mantissa with 14 decimals and a signed exponent of two digits or more.
        let pow10 = |k: L| call("math:pow", vec![num(10.0), k]);
        let exponent = if_(
            bin(
                Op::Ge,
                call("abs", vec![bin(Op::Div, x(), pow10(L::Var(e)))]),
                num(10.0),
            ),
            bin(Op::Add, L::Var(e), num(1.0)),
            if_(
                bin(
                    Op::Lt,
                    call("abs", vec![bin(Op::Div, x(), pow10(L::Var(e)))]),
                    num(1.0),
                ),
                bin(Op::Sub, L::Var(e), num(1.0)),
                L::Var(e),
            ),
        );
        let scientific = let_(
            e,
            call("floor", vec![log10(L::Var(a))]),
            let_(
                m,
                exponent,
                call(
                    "concat",
                    vec![
                        rounded(
                            bin(Op::Div, x(), pow10(L::Var(m))),
                            cast(num(14.0), CastTo::Integer),
                        ),
                        str_lit("e"),
                        if_(bin(Op::Lt, L::Var(m), num(0.0)), str_lit("-"), str_lit("+")),
                        if_(
                            bin(Op::Lt, call("abs", vec![L::Var(m)]), num(10.0)),
                            str_lit("0"),
                            str_lit(""),
                        ),
                        call(
                            "string",
                            vec![cast(call("abs", vec![L::Var(m)]), CastTo::Integer)],
                        ),
                    ],
                ),
            ),
        );
        let general = let_(
            a,
            call("abs", vec![x()]),
            if_(
                bin(
                    Op::And,
                    bin(Op::Ge, L::Var(a), num(1e-5)),
                    bin(Op::Le, L::Var(a), num(1e9)),
                ),
                fixed,
                scientific,
            ),
        );
        let chain = if_(
            bin(Op::Ne, x(), x()),
            str_lit("NaN"),
            if_(
                bin(Op::Eq, x(), num(f64::INFINITY)),
                str_lit("Infinity"),
                if_(
                    bin(Op::Eq, x(), num(f64::NEG_INFINITY)),
                    str_lit("-Infinity"),
                    if_(
                        integer,
                        call("string", vec![cast(x(), CastTo::Integer)]),
                        general,
                    ),
                ),
            ),
        );
        let_(v, n, chain)
    }

    /// `ns ! number(string(.))`: the numbers of each node of a node-set.
    fn numbers_of_nodes(&mut self, ns: L) -> L {
        let each = self.number_of_string(call("string", vec![L::Dot]));
        L::Map(Box::new(ns), Box::new(each))
    }

    // --------------------------------------------------------------------------- values

    /// The value of `e` in its own static type (a node sequence for a node-set, one item
    /// otherwise).
    fn value(&mut self, e: &Expr) -> L {
        if e.ty == Ty::Error {
            return error();
        }
        match &e.kind {
            Kind::Or(terms) => self.or(terms),
            Kind::And(terms) => self.and(terms),
            Kind::Compare(op, a, b) => self.compare(*op, a, b),
            Kind::Arith(op, a, b) => {
                let op = match op {
                    ArithOp::Add => Op::Add,
                    ArithOp::Sub => Op::Sub,
                    ArithOp::Mul => Op::Mul,
                    ArithOp::Div => Op::Div,
                    ArithOp::Mod => Op::Mod,
                };
                bin(op, self.number(a), self.number(b))
            }
            Kind::Neg(a) => L::Neg(Box::new(self.number(a))),
            Kind::Union(terms) => {
                let mut it = terms.iter();
                let mut acc = it.next().map_or(L::Empty, |t| self.value(t));
                for t in it {
                    acc = bin(Op::Union, acc, self.value(t));
                }
                acc
            }
            Kind::Literal(s) => L::Str(s.clone()),
            Kind::Number(n) => L::Num(*n),
            Kind::Var => error(),
            Kind::Call(f, args) => self.call(*f, args),
            Kind::Path(p) => self.path(p),
        }
    }

    /// `a or b or ...`: `if (a) then true() else ...`, split in halves so that the nesting
    /// grows with the logarithm of the number of terms; the terms are still evaluated left
    /// to right and only until one is true.
    fn or(&mut self, terms: &[Expr]) -> L {
        match terms {
            [] => L::Bool(false),
            [t] => self.boolean(t),
            _ => {
                let (left, right) = terms.split_at(terms.len() / 2);
                let (l, r) = (self.or(left), self.or(right));
                L::If(Box::new(l), Box::new(L::Bool(true)), Box::new(r))
            }
        }
    }

    /// `a and b and ...`: `if (a) then ... else false()`, split in halves like [`Self::or`].
    fn and(&mut self, terms: &[Expr]) -> L {
        match terms {
            [] => L::Bool(true),
            [t] => self.boolean(t),
            _ => {
                let (left, right) = terms.split_at(terms.len() / 2);
                let (l, r) = (self.and(left), self.and(right));
                L::If(Box::new(l), Box::new(r), Box::new(L::Bool(false)))
            }
        }
    }

    fn compare(&mut self, op: CmpOp, a: &Expr, b: &Expr) -> L {
        let lop = match op {
            CmpOp::Eq => Op::Eq,
            CmpOp::Ne => Op::Ne,
            CmpOp::Lt => Op::Lt,
            CmpOp::Le => Op::Le,
            CmpOp::Gt => Op::Gt,
            CmpOp::Ge => Op::Ge,
        };
        let eq = op.is_equality();
        let (l, r) = match (a.ty, b.ty) {
            (Ty::NodeSet, Ty::NodeSet) if eq => (self.value(a), self.value(b)),
            (Ty::NodeSet, Ty::String) if eq => (self.value(a), self.value(b)),
            (Ty::String, Ty::NodeSet) if eq => (self.value(a), self.value(b)),
            (Ty::NodeSet, Ty::Boolean) => (self.boolean(a), self.value(b)),
            (Ty::Boolean, Ty::NodeSet) => (self.value(a), self.boolean(b)),
            (Ty::NodeSet, _) => {
                let ns = self.value(a);
                (self.numbers_of_nodes(ns), self.number(b))
            }
            (_, Ty::NodeSet) => {
                let ns = self.value(b);
                (self.number(a), self.numbers_of_nodes(ns))
            }
            (Ty::Boolean, _) | (_, Ty::Boolean) if eq => (self.boolean(a), self.boolean(b)),
            (Ty::Number, _) | (_, Ty::Number) if eq => (self.number(a), self.number(b)),
            _ if eq => (self.string(a), self.string(b)),
            _ => (self.number(a), self.number(b)),
        };
        if eq || a.ty == Ty::Boolean || b.ty == Ty::Boolean {
            return bin(lop, l, r);
        }
        // xee orders NaN above every number (`NaN > 1` is true); IEEE and XPath 1.0 say any
        // comparison with NaN is false. `=` and `!=` are right; for the others, drop NaNs.
        bin(lop, without_nan(l), without_nan(r))
    }

    fn call(&mut self, f: Func, args: &[Expr]) -> L {
        let first_node = |l: &mut Self, i: usize| match args.get(i) {
            Some(a) => {
                let ns = l.value(a);
                L::Filter(Box::new(ns), vec![L::Num(1.0)])
            }
            None => L::Dot,
        };
        let string_arg = |l: &mut Self, i: usize| match args.get(i) {
            Some(a) => l.string(a),
            None => call("string", vec![L::Dot]),
        };
        match f {
            Func::Last => call("number", vec![call("last", vec![])]),
            Func::Position => call("number", vec![call("position", vec![])]),
            Func::Count => {
                let ns = args.first().map_or(L::Empty, |a| self.value(a));
                call("number", vec![call("count", vec![ns])])
            }
            Func::Id => L::Empty,
            Func::LocalName => call("local-name", vec![first_node(self, 0)]),
            Func::NamespaceUri => call(
                "string",
                vec![call("namespace-uri", vec![first_node(self, 0)])],
            ),
            Func::Name => call("name", vec![first_node(self, 0)]),
            Func::String => string_arg(self, 0),
            Func::Concat => {
                let parts = args.iter().map(|a| self.string(a)).collect();
                call("concat", parts)
            }
            Func::StartsWith | Func::Contains | Func::SubstringBefore | Func::SubstringAfter => {
                let name = match f {
                    Func::StartsWith => "starts-with",
                    Func::Contains => "contains",
                    Func::SubstringBefore => "substring-before",
                    _ => "substring-after",
                };
                let (a, b) = (string_arg(self, 0), string_arg(self, 1));
                call(name, vec![a, b])
            }
            Func::Substring => {
                let mut v = vec![string_arg(self, 0)];
                v.extend(args[1..].iter().map(|a| self.number(a)));
                call("substring", v)
            }
            Func::StringLength => {
                let s = string_arg(self, 0);
                call("number", vec![call("string-length", vec![s])])
            }
            Func::NormalizeSpace => call("normalize-space", vec![string_arg(self, 0)]),
            Func::Translate => {
                let v = (0..3).map(|i| string_arg(self, i)).collect();
                call("translate", v)
            }
            Func::Boolean => self.boolean(&args[0]),
            Func::Not => call("not", vec![self.boolean(&args[0])]),
            Func::True => L::Bool(true),
            Func::False => L::Bool(false),
            Func::Lang => call("lang", vec![string_arg(self, 0)]),
            Func::Number => match args.first() {
                Some(a) => self.number(a),
                None => self.number_of_string(call("string", vec![L::Dot])),
            },
            Func::Sum => {
                let ns = self.value(&args[0]);
                let numbers = self.numbers_of_nodes(ns);
                call("sum", vec![numbers, L::Num(0.0)])
            }
            Func::Floor | Func::Ceiling | Func::Round => {
                let name = match f {
                    Func::Floor => "floor",
                    Func::Ceiling => "ceiling",
                    _ => "round",
                };
                call(name, vec![self.number(&args[0])])
            }
            // Typed Error, so `value` never gets here.
            Func::Unknown => error(),
        }
    }

    fn path(&mut self, p: &Path) -> L {
        if let Some(l) = self.indexed_path(p) {
            return l;
        }
        let start = match &p.start {
            Start::Root => LStart::Root,
            Start::Context => LStart::Context,
            Start::Filter(primary, predicates) => {
                let base = self.value(primary);
                if predicates.is_empty() {
                    LStart::Expr(base)
                } else {
                    let preds = predicates.iter().map(|q| self.predicate(q)).collect();
                    LStart::Expr(L::Filter(Box::new(base), preds))
                }
            }
        };
        if p.steps.is_empty() {
            return match start {
                LStart::Expr(e) => e,
                start => L::Path(Box::new(LPath {
                    start,
                    steps: Vec::new(),
                })),
            };
        }
        let steps = self.steps(&p.steps);
        L::Path(Box::new(LPath { start, steps }))
    }

    /// `//name[preds]/rest` read from an index: the elements named `name`, in document order,
    /// are what `/descendant::name` selects from the root, so predicates (even positional
    /// ones, which keep the `//` form anyway) see the same nodes in the same order. A first
    /// predicate `@attribute = "literal"` (alone or as the first term of an `and`) is taken
    /// into the index too.
    fn indexed_path(&mut self, p: &Path) -> Option<L> {
        let (Start::Root, [first, second, rest @ ..]) = (&p.start, p.steps.as_slice()) else {
            return None;
        };
        let dos = first.axis == Axis::DescendantOrSelf
            && first.test == NodeTest::Node
            && first.predicates.is_empty();
        let NodeTest::Name {
            prefix: None,
            local,
        } = &second.test
        else {
            return None;
        };
        if !dos || second.axis != Axis::Child || second.predicates.iter().any(Expr::uses_position) {
            return None;
        }
        let mut key = IndexKey {
            element: local.clone(),
            attribute: None,
        };
        let mut preds = Vec::with_capacity(second.predicates.len());
        let mut others = second.predicates.as_slice();
        if let Some((q, tail)) = second.predicates.split_first() {
            match &q.kind {
                _ if attribute_equals(q).is_some() => {
                    key.attribute = attribute_equals(q);
                    others = tail;
                }
                Kind::And(terms) if attribute_equals(&terms[0]).is_some() => {
                    key.attribute = attribute_equals(&terms[0]);
                    preds.push(self.and(&terms[1..]));
                    others = tail;
                }
                _ => {}
            }
        }
        preds.extend(others.iter().map(|q| self.predicate(q)));
        let index = match self.indexes.iter().position(|k| *k == key) {
            Some(i) => i,
            None => {
                self.indexes.push(key);
                self.indexes.len() - 1
            }
        };
        let mut base = L::Index(u32::try_from(index).unwrap_or(u32::MAX));
        if !preds.is_empty() {
            base = L::Filter(Box::new(base), preds);
        }
        if rest.is_empty() {
            return Some(base);
        }
        let steps = self.steps(rest);
        Some(L::Path(Box::new(LPath {
            start: LStart::Expr(base),
            steps,
        })))
    }

    fn steps(&mut self, steps: &[Step]) -> Vec<LStep> {
        let mut out = Vec::with_capacity(steps.len());
        let mut i = 0;
        while i < steps.len() {
            let s = &steps[i];
            let dos = s.axis == Axis::DescendantOrSelf
                && s.test == NodeTest::Node
                && s.predicates.is_empty();
            if let (true, Some(next)) = (dos, steps.get(i + 1)) {
                if next.axis == Axis::Child && !next.predicates.iter().any(Expr::uses_position) {
                    out.push(self.step(Axis::Descendant, next));
                    i += 2;
                    continue;
                }
                if next.axis == Axis::Attribute {
                    out.push(LStep {
                        axis: Axis::DescendantOrSelf,
                        test: LTest::Any,
                        predicates: Vec::new(),
                    });
                    i += 1;
                    continue;
                }
            }
            out.push(self.step(s.axis, s));
            i += 1;
        }
        out
    }

    fn step(&mut self, axis: Axis, s: &Step) -> LStep {
        let test = match &s.test {
            // `xml` is the only prefix that reaches here: the parser typed a path with any
            // other prefix as an error.
            NodeTest::Name { prefix, local } => LTest::Name {
                ns: if prefix.is_some() { XML_NS } else { "" },
                local: local.clone(),
            },
            NodeTest::Any => LTest::Any,
            NodeTest::AnyIn(_) => LTest::AnyIn(XML_NS),
            NodeTest::Node => LTest::Node,
            NodeTest::Text => LTest::Text,
            NodeTest::Comment => LTest::Comment,
            NodeTest::Pi(_) => LTest::Pi,
        };
        let mut predicates = Vec::with_capacity(s.predicates.len() + 1);
        if let NodeTest::Pi(Some(target)) = &s.test {
            // xee's `processing-instruction("t")` matches nothing; test the target by name.
            predicates.push(bin(
                Op::Eq,
                call("name", vec![L::Dot]),
                L::Str(target.clone()),
            ));
        }
        predicates.extend(s.predicates.iter().map(|q| self.predicate(q)));
        LStep {
            axis,
            test,
            predicates,
        }
    }

    /// A predicate: a number selects by position (as in 3.1), anything else is converted to
    /// a boolean first, so xee never sees a bare node sequence in a predicate.
    fn predicate(&mut self, q: &Expr) -> L {
        match q.ty {
            Ty::Number => self.value(q),
            _ => self.boolean(q),
        }
    }
}

/// `@name = "literal"` (either way round): the attribute's name and the literal.
fn attribute_equals(e: &Expr) -> Option<(Box<str>, Box<str>)> {
    let Kind::Compare(CmpOp::Eq, a, b) = &e.kind else {
        return None;
    };
    let (path, literal) = match (&a.kind, &b.kind) {
        (Kind::Path(p), Kind::Literal(s)) | (Kind::Literal(s), Kind::Path(p)) => (p, s),
        _ => return None,
    };
    match (&path.start, path.steps.as_slice()) {
        (
            Start::Context,
            [
                Step {
                    axis: Axis::Attribute,
                    test:
                        NodeTest::Name {
                            prefix: None,
                            local,
                        },
                    predicates,
                },
            ],
        ) if predicates.is_empty() => Some((local.clone(), literal.clone())),
        _ => None,
    }
}

fn call(name: &'static str, args: Vec<L>) -> L {
    L::Call(name, args)
}

fn bin(op: Op, a: L, b: L) -> L {
    L::Bin(op, Box::new(a), Box::new(b))
}

fn str_lit(s: &str) -> L {
    L::Str(s.into())
}

fn error() -> L {
    call("error", Vec::new())
}

/// `(x)[. = .]`: the numbers of `x` that are not NaN (a literal is decided here).
fn without_nan(x: L) -> L {
    match x {
        L::Num(n) if n.is_nan() => L::Empty,
        L::Num(_) => x,
        _ => L::Filter(Box::new(x), vec![bin(Op::Eq, L::Dot, L::Dot)]),
    }
}

/// `string((ns)[1])`: the string-value of the first node, or "" for an empty node-set.
fn first_string(ns: L) -> L {
    call("string", vec![L::Filter(Box::new(ns), vec![L::Num(1.0)])])
}

/// XPath 1.0 `string(number)` as libxml2 writes it (`xmlXPathFormatNumber`): `NaN`,
/// `Infinity`, integers in the `int` range without a fraction, numbers from 1e-5 to 1e9 with
/// up to 15 significant digits, others in exponent form (`1e+20`, `1.5e-07`).
pub(crate) fn number_to_string(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if x == x.trunc() && x > -2_147_483_648.0 && x < 2_147_483_647.0 {
        // -0 prints as 0.
        return format!("{}", x as i64);
    }
    let a = x.abs();
    if (1e-5..=1e9).contains(&a) {
        // libxml2: fraction digits from the truncated decimal exponent, trailing zeros trimmed.
        let integer_place = a.log10() as i32;
        let decimals = if integer_place > 0 {
            15 - integer_place - 1
        } else {
            15 - integer_place
        };
        let decimals = decimals.max(0) as usize;
        let s = format!("{x:.decimals$}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        return s.to_owned();
    }
    let s = format!("{x:.14e}");
    let (mantissa, exponent) = s.split_once('e').unwrap_or((&s, "0"));
    let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.abs())
}

// ------------------------------------------------------------------------------- printing

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::xpath1::{XPathLimits, parse};

    fn lowered(e: &str) -> String {
        lower_filter(&parse(e, &XPathLimits::default()).expect("parses"))
            .expr
            .to_string()
    }

    fn indexes(e: &str) -> Vec<IndexKey> {
        lower_filter(&parse(e, &XPathLimits::default()).expect("parses")).indexes
    }

    #[test]
    fn comets_manual_filter_reads_an_index_and_converts_numbers_like_xpath1() {
        assert_eq!(
            lowered(r#"//Param[@name="SC_Lat" and @value>600]"#),
            "exists((($index0)[(((((((attribute::value)) ! ((let $v1 := (string(.)) return \
             ((if (((contains($v1, \"N\")) or (starts-with(normalize-space($v1), \"+\")))) \
             then (xs:double(\"NaN\")) else (number($v1))))))))[((.) = (.))])) > (6e2))]))"
        );
        assert_eq!(
            indexes(r#"//Param[@name="SC_Lat" and @value>600]"#),
            vec![IndexKey {
                element: "Param".into(),
                attribute: Some(("name".into(), "SC_Lat".into())),
            }]
        );
    }

    #[test]
    fn indexes_stand_for_root_descendant_steps_only() {
        let plain = |e: &str| IndexKey {
            element: e.into(),
            attribute: None,
        };
        assert_eq!(indexes(r#"//Who[AuthorIVORN="x"]"#), vec![plain("Who")]);
        assert_eq!(
            indexes("count(//Param) + count(//Param)"),
            vec![plain("Param")]
        );
        assert_eq!(
            lowered(r#"//Group[@name="g"]/Param[@name="p"]"#),
            "exists((($index0)/child::Param[(((attribute::name)) = (\"p\"))]))"
        );
        assert!(indexes("//Param[1]").is_empty(), "positional");
        assert!(indexes(".//Param").is_empty(), "relative");
        assert!(indexes("//x:Param").is_empty(), "prefixed");
        assert!(indexes("/a//b").is_empty(), "not from the root");
        assert_eq!(
            lowered(r#"//P[@a="1"][@b="2"]"#),
            "exists((($index0)[(((attribute::b)) = (\"2\"))]))"
        );
    }

    #[test]
    fn root_filter_keeps_the_context_and_compares_strings() {
        assert_eq!(
            lowered(r#"/*[local-name()="VOEvent" and @role!="test"]"#),
            "exists((/child::*[(if (((local-name(.)) = (\"VOEvent\"))) then \
             ((((attribute::role)) != (\"test\"))) else (false()))]))"
        );
    }

    #[test]
    fn positional_predicates_block_the_descendant_rewrite() {
        assert_eq!(
            lowered("//Param[1]"),
            "exists((/descendant-or-self::node()/child::Param[1e0]))"
        );
        assert_eq!(
            lowered("//@value"),
            "exists((/descendant-or-self::*/attribute::value))"
        );
        assert_eq!(lowered("a//b"), "exists((child::a/descendant::b))");
    }

    #[test]
    fn verdict_rule_for_each_type() {
        assert_eq!(lowered("1 div 0"), "((((1e0) div (0e0))) != (0e0))");
        assert_eq!(lowered("'x'"), "boolean(\"x\")");
        assert_eq!(lowered("true()"), "true()");
        assert_eq!(lowered("foo()"), "error()");
        assert_eq!(
            lowered("true() or foo()"),
            "(if (true()) then (true()) else (error()))"
        );
    }

    #[test]
    fn comparisons_follow_the_xpath1_table() {
        assert_eq!(
            lowered("true() = 'false'"),
            "((true()) = (boolean(\"false\")))"
        );
        assert_eq!(lowered("'10' < '9'"), "((1e1) < (9e0))");
        assert_eq!(
            lowered("count(a) < 2"),
            "((((number(count((child::a))))[((.) = (.))])) < (2e0))"
        );
        assert_eq!(lowered("//x = false()"), "((exists($index0)) = (false()))");
        assert_eq!(lowered("1 = '1.0'"), "((1e0) = (1e0))");
    }

    #[test]
    fn number_to_string_matches_libxml2() {
        for (x, s) in [
            (1e20, "1e+20"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (f64::NAN, "NaN"),
            (0.1 + 0.2, "0.3"),
            (1_000_000.0, "1000000"),
            (-0.0, "0"),
            (0.000_000_1, "1e-07"),
            (123_456_789_012_345_678.0, "1.23456789012346e+17"),
            (2.5, "2.5"),
            (-2.5e-3, "-0.0025"),
            (1e15, "1e+15"),
            (12_345_678.9, "12345678.9"),
            (0.1, "0.1"),
            (1.0 / 3.0, "0.333333333333333"),
        ] {
            assert_eq!(number_to_string(x), s, "{x}");
        }
    }
}
