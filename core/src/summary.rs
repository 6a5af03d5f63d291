//! What an archive keeps about an event besides its bytes: `Who/AuthorIVORN`, `Who/Date`, the
//! `WhereWhen` position and the IVORN's stream. A pure function of the bytes.
//!
//! # Theory of operation
//!
//! [`summarize`] reads the event with quick-xml once, start to end, remembering only the path
//! of element names from the root (namespace prefixes dropped) up to [`DEPTH_MAX`] deep and the
//! few texts it wants, each at most [`TEXT_MAX`] bytes. A subtree where nothing is wanted
//! (`What`, `How`, `Why`, the rest of `WhereWhen`: most of an event) is passed over by
//! quick-xml without keeping its path (a 10 KB GCN notice: 12.6 us against 14-17 us on this
//! machine); the depth bound then counts only the elements kept, so a deep `What` no longer
//! hides the position after it. It never fails: a document that is not
//! well-formed, too deep or too large ([`BYTES_MAX`]) gives what was read before the problem
//! (often nothing). A position is kept only when it is complete and sane: `Value2/C1` (RA) and
//! `C2` (Dec) under `WhereWhen/ObsDataLocation/ObservationLocation/AstroCoords/Position2D`, the
//! `Position2D`'s unit `deg` (or absent), finite numbers with Dec in -90..=90 (RA is brought
//! into 0..360); `Error2Radius` is kept when finite and not negative. The coordinate system
//! (e.g. `UTC-FK5-GEO`, `UTC-ICRS-GEO`) is reported as written; FK5 and ICRS differ by far less
//! than any alert's error circle, so the position is used as is.
//!
//! [`summarize_spans`] does the same on only the root's `Who` and `WhereWhen`, which the
//! message parser located while it accepted the event ([`Spans`]): 3.4 us instead of 13 for
//! that notice, and the same summary (every wanted value lies inside one of the two).

use std::ops::Range;

use quick_xml::Reader;
use quick_xml::events::Event;

/// Most bytes of an event read; beyond them the rest is not looked at.
pub const BYTES_MAX: usize = 4 << 20;
/// Most element depth followed.
pub const DEPTH_MAX: usize = 32;
/// Most bytes of one captured text (longer ones are dropped).
pub const TEXT_MAX: usize = 512;

/// An event's position on the sky, in degrees.
#[derive(Debug, Clone, PartialEq)]
pub struct SkyPosition {
    /// Right ascension, 0 <= ra < 360.
    pub ra: f64,
    /// Declination, -90..=90.
    pub dec: f64,
    /// Error radius, when given (>= 0).
    pub error: Option<f64>,
    /// The `coord_system_id` of the `AstroCoords`, e.g. `UTC-FK5-GEO`.
    pub system: Option<String>,
}

/// What [`summarize`] found in an event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// `Who/AuthorIVORN`, trimmed.
    pub author_ivorn: Option<String>,
    /// `Who/Date`, trimmed, as written.
    pub date: Option<String>,
    /// The `WhereWhen` position.
    pub position: Option<SkyPosition>,
}

/// Where in the document the reader is, as far as [`summarize`] cares.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    AuthorIvorn,
    Date,
    C1,
    C2,
    Error,
}

const POSITION_PATH: [&[u8]; 6] = [
    b"WhereWhen",
    b"ObsDataLocation",
    b"ObservationLocation",
    b"AstroCoords",
    b"Position2D",
    b"Value2",
];

/// Reads `Who/AuthorIVORN`, `Who/Date` and the `WhereWhen` position of a VOEvent. Never fails
/// nor panics; bounded by [`BYTES_MAX`], [`DEPTH_MAX`] and [`TEXT_MAX`].
pub fn summarize(bytes: &[u8]) -> Summary {
    read(bytes, true)
}

/// Where the root's `Who` and `WhereWhen` children are in an event's payload, as the parser
/// found them when it accepted the event ([`crate::message::VoEvent::spans`]): each from the
/// `<` of its start tag through the `>` of its end tag, `None` when the root has none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spans {
    /// The root's `Who`.
    pub who: Option<Range<usize>>,
    /// The root's `WhereWhen`.
    pub where_when: Option<Range<usize>>,
}

/// [`summarize`] of a payload the parser accepted, reading only the `Who` and `WhereWhen`
/// that `spans` locates (a few hundred bytes of a 10 KB GCN notice; the rest is what
/// [`summarize`] would pass over). The same summary as [`summarize`] on the whole payload
/// for every well-formed event: each wanted value lies inside one of these two elements.
/// Spans that do not fit the payload give [`summarize`]'s answer.
pub fn summarize_spans(bytes: &[u8], spans: &Spans) -> Summary {
    let fits = |r: &Option<Range<usize>>| {
        r.as_ref()
            .is_none_or(|r| r.start <= r.end && r.end <= bytes.len().min(BYTES_MAX))
    };
    if !fits(&spans.who) || !fits(&spans.where_when) {
        return summarize(bytes);
    }
    let part = |r: &Option<Range<usize>>| {
        r.as_ref()
            .map(|r| read_child(&bytes[r.clone()]))
            .unwrap_or_default()
    };
    let who = part(&spans.who);
    let where_when = part(&spans.where_when);
    Summary {
        author_ivorn: who.author_ivorn,
        date: who.date,
        position: where_when.position,
    }
}

/// [`summarize`]; `skip` skips the subtrees where nothing is wanted (tests compare it with
/// reading every element).
pub(crate) fn read(bytes: &[u8], skip: bool) -> Summary {
    read_from(bytes, skip, Vec::new())
}

/// [`read`] of one child of the root (`bytes` is that element), as if the root were open.
fn read_child(bytes: &[u8]) -> Summary {
    read_from(bytes, true, vec![b"VOEvent".to_vec()])
}

/// [`read`] with the elements of `path` already open.
fn read_from(bytes: &[u8], skip: bool, mut path: Vec<Vec<u8>>) -> Summary {
    let bytes = &bytes[..bytes.len().min(BYTES_MAX)];
    let mut reader = Reader::from_reader(bytes);
    reader.config_mut().trim_text(false);
    let mut out = Summary::default();
    let (mut c1, mut c2, mut err): (Option<String>, Option<String>, Option<String>) =
        (None, None, None);
    let mut unit_ok = true;
    let mut system: Option<String> = None;
    let mut want: Option<Want> = None;
    let mut text = String::new();
    while let Ok(event) = reader.read_event() {
        match event {
            Event::Start(e) => {
                if path.len() >= DEPTH_MAX {
                    break;
                }
                if skip && !path.is_empty() && !may_hold_wanted(&path, e.local_name().as_ref()) {
                    // Nothing wanted lies in this subtree (What, How, most of WhereWhen: the
                    // bulk of an event): skip it without keeping its path. Entering a child
                    // of a wanted element drops that element's text, as below.
                    want = None;
                    text.clear();
                    if reader.read_to_end(e.name()).is_err() {
                        break;
                    }
                    continue;
                }
                let name = e.local_name().as_ref().to_vec();
                path.push(name);
                want = wanted(&path);
                text.clear();
                let depth = path.len();
                if depth == 5 && path[4] == b"AstroCoords" && at_position(&path, 5) {
                    system = attr(&e, b"coord_system_id");
                }
                if depth == 6 && path[5] == b"Position2D" && at_position(&path, 6) {
                    unit_ok = attr(&e, b"unit").is_none_or(|u| u.eq_ignore_ascii_case("deg"));
                }
            }
            Event::Empty(e)
                if path.len() == 4
                    && e.local_name().as_ref() == b"AstroCoords"
                    && at_position(&path, 4) =>
            {
                system = attr(&e, b"coord_system_id");
            }
            Event::End(_) => {
                if let Some(w) = want.take() {
                    let value = text.trim().to_owned();
                    if !value.is_empty() && value.len() <= TEXT_MAX {
                        let slot = match w {
                            Want::AuthorIvorn => &mut out.author_ivorn,
                            Want::Date => &mut out.date,
                            Want::C1 => &mut c1,
                            Want::C2 => &mut c2,
                            Want::Error => &mut err,
                        };
                        if slot.is_none() {
                            *slot = Some(value);
                        }
                    }
                }
                text.clear();
                path.pop();
                if path.is_empty() {
                    break;
                }
            }
            Event::Text(t) if want.is_some() && text.len() <= TEXT_MAX => {
                text.push_str(&String::from_utf8_lossy(&t.into_inner()));
            }
            Event::CData(t) if want.is_some() && text.len() <= TEXT_MAX => {
                text.push_str(&String::from_utf8_lossy(&t.into_inner()));
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if unit_ok {
        out.position = position(c1.as_deref(), c2.as_deref(), err.as_deref(), system);
    }
    out
}

/// Whether an element named `name` opened under `path` (not empty: the root is open) may
/// hold, or be, something [`wanted`]: `Who`, its `AuthorIVORN` and `Date`; `WhereWhen` and
/// the elements of [`POSITION_PATH`] under it, then `Error2Radius`, `C1` and `C2`.
fn may_hold_wanted(path: &[Vec<u8>], name: &[u8]) -> bool {
    let depth = path.len();
    match path.get(1).map(Vec::as_slice) {
        None => name == b"Who" || name == b"WhereWhen",
        Some(b"Who") => depth == 2 && (name == b"AuthorIVORN" || name == b"Date"),
        Some(b"WhereWhen") => match depth {
            2..=5 => at_position(path, depth) && name == POSITION_PATH[depth - 1],
            6 => at_position(path, 6) && (name == b"Value2" || name == b"Error2Radius"),
            7 => at_position(path, 7) && (name == b"C1" || name == b"C2"),
            _ => false,
        },
        Some(_) => false,
    }
}

/// Whether `path[1..depth]` is the start of [`POSITION_PATH`] (any root).
fn at_position(path: &[Vec<u8>], depth: usize) -> bool {
    depth >= 2
        && path.len() >= depth
        && path[1..depth]
            .iter()
            .zip(POSITION_PATH.iter())
            .all(|(a, b)| a.as_slice() == *b)
}

/// The text wanted at this path, if any.
fn wanted(path: &[Vec<u8>]) -> Option<Want> {
    match path.len() {
        3 if path[1] == b"Who" => match path[2].as_slice() {
            b"AuthorIVORN" => Some(Want::AuthorIvorn),
            b"Date" => Some(Want::Date),
            _ => None,
        },
        7 if at_position(path, 6) && path[6] == b"Error2Radius" => Some(Want::Error),
        8 if at_position(path, 7) => match path[7].as_slice() {
            b"C1" => Some(Want::C1),
            b"C2" => Some(Want::C2),
            _ => None,
        },
        _ => None,
    }
}

/// An attribute's value, when present and short.
fn attr(e: &quick_xml::events::BytesStart<'_>, name: &[u8]) -> Option<String> {
    for a in e.attributes().flatten() {
        if a.key.local_name().as_ref() == name {
            let v = String::from_utf8_lossy(&a.value).trim().to_owned();
            return (!v.is_empty() && v.len() <= TEXT_MAX).then_some(v);
        }
    }
    None
}

fn position(
    c1: Option<&str>,
    c2: Option<&str>,
    err: Option<&str>,
    system: Option<String>,
) -> Option<SkyPosition> {
    let ra: f64 = c1?.parse().ok()?;
    let dec: f64 = c2?.parse().ok()?;
    if !ra.is_finite() || !dec.is_finite() || !(-90.0..=90.0).contains(&dec) {
        return None;
    }
    let mut ra = ra.rem_euclid(360.0);
    if ra >= 360.0 {
        ra = 0.0;
    }
    let error = err
        .and_then(|e| e.parse::<f64>().ok())
        .filter(|e| e.is_finite() && *e >= 0.0);
    Some(SkyPosition {
        ra,
        dec,
        error,
        system,
    })
}

/// The stream of an IVORN: its authority and path (`ivo://nasa.gsfc.gcn/SWIFT#x` gives
/// `nasa.gsfc.gcn/SWIFT`); the IVORN without `ivo://` and fragment when it has another form.
pub fn stream_of(ivorn: &str) -> &str {
    let rest = ivorn.strip_prefix("ivo://").unwrap_or(ivorn);
    let end = rest.find(['#', '?']).unwrap_or(rest.len());
    &rest[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GCN: &[u8] = include_bytes!("../tests/data/gcn_swift_bat.xml");
    const GCN_TRIMMED: &[u8] =
        include_bytes!("../fuzz/corpus/message_parse/gcn_swift_bat_trimmed.xml");

    #[test]
    fn reads_a_real_gcn_packet() {
        let s = summarize(GCN);
        assert_eq!(s.author_ivorn.as_deref(), Some("ivo://nasa.gsfc.tan/gcn"));
        assert_eq!(s.date.as_deref(), Some("2012-09-05T11:19:43"));
        let p = s.position.expect("position");
        assert!((p.ra - 22.4130).abs() < 1e-9);
        assert!((p.dec + 14.6364).abs() < 1e-9);
        assert_eq!(p.error, Some(0.05));
        assert_eq!(p.system.as_deref(), Some("UTC-FK5-GEO"));
        assert_eq!(summarize(GCN_TRIMMED).position.map(|p| p.ra), Some(p.ra));
    }

    fn event(where_when: &str) -> Vec<u8> {
        format!(
            "<voe:VOEvent xmlns:voe='http://www.ivoa.net/xml/VOEvent/v2.0' ivorn='ivo://a/b#c' \
             role='test' version='2.0'><Who><Date>2020-01-01T00:00:00</Date></Who>\
             <WhereWhen>{where_when}</WhereWhen></voe:VOEvent>"
        )
        .into_bytes()
    }

    fn pos(c1: &str, c2: &str, unit: &str) -> Vec<u8> {
        event(&format!(
            "<ObsDataLocation><ObservatoryLocation id='GEOLUN'/><ObservationLocation>\
             <AstroCoordSystem id='UTC-ICRS-GEO'/><AstroCoords coord_system_id='UTC-ICRS-GEO'>\
             <Position2D unit='{unit}'><Name1>RA</Name1><Name2>Dec</Name2>\
             <Value2><C1>{c1}</C1><C2>{c2}</C2></Value2></Position2D></AstroCoords>\
             </ObservationLocation></ObsDataLocation>"
        ))
    }

    #[test]
    fn positions_are_checked() {
        let p = summarize(&pos("-10", "89.5", "deg")).position.expect("pos");
        assert!((p.ra - 350.0).abs() < 1e-9);
        assert_eq!(p.error, None);
        assert_eq!(p.system.as_deref(), Some("UTC-ICRS-GEO"));
        assert_eq!(summarize(&pos("10", "91", "deg")).position, None);
        assert_eq!(summarize(&pos("NaN", "1", "deg")).position, None);
        assert_eq!(summarize(&pos("1", "", "deg")).position, None);
        assert_eq!(summarize(&pos("1", "2", "rad")).position, None);
        assert_eq!(summarize(&event("")).position, None);
        assert_eq!(
            summarize(&event("")).date.as_deref(),
            Some("2020-01-01T00:00:00")
        );
        assert_eq!(summarize(b"").position, None);
    }

    #[test]
    fn streams() {
        assert_eq!(
            stream_of("ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_1"),
            "nasa.gsfc.gcn/SWIFT"
        );
        assert_eq!(stream_of("ivo://a/b"), "a/b");
        assert_eq!(stream_of("x#y"), "x");
    }

    /// Every XML file of the schema corpus and the parser's fuzz corpus, and GCN's packet.
    fn corpus() -> Vec<(String, Vec<u8>)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = vec![("gcn".to_owned(), GCN.to_vec())];
        for dir in ["tests/data/schema", "fuzz/corpus/message_parse"] {
            let mut names: Vec<_> = std::fs::read_dir(root.join(dir))
                .expect("corpus directory")
                .map(|e| e.expect("entry").path())
                .filter(|p| p.extension().is_some_and(|x| x == "xml"))
                .collect();
            names.sort();
            for path in names {
                let bytes = std::fs::read(&path).expect("corpus file");
                files.push((path.display().to_string(), bytes));
            }
        }
        files
    }

    #[test]
    fn skipping_subtrees_finds_what_reading_every_element_finds() {
        let files = corpus();
        assert!(files.len() > 100, "{} files", files.len());
        let mut positions = 0;
        for (name, bytes) in &files {
            let fast = read(bytes, true);
            assert_eq!(fast, read(bytes, false), "{name}");
            positions += usize::from(fast.position.is_some());
        }
        assert!(positions >= 10, "only {positions} positions in the corpus");
    }

    #[test]
    fn the_spans_the_parser_finds_give_the_whole_event_s_summary() {
        let (mut compared, mut positions) = (0, 0);
        for (name, bytes) in corpus() {
            let Ok(crate::message::Message::VoEvent(ev)) =
                crate::message::parse(&bytes, &Default::default())
            else {
                continue;
            };
            let whole = summarize(&bytes);
            // Two `Who` or two `WhereWhen` (not valid VOEvent 2.0): read whole, as documented.
            let Some(spans) = ev.spans else {
                continue;
            };
            for (span, tag) in [(&spans.who, "Who"), (&spans.where_when, "WhereWhen")] {
                if let Some(span) = span {
                    let text = String::from_utf8_lossy(&bytes[span.clone()]);
                    assert!(
                        text.starts_with('<') && text.ends_with('>'),
                        "{name}: {text}"
                    );
                    assert!(text.contains(tag), "{name}: {text}");
                }
            }
            assert_eq!(summarize_spans(&bytes, &spans), whole, "{name}");
            compared += 1;
            positions += usize::from(whole.position.is_some());
        }
        assert!(compared > 50, "only {compared} events");
        assert!(positions >= 10, "only {positions} positions");
    }

    #[test]
    fn spans_of_a_prefixed_an_empty_a_repeated_and_a_missing_child() {
        let parse = |xml: &str| match crate::message::parse(xml.as_bytes(), &Default::default()) {
            Ok(crate::message::Message::VoEvent(ev)) => ev.spans,
            other => panic!("{xml}: {other:?}"),
        };
        let head = "\u{feff}<?xml version='1.0'?><voe:VOEvent xmlns:voe='http://www.ivoa.net/xml/VOEvent/v2.0' \
                    ivorn='ivo://a/b#c' role='test' version='2.0'>";
        let xml = format!(
            "{head}<Who><AuthorIVORN>ivo://a/b</AuthorIVORN></Who><What/><voe:WhereWhen/></voe:VOEvent>"
        );
        let spans = parse(&xml).expect("spans");
        let who = spans.who.clone().expect("Who");
        assert_eq!(
            &xml.as_bytes()[who.clone()],
            b"<Who><AuthorIVORN>ivo://a/b</AuthorIVORN></Who>"
        );
        assert_eq!(
            &xml.as_bytes()[spans.where_when.clone().expect("WhereWhen")],
            b"<voe:WhereWhen/>"
        );
        assert_eq!(
            summarize_spans(xml.as_bytes(), &spans)
                .author_ivorn
                .as_deref(),
            Some("ivo://a/b")
        );
        let none = parse(&format!("{head}<What><Who/></What></voe:VOEvent>")).expect("spans");
        assert_eq!(none, Spans::default());
        assert_eq!(
            parse(&format!("{head}<Who/><Who/></voe:VOEvent>")),
            None,
            "two Who: the spans say nothing"
        );
        // Spans that do not fit the payload: the whole event is read.
        let bytes = pos("10", "20", "deg");
        let wrong = Spans {
            who: None,
            where_when: Some(0..bytes.len() + 1),
        };
        assert_eq!(summarize_spans(&bytes, &wrong), summarize(&bytes));
    }

    #[test]
    fn a_deep_subtree_where_nothing_is_wanted_no_longer_hides_the_position() {
        // Reading every element stops at DEPTH_MAX inside What; skipping What reads on.
        let deep = format!("<What>{}{}</What>", "<a>".repeat(40), "</a>".repeat(40));
        let bytes = pos("10", "20", "deg");
        let text = String::from_utf8(bytes).expect("utf-8");
        let at = text.find("<WhereWhen>").expect("WhereWhen");
        let deep_event = format!("{}{deep}{}", &text[..at], &text[at..]).into_bytes();
        assert_eq!(read(&deep_event, false).position, None);
        let p = summarize(&deep_event)
            .position
            .expect("position after a deep What");
        assert!((p.ra - 10.0).abs() < 1e-9 && (p.dec - 20.0).abs() < 1e-9);
    }

    #[test]
    fn a_child_inside_a_wanted_element_drops_its_text_either_way() {
        let bytes = b"<VOEvent><Who><AuthorIVORN>ivo://a/b<x>y</x></AuthorIVORN>\
            <Date>2020-01-01T00:00:00</Date></Who></VOEvent>";
        for skip in [true, false] {
            let s = read(bytes, skip);
            assert_eq!(s.author_ivorn, None, "skip {skip}");
            assert_eq!(
                s.date.as_deref(),
                Some("2020-01-01T00:00:00"),
                "skip {skip}"
            );
        }
    }

    proptest! {
        #[test]
        fn skipping_agrees_on_mangled_gcn(cut in 0..GCN.len(), byte in any::<u8>(), at in 0..GCN.len()) {
            let mut b = GCN[..cut].to_vec();
            if at < b.len() { b[at] = byte; }
            prop_assert_eq!(read(&b, true), read(&b, false));
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = summarize(&bytes);
        }

        #[test]
        fn never_panics_on_mangled_gcn(cut in 0..GCN.len(), byte in any::<u8>(), at in 0..GCN.len()) {
            let mut b = GCN[..cut].to_vec();
            if at < b.len() { b[at] = byte; }
            let s = summarize(&b);
            if let Some(p) = s.position {
                prop_assert!((0.0..360.0).contains(&p.ra));
                prop_assert!((-90.0..=90.0).contains(&p.dec));
            }
        }
    }
}
