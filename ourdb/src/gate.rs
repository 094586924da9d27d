//! The turn commits take while a compaction copies its last frames under
//! the writer lock, one slice at a time: the lock is not fair, so without
//! the gate a writer committing in a loop takes it back again and again
//! while the compactor waits, and the compaction never ends (its copy grows
//! with everything the writer adds). While a compaction slices, each gap
//! between two slices lets one commit through; the others wait for the
//! next gap. A commit thus waits at most one slice, and the compaction
//! catches up with any writer.

use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct Turns {
    /// A compaction copies in slices.
    slicing: bool,
    /// Commits that may go before the compactor's next slice.
    passes: u32,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    turns: Mutex<Turns>,
    changed: Condvar,
}

impl Gate {
    fn turns(&self) -> MutexGuard<'_, Turns> {
        self.turns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A commit's turn: at once unless a compaction slices, else the pass
    /// of the next gap.
    pub(crate) fn enter(&self) {
        let mut turns = self.turns();
        while turns.slicing && turns.passes == 0 {
            turns = self.changed.wait(turns).unwrap_or_else(|e| e.into_inner());
        }
        if turns.slicing {
            turns.passes -= 1;
        }
    }

    /// The compactor starts slicing; commits wait for its gaps until the
    /// returned guard is dropped (the switch made, or the compaction given
    /// up).
    pub(crate) fn slicing(&self) -> Slicing<'_> {
        self.turns().slicing = true;
        Slicing(self)
    }
}

/// A compaction's slicing; see [`Gate::slicing`].
pub(crate) struct Slicing<'a>(&'a Gate);

impl Slicing<'_> {
    /// A gap between two slices: one commit may go.
    pub(crate) fn gap(&self) {
        self.0.turns().passes = 1;
        self.0.changed.notify_one();
    }
}

impl Drop for Slicing<'_> {
    fn drop(&mut self) {
        let mut turns = self.0.turns();
        turns.slicing = false;
        turns.passes = 0;
        drop(turns);
        self.0.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn while_slicing_each_gap_lets_one_commit_through() {
        let gate = Arc::new(Gate::default());
        gate.enter();
        let slicing = gate.slicing();
        let entered = Arc::new(AtomicU32::new(0));
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let (gate, entered) = (Arc::clone(&gate), Arc::clone(&entered));
                std::thread::spawn(move || {
                    gate.enter();
                    entered.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(entered.load(Ordering::SeqCst), 0);
        slicing.gap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while entered.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(entered.load(Ordering::SeqCst), 1, "one commit per gap");
        drop(slicing);
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(entered.load(Ordering::SeqCst), 3);
    }
}
