//! The on-disk format: file headers, commit frames and operation records.
//!
//! Layering: the bottom of the crate, with `error` and `batch`; it knows
//! bytes only, no files.
//!
//! All integers are little-endian.
//!
//! ```text
//! data file  = file header, frame*
//! file header (32 B) = "OURDBv2\0" | mode u8 | flags u8 | 2 zero bytes | file_no u32
//!              | prev_len u64 | 4 zero bytes | crc32 of the first 28 bytes
//!              prev_len = final length of the previous data file (0 for file 0),
//!              so a previous file cut at a frame boundary is still detected
//!              flags bit 0 = generation start: written by compaction, it holds
//!              every record of the files numbered below it, which it supersedes
//!              flags bit 1 = sync markers: the writer follows each fsync of
//!              its commits with a marker (below)
//! frame      = magic u32 "ODBF" | payload_len u32 | crc u32 | payload
//!              crc = crc32(payload_len bytes ++ payload)
//! payload    = next_id u32 | op_count u32 | op*
//! op (25 B header + value)
//!            = kind u8 (1 put, 2 delete) | id u32 | prev_file u32 | prev_offset u64
//!              | value_len u32 | op_crc u32 | value
//!              op_crc = crc32(first 21 header bytes ++ value)
//! ```
//!
//! One frame is one commit (a single write or a whole batch): it is visible
//! after recovery only if its CRC holds, so a torn batch is never applied.
//! A frame without ops is a sync marker: in a file whose header has the
//! sync-markers flag, everything before a marker was on stable storage when
//! it was written (commits never write a frame without ops).
//! `prev_file`/`prev_offset` locate the previous version's op record (the
//! history link); `prev_file == NO_FILE` means there is none, `prev_file ==
//! SAME_FILE` means the file the op itself is in (compaction writes its file
//! before the file's number is chosen).

use crate::Mode;

/// Magic at the start of every data file.
pub(crate) const FILE_MAGIC: &[u8; 8] = b"OURDBv2\0";
/// Size of the data file header.
pub(crate) const FILE_HEADER_LEN: u64 = 32;
/// Magic at the start of every frame ("ODBF" read as little-endian bytes).
pub(crate) const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"ODBF");
/// Size of a frame header.
pub(crate) const FRAME_HEADER_LEN: usize = 12;
/// Size of the fixed part of a frame payload (next_id, op_count).
pub(crate) const PAYLOAD_HEADER_LEN: usize = 8;
/// Size of an op header.
pub(crate) const OP_HEADER_LEN: usize = 25;
/// `prev_file` value meaning "no previous version".
pub(crate) const NO_FILE: u32 = u32::MAX;
/// `prev_file` value meaning "the data file this op is in".
pub(crate) const SAME_FILE: u32 = u32::MAX - 1;
/// File header flag: the file starts a generation (see the module doc).
const FLAG_GENERATION_START: u8 = 1;
/// File header flag: the file's writer writes sync markers (see the module doc).
const FLAG_SYNC_MARKERS: u8 = 2;

const KIND_PUT: u8 = 1;
const KIND_DELETE: u8 = 2;

/// Where an op record starts: data file number and byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub file: u32,
    pub offset: u64,
}

impl Pos {
    /// The link with `SAME_FILE` replaced by `here`, the file the link was read from.
    pub(crate) fn resolve(self, here: u32) -> Pos {
        if self.file == SAME_FILE {
            Pos { file: here, ..self }
        } else {
            self
        }
    }
}

/// One operation as stored in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    Put,
    Delete,
}

/// A decoded op header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpHeader {
    pub kind: OpKind,
    pub id: u32,
    pub prev: Option<Pos>,
    pub value_len: u32,
    pub crc: u32,
}

/// A decoded data file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileHeader {
    pub mode: Mode,
    pub file_no: u32,
    /// Final length of the previous data file.
    pub prev_len: u64,
    /// Whether this file starts a generation written by compaction.
    pub generation_start: bool,
    /// Whether its writer follows each fsync of its commits with a sync
    /// marker (`Durability::Sync`).
    pub sync_markers: bool,
}

const HL: usize = FILE_HEADER_LEN as usize;

/// Encodes a data file header.
pub(crate) fn encode_file_header(fh: FileHeader) -> [u8; HL] {
    let mut h = [0u8; HL];
    h[..8].copy_from_slice(FILE_MAGIC);
    h[8] = mode_byte(fh.mode);
    h[9] = u8::from(fh.generation_start) * FLAG_GENERATION_START
        + u8::from(fh.sync_markers) * FLAG_SYNC_MARKERS;
    h[12..16].copy_from_slice(&fh.file_no.to_le_bytes());
    h[16..24].copy_from_slice(&fh.prev_len.to_le_bytes());
    let crc = crc32fast::hash(&h[..HL - 4]);
    h[HL - 4..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Decodes a data file header, or says what is wrong with it.
pub(crate) fn decode_file_header(h: &[u8]) -> Result<FileHeader, &'static str> {
    if h.len() < HL {
        return Err("file header is truncated");
    }
    let crc_ok = crc32fast::hash(&h[..HL - 4]) == le32(&h[HL - 4..HL]);
    if &h[..7] == b"OURDBv1" {
        // Files written before the magic said v2 already had this 32-byte
        // layout (a released build wrote them): their checksum holds and they
        // are read as they are. Only the first, 16-byte header is refused.
        if !crc_ok {
            return Err("an ourdb v1 data file (16-byte header); this version reads only v2");
        }
    } else if &h[..8] != FILE_MAGIC {
        return Err("not an ourdb data file (bad magic)");
    } else if !crc_ok {
        return Err("file header checksum mismatch");
    }
    let mode = match h[8] {
        1 => Mode::Incremental,
        2 => Mode::KeyValue,
        _ => return Err("unknown mode in file header"),
    };
    if h[9] & !(FLAG_GENERATION_START | FLAG_SYNC_MARKERS) != 0 {
        return Err("unknown flags in file header");
    }
    Ok(FileHeader {
        mode,
        file_no: le32(&h[12..16]),
        prev_len: le64(&h[16..24]),
        generation_start: h[9] & FLAG_GENERATION_START != 0,
        sync_markers: h[9] & FLAG_SYNC_MARKERS != 0,
    })
}

fn mode_byte(mode: Mode) -> u8 {
    match mode {
        Mode::Incremental => 1,
        Mode::KeyValue => 2,
    }
}

/// Builds one frame in a reusable buffer. Ops are appended with their
/// absolute position known up front, so history links inside the same
/// frame point at the right place.
pub(crate) struct FrameBuilder {
    buf: Vec<u8>,
    ops: u32,
    /// Absolute offset of `buf[0]` in its data file.
    base: u64,
}

impl FrameBuilder {
    /// A frame that will be written at `base` in its file.
    pub(crate) fn new(base: u64, capacity: usize, next_id: u32) -> Self {
        let mut buf = Vec::with_capacity(capacity);
        buf.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
        buf.extend_from_slice(&next_id.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        FrameBuilder { buf, ops: 0, base }
    }

    /// Bytes in the frame so far.
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    /// Size of a frame holding ops with the given total value bytes.
    pub(crate) fn encoded_len(op_count: usize, value_bytes: usize) -> usize {
        FRAME_HEADER_LEN + PAYLOAD_HEADER_LEN + op_count * OP_HEADER_LEN + value_bytes
    }

    /// Appends an op; returns the absolute offset of its record.
    pub(crate) fn push(&mut self, kind: OpKind, id: u32, prev: Option<Pos>, value: &[u8]) -> u64 {
        let at = self.base + self.buf.len() as u64;
        let start = self.buf.len();
        self.buf.push(match kind {
            OpKind::Put => KIND_PUT,
            OpKind::Delete => KIND_DELETE,
        });
        self.buf.extend_from_slice(&id.to_le_bytes());
        let (pf, po) = prev.map_or((NO_FILE, 0), |p| (p.file, p.offset));
        self.buf.extend_from_slice(&pf.to_le_bytes());
        self.buf.extend_from_slice(&po.to_le_bytes());
        let len = u32::try_from(value.len()).expect("value size is capped below 4 GiB");
        self.buf.extend_from_slice(&len.to_le_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&self.buf[start..]);
        h.update(value);
        self.buf.extend_from_slice(&h.finalize().to_le_bytes());
        self.buf.extend_from_slice(value);
        self.ops += 1;
        at
    }

    /// Seals the frame (op count, length, CRC) and returns its bytes.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        let p = FRAME_HEADER_LEN;
        self.buf[p + 4..p + 8].copy_from_slice(&self.ops.to_le_bytes());
        let payload_len = u32::try_from(self.buf.len() - FRAME_HEADER_LEN)
            .expect("frame size is checked before encoding");
        self.buf[0..4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
        self.buf[4..8].copy_from_slice(&payload_len.to_le_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&payload_len.to_le_bytes());
        h.update(&self.buf[FRAME_HEADER_LEN..]);
        let crc = h.finalize();
        self.buf[8..12].copy_from_slice(&crc.to_le_bytes());
        self.buf
    }
}

/// A frame header's claimed payload length and CRC, or `None` when the magic is wrong.
pub(crate) fn decode_frame_header(h: &[u8; FRAME_HEADER_LEN]) -> Option<(u32, u32)> {
    if le32(&h[0..4]) != FRAME_MAGIC {
        return None;
    }
    Some((le32(&h[4..8]), le32(&h[8..12])))
}

/// A sync marker: a frame without ops, carrying `next_id`.
pub(crate) fn marker_frame(next_id: u32) -> Vec<u8> {
    FrameBuilder::new(0, FRAME_HEADER_LEN + PAYLOAD_HEADER_LEN, next_id).finish()
}

/// Whether a frame's (CRC-checked) payload is a sync marker's.
pub(crate) fn is_marker(payload: &[u8]) -> bool {
    payload.len() == PAYLOAD_HEADER_LEN && le32(&payload[4..8]) == 0
}

/// Whether `payload` matches the header's length and CRC.
pub(crate) fn frame_crc_ok(payload_len: u32, crc: u32, payload: &[u8]) -> bool {
    let mut h = crc32fast::Hasher::new();
    h.update(&payload_len.to_le_bytes());
    h.update(payload);
    h.finalize() == crc
}

/// Decodes an op header.
pub(crate) fn decode_op_header(b: &[u8]) -> Result<OpHeader, &'static str> {
    if b.len() < OP_HEADER_LEN {
        return Err("op record is truncated");
    }
    let kind = match b[0] {
        KIND_PUT => OpKind::Put,
        KIND_DELETE => OpKind::Delete,
        _ => return Err("unknown op kind"),
    };
    let pf = le32(&b[5..9]);
    let prev = (pf != NO_FILE).then(|| Pos {
        file: pf,
        offset: le64(&b[9..17]),
    });
    Ok(OpHeader {
        kind,
        id: le32(&b[1..5]),
        prev,
        value_len: le32(&b[17..21]),
        crc: le32(&b[21..25]),
    })
}

/// Whether an op's CRC matches its header and value.
pub(crate) fn op_crc_ok(header: &[u8], value: &[u8]) -> bool {
    let mut h = crc32fast::Hasher::new();
    h.update(&header[..OP_HEADER_LEN - 4]);
    h.update(value);
    h.finalize() == le32(&header[OP_HEADER_LEN - 4..OP_HEADER_LEN])
}

pub(crate) fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().expect("slice of 4 bytes"))
}

pub(crate) fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("slice of 8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_32_byte_header_written_with_the_v1_magic_is_read_and_a_16_byte_one_refused() {
        let fh = FileHeader {
            mode: Mode::Incremental,
            file_no: 3,
            prev_len: 4096,
            generation_start: false,
            sync_markers: false,
        };
        let mut h = encode_file_header(fh);
        h[..7].copy_from_slice(b"OURDBv1");
        let crc = crc32fast::hash(&h[..HL - 4]);
        h[HL - 4..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_file_header(&h), Ok(fh));
        // The original layout: magic, then fields and a checksum in 16 bytes.
        let mut old = [0u8; HL];
        old[..8].copy_from_slice(b"OURDBv1\0");
        old[8] = 1;
        let crc = crc32fast::hash(&old[..12]);
        old[12..16].copy_from_slice(&crc.to_le_bytes());
        assert!(decode_file_header(&old).unwrap_err().contains("16-byte"));
    }

    #[test]
    fn file_header_round_trips_each_mode_and_rejects_damage() {
        for mode in [Mode::Incremental, Mode::KeyValue] {
            let fh = FileHeader {
                mode,
                file_no: 7,
                prev_len: 1 << 40,
                generation_start: mode == Mode::KeyValue,
                sync_markers: mode == Mode::Incremental,
            };
            let h = encode_file_header(fh);
            assert_eq!(decode_file_header(&h), Ok(fh));
            let mut bad = h;
            bad[8] ^= 3;
            assert!(decode_file_header(&bad).is_err());
            assert!(decode_file_header(&h[..10]).is_err());
        }
        assert!(decode_file_header(&[0u8; HL]).is_err());
    }

    #[test]
    fn frame_round_trips_ops_with_links_and_detects_any_flipped_bit() {
        let mut b = FrameBuilder::new(100, 0, 7);
        let a = b.push(OpKind::Put, 5, None, b"hello");
        let prev = Pos { file: 3, offset: a };
        let c = b.push(OpKind::Put, 5, Some(prev), b"world!");
        let d = b.push(OpKind::Delete, 9, None, b"");
        let frame = b.finish();
        assert_eq!(frame.len(), FrameBuilder::encoded_len(3, 11));
        assert_eq!(a, 100 + (FRAME_HEADER_LEN + PAYLOAD_HEADER_LEN) as u64);
        assert_eq!(c, a + OP_HEADER_LEN as u64 + 5);
        assert_eq!(d, c + OP_HEADER_LEN as u64 + 6);

        let h: [u8; FRAME_HEADER_LEN] = frame[..FRAME_HEADER_LEN].try_into().unwrap();
        let (len, crc) = decode_frame_header(&h).unwrap();
        let payload = &frame[FRAME_HEADER_LEN..];
        assert_eq!(len as usize, payload.len());
        assert!(frame_crc_ok(len, crc, payload));
        assert_eq!(le32(&payload[0..4]), 7);
        assert_eq!(le32(&payload[4..8]), 3);

        let op2 = &frame[(c - 100) as usize..];
        let oh = decode_op_header(op2).unwrap();
        assert_eq!(oh.kind, OpKind::Put);
        assert_eq!(oh.id, 5);
        assert_eq!(oh.prev, Some(prev));
        assert_eq!(oh.value_len, 6);
        let value = &op2[OP_HEADER_LEN..OP_HEADER_LEN + 6];
        assert_eq!(value, b"world!");
        assert!(op_crc_ok(op2, value));

        for i in 0..payload.len() * 8 {
            let mut p = payload.to_vec();
            p[i / 8] ^= 1 << (i % 8);
            assert!(
                !frame_crc_ok(len, crc, &p),
                "flip of bit {i} went unnoticed"
            );
        }
    }

    #[test]
    fn op_header_rejects_unknown_kind_and_truncation() {
        let mut b = FrameBuilder::new(0, 0, 1);
        b.push(OpKind::Put, 1, None, b"x");
        let frame = b.finish();
        let op = &frame[FRAME_HEADER_LEN + PAYLOAD_HEADER_LEN..];
        let mut bad = op.to_vec();
        bad[0] = 9;
        assert!(decode_op_header(&bad).is_err());
        assert!(decode_op_header(&op[..OP_HEADER_LEN - 1]).is_err());
        let mut flipped = op.to_vec();
        flipped[OP_HEADER_LEN] ^= 1;
        assert!(!op_crc_ok(&flipped, &flipped[OP_HEADER_LEN..]));
    }

    #[test]
    fn frame_header_with_wrong_magic_is_rejected() {
        assert_eq!(decode_frame_header(&[0u8; FRAME_HEADER_LEN]), None);
    }
}
