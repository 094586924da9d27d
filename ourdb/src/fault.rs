//! Fault injection for the tests of the crates above OurDB (feature
//! `test-support`): the fsyncs of a store's commits fail while a
//! [`FailingSyncs`] for its directory lives, and a test's function runs
//! after each of them while a [`WatchedSyncs`] lives. A disk cannot be made
//! to fail an fsync on demand, and a worker's test must see what its circle
//! does when one fails, and what it has reported by the time one is made.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Directories whose data files' fsyncs fail.
static FAILING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A function run after each fsync of a data file under a directory.
type Watcher = (PathBuf, Arc<dyn Fn() + Send + Sync>);

/// Directories whose data files' fsyncs are watched, with their watchers.
static WATCHED: Mutex<Vec<Watcher>> = Mutex::new(Vec::new());

/// While this lives, every commit fsync of a data file under its directory
/// fails with an I/O error (`injected fsync failure`).
#[must_use = "the fsyncs fail only while the guard lives"]
pub struct FailingSyncs(PathBuf);

/// Makes the commit fsyncs of the store in `dir` fail until the guard is
/// dropped.
pub fn fail_syncs_under(dir: &Path) -> FailingSyncs {
    let dir = dir.to_path_buf();
    failing().push(dir.clone());
    FailingSyncs(dir)
}

impl Drop for FailingSyncs {
    fn drop(&mut self) {
        let mut failing = failing();
        if let Some(at) = failing.iter().position(|d| *d == self.0) {
            failing.remove(at);
        }
    }
}

/// While this lives, its function runs after every fsync of a data file
/// under its directory that [`crate::Stats::fsyncs`] counts (failed ones
/// too), on the thread that made it, once the fsync has returned and been
/// counted: whoever waits for the fsync goes on only once the function has
/// returned.
#[must_use = "the fsyncs are watched only while the guard lives"]
pub struct WatchedSyncs(Arc<dyn Fn() + Send + Sync>);

/// Runs `after` after each counted fsync of the store in `dir` until the
/// guard is dropped.
pub fn after_syncs_under(dir: &Path, after: impl Fn() + Send + Sync + 'static) -> WatchedSyncs {
    let after: Arc<dyn Fn() + Send + Sync> = Arc::new(after);
    watched().push((dir.to_path_buf(), Arc::clone(&after)));
    WatchedSyncs(after)
}

impl Drop for WatchedSyncs {
    fn drop(&mut self) {
        watched().retain(|(_, f)| !Arc::ptr_eq(f, &self.0));
    }
}

/// Whether an fsync of `file` is to fail.
pub(crate) fn sync_fails(file: &Path) -> bool {
    failing().iter().any(|dir| file.starts_with(dir))
}

/// Runs the watchers of `file`'s directory (outside the lock: a watcher may
/// take its time, and other stores' fsyncs do not wait for it).
pub(crate) fn after_sync(file: &Path) {
    let due: Vec<Arc<dyn Fn() + Send + Sync>> = watched()
        .iter()
        .filter(|(dir, _)| file.starts_with(dir))
        .map(|(_, f)| Arc::clone(f))
        .collect();
    for f in due {
        f();
    }
}

fn failing() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    // A test that panicked holding the lock left a list that is still whole.
    FAILING.lock().unwrap_or_else(|e| e.into_inner())
}

fn watched() -> std::sync::MutexGuard<'static, Vec<Watcher>> {
    // As for `failing`: a panic never leaves the list half changed.
    WATCHED.lock().unwrap_or_else(|e| e.into_inner())
}
