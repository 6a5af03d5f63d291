//! Collecting a Transport message during the pass: which children of the root count
//! (`Origin`, `Response`, `TimeStamp`, `Meta` with its `Param`s, `Result` and legacy
//! `filter`s), their attributes, and their text gathered from every piece.

use std::borrow::Cow;

use super::attrs::scan_attrs;
use super::names::{split_name, split_qname};
use super::text::trim_ws;
use super::{Keep, Parser};
use crate::message::{ParseError, ParseLimits, Transport, TransportRole};

impl<'a> Parser<'a, '_> {
    /// Handles a start or empty tag below a Transport root.
    pub(super) fn transport_child(
        &mut self,
        acc: &mut TransportAcc<'a>,
        tag: &'a [u8],
        at: usize,
        depth: usize,
        empty: bool,
    ) -> Result<(), ParseError> {
        let (name, attrs) = split_name(tag, at)?;
        let attrs_at = at + name.len();
        let max = self.limits.attrs_max;
        match acc.classify(depth, split_qname(name).1) {
            Child::Param => {
                let mut param_name = None;
                let mut param_value = None;
                scan_attrs(attrs, attrs_at, max, &mut self.keys, |key, value, at| {
                    match key {
                        b"name" => param_name = Some((value, at)),
                        b"value" => param_value = Some((value, at)),
                        _ => {}
                    }
                    Ok(())
                })?;
                if let (Some((n, n_at)), Some((v, v_at))) = (param_name, param_value) {
                    acc.check_count(self.limits)?;
                    let entry = (self.attr_value(n, n_at)?, self.attr_value(v, v_at)?);
                    acc.params.push(entry);
                }
            }
            Child::Filter => {
                let mut kind = None;
                scan_attrs(attrs, attrs_at, max, &mut self.keys, |key, value, at| {
                    if key == b"type" {
                        kind = Some((value, at));
                    }
                    Ok(())
                })?;
                if let Some((k, k_at)) = kind
                    && self.attr_value(k, k_at)? == "xpath"
                {
                    acc.check_count(self.limits)?;
                    acc.open(Target::Filter, depth, empty);
                }
            }
            Child::Text(target) => {
                scan_attrs(attrs, attrs_at, max, &mut self.keys, |_, _, _| Ok(()))?;
                acc.open(target, depth, empty);
            }
            Child::Meta => {
                scan_attrs(attrs, attrs_at, max, &mut self.keys, |_, _, _| Ok(()))?;
                acc.meta_open = !empty;
            }
            Child::Other => {
                scan_attrs(attrs, attrs_at, max, &mut self.keys, |_, _, _| Ok(()))?;
            }
        }
        Ok(())
    }
}

/// Which Transport child an element is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Child {
    Text(Target),
    Meta,
    Param,
    Filter,
    Other,
}

/// Where a captured text goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Origin,
    Response,
    TimeStamp,
    Result,
    Filter,
}

/// Collects the parts of a Transport message during the pass.
#[derive(Debug)]
pub(super) struct TransportAcc<'a> {
    role: TransportRole,
    version: Option<Cow<'a, str>>,
    origin: Option<Cow<'a, str>>,
    response: Option<Cow<'a, str>>,
    timestamp: Option<Cow<'a, str>>,
    result: Option<Cow<'a, str>>,
    params: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    legacy_filters: Vec<Cow<'a, str>>,
    /// A `Meta` child of the root is open.
    meta_open: bool,
    /// The element whose text is being collected, if any.
    capture: Option<Capture<'a>>,
    keep: Keep,
    /// A `Response`, a `TimeStamp` child was found (only the first of each counts).
    response_seen: bool,
    timestamp_seen: bool,
}

#[derive(Debug)]
struct Capture<'a> {
    target: Target,
    depth: usize,
    text: TextAcc<'a>,
    /// Bytes of payload consumed so far, for [`ParseLimits::text_max`].
    len: usize,
}

impl<'a> TransportAcc<'a> {
    pub(super) fn new(role: TransportRole, version: Option<Cow<'a, str>>, keep: Keep) -> Self {
        Self {
            role,
            version,
            origin: None,
            response: None,
            timestamp: None,
            result: None,
            params: Vec::new(),
            legacy_filters: Vec::new(),
            meta_open: false,
            capture: None,
            keep,
            response_seen: false,
            timestamp_seen: false,
        }
    }

    /// Whether the text being captured is kept (else it is only measured).
    pub(super) fn keeps_text(&self) -> bool {
        self.capture.as_ref().is_some_and(|c| self.kept(c.target))
    }

    fn kept(&self, target: Target) -> bool {
        self.keep == Keep::All || !matches!(target, Target::Response | Target::TimeStamp)
    }

    /// Classifies an element at `depth` by local name. Only the first `Origin`, `Response`,
    /// `TimeStamp` and `Result` count.
    fn classify(&self, depth: usize, local: &[u8]) -> Child {
        if self.capture.is_some() {
            return Child::Other;
        }
        match (depth, local) {
            (2, b"Origin") if self.origin.is_none() => Child::Text(Target::Origin),
            (2, b"Response") if !self.response_seen => Child::Text(Target::Response),
            (2, b"TimeStamp") if !self.timestamp_seen => Child::Text(Target::TimeStamp),
            (2, b"Meta") => Child::Meta,
            (3, b"Param") if self.meta_open => Child::Param,
            (3, b"Result") if self.meta_open && self.result.is_none() => {
                Child::Text(Target::Result)
            }
            (3, b"filter") if self.meta_open => Child::Filter,
            _ => Child::Other,
        }
    }

    fn check_count(&self, limits: &ParseLimits) -> Result<(), ParseError> {
        if self.params.len() + self.legacy_filters.len() >= limits.transport_params_max {
            return Err(ParseError::TooLarge {
                what: "number of Transport parameters",
                max: limits.transport_params_max,
            });
        }
        Ok(())
    }

    /// Starts collecting the text of an element (or stores `""` for an empty one).
    fn open(&mut self, target: Target, depth: usize, empty: bool) {
        match target {
            Target::Response => self.response_seen = true,
            Target::TimeStamp => self.timestamp_seen = true,
            Target::Origin | Target::Result | Target::Filter => {}
        }
        if empty {
            self.assign(target, Cow::Borrowed(""));
        } else {
            self.capture = Some(Capture {
                target,
                depth,
                text: TextAcc::Empty,
                len: 0,
            });
        }
    }

    pub(super) fn capturing_at(&self, depth: usize) -> bool {
        self.capture.as_ref().is_some_and(|c| c.depth == depth)
    }

    pub(super) fn push_text(
        &mut self,
        piece: Cow<'a, str>,
        raw_len: usize,
        limits: &ParseLimits,
    ) -> Result<(), ParseError> {
        if let Some(capture) = &mut self.capture {
            capture.len += raw_len;
            if capture.len > limits.text_max {
                return Err(ParseError::TooLarge {
                    what: "element text (bytes)",
                    max: limits.text_max,
                });
            }
            capture.text.push(piece);
        }
        Ok(())
    }

    /// Handles the end tag of the element at `depth`.
    pub(super) fn close(&mut self, depth: usize) {
        if self.capturing_at(depth)
            && let Some(capture) = self.capture.take()
        {
            self.assign(capture.target, capture.text.finish());
        }
        if depth == 2 {
            self.meta_open = false;
        }
    }

    fn assign(&mut self, target: Target, value: Cow<'a, str>) {
        if !self.kept(target) {
            return;
        }
        match target {
            Target::Origin => self.origin = Some(trim_ws(value)),
            Target::Response => self.response = Some(trim_ws(value)),
            Target::TimeStamp => self.timestamp = Some(trim_ws(value)),
            Target::Result => self.result = Some(value),
            Target::Filter => self.legacy_filters.push(value),
        }
    }

    pub(super) fn finish(self) -> Result<Transport<'a>, ParseError> {
        let origin = self
            .origin
            .filter(|o| !o.is_empty())
            .ok_or(ParseError::MissingOrigin)?;
        Ok(Transport {
            role: self.role,
            version: self.version,
            origin,
            response: self.response,
            timestamp: self.timestamp,
            params: self.params,
            result: self.result,
            legacy_filters: self.legacy_filters,
        })
    }
}

/// Text of one element, gathered from text, CDATA and reference pieces; allocates only when
/// there is more than one piece.
#[derive(Debug)]
enum TextAcc<'a> {
    Empty,
    One(Cow<'a, str>),
    Many(String),
}

impl<'a> TextAcc<'a> {
    fn push(&mut self, piece: Cow<'a, str>) {
        if piece.is_empty() {
            return;
        }
        *self = match std::mem::replace(self, TextAcc::Empty) {
            TextAcc::Empty => TextAcc::One(piece),
            TextAcc::One(first) => {
                let mut joined = String::with_capacity(first.len() + piece.len());
                joined.push_str(&first);
                joined.push_str(&piece);
                TextAcc::Many(joined)
            }
            TextAcc::Many(mut joined) => {
                joined.push_str(&piece);
                TextAcc::Many(joined)
            }
        };
    }

    fn finish(self) -> Cow<'a, str> {
        match self {
            TextAcc::Empty => Cow::Borrowed(""),
            TextAcc::One(text) => text,
            TextAcc::Many(text) => Cow::Owned(text),
        }
    }
}
