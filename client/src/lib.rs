//! The circles task protocol over Redis (DESIGN.md §3): submit scripts, await
//! results by push notification, read per-circle counters.
//!
//! Place in the graph: `client` → `redis`, `serde`. `server_ws` submits and
//! waits through [`Client`]; `worker` takes and finishes tasks through
//! [`broker`]; `cmd` reads [`Client::stats_many`] and
//! [`Client::queue_leases`] and [`Client::gateways_many`]; every process
//! that serves circles' endpoints beats through [`Client::gateway_beat`]. This crate owns every Redis key name
//! ([`keys`]), hash field ([`fields`]) and failure kind ([`FailureKind`]);
//! no other crate writes a key string or a kind's wire name.
//!
//! Main types:
//! - [`Client`] is cheap to `Clone` and shared by every WS server of a process:
//!   one multiplexed command connection plus one notification (pub/sub)
//!   connection, however many waiters. It works from any tokio runtime once
//!   created inside one. [`Client::run_with`] submits and waits;
//!   [`Client::submit_watched`] submits and hands back a [`Watched`] to
//!   await later. Both register the waiter before the push.
//! - [`Outcome`]: a script failure is not an `Err`, it is [`Outcome::Failed`]
//!   with a [`FailureKind`]. `Err` means the broker or the wait failed
//!   ([`Error::Unavailable`], [`Error::MaybeQueued`], [`Error::Timeout`],
//!   [`Error::Protocol`]). A
//!   worker reports a finished task as the same [`Outcome`].
//! - [`OnDrop`]: what becomes of a [`Client::run_with`] task when its caller
//!   stops waiting first ([`OnDrop::Cancel`] asks for its cancellation,
//!   [`Client::cancel`]).
//! - [`broker::WorkerBroker`] / [`broker::BlockingPopper`]: the worker side.
//! - [`RedisUrl`] ([`url`]): the one parser of Redis URLs, and the one rule
//!   for printing them (user name and password never shown).
//!
//! Feature `test-support` adds what only tests use: [`Client`]'s `submit`
//! (no waiter), `wait` (any task by id), `check` (one read of a task),
//! `waiting` (waiters registered) and `listening` (the listener's health).
//!
//! ```no_run
//! # async fn demo() -> client::Result<()> {
//! use client::{Client, OnDrop, Outcome, SubmitOptions};
//! let client = Client::connect("redis://127.0.0.1:6379/").await?;
//! let queue = client::queue_name("Alpha Circle"); // "alpha_circle"
//! let options = SubmitOptions::default();
//! match client.run_with(&queue, "40 + 2", &options, OnDrop::Cancel).await? {
//!     Outcome::Completed(out) => assert_eq!(out.output, "42"),
//!     Outcome::Failed(failure) => {
//!         eprintln!("script failed ({}): {}", failure.kind, failure.message)
//!     }
//! }
//! # Ok(())
//! # }
//! ```

pub mod broker;
mod caller;
mod client;
mod clock;
mod conn;
pub mod fields;
#[doc(hidden)]
pub mod fuzzing;
pub mod keys;
mod kind;
mod lease;
mod listener;
mod scripts;
mod target;
mod tls;
pub mod url;

pub use caller::{Caller, Role};
pub use client::{
    Client, ClientOptions, Gateway, GatewayProcess, OnDrop, STATS_BATCH, SUBMITTER_FAILED,
    SUBMITTER_GONE, Watched,
};
pub use conn::{Refusal, reconnects};
pub use kind::FailureKind;
pub use lease::Lease;
pub use tls::RedisCa;
pub use url::RedisUrl;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, by this machine's clock.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A TTL as Redis takes it (`PEXPIRE`, `PX`, and the scripts): whole ms, at
/// least 1 (a positive TTL under 1 ms is 1 ms; `PEXPIRE` refuses 0).
pub(crate) fn ttl_ms(ttl: Duration) -> u64 {
    ttl.as_millis().clamp(1, u128::from(u64::MAX)) as u64
}

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
    /// Redis became unavailable while the caller waited for a task it had
    /// queued ([`Client::run_with`]), and was still unavailable at the
    /// task's deadline: the task may have run (its end unreported), but it
    /// cannot start any more: its deadline has passed by Redis' clock, and
    /// it is cancelled once Redis answers again (the deadline alone would not
    /// hold if Redis came back with its clock behind). Sending it again may
    /// run it twice.
    #[error(
        "redis at {url} became unavailable while task {task_id} was queued or running, \
         and was still unavailable at its deadline ({reason}); it may have run, but it \
         cannot start any more"
    )]
    Interrupted {
        /// The task.
        task_id: String,
        /// The Redis URL (no password).
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// Redis became unavailable while the task was being submitted, after
    /// its submit went out: the connection broke before Redis answered,
    /// and the submit sent again found no Redis to take it (a primary
    /// killed in a Sentinel failover, whose replica had the task already,
    /// or a Redis that died as it queued the task or before). The task may
    /// have been queued, and may run; [`Client::run_with`] cancels it until
    /// Redis answers, however long it is away, so it runs only if a worker
    /// takes it before that cancel. Sending it again may run it twice.
    #[error(
        "redis at {url} became unavailable while task {task_id} was being submitted \
         ({reason}); it may have been queued, and may run before its cancel lands"
    )]
    MaybeQueued {
        /// The task.
        task_id: String,
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
    /// The task's hash is gone from Redis before its outcome was read: the
    /// task was lost in a failover of the primary (written to the old one
    /// after the replica took over), or the data was flushed or expired. It
    /// may have run.
    #[error(
        "task {task_id} is gone from redis before its outcome was read (lost in a failover \
         of the primary, or its data was flushed or expired); it may have run"
    )]
    Lost {
        /// The task.
        task_id: String,
    },
    /// A Redis URL that a connection would refuse ([`RedisUrl::parse`]).
    #[error("{url} is not a redis URL: {reason}")]
    InvalidUrl {
        /// The URL, redacted.
        url: String,
        /// Why it was refused (redis-rs's words).
        reason: String,
    },
}

impl Error {
    /// The state in which Redis refuses commands until its operator acts,
    /// when that is why it is unavailable.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Error::Unavailable { reason, .. } => conn::refusing_state(reason),
            _ => None,
        }
    }

    /// Whether Redis refused this one request (a [`Refusal`], or a reply
    /// outside the protocol) while other requests may go through: not Redis
    /// out of reach.
    pub fn is_refusal(&self) -> bool {
        self.refusal().is_some() || matches!(self, Error::Protocol(_))
    }

    /// Whether Redis is unavailable because it is at its `maxclients`: it
    /// closes every new connection.
    pub fn at_maxclients(&self) -> bool {
        matches!(self, Error::Unavailable { reason, .. } if reason.contains(conn::MAXCLIENTS))
    }

    /// Whether Redis answers and refuses the URL's password (wrong, changed
    /// since, or its ACL user disabled).
    pub fn password_refused(&self) -> bool {
        self.unavailable_because(|reason| {
            let reason = reason.to_ascii_lowercase();
            reason.contains("authentication failed") || reason.contains("wrongpass")
        })
    }

    /// Whether Redis, over TLS, asks for a client certificate (its
    /// `tls-auth-clients yes`), which this client does not send.
    pub fn client_certificate_wanted(&self) -> bool {
        self.unavailable_because(|reason| reason.contains("CertificateRequired"))
    }

    /// The words rustls gives for a Redis certificate it does not take
    /// (`BadSignature`, `certificate expired: …`), when that is why Redis
    /// is unavailable.
    pub fn untrusted_certificate(&self) -> Option<&str> {
        const UNTRUSTED: &str = "invalid peer certificate:";
        match self {
            Error::Unavailable { reason, .. } => {
                reason.split_once(UNTRUSTED).map(|(_, why)| why.trim())
            }
            _ => None,
        }
    }

    fn unavailable_because(&self, says: impl FnOnce(&str) -> bool) -> bool {
        matches!(self, Error::Unavailable { reason, .. } if says(reason))
    }
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
    /// The authenticated principal, written into the task hash (`caller`,
    /// `role`); `None` for an open circle.
    pub caller: Option<Caller>,
    /// `Some`: the submitter reads the outcome from the notification, so
    /// once it reached the submitter's listener (before the deadline, the
    /// task not cancelled) the hash expires after this instead of the
    /// worker's result TTL (written as the hash's
    /// [`fields::DELIVERED_TTL`]; at least 1 ms, never more than the
    /// result TTL). `None`: the result TTL.
    pub delivered_ttl: Option<Duration>,
}

impl SubmitOptions {
    /// Options that wait up to `timeout`, with no caller and no delivered
    /// TTL.
    pub fn with_timeout(timeout: Duration) -> SubmitOptions {
        SubmitOptions {
            timeout,
            caller: None,
            delivered_ttl: None,
        }
    }
}

impl Default for SubmitOptions {
    fn default() -> Self {
        SubmitOptions::with_timeout(Duration::from_secs(30))
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
    /// Time the worker spent running the script, when known (a third
    /// party's worker may not say).
    pub run_time: Option<Duration>,
}

/// A task that ended in `error`.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFailure {
    /// The task id.
    pub task_id: String,
    /// Why it failed (`errorKind`).
    pub kind: FailureKind,
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

impl Outcome {
    /// The task id.
    pub fn task_id(&self) -> &str {
        match self {
            Outcome::Completed(out) => &out.task_id,
            Outcome::Failed(failure) => &failure.task_id,
        }
    }
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
    /// The queue's lease: which orchestrator's worker (pid, host, database)
    /// serves it; `None` when no worker of ours holds it.
    pub lease: Option<Lease>,
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
