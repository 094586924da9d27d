//! [`WorkerBroker`]: a worker's connection for short commands — take and
//! claim without blocking, finish, beat and reap, cancel lookups, the
//! queue's lease, and waking the [`BlockingPopper`]'s blocked pop.

use std::time::Duration;

use super::claim::{ClaimKeys, shown_reason, utf8};
use super::popper::BlockingPopper;
use super::types::{BrokerOptions, Claim, ClaimedAt, WORKER_LOST_MESSAGE};
use crate::conn::Conn;
use crate::{Error, Lease, Outcome, Result, fields, keys, scripts};

/// One worker's view of its queue.
pub struct WorkerBroker {
    pub(super) conn: Conn,
    pub(super) queue: String,
    pub(super) keys: ClaimKeys,
    circle: Option<String>,
}

impl WorkerBroker {
    /// A broker for `worker_id` on `queue`. Does not connect yet.
    pub fn new(
        redis_url: &str,
        queue: &str,
        worker_id: &str,
        options: &BrokerOptions,
    ) -> Result<Self> {
        let conn = Conn::new(redis_url, "worker", options.conn_settings(Duration::ZERO))?;
        Ok(WorkerBroker {
            conn,
            queue: queue.to_owned(),
            keys: ClaimKeys::new(queue, worker_id, options),
            circle: options.circle.clone(),
        })
    }

    /// Logs `message` at warn with the fields a worker's lines carry: the
    /// circle (when the options name it), the queue and the task, if any.
    fn warn(&self, task: Option<&str>, message: std::fmt::Arguments<'_>) {
        let queue = self.queue.as_str();
        match (self.circle.as_deref(), task) {
            (Some(circle), Some(task)) => log::warn!(circle, queue, task; "{message}"),
            (Some(circle), None) => log::warn!(circle, queue; "{message}"),
            (None, Some(task)) => log::warn!(queue, task; "{message}"),
            (None, None) => log::warn!(queue; "{message}"),
        }
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
    /// list and claims it, in one script (a batched claim of one). `None`
    /// when the queue is empty, or when that id was a second copy of one this
    /// worker holds (pushed twice; the copy leaves the list).
    pub async fn pop_and_claim(&self) -> Result<Option<Claim>> {
        Ok(self.claim_batch(1).await?.into_iter().next())
    }

    /// Claims `task_id`, which a [`BlockingPopper`] moved into this worker's
    /// processing list.
    pub async fn claim(&self, task_id: &str) -> Result<Claim> {
        let fencing = self.keys.fencing();
        let inv = scripts::claim_one(
            &self.queue,
            &self.keys.worker_id,
            task_id,
            self.conn.now_ms(),
            self.keys.ttl_ms,
            &fencing,
        );
        let mut claim = self
            .keys
            .settle(&self.conn, self.conn.invoke(&inv).await?)
            .await?
            .ok_or_else(|| Error::Protocol(format!("claim of task {task_id} answered nothing")))?;
        ClaimKeys::sent(std::slice::from_mut(&mut claim), &fencing);
        Ok(claim)
    }

    /// Gives back `task_id`, claimed by this worker but not run: out of the
    /// processing list, `pending` again, back at the head of the queue
    /// (unless another worker or program resolved it meanwhile). For a
    /// worker that lost its lease between the claim and the run.
    pub async fn give_back(&self, task_id: &str) -> Result<()> {
        let inv = scripts::give_back(&self.queue, &self.keys.worker_id, task_id);
        let _: redis::Value = self.conn.invoke(&inv).await?;
        Ok(())
    }

    /// Writes the outcome (status, its fields, `updatedAt`), the TTL (the
    /// result TTL, or the task's [`crate::fields::DELIVERED_TTL`] when its
    /// notification reached a subscriber) and the counters; notifies the waiter; removes the id from the processing
    /// list. All in one script. `false` when the task was no longer this
    /// worker's (a reaper had ended it).
    pub async fn finish(&self, outcome: &Outcome) -> Result<bool> {
        Ok(self.finish_inner(outcome, false).await?.0)
    }

    /// [`WorkerBroker::finish`], then, in the same script, takes and claims
    /// the next queued task if there is one (one round trip per task under a
    /// backlog).
    pub async fn finish_and_next(&self, outcome: &Outcome) -> Result<(bool, Option<Claim>)> {
        self.finish_inner(outcome, true).await
    }

    /// A batched finish of one task, holding nothing else.
    async fn finish_inner(
        &self,
        outcome: &Outcome,
        take_next: bool,
    ) -> Result<(bool, Option<Claim>)> {
        let done = self
            .finish_batch(
                std::slice::from_ref(outcome),
                &[],
                usize::from(take_next),
                false,
            )
            .await?;
        Ok((done.written[0], done.next.into_iter().next()))
    }

    fn heartbeat_pipe(&self, ttl: Duration) -> redis::Pipeline {
        let now = self.conn.now_ms();
        let mut pipe = redis::pipe();
        // Errors as values (see `beat`): a stats key of another type
        // (edited by hand) fails its `HSET` alone, which is ignored, as the
        // finish scripts leave such a counter alone; the beat and its reap
        // go on.
        pipe.atomic()
            .ignore_errors()
            .cmd("SET")
            .arg(keys::heartbeat(&self.queue, &self.keys.worker_id))
            .arg(now)
            .arg("PX")
            .arg(crate::ttl_ms(ttl))
            .cmd("SADD")
            .arg(keys::workers(&self.queue))
            .arg(&self.keys.worker_id)
            .cmd("HSET")
            .arg(&self.keys.stats)
            .arg("lastHeartbeat")
            .arg(now)
            .ignore();
        pipe
    }

    /// Beats: sets this worker's heartbeat key with `ttl`, registers the
    /// worker in the queue's worker set, and stamps `lastHeartbeat`. With
    /// `reap` it also resolves the leftovers of every dead worker of this
    /// queue (no heartbeat): tasks it was running end as `error`
    /// ([`WORKER_LOST_MESSAGE`], kind `worker_lost`) unless they opted in to
    /// retry ([`fields::RETRY`]); tasks it took but never claimed go back to
    /// the head of the queue. The worker set is read in the heartbeat's own
    /// transaction, so while this worker is the only one registered for its
    /// queue a beat with a reap is still a single round trip. Returns
    /// `(lost, requeued)` summed over the dead workers (`(0, 0)` without
    /// `reap`).
    pub async fn beat(&self, ttl: Duration, reap: bool) -> Result<(u64, u64)> {
        let mut pipe = self.heartbeat_pipe(ttl);
        if reap {
            pipe.cmd("SMEMBERS").arg(keys::workers(&self.queue));
        }
        // Redis' clock, measured again each beat (see `RedisClock`).
        let (replies, ()) = tokio::join!(
            self.conn.query_pipe::<Vec<redis::Value>>(&pipe),
            self.conn.measure_clock()
        );
        let mut replies = replies?;
        for reply in &replies {
            if let redis::Value::ServerError(e) = reply {
                return Err(self.conn.fail(e.clone().into()));
            }
        }
        if !reap {
            return Ok((0, 0));
        }
        // Bytes: a third party's worker may register under an id that is
        // not UTF-8; it is none of ours to reap by name, and must not make
        // the whole set unreadable (no reap for anyone).
        let members: Vec<Vec<u8>> =
            redis::from_redis_value(replies.pop().unwrap_or(redis::Value::Nil))
                .map_err(|e| Error::Protocol(format!("the worker set answered {e}")))?;
        let members: Vec<String> = members
            .into_iter()
            .filter_map(|m| String::from_utf8(m).ok())
            .collect();
        self.reap(&members).await
    }

    /// Reaps the workers `members` of this queue whose heartbeat is gone (one
    /// script each; this worker and live ones are left alone), as a beat
    /// with a reap does for every registered worker. Returns `(lost,
    /// requeued)` summed over them.
    pub async fn reap(&self, members: &[String]) -> Result<(u64, u64)> {
        let mut total = (0, 0);
        for dead in members.iter().filter(|w| **w != self.keys.worker_id) {
            let inv = scripts::reap(
                &self.queue,
                dead,
                self.conn.now_ms(),
                self.keys.ttl_ms,
                WORKER_LOST_MESSAGE,
            );
            let reply: redis::Value = self.conn.invoke(&inv).await?;
            if let Ok((lost, requeued)) = redis::from_redis_value::<(u64, u64)>(reply) {
                if lost + requeued > 0 {
                    self.warn(
                        None,
                        format_args!(
                            "queue {}: worker {dead} died; {lost} task(s) ended as worker lost, \
                             {requeued} put back on the queue",
                            self.queue
                        ),
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

    /// Takes the queue's lease for `holder` (its token is ignored) for
    /// `ttl` (see [`keys::queue_owner`]): `Ok(lease)` with the fresh token
    /// when it was free (absent, expired) or held by the same database
    /// (host and directory), `Err(lease)` with the holder's otherwise.
    pub async fn acquire_lease(
        &self,
        holder: &Lease,
        ttl: Duration,
    ) -> Result<std::result::Result<Lease, Lease>> {
        Ok(self
            .acquire_lease_after(holder, ttl)
            .await?
            .map(|(lease, _)| lease))
    }

    /// [`acquire_lease`](Self::acquire_lease), with the lease the key held
    /// when it was taken: `None` when it was free, else the same database's
    /// lease of before (a restart: see [`Lease::predecessor_of`]). A value
    /// that is no lease fails the acquisition with an error naming it,
    /// unless it ends in this holder's host and directory: then it is taken,
    /// and the previous lease is `None`.
    pub async fn acquire_lease_after(
        &self,
        holder: &Lease,
        ttl: Duration,
    ) -> Result<std::result::Result<(Lease, Option<Lease>), Lease>> {
        let inv = scripts::acquire_lease(
            &self.queue,
            holder.pid,
            &format!("{}|{}", holder.host, holder.dir),
            crate::ttl_ms(ttl),
        );
        let (taken, value, previous): (i64, String, String) = self.conn.invoke(&inv).await?;
        let lease = Lease::parse(&value).map_err(Error::Protocol)?;
        if taken != 1 {
            return Ok(Err(lease));
        }
        let previous = Lease::parse(&previous).ok();
        Ok(Ok((lease, previous)))
    }

    /// The live heartbeats of the workers the process `pid` registered for
    /// this queue: each worker's id and the value of its heartbeat key (the
    /// time of its last beat). With [`forget_unchanged`](Self::forget_unchanged)
    /// a beat interval later, tells a dead earlier run of this database
    /// ([`Lease::predecessor_of`]) from a live process that only looks like
    /// one.
    pub async fn heartbeats_of(&self, pid: u32) -> Result<Vec<(String, String)>> {
        self.conn
            .invoke(&scripts::heartbeats_of(&self.queue, pid))
            .await
    }

    /// Ends the heartbeats of `beats` that still hold the value read by
    /// [`heartbeats_of`](Self::heartbeats_of) (their workers did not beat
    /// since), so that a reap ([`reap`](Self::reap) of them, or the next
    /// [`beat`](Self::beat) with one) resolves their tasks at once. Returns
    /// the ids it ended and how many beat since (their key holds another
    /// value: the worker is alive).
    pub async fn forget_unchanged(&self, beats: &[(String, String)]) -> Result<(Vec<String>, u64)> {
        if beats.is_empty() {
            return Ok((Vec::new(), 0));
        }
        self.conn
            .invoke(&scripts::forget_unchanged(&self.queue, beats))
            .await
    }

    /// Renews `lease` for `ttl`, only while the owner key still holds that
    /// very lease, token, pid, host and directory (compare-and-`PEXPIRE` in
    /// one script).
    /// `Ok(())` when renewed; `Err(what)` when the lease is lost: `None` (the
    /// key expired) or `Some` other holder.
    pub async fn renew_lease(
        &self,
        lease: &Lease,
        ttl: Duration,
    ) -> Result<std::result::Result<(), Option<Lease>>> {
        let inv = scripts::renew_lease(&self.queue, lease, crate::ttl_ms(ttl));
        let reply: Vec<redis::Value> = self.conn.invoke(&inv).await?;
        if reply.first() == Some(&redis::Value::Int(1)) {
            return Ok(Ok(()));
        }
        let value: String = match reply.get(1) {
            Some(v) => redis::from_redis_value(v.clone())
                .map_err(|e| Error::Protocol(format!("lease renewal answered {e}")))?,
            None => String::new(),
        };
        if value.is_empty() {
            return Ok(Err(None));
        }
        Ok(Err(Some(Lease::parse(&value).map_err(Error::Protocol)?)))
    }

    /// Gives up `lease` if the owner key still holds it and no worker of
    /// this process is left registered (at a clean stop, so a standby may
    /// take it at once). This process's workers are those whose ids start as
    /// this one's does up to its first `-` (a worker's id starts with
    /// [`keys::worker_id_prefix`]; an id without `-` stands for itself). An
    /// id whose start names no process (the orchestrator's keeper of a
    /// moved circle's lease, `kept-lease`) is held back by no worker.
    pub async fn release_lease(&self, lease: &Lease) -> Result<()> {
        let id = self.keys.worker_id.as_str();
        let process = id.find('-').map_or(id, |at| &id[..=at]);
        let _: i64 = self
            .conn
            .invoke(&scripts::release_lease(&self.queue, lease, process))
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

    /// Each task's `createdAt` and `startedAt` (`None` when the hash, the
    /// field or a number in it is missing, or its key is not a hash), in
    /// `task_ids`' order. One round trip; the worker asks after an outage
    /// whether an id it finished is that very run still (a Redis that lost
    /// its finish), or a later claim of the id (its reply lost).
    pub async fn claimed_at(&self, task_ids: &[&str]) -> Result<Vec<ClaimedAt>> {
        let mut pipe = redis::pipe();
        // A key that is not a hash answers with an error, which is a value
        // here: that id reads as unknown, the others as they are.
        pipe.ignore_errors();
        for id in task_ids {
            pipe.cmd("HMGET")
                .arg(keys::task_details(id))
                .arg(fields::CREATED_AT)
                .arg(fields::STARTED_AT);
        }
        let values: Vec<redis::Value> = self.conn.query_pipe(&pipe).await?;
        let ms = |v: Option<&redis::Value>| match v {
            Some(redis::Value::BulkString(b)) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        };
        Ok(values
            .into_iter()
            .map(|v| match v {
                redis::Value::Array(fields) => ClaimedAt {
                    created_ms: ms(fields.first()),
                    started_ms: ms(fields.get(1)),
                },
                _ => ClaimedAt::default(),
            })
            .collect())
    }

    /// Ids in this worker's processing list (read after an outage, in case
    /// a lost reply left some there), newest first. An id that is not UTF-8
    /// (a third party's) cannot be claimed by name: it is ended as invalid
    /// here and left out. An id listed twice (pushed twice, and both copies
    /// moved) is given once, and its newer copies leave the list: claimed
    /// twice, it would run twice.
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
                    match &claim {
                        Claim::Invalid { task_id, reason } => self.warn(
                            Some(task_id),
                            format_args!(
                                "queue {}: task {task_id} cannot run: {reason}",
                                self.queue
                            ),
                        ),
                        other => self.warn(None, format_args!("queue {}: {other:?}", self.queue)),
                    }
                }
            }
        }
        // Oldest first: the oldest copy of an id keeps its place (a batch
        // runs from the list's right end), `LREM` takes the newest from the
        // head.
        let mut seen = std::collections::HashSet::new();
        let mut kept = Vec::with_capacity(ids.len());
        for id in ids.into_iter().rev() {
            if seen.insert(id.clone()) {
                kept.push(id);
            } else {
                let _: i64 = self
                    .conn
                    .query(
                        redis::cmd("LREM")
                            .arg(self.keys.processing.as_str())
                            .arg(1)
                            .arg(&id),
                    )
                    .await?;
            }
        }
        kept.reverse();
        Ok(kept)
    }
}
