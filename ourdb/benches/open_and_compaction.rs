//! Open time with and without the checkpoint (and redb's), and compaction of
//! an update-heavy store: `cargo bench -p ourdb --bench open_and_compaction`
//! (about 30 s; `-- --quick` for a tenth of the records).
//!
//! Prints:
//! - open of N records of 100 B (N = 1,000,000; `--quick` 100,000): OurDB
//!   from its checkpoint, OurDB scanning every frame (checkpoint removed),
//!   redb; best of 10 each (a shared machine is noisy), and the ratios;
//! - an update-heavy run (every record updated 100 times) with `history` 1
//!   and the default 16: data file bytes before and after `compact()`,
//!   against the bytes of the versions kept, and the compaction's time;
//! - the longest commit while a compaction runs beside a writer, and the
//!   longest writer-lock hold the compaction reported.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ourdb::{Batch, Config, Durability, OurDb};
use redb::{Database, ReadableDatabase, TableDefinition};

const TABLE: TableDefinition<u32, &[u8]> = TableDefinition::new("data");

fn config(history: usize) -> Config {
    Config {
        durability: Durability::Flush,
        history,
        // Compaction only when the bench asks for it.
        compaction_min_bytes: 0,
        ..Config::default()
    }
}

fn value(id: u32, round: u32, size: usize) -> Vec<u8> {
    let seed = id.wrapping_mul(2_654_435_761) ^ round;
    (0..size)
        .map(|i| (seed >> (i % 4 * 8)) as u8 ^ i as u8)
        .collect()
}

fn best_of_10(mut f: impl FnMut() -> Duration) -> Duration {
    (0..10).map(|_| f()).min().expect("ten runs")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Open times: (OurDB with checkpoint, OurDB full scan, redb).
fn open_times(records: u32) -> (Duration, Duration, Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rdir = tempfile::tempdir().expect("tempdir");
    let db = OurDb::open(dir.path(), config(16)).expect("open ourdb");
    let rpath = rdir.path().join("redb");
    let rdb = Database::create(&rpath).expect("create redb");
    for chunk in (1..=records).collect::<Vec<_>>().chunks(10_000) {
        let mut b = Batch::new();
        let tx = rdb.begin_write().expect("write tx");
        {
            let mut t = tx.open_table(TABLE).expect("table");
            for &id in chunk {
                let v = value(id, 0, 100);
                b.insert(v.clone());
                t.insert(id, v.as_slice()).expect("redb insert");
            }
        }
        tx.commit().expect("redb commit");
        db.commit(b).expect("ourdb commit");
    }
    db.close().expect("close");
    drop(rdb);
    let checkpoint = dir.path().join("checkpoint");
    let saved = std::fs::read(&checkpoint).expect("close wrote a checkpoint");
    let open_ours = |want_checkpoint: bool| {
        let t = Instant::now();
        let db = OurDb::open(dir.path(), config(16)).expect("open");
        black_box(db.get(records).expect("get").expect("last record"));
        let took = t.elapsed();
        assert_eq!(db.stats().opened_from_checkpoint, want_checkpoint);
        drop(db); // no close: the checkpoint stays as it is
        took
    };
    let with = best_of_10(|| open_ours(true));
    std::fs::remove_file(&checkpoint).expect("remove checkpoint");
    let without = best_of_10(|| open_ours(false));
    std::fs::write(&checkpoint, saved).expect("restore checkpoint");
    let redb = best_of_10(|| {
        let t = Instant::now();
        let rdb = Database::open(&rpath).expect("open redb");
        let tx = rdb.begin_read().expect("read");
        let t2 = tx.open_table(TABLE).expect("table");
        black_box(t2.get(records).expect("get").expect("last").value().len());
        t.elapsed()
    });
    (with, without, redb)
}

fn file_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "odb"))
        .map(|p| std::fs::metadata(p).expect("metadata").len())
        .sum()
}

/// Every record updated 100 times, then `compact()`.
fn update_heavy(records: u32, history: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = OurDb::open(dir.path(), config(history)).expect("open");
    let size = 100;
    for chunk in (1..=records).collect::<Vec<_>>().chunks(1000) {
        let mut b = Batch::new();
        chunk.iter().for_each(|&id| {
            b.insert(value(id, 0, size));
        });
        db.commit(b).expect("insert");
    }
    for round in 1..=100 {
        for chunk in (1..=records).collect::<Vec<_>>().chunks(1000) {
            let mut b = Batch::new();
            chunk.iter().for_each(|&id| {
                b.update(id, value(id, round, size));
            });
            db.commit(b).expect("update");
        }
    }
    let before = file_bytes(dir.path());
    let t = Instant::now();
    db.compact().expect("compact");
    let took = t.elapsed();
    let after = file_bytes(dir.path());
    let live = u64::from(records) * size as u64;
    let kept = live * history.min(101) as u64;
    println!(
        "update-heavy, {records} records x 101 versions of {size} B, history {history}: \
         {before} bytes before, {after} after compact ({:.2}x the {kept} bytes of kept versions, \
         {:.2}x the {live} live bytes); compaction {:.0} ms",
        after as f64 / kept as f64,
        after as f64 / live as f64,
        ms(took)
    );
}

/// The same run with compaction left to the background thread (checkpoint
/// every 1 MiB, compaction at any size): the largest the files got
/// and where they ended.
fn update_heavy_background(records: u32) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = Config {
        checkpoint_bytes: 1 << 20,
        compaction_min_bytes: 1,
        ..config(1)
    };
    let db = OurDb::open(dir.path(), cfg).expect("open");
    let size = 100;
    let t = Instant::now();
    let mut most = 0;
    for round in 0..=100 {
        for chunk in (1..=records).collect::<Vec<_>>().chunks(1000) {
            let mut b = Batch::new();
            chunk.iter().for_each(|&id| {
                if round == 0 {
                    b.insert(value(id, 0, size));
                } else {
                    b.update(id, value(id, round, size));
                }
            });
            db.commit(b).expect("commit");
        }
        most = most.max(file_bytes(dir.path()));
    }
    let took = t.elapsed();
    let end = file_bytes(dir.path());
    let live = u64::from(records) * size as u64;
    // The worker keeps compacting while one is due; wait for it (10 s at most).
    let idle = Instant::now();
    while file_bytes(dir.path()) > 2 * live && idle.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let settled = file_bytes(dir.path());
    println!(
        "update-heavy with background compaction (history 1, any size): commits took {:.0} ms; \
         files at most {most} bytes ({:.2}x the {live} live bytes), {end} when the commits ended \
         ({:.2}x), {settled} ({:.2}x) {:.0} ms later; {} compactions",
        ms(took),
        most as f64 / live as f64,
        end as f64 / live as f64,
        settled as f64 / live as f64,
        ms(idle.elapsed()),
        db.stats().compactions,
    );
}

/// Longest commit latency with and without a compaction running beside it.
fn writer_pause(records: u32) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(OurDb::open(dir.path(), config(4)).expect("open"));
    for chunk in (1..=records).collect::<Vec<_>>().chunks(1000) {
        let mut b = Batch::new();
        chunk.iter().for_each(|&id| {
            b.insert(value(id, 0, 100));
        });
        db.commit(b).expect("insert");
    }
    for round in 1..=10 {
        for id in 1..=records {
            db.update(id, &value(id, round, 100)).expect("update");
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, stop) = (Arc::clone(&db), Arc::clone(&stop));
        std::thread::spawn(move || {
            // Commits slower than 0.2 ms: (start, latency).
            let (mut slow, mut n, mut id) = (Vec::new(), 0u64, 0u32);
            while !stop.load(Ordering::Relaxed) {
                id = id % records + 1;
                let t = Instant::now();
                db.update(id, &value(id, 999, 100)).expect("update");
                let took = t.elapsed();
                if took > Duration::from_micros(200) {
                    slow.push((t, took));
                }
                n += 1;
            }
            (slow, n)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    db.compact().expect("compact");
    let took = t.elapsed();
    let done = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (slow, n) = writer.join().expect("writer");
    let worst = |during: bool| {
        slow.iter()
            .filter(|(at, _)| (*at >= t && *at <= done) == during)
            .map(|(_, d)| *d)
            .max()
            .unwrap_or_default()
    };
    println!(
        "compaction of {records} records x 11 versions beside a writer: {:.0} ms; \
         {n} commits in 0.6 s + the compaction; longest commit during it {:.2} ms, \
         outside it {:.2} ms; writer lock held by the switch {:.2} ms",
        ms(took),
        ms(worst(true)),
        ms(worst(false)),
        ms(db.stats().max_compaction_pause)
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let records: u32 = if quick { 100_000 } else { 1_000_000 };
    let t0 = Instant::now();
    let (with, without, redb) = open_times(records);
    println!(
        "open, {records} records of 100 B (best of 10): OurDB with checkpoint {:.1} ms, \
         OurDB full scan {:.1} ms, redb {:.1} ms; full scan / checkpoint {:.1}x, \
         checkpoint / redb {:.2}x",
        ms(with),
        ms(without),
        ms(redb),
        without.as_secs_f64() / with.as_secs_f64(),
        with.as_secs_f64() / redb.as_secs_f64(),
    );
    let heavy = records / 50;
    update_heavy(heavy, 1);
    update_heavy(heavy, 16);
    update_heavy_background(heavy);
    writer_pause(records / 10);
    println!("total {:.1?}", t0.elapsed());
}
