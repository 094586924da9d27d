//! [`WorkerSight`]: whether a circle has a live worker, as the process
//! that serves its endpoint last saw it. A background task of the owner
//! (one for every circle of the process, one Redis round trip per beat)
//! records what it sees: how long the freshest worker heartbeat key still
//! lives. The circle has a live worker until that key expires (the worker
//! missed its heartbeats for the key's TTL), unless a later look sees a
//! newer one. `play` reads it, so a request costs no extra round trip while
//! a worker is live; when it says none, a request looks itself, at most
//! once per circle per [`RELOOK_EVERY`] (see `no_worker`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Per circle: when a live worker was last seen, and when anyone last
/// looked. Cheap to clone; every clone shares the same record.
#[derive(Debug, Clone)]
pub struct WorkerSight {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    circle_id: u32,
    dead_after: Duration,
    seen: Mutex<Seen>,
}

/// How often requests to a circle with no live worker may look at its
/// workers themselves, between the owner's looks: a worker that came back
/// is seen by the first request after it, not at the next beat, while a
/// flood of requests costs Redis at most one look per this time.
const RELOOK_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
struct Seen {
    /// When the record was made: until one dead time after it, a circle
    /// none of whose workers was seen yet counts as live (a fresh process
    /// waits one dead time, for a worker starting beside it, before it
    /// refuses).
    start: Instant,
    /// When the freshest worker heartbeat seen expires; `None` before the
    /// first sighting.
    until: Option<Instant>,
    /// When the last look succeeded; `None` before the first.
    looked: Option<Instant>,
    /// Why the latest look failed, when it did (cleared by the next one
    /// that succeeds).
    failure: Option<String>,
    /// When a request last looked again itself (see
    /// [`WorkerSight::may_look_again`]; a failed look counts too, so
    /// failing looks cannot flood Redis).
    relooked: Option<Instant>,
}

impl WorkerSight {
    /// The record of circle `circle_id`, whose workers count as gone once
    /// none was seen for `dead_after` (the worker heartbeat's TTL).
    pub fn new(circle_id: u32, dead_after: Duration) -> WorkerSight {
        WorkerSight {
            inner: Arc::new(Inner {
                circle_id,
                dead_after,
                seen: Mutex::new(Seen {
                    start: Instant::now(),
                    until: None,
                    looked: None,
                    failure: None,
                    relooked: None,
                }),
            }),
        }
    }

    /// The circle's id (named in the refusal).
    pub fn circle_id(&self) -> u32 {
        self.inner.circle_id
    }

    /// How long no live worker must be seen before the circle has none.
    pub fn dead_after(&self) -> Duration {
        self.inner.dead_after
    }

    /// Records a look at the circle's workers made at `at`: `Some(left)`
    /// when one of them had its heartbeat key, which then had `left` to live
    /// (the freshest one's TTL); `None` when none had.
    pub fn record(&self, heartbeat: Option<Duration>, at: Instant) {
        let mut seen = self.lock();
        seen.failure = None;
        seen.looked = Some(seen.looked.map_or(at, |l| l.max(at)));
        if let Some(left) = heartbeat {
            let until = at + left;
            seen.until = Some(seen.until.map_or(until, |u| u.max(until)));
        }
    }

    /// Records a look that failed: Redis did not answer it, for `why`.
    pub fn record_failure(&self, why: String) {
        self.lock().failure = Some(why);
    }

    /// Why the latest look failed (Redis is away), while it is the latest.
    pub fn failure(&self) -> Option<String> {
        self.lock().failure.clone()
    }

    /// Whether a request that finds no live worker may look again itself
    /// before it refuses: once per [`RELOOK_EVERY`] per circle (the grant
    /// is taken by the caller that gets `true`).
    pub(crate) fn may_look_again(&self) -> bool {
        self.may_look_again_at(Instant::now())
    }

    fn may_look_again_at(&self, now: Instant) -> bool {
        let mut seen = self.lock();
        if seen
            .relooked
            .is_some_and(|l| now.saturating_duration_since(l) < RELOOK_EVERY)
        {
            return false;
        }
        seen.relooked = Some(now);
        true
    }

    /// Whether a live worker was seen since the record was made (while
    /// not, [`WorkerSight::live`] gives `Some(true)` only for the start's
    /// dead time, and nothing says a worker exists).
    pub fn seen_any(&self) -> bool {
        self.lock().until.is_some()
    }

    /// `Some(false)` when the circle has no live worker: the freshest
    /// heartbeat seen has expired (or, none seen since the start, the start
    /// is one dead time ago) while the looks go on; `Some(true)` before;
    /// `None` when nothing is known (no look succeeded for the dead time:
    /// Redis is away, or the owner does not look).
    pub fn live(&self) -> Option<bool> {
        self.live_at(Instant::now())
    }

    fn live_at(&self, now: Instant) -> Option<bool> {
        let seen = self.lock();
        let dead_after = self.inner.dead_after;
        let looked = seen.looked?;
        if now.saturating_duration_since(looked) >= dead_after {
            return None;
        }
        let until = seen.until.unwrap_or(seen.start + dead_after);
        Some(now < until)
    }

    /// Locks the record even if a panic elsewhere poisoned it: instants
    /// and a reason stay meaningful.
    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.inner
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_circle_has_no_live_worker_only_once_none_was_seen_for_the_dead_time() {
        let sight = WorkerSight::new(7, Duration::from_secs(3));
        let t0 = Instant::now();
        assert_eq!(sight.live_at(t0), None, "nothing looked yet");
        sight.record(None, t0);
        assert_eq!(sight.live_at(t0), Some(true), "the start counts as seen");
        assert!(!sight.seen_any(), "but no worker was seen");
        let later = t0 + Duration::from_secs(4);
        sight.record(None, later);
        assert_eq!(sight.live_at(later), Some(false));
        sight.record(Some(Duration::from_secs(3)), later);
        assert_eq!(sight.live_at(later), Some(true));
        assert!(sight.seen_any());
        assert_eq!(
            sight.live_at(later + Duration::from_secs(3)),
            None,
            "no look for the dead time: unknown, not dead"
        );
        assert_eq!(sight.circle_id(), 7);
    }

    #[test]
    fn requests_may_look_again_once_per_relook_time() {
        let sight = WorkerSight::new(7, Duration::from_secs(3));
        let t0 = Instant::now();
        assert!(sight.may_look_again_at(t0));
        assert!(!sight.may_look_again_at(t0 + RELOOK_EVERY / 2));
        assert!(sight.may_look_again_at(t0 + RELOOK_EVERY));
        assert!(!sight.may_look_again_at(t0 + RELOOK_EVERY));
    }

    #[test]
    fn a_failed_look_is_told_until_a_look_succeeds() {
        let sight = WorkerSight::new(7, Duration::from_secs(3));
        assert_eq!(sight.failure(), None);
        sight.record_failure("connection refused".into());
        assert_eq!(sight.failure().as_deref(), Some("connection refused"));
        sight.record(None, Instant::now());
        assert_eq!(sight.failure(), None);
    }

    #[test]
    fn a_worker_is_gone_once_its_heartbeat_expires_not_a_dead_time_after_it_was_last_seen() {
        // Heartbeat TTL 15 s. The last look that saw the key found it with
        // 2 s left (the worker beat 13 s before and then died): the circle
        // has no live worker 2 s later, when the key expires, though a live
        // key was seen only 2 s before.
        let sight = WorkerSight::new(7, Duration::from_secs(15));
        let t0 = Instant::now();
        sight.record(Some(Duration::from_secs(12)), t0);
        let seen = t0 + Duration::from_secs(10);
        sight.record(Some(Duration::from_secs(2)), seen);
        assert_eq!(sight.live_at(seen), Some(true));
        let after = seen + Duration::from_millis(2_100);
        sight.record(None, after);
        assert_eq!(sight.live_at(after), Some(false));
        // A newer heartbeat seen later makes it live again.
        sight.record(Some(Duration::from_secs(15)), after);
        assert_eq!(sight.live_at(after), Some(true));
    }
}
