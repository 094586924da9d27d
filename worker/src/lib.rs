//! Takes a circle's script tasks from Redis and runs them on the circle's engine.
//!
//! API CONTRACT STUB — the client/worker owner replaces the bodies; cmd codes
//! against these signatures.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Errors that stop a worker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Redis failed in a way reconnecting cannot fix.
    #[error("worker for queue {queue}: {reason}")]
    Fatal {
        /// The queue.
        queue: String,
        /// What went wrong.
        reason: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Configuration of one circle's worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Redis URL.
    pub redis_url: String,
    /// The circle's queue name (see `client::queue_name`).
    pub queue: String,
    /// How long finished task hashes live.
    pub result_ttl: Duration,
    /// On shutdown, how long a running script may go on before it is cancelled.
    pub shutdown_grace: Duration,
}

/// Live state of a worker for the status table. Shared with `Arc`.
#[derive(Debug, Default)]
pub struct WorkerStatus {}

/// What the status table shows for a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerState {
    /// Not yet connected.
    Starting,
    /// Taking tasks.
    Running,
    /// Redis is unreachable; retrying.
    Reconnecting,
    /// Stopped after shutdown.
    Stopped,
    /// Stopped by a failure.
    Failed(String),
}

impl WorkerStatus {
    /// The current state.
    pub fn state(&self) -> WorkerState {
        unimplemented!()
    }
    /// Tasks this worker completed / failed since it started.
    pub fn counts(&self) -> (u64, u64) {
        unimplemented!()
    }
}

/// Runs the worker until `token` is cancelled, then drains and returns.
pub async fn run(
    config: WorkerConfig,
    engine: Arc<engine::CircleEngine>,
    status: Arc<WorkerStatus>,
    token: CancellationToken,
) -> Result<()> {
    let _ = (config, engine, status, token);
    unimplemented!()
}
