//! The status page (`GET /`): one HTML page, rendered on the server, with no external asset
//! at all (inline CSS, inline SVG, no script, no font): the node's identity and uptime, its
//! listeners, upstreams and subscribers, the events accepted per minute over the last 24 hours
//! (a bar chart), the latest [`EVENTS_ROWS`] events from the archive (each linking to its XML,
//! `/api/events/SEQ`) and a sky map of the positions of the latest [`MARKS_MAX`] positioned
//! events (Mollweide, [`super::sky`]). It reloads itself every [`REFRESH_SECS`] seconds
//! (`<meta http-equiv="refresh">`).
//!
//! Everything peers wrote (IVORNs, streams, roles, signatures, filters, certificate identities,
//! error texts) is HTML-escaped and cut to [`TEXT_MAX`] characters, and every list is bounded,
//! so the page's size is bounded whatever the peers send.
//!
//! One function reads (the metrics, the board, the archive through the attached
//! [`RecentEvents`](super::RecentEvents)); another, pure, renders what was read: the same
//! data gives the same page.

use std::fmt::Write as _;

use vtp_core::time::format_utc;

use super::render::{Reading, Status};
use super::sky::{X_MAX, Y_MAX, mollweide};
use super::{Health, Metrics, PageEvent};

/// Rows of the latest events' table.
pub const EVENTS_ROWS: usize = 50;
/// Marks on the sky map at most.
pub const MARKS_MAX: usize = 1000;
/// Subscribers listed at most (the count is always given).
pub const SUBSCRIBERS_LISTED: usize = 100;
/// Characters of any one text from a peer shown (longer ones are cut, with `…`).
pub const TEXT_MAX: usize = 200;
/// The page reloads itself this often.
pub const REFRESH_SECS: u32 = 30;

/// The archive's answer, for the table or the map.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Listing {
    /// No archive attached.
    Off,
    /// The archive could not be read: why.
    Failed(String),
    /// The events, newest first.
    Events(Vec<PageEvent>),
}

/// Everything the page shows.
pub(super) struct PageData<'a> {
    /// The node (the `/status` data).
    pub(super) status: &'a Status<'a>,
    /// Now, in milliseconds since the UNIX epoch.
    pub(super) now_unix_ms: u64,
    /// Events accepted per minute, oldest first, the current minute last.
    pub(super) per_minute: &'a [u64],
    /// The latest events (at most [`EVENTS_ROWS`] are shown).
    pub(super) events: &'a Listing,
    /// The latest positioned events (at most [`MARKS_MAX`] are marked).
    pub(super) marks: &'a Listing,
}

/// The page for `metrics` now (`now_unix_ms`), reading the archive if one is attached.
pub(super) fn page(metrics: &Metrics, health: &Health, now_unix_ms: u64) -> String {
    let reading = Reading::take(metrics, SUBSCRIBERS_LISTED);
    let status = Status::new(metrics, &reading, health);
    let per_minute = metrics.per_minute(now_unix_ms);
    let (events, marks) = match metrics.recent_events() {
        None => (Listing::Off, Listing::Off),
        Some(source) => {
            let listing = |r: Result<Vec<PageEvent>, String>| match r {
                Ok(events) => Listing::Events(events),
                Err(e) => Listing::Failed(e),
            };
            (
                listing(source.latest(EVENTS_ROWS)),
                listing(source.positioned(MARKS_MAX)),
            )
        }
    };
    render(&PageData {
        status: &status,
        now_unix_ms,
        per_minute: &per_minute,
        events: &events,
        marks: &marks,
    })
}

/// The page's HTML.
pub(super) fn render(d: &PageData<'_>) -> String {
    let s = d.status;
    let mut out = String::with_capacity(64 * 1024);
    let name = s.ivo.unwrap_or("(no IVO)");
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>vtp {} {}</title><style>{STYLE}</style></head><body>\n",
        s.role,
        text(name)
    );
    header(&mut out, d);
    section(&mut out, "sky", "Sky map of the latest positioned events");
    sky_map(&mut out, d.marks);
    out.push_str("</section>\n");
    section(
        &mut out,
        "rate",
        "Events accepted per minute, last 24 hours",
    );
    chart(&mut out, d.per_minute);
    out.push_str("</section>\n");
    section(&mut out, "events", "Latest events");
    events(&mut out, d.events);
    out.push_str("</section>\n");
    section(&mut out, "node", "Listeners");
    listeners(&mut out, s);
    out.push_str("<h2>Upstreams</h2>\n");
    upstreams(&mut out, s);
    out.push_str("<h2>Subscribers</h2>\n");
    subscribers(&mut out, s);
    out.push_str("<h2>Counters</h2>\n");
    counters(&mut out, s);
    out.push_str("</section>\n");
    let _ = write!(
        out,
        "<footer>vtp {}; generated {}; reloads every {REFRESH_SECS} s. Also: \
         <a href=\"/status\">/status</a> (JSON), <a href=\"/metrics\">/metrics</a>, \
         <a href=\"/healthz\">/healthz</a>.</footer>\n</body></html>\n",
        s.version,
        format_utc(d.now_unix_ms / 1000).as_str()
    );
    out
}

fn header(out: &mut String, d: &PageData<'_>) {
    let s = d.status;
    let health = if s.healthy {
        "<span class=\"ok\">healthy</span>".to_owned()
    } else {
        format!("<span class=\"bad\">unhealthy: {}</span>", text(&s.health))
    };
    let ivo = match s.ivo {
        Some(ivo) => format!("<span id=\"ivo\">{}</span>", text(ivo)),
        None => "<span id=\"ivo\" class=\"none\">no IVO</span>".to_owned(),
    };
    let _ = writeln!(
        out,
        "<header><h1>vtp {} {ivo}</h1><p>Up {}; {health}; last event accepted: {}.</p></header>",
        s.role,
        uptime(s.uptime_seconds),
        s.last_event.as_deref().unwrap_or("none"),
    );
}

fn section(out: &mut String, id: &str, title: &str) {
    let _ = writeln!(out, "<section id=\"{id}\"><h2>{title}</h2>");
}

/// The map's size in SVG units, and its margin.
const MAP_W: f64 = 800.0;
const MAP_H: f64 = 420.0;
const MAP_RX: f64 = 380.0;
const MAP_RY: f64 = 190.0;
const MAP_CX: f64 = MAP_W / 2.0;
const MAP_CY: f64 = MAP_H / 2.0;

/// Where (RA, Dec) falls in the map's SVG units.
fn to_map(ra: f64, dec: f64) -> Option<(f64, f64)> {
    let (x, y) = mollweide(ra, dec)?;
    Some((MAP_CX + x / X_MAX * MAP_RX, MAP_CY - y / Y_MAX * MAP_RY))
}

fn sky_map(out: &mut String, marks: &Listing) {
    let _ = write!(
        out,
        "<svg id=\"skymap\" viewBox=\"0 0 {MAP_W} {MAP_H}\" role=\"img\" \
         aria-label=\"Mollweide sky map, RA increasing to the left, centred on RA 12h\">\
         <ellipse class=\"sky\" cx=\"{MAP_CX}\" cy=\"{MAP_CY}\" rx=\"{MAP_RX}\" ry=\"{MAP_RY}\"/>"
    );
    // Parallels every 30°: straight lines in this projection.
    for dec in [-60.0, -30.0, 0.0, 30.0, 60.0] {
        if let (Some((x0, y)), Some((x1, _))) = (to_map(359.999_999, dec), to_map(0.0, dec)) {
            let _ = write!(
                out,
                "<line class=\"grid\" x1=\"{x0:.1}\" y1=\"{y:.1}\" x2=\"{x1:.1}\" y2=\"{y:.1}\"/>\
                 <text class=\"label\" text-anchor=\"end\" x=\"{:.1}\" y=\"{:.1}\">{dec}°</text>",
                x0 - 4.0,
                y + 4.0
            );
        }
    }
    // Meridians every 2 hours of RA (30°), from pole to pole.
    for ra in (1..12).map(|h| f64::from(h) * 30.0) {
        let points: Vec<String> = (-18..=18)
            .filter_map(|i| to_map(ra, f64::from(i) * 5.0))
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        let _ = write!(
            out,
            "<polyline class=\"grid\" points=\"{}\"/>",
            points.join(" ")
        );
        if let Some((x, y)) = to_map(ra, 0.0) {
            let _ = write!(
                out,
                "<text class=\"label\" x=\"{:.1}\" y=\"{:.1}\">{}h</text>",
                x + 2.0,
                y - 3.0,
                ra / 15.0
            );
        }
    }
    let mut shown = 0;
    if let Listing::Events(events) = marks {
        // Oldest first, so the newest is drawn on top.
        let positioned: Vec<&PageEvent> = events
            .iter()
            .filter(|e| e.position.is_some())
            .take(MARKS_MAX)
            .collect();
        for e in positioned.into_iter().rev() {
            let Some(p) = e.position else { continue };
            let Some((x, y)) = to_map(p.ra, p.dec) else {
                continue;
            };
            // Equal-area map: a radius of r degrees covers about PX_PER_DEG * r units.
            let r = p
                .error
                .filter(|e| e.is_finite())
                .map_or(MARK_R, |e| (e * PX_PER_DEG).clamp(MARK_R, MARK_R_MAX));
            let ivorn = text(&e.ivorn);
            let _ = write!(
                out,
                "<circle class=\"event\" data-ivorn=\"{ivorn}\" data-seq=\"{}\" cx=\"{x:.2}\" \
                 cy=\"{y:.2}\" r=\"{r:.1}\"><title>{ivorn}\n{}\n{}</title></circle>",
                e.seq,
                position(e),
                received(e),
            );
            shown += 1;
        }
    }
    out.push_str("</svg>\n");
    let note = match marks {
        Listing::Off => "The event archive is off: no positions to show.".to_owned(),
        Listing::Failed(why) => format!("The event archive cannot be read: {}", text(why)),
        Listing::Events(_) => format!(
            "{shown} positioned event{} (at most {MARKS_MAX}); RA increases to the left, \
             12h in the middle.",
            if shown == 1 { "" } else { "s" }
        ),
    };
    let _ = writeln!(out, "<p class=\"note\" id=\"marks\">{note}</p>");
}

/// A mark's radius without an error radius, and its largest.
const MARK_R: f64 = 3.5;
const MARK_R_MAX: f64 = 60.0;
/// √(area of the map in units² / area of the sky in deg²).
const PX_PER_DEG: f64 = 2.34;

fn chart(out: &mut String, per_minute: &[u64]) {
    const W: usize = 1440;
    const H: f64 = 100.0;
    let max = per_minute.iter().copied().max().unwrap_or(0);
    let total: u64 = per_minute.iter().sum();
    let n = per_minute.len().min(W);
    let _ = write!(
        out,
        "<svg id=\"chart\" viewBox=\"0 0 {W} {}\" role=\"img\" \
         aria-label=\"events per minute\"><rect class=\"plot\" x=\"0\" y=\"0\" width=\"{W}\" \
         height=\"{H}\"/>",
        H + 20.0
    );
    if max > 0 {
        let mut d = String::new();
        // One bar per minute with events, the newest at the right edge.
        for (i, v) in per_minute[per_minute.len() - n..].iter().enumerate() {
            if *v > 0 {
                let x = W - n + i;
                let y = H - (*v as f64 / max as f64) * (H - 4.0);
                let _ = write!(d, "M{x}.5 {H}V{y:.1}");
            }
        }
        let _ = write!(out, "<path class=\"bars\" d=\"{d}\"/>");
    }
    for (x, label) in [(0, "−24 h"), (W / 2, "−12 h"), (W - 36, "now")] {
        let _ = write!(
            out,
            "<text class=\"axis\" x=\"{x}\" y=\"{}\">{label}</text>",
            H + 15.0
        );
    }
    out.push_str("</svg>\n");
    let _ = writeln!(
        out,
        "<p class=\"note\" id=\"rate-total\">{total} event{} in 24 hours; at most {max} in a \
         minute.</p>",
        if total == 1 { "" } else { "s" }
    );
}

fn events(out: &mut String, listing: &Listing) {
    let events = match listing {
        Listing::Off => {
            out.push_str(
                "<p class=\"off\" id=\"archive-off\">The event archive is off: the latest events \
                 are not kept.</p>\n",
            );
            return;
        }
        Listing::Failed(why) => {
            let _ = writeln!(
                out,
                "<p class=\"bad\">The event archive cannot be read: {}</p>",
                text(why)
            );
            return;
        }
        Listing::Events(events) => events,
    };
    if events.is_empty() {
        out.push_str("<p class=\"note\">No events yet.</p>\n");
        return;
    }
    out.push_str(
        "<table id=\"latest\"><thead><tr><th>Received (UTC)</th><th>IVORN</th><th>Role</th>\
         <th>Stream</th><th>Position</th><th>Signature</th></tr></thead><tbody>\n",
    );
    for e in events.iter().take(EVENTS_ROWS) {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"ivorn\"><a href=\"/api/events/{}\">{}</a></td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            received(e),
            e.seq,
            text(&e.ivorn),
            text(&e.role),
            text(&e.stream),
            position(e),
            e.signature.as_deref().map_or_else(|| "—".to_owned(), text),
        );
    }
    out.push_str("</tbody></table>\n");
}

fn listeners(out: &mut String, s: &Status<'_>) {
    if s.listeners.is_empty() {
        out.push_str("<p class=\"note\">No listeners (a listener only subscribes).</p>\n");
        return;
    }
    out.push_str(
        "<table><thead><tr><th>Serves</th><th>Address</th><th>TLS</th></tr></thead><tbody>\n",
    );
    for l in &s.listeners {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            l.serves,
            text(l.address),
            if l.tls { "yes" } else { "no" }
        );
    }
    out.push_str("</tbody></table>\n");
}

fn upstreams(out: &mut String, s: &Status<'_>) {
    if s.upstreams.is_empty() {
        out.push_str("<p class=\"note\">No upstreams.</p>\n");
        return;
    }
    out.push_str(
        "<table><thead><tr><th>Endpoints</th><th>State</th><th>Since</th><th>Last event</th>\
         <th>Reconnects</th><th>Last error</th></tr></thead><tbody>\n",
    );
    for u in &s.upstreams {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            text(&u.endpoints.join(" ")),
            if u.state == "up" { "ok" } else { "bad" },
            u.state,
            u.since.as_deref().unwrap_or("start"),
            u.last_event.as_deref().unwrap_or("none"),
            u.reconnects,
            u.last_error.map_or_else(String::new, text),
        );
    }
    out.push_str("</tbody></table>\n");
}

fn subscribers(out: &mut String, s: &Status<'_>) {
    let subs = &s.subscribers;
    let _ = writeln!(
        out,
        "<p class=\"note\" id=\"subscribers\">{} connected{}.</p>",
        subs.count,
        if subs.count > subs.listed {
            format!(", the first {} listed", subs.listed)
        } else {
            String::new()
        }
    );
    if subs.list.is_empty() {
        return;
    }
    out.push_str(
        "<table><thead><tr><th>Address</th><th>Identity</th><th>Since</th><th>Filters</th>\
         </tr></thead><tbody>\n",
    );
    for sub in &subs.list {
        let filters: Vec<String> = sub.filters.iter().take(10).map(|f| text(f)).collect();
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            sub.address.as_deref().map_or_else(String::new, text),
            sub.identity.map_or_else(String::new, text),
            sub.connected_since.as_deref().unwrap_or(""),
            filters.join("<br>"),
        );
    }
    out.push_str("</tbody></table>\n");
}

fn counters(out: &mut String, s: &Status<'_>) {
    let c = &s.counters;
    out.push_str(
        "<table id=\"counters\"><thead><tr><th>Source</th><th>Received</th><th>Accepted</th>\
         <th>Duplicates</th></tr></thead><tbody>\n",
    );
    for (source, received) in &c.events_received {
        let _ = writeln!(
            out,
            "<tr><td>{source}</td><td>{received}</td><td>{}</td><td>{}</td></tr>",
            c.events_accepted.get(source).unwrap_or(&0),
            c.events_duplicate.get(source).unwrap_or(&0),
        );
    }
    out.push_str("</tbody></table>\n");
    let naks: u64 = c.naks.values().sum();
    let _ = writeln!(
        out,
        "<p class=\"note\">{} deliveries to subscribers; {naks} naks to authors; {} protocol \
         violations.</p>",
        c.deliveries, c.protocol_violations
    );
}

/// `2026-12-07T09:00:00Z` for the event's received time.
fn received(e: &PageEvent) -> String {
    let secs = u64::try_from(e.received_unix_ms).unwrap_or(0) / 1000;
    format_utc(secs).as_str().to_owned()
}

/// `RA 123.400° Dec -12.300° ± 0.050°`, or a dash.
fn position(e: &PageEvent) -> String {
    match e.position {
        None => "—".to_owned(),
        Some(p) => {
            let mut s = format!("RA {:.3}° Dec {:+.3}°", p.ra, p.dec);
            if let Some(err) = p.error {
                let _ = write!(s, " ± {err:.3}°");
            }
            s
        }
    }
}

fn uptime(secs: f64) -> String {
    let total = secs.max(0.0) as u64;
    let (d, h, m, s) = (
        total / 86_400,
        total / 3600 % 24,
        total / 60 % 60,
        total % 60,
    );
    if d > 0 {
        format!("{d} d {h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

/// `s` cut to [`TEXT_MAX`] characters and HTML-escaped (for text and attribute values alike).
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(TEXT_MAX) + 16);
    for (i, c) in s.chars().enumerate() {
        if i == TEXT_MAX {
            out.push('…');
            break;
        }
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:1em 2em;color:#222;background:#fafafa}\
h1{font-size:1.4em;margin:.2em 0}h2{font-size:1.1em;margin:1em 0 .3em}\
#ivo{font-family:monospace;font-weight:normal}\
table{border-collapse:collapse;width:100%;font-size:13px}\
th,td{border-bottom:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}\
td.ivorn{font-family:monospace;word-break:break-all}\
.ok{color:#170}.bad{color:#b00}.off,.note{color:#666}\
svg{display:block;width:100%;height:auto;max-width:1100px}\
.sky{fill:#0b1a33;stroke:#456}.grid{fill:none;stroke:#3a5a80;stroke-width:.6}\
.label{fill:#789;font-size:10px}.axis{fill:#666;font-size:15px}\
.event{fill:#fc3;fill-opacity:.55;stroke:#fe8;stroke-width:.8}\
.plot{fill:#fff;stroke:#ccc}.bars{stroke:#2364aa;stroke-width:1}\
footer{margin-top:2em;color:#666;font-size:12px}";

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::ops::{ListenerInfo, NodeInfo, SkyPosition};

    /// 2026-12-07T09:00:00Z.
    const NOW: u64 = 1_796_634_000_000;

    fn metrics() -> Metrics {
        Metrics::new(NodeInfo {
            role: "broker",
            ivo: Some("ivo://vtp.test/page".into()),
            listeners: vec![ListenerInfo {
                serves: "subscribers",
                address: "127.0.0.1:8099".into(),
                tls: false,
            }],
            upstreams: vec![vec!["up.example.org:8099".into()]],
        })
        .0
    }

    fn event(seq: u64, ivorn: &str, position: Option<(f64, f64)>) -> PageEvent {
        PageEvent {
            seq,
            received_unix_ms: NOW as i64 - 1000 * seq as i64,
            ivorn: ivorn.into(),
            role: "observation".into(),
            stream: "nasa.gsfc.gcn/SWIFT".into(),
            position: position.map(|(ra, dec)| SkyPosition {
                ra,
                dec,
                error: Some(0.05),
            }),
            signature: None,
        }
    }

    fn render_with(events: &Listing, marks: &Listing, per_minute: &[u64]) -> String {
        let m = metrics();
        let reading = Reading::take(&m, SUBSCRIBERS_LISTED);
        let status = Status::new(&m, &reading, &Health::Ok);
        render(&PageData {
            status: &status,
            now_unix_ms: NOW,
            per_minute,
            events,
            marks,
        })
    }

    fn count(page: &str, what: &str) -> usize {
        page.matches(what).count()
    }

    #[test]
    fn without_an_archive_the_page_says_so_and_the_map_is_empty() {
        let page = render_with(&Listing::Off, &Listing::Off, &[0; 1440]);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("<span id=\"ivo\">ivo://vtp.test/page</span>"));
        assert!(page.contains("<meta http-equiv=\"refresh\" content=\"30\">"));
        assert!(page.contains("id=\"archive-off\""));
        assert!(page.contains("<svg id=\"skymap\""));
        assert_eq!(count(&page, "class=\"event\""), 0);
        assert!(page.contains("127.0.0.1:8099"), "the listener");
        assert!(page.contains("up.example.org:8099"), "the upstream");
        assert!(page.contains("0 events in 24 hours"));
        // No external asset, no script.
        for banned in ["<script", "src=", "http://", "https://", "@import", "url("] {
            assert!(!page.contains(banned), "{banned}");
        }
    }

    #[test]
    fn the_latest_events_are_listed_and_the_positioned_ones_marked() {
        let events: Vec<PageEvent> = (1..=60)
            .rev()
            .map(|seq| {
                let pos = (seq % 3 != 0).then(|| (f64::from(seq as u32) * 6.0, 10.0));
                event(seq, &format!("ivo://nasa.gsfc.gcn/SWIFT#BAT_{seq}"), pos)
            })
            .collect();
        let positioned: Vec<PageEvent> = events
            .iter()
            .filter(|e| e.position.is_some())
            .cloned()
            .collect();
        let page = render_with(
            &Listing::Events(events),
            &Listing::Events(positioned.clone()),
            &[0; 1440],
        );
        assert_eq!(count(&page, "<tr><td>2026-"), EVENTS_ROWS);
        assert!(page.contains("<a href=\"/api/events/60\">ivo://nasa.gsfc.gcn/SWIFT#BAT_60</a>"));
        assert!(!page.contains("/api/events/10\""), "only the latest 50");
        assert_eq!(count(&page, "<circle class=\"event\""), positioned.len());
        assert_eq!(positioned.len(), 40);
        assert!(page.contains("data-ivorn=\"ivo://nasa.gsfc.gcn/SWIFT#BAT_59\""));
        assert!(page.contains("40 positioned events"));
        assert!(page.contains("RA 354.000° Dec +10.000° ± 0.050°"));
        // The newest is drawn last (on top).
        let newest = page.find("data-seq=\"59\"").unwrap();
        let older = page.find("data-seq=\"58\"").unwrap();
        assert!(older < newest);
    }

    #[test]
    fn marks_fall_where_the_projection_puts_them() {
        let e = event(7, "ivo://x/y#1", Some((180.0, 0.0)));
        let page = render_with(&Listing::Off, &Listing::Events(vec![e]), &[0; 1440]);
        assert!(
            page.contains(&format!("cx=\"{MAP_CX:.2}\" cy=\"{MAP_CY:.2}\"")),
            "RA 12h on the equator is the centre"
        );
        // Positions off the sky are not marked (and do not break the page).
        let bad = vec![
            event(1, "ivo://x/y#nan", Some((f64::NAN, 0.0))),
            event(2, "ivo://x/y#dec", Some((10.0, 95.0))),
        ];
        let page = render_with(&Listing::Off, &Listing::Events(bad), &[0; 1440]);
        assert_eq!(count(&page, "<circle class=\"event\""), 0);
    }

    #[test]
    fn peer_text_is_escaped_everywhere() {
        let evil = "ivo://evil/<script>alert(1)</script>\"'&x";
        let mut e = event(1, evil, Some((10.0, 10.0)));
        e.stream = "evil/<script>".into();
        e.role = "<b>".into();
        e.signature = Some("<img src=x onerror=alert(1)>".into());
        let page = render_with(
            &Listing::Events(vec![e.clone()]),
            &Listing::Events(vec![e]),
            &[0; 1440],
        );
        assert!(!page.to_lowercase().contains("<script"), "{page}");
        assert!(!page.contains("<img"));
        assert!(!page.contains("<b>"));
        assert!(page.contains("ivo://evil/&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;x"));
        assert!(page.contains("evil/&lt;script&gt;"));
        let page = render_with(
            &Listing::Failed("disk <gone>".into()),
            &Listing::Failed("disk <gone>".into()),
            &[0; 1440],
        );
        assert!(page.contains("cannot be read: disk &lt;gone&gt;"));
    }

    #[test]
    fn the_page_is_bounded_whatever_the_archive_returns() {
        let huge = format!("ivo://x/{}", "\"".repeat(10_000));
        let events: Vec<PageEvent> = (0..5000)
            .map(|i| event(i, &huge, Some((f64::from(i as u32) % 360.0, 0.0))))
            .collect();
        let page = render_with(
            &Listing::Events(events.clone()),
            &Listing::Events(events),
            &[u64::MAX / 2000; 1440],
        );
        assert_eq!(count(&page, "<circle class=\"event\""), MARKS_MAX);
        assert_eq!(count(&page, "<tr><td>2026-"), EVENTS_ROWS);
        assert!(page.len() < 3 << 20, "{} bytes", page.len());
        assert!(count(&page, "…") >= MARKS_MAX, "the IVORNs are cut");
    }

    #[test]
    fn the_chart_has_a_bar_per_minute_with_events() {
        let mut per_minute = vec![0; 1440];
        per_minute[0] = 2;
        per_minute[1000] = 4;
        per_minute[1439] = 1;
        let page = render_with(&Listing::Off, &Listing::Off, &per_minute);
        assert!(page.contains("7 events in 24 hours; at most 4 in a minute."));
        let d = page.split("class=\"bars\" d=\"").nth(1).unwrap();
        let d = &d[..d.find('"').unwrap()];
        assert_eq!(d, "M0.5 100V52.0M1000.5 100V4.0M1439.5 100V76.0");
    }

    #[test]
    fn page_reads_the_attached_source_and_its_failures() {
        let m = metrics();
        let p = page(&m, &Health::Ok, NOW);
        assert!(p.contains("id=\"archive-off\""));
        m.attach_recent_events(|limit: usize| {
            Ok((0..limit.min(3) as u64)
                .map(|i| event(i, &format!("ivo://a/b#{i}"), Some((1.0, 2.0))))
                .collect())
        });
        let p = page(&m, &Health::Ok, NOW);
        assert!(!p.contains("id=\"archive-off\""));
        assert_eq!(count(&p, "<circle class=\"event\""), 3);
        assert_eq!(count(&p, "<tr><td>2026-"), 3);

        let failing = metrics();
        failing.attach_recent_events(|_: usize| Err("database is locked".to_owned()));
        let p = page(&failing, &Health::Unhealthy(vec!["store".into()]), NOW);
        assert!(p.contains("The event archive cannot be read: database is locked"));
        assert!(p.contains("unhealthy: store"));
    }

    #[test]
    fn uptime_and_times_read_as_people_write_them() {
        assert_eq!(uptime(59.9), "00:00:59");
        assert_eq!(uptime(90_061.0), "1 d 01:01:01");
        assert_eq!(received(&event(0, "x", None)), "2026-12-07T09:00:00Z");
        let mut e = event(0, "x", None);
        e.received_unix_ms = -5;
        assert_eq!(received(&e), "1970-01-01T00:00:00Z");
    }
}
