//! The background worker: one thread per open database that writes a
//! checkpoint every `Config::checkpoint_bytes` committed, and compacts
//! instead when compaction is due.
//!
//! Layering: above `compact` and `state`; `db` starts and stops it.
//!
//! Compaction is due when the data files hold at least
//! `Config::compaction_min_bytes` and at least a third of their bytes are
//! versions replaced or deleted since the last compaction started (at the
//! first look after open: everything but the live versions), so a third of
//! the files at most could go. Inserts replace nothing: a database that
//! only grows is never copied. The worker compacts until none is due. So
//! under updates of large values the files settle under 1.5 times what
//! compaction keeps (or `compaction_min_bytes`), and each byte committed is
//! copied about twice. A replaced version counts its own bytes only, not its
//! commit's header or the sync markers (compaction drops those too, but a
//! commit's header goes only once all its versions did): with values of
//! tens of bytes the files grow to about 2–2.4 times what compaction kept.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use crate::format::{FILE_HEADER_LEN, OP_HEADER_LEN};
use crate::state::Store;

/// Starts the worker of `store`, unless background work is turned off.
pub(crate) fn start(store: &Arc<Store>) -> Option<JoinHandle<()>> {
    if store.config.checkpoint_bytes == 0 {
        return None;
    }
    let store = Arc::clone(store);
    let spawned = std::thread::Builder::new()
        .name("ourdb-background".into())
        .stack_size(256 << 10)
        .spawn(move || run(&store));
    match spawned {
        Ok(h) => Some(h),
        Err(e) => {
            log::warn!("no background checkpoints or compaction: starting the thread failed: {e}");
            None
        }
    }
}

/// Asks the worker to stop and waits for it (a running compaction stops at
/// its next frame and leaves nothing behind).
pub(crate) fn stop(store: &Store, handle: Option<JoinHandle<()>>) {
    store.wake.stop.store(true, Ordering::Relaxed);
    store.wake.ring();
    if let Some(h) = handle {
        if h.join().is_err() {
            log::warn!("the background worker of {} panicked", store.dir.display());
        }
    }
}

fn run(store: &Store) {
    while store.wake.wait() {
        store.wake.pending.store(0, Ordering::Relaxed);
        // Compactions until none is due: commits that arrived during one
        // may have made the next due, and no commit may follow to ring.
        // One that fails (no room for its copy, a damaged old version)
        // still leaves the checkpoint to write: open time stays bounded.
        let compacted = (|| -> crate::error::Result<bool> {
            while compaction_due(store) {
                if !store.compact_now()? {
                    return Ok(false);
                }
            }
            Ok(true)
        })();
        let res = match compacted {
            Ok(false) => continue,
            Ok(true) => store.write_checkpoint().map(drop),
            Err(e) => {
                log::warn!(
                    "background compaction of {} failed: {e}",
                    store.dir.display()
                );
                store.write_checkpoint().map(drop)
            }
        };
        if let Err(e) = res {
            log::warn!("background work on {} failed: {e}", store.dir.display());
        }
    }
}

fn compaction_due(store: &Store) -> bool {
    let min = store.config.compaction_min_bytes;
    let bytes = store.counters.read(0).file_bytes;
    if min == 0 || bytes < min {
        return false;
    }
    let superseded = store.wake.superseded.get_or_estimate(|| {
        // Every version but the live ones.
        let st = store.read_state();
        let mut live = FILE_HEADER_LEN;
        st.index
            .for_each(|_, l| live += OP_HEADER_LEN as u64 + u64::from(l.value_len));
        bytes.saturating_sub(live)
    });
    superseded.saturating_mul(3) >= bytes
}
