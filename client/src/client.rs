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
    /// The task belongs to this call ([`OnDrop::Cancel`]): when the call
    /// does not end with the task's outcome — its future is dropped, say
    /// because the WebSocket client that asked went away, or the broker
    /// failed under it; not on [`Error::Timeout`], as the task's deadline
    /// ends it — it asks in the background for the task to be cancelled
    /// ([`Client::cancel`]), so no worker spends time on a result nobody
    /// reads: a queued task then ends without running, a running script is
    /// stopped and keeps none of its writes (unless it finished first). Use
    /// [`Client::run_with`] to choose otherwise, or [`Client::submit`] for a
    /// task that should outlive its submitter.
    pub async fn run(&self, queue: &str, script: &str, options: &SubmitOptions) -> Result<Outcome> {
        self.run_with(queue, script, options, OnDrop::Cancel).await
    }

    /// [`Client::run`], with `on_drop` saying what happens to the task when
    /// the call ends without its outcome.
    pub async fn run_with(
        &self,
        queue: &str,
        script: &str,
        options: &SubmitOptions,
        on_drop: OnDrop<'_>,
    ) -> Result<Outcome> {
        let task_id = uuid::Uuid::new_v4().to_string();
        // Armed before the push: a push whose reply is lost may still have
        // queued the task.
        let mut cancel = CancelOnDrop {
            client: self,
            task_id: &task_id,
            on_drop,
            reason: SUBMITTER_GONE,
            retry_for: options.timeout,
        };
        let outcome = match self
            .push_watched(queue, task_id.clone(), script, options)
            .await
        {
            Ok(watched) => watched.outcome().await,
            Err(e) => Err(e),
        };
        match cancel_reason(&outcome) {
            Some(reason) => cancel.reason = reason,
            None => cancel.on_drop = OnDrop::Keep,
        }
        outcome
    }

    /// Submits a task whose outcome is then awaited with
    /// [`Watched::outcome`], typically elsewhere: the waiter is registered
    /// before the push, so the outcome comes by notification with no read
    /// of the hash first (one round trip less than `submit` then `wait`).
    /// Dropping the [`Watched`] cancels nothing.
    pub async fn submit_watched(
        &self,
        queue: &str,
        script: &str,
        options: &SubmitOptions,
    ) -> Result<Watched> {
        let task_id = uuid::Uuid::new_v4().to_string();
        self.push_watched(queue, task_id, script, options).await
    }

    async fn push_watched(
        &self,
        queue: &str,
        task_id: String,
        script: &str,
        options: &SubmitOptions,
    ) -> Result<Watched> {
        // Registered before the push, so the notification cannot be missed.
        let (guard, rx) = self.inner.registry.register(&task_id);
        self.push(queue, &task_id, script, options, false).await?;
        Ok(Watched {
            client: self.clone(),
            task_id,
            timeout: options.timeout,
            rx,
            _guard: guard,
        })
    }

    /// Asks for the task to be cancelled, giving `reason`: a `pending` task
    /// then ends as `error` (kind `cancelled`, "cancelled before it ran:
    /// &lt;reason&gt;") when a worker takes it, without running; a `processing`
    /// one is stopped by its worker (ours look every 100 ms by default) and
    /// ends as `error` (kind `cancelled`), none of its writes kept — unless
    /// it finishes first. `true` when the task was `pending` or `processing`
    /// (so a cancel is recorded now: this one, or an earlier one, whose
    /// reason stays); `false` when it had ended already or does not exist
    /// (then nothing is changed, and no hash is created).
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
        // Bytes, then text: a third party may have left a field (a script,
        // a cancel reason) that is not UTF-8, which must not make the
        // outcome unreadable.
        let raw: Vec<(Vec<u8>, Vec<u8>)> = self
            .inner
            .conn
            .query(redis::cmd("HGETALL").arg(keys::task_details(task_id)))
            .await?;
        let fields: HashMap<String, String> = raw
            .into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(&k).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect();
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

/// A task submitted by [`Client::submit_watched`], its waiter registered.
pub struct Watched {
    client: Client,
    task_id: String,
    timeout: Duration,
    rx: oneshot::Receiver<Outcome>,
    _guard: crate::listener::WaiterGuard,
}

impl Watched {
    /// The task id.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// Waits for the task to end, up to the submission's timeout (as
    /// [`Client::wait`] does, without its first read of the hash).
    pub async fn outcome(self) -> Result<Outcome> {
        self.client
            .await_outcome(&self.task_id, self.timeout, self.rx, false)
            .await
    }
}

/// What happens to the task of a [`Client::run_with`] call that ends
/// without delivering the task's outcome (its future dropped, or the broker
/// failed under it). A call that timed out never cancels: the task's
/// deadline ends it.
#[derive(Clone, Copy)]
pub enum OnDrop<'a> {
    /// Cancel the task ([`Client::run`]).
    Cancel,
    /// Let it run to its end (a JSON-RPC notification: its sender asked for
    /// no reply, not for nothing to happen).
    Keep,
    /// Cancel it unless the function, asked at that moment, says to keep it
    /// (a server shutting down keeps its tasks, which then get the worker's
    /// own shutdown grace).
    CancelUnless(&'a (dyn Fn() -> bool + Send + Sync)),
}

/// The reason [`Client::run`] gives when its future is dropped before the
/// task's outcome reached it.
pub const SUBMITTER_GONE: &str = "the client that sent the task went away";

/// The reason [`Client::run`] gives when the broker failed while it waited
/// (its caller got an error and may try again: the first try must not run
/// as well).
pub const SUBMITTER_FAILED: &str =
    "the broker failed while the client that sent the task waited, so it stopped waiting";

/// Whether a call that ended with `outcome` cancels its task, and why.
fn cancel_reason(outcome: &Result<Outcome>) -> Option<&'static str> {
    match outcome {
        Ok(_) | Err(Error::Timeout { .. }) => None,
        Err(_) => Some(SUBMITTER_FAILED),
    }
}

/// Cancels the task of a [`Client::run_with`] call that is dropped (or
/// fails) before the task's outcome reached it. Drop cannot wait, so the
/// request goes out on a task of the current runtime, retried through a
/// broker outage for up to the task's timeout (best effort: a runtime that
/// shuts down, or an outage that outlasts it, leaves the task to its
/// deadline).
struct CancelOnDrop<'a> {
    client: &'a Client,
    task_id: &'a str,
    on_drop: OnDrop<'a>,
    reason: &'static str,
    retry_for: Duration,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        match self.on_drop {
            OnDrop::Keep => return,
            OnDrop::CancelUnless(keep) if keep() => return,
            OnDrop::Cancel | OnDrop::CancelUnless(_) => {}
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
        let reason = self.reason;
        let give_up = Instant::now() + self.retry_for;
        runtime.spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match client.cancel(&task_id, reason).await {
                    Ok(true) => log::debug!("task {task_id}: cancelled: {reason}"),
                    Ok(false) => {}
                    Err(e @ Error::Unavailable { .. }) if Instant::now() + backoff < give_up => {
                        log::debug!(
                            "task {task_id}: asking for its cancellation failed: {e}; retrying"
                        );
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(client.inner.options.max_backoff);
                        continue;
                    }
                    Err(e) => {
                        log::debug!("task {task_id}: asking for its cancellation failed: {e}")
                    }
                }
                return;
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn only_a_call_that_failed_without_timing_out_cancels_its_task() {
        let done = Ok(Outcome::Completed(crate::TaskOutput {
            task_id: "t".into(),
            output: "42".into(),
            printed: String::new(),
            run_time: None,
        }));
        assert_eq!(cancel_reason(&done), None);
        let timed_out = Err(Error::Timeout {
            task_id: "t".into(),
            timeout: Duration::from_secs(1),
        });
        assert_eq!(cancel_reason(&timed_out), None, "the deadline ends it");
        let down = Err(Error::Unavailable {
            url: "redis://127.0.0.1:1/".into(),
            reason: "refused".into(),
        });
        assert_eq!(cancel_reason(&down), Some(SUBMITTER_FAILED));
        let broken = Err(Error::Protocol("bad".into()));
        assert_eq!(cancel_reason(&broken), Some(SUBMITTER_FAILED));
    }
}
