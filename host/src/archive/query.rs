//! The archive's queries: parameters parsed and checked, then one parameterised statement per
//! shape, each driven by an index (no scan of the events table):
//!
//! - `cone`: the sky cells of `events_cell` (1° by 1° in declination and right ascension, see
//!   [`sky_cell`]): the cells that may hold a point of the cone become a few ranges of cell
//!   numbers ([`cone_cells`]: right across RA 0/360, every RA at a pole), each a range search
//!   of the index, then the exact test `dot(p, c) >= cos(radius)` on the row;
//! - `ivorn`, `stream`, `role`: their `(column, seq)` indexes;
//! - otherwise the primary key (`seq`).
//!
//! `since`/`until` become a `seq` range first (the received time never decreases with `seq`:
//! one lookup each in `events_received`), and are also checked on each row.

use std::fmt;
use std::fmt::Write as _;

use base64::Engine as _;
use rusqlite::types::Value;
use rusqlite::{Connection, params_from_iter};
use serde_json::{Value as Json, json};

use super::time;

/// Events per page when `limit` is not given.
pub const LIMIT_DEFAULT: usize = 100;
/// Most events per page (a larger `limit` is capped to it).
pub const LIMIT_MAX: usize = 1000;
/// Most query parameters.
pub(crate) const PARAMS_MAX: usize = 32;
/// Longest value of `stream` or `ivorn`, in bytes.
pub(crate) const VALUE_MAX: usize = 1024;

/// Why a query was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    /// A bad request (400), the message naming the parameter.
    Bad(String),
    /// Nothing there (404).
    NotFound(String),
    /// The database failed or the query ran out of time (500 / 503).
    Internal(String),
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bad(m) | Self::NotFound(m) | Self::Internal(m) => f.write_str(m),
        }
    }
}

impl From<rusqlite::Error> for QueryError {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::OperationInterrupted =>
            {
                Self::Internal(format!(
                    "the query took longer than {:?} and was stopped: narrow it (since/until, \
                     stream, a smaller cone)",
                    super::QUERY_TIME_MAX
                ))
            }
            e => Self::Internal(format!("archive query failed: {e}")),
        }
    }
}

/// A cone: centre and radius in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cone {
    /// Right ascension of the centre, 0..=360.
    pub ra: f64,
    /// Declination of the centre, -90..=90.
    pub dec: f64,
    /// Radius, in (0, 180].
    pub radius: f64,
}

/// `GET /api/events`'s parameters, checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventsQuery {
    /// Only events with a greater `seq`.
    pub after: Option<i64>,
    /// Only events received at or after (unix ms).
    pub since: Option<i64>,
    /// Only events received before (unix ms).
    pub until: Option<i64>,
    /// Only this role.
    pub role: Option<String>,
    /// Only this stream (IVORN authority and path).
    pub stream: Option<String>,
    /// Only this IVORN.
    pub ivorn: Option<String>,
    /// Only events with a position in this cone.
    pub cone: Option<Cone>,
    /// Events per page (capped at [`LIMIT_MAX`]).
    pub limit: usize,
    /// Add each event's bytes (base64).
    pub payload: bool,
}

/// Decodes `%XX` and `+` of a query-string component; `None` when not UTF-8 or malformed.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                out.push(v);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The query string's parameters, decoded: each at most once, at most [`PARAMS_MAX`], only
/// those in `known`.
pub(crate) fn params<'k>(
    query: Option<&str>,
    known: &[&'k str],
) -> Result<Vec<(&'k str, String)>, QueryError> {
    let mut out: Vec<(&'k str, String)> = Vec::new();
    let Some(q) = query.filter(|q| !q.is_empty()) else {
        return Ok(out);
    };
    if q.split('&').count() > PARAMS_MAX {
        return Err(QueryError::Bad(format!(
            "too many parameters (at most {PARAMS_MAX})"
        )));
    }
    for part in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let k = percent_decode(k).ok_or_else(|| {
            QueryError::Bad("a parameter name is not valid percent-encoded UTF-8".into())
        })?;
        let Some(name) = known.iter().find(|n| **n == k) else {
            return Err(QueryError::Bad(format!(
                "unknown parameter {}: known ones are {}",
                json!(k),
                known.join(", ")
            )));
        };
        if out.iter().any(|(n, _)| n == name) {
            return Err(QueryError::Bad(format!("parameter \"{name}\" given twice")));
        }
        let v = percent_decode(v).ok_or_else(|| {
            QueryError::Bad(format!("\"{name}\" is not valid percent-encoded UTF-8"))
        })?;
        out.push((name, v));
    }
    Ok(out)
}

/// The parameters of `GET /api/events`.
pub(crate) const EVENTS_PARAMS: [&str; 9] = [
    "after", "since", "until", "role", "stream", "ivorn", "cone", "limit", "include",
];

impl EventsQuery {
    /// Parses and checks `GET /api/events`'s query string.
    ///
    /// # Errors
    ///
    /// [`QueryError::Bad`] naming the parameter.
    pub fn parse(query: Option<&str>) -> Result<Self, QueryError> {
        let mut q = Self {
            limit: LIMIT_DEFAULT,
            ..Self::default()
        };
        for (name, v) in params(query, &EVENTS_PARAMS)? {
            let bad = |why: &str| QueryError::Bad(format!("bad {name} {}: {why}", json!(v)));
            match name {
                "after" => {
                    let n: u64 = v.parse().map_err(|_| bad("expected a sequence number"))?;
                    q.after = Some(i64::try_from(n).unwrap_or(i64::MAX));
                }
                "since" | "until" => {
                    let t = time::parse_ms(&v).map_err(|w| {
                        QueryError::Bad(format!("bad time in \"{name}\": {}: {w}", json!(v)))
                    })?;
                    if name == "since" {
                        q.since = Some(t);
                    } else {
                        q.until = Some(t);
                    }
                }
                "role" => match v.as_str() {
                    "observation" | "test" | "utility" | "prediction" => q.role = Some(v),
                    _ => return Err(bad("expected observation, test, utility or prediction")),
                },
                "stream" | "ivorn" => {
                    if v.is_empty() || v.len() > VALUE_MAX {
                        return Err(bad(&format!("expected 1 to {VALUE_MAX} bytes")));
                    }
                    if name == "stream" {
                        q.stream = Some(v);
                    } else {
                        q.ivorn = Some(v);
                    }
                }
                "cone" => q.cone = Some(parse_cone(&v)?),
                "limit" => {
                    let n: u64 = v
                        .parse()
                        .map_err(|_| bad("expected a whole number of events"))?;
                    q.limit = usize::try_from(n).unwrap_or(LIMIT_MAX).clamp(1, LIMIT_MAX);
                }
                "include" => match v.as_str() {
                    "payload" => q.payload = true,
                    _ => return Err(bad("the only value is payload")),
                },
                _ => return Err(bad("unknown")),
            }
        }
        Ok(q)
    }
}

fn parse_cone(v: &str) -> Result<Cone, QueryError> {
    let bad = || {
        QueryError::Bad(format!(
            "bad cone {}: expected RA,DEC,RADIUS in degrees (RA 0..360, DEC -90..90, RADIUS \
             above 0 up to 180)",
            json!(v)
        ))
    };
    let parts: Vec<&str> = v.split(',').collect();
    let [ra, dec, radius] = parts.as_slice() else {
        return Err(bad());
    };
    let num = |s: &str| -> Result<f64, QueryError> {
        let x: f64 = s.trim().parse().map_err(|_| bad())?;
        if x.is_finite() { Ok(x) } else { Err(bad()) }
    };
    let (ra, dec, radius) = (num(ra)?, num(dec)?, num(radius)?);
    let valid = (0.0..=360.0).contains(&ra)
        && (-90.0..=90.0).contains(&dec)
        && radius > 0.0
        && radius <= 180.0;
    if !valid {
        return Err(bad());
    }
    Ok(Cone { ra, dec, radius })
}

/// The unit vector of a position in degrees.
pub(crate) fn unit_vector(ra: f64, dec: f64) -> [f64; 3] {
    let (ra, dec) = (ra.to_radians(), dec.to_radians());
    [dec.cos() * ra.cos(), dec.cos() * ra.sin(), dec.sin()]
}

/// Declination bands of the sky index, 1° each from -90.
const BANDS: i64 = 180;
/// Right-ascension bins of a band, 1° each from 0.
const BINS: i64 = 360;

/// The sky index's cell of a position in degrees (RA 0..360, Dec -90..=90): `band * 360 +
/// bin`, the band `trunc(dec + 90)` and the bin `trunc(ra)`, each clamped to its range.
/// [`SKY_CELL_SQL`] is the same in SQL (an archive made before the index gets its cells from
/// it), with SQLite's `CAST` truncating as Rust's `as` does.
pub(crate) fn sky_cell(ra: f64, dec: f64) -> i64 {
    let band = ((dec + 90.0) as i64).clamp(0, BANDS - 1);
    let bin = (ra as i64).clamp(0, BINS - 1);
    band * BINS + bin
}

/// [`sky_cell`] of the row's `ra` and `dec` columns, in SQL.
pub(crate) const SKY_CELL_SQL: &str = "MIN(MAX(CAST(dec + 90 AS INTEGER), 0), 179) * 360 + \
     MIN(MAX(CAST(ra AS INTEGER), 0), 359)";

/// The tolerance of the exact test on `cos(radius)` (a point on the cone's edge is in it).
const COS_SLACK: f64 = 1e-12;

/// The ranges of [`sky_cell`] numbers that hold every position the cone's exact test accepts:
/// sorted, disjoint, inclusive. The bands the cone's declinations cross, each with the RA
/// bins within the cone's largest RA half-width `asin(sin r / cos dec)` of its centre (every
/// bin when the cone holds a pole), split at RA 0/360; adjacent ranges merged (a whole band
/// follows on from the next).
pub(crate) fn cone_cells(c: &Cone) -> Vec<[i64; 2]> {
    // The largest angle the exact test accepts (far more than the radius for a cone of a
    // few micro-degrees: the slack is on the cosine), and more than the test's rounding
    // (a dot product within 3e-16 is an angle within 2e-10 rad there).
    let r = (c.radius.to_radians().cos() - COS_SLACK)
        .max(-1.0)
        .acos()
        .to_degrees()
        + 1e-7;
    let (low, high) = (c.dec - r, c.dec + r);
    let band = |d: f64| ((d + 90.0).floor() as i64).clamp(0, BANDS - 1);
    let half = if low <= -90.0 || high >= 90.0 {
        180.0
    } else {
        let s = r.to_radians().sin() / c.dec.to_radians().cos();
        if s >= 1.0 {
            180.0
        } else {
            s.asin().to_degrees() + 1e-7
        }
    };
    let mut bins: Vec<[i64; 2]> = Vec::with_capacity(2);
    if half >= 180.0 {
        bins.push([0, BINS - 1]);
    } else {
        let ra = c.ra.rem_euclid(360.0);
        let (lo, hi) = (ra - half, ra + half);
        let bin = |a: f64| (a.floor() as i64).clamp(0, BINS - 1);
        if lo < 0.0 {
            bins.push([0, bin(hi)]);
            bins.push([bin(lo + 360.0), BINS - 1]);
        } else if hi >= 360.0 {
            bins.push([0, bin(hi - 360.0)]);
            bins.push([bin(lo), BINS - 1]);
        } else {
            bins.push([bin(lo), bin(hi)]);
        }
    }
    let mut out: Vec<[i64; 2]> = Vec::new();
    for b in band(low)..=band(high) {
        for [x, y] in &bins {
            let (x, y) = (b * BINS + x, b * BINS + y);
            match out.last_mut() {
                Some(last) if x <= last[1] + 1 => last[1] = last[1].max(y),
                _ => out.push([x, y]),
            }
        }
    }
    out
}

/// The columns every listing reads.
const COLUMNS: &str = "e.seq, e.ivorn, e.role, e.received_ms, e.stream, e.source_kind, \
     e.source_address, e.source_identity, e.source_upstream, e.source_name, e.source_topic, \
     e.source_partition, e.source_offset, e.signature, e.signer, e.author_ivorn, e.date, e.ra, \
     e.dec, e.error, e.bytes, e.key";

/// The statement and its parameters for `q` (exposed for the plan test).
pub(crate) fn statement(
    conn: &Connection,
    q: &EventsQuery,
) -> Result<Option<(String, Vec<Value>)>, QueryError> {
    let mut lo = q.after.unwrap_or(0);
    let mut hi = i64::MAX;
    if let Some(since) = q.since {
        let first: Option<i64> = conn
            .query_row(
                "SELECT seq FROM events INDEXED BY events_received WHERE received_ms >= ?1 \
             ORDER BY received_ms LIMIT 1",
                [since],
                |r| r.get(0),
            )
            .map(Some)
            .or_else(none_if_empty)?;
        match first {
            Some(s) => lo = lo.max(s - 1),
            None => return Ok(None),
        }
    }
    if let Some(until) = q.until {
        let last: Option<i64> = conn
            .query_row(
                "SELECT seq FROM events INDEXED BY events_received WHERE received_ms < ?1 \
             ORDER BY received_ms DESC LIMIT 1",
                [until],
                |r| r.get(0),
            )
            .map(Some)
            .or_else(none_if_empty)?;
        match last {
            Some(s) => hi = s,
            None => return Ok(None),
        }
    }
    let mut args: Vec<Value> = Vec::new();
    let mut sql = String::new();
    let arg = |v: Value, args: &mut Vec<Value>| -> String {
        args.push(v);
        format!("?{}", args.len())
    };
    match (&q.cone, &q.ivorn, &q.stream, &q.role) {
        (Some(c), ..) => {
            let v = unit_vector(c.ra, c.dec);
            let ranges = cone_cells(c)
                .iter()
                .map(|[a, b]| format!("[{a},{b}]"))
                .collect::<Vec<_>>()
                .join(",");
            let cells = arg(Value::Text(format!("[{ranges}]")), &mut args);
            // One range search of the cell index per element of the JSON array (the statement
            // is the same for every cone).
            let _ = write!(
                sql,
                "SELECT {COLUMNS} FROM json_each({cells}) AS r CROSS JOIN events AS e \
                 INDEXED BY events_cell ON e.cell BETWEEN r.value ->> 0 AND r.value ->> 1 WHERE "
            );
            let (x, y, z) = (
                arg(Value::Real(v[0]), &mut args),
                arg(Value::Real(v[1]), &mut args),
                arg(Value::Real(v[2]), &mut args),
            );
            let cos = arg(
                Value::Real(c.radius.to_radians().cos() - COS_SLACK),
                &mut args,
            );
            let _ = write!(sql, "e.cx * {x} + e.cy * {y} + e.cz * {z} >= {cos}");
        }
        (None, Some(ivorn), ..) => {
            let p = arg(Value::Text(ivorn.clone()), &mut args);
            let _ = write!(
                sql,
                "SELECT {COLUMNS} FROM events AS e INDEXED BY events_ivorn WHERE e.ivorn = {p}"
            );
        }
        (None, None, Some(stream), _) => {
            let p = arg(Value::Text(stream.clone()), &mut args);
            let _ = write!(
                sql,
                "SELECT {COLUMNS} FROM events AS e INDEXED BY events_stream WHERE e.stream = {p}"
            );
        }
        (None, None, None, Some(role)) => {
            let p = arg(Value::Text(role.clone()), &mut args);
            let _ = write!(
                sql,
                "SELECT {COLUMNS} FROM events AS e INDEXED BY events_role WHERE e.role = {p}"
            );
        }
        (None, None, None, None) => {
            let _ = write!(sql, "SELECT {COLUMNS} FROM events AS e WHERE 1");
        }
    }
    // Residual filters (cheap: on rows the index already chose).
    if q.cone.is_some()
        && let Some(ivorn) = &q.ivorn
    {
        let p = arg(Value::Text(ivorn.clone()), &mut args);
        let _ = write!(sql, " AND e.ivorn = {p}");
    }
    if (q.cone.is_some() || q.ivorn.is_some())
        && let Some(stream) = &q.stream
    {
        let p = arg(Value::Text(stream.clone()), &mut args);
        let _ = write!(sql, " AND e.stream = {p}");
    }
    if (q.cone.is_some() || q.ivorn.is_some() || q.stream.is_some())
        && let Some(role) = &q.role
    {
        let p = arg(Value::Text(role.clone()), &mut args);
        let _ = write!(sql, " AND e.role = {p}");
    }
    if let Some(since) = q.since {
        let p = arg(Value::Integer(since), &mut args);
        let _ = write!(sql, " AND e.received_ms >= {p}");
    }
    if let Some(until) = q.until {
        let p = arg(Value::Integer(until), &mut args);
        let _ = write!(sql, " AND e.received_ms < {p}");
    }
    let lo_p = arg(Value::Integer(lo), &mut args);
    let hi_p = arg(Value::Integer(hi), &mut args);
    let limit = arg(Value::Integer(q.limit as i64), &mut args);
    let _ = write!(
        sql,
        " AND e.seq > {lo_p} AND e.seq <= {hi_p} ORDER BY e.seq LIMIT {limit}"
    );
    Ok(Some((sql, args)))
}

fn none_if_empty(e: rusqlite::Error) -> rusqlite::Result<Option<i64>> {
    match e {
        rusqlite::Error::QueryReturnedNoRows => Ok(None),
        e => Err(e),
    }
}

/// The oldest and newest `seq`: one `MIN` and one `MAX` each (both in one `SELECT` would scan
/// the table).
pub(crate) const FIRST_LAST: &str =
    "SELECT (SELECT MIN(seq) FROM events), (SELECT MAX(seq) FROM events)";

/// Runs `GET /api/events`: the response's JSON.
pub(crate) fn events(conn: &Connection, q: &EventsQuery) -> Result<Json, QueryError> {
    let mut out = Vec::new();
    if let Some((sql, args)) = statement(conn, q)? {
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params_from_iter(args.iter()))?;
        while let Some(r) = rows.next()? {
            out.push(row_json(r)?);
        }
    }
    if q.payload {
        let mut stmt = conn.prepare_cached("SELECT payload FROM events WHERE seq = ?1")?;
        for e in &mut out {
            let seq = e["seq"].as_i64().unwrap_or(0);
            let bytes: Vec<u8> = stmt.query_row([seq], |r| r.get(0))?;
            e["payload"] = Json::String(base64::engine::general_purpose::STANDARD.encode(bytes));
        }
    }
    let (first, last): (Option<i64>, Option<i64>) =
        conn.query_row(FIRST_LAST, [], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let next_after = out.last().map(|e| e["seq"].clone()).unwrap_or(Json::Null);
    Ok(json!({
        "events": out,
        "next_after": next_after,
        "first_seq": first,
        "last_seq": last,
    }))
}

fn row_json(r: &rusqlite::Row<'_>) -> rusqlite::Result<Json> {
    let seq: i64 = r.get(0)?;
    let kind: String = r.get(5)?;
    let mut source = json!({ "kind": kind });
    match kind.as_str() {
        "author" => {
            source["address"] = json!(r.get::<_, Option<String>>(6)?);
            source["identity"] = json!(r.get::<_, Option<String>>(7)?);
        }
        "upstream" => source["upstream"] = json!(r.get::<_, Option<String>>(8)?),
        "external" => {
            source["name"] = json!(r.get::<_, Option<String>>(9)?);
            source["topic"] = json!(r.get::<_, Option<String>>(10)?);
            source["partition"] = json!(r.get::<_, Option<i64>>(11)?);
            source["offset"] = json!(r.get::<_, Option<i64>>(12)?);
        }
        _ => {}
    }
    let ra: Option<f64> = r.get(17)?;
    let dec: Option<f64> = r.get(18)?;
    let position = match (ra, dec) {
        (Some(ra), Some(dec)) => {
            json!({"ra": ra, "dec": dec, "error": r.get::<_, Option<f64>>(19)?})
        }
        _ => Json::Null,
    };
    let key: Vec<u8> = r.get(21)?;
    let mut hex = String::with_capacity(64);
    for b in &key {
        let _ = write!(hex, "{b:02x}");
    }
    Ok(json!({
        "seq": seq,
        "ivorn": r.get::<_, String>(1)?,
        "role": r.get::<_, String>(2)?,
        "received": time::format_ms(r.get(3)?),
        "stream": r.get::<_, String>(4)?,
        "source": source,
        "signature": r.get::<_, Option<String>>(13)?,
        "signer": r.get::<_, Option<String>>(14)?,
        "author_ivorn": r.get::<_, Option<String>>(15)?,
        "date": r.get::<_, Option<String>>(16)?,
        "position": position,
        "bytes": r.get::<_, i64>(20)?,
        "sha256": hex,
        "xml": format!("/api/events/{seq}"),
    }))
}

/// The exact bytes and IVORN of one event, by `seq` or by IVORN (the newest with it).
pub(crate) fn one(
    conn: &Connection,
    seq: Option<i64>,
    ivorn: Option<&str>,
) -> Result<(i64, String, Vec<u8>), QueryError> {
    let found = match (seq, ivorn) {
        (Some(seq), _) => conn.query_row(
            "SELECT seq, ivorn, payload FROM events WHERE seq = ?1",
            [seq],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        ),
        (None, Some(ivorn)) => conn.query_row(
            "SELECT seq, ivorn, payload FROM events INDEXED BY events_ivorn WHERE ivorn = ?1 \
             ORDER BY seq DESC LIMIT 1",
            [ivorn],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        ),
        (None, None) => return Err(QueryError::Bad("missing parameter \"ivorn\"".into())),
    };
    match found {
        Ok(x) => Ok(x),
        Err(rusqlite::Error::QueryReturnedNoRows) => Err(QueryError::NotFound(match seq {
            Some(s) => format!("no event {s} in the archive (past retention, or never archived)"),
            None => "no event with this ivorn in the archive".into(),
        })),
        Err(e) => Err(e.into()),
    }
}

/// How far back the sky map looks for positioned events: the newest this many events (a
/// bounded walk down the primary key, whatever the share of events with a position).
pub(crate) const RECENT_WINDOW: i64 = 10_000;

/// One of the latest events, for the status page (the operator endpoint turns it into its
/// `PageEvent`).
#[derive(Debug, Clone, PartialEq)]
pub struct Recent {
    /// The sequence number.
    pub seq: u64,
    /// When it was received, in unix milliseconds.
    pub received_ms: i64,
    /// Its IVORN.
    pub ivorn: String,
    /// Its role.
    pub role: String,
    /// Its stream.
    pub stream: String,
    /// Its position (RA, Dec, error radius in degrees), if it has one.
    pub position: Option<(f64, f64, Option<f64>)>,
    /// Its signature status, with the signer's fingerprint when there is one.
    pub signature: Option<String>,
}

/// The latest `limit` events, newest first, for the status page; with `positioned`, those with
/// a position among the newest [`RECENT_WINDOW`].
pub(crate) fn recent(
    conn: &Connection,
    limit: usize,
    positioned: bool,
) -> Result<Vec<Recent>, QueryError> {
    let limit = i64::try_from(limit.min(LIMIT_MAX)).unwrap_or(0);
    let sql = if positioned {
        "SELECT seq, received_ms, ivorn, role, stream, ra, dec, error, signature, signer \
         FROM events WHERE seq > (SELECT COALESCE(MAX(seq), 0) FROM events) - ?2 \
         AND ra IS NOT NULL ORDER BY seq DESC LIMIT ?1"
    } else {
        "SELECT seq, received_ms, ivorn, role, stream, ra, dec, error, signature, signer \
         FROM events WHERE ?2 = ?2 ORDER BY seq DESC LIMIT ?1"
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(rusqlite::params![limit, RECENT_WINDOW], |r| {
        let position = match (r.get::<_, Option<f64>>(5)?, r.get::<_, Option<f64>>(6)?) {
            (Some(ra), Some(dec)) => Some((ra, dec, r.get(7)?)),
            _ => None,
        };
        let signature = match (
            r.get::<_, Option<String>>(8)?,
            r.get::<_, Option<String>>(9)?,
        ) {
            (Some(status), Some(signer)) => Some(format!("{status} ({signer})")),
            (status, _) => status,
        };
        Ok(Recent {
            seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
            received_ms: r.get(1)?,
            ivorn: r.get(2)?,
            role: r.get(3)?,
            stream: r.get(4)?,
            position,
            signature,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
