//! Readers on several threads while one writer commits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ourdb::{Batch, Config, Durability, OurDb};

/// A self-describing value: id, version, then filler, so a reader can tell a
/// torn or misplaced read from a good one.
fn value(id: u32, version: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    v.extend_from_slice(&id.to_le_bytes());
    v.extend_from_slice(&version.to_le_bytes());
    v.resize(8 + (id as usize % 50), (id ^ version) as u8);
    v
}

fn parse(id: u32, v: &[u8]) -> u32 {
    assert_eq!(
        u32::from_le_bytes(v[0..4].try_into().unwrap()),
        id,
        "value belongs to another id"
    );
    let version = u32::from_le_bytes(v[4..8].try_into().unwrap());
    assert_eq!(v, value(id, version), "value of id {id} is damaged");
    version
}

#[test]
fn readers_on_several_threads_see_whole_commits_while_a_writer_commits() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        durability: Durability::Flush,
        max_file_size: 256 << 10,
        ..Config::default()
    };
    let db = Arc::new(OurDb::open(dir.path(), cfg).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    const COMMITS: u32 = 3000;

    let readers: Vec<_> = (0..4)
        .map(|r| {
            let (db, done) = (Arc::clone(&db), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut reads = 0u64;
                let mut seen_version = std::collections::HashMap::new();
                let mut x = 12345u32 + r;
                while !done.load(Ordering::Acquire) {
                    let next = db.next_id();
                    // Everything below next_id is committed and visible:
                    // inserts come in pairs, both halves at once.
                    for id in [next.saturating_sub(1), next.saturating_sub(2)] {
                        if id >= 1 {
                            assert!(
                                db.get(id).unwrap().is_some(),
                                "id {id} below next_id {next} is missing"
                            );
                        }
                    }
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    let id = 1 + x % next.max(1);
                    if let Some(v) = db.get(id).unwrap() {
                        let version = parse(id, &v);
                        let prev = seen_version.insert(id, version).unwrap_or(0);
                        assert!(
                            version >= prev,
                            "id {id} went back from version {prev} to {version}"
                        );
                        let h = db.history(id, 3).unwrap();
                        assert!(!h.is_empty());
                        for (i, old) in h.iter().enumerate().skip(1) {
                            assert!(
                                parse(id, old) < parse(id, &h[i - 1]),
                                "history of {id} out of order"
                            );
                        }
                    }
                    reads += 1;
                }
                reads
            })
        })
        .collect();

    for c in 0..COMMITS {
        let next = db.next_id();
        let mut b = Batch::new();
        b.insert(value(next, 0)).insert(value(next + 1, 0));
        if next > 2 {
            let old = 1 + c % (next - 1);
            let v = parse(old, &db.get(old).unwrap().unwrap());
            b.update(old, value(old, v + 1));
        }
        assert_eq!(db.commit(b).unwrap(), vec![next, next + 1]);
    }
    done.store(true, Ordering::Release);
    let reads: u64 = readers.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(reads > 0);
    println!("{COMMITS} commits while readers did {reads} read rounds");
}
