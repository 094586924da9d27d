//! Randomized model test: long random sequences of operations, batches,
//! compactions, checkpoints and reopens (with and without a closing
//! checkpoint, under random `history`, checkpoint and compaction settings),
//! checked step by step against an in-memory model.
//!
//! On failure the seed is printed; replay with `OURDB_MODEL_SEED=<seed>`.
//! `OURDB_MODEL_ITERS` sets the number of operations per seed (default 3000),
//! `OURDB_MODEL_SEEDS` the number of seeds per mode (default 4).

use std::collections::BTreeMap;

use ourdb::{Batch, Config, Durability, Error, Mode, OurDb};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

const MAX_VALUE: usize = 300;

/// Live ids → their versions, oldest first.
#[derive(Clone, Default)]
struct Model {
    mode: Mode,
    live: BTreeMap<u32, Vec<Vec<u8>>>,
    next_id: u32,
    /// The fewest versions any compaction so far may have kept (`Config::history`
    /// of every config used; 0 counts as all).
    keep_floor: usize,
}

impl Model {
    fn configured(&mut self, c: &Config) {
        if c.history > 0 {
            self.keep_floor = self.keep_floor.min(c.history);
        }
    }

    /// After an explicit compaction under `history`: older versions are gone.
    fn compacted(&mut self, history: usize) {
        if history > 0 {
            for v in self.live.values_mut() {
                let drop = v.len().saturating_sub(history);
                v.drain(..drop);
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Insert(Vec<u8>),
    Set(u32, Vec<u8>),
    Update(u32, Vec<u8>),
    Delete(u32),
}

/// The error a model predicts, compared by kind.
#[derive(Debug, PartialEq)]
enum Fail {
    NotFound(u32),
    TooLarge,
    WrongMode,
    Conflict,
}

impl Model {
    fn apply(&mut self, ops: &[Op], expect: Option<u32>) -> Result<(Vec<u32>, usize), Fail> {
        if expect.is_some_and(|e| e != self.next_id) {
            return Err(Fail::Conflict);
        }
        let mut m = self.clone();
        let mut ids = Vec::new();
        let mut deleted = 0;
        for op in ops {
            match op {
                Op::Insert(v) | Op::Set(_, v) | Op::Update(_, v) if v.len() > MAX_VALUE => {
                    return Err(Fail::TooLarge);
                }
                Op::Insert(_) if m.mode == Mode::KeyValue => return Err(Fail::WrongMode),
                Op::Insert(v) => {
                    let id = m.next_id;
                    m.next_id += 1;
                    m.live.insert(id, vec![v.clone()]);
                    ids.push(id);
                }
                Op::Set(id, v) if m.mode == Mode::KeyValue => {
                    m.live.entry(*id).or_default().push(v.clone());
                    m.next_id = m.next_id.max(id.saturating_add(1));
                }
                Op::Set(id, v) | Op::Update(id, v) => match m.live.get_mut(id) {
                    Some(h) => h.push(v.clone()),
                    None => return Err(Fail::NotFound(*id)),
                },
                Op::Delete(id) => {
                    if m.live.remove(id).is_some() {
                        deleted += 1;
                    }
                }
            }
        }
        *self = m;
        Ok((ids, deleted))
    }
}

fn fail_of(e: &Error) -> Fail {
    match e {
        Error::NotFound { id } => Fail::NotFound(*id),
        Error::ValueTooLarge { .. } => Fail::TooLarge,
        Error::WrongMode { .. } => Fail::WrongMode,
        Error::Conflict { .. } => Fail::Conflict,
        other => panic!("unexpected error: {other}"),
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn random_value(rng: &mut SmallRng) -> Vec<u8> {
    let len = match rng.random_range(0..20) {
        0 => 0,
        1 => MAX_VALUE + 1,
        2 => MAX_VALUE,
        _ => rng.random_range(1..64),
    };
    (0..len).map(|_| rng.random()).collect()
}

fn random_id(rng: &mut SmallRng, m: &Model) -> u32 {
    match m.mode {
        Mode::Incremental => rng.random_range(0..m.next_id.saturating_add(3)),
        Mode::KeyValue => match rng.random_range(0..10) {
            0 => u32::MAX,
            _ => rng.random_range(0..40),
        },
    }
}

fn random_op(rng: &mut SmallRng, m: &Model) -> Op {
    let id = random_id(rng, m);
    match rng.random_range(0..10) {
        0..=3 => match m.mode {
            Mode::Incremental => Op::Insert(random_value(rng)),
            Mode::KeyValue if rng.random_range(0..20) == 0 => Op::Insert(random_value(rng)),
            Mode::KeyValue => Op::Set(id, random_value(rng)),
        },
        4 | 5 => Op::Update(id, random_value(rng)),
        6 => Op::Set(id, random_value(rng)),
        _ => Op::Delete(id),
    }
}

fn config(mode: Mode, rng: &mut SmallRng) -> Config {
    Config {
        mode,
        durability: if rng.random_range(0..5) == 0 {
            Durability::Sync
        } else {
            Durability::Flush
        },
        max_value_size: MAX_VALUE,
        // Small files so rollover happens often.
        max_file_size: rng.random_range(100..4000),
        // Off, tiny (constant eviction) or default.
        cache_size: [0, 2048, 16 << 20][rng.random_range(0..3)],
        history: [0, 1, 2, 5, 16][rng.random_range(0..5)],
        // Off, often, default.
        checkpoint_bytes: [0, 512, 8 << 20][rng.random_range(0..3)],
        compaction_min_bytes: [0, 4096, 64 << 20][rng.random_range(0..3)],
    }
}

fn check_all(db: &OurDb, m: &Model, step: usize) {
    assert_eq!(db.next_id(), m.next_id, "next_id at step {step}");
    assert_eq!(db.len(), m.live.len(), "live count at step {step}");
    for (id, versions) in &m.live {
        assert_eq!(
            db.get(*id).unwrap().as_ref(),
            versions.last(),
            "get({id}) at step {step}"
        );
    }
}

fn run(seed: u64, mode: Mode, iters: u64) {
    println!("model test: mode {mode:?}, seed {seed} (replay with OURDB_MODEL_SEED={seed})");
    let mut rng = SmallRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut m = Model {
        mode,
        next_id: 1,
        keep_floor: usize::MAX,
        ..Model::default()
    };
    let mut cfg = config(mode, &mut rng);
    m.configured(&cfg);
    let mut db = OurDb::open(dir.path(), cfg.clone()).unwrap();
    for step in 0..iters as usize {
        match rng.random_range(0..100) {
            0..=1 => {
                if rng.random() {
                    db.close().unwrap();
                } else {
                    drop(db);
                }
                cfg = config(mode, &mut rng);
                m.configured(&cfg);
                db = OurDb::open(dir.path(), cfg.clone()).unwrap();
                check_all(&db, &m, step);
            }
            39 => {
                db.compact().unwrap();
                m.compacted(cfg.history);
                check_all(&db, &m, step);
            }
            40 => db.checkpoint().unwrap(),
            2..=11 => {
                let n = rng.random_range(0..8);
                let ops: Vec<Op> = (0..n).map(|_| random_op(&mut rng, &m)).collect();
                let expect = match rng.random_range(0..4) {
                    0 => Some(m.next_id),
                    1 => Some(rng.random_range(0..m.next_id.saturating_add(2))),
                    _ => None,
                };
                let mut b = Batch::new();
                if let Some(e) = expect {
                    b.expect_next_id(e);
                }
                for op in &ops {
                    match op.clone() {
                        Op::Insert(v) => b.insert(v),
                        Op::Set(id, v) => b.set(id, v),
                        Op::Update(id, v) => b.update(id, v),
                        Op::Delete(id) => b.delete(id),
                    };
                }
                let want = m.apply(&ops, expect).map(|(ids, _)| ids);
                let got = db.commit(b).map_err(|e| fail_of(&e));
                assert_eq!(got, want, "batch {ops:?} at step {step}");
            }
            12..=30 => {
                let id = random_id(&mut rng, &m);
                assert_eq!(
                    db.get(id).unwrap().as_ref(),
                    m.live.get(&id).and_then(|v| v.last()),
                    "get({id}) at step {step}"
                );
                assert_eq!(
                    db.exists(id).unwrap(),
                    m.live.contains_key(&id),
                    "exists({id}) at step {step}"
                );
            }
            31..=38 => {
                let id = random_id(&mut rng, &m);
                let depth = rng.random_range(0..6);
                let want: Vec<Vec<u8>> = m
                    .live
                    .get(&id)
                    .map(|v| v.iter().rev().take(depth).cloned().collect())
                    .unwrap_or_default();
                // Compaction may have dropped versions beyond the floor.
                let got = db.history(id, depth).unwrap();
                assert!(
                    got.len() >= want.len().min(m.keep_floor) && want.starts_with(&got),
                    "history({id}, {depth}) at step {step}: {} of {} versions",
                    got.len(),
                    want.len()
                );
            }
            _ => {
                let op = random_op(&mut rng, &m);
                let want = m.apply(std::slice::from_ref(&op), None);
                let got = match &op {
                    Op::Insert(v) => db.insert(v).map(|id| (vec![id], 0)),
                    Op::Set(id, v) => db.set(*id, v).map(|()| (vec![], 0)),
                    Op::Update(id, v) => db.update(*id, v).map(|()| (vec![], 0)),
                    Op::Delete(id) => db.delete(*id).map(|d| (vec![], usize::from(d))),
                }
                .map_err(|e| fail_of(&e));
                assert_eq!(got, want, "{op:?} at step {step}");
            }
        }
    }
    drop(db);
    let db = OurDb::open(dir.path(), config(mode, &mut rng)).unwrap();
    check_all(&db, &m, iters as usize);
    db.compact().unwrap();
    check_all(&db, &m, iters as usize);
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("OURDB_MODEL_SEED") {
        return vec![s.parse().expect("OURDB_MODEL_SEED is a u64")];
    }
    (0..env_or("OURDB_MODEL_SEEDS", 4))
        .map(|_| rand::random())
        .collect()
}

#[test]
fn incremental_mode_matches_the_model_across_random_ops_and_reopens() {
    for seed in seeds() {
        run(seed, Mode::Incremental, env_or("OURDB_MODEL_ITERS", 3000));
    }
}

#[test]
fn key_value_mode_matches_the_model_across_random_ops_and_reopens() {
    for seed in seeds() {
        run(seed, Mode::KeyValue, env_or("OURDB_MODEL_ITERS", 3000));
    }
}
