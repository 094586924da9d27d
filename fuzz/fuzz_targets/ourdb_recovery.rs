//! OurDB's open (the recovery scan) on data files a stranger wrote: the
//! fuzzer's bytes as a whole data file, as frames after a valid header, as
//! edits to the tail of a valid store (written in `Flush` mode, or in `Sync`
//! mode with its sync markers), or as the checkpoint of a valid
//! store (after it, reads give the store's records or `Corrupt`, and when
//! open did not use it, exactly the store's records). Never a panic; an error is
//! `Corrupt` naming a data file of the directory and an offset inside it
//! (or `ModeMismatch` for a header of the other mode); an opened store holds
//! exactly the records after some whole commit of what was written, never
//! fewer than the commits the edits left untouched; and it takes a write
//! that reads back after a reopen.
#![no_main]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ourdb::{Batch, Config, Durability, Error, OurDb};

/// Largest id the checks read.
const MAX_ID: u32 = 16;

fn config(durability: Durability) -> Config {
    Config {
        durability,
        max_file_size: 400,
        cache_size: 0,
        ..Config::default()
    }
}

/// Live records: id → value.
type State = BTreeMap<u32, Vec<u8>>;

/// A valid store and what it held after each commit.
struct Template {
    /// Data files in order: (name, bytes).
    files: Vec<(String, Vec<u8>)>,
    /// `states[k]`: the records after the first `k` commits.
    states: Vec<State>,
    /// Where commit `k` (from 1) ended: (file index, end offset).
    ends: Vec<(usize, u64)>,
    durability: Durability,
}

/// The directory every iteration reuses (tmpfs when there is one).
fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        base.join(format!("circles-fuzz-ourdb-{}", std::process::id()))
    })
}

fn clear(dir: &Path) {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).expect("the fuzz directory can be created");
}

fn data_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("readable dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.starts_with("data-"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let bytes = fs::read(dir.join(&n)).expect("readable data file");
            (n, bytes)
        })
        .collect()
}

/// The template written in `durability` mode, built once.
fn template(durability: Durability) -> &'static Template {
    static FLUSH: OnceLock<Template> = OnceLock::new();
    static SYNC: OnceLock<Template> = OnceLock::new();
    let cell = match durability {
        Durability::Flush => &FLUSH,
        Durability::Sync => &SYNC,
    };
    cell.get_or_init(|| build_template(durability))
}

/// The end of each commit's frame, in order, read from the files: frames
/// without ops (sync markers) are skipped, and so is the space `Sync` mode
/// preallocates after the last frame.
fn commit_ends(files: &[(String, Vec<u8>)]) -> Vec<(usize, u64)> {
    let mut ends = Vec::new();
    for (i, (_, bytes)) in files.iter().enumerate() {
        let mut at = 32;
        while at + 20 <= bytes.len() && &bytes[at..at + 4] == b"ODBF" {
            let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
            let ops = u32::from_le_bytes(bytes[at + 16..at + 20].try_into().expect("4 bytes"));
            at += 12 + len as usize;
            if ops > 0 {
                ends.push((i, at as u64));
            }
        }
    }
    ends
}

fn build_template(durability: Durability) -> Template {
    let dir = dir();
    clear(dir);
    let db = OurDb::open(dir, config(durability)).expect("a fresh store opens");
    let mut states = vec![State::new()];
    let mut state = State::new();
    let mut commit = |db: &OurDb, batch: Batch, state: &mut State, apply: &dyn Fn(&mut State)| {
        db.commit(batch).expect("template commit");
        apply(state);
        states.push(state.clone());
    };
    let big = vec![b'z'; 150];
    let mut b = Batch::new();
    b.insert(b"alpha".to_vec());
    commit(&db, b, &mut state, &|s| {
        s.insert(1, b"alpha".to_vec());
    });
    let mut b = Batch::new();
    b.insert(b"beta".to_vec()).update(1, b"alpha-2".to_vec());
    commit(&db, b, &mut state, &|s| {
        s.insert(2, b"beta".to_vec());
        s.insert(1, b"alpha-2".to_vec());
    });
    let mut b = Batch::new();
    b.insert(big.clone()).delete(2);
    let big2 = big.clone();
    commit(&db, b, &mut state, &move |s| {
        s.insert(3, big2.clone());
        s.remove(&2);
    });
    let mut b = Batch::new();
    b.insert(Vec::new()).update(3, b"gamma".to_vec());
    commit(&db, b, &mut state, &|s| {
        s.insert(4, Vec::new());
        s.insert(3, b"gamma".to_vec());
    });
    let mut b = Batch::new();
    b.insert(big.clone());
    let big3 = big.clone();
    commit(&db, b, &mut state, &move |s| {
        s.insert(5, big3.clone());
    });
    let mut b = Batch::new();
    b.update(1, b"alpha-3".to_vec())
        .delete(5)
        .insert(b"delta".to_vec());
    commit(&db, b, &mut state, &|s| {
        s.insert(1, b"alpha-3".to_vec());
        s.remove(&5);
        s.insert(6, b"delta".to_vec());
    });
    db.close().expect("template closes");
    let files = data_files(dir);
    assert!(files.len() >= 2, "the template spans several data files");
    let ends = commit_ends(&files);
    assert_eq!(ends.len() + 1, states.len(), "a frame per commit");
    if durability == Durability::Sync {
        let frames: usize = files
            .iter()
            .map(|(_, b)| b.windows(4).filter(|w| w == b"ODBF").count())
            .sum();
        assert!(frames > ends.len(), "sync markers between the commits");
    }
    Template {
        files,
        states,
        ends,
        durability,
    }
}

/// The records ids 1..=MAX_ID hold.
fn read_state(db: &OurDb) -> State {
    let mut state = State::new();
    for id in 1..=MAX_ID {
        if let Some(v) = db.get(id).expect("a record of an opened store reads") {
            state.insert(id, v);
        }
        let _ = db.history(id, 8).expect("history of an opened store reads");
    }
    state
}

fn check_error(e: &Error, dir: &Path) {
    match e {
        Error::Corrupt { file, offset, .. } => {
            assert_eq!(file.parent(), Some(dir), "{e}");
            let len = fs::metadata(file).map(|m| m.len()).unwrap_or(0);
            assert!(*offset <= len, "offset past the end of the file: {e}");
        }
        Error::ModeMismatch { .. } => {}
        other => panic!("unexpected error opening a damaged store: {other}"),
    }
}

/// Opens the store in `dir`; on success checks its records with `check`,
/// then that a write reads back after a reopen.
fn open_and_check(dir: &Path, durability: Durability, check: impl Fn(&State)) {
    let db = match OurDb::open(dir, config(durability)) {
        Ok(db) => db,
        Err(e) => return check_error(&e, dir),
    };
    let state = read_state(&db);
    check(&state);
    let probe = b"probe".to_vec();
    let id = match db.insert(&probe) {
        Ok(id) => id,
        Err(Error::IdSpaceExhausted) => return,
        Err(e) => panic!("a write to a recovered store failed: {e}"),
    };
    assert_eq!(db.get(id).expect("probe reads"), Some(probe.clone()));
    db.close().expect("closes");
    let db = OurDb::open(dir, config(durability)).expect("a store this process wrote reopens");
    assert_eq!(db.get(id).expect("probe reads after reopen"), Some(probe));
    if id > MAX_ID {
        assert_eq!(read_state(&db), state, "a reopen keeps the records");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&variant, rest)) = data.split_first() else {
        return;
    };
    let flush = Durability::Flush;
    let t = template(flush);
    let dir = dir();
    clear(dir);
    match variant % 4 {
        // The bytes as the only data file.
        0 => {
            fs::write(dir.join("data-00000000.odb"), rest).expect("write");
            open_and_check(dir, flush, |_| {});
        }
        // A valid header, then the bytes as frames.
        1 => {
            let mut file = t.files[0].1[..32].to_vec();
            file.extend_from_slice(rest);
            fs::write(dir.join("data-00000000.odb"), file).expect("write");
            open_and_check(dir, flush, |_| {});
        }
        // The valid store with the bytes as its checkpoint.
        3 => {
            for (name, bytes) in &t.files {
                fs::write(dir.join(name), bytes).expect("write");
            }
            fs::write(dir.join("checkpoint"), rest).expect("write");
            let db = match OurDb::open(dir, config(flush)) {
                Ok(db) => db,
                Err(e) => return check_error(&e, dir),
            };
            let want = t.states.last().expect("a final state");
            if !db.stats().opened_from_checkpoint {
                assert_eq!(&read_state(&db), want, "a full scan reads the store");
                return;
            }
            for id in 1..=MAX_ID {
                match db.get(id) {
                    // At worst an older version, never bytes nobody wrote.
                    Ok(Some(v)) => assert!(
                        t.states.iter().any(|s| s.get(&id) == Some(&v)),
                        "a value nobody wrote for id {id}"
                    ),
                    Ok(None) | Err(Error::Corrupt { .. }) => {}
                    Err(e) => panic!("unexpected error reading id {id}: {e}"),
                }
                if let Err(e) = db.history(id, 8) {
                    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
                }
            }
        }
        // The valid store, written in either mode, with edits near the ends
        // of its files.
        _ => {
            let t = template(if variant & 4 == 0 {
                flush
            } else {
                Durability::Sync
            });
            let mut files = t.files.clone();
            // The first position an edit touched: (file, offset).
            let mut first = (usize::MAX, u64::MAX);
            for edit in rest.chunks_exact(4) {
                let f = usize::from(edit[0]) % files.len();
                let back = usize::from(edit[2]);
                let bytes = &mut files[f].1;
                let len = bytes.len();
                let at = len.saturating_sub(1 + back % len.max(1));
                let touched = match edit[1] % 4 {
                    0 | 1 if len > 0 => {
                        bytes[at] ^= edit[3] | 1;
                        at
                    }
                    2 => {
                        let keep = len - back % (len + 1).min(64);
                        bytes.truncate(keep);
                        keep
                    }
                    _ => {
                        bytes.extend(std::iter::repeat_n(edit[3], back % 40 + 1));
                        len
                    }
                };
                first = first.min((f, touched as u64));
            }
            for (name, bytes) in &files {
                fs::write(dir.join(name), bytes).expect("write");
            }
            // Commits that ended before the first edit must survive.
            let kept = t.ends.iter().filter(|&&(f, end)| (f, end) <= first).count();
            open_and_check(dir, t.durability, |state| {
                let k = t.states.iter().position(|s| s == state);
                match k {
                    Some(k) => assert!(
                        k >= kept,
                        "recovery lost commits it had no reason to: {k} of {kept} untouched commits"
                    ),
                    None => panic!("recovered records that no commit left: {state:?}"),
                }
            });
        }
    }
});
