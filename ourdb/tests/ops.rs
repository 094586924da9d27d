//! Each operation's behaviour and edge cases, through the public API.

mod common;

use ourdb::{Batch, Config, Durability, Error, Mode, OurDb};

fn kv() -> Config {
    Config {
        mode: Mode::KeyValue,
        ..Config::default()
    }
}

#[test]
fn insert_hands_out_ids_from_one_and_get_returns_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let db = OurDb::open(dir.path(), Config::default()).unwrap();
    assert_eq!(db.next_id(), 1);
    assert_eq!(db.insert(b"a").unwrap(), 1);
    assert_eq!(db.insert(b"").unwrap(), 2);
    assert_eq!(db.next_id(), 3);
    assert_eq!(db.get(1).unwrap(), Some(b"a".to_vec()));
    assert_eq!(
        db.get(2).unwrap(),
        Some(Vec::new()),
        "an empty value is a value"
    );
    assert!(db.exists(2).unwrap());
    assert_eq!(db.len(), 2);
}

#[test]
fn missing_ids_read_as_absent_and_update_of_them_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let db = OurDb::open(dir.path(), Config::default()).unwrap();
    for id in [0, 1, 7, u32::MAX] {
        assert_eq!(db.get(id).unwrap(), None);
        assert!(!db.exists(id).unwrap());
        assert!(db.history(id, 5).unwrap().is_empty());
        assert!(!db.delete(id).unwrap());
        assert!(matches!(db.update(id, b"x"), Err(Error::NotFound { id: i }) if i == id));
        assert!(matches!(db.set(id, b"x"), Err(Error::NotFound { .. })));
    }
    assert_eq!(db.next_id(), 1, "failed writes consume no ids");
}

#[test]
fn deleted_id_is_gone_cannot_be_updated_and_is_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let db = OurDb::open(dir.path(), Config::default()).unwrap();
    let id = db.insert(b"v1").unwrap();
    db.update(id, b"v2").unwrap();
    assert!(db.delete(id).unwrap());
    assert!(!db.delete(id).unwrap(), "second delete reports not live");
    assert_eq!(db.get(id).unwrap(), None);
    assert!(db.history(id, 10).unwrap().is_empty());
    assert!(matches!(db.update(id, b"v3"), Err(Error::NotFound { .. })));
    assert_eq!(db.insert(b"next").unwrap(), id + 1);
    drop(db);
    let db = OurDb::open(dir.path(), Config::default()).unwrap();
    assert_eq!(db.get(id).unwrap(), None, "a delete survives reopen");
    assert_eq!(db.next_id(), id + 2);
}

#[test]
fn history_lists_versions_newest_first_up_to_depth() {
    let dir = tempfile::tempdir().unwrap();
    let db = OurDb::open(dir.path(), Config::default()).unwrap();
    let id = db.insert(b"1").unwrap();
    let other = db.insert(b"other").unwrap();
    db.update(id, b"2").unwrap();
    db.update(other, b"other2").unwrap();
    db.set(id, b"3").unwrap();
    assert_eq!(
        db.history(id, 10).unwrap(),
        vec![b"3".to_vec(), b"2".to_vec(), b"1".to_vec()]
    );
    assert_eq!(
        db.history(id, 2).unwrap(),
        vec![b"3".to_vec(), b"2".to_vec()]
    );
    assert!(db.history(id, 0).unwrap().is_empty());
    assert_eq!(
        db.history(other, 10).unwrap(),
        vec![b"other2".to_vec(), b"other".to_vec()]
    );
}

#[test]
fn history_follows_versions_across_file_rollover_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        max_file_size: 200,
        durability: Durability::Flush,
        ..Config::default()
    };
    let db = OurDb::open(dir.path(), cfg.clone()).unwrap();
    let id = db.insert(&[0u8; 60]).unwrap();
    for v in 1..10u8 {
        db.update(id, &[v; 60]).unwrap();
    }
    let files = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".odb")
        })
        .count();
    assert!(files >= 5, "expected several data files, got {files}");
    let want: Vec<Vec<u8>> = (0..10u8).rev().map(|v| vec![v; 60]).collect();
    assert_eq!(db.history(id, 100).unwrap(), want);
    db.close().unwrap();
    let db = OurDb::open(dir.path(), cfg).unwrap();
    assert_eq!(db.history(id, 100).unwrap(), want);
    assert_eq!(db.get(id).unwrap(), Some(vec![9; 60]));
}

#[test]
fn oversize_value_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        max_value_size: 10,
        ..Config::default()
    };
    let db = OurDb::open(dir.path(), cfg).unwrap();
    assert_eq!(db.insert(&[1; 10]).unwrap(), 1);
    let err = db.insert(&[1; 11]).unwrap_err();
    assert!(
        matches!(err, Error::ValueTooLarge { size: 11, max: 10 }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "value of 11 bytes exceeds the limit of 10 bytes"
    );
    assert!(matches!(
        db.update(1, &[2; 11]),
        Err(Error::ValueTooLarge { .. })
    ));
    assert_eq!(db.get(1).unwrap(), Some(vec![1; 10]));
    assert_eq!(db.next_id(), 2);
}

#[test]
fn reopen_in_incremental_mode_keeps_values_and_next_id() {
    let dir = tempfile::tempdir().unwrap();
    for durability in [Durability::Sync, Durability::Flush] {
        let cfg = Config {
            durability,
            ..Config::default()
        };
        let db = OurDb::open(dir.path(), cfg.clone()).unwrap();
        let before = db.next_id();
        let a = db.insert(b"a").unwrap();
        let b = db.insert(b"b").unwrap();
        db.update(a, b"a2").unwrap();
        db.delete(b).unwrap();
        drop(db);
        let db = OurDb::open(dir.path(), cfg).unwrap();
        assert_eq!(a, before);
        assert_eq!(db.next_id(), before + 2);
        assert_eq!(db.get(a).unwrap(), Some(b"a2".to_vec()));
        assert_eq!(db.get(b).unwrap(), None);
        assert_eq!(
            db.history(a, 5).unwrap(),
            vec![b"a2".to_vec(), b"a".to_vec()]
        );
    }
}

#[test]
fn key_value_mode_takes_caller_ids_and_refuses_insert() {
    let dir = tempfile::tempdir().unwrap();
    let db = OurDb::open(dir.path(), kv()).unwrap();
    db.set(42, b"x").unwrap();
    db.set(0, b"zero").unwrap();
    db.set(u32::MAX, b"max").unwrap();
    db.set(42, b"y").unwrap();
    db.update(42, b"z").unwrap();
    assert!(matches!(db.update(7, b"q"), Err(Error::NotFound { id: 7 })));
    let err = db.insert(b"no").unwrap_err();
    assert!(matches!(err, Error::WrongMode { op: "insert", .. }));
    assert_eq!(err.to_string(), "insert is not available in key-value mode");
    assert_eq!(
        db.history(42, 9).unwrap(),
        vec![b"z".to_vec(), b"y".to_vec(), b"x".to_vec()]
    );
    assert!(db.delete(42).unwrap());
    db.set(42, b"again").unwrap();
    assert_eq!(
        db.history(42, 9).unwrap(),
        vec![b"again".to_vec()],
        "delete ends a history"
    );
    drop(db);
    let db = OurDb::open(dir.path(), kv()).unwrap();
    assert_eq!(db.get(0).unwrap(), Some(b"zero".to_vec()));
    assert_eq!(db.get(u32::MAX).unwrap(), Some(b"max".to_vec()));
    assert_eq!(db.get(42).unwrap(), Some(b"again".to_vec()));
    assert_eq!(db.len(), 3);
}

#[test]
fn reopening_in_the_other_mode_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(OurDb::open(dir.path(), Config::default()).unwrap());
    let err = OurDb::open(dir.path(), kv()).unwrap_err();
    assert!(matches!(err, Error::ModeMismatch { .. }), "{err}");
    assert!(err.to_string().contains("incremental"), "{err}");
}

#[test]
fn second_open_of_a_locked_directory_names_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let db = OurDb::open(dir.path(), Config::default()).unwrap();
    let err = OurDb::open(dir.path(), Config::default()).unwrap_err();
    assert!(
        matches!(&err, Error::Locked { dir: d } if d == dir.path()),
        "{err}"
    );
    assert!(err.to_string().contains(&dir.path().display().to_string()));
    db.close().unwrap();
    OurDb::open(dir.path(), Config::default()).expect("lock is released by close");
}

#[test]
fn leftovers_of_unfinished_writes_are_removed_at_open_and_named_for_what_they_are() {
    common::logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let db = OurDb::open(dir.path(), Config::default()).unwrap();
    db.insert(b"kept").unwrap();
    db.close().unwrap();
    let leftovers = [
        ("unfinished data file", "data-00000001.tmp"),
        ("unfinished checkpoint", "checkpoint.tmp"),
        ("unfinished compaction output", "compaction.tmp"),
    ];
    for (_, name) in leftovers {
        std::fs::write(dir.path().join(name), b"half written").unwrap();
    }
    let db = OurDb::open(dir.path(), Config::default()).unwrap();
    assert_eq!(db.get(1).unwrap(), Some(b"kept".to_vec()));
    let warned = common::logs::logged(log::Level::Warn);
    for (what, name) in leftovers {
        let path = dir.path().join(name);
        assert!(!path.exists(), "{name} removed");
        let line = format!("removing {what} {}", path.display());
        assert!(warned.contains(&line), "{line:?} not in {warned:?}");
    }
}

/// Operators delete "LOCK" files they take for stale: the open database
/// keeps the directory locked all the same.
#[test]
fn deleting_the_lock_file_of_an_open_database_does_not_let_a_second_handle_open_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = OurDb::open(dir.path(), Config::default()).unwrap();
    db.insert(b"first").unwrap();
    std::fs::remove_file(dir.path().join("LOCK")).unwrap();
    assert!(OurDb::is_open_elsewhere(dir.path()).unwrap());
    let err = OurDb::open(dir.path(), Config::default()).unwrap_err();
    assert!(
        matches!(&err, Error::Locked { dir: d } if d == dir.path()),
        "{err}"
    );
    assert!(
        OurDb::is_open_elsewhere(dir.path()).unwrap(),
        "the refused open let go of the LOCK file it made"
    );
    assert_eq!(
        db.insert(b"second").unwrap(),
        2,
        "the first handle writes on"
    );
    db.close().unwrap();
    assert!(!OurDb::is_open_elsewhere(dir.path()).unwrap());
    let db = OurDb::open(dir.path(), Config::default()).expect("opens once the first closed");
    assert_eq!(db.get(2).unwrap(), Some(b"second".to_vec()));
    assert_eq!(db.insert(b"third").unwrap(), 3);
}

#[test]
fn a_database_open_in_another_handle_is_seen_as_such_and_a_probe_takes_no_lock() {
    let dir = tempfile::tempdir().unwrap();
    assert!(!OurDb::is_open_elsewhere(dir.path().join("absent")).unwrap());
    assert!(!OurDb::is_open_elsewhere(dir.path()).unwrap());
    let db = OurDb::open(dir.path(), Config::default()).unwrap();
    assert!(OurDb::is_open_elsewhere(dir.path()).unwrap());
    db.close().unwrap();
    assert!(!OurDb::is_open_elsewhere(dir.path()).unwrap());
    // The probe lets its lock go: the database opens after it.
    OurDb::open(dir.path(), Config::default()).expect("open after a probe");
}

/// A lock held for a moment (a handle closing as another opens, or a
/// standby's probe at that very instant) delays an open instead of failing it.
#[test]
fn an_open_waits_out_a_lock_let_go_within_a_moment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (opened, wait) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let db = OurDb::open(&path, Config::default()).unwrap();
        db.insert(b"first").unwrap();
        opened.send(()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        db.close().unwrap();
    });
    wait.recv().unwrap();
    assert!(OurDb::is_open_elsewhere(dir.path()).unwrap());
    let db = OurDb::open(dir.path(), Config::default()).expect("open once the holder closes");
    holder.join().unwrap();
    assert_eq!(db.get(1).unwrap(), Some(b"first".to_vec()));
}

#[test]
fn batch_assigns_ids_in_order_and_may_update_its_own_inserts() {
    let dir = tempfile::tempdir().unwrap();
    let db = OurDb::open(dir.path(), Config::default()).unwrap();
    db.insert(b"old").unwrap();
    let mut b = Batch::new();
    b.expect_next_id(2)
        .insert(b"a".to_vec())
        .insert(b"b".to_vec())
        .update(2, b"a2".to_vec())
        .delete(1)
        .delete(99);
    assert_eq!(b.len(), 5);
    assert_eq!(db.commit(b).unwrap(), vec![2, 3]);
    assert_eq!(db.get(1).unwrap(), None);
    assert_eq!(
        db.history(2, 5).unwrap(),
        vec![b"a2".to_vec(), b"a".to_vec()]
    );
    assert_eq!(db.get(3).unwrap(), Some(b"b".to_vec()));
    assert_eq!(db.next_id(), 4);
    assert!(db.commit(Batch::new()).unwrap().is_empty());
}

#[test]
fn failing_batch_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        max_value_size: 8,
        ..Config::default()
    };
    let db = OurDb::open(dir.path(), cfg.clone()).unwrap();
    let id = db.insert(b"keep").unwrap();

    let mut stale = Batch::new();
    stale.expect_next_id(1).insert(b"x".to_vec());
    let err = db.commit(stale).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict {
                expected: 1,
                actual: 2
            }
        ),
        "{err}"
    );

    let mut missing = Batch::new();
    missing
        .insert(b"x".to_vec())
        .update(id, b"changed".to_vec())
        .update(50, b"y".to_vec());
    assert!(matches!(
        db.commit(missing),
        Err(Error::NotFound { id: 50 })
    ));

    let mut deleted_then_updated = Batch::new();
    deleted_then_updated.delete(id).update(id, b"z".to_vec());
    assert!(matches!(
        db.commit(deleted_then_updated),
        Err(Error::NotFound { .. })
    ));

    let mut big = Batch::new();
    big.insert(b"x".to_vec()).insert(vec![0; 9]);
    assert!(matches!(db.commit(big), Err(Error::ValueTooLarge { .. })));

    drop(db);
    let db = OurDb::open(dir.path(), cfg).unwrap();
    assert_eq!(db.get(id).unwrap(), Some(b"keep".to_vec()));
    assert_eq!(db.next_id(), 2);
    assert_eq!(db.len(), 1);
}

#[test]
fn databases_in_different_directories_are_independent() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let da = OurDb::open(a.path(), Config::default()).unwrap();
    let db = OurDb::open(b.path(), Config::default()).unwrap();
    da.insert(b"in a").unwrap();
    assert_eq!(db.get(1).unwrap(), None);
    assert_eq!(db.next_id(), 1);
    assert_eq!(da.path(), a.path());
}

#[test]
fn space_preallocated_in_sync_mode_is_reused_after_reopen_not_taken_for_damage() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        max_file_size: 64 << 10,
        ..Config::default()
    };
    let file = dir.path().join("data-00000000.odb");
    let db = OurDb::open(dir.path(), cfg.clone()).unwrap();
    db.insert(b"one").unwrap();
    drop(db);
    let preallocated = std::fs::metadata(&file).unwrap().len();
    assert!(preallocated > 1000, "sync mode preallocates zeroed space");
    for round in 0..3u8 {
        let db = OurDb::open(dir.path(), cfg.clone()).unwrap();
        db.insert(&[round; 10]).unwrap();
        drop(db);
        assert_eq!(
            std::fs::metadata(&file).unwrap().len(),
            preallocated,
            "space is reused, not cut"
        );
    }
    let db = OurDb::open(
        dir.path(),
        Config {
            durability: Durability::Flush,
            ..cfg.clone()
        },
    )
    .unwrap();
    for id in 5..2000 {
        assert_eq!(
            db.insert(&[7; 100]).unwrap(),
            id,
            "a flush-mode writer continues on the zeros"
        );
    }
    drop(db);
    let db = OurDb::open(dir.path(), cfg).unwrap();
    assert_eq!(db.get(1).unwrap(), Some(b"one".to_vec()));
    assert_eq!(db.get(4).unwrap(), Some(vec![2; 10]));
    assert_eq!(db.get(1999).unwrap(), Some(vec![7; 100]));
    assert_eq!(db.next_id(), 2000);
}

#[test]
fn unusable_configuration_is_refused_before_touching_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("db");
    for cfg in [
        Config {
            max_file_size: 32,
            ..Config::default()
        },
        Config {
            max_value_size: usize::MAX,
            ..Config::default()
        },
    ] {
        let err = OurDb::open(&target, cfg).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
        assert!(
            err.to_string().starts_with("invalid configuration: max_"),
            "{err}"
        );
    }
    assert!(!target.exists());
}

#[test]
fn stats_count_commits_fsyncs_and_file_bytes_and_file_bytes_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = OurDb::open(dir.path(), Config::default()).expect("open");
    let empty = db.stats();
    assert_eq!((empty.live_records, empty.commits), (0, 0));
    assert!(empty.file_bytes > 0, "the header counts: {empty:?}");
    for v in [b"a", b"b", b"c"] {
        db.insert(v).expect("insert");
    }
    db.delete(2).expect("delete");
    let after = db.stats();
    assert_eq!(after.live_records, 2);
    assert_eq!(after.commits, 4);
    assert!(
        after.fsyncs >= 4,
        "sync mode fsyncs every commit: {after:?}"
    );
    assert!(after.file_bytes > empty.file_bytes);
    db.close().expect("close");
    let db = OurDb::open(dir.path(), Config::default()).expect("reopen");
    let reopened = db.stats();
    assert_eq!(reopened.file_bytes, after.file_bytes);
    assert_eq!((reopened.live_records, reopened.commits), (2, 0));
}

/// In `Flush` mode a commit is not fsynced; the checkpoint's fdatasync of
/// the data file, which makes those commits durable before it covers them,
/// is counted with its time.
#[test]
fn the_fsync_a_checkpoint_makes_of_the_data_file_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        durability: Durability::Flush,
        checkpoint_bytes: 0,
        ..Config::default()
    };
    let db = OurDb::open(dir.path(), config).unwrap();
    db.insert(b"written, not synced").unwrap();
    let before = db.stats();
    assert_eq!(before.fsyncs, 0, "{before:?}");
    db.checkpoint().unwrap();
    let after = db.stats();
    assert_eq!(after.checkpoints, 1, "{after:?}");
    assert_eq!(after.fsyncs, 1, "{after:?}");
    assert!(after.fsync_time > before.fsync_time, "{after:?}");
}

#[test]
fn unsynced_commits_are_visible_at_once_and_one_sync_makes_them_durable() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        durability: Durability::Sync,
        ..Config::default()
    };
    let db = OurDb::open(dir.path(), config.clone()).unwrap();
    // The first commit preallocates (its own fsyncs); count from after it.
    db.insert(b"first").unwrap();
    let before = db.stats().fsyncs;
    let mut ids = Vec::new();
    for value in [&b"a"[..], b"b", b"c"] {
        let mut batch = Batch::new();
        batch.insert(value.to_vec());
        ids.extend(db.commit_unsynced(batch).unwrap());
    }
    assert_eq!(ids, vec![2, 3, 4]);
    assert_eq!(
        db.get(3).unwrap().as_deref(),
        Some(&b"b"[..]),
        "visible before the sync"
    );
    assert_eq!(db.stats().fsyncs, before, "no fsync per unsynced commit");
    db.sync().unwrap();
    assert_eq!(db.stats().fsyncs, before + 1, "one fsync for the group");
    drop(db);
    let db = OurDb::open(dir.path(), config).unwrap();
    assert_eq!(db.get(4).unwrap().as_deref(), Some(&b"c"[..]));
    assert_eq!(db.next_id(), 5);
}
