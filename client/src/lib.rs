//! The circles task protocol over Redis (DESIGN.md §3): submit scripts, await
//! results by push notification, read per-circle counters.
//!
//! API CONTRACT STUB — the client/worker owner replaces the bodies; server_ws
//! and cmd code against these signatures. This crate owns every Redis key name
//! (module `keys`); no other crate writes a key string.
//!
//! Fixed here:
//! - [`Client`] is cheap to `Clone` and shared by every WS server of a process:
//!   one multiplexed connection plus one notification connection, however many
//!   waiters. It works from any tokio runtime (actix worker threads included)
//!   once created inside one.
//! - A script failure is not an `Err`: it is [`Outcome::Failed`]. `Err` means
//!   the broker or the wait failed.

use std::time::Duration;

/// Errors of the client. `Unavailable` maps to JSON-RPC -32002, `Timeout` to -32001.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Redis cannot be reached (or dropped mid-request).
    #[error("redis at {url} is unavailable: {reason}")]
    Unavailable {
        /// The Redis URL (no password).
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The task did not finish before the timeout.
    #[error("task {task_id} did not finish within {timeout:?}")]
    Timeout {
        /// The task.
        task_id: String,
        /// The timeout that passed.
        timeout: Duration,
    },
    /// Redis held something that does not follow the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The queue name of a circle: lowercased, every run of characters outside
/// `[a-z0-9]` replaced by one `_`, trimmed of `_` ("Alpha Circle" → "alpha_circle").
pub fn queue_name(circle_name: &str) -> String {
    let _ = circle_name;
    unimplemented!()
}

/// Options of one submission.
#[derive(Debug, Clone)]
pub struct SubmitOptions {
    /// How long the submitter waits; the task is not run after this passes.
    pub timeout: Duration,
}

impl Default for SubmitOptions {
    fn default() -> Self {
        SubmitOptions {
            timeout: Duration::from_secs(30),
        }
    }
}

/// A completed task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOutput {
    /// The task id.
    pub task_id: String,
    /// The script's final value as text ("" for unit).
    pub output: String,
    /// What the script printed (capped).
    pub printed: String,
    /// Time the worker spent running the script, when known.
    pub run_time: Option<Duration>,
}

/// A task that ended in `error`.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFailure {
    /// The task id.
    pub task_id: String,
    /// The error kind's wire name ("syntax", "runtime", "limit", "timeout", "worker_lost", …).
    pub kind: String,
    /// The message.
    pub message: String,
    /// 1-based line, when known.
    pub line: Option<u32>,
    /// 1-based column, when known.
    pub column: Option<u32>,
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Status `completed`.
    Completed(TaskOutput),
    /// Status `error`.
    Failed(TaskFailure),
}

/// Counters of one circle, for the status table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueStats {
    /// Ids waiting in `rhai_tasks:<queue>`.
    pub queue_len: u64,
    /// Tasks completed.
    pub processed: u64,
    /// Tasks ended in error.
    pub failed: u64,
    /// Tasks claimed and running.
    pub in_flight: u64,
    /// Age of the newest worker heartbeat, if any worker ever beat.
    pub heartbeat_age: Option<Duration>,
}

/// A handle to the broker. Cheap to clone.
#[derive(Clone)]
pub struct Client {}

impl Client {
    /// Connects to `redis_url` and starts the notification listener.
    pub async fn connect(redis_url: &str) -> Result<Client> {
        let _ = redis_url;
        unimplemented!()
    }
    /// Writes the task hash and pushes its id (one MULTI/EXEC); returns the id.
    pub async fn submit(&self, queue: &str, script: &str, options: &SubmitOptions) -> Result<String> {
        let _ = (queue, script, options);
        unimplemented!()
    }
    /// Waits for the task to end, up to `timeout`.
    pub async fn wait(&self, task_id: &str, timeout: Duration) -> Result<Outcome> {
        let _ = (task_id, timeout);
        unimplemented!()
    }
    /// `submit` then `wait` with `options.timeout`.
    pub async fn run(&self, queue: &str, script: &str, options: &SubmitOptions) -> Result<Outcome> {
        let _ = (queue, script, options);
        unimplemented!()
    }
    /// The counters of `queue`.
    pub async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let _ = queue;
        unimplemented!()
    }
}
