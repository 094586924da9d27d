//! [`OurDb`]: opening, reading, and the public write methods.
//!
//! Layering: the top of the crate. It opens the directory (`files`), rebuilds
//! the index (`opening`), reads records through the index and the cache,
//! hands every write to `commit`, and runs the `background` worker.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use crate::batch::{Batch, OpRef};
use crate::cache::ValueCache;
use crate::error::{Error, Result};
use crate::format::{FILE_HEADER_LEN, OP_HEADER_LEN};
use crate::read::{check_record, read_exact_at, read_version};
use crate::state::{State, Store, Writer};
use crate::{Config, background, files, opening};

/// Largest accepted `Config::max_value_size`: a value's length is stored in 32 bits.
pub const MAX_VALUE_SIZE_LIMIT: usize = (u32::MAX as usize) - (1 << 16);

/// An open database. `Send + Sync`; share it with `Arc`.
///
/// Readers (`get`, `exists`, `history`, `next_id`) run in parallel with each
/// other and with a commit's I/O; commits are serialised.
pub struct OurDb {
    pub(crate) store: Arc<Store>,
    cache: ValueCache,
    /// The background worker (checkpoints, compaction), stopped on close or drop.
    worker: Option<JoinHandle<()>>,
    /// Held for its flocks (the LOCK file's and the directory's); released
    /// when dropped.
    _lock: files::DirLock,
}

impl std::fmt::Debug for OurDb {
    // Summarises instead of dumping the index and cache.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.store.read_state();
        f.debug_struct("OurDb")
            .field("dir", &self.store.dir)
            .field("config", &self.store.config)
            .field("live_records", &st.index.len())
            .field("next_id", &st.next_id)
            .field("data_files", &st.files.len())
            .finish()
    }
}

impl OurDb {
    /// Whether the database in `dir` is open in another handle, in this
    /// process or another ([`OurDb::open`] would fail with
    /// [`Error::Locked`]): either of its locks is held (see
    /// [`OurDb::open`]); `false` for a directory that holds none.
    pub fn is_open_elsewhere(dir: impl AsRef<Path>) -> Result<bool> {
        crate::files::in_use(dir.as_ref())
    }

    /// Creates or opens the database in `dir`, taking an exclusive lock on it:
    /// a flock on `<dir>/LOCK` and one on the directory itself, so deleting
    /// the LOCK file of an open database does not let a second handle in
    /// (on a filesystem without flock on directories, the LOCK file alone,
    /// with a warning).
    ///
    /// Rebuilds the index from the checkpoint and the frames written after it
    /// (every frame when the checkpoint is missing or cannot be trusted),
    /// cutting a torn tail left by a crash, and starts the background thread
    /// (see [`Config::checkpoint_bytes`]). Fails with [`Error::Locked`] when
    /// another handle holds the directory (after waiting 100 ms for it to
    /// let go: a handle closing, or [`OurDb::is_open_elsewhere`]'s probe), [`Error::Corrupt`] on damage that
    /// is not a torn tail (a data file shorter than its checkpoint shows it
    /// was included), and [`Error::ModeMismatch`] when the directory was
    /// created in the other mode.
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<OurDb> {
        let dir = dir.as_ref().to_path_buf();
        validate(&config)?;
        let lock = files::lock_dir(&dir)?;
        let o = opening::open_files(&dir, &config)?;
        log::debug!(
            "opened {} ({} live records, next id {}, {} data files, {} bytes scanned)",
            dir.display(),
            o.index.len(),
            o.next_id,
            o.files.len(),
            o.scanned
        );
        let store = Arc::new(Store {
            writer: Mutex::new(Writer {
                file_no: o.end.file,
                offset: o.end.offset,
                allocated: o.allocated,
                marks: o.sync_markers,
                unmarked: false,
                link_checked: None,
            }),
            state: RwLock::new(State {
                index: o.index,
                next_id: o.next_id,
                files: o.files,
                first_file: o.first_file,
                end: o.end,
            }),
            dir,
            config,
            counters: crate::stats::Counters::opened(o.file_bytes, o.from_checkpoint, o.scanned),
            wake: crate::state::Wake::resuming(o.superseded),
            checkpointing: Mutex::new(o.checkpoint),
            compacting: Mutex::new(()),
            gate: crate::gate::Gate::default(),
            failure: std::sync::OnceLock::new(),
        });
        {
            // A last file whose sync-markers flag is not this mode's takes no
            // more commits: they start the next file, whose header has the
            // flag exactly when this mode writes markers. A file without it
            // (written in `Flush` mode, or by a build without markers) would
            // hold `Sync` commits that recovery could not cut as a torn
            // group; a file with it would hold `Flush` commits without
            // markers, which recovery would read as one torn group and cut,
            // acknowledged as they were, on damage it must call `Corrupt`.
            let mut w = store.lock_writer();
            if w.marks != store.config.durability.syncs() {
                store.roll_over(&mut w)?;
            }
        }
        // What open scanned is no more covered by a checkpoint than what
        // is committed next: counted alike, so that a process killed again
        // and again leaves each open about `checkpoint_bytes` to scan, not
        // everything since the last checkpoint.
        store
            .wake
            .committed(o.scanned, store.config.checkpoint_bytes);
        Ok(OurDb {
            cache: ValueCache::new(store.config.cache_size),
            worker: background::start(&store),
            store,
            _lock: lock,
        })
    }

    /// Stores a new record and returns its id (incremental mode).
    pub fn insert(&self, value: &[u8]) -> Result<u32> {
        let out = self.store.commit_ops(&[OpRef::Insert(value)], None, true)?;
        Ok(out.ids[0])
    }

    /// Creates or replaces `id` (key-value mode); replaces a live `id` (incremental mode).
    pub fn set(&self, id: u32, value: &[u8]) -> Result<()> {
        self.store
            .commit_ops(&[OpRef::Set(id, value)], None, true)
            .map(drop)
    }

    /// Replaces a live `id`, keeping the old value in its history.
    pub fn update(&self, id: u32, value: &[u8]) -> Result<()> {
        self.store
            .commit_ops(&[OpRef::Update(id, value)], None, true)
            .map(drop)
    }

    /// The current value of `id`, if live.
    pub fn get(&self, id: u32) -> Result<Option<Vec<u8>>> {
        let (loc, file) = {
            let st = self.store.read_state();
            let Some(loc) = st.index.get(id) else {
                return Ok(None);
            };
            if let Some(v) = self.cache.get(id, loc) {
                return Ok(Some(v));
            }
            let file = st.file(loc.file).ok_or_else(|| {
                Error::corrupt(
                    &self.store.dir,
                    loc.offset,
                    format!("index points at missing data file {}", loc.file),
                )
            })?;
            (loc, Arc::clone(file))
        };
        let mut buf = vec![0u8; OP_HEADER_LEN + loc.value_len as usize];
        read_exact_at(&file, &mut buf, loc.offset)?;
        check_record(&file, loc.offset, id, &buf)?;
        buf.copy_within(OP_HEADER_LEN.., 0);
        buf.truncate(loc.value_len as usize);
        self.cache.insert(id, loc, &buf);
        Ok(Some(buf))
    }

    /// Whether `id` is live.
    pub fn exists(&self, id: u32) -> Result<bool> {
        Ok(self.store.read_state().index.get(id).is_some())
    }

    /// Deletes `id`; returns whether it was live.
    pub fn delete(&self, id: u32) -> Result<bool> {
        let out = self.store.commit_ops(&[OpRef::Delete(id)], None, true)?;
        Ok(out.deleted > 0)
    }

    /// Up to `depth` versions of `id`, newest first; empty when not live.
    ///
    /// A version chain starts when the id is created; a delete ends it, so an
    /// id set again after a delete has a fresh history.
    pub fn history(&self, id: u32, depth: usize) -> Result<Vec<Vec<u8>>> {
        Ok(self
            .history_within(id, depth, usize::MAX)?
            .unwrap_or_default())
    }

    /// [`OurDb::history`], reading no further once the versions read hold
    /// more than `max_bytes`: `None` then (a caller bounded in memory gets
    /// no unbounded read in one call).
    pub fn history_within(
        &self,
        id: u32,
        depth: usize,
        max_bytes: usize,
    ) -> Result<Option<Vec<Vec<u8>>>> {
        let (mut pos, files, first) = {
            let st = self.store.read_state();
            let Some(loc) = st.index.get(id) else {
                return Ok(Some(Vec::new()));
            };
            (Some(loc.pos()), st.files.clone(), st.first_file)
        };
        let mut out = Vec::new();
        let mut read = 0usize;
        while let Some(p) = pos {
            if out.len() >= depth {
                break;
            }
            let file = p
                .file
                .checked_sub(first)
                .and_then(|i| files.get(i as usize));
            let file = file.ok_or_else(|| {
                Error::corrupt(
                    &self.store.dir,
                    p.offset,
                    format!("history link to missing data file {}", p.file),
                )
            })?;
            let (value, prev) = read_version(file, p, id)?;
            read = read.saturating_add(value.len());
            if read > max_bytes {
                return Ok(None);
            }
            out.push(value);
            pos = prev;
        }
        Ok(Some(out))
    }

    /// The id the next insert will get.
    ///
    /// In incremental mode ids run from 1 to `u32::MAX - 1`; a next id of
    /// `u32::MAX` means the id space is exhausted. In key-value mode this is
    /// one past the highest id ever written (saturating).
    pub fn next_id(&self) -> u32 {
        self.store.read_state().next_id
    }

    /// Number of live records.
    pub fn len(&self) -> usize {
        self.store.read_state().index.len()
    }

    /// Its size and what it did since it was opened: atomics, read without
    /// waiting for a commit.
    pub fn stats(&self) -> crate::Stats {
        self.store.counters.read(self.len() as u64)
    }

    /// The first write or fsync failure that made this handle refuse
    /// writes ([`Error::Poisoned`]), naming the file and what was being
    /// done; `None` while it takes writes. Reads no lock a commit holds.
    pub fn write_failure(&self) -> Option<String> {
        self.store.failure.get().cloned()
    }

    /// Whether no record is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies `batch` atomically; returns the ids given to its inserts, in order.
    ///
    /// The whole batch is validated first (an update of an id inserted earlier
    /// in the same batch is valid); on any error nothing is written. It is
    /// written as one checksummed frame, so after a crash either all of it is
    /// there or none of it.
    pub fn commit(&self, batch: Batch) -> Result<Vec<u32>> {
        let ops: Vec<OpRef<'_>> = batch.op_refs().collect();
        self.store
            .commit_ops(&ops, batch.expected_next_id(), true)
            .map(|o| o.ids)
    }

    /// [`OurDb::commit`] without the fsync `Durability::Sync` gives each
    /// commit: the batch is visible to readers and later commits at once,
    /// durable only after a later [`OurDb::sync`] (or a synced commit).
    /// Lets a caller make several commits durable with one fsync (group
    /// commit); it must not report any of them durable before that sync.
    pub fn commit_unsynced(&self, batch: Batch) -> Result<Vec<u32>> {
        let ops: Vec<OpRef<'_>> = batch.op_refs().collect();
        self.store
            .commit_ops(&ops, batch.expected_next_id(), false)
            .map(|o| o.ids)
    }

    /// Forces everything written so far to stable storage.
    /// A handle poisoned by an earlier failed write or fsync refuses (see
    /// [`Error::Poisoned`], [`OurDb::write_failure`]); a failure here
    /// poisons it.
    pub fn sync(&self) -> Result<()> {
        let mut w = self.store.lock_unpoisoned_writer()?;
        let file = Arc::clone(
            self.store
                .read_state()
                .file(w.file_no)
                .expect("the writer's file is open"),
        );
        self.store.sync_or_poison(&file, false)?;
        let next_id = self.store.read_state().next_id;
        if let Some(marker) = self.store.mark_synced(&mut w, &file, next_id) {
            self.store.write_state().end = crate::checkpoint::Covered {
                file: w.file_no,
                offset: w.offset,
                last_frame: Some(marker),
            };
        }
        Ok(())
    }

    /// Stops the background worker, syncs, writes a checkpoint (so the next
    /// open scans nothing) and releases the lock. An error only when the
    /// sync failed (writes may be lost); a checkpoint that cannot be written
    /// loses nothing (the next open reads the data files) and is a warning.
    pub fn close(mut self) -> Result<()> {
        background::stop(&self.store, self.worker.take());
        self.sync()?;
        if let Err(e) = self.store.write_checkpoint() {
            log::warn!(
                "database {} is synced, but its checkpoint was not written ({e}); the next \
                 open reads its data files instead",
                self.store.dir.display()
            );
        }
        Ok(())
    }

    /// Writes a checkpoint of the index now, on this thread (the background
    /// thread and `close` write one on their own), so a later open scans
    /// only what is committed after it. It covers only what is synced: a
    /// handle that refuses writes ([`Error::Poisoned`]) writes none.
    pub fn checkpoint(&self) -> Result<()> {
        self.store.write_checkpoint().map(drop)
    }

    /// Compacts now, on this thread: keeps each live record's newest
    /// [`Config::history`] versions, drops deleted records and older
    /// versions, and switches to the result (commits wait only for the
    /// switch). Background compaction does the same on its own schedule.
    pub fn compact(&self) -> Result<()> {
        self.store.compact_now().map(drop)
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.store.dir
    }

    /// The configuration the database was opened with.
    pub fn config(&self) -> &Config {
        &self.store.config
    }
}

fn validate(config: &Config) -> Result<()> {
    if config.max_value_size > MAX_VALUE_SIZE_LIMIT {
        return Err(Error::InvalidConfig {
            reason: format!(
                "max_value_size {} exceeds the format limit of {MAX_VALUE_SIZE_LIMIT} bytes",
                config.max_value_size
            ),
        });
    }
    if config.max_file_size <= FILE_HEADER_LEN {
        return Err(Error::InvalidConfig {
            reason: format!("max_file_size {} is too small", config.max_file_size),
        });
    }
    Ok(())
}

impl Drop for OurDb {
    fn drop(&mut self) {
        background::stop(&self.store, self.worker.take());
    }
}

/// `OurDb` must stay shareable across threads (the engine wraps it in `Arc`).
const _: () = {
    const fn is<T: Send + Sync>() {}
    is::<OurDb>();
};
