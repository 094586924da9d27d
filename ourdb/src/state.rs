//! The state an open database shares between its readers and its one writer:
//! the data files, the published index and next id, the writer's position,
//! and the locks that guard them.
//!
//! Layering: above `files` and `index`; below `commit` (which changes it)
//! and `db` (which builds it from what `recovery` finds, and reads it).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::Config;
use crate::checkpoint::Covered;
use crate::error::{Error, Result};
use crate::files::DataFile;
use crate::index::Index;
use crate::stats::Counters;

/// What readers see; replaced under the write lock only after a commit's
/// bytes are written (and synced in `Sync` mode).
#[derive(Debug)]
pub(crate) struct State {
    pub index: Index,
    pub next_id: u32,
    /// The data files, numbered from `first_file`.
    pub files: Vec<Arc<DataFile>>,
    pub first_file: u32,
    /// Position just past the last published frame: `index` and `next_id`
    /// hold exactly the frames before it.
    pub end: Covered,
}

impl State {
    /// Data file number `n`, when it is one of the current files.
    pub(crate) fn file(&self, n: u32) -> Option<&Arc<DataFile>> {
        self.files.get(n.checked_sub(self.first_file)? as usize)
    }
}

/// The compaction trigger's count of superseded bytes ([`Wake::superseded`]),
/// or not known yet.
#[derive(Debug)]
pub(crate) struct Superseded(AtomicU64);

impl Superseded {
    const UNKNOWN: u64 = u64::MAX;

    fn new(known: Option<u64>) -> Superseded {
        Superseded(AtomicU64::new(
            known.map_or(Self::UNKNOWN, |n| n.min(Self::UNKNOWN - 1)),
        ))
    }

    /// The count, when known.
    pub(crate) fn get(&self) -> Option<u64> {
        let n = self.0.load(Ordering::Relaxed);
        (n != Self::UNKNOWN).then_some(n)
    }

    /// Adds what a commit superseded (nothing while the count is not known).
    pub(crate) fn add(&self, n: u64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                (s != Self::UNKNOWN).then(|| s.saturating_add(n).min(Self::UNKNOWN - 1))
            });
    }

    /// The count, set from `estimate` first when it is not known.
    pub(crate) fn get_or_estimate(&self, estimate: impl FnOnce() -> u64) -> u64 {
        if let Some(n) = self.get() {
            return n;
        }
        let n = estimate().min(Self::UNKNOWN - 1);
        let _ = self
            .0
            .compare_exchange(Self::UNKNOWN, n, Ordering::Relaxed, Ordering::Relaxed);
        self.get().unwrap_or(n)
    }

    /// Takes off what a compaction reclaimed: the count when it started
    /// (`None`: not known then, so nothing of the old count is left).
    pub(crate) fn reclaimed(&self, at_start: Option<u64>) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| match at_start {
                Some(start) if s != Self::UNKNOWN => Some(s.saturating_sub(start)),
                _ => Some(0),
            });
    }
}

impl Default for Superseded {
    fn default() -> Superseded {
        Superseded::new(None)
    }
}

/// Wakes the background worker (checkpoints, compaction) and tells it to stop.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    /// Bytes committed since the worker last looked.
    pub pending: AtomicU64,
    /// Bytes in the data files of versions a later commit replaced or
    /// deleted, and of deletes, since the last compaction started: what the
    /// next one could reclaim at most (it keeps `Config::history` versions).
    /// Commits add to it; open resumes it from the checkpoint (0 for a new
    /// store), or else the first look after open estimates it from the index.
    pub superseded: Superseded,
    pub stop: AtomicBool,
    flag: Mutex<bool>,
    cond: Condvar,
}

impl Wake {
    /// A wake whose `superseded` count starts at `known`, or (`None`) is
    /// left for the background worker's first look to estimate.
    pub(crate) fn resuming(known: Option<u64>) -> Wake {
        Wake {
            superseded: Superseded::new(known),
            ..Wake::default()
        }
    }

    /// Counts `bytes` committed; wakes the worker every `every` bytes (0: never).
    pub(crate) fn committed(&self, bytes: u64, every: u64) {
        let before = self.pending.fetch_add(bytes, Ordering::Relaxed);
        if every > 0 && before < every && before + bytes >= every {
            self.ring();
        }
    }

    pub(crate) fn ring(&self) {
        *self.flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cond.notify_all();
    }

    /// Waits until rung; returns false once stop is asked for.
    pub(crate) fn wait(&self) -> bool {
        let mut rung = self.flag.lock().unwrap_or_else(|e| e.into_inner());
        while !*rung && !self.stopping() {
            rung = self.cond.wait(rung).unwrap_or_else(|e| e.into_inner());
        }
        *rung = false;
        !self.stopping()
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// The single writer's position. Held for the whole of a commit.
#[derive(Debug)]
pub(crate) struct Writer {
    pub file_no: u32,
    /// Where the next frame goes in the current data file.
    pub offset: u64,
    /// Length of the current data file, including zeroed space preallocated
    /// past `offset`.
    pub allocated: u64,
    pub poisoned: bool,
    /// Whether the current file's header says its writer writes sync
    /// markers (`format`): then each fsync of commits is followed by one.
    pub marks: bool,
    /// A commit frame was written since the last sync marker.
    pub unmarked: bool,
}

/// An open database's directory, configuration and guarded state: what the
/// commit path needs, without the read cache or the directory lock.
#[derive(Debug)]
pub(crate) struct Store {
    pub dir: PathBuf,
    pub config: Config,
    pub state: RwLock<State>,
    pub writer: Mutex<Writer>,
    /// What the commit path counts (see [`crate::Stats`]).
    pub counters: Counters,
    pub wake: Wake,
    /// Held while a checkpoint is taken and written, so they land in order;
    /// holds the first file and end of the last one written.
    pub checkpointing: Mutex<Option<(u32, Covered)>>,
    /// Held for a whole compaction: one at a time.
    pub compacting: Mutex<()>,
}

impl Store {
    pub(crate) fn read_state(&self) -> RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` half-updated in
        // a way readers could observe wrongly: it is replaced field by field
        // from a fully validated plan. So poisoning is ignored.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn lock_checkpointing(&self) -> MutexGuard<'_, Option<(u32, Covered)>> {
        self.checkpointing.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn lock_compacting(&self) -> MutexGuard<'_, ()> {
        self.compacting.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The writer, or [`Error::Poisoned`] when an earlier write or fsync
    /// failed and this handle refuses to write.
    pub(crate) fn lock_unpoisoned_writer(&self) -> Result<MutexGuard<'_, Writer>> {
        let w = self.lock_writer();
        if w.poisoned {
            return Err(Error::Poisoned {
                dir: self.dir.clone(),
            });
        }
        Ok(w)
    }
}
