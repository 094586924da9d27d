//! The in-memory lookup table from id to the location of its live version.
//!
//! It is rebuilt from the data files on open and holds only live ids, so its
//! size follows the records stored, never a configured maximum.
//!
//! Layering: above `format` (it stores positions); below `cache`, `state`
//! and everything that reads or writes records.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::format::{NO_FILE, OP_HEADER_LEN, Pos};

/// Where the live version of an id is: its op record and value length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub file: u32,
    pub value_len: u32,
    pub offset: u64,
}

impl Loc {
    const VACANT: Loc = Loc {
        file: NO_FILE,
        value_len: 0,
        offset: 0,
    };

    pub(crate) fn pos(&self) -> Pos {
        Pos {
            file: self.file,
            offset: self.offset,
        }
    }
}

/// A multiplicative hasher: ids are already well spread integers, SipHash
/// would only cost time.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, i: u32) {
        self.0 = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Id → location. Incremental mode uses a dense vector (ids are 1..next_id),
/// key-value mode a hash map.
#[derive(Debug)]
pub(crate) enum Index {
    Dense { slots: Vec<Loc>, live: usize },
    Sparse(HashMap<u32, Loc, BuildHasherDefault<IdHasher>>),
}

impl Index {
    pub(crate) fn dense() -> Self {
        Index::Dense {
            slots: Vec::new(),
            live: 0,
        }
    }

    pub(crate) fn sparse() -> Self {
        Index::Sparse(HashMap::default())
    }

    pub(crate) fn get(&self, id: u32) -> Option<Loc> {
        match self {
            Index::Dense { slots, .. } => {
                let i = usize::try_from(id).ok()?.checked_sub(1)?;
                slots.get(i).copied().filter(|l| l.file != NO_FILE)
            }
            Index::Sparse(m) => m.get(&id).copied(),
        }
    }

    /// Sets `id`'s location; returns the one it replaces.
    pub(crate) fn insert(&mut self, id: u32, loc: Loc) -> Option<Loc> {
        match self {
            Index::Dense { slots, live } => {
                let i = (id as usize)
                    .checked_sub(1)
                    .expect("incremental ids start at 1");
                if i >= slots.len() {
                    slots.resize(i + 1, Loc::VACANT);
                }
                let old = std::mem::replace(&mut slots[i], loc);
                if old.file == NO_FILE {
                    *live += 1;
                    return None;
                }
                Some(old)
            }
            Index::Sparse(m) => m.insert(id, loc),
        }
    }

    /// Removes `id`; returns its location if it was live.
    pub(crate) fn remove(&mut self, id: u32) -> Option<Loc> {
        match self {
            Index::Dense { slots, live } => {
                let slot = (id as usize)
                    .checked_sub(1)
                    .and_then(|i| slots.get_mut(i))?;
                let old = std::mem::replace(slot, Loc::VACANT);
                if old.file == NO_FILE {
                    return None;
                }
                *live -= 1;
                Some(old)
            }
            Index::Sparse(m) => m.remove(&id),
        }
    }

    /// Sets (`Some`) or removes (`None`) `id`'s location, and returns the
    /// bytes of the data files this makes superseded: the op of the version
    /// it replaces (unless `keeps_all`: `Config::history` 0 keeps every
    /// version, so compaction can never reclaim it), and a delete's own op.
    /// Commits and open's scan count them alike for the compaction trigger.
    pub(crate) fn apply(&mut self, id: u32, loc: Option<Loc>, keeps_all: bool) -> u64 {
        let op = |l: Loc| OP_HEADER_LEN as u64 + u64::from(l.value_len);
        match loc {
            Some(loc) => self.insert(id, loc).filter(|_| !keeps_all).map_or(0, op),
            None => self.remove(id).map_or(0, op) + OP_HEADER_LEN as u64,
        }
    }

    /// Calls `f` with every live id and its location (dense: in id order).
    pub(crate) fn for_each(&self, mut f: impl FnMut(u32, Loc)) {
        match self {
            Index::Dense { slots, .. } => {
                for (i, l) in slots.iter().enumerate() {
                    if l.file != NO_FILE {
                        f(i as u32 + 1, *l);
                    }
                }
            }
            Index::Sparse(m) => m.iter().for_each(|(id, l)| f(*id, *l)),
        }
    }

    /// Sets the file of every live location to `file`.
    pub(crate) fn move_all_to(&mut self, file: u32) {
        match self {
            Index::Dense { slots, .. } => slots
                .iter_mut()
                .filter(|l| l.file != NO_FILE)
                .for_each(|l| l.file = file),
            Index::Sparse(m) => m.values_mut().for_each(|l| l.file = file),
        }
    }

    /// Appends the index to `out`: dense, every slot as `file u32 | value_len
    /// u32 | offset u64` (vacant: file `NO_FILE`); sparse, every live id as
    /// `id u32` and the same 16 bytes. Returns the entry count.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> u64 {
        let put = |out: &mut Vec<u8>, l: &Loc| {
            out.extend_from_slice(&l.file.to_le_bytes());
            out.extend_from_slice(&l.value_len.to_le_bytes());
            out.extend_from_slice(&l.offset.to_le_bytes());
        };
        match self {
            Index::Dense { slots, .. } => {
                out.reserve(slots.len() * 16);
                slots.iter().for_each(|l| put(out, l));
                slots.len() as u64
            }
            Index::Sparse(m) => {
                out.reserve(m.len() * 20);
                for (id, l) in m {
                    out.extend_from_slice(&id.to_le_bytes());
                    put(out, l);
                }
                m.len() as u64
            }
        }
    }

    /// Number of live ids.
    pub(crate) fn len(&self) -> usize {
        match self {
            Index::Dense { live, .. } => *live,
            Index::Sparse(m) => m.len(),
        }
    }
}

/// Rebuilds an index from what [`Index::encode`] wrote, fed in pieces of
/// whole entries (so a large checkpoint is decoded while it is read).
pub(crate) struct Decoder {
    index: Index,
    left: usize,
    bounds: Bounds,
}

/// Where the decoded locations lie, gathered while decoding so they can be
/// checked against the files without another pass over the index.
#[derive(Debug, Default)]
pub(crate) struct Bounds {
    /// Per data file: lowest offset, highest offset + op header + value.
    spans: HashMap<u32, (u64, u64), BuildHasherDefault<IdHasher>>,
    /// The span of the file noted last (entries come in runs of one file).
    last: Option<(u32, u64, u64)>,
    /// Lowest and highest live id.
    pub ids: Option<(u32, u32)>,
}

impl Bounds {
    fn note_id(&mut self, id: u32) {
        self.ids = Some(
            self.ids
                .map_or((id, id), |(lo, hi)| (lo.min(id), hi.max(id))),
        );
    }

    fn note(&mut self, l: &Loc) {
        let reach = l
            .offset
            .saturating_add(crate::format::OP_HEADER_LEN as u64 + u64::from(l.value_len));
        match &mut self.last {
            Some((f, lo, hi)) if *f == l.file => {
                *lo = (*lo).min(l.offset);
                *hi = (*hi).max(reach);
            }
            last => {
                if let Some((f, lo, hi)) = last.replace((l.file, l.offset, reach)) {
                    self.merge(f, lo, hi);
                }
            }
        }
    }

    fn merge(&mut self, file: u32, lo: u64, hi: u64) {
        let s = self.spans.entry(file).or_insert((lo, hi));
        s.0 = s.0.min(lo);
        s.1 = s.1.max(hi);
    }

    /// Per data file noted: (file, lowest offset, highest reach).
    pub(crate) fn spans(&self) -> Vec<(u32, u64, u64)> {
        let mut all = self.spans.clone();
        if let Some((f, lo, hi)) = self.last {
            let s = all.entry(f).or_insert((lo, hi));
            s.0 = s.0.min(lo);
            s.1 = s.1.max(hi);
        }
        all.into_iter().map(|(f, (lo, hi))| (f, lo, hi)).collect()
    }
}

impl Decoder {
    /// A decoder for `count` entries of the given layout; the caller has
    /// checked `count` against the bytes there are.
    pub(crate) fn new(dense: bool, count: usize) -> Decoder {
        let index = if dense {
            Index::Dense {
                slots: Vec::with_capacity(count),
                live: 0,
            }
        } else {
            Index::Sparse(HashMap::with_capacity_and_hasher(count, Default::default()))
        };
        Decoder {
            index,
            left: count,
            bounds: Bounds::default(),
        }
    }

    /// Bytes per entry of `dense` or sparse layout.
    pub(crate) fn entry_len(dense: bool) -> usize {
        if dense { 16 } else { 20 }
    }

    /// Decodes whole entries; false when `b` does not hold whole entries
    /// within the count, or a sparse entry is vacant.
    pub(crate) fn feed(&mut self, b: &[u8]) -> bool {
        let loc = |e: &[u8]| Loc {
            file: crate::format::le32(&e[0..4]),
            value_len: crate::format::le32(&e[4..8]),
            offset: crate::format::le64(&e[8..16]),
        };
        match &mut self.index {
            Index::Dense { slots, live } => {
                if b.len() % 16 != 0 || b.len() / 16 > self.left {
                    return false;
                }
                self.left -= b.len() / 16;
                let start = slots.len();
                slots.extend(b.chunks_exact(16).map(loc));
                // A second pass over what is still in cache: live count and
                // bounds, with the current file's span kept in registers.
                let mut cur = self.bounds.last.take();
                for l in &slots[start..] {
                    if l.file == NO_FILE {
                        continue;
                    }
                    *live += 1;
                    let reach = l.offset.saturating_add(
                        crate::format::OP_HEADER_LEN as u64 + u64::from(l.value_len),
                    );
                    match &mut cur {
                        Some((f, lo, hi)) if *f == l.file => {
                            *lo = (*lo).min(l.offset);
                            *hi = (*hi).max(reach);
                        }
                        cur => {
                            if let Some((f, lo, hi)) = cur.replace((l.file, l.offset, reach)) {
                                self.bounds.merge(f, lo, hi);
                            }
                        }
                    }
                }
                self.bounds.last = cur;
                // Dense ids run from 1 to the slot count.
                if let Some(last) = u32::try_from(slots.len()).ok().filter(|&n| n > 0) {
                    self.bounds.ids = Some((1, last));
                }
            }
            Index::Sparse(m) => {
                if b.len() % 20 != 0 || b.len() / 20 > self.left {
                    return false;
                }
                self.left -= b.len() / 20;
                for e in b.chunks_exact(20) {
                    let l = loc(&e[4..]);
                    if l.file == NO_FILE {
                        return false;
                    }
                    let id = crate::format::le32(&e[0..4]);
                    self.bounds.note(&l);
                    self.bounds.note_id(id);
                    m.insert(id, l);
                }
            }
        }
        true
    }

    /// The index and where its locations lie, once every entry was fed.
    pub(crate) fn finish(self) -> Option<(Index, Bounds)> {
        (self.left == 0).then_some((self.index, self.bounds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(n: u64) -> Loc {
        Loc {
            file: 0,
            value_len: 1,
            offset: n,
        }
    }

    #[test]
    fn both_layouts_agree_on_insert_get_remove() {
        for mut ix in [Index::dense(), Index::sparse()] {
            assert_eq!(ix.get(0), None);
            assert_eq!(ix.get(1), None);
            ix.insert(3, loc(30));
            ix.insert(1, loc(10));
            assert_eq!(ix.get(3), Some(loc(30)));
            assert_eq!(ix.get(2), None);
            assert_eq!(ix.len(), 2);
            ix.insert(3, loc(31));
            assert_eq!(ix.len(), 2);
            ix.remove(3);
            ix.remove(3);
            ix.remove(99);
            assert_eq!(ix.get(3), None);
            assert_eq!(ix.len(), 1);
            assert_eq!(ix.get(u32::MAX), None);
        }
    }

    #[test]
    fn both_layouts_round_trip_through_their_encoding() {
        for mut ix in [Index::dense(), Index::sparse()] {
            ix.insert(2, loc(20));
            ix.insert(7, loc(70));
            ix.remove(2);
            let dense = matches!(ix, Index::Dense { .. });
            let mut b = Vec::new();
            let n = ix.encode(&mut b) as usize;
            let mut d = Decoder::new(dense, n);
            let half = b.len() / Decoder::entry_len(dense) / 2 * Decoder::entry_len(dense);
            assert!(d.feed(&b[..half]) && d.feed(&b[half..]));
            let (back, bounds) = d.finish().expect("decodes");
            assert_eq!(bounds.ids, Some((if dense { 1 } else { 7 }, 7)));
            assert_eq!(bounds.spans(), vec![(0, 70, 70 + 25 + 1)]);
            assert_eq!(back.len(), 1);
            assert_eq!(back.get(7), Some(loc(70)));
            assert_eq!(back.get(2), None);
            let mut short = Decoder::new(dense, n + 1);
            assert!(short.feed(&b));
            assert!(short.finish().is_none());
            assert!(!Decoder::new(dense, n).feed(&b[1..]));
        }
    }
}
