//! Batches of inserts, updates, sets and deletes committed on one thread while
//! another compacts again and again, with roll-overs during the copies: history
//! and values stay those of a model, live, after a scan and from a checkpoint.

use ourdb::{Batch, Config, Durability, Mode, OurDb};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use std::collections::BTreeMap;
use std::sync::Arc;

fn config(mode: Mode, durability: Durability) -> Config {
    Config {
        mode,
        durability,
        max_file_size: 16 << 10,
        history: 3,
        checkpoint_bytes: 0,
        compaction_min_bytes: 0,
        ..Config::default()
    }
}

fn run(mode: Mode, durability: Durability, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(mode, durability);
    let db = Arc::new(OurDb::open(dir.path(), cfg.clone()).unwrap());
    let writer = {
        let db = Arc::clone(&db);
        std::thread::spawn(move || {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut model: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
            let mut next = 1u32;
            for i in 0..4000u32 {
                let mut b = Batch::new();
                let mut m = model.clone();
                for _ in 0..rng.random_range(1..4) {
                    let id = rng.random_range(1..40u32);
                    let v =
                        format!("{id}:{i}:{}", "z".repeat(rng.random_range(0..200))).into_bytes();
                    match rng.random_range(0..10) {
                        0..=1 => {
                            b.delete(id);
                            m.remove(&id);
                        }
                        2..=3 if mode == Mode::Incremental => {
                            b.insert(v.clone());
                            m.insert(next, vec![v]);
                            next += 1;
                        }
                        _ => {
                            if mode == Mode::KeyValue {
                                b.set(id, v.clone());
                                m.entry(id).or_default().push(v);
                            } else if m.contains_key(&id) {
                                b.update(id, v.clone());
                                m.get_mut(&id).unwrap().push(v);
                            }
                        }
                    }
                }
                db.commit(b).unwrap();
                model = m;
                if i % 50 == 0 {
                    for (id, vs) in &model {
                        let h = db.history(*id, 3).unwrap();
                        let want: Vec<_> = vs.iter().rev().take(3).cloned().collect();
                        assert_eq!(h, want, "history of {id} at {i}");
                    }
                }
            }
            model
        })
    };
    // At least one compaction runs beside the writer, however fast it is.
    loop {
        db.compact().unwrap();
        if writer.is_finished() {
            break;
        }
    }
    let model = writer.join().unwrap();
    let check = |db: &OurDb, when: &str| {
        for id in 1..200u32 {
            let want: Vec<_> = model
                .get(&id)
                .map(|vs| vs.iter().rev().take(3).cloned().collect())
                .unwrap_or_default();
            assert_eq!(db.history(id, 3).unwrap(), want, "{when}: id {id}");
            assert_eq!(
                db.get(id).unwrap(),
                want.first().cloned(),
                "{when}: id {id}"
            );
        }
    };
    check(&db, "live");
    drop(db);
    let db = OurDb::open(dir.path(), cfg.clone()).unwrap();
    check(&db, "reopened");
    db.close().unwrap();
    let db = OurDb::open(dir.path(), cfg).unwrap();
    check(&db, "reopened from checkpoint");
}

/// Key-value mode, Flush.
#[test]
fn batches_beside_compactions_keep_every_version_key_value_flush() {
    for s in 0..3 {
        run(Mode::KeyValue, Durability::Flush, s);
    }
}
/// Key-value mode, Sync.
#[test]
fn batches_beside_compactions_keep_every_version_key_value_sync() {
    run(Mode::KeyValue, Durability::Sync, 7);
}
/// Incremental mode, Flush.
#[test]
fn batches_beside_compactions_keep_every_version_incremental_flush() {
    for s in 0..3 {
        run(Mode::Incremental, Durability::Flush, s);
    }
}
/// Incremental mode, Sync.
#[test]
fn batches_beside_compactions_keep_every_version_incremental_sync() {
    run(Mode::Incremental, Durability::Sync, 9);
}
