//! OurDB: a crash-safe embedded key-value store with versioned records.
//!
//! API CONTRACT STUB — the ourdb owner replaces the bodies; other crates code
//! against these signatures. Changing a signature needs the lead's agreement.
//!
//! Semantics fixed here:
//! - Ids are `u32`. Incremental mode hands out ids from 1 upwards, never reused,
//!   surviving reopen and crash. Key-value mode takes the caller's ids
//!   (`set`); `insert` is a `WrongMode` error there.
//! - `update` of a missing or deleted id is `Error::NotFound`. `get`/`exists` of
//!   a missing or deleted id are `Ok(None)`/`Ok(false)`; `delete` returns whether
//!   the id was live. `history` of a missing or deleted id is an empty list.
//! - A [`Batch`] is applied in order, validated as a whole before anything is
//!   written (an update of an id inserted earlier in the same batch is valid),
//!   and becomes visible and durable all together or not at all.
//! - `OurDb` is `Send + Sync`; all methods take `&self`; readers on other
//!   threads proceed while one writer commits.

use std::path::Path;

/// Errors from OurDB. Messages are lowercase and name the thing that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The id is not live (never written, or deleted).
    #[error("record {id} not found")]
    NotFound {
        /// The id asked for.
        id: u32,
    },
    /// Another process (or another handle) holds the directory's lock.
    #[error("database directory {dir} is locked by another process")]
    Locked {
        /// The directory.
        dir: std::path::PathBuf,
    },
    /// The value exceeds `Config::max_value_size`.
    #[error("value of {size} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge {
        /// Size of the value.
        size: usize,
        /// Configured limit.
        max: usize,
    },
    /// All `u32` ids have been handed out.
    #[error("id space exhausted")]
    IdSpaceExhausted,
    /// The operation does not exist in this mode (e.g. `insert` in key-value mode).
    #[error("{op} is not available in {mode} mode")]
    WrongMode {
        /// The operation.
        op: &'static str,
        /// The database's mode.
        mode: &'static str,
    },
    /// A batch's `expect_next_id` precondition did not hold.
    #[error("batch expected next id {expected} but the database is at {actual}")]
    Conflict {
        /// Expected next id.
        expected: u32,
        /// Actual next id.
        actual: u32,
    },
    /// Real corruption found in the middle of a file.
    #[error("corrupt data in {file} at offset {offset}: {reason}")]
    Corrupt {
        /// The file.
        file: std::path::PathBuf,
        /// Byte offset.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the file.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How ids are assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Ids are handed out by the store, from 1.
    #[default]
    Incremental,
    /// The caller chooses ids.
    KeyValue,
}

/// What a returned commit survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every commit is fsynced before it returns: survives a power cut.
    #[default]
    Sync,
    /// Every commit is written to the OS before it returns: survives a process
    /// crash (kill -9), not a power cut.
    Flush,
}

/// Open-time configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Id assignment.
    pub mode: Mode,
    /// Commit durability.
    pub durability: Durability,
    /// Largest value accepted, in bytes.
    pub max_value_size: usize,
    /// A data file rolls over to a new one past this size, in bytes.
    pub max_file_size: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Incremental,
            durability: Durability::Sync,
            max_value_size: 1 << 20,
            max_file_size: 512 << 20,
        }
    }
}

/// An atomic group of writes. See [`OurDb::commit`].
#[derive(Debug, Default, Clone)]
pub struct Batch {}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Batch::default()
    }
    /// Fail the commit with [`Error::Conflict`] unless the store's next id is `id`.
    pub fn expect_next_id(&mut self, id: u32) -> &mut Self {
        let _ = id;
        unimplemented!()
    }
    /// Insert a new record (incremental mode); gets the next id at commit.
    pub fn insert(&mut self, value: Vec<u8>) -> &mut Self {
        let _ = value;
        unimplemented!()
    }
    /// Create or replace `id` (key-value mode), or replace a live `id` (incremental mode).
    pub fn set(&mut self, id: u32, value: Vec<u8>) -> &mut Self {
        let _ = (id, value);
        unimplemented!()
    }
    /// Replace a live `id`; the commit fails with `NotFound` otherwise.
    pub fn update(&mut self, id: u32, value: Vec<u8>) -> &mut Self {
        let _ = (id, value);
        unimplemented!()
    }
    /// Delete `id` (no-op when it is not live).
    pub fn delete(&mut self, id: u32) -> &mut Self {
        let _ = id;
        unimplemented!()
    }
    /// Number of operations.
    pub fn len(&self) -> usize {
        unimplemented!()
    }
    /// Whether the batch has no operations.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An open database. `Send + Sync`; share it with `Arc`.
#[derive(Debug)]
pub struct OurDb {}

impl OurDb {
    /// Creates or opens the database in `dir`, taking an exclusive lock on it.
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<OurDb> {
        let _ = (dir, config);
        unimplemented!()
    }
    /// Stores a new record and returns its id (incremental mode).
    pub fn insert(&self, value: &[u8]) -> Result<u32> {
        let _ = value;
        unimplemented!()
    }
    /// Creates or replaces `id` (key-value mode); replaces a live `id` (incremental mode).
    pub fn set(&self, id: u32, value: &[u8]) -> Result<()> {
        let _ = (id, value);
        unimplemented!()
    }
    /// Replaces a live `id`, keeping the old value in its history.
    pub fn update(&self, id: u32, value: &[u8]) -> Result<()> {
        let _ = (id, value);
        unimplemented!()
    }
    /// The current value of `id`, if live.
    pub fn get(&self, id: u32) -> Result<Option<Vec<u8>>> {
        let _ = id;
        unimplemented!()
    }
    /// Whether `id` is live.
    pub fn exists(&self, id: u32) -> Result<bool> {
        let _ = id;
        unimplemented!()
    }
    /// Deletes `id`; returns whether it was live.
    pub fn delete(&self, id: u32) -> Result<bool> {
        let _ = id;
        unimplemented!()
    }
    /// Up to `depth` versions of `id`, newest first; empty when not live.
    pub fn history(&self, id: u32, depth: usize) -> Result<Vec<Vec<u8>>> {
        let _ = (id, depth);
        unimplemented!()
    }
    /// The id the next insert will get.
    pub fn next_id(&self) -> u32 {
        unimplemented!()
    }
    /// Applies `batch` atomically; returns the ids given to its inserts, in order.
    pub fn commit(&self, batch: Batch) -> Result<Vec<u32>> {
        let _ = batch;
        unimplemented!()
    }
    /// Forces everything written so far to stable storage.
    pub fn sync(&self) -> Result<()> {
        unimplemented!()
    }
    /// Syncs and releases the lock.
    pub fn close(self) -> Result<()> {
        unimplemented!()
    }
    /// The database directory.
    pub fn path(&self) -> &Path {
        unimplemented!()
    }
}
