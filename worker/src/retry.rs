//! The pause before asking Redis again after a request it did not answer,
//! shared by the lease's keeper, the beat and the take loop.

use std::time::Duration;

use crate::WorkerOptions;

/// The pause before asking Redis again after a request it did not answer:
/// 50 ms, doubling up to a cap (the keeper's and the beat's:
/// [`Retry::within_beat`]; the take loop's: `max_backoff`). While the
/// connection itself is backing off a request fails at once without
/// touching the network, so
/// these retries cost next to nothing against a Redis that is down, and
/// one lands within a step of its return.
pub(crate) struct Retry {
    step: Duration,
    max: Duration,
}

impl Retry {
    const FIRST: Duration = Duration::from_millis(50);

    /// Retries of something done once a heartbeat (a renewal, a beat):
    /// capped at the reconnect backoff's cap, and at most an interval.
    pub(crate) fn within_beat(options: &WorkerOptions) -> Retry {
        Retry::new(options.max_backoff.min(options.heartbeat_interval))
    }

    pub(crate) fn new(max: Duration) -> Retry {
        Retry {
            step: Duration::ZERO,
            max: max.max(Retry::FIRST),
        }
    }

    /// The pause before the next try.
    pub(crate) fn step(&mut self) -> Duration {
        self.step = if self.step.is_zero() {
            Retry::FIRST
        } else {
            self.step.saturating_mul(2).min(self.max)
        };
        self.step
    }

    pub(crate) fn reset(&mut self) {
        self.step = Duration::ZERO;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_redis_did_not_answer_is_retried_soon_then_less_often() {
        let mut retry = Retry::new(Duration::from_millis(300));
        let steps: Vec<u64> = (0..5).map(|_| retry.step().as_millis() as u64).collect();
        assert_eq!(steps, [50, 100, 200, 300, 300]);
        retry.reset();
        assert_eq!(retry.step(), Duration::from_millis(50));
    }
}
