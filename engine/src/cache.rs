//! A small LRU cache of compiled scripts.
//!
//! Keyed by a hash of the engine settings' fingerprint and the script text;
//! the text itself is kept and compared, so a hash collision is a miss, never
//! the wrong program. Bounded by entry count and by total script bytes.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use rhai::AST;

/// Most compiled scripts kept per engine.
pub const MAX_ENTRIES: usize = 256;
/// Most script bytes kept per engine.
pub const MAX_BYTES: usize = 8 << 20;

struct Entry {
    script: Box<str>,
    ast: Arc<AST>,
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

#[derive(Default)]
struct Inner {
    entries: HashMap<u64, Entry, BuildHasherDefault<KeyHasher>>,
    bytes: usize,
    clock: u64,
}

/// The cache. `Send + Sync`.
pub struct AstCache {
    fingerprint: u64,
    inner: Mutex<Inner>,
}

impl AstCache {
    /// A cache for an engine whose compile-relevant settings hash to `fingerprint`.
    pub fn new(fingerprint: u64) -> Self {
        AstCache {
            fingerprint,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// A word-at-a-time multiplicative hash of the script, seeded with the
    /// fingerprint: a few ns for a short script, where SipHash costs a noticeable share of a trivial run.
    /// Collisions only cost a miss (the text is compared).
    fn key(&self, script: &str) -> u64 {
        let mut h = self.fingerprint ^ 0xcbf2_9ce4_8422_2325;
        for chunk in script.as_bytes().chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            h ^= u64::from_le_bytes(word);
            h = h.wrapping_mul(0x0000_0100_0000_01b3).rotate_left(23);
        }
        h ^ script.len() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map inconsistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The compiled `script`, if cached.
    pub fn get(&self, script: &str) -> Option<Arc<AST>> {
        let key = self.key(script);
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        let entry = inner.entries.get_mut(&key)?;
        if &*entry.script != script {
            return None;
        }
        entry.last_used = now;
        Some(entry.ast.clone())
    }

    /// Keeps the compiled `script`, evicting the least recently used entries.
    pub fn put(&self, script: &str, ast: Arc<AST>) {
        if script.len() > MAX_BYTES {
            return;
        }
        let key = self.key(script);
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        if let Some(old) = inner.entries.remove(&key) {
            inner.bytes -= old.script.len();
        }
        while inner.entries.len() >= MAX_ENTRIES || inner.bytes + script.len() > MAX_BYTES {
            let Some((&oldest, _)) = inner.entries.iter().min_by_key(|(_, e)| e.last_used) else {
                break;
            };
            let old = inner
                .entries
                .remove(&oldest)
                .expect("the key was just found");
            inner.bytes -= old.script.len();
        }
        inner.bytes += script.len();
        inner.entries.insert(
            key,
            Entry {
                script: script.into(),
                ast,
                last_used: now,
            },
        );
    }

    /// Number of cached scripts.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }
}
