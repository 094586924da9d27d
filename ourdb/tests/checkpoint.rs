//! The checkpoint: open starts from it and scans only later frames; a
//! damaged, cut, stale or foreign checkpoint is ignored (every frame is
//! scanned) and the data read back is the same; a data file shorter than a
//! whole checkpoint shows it was is `Corrupt`.

use std::fs::{self, OpenOptions};
use std::path::Path;

mod common;

use ourdb::{Config, Durability, OurDb};

fn config() -> Config {
    Config {
        durability: Durability::Flush,
        max_file_size: 16 << 10,
        ..Config::default()
    }
}

/// Per id: its live value and its full history.
type Contents = Vec<(u32, Option<Vec<u8>>, Vec<Vec<u8>>)>;

/// Live values by id, and each id's full history, read through `db`.
fn contents(db: &OurDb) -> Contents {
    (1..db.next_id())
        .map(|id| (id, db.get(id).unwrap(), db.history(id, usize::MAX).unwrap()))
        .collect()
}

/// A closed store over several files with updates and deletes; returns what
/// it holds.
fn build(dir: &Path) -> Contents {
    let db = OurDb::open(dir, config()).unwrap();
    for i in 0..200u32 {
        let id = db.insert(&i.to_le_bytes().repeat(20)).unwrap();
        if i % 3 == 0 {
            db.update(id, b"updated").unwrap();
        }
        if i % 7 == 0 {
            db.delete(id).unwrap();
        }
    }
    let want = contents(&db);
    db.close().unwrap();
    want
}

fn checkpoint(dir: &Path) -> std::path::PathBuf {
    dir.join("checkpoint")
}

#[test]
fn open_after_close_starts_from_the_checkpoint_and_scans_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let want = build(dir.path());
    let db = OurDb::open(dir.path(), config()).unwrap();
    let st = db.stats();
    assert!(st.opened_from_checkpoint);
    assert_eq!(st.open_scanned_bytes, 0);
    assert_eq!(contents(&db), want);
    assert_eq!(db.insert(b"more").unwrap(), 201);
}

#[test]
fn frames_committed_after_the_checkpoint_are_scanned_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let db = OurDb::open(dir.path(), config()).unwrap();
    // Enough to roll over to further files after the checkpoint's end.
    for i in 0..100u32 {
        db.update([2, 3, 5, 6, 10][i as usize % 5], &[i as u8; 300])
            .unwrap();
    }
    db.insert(b"last").unwrap();
    let want = contents(&db);
    drop(db); // no close: no checkpoint of these
    let db = OurDb::open(dir.path(), config()).unwrap();
    let st = db.stats();
    assert!(st.opened_from_checkpoint);
    assert!(st.open_scanned_bytes > 100 * 300, "{st:?}");
    assert_eq!(contents(&db), want);
}

#[test]
fn background_thread_writes_checkpoints_while_commits_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        checkpoint_bytes: 4 << 10,
        ..config()
    };
    let db = OurDb::open(dir.path(), cfg.clone()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut i = 0u32;
    while db.stats().checkpoints < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint written"
        );
        db.insert(&[i as u8; 500]).unwrap();
        i += 1;
    }
    let want = contents(&db);
    drop(db);
    let db = OurDb::open(dir.path(), cfg).unwrap();
    assert!(db.stats().opened_from_checkpoint);
    assert_eq!(contents(&db), want);
}

/// Opens after `damage` changed the checkpoint: it must be ignored (a full
/// scan) and the data the same.
fn ignored_after(damage: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let want = build(dir.path());
    damage(dir.path());
    let db = OurDb::open(dir.path(), config()).unwrap();
    let st = db.stats();
    assert!(!st.opened_from_checkpoint, "{st:?}");
    assert_eq!(
        st.open_scanned_bytes,
        st.file_bytes - 32 * data_files(dir.path())
    );
    assert_eq!(contents(&db), want);
    // And a close writes a good one again.
    db.close().unwrap();
    assert!(
        OurDb::open(dir.path(), config())
            .unwrap()
            .stats()
            .opened_from_checkpoint
    );
}

fn data_files(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "odb")
        })
        .count() as u64
}

#[test]
fn a_flipped_byte_anywhere_in_the_checkpoint_makes_open_scan_everything() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let len = fs::metadata(checkpoint(dir.path())).unwrap().len();
    for at in [
        0,
        8,
        13,
        17,
        21,
        30,
        37,
        41,
        44,
        53,
        60,
        len / 2,
        len - 5,
        len - 1,
    ] {
        ignored_after(|dir| {
            let mut b = fs::read(checkpoint(dir)).unwrap();
            b[at as usize] ^= 0x10;
            fs::write(checkpoint(dir), b).unwrap();
        });
    }
}

#[test]
fn a_truncated_or_empty_checkpoint_is_ignored() {
    for keep in [0, 10, 59, 100] {
        ignored_after(|dir| {
            let f = OpenOptions::new()
                .write(true)
                .open(checkpoint(dir))
                .unwrap();
            f.set_len(keep).unwrap();
        });
    }
    ignored_after(|dir| {
        let b = fs::read(checkpoint(dir)).unwrap();
        fs::write(checkpoint(dir), &b[..b.len() - 1]).unwrap();
    });
}

#[test]
fn a_checkpoint_whose_checksum_holds_but_whose_entries_lie_is_ignored() {
    // Layout: 60-byte header, then 16 bytes per id from 1 (file u32,
    // value_len u32, offset u64), then a CRC32 of everything before it.
    let rewrite = |dir: &Path, edit: &dyn Fn(&mut Vec<u8>)| {
        let mut b = fs::read(checkpoint(dir)).unwrap();
        b.truncate(b.len() - 4);
        edit(&mut b);
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        fs::write(checkpoint(dir), b).unwrap();
    };
    // Id 2 (live; id 1 is deleted): a value length reaching past the data.
    ignored_after(|dir| {
        rewrite(dir, &|b| {
            b[80..84].copy_from_slice(&(1u32 << 30).to_le_bytes())
        })
    });
    // An offset inside a file header.
    ignored_after(|dir| rewrite(dir, &|b| b[84..92].copy_from_slice(&3u64.to_le_bytes())));
    // A next id below the ids in the index.
    ignored_after(|dir| rewrite(dir, &|b| b[40..44].copy_from_slice(&2u32.to_le_bytes())));
}

#[test]
fn a_checkpoint_from_another_database_is_ignored() {
    let other = tempfile::tempdir().unwrap();
    let db = OurDb::open(other.path(), config()).unwrap();
    for i in 0..200u32 {
        db.insert(&i.to_be_bytes().repeat(21)).unwrap();
    }
    db.close().unwrap();
    ignored_after(|dir| {
        fs::copy(checkpoint(other.path()), checkpoint(dir)).unwrap();
    });
}

/// Where the checkpoint of `dir` says its data ends: (file, offset).
fn checkpoint_end(dir: &Path) -> (u32, u64) {
    let b = fs::read(checkpoint(dir)).unwrap();
    (
        u32::from_le_bytes(b[16..20].try_into().unwrap()),
        u64::from_le_bytes(b[20..28].try_into().unwrap()),
    )
}

fn cut(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// A checkpoint is written only after the data it covers was synced: a
/// data file shorter than that lost committed records, which an open that
/// went on would forget and whose ids it would hand out again.
#[test]
fn a_data_file_cut_below_its_checkpoint_end_is_corrupt_naming_its_length_and_that_end() {
    for (durability, name) in [(Durability::Flush, "flush"), (Durability::Sync, "sync")] {
        let cfg = Config {
            durability,
            ..config()
        };
        let dir = tempfile::tempdir().unwrap();
        let db = OurDb::open(dir.path(), cfg.clone()).unwrap();
        for i in 0..40u32 {
            db.insert(&i.to_le_bytes().repeat(10)).unwrap();
        }
        db.close().unwrap();
        let last = common::last_data_file(dir.path());
        let (end_file, end) = checkpoint_end(dir.path());
        assert_eq!(
            last,
            dir.path().join(format!("data-{end_file:08}.odb")),
            "{name}"
        );
        // Sync mode preallocates past the end: cutting only those zeros is
        // no loss.
        if durability == Durability::Sync {
            assert!(fs::metadata(&last).unwrap().len() > end, "{name}");
            cut(&last, end);
            let db = OurDb::open(dir.path(), cfg.clone()).unwrap();
            assert!(db.stats().opened_from_checkpoint, "{name}");
            assert_eq!(db.len(), 40, "{name}");
            db.close().unwrap();
            assert_eq!(checkpoint_end(dir.path()), (end_file, end), "{name}");
        }
        let short = end - 50;
        cut(&last, short);
        for _ in 0..2 {
            let err = OurDb::open(dir.path(), cfg.clone()).unwrap_err();
            match &err {
                ourdb::Error::Corrupt { file, offset, .. } => {
                    assert_eq!((file, *offset), (&last, short), "{name}: {err}")
                }
                other => panic!("{name}: expected Corrupt, got {other}"),
            }
            assert_eq!(
                err.to_string(),
                format!(
                    "corrupt data in {} at offset {short}: data file is {short} bytes long, \
                     shorter than its checkpoint shows it was: the checkpoint covers it up \
                     to offset {end}, synced before the checkpoint was written",
                    last.display()
                ),
                "{name}"
            );
            assert_eq!(
                fs::metadata(&last).unwrap().len(),
                short,
                "{name}: the refused open cut nothing"
            );
        }
    }
}

#[test]
fn a_missing_last_data_file_its_checkpoint_covers_is_corrupt_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let last = common::last_data_file(dir.path());
    let (_, end) = checkpoint_end(dir.path());
    fs::remove_file(&last).unwrap();
    let err = OurDb::open(dir.path(), config()).unwrap_err();
    assert!(
        matches!(&err, ourdb::Error::Corrupt { file, offset: 0, .. } if *file == last),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "corrupt data in {} at offset 0: data file is missing, though the checkpoint \
             shows it held data up to offset {end}, synced before the checkpoint was written",
            last.display()
        )
    );
}

/// Every data file deleted while the store was stopped, its checkpoint left:
/// `Corrupt`, naming how to start empty on purpose; open creates nothing.
/// Without the checkpoint too, the store starts empty.
#[test]
fn every_data_file_gone_beside_a_checkpoint_that_covers_records_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let files = common::data_files(dir.path());
    assert!(files.len() > 1, "{files:?}");
    let last = common::last_data_file(dir.path());
    let (_, end) = checkpoint_end(dir.path());
    for file in &files {
        fs::remove_file(file).unwrap();
    }
    let err = OurDb::open(dir.path(), config()).unwrap_err();
    assert!(
        matches!(&err, ourdb::Error::Corrupt { file, offset: 0, .. } if *file == last),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "corrupt data in {} at offset 0: no data file is left in {}, though its checkpoint \
             shows this one held data up to offset {end}, synced before the checkpoint was \
             written (the data files were deleted); to start this database empty, remove {} too",
            last.display(),
            dir.path().display(),
            checkpoint(dir.path()).display()
        )
    );
    assert!(
        common::data_files(dir.path()).is_empty(),
        "open created none"
    );
    // Damaged too, it still proves records were there.
    let mut bytes = fs::read(checkpoint(dir.path())).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(checkpoint(dir.path()), &bytes).unwrap();
    let err = OurDb::open(dir.path(), config()).unwrap_err();
    assert!(
        matches!(&err, ourdb::Error::Corrupt { file, .. } if *file == checkpoint(dir.path())),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("no data file is left in")
            && message.contains(&format!(
                "to start this database empty, remove {} too",
                checkpoint(dir.path()).display()
            )),
        "{message}"
    );
    assert!(common::data_files(dir.path()).is_empty());
    fs::remove_file(checkpoint(dir.path())).unwrap();
    let db = OurDb::open(dir.path(), config()).unwrap();
    assert_eq!(db.next_id(), 1);
}

/// Only a whole checkpoint proves what a data file held: beside a damaged
/// one, a cut data file is read as a torn tail, as it is without one.
#[test]
fn a_damaged_checkpoint_beside_a_cut_data_file_is_ignored_and_the_tail_cut() {
    let dir = tempfile::tempdir().unwrap();
    let db = OurDb::open(dir.path(), config()).unwrap();
    let a = db.insert(b"kept").unwrap();
    let b = db.insert(b"cut by a torn tail").unwrap();
    db.close().unwrap();
    let last = common::last_data_file(dir.path());
    let len = fs::metadata(&last).unwrap().len();
    cut(&last, len - 3);
    let mut cp = fs::read(checkpoint(dir.path())).unwrap();
    let at = cp.len() - 1;
    cp[at] ^= 0x10;
    fs::write(checkpoint(dir.path()), cp).unwrap();
    let db = OurDb::open(dir.path(), config()).unwrap();
    assert!(!db.stats().opened_from_checkpoint);
    assert_eq!(db.get(a).unwrap(), Some(b"kept".to_vec()));
    assert_eq!(
        db.get(b).unwrap(),
        None,
        "the checkpoint did not bring it back"
    );
    assert_eq!(db.next_id(), b);
}

/// A whole checkpoint open did not trust (here the frame it ends with was
/// damaged, and the scan cut that frame as a torn tail) is removed: after a
/// crash (no close, so no new checkpoint) the next open finds no checkpoint
/// that covers more than the file holds.
#[test]
fn a_checkpoint_open_ignored_does_not_fail_the_next_open_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let db = OurDb::open(dir.path(), config()).unwrap();
    let a = db.insert(b"kept").unwrap();
    let b = db.insert(b"its frame is damaged").unwrap();
    db.close().unwrap();
    let last = common::last_data_file(dir.path());
    let (at, len) = *common::frames(&last).last().unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&last)
        .unwrap();
    let flip_at = at + 12 + len - 1;
    let mut byte = [0u8];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut byte, flip_at).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[byte[0] ^ 1], flip_at).unwrap();

    let db = OurDb::open(dir.path(), config()).unwrap();
    assert!(!db.stats().opened_from_checkpoint);
    assert_eq!(db.get(b).unwrap(), None, "cut as a torn tail");
    assert!(!checkpoint(dir.path()).exists());
    drop(db);
    let db = OurDb::open(dir.path(), config()).expect("the next open after a crash");
    assert_eq!(db.get(a).unwrap(), Some(b"kept".to_vec()));
    assert_eq!(db.next_id(), b);
}

#[test]
fn a_checkpoint_from_before_a_compaction_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let old = fs::read(checkpoint(dir.path())).unwrap();
    let db = OurDb::open(dir.path(), config()).unwrap();
    db.compact().unwrap();
    db.update(3, b"after compaction").unwrap();
    let want = contents(&db);
    drop(db);
    fs::write(checkpoint(dir.path()), old).unwrap();
    let db = OurDb::open(dir.path(), config()).unwrap();
    assert!(!db.stats().opened_from_checkpoint);
    assert_eq!(contents(&db), want);
}

#[test]
fn damage_before_the_checkpoint_end_is_reported_on_read_not_returned() {
    let dir = tempfile::tempdir().unwrap();
    let db = OurDb::open(dir.path(), config()).unwrap();
    let id = db.insert(b"first value").unwrap();
    db.insert(b"second").unwrap();
    db.close().unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.path().join("data-00000000.odb"))
        .unwrap();
    // Inside the first value (header 32, frame header 12, payload header 8, op header 25).
    std::os::unix::fs::FileExt::write_all_at(&f, b"X", 32 + 12 + 8 + 25 + 2).unwrap();
    let db = OurDb::open(dir.path(), config()).unwrap();
    assert!(db.stats().opened_from_checkpoint);
    let err = db.get(id).unwrap_err();
    assert!(matches!(err, ourdb::Error::Corrupt { .. }), "{err}");
}

/// A checksum-valid incremental checkpoint that ends right after the header
/// of data file 0 (no last frame, as one taken of an empty last file), with
/// `next_id` and dense `entries` (file, value_len, offset) from id 1.
fn at_a_header(next_id: u32, entries: &[(u32, u32, u64)]) -> Vec<u8> {
    let mut b = b"OURDBCK1".to_vec();
    b.extend_from_slice(&[1, 0, 0, 0]); // incremental
    b.extend_from_slice(&0u32.to_le_bytes()); // first file
    b.extend_from_slice(&0u32.to_le_bytes()); // end file
    b.extend_from_slice(&32u64.to_le_bytes()); // end offset: the header's end
    b.extend_from_slice(&u64::MAX.to_le_bytes()); // no last frame
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&next_id.to_le_bytes());
    b.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]); // dense, superseded unknown
    b.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    assert_eq!(b.len(), 60);
    for &(file, len, offset) in entries {
        b.extend_from_slice(&file.to_le_bytes());
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(&offset.to_le_bytes());
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

#[test]
fn a_checkpoint_that_ends_at_a_file_header_is_checked_all_the_same() {
    // The shape itself is sound: an empty store's.
    let sound = tempfile::tempdir().unwrap();
    OurDb::open(sound.path(), config())
        .unwrap()
        .close()
        .unwrap();
    fs::write(checkpoint(sound.path()), at_a_header(1, &[])).unwrap();
    let db = OurDb::open(sound.path(), config()).unwrap();
    assert!(db.stats().opened_from_checkpoint);
    assert_eq!(db.insert(b"first").unwrap(), 1);
    // Lies in it are not: a location past the data, a next id of 0.
    for lie in [
        at_a_header(2, &[(0, 1 << 30, 1 << 40)]),
        at_a_header(0, &[]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        OurDb::open(dir.path(), config()).unwrap().close().unwrap();
        fs::write(checkpoint(dir.path()), lie).unwrap();
        let db = OurDb::open(dir.path(), config()).unwrap();
        assert!(!db.stats().opened_from_checkpoint);
        assert_eq!((db.len(), db.exists(1).unwrap()), (0, false));
        assert_eq!(db.insert(b"first").unwrap(), 1);
        db.close().unwrap();
        let db = OurDb::open(dir.path(), config()).unwrap();
        assert_eq!(db.get(1).unwrap(), Some(b"first".to_vec()));
    }
}
