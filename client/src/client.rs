//! [`Client`]: submit, wait, run, stats.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::conn::{Conn, ConnSettings};
use crate::listener::{self, Health, ListenerSettings, Registry};
use crate::{Error, Outcome, QueueStats, Result, SubmitOptions, fields, keys, scripts};

/// Options of a [`Client`]. Start from `ClientOptions::default()`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    /// Bound on establishing a connection. Default 2 s.
    pub connect_timeout: Duration,
    /// Bound on one request's reply. Default 5 s.
    pub response_timeout: Duration,
    /// While a waiter waits, it re-reads the task hash this often in case a
    /// notification was lost. Default 2 s.
    pub fallback_poll: Duration,
    /// Cap of the reconnect backoff. Default 2 s.
    pub max_backoff: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(5),
            fallback_poll: Duration::from_secs(2),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// A handle to the broker. Cheap to clone; every clone shares one command
/// connection and one notification listener.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    registry: Arc<Registry>,
    health: watch::Receiver<Health>,
    reply_channel: String,
    options: ClientOptions,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Client {
    /// Connects to `redis_url` and starts the notification listener.
    pub async fn connect(redis_url: &str) -> Result<Client> {
        Client::connect_with(redis_url, ClientOptions::default()).await
    }

    /// [`Client::connect`] with options.
    pub async fn connect_with(redis_url: &str, options: ClientOptions) -> Result<Client> {
        let conn = Conn::new(
            redis_url,
            "client",
            ConnSettings {
                connect_timeout: options.connect_timeout,
                response_timeout: Some(options.response_timeout),
                max_backoff: options.max_backoff,
            },
        )?;
        conn.get().await?;
        let client_id = uuid::Uuid::new_v4().simple().to_string();
        let reply_channel = keys::reply_channel(&client_id);
        let settings = ListenerSettings {
            channel: reply_channel.clone(),
            connect_timeout: options.connect_timeout,
            max_backoff: options.max_backoff,
            url: conn.url().to_owned(),
        };
        let first = listener::subscribe(conn.redis_client(), &settings)
            .await
            .map_err(|reason| conn.unavailable(&reason))?;
        // Up from the start: the first subscription above succeeded.
        let (health_tx, health_rx) = watch::channel(Health { up: true });
        let registry = Arc::new(Registry::default());
        let listener = tokio::spawn(listener::run(
            conn.redis_client().clone(),
            settings,
            Some(first),
            Arc::clone(&registry),
            health_tx,
        ));
        Ok(Client {
            inner: Arc::new(Inner {
                conn,
                registry,
                health: health_rx,
                reply_channel,
                options,
                listener,
            }),
        })
    }

    /// Writes the task hash and pushes its id (one MULTI/EXEC); returns the id.
    pub async fn submit(
        &self,
        queue: &str,
        script: &str,
        options: &SubmitOptions,
    ) -> Result<String> {
        self.submit_inner(queue, script, options, false).await
    }

    /// Like [`Client::submit`], but the task opts in to being retried: if its
    /// worker dies while running it, a reaper puts it back at the head of the
    /// queue instead of ending it with `worker_lost`. Only for scripts that
    /// are safe to run twice.
    pub async fn submit_retryable(
        &self,
        queue: &str,
        script: &str,
        options: &SubmitOptions,
    ) -> Result<String> {
        self.submit_inner(queue, script, options, true).await
    }

    async fn submit_inner(
        &self,
        queue: &str,
        script: &str,
        options: &SubmitOptions,
        retry: bool,
    ) -> Result<String> {
        let task_id = uuid::Uuid::new_v4().to_string();
        self.push(queue, &task_id, script, options, retry).await?;
        Ok(task_id)
    }

    async fn push(
        &self,
        queue: &str,
        task_id: &str,
        script: &str,
        options: &SubmitOptions,
        retry: bool,
    ) -> Result<()> {
        let now = now_ms();
        let deadline = now.saturating_add(options.timeout.as_millis() as u64);
        let mut hash: Vec<(&str, String)> = vec![
            (fields::SCRIPT, script.to_owned()),
            (fields::STATUS, fields::status::PENDING.to_owned()),
            (fields::CREATED_AT, now.to_string()),
            (fields::UPDATED_AT, now.to_string()),
            (fields::DEADLINE, deadline.to_string()),
            (fields::REPLY_TO, self.inner.reply_channel.clone()),
        ];
        if retry {
            hash.push((fields::RETRY, "1".to_owned()));
        }
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(keys::task_details(task_id))
            .arg(&hash)
            .ignore()
            .cmd("LPUSH")
            .arg(keys::tasks(queue))
            .arg(task_id)
            .ignore();
        self.inner.conn.query_pipe::<()>(&pipe).await
    }

    /// Waits for the task to end, up to `timeout`.
    pub async fn wait(&self, task_id: &str, timeout: Duration) -> Result<Outcome> {
        let (guard, rx) = self.inner.registry.register(task_id);
        let outcome = self.await_outcome(task_id, timeout, rx, true).await;
        drop(guard);
        outcome
    }

    /// `submit` then `wait` with `options.timeout`.
    ///
    /// The task belongs to this call: when the call does not end with the
    /// task's outcome (its future is dropped, say because the WebSocket
    /// client that asked went away, or the broker failed under it; not on
    /// [`Error::Timeout`], as the task's deadline ends it), it asks in the
    /// background for the task to be cancelled ([`Client::cancel`] with
    /// [`SUBMITTER_GONE`]), so no worker spends time on a result nobody
    /// reads: a queued task then ends without running, a running script is
    /// stopped and keeps none of its writes. Use [`Client::submit`] for a
    /// task that should outlive its submitter, or [`Client::run_detached`].
    pub async fn run(&self, queue: &str, script: &str, options: &SubmitOptions) -> Result<Outcome> {
        self.run_inner(queue, script, options, true).await
    }

    /// [`Client::run`] for a task that runs to its end whether or not its
    /// outcome is awaited: dropping this future cancels nothing (a JSON-RPC
    /// notification's script, whose sender wants no reply, is one).
    pub async fn run_detached(
        &self,
        queue: &str,
        script: &str,
        options: &SubmitOptions,
    ) -> Result<Outcome> {
        self.run_inner(queue, script, options, false).await
    }

    async fn run_inner(
        &self,
        queue: &str,
        script: &str,
        options: &SubmitOptions,
        cancel_when_gone: bool,
    ) -> Result<Outcome> {
        let task_id = uuid::Uuid::new_v4().to_string();
        // Registered before the push, so the notification cannot be missed
        // and no initial read of the hash is needed.
        let (guard, rx) = self.inner.registry.register(&task_id);
        // Armed before the push: a push whose reply is lost may still have
        // queued the task.
        let mut cancel = CancelOnDrop {
            client: self,
            task_id: &task_id,
            armed: cancel_when_gone,
        };
        self.push(queue, &task_id, script, options, false).await?;
        let outcome = self
            .await_outcome(&task_id, options.timeout, rx, false)
            .await;
        // A task past its deadline needs no cancel: the deadline written
        // with it ends it (`expired` when still queued; the engine stops a
        // running script at it).
        cancel.armed &= !matches!(outcome, Ok(_) | Err(Error::Timeout { .. }));
        drop(guard);
        outcome
    }

    /// Asks for the task to be cancelled, giving `reason`: a `pending` task
    /// then ends as `error` (kind `cancelled`, "cancelled before it ran:
    /// &lt;reason&gt;") when a worker takes it, without running; a `processing`
    /// one is stopped by its worker (ours look every 100 ms by default) and
    /// ends as `error` (kind `cancelled`), none of its writes kept — unless
    /// it finishes first. `true` when the request was recorded; `false` when
    /// the task had ended already or does not exist (then nothing is
    /// changed). The first reason given stays.
    pub async fn cancel(&self, task_id: &str, reason: &str) -> Result<bool> {
        let status: Option<Vec<u8>> = self
            .inner
            .conn
            .invoke(&scripts::cancel(task_id, reason))
            .await?;
        Ok(matches!(
            status.as_deref(),
            Some(b"pending") | Some(b"processing")
        ))
    }

    async fn await_outcome(
        &self,
        task_id: &str,
        timeout: Duration,
        mut rx: oneshot::Receiver<Outcome>,
        check_first: bool,
    ) -> Result<Outcome> {
        let deadline = Instant::now() + timeout;
        let mut health = self.inner.health.clone();
        health.borrow_and_update();
        if check_first || !health.borrow().up {
            if let Some(outcome) = self.check(task_id).await? {
                return Ok(outcome);
            }
        }
        let poll = self.inner.options.fallback_poll;
        let mut next_poll = Instant::now() + poll;
        loop {
            tokio::select! {
                delivered = &mut rx => {
                    if let Ok(outcome) = delivered {
                        return Ok(outcome);
                    }
                    // The listener is gone (client dropping); read the hash.
                    return match self.check(task_id).await? {
                        Some(outcome) => Ok(outcome),
                        None => Err(self.inner.conn.unavailable("the reply listener stopped")),
                    };
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return match self.check(task_id).await {
                        Ok(Some(outcome)) => Ok(outcome),
                        _ => Err(Error::Timeout { task_id: task_id.to_owned(), timeout }),
                    };
                }
                _ = tokio::time::sleep_until(next_poll) => {
                    next_poll = Instant::now() + poll;
                    if let Some(outcome) = self.check(task_id).await? {
                        return Ok(outcome);
                    }
                }
                changed = health.changed() => {
                    if changed.is_err() {
                        // Listener gone: fall back to polling only.
                        next_poll = Instant::now();
                        continue;
                    }
                    // Down: an error here tells the waiter at once. Up again:
                    // a notification may have been lost during the outage.
                    if let Some(outcome) = self.check(task_id).await? {
                        return Ok(outcome);
                    }
                }
            }
        }
    }

    /// Reads the task hash: its outcome, or `None` while it is not finished.
    pub async fn check(&self, task_id: &str) -> Result<Option<Outcome>> {
        let fields: HashMap<String, String> = self
            .inner
            .conn
            .query(redis::cmd("HGETALL").arg(keys::task_details(task_id)))
            .await?;
        fields::outcome(task_id, &fields)
    }

    /// For each queue, the database whose workers currently serve it, as
    /// they named it (see [`keys::queue_owner`]); `None` when no worker of
    /// ours holds it. One round trip.
    pub async fn queue_owners(&self, queues: &[&str]) -> Result<Vec<Option<String>>> {
        if queues.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        for queue in queues {
            cmd.arg(keys::queue_owner(queue));
        }
        self.inner.conn.query(&cmd).await
    }

    /// The counters of `queue` (one [`Client::stats_many`] row).
    pub async fn stats(&self, queue: &str) -> Result<QueueStats> {
        self.stats_many(&[queue])
            .await?
            .pop()
            .ok_or_else(|| Error::Protocol(format!("stats of queue {queue} answered no row")))
    }

    /// The counters of every queue in `queues`, in order, read by one script
    /// in one round trip (where [`Client::stats`] costs one round trip per
    /// queue). Queues are read in chunks of [`STATS_BATCH`], one round trip
    /// each, so Redis is never blocked long by one script.
    pub async fn stats_many(&self, queues: &[&str]) -> Result<Vec<QueueStats>> {
        let mut out = Vec::with_capacity(queues.len());
        for chunk in queues.chunks(STATS_BATCH) {
            let invocation = scripts::stats_many(chunk);
            let rows: Vec<(u64, u64, u64, u64, Option<u64>)> =
                self.inner.conn.invoke(&invocation).await?;
            if rows.len() != chunk.len() {
                return Err(Error::Protocol(format!(
                    "stats of {} queues answered {} rows",
                    chunk.len(),
                    rows.len()
                )));
            }
            out.extend(rows.into_iter().map(queue_stats));
        }
        Ok(out)
    }

    /// Waiters currently registered (task ids), for diagnostics.
    pub fn waiting(&self) -> usize {
        self.inner.registry.len()
    }
}

/// The reason [`Client::run`] gives when it asks to cancel a task whose
/// outcome it will not deliver.
pub const SUBMITTER_GONE: &str = "the client that sent the task went away";

/// Cancels the task of a [`Client::run`] call that is dropped (or fails)
/// before the task's outcome reached it. Drop cannot wait, so the request
/// goes out on a task of the current runtime.
struct CancelOnDrop<'a> {
    client: &'a Client,
    task_id: &'a str,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            log::debug!(
                "task {}: no runtime left to ask for its cancellation",
                self.task_id
            );
            return;
        };
        let client = self.client.clone();
        let task_id = self.task_id.to_owned();
        runtime.spawn(async move {
            match client.cancel(&task_id, SUBMITTER_GONE).await {
                Ok(true) => log::debug!("task {task_id}: cancelled, its submitter went away"),
                Ok(false) => {}
                Err(e) => log::debug!("task {task_id}: asking for its cancellation failed: {e}"),
            }
        });
    }
}

/// Queues per script call of [`Client::stats_many`].
pub const STATS_BATCH: usize = 256;

/// A `STATS_MANY` script row as [`QueueStats`].
fn queue_stats(
    (queue_len, processed, failed, in_flight, last_beat): (u64, u64, u64, u64, Option<u64>),
) -> QueueStats {
    QueueStats {
        queue_len,
        processed,
        failed,
        in_flight,
        heartbeat_age: last_beat
            .filter(|&ms| ms > 0)
            .map(|ms| Duration::from_millis(now_ms().saturating_sub(ms))),
    }
}
