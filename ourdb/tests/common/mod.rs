//! What several OurDB test files read straight off the disk, with the
//! layout of ARCHITECTURE.md ("OurDB on disk").
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The data files of `dir`, in order.
pub fn data_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "odb"))
        .collect();
    v.sort();
    v
}

/// The last data file of `dir`.
pub fn last_data_file(dir: &Path) -> PathBuf {
    data_files(dir).pop().expect("a data file")
}

/// Offset and payload length of each frame of a data file (32-byte header;
/// magic "ODBF", payload length u32, crc u32, payload), up to the first that
/// does not start with the magic. A payload of 8 bytes is a frame without
/// ops: a sync marker.
pub fn frames(path: &Path) -> Vec<(u64, u64)> {
    let bytes = std::fs::read(path).unwrap();
    let mut at = 32;
    let mut out = Vec::new();
    while at + 12 <= bytes.len() && &bytes[at..at + 4] == b"ODBF" {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        out.push((at as u64, len as u64));
        at += 12 + len;
    }
    out
}
