//! Bounding the work of one evaluation before running it. Pure.
//!
//! XPath evaluation cannot be interrupted once started (neither lxml nor xee has a fuel
//! counter), and a filter's cost grows with the event: `//*[//*[//*]]` is cubic in the number
//! of nodes. So before running a filter on an event the engine computes an upper bound of its
//! work from the syntax tree and a few numbers measured on the event in one byte scan
//! ([`scan`]: nodes, depth, fan-out, attributes, text), and skips the filter (false) when the
//! bound exceeds the budget. The bound is deliberately crude but never low: each location step
//! visits at most what its axis can reach from its input (`child`: the children of distinct
//! nodes, at most every node once; `descendant`: at most every node once per ancestor level;
//! `following`: every node per input node...), each predicate runs once per node it filters,
//! a node-set comparison compares every pair.
//!
//! The scan also re-checks the event before xot (which has no depth limit) parses it: nesting
//! depth, size, a DOCTYPE (refused), and the declared encoding.

use encoding_rs::Encoding;

use std::collections::BTreeMap;

use super::xpath1::{Axis, Expr, Func, Kind, NodeTest, Path, Start, Ty};

/// What the cost bound needs to know about one event, and how to decode it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DocStats<'a> {
    /// Nodes of every kind (document, elements, attributes, text, comments, processing
    /// instructions).
    pub(crate) nodes: f64,
    /// Elements.
    pub(crate) elements: f64,
    /// Attributes.
    pub(crate) attributes: f64,
    /// Text nodes (text and CDATA runs), comments and processing instructions.
    pub(crate) leaves: f64,
    /// Deepest element nesting (the root element is at depth 1).
    pub(crate) depth: f64,
    /// Most children of one node.
    pub(crate) fanout: f64,
    /// Most attributes on one element.
    pub(crate) attributes_max: f64,
    /// Bytes of text content in the whole event.
    pub(crate) text: f64,
    /// Longest attribute value, in bytes.
    pub(crate) value_max: f64,
    /// Longest text node, comment or processing instruction, in bytes.
    pub(crate) leaf_max: f64,
    /// Elements by local name: how many, and the longest string-value (bytes of text inside).
    pub(crate) element_names: BTreeMap<&'a [u8], NameStats>,
    /// Attributes by local name: how many, and the longest value.
    pub(crate) attribute_names: BTreeMap<&'a [u8], NameStats>,
    /// Where the document body starts (after a byte-order mark and the XML declaration).
    pub(crate) body_start: usize,
    /// The declared legacy encoding, `None` for UTF-8.
    pub(crate) encoding: Option<&'static Encoding>,
}

/// How many nodes bear one name, and the longest string-value among them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct NameStats {
    pub(crate) count: f64,
    pub(crate) len_max: f64,
}

impl NameStats {
    fn add(&mut self, len: f64) {
        self.count += 1.0;
        self.len_max = self.len_max.max(len);
    }
}

/// An open element during the scan.
struct Open<'a> {
    name: &'a [u8],
    children: u32,
    /// Text bytes in the document when the element opened.
    text_at_open: f64,
}

/// Measures `payload` (a frame payload that passed the message parser) in one pass. `None`
/// when it is deeper than `depth_max`, has a DOCTYPE, an unsupported encoding, or is not the
/// well-formed shape the parser let through.
pub(crate) fn scan(payload: &[u8], depth_max: usize) -> Option<DocStats<'_>> {
    let mut p = if payload.starts_with(&[0xEF, 0xBB, 0xBF]) {
        3
    } else {
        0
    };
    let mut encoding = None;
    if payload[p..].starts_with(b"<?xml")
        && payload
            .get(p + 5)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
    {
        let end = p + find(&payload[p..], b"?>")?;
        encoding = declared_encoding(&payload[p..end])?;
        p = end + 2;
    }
    let mut d = DocStats {
        nodes: 1.0,
        elements: 0.0,
        attributes: 0.0,
        leaves: 0.0,
        depth: 0.0,
        fanout: 0.0,
        attributes_max: 0.0,
        text: 0.0,
        value_max: 0.0,
        leaf_max: 0.0,
        element_names: BTreeMap::new(),
        attribute_names: BTreeMap::new(),
        body_start: p,
        encoding,
    };
    let mut open: Vec<Open<'_>> = Vec::with_capacity(16);
    // Children of the document node.
    let mut top_children = 0u32;
    let bytes = payload;
    let leaf = |d: &mut DocStats<'_>, open: &mut Vec<Open<'_>>, top: &mut u32, len: usize| {
        d.nodes += 1.0;
        d.leaves += 1.0;
        d.leaf_max = d.leaf_max.max(len as f64);
        match open.last_mut() {
            Some(o) => o.children += 1,
            None => *top += 1,
        }
    };
    while p < bytes.len() {
        let Some(lt) = bytes[p..].iter().position(|&b| b == b'<') else {
            // Trailing whitespace after the root element.
            break;
        };
        if lt > 0 && !open.is_empty() {
            d.text += lt as f64;
            leaf(&mut d, &mut open, &mut top_children, lt);
        }
        p += lt;
        let rest = &bytes[p..];
        if rest.starts_with(b"<!--") {
            let len = find(&rest[4..], b"-->")?;
            leaf(&mut d, &mut open, &mut top_children, len);
            p += 4 + len + 3;
        } else if rest.starts_with(b"<![CDATA[") {
            let len = find(&rest[9..], b"]]>")?;
            d.text += len as f64;
            leaf(&mut d, &mut open, &mut top_children, len);
            p += 9 + len + 3;
        } else if rest.starts_with(b"<?") {
            let len = find(&rest[2..], b"?>")?;
            leaf(&mut d, &mut open, &mut top_children, len);
            p += 2 + len + 2;
        } else if rest.starts_with(b"<!") {
            // A DOCTYPE: the message parser refuses it; so do we.
            return None;
        } else if rest.starts_with(b"</") {
            p += find(rest, b">")? + 1;
            let o = open.pop()?;
            d.fanout = d.fanout.max(f64::from(o.children));
            d.element_names
                .entry(local_name(o.name))
                .or_default()
                .add(d.text - o.text_at_open);
        } else {
            let (tag_len, empty, name) = start_tag(rest, &mut d)?;
            p += tag_len;
            d.nodes += 1.0;
            d.elements += 1.0;
            match open.last_mut() {
                Some(o) => o.children += 1,
                None => top_children += 1,
            }
            if empty {
                d.depth = d.depth.max(open.len() as f64 + 1.0);
                d.element_names
                    .entry(local_name(name))
                    .or_default()
                    .add(0.0);
            } else {
                open.push(Open {
                    name,
                    children: 0,
                    text_at_open: d.text,
                });
                if open.len() > depth_max {
                    return None;
                }
                d.depth = d.depth.max(open.len() as f64);
            }
        }
    }
    if !open.is_empty() {
        // Unclosed elements: not what the message parser lets through.
        return None;
    }
    // xot numbers names with 16 bits: far more distinct names than any real event could
    // overflow it (a panic). Local names undercount names (prefixes multiply them), so the
    // bound keeps a wide margin.
    if d.element_names.len() + d.attribute_names.len() > NAMES_MAX {
        return None;
    }
    d.fanout = d.fanout.max(f64::from(top_children));
    Some(d)
}

/// Reads the start tag at the start of `rest` (`<name attr="v" ...>` or `.../>`), counting
/// its attributes into `d`. Returns its length, whether it is empty, and its name.
fn start_tag<'a>(rest: &'a [u8], d: &mut DocStats<'a>) -> Option<(usize, bool, &'a [u8])> {
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let name_end = rest[1..]
        .iter()
        .position(|&b| is_space(b) || b == b'>' || b == b'/')
        .map(|i| i + 1)?;
    let name = &rest[1..name_end];
    let mut q = name_end;
    let mut attrs = 0u32;
    loop {
        while q < rest.len() && is_space(rest[q]) {
            q += 1;
        }
        match rest.get(q)? {
            b'>' => break,
            b'/' => {
                q += 1;
                if rest.get(q) != Some(&b'>') {
                    return None;
                }
                break;
            }
            _ => {}
        }
        // name = "value"
        let eq = q + rest[q..].iter().position(|&b| b == b'=')?;
        let attr = rest[q..eq].trim_ascii();
        let open = eq
            + 1
            + rest[eq + 1..]
                .iter()
                .position(|&b| b == b'"' || b == b'\'')?;
        let quote = rest[open];
        let len = rest[open + 1..].iter().position(|&b| b == quote)?;
        q = open + 1 + len + 1;
        // Namespace declarations are not attributes in XPath.
        if attr != b"xmlns" && !attr.starts_with(b"xmlns:") {
            attrs += 1;
            d.value_max = d.value_max.max(len as f64);
            d.attribute_names
                .entry(local_name(attr))
                .or_default()
                .add(len as f64);
        }
    }
    d.nodes += f64::from(attrs);
    d.attributes += f64::from(attrs);
    d.attributes_max = d.attributes_max.max(f64::from(attrs));
    let empty = rest[q - 1] == b'/';
    Some((q + 1, empty, name))
}

fn local_name(qname: &[u8]) -> &[u8] {
    match qname.iter().position(|&b| b == b':') {
        Some(i) => &qname[i + 1..],
        None => qname,
    }
}

/// Most distinct local names (elements and attributes) in an event the engine builds a tree
/// for.
const NAMES_MAX: usize = 20_000;

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The encoding an XML declaration names: `Some(None)` for UTF-8 (also ASCII or none),
/// `Some(Some(e))` for an ASCII-compatible legacy encoding, `None` for anything else (as the
/// message parser decides).
fn declared_encoding(decl: &[u8]) -> Option<Option<&'static Encoding>> {
    let Some(at) = find(decl, b"encoding") else {
        return Some(None);
    };
    let rest = &decl[at + 8..];
    let start = rest.iter().position(|&b| b == b'"' || b == b'\'')?;
    let quote = rest[start];
    let len = rest[start + 1..].iter().position(|&b| b == quote)?;
    let label = rest[start + 1..start + 1 + len].trim_ascii();
    let ascii = [b"us-ascii".as_slice(), b"ascii", b"utf-8", b"utf8"];
    if ascii.iter().any(|known| label.eq_ignore_ascii_case(known)) {
        return Some(None);
    }
    match Encoding::for_label(label) {
        Some(e) if e == encoding_rs::UTF_8 => Some(None),
        Some(e) if e.is_ascii_compatible() => Some(Some(e)),
        _ => None,
    }
}

/// An upper bound of the work (in units of about one node visited) of evaluating `e` once on
/// an event measured as `d`.
pub(crate) fn estimate(e: &Expr, d: &DocStats<'_>) -> f64 {
    cost(e, d).work
}

/// Work of one evaluation; for a node-set, a bound on how many nodes and on the string-value
/// of one of them; for other values, a bound on their length as a string.
#[derive(Debug, Clone, Copy)]
struct Cost {
    work: f64,
    card: f64,
    len: f64,
}

/// Bytes of text handled per work unit.
const TEXT_UNIT: f64 = 16.0;

/// Units per pair of values a general comparison compares (xee atomizes, casts and compares
/// each pair: dozens of node visits' worth, as `benches/xpath.rs` measures).
const PAIR: f64 = 64.0;

/// Units per node converted to a number (a `let`, an `if` and five function calls in xee:
/// microseconds).
const TO_NUMBER: f64 = 512.0;

/// Units per node atomized to a string.
const TO_STRING: f64 = 16.0;

/// Units per node an axis visits.
const VISIT: f64 = 8.0;

/// Units per node a step outputs (sorted, de-duplicated, collected into a sequence).
const OUTPUT: f64 = 24.0;

/// Units per input node of a location step (xee sets up and collects a sequence each time).
const STEP: f64 = 256.0;

/// Units per evaluation of a predicate, besides the predicate's own work.
const PREDICATE: f64 = 64.0;

impl Cost {
    fn value(work: f64, len: f64) -> Self {
        Self {
            work,
            card: 0.0,
            len,
        }
    }
}

fn cost(e: &Expr, d: &DocStats<'_>) -> Cost {
    // Converting each node of a node-set to a string (`per_node` more to go on to a number):
    // each byte of text lies under at most `depth` distinct elements.
    let convert = |c: Cost, per_node: f64| {
        c.card * per_node + (c.card * c.len).min(d.depth * d.text + c.card) / TEXT_UNIT
    };
    match &e.kind {
        Kind::Or(v) | Kind::And(v) => {
            Cost::value(1.0 + v.iter().map(|t| cost(t, d).work).sum::<f64>(), 5.0)
        }
        Kind::Compare(op, a, b) => {
            let (ca, cb) = (cost(a, d), cost(b, d));
            // Nodes are compared as numbers by `<`..., or against a number.
            let numeric = !op.is_equality() || a.ty == Ty::Number || b.ty == Ty::Number;
            let per_node = if numeric { TO_NUMBER } else { TO_STRING };
            let side = |c: Cost, t: Ty| {
                if t == Ty::NodeSet {
                    convert(c, per_node)
                } else {
                    c.len / TEXT_UNIT
                }
            };
            let pairs = if a.ty == Ty::NodeSet && b.ty == Ty::NodeSet {
                ca.card * cb.card * PAIR
            } else {
                ca.card.max(cb.card) * PAIR
            };
            Cost::value(
                1.0 + ca.work + cb.work + side(ca, a.ty) + side(cb, b.ty) + pairs,
                5.0,
            )
        }
        Kind::Arith(_, a, b) => Cost::value(1.0 + cost(a, d).work + cost(b, d).work, 24.0),
        Kind::Neg(a) => Cost::value(1.0 + cost(a, d).work, 24.0),
        Kind::Union(v) => {
            let parts: Vec<Cost> = v.iter().map(|t| cost(t, d)).collect();
            let card = parts.iter().map(|c| c.card).sum::<f64>().min(d.nodes);
            let len = parts.iter().map(|c| c.len).fold(0.0, f64::max);
            let work = parts.iter().map(|c| c.work).sum::<f64>() + card * OUTPUT;
            Cost { work, card, len }
        }
        Kind::Literal(s) => Cost::value(1.0, s.len() as f64),
        Kind::Number(_) => Cost::value(1.0, 24.0),
        Kind::Var => Cost::value(1.0, 0.0),
        Kind::Call(f, args) => {
            let parts: Vec<Cost> = args.iter().map(|a| cost(a, d)).collect();
            let work: f64 = parts.iter().map(|c| c.work).sum();
            // A string function reads each argument once (a node-set: its first node) and
            // writes at most all of it; `count` and `sum` touch every node.
            let read: f64 = parts.iter().map(|c| c.len).sum::<f64>();
            let (handled, len) = match f {
                Func::Count => (parts.iter().map(|c| c.card * VISIT).sum(), 24.0),
                Func::Sum => (parts.iter().map(|&c| convert(c, TO_NUMBER)).sum(), 24.0),
                Func::Id => (1.0, 0.0),
                Func::String | Func::LocalName | Func::Name | Func::NamespaceUri => {
                    (read / TEXT_UNIT, read.max(24.0))
                }
                _ => (read / TEXT_UNIT, read),
            };
            // Without arguments, string functions read the context node.
            let context = if args.is_empty() {
                d.text / TEXT_UNIT
            } else {
                0.0
            };
            Cost::value(1.0 + work + handled + context, len.max(24.0))
        }
        Kind::Path(p) => path_cost(p, d),
    }
}

fn path_cost(p: &Path, d: &DocStats<'_>) -> Cost {
    let (mut work, mut card, mut len) = match &p.start {
        // The root or the context node: its string-value is at most the whole text.
        Start::Root | Start::Context => (1.0, 1.0, d.text),
        Start::Filter(primary, predicates) => {
            let c = cost(primary, d);
            let per_node: f64 = predicates.iter().map(|q| cost(q, d).work).sum();
            (c.work + c.card * per_node, c.card, c.len)
        }
    };
    // The steps as the engine runs them: `//name` (descendant-or-self::node()/child::name)
    // is one descendant step unless a predicate depends on position, `//@a` visits elements
    // only (see the lowering).
    let mut i = 0;
    while i < p.steps.len() {
        let step = &p.steps[i];
        let next = p.steps.get(i + 1);
        let dos = step.axis == Axis::DescendantOrSelf
            && step.test == NodeTest::Node
            && step.predicates.is_empty();
        let (axis, step) = match next {
            Some(n)
                if dos
                    && n.axis == Axis::Child
                    && !n.predicates.iter().any(Expr::uses_position) =>
            {
                i += 2;
                (Axis::Descendant, n)
            }
            _ => {
                i += 1;
                (step.axis, step)
            }
        };
        let visits = match axis {
            Axis::Child => (card * d.fanout).min(d.nodes),
            Axis::Attribute => (card * d.attributes_max).min(d.attributes),
            Axis::Descendant | Axis::DescendantOrSelf => {
                (card * d.nodes).min(d.nodes * d.depth.max(1.0))
            }
            Axis::Parent | Axis::Myself => card,
            Axis::Ancestor | Axis::AncestorOrSelf => card * (d.depth + 1.0),
            Axis::FollowingSibling | Axis::PrecedingSibling => {
                (card * d.fanout).min(d.nodes * d.fanout)
            }
            Axis::Following | Axis::Preceding => card * d.nodes,
            Axis::Namespace => card * 8.0,
        };
        let (matching, node_len) = matches(axis, &step.test, d);
        let mut out = visits.min(matching);
        if axis == Axis::Attribute && matches!(step.test, NodeTest::Name { .. }) {
            // An element has at most one attribute of a name.
            out = out.min(card);
        }
        let per_node: f64 = step
            .predicates
            .iter()
            .map(|q| PREDICATE + cost(q, d).work)
            .sum();
        // Starting the step from each input node, visiting, ordering and de-duplicating,
        // then each predicate on each node that passed the node test (up to once per input
        // node for overlapping axes).
        let candidates = visits.min(matching * card.min(d.depth).max(1.0));
        work += card * STEP + visits * VISIT + out * OUTPUT + candidates * per_node;
        card = out;
        len = node_len;
    }
    Cost { work, card, len }
}

/// How many nodes of the event can pass `test` on `axis`, and the longest string-value of
/// one of them.
fn matches(axis: Axis, test: &NodeTest, d: &DocStats<'_>) -> (f64, f64) {
    let named = |map: &BTreeMap<&[u8], NameStats>, local: &str| {
        map.get(local.as_bytes())
            .map_or((0.0, 0.0), |s| (s.count, s.len_max))
    };
    match (axis, test) {
        (Axis::Attribute, NodeTest::Name { local, .. }) => named(&d.attribute_names, local),
        (Axis::Attribute, NodeTest::Any | NodeTest::AnyIn(_) | NodeTest::Node) => {
            (d.attributes, d.value_max)
        }
        (Axis::Attribute | Axis::Namespace, _) => (0.0, 0.0),
        (_, NodeTest::Name { local, .. }) => named(&d.element_names, local),
        (_, NodeTest::Any | NodeTest::AnyIn(_)) => (d.elements, d.text),
        (_, NodeTest::Text | NodeTest::Comment | NodeTest::Pi(_)) => (d.leaves, d.leaf_max),
        (_, NodeTest::Node) => (d.nodes, d.text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::xpath1::{XPathLimits, parse};

    const GCN: &[u8] = include_bytes!("../../tests/data/gcn_swift_bat.xml");

    fn est(e: &str, d: &DocStats<'_>) -> f64 {
        estimate(&parse(e, &XPathLimits::default()).expect("parses"), d)
    }

    #[test]
    fn scan_measures_a_real_packet() {
        let d = scan(GCN, 64).expect("a GCN packet scans");
        assert!(d.nodes > 100.0 && d.nodes < 2000.0, "{d:?}");
        assert!(d.depth >= 3.0 && d.depth < 10.0, "{d:?}");
        assert!(d.attributes > 50.0, "{d:?}");
        assert!(d.encoding.is_none());
        assert!(d.body_start > 0, "declaration skipped");
    }

    #[test]
    fn scan_refuses_deep_documents_doctype_and_broken_shapes() {
        let deep = |n: usize| {
            let mut s = "<a>".repeat(n);
            s.push_str(&"</a>".repeat(n));
            s.into_bytes()
        };
        assert_eq!(scan(&deep(64), 64).map(|d| d.depth), Some(64.0));
        assert!(scan(&deep(65), 64).is_none());
        assert!(scan(&deep(100_000), 64).is_none());
        assert!(scan(b"<!DOCTYPE a><a/>", 64).is_none());
        assert!(scan(b"<a><b></a>", 64).is_none());
        assert!(scan(b"<a b='>", 64).is_none());
        let names: String = (0..20_001).map(|i| format!("<n{i}/>")).collect();
        assert!(scan(format!("<a>{names}</a>").as_bytes(), 64).is_none());
        let d = scan(
            b"<a x='1>2' y=\"=\" xmlns:p='u'><!-- c --><p:b/>t<![CDATA[<x>]]></a>",
            64,
        )
        .unwrap();
        assert_eq!(
            d.attributes, 2.0,
            "namespace declarations are not attributes"
        );
        assert_eq!(d.value_max, 3.0);
        assert_eq!(d.fanout, 4.0);
        assert_eq!(d.depth, 2.0);
        assert_eq!(d.element_names[&b"b"[..]].count, 1.0, "local names");
        assert_eq!(d.element_names[&b"a"[..]].len_max, 4.0, "text inside a");
    }

    #[test]
    fn scan_reads_the_declared_encoding() {
        let d = scan(b"<?xml version='1.0' encoding='ISO-8859-1'?><a/>", 64).unwrap();
        assert_eq!(d.encoding, Some(encoding_rs::WINDOWS_1252));
        let d = scan(b"<?xml version='1.0' encoding='us-ascii'?><a/>", 64).unwrap();
        assert_eq!(d.encoding, None);
        assert!(scan(b"<?xml version='1.0' encoding='UTF-16'?><a/>", 64).is_none());
    }

    #[test]
    fn real_filters_are_cheap_and_nested_document_wide_searches_are_not() {
        let d = scan(GCN, 64).unwrap();
        let budget = XPathLimits::default().cost_max as f64;
        for cheap in [
            r#"//Param[@name="SC_Lat" and @value>600]"#,
            r#"//Who[AuthorIVORN="ivo://x.y/z"]"#,
            r#"/*[local-name()="VOEvent" and @role!="test"]"#,
            "count(//Param) > 3 and sum(//Param/@value) > 0",
        ] {
            assert!(est(cheap, &d) < budget / 5.0, "{cheap}: {}", est(cheap, &d));
        }
        // Quadratic (every pair of 145 Params), still within budget: it runs.
        let pairs = est("//Param = //Param", &d);
        assert!(pairs > budget / 10.0 && pairs < budget, "{pairs}");
        // At most a fifth of the budget for a 10 kB notice: the same filters run on events
        // several times larger.
        for costly in ["//*[//*[//*]]", "//*[following::*[preceding::*]]"] {
            assert!(est(costly, &d) > budget, "{costly}: {}", est(costly, &d));
        }
    }

    #[test]
    fn the_bound_grows_with_the_document() {
        let small = scan(b"<a><b/><b/></a>", 64).unwrap();
        let big_doc = format!("<a>{}</a>", "<b/>".repeat(10_000));
        let big = scan(big_doc.as_bytes(), 64).unwrap();
        let e = "//b[//b]";
        assert!(est(e, &small) < 10_000.0);
        assert!(est(e, &big) > 1e8);
    }
}
