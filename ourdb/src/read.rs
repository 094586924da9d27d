//! Reading one record version from a data file, re-checking its CRC.
//!
//! Layering: above `files` and `format`; `db` (reads, history) and
//! `compact` (copying versions) use it.

use std::os::unix::fs::FileExt;

use crate::error::{Error, Result};
use crate::files::DataFile;
use crate::format::{self, OP_HEADER_LEN, OpKind, Pos};

pub(crate) fn read_exact_at(file: &DataFile, buf: &mut [u8], at: u64) -> Result<()> {
    file.file.read_exact_at(buf, at).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::corrupt(&file.path, at, "record extends past the end of the file")
        } else {
            Error::io(format!("reading {} at offset {at}", file.path.display()), e)
        }
    })
}

/// Verifies that `buf` (header + value) is an intact put record of `id`.
pub(crate) fn check_record(file: &DataFile, at: u64, id: u32, buf: &[u8]) -> Result<()> {
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

/// Reads the version at `p`: its value and the link to the one before
/// (`SAME_FILE` resolved to `p.file`).
pub(crate) fn read_version(file: &DataFile, p: Pos, id: u32) -> Result<(Vec<u8>, Option<Pos>)> {
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
    Ok((buf, header.prev.map(|q| q.resolve(p.file))))
}
