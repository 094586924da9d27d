//! Writing compaction's output file: buffered frames, and committed frames
//! copied into it with their history links re-pointed at it.
//!
//! Layering: above `format`, `files`, `index` and `read`; only `compact`
//! uses it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::checkpoint::Covered;
use crate::error::{Error, Result};
use crate::files::DataFile;
use crate::format::{
    self, FILE_HEADER_LEN, FRAME_HEADER_LEN, FrameBuilder, OP_HEADER_LEN, OpKind,
    PAYLOAD_HEADER_LEN, Pos, SAME_FILE,
};
use crate::index::{Index, Loc};
use crate::read;

/// Bytes read or buffered for writing at a time.
const IO_CHUNK: usize = 4 << 20;

/// The compacted file being written.
pub(crate) struct Out {
    pub file: File,
    pub path: std::path::PathBuf,
    /// End of what is written, buffered bytes included.
    pub offset: u64,
    /// Frames not yet written, ending at `offset`.
    pub buffered: Vec<u8>,
    /// The number the file will get (`SAME_FILE` until one is chosen), for
    /// the index's locations.
    pub file_no: u32,
    pub last_frame: Option<(u64, u32)>,
    pub index: Index,
}

impl Out {
    /// Appends a frame (written once enough is buffered, or on `flush`).
    pub(crate) fn write(&mut self, frame: &[u8]) -> Result<()> {
        let crc = format::le32(&frame[8..12]);
        self.buffered.extend_from_slice(frame);
        self.last_frame = Some((self.offset, crc));
        self.offset += frame.len() as u64;
        if self.buffered.len() >= IO_CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    pub(crate) fn flush(&mut self) -> Result<()> {
        let at = self.offset - self.buffered.len() as u64;
        self.file
            .write_all_at(&self.buffered, at)
            .map_err(|e| Error::io(format!("writing {}", self.path.display()), e))?;
        self.buffered.clear();
        Ok(())
    }

    pub(crate) fn sync(&mut self) -> Result<()> {
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

/// Copies the frames from `from` (file, offset) up to `to` into `out`,
/// re-linking their history to `out`'s positions, stopping early at the
/// first frame boundary after `limit` bytes. Returns the bytes copied and
/// the position reached.
pub(crate) fn copy_frames(
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
