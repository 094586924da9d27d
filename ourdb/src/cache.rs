//! A bounded cache of recently read values, so a warm `get` costs no syscall.
//!
//! Entries are keyed by id and carry the location they were read from; a
//! lookup hits only when that location is still the id's live one in the
//! index. So a write never has to invalidate anything: a stale entry simply
//! stops matching and is evicted in time. Memory grows with what is read, up
//! to `Config::cache_size`, and is zero for a database nobody reads.
//!
//! Layering: above `index` (entries carry a [`Loc`]); only `db` uses it.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::Mutex;

use crate::index::{IdHasher, Loc};

const SHARDS: usize = 16;
/// Rough bookkeeping cost of one entry, counted against the budget.
const ENTRY_OVERHEAD: usize = 64;

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<u32, (Loc, Box<[u8]>), BuildHasherDefault<IdHasher>>,
    /// Insertion order, for FIFO eviction. May hold ids already replaced.
    order: VecDeque<u32>,
    bytes: usize,
}

#[derive(Debug)]
pub(crate) struct ValueCache {
    shards: Vec<Mutex<Shard>>,
    shard_budget: usize,
    /// Values larger than this are not cached (they would flush the rest).
    max_entry: usize,
}

impl ValueCache {
    pub(crate) fn new(capacity: usize) -> Self {
        let shard_budget = capacity / SHARDS;
        ValueCache {
            shards: if capacity == 0 {
                Vec::new()
            } else {
                (0..SHARDS).map(|_| Mutex::default()).collect()
            },
            shard_budget,
            max_entry: (shard_budget / 8).min(64 << 10),
        }
    }

    fn shard(&self, id: u32) -> Option<std::sync::MutexGuard<'_, Shard>> {
        let s = self
            .shards
            .get((id.wrapping_mul(0x9E37_79B9) >> 28) as usize % SHARDS)?;
        // A panic elsewhere cannot leave a shard inconsistent in a way that
        // returns wrong data: entries are checked against the index.
        Some(s.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The cached value of `id` if it was read from `loc`.
    pub(crate) fn get(&self, id: u32, loc: Loc) -> Option<Vec<u8>> {
        let shard = self.shard(id)?;
        match shard.map.get(&id) {
            Some((l, v)) if *l == loc => Some(v.to_vec()),
            _ => None,
        }
    }

    pub(crate) fn insert(&self, id: u32, loc: Loc, value: &[u8]) {
        if value.len() > self.max_entry {
            return;
        }
        let Some(mut shard) = self.shard(id) else {
            return;
        };
        let cost = value.len() + ENTRY_OVERHEAD;
        if let Some((_, old)) = shard.map.insert(id, (loc, value.into())) {
            shard.bytes -= old.len() + ENTRY_OVERHEAD;
        } else {
            shard.order.push_back(id);
        }
        shard.bytes += cost;
        while shard.bytes > self.shard_budget {
            let Some(victim) = shard.order.pop_front() else {
                break;
            };
            if let Some((_, v)) = shard.map.remove(&victim) {
                shard.bytes -= v.len() + ENTRY_OVERHEAD;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(offset: u64) -> Loc {
        Loc {
            file: 0,
            value_len: 3,
            offset,
        }
    }

    #[test]
    fn hit_only_for_the_location_it_was_read_from() {
        let c = ValueCache::new(1 << 20);
        c.insert(5, loc(100), b"old");
        assert_eq!(c.get(5, loc(100)), Some(b"old".to_vec()));
        assert_eq!(
            c.get(5, loc(200)),
            None,
            "a newer version is not served from cache"
        );
        assert_eq!(c.get(6, loc(100)), None);
    }

    #[test]
    fn stays_within_its_budget_and_a_zero_budget_caches_nothing() {
        let c = ValueCache::new(SHARDS * 1000);
        for id in 0..10_000 {
            c.insert(id, loc(u64::from(id)), &[1u8; 100]);
        }
        for s in &c.shards {
            assert!(s.lock().unwrap().bytes <= 1000);
        }
        let none = ValueCache::new(0);
        none.insert(1, loc(1), b"x");
        assert_eq!(none.get(1, loc(1)), None);
    }
}
