//! The clock of a run: its start, its deadline checks and its elapsed time.
//!
//! Reads the CPU's time-stamp counter through `quanta` where the processor
//! has an invariant TSC (and `rdtscp`), scaled to nanoseconds by a
//! calibration against the OS monotonic clock done once per process; without
//! one `quanta` reads the OS monotonic clock itself. A TSC read is a few
//! times cheaper than `std::time::Instant::now()` on a VM, and a trivial run
//! reads the clock twice. Instants of this clock are never mixed with
//! `std::time::Instant`s, nor with instants of another `quanta::Clock`
//! (`quanta::Instant::now()` included): a [`crate::RunControl::deadline`] is
//! built with [`after`] from the time left.

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

/// The instant `left` from now on this clock (a deadline given as the time
/// left, as the worker has it).
#[inline]
pub fn after(left: Duration) -> Instant {
    add(now(), left)
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
