//! A small LRU cache of compiled scripts.
//!
//! Keyed by a hash of the engine settings' fingerprint and the script text;
//! the text itself is kept and compared, so a hash collision is a miss, never
//! the wrong program. Bounded by entry count and by total script bytes.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use rhai::AST;

/// Most compiled scripts kept per engine.
pub const MAX_ENTRIES: usize = 256;
/// Most script bytes kept per engine.
pub const MAX_BYTES: usize = 8 << 20;

struct Entry {
    key: u64,
    script: Box<str>,
    ast: AST,
    last_used: u64,
}

/// The keys are already hashes; the map uses them as they are.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The cache. Not locked itself: it lives inside the engine's run lock, which
/// every run holds anyway.
///
/// Entries live in a slab; the map takes a key to its slot. Invariant: `index`
/// holds exactly one `(entry.key, slot)` per entry of `entries`.
pub struct AstCache {
    fingerprint: u64,
    entries: Vec<Entry>,
    index: HashMap<u64, usize, BuildHasherDefault<KeyHasher>>,
    bytes: usize,
    clock: u64,
    /// Slot of the most recently used entry, a hint only (checked by text):
    /// a repeated script is found without hashing or a map lookup.
    last: usize,
}

impl AstCache {
    /// A cache for an engine whose compile-relevant settings hash to `fingerprint`.
    pub fn new(fingerprint: u64) -> Self {
        AstCache {
            fingerprint,
            entries: Vec::new(),
            index: HashMap::default(),
            bytes: 0,
            clock: 0,
            last: 0,
        }
    }

    /// A word-at-a-time multiplicative hash of the script, seeded with the
    /// fingerprint: a few ns for a short script, where SipHash costs a
    /// noticeable share of a trivial run.
    /// Collisions only cost a miss (the text is compared).
    fn key(&self, script: &str) -> u64 {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut h = self.fingerprint ^ (script.len() as u64).wrapping_mul(K);
        let chunks = script.as_bytes().chunks_exact(8);
        let tail = chunks.remainder();
        for chunk in chunks {
            let word = u64::from_le_bytes(chunk.try_into().expect("chunks_exact gives 8 bytes"));
            h = (h ^ word).wrapping_mul(K).rotate_left(29);
        }
        let mut last = [0u8; 8];
        last[..tail.len()].copy_from_slice(tail);
        h = (h ^ u64::from_le_bytes(last)).wrapping_mul(K);
        h ^ (h >> 32)
    }

    /// The compiled `script`, compiling and keeping it on a miss; the flag
    /// says whether it was compiled now. Borrowed, not cloned: the caller
    /// holds the engine's run lock (and so this cache) for the whole run.
    #[inline]
    pub fn get_or_compile<E>(
        &mut self,
        script: &str,
        compile: impl FnOnce() -> Result<AST, E>,
    ) -> Result<(&AST, bool), E> {
        let (slot, compiled) = match self.entries.get(self.last) {
            Some(e) if *e.script == *script => (self.last, false),
            _ => self.find_or_compile(script, compile)?,
        };
        self.clock += 1;
        self.last = slot;
        let entry = &mut self.entries[slot];
        entry.last_used = self.clock;
        Ok((&entry.ast, compiled))
    }

    /// The slot of `script` found by its key, or of its new entry once
    /// compiled; the flag says whether it was compiled now. Out of line: the
    /// hot path of a repeated script stays small.
    #[inline(never)]
    fn find_or_compile<E>(
        &mut self,
        script: &str,
        compile: impl FnOnce() -> Result<AST, E>,
    ) -> Result<(usize, bool), E> {
        let key = self.key(script);
        if let Some(&slot) = self.index.get(&key)
            && *self.entries[slot].script == *script
        {
            return Ok((slot, false));
        }
        let ast = compile()?;
        Ok((self.insert(key, script, ast), true))
    }

    /// Keeps `script` under `key` (replacing a colliding entry), evicting least
    /// recently used entries to stay within bounds (a script larger than the
    /// byte bound is kept alone); returns its slot.
    fn insert(&mut self, key: u64, script: &str, ast: AST) -> usize {
        if let Some(&slot) = self.index.get(&key) {
            self.remove(slot);
        }
        while !self.entries.is_empty()
            && (self.entries.len() >= MAX_ENTRIES || self.bytes + script.len() > MAX_BYTES)
        {
            let oldest = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(slot, _)| slot)
                .expect("the slab is not empty");
            self.remove(oldest);
        }
        self.bytes += script.len();
        let slot = self.entries.len();
        self.entries.push(Entry {
            key,
            script: script.into(),
            ast,
            last_used: 0,
        });
        self.index.insert(key, slot);
        slot
    }

    /// Drops the entry in `slot`; the last entry moves into its place.
    fn remove(&mut self, slot: usize) {
        let old = self.entries.swap_remove(slot);
        self.index.remove(&old.key);
        self.bytes -= old.script.len();
        if let Some(moved) = self.entries.get(slot) {
            self.index.insert(moved.key, slot);
        }
    }

    /// Number of cached scripts.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(script: &str) -> Result<AST, ()> {
        rhai::Engine::new_raw().compile(script).map_err(|_| ())
    }

    #[test]
    fn a_repeated_script_is_compiled_once() {
        let mut cache = AstCache::new(1);
        let (_, compiled) = cache
            .get_or_compile("1 + 1", || compile("1 + 1"))
            .expect("ok");
        assert!(compiled);
        let (_, compiled) = cache
            .get_or_compile("1 + 1", || -> Result<AST, ()> {
                panic!("must not compile again")
            })
            .expect("ok");
        assert!(!compiled);
    }

    #[test]
    fn different_settings_never_share_a_key() {
        let a = AstCache::new(1);
        let b = AstCache::new(2);
        for script in ["", "1", "let x = 1; x + 2", &"y".repeat(1000)] {
            assert_ne!(a.key(script), b.key(script), "{script}");
        }
    }

    #[test]
    fn least_recently_used_script_is_evicted_at_the_entry_bound() {
        let mut cache = AstCache::new(7);
        for i in 0..MAX_ENTRIES {
            let s = format!("{i}");
            cache.get_or_compile(&s, || compile(&s)).expect("ok");
        }
        // Touch "0" so "1" becomes the oldest.
        cache.get_or_compile("0", || compile("0")).expect("ok");
        cache.get_or_compile("new", || compile("42")).expect("ok");
        assert_eq!(cache.len(), MAX_ENTRIES);
        let (_, compiled) = cache.get_or_compile("0", || compile("0")).expect("ok");
        assert!(!compiled, "recently used entry kept");
        let (_, compiled) = cache.get_or_compile("1", || compile("1")).expect("ok");
        assert!(compiled, "oldest entry evicted");
    }

    #[test]
    fn every_kept_script_is_found_after_evictions() {
        let mut cache = AstCache::new(3);
        for i in 0..3 * MAX_ENTRIES {
            let s = format!("{i}");
            cache.get_or_compile(&s, || compile(&s)).expect("ok");
            // Keep older scripts in use so evictions empty slots mid-slab.
            let t = format!("{}", i / 2);
            cache.get_or_compile(&t, || compile(&t)).expect("ok");
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
        assert_eq!(cache.index.len(), MAX_ENTRIES);
        let bytes: usize = cache.entries.iter().map(|e| e.script.len()).sum();
        assert_eq!(cache.bytes, bytes);
        let kept: Vec<String> = cache.entries.iter().map(|e| e.script.to_string()).collect();
        for s in kept {
            let (_, compiled) = cache
                .get_or_compile(&s, || -> Result<AST, ()> { panic!("{s} is cached") })
                .expect("ok");
            assert!(!compiled);
        }
    }

    #[test]
    fn a_failed_compilation_is_not_kept() {
        let mut cache = AstCache::new(0);
        assert!(
            cache
                .get_or_compile("let = ;", || compile("let = ;"))
                .is_err()
        );
        assert_eq!(cache.len(), 0);
    }
}
