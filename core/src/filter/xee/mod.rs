//! The XPath engine: Comet's filters evaluated by xee (feature `xpath`).
//!
//! See the [module docs of `filter`](super) for the design; this module holds the mechanics:
//! the [`FilterEngine`] implementation and the per-event document here, the per-thread cache
//! of compiled programs in `programs`, and the conversion of the lowered form into xee's
//! syntax tree in `syntax`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use xee_xpath_compiler::atomic::Atomic;
use xee_xpath_compiler::context::{DocumentsRef, Variables};
use xee_xpath_compiler::sequence::{Item, Sequence};
use xee_xpath_compiler::xml::Documents;
use xot::Xot;

use super::cost::{self, DocStats};
use super::lower::{IndexKey, Lowered, lower_filter};
use super::tree;
use super::xpath1::{self, Expr, XPathError, XPathLimits};
use super::{FilterEngine, FilterError, FilterId};

mod programs;
mod syntax;
#[cfg(test)]
mod tests;

use programs::{cached_program, compile_program, forget_program, remember_program};
use syntax::index_variable;

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
    /// Proves to the per-thread caches that this entry is alive; see [`programs::Cached`].
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
