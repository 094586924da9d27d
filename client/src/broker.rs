//! The worker's side of the protocol: take, claim, finish, heartbeat, reap.
//!
//! The `worker` crate drives these operations; the key names and scripts stay
//! here. Two connections per worker: [`WorkerBroker`] for short commands and
//! [`BlockingPopper`] for `BLMOVE` alone (a blocking command never shares a
//! connection with other traffic).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use crate::client::now_ms;
use crate::conn::{Conn, ConnSettings};
use crate::{Result, fields, keys, scripts};

/// The reason written into a task whose worker died while running it.
/// Its outcome is unknown: the worker may have committed the script's writes
/// just before it was lost, so the message says so (a submitter that retries
/// on error must check first).
pub const WORKER_LOST_MESSAGE: &str = "worker lost while running the task (its writes may have \
     been committed before it was lost)";

/// A task this worker claimed and must now run and finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedTask {
    /// The task id.
    pub task_id: String,
    /// The script source.
    pub script: String,
    /// The submitter's deadline, ms since the Unix epoch.
    pub deadline_ms: Option<u64>,
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
    /// Not runnable (no hash, or no script): ended as `error` (kind
    /// `invalid`) by the claim, with the reason.
    Invalid {
        /// The task id.
        task_id: String,
        /// Why.
        reason: String,
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

/// How a claimed task ended, for [`WorkerBroker::finish`].
#[derive(Debug, Clone, PartialEq)]
pub enum TaskResult {
    /// The script completed.
    Completed {
        /// Final value as text.
        output: String,
        /// What it printed.
        printed: String,
        /// Engine run time.
        run_time: Duration,
    },
    /// The script failed.
    Failed {
        /// Wire name of the kind.
        kind: String,
        /// Message.
        message: String,
        /// 1-based line.
        line: Option<u32>,
        /// 1-based column.
        column: Option<u32>,
    },
}

/// Timing settings of a [`WorkerBroker`].
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
        }
    }
}

/// One worker's view of its queue.
pub struct WorkerBroker {
    conn: Conn,
    queue: String,
    keys: ClaimKeys,
}

/// What claiming for one worker needs, shared by [`WorkerBroker`] and
/// [`BlockingPopper`]: its id, its processing list and stats keys (built
/// once, not per task) and the result TTL.
struct ClaimKeys {
    worker_id: String,
    processing: String,
    stats: String,
    ttl_ms: u64,
}

impl ClaimKeys {
    fn new(queue: &str, worker_id: &str, options: &BrokerOptions) -> ClaimKeys {
        ClaimKeys {
            worker_id: worker_id.to_owned(),
            processing: keys::processing(queue, worker_id),
            stats: keys::stats(queue),
            ttl_ms: options.result_ttl.as_millis().max(1) as u64,
        }
    }

    /// The claim a reply gives, after ending the task (on `conn`) if it
    /// cannot be read.
    async fn settle(&self, conn: &Conn, reply: RawClaim) -> Result<Option<Claim>> {
        match parse_claim(reply)? {
            None => Ok(None),
            Some(Parsed::Claim(claim)) => Ok(Some(claim)),
            Some(Parsed::Unreadable { raw_id, reason }) => {
                self.end_unreadable(conn, raw_id, reason).await.map(Some)
            }
        }
    }

    /// Ends a task in the processing list that cannot be read (see
    /// [`Parsed::Unreadable`]); gives the claim to report for it.
    async fn end_unreadable(&self, conn: &Conn, raw_id: Vec<u8>, reason: String) -> Result<Claim> {
        let inv = scripts::end_unreadable(
            &self.processing,
            &self.stats,
            &self.worker_id,
            &raw_id,
            now_ms(),
            self.ttl_ms,
            &reason,
        );
        let _ended: i64 = conn.invoke(&inv).await?;
        Ok(Claim::Invalid {
            task_id: String::from_utf8_lossy(&raw_id).into_owned(),
            reason: format!("{reason}; ended as error"),
        })
    }
}

/// A claim reply as read: fields are bytes, as a third party may have
/// written anything into the task.
type RawClaim = Option<Vec<Vec<u8>>>;

/// What a claim reply says.
enum Parsed {
    /// The claim, readable.
    Claim(Claim),
    /// Claimed (now `processing` by this worker), but its id or script is
    /// not UTF-8: it must be ended as invalid with the reason.
    Unreadable { raw_id: Vec<u8>, reason: String },
}

/// A field written by a third party as text, or why it is not text.
fn utf8(bytes: &[u8], what: &str) -> std::result::Result<String, String> {
    std::str::from_utf8(bytes).map(str::to_owned).map_err(|e| {
        format!(
            "the task's {what} is not valid UTF-8 (bad byte at offset {})",
            e.valid_up_to()
        )
    })
}

/// A canceller's reason as a task's error shows it: the same rule as the
/// claim script's, so a task says the same whether it was cancelled queued
/// or running — printable ASCII cut at 200 bytes, else a stand-in.
fn shown_reason(raw: &[u8]) -> String {
    if raw.is_empty() {
        return "(no reason given)".to_owned();
    }
    if !raw.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        return "(a reason that is not printable text)".to_owned();
    }
    String::from_utf8_lossy(&raw[..raw.len().min(200)]).into_owned()
}

fn parse_claim(reply: RawClaim) -> Result<Option<Parsed>> {
    let Some(reply) = reply else {
        return Ok(None);
    };
    let field = |i: usize| reply.get(i).map_or(&[][..], Vec::as_slice);
    let text = |i: usize| String::from_utf8_lossy(field(i)).into_owned();
    let tag = text(0);
    // Every reply but `run` comes after the claim script ended or dropped
    // the task itself; its id only names it in a log line.
    let id = text(1);
    Ok(Some(Parsed::Claim(match tag.as_str() {
        "run" => {
            let readable = utf8(field(1), "id").and_then(|task_id| {
                Ok(ClaimedTask {
                    task_id,
                    script: utf8(field(2), "script")?,
                    deadline_ms: std::str::from_utf8(field(3))
                        .ok()
                        .and_then(|d| d.parse().ok()),
                })
            });
            match readable {
                Ok(task) => Claim::Run(task),
                Err(reason) => {
                    return Ok(Some(Parsed::Unreadable {
                        raw_id: field(1).to_vec(),
                        reason,
                    }));
                }
            }
        }
        "expired" => Claim::Expired(id),
        "cancelled" => Claim::Cancelled {
            task_id: id,
            reason: text(2),
        },
        "missing" => Claim::Invalid {
            task_id: id,
            reason: "its details hash did not exist; ended as error in a new hash".to_owned(),
        },
        "invalid" => Claim::Invalid {
            task_id: id,
            reason: format!("{}; ended as error", text(2)),
        },
        "skipped" => Claim::Skipped {
            task_id: id,
            reason: format!("its status is {:?}, not pending", text(2)),
        },
        other => {
            return Err(crate::Error::Protocol(format!(
                "claim script answered {other:?}"
            )));
        }
    })))
}

impl WorkerBroker {
    /// A broker for `worker_id` on `queue`. Does not connect yet.
    pub fn new(
        redis_url: &str,
        queue: &str,
        worker_id: &str,
        options: &BrokerOptions,
    ) -> Result<Self> {
        let conn = Conn::new(
            redis_url,
            "worker",
            ConnSettings {
                connect_timeout: options.connect_timeout,
                response_timeout: Some(options.response_timeout),
                max_backoff: options.max_backoff,
            },
        )?;
        Ok(WorkerBroker {
            conn,
            queue: queue.to_owned(),
            keys: ClaimKeys::new(queue, worker_id, options),
        })
    }

    /// The worker id.
    pub fn worker_id(&self) -> &str {
        &self.keys.worker_id
    }

    /// The queue this broker serves.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Non-blocking: moves the oldest queued id into this worker's processing
    /// list and claims it, in one script. `None` when the queue is empty.
    pub async fn pop_and_claim(&self) -> Result<Option<Claim>> {
        let inv = scripts::pop_and_claim(
            &self.queue,
            &self.keys.worker_id,
            now_ms(),
            self.keys.ttl_ms,
        );
        self.keys
            .settle(&self.conn, self.conn.invoke(&inv).await?)
            .await
    }

    /// Claims `task_id`, which a [`BlockingPopper`] moved into this worker's
    /// processing list.
    pub async fn claim(&self, task_id: &str) -> Result<Claim> {
        let inv = scripts::claim_one(
            &self.queue,
            &self.keys.worker_id,
            task_id,
            now_ms(),
            self.keys.ttl_ms,
        );
        self.keys
            .settle(&self.conn, self.conn.invoke(&inv).await?)
            .await?
            .ok_or_else(|| {
                crate::Error::Protocol(format!("claim of task {task_id} answered nothing"))
            })
    }

    /// Writes the result, status, `updatedAt`, TTL, counters; notifies the
    /// waiter; removes the id from the processing list. All in one script.
    /// `false` when the task was no longer this worker's (a reaper had ended it).
    pub async fn finish(&self, task_id: &str, result: &TaskResult) -> Result<bool> {
        Ok(self.finish_inner(task_id, result, false).await?.0)
    }

    /// [`WorkerBroker::finish`], then, in the same script, takes and claims
    /// the next queued task if there is one (one round trip per task under a
    /// backlog).
    pub async fn finish_and_next(
        &self,
        task_id: &str,
        result: &TaskResult,
    ) -> Result<(bool, Option<Claim>)> {
        self.finish_inner(task_id, result, true).await
    }

    async fn finish_inner(
        &self,
        task_id: &str,
        result: &TaskResult,
        take_next: bool,
    ) -> Result<(bool, Option<Claim>)> {
        let mut pairs: Vec<(&str, String)> = Vec::with_capacity(6);
        match result {
            TaskResult::Completed {
                output,
                printed,
                run_time,
            } => {
                pairs.push((fields::STATUS, fields::status::COMPLETED.to_owned()));
                pairs.push((fields::OUTPUT, output.clone()));
                pairs.push((fields::PRINTED, printed.clone()));
                pairs.push((fields::RUN_TIME_US, run_time.as_micros().to_string()));
            }
            TaskResult::Failed {
                kind,
                message,
                line,
                column,
            } => {
                pairs.push((fields::STATUS, fields::status::ERROR.to_owned()));
                pairs.push((fields::ERROR, message.clone()));
                pairs.push((fields::ERROR_KIND, kind.clone()));
                if let Some(line) = line {
                    pairs.push((fields::ERROR_LINE, line.to_string()));
                }
                if let Some(column) = column {
                    pairs.push((fields::ERROR_COLUMN, column.to_string()));
                }
            }
        }
        let inv = scripts::finish_task(
            &self.queue,
            &self.keys.worker_id,
            task_id,
            now_ms(),
            self.keys.ttl_ms,
            &pairs,
            take_next,
        );
        // `{written}` (a number), then the next claim's fields (bytes).
        let mut reply: Vec<redis::Value> = self.conn.invoke(&inv).await?;
        if reply.is_empty() {
            return Err(crate::Error::Protocol(format!(
                "finish of task {task_id} answered nothing"
            )));
        }
        let written = reply.remove(0) == redis::Value::Int(1);
        let next = if reply.is_empty() {
            None
        } else {
            let fields: Vec<Vec<u8>> = reply
                .into_iter()
                .map(redis::from_redis_value)
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| {
                    crate::Error::Protocol(format!("finish of task {task_id} answered {e}"))
                })?;
            self.keys.settle(&self.conn, Some(fields)).await?
        };
        Ok((written, next))
    }

    fn heartbeat_pipe(&self, ttl: Duration) -> redis::Pipeline {
        let now = now_ms();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(keys::heartbeat(&self.queue, &self.keys.worker_id))
            .arg(now)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .ignore()
            .cmd("SADD")
            .arg(keys::workers(&self.queue))
            .arg(&self.keys.worker_id)
            .ignore()
            .cmd("HSET")
            .arg(&self.keys.stats)
            .arg("lastHeartbeat")
            .arg(now)
            .ignore();
        pipe
    }

    /// Beats: sets this worker's heartbeat key with `ttl`, registers the
    /// worker in the queue's worker set, and stamps `lastHeartbeat`.
    pub async fn heartbeat(&self, ttl: Duration) -> Result<()> {
        self.conn.query_pipe(&self.heartbeat_pipe(ttl)).await
    }

    /// [`WorkerBroker::heartbeat`], and with `reap` also
    /// [`WorkerBroker::reap`] — the worker set is read in the heartbeat's own
    /// transaction, so while this worker is the only one registered for its
    /// queue a beat with a reap is still a single round trip. Returns
    /// `(lost, requeued)` as `reap` does (`(0, 0)` without `reap`).
    pub async fn beat(&self, ttl: Duration, reap: bool) -> Result<(u64, u64)> {
        let mut pipe = self.heartbeat_pipe(ttl);
        if !reap {
            self.conn.query_pipe::<()>(&pipe).await?;
            return Ok((0, 0));
        }
        pipe.cmd("SMEMBERS").arg(keys::workers(&self.queue));
        let (members,): (Vec<String>,) = self.conn.query_pipe(&pipe).await?;
        self.reap_members(&members).await
    }

    /// Resolves the leftovers of every dead worker of this queue (no
    /// heartbeat): tasks it was running end as `error` ([`WORKER_LOST_MESSAGE`],
    /// kind `worker_lost`) unless they opted in to retry; tasks it took but
    /// never claimed go back to the head of the queue. Returns
    /// `(lost, requeued)` summed over the dead workers.
    pub async fn reap(&self) -> Result<(u64, u64)> {
        let members: Vec<String> = self
            .conn
            .query(redis::cmd("SMEMBERS").arg(keys::workers(&self.queue)))
            .await?;
        self.reap_members(&members).await
    }

    async fn reap_members(&self, members: &[String]) -> Result<(u64, u64)> {
        let mut total = (0, 0);
        for dead in members.iter().filter(|w| **w != self.keys.worker_id) {
            let inv = scripts::reap(
                &self.queue,
                dead,
                now_ms(),
                self.keys.ttl_ms,
                WORKER_LOST_MESSAGE,
            );
            let reply: redis::Value = self.conn.invoke(&inv).await?;
            if let Ok((lost, requeued)) = redis::from_redis_value::<(u64, u64)>(reply) {
                if lost + requeued > 0 {
                    log::warn!(
                        "queue {}: worker {dead} died; {lost} task(s) ended as worker lost, {requeued} put back on the queue",
                        self.queue
                    );
                }
                total.0 += lost;
                total.1 += requeued;
            }
        }
        Ok(total)
    }

    /// Wakes `popper`'s blocked `BLMOVE` with `CLIENT UNBLOCK` sent on this
    /// broker's connection: the pop then returns nothing, as on its timeout
    /// (nothing was moved, so nothing can be lost). `false` when no pop was
    /// blocked in Redis at that instant (none in progress, or its command has
    /// not reached Redis yet: call again a little later while
    /// [`BlockingPopper::is_popping`]).
    pub async fn wake(&self, popper: &BlockingPopper) -> Result<bool> {
        let Some(client_id) = popper.popping_client_id() else {
            return Ok(false);
        };
        let woken: u64 = self
            .conn
            .query(
                redis::cmd("CLIENT")
                    .arg("UNBLOCK")
                    .arg(client_id)
                    .arg("TIMEOUT"),
            )
            .await?;
        Ok(woken == 1)
    }

    /// Claims the queue for the database `owner` names, or refreshes the
    /// claim, for `ttl` (see [`keys::queue_owner`]). `Some(other)` when the
    /// queue is claimed by workers of another database: this worker must not
    /// serve it.
    pub async fn own_queue(&self, owner: &str, ttl: Duration) -> Result<Option<String>> {
        let inv = scripts::own_queue(&self.queue, owner, ttl.as_millis().max(1) as u64);
        self.conn.invoke(&inv).await
    }

    /// Gives up the queue's owner key if it names `owner` (at a clean stop, so
    /// another database's circle may take the name at once).
    pub async fn disown_queue(&self, owner: &str) -> Result<()> {
        let _: i64 = self
            .conn
            .invoke(&scripts::disown_queue(&self.queue, owner))
            .await?;
        Ok(())
    }

    /// Leaves the queue: deletes the heartbeat, the worker-set entry and the
    /// (empty) processing list. Anything still in the processing list is left
    /// for a reaper.
    pub async fn deregister(&self) -> Result<()> {
        let plist = self.keys.processing.as_str();
        let left: u64 = self.conn.query(redis::cmd("LLEN").arg(plist)).await?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(keys::heartbeat(&self.queue, &self.keys.worker_id))
            .ignore();
        if left == 0 {
            pipe.cmd("SREM")
                .arg(keys::workers(&self.queue))
                .arg(&self.keys.worker_id)
                .ignore();
        }
        self.conn.query_pipe(&pipe).await
    }

    /// The reason a canceller recorded for `task_id` (its
    /// [`fields::CANCEL`] field), or `None` when nobody asked to cancel it.
    /// One `HGET`; the worker asks while a script runs long.
    pub async fn cancel_requested(&self, task_id: &str) -> Result<Option<String>> {
        // Bytes, not text: a third party's reason need not be UTF-8.
        let reason: Option<Vec<u8>> = self
            .conn
            .query(
                redis::cmd("HGET")
                    .arg(keys::task_details(task_id))
                    .arg(fields::CANCEL),
            )
            .await?;
        Ok(reason.map(|r| shown_reason(&r)))
    }

    /// Ids in this worker's processing list (read after an outage, in case
    /// a lost reply left some there). An id that is not UTF-8 (a third
    /// party's) cannot be claimed by name: it is ended as invalid here and
    /// left out.
    pub async fn processing(&self) -> Result<Vec<String>> {
        let raw: Vec<Vec<u8>> = self
            .conn
            .query(
                redis::cmd("LRANGE")
                    .arg(self.keys.processing.as_str())
                    .arg(0)
                    .arg(-1),
            )
            .await?;
        let mut ids = Vec::with_capacity(raw.len());
        for id in raw {
            match utf8(&id, "id") {
                Ok(id) => ids.push(id),
                Err(reason) => {
                    let claim = self.keys.end_unreadable(&self.conn, id, reason).await?;
                    log::warn!("queue {}: {claim:?}", self.queue);
                }
            }
        }
        Ok(ids)
    }
}

/// The dedicated connection for `BLMOVE`.
pub struct BlockingPopper {
    conn: Conn,
    queue_key: String,
    keys: ClaimKeys,
    /// `CLIENT ID` of the connection and the connection generation it
    /// belongs to; read again after every reconnect.
    client_id: Mutex<Option<(u64, i64)>>,
    /// Set while a pop is in progress.
    popping: AtomicBool,
}

/// Clears [`BlockingPopper::popping`] however the pop ends.
struct Popping<'a>(&'a AtomicBool);

impl Drop for Popping<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl BlockingPopper {
    /// A popper for `worker_id` on `queue`. `pop_timeout` is the server-side
    /// block of one pop; the connection's response timeout allows for it.
    pub fn new(
        redis_url: &str,
        queue: &str,
        worker_id: &str,
        pop_timeout: Duration,
        options: &BrokerOptions,
    ) -> Result<Self> {
        let conn = Conn::new(
            redis_url,
            "worker blocking pop",
            ConnSettings {
                connect_timeout: options.connect_timeout,
                response_timeout: Some(pop_timeout + options.response_timeout),
                max_backoff: options.max_backoff,
            },
        )?;
        Ok(BlockingPopper {
            conn,
            queue_key: keys::tasks(queue),
            keys: ClaimKeys::new(queue, worker_id, options),
            client_id: Mutex::new(None),
            popping: AtomicBool::new(false),
        })
    }

    /// Whether a pop is in progress (see [`WorkerBroker::wake`]).
    pub fn is_popping(&self) -> bool {
        self.popping.load(Ordering::SeqCst)
    }

    /// The Redis client id of the connection while a pop is in progress.
    fn popping_client_id(&self) -> Option<i64> {
        if !self.is_popping() {
            return None;
        }
        self.client_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|(_, id)| id)
    }

    /// Marks a pop in progress and returns the connection, reading its
    /// `CLIENT ID` first after a (re)connect so [`WorkerBroker::wake`] can
    /// unblock it.
    async fn start_pop(&self) -> Result<(MultiplexedConnection, Popping<'_>)> {
        let popping = Popping(&self.popping);
        self.popping.store(true, Ordering::SeqCst);
        let (mut conn, generation) = self.conn.get_with_generation().await?;
        let known = matches!(
            *self.client_id.lock().unwrap_or_else(|e| e.into_inner()),
            Some((g, _)) if g == generation
        );
        if !known {
            let id: i64 = redis::cmd("CLIENT")
                .arg("ID")
                .query_async(&mut conn)
                .await
                .map_err(|e| self.conn.fail(e))?;
            *self.client_id.lock().unwrap_or_else(|e| e.into_inner()) = Some((generation, id));
        }
        Ok((conn, popping))
    }

    /// `BLMOVE` as in [`BlockingPopper::pop`], with the claim of the moved id
    /// pipelined right behind it (Redis runs it as soon as the pop returns),
    /// saving a round trip. `None` after `timeout` with nothing queued.
    pub async fn pop_and_claim(&self, timeout: Duration) -> Result<Option<Claim>> {
        let claim_head = scripts::claim_head(
            &self.keys.processing,
            &self.keys.stats,
            &self.keys.worker_id,
            self.keys.ttl_ms,
        );
        let mut pipe = redis::pipe();
        // Errors come back as values so a `NOSCRIPT` of the claim can be
        // told apart from a failed pop (whose error still surfaces).
        pipe.ignore_errors()
            .cmd("BLMOVE")
            .arg(&self.queue_key)
            .arg(&self.keys.processing)
            .arg("RIGHT")
            .arg("LEFT")
            .arg(timeout.as_secs_f64())
            .invoke_script(&claim_head);
        let (mut conn, _popping) = self.start_pop().await?;
        let (popped, claim): (redis::Value, redis::Value) = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| self.conn.fail(e))?;
        popped.extract_error().map_err(|e| self.conn.fail(e))?;
        let claim: RawClaim = match claim {
            redis::Value::ServerError(e) if e.kind() == Some(redis::ServerErrorKind::NoScript) => {
                // Redis lost its script cache (restart, SCRIPT FLUSH): claim
                // again, loading the script. The claim reads the head of the
                // processing list, where the pop put the id.
                claim_head
                    .invoke_async(&mut conn)
                    .await
                    .map_err(|e| self.conn.fail(e))?
            }
            other => {
                let value = other.extract_error().map_err(|e| self.conn.fail(e))?;
                redis::from_redis_value(value).map_err(|e| self.conn.fail(e.into()))?
            }
        };
        self.keys.settle(&self.conn, claim).await
    }

    /// `BLMOVE rhai_tasks:<queue> <processing> RIGHT LEFT <timeout>`: the
    /// oldest id, moved into the processing list, or `None` after `timeout`.
    pub async fn pop(&self, timeout: Duration) -> Result<Option<String>> {
        let (mut conn, _popping) = self.start_pop().await?;
        redis::cmd("BLMOVE")
            .arg(&self.queue_key)
            .arg(&self.keys.processing)
            .arg("RIGHT")
            .arg("LEFT")
            .arg(timeout.as_secs_f64())
            .query_async(&mut conn)
            .await
            .map_err(|e| self.conn.fail(e))
    }
}

#[cfg(test)]
mod tests {
    use super::shown_reason;

    #[test]
    fn a_cancel_reason_is_shown_as_printable_ascii_cut_at_200_bytes() {
        assert_eq!(
            shown_reason(b"the client went away"),
            "the client went away"
        );
        assert_eq!(shown_reason(&[b'x'; 300]).len(), 200);
        assert_eq!(shown_reason(b""), "(no reason given)");
        assert_eq!(
            shown_reason(b"bad \xff byte"),
            "(a reason that is not printable text)"
        );
        assert_eq!(
            shown_reason("caf\u{e9}".as_bytes()),
            "(a reason that is not printable text)"
        );
        assert_eq!(
            shown_reason(b"line\nbreak"),
            "(a reason that is not printable text)"
        );
    }
}
