//! [`WorkerStatus`]: the live state the status table reads.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the status table shows for a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerState {
    /// Not yet connected.
    Starting,
    /// Taking tasks.
    Running,
    /// Redis is unreachable; retrying.
    Reconnecting,
    /// Stopped after shutdown.
    Stopped,
    /// Stopped by a failure.
    Failed(String),
}

/// Live state of a worker for the status table. Shared with `Arc`.
#[derive(Debug)]
pub struct WorkerStatus {
    state: Mutex<WorkerState>,
    completed: AtomicU64,
    failed: AtomicU64,
}

impl Default for WorkerStatus {
    fn default() -> Self {
        WorkerStatus {
            state: Mutex::new(WorkerState::Starting),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }
}

impl WorkerStatus {
    /// The current state.
    pub fn state(&self) -> WorkerState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Tasks this worker completed / failed since it started.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.completed.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn set(&self, state: WorkerState) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }

    /// Sets `Running` unless already there (cheap on the hot path).
    pub(crate) fn set_running(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if *state != WorkerState::Running {
            *state = WorkerState::Running;
        }
    }

    pub(crate) fn count(&self, completed: bool) {
        let counter = if completed {
            &self.completed
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
