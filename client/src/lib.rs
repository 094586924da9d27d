//! The circles task protocol over Redis (DESIGN.md §3): submit scripts, await
//! results by push notification, read per-circle counters.
//!
//! Place in the graph: `client` → `redis`, `serde`. `server_ws` submits and
//! waits through [`Client`]; `worker` takes and finishes tasks through
//! [`broker`]; `cmd` reads [`Client::stats`]. This crate owns every Redis key
//! name ([`keys`]) and hash field ([`fields`]); no other crate writes a key
//! string.
//!
//! Main types:
//! - [`Client`] is cheap to `Clone` and shared by every WS server of a process:
//!   one multiplexed command connection plus one notification (pub/sub)
//!   connection, however many waiters. It works from any tokio runtime once
//!   created inside one.
//! - [`Outcome`]: a script failure is not an `Err`, it is [`Outcome::Failed`].
//!   `Err` means the broker or the wait failed ([`Error::Unavailable`],
//!   [`Error::Timeout`], [`Error::Protocol`]).
//! - [`Client::run`] owns its task: dropped before the outcome arrives (its
//!   caller went away), it asks for the task's cancellation
//!   ([`Client::cancel`]); [`Client::run_with`] and [`OnDrop`] choose
//!   otherwise.
//! - [`broker::WorkerBroker`] / [`broker::BlockingPopper`]: the worker side.
//!
//! ```no_run
//! # async fn demo() -> client::Result<()> {
//! let client = client::Client::connect("redis://127.0.0.1:6379/").await?;
//! let queue = client::queue_name("Alpha Circle"); // "alpha_circle"
//! match client.run(&queue, "40 + 2", &client::SubmitOptions::default()).await? {
//!     client::Outcome::Completed(out) => assert_eq!(out.output, "42"),
//!     client::Outcome::Failed(failure) => eprintln!("script failed: {}", failure.message),
//! }
//! # Ok(())
//! # }
//! ```

pub mod broker;
mod client;
mod conn;
pub mod fields;
pub mod keys;
mod listener;
mod scripts;
pub mod url;

pub use client::{
    Client, ClientOptions, OnDrop, STATS_BATCH, SUBMITTER_FAILED, SUBMITTER_GONE, Watched,
};
pub use url::RedisUrl;

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
    let mut out = String::with_capacity(circle_name.len());
    let mut pending_sep = false;
    for c in circle_name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if pending_sep && !out.is_empty() {
                out.push('_');
            }
            pending_sep = false;
            out.push(c);
        } else {
            pending_sep = true;
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::queue_name;

    #[test]
    fn queue_names_follow_the_design_rule() {
        assert_eq!(queue_name("Alpha Circle"), "alpha_circle");
        assert_eq!(queue_name("  --Beta__Circle!! 2 "), "beta_circle_2");
        assert_eq!(queue_name("Ünïcode Ω"), "n_code");
        assert_eq!(queue_name("a"), "a");
        assert_eq!(queue_name("!!!"), "");
    }
}
