//! Crash test: a child process commits singles and batches and is killed
//! with SIGKILL at random moments; after each kill the database is reopened
//! and must hold exactly every acknowledged commit, plus at most the one that
//! was in flight, whole or not at all.
//!
//! The child is this test binary re-run with `OURDB_CRASH_CHILD` set. Before
//! each commit it prints `T <seq> <ops>`, after it returns `A`. Rounds:
//! `OURDB_CRASH_ROUNDS` (default 200).
//!
//! In the second test the child also compacts and writes checkpoints on
//! another thread, in a loop, printing `C`/`c` around each compaction and
//! `K`/`k` around each checkpoint, so kills land inside both; with history
//! kept to `KEEP` versions, a record's history must be the newest versions
//! acknowledged, at least `KEEP` of them (or all).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use ourdb::{Batch, Config, Durability, OurDb};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

const TEST_NAME: &str = "acknowledged_commits_survive_sigkill_and_batches_are_all_or_nothing";
const COMPACT_TEST_NAME: &str =
    "acknowledged_commits_survive_sigkill_during_compactions_and_checkpoints";
const CHILD_ENV: &str = "OURDB_CRASH_CHILD";
const COMPACT_ENV: &str = "OURDB_CRASH_COMPACT";
/// Versions per record compaction keeps in the second test.
const KEEP: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Insert { id: u32, len: usize },
    Update { id: u32, len: usize },
    Delete { id: u32 },
}

fn value(id: u32, seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (u64::from(id).wrapping_mul(31) ^ seq.wrapping_mul(7)).wrapping_add(i as u64) as u8
        })
        .collect()
}

fn config(durability: Durability, compacting: bool) -> Config {
    let mut c = Config {
        durability,
        // Small files so kills also land around rollovers.
        max_file_size: 64 << 10,
        ..Config::default()
    };
    if compacting {
        c.history = KEEP;
        // Background checkpoints and compactions too, besides the loop's.
        c.checkpoint_bytes = 16 << 10;
        c.compaction_min_bytes = 128 << 10;
    }
    c
}

fn encode(ops: &[Op]) -> String {
    ops.iter()
        .map(|op| match op {
            Op::Insert { id, len } => format!("I{id}:{len}"),
            Op::Update { id, len } => format!("U{id}:{len}"),
            Op::Delete { id } => format!("D{id}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn decode(s: &str) -> Vec<Op> {
    s.split(',')
        .map(|t| {
            let (kind, rest) = t.split_at(1);
            let mut parts = rest.split(':');
            let id: u32 = parts.next().unwrap().parse().unwrap();
            let len = || -> usize { rest.split(':').nth(1).unwrap().parse().unwrap() };
            match kind {
                "I" => Op::Insert { id, len: len() },
                "U" => Op::Update { id, len: len() },
                "D" => Op::Delete { id },
                _ => panic!("bad op {t}"),
            }
        })
        .collect()
}

/// Acknowledged state: live id → versions (seq, len), oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    live: BTreeMap<u32, Vec<(u64, usize)>>,
    next_id: u32,
}

impl Model {
    fn apply(&mut self, seq: u64, ops: &[Op]) {
        for op in ops {
            match *op {
                Op::Insert { id, len } => {
                    assert_eq!(id, self.next_id, "child predicted insert id");
                    self.next_id += 1;
                    self.live.insert(id, vec![(seq, len)]);
                }
                Op::Update { id, len } => self
                    .live
                    .get_mut(&id)
                    .expect("update of live id")
                    .push((seq, len)),
                Op::Delete { id } => {
                    self.live.remove(&id);
                }
            }
        }
    }

    /// Why `db` differs from this model, if it does. `keep`: versions
    /// compaction keeps (0: all).
    fn mismatch(&self, db: &OurDb, keep: usize) -> Option<String> {
        if db.next_id() != self.next_id {
            return Some(format!("next_id {} != {}", db.next_id(), self.next_id));
        }
        if db.len() != self.live.len() {
            return Some(format!("{} live records != {}", db.len(), self.live.len()));
        }
        for (&id, versions) in &self.live {
            let want: Vec<Vec<u8>> = versions
                .iter()
                .rev()
                .map(|&(s, l)| value(id, s, l))
                .collect();
            let got = db.history(id, usize::MAX).expect("history after crash");
            let at_least = if keep == 0 {
                want.len()
            } else {
                want.len().min(keep)
            };
            if got.len() < at_least || !want.starts_with(&got) {
                return Some(format!("history of id {id} differs"));
            }
        }
        None
    }
}

/// Compacts and checkpoints in a loop, announcing each on stdout.
fn compact_forever(db: &OurDb) -> ! {
    loop {
        for (start, end, what) in [("C", "c", true), ("K", "k", false)] {
            println!("{start}");
            let res = if what { db.compact() } else { db.checkpoint() };
            if let Err(e) = res {
                println!("ERR background: {e}");
                std::process::exit(3);
            }
            println!("{end}");
        }
    }
}

fn child(dir: &Path) -> ! {
    let durability = match std::env::var("OURDB_CRASH_SYNC").as_deref() {
        Ok("1") => Durability::Sync,
        _ => Durability::Flush,
    };
    let compacting = std::env::var(COMPACT_ENV).is_ok();
    let mut seq: u64 = std::env::var("OURDB_CRASH_SEQ").unwrap().parse().unwrap();
    let db = OurDb::open(dir, config(durability, compacting)).unwrap_or_else(|e| {
        println!("ERR open: {e}");
        std::process::exit(3)
    });
    let db = std::sync::Arc::new(db);
    let mut live: Vec<u32> = (1..db.next_id())
        .filter(|&id| db.exists(id).unwrap())
        .collect();
    let mut rng = SmallRng::seed_from_u64(seq);
    let stdout = std::io::stdout();
    // The test harness has printed "test <name> ... " without a newline.
    writeln!(stdout.lock()).unwrap();
    if compacting {
        let db = std::sync::Arc::clone(&db);
        std::thread::spawn(move || compact_forever(&db));
    }
    loop {
        seq += 1;
        let n = if rng.random_range(0..3) == 0 {
            rng.random_range(2..12)
        } else {
            1
        };
        let mut ops = Vec::new();
        let mut next = db.next_id();
        let mut b = Batch::new();
        for _ in 0..n {
            let len = rng.random_range(0..1500);
            let pick = (!live.is_empty()).then(|| rng.random_range(0..live.len()));
            // Keep the store small so verifying it after every kill stays cheap.
            let insert_share = if live.len() < 150 { 6 } else { 3 };
            match (rng.random_range(0..10), pick) {
                (r, pick) if r < insert_share || pick.is_none() => {
                    ops.push(Op::Insert { id: next, len });
                    b.insert(value(next, seq, len));
                    live.push(next);
                    next += 1;
                }
                (6 | 7, Some(i)) => {
                    // Update.
                    ops.push(Op::Update { id: live[i], len });
                    b.update(live[i], value(live[i], seq, len));
                }
                (_, i) => {
                    let id = live.swap_remove(i.expect("insert taken when nothing is live"));
                    ops.push(Op::Delete { id });
                    b.delete(id);
                }
            }
        }
        {
            let mut out = stdout.lock();
            writeln!(out, "T {seq} {} end", encode(&ops)).unwrap();
            out.flush().unwrap();
        }
        let res = if n == 1 {
            match ops[0] {
                Op::Insert { id, len } => db
                    .insert(&value(id, seq, len))
                    .map(|got| assert_eq!(got, id)),
                Op::Update { id, len } => db.update(id, &value(id, seq, len)),
                Op::Delete { id } => db.delete(id).map(|was| assert!(was)),
            }
        } else {
            db.commit(b).map(drop)
        };
        if let Err(e) = res {
            println!("ERR commit: {e}");
            std::process::exit(3);
        }
        let mut out = stdout.lock();
        writeln!(out, "A").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn acknowledged_commits_survive_sigkill_and_batches_are_all_or_nothing() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(Path::new(&dir));
    }
    parent(TEST_NAME, false);
}

#[test]
fn acknowledged_commits_survive_sigkill_during_compactions_and_checkpoints() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(Path::new(&dir));
    }
    let kills = parent(COMPACT_TEST_NAME, true);
    println!(
        "kills inside a compaction: {}, inside a checkpoint: {}",
        kills.compacting, kills.checkpointing
    );
    // A kill lands inside a compaction in most rounds and inside a
    // checkpoint in about one in twenty; a short run may miss the latter.
    if kills.rounds >= 100 {
        assert!(
            kills.compacting > 0 && kills.checkpointing > 0,
            "some kills land inside each: {kills:?}"
        );
    }
}

/// Kills that landed while the child's loop was compacting or checkpointing.
#[derive(Debug, Default)]
struct Kills {
    rounds: u64,
    compacting: u64,
    checkpointing: u64,
}

/// Runs the rounds of kills and checks; `compacting`: the child compacts
/// and checkpoints in a loop and keeps `KEEP` versions.
fn parent(test_name: &str, compacting: bool) -> Kills {
    let keep = if compacting { KEEP } else { 0 };
    let mut kills = Kills::default();
    let rounds: u64 = std::env::var("OURDB_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let seed: u64 = rand::random();
    println!("crash test seed {seed}");
    let mut rng = SmallRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model {
        next_id: 1,
        ..Model::default()
    };
    let mut seq = 0u64;
    let exe = std::env::current_exe().unwrap();
    let (mut in_flight_rounds, mut in_flight_applied) = (0, 0);
    for round in 0..rounds {
        let sync = rng.random_range(0..4) == 0;
        let mut child = Command::new(&exe)
            .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .envs(compacting.then_some((COMPACT_ENV, "1")))
            .env("OURDB_CRASH_SEQ", seq.to_string())
            .env("OURDB_CRASH_SYNC", if sync { "1" } else { "0" })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let kill_after = rng.random_range(0..40);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acked = 0;
        let mut pending: Option<(u64, Vec<Op>)> = None;
        // What the child's loop was doing: 'C' compacting, 'K' checkpointing.
        let mut doing = ' ';
        let mut record = |line: &str, model: &mut Model, pending: &mut Option<(u64, Vec<Op>)>| {
            if matches!(line, "C" | "K" | "c" | "k") {
                doing = line.chars().next().expect("one letter");
                return false;
            }
            if let Some(rest) = line.strip_prefix("T ") {
                // A line cut short by the kill lacks its end marker: that
                // commit never started.
                let Some(rest) = rest.strip_suffix(" end") else {
                    return false;
                };
                let (s, ops) = rest.split_once(' ').unwrap();
                *pending = Some((s.parse().unwrap(), decode(ops)));
            } else if line == "A" {
                let (s, ops) = pending.take().expect("ack without a try");
                model.apply(s, &ops);
                seq = s;
                return true;
            } else if line.starts_with("ERR") {
                panic!("child failed in round {round}: {line}");
            }
            false
        };
        if kill_after > 0 {
            for line in lines.by_ref() {
                let line = line.unwrap();
                if record(&line, &mut model, &mut pending) {
                    acked += 1;
                    if acked >= kill_after {
                        break;
                    }
                }
            }
        }
        // SIGKILL; an error only means the child already exited.
        let _ = child.kill();
        child.wait().unwrap();
        // Lines written before the kill are still in the pipe.
        for line in lines {
            let Ok(line) = line else { break };
            record(&line, &mut model, &mut pending);
        }
        match doing {
            'C' => kills.compacting += 1,
            'K' => kills.checkpointing += 1,
            _ => {}
        }

        let db = OurDb::open(dir.path(), config(Durability::Flush, compacting))
            .unwrap_or_else(|e| panic!("reopen after kill in round {round} (seed {seed}): {e}"));
        match model.mismatch(&db, keep) {
            None => {
                if let Some((s, _)) = &pending {
                    in_flight_rounds += 1;
                    seq = seq.max(*s);
                }
            }
            Some(why) => {
                let (s, ops) = pending.take().unwrap_or_else(|| {
                    panic!("round {round} (seed {seed}): {why}, no commit in flight")
                });
                let mut after = model.clone();
                after.apply(s, &ops);
                if let Some(why_after) = after.mismatch(&db, keep) {
                    panic!(
                        "round {round} (seed {seed}): store is neither the acknowledged state ({why}) \
                         nor that plus the in-flight commit {ops:?} ({why_after})"
                    );
                }
                model = after;
                seq = s;
                in_flight_rounds += 1;
                in_flight_applied += 1;
            }
        }
        db.close().unwrap();
    }
    println!(
        "{rounds} rounds, {} records live, {seq} commits; a commit was in flight at {in_flight_rounds} kills, \
         found applied after {in_flight_applied}",
        model.live.len()
    );
    assert!(model.next_id > rounds as u32, "the children made progress");
    kills.rounds = rounds;
    kills
}
