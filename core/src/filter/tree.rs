//! The event's tree for xee, built straight from the payload with quick-xml.
//!
//! xot's own parser records the source span of every node and attribute in a hash map that
//! nobody here reads, and allocates a few strings per element; building through xot's public
//! API instead, with element and attribute names resolved once per distinct name, takes about
//! half the time on a GCN notice (the tree is the largest per-event cost of filtering). The
//! tree is the one xot's parser makes, which the unit tests check by comparing both
//! serializations on every test packet: namespace nodes in declaration order, then attributes
//! in document order; adjacent text (character data, references, CDATA) in one text node;
//! line ends normalised to `\n`; attribute values with references resolved and `\t`, `\n`,
//! `\r` turned into spaces; comments and processing instructions around the root element kept;
//! whitespace around the root element dropped.
//!
//! The payload already passed vtp's message parser (well-formed, no DOCTYPE, only predefined
//! entities); anything unexpected here makes the build fail (`None`, every filter false)
//! rather than guess.

use std::collections::BTreeMap;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use xot::{NameId, NamespaceId, Node, PrefixId, Xot};

/// Builds the document in `xot` and returns the document node.
pub(crate) fn build(xot: &mut Xot, text: &str) -> Option<Node> {
    let mut b = Builder {
        document: xot.new_document(),
        open: Vec::with_capacity(16),
        scopes: Vec::new(),
        names: BTreeMap::new(),
        pending: String::new(),
    };
    let mut reader = Reader::from_str(text);
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) => {
                let mark = b.scopes.len();
                // The element's declarations stay in scope until its end tag.
                let el = b.element(xot, &e)?;
                b.open.push((el, mark));
            }
            Event::Empty(e) => {
                let mark = b.scopes.len();
                b.element(xot, &e)?;
                b.scopes.truncate(mark);
            }
            Event::End(_) => {
                b.flush(xot)?;
                let (_, mark) = b.open.pop()?;
                b.scopes.truncate(mark);
            }
            Event::Text(t) => b.text(&normalize_newlines(std::str::from_utf8(&t).ok()?)),
            Event::CData(t) => b.text(&normalize_newlines(std::str::from_utf8(&t).ok()?)),
            Event::GeneralRef(r) => {
                let c = resolve_reference(std::str::from_utf8(&r).ok()?)?;
                b.pending.push(c);
            }
            Event::Comment(c) => {
                b.flush(xot)?;
                let node = xot.new_comment(&normalize_newlines(std::str::from_utf8(&c).ok()?));
                b.append(xot, node)?;
            }
            Event::PI(pi) => {
                b.flush(xot)?;
                let target = xot.add_name(std::str::from_utf8(pi.target()).ok()?);
                let content = std::str::from_utf8(pi.content()).ok()?;
                let content = content.trim_start_matches([' ', '\t', '\r', '\n']);
                let content = (!content.is_empty()).then(|| normalize_newlines(content));
                let node = xot.new_processing_instruction(target, content.as_deref());
                b.append(xot, node)?;
            }
            Event::Decl(_) => {}
            Event::DocType(_) => return None,
            Event::Eof => break,
        }
    }
    if !b.open.is_empty() {
        return None;
    }
    Some(b.document)
}

struct Builder {
    document: Node,
    /// Open elements, each with the length of `scopes` before its declarations.
    open: Vec<(Node, usize)>,
    /// Namespace declarations in scope, innermost last: (prefix, namespace).
    scopes: Vec<(Box<[u8]>, NamespaceId)>,
    /// Names resolved so far, by namespace then local name.
    names: BTreeMap<NamespaceId, BTreeMap<Box<[u8]>, NameId>>,
    /// Character data not yet appended (adjacent pieces make one text node).
    pending: String,
}

impl Builder {
    fn parent(&self) -> Node {
        self.open.last().map_or(self.document, |&(n, _)| n)
    }

    fn append(&mut self, xot: &mut Xot, node: Node) -> Option<()> {
        let parent = self.parent();
        xot.append(parent, node).ok()
    }

    fn text(&mut self, s: &str) {
        self.pending.push_str(s);
    }

    /// Appends the pending character data as one text node (dropped outside the root
    /// element, where only whitespace can be).
    fn flush(&mut self, xot: &mut Xot) -> Option<()> {
        if self.pending.is_empty() {
            return Some(());
        }
        if !self.open.is_empty() {
            let node = xot.new_text(&self.pending);
            self.append(xot, node)?;
        }
        self.pending.clear();
        Some(())
    }

    fn namespace_of(&self, xot: &Xot, prefix: &[u8]) -> Option<NamespaceId> {
        if let Some(&(_, ns)) = self.scopes.iter().rev().find(|(p, _)| **p == *prefix) {
            return Some(ns);
        }
        match prefix {
            b"" => Some(xot.no_namespace()),
            b"xml" => Some(xot.xml_namespace()),
            _ => None,
        }
    }

    fn name(&mut self, xot: &mut Xot, ns: NamespaceId, local: &[u8]) -> Option<NameId> {
        let in_ns = self.names.entry(ns).or_default();
        if let Some(&id) = in_ns.get(local) {
            return Some(id);
        }
        let id = xot.add_name_ns(std::str::from_utf8(local).ok()?, ns);
        in_ns.insert(local.into(), id);
        Some(id)
    }

    /// Creates and appends the element of a start (or empty) tag, with its namespace
    /// declarations (left in scope) and attributes.
    fn element(&mut self, xot: &mut Xot, e: &BytesStart<'_>) -> Option<Node> {
        self.flush(xot)?;
        let mark = self.scopes.len();
        let raw: &[u8] = e;
        // Declarations first: they apply to the element's own name and attributes.
        for a in attributes(raw) {
            let (key, value) = a?;
            let prefix = if key == b"xmlns" {
                &b""[..]
            } else if let Some(p) = key.strip_prefix(b"xmlns:") {
                p
            } else {
                continue;
            };
            let uri = attribute_value(std::str::from_utf8(value).ok()?)?;
            let ns = xot.add_namespace(&uri);
            self.scopes.push((prefix.into(), ns));
        }
        let (prefix, local) = split_qname(name_of(raw));
        let ns = self.namespace_of(xot, prefix)?;
        let name = self.name(xot, ns, local)?;
        let el = xot.new_element(name);
        self.append(xot, el)?;
        let declared: Vec<(PrefixId, NamespaceId)> = self.scopes[mark..]
            .iter()
            .map(|(p, ns)| {
                std::str::from_utf8(p)
                    .ok()
                    .map(|p| (xot.add_prefix(p), *ns))
            })
            .collect::<Option<_>>()?;
        for (p, ns) in declared {
            xot.namespaces_mut(el).insert(p, ns);
        }
        for a in attributes(raw) {
            let (key, value) = a?;
            if key == b"xmlns" || key.starts_with(b"xmlns:") {
                continue;
            }
            let (prefix, local) = split_qname(key);
            // An unprefixed attribute is in no namespace, whatever the default namespace.
            let ns = if prefix.is_empty() {
                xot.no_namespace()
            } else {
                self.namespace_of(xot, prefix)?
            };
            let name = self.name(xot, ns, local)?;
            let value = attribute_value(std::str::from_utf8(value).ok()?)?;
            xot.attributes_mut(el).insert(name, value);
        }
        Some(el)
    }
}

fn name_of(raw: &[u8]) -> &[u8] {
    let end = raw
        .iter()
        .position(|&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'/'))
        .unwrap_or(raw.len());
    &raw[..end]
}

fn split_qname(name: &[u8]) -> (&[u8], &[u8]) {
    match name.iter().position(|&b| b == b':') {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => (&b""[..], name),
    }
}

/// The attributes of a raw tag: (name, raw value between the quotes), or `None` for a shape
/// the message parser would not have let through.
fn attributes(raw: &[u8]) -> impl Iterator<Item = Option<(&[u8], &[u8])>> {
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let mut p = name_of(raw).len();
    std::iter::from_fn(move || {
        while p < raw.len() && is_space(raw[p]) {
            p += 1;
        }
        if p >= raw.len() || raw[p] == b'/' {
            return None;
        }
        let parsed = (|| {
            let eq = p + raw[p..].iter().position(|&b| b == b'=')?;
            let key = raw[p..eq].trim_ascii();
            let open = eq + 1 + raw[eq + 1..].iter().position(|&b| !is_space(b))?;
            let quote = raw[open];
            if quote != b'"' && quote != b'\'' {
                return None;
            }
            let len = raw[open + 1..].iter().position(|&b| b == quote)?;
            p = open + 1 + len + 1;
            Some((key, &raw[open + 1..open + 1 + len]))
        })();
        if parsed.is_none() {
            p = raw.len();
        }
        Some(parsed)
    })
}

/// An attribute value as XML reports it: `\t`, `\n`, `\r` (and `\r\n`) become a space, then
/// references are resolved (a `&#10;` stays a line feed).
fn attribute_value(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find(['&', '\t', '\n', '\r']) {
        out.push_str(&rest[..i]);
        let c = rest.as_bytes()[i];
        if c == b'&' {
            let end = i + rest[i..].find(';')?;
            out.push(resolve_reference(&rest[i + 1..end])?);
            rest = &rest[end + 1..];
        } else {
            out.push(' ');
            let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
            rest = &rest[i + skip..];
        }
    }
    out.push_str(rest);
    Some(out)
}

/// `\r\n` and a lone `\r` become `\n` (XML 1.0 §2.11).
fn normalize_newlines(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('\r') {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(s.replace("\r\n", "\n").replace('\r', "\n"))
}

/// A predefined entity or a character reference (`name` without `&` and `;`).
fn resolve_reference(name: &str) -> Option<char> {
    Some(match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "apos" => '\'',
        "quot" => '"',
        _ => {
            let code = match name.strip_prefix("#x") {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => name.strip_prefix('#')?.parse().ok()?,
            };
            char::from_u32(code)?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(text: &str) -> (String, String) {
        let mut ours = Xot::new();
        let doc = build(&mut ours, text).expect("builds");
        let mut theirs = Xot::new();
        let reference = theirs.parse(text).expect("xot parses");
        (
            ours.to_string(doc).expect("serializes"),
            theirs.to_string(reference).expect("serializes"),
        )
    }

    fn packets() -> Vec<(String, String)> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
        let mut names = vec![format!("{dir}/gcn_swift_bat.xml")];
        for entry in std::fs::read_dir(format!("{dir}/xpath/packets")).expect("packets") {
            names.push(entry.expect("entry").path().display().to_string());
        }
        names
            .into_iter()
            .map(|path| {
                let bytes = std::fs::read(&path).expect("readable");
                let text = match std::str::from_utf8(&bytes) {
                    Ok(s) => s.to_owned(),
                    Err(_) => encoding_rs::WINDOWS_1252.decode(&bytes).0.into_owned(),
                };
                // As the engine does: the XML declaration is left out.
                let body = match text.strip_prefix("<?xml") {
                    Some(rest) => rest[rest.find("?>").expect("closed") + 2..].to_owned(),
                    None => text,
                };
                (path, body)
            })
            .collect()
    }

    #[test]
    fn the_tree_is_the_one_xots_parser_makes() {
        for (path, text) in packets() {
            let (ours, theirs) = both(&text);
            assert_eq!(ours, theirs, "{path}");
        }
        for text in [
            "<a xmlns='urn:d' xmlns:p='urn:p'><p:b p:x='1' y='&amp;&#65;&#x42;'/><c>t&lt;\
             <![CDATA[<raw>]]>&gt;u</c></a>",
            "<!-- before --><?pi data?>\n<a>\r\nline\rend<?empty?><!-- in --></a>\n<!-- after -->",
            "<a v=' tab\tnl\ncr\rcrlf\r\n&#10;x'/>",
            "<a xml:lang='en'><b xmlns='urn:x'><c xmlns=''/></b></a>",
            "<p:a xmlns:p='urn:1'><p:b xmlns:p='urn:2'/><p:c/></p:a>",
        ] {
            let (ours, theirs) = both(text);
            assert_eq!(ours, theirs, "{text}");
        }
    }

    #[test]
    fn unexpected_input_fails_instead_of_guessing() {
        let mut xot = Xot::new();
        for text in [
            "<!DOCTYPE a><a/>",
            "<a>&undefined;</a>",
            "<p:a/>",
            "<a><b></a>",
            "<a>",
        ] {
            assert!(build(&mut xot, text).is_none(), "{text}");
        }
    }
}
