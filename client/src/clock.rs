//! Redis' clock as this process last measured it, one per Redis (by URL,
//! shared by every connection to it). Each time the protocol writes into a
//! task (`createdAt`, `deadline`, `startedAt`, `updatedAt`) or compares with
//! its deadline is read from it, so processes on machines whose clocks
//! disagree still agree on when a deadline passes. It is measured with
//! `TIME` at every connect, every worker heartbeat and every gateway beat:
//! this machine's clock plus the offset the latest `TIME` showed, half its
//! round trip counted; a step of this machine's clock shows in it until
//! the next measure.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};

/// The clocks by URL (without credentials).
static CLOCKS: LazyLock<Mutex<HashMap<String, Weak<RedisClock>>>> = LazyLock::new(Mutex::default);

/// The longest round trip of a `TIME` taken as a measure once the clock
/// has one: its reply is counted as coming halfway, so a longer one (Redis
/// or the network stalled) could put the clock off by half of it.
const MAX_ROUND_TRIP_MS: u64 = 500;

/// One Redis' clock.
#[derive(Debug, Default)]
pub(crate) struct RedisClock {
    /// Redis' clock less this machine's, in ms.
    offset_ms: AtomicI64,
    /// Whether a `TIME` was taken as a measure yet.
    measured: AtomicBool,
}

impl RedisClock {
    /// The clock of the Redis at `url`, shared with every other user of it
    /// in this process.
    pub(crate) fn of(url: &str) -> Arc<RedisClock> {
        let mut clocks = CLOCKS.lock().unwrap_or_else(|e| e.into_inner());
        clocks.retain(|_, clock| clock.strong_count() > 0);
        if let Some(clock) = clocks.get(url).and_then(Weak::upgrade) {
            return clock;
        }
        let clock = Arc::new(RedisClock::default());
        clocks.insert(url.to_owned(), Arc::downgrade(&clock));
        clock
    }

    /// Ms since the Unix epoch by Redis' clock, as last measured (this
    /// machine's before the first measure).
    pub(crate) fn now_ms(&self) -> u64 {
        crate::now_ms().saturating_add_signed(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Asks `conn` for Redis' `TIME` and records it; refused (an ACL
    /// without `TIME`) or failed, the clock keeps its last measure.
    pub(crate) async fn measure(&self, conn: &mut redis::aio::MultiplexedConnection) {
        let sent = crate::now_ms();
        if let Ok(time) = redis::cmd("TIME").query_async(conn).await {
            self.observe(time, sent, crate::now_ms());
        }
    }

    /// Records a `TIME` reply (seconds, microseconds) asked at `sent` and
    /// answered at `received` (both [`crate::now_ms`]).
    /// A round trip past [`MAX_ROUND_TRIP_MS`] is no measure once the
    /// clock has one: it keeps the last.
    pub(crate) fn observe(&self, (secs, micros): (u64, u64), sent: u64, received: u64) {
        if received.saturating_sub(sent) > MAX_ROUND_TRIP_MS
            && self.measured.load(Ordering::Relaxed)
        {
            return;
        }
        let redis = secs.saturating_mul(1000).saturating_add(micros / 1000);
        let local = sent / 2 + received / 2;
        let offset = i64::try_from(redis)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(local).unwrap_or(i64::MAX));
        self.offset_ms.store(offset, Ordering::Relaxed);
        self.measured.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_is_redis_time_less_the_middle_of_the_round_trip() {
        let clock = RedisClock::default();
        clock.observe((1_000, 500_000), 900_000, 900_010);
        assert_eq!(clock.offset_ms.load(Ordering::Relaxed), 1_000_500 - 900_005);
        let now = clock.now_ms();
        assert!(now.abs_diff(crate::now_ms() + 100_495) < 1_000, "{now}");
    }

    #[test]
    fn one_redis_has_one_clock_in_a_process() {
        let a = RedisClock::of("redis://clock-test:1/");
        let b = RedisClock::of("redis://clock-test:1/");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &RedisClock::of("redis://clock-test:2/")));
    }
}
