//! Live counters of one server, read by the status table.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use telemetry::Rejection;

/// Live counters for the status table. Shared with `Arc`.
#[derive(Debug, Default)]
pub struct ServerStatus {
    connections: AtomicUsize,
    in_flight: AtomicUsize,
    unsent: AtomicUsize,
    requests: AtomicU64,
    refused_upgrades: AtomicU64,
    broker_unavailable: AtomicU64,
    no_worker: AtomicU64,
    /// Where refusals and bytes are recorded too, when metrics are on.
    metrics: Option<telemetry::ServerMetrics>,
}

impl ServerStatus {
    /// A status that also records refused upgrades (by reason) and the
    /// bytes of messages received and replies sent into `metrics`.
    pub fn with_metrics(metrics: telemetry::ServerMetrics) -> ServerStatus {
        ServerStatus {
            metrics: Some(metrics),
            ..ServerStatus::default()
        }
    }

    /// Connected WebSocket clients.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// `play` calls submitted and not yet answered, over all connections.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Bytes of replies queued for the circle's sockets and not yet taken by
    /// them, over all connections: at most [`crate::MAX_UNSENT_BYTES`] per
    /// connection.
    pub fn unsent_bytes(&self) -> usize {
        self.unsent.load(Ordering::Relaxed)
    }

    /// `play` calls accepted since the server started (notifications included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Upgrades refused (foreign origin or too many connections).
    pub fn refused_upgrades(&self) -> u64 {
        self.refused_upgrades.load(Ordering::Relaxed)
    }

    /// Takes a connection slot unless `max` are taken; the slot is freed when
    /// the guard drops.
    pub(crate) fn try_connect(self: &Arc<Self>, max: usize) -> Option<ConnectionGuard> {
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnectionGuard(Arc::clone(self)))
    }

    /// Counts a request answered "broker unavailable"; the count when it is
    /// to be logged (see [`sampled`]).
    pub(crate) fn broker_unavailable(&self) -> Option<u64> {
        sampled(&self.broker_unavailable)
    }

    /// Counts a request answered "no live worker"; the count when it is to
    /// be logged (see [`sampled`]).
    pub(crate) fn no_worker(&self) -> Option<u64> {
        sampled(&self.no_worker)
    }

    /// Counts a refused upgrade; the count when it is to be logged (see
    /// [`sampled`]).
    pub(crate) fn refused(&self, reason: Rejection) -> Option<u64> {
        self.rejected(reason);
        sampled(&self.refused_upgrades)
    }

    /// Records a refused upgrade in the metrics only: refusals the status
    /// table does not count (429, shutting down).
    pub(crate) fn rejected(&self, reason: Rejection) {
        if let Some(m) = &self.metrics {
            m.rejected(reason);
        }
    }

    /// Records a text message of `bytes` received.
    pub(crate) fn received(&self, bytes: usize) {
        if let Some(m) = &self.metrics {
            m.received(bytes);
        }
    }

    /// Records a reply of `bytes` sent.
    pub(crate) fn sent(&self, bytes: usize) {
        if let Some(m) = &self.metrics {
            m.sent(bytes);
        }
    }

    /// Records `bytes` of replies queued for a socket.
    pub(crate) fn queued(&self, bytes: usize) {
        self.unsent.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Records `bytes` of queued replies taken by the socket (or dropped with it).
    pub(crate) fn taken(&self, bytes: usize) {
        self.unsent.fetch_sub(bytes, Ordering::Relaxed);
    }

    pub(crate) fn call_started(self: &Arc<Self>) -> CallGuard {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        CallGuard(Arc::clone(self))
    }
}

/// Holds one of the circle's connection slots.
#[derive(Debug)]
pub(crate) struct ConnectionGuard(Arc<ServerStatus>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts one `play` call as in flight while alive.
#[derive(Debug)]
pub(crate) struct CallGuard(Arc<ServerStatus>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts one event on `counter`; its running count when it is the 1st,
/// 2nd, 4th, 8th… so a burst of the same event logs a handful of lines, each
/// with the count, instead of one per event.
fn sampled(counter: &AtomicU64) -> Option<u64> {
    let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
    n.is_power_of_two().then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_slots_are_bounded_and_freed_on_drop() {
        let status = Arc::new(ServerStatus::default());
        let a = status.try_connect(2).expect("first slot");
        let _b = status.try_connect(2).expect("second slot");
        assert!(status.try_connect(2).is_none());
        assert_eq!(status.connections(), 2);
        drop(a);
        assert_eq!(status.connections(), 1);
        assert!(status.try_connect(2).is_some());
    }

    #[test]
    fn refusals_are_all_counted_and_logged_at_powers_of_two() {
        let status = ServerStatus::default();
        let logged: Vec<u64> = (0..500)
            .filter_map(|_| status.refused(Rejection::Origin))
            .collect();
        assert_eq!(logged, [1, 2, 4, 8, 16, 32, 64, 128, 256]);
        assert_eq!(status.refused_upgrades(), 500);
    }
}
