//! A writer committing as fast as it can does not keep a compaction from
//! finishing: it is slowed to the copy's pace until the switch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ourdb::{Config, Durability, OurDb};

#[test]
fn a_compaction_finishes_while_a_writer_commits_as_fast_as_it_can() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        durability: Durability::Flush,
        checkpoint_bytes: 0,
        history: 1,
        ..Config::default()
    };
    let db = Arc::new(OurDb::open(dir.path(), cfg).unwrap());
    for _ in 0..64 {
        db.insert(&[1; 64 << 10]).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (db, stop, written) = (Arc::clone(&db), Arc::clone(&stop), Arc::clone(&written));
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                db.update(n % 64 + 1, &[n as u8; 64 << 10]).unwrap();
                written.fetch_add(64 << 10, Ordering::Relaxed);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let compactor = {
        let db = Arc::clone(&db);
        std::thread::spawn(move || {
            let started = Instant::now();
            db.compact().unwrap();
            done_tx.send(started.elapsed()).unwrap();
        })
    };
    let res = done_rx.recv_timeout(Duration::from_secs(20));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    compactor.join().unwrap();
    let took = res.unwrap_or_else(|_| {
        panic!(
            "the compaction had not finished after 20 s, while the writer committed {} MiB",
            written.load(Ordering::Relaxed) >> 20
        )
    });
    println!("compaction took {took:?}, {:?}", db.stats());
}
