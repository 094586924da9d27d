//! OurDB vs redb, side by side in one run: `cargo bench -p ourdb`.
//!
//! Same machine, same values (100 B, 1 KiB, 4 KiB), same durability compared
//! with same: OurDB `Sync` vs redb `Durability::Immediate` (fsync per commit),
//! OurDB `Flush` vs redb `Durability::None` (no fsync per commit; note redb's
//! `None` is the weaker of the two: its commits survive neither a power cut
//! nor a process crash until a later durable commit).
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

/// Single-record inserts, one commit each.
fn insert_singles(size: usize, count: usize, d: Durability) -> (f64, f64) {
    let v = value(size, 7);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = ours(dir.path(), d);
    let t = Instant::now();
    for _ in 0..count {
        black_box(db.insert(&v).expect("insert"));
    }
    let o = ops_per_sec(count, t.elapsed());

    let rdir = tempfile::tempdir().expect("tempdir");
    let rdb = redb_create(rdir.path());
    let t = Instant::now();
    for i in 0..count as u32 {
        let mut tx = rdb.begin_write().expect("begin");
        tx.set_durability(redb_durability(d)).expect("durability");
        tx.open_table(TABLE)
            .expect("table")
            .insert(i + 1, v.as_slice())
            .expect("insert");
        tx.commit().expect("commit");
    }
    (o, ops_per_sec(count, t.elapsed()))
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
    let t = Instant::now();
    for _ in 0..count.div_ceil(batch) {
        let mut b = Batch::new();
        for _ in 0..batch {
            b.insert(v.clone());
        }
        black_box(db.commit(b).expect("commit"));
    }
    let o = ops_per_sec(count.div_ceil(batch) * batch, t.elapsed());
    db.close().expect("close");

    let rdb = redb_create(rdir);
    let t = Instant::now();
    let mut id = 1u32;
    for _ in 0..count.div_ceil(batch) {
        let mut tx = rdb.begin_write().expect("begin");
        tx.set_durability(redb_durability(d)).expect("durability");
        {
            let mut table = tx.open_table(TABLE).expect("table");
            for _ in 0..batch {
                table.insert(id, v.as_slice()).expect("insert");
                id += 1;
            }
        }
        tx.commit().expect("commit");
    }
    let r = ops_per_sec(count.div_ceil(batch) * batch, t.elapsed());
    if d != Durability::Sync {
        // Make redb's last state durable so a reopen finds it.
        let tx = rdb.begin_write().expect("begin");
        tx.commit().expect("commit");
    }
    (o, r)
}

/// Random gets on a warm store: (ours, redb borrowing the value, redb
/// copying it into a `Vec` as OurDB's `get` does).
fn random_gets(dir: &Path, rdir: &Path, records: u32, count: usize) -> (f64, f64, f64) {
    let db = ours(dir, Durability::Flush);
    for id in 1..=records {
        black_box(db.get(id).expect("warm"));
    }
    let mut rng = SmallRng::seed_from_u64(1);
    let t = Instant::now();
    let mut sum = 0usize;
    for _ in 0..count {
        let id = rng.random_range(1..=records);
        sum += db.get(id).expect("get").expect("present").len();
    }
    let o = ops_per_sec(count, t.elapsed());
    drop(db);

    let rdb = redb_open(&rdir.join("redb"));
    let tx = rdb.begin_read().expect("read");
    let table = tx.open_table(TABLE).expect("table");
    for id in 1..=records {
        black_box(table.get(id).expect("warm").expect("present").value().len());
    }
    let mut rng = SmallRng::seed_from_u64(1);
    let t = Instant::now();
    for _ in 0..count {
        let id = rng.random_range(1..=records);
        sum += table.get(id).expect("get").expect("present").value().len();
    }
    let borrowed = ops_per_sec(count, t.elapsed());
    let mut rng = SmallRng::seed_from_u64(1);
    let t = Instant::now();
    for _ in 0..count {
        let id = rng.random_range(1..=records);
        let v: Vec<u8> = table
            .get(id)
            .expect("get")
            .expect("present")
            .value()
            .to_vec();
        sum += v.len();
    }
    let copied = ops_per_sec(count, t.elapsed());
    black_box(sum);
    (o, borrowed, copied)
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
    let mut rng = SmallRng::seed_from_u64(2);
    let t = Instant::now();
    for _ in 0..count {
        db.update(rng.random_range(1..=records), &v)
            .expect("update");
    }
    let o = ops_per_sec(count, t.elapsed());
    drop(db);

    let rdb = redb_open(&rdir.join("redb"));
    let mut rng = SmallRng::seed_from_u64(2);
    let t = Instant::now();
    for _ in 0..count {
        let mut tx = rdb.begin_write().expect("begin");
        tx.set_durability(redb_durability(d)).expect("durability");
        tx.open_table(TABLE)
            .expect("table")
            .insert(rng.random_range(1..=records), v.as_slice())
            .expect("update");
        tx.commit().expect("commit");
    }
    (o, ops_per_sec(count, t.elapsed()))
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

    for size in SIZES {
        let (o, r) = insert_singles(size, n(1000), Durability::Sync);
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
        let (o, r, rc) = random_gets(dir.path(), rdir.path(), records, n(1_000_000));
        rows.push(Row {
            what: format!("random get, warm, {size} B"),
            ours: o,
            theirs: r,
            unit: "/s",
            target: Some(("≥ 1.0x redb".into(), o >= r)),
        });
        rows.push(Row {
            what: format!("  same, redb copying the value out, {size} B"),
            ours: o,
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
