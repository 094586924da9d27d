//! Per-run state reached by the callbacks and `db::` functions registered on
//! the shared Rhai engine.
//!
//! The Rhai engine is built once per [`crate::CircleEngine`]; what changes per
//! run (deadline, cancel flag, captured output, the transaction) lives in a
//! thread-local slot installed for the duration of one run. `run` is
//! synchronous, so the thread evaluating a script is the thread that
//! installed its slot, and concurrent runs on other threads each see their own.

use crate::clock::{self, Instant};
use crate::txn::Txn;
use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
/// See [`TIMEOUT_TOKEN`]: the run's operation budget is spent.
pub const OPERATIONS_TOKEN: &str = "circles-engine:operations";
/// See [`TIMEOUT_TOKEN`]: a value nested too deeply was printed or compared.
pub const NESTING_TOKEN: &str = "circles-engine:nesting";

/// The deadline and cancel flag are checked every this many operations (a
/// power of two): often enough to stop within microseconds, rarely enough to
/// cost nothing.
pub const CHECK_EVERY_OPS: u64 = 256;

/// The state of one run. One per thread, reused from run to run so a run
/// allocates nothing it does not need.
pub struct RunState {
    active: bool,
    pub deadline: Instant,
    cancel: Option<Arc<AtomicBool>>,
    pub printed: String,
    pub printed_truncated: bool,
    max_printed: usize,
    pub txn: Txn,
}

impl RunState {
    fn idle() -> Self {
        RunState {
            active: false,
            deadline: clock::now(),
            cancel: None,
            printed: String::new(),
            printed_truncated: false,
            max_printed: 0,
            txn: Txn::new(0),
        }
    }

    /// Whether the run must stop now.
    pub fn should_stop(&self) -> Option<Stop> {
        if self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            Some(Stop::Cancelled)
        } else if clock::now() >= self.deadline {
            Some(Stop::Timeout)
        } else {
            None
        }
    }

    /// Appends one line of captured output, cutting it at the cap. The cut is
    /// visible in the text itself: it ends with the line
    /// `[output truncated at N bytes]`, kept within the cap (unless the cap
    /// is smaller than that line).
    pub fn capture(&mut self, line: &str) {
        if self.printed_truncated {
            return;
        }
        let room = self.max_printed.saturating_sub(self.printed.len());
        let needed = line.len() + 1;
        if needed <= room {
            self.printed.push_str(line);
            self.printed.push('\n');
            return;
        }
        let marker = format!("[output truncated at {} bytes]\n", self.max_printed);
        // Room for the text, a line break before the marker, and the marker.
        let target = self.max_printed.saturating_sub(marker.len() + 1);
        if self.printed.len() > target {
            let mut cut = target;
            while !self.printed.is_char_boundary(cut) {
                cut -= 1;
            }
            self.printed.truncate(cut);
        } else {
            let mut cut = (target - self.printed.len()).min(line.len());
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            self.printed.push_str(&line[..cut]);
        }
        if !self.printed.is_empty() && !self.printed.ends_with('\n') {
            self.printed.push('\n');
        }
        self.printed.push_str(&marker);
        self.printed_truncated = true;
    }

    /// Ends the run: drops its cancel flag, output and any uncommitted writes.
    fn clear(&mut self) {
        MAX_OPS.set(u64::MAX);
        STOPPED.set(None);
        self.active = false;
        self.cancel = None;
        if !self.printed.is_empty() {
            self.printed = String::new();
        }
        self.txn.reset(0);
    }
}

thread_local! {
    static CURRENT: RefCell<RunState> = RefCell::new(RunState::idle());
    /// Operations of the current run, counted by [`tick`]. Kept apart from
    /// Rhai's own count, which a closure called from a native function
    /// (`map`, `filter`, `sort`, ...) runs on a copy that is thrown away when
    /// the closure returns: Rhai's count neither accumulates across such
    /// calls nor reaches a multiple of [`CHECK_EVERY_OPS`] in a short closure.
    static OPS: Cell<u64> = const { Cell::new(0) };
    /// The run's operation limit (`u64::MAX` when unbounded or idle).
    static MAX_OPS: Cell<u64> = const { Cell::new(u64::MAX) };
    /// Why the current run was stopped, once it was. Sticky: some native
    /// functions swallow a closure's error (`sort` treats a failed comparison
    /// as an ordering), so every later operation fails again until the script
    /// is out of them.
    static STOPPED: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// Marks the current run to fail with `token` at its next operation (or at
/// its end, see [`stopped`]), for functions that cannot fail themselves.
pub fn stop_with(token: &'static str) {
    if STOPPED.get().is_none() {
        STOPPED.set(Some(token));
    }
}

/// Why the current run was marked to stop, if it was.
pub fn stopped() -> Option<&'static str> {
    STOPPED.get()
}

/// Counts one operation of the current run (called by Rhai's progress
/// callback for every operation, closures included) and says why the run
/// must stop: its operation budget is spent, or, every [`CHECK_EVERY_OPS`]
/// operations, its deadline passed or it was cancelled.
pub fn tick() -> Option<&'static str> {
    let n = OPS.get().wrapping_add(1);
    OPS.set(n);
    if n > MAX_OPS.get() {
        return Some(OPERATIONS_TOKEN);
    }
    if n % CHECK_EVERY_OPS != 0 {
        return STOPPED.get();
    }
    let stop = with(|state| state.should_stop()).flatten().map(Stop::token);
    if let Some(token) = stop {
        stop_with(token);
    }
    STOPPED.get()
}

/// Activates this thread's run state until the guard is dropped.
pub fn install(
    deadline: Instant,
    cancel: &Arc<AtomicBool>,
    max_printed: usize,
    max_writes: usize,
    max_operations: u64,
) -> Installed {
    OPS.set(0);
    STOPPED.set(None);
    MAX_OPS.set(if max_operations == 0 {
        u64::MAX
    } else {
        max_operations
    });
    CURRENT.with(|c| {
        let mut s = c.borrow_mut();
        debug_assert!(!s.active, "runs never nest on one thread");
        s.active = true;
        s.deadline = deadline;
        s.cancel = Some(cancel.clone());
        s.printed_truncated = false;
        s.max_printed = max_printed;
        s.txn.reset(max_writes);
    });
    Installed { _private: () }
}

/// Deactivates the run's state when dropped (also on panic), discarding its
/// writes.
pub struct Installed {
    _private: (),
}

impl Installed {
    /// Runs `f` on the active state (for the commit, after evaluation), then
    /// ends the run.
    pub fn finish<R>(self, f: impl FnOnce(&mut RunState) -> R) -> R {
        let result = CURRENT.with(|c| {
            let mut s = c.borrow_mut();
            let result = f(&mut s);
            s.clear();
            result
        });
        std::mem::forget(self);
        result
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = CURRENT.try_with(|c| {
            if let Ok(mut s) = c.try_borrow_mut() {
                s.clear();
            }
        });
    }
}

/// Runs `f` on the current run's state; `None` outside a run.
pub fn with<R>(f: impl FnOnce(&mut RunState) -> R) -> Option<R> {
    CURRENT.with(|c| {
        let mut s = c.try_borrow_mut().ok()?;
        s.active.then(|| f(&mut s))
    })
}
