//! Tests of the seen-index file ([`SeenStore`]); the worker's are in `worker.rs`.

use super::*;
use crate::testutil::TempDir;

pub(super) fn record(i: u64) -> SeenRecord {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&i.to_be_bytes());
    key[31] = 0xEE;
    SeenRecord {
        key: EventKey(key),
        unix_secs: 1_700_000_000 + i,
    }
}

pub(super) fn sorted(mut records: Vec<SeenRecord>) -> Vec<SeenRecord> {
    records.sort_by_key(|r| r.key);
    records
}

pub(super) fn persist_all(range: std::ops::Range<u64>) -> Vec<StoreOp> {
    range.map(|i| StoreOp::Persist(record(i))).collect()
}

#[test]
fn open_persist_load_round_trip() {
    let tmp = TempDir::new("store-rt");
    let dir = tmp.path().join("a/b");
    let mut store = SeenStore::open(&dir).unwrap();
    assert_eq!(store.path(), dir.join(STORE_FILE_NAME));
    assert!(store.load().unwrap().is_empty());
    store.apply(&persist_all(0..3)).unwrap();
    assert_eq!(
        sorted(store.load().unwrap()),
        vec![record(0), record(1), record(2)]
    );
}

#[test]
fn reopen_after_drop_keeps_records() {
    let tmp = TempDir::new("store-reopen");
    let mut store = SeenStore::open(tmp.path()).unwrap();
    store.apply(&persist_all(0..10)).unwrap();
    drop(store);
    let store = SeenStore::open(tmp.path()).unwrap();
    assert_eq!(
        sorted(store.load().unwrap()),
        (0..10).map(record).collect::<Vec<_>>()
    );
}

#[test]
fn expire_removes_records_at_or_before_the_cut_off() {
    let tmp = TempDir::new("store-expire");
    let mut store = SeenStore::open(tmp.path()).unwrap();
    store.apply(&persist_all(0..10)).unwrap();
    let cut = record(4).unix_secs;
    store
        .apply(&[StoreOp::Expire {
            before_unix_secs: cut,
        }])
        .unwrap();
    assert_eq!(
        sorted(store.load().unwrap()),
        (5..10).map(record).collect::<Vec<_>>()
    );
}

#[test]
fn forget_removes_one_record() {
    let tmp = TempDir::new("store-forget");
    let mut store = SeenStore::open(tmp.path()).unwrap();
    store.apply(&persist_all(0..3)).unwrap();
    store.apply(&[StoreOp::Forget(record(1).key)]).unwrap();
    // Forgetting an absent key is harmless.
    store.apply(&[StoreOp::Forget(record(99).key)]).unwrap();
    assert_eq!(sorted(store.load().unwrap()), vec![record(0), record(2)]);
}

#[test]
fn a_batch_is_applied_in_order() {
    let tmp = TempDir::new("store-order");
    let mut store = SeenStore::open(tmp.path()).unwrap();
    store
        .apply(&[
            StoreOp::Persist(record(1)),
            StoreOp::Forget(record(1).key),
            StoreOp::Forget(record(2).key),
            StoreOp::Persist(record(2)),
        ])
        .unwrap();
    assert_eq!(store.load().unwrap(), vec![record(2)]);
}

#[test]
fn open_errors_name_the_path() {
    let tmp = TempDir::new("store-err");
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = SeenStore::open(&file.join("sub")).unwrap_err();
    assert!(matches!(err, StoreError::CreateDir { .. }), "{err:?}");
    assert!(err.to_string().contains("not-a-dir"), "{err}");

    // The file is locked while open: a second open fails and names the file.
    let _first = SeenStore::open(tmp.path()).unwrap();
    let err = SeenStore::open(tmp.path()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    assert!(err.to_string().contains(STORE_FILE_NAME), "{err}");
    assert!(err.to_string().contains("another vtp process"), "{err}");
}

#[test]
fn an_open_that_fails_for_another_reason_shows_the_os_error_not_a_lock() {
    let tmp = TempDir::new("store-open-os");
    // A directory where the log should be: opening it for writing fails with EISDIR.
    std::fs::create_dir(tmp.path().join(STORE_FILE_NAME)).unwrap();
    let err = SeenStore::open(tmp.path()).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("Is a directory"), "{text}");
    assert!(!text.contains("another vtp process"), "{text}");
}

#[test]
fn a_commit_succeeds_as_soon_as_its_own_bytes_fit_on_the_disk() {
    let tmp = TempDir::new("store-nospace");
    let mut store = SeenStore::open(tmp.path()).unwrap();
    // A disk with room for 100 more records past the preallocated file, not for 1 MiB.
    let cap = store.len + 100 * RECORD_LEN as u64;
    store.fail_write = Some(Box::new(move |_, to| {
        if to > cap {
            Err(io::Error::from(io::ErrorKind::StorageFull))
        } else {
            Ok(())
        }
    }));
    let fill = (store.len - store.tail) / RECORD_LEN as u64 + 5;
    store.apply(&persist_all(0..fill)).unwrap();
    assert_eq!(store.len, store.tail, "grown by the batch alone");
    // Past the room left, a commit fails; once space is freed it goes through.
    let err = store.apply(&persist_all(fill..fill + 200)).unwrap_err();
    assert!(matches!(err, StoreError::Write { .. }), "{err:?}");
    store.fail_write = None;
    store.apply(&persist_all(fill..fill + 200)).unwrap();
    assert!(
        store.len > store.tail + GROW_BYTES / 2,
        "preallocating again"
    );
    drop(store);
    let store = SeenStore::open(tmp.path()).unwrap();
    assert_eq!(store.load().unwrap().len() as u64, fill + 200);
}

#[test]
fn open_rejects_a_file_that_is_not_a_database() {
    let tmp = TempDir::new("store-garbage");
    std::fs::write(tmp.path().join(STORE_FILE_NAME), vec![0x5a; 8192]).unwrap();
    let err = SeenStore::open(tmp.path()).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
}

/// The file's bytes, and a way to write some back.
fn file_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join(STORE_FILE_NAME)).unwrap()
}

#[test]
fn a_batch_cut_short_by_a_crash_is_discarded_and_overwritten() {
    let tmp = TempDir::new("store-torn");
    let mut store = SeenStore::open(tmp.path()).unwrap();
    store.apply(&persist_all(0..5)).unwrap();
    let tail = store.tail;
    drop(store);
    // A power loss during the next commit: its second and last records made it to the disk,
    // its first only in part.
    let mut torn = Vec::new();
    for op in persist_all(5..8) {
        log::encode(&op, &mut torn);
    }
    log::mark_batch_end(&mut torn);
    torn[3] ^= 0x40;
    let mut bytes = file_bytes(tmp.path());
    let at = usize::try_from(tail).unwrap();
    bytes[at..at + torn.len()].copy_from_slice(&torn);
    std::fs::write(tmp.path().join(STORE_FILE_NAME), &bytes).unwrap();

    let mut store = SeenStore::open(tmp.path()).unwrap();
    assert_eq!(store.tail, tail, "the tail is the start of the torn batch");
    assert_eq!(
        sorted(store.load().unwrap()),
        (0..5).map(record).collect::<Vec<_>>()
    );
    // The next commit goes where the torn one was; the records after it never come back.
    store.apply(&persist_all(100..101)).unwrap();
    drop(store);
    let store = SeenStore::open(tmp.path()).unwrap();
    let want: Vec<_> = (0..5).chain(100..101).map(record).collect();
    assert_eq!(sorted(store.load().unwrap()), want);
}

#[test]
fn a_file_whose_creation_was_cut_short_opens_empty() {
    let tmp = TempDir::new("store-blank");
    std::fs::write(tmp.path().join(STORE_FILE_NAME), [0u8; 10]).unwrap();
    let mut store = SeenStore::open(tmp.path()).unwrap();
    assert!(store.load().unwrap().is_empty());
    store.apply(&persist_all(0..2)).unwrap();
    drop(store);
    let store = SeenStore::open(tmp.path()).unwrap();
    assert_eq!(store.load().unwrap().len(), 2);
}

#[test]
fn a_file_of_another_kind_is_refused_and_left_alone() {
    let tmp = TempDir::new("store-foreign");
    let path = tmp.path().join(STORE_FILE_NAME);
    let mut other = log::header().to_vec();
    other[8] = 9; // a future format version
    std::fs::write(&path, &other).unwrap();
    let err = SeenStore::open(tmp.path()).unwrap_err();
    let chain = ErrorChain(&err).to_string();
    assert!(chain.contains("another format version"), "{chain}");
    assert_eq!(std::fs::read(&path).unwrap(), other);
}

#[test]
fn dead_records_are_compacted_away_while_running_and_at_open() {
    let tmp = TempDir::new("store-compact");
    let mut store = SeenStore::open(tmp.path()).unwrap();
    let live = 1_000u64;
    let churn = COMPACT_MIN_RECORDS / 2 + 1;
    // `churn` events seen and forgotten (evicted), `live` kept.
    for start in (0..churn).step_by(4096) {
        let end = (start + 4096).min(churn);
        store.apply(&persist_all(start..end)).unwrap();
        let forget: Vec<_> = (start..end)
            .map(|i| StoreOp::Forget(record(i).key))
            .collect();
        store.apply(&forget).unwrap();
    }
    store.apply(&persist_all(churn..churn + live)).unwrap();
    assert!(
        store.records < churn,
        "compacted while running: {} records",
        store.records
    );
    let want: Vec<_> = (churn..churn + live).map(record).collect();
    assert_eq!(sorted(store.load().unwrap()), want);
    let len = file_bytes(tmp.path()).len() as u64;
    assert!(len <= log::HEADER_LEN + 2 * GROW_BYTES, "{len} bytes");
    drop(store);
    assert!(!tmp.path().join(COMPACT_FILE_NAME).exists());

    // At open: a file that is mostly dead records (expired here) is rewritten.
    let mut store = SeenStore::open(tmp.path()).unwrap();
    store.apply(&persist_all(0..COMPACT_MIN_RECORDS)).unwrap();
    let cut = record(COMPACT_MIN_RECORDS).unix_secs;
    store
        .apply(&[StoreOp::Expire {
            before_unix_secs: cut,
        }])
        .unwrap();
    store.apply(&persist_all(1 << 20..(1 << 20) + 10)).unwrap();
    let before = store.records;
    assert!(before > COMPACT_MIN_RECORDS, "{before}");
    drop(store);
    let store = SeenStore::open(tmp.path()).unwrap();
    assert_eq!(store.records, 10, "rewritten at open");
    let want: Vec<_> = (1 << 20..(1 << 20) + 10).map(record).collect();
    assert_eq!(sorted(store.load().unwrap()), want);
}

#[test]
fn a_compaction_left_behind_is_removed_and_the_redb_file_of_old_versions_ignored() {
    let tmp = TempDir::new("store-leftovers");
    std::fs::write(tmp.path().join(COMPACT_FILE_NAME), b"half").unwrap();
    std::fs::write(tmp.path().join(LEGACY_FILE_NAME), b"redb").unwrap();
    let store = SeenStore::open(tmp.path()).unwrap();
    assert!(!tmp.path().join(COMPACT_FILE_NAME).exists());
    assert!(store.load().unwrap().is_empty());
    assert_eq!(
        std::fs::read(tmp.path().join(LEGACY_FILE_NAME)).unwrap(),
        b"redb"
    );
}

/// One operation of the property test, on a small key space so that keys recur.
fn op_strategy() -> impl proptest::strategy::Strategy<Value = StoreOp> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (0u64..12, 0u64..50).prop_map(|(k, t)| StoreOp::Persist(SeenRecord {
            key: record(k).key,
            unix_secs: t,
        })),
        2 => (0u64..12).prop_map(|k| StoreOp::Forget(record(k).key)),
        1 => (0u64..50).prop_map(|t| StoreOp::Expire { before_unix_secs: t }),
    ]
}

/// What the store should hold after `ops`: a reference written apart from `log::Replay`,
/// so that a mistake there cannot hide in the expected values too.
fn model(ops: &[StoreOp]) -> Vec<SeenRecord> {
    let mut table = std::collections::BTreeMap::new();
    for op in ops {
        match *op {
            StoreOp::Persist(r) => {
                table.insert(r.key, r.unix_secs);
            }
            StoreOp::Forget(key) => {
                table.remove(&key);
            }
            StoreOp::Expire { before_unix_secs } => {
                table.retain(|_, secs| *secs > before_unix_secs);
            }
            _ => unreachable!("the strategy makes no other operation"),
        }
    }
    table
        .into_iter()
        .map(|(key, unix_secs)| SeenRecord { key, unix_secs })
        .collect()
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(96))]

    /// Any sequence of batches, with reopens and compactions (the threshold made small)
    /// between them, loads as the operations add up to; a last batch torn at any byte loads
    /// as the batches before it (the last one is dropped whole unless the tear left it intact),
    /// and the torn part never comes back after more commits.
    #[test]
    fn the_log_loads_what_the_operations_add_up_to_even_after_a_torn_batch(
        batches in proptest::collection::vec(
            (proptest::collection::vec(op_strategy(), 1..16), proptest::bool::ANY),
            1..10,
        ),
        compact_min in 1u64..24,
        tear in 0.0f64..1.0,
        zero_the_rest in proptest::bool::ANY,
    ) {
        let tmp = TempDir::new("store-prop");
        let mut store = SeenStore::open_with(tmp.path(), compact_min).unwrap();
        let mut done: Vec<StoreOp> = Vec::new();
        let path = tmp.path().join(STORE_FILE_NAME);
        let inode = || std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());
        let (mut before_last, mut last_start, mut last_end, mut compacted) = (0, 0, 0, true);
        for (batch, reopen) in &batches {
            before_last = done.len();
            last_start = store.tail;
            let file = inode();
            store.apply(batch).unwrap();
            last_end = store.tail;
            done.extend_from_slice(batch);
            proptest::prop_assert_eq!(store.load().unwrap(), model(&done));
            if *reopen {
                drop(store);
                store = SeenStore::open_with(tmp.path(), compact_min).unwrap();
                proptest::prop_assert_eq!(store.load().unwrap(), model(&done));
            }
            // A compaction (in the commit or at the reopen) writes a new file.
            compacted = inode() != file;
        }
        drop(store);
        if compacted {
            // The last batch's records are not where it wrote them: nothing to tear.
            return Ok(());
        }
        // Tear the last batch at one byte: from there on zeros, or that byte damaged.
        let span = last_end - last_start;
        let cut = last_start + ((span as f64 * tear) as u64).min(span - 1);
        let mut bytes = std::fs::read(&path).unwrap();
        let (c, e) = (usize::try_from(cut).unwrap(), usize::try_from(last_end).unwrap());
        if zero_the_rest {
            bytes[c..e].fill(0);
        } else {
            bytes[c] ^= 0x5a;
        }
        std::fs::write(&path, &bytes).unwrap();
        // The records of the last batch still intact before the tear (zeroing can leave a
        // record whole when its own bytes after the cut were zeros already).
        let last = &done[before_last..];
        let intact = bytes[usize::try_from(last_start).unwrap()..e]
            .chunks_exact(RECORD_LEN)
            .zip(last)
            .take_while(|(rec, op)| log::decode((*rec).try_into().unwrap()).map(|d| d.0) == Some(log::Entry::Op(**op)))
            .count();
        proptest::prop_assert!(intact <= usize::try_from((cut - last_start) / RECORD_LEN as u64).unwrap() + 1);
        // A last batch with any record damaged is dropped whole: it may be a torn commit.
        let kept = if intact == last.len() { done.len() } else { before_last };
        let mut store = SeenStore::open_with(tmp.path(), compact_min).unwrap();
        proptest::prop_assert_eq!(store.load().unwrap(), model(&done[..kept]));
        // More commits go where the tear was; nothing of the torn part comes back.
        let more = [StoreOp::Persist(record(99))];
        store.apply(&more).unwrap();
        drop(store);
        let store = SeenStore::open_with(tmp.path(), compact_min).unwrap();
        let mut want = done[..kept].to_vec();
        want.extend_from_slice(&more);
        proptest::prop_assert_eq!(store.load().unwrap(), model(&want));
    }
}

/// Writes `n` records, one commit each (as the broker does at a low rate), and closes the store.
fn one_per_commit(dir: &Path, n: u64) {
    let mut store = SeenStore::open(dir).unwrap();
    for i in 0..n {
        store.apply(&persist_all(i..i + 1)).unwrap();
    }
}

/// Offset of operation record `i` (from 0) of a file written by [`one_per_commit`] (or by one
/// store that opened it new): after the header and the boot record written at the open.
fn record_at(i: u64) -> usize {
    let boot = u64::from(log::BootId::current().is_some());
    usize::try_from(log::HEADER_LEN + (boot + i) * RECORD_LEN as u64).unwrap()
}

#[test]
fn a_damaged_record_is_skipped_and_the_records_after_it_are_kept() {
    let tmp = TempDir::new("store-damage");
    one_per_commit(tmp.path(), 100);
    let mut bytes = file_bytes(tmp.path());
    // One flipped byte in the tenth record's key.
    bytes[record_at(9) + 20] ^= 0x01;
    std::fs::write(tmp.path().join(STORE_FILE_NAME), &bytes).unwrap();

    let mut store = SeenStore::open(tmp.path()).unwrap();
    let want: Vec<_> = (0..100).filter(|&i| i != 9).map(record).collect();
    assert_eq!(sorted(store.load().unwrap()), want);
    assert_eq!(
        store.tail,
        record_at(100) as u64,
        "new records go after the last one"
    );
    // The damaged record stays skipped after more commits and a reopen.
    store.apply(&persist_all(200..201)).unwrap();
    drop(store);
    let store = SeenStore::open(tmp.path()).unwrap();
    let mut want = want;
    want.push(record(200));
    assert_eq!(sorted(store.load().unwrap()), want);

    // Damage within a batch: the batch's other records are kept too, as long as it is not
    // the last batch written.
    let tmp = TempDir::new("store-damage-batch");
    let mut store = SeenStore::open(tmp.path()).unwrap();
    for start in (0..100).step_by(10) {
        store.apply(&persist_all(start..start + 10)).unwrap();
    }
    drop(store);
    let mut bytes = file_bytes(tmp.path());
    bytes[record_at(9) + 2] ^= 0x80;
    bytes[record_at(95) + 44] ^= 0x80;
    std::fs::write(tmp.path().join(STORE_FILE_NAME), &bytes).unwrap();
    let store = SeenStore::open(tmp.path()).unwrap();
    let want: Vec<_> = (0..90).filter(|&i| i != 9).map(record).collect();
    assert_eq!(
        sorted(store.load().unwrap()),
        want,
        "record 9 skipped; the last batch (90..100), damaged, is dropped whole"
    );
    assert_eq!(store.tail, record_at(90) as u64);
}

#[test]
fn damage_is_told_from_a_torn_tail_by_the_scan() {
    let tmp = TempDir::new("store-scan");
    one_per_commit(tmp.path(), 5);
    let path = tmp.path().join(STORE_FILE_NAME);
    let mut bytes = file_bytes(tmp.path());
    bytes[record_at(1) + 9] ^= 0x10;
    // A torn commit after the last one: a record with no batch end.
    let mut torn = Vec::new();
    log::encode(&StoreOp::Persist(record(7)), &mut torn);
    bytes[record_at(5)..record_at(6)].copy_from_slice(&torn);
    std::fs::write(&path, &bytes).unwrap();
    let file = File::open(&path).unwrap();
    let mut kept = Vec::new();
    let scan = log::scan(&file, bytes.len() as u64, log::Format::V3, None, |op| {
        kept.push(op)
    })
    .unwrap();
    assert_eq!(scan.damaged, vec![record_at(1) as u64]);
    assert_eq!(scan.records, 4);
    assert_eq!(scan.dropped, 1);
    assert_eq!(scan.tail, record_at(5) as u64);
    assert_eq!(kept.len(), 4);
}

#[test]
fn a_truncated_or_emptied_log_is_refused_with_both_lengths() {
    let tmp = TempDir::new("store-truncated");
    one_per_commit(tmp.path(), 100);
    let path = tmp.path().join(STORE_FILE_NAME);
    let full = std::fs::metadata(&path).unwrap().len();
    for cut in [1000, 0] {
        let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(cut).unwrap();
        drop(f);
        let err = SeenStore::open(tmp.path()).unwrap_err();
        assert!(matches!(err, StoreError::Truncated { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&format!("is {cut} bytes")), "{text}");
        assert!(text.contains(&format!("was {full} bytes")), "{text}");
        assert!(text.contains(LEN_FILE_NAME), "{text}");
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            cut,
            "left as it was"
        );
    }
    // The operator's way out: delete the length file and start with what is there.
    std::fs::remove_file(tmp.path().join(LEN_FILE_NAME)).unwrap();
    let store = SeenStore::open(tmp.path()).unwrap();
    assert!(store.load().unwrap().is_empty());
    drop(store);
    assert!(
        SeenStore::open(tmp.path()).is_ok(),
        "the new length is recorded"
    );
}

#[test]
fn the_length_file_follows_growth_and_compaction() {
    let tmp = TempDir::new("store-len");
    let len_path = tmp.path().join(LEN_FILE_NAME);
    let known = || log::decode_len(&std::fs::read(&len_path).unwrap()).unwrap();
    let log_len = || {
        std::fs::metadata(tmp.path().join(STORE_FILE_NAME))
            .unwrap()
            .len()
    };
    let mut store = SeenStore::open_with(tmp.path(), 16).unwrap();
    assert_eq!(known(), log_len());
    let per_grow = GROW_BYTES / RECORD_LEN as u64;
    store.apply(&persist_all(0..per_grow + 1)).unwrap();
    assert_eq!(known(), log_len(), "after growing");
    let forget: Vec<_> = (0..per_grow)
        .map(|i| StoreOp::Forget(record(i).key))
        .collect();
    store.apply(&forget).unwrap();
    store.apply(&persist_all(1 << 30..(1 << 30) + 100)).unwrap();
    assert!(store.records < per_grow, "compacted: {}", store.records);
    assert_eq!(known(), log_len(), "after a compaction shrank the log");
}

#[test]
fn a_version_1_log_loads_and_is_rewritten_as_version_3() {
    let tmp = TempDir::new("store-v1");
    // Version 1: no batch-end flags, no length file; reading stops at the first bad record.
    let mut bytes = log::header_of(log::Format::V1).to_vec();
    for op in persist_all(0..10) {
        log::encode(&op, &mut bytes);
    }
    let at = bytes.len();
    bytes.resize(at + 4 * RECORD_LEN, 0);
    bytes[log::HEADER_LEN as usize + 5 * RECORD_LEN + 10] ^= 1;
    std::fs::write(tmp.path().join(STORE_FILE_NAME), &bytes).unwrap();
    let store = SeenStore::open(tmp.path()).unwrap();
    assert_eq!(
        sorted(store.load().unwrap()),
        (0..5).map(record).collect::<Vec<_>>()
    );
    assert_eq!(
        log::check_header(&file_bytes(tmp.path())[..16]),
        log::Header::Known(log::Format::V3)
    );
    assert!(tmp.path().join(LEN_FILE_NAME).exists());
}

/// A node whose wall clock is a minute past the newest [`record`] used here, so none of them is
/// past its retention.
fn node() -> Node {
    let config = vtp_core::Config::new(Some("ivo://vtp.test/host".to_owned()));
    let unix_now = std::time::Duration::from_secs(record(100).unix_secs + 60);
    let engine = Box::new(vtp_core::filter::NoFilterEngine);
    Node::new(config, engine, 1, Instant::now(), unix_now).expect("valid test config")
}

#[test]
fn open_for_restores_into_the_node_what_its_worker_persisted_before() {
    let tmp = TempDir::new("store-open-for");
    let dir = tmp.path().join("eventdb");
    let mut first = node();
    let mut opened = open_for(&mut first, &dir, Instant::now()).unwrap();
    assert_eq!(opened.restored, 0);
    assert_eq!(first.seen_len(), 0);
    for op in persist_all(0..5) {
        opened.worker.send(op).unwrap();
    }
    opened.worker.send(StoreOp::Forget(record(2).key)).unwrap();
    opened.worker.flush_and_stop().unwrap();

    let mut second = node();
    let opened = open_for(&mut second, &dir, Instant::now()).unwrap();
    assert_eq!(opened.restored, 4);
    assert_eq!(second.seen_len(), 4);
    for i in [0, 1, 3, 4] {
        assert!(second.has_seen(&record(i).key), "record {i} restored");
    }
    assert!(
        !second.has_seen(&record(2).key),
        "a forgotten record stays forgotten"
    );
    opened.worker.flush_and_stop().unwrap();
}

#[test]
fn open_for_a_bad_directory_says_what_is_wrong_and_leaves_the_node_alone() {
    let tmp = TempDir::new("store-open-for-bad");
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let mut fresh = node();
    let err = open_for(&mut fresh, &file, Instant::now()).unwrap_err();
    assert!(matches!(err, StoreError::CreateDir { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&file.display().to_string()), "{text}");
    assert!(text.contains("check the path"), "{text}");

    // A directory another process (here: another worker) is using.
    let mut other = node();
    let opened = open_for(&mut other, tmp.path(), Instant::now()).unwrap();
    let err = open_for(&mut fresh, tmp.path(), Instant::now()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(STORE_FILE_NAME), "{text}");
    assert!(text.contains("another vtp process"), "{text}");
    assert_eq!(fresh.seen_len(), 0);
    opened.worker.flush_and_stop().unwrap();
}

#[test]
fn the_default_directory_follows_systemd_then_root_then_xdg_then_home() {
    use std::ffi::OsStr;
    let s = |v: &'static str| Some(OsStr::new(v));
    let user = 1000;
    let dir = |sd, xdg, home, euid| default_dir(sd, xdg, home, euid).map_err(|e| e.to_string());
    // systemd's StateDirectory= comes first, for root too; of several, the first.
    assert_eq!(
        dir(s("/var/lib/a:/var/lib/b"), s("/x"), s("/h"), 0),
        Ok("/var/lib/a".into())
    );
    assert_eq!(dir(s("/srv/st"), None, None, user), Ok("/srv/st".into()));
    // Root: /var/lib/vtp, whatever XDG_STATE_HOME and HOME say.
    assert_eq!(dir(None, s("/x"), s("/root"), 0), Ok("/var/lib/vtp".into()));
    assert_eq!(dir(s(""), None, None, 0), Ok("/var/lib/vtp".into()));
    // A user: XDG_STATE_HOME/vtp, else HOME/.local/state/vtp.
    assert_eq!(
        dir(None, s("/home/u/st"), s("/home/u"), user),
        Ok("/home/u/st/vtp".into())
    );
    assert_eq!(
        dir(None, None, s("/home/u"), user),
        Ok("/home/u/.local/state/vtp".into())
    );
    // Empty or relative values are skipped.
    assert_eq!(
        dir(s("rel"), s(""), s("/home/u"), user),
        Ok("/home/u/.local/state/vtp".into())
    );
    assert_eq!(
        dir(s(""), s("rel/st"), s("/home/u"), user),
        Ok("/home/u/.local/state/vtp".into())
    );
    // Nothing to go by: an error that says what to do.
    let err = dir(None, s("rel"), s(""), user).unwrap_err();
    assert!(
        err.contains("HOME") && err.contains("--eventdb DIR"),
        "{err}"
    );
    assert!(dir(None, None, None, user).is_err());
}

#[test]
fn a_new_directory_is_created_private_with_its_parents() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new("store-mode");
    let dir = tmp.path().join("state/vtp");
    drop(SeenStore::open(&dir).unwrap());
    for d in [&dir, &tmp.path().join("state")] {
        let mode = std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", d.display());
    }
    let mode = std::fs::metadata(dir.join(STORE_FILE_NAME))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
}

#[test]
fn a_directory_others_can_write_to_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new("store-open-dir");
    for mode in [0o777, 0o1777, 0o770, 0o702] {
        let dir = tmp.path().join(format!("m{mode:o}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = SeenStore::open(&dir).unwrap_err();
        assert!(matches!(err, StoreError::UnsafeDir { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&dir.display().to_string()), "{text}");
        assert!(
            text.contains("writable by its group or by others"),
            "{text}"
        );
        assert!(
            text.contains("chmod go-w") && text.contains("--eventdb"),
            "{text}"
        );
        assert!(!dir.join(STORE_FILE_NAME).exists(), "nothing created in it");
    }
}

#[test]
fn a_directory_of_another_user_is_refused() {
    let tmp = TempDir::new("store-foreign-dir");
    let dir = if rustix::process::geteuid().is_root() {
        let d = tmp.path().join("nobody");
        std::fs::create_dir(&d).unwrap();
        std::os::unix::fs::chown(&d, Some(65_534), Some(65_534)).unwrap();
        d
    } else {
        // Owned by root; refused before anything is tried in it.
        PathBuf::from("/")
    };
    let err = SeenStore::open(&dir).unwrap_err();
    assert!(matches!(err, StoreError::UnsafeDir { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("not by this user"), "{text}");
    assert!(!dir.join(STORE_FILE_NAME).exists(), "nothing created in it");
}

/// A file outside the store that a planted link points to, and what it holds.
fn victim(tmp: &TempDir) -> (PathBuf, &'static [u8]) {
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let path = outside.join("precious");
    std::fs::write(&path, b"precious data").unwrap();
    (path, b"precious data")
}

#[test]
fn a_symlink_planted_as_the_log_or_length_file_is_refused_not_followed() {
    let tmp = TempDir::new("store-link-log");
    let (target, content) = victim(&tmp);
    let missing = tmp.path().join("outside/created-by-vtp");
    for (name, to) in [
        (STORE_FILE_NAME, &target),
        (STORE_FILE_NAME, &missing),
        (LEN_FILE_NAME, &target),
    ] {
        let dir = tmp.path().join(format!("db-{name}-{}", to.exists()));
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::symlink(to, dir.join(name)).unwrap();
        let err = SeenStore::open(&dir).unwrap_err();
        assert!(matches!(err, StoreError::Open { .. }), "{name}: {err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("`{name}` is a symbolic link")) && text.contains("remove it"),
            "{text}"
        );
        assert!(
            std::fs::read(&target).unwrap() == content,
            "the target is untouched"
        );
        assert!(!missing.exists(), "nothing created through the link");
    }
}

#[test]
fn a_symlink_planted_as_the_compaction_file_is_replaced_not_followed() {
    let tmp = TempDir::new("store-link-compact");
    let (target, content) = victim(&tmp);
    let dir = tmp.path().join("db");
    let link = dir.join(COMPACT_FILE_NAME);
    // At open, a stale one is removed: the link itself.
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let mut store = SeenStore::open_with(&dir, 4).unwrap();
    assert!(link.symlink_metadata().is_err(), "the link is removed");
    // While running (planted after the open): the compaction does not write through it.
    std::os::unix::fs::symlink(&target, &link).unwrap();
    store.apply(&persist_all(0..8)).unwrap();
    assert_eq!(store.records, 8, "compacted");
    assert!(
        std::fs::read(&target).unwrap() == content,
        "the target is untouched"
    );
    assert!(link.symlink_metadata().is_err(), "the link is gone");
    let log = dir.join(STORE_FILE_NAME).symlink_metadata().unwrap();
    assert!(log.file_type().is_file());
    drop(store);
    let store = SeenStore::open(&dir).unwrap();
    assert_eq!(
        sorted(store.load().unwrap()),
        (0..8).map(record).collect::<Vec<_>>()
    );
}

/// Makes every write of one record fail: with batches of more records, that is the write of
/// the synced flag after the batch's fdatasync, so the batch is on the file (in the page
/// cache) without the flag, as a process killed during that fdatasync leaves it.
fn fail_the_synced_flag(store: &mut SeenStore) {
    store.fail_write = Some(Box::new(|from, to| {
        if to - from == RECORD_LEN as u64 {
            Err(io::Error::other("injected: killed during the fdatasync"))
        } else {
            Ok(())
        }
    }));
}

/// Another boot id than the machine's.
fn other_boot() -> log::BootId {
    log::BootId(*b"0123456789abcdef0123456789abcdef")
}

/// The end marks of every batch of the log in `dir`, in order.
fn batch_ends(dir: &Path) -> Vec<log::End> {
    let bytes = file_bytes(dir);
    bytes[log::HEADER_LEN as usize..]
        .chunks_exact(RECORD_LEN)
        .filter_map(|rec| log::decode(rec.try_into().unwrap()))
        .map(|(_, end)| end)
        .filter(|&end| end != log::End::No)
        .collect()
}

#[test]
fn a_batch_whose_fdatasync_never_returned_is_dropped_at_a_restart_in_the_same_boot() {
    let tmp = TempDir::new("store-unsynced");
    let boot = Some(log::BootId::current().unwrap_or_else(other_boot));
    let open = || SeenStore::open_in_boot(tmp.path(), COMPACT_MIN_RECORDS, boot).unwrap();
    let mut store = open();
    store.apply(&persist_all(0..5)).unwrap();
    store.apply(&persist_all(5..10)).unwrap();
    let tail = store.tail;
    fail_the_synced_flag(&mut store);
    let err = store.apply(&persist_all(10..20)).unwrap_err();
    assert!(matches!(err, StoreError::Write { .. }), "{err:?}");
    assert_eq!(store.tail, tail, "not committed");
    // Killed: the batch is whole on the file, its end record without the synced flag.
    drop(store);
    let ends = batch_ends(tmp.path());
    assert_eq!(ends.last(), Some(&log::End::Written), "{ends:?}");

    let mut store = open();
    assert_eq!(
        store.tail, tail,
        "the tail is the start of the unsynced batch"
    );
    assert_eq!(
        sorted(store.load().unwrap()),
        (0..10).map(record).collect::<Vec<_>>(),
        "the synced batches stay, the unsynced one is dropped"
    );
    // The next commit goes where it was; its records never come back.
    store.apply(&persist_all(100..101)).unwrap();
    drop(store);
    let store = open();
    let want: Vec<_> = (0..10).chain(100..101).map(record).collect();
    assert_eq!(sorted(store.load().unwrap()), want);
    drop(store);

    // A batch before the last one counts without its flag (a power loss during the next
    // commit's fdatasync can leave it so): another commit followed it, so it was synced.
    let mut bytes = file_bytes(tmp.path());
    let end = record_at(4);
    let mut rec = Vec::new();
    log::encode(&StoreOp::Persist(record(4)), &mut rec);
    log::mark_batch_end(&mut rec);
    bytes[end..end + RECORD_LEN].copy_from_slice(&rec);
    std::fs::write(tmp.path().join(STORE_FILE_NAME), &bytes).unwrap();
    assert_eq!(batch_ends(tmp.path())[1], log::End::Written);
    let store = open();
    assert_eq!(sorted(store.load().unwrap()), want);
}

#[test]
fn after_a_reboot_a_last_batch_without_its_flag_counts_and_is_flagged() {
    let tmp = TempDir::new("store-reboot");
    let mut store =
        SeenStore::open_in_boot(tmp.path(), COMPACT_MIN_RECORDS, Some(other_boot())).unwrap();
    store.apply(&persist_all(0..5)).unwrap();
    fail_the_synced_flag(&mut store);
    store.apply(&persist_all(5..10)).unwrap_err();
    drop(store);
    // The power went out after the fdatasync returned, before the flag reached the disk:
    // the batch may have been reported durable, so it counts.
    let boot = Some(log::BootId::current().unwrap_or(log::BootId([b'f'; 32])));
    let open = || SeenStore::open_in_boot(tmp.path(), COMPACT_MIN_RECORDS, boot).unwrap();
    let store = open();
    let all: Vec<_> = (0..10).map(record).collect();
    assert_eq!(sorted(store.load().unwrap()), all);
    let tail = store.tail;
    drop(store);
    // Settled at that start: flagged, and followed by the record of the new boot.
    let ends = batch_ends(tmp.path());
    assert!(ends.iter().all(|&e| e == log::End::Synced), "{ends:?}");
    let store = open();
    assert_eq!(
        store.tail, tail,
        "no boot record at a start in the same boot"
    );
    assert_eq!(sorted(store.load().unwrap()), all);
}

#[test]
fn a_version_2_log_loads_whole_and_is_rewritten_as_version_3() {
    let tmp = TempDir::new("store-v2");
    // Version 2: batch-end flags, no synced flags or boot records, a length file.
    let mut bytes = log::header_of(log::Format::V2).to_vec();
    for batch in [0..3, 3..4, 4..9] {
        for op in persist_all(batch) {
            log::encode(&op, &mut bytes);
        }
        log::mark_batch_end(&mut bytes);
    }
    bytes.resize(bytes.len() + 4 * RECORD_LEN, 0);
    let path = tmp.path().join(STORE_FILE_NAME);
    std::fs::write(&path, &bytes).unwrap();
    std::fs::write(
        tmp.path().join(LEN_FILE_NAME),
        log::len_record(bytes.len() as u64),
    )
    .unwrap();

    let all: Vec<_> = (0..9).map(record).collect();
    let mut store = SeenStore::open(tmp.path()).unwrap();
    assert_eq!(
        sorted(store.load().unwrap()),
        all,
        "every complete batch counts, the last one too"
    );
    let head = file_bytes(tmp.path());
    assert_eq!(
        log::check_header(&head[..16]),
        log::Header::Known(log::Format::V3)
    );
    assert!(
        batch_ends(tmp.path())
            .iter()
            .all(|&e| e == log::End::Synced)
    );
    store.apply(&persist_all(20..22)).unwrap();
    drop(store);
    let store = SeenStore::open(tmp.path()).unwrap();
    let want: Vec<_> = (0..9).chain(20..22).map(record).collect();
    assert_eq!(sorted(store.load().unwrap()), want);
}

#[test]
fn a_compacted_log_has_every_batch_synced_and_keeps_every_record() {
    let tmp = TempDir::new("store-compact-flags");
    let mut store = SeenStore::open_with(tmp.path(), 4).unwrap();
    let path = tmp.path().join(STORE_FILE_NAME);
    let inode = || std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());
    let before = inode();
    store.apply(&persist_all(0..8)).unwrap();
    assert_ne!(inode(), before, "compacted");
    let ends = batch_ends(tmp.path());
    assert_eq!(ends.len(), 8 + usize::from(store.boot.is_some()));
    assert!(ends.iter().all(|&e| e == log::End::Synced), "{ends:?}");
    drop(store);
    // A restart in the same boot keeps all of it, the last record (its own batch) too.
    let store = SeenStore::open_with(tmp.path(), 4).unwrap();
    assert_eq!(
        sorted(store.load().unwrap()),
        (0..8).map(record).collect::<Vec<_>>()
    );
}
