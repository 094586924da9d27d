//! [`Tick`]: what the per-operation callback reads (the operation count,
//! the stop flag, the deadline, the memory meter), apart from the rest of
//! the run's state so that an operation costs a few loads and one branch.

use std::cell::{Cell, RefCell};
use std::sync::atomic::Ordering;

use rhai::Position;

use super::{
    CANCEL_TOKEN, CHECK_EVERY_OPS, CURRENT, MEMORY_TOKEN, OPERATIONS_TOKEN, TIMEOUT_TOKEN,
};
use crate::clock::{self, Instant};
use crate::fault::DbFault;

/// What [`tick`] reads on every operation, apart from the rest of the run's
/// state so that an operation costs a few loads and one branch.
pub(super) struct Tick {
    /// Operations of the current run. Kept apart from Rhai's own count,
    /// which a closure called from a native function (`map`, `filter`,
    /// `sort`, ...) runs on a copy that is thrown away when the closure
    /// returns: Rhai's count neither accumulates across such calls nor
    /// reaches a multiple of [`CHECK_EVERY_OPS`] in a short closure.
    pub(super) ops: Cell<u64>,
    /// The count at which `tick` next leaves its fast path: the next
    /// multiple of [`CHECK_EVERY_OPS`] or the first operation over the
    /// limit, whichever comes first; 0 once the run is stopped.
    pub(super) next: Cell<u64>,
    /// The run's operation limit (`u64::MAX` when unbounded or idle).
    max_ops: Cell<u64>,
    /// Why the current run was stopped, once it was. Sticky: some native
    /// functions swallow a closure's error (`sort` treats a failed comparison
    /// as an ordering), so every later operation fails again until the script
    /// is out of them.
    pub(super) stopped: Cell<Option<&'static str>>,
    /// Where the call that stopped the run is, when a function that could
    /// not fail itself stopped it ([`super::stop_at`]): the error is shown
    /// there, not at the operation that fails next, or nowhere.
    pub(super) stop_pos: Cell<Position>,
    /// The `db::` limit fault that stopped the run, when one did: like the
    /// other stops it fails every later operation and the run, also when a
    /// native function swallowed it (`sort`'s comparator).
    pub(super) fault: RefCell<Option<DbFault>>,
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
    pub(super) const fn idle() -> Tick {
        Tick {
            ops: Cell::new(0),
            next: Cell::new(u64::MAX),
            max_ops: Cell::new(u64::MAX),
            stopped: Cell::new(None),
            stop_pos: Cell::new(Position::NONE),
            fault: RefCell::new(None),
            deadline: Cell::new(None),
            deadline_token: Cell::new(TIMEOUT_TOKEN),
            meter: Cell::new(None),
            metered: Cell::new(None),
            memory_base: Cell::new(0),
            max_memory: Cell::new(u64::MAX),
        }
    }

    pub(super) fn start(
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
        self.stop_pos.set(Position::NONE);
        self.fault.replace(None);
        self.deadline.set(Some(deadline));
        self.deadline_token.set(deadline_token);
    }

    pub(super) fn clear(&self) {
        self.metered.set(None);
        self.max_ops.set(u64::MAX);
        self.next.set(u64::MAX);
        self.stopped.set(None);
        self.stop_pos.set(Position::NONE);
        self.fault.replace(None);
        self.deadline.set(None);
    }

    pub(super) fn stop_with(&self, token: &'static str) {
        if self.stopped.get().is_none() {
            self.stopped.set(Some(token));
        }
        self.next.set(0);
    }

    /// `tick` past its fast path: operation `n` is over the limit, due for
    /// a deadline and cancel check, or of a stopped run.
    #[cold]
    #[inline(never)]
    pub(super) fn slow(&self, n: u64) -> Option<&'static str> {
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
    pub(super) fn over_memory(&self) -> bool {
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
pub(super) fn next_event(n: u64, max_ops: u64) -> u64 {
    let check = (n / CHECK_EVERY_OPS + 1).saturating_mul(CHECK_EVERY_OPS);
    check.min(max_ops.saturating_add(1))
}
