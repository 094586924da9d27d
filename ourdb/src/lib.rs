//! OurDB: a crash-safe embedded key-value store with versioned records.
//!
//! The leaf of the circles workspace: every circle keeps its data in its own
//! OurDB (`engine` builds transactional Rhai scripts on [`OurDb`] and
//! [`Batch`]). Synchronous, no async runtime, no unsafe code.
//!
//! Main types: [`OurDb`] (an open database directory), [`Config`] ([`Mode`],
//! [`Durability`], size limits), [`Batch`] (atomic group of writes), [`Error`].
//!
//! Semantics:
//! - Ids are `u32`. Incremental mode hands out ids from 1 upwards (up to
//!   `u32::MAX - 1`), never reused, surviving reopen and crash. Key-value mode
//!   takes the caller's ids (`set`); `insert` is a `WrongMode` error there.
//! - `update` of a missing or deleted id is `Error::NotFound`. `get`/`exists` of
//!   a missing or deleted id are `Ok(None)`/`Ok(false)`; `delete` returns whether
//!   the id was live. `history` of a missing or deleted id is an empty list.
//! - A [`Batch`] is applied in order, validated as a whole before anything is
//!   written (an update of an id inserted earlier in the same batch is valid),
//!   and becomes visible and durable all together or not at all.
//! - `OurDb` is `Send + Sync`; all methods take `&self`; readers on other
//!   threads proceed while one writer commits.
//!
//! Storage: append-only data files of checksummed frames, one frame per
//! commit; an in-memory index from id to the live version's location,
//! rebuilt on open from a checkpoint of it plus a scan of the frames written
//! after the checkpoint (a torn tail left by a crash is cut, damage anywhere
//! else is [`Error::Corrupt`] naming file and offset); a bounded cache of
//! read values. A background thread writes the checkpoint and compacts: it
//! rewrites the files keeping each record's newest [`Config::history`]
//! versions and dropping deleted records ([`OurDb::compact`] runs one at
//! once). See `ARCHITECTURE.md` for the format and the guarantees.
//!
//! ```
//! use ourdb::{Config, OurDb};
//! # let dir = tempfile::tempdir().unwrap();
//! let db = OurDb::open(dir.path(), Config::default())?;
//! let id = db.insert(b"v1")?;
//! db.update(id, b"v2")?;
//! assert_eq!(db.get(id)?, Some(b"v2".to_vec()));
//! assert_eq!(db.history(id, 10)?, vec![b"v2".to_vec(), b"v1".to_vec()]);
//! db.close()?;
//! let db = OurDb::open(dir.path(), Config::default())?;
//! assert_eq!(db.next_id(), 2);
//! # Ok::<(), ourdb::Error>(())
//! ```

// Modules, bottom to top (each imports only those before it in this list):
// error, batch, format (bytes on disk), files (the directory and its data
// files), read (one record version), index, checkpoint (the index saved to
// disk), cache, stats (plain counters), state (what readers and the writer
// share), recovery (the frame scan), opening (generation, checkpoint, scan),
// commit (the write path), copy (compaction's output file), compact
// (compaction and writing checkpoints),
// background (the worker thread), db (`OurDb`).
mod background;
mod batch;
mod cache;
mod checkpoint;
mod commit;
mod compact;
mod copy;
mod db;
mod error;
#[cfg(feature = "test-support")]
pub mod fault;
mod files;
mod format;
mod gate;
mod index;
mod opening;
mod read;
mod recovery;
mod state;
mod stats;

pub use batch::Batch;
pub use db::{MAX_VALUE_SIZE_LIMIT, OurDb};
pub use error::{Error, Result};
pub use stats::Stats;

/// How ids are assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Ids are handed out by the store, from 1.
    #[default]
    Incremental,
    /// The caller chooses ids.
    KeyValue,
}

pub(crate) fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Incremental => "incremental",
        Mode::KeyValue => "key-value",
    }
}

/// What a returned commit survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every commit is fsynced (`fdatasync`) before it returns: survives a power cut.
    #[default]
    Sync,
    /// Every commit is written to the OS (`write`) before it returns: survives
    /// a process crash (kill -9), not a power cut.
    Flush,
}

impl Durability {
    pub(crate) fn syncs(self) -> bool {
        self == Durability::Sync
    }
}

/// Open-time configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Id assignment. Recorded in the data files; reopening in the other mode
    /// is [`Error::ModeMismatch`]. Default: incremental.
    pub mode: Mode,
    /// Commit durability. Default: [`Durability::Sync`].
    pub durability: Durability,
    /// Largest value accepted, in bytes. Default 1 MiB; at most
    /// [`MAX_VALUE_SIZE_LIMIT`].
    pub max_value_size: usize,
    /// A data file rolls over to a new one when a commit would take it past
    /// this size, in bytes (a single larger commit still goes into one file).
    /// Default 512 MiB.
    pub max_file_size: u64,
    /// Bytes of recently read values kept in memory so a warm `get` needs no
    /// read from the file (0 turns the cache off). Filled only by reads, so an
    /// idle database costs nothing. Default 16 MiB.
    pub cache_size: usize,
    /// Versions of each record compaction keeps, the live one included
    /// (`history(id, n)` returns at least `min(n, history)` of them); 0 keeps
    /// every version (compaction then reclaims only deleted records).
    /// Default 16.
    pub history: usize,
    /// The background thread writes a checkpoint of the index after every
    /// this many bytes committed (and `close` writes one), so open scans at
    /// most about this much. 0 turns the thread off: a checkpoint only at
    /// `close`, compaction only through [`OurDb::compact`]. Default 8 MiB.
    pub checkpoint_bytes: u64,
    /// The background thread compacts once the data files hold at least this
    /// many bytes and a third of them are versions replaced or deleted since
    /// the last compaction started (inserts alone never make one due). A
    /// version counts its own bytes (op header and value), not its commit's
    /// 20-byte header or the sync markers, which compaction drops too: under
    /// updates of large values the files grow to about 1.5 times what the
    /// last one kept, of values of tens of bytes to about 2–2.4 times. The
    /// count survives a reopen in the checkpoint; without one that carries
    /// it, every version but the live ones counts. 0: never in the
    /// background. Default 64 MiB.
    pub compaction_min_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Incremental,
            durability: Durability::Sync,
            max_value_size: 1 << 20,
            max_file_size: 512 << 20,
            cache_size: 16 << 20,
            history: 16,
            checkpoint_bytes: 8 << 20,
            compaction_min_bytes: 64 << 20,
        }
    }
}
