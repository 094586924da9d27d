//! The state an open database shares between its readers and its one writer:
//! the data files, the published index and next id, the writer's position,
//! and the locks that guard them.
//!
//! Layering: above `files` and `index`; below `commit` (which changes it)
//! and `db` (which builds it from what `recovery` finds, and reads it).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{
    Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard,
};

use crate::Config;
use crate::checkpoint::Covered;
use crate::error::{Error, Result};
use crate::files::DataFile;
use crate::index::Index;
use crate::stats::Counters;

/// What readers see; replaced under the write lock only after a commit's
/// bytes are written (and synced in `Sync` mode).
#[derive(Debug)]
pub(crate) struct State {
    pub index: Index,
    pub next_id: u32,
    /// The data files, numbered from `first_file`.
    pub files: Vec<Arc<DataFile>>,
    pub first_file: u32,
    /// Position just past the last published frame: `index` and `next_id`
    /// hold exactly the frames before it.
    pub end: Covered,
}

impl State {
    /// Data file number `n`, when it is one of the current files.
    pub(crate) fn file(&self, n: u32) -> Option<&Arc<DataFile>> {
        self.files.get(n.checked_sub(self.first_file)? as usize)
    }
}

/// The compaction trigger's count of superseded bytes ([`Wake::superseded`]),
/// or not known yet.
#[derive(Debug)]
pub(crate) struct Superseded(AtomicU64);

impl Superseded {
    const UNKNOWN: u64 = u64::MAX;

    fn new(known: Option<u64>) -> Superseded {
        Superseded(AtomicU64::new(
            known.map_or(Self::UNKNOWN, |n| n.min(Self::UNKNOWN - 1)),
        ))
    }

    /// The count, when known.
    pub(crate) fn get(&self) -> Option<u64> {
        let n = self.0.load(Ordering::Relaxed);
        (n != Self::UNKNOWN).then_some(n)
    }

    /// Adds what a commit superseded (nothing while the count is not known).
    pub(crate) fn add(&self, n: u64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                (s != Self::UNKNOWN).then(|| s.saturating_add(n).min(Self::UNKNOWN - 1))
            });
    }

    /// The count, set from `estimate` first when it is not known.
    pub(crate) fn get_or_estimate(&self, estimate: impl FnOnce() -> u64) -> u64 {
        if let Some(n) = self.get() {
            return n;
        }
        let n = estimate().min(Self::UNKNOWN - 1);
        let _ = self
            .0
            .compare_exchange(Self::UNKNOWN, n, Ordering::Relaxed, Ordering::Relaxed);
        self.get().unwrap_or(n)
    }

    /// Takes off what a compaction reclaimed: the count when it started
    /// (`None`: not known then, so nothing of the old count is left).
    pub(crate) fn reclaimed(&self, at_start: Option<u64>) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| match at_start {
                Some(start) if s != Self::UNKNOWN => Some(s.saturating_sub(start)),
                _ => Some(0),
            });
    }
}

impl Default for Superseded {
    fn default() -> Superseded {
        Superseded::new(None)
    }
}

/// Wakes the background worker (checkpoints, compaction) and tells it to stop.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    /// Bytes committed since the worker last looked.
    pub pending: AtomicU64,
    /// Bytes in the data files of versions a later commit replaced or
    /// deleted, and of deletes, since the last compaction started: what the
    /// next one could reclaim at most (it keeps `Config::history` versions).
    /// Commits add to it; open resumes it from the checkpoint (0 for a new
    /// store), or else the first look after open estimates it from the index.
    pub superseded: Superseded,
    pub stop: AtomicBool,
    flag: Mutex<bool>,
    cond: Condvar,
}

impl Wake {
    /// A wake whose `superseded` count starts at `known`, or (`None`) is
    /// left for the background worker's first look to estimate.
    pub(crate) fn resuming(known: Option<u64>) -> Wake {
        Wake {
            superseded: Superseded::new(known),
            ..Wake::default()
        }
    }

    /// Counts `bytes` committed; wakes the worker every `every` bytes (0: never).
    pub(crate) fn committed(&self, bytes: u64, every: u64) {
        let before = self.pending.fetch_add(bytes, Ordering::Relaxed);
        if every > 0 && before < every && before + bytes >= every {
            self.ring();
        }
    }

    pub(crate) fn ring(&self) {
        *self.flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cond.notify_all();
    }

    /// Waits until rung; returns false once stop is asked for.
    pub(crate) fn wait(&self) -> bool {
        let mut rung = self.flag.lock().unwrap_or_else(|e| e.into_inner());
        while !*rung && !self.stopping() {
            rung = self.cond.wait(rung).unwrap_or_else(|e| e.into_inner());
        }
        *rung = false;
        !self.stopping()
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// The single writer's position. Held for the whole of a commit.
#[derive(Debug)]
pub(crate) struct Writer {
    pub file_no: u32,
    /// Where the next frame goes in the current data file.
    pub offset: u64,
    /// Length of the current data file, including zeroed space preallocated
    /// past `offset`.
    pub allocated: u64,
    /// Whether the current file's header says its writer writes sync
    /// markers (`format`): then each fsync of commits is followed by one.
    pub marks: bool,
    /// A commit frame was written since the last sync marker.
    pub unmarked: bool,
    /// When a commit without an fsync last found the writer's file linked.
    pub link_checked: Option<std::time::Instant>,
}

/// An open database's directory, configuration and guarded state: what the
/// commit path needs, without the read cache or the directory lock.
#[derive(Debug)]
pub(crate) struct Store {
    pub dir: PathBuf,
    pub config: Config,
    pub state: RwLock<State>,
    pub writer: Mutex<Writer>,
    /// What the commit path counts (see [`crate::Stats`]).
    pub counters: Counters,
    pub wake: Wake,
    /// Held while a checkpoint is taken and written, so they land in order;
    /// holds the first file and end of the last one written.
    pub checkpointing: Mutex<Option<(u32, Covered)>>,
    /// Held for a whole compaction: one at a time.
    pub compacting: Mutex<()>,
    /// Commits' turns while a compaction copies in slices.
    pub gate: crate::gate::Gate,
    /// The first write or fsync failure that left what is on disk unknown:
    /// once set, this handle refuses every write ([`Error::Poisoned`]).
    pub failure: OnceLock<String>,
}

impl Store {
    pub(crate) fn read_state(&self) -> RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` half-updated in
        // a way readers could observe wrongly: it is replaced field by field
        // from a fully validated plan. So poisoning is ignored.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn lock_checkpointing(&self) -> MutexGuard<'_, Option<(u32, Covered)>> {
        self.checkpointing.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn lock_compacting(&self) -> MutexGuard<'_, ()> {
        self.compacting.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The writer, or [`Error::Poisoned`] when an earlier write or fsync
    /// failed and this handle refuses to write.
    pub(crate) fn lock_unpoisoned_writer(&self) -> Result<MutexGuard<'_, Writer>> {
        let w = self.lock_writer();
        if let Some(failure) = self.failure.get() {
            return Err(Error::Poisoned {
                dir: self.dir.clone(),
                failure: failure.clone(),
            });
        }
        Ok(w)
    }

    /// The writer for a commit, after the commit's turn at the gate (see
    /// `gate`: a compaction copying in slices lets one commit go per gap).
    pub(crate) fn lock_writer_to_commit(&self) -> Result<MutexGuard<'_, Writer>> {
        self.gate.enter();
        self.lock_unpoisoned_writer()
    }

    /// Makes this handle refuse every later write: after `failure`, what is
    /// on disk is unknown. The first failure is kept ([`Store::failure`])
    /// and logged at error level; a later one changes nothing.
    pub(crate) fn poison(&self, failure: impl std::fmt::Display) {
        if self.failure.set(failure.to_string()).is_ok() {
            log::error!(
                "database {} refuses every write from now on, after a write failure that \
                 leaves what is on disk unknown: {failure}; restart the program that holds \
                 it to reopen it",
                self.dir.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::thread::ThreadId;

    use crate::commit::tests::FAIL_SYNC;
    use crate::{Batch, Config, Error, OurDb};

    /// Every record logged at warn level and above, with the thread that
    /// logged it (tests of this binary may run side by side).
    struct Capture(Mutex<Vec<(ThreadId, log::Level, String)>>);

    impl log::Log for Capture {
        fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
            metadata.level() <= log::Level::Warn
        }
        fn log(&self, record: &log::Record<'_>) {
            if self.enabled(record.metadata()) {
                self.0.lock().expect("log lock").push((
                    std::thread::current().id(),
                    record.level(),
                    record.args().to_string(),
                ));
            }
        }
        fn flush(&self) {}
    }

    static LOG: Capture = Capture(Mutex::new(Vec::new()));

    /// What this thread logged at `level`.
    fn logged(level: log::Level) -> Vec<String> {
        let me = std::thread::current().id();
        LOG.0
            .lock()
            .expect("log lock")
            .iter()
            .filter(|(t, l, _)| *t == me && *l == level)
            .map(|(_, _, m)| m.clone())
            .collect()
    }

    /// Fails the fsyncs of this thread while `f` runs.
    fn with_failing_fsync<T>(f: impl FnOnce() -> T) -> T {
        FAIL_SYNC.with(|s| s.set(true));
        let out = f();
        FAIL_SYNC.with(|s| s.set(false));
        out
    }

    #[test]
    fn a_refusing_handle_names_its_first_failure_and_says_to_restart_the_program() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = OurDb::open(dir.path(), Config::default()).expect("open");
        db.insert(b"a").expect("insert");
        assert_eq!(db.write_failure(), None, "a healthy handle");

        let first = with_failing_fsync(|| db.insert(b"b")).expect_err("fsync fails");
        let data = dir.path().join("data-00000000.odb");
        let failure = db.write_failure().expect("the handle refuses writes now");
        assert_eq!(
            failure,
            format!("syncing {}: injected fsync failure", data.display())
        );
        assert_eq!(failure, first.to_string(), "the failure the caller saw");

        let err = db.insert(b"c").expect_err("refused");
        assert!(matches!(err, Error::Poisoned { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "database {} refuses writes after an earlier write failure ({failure}); \
                 restart the program that holds it to reopen it",
                dir.path().display()
            )
        );
        // A later failure (a checkpoint's fsync) leaves the first in place.
        let later = with_failing_fsync(|| db.checkpoint()).expect_err("its fsync fails");
        assert!(matches!(later, Error::Io { .. }), "{later:?}");
        assert_eq!(db.write_failure().as_deref(), Some(failure.as_str()));
        assert_eq!(db.get(1).expect("reads go on"), Some(b"a".to_vec()));

        drop(db);
        let db = OurDb::open(dir.path(), Config::default()).expect("reopen");
        assert_eq!(db.write_failure(), None, "a new handle takes writes");
        db.insert(b"d").expect("insert after reopen");
    }

    #[test]
    fn a_handle_that_starts_refusing_writes_logs_it_once_naming_the_directory_and_failure() {
        let _ = log::set_logger(&LOG);
        log::set_max_level(log::LevelFilter::Warn);
        let dir = tempfile::tempdir().expect("temp dir");
        let db = OurDb::open(dir.path(), Config::default()).expect("open");
        db.insert(b"a").expect("insert");
        assert_eq!(logged(log::Level::Error), Vec::<String>::new());

        with_failing_fsync(|| db.insert(b"b")).expect_err("fsync fails");
        db.insert(b"c").expect_err("refused");
        db.sync().expect_err("refused");
        with_failing_fsync(|| db.checkpoint()).expect_err("a second failure");

        let data = dir.path().join("data-00000000.odb");
        assert_eq!(
            logged(log::Level::Error),
            vec![format!(
                "database {} refuses every write from now on, after a write failure that \
                 leaves what is on disk unknown: syncing {}: injected fsync failure; restart \
                 the program that holds it to reopen it",
                dir.path().display(),
                data.display()
            )]
        );
    }

    /// A checkpoint covers only bytes that were synced before it was
    /// written (open refuses a data file shorter than that): after a failed
    /// fsync a second one may succeed over lost pages, so none is written.
    #[test]
    fn no_checkpoint_is_written_after_a_failed_fsync_so_none_covers_lost_writes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = OurDb::open(dir.path(), Config::default()).expect("open");
        let mut batch = Batch::new();
        batch.insert(b"never acknowledged as durable".to_vec());
        db.commit_unsynced(batch).expect("commit");
        with_failing_fsync(|| db.sync()).expect_err("its fsync fails");

        let err = db.checkpoint().expect_err("refused");
        assert!(matches!(err, Error::Poisoned { .. }), "{err:?}");
        assert!(
            !dir.path().join("checkpoint").exists(),
            "no checkpoint covers the unsynced commit"
        );
        db.close().expect_err("close syncs, and is refused");
        assert!(!dir.path().join("checkpoint").exists());
    }
}
