//! The XPath engine: Comet's filters evaluated by xee (feature `xpath`).
//!
//! See the [module docs of `filter`](super) for the design; this file holds the mechanics:
//! the conversion of the lowered form into xee's syntax tree, the per-thread cache of compiled
//! programs, the per-event document, and the [`FilterEngine`] implementation.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use ordered_float::OrderedFloat;
use xee_xpath_ast::ast;
use xee_xpath_ast::{FN_NAMESPACE, WithSpan, XS_NAMESPACE};
use xee_xpath_compiler::atomic::Atomic;
use xee_xpath_compiler::context::{DocumentsRef, StaticContextBuilder, Variables};
use xee_xpath_compiler::interpreter::Program;
use xee_xpath_compiler::sequence::{Item, Sequence};
use xee_xpath_compiler::xml::Documents;
use xot::Xot;

use super::cost::{self, DocStats};
use super::lower::{CastTo, IndexKey, L, LPath, LStart, LStep, LTest, Lowered, Op, lower_filter};
use super::tree;
use super::xpath1::{self, Axis, Expr, XPathError, XPathLimits};
use super::{FilterEngine, FilterError, FilterId};

/// Evaluates Comet's XPath 1.0 filters with xee, bounded against hostile subscribers.
///
/// `compile` parses with the [`xpath1`] front-end (limits first), lowers to XPath 3.1 with
/// XPath 1.0 meaning, builds xee's syntax tree directly and compiles it. `evaluate` scans the
/// event (size, depth, names, encoding), estimates each filter's cost on it, builds its tree
/// in a fresh xee store at most once and only if some filter is left to run, fills the
/// indexes those filters read, and runs each with the root element as context item. The tree
/// is the whole payload's, as lxml's is: comments and processing instructions around the root
/// element are nodes too (`element`, the root's span, is not needed).
///
/// The engine is `Send` (the node may move between threads); xee's compiled programs are not,
/// so they live in a per-thread cache keyed by engine and filter, filled on first use on each
/// thread and emptied as filters are released. A node driven from one thread (every vtp
/// runtime) compiles each filter exactly once.
#[derive(Debug)]
pub struct XPathEngine {
    limits: XPathLimits,
    serial: u64,
    filters: Vec<Option<Entry>>,
    free: Vec<u32>,
    stats: Arc<XPathStats>,
    run: Vec<usize>,
}

#[derive(Debug)]
struct Entry {
    expr: Expr,
    lowered: Lowered,
    /// Proves to the per-thread caches that this entry is alive; see [`Cached`].
    token: Arc<()>,
}

/// Counters of what the engine did, shared with whoever holds a handle ([`XPathEngine::stats`]).
///
/// Every field counts since the engine was created.
#[derive(Debug, Default)]
pub struct XPathStats {
    /// Events whose tree was built.
    pub documents: AtomicU64,
    /// Filter evaluations run by xee.
    pub evaluations: AtomicU64,
    /// Evaluations that ended in an error (a false verdict, as in Comet).
    pub errors: AtomicU64,
    /// Evaluations not run because their estimated cost on that event exceeded
    /// [`XPathLimits::cost_max`] (a false verdict).
    pub over_budget: AtomicU64,
    /// Events whose tree was not built (too large, too deep, too many distinct names,
    /// undecodable, or not the well-formed XML the message parser lets through): every
    /// filter false.
    pub documents_refused: AtomicU64,
    /// Panics inside xee caught during compilation or evaluation (a refused filter or a false
    /// verdict); each is a bug in xee worth reporting.
    pub panics: AtomicU64,
}

impl Default for XPathEngine {
    fn default() -> Self {
        Self::new(XPathLimits::default())
    }
}

impl XPathEngine {
    /// An engine enforcing `limits` on every filter and event.
    pub fn new(limits: XPathLimits) -> Self {
        static SERIAL: AtomicU64 = AtomicU64::new(1);
        Self {
            limits,
            serial: SERIAL.fetch_add(1, Ordering::Relaxed),
            filters: Vec::new(),
            free: Vec::new(),
            stats: Arc::default(),
            run: Vec::new(),
        }
    }

    /// A handle on the engine's counters, readable from any thread.
    pub fn stats(&self) -> Arc<XPathStats> {
        self.stats.clone()
    }

    /// The limits this engine enforces.
    pub fn limits(&self) -> &XPathLimits {
        &self.limits
    }

    /// Compiles `expr` on this thread and drops it: what `compile` would say, without keeping
    /// anything. Use it to validate a node's own `--filter` expressions at start-up.
    ///
    /// # Errors
    ///
    /// The [`XPathError`] `compile` would report.
    pub fn check(&self, expr: &str) -> Result<(), XPathError> {
        let parsed = xpath1::parse(expr, &self.limits)?;
        let lowered = self.lower(&parsed)?;
        compile_program(&lowered, &self.stats).map(|_| ())
    }

    /// Lowers a parsed filter, refusing it if the result is too large to compile quickly.
    fn lower(&self, parsed: &Expr) -> Result<Lowered, XPathError> {
        let lowered = lower_filter(parsed);
        let size = lowered.size();
        if size > self.limits.lowered_max {
            return Err(XPathError::TooComplex {
                size,
                max: self.limits.lowered_max,
            });
        }
        let depth = lowered.depth();
        if depth > self.limits.lowered_depth_max {
            return Err(XPathError::LoweredTooDeep {
                depth,
                max: self.limits.lowered_depth_max,
            });
        }
        Ok(lowered)
    }

    /// An upper bound of the work evaluating filter `id` on the event `payload` would cost,
    /// in the units of [`XPathLimits::cost_max`]; `None` for an unknown id or an event the
    /// engine refuses to build (too large, too deep, undecodable).
    pub fn estimate(&self, id: FilterId, payload: &[u8]) -> Option<f64> {
        let entry = self.entry(id)?;
        if payload.len() > self.limits.doc_len_max {
            return None;
        }
        let doc = cost::scan(payload, self.limits.doc_depth_max)?;
        Some(cost::estimate(&entry.expr, &doc))
    }

    fn entry(&self, id: FilterId) -> Option<&Entry> {
        self.filters.get(id.0 as usize).and_then(Option::as_ref)
    }

    /// Runs the filters marked in `self.run` on the event; verdicts for the others stay false.
    fn run_marked(&mut self, text: &str, filters: &[FilterId], verdicts: &mut [bool]) {
        let stats = &self.stats;
        let built = catch_unwind(AssertUnwindSafe(|| build_document(text)));
        let (mut xot, docs, document, root) = match built {
            Ok(Some(d)) => d,
            Ok(None) => {
                stats.documents_refused.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(_) => {
                stats.panics.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        stats.documents.fetch_add(1, Ordering::Relaxed);
        // Every index any of these filters reads, computed in one pass over the tree.
        let mut indexes: BTreeMap<&IndexKey, Sequence> = BTreeMap::new();
        for &i in &self.run {
            if let Some(entry) = self.entry(filters[i]) {
                for key in &entry.lowered.indexes {
                    indexes.entry(key).or_default();
                }
            }
        }
        if !indexes.is_empty() {
            fill_indexes(&xot, document, &mut indexes);
        }
        for &i in &self.run {
            let id = filters[i];
            let Some(entry) = self.entry(id) else {
                continue;
            };
            let Some(program) = cached_program(self.serial, id, entry, stats) else {
                continue;
            };
            let mut variables = Variables::new();
            for (n, key) in entry.lowered.indexes.iter().enumerate() {
                let nodes = indexes.get(key).cloned().unwrap_or_default();
                variables.insert(index_variable(n), nodes);
            }
            stats.evaluations.fetch_add(1, Ordering::Relaxed);
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                let mut builder = program.dynamic_context_builder();
                builder.context_item(Item::Node(root));
                builder.documents(docs.clone());
                builder.variables(variables);
                let context = builder.build();
                program.runnable(&context).one(&mut xot)
            }));
            verdicts[i] = match outcome {
                Ok(Ok(Item::Atomic(Atomic::Boolean(b)))) => b,
                Ok(Ok(other)) => other.effective_boolean_value().unwrap_or(false),
                Ok(Err(_)) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    false
                }
                Err(_) => {
                    stats.panics.fetch_add(1, Ordering::Relaxed);
                    forget_program(self.serial, id);
                    false
                }
            };
        }
    }
}

/// Fills each index with its elements, in document order, in one pass over the tree.
fn fill_indexes(xot: &Xot, document: xot::Node, indexes: &mut BTreeMap<&IndexKey, Sequence>) {
    // Index positions by element local name; the attribute name's id, if any element has it.
    let keys: Vec<&IndexKey> = indexes.keys().copied().collect();
    let mut by_name: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        by_name.entry(&k.element).or_default().push(i);
    }
    let attribute_ids: Vec<Option<Option<xot::NameId>>> = keys
        .iter()
        .map(|k| k.attribute.as_ref().map(|(a, _)| xot.name(a)))
        .collect();
    let mut found: Vec<Vec<xot::Node>> = vec![Vec::new(); keys.len()];
    for node in xot.descendants(document) {
        let Some(element) = xot.element(node) else {
            continue;
        };
        let (local, ns) = xot.name_ns_str(element.name());
        if !ns.is_empty() {
            continue;
        }
        let Some(hits) = by_name.get(local) else {
            continue;
        };
        for &i in hits {
            let keep = match (&keys[i].attribute, attribute_ids[i]) {
                (None, _) => true,
                (Some((_, value)), Some(Some(attribute))) => {
                    xot.get_attribute(node, attribute) == Some(&**value)
                }
                (Some(_), _) => false,
            };
            if keep {
                found[i].push(node);
            }
        }
    }
    for (k, nodes) in keys.iter().zip(found) {
        if let Some(slot) = indexes.get_mut(*k) {
            *slot = nodes.into_iter().collect();
        }
    }
}

impl FilterEngine for XPathEngine {
    fn compile(&mut self, expr: &str) -> Result<FilterId, FilterError> {
        let err = |e: XPathError| FilterError {
            reason: e.to_string(),
        };
        let parsed = xpath1::parse(expr, &self.limits).map_err(err)?;
        let lowered = self.lower(&parsed).map_err(err)?;
        let program = compile_program(&lowered, &self.stats).map_err(err)?;
        let entry = Entry {
            expr: parsed,
            lowered,
            token: Arc::new(()),
        };
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let Ok(slot) = u32::try_from(self.filters.len()) else {
                    return Err(FilterError {
                        reason: "too many filters compiled at once".into(),
                    });
                };
                self.filters.push(None);
                slot
            }
        };
        let id = FilterId(slot);
        remember_program(self.serial, id, &entry.token, program);
        self.filters[slot as usize] = Some(entry);
        Ok(id)
    }

    fn release(&mut self, id: FilterId) {
        if let Some(slot) = self.filters.get_mut(id.0 as usize)
            && slot.take().is_some()
        {
            forget_program(self.serial, id);
            self.free.push(id.0);
        }
    }

    fn evaluate(
        &mut self,
        payload: &[u8],
        _element: Range<usize>,
        filters: &[FilterId],
        verdicts: &mut Vec<bool>,
    ) {
        let base = verdicts.len();
        verdicts.resize(base + filters.len(), false);
        let out = &mut verdicts[base..];
        let refuse = |stats: &XPathStats| {
            stats.documents_refused.fetch_add(1, Ordering::Relaxed);
        };
        if payload.len() > self.limits.doc_len_max {
            refuse(&self.stats);
            return;
        }
        let Some(doc) = cost::scan(payload, self.limits.doc_depth_max) else {
            refuse(&self.stats);
            return;
        };
        self.run.clear();
        for (i, id) in filters.iter().enumerate() {
            let Some(entry) = self.entry(*id) else {
                continue;
            };
            if cost::estimate(&entry.expr, &doc) > self.limits.cost_max as f64 {
                self.stats.over_budget.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.run.push(i);
        }
        if self.run.is_empty() {
            return;
        }
        let Some(text) = decode(payload, &doc) else {
            refuse(&self.stats);
            return;
        };
        self.run_marked(&text, filters, out);
    }
}

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

// --------------------------------------------------------------------- per-thread programs

/// A compiled program, valid while the engine entry whose token it watches is alive.
struct Cached {
    token: Weak<()>,
    program: Rc<Program>,
}

thread_local! {
    /// Compiled programs of every engine used on this thread, by (engine serial, filter id).
    static PROGRAMS: RefCell<BTreeMap<(u64, u32), Cached>> = const { RefCell::new(BTreeMap::new()) };
}

fn remember_program(serial: u64, id: FilterId, token: &Arc<()>, program: Program) {
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

fn forget_program(serial: u64, id: FilterId) {
    PROGRAMS.with(|c| {
        c.borrow_mut().remove(&(serial, id.0));
    });
}

/// The program of `entry` on this thread, compiled now if this thread has none (or a stale
/// one for a reused id).
fn cached_program(
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
fn compile_program(lowered: &Lowered, stats: &XPathStats) -> Result<Program, XPathError> {
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

// ------------------------------------------------------------------------------ documents

/// The event as text for xot: UTF-8 borrowed as is, a declared legacy encoding decoded. The
/// XML declaration is left out (it is not a node, and xot must not see a non-UTF-8 label).
fn decode<'a>(payload: &'a [u8], doc: &DocStats) -> Option<std::borrow::Cow<'a, str>> {
    let body = &payload[doc.body_start..];
    match doc.encoding {
        None => std::str::from_utf8(body)
            .ok()
            .map(std::borrow::Cow::Borrowed),
        Some(enc) => enc.decode_without_bom_handling_and_without_replacement(body),
    }
}

/// A fresh store holding the event, and its root element.
/// A fresh store holding the event: the arena, the store, the document node and the root
/// element. The tree is built by [`tree::build`], the same tree xot's parser makes, faster.
fn build_document(text: &str) -> Option<(Xot, DocumentsRef, xot::Node, xot::Node)> {
    let mut xot = Xot::new();
    let document = tree::build(&mut xot, text)?;
    let element = xot.document_element(document).ok()?;
    let mut docs = Documents::new();
    docs.add_root(None, document).ok()?;
    Some((xot, DocumentsRef::from(docs), document, element))
}

// ------------------------------------------------------------------- lowered form to xee

fn span<T: WithSpan>(v: T) -> xee_xpath_ast::span::Spanned<T> {
    v.with_empty_span()
}

/// The name of a standard function: `math:name` in the math namespace, others in `fn:`.
fn fn_name(name: &str) -> ast::NameS {
    let (ns, local) = match name.strip_prefix("math:") {
        Some(local) => (MATH_NAMESPACE, local),
        None => (FN_NAMESPACE, name),
    };
    span(ast::Name::new(
        local.to_owned(),
        ns.to_owned(),
        String::new(),
    ))
}

const MATH_NAMESPACE: &str = "http://www.w3.org/2005/xpath-functions/math";

fn var_name(v: u32) -> ast::Name {
    ast::Name::name(&format!("v{v}"))
}

/// The external variable holding a filter's `i`-th index (in a namespace of its own, so it
/// cannot meet a `let` variable).
fn index_variable(i: usize) -> ast::Name {
    ast::Name::new(format!("i{i}"), INDEX_NAMESPACE.to_owned(), String::new())
}

const INDEX_NAMESPACE: &str = "urn:vtp:xpath-index";

/// A primary expression as an expression.
fn primary(p: ast::PrimaryExpr) -> ast::ExprSingleS {
    span(ast::ExprSingle::Path(ast::PathExpr {
        steps: vec![span(ast::StepExpr::PrimaryExpr(span(p)))],
    }))
}

/// An expression as a path (operands of binary operators are paths in xee's tree).
fn as_path(e: ast::ExprSingleS) -> ast::PathExpr {
    match e.value {
        ast::ExprSingle::Path(p) => p,
        other => ast::PathExpr {
            steps: vec![span(ast::StepExpr::PrimaryExpr(span(parenthesized(span(
                other,
            )))))],
        },
    }
}

/// An expression as a primary expression.
fn as_primary(e: ast::ExprSingleS) -> ast::PrimaryExprS {
    if let ast::ExprSingle::Path(p) = &e.value
        && let [step] = p.steps.as_slice()
        && let ast::StepExpr::PrimaryExpr(prim) = &step.value
    {
        return prim.clone();
    }
    span(parenthesized(e))
}

fn parenthesized(e: ast::ExprSingleS) -> ast::PrimaryExpr {
    ast::PrimaryExpr::Expr(span(Some(ast::Expr(vec![e]))))
}

fn expr_s(e: ast::ExprSingleS) -> ast::ExprS {
    span(ast::Expr(vec![e]))
}

/// Converts the lowered form into xee's syntax tree, the shapes xee's own parser builds.
fn to_xee(l: &L) -> ast::ExprSingleS {
    match l {
        L::Bool(b) => call(if *b { "true" } else { "false" }, Vec::new()),
        L::Num(x) => primary(ast::PrimaryExpr::Literal(ast::Literal::Double(
            OrderedFloat(*x),
        ))),
        L::Str(s) => primary(ast::PrimaryExpr::Literal(ast::Literal::String(
            s.to_string(),
        ))),
        L::Var(v) => primary(ast::PrimaryExpr::VarRef(var_name(*v))),
        L::Index(i) => primary(ast::PrimaryExpr::VarRef(index_variable(*i as usize))),
        L::Dot => primary(ast::PrimaryExpr::ContextItem),
        L::Empty => primary(ast::PrimaryExpr::Expr(span(None))),
        L::Call(name, args) => call(name, args.iter().map(to_xee).collect()),
        L::Cast(x, to) => span(ast::ExprSingle::Apply(ast::ApplyExpr {
            path_expr: as_path(to_xee(x)),
            operator: ast::ApplyOperator::Cast(ast::SingleType {
                name: span(ast::Name::new(
                    match to {
                        CastTo::Integer => "integer",
                        CastTo::Decimal => "decimal",
                    }
                    .to_owned(),
                    XS_NAMESPACE.to_owned(),
                    "xs".to_owned(),
                )),
                optional: false,
            }),
        })),
        L::If(c, a, b) => span(ast::ExprSingle::If(ast::IfExpr {
            condition: expr_s(to_xee(c)),
            then: Box::new(to_xee(a)),
            else_: Box::new(to_xee(b)),
        })),
        L::Let(v, x, y) => span(ast::ExprSingle::Let(ast::LetExpr {
            var_name: span(var_name(*v)),
            var_expr: Box::new(to_xee(x)),
            return_expr: Box::new(to_xee(y)),
        })),
        L::Bin(op, a, b) => span(ast::ExprSingle::Binary(ast::BinaryExpr {
            operator: binary_operator(*op),
            left: as_path(to_xee(a)),
            right: as_path(to_xee(b)),
        })),
        L::Neg(x) => span(ast::ExprSingle::Apply(ast::ApplyExpr {
            path_expr: as_path(to_xee(x)),
            operator: ast::ApplyOperator::Unary(vec![ast::UnaryOperator::Minus]),
        })),
        L::Map(a, b) => span(ast::ExprSingle::Apply(ast::ApplyExpr {
            path_expr: as_path(to_xee(a)),
            operator: ast::ApplyOperator::SimpleMap(vec![as_path(to_xee(b))]),
        })),
        L::Path(p) => span(ast::ExprSingle::Path(path(p))),
        L::Filter(x, preds) => span(ast::ExprSingle::Path(ast::PathExpr {
            steps: vec![span(ast::StepExpr::PostfixExpr {
                primary: as_primary(to_xee(x)),
                postfixes: preds
                    .iter()
                    .map(|p| ast::Postfix::Predicate(expr_s(to_xee(p))))
                    .collect(),
            })],
        })),
    }
}

fn call(name: &str, arguments: Vec<ast::ExprSingleS>) -> ast::ExprSingleS {
    primary(ast::PrimaryExpr::FunctionCall(ast::FunctionCall {
        name: fn_name(name),
        arguments,
    }))
}

fn binary_operator(op: Op) -> ast::BinaryOperator {
    use ast::BinaryOperator as B;
    match op {
        Op::Or => B::Or,
        Op::And => B::And,
        Op::Eq => B::GenEq,
        Op::Ne => B::GenNe,
        Op::Lt => B::GenLt,
        Op::Le => B::GenLe,
        Op::Gt => B::GenGt,
        Op::Ge => B::GenGe,
        Op::Add => B::Add,
        Op::Sub => B::Sub,
        Op::Mul => B::Mul,
        Op::Div => B::Div,
        Op::Mod => B::Mod,
        Op::Union => B::Union,
    }
}

fn path(p: &LPath) -> ast::PathExpr {
    let mut steps = Vec::with_capacity(p.steps.len() + 1);
    match &p.start {
        LStart::Root => steps.push(root_step()),
        LStart::Context => {}
        LStart::Expr(e) => steps.push(span(ast::StepExpr::PrimaryExpr(as_primary(to_xee(e))))),
    }
    steps.extend(p.steps.iter().map(axis_step));
    ast::PathExpr { steps }
}

/// `fn:root(self::node())`, what xee's parser makes of a leading `/`.
fn root_step() -> ast::StepExprS {
    let self_node = span(ast::ExprSingle::Path(ast::PathExpr {
        steps: vec![span(ast::StepExpr::AxisStep(ast::AxisStep {
            axis: ast::Axis::Self_,
            node_test: ast::NodeTest::KindTest(ast::KindTest::Any),
            predicates: Vec::new(),
        }))],
    }));
    span(ast::StepExpr::PrimaryExpr(span(
        ast::PrimaryExpr::FunctionCall(ast::FunctionCall {
            name: fn_name("root"),
            arguments: vec![self_node],
        }),
    )))
}

fn axis_step(s: &LStep) -> ast::StepExprS {
    let node_test = match &s.test {
        LTest::Name { ns, local } => ast::NodeTest::NameTest(ast::NameTest::Name(span(
            ast::Name::new(local.to_string(), (*ns).to_owned(), String::new()),
        ))),
        LTest::Any => ast::NodeTest::NameTest(ast::NameTest::Star),
        LTest::AnyIn(ns) => ast::NodeTest::NameTest(ast::NameTest::Namespace((*ns).to_owned())),
        LTest::Node => ast::NodeTest::KindTest(ast::KindTest::Any),
        LTest::Text => ast::NodeTest::KindTest(ast::KindTest::Text),
        LTest::Comment => ast::NodeTest::KindTest(ast::KindTest::Comment),
        LTest::Pi => ast::NodeTest::KindTest(ast::KindTest::PI(None)),
    };
    span(ast::StepExpr::AxisStep(ast::AxisStep {
        axis: match s.axis {
            Axis::Ancestor => ast::Axis::Ancestor,
            Axis::AncestorOrSelf => ast::Axis::AncestorOrSelf,
            Axis::Attribute => ast::Axis::Attribute,
            Axis::Child => ast::Axis::Child,
            Axis::Descendant => ast::Axis::Descendant,
            Axis::DescendantOrSelf => ast::Axis::DescendantOrSelf,
            Axis::Following => ast::Axis::Following,
            Axis::FollowingSibling => ast::Axis::FollowingSibling,
            Axis::Namespace => ast::Axis::Namespace,
            Axis::Parent => ast::Axis::Parent,
            Axis::Preceding => ast::Axis::Preceding,
            Axis::PrecedingSibling => ast::Axis::PrecedingSibling,
            Axis::Myself => ast::Axis::Self_,
        },
        node_test,
        predicates: s.predicates.iter().map(|p| expr_s(to_xee(p))).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GCN: &[u8] = include_bytes!("../../tests/data/gcn_swift_bat.xml");

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
}
