use std::cell::Cell;

use crate::index::Index;
use crate::{Batch, Config, Error, OurDb};

thread_local! {
    /// Makes every fsync of this thread fail (an I/O error the disk
    /// cannot be made to give on demand).
    pub(crate) static FAIL_SYNC: Cell<bool> = const { Cell::new(false) };
}

#[test]
fn a_failed_fsync_of_a_checkpoint_poisons_the_handle_too() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = OurDb::open(dir.path(), Config::default()).expect("open");
    let mut batch = Batch::new();
    batch.insert(b"not synced yet".to_vec());
    db.commit_unsynced(batch).expect("commit");
    FAIL_SYNC.with(|f| f.set(true));
    let err = db.checkpoint().expect_err("its fsync fails");
    FAIL_SYNC.with(|f| f.set(false));
    assert!(err.to_string().contains("syncing"), "{err}");
    // The error may have been the only report of lost write-back: a sync
    // now must not say the commit is on disk.
    assert!(matches!(db.sync(), Err(Error::Poisoned { .. })));
}

#[test]
fn a_failed_fsync_poisons_the_handle_until_it_is_reopened() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = OurDb::open(dir.path(), Config::default()).expect("open");
    assert_eq!(db.insert(b"a").expect("insert"), 1);

    FAIL_SYNC.with(|f| f.set(true));
    let err = db.insert(b"b").expect_err("fsync fails");
    FAIL_SYNC.with(|f| f.set(false));
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("syncing"), "{err}");

    // Whatever the disk does now, this handle writes nothing more: the
    // kernel may report a write-back error only once, so a later fsync
    // could succeed over lost data.
    let err = db.insert(b"c").expect_err("poisoned");
    assert!(matches!(err, Error::Poisoned { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "names the directory: {err}"
    );
    assert!(matches!(db.sync(), Err(Error::Poisoned { .. })));
    let mut batch = Batch::new();
    batch.insert(b"d".to_vec());
    assert!(matches!(db.commit(batch), Err(Error::Poisoned { .. })));
    // Reads still work, and see only what was acknowledged before.
    assert_eq!(db.get(1).expect("get"), Some(b"a".to_vec()));
    assert_eq!(db.next_id(), 2, "the failed commit was never published");

    drop(db);
    let db = OurDb::open(dir.path(), Config::default()).expect("reopen recovers");
    assert_eq!(db.get(1).expect("get"), Some(b"a".to_vec()));
    // The commit whose fsync failed had been written: after reopen it may
    // be there (its outcome was unknown, not refused); nothing after it is.
    let next = db.next_id();
    assert!(next == 2 || next == 3, "next id {next}");
    assert_eq!(db.insert(b"e").expect("writes again"), next);
}

#[test]
fn inserts_stop_with_id_space_exhausted_after_the_last_id() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = OurDb::open(dir.path(), Config::default()).expect("open");
    {
        // Jump near the end of the id space without 4 billion inserts.
        let mut st = db.store.write_state();
        st.index = Index::sparse();
        st.next_id = u32::MAX - 2;
    }
    assert_eq!(db.insert(b"a").expect("insert"), u32::MAX - 2);
    let mut two = Batch::new();
    two.insert(b"b".to_vec()).insert(b"c".to_vec());
    assert!(matches!(db.commit(two), Err(Error::IdSpaceExhausted)));
    assert_eq!(db.insert(b"b").expect("insert"), u32::MAX - 1);
    assert_eq!(db.next_id(), u32::MAX);
    let err = db.insert(b"c").expect_err("no ids left");
    assert!(matches!(err, Error::IdSpaceExhausted));
    assert_eq!(err.to_string(), "id space exhausted");
    assert_eq!(db.get(u32::MAX - 1).expect("get"), Some(b"b".to_vec()));
    db.update(u32::MAX - 1, b"still updatable").expect("update");
    assert_eq!(db.next_id(), u32::MAX);
}

#[test]
fn a_commit_after_the_directory_was_removed_fails_and_poisons_the_handle() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db_dir = dir.path().join("db");
    let db = OurDb::open(&db_dir, Config::default()).expect("open");
    assert_eq!(db.insert(b"kept").expect("insert"), 1);
    std::fs::remove_dir_all(&db_dir).expect("remove the directory");

    let err = db.insert(b"lost").expect_err("its file is gone");
    assert!(
        err.to_string().contains("data-00000000.odb") && err.to_string().contains("deleted"),
        "{err}"
    );
    assert!(db.write_failure().is_some());
    assert_eq!(db.get(1).expect("get").as_deref(), Some(&b"kept"[..]));
    assert_eq!(db.next_id(), 2, "nothing was given an id");
}

#[test]
fn a_group_synced_after_the_directory_was_removed_fails_at_its_sync() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db_dir = dir.path().join("db");
    let db = OurDb::open(&db_dir, Config::default()).expect("open");
    let mut batch = Batch::new();
    batch.insert(b"in the group".to_vec());
    db.commit_unsynced(batch).expect("the group's commit");
    std::fs::remove_dir_all(&db_dir).expect("remove the directory");

    let err = db.sync().expect_err("the group's file is gone");
    assert!(err.to_string().contains("deleted"), "{err}");
    assert!(db.write_failure().is_some());
}

#[test]
fn an_unsynced_commit_finds_the_directory_removed_within_the_check_interval() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db_dir = dir.path().join("db");
    let config = Config {
        durability: crate::Durability::Flush,
        ..Config::default()
    };
    let db = OurDb::open(&db_dir, config).expect("open");
    assert_eq!(db.insert(b"kept").expect("insert"), 1);
    std::fs::remove_dir_all(&db_dir).expect("remove the directory");
    std::thread::sleep(super::LINK_CHECK_EVERY);

    let err = db.insert(b"lost").expect_err("its file is gone");
    assert!(err.to_string().contains("deleted"), "{err}");
    assert!(db.write_failure().is_some());
    assert_eq!(db.next_id(), 2, "nothing was given an id");
}
