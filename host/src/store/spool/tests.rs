//! Tests of the handler spool's files ([`Spool`]); the worker's use of it is tested in
//! `worker.rs`.

use std::fs;

use super::*;
use crate::store::dir::open_store_dir;
use crate::testutil::{TempDir, capture_logs, delivery};

fn open(dir: &Path, cap: u64) -> Spool {
    let handle = open_store_dir(dir).unwrap();
    Spool::open(&handle, dir, cap).unwrap()
}

fn event(i: u64) -> Delivery {
    delivery(
        &format!("ivo://vtp.test/spool#{i}"),
        format!(
            "<voe:VOEvent ivorn='ivo://vtp.test/spool#{i}'>{}</voe:VOEvent>",
            "x".repeat(100)
        )
        .as_bytes(),
    )
}

fn events(range: std::ops::Range<u64>) -> Vec<Delivery> {
    range.map(event).collect()
}

/// Reads every parked entry back in order, handing each.
fn drain(spool: &mut Spool) -> Vec<(u64, Delivery)> {
    let mut out = Vec::new();
    while let Some((id, loc)) = spool.next_parked() {
        out.push((id, spool.read(loc).unwrap().expect("checks out")));
        spool.set_handed(id);
    }
    out
}

fn ivorns(ds: &[(u64, Delivery)]) -> Vec<String> {
    ds.iter().map(|(_, d)| d.ivorn.to_string()).collect()
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(SEGMENT_PREFIX) && n != TMP_NAME)
        .collect();
    names.sort();
    names
}

#[test]
fn entries_written_are_parked_and_read_back_in_order_after_a_reopen() {
    let tmp = TempDir::new("spool-rt");
    let mut spool = open(tmp.path(), SPOOL_BYTES_DEFAULT);
    assert_eq!(spool.pending(), 0);
    let w = spool.write(events(0..5), &[], false);
    assert!(w.unspooled.is_empty());
    let ids: Vec<u64> = w.spooled.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    assert_eq!((spool.pending(), spool.parked()), (5, 5));
    drop(spool);

    let (mut spool, logs) = capture_logs(|| open(tmp.path(), SPOOL_BYTES_DEFAULT));
    assert!(
        logs.contains("INFO") && logs.contains("5 events accepted before the restart"),
        "{logs}"
    );
    let back = drain(&mut spool);
    assert_eq!(
        ivorns(&back),
        (0..5)
            .map(|i| format!("ivo://vtp.test/spool#{i}"))
            .collect::<Vec<_>>()
    );
    for ((id, d), i) in back.iter().zip(0..) {
        let original = event(i);
        assert_eq!(*id, i + 1);
        assert_eq!((&d.key, &d.payload), (&original.key, &original.payload));
        assert_eq!(d.source, Source::Spool);
    }
    // New ids continue after the old ones.
    let w = spool.write(events(5..6), &[], false);
    assert_eq!(w.spooled[0].0, 6);
}

#[test]
fn done_entries_are_not_replayed() {
    let tmp = TempDir::new("spool-done");
    let mut spool = open(tmp.path(), SPOOL_BYTES_DEFAULT);
    spool.write(events(0..6), &[], false);
    drain(&mut spool);
    assert_eq!((spool.pending(), spool.parked()), (6, 0));
    // Done marks are written with the next batch; unknown ids are ignored.
    spool.write(Vec::new(), &[2, 4, 99], false);
    assert_eq!(spool.pending(), 4);
    spool.write(events(6..7), &[1], false);
    assert_eq!(spool.pending(), 4);
    drop(spool);

    let mut spool = open(tmp.path(), SPOOL_BYTES_DEFAULT);
    assert_eq!(
        ivorns(&drain(&mut spool)),
        ["#2", "#4", "#5", "#6"].map(|s| format!("ivo://vtp.test/spool{s}"))
    );
}

#[test]
fn a_new_entry_is_handed_at_once_only_when_nothing_is_parked_before_it() {
    let tmp = TempDir::new("spool-hand");
    let mut spool = open(tmp.path(), SPOOL_BYTES_DEFAULT);
    let w = spool.write(events(0..2), &[], false);
    assert_eq!(spool.next_parked().map(|p| p.0), Some(1));
    spool.set_handed(1);
    // Entry 2 was not handed (the queue was full, say): it stays first in line.
    assert_eq!(spool.next_parked().map(|p| p.0), Some(2));
    spool.write(events(2..3), &[], false);
    assert_eq!(spool.next_parked().map(|p| p.0), Some(2));
    assert_eq!((spool.handed(), spool.parked()), (1, 2));
    drop(w);
    // Done with a parked entry (read back as damaged, say) also takes it out of line.
    spool.set_handed(2);
    spool.write(Vec::new(), &[1, 2], false);
    assert_eq!((spool.pending(), spool.parked()), (1, 1));
}

#[test]
fn a_damaged_record_is_skipped_with_a_warning_and_the_rest_kept() {
    let tmp = TempDir::new("spool-damage");
    let mut spool = open(tmp.path(), SPOOL_BYTES_DEFAULT);
    let w = spool.write(events(0..5), &[], false);
    let (_, loc) = {
        let mut s = open(tmp.path(), SPOOL_BYTES_DEFAULT);
        for _ in 0..2 {
            let (id, _) = s.next_parked().unwrap();
            s.set_handed(id);
        }
        s.next_parked().unwrap()
    };
    assert_eq!(w.spooled[2].0, 3);
    drop(spool);
    // Flip a byte in the payload of entry 3 (the ivorn before it still reads).
    let path = tmp.path().join(segment_name(loc.segment));
    let mut bytes = fs::read(&path).unwrap();
    let at = (loc.at + loc.record_len()) as usize - 20;
    bytes[at] ^= 0x55;
    fs::write(&path, &bytes).unwrap();

    let (mut spool, logs) = capture_logs(|| open(tmp.path(), SPOOL_BYTES_DEFAULT));
    assert!(
        logs.contains("WARN") && logs.contains("damage") && logs.contains("ivo://vtp.test/spool#2"),
        "{logs}"
    );
    assert_eq!(
        ivorns(&drain(&mut spool)),
        ["#0", "#1", "#3", "#4"].map(|s| format!("ivo://vtp.test/spool{s}"))
    );
}

#[test]
fn a_write_cut_short_at_the_tail_is_dropped_and_appends_go_on_after_the_rest() {
    let tmp = TempDir::new("spool-torn");
    let mut spool = open(tmp.path(), SPOOL_BYTES_DEFAULT);
    spool.write(events(0..3), &[], false);
    let seg = spool.segment_numbers()[0];
    let tail = spool.segments[0].tail;
    drop(spool);
    // The last record's body half written, then junk: a commit cut short by a power loss.
    let path = tmp.path().join(segment_name(seg));
    let mut bytes = fs::read(&path).unwrap();
    let last_len = event(2).payload.len();
    for b in &mut bytes[tail as usize - last_len / 2..tail as usize] {
        *b = 0;
    }
    bytes[tail as usize + 10] = 0xAB;
    fs::write(&path, &bytes).unwrap();

    let (mut spool, logs) = capture_logs(|| open(tmp.path(), SPOOL_BYTES_DEFAULT));
    assert!(
        logs.contains("WARN") && logs.contains("cut short") && !logs.contains("(damage)"),
        "{logs}"
    );
    assert_eq!(spool.pending(), 2);
    let w = spool.write(events(10..11), &[], false);
    assert_eq!(w.spooled.len(), 1);
    drop(spool);
    let mut spool = open(tmp.path(), SPOOL_BYTES_DEFAULT);
    assert_eq!(
        ivorns(&drain(&mut spool)),
        ["#0", "#1", "#10"].map(|s| format!("ivo://vtp.test/spool{s}"))
    );
}

#[test]
fn at_the_cap_entries_are_not_spooled_and_the_first_refusal_is_logged() {
    let tmp = TempDir::new("spool-cap");
    let one = format::entry_len(&event(0).ivorn, 0, event(0).payload.len()).unwrap() as u64;
    let cap = HEADER_LEN + 3 * one;
    let mut spool = open(tmp.path(), cap);
    let (w, logs) = capture_logs(|| spool.write(events(0..5), &[], false));
    assert_eq!(w.spooled.len(), 3);
    assert_eq!(
        w.unspooled
            .iter()
            .map(|d| d.ivorn.to_string())
            .collect::<Vec<_>>(),
        ["ivo://vtp.test/spool#3", "ivo://vtp.test/spool#4"]
    );
    assert_eq!(logs.matches("handler spool full").count(), 1, "{logs}");
    assert!(spool.bytes() <= cap);
    // Once entries are done and their segment deleted (here: none is, all in one segment),
    // the cap still counts the records kept; done marks make room only with a new segment.
    let (w, logs) = capture_logs(|| spool.write(events(5..6), &[], false));
    assert_eq!(w.unspooled.len(), 1);
    assert!(!logs.contains("handler spool full"), "logged once: {logs}");
}

#[test]
fn segments_are_deleted_oldest_first_once_all_their_entries_are_done() {
    let tmp = TempDir::new("spool-segments");
    let one = format::entry_len(&event(0).ivorn, 0, event(0).payload.len()).unwrap() as u64;
    let mut spool = open(tmp.path(), SPOOL_BYTES_DEFAULT).with_segment_bytes(HEADER_LEN + 2 * one);
    // Two entries a segment: 1-2, 3-4, 5-6.
    for i in 0..3 {
        spool.write(events(2 * i..2 * i + 2), &[], false);
    }
    assert_eq!(spool.segment_numbers(), [1, 2, 3]);
    assert_eq!(segment_files(tmp.path()).len(), 3);
    // Segments after the first were prepared ahead, written with zeros to their full size.
    let target = HEADER_LEN + 2 * one;
    assert_eq!(spool.segments[1].len, HEADER_LEN + target);
    assert_eq!(
        fs::metadata(tmp.path().join(segment_name(2)))
            .unwrap()
            .len(),
        HEADER_LEN + target
    );
    let opened = spool.segments.iter().filter(|s| s.file.is_some()).count();
    assert_eq!(opened, 1, "only the last segment is kept open");
    // Read back from the closed ones.
    assert_eq!(drain(&mut spool).len(), 6);
    // Done with the second segment's entries: the first still holds a pending one.
    spool.write(Vec::new(), &[3, 4, 1], false);
    assert_eq!(spool.segment_numbers(), [1, 2, 3]);
    spool.write(Vec::new(), &[2], false);
    assert_eq!(spool.segment_numbers(), [3]);
    assert_eq!(
        segment_files(tmp.path()),
        [segment_name(3)],
        "the files are gone"
    );
    // The last segment stays even when all done; a new one replaces it on the next append.
    spool.write(Vec::new(), &[5, 6], false);
    assert_eq!(spool.segment_numbers(), [3]);
    let w = spool.write(events(6..7), &[], false);
    assert_eq!(w.spooled[0].0, 7, "ids keep growing");
    assert_eq!(spool.segment_numbers(), [4]);
    drop(spool);
    let mut spool = open(tmp.path(), SPOOL_BYTES_DEFAULT);
    assert_eq!(ivorns(&drain(&mut spool)), ["ivo://vtp.test/spool#6"]);
    assert_eq!(spool.write(events(7..8), &[], false).spooled[0].0, 8);
}

#[test]
fn a_failed_write_spools_nothing_and_the_spool_goes_on() {
    let tmp = TempDir::new("spool-fail");
    let mut spool = open(tmp.path(), SPOOL_BYTES_DEFAULT);
    spool.write(events(0..1), &[], false);
    spool.fail_write = Some(Box::new(|| {
        Err(io::Error::from(io::ErrorKind::StorageFull))
    }));
    let (w, logs) = capture_logs(|| spool.write(events(1..3), &[], false));
    assert!(w.spooled.is_empty());
    assert_eq!(w.unspooled.len(), 2);
    assert!(
        logs.contains("ERROR") && logs.contains("cannot write"),
        "{logs}"
    );
    spool.fail_write = None;
    let w = spool.write(events(3..4), &[], false);
    assert_eq!(w.spooled.len(), 1);
    drop(spool);
    let mut spool = open(tmp.path(), SPOOL_BYTES_DEFAULT);
    assert_eq!(
        ivorns(&drain(&mut spool)),
        ["#0", "#3"].map(|s| format!("ivo://vtp.test/spool{s}"))
    );
}

#[test]
fn entries_whose_sync_failed_are_handed_back_and_written_over() {
    let tmp = TempDir::new("spool-sync-fail");
    let mut spool = open(tmp.path(), SPOOL_BYTES_DEFAULT);
    spool.write(events(0..1), &[], false);
    let bytes = spool.bytes();
    let staged = spool.begin(events(1..3), &[], false);
    assert!(staged.sync.is_some(), "entries need a sync");
    let (w, logs) = capture_logs(|| spool.end(staged, Err(io::Error::other("EIO"))));
    assert!(w.spooled.is_empty());
    assert_eq!(w.unspooled.len(), 2);
    assert!(logs.contains("ERROR") && logs.contains("EIO"), "{logs}");
    assert_eq!((spool.bytes(), spool.pending()), (bytes, 1));
    spool.write(events(3..4), &[], false);
    drop(spool);
    let mut spool = open(tmp.path(), SPOOL_BYTES_DEFAULT);
    assert_eq!(
        ivorns(&drain(&mut spool)),
        ["#0", "#3"].map(|s| format!("ivo://vtp.test/spool{s}"))
    );
}

#[test]
fn a_file_named_like_a_segment_that_is_not_one_is_refused() {
    let tmp = TempDir::new("spool-foreign");
    fs::write(
        tmp.path().join(segment_name(1)),
        b"SQLite format 3\0 and more bytes",
    )
    .unwrap();
    let handle = open_store_dir(tmp.path()).unwrap();
    let (path, e) = Spool::open(&handle, tmp.path(), SPOOL_BYTES_DEFAULT).unwrap_err();
    assert_eq!(path, tmp.path().join(segment_name(1)));
    assert!(
        e.to_string().contains("not a vtp handler spool segment"),
        "{e}"
    );
}

#[test]
fn symbolic_links_in_the_spools_names_are_refused_or_removed_never_followed() {
    let tmp = TempDir::new("spool-links");
    let target = tmp.path().join("target");
    fs::write(&target, b"precious").unwrap();
    let db = tmp.path().join("db");
    fs::create_dir(&db).unwrap();
    // A planted temporary name is removed (the link itself), and a segment created.
    std::os::unix::fs::symlink(&target, db.join(TMP_NAME)).unwrap();
    let mut spool = open(&db, SPOOL_BYTES_DEFAULT);
    spool.write(events(0..1), &[], false);
    drop(spool);
    assert_eq!(fs::read(&target).unwrap(), b"precious");
    // A planted segment link is refused.
    std::os::unix::fs::symlink(&target, db.join(segment_name(7))).unwrap();
    let handle = open_store_dir(&db).unwrap();
    let (_, e) = Spool::open(&handle, &db, SPOOL_BYTES_DEFAULT).unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    assert_eq!(fs::read(&target).unwrap(), b"precious");
}

#[test]
fn an_empty_segment_left_by_a_crash_is_removed() {
    let tmp = TempDir::new("spool-blank");
    let mut spool = open(tmp.path(), SPOOL_BYTES_DEFAULT);
    spool.write(events(0..2), &[], false);
    drop(spool);
    fs::write(tmp.path().join(segment_name(2)), [0u8; 100]).unwrap();
    let (mut spool, logs) = capture_logs(|| open(tmp.path(), SPOOL_BYTES_DEFAULT));
    assert!(logs.contains("empty segment is removed"), "{logs}");
    assert_eq!(spool.segment_numbers(), [1]);
    assert_eq!(drain(&mut spool).len(), 2);
    // Appends go on in the segment before it.
    assert_eq!(spool.write(events(2..3), &[], false).spooled[0].0, 3);
    drop(spool);
    assert_eq!(drain(&mut open(tmp.path(), SPOOL_BYTES_DEFAULT)).len(), 3);
}

/// A VOEvent with `role` (none: no attribute, observation by default).
fn event_with_role(i: u64, role: Option<&str>) -> Delivery {
    let attr = role.map_or(String::new(), |r| format!(" role=\"{r}\""));
    let ivorn = format!("ivo://vtp.test/spool#{i}");
    let mut d = delivery(
        &ivorn,
        format!(
            "<voe:VOEvent xmlns:voe=\"http://www.ivoa.net/xml/VOEvent/v2.0\" version=\"2.0\" \
             ivorn=\"{ivorn}\"{attr}><Who/></voe:VOEvent>"
        )
        .as_bytes(),
    );
    if role == Some("test") {
        d.role = EventRole::Test;
    }
    d
}

#[test]
fn a_version_1_spool_loads_its_roles_from_the_payloads_and_is_never_appended_to() {
    let tmp = TempDir::new("spool-v1");
    // Segment 1 as vtp wrote it before the role byte: format version 1, role bytes 0.
    let mut file = format::header(1, 1).to_vec();
    file[8..12].copy_from_slice(&1u32.to_le_bytes());
    let old = [event_with_role(0, Some("test")), event_with_role(1, None)];
    for (d, id) in old.iter().zip(1..) {
        assert!(format::encode_entry(
            id,
            &d.key,
            0,
            &[],
            &d.ivorn,
            &d.payload,
            &mut file
        ));
    }
    fs::write(tmp.path().join(segment_name(1)), &file).unwrap();

    let mut spool = open(tmp.path(), SPOOL_BYTES_DEFAULT);
    assert_eq!(spool.pending(), 2);
    // A new entry starts segment 2 (version 2) rather than joining the version 1 one.
    let w = spool.write(vec![event_with_role(2, Some("test"))], &[], false);
    assert_eq!(w.spooled[0].0, 3);
    assert_eq!(
        segment_files(tmp.path()),
        [segment_name(1), segment_name(2)]
    );
    let seg2 = fs::read(tmp.path().join(segment_name(2))).unwrap();
    assert!(matches!(
        format::check_header(&seg2[..HEADER_LEN as usize]),
        Header::Ours {
            version: format::VERSION,
            ..
        }
    ));
    drop(spool);

    let mut spool = open(tmp.path(), SPOOL_BYTES_DEFAULT);
    let back = drain(&mut spool);
    let roles: Vec<EventRole> = back.iter().map(|(_, d)| d.role).collect();
    assert_eq!(
        roles,
        [EventRole::Test, EventRole::Observation, EventRole::Test]
    );
    for ((_, d), original) in back.iter().zip(&old) {
        assert_eq!((&d.ivorn, &d.payload), (&original.ivorn, &original.payload));
    }
}

#[test]
fn signature_statuses_survive_a_restart_and_a_version_2_segment_is_read_without_them() {
    use vtp_core::signature::{Signature, SignerId, StatusKind};
    let tmp = TempDir::new("spool-v3");
    // Segment 1 as a vtp before signatures wrote it: format version 2, roles, no blocks.
    let mut file = format::header(1, 1).to_vec();
    file[8..12].copy_from_slice(&2u32.to_le_bytes());
    let d = event_with_role(0, Some("test"));
    assert!(format::encode_entry(
        1,
        &d.key,
        format::role_byte(d.role),
        &[],
        &d.ivorn,
        &d.payload,
        &mut file
    ));
    fs::write(tmp.path().join(segment_name(1)), &file).unwrap();

    let valid = Signature {
        status: StatusKind::Valid,
        signer: Some(SignerId {
            fingerprint: "0123456789ABCDEF0123456789ABCDEF01234567".into(),
            user_id: "GCN <gcn@example.org>".into(),
        }),
        detail: None,
    };
    let mut signed = event(1);
    signed.signature = Some(Arc::new(valid.clone()));
    let mut unsigned = event(2);
    unsigned.signature = Some(Arc::new(Signature::unsigned()));
    let off = event(3);
    let mut spool = open(tmp.path(), SPOOL_BYTES_DEFAULT);
    spool.write(vec![signed, unsigned, off], &[], false);
    drop(spool);

    let mut spool = open(tmp.path(), SPOOL_BYTES_DEFAULT);
    let back = drain(&mut spool);
    let statuses: Vec<Option<Signature>> = back
        .iter()
        .map(|(_, d)| d.signature.as_deref().cloned())
        .collect();
    assert_eq!(
        statuses,
        [None, Some(valid), Some(Signature::unsigned()), None],
        "the version 2 entry has none; then as written"
    );
    assert_eq!(back[0].1.role, EventRole::Test);
}
