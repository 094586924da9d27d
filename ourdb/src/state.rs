//! The state an open database shares between its readers and its one writer:
//! the data files, the published index and next id, the writer's position,
//! and the locks that guard them.
//!
//! Layering: above `files` and `index`; below `commit` (which changes it)
//! and `db` (which builds it from what `recovery` finds, and reads it).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::Config;
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
    pub files: Vec<Arc<DataFile>>,
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
