//! Takes a circle's script tasks from Redis and runs them on the circle's engine.
//! Long: the crate's rules (batches, groups, lease, shutdown) are written
//! once here, beside the options and the start-up they govern.
//!
//! Place in the graph: `worker` → `engine`, `client`. `cmd` starts one
//! [`run`] per circle; everything Redis-specific (keys, scripts, state
//! changes) lives in `client::broker`.
//!
//! How a worker works:
//! - It takes ids FIFO from the right end of `rhai_tasks:<queue>`, moving each
//!   into a processing list of its own (first a non-blocking claim of up to
//!   [`WorkerOptions::claim_batch`] queued tasks in one script; when the
//!   queue is empty, `BLMOVE` of one on a dedicated
//!   connection, checking the cancellation token between pops; on
//!   cancellation a blocked pop is woken at once with `CLIENT UNBLOCK` from
//!   the other connection). A task is never only in the worker's memory.
//! - It claims each task (`processing`, worker id, start time), runs the
//!   scripts of a batch in order, in groups: each commits without an fsync,
//!   one fsync covers the group, and one script writes every result of the
//!   group (each its own status, TTL, counters and notification) and claims
//!   the next batch. A lone task is claimed and reported at once. The rules
//!   for cancel, deadline, shutdown and a worker lost mid-batch are in the
//!   `group` module. The
//!   take loop runs on the circle's own thread (stack
//!   [`engine::SCRIPT_STACK_SIZE`], a single-threaded runtime of its own) and
//!   runs scripts inline there, never on the caller's runtime; the heartbeat
//!   runs on the caller's runtime with a connection of its own.
//! - One task at a time per circle; circles run in parallel.
//! - A heartbeat key with a TTL says the worker is alive; a reaper in every
//!   worker ends a dead worker's running task as `worker_lost`.
//! - With a lease ([`WorkerConfig::lease`]) it serves its queue only while
//!   it holds the queue's lease: taken at start (refused, or awaited in
//!   standby, while another database holds it), renewed with each beat,
//!   checked by every claim in Redis (fencing token), and given up by the
//!   worker's own clock before it can expire when renewals fail (see the
//!   `lease` module).
//! - On cancellation it stops taking tasks, lets the running script finish
//!   within `shutdown_grace` (counted from the cancellation), then cancels it,
//!   gives the claimed tasks it never started back to the head of the queue
//!   as `pending`, in order, and leaves nothing claimed.
//! - A task whose `cancel` field is set (`client::Client::cancel`; a
//!   `Client::run_with` whose caller went away sets it) ends as `error`, kind
//!   `cancelled`: at its claim without running, or, while its script runs,
//!   once a watcher beside the heartbeat sees the field (it looks every
//!   `cancel_poll` at a script that has run that long) — the script stops and
//!   keeps none of its writes.
//!
//! Main types: [`WorkerConfig`], [`WorkerOptions`], [`WorkerStatus`] /
//! [`WorkerState`], [`run`], [`run_with`].
//!
//! ```no_run
//! # async fn demo(engine: std::sync::Arc<engine::CircleEngine>) -> worker::Result<()> {
//! use std::sync::Arc;
//! let config = worker::WorkerConfig::new("redis://127.0.0.1:6379/", "alpha_circle");
//! let status = Arc::new(worker::WorkerStatus::default());
//! let token = tokio_util::sync::CancellationToken::new();
//! worker::run(config, engine, status, token).await
//! # }
//! ```

mod beat;
mod cancel;
mod finished;
mod group;
mod lease;
mod retry;
mod runner;
mod status;
mod take;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use client::broker::{BlockingPopper, BrokerOptions, WorkerBroker};
use tokio_util::sync::CancellationToken;

pub use lease::{refusal_message, self_stop_after, standby_message};
pub use status::{WorkerState, WorkerStatus};

/// Default [`WorkerConfig::result_ttl`]: one hour.
pub const DEFAULT_RESULT_TTL: Duration = Duration::from_secs(3600);
/// Default [`WorkerConfig::shutdown_grace`]: five seconds.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Default [`WorkerOptions::claim_batch`].
pub const DEFAULT_CLAIM_BATCH: usize = 24;

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
    /// The CA a `rediss://` URL trusts instead of the system's roots.
    /// Default `None`.
    pub redis_ca: Option<client::RedisCa>,
    /// The circle's queue name (see `client::queue_name`).
    pub queue: String,
    /// The circle's name, in the `circle` field of the worker's log lines
    /// about its queue (beside `queue`). Default: the queue name.
    pub circle: String,
    /// How long finished task hashes live.
    pub result_ttl: Duration,
    /// On shutdown, how long a running script may go on before it is cancelled.
    pub shutdown_grace: Duration,
    /// Who this worker is, for the queue's lease
    /// (`client::keys::queue_owner`): the orchestrator's pid, the host and
    /// the database directory (the token is ignored; each acquisition gets a
    /// fresh one). When set, the worker takes the lease before its first
    /// task, renews it with each heartbeat, fences its claims with the token
    /// and stops taking tasks when the lease is lost or not renewed in time
    /// (see [`self_stop_after`]). While another database holds the lease it
    /// refuses to start ([`refusal_message`]), or waits with `standby`.
    /// `None`: no lease, claims unfenced (a third party's worker). Default
    /// `None`.
    pub lease: Option<client::Lease>,
    /// With a `lease`: wait while another holds it (status
    /// [`WorkerState::Standby`]) and take over once it expires, instead of
    /// refusing. Default `false`.
    pub standby: bool,
    /// The pid of an earlier run of this database in another process whose
    /// lease [`await_lease`] took over (its [`Awaited::Held`]): [`run_with`] resolves
    /// the tasks of that run's workers once they stayed silent for a beat
    /// and a half, instead of after their heartbeat TTL (see
    /// `beat::resolve_predecessor`). Default `None` ([`run_with`] finds it
    /// itself when it takes the lease over).
    pub predecessor: Option<u32>,
    /// Set by the time the worker stops: it leaves its lease in Redis
    /// instead of giving it up, so that another holder of the same database
    /// (the orchestrator keeping the lease of a circle that moved to another
    /// Redis or queue) takes it over without a moment free; unrenewed, it
    /// expires after its TTL. Shared by every clone. Default unset.
    pub keep_lease: Arc<AtomicBool>,
}

impl WorkerConfig {
    /// A config with [`DEFAULT_RESULT_TTL`] and [`DEFAULT_SHUTDOWN_GRACE`].
    pub fn new(redis_url: &str, queue: &str) -> WorkerConfig {
        WorkerConfig {
            redis_url: redis_url.to_owned(),
            redis_ca: None,
            queue: queue.to_owned(),
            circle: queue.to_owned(),
            result_ttl: DEFAULT_RESULT_TTL,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            lease: None,
            standby: false,
            predecessor: None,
            keep_lease: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// Timing knobs of a worker. Start from `WorkerOptions::default()`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerOptions {
    /// Server-side timeout of one blocking pop. Shutdown does not wait for
    /// it (a blocked pop is woken with `CLIENT UNBLOCK`); it only sets how
    /// often an idle worker re-issues its pop. Default 20 s.
    pub pop_timeout: Duration,
    /// How often the heartbeat is refreshed. Default 5 s.
    pub heartbeat_interval: Duration,
    /// Heartbeat TTL: a worker silent this long counts as dead. Default 15 s.
    pub heartbeat_ttl: Duration,
    /// How often the reaper looks for dead workers (also once at start); it
    /// runs with a heartbeat, on its schedule. Default 10 s.
    pub reap_interval: Duration,
    /// Cap of the reconnect backoff. Default 2 s.
    pub max_backoff: Duration,
    /// While a script runs, how often its task's `cancel` field is looked
    /// at (one `HGET`; a script shorter than this costs none). A cancelled
    /// running script stops within about this long. Default 100 ms.
    pub cancel_poll: Duration,
    /// Where the worker records each task's outcome and timings (see the
    /// `telemetry` crate); `None` records nothing. Default `None`.
    pub metrics: Option<telemetry::TaskMetrics>,
    /// Most tasks claimed in one round trip when the queue holds several
    /// (oldest first), 1 to `client::broker::MAX_CLAIM_BATCH`; a lone task
    /// is claimed and run at once, never held for a batch to fill.
    /// Default [`DEFAULT_CLAIM_BATCH`].
    pub claim_batch: usize,
    /// A group of a batch (scripts run back to back, one fsync, one
    /// script writing their results) is cut once it has run this long, so
    /// no result waits for the group much longer than this. Default 3 ms.
    pub group_window: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            pop_timeout: Duration::from_secs(20),
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_ttl: Duration::from_secs(15),
            reap_interval: Duration::from_secs(10),
            max_backoff: Duration::from_secs(2),
            cancel_poll: Duration::from_millis(100),
            metrics: None,
            claim_batch: DEFAULT_CLAIM_BATCH,
            group_window: Duration::from_millis(3),
        }
    }
}

/// After `token` is cancelled, wakes the popper's blocked `BLMOVE` (it then
/// returns nothing, as on its timeout) until `taken` says the take loop
/// returned. Retried every 20 ms: an unblock that arrives before the pop has
/// reached Redis finds nothing to wake.
async fn wake_on_cancel(
    broker: &WorkerBroker,
    popper: &BlockingPopper,
    token: &CancellationToken,
    taken: &CancellationToken,
) {
    tokio::select! {
        _ = taken.cancelled() => return,
        _ = token.cancelled() => {}
    }
    loop {
        if popper.is_popping()
            && let Err(e) = broker.wake(popper).await
        {
            log::debug!(
                "worker {}: waking the blocked pop failed: {e}",
                broker.worker_id()
            );
        }
        tokio::select! {
            _ = taken.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// The tasks that run beside the take side, on the caller's runtime: the
/// heartbeat (with the reaper), the lease's keeper and the cancel watcher.
struct Beside {
    /// Stops them all.
    token: CancellationToken,
    beat: tokio::task::JoinHandle<()>,
    keeper: Option<tokio::task::JoinHandle<()>>,
    watcher: tokio::task::JoinHandle<()>,
    /// [`beat::resolve_predecessor`], when the lease was an earlier run's.
    predecessor: Option<tokio::task::JoinHandle<()>>,
}

/// Stops the tasks beside the take side and leaves the queue: deregisters
/// and gives up the lease if it still holds it, unless `keep` is set (see
/// [`WorkerConfig::keep_lease`]). Redis failing here is only logged: a
/// reaper cleans up after a worker that could not deregister, and the lease
/// expires.
async fn leave(beside: Beside, broker: &WorkerBroker, held: &lease::Held, keep: &AtomicBool) {
    beside.token.cancel();
    let _ = beside.beat.await;
    if let Some(keeper) = beside.keeper {
        let _ = keeper.await;
    }
    if let Some(predecessor) = beside.predecessor {
        let _ = predecessor.await;
    }
    let _ = beside.watcher.await;
    let worker_id = broker.worker_id();
    if let Err(e) = broker.deregister().await {
        log::warn!(
            circle = held.circle.as_str(), queue = broker.queue();
            "worker {worker_id} could not deregister: {e}; a reaper will clean up"
        );
    }
    if let Some(carried) = held.fence.current()
        && !keep.load(Ordering::Acquire)
        && let Err(e) = broker.release_lease(&carried.lease).await
    {
        log::debug!(
            circle = held.circle.as_str(), queue = broker.queue();
            "worker {worker_id}: releasing the lease of queue {} failed: {e}",
            broker.queue()
        );
    }
}

/// What [`await_lease`] came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaited {
    /// The lease could be taken (or the worker has none). `predecessor`:
    /// the pid of an earlier run of this database whose lease it took over,
    /// for [`WorkerConfig::predecessor`].
    Held {
        /// See [`WorkerConfig::predecessor`].
        predecessor: Option<u32>,
    },
    /// The token was cancelled first.
    Cancelled,
}

/// Waits until this worker could take its queue's lease (`config.lease`,
/// in standby: see [`WorkerConfig::standby`]), before anything else is
/// opened; the status says who holds it meanwhile. `Ok(false)` when `token`
/// was cancelled first. [`run_with`] takes the lease itself (the same
/// database gets it again with a fresh token); this lets a caller open the
/// circle's database only once the lease was held, so that a standby on
/// shared storage never opens a database another host is writing.
pub async fn await_lease(
    config: &WorkerConfig,
    options: &WorkerOptions,
    status: &WorkerStatus,
    token: &CancellationToken,
) -> Result<Awaited> {
    let fatal = |reason: String| Error::Fatal {
        queue: config.queue.clone(),
        reason,
    };
    let Some(holder) = &config.lease else {
        return Ok(Awaited::Held { predecessor: None });
    };
    let broker = lease_broker(config, options)?;
    match lease::acquire(
        &broker,
        &config.circle,
        holder,
        config.standby,
        options,
        status,
        token,
    )
    .await
    {
        Ok(Some(taken)) => Ok(Awaited::Held {
            predecessor: taken.predecessor,
        }),
        Ok(None) => Ok(Awaited::Cancelled),
        Err(refusal) => {
            status.set(WorkerState::Failed(refusal.clone()));
            Err(fatal(refusal))
        }
    }
}

/// Runs `opening` (the caller opening the circle's database after
/// [`await_lease`] came to [`Awaited::Held`]) while keeping the lease
/// [`await_lease`] took: taken again each heartbeat interval while it is
/// still this database's (the same database gets it with a fresh token, as
/// [`run_with`] does), so that an open longer than the lease lives does
/// not let another host take the circle over while this one opens it.
/// Redis failing here is only logged at debug: [`run_with`] takes the lease
/// itself next.
pub async fn keeping_lease<F: std::future::Future>(
    config: &WorkerConfig,
    options: &WorkerOptions,
    opening: F,
) -> Result<F::Output> {
    let Some(holder) = &config.lease else {
        return Ok(opening.await);
    };
    let broker = lease_broker(config, options)?;
    tokio::pin!(opening);
    loop {
        tokio::select! {
            out = &mut opening => return Ok(out),
            () = tokio::time::sleep(options.heartbeat_interval) => {}
        }
        let again = tokio::select! {
            out = &mut opening => return Ok(out),
            again = broker.acquire_lease(holder, options.heartbeat_ttl) => again,
        };
        if let Err(e) = again {
            log::debug!(
                circle = config.circle.as_str(), queue = config.queue.as_str();
                "queue {}: keeping the lease while the database opens failed: {e}",
                config.queue
            );
        }
    }
}

/// The broker [`await_lease`] and [`keeping_lease`] take the lease with,
/// before the worker runs (its worker id `standby`: it claims nothing).
fn lease_broker(config: &WorkerConfig, options: &WorkerOptions) -> Result<WorkerBroker> {
    let mut broker_options = BrokerOptions::new(config.result_ttl);
    broker_options.max_backoff = options.max_backoff;
    broker_options.redis_ca = config.redis_ca.clone();
    broker_options.circle = Some(config.circle.clone());
    WorkerBroker::new(&config.redis_url, &config.queue, "standby", &broker_options).map_err(|e| {
        Error::Fatal {
            queue: config.queue.clone(),
            reason: e.to_string(),
        }
    })
}

/// A worker id unique per process start: `<pid>-<random>`.
fn new_worker_id() -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    client::keys::worker_id_prefix(std::process::id()) + &random[..12]
}

/// Runs the worker until `token` is cancelled, then drains and returns.
pub async fn run(
    config: WorkerConfig,
    engine: Arc<engine::CircleEngine>,
    status: Arc<WorkerStatus>,
    token: CancellationToken,
) -> Result<()> {
    run_with(config, WorkerOptions::default(), engine, status, token).await
}

/// [`run`] with explicit [`WorkerOptions`].
pub async fn run_with(
    config: WorkerConfig,
    options: WorkerOptions,
    engine: Arc<engine::CircleEngine>,
    status: Arc<WorkerStatus>,
    token: CancellationToken,
) -> Result<()> {
    let fatal = |reason: String| {
        status.set(WorkerState::Failed(reason.clone()));
        Error::Fatal {
            queue: config.queue.clone(),
            reason,
        }
    };
    check_claim_batch(&options).map_err(&fatal)?;
    status.set(WorkerState::Starting);
    let worker_id = new_worker_id();
    let held = Arc::new(lease::Held::new(&config.queue, &config.circle));
    let mut broker_options = BrokerOptions::new(config.result_ttl);
    broker_options.max_backoff = options.max_backoff;
    broker_options.redis_ca = config.redis_ca.clone();
    broker_options.circle = Some(config.circle.clone());
    if config.lease.is_some() {
        broker_options.fence = Some(held.fence.clone());
    }
    let new_broker = || {
        WorkerBroker::new(
            &config.redis_url,
            &config.queue,
            &worker_id,
            &broker_options,
        )
        .map_err(|e| fatal(e.to_string()))
    };
    // Two brokers for one worker id: the heartbeat's connection lives on the
    // caller's runtime, the take side's on the circle thread (connections
    // connect lazily, on the runtime of their first request).
    let beat_broker = Arc::new(new_broker()?);
    let broker = new_broker()?;
    let popper = BlockingPopper::new(
        &config.redis_url,
        &config.queue,
        &worker_id,
        options.pop_timeout,
        &broker_options,
    )
    .map_err(|e| fatal(e.to_string()))?;
    // An earlier run of this database whose lease this one took over.
    let mut predecessor = None;
    if let Some(holder) = &config.lease {
        // Redis unreachable here is not fatal: it is retried, the status
        // saying so.
        match lease::acquire(
            &beat_broker,
            &config.circle,
            holder,
            config.standby,
            &options,
            &status,
            &token,
        )
        .await
        {
            Ok(Some(taken)) => {
                log::info!(
                    circle = config.circle.as_str(), queue = config.queue.as_str(), worker = worker_id.as_str();
                    "worker {worker_id} holds the lease of queue {} (token {})",
                    config.queue,
                    taken.lease.token
                );
                status.set(WorkerState::Starting);
                held.take(&taken.lease, taken.sent);
                predecessor = taken.predecessor.or(config.predecessor);
            }
            Ok(None) => {
                status.set(WorkerState::Stopped);
                return Ok(());
            }
            Err(refusal) => return Err(fatal(refusal)),
        }
    }
    log::info!(
        circle = config.circle.as_str(), queue = config.queue.as_str(), worker = worker_id.as_str();
        "worker {worker_id} takes tasks from queue {}",
        config.queue
    );

    // Register and resolve predecessors' leftovers before the first task.
    beat::beat_once(&beat_broker, &options, true).await;
    let beat_token = CancellationToken::new();
    let beat = tokio::spawn(beat::run(
        Arc::clone(&beat_broker),
        options.clone(),
        beat_token.clone(),
    ));
    let predecessor = predecessor.map(|pid| {
        tokio::spawn(beat::resolve_predecessor(
            Arc::clone(&beat_broker),
            options.clone(),
            config.circle.clone(),
            pid,
            beat_token.clone(),
        ))
    });

    // The running script's cancel flag: set by the watcher when its task's
    // `cancel` field appears, by the keeper when the lease is lost, and by
    // shutdown once the grace is over.
    let cancels = Arc::new(cancel::Cancels::default());
    let keeper = config.lease.clone().map(|holder| {
        let keeper = lease::Keeper {
            broker: Arc::clone(&beat_broker),
            holder,
            standby: config.standby,
            options: options.clone(),
            held: Arc::clone(&held),
            cancels: Arc::clone(&cancels),
            status: Arc::clone(&status),
        };
        tokio::spawn(keeper.run(beat_token.clone()))
    });
    let watcher = tokio::spawn(cancel::watch(
        Arc::clone(&beat_broker),
        Arc::clone(&cancels),
        options.cancel_poll,
        beat_token.clone(),
    ));
    let take_side = {
        let config = config.clone();
        let options = options.clone();
        let status = Arc::clone(&status);
        let token = token.clone();
        let cancels = Arc::clone(&cancels);
        let held = config.lease.is_some().then(|| Arc::clone(&held));
        move || async move {
            let taker = take::Taker {
                held: held.as_deref(),
                config: &config,
                options: &options,
                broker: &broker,
                popper: &popper,
                engine: &engine,
                cancels: &cancels,
                status: &status,
                token: &token,
            };
            // The take loop is never raced (a dropped pop could lose a
            // task): on cancellation a second future wakes its blocked pop
            // instead, until the loop has returned.
            let taken = CancellationToken::new();
            tokio::join!(
                async {
                    taker.run().await;
                    taken.cancel();
                },
                wake_on_cancel(&broker, &popper, &token, &taken),
            );
        }
    };
    let beside = Beside {
        token: beat_token,
        beat,
        keeper,
        watcher,
        predecessor,
    };
    let started = runner::spawn(&config.queue, take_side);
    let (thread, mut done) = match started {
        Ok(started) => started,
        Err(e) => {
            leave(beside, &beat_broker, &held, &config.keep_lease).await;
            return Err(fatal(format!("cannot start the circle thread: {e}")));
        }
    };

    // The take side drains by itself once `token` is cancelled; a script
    // still running after `shutdown_grace` is cancelled from here.
    let ended = tokio::select! {
        ended = &mut done => ended,
        _ = token.cancelled() => tokio::select! {
            ended = &mut done => ended,
            _ = tokio::time::sleep(config.shutdown_grace) => {
                cancels.shutdown();
                done.await
            }
        },
    };
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;

    leave(beside, &beat_broker, &held, &config.keep_lease).await;

    let failure = match ended {
        Ok(Ok(())) => None,
        Ok(Err(reason)) => Some(reason),
        Err(_) => Some("the circle thread panicked".to_owned()),
    };
    if let Some(reason) = failure {
        log::error!(
            circle = config.circle.as_str(), queue = config.queue.as_str(), worker = worker_id.as_str();
            "worker {worker_id} for queue {}: {reason}",
            config.queue
        );
        return Err(fatal(reason));
    }
    status.set(WorkerState::Stopped);
    log::info!(
        circle = config.circle.as_str(), queue = config.queue.as_str(), worker = worker_id.as_str();
        "worker {worker_id} for queue {} stopped",
        config.queue
    );
    Ok(())
}

/// `--claim-batch` out of range, as the worker reports it.
pub(crate) fn check_claim_batch(options: &WorkerOptions) -> Result<(), String> {
    let n = options.claim_batch;
    if (1..=client::broker::MAX_CLAIM_BATCH).contains(&n) {
        return Ok(());
    }
    Err(format!(
        "claim batch {n} is out of range: a worker claims 1 to {} tasks at once",
        client::broker::MAX_CLAIM_BATCH
    ))
}
