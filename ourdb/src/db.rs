//! [`OurDb`]: opening, reading, and the public write methods.
//!
//! Layering: the top of the crate. It opens the directory (`files`), rebuilds
//! the index (`recovery`), reads records through the index and the cache, and
//! hands every write to `commit`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use crate::batch::{Batch, OpRef};
use crate::cache::ValueCache;
use crate::error::{Error, Result};
use crate::files::DataFile;
use crate::format::{self, FILE_HEADER_LEN, OP_HEADER_LEN, OpKind, Pos};
use crate::index::Index;
use crate::recovery::{self, Recovered};
use crate::state::{State, Store, Writer};
use crate::{Config, Mode, files};

/// Largest accepted `Config::max_value_size`: a value's length is stored in 32 bits.
pub const MAX_VALUE_SIZE_LIMIT: usize = (u32::MAX as usize) - (1 << 16);

/// An open database. `Send + Sync`; share it with `Arc`.
///
/// Readers (`get`, `exists`, `history`, `next_id`) run in parallel with each
/// other and with a commit's I/O; commits are serialised.
pub struct OurDb {
    pub(crate) store: Store,
    cache: ValueCache,
    /// Held for its flock; released when dropped.
    _lock: File,
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
    /// Creates or opens the database in `dir`, taking an exclusive lock on it.
    ///
    /// Scans the data files to rebuild the index, cutting a torn tail left by
    /// a crash. Fails with [`Error::Locked`] when another handle holds the
    /// directory, [`Error::Corrupt`] on damage that is not a torn tail, and
    /// [`Error::ModeMismatch`] when the directory was created in the other mode.
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<OurDb> {
        let dir = dir.as_ref().to_path_buf();
        validate(&config)?;
        let lock = files::lock_dir(&dir)?;
        files::remove_temp_files(&dir)?;
        let mut nums = files::list_data_files(&dir)?;
        if nums.is_empty() {
            files::create_data_file(&dir, 0, config.mode, 0)?;
            nums.push(0);
        }
        let mut rec = Recovered {
            index: match config.mode {
                Mode::Incremental => Index::dense(),
                Mode::KeyValue => Index::sparse(),
            },
            next_id: 1,
        };
        let mut data_files: Vec<Arc<DataFile>> = Vec::with_capacity(nums.len());
        let mut end = FILE_HEADER_LEN;
        let mut file_bytes = 0;
        let mut allocated = FILE_HEADER_LEN;
        let last = nums.len() - 1;
        for (i, &n) in nums.iter().enumerate() {
            let path = files::data_path(&dir, n);
            let file = files::open_data_file(&path)?;
            let header = recovery::check_header(&file, &path, &dir, n, config.mode)?;
            if let Some(prev) = data_files.last() {
                recovery::check_prev_len(prev.as_ref(), end, header.prev_len)?;
            }
            let scan = recovery::scan_file(&file, &path, n, i == last, config.mode, &mut rec)?;
            if scan.torn {
                file.set_len(scan.end)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| {
                        Error::io(format!("cutting torn tail of {}", path.display()), e)
                    })?;
            }
            end = scan.end;
            file_bytes += scan.end;
            allocated = if scan.torn { scan.end } else { scan.len };
            data_files.push(Arc::new(DataFile { path, file }));
        }
        log::debug!(
            "opened {} ({} live records, next id {}, {} data files)",
            dir.display(),
            rec.index.len(),
            rec.next_id,
            data_files.len()
        );
        Ok(OurDb {
            cache: ValueCache::new(config.cache_size),
            store: Store {
                writer: Mutex::new(Writer {
                    file_no: u32::try_from(last).expect("file numbers are u32"),
                    offset: end,
                    allocated,
                    poisoned: false,
                }),
                state: RwLock::new(State {
                    index: rec.index,
                    next_id: rec.next_id,
                    files: data_files,
                }),
                dir,
                config,
                counters: crate::stats::Counters::opened(file_bytes),
            },
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
            (loc, Arc::clone(&st.files[loc.file as usize]))
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
        let (mut pos, files) = {
            let st = self.store.read_state();
            let Some(loc) = st.index.get(id) else {
                return Ok(Vec::new());
            };
            (Some(loc.pos()), st.files.clone())
        };
        let mut out = Vec::new();
        while let Some(p) = pos {
            if out.len() >= depth {
                break;
            }
            let file = files.get(p.file as usize).ok_or_else(|| {
                Error::corrupt(
                    &self.store.dir,
                    p.offset,
                    format!("history link to missing data file {}", p.file),
                )
            })?;
            let (value, prev) = read_version(file, p, id)?;
            out.push(value);
            pos = prev;
        }
        Ok(out)
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
    /// A handle poisoned by an earlier failed fsync refuses (see
    /// [`Error::Poisoned`]); a failure here poisons it.
    pub fn sync(&self) -> Result<()> {
        let mut w = self.store.lock_unpoisoned_writer()?;
        let file = Arc::clone(&self.store.read_state().files[w.file_no as usize]);
        crate::commit::sync_or_poison(&self.store.counters, &mut w, &file, false)
    }

    /// Syncs and releases the lock.
    pub fn close(self) -> Result<()> {
        self.sync()
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

fn read_exact_at(file: &DataFile, buf: &mut [u8], at: u64) -> Result<()> {
    file.file.read_exact_at(buf, at).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::corrupt(&file.path, at, "record extends past the end of the file")
        } else {
            Error::io(format!("reading {} at offset {at}", file.path.display()), e)
        }
    })
}

/// Verifies that `buf` (header + value) is an intact put record of `id`.
fn check_record(file: &DataFile, at: u64, id: u32, buf: &[u8]) -> Result<()> {
    let h = format::decode_op_header(buf).map_err(|r| Error::corrupt(&file.path, at, r))?;
    if h.kind != OpKind::Put || h.id != id || h.value_len as usize != buf.len() - OP_HEADER_LEN {
        return Err(Error::corrupt(
            &file.path,
            at,
            format!("record is not a version of id {id}"),
        ));
    }
    if !format::op_crc_ok(buf, &buf[OP_HEADER_LEN..]) {
        return Err(Error::corrupt(&file.path, at, "record checksum mismatch"));
    }
    Ok(())
}

/// Reads the version at `p`: its value and the link to the one before.
fn read_version(file: &DataFile, p: Pos, id: u32) -> Result<(Vec<u8>, Option<Pos>)> {
    let mut h = [0u8; OP_HEADER_LEN];
    read_exact_at(file, &mut h, p.offset)?;
    let header =
        format::decode_op_header(&h).map_err(|r| Error::corrupt(&file.path, p.offset, r))?;
    // Check the claimed length against the file before allocating for it.
    let file_len = file
        .file
        .metadata()
        .map_err(|e| Error::io(format!("reading metadata of {}", file.path.display()), e))?
        .len();
    if p.offset + (OP_HEADER_LEN as u64) + u64::from(header.value_len) > file_len {
        return Err(Error::corrupt(
            &file.path,
            p.offset,
            "record extends past the end of the file",
        ));
    }
    let mut buf = vec![0u8; OP_HEADER_LEN + header.value_len as usize];
    buf[..OP_HEADER_LEN].copy_from_slice(&h);
    read_exact_at(
        file,
        &mut buf[OP_HEADER_LEN..],
        p.offset + OP_HEADER_LEN as u64,
    )?;
    check_record(file, p.offset, id, &buf)?;
    buf.drain(..OP_HEADER_LEN);
    Ok((buf, header.prev))
}

/// `OurDb` must stay shareable across threads (the engine wraps it in `Arc`).
const _: () = {
    const fn is<T: Send + Sync>() {}
    is::<OurDb>();
};
