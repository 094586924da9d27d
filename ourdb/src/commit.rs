//! The commit path: validate a group of writes, write it as one frame, make
//! it durable, then publish it to readers.
//!
//! Layering: above `format`, `files`, `index` and `state` (it runs on the
//! shared [`Store`]); only `db` calls it.

use std::collections::HashMap;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::batch::OpRef;
use crate::checkpoint::Covered;
use crate::error::{Error, Result};
use crate::files::DataFile;
use crate::format::{FILE_HEADER_LEN, FrameBuilder, OpKind, Pos};
use crate::index::Loc;
use crate::state::{Store, Writer};

/// How often a commit without an fsync of its own (`Durability::Flush`, or
/// a group's before its [`crate::OurDb::sync`]) checks that the writer's
/// file is still linked: an `fstat` per commit would cost such commits
/// about half their rate.
const LINK_CHECK_EVERY: Duration = Duration::from_millis(50);
use crate::{Mode, files};

/// Bytes of zeros written ahead of the commits in `Durability::Sync` mode.
const PREALLOC_CHUNK: u64 = 1 << 20;

/// What a commit did.
pub(crate) struct Outcome {
    /// Ids given to inserts, in order.
    pub ids: Vec<u32>,
    /// Deletes that removed a live id.
    pub deleted: usize,
}

/// A validated write with its final id.
struct Planned<'a> {
    kind: OpKind,
    id: u32,
    value: &'a [u8],
}

impl Store {
    /// Commits `ops`; `sync` false skips the fsync that `Durability::Sync`
    /// gives each commit (the caller syncs later, see `OurDb::commit_unsynced`).
    pub(crate) fn commit_ops(
        &self,
        ops: &[OpRef<'_>],
        expect: Option<u32>,
        sync: bool,
    ) -> Result<Outcome> {
        let mut w = self.lock_writer_to_commit()?;
        let (plan, next_id, outcome) = self.plan(ops, expect)?;
        if plan.is_empty() {
            return Ok(outcome);
        }
        let value_bytes: usize = plan.iter().map(|p| p.value.len()).sum();
        let frame_len = FrameBuilder::encoded_len(plan.len(), value_bytes);
        if frame_len - crate::format::FRAME_HEADER_LEN > u32::MAX as usize {
            return Err(Error::BatchTooLarge { size: frame_len });
        }
        // A synced commit finds an unlinked file at its fsync
        // (`sync_or_poison`); an unsynced one looks every LINK_CHECK_EVERY.
        let synced = sync && self.config.durability.syncs();
        if !synced
            && w.link_checked
                .is_none_or(|t| t.elapsed() >= LINK_CHECK_EVERY)
        {
            let file = Arc::clone(
                self.read_state()
                    .file(w.file_no)
                    .expect("the writer's file is open"),
            );
            self.check_linked(&file)?;
            w.link_checked = Some(Instant::now());
        }
        if w.offset > FILE_HEADER_LEN && w.offset + frame_len as u64 > self.config.max_file_size {
            self.roll_over(&mut w)?;
        }
        let file_no = w.file_no;
        let (file, updates, frame) = {
            let st = self.read_state();
            let file = Arc::clone(st.file(file_no).expect("the writer's file is open"));
            let mut b = FrameBuilder::new(w.offset, frame_len, next_id);
            // Latest position of each id touched by this frame, for history links.
            let mut latest: HashMap<u32, Option<Pos>> = HashMap::new();
            let mut updates = Vec::with_capacity(plan.len());
            for p in &plan {
                let prev = match latest.get(&p.id) {
                    Some(pos) => *pos,
                    None => st.index.get(p.id).map(|l| l.pos()),
                };
                match p.kind {
                    OpKind::Put => {
                        let at = b.push(OpKind::Put, p.id, prev, p.value);
                        let loc = Loc {
                            file: file_no,
                            value_len: p.value.len() as u32,
                            offset: at,
                        };
                        latest.insert(p.id, Some(loc.pos()));
                        updates.push((p.id, Some(loc)));
                    }
                    OpKind::Delete => {
                        b.push(OpKind::Delete, p.id, None, &[]);
                        latest.insert(p.id, None);
                        updates.push((p.id, None));
                    }
                }
            }
            (file, updates, b.finish())
        };
        debug_assert_eq!(frame.len(), frame_len);
        let at = w.offset;
        self.write_frame(&mut w, &file, &frame, sync)?;
        w.unmarked = true;
        self.counters.committed(frame.len() as u64);
        let mut last_frame = (at, crate::format::le32(&frame[8..12]));
        if sync && self.config.durability.syncs() {
            last_frame = self
                .mark_synced(&mut w, &file, next_id)
                .unwrap_or(last_frame);
        }
        let mut st = self.write_state();
        let mut superseded = 0;
        for (id, loc) in updates {
            superseded += st.index.apply(id, loc, self.config.history == 0);
        }
        st.next_id = next_id;
        st.end = Covered {
            file: file_no,
            offset: w.offset,
            last_frame: Some(last_frame),
        };
        // Under the state lock, so a compaction's or a checkpoint's snapshot
        // of the index and this count agree.
        if superseded > 0 {
            self.wake.superseded.add(superseded);
        }
        drop(st);
        self.wake
            .committed(frame.len() as u64, self.config.checkpoint_bytes);
        Ok(outcome)
    }

    /// After an fsync that covered every frame of the writer's file: a sync
    /// marker behind them (if the file has markers and a commit was written
    /// since the last one), so that recovery can tell a group of commits torn
    /// by a power cut (valid frames after a bad one, no marker after it) from
    /// damage to frames already on stable storage (a marker after them). The
    /// commits are durable whatever happens here: a marker that cannot be
    /// written is logged and left out, and recovery then reads the frames
    /// before the next one as not known to be synced. Returns where the
    /// marker starts and its CRC, for the caller to publish as the file's
    /// last frame (the marker carries `next_id`, the store's after them).
    pub(crate) fn mark_synced(
        &self,
        w: &mut Writer,
        file: &DataFile,
        next_id: u32,
    ) -> Option<(u64, u32)> {
        if !w.marks || !w.unmarked {
            return None;
        }
        let frame = crate::format::marker_frame(next_id);
        let at = w.offset;
        if let Err(e) = self.write_frame(w, file, &frame, false) {
            log::warn!("{e}: no sync marker after the commits it synced");
            return None;
        }
        w.unmarked = false;
        self.counters.grew(frame.len() as u64);
        Some((at, crate::format::le32(&frame[8..12])))
    }

    /// Validates `ops` against the current state and assigns insert ids.
    /// Returns the effective writes (deletes of non-live ids dropped), the
    /// next id after them, and the outcome to report.
    fn plan<'a>(
        &self,
        ops: &[OpRef<'a>],
        expect: Option<u32>,
    ) -> Result<(Vec<Planned<'a>>, u32, Outcome)> {
        let st = self.read_state();
        if let Some(expected) = expect {
            if expected != st.next_id {
                return Err(Error::Conflict {
                    expected,
                    actual: st.next_id,
                });
            }
        }
        let mode = self.config.mode;
        let max = self.config.max_value_size;
        let mut next = st.next_id;
        let mut live: HashMap<u32, bool> = HashMap::new();
        let is_live = |live: &HashMap<u32, bool>, id: u32| {
            live.get(&id)
                .copied()
                .unwrap_or_else(|| st.index.get(id).is_some())
        };
        let mut plan = Vec::with_capacity(ops.len());
        let mut outcome = Outcome {
            ids: Vec::new(),
            deleted: 0,
        };
        for op in ops {
            if let OpRef::Insert(v) | OpRef::Set(_, v) | OpRef::Update(_, v) = op {
                if v.len() > max {
                    return Err(Error::ValueTooLarge { size: v.len(), max });
                }
            }
            let (kind, id, value) = match *op {
                OpRef::Insert(v) => {
                    if mode != Mode::Incremental {
                        return Err(Error::WrongMode {
                            op: "insert",
                            mode: crate::mode_name(mode),
                        });
                    }
                    if next == u32::MAX {
                        return Err(Error::IdSpaceExhausted);
                    }
                    let id = next;
                    next += 1;
                    outcome.ids.push(id);
                    (OpKind::Put, id, v)
                }
                OpRef::Set(id, v) if mode == Mode::KeyValue => {
                    next = next.max(id.saturating_add(1));
                    (OpKind::Put, id, v)
                }
                OpRef::Set(id, v) | OpRef::Update(id, v) => {
                    if !is_live(&live, id) {
                        return Err(Error::NotFound { id });
                    }
                    (OpKind::Put, id, v)
                }
                OpRef::Delete(id) => {
                    if !is_live(&live, id) {
                        continue;
                    }
                    outcome.deleted += 1;
                    (OpKind::Delete, id, &[][..])
                }
            };
            live.insert(id, kind == OpKind::Put);
            plan.push(Planned { kind, id, value });
        }
        Ok((plan, next, outcome))
    }

    /// Fails, poisoning the handle, when `file` (the writer's) is linked
    /// nowhere any more (deleted, with its directory or alone, under the
    /// open database): a commit written there would be acknowledged and then
    /// lost, as no open finds that file again. One `fstat`.
    fn check_linked(&self, file: &DataFile) -> Result<()> {
        let open = (file.file.metadata()).map_err(|e| {
            Error::io(
                format!("reading the metadata of {}", file.path.display()),
                e,
            )
        })?;
        // A file system that reports no links for a linked file (some FUSE
        // ones) still has it at its path.
        let at_path = || {
            std::fs::metadata(&file.path)
                .is_ok_and(|m| m.dev() == open.dev() && m.ino() == open.ino())
        };
        if open.nlink() > 0 || at_path() {
            return Ok(());
        }
        let e = Error::io(
            format!("committing to {}", file.path.display()),
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the file was deleted while the database was open (its directory removed?), \
                 so nothing written to it would be found again",
            ),
        );
        self.poison(&e);
        Err(e)
    }

    /// Writes `frame` at the writer's offset and makes it durable per the
    /// configured mode. On failure the file is cut back so no partial frame
    /// stays in front of later commits; if even that fails, the handle is
    /// poisoned.
    fn write_frame(&self, w: &mut Writer, file: &DataFile, frame: &[u8], sync: bool) -> Result<()> {
        let at = w.offset;
        let end = at + frame.len() as u64;
        // Preallocation follows the mode, not this commit: an unsynced
        // commit's later `sync` then has no file size to flush either.
        let syncs = self.config.durability.syncs();
        let sync = sync && syncs;
        if syncs && end > w.allocated {
            self.preallocate(w, file, end)?;
        }
        let res = file.file.write_all_at(frame, at).map_err(|e| {
            Error::io(
                format!("writing to {} at offset {at}", file.path.display()),
                e,
            )
        });
        if let Err(e) = res {
            // Cut what was written (and any preallocated tail, which the next
            // commit preallocates again), so no partial frame sits in front of
            // later commits however far the write got.
            match file.file.set_len(at) {
                Ok(()) => w.allocated = at,
                Err(cut) => self.poison(format_args!(
                    "{e}; cutting it back to offset {at} failed too: {cut}"
                )),
            }
            return Err(e);
        }
        if sync {
            self.sync_or_poison(file, false)?;
        }
        w.offset = end;
        w.allocated = w.allocated.max(end);
        Ok(())
    }

    /// Extends the file with written zeros past `end`, synced, so that each
    /// commit's `fdatasync` only has data to flush, not a new file size.
    /// Recovery treats an all-zero tail as free space.
    fn preallocate(&self, w: &mut Writer, file: &DataFile, end: u64) -> Result<()> {
        let target = (end + PREALLOC_CHUNK).min(self.config.max_file_size.max(end));
        if target <= end {
            // No room left below max_file_size: the commit's own fdatasync
            // will carry the size change.
            return Ok(());
        }
        let zeros = vec![0u8; 64 << 10];
        let reserving = target - w.allocated;
        let mut at = w.allocated;
        let res = (|| {
            while at < target {
                let n = zeros.len().min((target - at) as usize);
                file.file.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
            Ok(())
        })();
        match res {
            Ok(()) => {
                self.sync_or_poison(file, true)?;
                w.allocated = target;
                Ok(())
            }
            Err(e) => {
                let err = Error::io(
                    format!(
                        "preallocating {reserving} bytes in {} (sync mode reserves data \
                         file space {} MiB at a time)",
                        file.path.display(),
                        PREALLOC_CHUNK >> 20
                    ),
                    e,
                );
                match file.file.set_len(w.offset) {
                    Ok(()) => w.allocated = w.offset,
                    Err(cut) => self.poison(format_args!(
                        "{err}; cutting it back to offset {} failed too: {cut}",
                        w.offset
                    )),
                }
                Err(err)
            }
        }
    }

    /// Starts the next data file.
    pub(crate) fn roll_over(&self, w: &mut Writer) -> Result<()> {
        let prev = Arc::clone(
            self.read_state()
                .file(w.file_no)
                .expect("the writer's file is open"),
        );
        // The previous file loses its preallocated zeros and is made durable
        // before the new one exists: only the last file can have a torn or
        // zero tail, and the new header records exactly where this one ends.
        prev.file
            .set_len(w.offset)
            .map_err(|e| Error::io(format!("cutting {}", prev.path.display()), e))?;
        w.allocated = w.offset;
        self.sync_or_poison(&prev, true)?;
        let n = w
            .file_no
            .checked_add(1)
            .ok_or_else(|| Error::InvalidConfig {
                reason: "data file numbers exhausted".into(),
            })?;
        let markers = self.config.durability.syncs();
        let (file, tmp) =
            files::prepare_data_file(&self.dir, n, self.config.mode, w.offset, markers)?;
        let path = files::data_path(&self.dir, n);
        if let Err(e) = files::install(&self.dir, &tmp, &path) {
            // Whether the rename reached the disk is unknown: if it did, the
            // new file records where this one ends, and a commit appended
            // here would contradict it (open would refuse the files).
            self.poison(&e);
            return Err(e);
        }
        self.counters.grew(FILE_HEADER_LEN);
        log::debug!("rolled over to {}", path.display());
        self.write_state()
            .files
            .push(Arc::new(DataFile { path, file }));
        w.file_no = n;
        w.offset = FILE_HEADER_LEN;
        w.allocated = FILE_HEADER_LEN;
        w.marks = markers;
        w.unmarked = false;
        Ok(())
    }

    /// fsyncs the writer's `file` (`all`: its metadata too), counted in the
    /// stats, under the writer lock (a checkpoint's fsync of it takes the
    /// lock only after). A failure poisons the handle: after a failed fsync the
    /// state of the page cache is unknown and the kernel may report the
    /// error only once, so a retry could wrongly succeed.
    pub(crate) fn sync_or_poison(&self, file: &DataFile, all: bool) -> Result<()> {
        self.check_linked(file)?;
        let started = std::time::Instant::now();
        let res = fsync(file, all);
        self.counters.synced(started.elapsed());
        #[cfg(feature = "test-support")]
        crate::fault::after_sync(&file.path);
        res.inspect_err(|e| self.poison(e))
    }
}

/// fsyncs `file` (`all`: its metadata too), or fails as the tests ask. Whoever
/// calls it on the writer's file poisons the handle when it fails (see
/// [`Store::sync_or_poison`]).
pub(crate) fn fsync(file: &DataFile, all: bool) -> Result<()> {
    let res = if injected_sync_failure(&file.path) {
        Err(std::io::Error::other("injected fsync failure"))
    } else if all {
        file.file.sync_all()
    } else {
        file.file.sync_data()
    };
    res.map_err(|e| Error::io(format!("syncing {}", file.path.display()), e))
}

/// Whether the tests ask this fsync of `file` to fail (`tests::FAIL_SYNC`, `fault`).
fn injected_sync_failure(file: &std::path::Path) -> bool {
    #[cfg(test)]
    if tests::FAIL_SYNC.with(|f| f.get()) {
        return true;
    }
    #[cfg(feature = "test-support")]
    if crate::fault::sync_fails(file) {
        return true;
    }
    let _ = file;
    false
}

#[cfg(test)]
pub(crate) mod tests;
