//! A full disk (ENOSPC) refuses writes cleanly: reads go on, the handle is
//! not poisoned, writes succeed again once space is freed, and a reopen
//! finds every acknowledged record; a checkpoint that does not fit keeps
//! no room. On a real 8 MiB tmpfs, so it needs root (as the test suite's
//! set-up does); as another user it says so and checks nothing.

use std::path::{Path, PathBuf};

use ourdb::{Config, Durability, OurDb};

struct Mount(PathBuf);

impl Mount {
    fn new(size: &str) -> Option<Mount> {
        // `keep`: the directory outlives the TempDir, for the mount; Drop
        // removes it.
        let dir = tempfile::tempdir().unwrap().keep();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Mount(dir))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Whether this runs as root, which mounts the tmpfs; says so when not.
fn root() -> bool {
    // `/proc/self` belongs to the process's effective user.
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
    if uid != 0 {
        eprintln!("not root: no tmpfs to fill, nothing checked");
    }
    uid == 0
}

fn fill(path: &Path, leave: u64) {
    // Writes a filler file until the disk is full, then shrinks it to leave `leave` bytes free.
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![7u8; 4096];
    let mut n = 0u64;
    while f.write_all(&chunk).is_ok() {
        n += 4096;
    }
    let _ = f.flush();
    f.set_len(n.saturating_sub(leave)).unwrap();
}

fn run(durability: Durability) {
    if !root() {
        return;
    }
    let m = Mount::new("8m").expect("root mounts a tmpfs");
    let dir = m.0.join("db");
    let filler = m.0.join("filler");
    let config = Config {
        durability,
        checkpoint_bytes: 0,
        compaction_min_bytes: 0,
        ..Config::default()
    };
    let db = OurDb::open(&dir, config.clone()).unwrap();
    fill(&filler, 3 << 20);
    let value = vec![b'x'; 50_000];
    let mut ids = Vec::new();
    let err = loop {
        match db.insert(&value) {
            Ok(id) => ids.push(id),
            Err(e) => break e,
        }
        assert!(ids.len() < 1000, "the disk never filled");
    };
    assert!(!ids.is_empty(), "the first insert fits: {err}");
    assert!(
        db.write_failure().is_none(),
        "poisoned: {:?}",
        db.write_failure()
    );
    for &id in &ids {
        assert_eq!(db.get(id).unwrap().as_deref(), Some(&value[..]), "id {id}");
    }
    // A second refused write, then space again.
    assert!(db.insert(&value).is_err());
    std::fs::remove_file(&filler).unwrap();
    let id = db
        .insert(b"after")
        .expect("writes go on once there is space");
    ids.push(id);
    assert_eq!(
        id,
        *ids.first().unwrap() + ids.len() as u32 - 1,
        "ids without gaps"
    );
    db.close().unwrap();
    let db = OurDb::open(&dir, config).unwrap();
    for &id in &ids[..ids.len() - 1] {
        assert_eq!(
            db.get(id).unwrap().as_deref(),
            Some(&value[..]),
            "id {id} after reopen"
        );
    }
    assert_eq!(db.get(id).unwrap().as_deref(), Some(&b"after"[..]));
    assert_eq!(db.next_id(), id + 1);
}

#[test]
fn a_full_disk_refuses_sync_commits_cleanly_and_loses_nothing() {
    run(Durability::Sync);
}

#[test]
fn a_full_disk_refuses_flush_commits_cleanly_and_loses_nothing() {
    run(Durability::Flush);
}

/// Bytes free on the filesystem holding `path`.
fn free_bytes(path: &Path) -> u64 {
    fs4::available_space(path).unwrap()
}

#[test]
fn a_checkpoint_that_finds_no_room_gives_back_the_room_it_took() {
    if !root() {
        return;
    }
    let m = Mount::new("8m").expect("root mounts a tmpfs");
    let dir = m.0.join("db");
    let filler = m.0.join("filler");
    let config = Config {
        checkpoint_bytes: 0,
        compaction_min_bytes: 0,
        ..Config::default()
    };
    let db = OurDb::open(&dir, config.clone()).unwrap();
    // 100,000 ids: a checkpoint of about 1.6 MB, more than is left free.
    for _ in 0..20 {
        let mut batch = ourdb::Batch::new();
        for _ in 0..5_000 {
            batch.insert(b"value!".to_vec());
        }
        db.commit(batch).unwrap();
    }
    fill(&filler, 1 << 20);
    let before = free_bytes(&m.0);
    assert!(db.checkpoint().is_err(), "the checkpoint does not fit");
    let after = free_bytes(&m.0);
    assert!(
        after + (64 << 10) >= before,
        "the failed checkpoint holds {} bytes the commits could use ({:?} left behind)",
        before.saturating_sub(after),
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>()
    );
    assert!(db.write_failure().is_none(), "not poisoned");
    std::fs::remove_file(&filler).unwrap();
    db.close().unwrap();
    let db = OurDb::open(&dir, config).unwrap();
    assert_eq!(db.len(), 100_000);
    assert_eq!(db.get(100_000).unwrap().as_deref(), Some(&b"value!"[..]));
}
