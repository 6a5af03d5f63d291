//! The fast path of [`parse`](super::parse): plain Transport messages without quick-xml.

use std::borrow::Cow;

use super::{Parser, Path, Root, TransportAcc, Walk, is_ws, split_qname};
use crate::message::{Message, TransportRole};

impl<'a> Parser<'a, '_> {
    /// The fast path for a plain Transport message: the pass of [`Parser::run`], with the
    /// same per-event handlers, but tokenized here instead of by quick-xml, for a subset of
    /// XML only.
    ///
    /// Returns `None`, leaving the payload to [`Parser::run`], outside that subset and on any
    /// error: a root other than `Transport`; a comment, processing instruction, CDATA section
    /// or DOCTYPE; a reference in text (references in attribute values are fine); an end tag
    /// other than exactly `</name>`; a `>` inside an attribute value; more than
    /// [`PLAIN_DEPTH_MAX`] open elements; invalid characters. On that subset the tokens are
    /// quick-xml's, so a `Some` is the message [`Parser::run`] returns (the differential tests
    /// in `message::plain_tests` check that on mutated messages of every peer).
    ///
    /// Implementation note: quick-xml's event loop, and an allocation for each open element
    /// name, were most of the cost of a subscriber's ack, which a broker parses once per
    /// subscriber per event. The plain pass also skips what it knows: the root start tags and
    /// XML declarations that peers send ([`KNOWN_ROOTS`], [`COMMON_DECLARATIONS`]).
    pub(super) fn run_plain(&mut self) -> Option<Message<'a>> {
        let body = self.body;
        let mut pos = self.decl_end;
        // Decide before reading the payload's characters: a VOEvent goes to quick-xml.
        let lt = pos + body[pos..].iter().position(|&b| !is_ws(b))?;
        let name = body.get(lt + 1..)?;
        let name = &name[..name
            .iter()
            .position(|&b| is_ws(b) || b == b'>' || b == b'/')
            .unwrap_or(name.len())];
        if body[lt] != b'<' || split_qname(name).1 != b"Transport" {
            return None;
        }
        self.check_chars(true).ok()?;
        let mut walk = Walk::new(None);
        // The names of the open elements: (offset, length) in `body`.
        let mut open = [(0usize, 0usize); PLAIN_DEPTH_MAX];
        let mut open_len = 0;
        while pos < body.len() {
            if body[pos] != b'<' {
                let end = memchr::memchr2(b'<', b'&', &body[pos..]).map_or(body.len(), |i| pos + i);
                if body.get(end) == Some(&b'&') {
                    return None;
                }
                self.on_text(&mut walk, pos, Cow::Borrowed(&body[pos..end]))
                    .ok()?;
                pos = end;
                continue;
            }
            match body.get(pos + 1)? {
                b'/' => {
                    let (at, len) = *open[..open_len].last()?;
                    let name = &body[at..at + len];
                    let rest = &body[pos + 2..];
                    if !(rest.starts_with(name) && rest.get(len) == Some(&b'>')) {
                        return None;
                    }
                    let end = pos + 3 + len;
                    self.on_end(&mut walk, pos, end).ok()?;
                    open_len -= 1;
                    pos = end;
                }
                b'!' | b'?' => return None,
                _ => {
                    // The first `>`. quick-xml ends a tag at the first `>` outside quotes, but
                    // when the handler accepts the attributes before this one, every quote
                    // before it is closed: then the two are the same `>`.
                    let gt = pos + 1 + memchr::memchr(b'>', &body[pos + 1..])?;
                    let empty = body[gt - 1] == b'/' && gt - 1 > pos;
                    let end = gt + 1;
                    self.on_tag(&mut walk, pos, end, empty).ok()?;
                    if !empty {
                        let slot = open.get_mut(open_len)?;
                        let content = &body[pos + 1..gt];
                        let name_len = content
                            .iter()
                            .position(|&b| is_ws(b))
                            .unwrap_or(content.len());
                        *slot = (pos + 1, name_len);
                        open_len += 1;
                    }
                    pos = end;
                }
            }
        }
        self.finish(walk).ok()
    }

    /// What [`Parser::open_root`] makes of `tag` when it is one of the [`KNOWN_ROOTS`], without
    /// reading it: a Transport root with that role and version `1.0`.
    pub(super) fn known_root(&self, tag: &[u8]) -> Option<Root<'a>> {
        if self.path != Path::Fast {
            return None;
        }
        KNOWN_ROOTS.iter().find_map(|&(head, tail, attrs)| {
            let role = tag.strip_prefix(head)?.strip_suffix(tail)?;
            let role = TransportRole::from_attr(std::str::from_utf8(role).ok()?)?;
            // The limits `open_root` would check: the attribute count, and the size of the two
            // values it extracts (`version` is "1.0").
            let fits = attrs <= self.limits.attrs_max
                && role.as_str().len().max(3) <= self.limits.text_max;
            let version = Some(Cow::Borrowed("1.0"));
            fits.then(|| Root::Transport(TransportAcc::new(role, version, self.keep)))
        })
    }
}

/// The Transport root start tags (between `<` and `>`) of pygcn, Comet and vtp, as a head and a
/// tail around the `role` value, with their number of attributes. All declare the `trn` prefix,
/// have `version="1.0"`, and are otherwise well-formed, so [`Parser::open_root`] finds in each
/// exactly the role and version (`message::plain_tests` checks that).
pub(crate) const KNOWN_ROOTS: [(&[u8], &[u8], usize); 3] = [
    // pygcn 1.1.3 (`gcn/voeventclient.py::_form_response`).
    (
        b"trn:Transport role=\"",
        b"\" version=\"1.0\" \
          xmlns:trn=\"http://telescope-networks.org/schema/Transport/v1.1\" \
          xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
          xsi:schemaLocation=\"http://telescope-networks.org/schema/Transport/v1.1 \
          http://telescope-networks.org/schema/Transport-v1.1.xsd\"",
        5,
    ),
    // Comet 3.1.0 (`comet/protocol/messages.py`, written by lxml).
    (
        b"trn:Transport xmlns:trn=\"http://www.telescope-networks.org/xml/Transport/v1.1\" \
          xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" version=\"1.0\" \
          xsi:schemaLocation=\"http://telescope-networks.org/schema/Transport/v1.1 \
          http://www.telescope-networks.org/schema/Transport-v1.1.xsd\" role=\"",
        b"\"",
        5,
    ),
    // vtp (`message::build_transport`).
    (
        b"trn:Transport xmlns:trn=\"http://www.telescope-networks.org/xml/Transport/v1.1\" \
          version=\"1.0\" role=\"",
        b"\"",
        3,
    ),
];

/// XML declarations seen on nearly every message (pygcn's and lxml's, vtp's): what
/// `Parser::declared_encoding` finds in each (UTF-8, ending where the literal does) is known
/// without reading its pseudo-attributes.
pub(crate) const COMMON_DECLARATIONS: [&[u8]; 4] = [
    b"<?xml version='1.0' encoding='UTF-8'?>",
    b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
    b"<?xml version='1.0' encoding='utf-8'?>",
    b"<?xml version=\"1.0\" encoding=\"utf-8\"?>",
];

/// Open elements the fast path of [`parse`](super::parse) keeps track of; deeper documents go
/// to quick-xml.
const PLAIN_DEPTH_MAX: usize = 8;
