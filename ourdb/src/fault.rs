//! Fault injection for the tests of the crates above OurDB (feature
//! `test-support`): the fsyncs of a store's commits fail while a
//! [`FailingSyncs`] for its directory lives. A disk cannot be made to fail
//! an fsync on demand, and a worker's test must see what its circle does
//! when one fails.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Directories whose data files' fsyncs fail.
static FAILING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

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

/// Whether an fsync of `file` is to fail.
pub(crate) fn sync_fails(file: &Path) -> bool {
    failing().iter().any(|dir| file.starts_with(dir))
}

fn failing() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    // A test that panicked holding the lock left a list that is still whole.
    FAILING.lock().unwrap_or_else(|e| e.into_inner())
}
