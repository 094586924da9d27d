//! [`Roster`]: the circles the status shows, in circles.json order. A reload
//! adds and removes rows; the display and the stats poller read the list
//! afresh on every tick.

use std::sync::{Arc, Mutex};

use crate::status::{CircleState, lock};

/// The circles now running, shared by the orchestrator (which changes it on
/// a reload) and everything that shows them.
#[derive(Debug, Clone, Default)]
pub struct Roster(Arc<Mutex<Vec<Arc<CircleState>>>>);

impl Roster {
    /// A roster of `circles`.
    pub fn new(circles: Vec<Arc<CircleState>>) -> Self {
        Roster(Arc::new(Mutex::new(circles)))
    }

    /// The circles now, in file order.
    pub fn current(&self) -> Vec<Arc<CircleState>> {
        lock(&self.0).clone()
    }

    /// Replaces the list.
    pub fn set(&self, circles: Vec<Arc<CircleState>>) {
        *lock(&self.0) = circles;
    }
}
