//! Per-run state reached by the callbacks and `db::` functions registered on
//! the shared Rhai engine.
//!
//! The Rhai engine is built once per [`crate::CircleEngine`]; what changes per
//! run (deadline, cancel flag, captured output, the transaction) lives in a
//! thread-local slot installed for the duration of one run. `run` is
//! synchronous, so the thread evaluating a script is the thread that
//! installed its slot, and concurrent runs on other threads each see their own.

use crate::Limits;
use crate::clock::{self, Instant};
use crate::fault::DbFault;
use crate::identity::{Caller, Role};
use crate::txn::{Txn, TxnError};
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

/// What [`tick`] reads on every operation, apart from the rest of the run's
/// state so that an operation costs a few loads and one branch.
struct Tick {
    /// Operations of the current run. Kept apart from Rhai's own count,
    /// which a closure called from a native function (`map`, `filter`,
    /// `sort`, ...) runs on a copy that is thrown away when the closure
    /// returns: Rhai's count neither accumulates across such calls nor
    /// reaches a multiple of [`CHECK_EVERY_OPS`] in a short closure.
    ops: Cell<u64>,
    /// The count at which `tick` next leaves its fast path: the next
    /// multiple of [`CHECK_EVERY_OPS`] or the first operation over the
    /// limit, whichever comes first; 0 once the run is stopped.
    next: Cell<u64>,
    /// The run's operation limit (`u64::MAX` when unbounded or idle).
    max_ops: Cell<u64>,
    /// Why the current run was stopped, once it was. Sticky: some native
    /// functions swallow a closure's error (`sort` treats a failed comparison
    /// as an ordering), so every later operation fails again until the script
    /// is out of them.
    stopped: Cell<Option<&'static str>>,
    /// The `db::` limit fault that stopped the run, when one did: like the
    /// other stops it fails every later operation and the run, also when a
    /// native function swallowed it (`sort`'s comparator).
    fault: RefCell<Option<DbFault>>,
    /// The run's deadline.
    deadline: Cell<Option<Instant>>,
    /// The token of a stop at the deadline: [`TIMEOUT_TOKEN`], or
    /// [`TASK_DEADLINE_TOKEN`] when the deadline is the task's.
    deadline_token: Cell<&'static str>,
    /// This thread's allocation counters, read at the run's start.
    meter: Cell<Option<Meter>>,
    /// The counters of a run with a memory limit (`None` without one).
    metered: Cell<Option<Meter>>,
    /// What the thread held at the run's start, and what the run may hold
    /// on top of that.
    memory_base: Cell<u64>,
    max_memory: Cell<u64>,
}

/// The bytes jemalloc counts as allocated and as freed by the current
/// thread so far: two counters read through pointers jemalloc keeps for
/// the thread, a load each. Both stay 0 when jemalloc is not the process's
/// allocator.
#[derive(Clone, Copy)]
struct Meter {
    allocated: tikv_jemalloc_ctl::thread::ThreadLocal<u64>,
    freed: tikv_jemalloc_ctl::thread::ThreadLocal<u64>,
}

impl Meter {
    fn here() -> Option<Meter> {
        Some(Meter {
            allocated: tikv_jemalloc_ctl::thread::allocatedp::read().ok()?,
            freed: tikv_jemalloc_ctl::thread::deallocatedp::read().ok()?,
        })
    }

    /// Allocated minus freed, modulo 2^64 (a thread may free what another
    /// allocated).
    #[inline]
    fn held(self) -> u64 {
        self.allocated.get().wrapping_sub(self.freed.get())
    }
}

impl Tick {
    const fn idle() -> Tick {
        Tick {
            ops: Cell::new(0),
            next: Cell::new(u64::MAX),
            max_ops: Cell::new(u64::MAX),
            stopped: Cell::new(None),
            fault: RefCell::new(None),
            deadline: Cell::new(None),
            deadline_token: Cell::new(TIMEOUT_TOKEN),
            meter: Cell::new(None),
            metered: Cell::new(None),
            memory_base: Cell::new(0),
            max_memory: Cell::new(u64::MAX),
        }
    }

    fn start(
        &self,
        deadline: Instant,
        deadline_token: &'static str,
        max_operations: u64,
        max_memory: u64,
    ) {
        let max_ops = if max_operations == 0 {
            u64::MAX
        } else {
            max_operations
        };
        if self.meter.get().is_none() {
            self.meter.set(Meter::here());
        }
        let metered = self.meter.get().filter(|_| max_memory > 0);
        self.metered.set(metered);
        self.memory_base.set(metered.map_or(0, Meter::held));
        self.max_memory.set(max_memory);
        self.ops.set(0);
        self.max_ops.set(max_ops);
        self.next.set(next_event(0, max_ops));
        self.stopped.set(None);
        self.fault.replace(None);
        self.deadline.set(Some(deadline));
        self.deadline_token.set(deadline_token);
    }

    fn clear(&self) {
        self.metered.set(None);
        self.max_ops.set(u64::MAX);
        self.next.set(u64::MAX);
        self.stopped.set(None);
        self.fault.replace(None);
        self.deadline.set(None);
    }

    fn stop_with(&self, token: &'static str) {
        if self.stopped.get().is_none() {
            self.stopped.set(Some(token));
        }
        self.next.set(0);
    }

    /// `tick` past its fast path: operation `n` is over the limit, due for
    /// a deadline and cancel check, or of a stopped run.
    #[cold]
    #[inline(never)]
    fn slow(&self, n: u64) -> Option<&'static str> {
        // The first reason stays.
        if let Some(token) = self.stopped.get() {
            self.next.set(0);
            return Some(token);
        }
        if self.over_memory() {
            self.stop_with(MEMORY_TOKEN);
            return Some(MEMORY_TOKEN);
        }
        let max_ops = self.max_ops.get();
        if n > max_ops {
            // Recorded, not only returned: a native function that swallows
            // a closure's error (`sort`) must not let the run end well.
            self.stop_with(OPERATIONS_TOKEN);
            return Some(OPERATIONS_TOKEN);
        }
        if n % CHECK_EVERY_OPS == 0
            && let Some(token) = self.should_stop()
        {
            self.stop_with(token);
        }
        match self.stopped.get() {
            Some(token) => {
                self.next.set(0);
                Some(token)
            }
            None => {
                self.next.set(next_event(n, max_ops));
                None
            }
        }
    }

    /// Whether the run holds more memory than its limit. What the thread
    /// freed of memory from before the run counts against what the run
    /// holds (the difference is taken as signed).
    #[inline]
    fn over_memory(&self) -> bool {
        self.metered.get().is_some_and(|m| {
            let held = m.held().wrapping_sub(self.memory_base.get()) as i64;
            held > 0 && held as u64 > self.max_memory.get()
        })
    }

    /// Whether the run must stop now, and with which token.
    fn should_stop(&self) -> Option<&'static str> {
        let cancelled = CURRENT.with(|c| {
            c.try_borrow()
                .is_ok_and(|s| s.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)))
        });
        if cancelled {
            Some(CANCEL_TOKEN)
        } else if self.deadline.get().is_some_and(|d| clock::now() >= d) {
            Some(self.deadline_token.get())
        } else {
            None
        }
    }
}

/// The first operation count after `n` at which [`tick`] must look closer:
/// the next multiple of [`CHECK_EVERY_OPS`], or the first one over `max_ops`.
fn next_event(n: u64, max_ops: u64) -> u64 {
    let check = (n / CHECK_EVERY_OPS + 1).saturating_mul(CHECK_EVERY_OPS);
    check.min(max_ops.saturating_add(1))
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

#[cfg(test)]
mod tests;
