//! The in-memory lookup table from id to the location of its live version.
//!
//! It is rebuilt from the data files on open and holds only live ids, so its
//! size follows the records stored, never a configured maximum.
//!
//! Layering: above `format` (it stores positions); below `cache`, `state`
//! and everything that reads or writes records.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::format::{NO_FILE, Pos};

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

    pub(crate) fn insert(&mut self, id: u32, loc: Loc) {
        match self {
            Index::Dense { slots, live } => {
                let i = (id as usize)
                    .checked_sub(1)
                    .expect("incremental ids start at 1");
                if i >= slots.len() {
                    slots.resize(i + 1, Loc::VACANT);
                }
                if slots[i].file == NO_FILE {
                    *live += 1;
                }
                slots[i] = loc;
            }
            Index::Sparse(m) => {
                m.insert(id, loc);
            }
        }
    }

    pub(crate) fn remove(&mut self, id: u32) {
        match self {
            Index::Dense { slots, live } => {
                if let Some(slot) = (id as usize).checked_sub(1).and_then(|i| slots.get_mut(i)) {
                    if slot.file != NO_FILE {
                        *live -= 1;
                    }
                    *slot = Loc::VACANT;
                }
            }
            Index::Sparse(m) => {
                m.remove(&id);
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
}
