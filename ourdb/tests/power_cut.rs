//! What a power cut in the middle of a group commit's fsync can leave on
//! disk (`commit_unsynced` … `sync`, as the worker commits a group of
//! scripts): the disk may have stored a later frame of the group and not an
//! earlier one, whose bytes then read back as the zeros preallocated there.
//! None of the group was acknowledged; open cuts it (a frame the disk did
//! store before the first missing one stays, a commit never acknowledged and
//! whole) and keeps every acknowledged commit. Damage to frames that were
//! on stable storage (a sync marker after them) is still `Error::Corrupt`.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

mod common;

use common::{frames, last_data_file};
use ourdb::{Batch, Config, Durability, Error, OurDb};

fn config(durability: Durability) -> Config {
    Config {
        durability,
        checkpoint_bytes: 0,
        ..Config::default()
    }
}

/// The frame's bytes never reached the disk: they read back as zeros.
fn lose(path: &Path, (at, len): (u64, u64)) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&vec![0u8; 12 + len as usize], at).unwrap();
}

/// One acknowledged commit, then a group of three commits written and never
/// synced (the power went during its fsync: no `sync` returned). Returns the
/// acknowledged id and the group's ids.
fn acknowledged_then_a_group(db: &OurDb) -> (u32, Vec<u32>) {
    let kept = db.insert(b"acknowledged").unwrap();
    let group = ["first of the group", "second", "third"]
        .iter()
        .map(|v| {
            let mut b = Batch::new();
            b.insert(v.as_bytes().repeat(100));
            db.commit_unsynced(b).unwrap()[0]
        })
        .collect();
    (kept, group)
}

/// A store left as the power went during a group's fsync (see
/// [`acknowledged_then_a_group`]), its last data file and that file's frames.
struct Cut {
    dir: tempfile::TempDir,
    cfg: Config,
    kept: u32,
    group: Vec<u32>,
    file: PathBuf,
    frames: Vec<(u64, u64)>,
}

fn power_cut_in_a_group(durability: Durability) -> Cut {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(durability);
    let db = OurDb::open(dir.path(), cfg.clone()).unwrap();
    let (kept, group) = acknowledged_then_a_group(&db);
    drop(db);
    let file = last_data_file(dir.path());
    let frames = frames(&file);
    Cut {
        dir,
        cfg,
        kept,
        group,
        file,
        frames,
    }
}

impl Cut {
    fn open(&self) -> ourdb::Result<OurDb> {
        OurDb::open(self.dir.path(), self.cfg.clone())
    }
}

#[test]
fn a_group_whose_first_frame_was_lost_is_cut_and_every_acknowledged_commit_stays() {
    let cut = power_cut_in_a_group(Durability::Sync);
    let (kept, group, file, f) = (cut.kept, &cut.group, &cut.file, &cut.frames);
    // The commit, its sync marker, the group's three frames.
    assert_eq!(
        f.iter().map(|&(_, len)| len == 8).collect::<Vec<_>>(),
        [false, true, false, false, false]
    );
    lose(file, f[2]);
    let db = cut.open().unwrap();
    assert_eq!(db.get(kept).unwrap(), Some(b"acknowledged".to_vec()));
    for id in group {
        assert_eq!(db.get(*id).unwrap(), None, "id {id} of the torn group");
    }
    // Cut where the group started: writing goes on from there, and survives.
    assert_eq!(std::fs::metadata(file).unwrap().len(), f[2].0);
    let after = db.insert(b"after the power cut").unwrap();
    assert_eq!(after, group[0]);
    db.close().unwrap();
    let db = cut.open().unwrap();
    assert_eq!(
        db.get(after).unwrap(),
        Some(b"after the power cut".to_vec())
    );
    assert_eq!(db.get(kept).unwrap(), Some(b"acknowledged".to_vec()));
}

#[test]
fn a_group_frame_stored_before_the_lost_one_stays_and_the_rest_is_cut() {
    let cut = power_cut_in_a_group(Durability::Sync);
    lose(&cut.file, cut.frames[3]);
    let db = cut.open().unwrap();
    let group = &cut.group;
    assert_eq!(db.get(cut.kept).unwrap(), Some(b"acknowledged".to_vec()));
    // A prefix of the group, as a crash after its first commit would leave.
    assert_eq!(
        db.get(group[0]).unwrap(),
        Some(b"first of the group".repeat(100))
    );
    assert_eq!(db.get(group[1]).unwrap(), None);
    assert_eq!(db.get(group[2]).unwrap(), None);
}

#[test]
fn a_lost_sync_marker_and_group_cut_there_keep_the_commits_it_followed() {
    let cut = power_cut_in_a_group(Durability::Sync);
    // The marker was written after the fsync that acknowledged the commit,
    // and the next fsync, the group's, never completed.
    lose(&cut.file, cut.frames[1]);
    lose(&cut.file, cut.frames[2]);
    let db = cut.open().unwrap();
    assert_eq!(db.get(cut.kept).unwrap(), Some(b"acknowledged".to_vec()));
    assert!(cut.group.iter().all(|id| db.get(*id).unwrap().is_none()));
}

#[test]
fn damage_to_frames_a_sync_marker_follows_is_still_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(Durability::Sync);
    let db = OurDb::open(dir.path(), cfg.clone()).unwrap();
    let (_, _) = acknowledged_then_a_group(&db);
    db.sync().unwrap();
    db.insert(b"later").unwrap();
    drop(db);
    let file = last_data_file(dir.path());
    let f = frames(&file);
    // A group that was synced (its marker follows it): a lost frame of it
    // is damage, not a power cut.
    lose(&file, f[3]);
    let err = OurDb::open(dir.path(), cfg).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { file: at, offset, .. } if *at == file && *offset == f[3].0),
        "{err}"
    );
}

#[test]
fn a_file_written_without_sync_markers_reports_the_same_damage_as_corrupt() {
    // `Durability::Flush` (no fsync, so no markers; a power cut is not
    // covered there): valid frames after a bad one stay corruption.
    let cut = power_cut_in_a_group(Durability::Flush);
    assert!(
        cut.frames.iter().all(|&(_, len)| len != 8),
        "no markers: {:?}",
        cut.frames
    );
    lose(&cut.file, cut.frames[1]);
    let err = cut.open().unwrap_err();
    assert!(matches!(&err, Error::Corrupt { .. }), "{err}");
}

#[test]
fn a_store_written_without_markers_takes_sync_commits_in_a_new_file_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = OurDb::open(dir.path(), config(Durability::Flush)).unwrap();
    let before = db.insert(b"written in flush mode").unwrap();
    db.close().unwrap();
    let old = last_data_file(dir.path());
    let cfg = config(Durability::Sync);
    let db = OurDb::open(dir.path(), cfg.clone()).unwrap();
    let (kept, group) = acknowledged_then_a_group(&db);
    drop(db);
    let file = last_data_file(dir.path());
    assert_ne!(file, old, "the commits went to a new file");
    lose(&file, frames(&file)[2]);
    let db = OurDb::open(dir.path(), cfg).unwrap();
    assert_eq!(
        db.get(before).unwrap(),
        Some(b"written in flush mode".to_vec())
    );
    assert_eq!(db.get(kept).unwrap(), Some(b"acknowledged".to_vec()));
    assert!(group.iter().all(|id| db.get(*id).unwrap().is_none()));
}

/// The mirror case: a store created in `Sync` mode and run on in `Flush`
/// mode. Its `Flush` commits (no marker after each) go to a new file
/// without the markers flag, so damage among them, valid frames after it,
/// is `Corrupt`, not a torn group cut with every acknowledged commit after
/// it (and their ids handed out again).
#[test]
fn a_store_written_with_markers_takes_flush_commits_in_a_new_file_without_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = OurDb::open(dir.path(), config(Durability::Sync)).unwrap();
    db.insert(b"written in sync mode").unwrap();
    db.close().unwrap();
    let old = last_data_file(dir.path());
    let cfg = config(Durability::Flush);
    let db = OurDb::open(dir.path(), cfg.clone()).unwrap();
    for i in 0..50u32 {
        db.insert(format!("record {i}").as_bytes()).unwrap();
    }
    // Gone without close, the writes kept by the OS.
    drop(db);
    let file = last_data_file(dir.path());
    assert_ne!(file, old, "the commits went to a new file");
    let frames = frames(&file);
    assert!(
        frames.iter().all(|&(_, len)| len != 8),
        "no markers: {frames:?}"
    );
    // A flipped byte in a commit that 39 more follow.
    let (at, _) = frames[frames.len() - 40];
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file)
        .unwrap();
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, at + 30).unwrap();
    f.write_all_at(&[byte[0] ^ 1], at + 30).unwrap();
    let err = OurDb::open(dir.path(), cfg).unwrap_err();
    assert!(matches!(&err, Error::Corrupt { .. }), "{err}");
}

#[test]
fn a_group_torn_after_a_compaction_is_cut_and_the_compacted_records_stay() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(Durability::Sync);
    let db = OurDb::open(dir.path(), cfg.clone()).unwrap();
    let id = db.insert(b"v1").unwrap();
    db.update(id, b"v2").unwrap();
    db.compact().unwrap();
    let (kept, group) = acknowledged_then_a_group(&db);
    drop(db);
    let file = last_data_file(dir.path());
    let f = frames(&file);
    let first_of_group = f.len() - 3;
    lose(&file, f[first_of_group]);
    let db = OurDb::open(dir.path(), cfg.clone()).unwrap();
    assert_eq!(db.get(id).unwrap(), Some(b"v2".to_vec()));
    assert_eq!(db.get(kept).unwrap(), Some(b"acknowledged".to_vec()));
    assert!(group.iter().all(|g| db.get(*g).unwrap().is_none()));
    drop(db);

    // Damage inside what the compaction wrote (a marker ends it) is not;
    // without the checkpoint the compaction wrote, open scans it.
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    lose(&file, f[0]);
    let err = OurDb::open(dir.path(), cfg).unwrap_err();
    assert!(matches!(&err, Error::Corrupt { .. }), "{err}");
}
