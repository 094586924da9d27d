//! OurDB vs redb, side by side in one run: `cargo bench -p ourdb`.
//!
//! Same machine, same values (100 B, 1 KiB, 4 KiB), same durability compared
//! with same: OurDB `Sync` vs redb `Durability::Immediate` (fsync per commit),
//! OurDB `Flush` vs redb `Durability::None` (no fsync per commit; note redb's
//! `None` is the weaker of the two: its commits survive neither a power cut
//! nor a process crash until a later durable commit).
//!
//! Each measurement alternates the two stores in 20 chunks so background load
//! on a shared machine hits both alike.
//!
//! Both get the same read cache budget (redb's default, 1 GiB) and a warm-up
//! pass reading every record before random gets are timed.
//!
//! Comparisons lean towards redb where a choice had to be made: redb's gets
//! run in one read transaction and do not copy the value out, while OurDB's
//! `get` returns an owned `Vec`.
//!
//! `OURDB_BENCH_SCALE` (default 1) multiplies the operation counts;
//! `OURDB_BENCH_OPEN_RECORDS` (default 1,000,000) sets the open-time store size.

use std::hint::black_box;
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use ourdb::{Batch, Config, Durability, OurDb};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use redb::{Database, ReadableDatabase, TableDefinition};

const TABLE: TableDefinition<u32, &[u8]> = TableDefinition::new("data");
const SIZES: [usize; 3] = [100, 1024, 4096];

struct Row {
    what: String,
    ours: f64,
    theirs: f64,
    unit: &'static str,
    /// (description, met?) when the issue sets a target for this line.
    target: Option<(String, bool)>,
}

fn scale() -> f64 {
    std::env::var("OURDB_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0)
}

fn n(base: usize) -> usize {
    ((base as f64 * scale()) as usize).max(1)
}

/// Both stores get the same read cache budget: redb's default, 1 GiB
/// (OurDB's own default is 16 MiB). Both fill it lazily.
const CACHE: usize = 1 << 30;

fn ours(dir: &Path, durability: Durability) -> OurDb {
    OurDb::open(
        dir,
        Config {
            durability,
            cache_size: CACHE,
            ..Config::default()
        },
    )
    .expect("open ourdb")
}

fn redb_open(path: &Path) -> Database {
    Database::builder()
        .set_cache_size(CACHE)
        .open(path)
        .expect("open redb")
}

fn redb_create(dir: &Path) -> Database {
    let db = Database::builder()
        .set_cache_size(CACHE)
        .create(dir.join("redb"))
        .expect("create redb");
    let tx = db.begin_write().expect("begin");
    tx.open_table(TABLE).expect("table");
    tx.commit().expect("commit");
    db
}

fn redb_durability(d: Durability) -> redb::Durability {
    match d {
        Durability::Sync => redb::Durability::Immediate,
        _ => redb::Durability::None,
    }
}

fn ops_per_sec(count: usize, t: Duration) -> f64 {
    count as f64 / t.as_secs_f64()
}

fn value(size: usize, seed: u32) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u32).wrapping_mul(seed | 1) as u8)
        .collect()
}

/// Alternating chunks per side, so background load on the shared machine
/// (other builds, other fsyncs) hits both stores alike.
const ROUNDS: usize = 20;

/// Runs `count` operations on each side in [`ROUNDS`] alternating chunks;
/// returns ops/s for each.
fn alternate(
    count: usize,
    mut a: impl FnMut(Range<usize>),
    mut b: impl FnMut(Range<usize>),
) -> (f64, f64) {
    let (mut ta, mut tb) = (Duration::ZERO, Duration::ZERO);
    let chunk = count.div_ceil(ROUNDS).max(1);
    let mut start = 0;
    while start < count {
        let r = start..(start + chunk).min(count);
        let t = Instant::now();
        a(r.clone());
        ta += t.elapsed();
        let t = Instant::now();
        b(r.clone());
        tb += t.elapsed();
        start = r.end;
    }
    (ops_per_sec(count, ta), ops_per_sec(count, tb))
}

fn redb_put(rdb: &Database, d: Durability, id: u32, v: &[u8]) {
    let mut tx = rdb.begin_write().expect("begin");
    tx.set_durability(redb_durability(d)).expect("durability");
    tx.open_table(TABLE)
        .expect("table")
        .insert(id, v)
        .expect("insert");
    tx.commit().expect("commit");
}

/// Single-record inserts, one commit each.
fn insert_singles(size: usize, count: usize, d: Durability) -> (f64, f64) {
    let v = value(size, 7);
    let dir = tempfile::tempdir().expect("tempdir");
    let rdir = tempfile::tempdir().expect("tempdir");
    let db = ours(dir.path(), d);
    let rdb = redb_create(rdir.path());
    alternate(
        count,
        |r| {
            for _ in r {
                black_box(db.insert(&v).expect("insert"));
            }
        },
        |r| {
            for i in r {
                redb_put(&rdb, d, i as u32 + 1, &v);
            }
        },
    )
}

/// Builds both stores with `count` records in batches of `batch`; returns
/// (ours, redb) records per second and keeps the stores for later phases.
fn batched(
    size: usize,
    count: usize,
    batch: usize,
    d: Durability,
    dir: &Path,
    rdir: &Path,
) -> (f64, f64) {
    let v = value(size, 11);
    let db = ours(dir, d);
    let rdb = redb_create(rdir);
    let (o, r) = alternate(
        count.div_ceil(batch),
        |r| {
            for _ in r {
                let mut b = Batch::new();
                for _ in 0..batch {
                    b.insert(v.clone());
                }
                black_box(db.commit(b).expect("commit"));
            }
        },
        |r| {
            for i in r {
                let mut tx = rdb.begin_write().expect("begin");
                tx.set_durability(redb_durability(d)).expect("durability");
                {
                    let mut table = tx.open_table(TABLE).expect("table");
                    for j in 0..batch {
                        table
                            .insert((i * batch + j) as u32 + 1, v.as_slice())
                            .expect("insert");
                    }
                }
                tx.commit().expect("commit");
            }
        },
    );
    db.close().expect("close");
    if d != Durability::Sync {
        // Make redb's last state durable so a reopen finds it.
        let tx = rdb.begin_write().expect("begin");
        tx.commit().expect("commit");
    }
    (o * batch as f64, r * batch as f64)
}

/// Random gets on a warm store: (ours, redb borrowing the value), then
/// (ours, redb copying it into a `Vec` as OurDB's `get` does).
fn random_gets(dir: &Path, rdir: &Path, records: u32, count: usize) -> [(f64, f64); 2] {
    let db = ours(dir, Durability::Flush);
    let rdb = redb_open(&rdir.join("redb"));
    let tx = rdb.begin_read().expect("read");
    let table = tx.open_table(TABLE).expect("table");
    for id in 1..=records {
        black_box(db.get(id).expect("warm"));
        black_box(table.get(id).expect("warm").expect("present").value().len());
    }
    let mut out = [(0.0, 0.0); 2];
    for (copy, slot) in out.iter_mut().enumerate() {
        let mut ro = SmallRng::seed_from_u64(1);
        let mut rr = SmallRng::seed_from_u64(1);
        *slot = alternate(
            count,
            |r| {
                for _ in r {
                    let id = ro.random_range(1..=records);
                    black_box(db.get(id).expect("get").expect("present").len());
                }
            },
            |r| {
                for _ in r {
                    let id = rr.random_range(1..=records);
                    let g = table.get(id).expect("get").expect("present");
                    if copy == 1 {
                        black_box(g.value().to_vec());
                    } else {
                        black_box(g.value().len());
                    }
                }
            },
        );
    }
    out
}

fn updates(
    dir: &Path,
    rdir: &Path,
    records: u32,
    size: usize,
    count: usize,
    d: Durability,
) -> (f64, f64) {
    let v = value(size, 13);
    let db = ours(dir, d);
    let rdb = redb_open(&rdir.join("redb"));
    let mut ro = SmallRng::seed_from_u64(2);
    let mut rr = SmallRng::seed_from_u64(2);
    alternate(
        count,
        |r| {
            for _ in r {
                db.update(ro.random_range(1..=records), &v).expect("update");
            }
        },
        |r| {
            for _ in r {
                redb_put(&rdb, d, rr.random_range(1..=records), &v);
            }
        },
    )
}

/// Seconds to open a store of `records` values of `size` bytes (best of 3).
fn open_time(records: usize, size: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rdir = tempfile::tempdir().expect("tempdir");
    batched(
        size,
        records,
        10_000,
        Durability::Flush,
        dir.path(),
        rdir.path(),
    );
    let mut best = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        let t = Instant::now();
        let db = ours(dir.path(), Durability::Flush);
        black_box(db.get(records as u32).expect("get").expect("last record"));
        best.0 = best.0.min(t.elapsed().as_secs_f64());
        drop(db);
        let t = Instant::now();
        let rdb = redb_open(&rdir.path().join("redb"));
        let tx = rdb.begin_read().expect("read");
        black_box(
            tx.open_table(TABLE)
                .expect("table")
                .get(records as u32)
                .expect("get")
                .expect("last")
                .value()
                .len(),
        );
        best.1 = best.1.min(t.elapsed().as_secs_f64());
    }
    best
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// MiB of RSS added by opening `count` empty databases of each kind.
fn memory(count: usize) -> (f64, f64) {
    let root = tempfile::tempdir().expect("tempdir");
    let before = rss_kib();
    let dbs: Vec<OurDb> = (0..count)
        .map(|i| ours(&root.path().join(format!("o{i}")), Durability::Sync))
        .collect();
    let o = (rss_kib().saturating_sub(before)) as f64 / 1024.0;
    drop(dbs);
    let before = rss_kib();
    let rdbs: Vec<Database> = (0..count)
        .map(|i| {
            let d = root.path().join(format!("r{i}"));
            std::fs::create_dir_all(&d).expect("mkdir");
            redb_create(&d)
        })
        .collect();
    let r = (rss_kib().saturating_sub(before)) as f64 / 1024.0;
    drop(rdbs);
    (o, r)
}

fn print(rows: &[Row]) {
    println!();
    println!(
        "{:<44} {:>14} {:>14} {:>9}  target",
        "benchmark", "OurDB", "redb", "OurDB/redb"
    );
    for r in rows {
        let target = match &r.target {
            Some((t, met)) => format!("{t}: {}", if *met { "MET" } else { "MISSED" }),
            None => String::new(),
        };
        println!(
            "{:<44} {:>10.0} {:<3} {:>10.0} {:<3} {:>9.2}x  {target}",
            r.what,
            r.ours,
            r.unit,
            r.theirs,
            r.unit,
            r.ours / r.theirs
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; any other filter arguments are ignored.
    let t0 = Instant::now();
    let mut rows = Vec::new();

    let (o, r) = memory(200);
    println!("memory: 200 empty databases: OurDB {o:.1} MiB, redb {r:.1} MiB");
    let mem_row = (o, r);
    // Unrecorded warm-up: lets the writeback of the 400 databases just
    // created settle before fsync timings start.
    insert_singles(100, n(200), Durability::Sync);

    for size in SIZES {
        let (o, r) = insert_singles(size, n(2000), Durability::Sync);
        rows.push(Row {
            what: format!("insert, fsync per commit, {size} B"),
            ours: o,
            theirs: r,
            unit: "/s",
            target: Some(("≥ 1.5x redb".into(), o >= 1.5 * r)),
        });
        let (o, r) = insert_singles(size, n(50_000), Durability::Flush);
        rows.push(Row {
            what: format!("insert, no per-commit fsync, {size} B"),
            ours: o,
            theirs: r,
            unit: "/s",
            target: None,
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let rdir = tempfile::tempdir().expect("tempdir");
        let records = n(100_000);
        let (o, r) = batched(
            size,
            records,
            1000,
            Durability::Sync,
            dir.path(),
            rdir.path(),
        );
        rows.push(Row {
            what: format!("batched insert (1,000/commit, fsync), {size} B"),
            ours: o,
            theirs: r,
            unit: "/s",
            target: Some(("≥ 1.0x redb".into(), o >= r)),
        });
        let records = records.div_ceil(1000) as u32 * 1000;
        let [(o, r), (o2, rc)] = random_gets(dir.path(), rdir.path(), records, n(1_000_000));
        rows.push(Row {
            what: format!("random get, warm, {size} B"),
            ours: o,
            theirs: r,
            unit: "/s",
            target: Some(("≥ 1.0x redb".into(), o >= r)),
        });
        rows.push(Row {
            what: format!("  same, redb copying the value out, {size} B"),
            ours: o2,
            theirs: rc,
            unit: "/s",
            target: None,
        });
        let (o, r) = updates(
            dir.path(),
            rdir.path(),
            records,
            size,
            n(200),
            Durability::Sync,
        );
        rows.push(Row {
            what: format!("update, fsync per commit, {size} B"),
            ours: o,
            theirs: r,
            unit: "/s",
            target: None,
        });
        let (o, r) = updates(
            dir.path(),
            rdir.path(),
            records,
            size,
            n(20_000),
            Durability::Flush,
        );
        rows.push(Row {
            what: format!("update, no per-commit fsync, {size} B"),
            ours: o,
            theirs: r,
            unit: "/s",
            target: None,
        });
        eprintln!("[{:.0?}] {size} B done", t0.elapsed());
    }

    let open_records: usize = std::env::var("OURDB_BENCH_OPEN_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let (o, r) = open_time(open_records, 100);
    rows.push(Row {
        what: format!("open, {open_records} records of 100 B (ms, lower is better)"),
        ours: o * 1000.0,
        theirs: r * 1000.0,
        unit: "ms",
        target: Some(("OurDB ≤ 1000 ms".into(), o <= 1.0)),
    });
    rows.push(Row {
        what: "RSS, 200 open empty dbs (MiB, lower better)".into(),
        ours: mem_row.0,
        theirs: mem_row.1,
        unit: "MiB",
        target: Some(("OurDB ≤ 50 MiB".into(), mem_row.0 <= 50.0)),
    });
    print(&rows);
    println!(
        "\ntotal bench time {:.1?} (OURDB_BENCH_SCALE={})",
        t0.elapsed(),
        scale()
    );
}
