//! The frame scan that rebuilds the index on open (from the start of the
//! files, or from where the checkpoint ends).
//!
//! Layering: above `format`, `files` and `index`; only `opening` uses it.
//!
//! The data files are the truth. Each file is read front to back, frame by
//! frame; a frame is applied only when its CRC holds. At the first bad frame:
//! - in the last file, when only zero bytes follow, it is space preallocated
//!   for later commits (`Durability::Sync`): kept, and writing resumes there;
//! - in the last file, when no valid frame follows it, it is a torn tail (a
//!   commit cut short by a crash): the file is truncated there;
//! - in the last file, when valid frames follow it but no sync marker does
//!   and the file's header says it has markers, it is a group of commits
//!   torn by a power cut during their one fsync (the disk stored a later
//!   frame before an earlier one): none was acknowledged, and the file is
//!   truncated there too;
//! - otherwise it is real corruption: [`Error::Corrupt`] names file and offset.

use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::Mode;
use crate::error::{Error, Result};
use crate::files::DataFile;
use crate::format::{
    self, FILE_HEADER_LEN, FRAME_HEADER_LEN, FileHeader, OP_HEADER_LEN, OpKind, PAYLOAD_HEADER_LEN,
};
use crate::index::{Index, Loc};

/// What scanning the files produced.
pub(crate) struct Recovered {
    pub index: Index,
    pub next_id: u32,
    /// Bytes of versions replaced or deleted since the last compaction
    /// started, counted on from the checkpoint's figure as the scan applies
    /// frames after it (`None`: not known, and not counted).
    pub superseded: Option<u64>,
    /// `Config::history` is 0: a replaced version is kept by compaction, so
    /// it does not count as superseded.
    pub keeps_all: bool,
}

/// Outcome of scanning one file.
pub(crate) struct FileScan {
    /// Offset just past the last valid frame.
    pub end: u64,
    /// Whether a torn tail was found (and must be cut at `end`).
    pub torn: bool,
    /// Length of the file as found (past `end` when space was preallocated).
    pub len: u64,
    /// Start offset and CRC of the last valid frame scanned.
    pub last_frame: Option<(u64, u32)>,
}

/// Checks a data file's header against the configured mode.
pub(crate) fn check_header(
    file: &File,
    path: &Path,
    dir: &Path,
    file_no: u32,
    mode: Mode,
) -> Result<FileHeader> {
    let mut h = [0u8; FILE_HEADER_LEN as usize];
    let n = read_at_most(file, &mut h, 0)
        .map_err(|e| Error::io(format!("reading header of {}", path.display()), e))?;
    let header = format::decode_file_header(&h[..n]).map_err(|r| Error::corrupt(path, 0, r))?;
    if header.file_no != file_no {
        return Err(Error::corrupt(
            path,
            0,
            format!("header says this is data file {}", header.file_no),
        ));
    }
    let stored = header.mode;
    if stored != mode {
        return Err(Error::ModeMismatch {
            dir: dir.to_path_buf(),
            stored: crate::mode_name(stored),
            requested: crate::mode_name(mode),
        });
    }
    Ok(header)
}

/// Checks that the previous data file ends where the next one's header says
/// it did: catches a file cut exactly at a frame boundary.
pub(crate) fn check_prev_len(prev: &DataFile, scanned_end: u64, recorded: u64) -> Result<()> {
    if scanned_end != recorded {
        return Err(Error::corrupt(
            &prev.path,
            scanned_end.min(recorded),
            format!("file ends at {scanned_end} but the next data file records {recorded}"),
        ));
    }
    Ok(())
}

fn read_at_most(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], at + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Scans data file number `file_no` from `start` (a frame boundary),
/// applying its frames to `rec`. `markers`: its header says its writer wrote
/// sync markers.
pub(crate) fn scan_file(
    file: &File,
    path: &Path,
    (file_no, start): (u32, u64),
    (is_last, markers): (bool, bool),
    mode: Mode,
    rec: &mut Recovered,
) -> Result<FileScan> {
    let io_ctx = || format!("reading data file {}", path.display());
    let len = file.metadata().map_err(|e| Error::io(io_ctx(), e))?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(start))
        .map_err(|e| Error::io(io_ctx(), e))?;
    let mut off = start;
    let mut last_frame = None;
    let mut payload = Vec::new();
    while off < len {
        let bad = |reason: &'static str| -> Result<FileScan> {
            if !is_last {
                return Err(Error::corrupt(path, off, reason));
            }
            let tail =
                classify_tail(file, off, len, markers).map_err(|e| Error::io(io_ctx(), e))?;
            let what = match tail {
                Tail::Zeros => {
                    return Ok(FileScan {
                        end: off,
                        torn: false,
                        len,
                        last_frame,
                    });
                }
                Tail::Torn => "torn tail",
                Tail::TornGroup => {
                    "group of commits torn by a power cut (valid frames after the bad one but \
                     no sync marker: none of it was acknowledged)"
                }
                Tail::FollowedByValidFrame => return Err(Error::corrupt(path, off, reason)),
            };
            log::warn!(
                "cutting the {what} of {} at offset {off} ({} bytes): {reason}",
                path.display(),
                len - off
            );
            Ok(FileScan {
                end: off,
                torn: true,
                len,
                last_frame,
            })
        };
        if len - off < FRAME_HEADER_LEN as u64 {
            return bad("frame header is truncated");
        }
        let mut h = [0u8; FRAME_HEADER_LEN];
        reader
            .read_exact(&mut h)
            .map_err(|e| Error::io(io_ctx(), e))?;
        let Some((plen, crc)) = format::decode_frame_header(&h) else {
            return bad("bad frame magic");
        };
        if u64::from(plen) > len - off - FRAME_HEADER_LEN as u64 {
            return bad("frame extends past the end of the file");
        }
        payload.resize(plen as usize, 0);
        reader
            .read_exact(&mut payload)
            .map_err(|e| Error::io(io_ctx(), e))?;
        if !format::frame_crc_ok(plen, crc, &payload) {
            return bad("frame checksum mismatch");
        }
        let payload_at = off + FRAME_HEADER_LEN as u64;
        apply_frame(&payload, payload_at, file_no, mode, rec)
            .map_err(|(at, reason)| Error::corrupt(path, at, reason))?;
        last_frame = Some((off, crc));
        off = payload_at + u64::from(plen);
    }
    Ok(FileScan {
        end: off,
        torn: false,
        len,
        last_frame,
    })
}

/// Applies a CRC-valid frame payload. Errors carry the absolute offset.
fn apply_frame(
    p: &[u8],
    at: u64,
    file_no: u32,
    mode: Mode,
    rec: &mut Recovered,
) -> std::result::Result<(), (u64, &'static str)> {
    if p.len() < PAYLOAD_HEADER_LEN {
        return Err((at, "frame payload is too short"));
    }
    let next_id = format::le32(&p[0..4]);
    let count = format::le32(&p[4..8]);
    let mut i = PAYLOAD_HEADER_LEN;
    for _ in 0..count {
        let op_at = at + i as u64;
        let h = format::decode_op_header(&p[i..]).map_err(|r| (op_at, r))?;
        let vstart = i + OP_HEADER_LEN;
        let vend = vstart
            .checked_add(h.value_len as usize)
            .filter(|&e| e <= p.len())
            .ok_or((op_at, "op value extends past its frame"))?;
        if !format::op_crc_ok(&p[i..], &p[vstart..vend]) {
            return Err((op_at, "op checksum mismatch"));
        }
        if mode == Mode::Incremental && (h.id == 0 || h.id >= next_id) {
            return Err((op_at, "op id outside the ids handed out"));
        }
        let loc = (h.kind == OpKind::Put).then_some(Loc {
            file: file_no,
            value_len: h.value_len,
            offset: op_at,
        });
        let superseded = rec.index.apply(h.id, loc, rec.keeps_all);
        if let Some(counted) = rec.superseded.as_mut() {
            *counted += superseded;
        }
        i = vend;
    }
    if i != p.len() {
        return Err((at + i as u64, "frame has bytes after its last op"));
    }
    rec.next_id = rec.next_id.max(next_id);
    Ok(())
}

/// What follows the last valid frame of the last file.
enum Tail {
    /// Only zero bytes: space preallocated for later commits.
    Zeros,
    /// A commit cut short by a crash (no valid frame follows it).
    Torn,
    /// In a file with sync markers, valid frames follow the bad bytes but no
    /// marker does: they were all written after the last fsync that
    /// completed, as one group (`commit_unsynced` … `sync`) whose flush a
    /// power cut interrupted, the disk having stored a later part before an
    /// earlier one. None of it was acknowledged.
    TornGroup,
    /// A valid frame follows the bad bytes (in a file with sync markers: a
    /// marker does, so they were on stable storage): they are corruption.
    FollowedByValidFrame,
}

/// Reads the bytes after a bad frame at `from` in windows, so a large last
/// file never has to fit in memory at once. `markers`: the file's writer
/// wrote sync markers, so valid frames after the bad ones without a marker
/// among them are a torn group.
fn classify_tail(file: &File, from: u64, len: u64, markers: bool) -> std::io::Result<Tail> {
    const WINDOW: usize = 1 << 20;
    let magic = format::FRAME_MAGIC.to_le_bytes();
    let mut window = vec![0u8; WINDOW + FRAME_HEADER_LEN];
    let mut payload = Vec::new();
    let mut all_zero = true;
    let mut valid_after = false;
    let mut base = from;
    while base < len {
        let want = window.len().min((len - base) as usize);
        let n = read_at_most(file, &mut window[..want], base)?;
        let w = &window[..n];
        all_zero = all_zero && w.iter().all(|&b| b == 0);
        // Positions owned by this window; the overlap is re-read by the next.
        let owned = n.min(WINDOW);
        for i in 0..owned {
            let at = base + i as u64;
            if at == from || i + FRAME_HEADER_LEN > n || w[i..i + 4] != magic {
                continue;
            }
            let h: [u8; FRAME_HEADER_LEN] = w[i..i + FRAME_HEADER_LEN]
                .try_into()
                .expect("slice of frame header length");
            let Some((plen, crc)) = format::decode_frame_header(&h) else {
                continue;
            };
            let start = at + FRAME_HEADER_LEN as u64;
            if u64::from(plen) > len - start {
                continue;
            }
            payload.resize(plen as usize, 0);
            if read_at_most(file, &mut payload, start)? == payload.len()
                && format::frame_crc_ok(plen, crc, &payload)
            {
                if !markers || format::is_marker(&payload) {
                    return Ok(Tail::FollowedByValidFrame);
                }
                valid_after = true;
            }
        }
        if n < want || owned == 0 {
            break;
        }
        base += owned as u64;
    }
    Ok(if valid_after {
        Tail::TornGroup
    } else if all_zero {
        Tail::Zeros
    } else {
        Tail::Torn
    })
}
