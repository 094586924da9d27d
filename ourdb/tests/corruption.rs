//! Corruption test: bytes flipped or files truncated. The store either
//! reports `Error::Corrupt` (naming the file and offset) or cuts a torn tail;
//! it never returns data that was not written.
//!
//! `OURDB_CORRUPTION_TRIALS` sets the number of random damages (default 300).

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

mod common;

use common::data_files;
use ourdb::{Batch, Config, Durability, Error, OurDb};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

/// Data file header size (see the on-disk format in ARCHITECTURE.md).
const HEADER: u64 = 32;

fn config() -> Config {
    Config {
        durability: Durability::Flush,
        max_file_size: 8 << 10,
        ..Config::default()
    }
}

/// Removes the checkpoint `close` wrote, so the next open scans every frame:
/// the tests here are about what that scan finds. (With a checkpoint, bytes
/// before its end are checked when read; see `tests/checkpoint.rs`.)
fn scan_everything_on_next_open(dir: &Path) {
    fs::remove_file(dir.join("checkpoint")).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    for p in data_files(from) {
        fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

/// Builds a store with updates, deletes and batches over several files.
/// Returns every version ever written per id, and the final live values.
/// Every version ever written per id.
type Versions = BTreeMap<u32, Vec<Vec<u8>>>;
/// Live value per id.
type Live = BTreeMap<u32, Vec<u8>>;

fn build(dir: &Path, rng: &mut SmallRng) -> (Versions, Live) {
    let db = OurDb::open(dir, config()).unwrap();
    let mut versions = Versions::new();
    let mut live = BTreeMap::new();
    for i in 0..120u32 {
        let v: Vec<u8> = (0..rng.random_range(1..300))
            .map(|_| rng.random())
            .collect();
        match i % 6 {
            0..=2 => {
                let id = db.insert(&v).unwrap();
                versions.entry(id).or_default().push(v.clone());
                live.insert(id, v);
            }
            3 | 4 if !live.is_empty() => {
                let id = *live.keys().nth(rng.random_range(0..live.len())).unwrap();
                db.update(id, &v).unwrap();
                versions.entry(id).or_default().push(v.clone());
                live.insert(id, v);
            }
            _ => {
                let mut b = Batch::new();
                let next = db.next_id();
                b.insert(v.clone()).insert(v.clone());
                db.commit(b).unwrap();
                for id in [next, next + 1] {
                    versions.entry(id).or_default().push(v.clone());
                    live.insert(id, v.clone());
                }
                if rng.random() {
                    db.delete(next).unwrap();
                    live.remove(&next);
                }
            }
        }
    }
    db.close().unwrap();
    assert!(data_files(dir).len() >= 3, "fixture spans several files");
    (versions, live)
}

fn assert_corrupt_names_a_data_file(err: &Error, dir: &Path) {
    match err {
        Error::Corrupt { file, offset, .. } => {
            assert!(file.starts_with(dir), "{err}");
            let len = fs::metadata(file).map(|m| m.len()).unwrap_or(0);
            assert!(
                *offset <= len.max(1),
                "offset {offset} beyond file length {len}: {err}"
            );
            assert!(err.to_string().contains(&file.display().to_string()));
        }
        other => panic!("expected Error::Corrupt, got {other}"),
    }
}

#[test]
fn random_flips_and_truncations_give_corrupt_or_a_cut_tail_never_wrong_data() {
    let trials: u64 = std::env::var("OURDB_CORRUPTION_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let seed: u64 = rand::random();
    println!("corruption test seed {seed}");
    let mut rng = SmallRng::seed_from_u64(seed);
    let pristine = tempfile::tempdir().unwrap();
    let (versions, live) = build(pristine.path(), &mut rng);
    let (mut errors, mut cuts, mut read_errors) = (0, 0, 0);
    for trial in 0..trials {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), dir.path());
        let files = data_files(dir.path());
        let target = rng.random_range(0..files.len());
        let in_last_file = target == files.len() - 1;
        let len = fs::metadata(&files[target]).unwrap().len();
        let damage = match rng.random_range(0..4) {
            0 | 1 => {
                let at = rng.random_range(0..len);
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&files[target])
                    .unwrap();
                let mut b = [0u8];
                f.read_exact_at(&mut b, at).unwrap();
                b[0] ^= 1 << rng.random_range(0..8);
                f.write_all_at(&b, at).unwrap();
                format!("flip at {at} of {}", files[target].display())
            }
            2 => {
                let at = rng.random_range(0..len);
                OpenOptions::new()
                    .write(true)
                    .open(&files[target])
                    .unwrap()
                    .set_len(at)
                    .unwrap();
                format!("truncate {} to {at}", files[target].display())
            }
            _ => {
                let n = rng.random_range(1..5000);
                let junk: Vec<u8> = if rng.random() {
                    vec![0; n]
                } else {
                    (0..n).map(|_| rng.random()).collect()
                };
                let last = files.last().unwrap();
                OpenOptions::new()
                    .append(true)
                    .open(last)
                    .unwrap()
                    .write_all(&junk)
                    .unwrap();
                format!("append {n} bytes to {}", last.display())
            }
        };
        let ctx = format!("trial {trial} (seed {seed}): {damage}");
        let db = match OurDb::open(dir.path(), config()) {
            Err(e) => {
                assert_corrupt_names_a_data_file(&e, dir.path());
                errors += 1;
                continue;
            }
            Ok(db) => db,
        };
        let mut lost = false;
        for (id, all) in &versions {
            match db.get(*id) {
                Err(e) => {
                    assert_corrupt_names_a_data_file(&e, dir.path());
                    read_errors += 1;
                }
                Ok(None) => {
                    // Only a cut tail may lose records, and never a record
                    // deleted in the original.
                    if live.contains_key(id) {
                        assert!(
                            in_last_file,
                            "{ctx}: id {id} lost but the damage was not in the last file"
                        );
                        lost = true;
                    }
                }
                Ok(Some(v)) => {
                    assert!(
                        all.contains(&v),
                        "{ctx}: id {id} returned a value never written"
                    );
                    if live.get(id) != Some(&v) {
                        assert!(in_last_file, "{ctx}: id {id} returned an old version");
                        lost = true;
                    }
                }
            }
            if let Ok(h) = db.history(*id, usize::MAX) {
                assert!(
                    h.iter().all(|v| all.contains(v)),
                    "{ctx}: history of {id} has a value never written"
                );
            }
        }
        cuts += usize::from(lost);
    }
    println!(
        "{trials} trials: {errors} open errors, {cuts} cut tails losing data, {read_errors} read errors"
    );
    assert!(errors > 0, "some damage must be detected at open");
}

#[test]
fn flip_in_an_earlier_file_is_corrupt_naming_that_file_and_the_frame_offset() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), &mut SmallRng::seed_from_u64(1));
    scan_everything_on_next_open(dir.path());
    let first = data_files(dir.path())[0].clone();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&first)
        .unwrap();
    let at = 200;
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], at).unwrap();
    let err = OurDb::open(dir.path(), config()).unwrap_err();
    match &err {
        Error::Corrupt { file, offset, .. } => {
            assert_eq!(file, &first);
            assert!(
                (16..=at).contains(offset),
                "frame offset {offset} should hold byte {at}"
            );
        }
        other => panic!("expected corrupt, got {other}"),
    }
}

#[test]
fn flip_in_the_middle_of_the_last_file_is_corrupt_not_a_cut() {
    let dir = tempfile::tempdir().unwrap();
    let db = OurDb::open(dir.path(), config()).unwrap();
    for i in 0..10u8 {
        db.insert(&[i; 50]).unwrap();
    }
    db.close().unwrap();
    scan_everything_on_next_open(dir.path());
    let last = data_files(dir.path()).pop().unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&last)
        .unwrap();
    f.write_all_at(&[0xEE], HEADER + 12 + 8 + 25 + 3).unwrap();
    let err = OurDb::open(dir.path(), config()).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { file, offset: HEADER, .. } if *file == last),
        "{err}"
    );
}

#[test]
fn torn_tail_is_cut_and_later_writes_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let db = OurDb::open(dir.path(), config()).unwrap();
    let a = db.insert(b"kept").unwrap();
    let b = db.insert(b"torn").unwrap();
    // A crash tears a tail: no close, so no checkpoint shows the torn
    // commit was synced (a data file shorter than that is `Corrupt`).
    drop(db);
    let last = data_files(dir.path()).pop().unwrap();
    let len = fs::metadata(&last).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 3)
        .unwrap();

    let db = OurDb::open(dir.path(), config()).unwrap();
    assert_eq!(db.get(a).unwrap(), Some(b"kept".to_vec()));
    assert_eq!(db.get(b).unwrap(), None, "the torn commit is gone whole");
    assert_eq!(db.next_id(), b, "the torn insert's id is handed out again");
    assert_eq!(db.insert(b"after").unwrap(), b);
    db.close().unwrap();
    let db = OurDb::open(dir.path(), config()).unwrap();
    assert_eq!(db.get(b).unwrap(), Some(b"after".to_vec()));
}

#[test]
fn zero_filled_tail_is_free_space_and_later_writes_land_there() {
    let dir = tempfile::tempdir().unwrap();
    let db = OurDb::open(dir.path(), config()).unwrap();
    db.insert(b"x").unwrap();
    db.close().unwrap();
    let last = data_files(dir.path()).pop().unwrap();
    let len = fs::metadata(&last).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len + 4096)
        .unwrap();
    let db = OurDb::open(dir.path(), config()).unwrap();
    assert_eq!(db.get(1).unwrap(), Some(b"x".to_vec()));
    assert_eq!(db.insert(b"y").unwrap(), 2);
    drop(db);
    assert_eq!(
        fs::metadata(&last).unwrap().len(),
        len + 4096,
        "written over the zeros"
    );
    let db = OurDb::open(dir.path(), config()).unwrap();
    assert_eq!(db.get(2).unwrap(), Some(b"y".to_vec()));
}

#[test]
fn flipped_byte_under_an_open_handle_is_reported_on_read_not_returned() {
    let dir = tempfile::tempdir().unwrap();
    let db = OurDb::open(dir.path(), config()).unwrap();
    let id = db.insert(b"precious value").unwrap();
    let last = data_files(dir.path()).pop().unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&last)
        .unwrap();
    let len = f.metadata().unwrap().len();
    f.write_all_at(b"X", len - 2).unwrap();
    let err = db.get(id).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { file, .. } if *file == last),
        "{err}"
    );
    assert!(db.history(id, 3).is_err());
}

#[test]
fn missing_data_file_in_the_sequence_is_corrupt_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), &mut SmallRng::seed_from_u64(2));
    let second = data_files(dir.path())[1].clone();
    fs::remove_file(&second).unwrap();
    let err = OurDb::open(dir.path(), config()).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { file, .. } if *file == second),
        "{err}"
    );
}

#[test]
fn damage_followed_by_valid_frames_megabytes_later_is_still_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        max_file_size: 64 << 20,
        ..config()
    };
    let db = OurDb::open(dir.path(), cfg.clone()).unwrap();
    db.insert(b"small").unwrap();
    for i in 0..3u8 {
        db.insert(&vec![i; 900 << 10]).unwrap();
    }
    db.close().unwrap();
    scan_everything_on_next_open(dir.path());
    let files = data_files(dir.path());
    assert_eq!(files.len(), 1);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&files[0])
        .unwrap();
    // Inside the first, small frame: the next valid frame starts right after
    // it, the last one more than 1 MiB further.
    f.write_all_at(&[0xAB], HEADER + 12 + 8 + 25 + 1).unwrap();
    let err = OurDb::open(dir.path(), cfg.clone()).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { offset: HEADER, .. }),
        "{err}"
    );

    // A damaged 1 MiB frame: the only later valid frame starts more than
    // the 1 MiB recovery read window after the bad one.
    let dir = tempfile::tempdir().unwrap();
    let db = OurDb::open(dir.path(), cfg.clone()).unwrap();
    db.insert(&vec![1; 1 << 20]).unwrap();
    db.insert(b"after").unwrap();
    db.close().unwrap();
    scan_everything_on_next_open(dir.path());
    let file = data_files(dir.path()).remove(0);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file)
        .unwrap();
    f.write_all_at(&[0xAB], HEADER + 4).unwrap();
    let err = OurDb::open(dir.path(), cfg).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { offset: HEADER, .. }),
        "{err}"
    );
}
