//! The clock of a run: its start, its deadline checks and its elapsed time.
//!
//! Reads the CPU's time-stamp counter through `quanta` where the processor
//! has an invariant TSC (and `rdtscp`), scaled to nanoseconds by a
//! calibration against the OS monotonic clock done once per process; without
//! one `quanta` reads the OS monotonic clock itself. A TSC read is a few
//! times cheaper than `std::time::Instant::now()` on a VM, and a trivial run
//! reads the clock twice. Instants of this clock are never mixed with
//! `std::time::Instant`s: a task's deadline is converted once per run (see
//! [`from_std`]).

use std::sync::OnceLock;
use std::time::Duration;

pub use quanta::Instant;

static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();

/// The process-wide clock, calibrated on first use (a few milliseconds at
/// most, bounded by `quanta` at 200 ms). [`crate::CircleEngine::new`] calls it
/// so no run pays for the calibration.
pub fn get() -> &'static quanta::Clock {
    CLOCK.get_or_init(quanta::Clock::new)
}

/// Now.
#[inline]
pub fn now() -> Instant {
    get().now()
}

/// `at` (a `std` instant) on this clock, given `now` read on this clock just
/// before: now plus the time left until `at`, which is zero once `at` has
/// passed. Costs one `std` clock read. Off by at most the time between the two
/// reads, early rather than late.
pub fn from_std(at: std::time::Instant, now: Instant) -> Instant {
    let left = at.saturating_duration_since(std::time::Instant::now());
    add(now, left)
}

/// `at + d`, saturating at a far-away instant.
#[inline]
pub fn add(at: Instant, d: Duration) -> Instant {
    /// A timeout too large to add is a century.
    const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    at.checked_add(d)
        .or_else(|| at.checked_add(FOREVER))
        .unwrap_or(at)
}
