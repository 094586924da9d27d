//! Plain counters of an open database, for whoever watches it (the
//! orchestrator's metrics): atomics bumped by the commit path, read without
//! a lock. No metrics library here: `ourdb` stays a leaf.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What a database did since it was opened, and how large it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Live records.
    pub live_records: u64,
    /// Bytes of its data files holding headers and frames (preallocated
    /// zeros not counted).
    pub file_bytes: u64,
    /// Commits written since it was opened (empty batches not counted).
    pub commits: u64,
    /// fsyncs (`fdatasync` or `fsync`) of the file commits are written to
    /// since it was opened: a commit's or a group's, the one a checkpoint
    /// makes before it covers the commits, a full file's as the next one
    /// starts, and a preallocation's. The fsyncs of a checkpoint's own file,
    /// of a compaction's copy and of the directory are not counted.
    pub fsyncs: u64,
    /// Time spent in those fsyncs.
    pub fsync_time: Duration,
    /// Whether open started from the checkpoint (false: no usable
    /// checkpoint, every data file was scanned; the reason is logged at warn).
    pub opened_from_checkpoint: bool,
    /// Bytes of frames open scanned (those after the checkpoint's end, or all).
    pub open_scanned_bytes: u64,
    /// Checkpoints written since it was opened.
    pub checkpoints: u64,
    /// Compactions finished since it was opened.
    pub compactions: u64,
    /// Longest time a compaction held the writer lock (commits waited at
    /// most this long for it).
    pub max_compaction_pause: Duration,
}

/// The atomics behind [`Stats`], kept by the store.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    file_bytes: AtomicU64,
    commits: AtomicU64,
    fsyncs: AtomicU64,
    fsync_nanos: AtomicU64,
    opened_from_checkpoint: AtomicU64,
    open_scanned_bytes: AtomicU64,
    checkpoints: AtomicU64,
    compactions: AtomicU64,
    max_pause_nanos: AtomicU64,
}

impl Counters {
    /// Counters of a store whose files hold `file_bytes` at open.
    pub(crate) fn opened(file_bytes: u64, from_checkpoint: bool, scanned: u64) -> Counters {
        let counters = Counters::default();
        counters.file_bytes.store(file_bytes, Ordering::Relaxed);
        counters
            .opened_from_checkpoint
            .store(u64::from(from_checkpoint), Ordering::Relaxed);
        counters
            .open_scanned_bytes
            .store(scanned, Ordering::Relaxed);
        counters
    }

    /// Counts one checkpoint written.
    pub(crate) fn checkpointed(&self) {
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one compaction that left `file_bytes` and paused the writer for `pause`.
    pub(crate) fn compacted(&self, file_bytes: u64, pause: Duration) {
        self.compactions.fetch_add(1, Ordering::Relaxed);
        self.file_bytes.store(file_bytes, Ordering::Relaxed);
        let nanos = u64::try_from(pause.as_nanos()).unwrap_or(u64::MAX);
        self.max_pause_nanos.fetch_max(nanos, Ordering::Relaxed);
    }

    /// Counts one commit of `bytes` written.
    pub(crate) fn committed(&self, bytes: u64) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.file_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts `bytes` written outside a commit (a new file's header).
    pub(crate) fn grew(&self, bytes: u64) {
        self.file_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts one fsync that took `took`.
    pub(crate) fn synced(&self, took: Duration) {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.fsync_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The counters now, with `live_records` filled in by the caller.
    pub(crate) fn read(&self, live_records: u64) -> Stats {
        Stats {
            live_records,
            file_bytes: self.file_bytes.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
            fsync_time: Duration::from_nanos(self.fsync_nanos.load(Ordering::Relaxed)),
            opened_from_checkpoint: self.opened_from_checkpoint.load(Ordering::Relaxed) != 0,
            open_scanned_bytes: self.open_scanned_bytes.load(Ordering::Relaxed),
            checkpoints: self.checkpoints.load(Ordering::Relaxed),
            compactions: self.compactions.load(Ordering::Relaxed),
            max_compaction_pause: Duration::from_nanos(
                self.max_pause_nanos.load(Ordering::Relaxed),
            ),
        }
    }
}
