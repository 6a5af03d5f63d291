//! The archive's own tests: idempotent writes, sequence numbers across reopening and
//! retention, every query shape on an index (EXPLAIN QUERY PLAN), cones at RA 0/360 and the
//! poles, the sky cells of a cone against the exact test, an older archive's R*Tree moved to
//! cells, retention by age and by size.

use super::query::{self, EventsQuery};
use super::*;
use vtp_core::summary::{SkyPosition, Summary};

fn row(i: u64, ra_dec: Option<(f64, f64)>, size: usize) -> Row {
    let ivorn = format!("ivo://test.vtp/archive#{i}");
    let mut payload = format!("<voe:VOEvent ivorn='{ivorn}'/>").into_bytes();
    payload.resize(payload.len().max(size), b' ');
    Row {
        key: EventKey::of_element(&payload),
        ivorn,
        role: if i.is_multiple_of(2) {
            "observation"
        } else {
            "test"
        },
        source: SourceInfo {
            kind: "author",
            address: Some("127.0.0.1:4000".into()),
            ..SourceInfo::default()
        },
        payload: bytes::Bytes::from(payload),
        summary: Summary {
            author_ivorn: Some("ivo://test.vtp/author".into()),
            date: None,
            position: ra_dec.map(|(ra, dec)| SkyPosition {
                ra,
                dec,
                error: Some(0.1),
                system: None,
            }),
        },
        signature: None,
        signer: None,
    }
}

fn open(dir: &Path) -> Archive {
    Archive::open(&ArchiveConfig::new(dir)).expect("open")
}

fn list(a: &Archive, q: &str) -> serde_json::Value {
    let q = EventsQuery::parse(Some(q)).expect("valid query");
    a.readers()
        .run_here(|c| query::events(c, &q))
        .expect("query")
}

fn seqs(v: &serde_json::Value) -> Vec<i64> {
    v["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect()
}

#[test]
fn writes_are_idempotent_and_seq_survives_reopen_and_retention() {
    let dir = tempdir();
    {
        let a = open(dir.path());
        a.write_now(vec![row(1, None, 0), row(2, None, 0)])
            .expect("write");
        a.write_now(vec![row(1, None, 0)]).expect("redelivery");
        assert_eq!(seqs(&list(&a, "")), [1, 2]);
        assert_eq!(a.probe().rows(), 2);
        // Another process may not open it meanwhile.
        let err = Archive::open(&ArchiveConfig::new(dir.path())).expect_err("locked");
        assert!(matches!(err, ArchiveError::Locked { .. }), "{err}");
    }
    {
        let a = open(dir.path());
        a.write_now(vec![row(3, None, 0)]).expect("write");
        assert_eq!(seqs(&list(&a, "")), [1, 2, 3]);
        // Counted at open, then by what each batch inserted (a redelivery adds nothing).
        a.write_now(vec![row(3, None, 0), row(2, None, 0)])
            .expect("redelivery");
        assert_eq!(a.probe().rows(), 3);
    }
    // Retention deletes everything; the sequence goes on.
    {
        let mut cfg = ArchiveConfig::new(dir.path());
        cfg.max_age = Duration::ZERO;
        let a = Archive::open(&cfg).expect("open");
        assert_eq!(seqs(&list(&a, "")), Vec::<i64>::new());
        let v = list(&a, "");
        assert!(v["first_seq"].is_null() && v["last_seq"].is_null());
        assert!(a.probe().deleted() >= 3);
    }
    let a = open(dir.path());
    a.write_now(vec![row(4, None, 0)]).expect("write");
    assert_eq!(seqs(&list(&a, "")), [4]);
}

fn page_size(dir: &Path) -> i64 {
    rusqlite::Connection::open(dir.join(FILE_NAME))
        .expect("database")
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .expect("page size")
}

#[test]
fn a_new_archive_has_8_kib_pages_and_an_older_one_keeps_its_own() {
    let new = tempdir();
    open(new.path())
        .write_now(vec![row(1, Some((1.0, 2.0)), 10_240)])
        .expect("write");
    assert_eq!(page_size(new.path()), PAGE_SIZE);
    // An archive made with SQLite's default 4 KiB pages (before this change) opens, takes
    // rows and answers with its pages as they are.
    let old = tempdir();
    {
        let c = rusqlite::Connection::open(old.path().join(FILE_NAME)).expect("database");
        c.pragma_update(None, "page_size", 4096).expect("page size");
        c.pragma_update(None, "journal_mode", "WAL").expect("WAL");
        c.execute_batch(SCHEMA).expect("schema");
    }
    {
        let a = open(old.path());
        a.write_now(vec![row(1, Some((1.0, 2.0)), 10_240), row(2, None, 0)])
            .expect("write");
        assert_eq!(seqs(&list(&a, "")), [1, 2]);
        assert_eq!(seqs(&list(&a, "cone=1,2,1")), [1]);
    }
    assert_eq!(page_size(old.path()), 4096);
}

#[test]
fn retention_by_size_deletes_the_oldest() {
    let dir = tempdir();
    {
        let a = open(dir.path());
        for chunk in 0..10u64 {
            a.write_now((0..50).map(|i| row(chunk * 50 + i, None, 10_000)).collect())
                .expect("write");
        }
        assert_eq!(a.probe().rows(), 500);
    }
    let mut cfg = ArchiveConfig::new(dir.path());
    cfg.max_bytes = 2_000_000;
    let a = Archive::open(&cfg).expect("open");
    let rows = a.probe().rows();
    assert!(rows > 50 && rows < 250, "{rows} rows left");
    assert!(a.probe().bytes() <= 2_000_000, "{}", a.probe().bytes());
    let v = list(&a, "limit=1000");
    let s = seqs(&v);
    // The newest are kept, contiguous up to the last.
    assert_eq!(*s.last().expect("rows"), 500);
    assert_eq!(s.len() as u64, rows);
    assert_eq!(v["first_seq"].as_i64(), Some(501 - rows as i64));
}

#[test]
fn retention_by_age_deletes_the_old_only() {
    let dir = tempdir();
    let a = open(dir.path());
    a.write_now(vec![row(1, None, 0), row(2, None, 0)])
        .expect("write");
    drop(a);
    // Age the two rows by a day, then add a fresh one.
    {
        let c = Connection::open(dir.path().join(FILE_NAME)).expect("sqlite");
        c.execute("UPDATE events SET received_ms = received_ms - 86400000", [])
            .expect("update");
    }
    let a = open(dir.path());
    a.write_now(vec![row(3, None, 0)]).expect("write");
    drop(a);
    let mut cfg = ArchiveConfig::new(dir.path());
    cfg.max_age = Duration::from_secs(3600);
    let a = Archive::open(&cfg).expect("open");
    assert_eq!(seqs(&list(&a, "")), [3]);
}

#[test]
fn filters_and_paging() {
    let dir = tempdir();
    let a = open(dir.path());
    a.write_now((1..=10).map(|i| row(i, None, 0)).collect())
        .expect("write");
    assert_eq!(seqs(&list(&a, "limit=3")), [1, 2, 3]);
    let v = list(&a, "limit=3&after=3");
    assert_eq!(seqs(&v), [4, 5, 6]);
    assert_eq!(v["next_after"].as_i64(), Some(6));
    assert_eq!(seqs(&list(&a, "role=test&limit=2")), [1, 3]);
    assert_eq!(seqs(&list(&a, "ivorn=ivo://test.vtp/archive%237")), [7]);
    assert_eq!(seqs(&list(&a, "stream=test.vtp/archive&after=8")), [9, 10]);
    assert_eq!(seqs(&list(&a, "stream=test.vtp/other")), Vec::<i64>::new());
    assert_eq!(seqs(&list(&a, "since=2000-01-01&limit=1")), [1]);
    assert_eq!(seqs(&list(&a, "until=2000-01-01")), Vec::<i64>::new());
    assert_eq!(seqs(&list(&a, "since=2999-01-01")), Vec::<i64>::new());
    let e = &list(&a, "after=4&limit=1&include=payload")["events"][0];
    assert_eq!(e["source"]["address"], "127.0.0.1:4000");
    assert_eq!(e["author_ivorn"], "ivo://test.vtp/author");
    assert!(e["position"].is_null() && e["signature"].is_null());
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(e["payload"].as_str().expect("payload"))
        .expect("base64");
    assert_eq!(bytes, row(5, None, 0).payload);
}

/// Archives an event at each of `points` (RA, Dec), numbered from 1, then event `unplaced`
/// without a position.
fn write_points(a: &Archive, points: &[(f64, f64)], unplaced: u64) {
    a.write_now(
        points
            .iter()
            .enumerate()
            .map(|(i, p)| row(i as u64 + 1, Some(*p), 0))
            .collect(),
    )
    .expect("write");
    a.write_now(vec![row(unplaced, None, 0)])
        .expect("no position");
}

#[test]
fn cones_at_the_wrap_and_the_poles() {
    let dir = tempdir();
    let a = open(dir.path());
    let pts = [
        (359.9, 0.0),  // 1
        (0.1, 0.0),    // 2
        (180.0, 0.0),  // 3
        (10.0, 89.9),  // 4
        (190.0, 89.9), // 5
        (0.0, -90.0),  // 6
        (1.5, 0.0),    // 7
    ];
    write_points(&a, &pts, 99);
    assert_eq!(seqs(&list(&a, "cone=0,0,1")), [1, 2]);
    assert_eq!(seqs(&list(&a, "cone=360,0,0.2")), [1, 2]);
    assert_eq!(seqs(&list(&a, "cone=0,0,1.6")), [1, 2, 7]);
    assert_eq!(seqs(&list(&a, "cone=100,90,0.3")), [4, 5]);
    assert_eq!(seqs(&list(&a, "cone=123,-89.5,0.6")), [6]);
    assert_eq!(seqs(&list(&a, "cone=0,0,180")), [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(seqs(&list(&a, "cone=0,0,180&role=test")), [1, 3, 5, 7]);
    let p = &list(&a, "cone=180,0,1")["events"][0]["position"];
    assert_eq!(p["ra"], 180.0);
    assert_eq!(p["error"], 0.1);
}

/// A deterministic stream of numbers in [0, 1) (splitmix64).
struct Unit(u64);

impl Unit {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as f64 / 2f64.powi(64)
    }
}

/// RA (0..360) and Dec of a unit vector, as the summary keeps a position.
fn ra_dec(v: [f64; 3]) -> (f64, f64) {
    let ra = v[1].atan2(v[0]).to_degrees().rem_euclid(360.0);
    let ra = if ra >= 360.0 { ra - 360.0 } else { ra };
    (ra, v[2].clamp(-1.0, 1.0).asin().to_degrees())
}

#[test]
fn the_cells_of_a_cone_hold_every_point_the_exact_test_accepts() {
    let mut u = Unit(17);
    let mut edge = 0;
    for i in 0..4000 {
        // Centres anywhere, at the poles and on RA 0/360 too; radii from 1e-6 to 180 degrees.
        // Some a hair from a cell's edge, where a few micro-degrees decide the cell.
        let near_edge =
            |u: &mut Unit, whole: f64| (u.next() * whole).floor() + (u.next() - 0.5) * 2e-4;
        let ra = match i % 5 {
            0 => 0.0,
            1 => 360.0,
            2 => near_edge(&mut u, 360.0).rem_euclid(360.0),
            _ => u.next() * 360.0,
        };
        let dec = match i % 7 {
            0 => 90.0,
            1 => -90.0,
            2 => 89.999,
            3 => (near_edge(&mut u, 180.0) - 90.0).clamp(-90.0, 90.0),
            _ => (2.0 * u.next() - 1.0).asin().to_degrees(),
        };
        let radius = 10f64.powf(-6.0 + u.next() * (180f64.log10() + 6.0));
        let cone = query::Cone { ra, dec, radius };
        let cells = query::cone_cells(&cone);
        assert!(!cells.is_empty(), "{cone:?}");
        for w in cells.windows(2) {
            assert!(
                w[0][1] + 1 < w[1][0],
                "{cone:?}: not sorted and disjoint: {cells:?}"
            );
        }
        assert!(
            cells
                .iter()
                .all(|[a, b]| 0 <= *a && a <= b && *b < 180 * 360),
            "{cone:?}: {cells:?}"
        );
        // Points around the cone's edge (most just inside or just outside) and inside it.
        let c = query::unit_vector(ra, dec);
        let e1 = {
            let t = if c[2].abs() < 0.9 {
                [0.0, 0.0, 1.0]
            } else {
                [1.0, 0.0, 0.0]
            };
            let d = t[0] * c[0] + t[1] * c[1] + t[2] * c[2];
            let v = [t[0] - d * c[0], t[1] - d * c[1], t[2] - d * c[2]];
            let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
            [v[0] / n, v[1] / n, v[2] / n]
        };
        let e2 = [
            c[1] * e1[2] - c[2] * e1[1],
            c[2] * e1[0] - c[0] * e1[2],
            c[0] * e1[1] - c[1] * e1[0],
        ];
        let cos = radius.to_radians().cos() - 1e-12;
        // The largest angle that test accepts: past the radius, far past it for tiny cones.
        let accepted = cos.max(-1.0).acos();
        for j in 0..60 {
            let d = match j % 3 {
                0 => radius.to_radians() * u.next(),
                1 => radius.to_radians() * (1.0 + (u.next() - 0.5) * 1e-6),
                _ => accepted * (1.0 + (u.next() - 0.5) * 1e-6),
            };
            let t = u.next() * std::f64::consts::TAU;
            let p: [f64; 3] = std::array::from_fn(|k| {
                d.cos() * c[k] + d.sin() * (t.cos() * e1[k] + t.sin() * e2[k])
            });
            // Stored as RA/Dec, tested on the unit vector of those (as the archive does).
            let (pra, pdec) = ra_dec(p);
            let v = query::unit_vector(pra, pdec);
            if v[0] * c[0] + v[1] * c[1] + v[2] * c[2] < cos {
                continue;
            }
            if d >= radius.to_radians() {
                edge += 1;
            }
            let cell = query::sky_cell(pra, pdec);
            assert!(
                cells.iter().any(|[a, b]| (*a..=*b).contains(&cell)),
                "{cone:?}: point ({pra}, {pdec}) in cell {cell} outside {cells:?}"
            );
        }
    }
    // The test reached the edge: points the exact test takes on or just past the radius.
    assert!(edge > 1000, "{edge}");
}

#[test]
fn the_sql_cell_is_the_rust_cell() {
    let c = rusqlite::Connection::open_in_memory().expect("sqlite");
    let mut st = c
        .prepare(&format!(
            "SELECT {} FROM (SELECT ?1 AS ra, ?2 AS dec)",
            query::SKY_CELL_SQL
        ))
        .expect("statement");
    let mut u = Unit(5);
    let mut points = vec![
        (0.0, -90.0),
        (0.0, 90.0),
        (359.999_999_999_999_94, 89.999_999_999_999_99),
        (0.999_999_999_999_999_9, -0.000_000_000_000_1),
        (180.0, 0.0),
        (1e-300, -89.999_999_999_999_99),
    ];
    points.extend((0..2000).map(|_| (u.next() * 360.0, u.next() * 180.0 - 90.0)));
    for (ra, dec) in points {
        let sql: i64 = st
            .query_row(rusqlite::params![ra, dec], |r| r.get(0))
            .expect("row");
        assert_eq!(sql, query::sky_cell(ra, dec), "({ra}, {dec})");
    }
}

#[test]
fn an_archive_with_the_older_r_tree_gets_its_cells_at_open() {
    let dir = tempdir();
    let pts = [
        (359.9, 0.0),
        (0.1, 0.0),
        (180.0, 0.0),
        (10.0, 89.9),
        (0.0, -90.0),
    ];
    {
        let a = open(dir.path());
        write_points(&a, &pts, 9);
    }
    // The archive as the sessions before the cells made it: no `cell`, an R*Tree.
    {
        let c = rusqlite::Connection::open(dir.path().join(FILE_NAME)).expect("sqlite");
        c.execute_batch(
            "DROP INDEX events_cell; ALTER TABLE events DROP COLUMN cell; \
             CREATE VIRTUAL TABLE events_sky USING rtree(seq, x0, x1, y0, y1, z0, z1); \
             INSERT INTO events_sky SELECT seq, cx, cx, cy, cy, cz, cz FROM events \
             WHERE cx IS NOT NULL;",
        )
        .expect("the older schema");
    }
    let a = open(dir.path());
    assert_eq!(seqs(&list(&a, "cone=0,0,1")), [1, 2]);
    assert_eq!(seqs(&list(&a, "cone=100,90,0.3")), [4]);
    assert_eq!(seqs(&list(&a, "cone=0,0,180")), [1, 2, 3, 4, 5]);
    let (sky, cells) = a
        .readers()
        .run_here(|c| {
            let sky: i64 = c.query_row(
                "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'events_sky'",
                [],
                |r| r.get(0),
            )?;
            let mut st = c.prepare("SELECT ra, dec, cell FROM events ORDER BY seq")?;
            let cells = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, Option<f64>>(0)?,
                        r.get::<_, Option<f64>>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok((sky, cells))
        })
        .expect("schema");
    assert_eq!(sky, 0, "the R*Tree is dropped");
    for (ra, dec, cell) in cells {
        assert_eq!(cell, ra.zip(dec).map(|(ra, dec)| query::sky_cell(ra, dec)));
    }
    // New events get theirs on insert.
    a.write_now(vec![row(10, Some((0.5, 0.2)), 0)])
        .expect("write");
    assert_eq!(seqs(&list(&a, "cone=0,0,1")), [1, 2, 7]);
}

#[test]
fn every_query_shape_uses_an_index() {
    let dir = tempdir();
    let a = open(dir.path());
    a.write_now((1..=50).map(|i| row(i, Some((i as f64, 0.0)), 0)).collect())
        .expect("write");
    for q in [
        "",
        "after=10",
        "since=2020-01-01T00:00:00Z",
        "until=2999-01-01T00:00:00Z&after=3",
        "since=2020-01-01&until=2999-01-01",
        "role=observation",
        "stream=test.vtp/archive",
        "ivorn=ivo://test.vtp/archive%231",
        "cone=10,0,1",
        "cone=10,0,1&since=2020-01-01&role=test&stream=x&ivorn=y&after=3",
        "stream=x&role=test&since=2020-01-01",
        "ivorn=x&stream=y&role=test",
    ] {
        let parsed = EventsQuery::parse(Some(q)).expect("valid");
        // Every response also gives the first and last seq.
        let first_last = a
            .readers()
            .run_here(|c| {
                let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {}", query::FIRST_LAST))?;
                let rows = st.query_map([], |r| r.get::<_, String>(3))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .expect("plan");
        assert!(
            !first_last.iter().any(|s| s.starts_with("SCAN events")),
            "{first_last:?}"
        );
        let plan = a
            .readers()
            .run_here(|c| {
                let (sql, args) = query::statement(c, &parsed)?.expect("a statement");
                let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                let rows = st.query_map(rusqlite::params_from_iter(args.iter()), |r| {
                    r.get::<_, String>(3)
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .expect("plan");
        assert!(!plan.is_empty(), "{q}: no plan");
        if q.starts_with("cone") {
            // The cell ranges (a JSON array), each a range search of the sky cells' index.
            assert!(plan[0].starts_with("SCAN r VIRTUAL TABLE"), "{q}: {plan:?}");
            assert!(
                plan[1].starts_with("SEARCH e USING INDEX events_cell (cell>? AND cell<?)"),
                "{q}: {plan:?}"
            );
        }
        if q.is_empty() || q.starts_with("after") || q.starts_with("since") {
            assert!(
                plan.iter().any(|s| s.contains("PRIMARY KEY")),
                "{q}: {plan:?}"
            );
        }
        for step in &plan {
            assert!(
                !(step.starts_with("SCAN e") || step.starts_with("SCAN events")),
                "{q}: table scan in {plan:?}"
            );
        }
    }
}

#[test]
fn hostile_parameters() {
    for (q, want) in [
        ("foo=1", "unknown parameter \"foo\""),
        ("limit=1&limit=2", "given twice"),
        ("limit=x", "bad limit"),
        ("after=-1", "bad after"),
        ("since=yesterday", "bad time in \"since\""),
        ("until=2026-12-07T09:00:00+02:00", "bad time in \"until\""),
        (
            "cone=1,2",
            "bad cone \"1,2\": expected RA,DEC,RADIUS in degrees",
        ),
        ("cone=1,2,0", "bad cone"),
        ("cone=1,91,1", "bad cone"),
        ("cone=NaN,0,1", "bad cone"),
        ("cone=inf,0,1", "bad cone"),
        ("role=x'%20OR%201=1--", "bad role"),
        ("include=everything", "bad include"),
        ("ivorn=%ZZ", "not valid percent-encoded"),
    ] {
        match EventsQuery::parse(Some(q)) {
            Err(QueryError::Bad(m)) => assert!(m.contains(want), "{q}: {m}"),
            other => panic!("{q}: {other:?}"),
        }
    }
    let many = vec!["limit=1"; 33].join("&");
    assert!(
        matches!(EventsQuery::parse(Some(&many)), Err(QueryError::Bad(m)) if m.contains("too many"))
    );
    let q = EventsQuery::parse(Some("limit=1000000000000")).expect("capped");
    assert_eq!(q.limit, LIMIT_MAX);
    // SQL metacharacters are values, never SQL.
    let dir = tempdir();
    let a = open(dir.path());
    a.write_now(vec![row(1, None, 0)]).expect("write");
    for q in [
        "ivorn=x'%20OR%20'1'='1",
        "stream=%22;%20DROP%20TABLE%20events;--",
        "ivorn=%00",
    ] {
        assert_eq!(seqs(&list(&a, q)), Vec::<i64>::new(), "{q}");
    }
    assert_eq!(seqs(&list(&a, "")), [1]);
}

fn tempdir() -> crate::testutil::TempDir {
    crate::testutil::TempDir::new("archive")
}
