//! Opening a directory: pick the current generation of data files, start
//! from the checkpoint when it can be trusted, scan what follows it.
//!
//! Layering: above `files`, `checkpoint` and `recovery` (the frame scan);
//! only `db` calls it.
//!
//! Steps: list the data files and check every header; the highest-numbered
//! generation start (written by compaction) supersedes every file below it,
//! and those are deleted (a compaction that crashed before deleting them
//! leaves both; the generation start wins, so nothing is counted twice);
//! the rest must be numbered without a gap. Then the checkpoint: used when
//! [`checkpoint`](crate::checkpoint) says it is whole and its end is still
//! where it says, otherwise ignored with a warning and every file scanned;
//! but a whole checkpoint of these files whose end lies past the end of its
//! data file (or in a data file that is gone) is `Corrupt`: it proves the
//! file held those bytes, synced, when it was written.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use crate::checkpoint::{self, Checkpoint, Covered};
use crate::error::{Error, Result};
use crate::files::{self, DataFile};
use crate::format::{self, FILE_HEADER_LEN, FRAME_HEADER_LEN};
use crate::index::Index;
use crate::recovery::{self, Recovered};
use crate::{Config, Mode};

/// What open found.
pub(crate) struct Opened {
    pub index: Index,
    pub next_id: u32,
    pub first_file: u32,
    pub files: Vec<Arc<DataFile>>,
    pub end: Covered,
    /// Length of the last file (past `end.offset` when space was preallocated).
    pub allocated: u64,
    /// Whether the last file's writer writes sync markers (its header).
    pub sync_markers: bool,
    pub file_bytes: u64,
    pub from_checkpoint: bool,
    pub scanned: u64,
    /// Bytes superseded since the last compaction started, when known.
    pub superseded: Option<u64>,
    /// First file and end of the checkpoint on disk, when it was used.
    pub checkpoint: Option<(u32, Covered)>,
}

/// Opens the data files of a locked `dir` and rebuilds the index.
pub(crate) fn open_files(dir: &Path, config: &Config) -> Result<Opened> {
    files::remove_temp_files(dir)?;
    let mut nums = files::list_data_files(dir)?;
    let created = nums.is_empty();
    if created {
        refuse_if_all_gone(dir, config)?;
        files::create_data_file(dir, 0, config.mode, 0, config.durability.syncs())?;
        nums.push(0);
    }
    let mut opened = Vec::with_capacity(nums.len());
    for &n in &nums {
        let path = files::data_path(dir, n);
        let file = files::open_data_file(&path)?;
        let header = recovery::check_header(&file, &path, dir, n, config.mode)?;
        opened.push((n, header, DataFile { path, file }));
    }
    let first = opened
        .iter()
        .rev()
        .find(|(_, h, _)| h.generation_start)
        .map_or(0, |(n, _, _)| *n);
    let superseded: Vec<u32> = nums.iter().copied().filter(|&n| n < first).collect();
    if !superseded.is_empty() {
        log::warn!(
            "removing {} data files of {} that compaction superseded",
            superseded.len(),
            dir.display()
        );
        opened.retain(|(n, _, _)| *n >= first);
        files::remove_data_files(dir, superseded)?;
    }
    let nums: Vec<u32> = opened.iter().map(|(n, _, _)| *n).collect();
    files::check_numbering(dir, &nums, first)?;

    // A whole checkpoint open did not trust: removed once the scan is known
    // to succeed, before anything shortens a file, so that it never shows a
    // later open a file shorter than it covers (which would be `Corrupt`).
    let mut stale = false;
    let cp = match checkpoint::read(dir, config.mode) {
        None => None,
        Some(Err(reason)) => {
            log::warn!("ignoring the checkpoint of {}: {reason}", dir.display());
            None
        }
        Some(Ok(cp)) => {
            refuse_if_cut(dir, &cp, first, created, &opened)?;
            match trust(&cp, first, &opened) {
                Ok(()) => Some(cp),
                Err(reason) => {
                    log::warn!("ignoring the checkpoint of {}: {reason}", dir.display());
                    stale = true;
                    None
                }
            }
        }
    };
    let from_checkpoint = cp.is_some();
    let on_disk = cp.as_ref().map(|cp| (cp.first_file, cp.end));
    let (mut rec, resume, mut last_frame) = match cp {
        Some(cp) => (
            Recovered {
                index: cp.index,
                next_id: cp.next_id,
                superseded: cp.superseded,
                keeps_all: config.history == 0,
            },
            Some((cp.end.file, cp.end.offset)),
            cp.end.last_frame,
        ),
        None => (
            Recovered {
                index: match config.mode {
                    Mode::Incremental => Index::dense(),
                    Mode::KeyValue => Index::sparse(),
                },
                next_id: 1,
                // Counted by the scan: every version a later one replaced
                // or deleted. What the last compaction kept as history counts
                // too (a scan cannot tell it apart), so a store with much of it
                // may be compacted once more after such an open, which keeps
                // it again; a store that only grew counts nothing.
                superseded: Some(0),
                keeps_all: config.history == 0,
            },
            None,
            None,
        ),
    };

    let mut data_files: Vec<Arc<DataFile>> = Vec::with_capacity(opened.len());
    let mut end = FILE_HEADER_LEN;
    let mut file_bytes = 0;
    let mut scanned = 0;
    let mut allocated = FILE_HEADER_LEN;
    let mut sync_markers = false;
    let last = opened.len() - 1;
    for (i, (n, header, df)) in opened.into_iter().enumerate() {
        if let Some(prev) = data_files.last() {
            recovery::check_prev_len(prev.as_ref(), end, header.prev_len)?;
        }
        let len = file_len(&df.file, &df.path)?;
        sync_markers = header.sync_markers;
        match resume {
            Some((rf, _)) if n < rf => {
                // Wholly before the checkpoint's end: a sealed file, cut to
                // its frames when the next one was started.
                end = len;
                allocated = len;
            }
            _ => {
                let start = match resume {
                    Some((rf, ro)) if rf == n => ro,
                    _ => FILE_HEADER_LEN,
                };
                let scan = recovery::scan_file(
                    &df.file,
                    &df.path,
                    (n, start),
                    (i == last, header.sync_markers),
                    config.mode,
                    &mut rec,
                )?;
                if scan.torn {
                    remove_stale_checkpoint(dir, &mut stale)?;
                    df.file
                        .set_len(scan.end)
                        .and_then(|()| df.file.sync_all())
                        .map_err(|e| {
                            Error::io(format!("cutting torn tail of {}", df.path.display()), e)
                        })?;
                }
                if scan.last_frame.is_some() || start == FILE_HEADER_LEN {
                    last_frame = scan.last_frame;
                }
                scanned += scan.end - start;
                end = scan.end;
                allocated = if scan.torn { scan.end } else { scan.len };
            }
        }
        file_bytes += end;
        data_files.push(Arc::new(df));
    }
    remove_stale_checkpoint(dir, &mut stale)?;
    let last_no = first + last as u32;
    Ok(Opened {
        index: rec.index,
        next_id: rec.next_id,
        first_file: first,
        files: data_files,
        end: Covered {
            file: last_no,
            offset: end,
            last_frame,
        },
        allocated,
        sync_markers,
        file_bytes,
        from_checkpoint,
        scanned,
        superseded: rec.superseded,
        checkpoint: on_disk,
    })
}

fn file_len(file: &File, path: &Path) -> Result<u64> {
    file.metadata()
        .map(|m| m.len())
        .map_err(|e| Error::io(format!("reading metadata of {}", path.display()), e))
}

/// Removes the checkpoint open ignored, if `stale` says so, once.
fn remove_stale_checkpoint(dir: &Path, stale: &mut bool) -> Result<()> {
    if std::mem::take(stale) {
        files::remove_checkpoint(dir)?;
    }
    Ok(())
}

/// Fails with [`Error::Corrupt`] when no data file is left but a
/// checkpoint is (every data file deleted while the database was stopped):
/// starting empty would hand their ids out again. A checkpoint is written
/// only of a store that holds records, so one that cannot be read (damaged,
/// another mode's) proves as much. To start the database empty on purpose,
/// the checkpoint goes too (or the whole directory), as the message says. A
/// whole checkpoint that covers nothing is left to [`trust`].
fn refuse_if_all_gone(dir: &Path, config: &Config) -> Result<()> {
    let cp = match checkpoint::read(dir, config.mode) {
        None => return Ok(()),
        Some(Ok(cp)) => cp,
        Some(Err(reason)) => {
            let path = files::checkpoint_path(dir);
            return Err(Error::corrupt(
                &path,
                0,
                format!(
                    "no data file is left in {}, though a checkpoint of its records is (one \
                     that cannot be used: {reason}): the data files were deleted; to start \
                     this database empty, remove {} too",
                    dir.display(),
                    path.display()
                ),
            ));
        }
    };
    if cp.next_id <= 1 && cp.end.file == 0 && cp.end.offset <= FILE_HEADER_LEN {
        return Ok(());
    }
    Err(Error::corrupt(
        &files::data_path(dir, cp.end.file),
        0,
        format!(
            "no data file is left in {}, though its checkpoint shows this one held data up \
             to offset {}, synced before the checkpoint was written (the data files were \
             deleted); to start this database empty, remove {} too",
            dir.display(),
            cp.end.offset,
            files::checkpoint_path(dir).display()
        ),
    ))
}

/// Fails with [`Error::Corrupt`] when the checkpoint, taken of these data
/// files (same first file), covers bytes past the end of its last file, or
/// that file is gone: a checkpoint is written only after every byte it
/// covers was synced, so the file lost committed records since (cut or
/// deleted while the database was stopped) and an open that went on would
/// hand their ids out again. A checkpoint of other files (compaction
/// started a new generation) is left to [`trust`]; so is one beside the
/// data file open created (`created`: [`refuse_if_all_gone`] let it by,
/// as it covers nothing).
fn refuse_if_cut(
    dir: &Path,
    cp: &Checkpoint,
    first: u32,
    created: bool,
    opened: &[(u32, format::FileHeader, DataFile)],
) -> Result<()> {
    if cp.first_file != first || created {
        return Ok(());
    }
    let covered = cp.end.offset;
    let Some((_, _, df)) = opened.iter().find(|(n, _, _)| *n == cp.end.file) else {
        if cp.end.file < first {
            // Before its own first file: a checkpoint that lies, for `trust`.
            return Ok(());
        }
        return Err(Error::corrupt(
            &files::data_path(dir, cp.end.file),
            0,
            format!(
                "data file is missing, though the checkpoint shows it held data up to \
                 offset {covered}, synced before the checkpoint was written"
            ),
        ));
    };
    let len = file_len(&df.file, &df.path)?;
    if len < covered {
        return Err(Error::corrupt(
            &df.path,
            len,
            format!(
                "data file is {len} bytes long, shorter than its checkpoint shows it was: \
                 the checkpoint covers it up to offset {covered}, synced before the \
                 checkpoint was written"
            ),
        ));
    }
    Ok(())
}

/// Whether the checkpoint's end is still in the files as it was written.
fn trust(
    cp: &Checkpoint,
    first: u32,
    opened: &[(u32, format::FileHeader, DataFile)],
) -> std::result::Result<(), String> {
    if cp.first_file != first {
        return Err(format!(
            "it was taken of data files from {}, the directory's start at {first}",
            cp.first_file
        ));
    }
    let Some((_, _, df)) = opened.iter().find(|(n, _, _)| *n == cp.end.file) else {
        return Err(format!(
            "it ends in data file {}, which is not there",
            cp.end.file
        ));
    };
    let len = file_len(&df.file, &df.path).map_err(|e| e.to_string())?;
    if cp.end.offset > len || cp.end.offset < FILE_HEADER_LEN {
        return Err(format!(
            "it ends at offset {} of {}, which is {len} bytes long",
            cp.end.offset,
            df.path.display()
        ));
    }
    let Some((at, crc)) = cp.end.last_frame else {
        // Ends at a header: no frame to compare, but its index is checked
        // all the same.
        return if cp.end.offset == FILE_HEADER_LEN {
            locations_in_bounds(cp, opened)
        } else {
            Err("it names no last frame but ends after a file header".into())
        };
    };
    let changed = || {
        format!(
            "the frame it ends with at offset {at} of {} changed",
            df.path.display()
        )
    };
    let mut h = [0u8; FRAME_HEADER_LEN];
    std::os::unix::fs::FileExt::read_exact_at(&df.file, &mut h, at).map_err(|_| changed())?;
    let Some((plen, got)) = format::decode_frame_header(&h) else {
        return Err(changed());
    };
    if got != crc || at + FRAME_HEADER_LEN as u64 + u64::from(plen) != cp.end.offset {
        return Err(changed());
    }
    let mut payload = vec![0u8; plen as usize];
    std::os::unix::fs::FileExt::read_exact_at(&df.file, &mut payload, at + FRAME_HEADER_LEN as u64)
        .map_err(|_| changed())?;
    if !format::frame_crc_ok(plen, crc, &payload) {
        return Err(changed());
    }
    locations_in_bounds(cp, opened)
}

/// Whether every location the checkpoint's index holds lies before its end
/// (so no read is sized or placed by a checkpoint that lies).
fn locations_in_bounds(
    cp: &Checkpoint,
    opened: &[(u32, format::FileHeader, DataFile)],
) -> std::result::Result<(), String> {
    let mut ends = Vec::with_capacity(opened.len());
    for (n, _, df) in opened.iter().filter(|(n, _, _)| *n <= cp.end.file) {
        let end = if *n == cp.end.file {
            cp.end.offset
        } else {
            file_len(&df.file, &df.path).map_err(|e| e.to_string())?
        };
        ends.push(end);
    }
    let first = cp.first_file;
    let dense = matches!(cp.index, Index::Dense { .. });
    let mut bad = None;
    for (file, lowest, reach) in cp.bounds.spans() {
        let end = file
            .checked_sub(first)
            .and_then(|i| ends.get(i as usize).copied())
            .unwrap_or(0);
        if lowest < FILE_HEADER_LEN || reach > end {
            bad = Some(file);
        }
    }
    if let Some(file) = bad {
        return Err(format!(
            "it holds locations in data file {file} outside the data it covers"
        ));
    }
    if let Some((lo, hi)) = cp.bounds.ids {
        if (dense && lo == 0) || (hi >= cp.next_id && cp.next_id != u32::MAX) {
            return Err(format!(
                "it holds ids {lo}..={hi}, outside the ids handed out (next {})",
                cp.next_id
            ));
        }
    }
    if cp.next_id == 0 {
        return Err("its next id is 0".into());
    }
    Ok(())
}
