//! Compaction: old versions beyond `Config::history` and deleted records
//! are reclaimed, nothing else changes, commits and reads go on meanwhile,
//! and every state a crash can leave on disk opens to the same data.

use std::collections::BTreeMap;
use std::fs;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::{data_files, frames};
use ourdb::{Config, Durability, Mode, OurDb, Stats};

fn config(history: usize) -> Config {
    Config {
        durability: Durability::Flush,
        max_file_size: 32 << 10,
        history,
        ..Config::default()
    }
}

fn contents(db: &OurDb) -> Vec<(u32, Vec<Vec<u8>>)> {
    (0..db.next_id().min(5000))
        .map(|id| (id, db.history(id, usize::MAX).unwrap()))
        .filter(|(_, h)| !h.is_empty())
        .collect()
}

#[test]
fn compaction_keeps_the_newest_versions_of_live_records_and_drops_deleted_ones() {
    for history in [0, 1, 3] {
        let dir = tempfile::tempdir().unwrap();
        let db = OurDb::open(dir.path(), config(history)).unwrap();
        let mut all: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
        for i in 0..60u32 {
            let v = vec![i as u8; 100];
            let id = db.insert(&v).unwrap();
            all.insert(id, vec![v]);
        }
        for round in 0..8u8 {
            for id in 1..=60u32 {
                let v = vec![round; 50 + id as usize];
                db.update(id, &v).unwrap();
                all.get_mut(&id).unwrap().push(v);
            }
        }
        for id in (1..=60).step_by(4) {
            db.delete(id).unwrap();
            all.remove(&id);
        }
        let before = db.stats().file_bytes;
        db.compact().unwrap();
        let after = db.stats().file_bytes;
        assert!(after < before, "history {history}: {after} >= {before}");
        // What compaction keeps: the newest `history` versions (0: all).
        for v in all.values_mut() {
            let drop = if history == 0 {
                0
            } else {
                v.len().saturating_sub(history)
            };
            v.drain(..drop);
        }
        let check = |db: &OurDb, all: &BTreeMap<u32, Vec<Vec<u8>>>| {
            assert_eq!(db.next_id(), 61);
            assert_eq!(db.len(), all.len());
            for id in 1..=60u32 {
                let want: Vec<Vec<u8>> = all
                    .get(&id)
                    .map(|v| v.iter().rev().cloned().collect())
                    .unwrap_or_default();
                assert_eq!(db.history(id, usize::MAX).unwrap(), want, "id {id}");
            }
        };
        check(&db, &all);
        assert_eq!(data_files(dir.path()).len(), 1, "old files are deleted");
        // History keeps growing from the compacted versions.
        db.update(2, b"later").unwrap();
        all.get_mut(&2).unwrap().push(b"later".to_vec());
        check(&db, &all);
        drop(db);
        let db = OurDb::open(dir.path(), config(history)).unwrap();
        check(&db, &all);
        db.close().unwrap();
        let db = OurDb::open(dir.path(), config(history)).unwrap();
        assert!(db.stats().opened_from_checkpoint);
        check(&db, &all);
    }
}

#[test]
fn key_value_mode_compacts_and_keeps_its_next_id_when_the_highest_id_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        mode: Mode::KeyValue,
        ..config(2)
    };
    let db = OurDb::open(dir.path(), cfg.clone()).unwrap();
    for round in 0..5u8 {
        for id in [7, 900, 3] {
            db.set(id, &[round; 40]).unwrap();
        }
    }
    db.delete(900).unwrap();
    db.compact().unwrap();
    assert_eq!(db.next_id(), 901);
    assert_eq!(db.history(7, 10).unwrap(), vec![vec![4; 40], vec![3; 40]]);
    assert_eq!(db.get(900).unwrap(), None);
    drop(db);
    let db = OurDb::open(dir.path(), cfg).unwrap();
    assert_eq!(db.next_id(), 901);
    assert_eq!(db.history(3, 10).unwrap(), vec![vec![4; 40], vec![3; 40]]);
}

#[test]
fn an_update_heavy_store_shrinks_to_at_most_twice_its_live_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let db = OurDb::open(dir.path(), config(1)).unwrap();
    let value = |id: u32, round: u32| vec![(id + round) as u8; 200];
    for id in 0..300 {
        db.insert(&value(id + 1, 0)).unwrap();
    }
    for round in 1..=100 {
        for id in 1..=300 {
            db.update(id, &value(id, round)).unwrap();
        }
    }
    let live: u64 = 300 * 200;
    let before = db.stats().file_bytes;
    assert!(before > 50 * live);
    db.compact().unwrap();
    let after = db.stats().file_bytes;
    let on_disk: u64 = data_files(dir.path())
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(on_disk, after, "the counter is what the files hold");
    assert!(after <= 2 * live, "{after} bytes for {live} live bytes");
    for id in 1..=300 {
        assert_eq!(db.get(id).unwrap(), Some(value(id, 100)));
    }
}

#[test]
fn commits_and_reads_go_on_while_compactions_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(OurDb::open(dir.path(), config(4)).unwrap());
    for i in 0..100u32 {
        db.insert(&i.to_le_bytes()).unwrap();
    }
    let writer = {
        let db = Arc::clone(&db);
        std::thread::spawn(move || {
            let mut model: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
            for i in 0..3000u32 {
                let id = 1 + i % 100;
                let v = format!("{id}:{i}").into_bytes();
                db.update(id, &v).unwrap();
                model.entry(id).or_default().push(v.clone());
                // A reader on this thread sees its own write at once.
                assert_eq!(db.get(id).unwrap(), Some(v));
            }
            model
        })
    };
    let reader = {
        let db = Arc::clone(&db);
        std::thread::spawn(move || {
            let mut reads = 0u64;
            for i in 0..20_000u32 {
                let id = 1 + i % 100;
                let h = db.history(id, 4).unwrap();
                assert!(!h.is_empty(), "id {id} is always live");
                reads += 1;
            }
            reads
        })
    };
    let mut compactions = 0;
    loop {
        db.compact().unwrap();
        compactions += 1;
        if writer.is_finished() {
            break;
        }
    }
    let model = writer.join().unwrap();
    assert_eq!(reader.join().unwrap(), 20_000);
    assert!(compactions > 0);
    let check = |db: &OurDb| {
        for (id, versions) in &model {
            let got = db.history(*id, 10).unwrap();
            let want: Vec<Vec<u8>> = versions.iter().rev().take(got.len()).cloned().collect();
            assert!(got.len() >= 4, "id {id} keeps at least 4 versions");
            assert_eq!(got, want, "id {id}");
        }
    };
    check(&db);
    let st = db.stats();
    assert!(st.compactions >= compactions);
    println!(
        "{compactions} compactions, longest writer pause {:?}",
        st.max_compaction_pause
    );
    drop(db);
    check(&OurDb::open(dir.path(), config(4)).unwrap());
}

#[test]
fn old_files_left_next_to_a_generation_start_are_superseded_not_counted_twice() {
    let dir = tempfile::tempdir().unwrap();
    let saved = tempfile::tempdir().unwrap();
    let db = OurDb::open(dir.path(), config(2)).unwrap();
    for i in 0..400u32 {
        let id = db.insert(&[i as u8; 90]).unwrap();
        db.update(id, &[i as u8; 91]).unwrap();
        db.update(id, &[i as u8; 92]).unwrap();
        if i % 5 == 0 {
            db.delete(id).unwrap();
        }
    }
    db.close().unwrap();
    let old = data_files(dir.path());
    assert!(old.len() > 2);
    for p in &old {
        fs::copy(p, saved.path().join(p.file_name().unwrap())).unwrap();
    }
    let db = OurDb::open(dir.path(), config(2)).unwrap();
    db.compact().unwrap();
    db.insert(b"after").unwrap();
    let want = contents(&db);
    drop(db);
    let current = data_files(dir.path());
    assert!(
        current.iter().all(|p| !old.contains(p)),
        "old files are deleted"
    );
    // A crash after the rename, before the old files were deleted (some or all).
    for (i, p) in old.iter().enumerate() {
        if i % 2 == 0 || i == old.len() - 1 {
            fs::copy(saved.path().join(p.file_name().unwrap()), p).unwrap();
        }
    }
    let db = OurDb::open(dir.path(), config(2)).unwrap();
    assert_eq!(contents(&db), want);
    assert_eq!(data_files(dir.path()), current, "superseded files removed");
    drop(db);
    // A crash before the rename: the unfinished output is dropped.
    fs::write(dir.path().join("compaction.tmp"), b"half a compacted file").unwrap();
    let db = OurDb::open(dir.path(), config(2)).unwrap();
    assert_eq!(contents(&db), want);
    assert!(!dir.path().join("compaction.tmp").exists());
}

#[test]
fn background_compaction_runs_once_the_files_outgrow_what_it_kept() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        checkpoint_bytes: 16 << 10,
        compaction_min_bytes: 128 << 10,
        ..config(2)
    };
    let db = OurDb::open(dir.path(), cfg).unwrap();
    for _ in 0..50 {
        db.insert(&[0; 100]).unwrap();
    }
    let mut round = 0u8;
    write_until(
        &db,
        "a background compaction",
        |s| s.compactions > 0,
        || {
            round = round.wrapping_add(1);
            for id in 1..=50 {
                db.update(id, &[round; 100]).unwrap();
            }
        },
    );
    // Bounded: the files stay near what the retained versions need.
    for _ in 0..40 {
        round = round.wrapping_add(1);
        for id in 1..=50 {
            db.update(id, &[round; 100]).unwrap();
        }
    }
    for id in 1..=50 {
        assert_eq!(db.get(id).unwrap(), Some(vec![round; 100]));
        assert!(db.history(id, 5).unwrap().len() >= 2);
    }
}

#[test]
fn a_store_that_only_grows_is_never_compacted_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        checkpoint_bytes: 16 << 10,
        compaction_min_bytes: 128 << 10,
        ..config(2)
    };
    let db = OurDb::open(dir.path(), cfg).unwrap();
    // Ten times the compaction threshold of inserts: nothing to reclaim.
    for _ in 0..12_000 {
        db.insert(&[7; 100]).unwrap();
    }
    // The background worker is woken every 16 KiB and has looked by now
    // (it writes a checkpoint each time it finds no compaction due).
    write_until(&db, "ten looks", |s| s.checkpoints >= 10, || {});
    assert_eq!(db.stats().compactions, 0, "{:?}", db.stats());
    // Deleting half the records makes one due.
    for id in (1..=12_000).step_by(2) {
        db.delete(id).unwrap();
    }
    write_until(
        &db,
        "a compaction after the deletes",
        |s| s.compactions > 0,
        || {
            db.insert(&[8; 100]).unwrap();
        },
    );
    assert_eq!(db.get(2).unwrap(), Some(vec![7; 100]));
    assert_eq!(db.get(1).unwrap(), None);
}

/// The same after an open that scanned every file (no checkpoint, as after
/// a crash): the scan counts what was replaced or deleted, and small values
/// (whose frames' own bytes are a third of the files) count nothing. Then
/// deletes scanned at the next such open make one due.
#[test]
fn a_store_that_only_grew_is_not_compacted_after_an_open_without_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        durability: Durability::Flush,
        checkpoint_bytes: 0,
        compaction_min_bytes: 128 << 10,
        ..config(2)
    };
    let db = OurDb::open(dir.path(), cfg.clone()).unwrap();
    for _ in 0..6_000 {
        db.insert(&[7; 10]).unwrap();
    }
    // Dropped without close: no checkpoint.
    drop(db);
    assert!(!dir.path().join("checkpoint").exists());
    let looking = Config {
        checkpoint_bytes: 16 << 10,
        ..cfg.clone()
    };
    let db = OurDb::open(dir.path(), looking.clone()).unwrap();
    assert!(!db.stats().opened_from_checkpoint, "{:?}", db.stats());
    write_until(&db, "three looks", |s| s.checkpoints >= 3, || nudge(&db));
    assert_eq!(db.stats().compactions, 0, "{:?}", db.stats());
    db.close().unwrap();

    // Half of them deleted, then an open that scans everything again.
    let db = OurDb::open(dir.path(), cfg).unwrap();
    for id in (1..=6_000).step_by(2) {
        db.delete(id).unwrap();
    }
    drop(db);
    fs::remove_file(dir.path().join("checkpoint")).unwrap();
    let db = OurDb::open(dir.path(), looking).unwrap();
    assert!(!db.stats().opened_from_checkpoint, "{:?}", db.stats());
    write_until(
        &db,
        "a compaction counting the deletes",
        |s| s.compactions > 0,
        || nudge(&db),
    );
    assert_eq!(db.get(1).unwrap(), None);
    assert_eq!(db.get(2).unwrap(), Some(vec![7; 10]));
}

/// Calls `write` (commits wake the background worker) until `done` holds
/// for the database's stats, for at most a minute.
fn write_until(db: &OurDb, what: &str, done: impl Fn(&Stats) -> bool, mut write: impl FnMut()) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(&db.stats()) {
        assert!(
            Instant::now() < deadline,
            "waited a minute for {what}: {:?}",
            db.stats()
        );
        write();
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Inserts 20 small records, to wake the background worker.
fn nudge(db: &OurDb) {
    for _ in 0..20 {
        db.insert(&[9; 100]).unwrap();
    }
}

#[test]
fn a_store_whose_versions_are_all_kept_is_not_copied_again_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        checkpoint_bytes: 16 << 10,
        compaction_min_bytes: 128 << 10,
        ..config(16)
    };
    let db = OurDb::open(dir.path(), cfg.clone()).unwrap();
    for _ in 0..2_000 {
        db.insert(&[1; 100]).unwrap();
    }
    for v in 2..=3u8 {
        for id in 1..=2_000 {
            db.update(id, &[v; 100]).unwrap();
        }
    }
    // Every version is within the history kept: a compaction copies them all.
    db.compact().unwrap();
    db.close().unwrap();

    let db = OurDb::open(dir.path(), cfg).unwrap();
    assert!(db.stats().opened_from_checkpoint, "{:?}", db.stats());
    // Two thirds of the bytes are older versions, none of them reclaimable:
    // the count the checkpoint carries says so, and no look compacts.
    // The background worker writes a checkpoint each time it looks and
    // finds no compaction due.
    write_until(&db, "three looks", |s| s.checkpoints >= 3, || nudge(&db));
    assert_eq!(db.stats().compactions, 0, "{:?}", db.stats());
    assert_eq!(db.history(7, 16).unwrap().len(), 3);
}

#[test]
fn deletes_committed_after_the_checkpoint_make_a_compaction_due_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        // No background work in the first handle: only the checkpoint below.
        checkpoint_bytes: 0,
        compaction_min_bytes: 128 << 10,
        ..config(2)
    };
    let db = OurDb::open(dir.path(), cfg.clone()).unwrap();
    for _ in 0..3_000 {
        db.insert(&[1; 100]).unwrap();
    }
    db.checkpoint().unwrap();
    for id in (1..=3_000).step_by(2) {
        db.delete(id).unwrap();
    }
    // Dropped without close: the deletes lie after the checkpoint.
    drop(db);

    let db = OurDb::open(
        dir.path(),
        Config {
            checkpoint_bytes: 16 << 10,
            ..cfg
        },
    )
    .unwrap();
    let stats = db.stats();
    assert!(
        stats.opened_from_checkpoint && stats.open_scanned_bytes > 0,
        "{stats:?}"
    );
    write_until(
        &db,
        "a compaction counting the deletes scanned at open",
        |s| s.compactions > 0,
        || nudge(&db),
    );
    assert_eq!(db.get(1).unwrap(), None);
    assert_eq!(db.get(2).unwrap(), Some(vec![1; 100]));
}

#[test]
fn a_record_whose_kept_versions_outgrow_a_frame_is_copied_over_several() {
    // 16 kept versions of 200 KiB: 3.2 MiB of one record, over three times
    // what a compacted frame holds (1 MiB), so a frame's u32 length never
    // has to carry all of a record's history (16 versions of values near
    // the 4 GiB limit would overflow it).
    let cfg = Config {
        max_file_size: 64 << 20,
        ..config(16)
    };
    let dir = tempfile::tempdir().unwrap();
    let db = OurDb::open(dir.path(), cfg.clone()).unwrap();
    let version = |v: u8| vec![v; 200 << 10];
    let id = db.insert(&version(0)).unwrap();
    for v in 1..20 {
        db.update(id, &version(v)).unwrap();
    }
    db.compact().unwrap();
    let want: Vec<Vec<u8>> = (4..20).rev().map(version).collect();
    assert_eq!(db.history(id, usize::MAX).unwrap(), want);
    db.close().unwrap();

    // The frames of the compacted file.
    let files = data_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let payloads: Vec<u64> = frames(&files[0]).iter().map(|&(_, len)| len).collect();
    assert!(payloads.len() >= 4, "{payloads:?}");
    assert!(payloads.iter().all(|&len| len <= 1 << 20), "{payloads:?}");
    let db = OurDb::open(dir.path(), cfg).unwrap();
    assert_eq!(db.history(id, usize::MAX).unwrap(), want);
}

/// `history` 0 keeps every version: replaced versions can never be
/// reclaimed, so a store under updates (and no deletes) only grows, and a
/// background compaction would copy all of it to reclaim nothing.
#[test]
fn a_store_keeping_every_version_is_not_copied_in_the_background_for_its_updates() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        checkpoint_bytes: 16 << 10,
        compaction_min_bytes: 128 << 10,
        ..config(0)
    };
    let db = OurDb::open(dir.path(), cfg).unwrap();
    for _ in 0..500 {
        db.insert(&[1; 100]).unwrap();
    }
    // Ten times the threshold of updates: each replaces a version that is kept.
    for v in 2..=30u8 {
        for id in 1..=500 {
            db.update(id, &[v; 100]).unwrap();
        }
    }
    write_until(&db, "ten looks", |s| s.checkpoints >= 10, || {});
    let stats = db.stats();
    assert_eq!(
        stats.compactions, 0,
        "copied every version for nothing: {stats:?}"
    );
    assert_eq!(db.history(7, usize::MAX).unwrap().len(), 30);
}
