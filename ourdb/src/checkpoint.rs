//! The checkpoint: the index as of a position in the data files, so open
//! scans only the frames written after it.
//!
//! Layering: above `format`, `files` and `index`; `state` holds a
//! [`Covered`], `recovery` reads a checkpoint and the background worker,
//! compaction and close write one.
//!
//! ```text
//! checkpoint = "OURDBCK1" | mode u8 | 3 zero bytes | first_file u32 | end_file u32
//!              | end_offset u64 | last_frame_offset u64 | last_frame_crc u32
//!              | next_id u32 | dense u8 | known u8 | superseded u48 | count u64
//!              | entries | crc32 of everything before it
//! entries    = the index as `Index::encode` writes it
//! ```
//!
//! `first_file` is the first data file (0 or the last generation start),
//! `end_*` the position just past the last frame the index includes, and
//! `last_frame_*` where that frame starts and its CRC (`u64::MAX`: no frame).
//! `superseded` (when `known` is 1) is the background worker's count of bytes
//! that versions replaced or deleted since the last compaction started take
//! in the files the index covers, so open resumes the count instead of
//! estimating it; `known` 0 (a checkpoint written before the count was known
//! since open) leaves the estimate to the background worker's first look.
//! A checkpoint is trusted only when its checksum holds, its mode and first
//! file match the directory, its end lies within the files, and the frame it
//! ends with is still there, whole, with that CRC; anything else makes open
//! scan every file, but for an end past the end of its data file (or in one
//! that is gone): a checkpoint is written only once everything it covers is
//! synced (and not by a handle whose fsync failed), so that file lost
//! committed data and open fails with `Corrupt`. Bytes before the end are
//! otherwise trusted as they were (every read re-checks its record's own
//! CRC).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::Mode;
use crate::error::Result;
use crate::files;
use crate::format::{le32, le64};
use crate::index::{Bounds, Decoder, Index};

const MAGIC: &[u8; 8] = b"OURDBCK1";
const HEADER_LEN: usize = 60;
/// Bytes read and decoded at a time (cache-sized, so each is checksummed
/// and decoded while it is hot).
const CHUNK: usize = 256 << 10;

/// A position in the data files up to which frames are accounted for, with
/// the frame that ends there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Covered {
    pub file: u32,
    pub offset: u64,
    /// Start offset (in `file`) and CRC of the frame ending at `offset`.
    pub last_frame: Option<(u64, u32)>,
}

/// A decoded checkpoint, not yet checked against the data files.
#[derive(Debug)]
pub(crate) struct Checkpoint {
    pub first_file: u32,
    pub end: Covered,
    pub next_id: u32,
    pub index: Index,
    /// Where the index's locations lie.
    pub bounds: Bounds,
    /// Bytes superseded since the last compaction started, when known.
    pub superseded: Option<u64>,
}

/// The largest `superseded` a checkpoint holds (48 bits); more is saved as this.
const SUPERSEDED_MAX: u64 = (1 << 48) - 1;

/// Encodes a checkpoint of `index` (which holds every frame up to `end`).
pub(crate) fn encode(
    mode: Mode,
    first_file: u32,
    end: Covered,
    next_id: u32,
    index: &Index,
    superseded: Option<u64>,
) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER_LEN + index.len() * 16 + 4);
    b.extend_from_slice(MAGIC);
    b.push(mode_byte(mode));
    b.extend_from_slice(&[0; 3]);
    b.extend_from_slice(&first_file.to_le_bytes());
    b.extend_from_slice(&end.file.to_le_bytes());
    b.extend_from_slice(&end.offset.to_le_bytes());
    let (lf_at, lf_crc) = end.last_frame.unwrap_or((u64::MAX, 0));
    b.extend_from_slice(&lf_at.to_le_bytes());
    b.extend_from_slice(&lf_crc.to_le_bytes());
    b.extend_from_slice(&next_id.to_le_bytes());
    b.push(u8::from(matches!(index, Index::Dense { .. })));
    match superseded {
        Some(n) => {
            b.push(1);
            b.extend_from_slice(&n.min(SUPERSEDED_MAX).to_le_bytes()[..6]);
        }
        None => b.extend_from_slice(&[0; 7]),
    }
    let count_at = b.len();
    b.extend_from_slice(&0u64.to_le_bytes());
    debug_assert_eq!(b.len(), HEADER_LEN);
    let count = index.encode(&mut b);
    b[count_at..count_at + 8].copy_from_slice(&count.to_le_bytes());
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Reads a checkpoint of `len` bytes from `r`, checking its CRC while
/// decoding it, or says why it cannot be used.
pub(crate) fn decode_from(
    mut r: impl Read,
    len: u64,
    mode: Mode,
) -> std::result::Result<Checkpoint, String> {
    let io = |e: std::io::Error| format!("reading it failed: {e}");
    if len < (HEADER_LEN + 4) as u64 {
        return Err("checkpoint is truncated".into());
    }
    let mut h = [0u8; HEADER_LEN];
    r.read_exact(&mut h).map_err(io)?;
    if &h[..8] != MAGIC {
        return Err("not an ourdb checkpoint of this version (bad magic)".into());
    }
    let dense = h[44] == 1;
    let count = le64(&h[52..60]);
    let entry = Decoder::entry_len(dense) as u64;
    let body = count
        .checked_mul(entry)
        .filter(|&b| b == len - HEADER_LEN as u64 - 4)
        .ok_or("checkpoint length does not match its entry count")?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h);
    let mut d = Decoder::new(dense, count as usize);
    let mut buf = vec![0u8; (CHUNK as u64 / entry * entry).min(body) as usize];
    let mut left = body;
    let mut fed = true;
    while left > 0 {
        let n = buf.len().min(left as usize);
        r.read_exact(&mut buf[..n]).map_err(io)?;
        crc.update(&buf[..n]);
        fed &= d.feed(&buf[..n]);
        left -= n as u64;
    }
    let mut stored = [0u8; 4];
    r.read_exact(&mut stored).map_err(io)?;
    if crc.finalize() != le32(&stored) {
        return Err("checkpoint checksum mismatch".into());
    }
    if h[8] != mode_byte(mode) {
        return Err("checkpoint was written in the other mode".into());
    }
    if dense != (mode == Mode::Incremental) {
        return Err("checkpoint index layout does not match the mode".into());
    }
    let (index, bounds) = d
        .finish()
        .filter(|_| fed)
        .ok_or("checkpoint entries do not decode")?;
    let lf_at = le64(&h[28..36]);
    let mut superseded = [0u8; 8];
    superseded[..6].copy_from_slice(&h[46..52]);
    Ok(Checkpoint {
        first_file: le32(&h[12..16]),
        end: Covered {
            file: le32(&h[16..20]),
            offset: le64(&h[20..28]),
            last_frame: (lf_at != u64::MAX).then(|| (lf_at, le32(&h[36..40]))),
        },
        next_id: le32(&h[40..44]),
        index,
        bounds,
        superseded: (h[45] == 1).then(|| u64::from_le_bytes(superseded)),
    })
}

fn mode_byte(mode: Mode) -> u8 {
    match mode {
        Mode::Incremental => 1,
        Mode::KeyValue => 2,
    }
}

/// Reads the checkpoint of `dir`: `None` when there is none, `Err` with the
/// reason when it is unusable (an unreadable one included: open then scans).
pub(crate) fn read(dir: &Path, mode: Mode) -> Option<std::result::Result<Checkpoint, String>> {
    let path = files::checkpoint_path(dir);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(Err(format!("opening it failed: {e}"))),
    };
    let len = match file.metadata() {
        Ok(m) => m.len(),
        Err(e) => return Some(Err(format!("reading its metadata failed: {e}"))),
    };
    Some(decode_from(file, len, mode))
}

/// Writes `bytes` as the checkpoint of `dir`, crash-safely.
pub(crate) fn write(dir: &Path, bytes: &[u8]) -> Result<()> {
    files::write_atomically(dir, &files::checkpoint_path(dir), bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Loc;

    fn sample(mode: Mode) -> (Covered, Index) {
        let mut ix = match mode {
            Mode::Incremental => Index::dense(),
            Mode::KeyValue => Index::sparse(),
        };
        ix.insert(
            3,
            Loc {
                file: 2,
                value_len: 5,
                offset: 99,
            },
        );
        let end = Covered {
            file: 2,
            offset: 140,
            last_frame: Some((90, 0xDEAD_BEEF)),
        };
        (end, ix)
    }

    #[test]
    fn round_trips_and_any_flipped_bit_or_cut_is_refused() {
        for mode in [Mode::Incremental, Mode::KeyValue] {
            let (end, ix) = sample(mode);
            let b = encode(mode, 1, end, 4, &ix, Some(12_345));
            let decode = |b: &[u8], mode| decode_from(b, b.len() as u64, mode);
            let cp = decode(&b, mode).expect("decodes");
            assert_eq!(cp.first_file, 1);
            assert_eq!(cp.end, end);
            assert_eq!(cp.next_id, 4);
            assert_eq!(cp.index.get(3), ix.get(3));
            assert_eq!(cp.superseded, Some(12_345));
            for i in 0..b.len() * 8 {
                let mut bad = b.clone();
                bad[i / 8] ^= 1 << (i % 8);
                assert!(decode(&bad, mode).is_err(), "flip of bit {i} accepted");
            }
            for cut in 0..b.len() {
                assert!(decode(&b[..cut], mode).is_err(), "cut at {cut} accepted");
            }
            let other = match mode {
                Mode::Incremental => Mode::KeyValue,
                Mode::KeyValue => Mode::Incremental,
            };
            assert!(decode(&b, other).unwrap_err().contains("other mode"));
        }
    }

    #[test]
    fn the_superseded_count_is_kept_when_known_and_absent_otherwise() {
        let (end, ix) = sample(Mode::Incremental);
        let decode = |b: &[u8]| decode_from(b, b.len() as u64, Mode::Incremental).expect("decodes");
        let unknown = encode(Mode::Incremental, 0, end, 4, &ix, None);
        assert_eq!(decode(&unknown).superseded, None);
        assert_eq!(unknown[45..52], [0; 7], "the layout without a count");
        assert_eq!(
            decode(&encode(Mode::Incremental, 0, end, 4, &ix, Some(0))).superseded,
            Some(0)
        );
        let huge = encode(Mode::Incremental, 0, end, 4, &ix, Some(u64::MAX));
        assert_eq!(decode(&huge).superseded, Some(SUPERSEDED_MAX));
    }
}
