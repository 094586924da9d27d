//! A background compaction that cannot be written (its copy of the live
//! records passes a file size limit, RLIMIT_FSIZE, in this test binary's
//! own process: as a disk with room for small files but not for the copy)
//! must not stop the background checkpoints: open time stays bounded by
//! `Config::checkpoint_bytes` ("so open scans at most about this much").

mod common;

use std::time::{Duration, Instant};

use ourdb::{Config, Durability, OurDb};

fn config(checkpoint_bytes: u64) -> Config {
    Config {
        durability: Durability::Flush,
        max_file_size: 32 << 10,
        history: 1,
        checkpoint_bytes,
        compaction_min_bytes: 64 << 10,
        ..Config::default()
    }
}

#[test]
fn a_failing_background_compaction_does_not_stop_the_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    // 600 records of 100 bytes, each updated once: ~170 KiB of files, 75 KiB
    // of them superseded, so a compaction is due; what it keeps (~80 KiB)
    // does not fit under the limit set below, the data files (32 KiB) and
    // the checkpoint (~10 KiB) do.
    let db = OurDb::open(dir.path(), config(0)).unwrap();
    for i in 0..600u32 {
        db.insert(&[i as u8; 100]).unwrap();
    }
    for id in 1..=600u32 {
        db.update(id, &[id as u8 ^ 0xff; 100]).unwrap();
    }
    db.close().unwrap();

    let every = 16 << 10;
    let db = OurDb::open(dir.path(), config(every)).unwrap();
    let old = common::set_soft_limit(libc::RLIMIT_FSIZE, 48 << 10);
    // ~116 KiB committed: the background worker wakes every 16 KiB.
    for round in 0..800u32 {
        let id = 1 + round % 600;
        db.update(id, &[round as u8; 100]).unwrap();
    }
    // Until the background thread has settled: a checkpoint written, and
    // none more for 300 ms (it wakes for what the last commits added).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = (0, Instant::now());
    while Instant::now() < deadline {
        let n = db.stats().checkpoints;
        if n != seen.0 {
            seen = (n, Instant::now());
        } else if n > 0 && seen.1.elapsed() >= Duration::from_millis(300) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = db.stats();
    common::set_soft_limit(libc::RLIMIT_FSIZE, old);
    assert_eq!(stats.compactions, 0, "the compaction cannot be written");
    // A crash now: the next open scans what the last checkpoint left out.
    drop(db);
    let db = OurDb::open(dir.path(), config(0)).unwrap();
    let scanned = db.stats().open_scanned_bytes;
    assert!(
        stats.checkpoints > 0 && scanned <= 3 * every,
        "{} checkpoints written while 116 KiB were committed and the compaction failed; \
         the open after a crash scanned {scanned} bytes (checkpoint_bytes {every})",
        stats.checkpoints
    );
}

/// Open scans what no checkpoint covers; what it scanned is not covered
/// either until the next checkpoint: a process killed before it commits
/// `checkpoint_bytes` more leaves the next open all of it and its own
/// commits to scan, and so on, restart after restart.
#[test]
fn open_after_repeated_crashes_scans_about_checkpoint_bytes_not_everything_since_the_last_close() {
    let dir = tempfile::tempdir().unwrap();
    let every = 64 << 10;
    let cfg = Config {
        compaction_min_bytes: 0,
        ..config(every)
    };
    let mut scanned = Vec::new();
    for session in 0..5u8 {
        let db = OurDb::open(dir.path(), cfg.clone()).unwrap();
        let at_open = db.stats().open_scanned_bytes;
        scanned.push(at_open);
        // ~50 KiB, below checkpoint_bytes: committed, then the process dies.
        for _ in 0..350 {
            db.insert(&[session; 100]).unwrap();
        }
        // With what open scanned, a checkpoint may be due: the process dies
        // once it is written (it would, given the time).
        if at_open + 50_000 >= every {
            let deadline = Instant::now() + Duration::from_secs(10);
            while db.stats().checkpoints == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        drop(db);
    }
    assert!(
        scanned.iter().all(|&s| s <= 2 * every),
        "bytes scanned by each open after a crash: {scanned:?} (checkpoint_bytes {every})"
    );
}
