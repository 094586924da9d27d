//! What the worker side hands to its caller and takes from it: claims,
//! claimed tasks, timing options.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::conn::ConnSettings;
use crate::{Caller, FailureKind, Lease};

/// The reason written into a task whose worker died while running it.
/// Its outcome is unknown: the worker may have committed the script's writes
/// just before it was lost, so the message says so (a submitter that retries
/// on error must check first).
pub const WORKER_LOST_MESSAGE: &str = "worker lost while running the task (its writes may have \
     been committed before it was lost)";

/// Largest number of tasks [`super::WorkerBroker::claim_batch`] and
/// [`super::WorkerBroker::finish_batch`] claim at once.
pub const MAX_CLAIM_BATCH: usize = 1024;

/// What [`super::WorkerBroker::finish_batch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchFinish {
    /// Per finished task, in the order given: `true` when its result was
    /// written, by this finish or by an earlier try of it whose reply was
    /// lost (the task's hash holds this very result, as long as it has not
    /// expired); `false` when it was no longer this worker's (a reaper or a
    /// third party had ended it) or when the same id came earlier in the
    /// list.
    pub written: Vec<bool>,
    /// Held tasks found cancelled, each ended as `error` without running,
    /// by this finish or by an earlier try of it whose reply was lost:
    /// (task id, reason, kind). The kind is `cancelled`, or `worker_lost`
    /// for a task a reaper put back after its worker died while it ran
    /// (`lostAt`: it may have run).
    pub cancelled: Vec<(String, String, FailureKind)>,
    /// Held tasks no longer this worker's (put back by an earlier try of
    /// this same finish whose reply was lost, ended or put back by a
    /// reaper, or finished by this very call): not to be run here.
    pub gone: Vec<String>,
    /// The next tasks claimed, oldest first (empty when none was asked for
    /// or the queue was empty).
    pub next: Vec<Claim>,
}

/// A task this worker claimed and must now run and finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedTask {
    /// The task id.
    pub task_id: String,
    /// The script source.
    pub script: String,
    /// The submitter's deadline, ms since the Unix epoch.
    pub deadline_ms: Option<u64>,
    /// Who submitted it (the `caller` and `role` fields); `None` for a task
    /// without a `role`, which runs as the trusted identity (see
    /// [`crate::fields::ROLE`]).
    pub caller: Option<Caller>,
    /// When it was submitted (`createdAt`, ms since the Unix epoch, by the
    /// submitter's clock); `None` when a third party wrote something else.
    pub created_ms: Option<u64>,
    /// Its hash held the outcome of an earlier run of its id when it was
    /// claimed: the id was pushed again after it ended. A task a Redis
    /// restored from before its claim (an older snapshot, a failover) holds
    /// none.
    pub ended_before: bool,
    /// The `startedAt` its claim wrote (ms since the Unix epoch, by
    /// Redis' clock): a later claim of the same id writes
    /// another, which tells the two runs apart when a lost reply leaves
    /// the id in the worker's processing list.
    pub started_ms: Option<u64>,
    /// When this worker read the claim's reply (its monotonic clock).
    pub(crate) received: std::time::Instant,
}

/// A task's `createdAt` and `startedAt` as its hash holds them (see
/// [`WorkerBroker::claimed_at`](super::WorkerBroker::claimed_at)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClaimedAt {
    /// `createdAt`, ms since the Unix epoch.
    pub created_ms: Option<u64>,
    /// `startedAt`, ms since the Unix epoch.
    pub started_ms: Option<u64>,
}

impl ClaimedTask {
    /// Its `createdAt` and the `startedAt` its claim wrote.
    pub fn claimed_at(&self) -> ClaimedAt {
        ClaimedAt {
            created_ms: self.created_ms,
            started_ms: self.started_ms,
        }
    }

    /// Time left until the submitter's deadline (zero once it passed):
    /// the deadline less the claim's `startedAt`, both by Redis' clock,
    /// less the time since the claim's reply came, by this machine's
    /// monotonic clock (its wall clock may disagree with Redis' and the
    /// submitter's); `None` without a deadline.
    pub fn time_left(&self) -> Option<Duration> {
        self.deadline_ms.map(|deadline| {
            let started = self.started_ms.unwrap_or_else(crate::now_ms);
            Duration::from_millis(deadline.saturating_sub(started))
                .saturating_sub(self.received.elapsed())
        })
    }

    /// Time since it was submitted (zero if `createdAt` lies in the
    /// future): its claim's `startedAt` less its `createdAt`, both by
    /// Redis' clock, plus the time since the claim's reply came; `None`
    /// without a readable `createdAt`.
    pub fn age(&self) -> Option<Duration> {
        self.queue_wait()
            .map(|waited| waited + self.received.elapsed())
    }

    /// Time it waited in the queue: from its `createdAt` to its claim's
    /// `startedAt`, both by Redis' clock (zero if `createdAt` lies after
    /// it); not the time a task of a claimed batch then waits in its worker
    /// for those ahead of it. `None` without a readable `createdAt`.
    pub fn queue_wait(&self) -> Option<Duration> {
        self.created_ms.map(|created| {
            let started = self.started_ms.unwrap_or_else(crate::now_ms);
            Duration::from_millis(started.saturating_sub(created))
        })
    }
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Claim {
    /// Claimed: run it.
    Run(ClaimedTask),
    /// The deadline had passed; the task was ended as `error` (kind `expired`).
    Expired(String),
    /// Cancelled before it ran (its `cancel` field was set): ended as
    /// `error` (kind `cancelled`) without running.
    Cancelled {
        /// The task id.
        task_id: String,
        /// The reason the canceller gave.
        reason: String,
    },
    /// Put back on the queue by a reaper after its worker died while it
    /// ran (a `retry` task), then cancelled or past its deadline before it
    /// started again: ended as `error` (kind `worker_lost`: it may have
    /// run) without running again.
    Lost {
        /// The task id.
        task_id: String,
        /// The message it ended with.
        reason: String,
    },
    /// Not runnable (no hash, no script, a `role` that is neither `read` nor
    /// `write`, bytes that are not UTF-8): ended as `error` (kind
    /// `invalid`) by the claim, with the reason.
    Invalid {
        /// The task id.
        task_id: String,
        /// Why.
        reason: String,
    },
    /// Not claimed: this worker holds a lease ([`Fence`]) and the queue's
    /// owner key no longer holds it. A moved id went back to the head
    /// of the queue, untouched.
    Fenced {
        /// The id (`""` when nothing was moved).
        task_id: String,
        /// The token the claim carried (0: none). The fence may hold a newer
        /// one by the time the reply comes, which this refusal says nothing of.
        token: u64,
    },
    /// Not `pending` (another worker or program resolved it): dropped from
    /// the processing list untouched, with the reason.
    Skipped {
        /// The task id.
        task_id: String,
        /// Why.
        reason: String,
    },
}

/// Timing settings of a [`super::WorkerBroker`] and a [`super::BlockingPopper`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BrokerOptions {
    /// How long finished task hashes live.
    pub result_ttl: Duration,
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
    /// Bound on one (non-blocking) request's reply.
    pub response_timeout: Duration,
    /// Cap of the reconnect backoff.
    pub max_backoff: Duration,
    /// The CA a `rediss://` URL trusts instead of the system's roots.
    pub redis_ca: Option<crate::RedisCa>,
    /// The lease every claim carries, checked against the queue's owner key
    /// in the claim script itself (no extra round trip). `None`
    /// (a worker without a lease): claims are not fenced. Default `None`.
    pub fence: Option<Fence>,
    /// The circle whose queue this is, named (`circle`) on the log lines
    /// the broker writes itself. Default `None`.
    pub circle: Option<String>,
}

/// A worker's current lease, shared by its connections and its keeper: the
/// holder sets it when it takes the lease and clears it when it loses it (a
/// claim without one is always fenced). A claim's fence compares the owner
/// key with the whole lease (token, pid, host and directory), not the token
/// alone: a fence counter restored behind (an older snapshot, a lagging
/// replica promoted) can give a token number again, but to another holder,
/// whose lease differs in the rest. One value, so the lease, its token and
/// its owner-key value never disagree; cheap to clone and to read.
#[derive(Debug, Clone)]
pub struct Fence(Arc<watch::Sender<Option<Arc<Carried>>>>);

/// A lease as claims carry it: the lease, and the owner key's value it reads
/// as, written once when it is taken rather than at every claim.
#[derive(Debug)]
pub struct Carried {
    /// The lease.
    pub lease: Lease,
    /// `lease` as the owner key holds it.
    pub(crate) value: String,
}

impl Default for Fence {
    fn default() -> Fence {
        Fence(Arc::new(watch::channel(None).0))
    }
}

impl Fence {
    /// A fence holding no lease: every claim is refused until
    /// [`Fence::set`].
    pub fn new() -> Fence {
        Fence::default()
    }

    /// The lease claims carry, if one is held.
    pub fn current(&self) -> Option<Arc<Carried>> {
        self.0.borrow().clone()
    }

    /// The token of the lease claims carry (0: none).
    pub fn token(&self) -> u64 {
        self.0.borrow().as_ref().map_or(0, |c| c.lease.token)
    }

    /// Sets the lease (`None`: it is not held).
    pub fn set(&self, lease: Option<&Lease>) {
        self.0.send_replace(lease.map(|l| {
            Arc::new(Carried {
                lease: l.clone(),
                value: l.to_string(),
            })
        }));
    }

    /// Clears the lease if it is the one of `token` (a lease taken since
    /// stays); whether it did. One step, so a lease taken meanwhile is never
    /// cleared for a refusal of the one before it. `token` 0 clears any.
    pub fn clear(&self, token: u64) -> bool {
        self.0.send_if_modified(|held| {
            let mine = held
                .as_ref()
                .is_some_and(|c| token == 0 || c.lease.token == token);
            if mine {
                *held = None;
            }
            mine
        })
    }

    /// Changes of the lease, from now on.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Carried>>> {
        self.0.subscribe()
    }
}

impl BrokerOptions {
    /// Options with `result_ttl` and defaults otherwise (connect 2 s,
    /// response 5 s, backoff cap 2 s).
    pub fn new(result_ttl: Duration) -> BrokerOptions {
        BrokerOptions {
            result_ttl,
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(2),
            redis_ca: None,
            fence: None,
            circle: None,
        }
    }

    /// Connection settings whose replies may take `blocking` longer than
    /// [`BrokerOptions::response_timeout`] (the server-side block of a
    /// blocking command; zero for short commands).
    pub(crate) fn conn_settings(&self, blocking: Duration) -> ConnSettings {
        ConnSettings {
            connect_timeout: self.connect_timeout,
            response_timeout: Some(blocking + self.response_timeout),
            max_backoff: self.max_backoff,
            ca: self.redis_ca.clone(),
        }
    }

    /// The result TTL in ms, at least 1 (`PEXPIRE` refuses 0).
    pub(crate) fn ttl_ms(&self) -> u64 {
        crate::ttl_ms(self.result_ttl)
    }
}
