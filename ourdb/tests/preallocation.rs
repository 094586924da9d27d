//! `Durability::Sync` reserves data file space ahead of the commits, 1 MiB
//! at a time: when that reservation fails, the commit fails saying how much
//! it tried to reserve, and the store goes on once there is room. The
//! failure is real: a file size limit (RLIMIT_FSIZE) below what it reserves,
//! in this test binary's own process.

mod common;

use std::path::Path;

use ourdb::{Config, Durability, Error, OurDb};

fn data_file(dir: &Path) -> std::path::PathBuf {
    dir.join("data-00000000.odb")
}

#[test]
fn a_commit_that_cannot_reserve_space_says_how_much_it_tried_and_the_store_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        durability: Durability::Sync,
        checkpoint_bytes: 0,
        ..Config::default()
    };
    let db = OurDb::open(dir.path(), cfg.clone()).unwrap();
    let old = common::set_soft_limit(libc::RLIMIT_FSIZE, 200 << 10);
    let err = db.insert(&[7u8; 40]).unwrap_err();
    common::set_soft_limit(libc::RLIMIT_FSIZE, old);

    // 32-byte header; the frame: 12-byte header, 8-byte payload header,
    // 25-byte op header and the 40-byte value; then 1 MiB ahead.
    let reserving = 12 + 8 + 25 + 40 + (1 << 20);
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "preallocating {reserving} bytes in {} (sync mode reserves data file space \
             1 MiB at a time): File too large (os error 27)",
            data_file(dir.path()).display()
        )
    );
    // Nothing of it stays, and the handle takes writes again.
    assert_eq!(db.write_failure(), None);
    assert_eq!(std::fs::metadata(data_file(dir.path())).unwrap().len(), 32);
    assert_eq!(db.insert(&[8u8; 40]).unwrap(), 1);
    drop(db);
    let db = OurDb::open(dir.path(), cfg).unwrap();
    assert_eq!(db.get(1).unwrap(), Some(vec![8u8; 40]));
    assert_eq!(db.next_id(), 2);
}
