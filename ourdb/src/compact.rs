//! Compaction and checkpoints: rewriting the data files down to the
//! retained versions, and saving the index.
//!
//! Layering: above `state`, `read`, `checkpoint` and `files`; `background`
//! and `db` call it.
//!
//! Compaction copies, for every live id, its newest `Config::history`
//! versions (all when 0) into one file, `compaction.tmp`, without holding a
//! lock: deleted records and older versions are left behind. It then copies
//! the frames committed meanwhile (rounds until a round copies under 1 MiB),
//! fsyncs, and takes the writer lock for the switch: copy the last frames,
//! write the header (a generation start numbered one past the current file),
//! fsync, rename into place, fsync the directory, publish the new file and
//! index, and continue writing at its end. Commits wait only for that switch
//! ([`crate::Stats::max_compaction_pause`]); reads never wait (one holding an
//! old file keeps reading it). The old files are deleted afterwards. A crash
//! before the rename leaves a `.tmp` that open deletes; after it, open finds
//! the generation start and deletes the files it supersedes.
//!
//! History links inside the compacted file use `SAME_FILE`, since its
//! number is chosen only at the switch.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

use crate::checkpoint::{self, Covered};
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
/// Catch-up rounds stop once a round copies less than this.
const CATCH_UP_SMALL: u64 = 1 << 20;
const CATCH_UP_ROUNDS: usize = 8;
/// Most bytes of frames copied while commits wait (see `catch_up_and_switch`).
const SLICE: u64 = 1 << 20;

/// Bytes read or buffered for writing at a time.
const IO_CHUNK: usize = 4 << 20;

/// The compacted file being written.
struct Out {
    file: File,
    path: std::path::PathBuf,
    /// End of what is written, buffered bytes included.
    offset: u64,
    /// Frames not yet written, ending at `offset`.
    buffered: Vec<u8>,
    /// The number the file will get (`SAME_FILE` until one is chosen), for
    /// the index's locations.
    file_no: u32,
    last_frame: Option<(u64, u32)>,
    index: Index,
}

impl Out {
    /// Appends a frame (written once enough is buffered, or on `flush`).
    fn write(&mut self, frame: &[u8]) -> Result<()> {
        let crc = format::le32(&frame[8..12]);
        self.buffered.extend_from_slice(frame);
        self.last_frame = Some((self.offset, crc));
        self.offset += frame.len() as u64;
        if self.buffered.len() >= IO_CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let at = self.offset - self.buffered.len() as u64;
        self.file
            .write_all_at(&self.buffered, at)
            .map_err(|e| Error::io(format!("writing {}", self.path.display()), e))?;
        self.buffered.clear();
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.flush()?;
        self.file
            .sync_data()
            .map_err(|e| Error::io(format!("syncing {}", self.path.display()), e))
    }
}

/// Whether an op's history link is set, as a link to `id`'s head in `ix`.
fn link(ix: &Index, id: u32) -> Option<Pos> {
    ix.get(id).map(|l| Pos {
        file: SAME_FILE,
        offset: l.offset,
    })
}

impl Store {
    /// Writes a checkpoint of the published state unless the last one
    /// covers it already. Returns whether one was written.
    pub(crate) fn write_checkpoint(&self) -> Result<bool> {
        let mut last = self.lock_checkpointing();
        let (bytes, end, first, file) = {
            let st = self.read_state();
            if *last == Some((st.first_file, st.end)) {
                return Ok(false);
            }
            let bytes = checkpoint::encode(
                self.config.mode,
                st.first_file,
                st.end,
                st.next_id,
                &st.index,
            );
            let file = st.file(st.end.file).map(Arc::clone);
            (bytes, st.end, st.first_file, file)
        };
        // What the checkpoint covers must be on disk before it is.
        if let Some(f) = file {
            f.file
                .sync_data()
                .map_err(|e| Error::io(format!("syncing {}", f.path.display()), e))?;
        }
        checkpoint::write(&self.dir, &bytes)?;
        self.counters.checkpointed();
        *last = Some((first, end));
        Ok(true)
    }

    /// Runs one compaction. `Ok(false)` when it stopped early because the
    /// database is closing (nothing changed).
    pub(crate) fn compact_now(&self) -> Result<bool> {
        let _one = self.lock_compacting();
        let (entries, files, first_no, from, next_id) = {
            let st = self.read_state();
            let mut entries = Vec::with_capacity(st.index.len());
            st.index.for_each(|id, loc| entries.push((id, loc)));
            (entries, st.files.clone(), st.first_file, st.end, st.next_id)
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
        // What the next compaction is measured against: the versions kept
        // of this snapshot, not the frames copied verbatim after it (those
        // may hold garbage the next compaction reclaims).
        let kept = out.offset;
        let res = self.catch_up_and_switch(from, &mut out);
        if matches!(res, Ok(true)) {
            self.wake
                .base
                .store(kept, std::sync::atomic::Ordering::Relaxed);
        } else {
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
        let mut versions = Vec::new();
        for &(id, loc) in entries {
            versions.clear();
            let mut pos = Some(loc.pos());
            while let Some(p) = pos {
                if versions.len() >= keep {
                    break;
                }
                let file = p
                    .file
                    .checked_sub(first_no)
                    .and_then(|i| files.get(i as usize))
                    .ok_or_else(|| {
                        Error::corrupt(
                            &self.dir,
                            p.offset,
                            format!("history link to missing data file {}", p.file),
                        )
                    })?;
                let (value, prev) = read::read_version(file, p, id)?;
                versions.push(value);
                pos = prev;
            }
            let mut prev = None;
            for v in versions.iter().rev() {
                let at = b.push(OpKind::Put, id, prev, v);
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
        });
        out.file
            .write_all_at(&header, 0)
            .and_then(|()| out.file.sync_all())
            .map_err(|e| Error::io(format!("writing {}", out.path.display()), e))
    }

    /// Copies the frames committed since `from`, then switches to `out`.
    fn catch_up_and_switch(&self, from: Covered, out: &mut Out) -> Result<bool> {
        let mut from = (from.file, from.offset);
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
            if copied < CATCH_UP_SMALL {
                break;
            }
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
        };
        out.flush()?;
        if next_file_no(w.file_no)? != n {
            // The writer rolled over meanwhile.
            n = next_file_no(w.file_no)?;
            self.write_header(out, n)?;
            out.index.move_all_to(n);
            out.file_no = n;
        }
        let sync = self.config.durability.syncs();
        let path = files::data_path(&self.dir, n);
        let installed = (|| {
            if sync {
                // The frames copied last are acknowledged commits.
                out.sync()?;
            }
            files::rename(&out.path, &path)?;
            if sync {
                files::sync_dir(&self.dir)?;
            }
            Ok(())
        })();
        if let Err(e) = installed {
            // Whether the rename reached the disk is unknown: if it did, the
            // file supersedes everything this handle would write next.
            w.poisoned = true;
            return Err(e);
        }
        let file = out
            .file
            .try_clone()
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let index = std::mem::replace(&mut out.index, Index::sparse());
        let old = {
            let mut st = self.write_state();
            st.index = index;
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
        drop(w);
        let pause = paused.elapsed().max(longest);
        if !sync {
            // Before the old files go, the switch must be on disk.
            out.sync()?;
            files::sync_dir(&self.dir)?;
        }
        self.counters.compacted(out.offset, pause);
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

/// Copies the frames from `from` (file, offset) up to `to` into `out`,
/// re-linking their history to `out`'s positions, stopping early at the
/// first frame boundary after `limit` bytes. Returns the bytes copied and
/// the position reached.
fn copy_frames(
    files: &[Arc<DataFile>],
    first_no: u32,
    from: (u32, u64),
    to: Covered,
    out: &mut Out,
    limit: u64,
) -> Result<(u64, (u32, u64))> {
    let mut copied = 0;
    let (mut file_no, mut off) = from;
    let mut buf = Vec::new();
    while (file_no, off) < (to.file, to.offset) {
        let df = file_no
            .checked_sub(first_no)
            .and_then(|i| files.get(i as usize))
            .expect("frames to copy are in the current files");
        let stop = if file_no == to.file {
            to.offset
        } else {
            df.file
                .metadata()
                .map_err(|e| Error::io(format!("reading metadata of {}", df.path.display()), e))?
                .len()
        };
        while off < stop {
            buf.resize((stop - off).min(IO_CHUNK as u64) as usize, 0);
            read::read_exact_at(df, &mut buf, off)?;
            let mut i = 0;
            while i + FRAME_HEADER_LEN <= buf.len() {
                let h: [u8; FRAME_HEADER_LEN] = buf[i..i + FRAME_HEADER_LEN]
                    .try_into()
                    .expect("slice of frame header length");
                let at = off + i as u64;
                let (plen, crc) = format::decode_frame_header(&h)
                    .ok_or_else(|| Error::corrupt(&df.path, at, "bad frame magic"))?;
                let end = i + FRAME_HEADER_LEN + plen as usize;
                if end > buf.len() {
                    if i == 0 && off + end as u64 <= stop {
                        // One frame larger than the chunk: read it whole.
                        buf.resize(end, 0);
                        read::read_exact_at(df, &mut buf, off)?;
                        continue;
                    }
                    break;
                }
                let p = &buf[i + FRAME_HEADER_LEN..end];
                if !format::frame_crc_ok(plen, crc, p) {
                    return Err(Error::corrupt(&df.path, at, "frame checksum mismatch"));
                }
                let frame = relink_frame(p, out).map_err(|r| Error::corrupt(&df.path, at, r))?;
                out.write(&frame)?;
                i = end;
                if copied + i as u64 >= limit {
                    return Ok((copied + i as u64, (file_no, off + i as u64)));
                }
            }
            if i == 0 {
                return Err(Error::corrupt(&df.path, off, "frame extends past the end"));
            }
            off += i as u64;
            copied += i as u64;
        }
        if file_no == to.file {
            break;
        }
        file_no += 1;
        off = FILE_HEADER_LEN;
    }
    Ok((copied, (file_no, off)))
}

/// Re-encodes one committed frame payload for the end of `out`, updating
/// `out`'s index as if it were written.
fn relink_frame(p: &[u8], out: &mut Out) -> std::result::Result<Vec<u8>, &'static str> {
    if p.len() < PAYLOAD_HEADER_LEN {
        return Err("frame payload is too short");
    }
    let next_id = format::le32(&p[0..4]);
    let count = format::le32(&p[4..8]);
    let mut b = FrameBuilder::new(out.offset, p.len(), next_id);
    let mut i = PAYLOAD_HEADER_LEN;
    for _ in 0..count {
        let h = format::decode_op_header(&p[i..])?;
        let v = p
            .get(i + OP_HEADER_LEN..i + OP_HEADER_LEN + h.value_len as usize)
            .ok_or("op value extends past its frame")?;
        match h.kind {
            OpKind::Put => {
                let prev = h.prev.and_then(|_| link(&out.index, h.id));
                let at = b.push(OpKind::Put, h.id, prev, v);
                out.index.insert(
                    h.id,
                    Loc {
                        file: out.file_no,
                        value_len: h.value_len,
                        offset: at,
                    },
                );
            }
            OpKind::Delete => {
                b.push(OpKind::Delete, h.id, None, &[]);
                out.index.remove(h.id);
            }
        }
        i += OP_HEADER_LEN + v.len();
    }
    Ok(b.finish())
}
