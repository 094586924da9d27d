//! Per-run state reached by the callbacks and `db::` functions registered on
//! the shared Rhai engine.
//!
//! The Rhai engine is built once per [`crate::CircleEngine`]; what changes per
//! run (deadline, cancel flag, captured output, the transaction) lives in a
//! thread-local slot installed for the duration of one run. `run` is
//! synchronous, so the thread evaluating a script is the thread that
//! installed its slot, and concurrent runs on other threads each see their own.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::txn::Txn;

/// Why a run was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The deadline passed.
    Timeout,
    /// The cancel flag was set.
    Cancelled,
}

impl Stop {
    /// The token handed to Rhai's `ErrorTerminated`.
    pub fn token(self) -> &'static str {
        match self {
            Stop::Timeout => TIMEOUT_TOKEN,
            Stop::Cancelled => CANCEL_TOKEN,
        }
    }
}

/// Termination tokens; unique enough that a script cannot produce them (a
/// script cannot raise `ErrorTerminated` at all).
pub const TIMEOUT_TOKEN: &str = "circles-engine:timeout";
/// See [`TIMEOUT_TOKEN`].
pub const CANCEL_TOKEN: &str = "circles-engine:cancelled";

/// The state of one run.
pub struct RunState {
    pub deadline: Instant,
    pub cancel: Arc<AtomicBool>,
    pub printed: String,
    pub printed_truncated: bool,
    pub max_printed: usize,
    pub txn: Txn,
}

impl RunState {
    /// Whether the run must stop now.
    pub fn should_stop(&self) -> Option<Stop> {
        if self.cancel.load(Ordering::Relaxed) {
            Some(Stop::Cancelled)
        } else if Instant::now() >= self.deadline {
            Some(Stop::Timeout)
        } else {
            None
        }
    }

    /// Appends one line of captured output, cutting it at the cap.
    pub fn capture(&mut self, line: &str) {
        if self.printed_truncated {
            return;
        }
        let room = self.max_printed.saturating_sub(self.printed.len());
        let needed = line.len() + 1;
        if needed <= room {
            self.printed.push_str(line);
            self.printed.push('\n');
        } else {
            let mut cut = room.min(line.len());
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            self.printed.push_str(&line[..cut]);
            self.printed_truncated = true;
        }
    }
}

thread_local! {
    static CURRENT: RefCell<Option<RunState>> = const { RefCell::new(None) };
}

/// Installs `state` for the current thread until the guard is dropped.
pub fn install(state: RunState) -> Installed {
    CURRENT.with(|c| {
        let previous = c.borrow_mut().replace(state);
        debug_assert!(previous.is_none(), "runs never nest on one thread");
    });
    Installed { _private: () }
}

/// Removes the run's state when dropped (also on panic).
pub struct Installed {
    _private: (),
}

impl Installed {
    /// Takes the state back out, ending the run.
    pub fn finish(self) -> RunState {
        let state = CURRENT
            .with(|c| c.borrow_mut().take())
            .expect("the state stays installed until finish");
        std::mem::forget(self);
        state
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = CURRENT.try_with(|c| c.borrow_mut().take());
    }
}

/// Runs `f` on the current run's state; `None` outside a run (a callback
/// invoked by someone else's use of the engine, which cannot happen).
pub fn with<R>(f: impl FnOnce(&mut RunState) -> R) -> Option<R> {
    CURRENT.with(|c| c.try_borrow_mut().ok()?.as_mut().map(f))
}
