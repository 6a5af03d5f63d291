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

//!
//! The lowered form itself, [`L`] and its parts, is in `xpath31`, with the `Display` that
//! prints it; the conversions between the four XPath 1.0 types, and libxml2's number
//! formatting, are in `convert`.

mod convert;
#[cfg(test)]
mod tests;
mod xpath31;

pub(crate) use xpath31::{CastTo, L, LPath, LStart, LStep, LTest, Op};

use super::xpath1::{ArithOp, Axis, CmpOp, Expr, Func, Kind, NodeTest, Path, Start, Step, Ty};

/// The namespace the `xml` prefix is always bound to.
pub(crate) const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

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
