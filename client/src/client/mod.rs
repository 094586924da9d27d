//! [`Client`]: the submitting side. This file holds the handle, its
//! connections, and the requests that are one round trip (push, cancel,
//! counters, queue owners); `wait` holds submitting with a waiter and
//! waiting, `run` the submit-and-wait call and its cancel-on-drop, and
//! `test_support` what only tests use.

mod gateways;
mod run;
#[cfg(feature = "test-support")]
mod test_support;
mod wait;

pub use gateways::{Gateway, GatewayProcess};
pub use run::{OnDrop, SUBMITTER_FAILED, SUBMITTER_GONE};
pub use wait::Watched;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::conn::{Conn, ConnSettings};
use crate::listener::{self, Health, ListenerSettings, Registry};
use crate::{Error, QueueStats, Result, SubmitOptions, fields, keys, scripts};

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
    /// The CA a `rediss://` URL trusts instead of the system's roots.
    /// Default `None`.
    pub redis_ca: Option<crate::RedisCa>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(5),
            fallback_poll: Duration::from_secs(2),
            max_backoff: Duration::from_secs(2),
            redis_ca: None,
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
    /// The runtime this client was started on, where its cancels on drop
    /// run (see `run::CancelOnDrop`).
    home: tokio::runtime::Handle,
    /// For a twin, the client it was made from: its cancels on drop go
    /// through that one, on its longer-lived runtime.
    base: Option<Client>,
    /// Cancels on drop asked for and not yet written (or given up).
    cancels: Arc<run::Pending>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL as printed everywhere: no credentials.
        f.debug_struct("Client")
            .field("url", &self.inner.conn.url())
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
    }
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
                ca: options.redis_ca.clone(),
            },
        )?;
        Client::start(conn, options, None).await
    }

    /// Another client to the same Redis with the same options, with its own
    /// command connection and listener, their tasks spawned on the calling
    /// thread's runtime. A server that runs its connections on one thread
    /// (actix's workers) submits through a twin made on that thread, so a
    /// request and its reply never cross to another thread. The twin's
    /// tasks are cancelled with its runtime or when its last clone drops.
    pub async fn twin(&self) -> Result<Client> {
        let base = self.inner.base.clone().unwrap_or_else(|| self.clone());
        Client::start(
            self.inner.conn.sibling(),
            self.inner.options.clone(),
            Some(base),
        )
        .await
    }

    /// Whether `other` is a clone of this client (the same connections).
    pub fn same_as(&self, other: &Client) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Connects `conn` and starts the listener; `base`: the client a twin
    /// was made from.
    async fn start(conn: Conn, options: ClientOptions, base: Option<Client>) -> Result<Client> {
        conn.get().await?;
        let client_id = uuid::Uuid::new_v4().simple().to_string();
        let reply_channel = keys::reply_channel(&client_id);
        let settings = ListenerSettings {
            channel: reply_channel.clone(),
            connect_timeout: options.connect_timeout,
            max_backoff: options.max_backoff,
            url: conn.url().to_owned(),
        };
        let first = listener::subscribe(conn.target(), &settings)
            .await
            .map_err(|reason| conn.unavailable(&reason))?;
        // Up from the start: the first subscription above succeeded.
        let (health_tx, health_rx) = watch::channel(Health { up: true });
        let registry = Arc::new(Registry::default());
        let listener = tokio::spawn(listener::run(
            conn.target().clone(),
            settings,
            Some(first),
            Arc::clone(&registry),
            health_tx,
            conn.doubter(),
        ));
        Ok(Client {
            inner: Arc::new(Inner {
                conn,
                registry,
                health: health_rx,
                reply_channel,
                options,
                listener,
                home: tokio::runtime::Handle::current(),
                base,
                cancels: Arc::default(),
            }),
        })
    }

    /// Writes the task hash and pushes its id, in one MULTI/EXEC (the hash
    /// exists before any worker can pop the id). A connection that broke
    /// while idle (Redis restarted) fails its next request, this one: it is
    /// sent again once, on a fresh connection, as a script that writes only
    /// if the first try did not (see [`scripts::submit_again`]), so a task is
    /// never queued twice and a worker that took it already is not undone
    /// (see [`Client::submit_again`] for when that one fails too). Only a
    /// broken connection is retried (the
    /// first try ran or never will), never a reply that timed out (the
    /// first try may land later): that push is [`Landed::Unsure`], and the
    /// task's waiter learns its fate.
    async fn push(
        &self,
        queue: &str,
        task_id: &str,
        script: &str,
        options: &SubmitOptions,
    ) -> Result<Landed> {
        // Redis' clock, which workers compare the deadline with.
        let now = self.inner.conn.now_ms();
        // A timeout past u64 ms (a caller's "no limit") is the end of time,
        // not the remainder the cast would keep.
        let timeout_ms = u64::try_from(options.timeout.as_millis()).unwrap_or(u64::MAX);
        let deadline = now.saturating_add(timeout_ms);
        let mut hash: Vec<(&str, String)> = vec![
            (fields::SCRIPT, script.to_owned()),
            (fields::STATUS, fields::status::PENDING.to_owned()),
            (fields::CREATED_AT, now.to_string()),
            (fields::UPDATED_AT, now.to_string()),
            (fields::DEADLINE, deadline.to_string()),
            (fields::REPLY_TO, self.inner.reply_channel.clone()),
        ];
        if let Some(ttl) = options.delivered_ttl {
            hash.push((fields::DELIVERED_TTL, crate::ttl_ms(ttl).to_string()));
        }
        if let Some(caller) = &options.caller {
            hash.push((fields::CALLER, caller.name.clone()));
            hash.push((fields::ROLE, caller.role.as_str().to_owned()));
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
        let pushed = match self.inner.conn.query_pipe_or_broken::<()>(&pipe).await {
            // A command refused at EXEC time (the queue key holds another
            // type: WRONGTYPE) does not undo the others: the hash was
            // written, the id not pushed. No worker can see the hash, and
            // a pending one has no TTL: it goes, or it would stay for good.
            Err(e @ Error::Protocol(_)) => {
                let _: Result<i64> = self
                    .inner
                    .conn
                    .query(redis::cmd("DEL").arg(keys::task_details(task_id)))
                    .await;
                return Err(self.queue_key_refused(queue, e));
            }
            other => other?,
        };
        match pushed {
            Ok(()) => Ok(Landed::Queued),
            // Sent, unanswered: the transaction may still run once Redis goes
            // on (stopped, paused, busy), and a worker may take the task
            // before any cancel lands. Its waiter waits for it as queued, up
            // to its deadline, rather than a caller told "nothing was
            // queued" sending it again.
            Err(crate::conn::Unsure::TimedOut(e)) => {
                log::debug!("submitting task {task_id}: no reply ({e}); waiting for it as queued");
                Ok(Landed::Unsure)
            }
            Err(crate::conn::Unsure::Broken(broken)) => {
                log::debug!("submitting task {task_id} again after: {broken}");
                self.submit_again(queue, task_id, &hash).await
            }
        }
    }

    /// Sends a submit whose first try went out on a connection that broke
    /// again, as a script that writes only if the first try did not. Its
    /// own fate, and so the task's, is told apart:
    /// - answered: queued (by either try);
    /// - unanswered within the response timeout: it may still run when
    ///   Redis goes on, so the task counts as queued ([`Landed::Unsure`]),
    ///   as a first try's would; a cancel sent now could land before it;
    /// - refused by Redis (out of memory, an ACL, a queue key of another
    ///   type): the script ran or was refused whole, so whether the task is
    ///   there is read, and an absent one was not queued: the refusal,
    ///   naming why;
    /// - not sent, or its connection broke too: the first try may have
    ///   landed (and reached a replica promoted since) or not; a connection
    ///   that broke while idle fails the first try without sending it,
    ///   and nothing tells the two apart: [`Error::MaybeQueued`]. (The
    ///   listener puts the command connection in doubt as soon as its own
    ///   ends, so a dead idle one is found before a submit goes out on it,
    ///   but for a submit sent in that instant.)
    async fn submit_again(
        &self,
        queue: &str,
        task_id: &str,
        hash: &[(&str, String)],
    ) -> Result<Landed> {
        let conn = &self.inner.conn;
        let unknown = |reason: String| Error::MaybeQueued {
            task_id: task_id.to_owned(),
            url: conn.url().to_owned(),
            reason,
        };
        let reason = |e: Error| match e {
            Error::Unavailable { reason, .. } => reason,
            other => other.to_string(),
        };
        match conn
            .invoke_or_broken::<i64>(&scripts::submit_again(queue, task_id, hash))
            .await
        {
            Ok(Ok(_wrote)) => Ok(Landed::Queued),
            Ok(Err(crate::conn::Unsure::TimedOut(e))) => {
                log::debug!(
                    "submitting task {task_id} again: no reply ({e}); waiting for it as queued"
                );
                Ok(Landed::Unsure)
            }
            Ok(Err(crate::conn::Unsure::Broken(e))) => Err(unknown(reason(e))),
            Err(e) if e.is_refusal() => {
                let there: Result<i64> = conn
                    .query_idempotent(redis::cmd("EXISTS").arg(keys::task_details(task_id)))
                    .await;
                match there {
                    Ok(1) => Ok(Landed::Queued),
                    Ok(_) => Err(self.queue_key_refused(queue, e)),
                    Err(_) => Err(unknown(reason(e))),
                }
            }
            Err(e) => Err(unknown(reason(e))),
        }
    }

    /// A push Redis refused because the queue key holds another type than
    /// a list (`WRONGTYPE`: another program wrote it): Redis refusing that
    /// queue until its operator acts ([`crate::Refusal::KeyType`]), naming
    /// the key, not a fault of this system. Any other error as it is.
    fn queue_key_refused(&self, queue: &str, e: Error) -> Error {
        match &e {
            Error::Protocol(text) if text.contains("WRONGTYPE") => {
                self.inner.conn.unavailable(&format!(
                    "the queue key {} {}",
                    keys::tasks(queue),
                    crate::conn::KEY_TYPE_REFUSAL
                ))
            }
            _ => e,
        }
    }

    /// Asks for the task to be cancelled, giving `reason`: a `pending` task
    /// then ends as `error` (kind `cancelled`, "cancelled before it ran:
    /// &lt;reason&gt;"; kind `worker_lost` for one a reaper put back after
    /// its worker died while it ran, see [`fields::LOST_AT`]) when a worker
    /// takes it, without running; a `processing`
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
            .invoke_idempotent(&scripts::cancel(task_id, reason))
            .await?;
        Ok(matches!(
            status.as_deref(),
            Some(b"pending") | Some(b"processing")
        ))
    }

    /// The ids of up to `max` tasks waiting in `queue`, the oldest (next to
    /// run) first (an id that is not UTF-8 is left out). Read only; one round
    /// trip.
    pub async fn queued(&self, queue: &str, max: usize) -> Result<Vec<String>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let first = -i64::try_from(max).unwrap_or(i64::MAX);
        let raw: Vec<Vec<u8>> = self
            .inner
            .conn
            .query_idempotent(
                redis::cmd("LRANGE")
                    .arg(keys::tasks(queue))
                    .arg(first)
                    .arg(-1),
            )
            .await?;
        // Workers take from the right end.
        Ok(readable_ids(raw.into_iter().rev()))
    }

    /// The ids of up to `max` tasks of `queue` that its workers claimed in a
    /// batch behind the one each runs (claimed, not started unless a group
    /// of the batch is in flight). A `cancel` of one ends it without
    /// running at its worker's next group. Read only; one round trip.
    pub async fn held(&self, queue: &str, max: usize) -> Result<Vec<String>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let raw: Vec<Vec<u8>> = self
            .inner
            .conn
            .invoke_idempotent(&scripts::held(queue, max))
            .await?;
        Ok(readable_ids(raw))
    }

    /// Asks Redis for a `PING` on the command connection; how long the
    /// round trip took (a reconnect included, when one was needed).
    pub async fn ping(&self) -> Result<Duration> {
        let started = std::time::Instant::now();
        let _pong: String = self
            .inner
            .conn
            .query_idempotent(&redis::cmd("PING"))
            .await?;
        Ok(started.elapsed())
    }

    /// For each queue, its lease (see [`keys::queue_owner`]): who serves it
    /// now; `None` when no worker of ours holds it. One round trip.
    /// `Err(Protocol)` when a key holds something that is not a lease.
    pub async fn queue_leases(&self, queues: &[&str]) -> Result<Vec<Option<crate::Lease>>> {
        if queues.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        for queue in queues {
            cmd.arg(keys::queue_owner(queue));
        }
        let raw: Vec<Option<String>> = self.inner.conn.query_idempotent(&cmd).await?;
        raw.into_iter()
            .map(|v| {
                v.map(|v| crate::Lease::parse(&v).map_err(Error::Protocol))
                    .transpose()
            })
            .collect()
    }

    /// The counters of every queue in `queues`, in order, read by one script
    /// in one round trip. Queues are read in chunks of [`STATS_BATCH`], one round trip
    /// each, so Redis is never blocked long by one script.
    pub async fn stats_many(&self, queues: &[&str]) -> Result<Vec<QueueStats>> {
        let mut out = Vec::with_capacity(queues.len());
        for chunk in queues.chunks(STATS_BATCH) {
            let invocation = scripts::stats_many(chunk);
            let rows: Vec<StatsRow> = self.inner.conn.invoke_idempotent(&invocation).await?;
            if rows.len() != chunk.len() {
                return Err(Error::Protocol(format!(
                    "stats of {} queues answered {} rows",
                    chunk.len(),
                    rows.len()
                )));
            }
            let now = self.inner.conn.now_ms();
            out.extend(rows.into_iter().map(|row| queue_stats(row, now)));
        }
        Ok(out)
    }
}

/// The ids of `raw` that are UTF-8: one a third party pushed as other
/// bytes cannot be named by a `String` (its worker ends it as `invalid`),
/// and must not make the others unreadable.
fn readable_ids(raw: impl IntoIterator<Item = Vec<u8>>) -> Vec<String> {
    raw.into_iter()
        .filter_map(|id| String::from_utf8(id).ok())
        .collect()
}

/// Queues per script call of [`Client::stats_many`].
pub const STATS_BATCH: usize = 256;

/// A `STATS_MANY` script row: queue length, processed, failed, in flight,
/// last heartbeat, lease.
type StatsRow = (u64, u64, u64, u64, Option<u64>, Option<String>);

/// A `STATS_MANY` script row as [`QueueStats`] at `now` (Redis' clock; a
/// lease that does not parse is left out).
fn queue_stats(
    (queue_len, processed, failed, in_flight, last_beat, lease): StatsRow,
    now: u64,
) -> QueueStats {
    QueueStats {
        lease: lease.and_then(|l| crate::Lease::parse(&l).ok()),
        queue_len,
        processed,
        failed,
        in_flight,
        heartbeat_age: last_beat
            .filter(|&ms| ms > 0)
            .map(|ms| Duration::from_millis(now.saturating_sub(ms))),
    }
}

/// What a push knows of its task (see [`Client::push`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Landed {
    /// Redis acknowledged it: the task is queued.
    Queued,
    /// Sent, its reply not come within the response timeout: the task may
    /// still be queued when Redis goes on, or never. A missing hash is then
    /// "not there yet", not a lost task, until the task's deadline.
    Unsure,
}
