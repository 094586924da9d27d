//! A write path that changes files (a roll-over to the next data file, the
//! switch at the end of a compaction) failing at each of its steps, made to
//! fail for real by running the process out of file descriptors: whatever
//! step fails, every commit acknowledged before or after it is there after
//! a reopen, and the store opens. A failure after the new file may be in
//! place poisons the handle (`Error::Poisoned`: no later commit can
//! contradict that file).

mod common;

use std::fs::File;
use std::os::fd::AsRawFd;

use ourdb::{Config, Durability, Error, OurDb};

fn config() -> Config {
    Config {
        durability: Durability::Flush,
        checkpoint_bytes: 0,
        ..Config::default()
    }
}

/// Leaves the process `free` file descriptors (every lower number is taken
/// by a file held until the returned guard drops, and the limit is set just
/// above); the guard restores the limit.
fn descriptors_left(free: usize) -> impl Drop {
    let mut held = Vec::new();
    loop {
        let f = File::open("/dev/null").expect("opens /dev/null");
        let fd = f.as_raw_fd();
        held.push(f);
        if fd >= 100 {
            break;
        }
    }
    let limit = held.last().expect("one file at least").as_raw_fd() as u64 + 1;
    held.truncate(held.len() - free);
    let old = common::set_soft_limit(libc::RLIMIT_NOFILE, limit);
    Limit { old, _held: held }
}

struct Limit {
    old: u64,
    _held: Vec<File>,
}

impl Drop for Limit {
    fn drop(&mut self) {
        common::set_soft_limit(libc::RLIMIT_NOFILE, self.old);
    }
}

/// After `step` ran with `free` descriptors: an insert either is
/// acknowledged or refused because the handle is poisoned; then the store
/// reopens holding `kept` and whatever was acknowledged.
fn afterwards(db: OurDb, dir: &std::path::Path, cfg: Config, kept: &[(u32, Vec<u8>)]) -> bool {
    let mut want = kept.to_vec();
    let poisoned = match db.insert(b"after the failure") {
        Ok(id) => {
            db.sync().expect("a healthy handle syncs");
            want.push((id, b"after the failure".to_vec()));
            false
        }
        Err(Error::Poisoned { .. }) => true,
        Err(e) => panic!("neither acknowledged nor poisoned: {e}"),
    };
    drop(db);
    let db = OurDb::open(dir, cfg).expect("the store opens");
    for (id, value) in want {
        assert_eq!(db.get(id).unwrap(), Some(value), "id {id}");
    }
    poisoned
}

#[test]
fn a_compaction_failing_at_any_step_of_its_switch_loses_nothing() {
    let mut outcomes = Vec::new();
    for free in 0..6 {
        let dir = tempfile::tempdir().unwrap();
        let db = OurDb::open(dir.path(), config()).unwrap();
        let id = db.insert(b"first").unwrap();
        db.update(id, b"second").unwrap();
        let other = db.insert(b"other").unwrap();
        db.sync().unwrap();
        let compacted = {
            let _limit = descriptors_left(free);
            db.compact()
        };
        let kept = [(id, b"second".to_vec()), (other, b"other".to_vec())];
        let poisoned = afterwards(db, dir.path(), config(), &kept);
        outcomes.push((compacted.is_ok(), poisoned));
    }
    // Failed before its rename (the handle goes on), failed after it
    // (poisoned), and went through: each step was reached.
    assert!(outcomes.contains(&(false, false)), "{outcomes:?}");
    assert!(outcomes.contains(&(false, true)), "{outcomes:?}");
    assert!(outcomes.contains(&(true, false)), "{outcomes:?}");
}

#[test]
fn a_roll_over_failing_at_any_step_loses_nothing_and_the_store_opens() {
    let cfg = Config {
        max_file_size: 4096,
        ..config()
    };
    let mut outcomes = Vec::new();
    for free in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let db = OurDb::open(dir.path(), cfg.clone()).unwrap();
        let first = db.insert(&[1u8; 1000]).unwrap();
        let mut kept = vec![(first, vec![1u8; 1000])];
        // Too big for what is left of the first file: a roll-over.
        let rolled = {
            let _limit = descriptors_left(free);
            db.insert(&[2u8; 3000])
        };
        if let Ok(id) = &rolled {
            kept.push((*id, vec![2u8; 3000]));
        }
        let poisoned = afterwards(db, dir.path(), cfg.clone(), &kept);
        outcomes.push((rolled.is_ok(), poisoned));
    }
    assert!(outcomes.contains(&(false, false)), "{outcomes:?}");
    assert!(outcomes.contains(&(false, true)), "{outcomes:?}");
    assert!(outcomes.contains(&(true, false)), "{outcomes:?}");
}
