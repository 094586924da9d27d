//! Compaction and checkpoints: rewriting the data files down to the
//! retained versions, and saving the index.
//!
//! Layering: above `state`, `read`, `checkpoint` and `files`; `background`
//! and `db` call it.
//!
//! Compaction copies, for every live id, its newest `Config::history`
//! versions (all when 0) into one file, `compaction.tmp`, without holding a
//! lock: deleted records and older versions are left behind. It then copies
//! the frames committed meanwhile (`copy`), in rounds without a lock until
//! a round copies under 1 MiB or no less than the round before (at most 8),
//! and fsyncs the file with its
//! header (a generation start numbered one past the writer's current file).
//! Then the writer lock: what is left is copied in slices of at most 1 MiB,
//! the lock released between slices, and after the last slice, still under
//! the lock, the switch: an fsync of the last frames (in either durability
//! mode: a `Flush` caller may have made them durable with `OurDb::sync`),
//! rename into place, an fsync of the directory, publish the file and index,
//! continue writing at its end; a failure after the rename poisons the handle
//! (the file may be in place and supersede the ones it writes to). So a
//! commit waits for at most one slice or the switch
//! ([`crate::Stats::max_compaction_pause`]), and a writer faster than the
//! copy is slowed to its pace until the switch: between two slices one
//! commit goes, the others wait for the next gap (`gate`); reads never wait (one
//! holding an old file keeps reading it). The old files are deleted last. A crash before the
//! rename leaves a `.tmp` that open deletes; after it, open finds the
//! generation start and deletes the files it supersedes (`opening`).
//!
//! History links inside the compacted file use `SAME_FILE`, since its
//! number is chosen only at the switch.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

use crate::checkpoint::{self, Covered};
use crate::copy::{Out, copy_frames};
use crate::error::{Error, Result};
use crate::files::{self, DataFile};
use crate::format::{
    self, FILE_HEADER_LEN, FRAME_HEADER_LEN, FileHeader, FrameBuilder, OP_HEADER_LEN, OpKind,
    PAYLOAD_HEADER_LEN, Pos, SAME_FILE,
};
use crate::index::{Index, Loc};
use crate::state::Store;
use crate::{Mode, read};

/// Frames of the compacted file are sealed at about this size.
const FRAME_TARGET: usize = 1 << 20;
/// Most value bytes of one record's kept versions held while it is copied.
const HELD: usize = 1 << 20;
/// Catch-up rounds stop once a round copies less than this (or no less than
/// the round before).
const CATCH_UP_SMALL: u64 = 1 << 20;
const CATCH_UP_ROUNDS: usize = 8;
/// Most bytes of frames copied while commits wait (see `catch_up_and_switch`).
const SLICE: u64 = 1 << 20;

impl Store {
    /// Writes a checkpoint of the published state unless the last one
    /// covers it already. Returns whether one was written.
    pub(crate) fn write_checkpoint(&self) -> Result<bool> {
        let mut last = self.lock_checkpointing();
        let (bytes, end, first, file) = {
            let st = self.read_state();
            let nothing_written =
                st.end.last_frame.is_none() && st.end.file == st.first_file && st.index.len() == 0;
            if *last == Some((st.first_file, st.end)) || nothing_written {
                return Ok(false);
            }
            let superseded = self.wake.superseded.get();
            let bytes = checkpoint::encode(
                self.config.mode,
                st.first_file,
                st.end,
                st.next_id,
                &st.index,
                superseded,
            );
            let file = st.file(st.end.file).map(Arc::clone);
            (bytes, st.end, st.first_file, file)
        };
        // What the checkpoint covers must be on disk before it is (in
        // `Durability::Sync` it usually is, and this fdatasync finds nothing
        // to write). It is the writer's file: a failure poisons the handle as
        // the writer's own fsync does, since the kernel may report it only
        // once, and a later `sync` could then succeed over lost commits.
        if let Some(f) = file {
            self.sync_or_poison(&f, false)?;
        }
        // Nor after a failed fsync of the writer's: the kernel may have
        // reported it to that fsync alone, and this one then succeeds over
        // lost pages. A writer whose fsync failed holds the writer lock until
        // it has poisoned the handle, so taking the lock sees its failure.
        drop(self.lock_unpoisoned_writer()?);
        checkpoint::write(&self.dir, &bytes)?;
        self.counters.checkpointed();
        *last = Some((first, end));
        Ok(true)
    }

    /// Runs one compaction. `Ok(false)` when it stopped early because the
    /// database is closing (nothing changed).
    pub(crate) fn compact_now(&self) -> Result<bool> {
        let _one = self.lock_compacting();
        let (entries, files, first_no, from, next_id, superseded) = {
            let st = self.read_state();
            // What this compaction can reclaim; what commits replace while
            // it runs is left for the next one.
            let superseded = self.wake.superseded.get();
            let mut entries = Vec::with_capacity(st.index.len());
            st.index.for_each(|id, loc| entries.push((id, loc)));
            let files = st.files.clone();
            (
                entries,
                files,
                st.first_file,
                st.end,
                st.next_id,
                superseded,
            )
        };
        let path = files::compaction_tmp_path(&self.dir);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        let mut out = Out {
            file,
            path,
            offset: FILE_HEADER_LEN,
            buffered: Vec::new(),
            file_no: SAME_FILE,
            last_frame: None,
            index: match self.config.mode {
                Mode::Incremental => Index::dense(),
                Mode::KeyValue => Index::sparse(),
            },
        };
        let done = self.copy_retained(&entries, &files, first_no, next_id, &mut out);
        drop(files);
        match done {
            Ok(true) => {}
            other => {
                let _ = std::fs::remove_file(&out.path);
                return other;
            }
        }
        let res = self.catch_up_and_switch(from, &mut out, superseded);
        if !matches!(res, Ok(true)) {
            let _ = std::fs::remove_file(&out.path);
        }
        res
    }

    /// Copies the retained versions of `entries` into `out`.
    fn copy_retained(
        &self,
        entries: &[(u32, Loc)],
        files: &[Arc<DataFile>],
        first_no: u32,
        next_id: u32,
        out: &mut Out,
    ) -> Result<bool> {
        let keep = if self.config.history == 0 {
            usize::MAX
        } else {
            self.config.history
        };
        let mut b = FrameBuilder::new(out.offset, FRAME_TARGET + (64 << 10), next_id);
        let file_of = |p: Pos| {
            p.file
                .checked_sub(first_no)
                .and_then(|i| files.get(i as usize))
                .ok_or_else(|| {
                    Error::corrupt(
                        &self.dir,
                        p.offset,
                        format!("history link to missing data file {}", p.file),
                    )
                })
        };
        // A record's kept versions, newest first: each value while they
        // fit in HELD bytes, past that only where it lies (read again when
        // copied), so a record with a long history of large values is
        // copied in bounded memory.
        let mut versions: Vec<(Pos, Option<Vec<u8>>)> = Vec::new();
        for &(id, loc) in entries {
            versions.clear();
            let mut held = 0;
            let mut pos = Some(loc.pos());
            while let Some(p) = pos {
                if versions.len() >= keep {
                    break;
                }
                let (value, prev) = read::read_version(file_of(p)?, p, id)?;
                held += value.len();
                versions.push((p, (held <= HELD).then_some(value)));
                pos = prev;
            }
            let mut prev = None;
            for (p, value) in versions.iter_mut().rev() {
                let v = match value.take() {
                    Some(v) => v,
                    None => read::read_version(file_of(*p)?, *p, id)?.0,
                };
                // A frame holds at most a few MiB past FRAME_TARGET whatever
                // one record keeps (16 versions of values up to 4 GiB would
                // pass a frame's u32 length): a version that would take it
                // past the target starts the next one. Links stay absolute
                // offsets in this file, so a record's versions may span frames.
                if b.len() > FRAME_HEADER_LEN + PAYLOAD_HEADER_LEN
                    && b.len() + OP_HEADER_LEN + v.len() > FRAME_TARGET
                {
                    let full = std::mem::replace(&mut b, FrameBuilder::new(0, 0, next_id));
                    out.write(&full.finish())?;
                    b = FrameBuilder::new(out.offset, FRAME_TARGET + (64 << 10), next_id);
                }
                let at = b.push(OpKind::Put, id, prev, &v);
                prev = Some(Pos {
                    file: SAME_FILE,
                    offset: at,
                });
                out.index.insert(
                    id,
                    Loc {
                        file: out.file_no,
                        value_len: v.len() as u32,
                        offset: at,
                    },
                );
            }
            if b.len() >= FRAME_TARGET {
                if self.wake.stopping() {
                    return Ok(false);
                }
                let full = std::mem::replace(&mut b, FrameBuilder::new(0, 0, next_id));
                out.write(&full.finish())?;
                b = FrameBuilder::new(out.offset, FRAME_TARGET + (64 << 10), next_id);
            }
        }
        // Always at least one frame: it carries next_id even when nothing is live.
        if b.len() > FRAME_HEADER_LEN + PAYLOAD_HEADER_LEN || out.last_frame.is_none() {
            out.write(&b.finish())?;
        }
        Ok(true)
    }

    /// Writes `out`'s header as generation start number `n`, and syncs all.
    fn write_header(&self, out: &mut Out, n: u32) -> Result<()> {
        out.flush()?;
        let header = format::encode_file_header(FileHeader {
            mode: self.config.mode,
            file_no: n,
            prev_len: 0,
            generation_start: true,
            sync_markers: self.config.durability.syncs(),
        });
        out.file
            .write_all_at(&header, 0)
            .and_then(|()| out.file.sync_all())
            .map_err(|e| Error::io(format!("writing {}", out.path.display()), e))
    }

    /// Copies the frames committed since `from`, then switches to `out`.
    /// `reclaimed`: the superseded count when the compaction started, taken
    /// off the count at the switch (before the checkpoint that follows it).
    fn catch_up_and_switch(
        &self,
        from: Covered,
        out: &mut Out,
        reclaimed: Option<u64>,
    ) -> Result<bool> {
        let mut from = (from.file, from.offset);
        let mut before = u64::MAX;
        for _ in 0..CATCH_UP_ROUNDS {
            if self.wake.stopping() {
                return Ok(false);
            }
            let (to, files, first_no) = {
                let st = self.read_state();
                (st.end, st.files.clone(), st.first_file)
            };
            let copied;
            (copied, from) = copy_frames(&files, first_no, from, to, out, u64::MAX)?;
            // Small enough for the slices, or not shrinking: the writer
            // adds as fast as the copy goes, and only the slices catch up.
            if copied < CATCH_UP_SMALL || copied >= before {
                break;
            }
            before = copied;
        }
        // The bulk and its header (numbered as the switch will most likely
        // number it) are made durable before the writer lock is taken.
        let mut n = next_file_no(self.lock_writer().file_no)?;
        self.write_header(out, n)?;
        out.index.move_all_to(n);
        out.file_no = n;

        // Commits faster than the rounds above could copy: the rest is
        // copied under the writer lock in slices of at most SLICE bytes, the
        // lock released between slices, so commits wait at most one slice
        // (and the switch after the last one).
        let mut longest = std::time::Duration::ZERO;
        // Until the switch (or a failure), each gap between two slices lets
        // one commit through, so a writer cannot outrun the copy (`gate`).
        let slicing = self.gate.slicing();
        let (mut w, paused, first_no) = loop {
            let w = self.lock_unpoisoned_writer()?;
            let paused = Instant::now();
            let (to, files, first_no) = {
                let st = self.read_state();
                (st.end, st.files.clone(), st.first_file)
            };
            let reached;
            (_, reached) = copy_frames(&files, first_no, from, to, out, SLICE)?;
            if reached == (to.file, to.offset) {
                break (w, paused, first_no);
            }
            from = reached;
            drop(w);
            longest = longest.max(paused.elapsed());
            if self.wake.stopping() {
                return Ok(false);
            }
            // The lock is not fair: give a waiting commit the chance to go
            // first (up to 1 ms), or this loop could take it back at once;
            // one commit, the others wait for the next gap.
            slicing.gap();
            let gap = Instant::now();
            while self.read_state().end == to && gap.elapsed() < std::time::Duration::from_millis(1)
            {
                std::thread::yield_now();
            }
        };
        out.flush()?;
        if next_file_no(w.file_no)? != n {
            // The writer rolled over meanwhile.
            n = next_file_no(w.file_no)?;
            self.write_header(out, n)?;
            out.index.move_all_to(n);
            out.file_no = n;
        }
        let path = files::data_path(&self.dir, n);
        // Everything that can fail without harm comes before the rename: once
        // the file is in place it supersedes the files this handle writes to.
        let file = out
            .file
            .try_clone()
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        if self.config.durability.syncs() {
            // All of the file is on stable storage before it is in place:
            // a marker at its end says so to recovery (see `format`).
            out.write(&format::marker_frame(self.read_state().next_id))?;
        }
        // The frames copied last are commits a caller may have made durable
        // (in `Flush` mode by `OurDb::sync`): they are on disk before the
        // file that makes the old ones go can be.
        out.sync()?;
        let installed = (|| {
            files::rename(&out.path, &path)?;
            files::sync_dir(&self.dir)
        })();
        if let Err(e) = installed {
            // Whether the rename reached the disk is unknown: if it did, the
            // file supersedes everything this handle would write next.
            self.poison(&e);
            return Err(e);
        }
        let index = std::mem::replace(&mut out.index, Index::sparse());
        let old = {
            let mut st = self.write_state();
            st.index = index;
            self.wake.superseded.reclaimed(reclaimed);
            st.first_file = n;
            st.end = Covered {
                file: n,
                offset: out.offset,
                last_frame: out.last_frame,
            };
            std::mem::replace(&mut st.files, vec![Arc::new(DataFile { path, file })])
        };
        w.file_no = n;
        w.offset = out.offset;
        w.allocated = out.offset;
        w.marks = self.config.durability.syncs();
        w.unmarked = false;
        let pause = paused.elapsed().max(longest);
        // Before a commit adds to the file bytes.
        self.counters.compacted(out.offset, pause);
        drop(w);
        drop(slicing);
        log::debug!(
            "compacted {} into data file {n} ({} bytes, writer paused {pause:?})",
            self.dir.display(),
            out.offset
        );
        let old_nums = first_no..first_no + old.len() as u32;
        drop(old);
        if let Err(e) = files::remove_data_files(&self.dir, old_nums) {
            log::warn!("{e} (open removes superseded files)");
        }
        self.write_checkpoint()?;
        Ok(true)
    }
}

fn next_file_no(current: u32) -> Result<u32> {
    current.checked_add(1).ok_or_else(|| Error::InvalidConfig {
        reason: "data file numbers exhausted".into(),
    })
}
