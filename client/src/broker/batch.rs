//! [`WorkerBroker`]'s batched claim and finish: under a backlog a worker
//! takes up to N tasks in one round trip and reports a group of results in
//! one, which also claims the next batch.

use super::claim::ClaimKeys;
use super::types::{BatchFinish, Claim, MAX_CLAIM_BATCH};
use super::worker::WorkerBroker;
use crate::{Error, FailureKind, Outcome, Result, fields, scripts};

impl WorkerBroker {
    /// Non-blocking: moves up to `n` of the oldest queued ids into this
    /// worker's processing list and claims each, in one script, oldest
    /// first. Every claimed task is `processing` by this worker from here
    /// on. Empty when the queue is. `n` is clamped to 1..=[`MAX_CLAIM_BATCH`].
    pub async fn claim_batch(&self, n: usize) -> Result<Vec<Claim>> {
        let fencing = self.keys.fencing();
        let inv = scripts::claim_batch(
            &self.queue,
            &self.keys.worker_id,
            self.conn.now_ms(),
            self.keys.ttl_ms,
            n.clamp(1, MAX_CLAIM_BATCH),
            &fencing,
        );
        let replies: Vec<redis::Value> = self.conn.invoke(&inv).await?;
        let mut claims = self.settle_all(replies, "claim").await?;
        ClaimKeys::sent(&mut claims, &fencing);
        Ok(claims)
    }

    /// Writes the outcome of every task in `outcomes` as
    /// [`WorkerBroker::finish`] writes one (each its own status, fields,
    /// TTL and notification), all in one script; then ends each of `held`
    /// (tasks claimed by this worker and not run) whose `cancel` field is
    /// set as `error`, kind `cancelled`; with `release`, puts every other
    /// one of `held` back at the head of the queue as `pending`, in order (a
    /// worker that stops gives back the tasks it never started); reports
    /// the ones of `held` no longer this worker's as `gone` (a retry of a
    /// finish whose reply was lost finds those its first try put back).
    /// Such a retry reports what its first try settled as this one would
    /// have: the results it wrote as written, the held tasks it ended as
    /// cancelled (told by the hash holding exactly those fields, while it
    /// lives). An id given twice is written and counted once. Then it
    /// claims up to `take_next` queued tasks (0: none).
    pub async fn finish_batch(
        &self,
        outcomes: &[Outcome],
        held: &[&str],
        take_next: usize,
        release: bool,
    ) -> Result<BatchFinish> {
        let finished: Vec<scripts::Finished<'_>> = outcomes
            .iter()
            .map(|o| scripts::Finished {
                task_id: o.task_id(),
                fields: fields::terminal(o),
            })
            .collect();
        let fencing = self.keys.fencing();
        let inv = scripts::finish_batch(
            &self.queue,
            &self.keys.worker_id,
            self.conn.now_ms(),
            self.keys.ttl_ms,
            &finished,
            &scripts::Then {
                held,
                release,
                take_next: take_next.min(MAX_CLAIM_BATCH),
            },
            &fencing,
        );
        let mut reply: Vec<redis::Value> = self.conn.invoke_publishing(&inv).await?;
        let bad = |what: &str| Error::Protocol(format!("batched finish answered {what}"));
        if reply.len() < 3 {
            return Err(bad("too few parts"));
        }
        let claims = reply.split_off(3);
        let [flags, cancelled, gone]: [redis::Value; 3] =
            reply.try_into().expect("three parts, counted above");
        let flags: Vec<i64> = redis::from_redis_value(flags).map_err(|e| bad(&e.to_string()))?;
        if flags.len() != outcomes.len() {
            return Err(bad(&format!(
                "{} written flags for {} tasks",
                flags.len(),
                outcomes.len()
            )));
        }
        let texts = |v: redis::Value| {
            redis::from_redis_value::<Vec<Vec<u8>>>(v)
                .map(|items| {
                    items
                        .iter()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .collect::<Vec<_>>()
                })
                .map_err(|e| bad(&e.to_string()))
        };
        let cancelled = texts(cancelled)?
            .chunks(3)
            .map(|p| {
                let kind = p
                    .get(2)
                    .map_or(FailureKind::Cancelled, |k| FailureKind::from_wire(k));
                (p[0].clone(), p.get(1).cloned().unwrap_or_default(), kind)
            })
            .collect();
        let mut next = self.settle_all(claims, "finish").await?;
        ClaimKeys::sent(&mut next, &fencing);
        Ok(BatchFinish {
            written: flags.into_iter().map(|f| f == 1).collect(),
            cancelled,
            gone: texts(gone)?,
            next,
        })
    }

    /// Reads claim replies, ending the unreadable ones.
    async fn settle_all(&self, replies: Vec<redis::Value>, what: &str) -> Result<Vec<Claim>> {
        let mut claims = Vec::with_capacity(replies.len());
        for reply in replies {
            let fields: Vec<Vec<u8>> = redis::from_redis_value(reply)
                .map_err(|e| Error::Protocol(format!("batched {what} answered {e}")))?;
            if let Some(claim) = self.keys.settle(&self.conn, Some(fields)).await? {
                claims.push(claim);
            }
        }
        Ok(claims)
    }
}
