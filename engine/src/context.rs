//! Per-run state reached by the callbacks and `db::` functions registered on
//! the shared Rhai engine.
//!
//! The Rhai engine is built once per [`crate::CircleEngine`]; what changes per
//! run (deadline, cancel flag, captured output, the transaction) lives in a
//! thread-local slot installed for the duration of one run. `run` is
//! synchronous, so the thread evaluating a script is the thread that
//! installed its slot, and concurrent runs on other threads each see their own.

use crate::Limits;
use crate::clock::Instant;
use crate::fault::DbFault;
use crate::identity::{Caller, Role};
use crate::txn::{Txn, TxnError};
use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Why a run was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The deadline passed.
    Timeout,
    /// The cancel flag was set.
    Cancelled,
}

/// Termination tokens; unique enough that a script cannot produce them (a
/// script cannot raise `ErrorTerminated` at all).
pub const TIMEOUT_TOKEN: &str = "circles-engine:timeout";
/// See [`TIMEOUT_TOKEN`]: the deadline that passed was the task's
/// (`RunControl::deadline`), not the engine's time limit.
pub const TASK_DEADLINE_TOKEN: &str = "circles-engine:task-deadline";
/// See [`TIMEOUT_TOKEN`].
pub const CANCEL_TOKEN: &str = "circles-engine:cancelled";
/// See [`TIMEOUT_TOKEN`]: the run's operation budget is spent.
pub const OPERATIONS_TOKEN: &str = "circles-engine:operations";
/// See [`TIMEOUT_TOKEN`]: a value nested too deeply was printed or compared.
pub const NESTING_TOKEN: &str = "circles-engine:nesting";
/// See [`TIMEOUT_TOKEN`]: the run holds more memory than its limit.
pub const MEMORY_TOKEN: &str = "circles-engine:memory";
/// See [`TIMEOUT_TOKEN`]: a value whose text would pass the string limit
/// was printed or converted to text.
pub const STRING_TOKEN: &str = "circles-engine:string";
/// See [`TIMEOUT_TOKEN`]: a `db::` function hit a limit ([`stop_with_fault`]).
pub const DB_LIMIT_TOKEN: &str = "circles-engine:db-limit";

/// The deadline and cancel flag are checked every this many operations (a
/// power of two): often enough to stop within microseconds, rarely enough to
/// cost nothing.
pub const CHECK_EVERY_OPS: u64 = 256;

/// The state of one run that callbacks borrow: captured output and the
/// transaction. One per thread, reused from run to run so a run allocates
/// nothing it does not need.
pub struct RunState {
    active: bool,
    cancel: Option<Arc<AtomicBool>>,
    pub printed: String,
    pub printed_truncated: bool,
    max_printed: usize,
    pub txn: Txn,
    /// The name of the run's caller (`caller()`); kept from run to run so
    /// setting it allocates only when a longer name comes.
    pub caller: String,
    /// What the run's caller may do; the `db::` functions enforce it.
    pub role: Role,
}

impl RunState {
    fn idle() -> Self {
        RunState {
            active: false,
            cancel: None,
            printed: String::new(),
            printed_truncated: false,
            max_printed: 0,
            txn: Txn::new(0),
            caller: String::new(),
            role: Role::Read,
        }
    }

    /// Appends one line of captured output, cutting it at the cap. The cut is
    /// visible in the text itself: it ends with the line
    /// `[output truncated at N bytes]`, kept within the cap (unless the cap
    /// is smaller than that line), after whole lines only, so that no line
    /// cut short reads as one printed so. Only a first line longer than the
    /// cap is kept in part, and then the marker says so.
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
        let max = self.max_printed;
        self.printed_truncated = true;
        let marker = format!("[output truncated at {max} bytes]\n");
        if self.printed.len() + marker.len() > max {
            // Whole lines that leave room for the marker (`\n` is ASCII, so
            // a cut after one is a character boundary).
            let fit = max.saturating_sub(marker.len()).min(self.printed.len());
            match self.printed.as_bytes()[..fit]
                .iter()
                .rposition(|&b| b == b'\n')
            {
                Some(at) => self.printed.truncate(at + 1),
                None => {
                    // Not even the first line fits beside the marker: a
                    // part of it, marked so.
                    let printed = std::mem::take(&mut self.printed);
                    let first = printed.split('\n').next().unwrap_or_default();
                    self.keep_part(first, &marker);
                    return;
                }
            }
        }
        if self.printed.is_empty() {
            self.keep_part(line, &marker);
        } else {
            self.printed.push_str(&marker);
        }
    }

    /// The start of `line` (the first printed) and a marker saying it is cut;
    /// `marker` alone when no part of it fits.
    fn keep_part(&mut self, line: &str, marker: &str) {
        let max = self.max_printed;
        let partial = format!("[output truncated at {max} bytes, within the line above]\n");
        let mut cut = max.saturating_sub(partial.len() + 1).min(line.len());
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        if cut == 0 {
            self.printed.push_str(marker);
            return;
        }
        self.printed.push_str(&line[..cut]);
        self.printed.push('\n');
        self.printed.push_str(&partial);
    }

    /// Ends the run: drops its cancel flag, output and any uncommitted writes.
    #[inline]
    fn clear(&mut self) {
        TICK.with(Tick::clear);
        self.active = false;
        self.cancel = None;
        if !self.printed.is_empty() {
            self.printed = String::new();
        }
        self.txn.reset(0);
        self.caller.clear();
        // Outside a run nothing may write.
        self.role = Role::Read;
    }
}

thread_local! {
    static CURRENT: RefCell<RunState> = RefCell::new(RunState::idle());
    static TICK: Tick = const { Tick::idle() };
}

/// Marks the current run to fail with `token` at its next operation (or at
/// its end, see [`stopped`]), for functions that cannot fail themselves.
pub fn stop_with(token: &'static str) {
    TICK.with(|t| t.stop_with(token));
}

/// [`stop_with`], from the call at `pos`: the run's error is shown there
/// (the first reason's place stays, as the reason does).
pub fn stop_at(token: &'static str, pos: rhai::Position) {
    TICK.with(|t| {
        if t.stopped.get().is_none() {
            t.stop_pos.set(pos);
        }
        t.stop_with(token);
    });
}

/// Where the call is that marked the current run to stop ([`stop_at`]), if
/// one did and its place is known.
pub fn stop_position() -> Option<rhai::Position> {
    TICK.with(|t| Some(t.stop_pos.get()).filter(|p| !p.is_none()))
}

/// Marks the current run to fail with `fault`, a `db::` limit, at its next
/// operation and at its end (see [`stop_with`]), unless it was stopped
/// already (the first reason stays).
pub fn stop_with_fault(fault: DbFault) {
    TICK.with(|t| {
        if t.stopped.get().is_none() {
            t.fault.replace(Some(fault));
        }
        t.stop_with(DB_LIMIT_TOKEN);
    });
}

/// The `db::` limit fault that stopped the current run, if one did.
pub fn take_fault() -> Option<DbFault> {
    TICK.with(|t| t.fault.take())
}

/// Whether the current run holds more memory than its limit now: for a
/// native function that builds a large value in one call (`db::history`),
/// which the per-operation check sees only once the call has returned.
pub fn over_memory() -> bool {
    TICK.with(Tick::over_memory)
}

/// Why the current run was marked to stop, if it was.
pub fn stopped() -> Option<&'static str> {
    TICK.with(|t| t.stopped.get())
}

/// Counts one operation of the current run (called by Rhai's progress
/// callback for every operation, closures included) and says why the run
/// must stop: its operation budget is spent, or, every [`CHECK_EVERY_OPS`]
/// operations, its deadline passed or it was cancelled.
#[inline]
pub fn tick() -> Option<&'static str> {
    TICK.with(|t| {
        let n = t.ops.get().wrapping_add(1);
        t.ops.set(n);
        if n < t.next.get() && !t.over_memory() {
            None
        } else {
            t.slow(n)
        }
    })
}

/// Activates this thread's run state for `caller` until the guard is
/// dropped. A stop at `deadline` fails the run with `deadline_token`
/// ([`TIMEOUT_TOKEN`] or [`TASK_DEADLINE_TOKEN`]).
pub fn install(
    caller: &Caller,
    deadline: Instant,
    deadline_token: &'static str,
    cancel: &Arc<AtomicBool>,
    limits: &Limits,
) -> Installed {
    let (max_printed, max_writes) = (limits.max_output_bytes, limits.max_writes);
    TICK.with(|t| {
        t.start(
            deadline,
            deadline_token,
            limits.max_operations,
            limits.max_memory_bytes as u64,
        );
    });
    CURRENT.with(|c| {
        let mut s = c.borrow_mut();
        debug_assert!(!s.active, "runs never nest on one thread");
        s.active = true;
        s.cancel = Some(cancel.clone());
        s.printed_truncated = false;
        s.max_printed = max_printed;
        s.caller.clear();
        s.caller.push_str(&caller.name);
        s.role = caller.role;
        // Every run ends with `clear`, which leaves the transaction empty.
        s.txn.reset(max_writes);
    });
    Installed { _private: () }
}

/// Deactivates the run's state when dropped (also on panic), discarding its
/// writes.
pub struct Installed {
    _private: (),
}

/// What a committed run leaves: its writes and its captured output.
pub struct Finished {
    /// Writes committed.
    pub writes: usize,
    /// See [`RunState::printed`].
    pub printed: String,
    /// See [`RunState::printed_truncated`].
    pub printed_truncated: bool,
}

impl Installed {
    /// Commits the run's writes to `db` and takes its captured output, then
    /// ends the run (its writes are dropped if the commit failed). `sync`
    /// false skips the commit's fsync (see [`Txn::commit`]).
    pub fn finish(self, db: &ourdb::OurDb, sync: bool) -> Result<Finished, TxnError> {
        let result = CURRENT.with(|c| {
            let mut s = c.borrow_mut();
            let result = s.txn.commit(db, sync).map(|writes| Finished {
                writes,
                printed: std::mem::take(&mut s.printed),
                printed_truncated: s.printed_truncated,
            });
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

/// Whether a run is active on this thread (also while its state is borrowed,
/// as during a panic inside a db function).
pub fn active() -> bool {
    CURRENT
        .try_with(|c| c.try_borrow().map_or(true, |s| s.active))
        .unwrap_or(false)
}

/// Runs `f` on the current run's state; `None` outside a run.
pub fn with<R>(f: impl FnOnce(&mut RunState) -> R) -> Option<R> {
    CURRENT.with(|c| {
        let mut s = c.try_borrow_mut().ok()?;
        s.active.then(|| f(&mut s))
    })
}

mod tick;
use tick::Tick;

#[cfg(test)]
mod tests;
