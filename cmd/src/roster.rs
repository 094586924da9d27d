//! [`Roster`]: the circles the status shows, in circles.json order. A reload
//! adds and removes rows; the display and the stats poller read the list
//! afresh on every tick.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::status::{CircleState, lock};

/// The circles shown (those running, and those a reload could not start),
/// shared by the orchestrator (which changes it on
/// a reload) and everything that shows them.
#[derive(Debug, Clone, Default)]
pub struct Roster {
    circles: Arc<Mutex<Vec<Arc<CircleState>>>>,
    /// Set once the stats poller's first round has ended (read or failed).
    polled: Arc<AtomicBool>,
}

impl Roster {
    /// A roster of `circles`.
    pub fn new(circles: Vec<Arc<CircleState>>) -> Self {
        Roster {
            circles: Arc::new(Mutex::new(circles)),
            polled: Arc::default(),
        }
    }

    /// The circles now, in file order.
    pub fn current(&self) -> Vec<Arc<CircleState>> {
        lock(&self.circles).clone()
    }

    /// Replaces the list.
    pub fn set(&self, circles: Vec<Arc<CircleState>>) {
        *lock(&self.circles) = circles;
    }

    /// Whether the stats poller has tried once to read the counters and
    /// gateways of the circles (see [`crate::monitor::poll_stats`]).
    pub fn polled(&self) -> bool {
        self.polled.load(Ordering::Acquire)
    }

    /// Notes the end of the stats poller's round.
    pub fn set_polled(&self) {
        self.polled.store(true, Ordering::Release);
    }
}
