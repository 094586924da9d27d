//! Waiting for a task's outcome: by notification, with the task hash as
//! the source of truth read as a fallback.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Client, Landed};
use crate::listener::WaiterGuard;
use crate::{Error, Outcome, Result, SubmitOptions, fields, keys};

/// How long the read of a task's hash at its deadline may take: a Redis
/// that does not answer it by then is out of reach.
const LAST_READ: Duration = Duration::from_secs(1);

/// A task submitted by [`Client::submit_watched`], its waiter registered.
pub struct Watched {
    client: Client,
    task_id: String,
    timeout: Duration,
    /// `timeout` after the push began: a push that took long (Redis
    /// paused, or stopped past the response timeout) counts against it, as
    /// against the task's own deadline.
    deadline: Instant,
    /// Whether Redis acknowledged the push.
    landed: Landed,
    rx: oneshot::Receiver<Outcome>,
    _guard: WaiterGuard,
}

impl Watched {
    /// The task id.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// Waits for the task to end, up to the submission's timeout. The
    /// outcome comes by notification; the hash is read only as a fallback
    /// (every [`crate::ClientOptions::fallback_poll`], after a listener
    /// outage, and at the timeout).
    pub async fn outcome(self) -> Result<Outcome> {
        self.client
            .await_outcome(
                &self.task_id,
                self.timeout,
                self.deadline,
                self.rx,
                false,
                self.landed,
            )
            .await
    }
}

impl Client {
    /// Submits a task whose outcome is then awaited with
    /// [`Watched::outcome`], typically elsewhere: the waiter is registered
    /// before the push, so the outcome comes by notification with no read
    /// of the hash first. Dropping the [`Watched`] cancels nothing.
    pub async fn submit_watched(
        &self,
        queue: &str,
        script: &str,
        options: &SubmitOptions,
    ) -> Result<Watched> {
        let task_id = uuid::Uuid::new_v4().to_string();
        self.push_watched(queue, task_id, script, options).await
    }

    pub(super) async fn push_watched(
        &self,
        queue: &str,
        task_id: String,
        script: &str,
        options: &SubmitOptions,
    ) -> Result<Watched> {
        // Registered before the push, so the notification cannot be missed.
        let (guard, rx) = self.inner.registry.register(&task_id);
        let deadline = after(options.timeout);
        let landed = self.push(queue, &task_id, script, options).await?;
        Ok(Watched {
            client: self.clone(),
            task_id,
            timeout: options.timeout,
            deadline,
            landed,
            rx,
            _guard: guard,
        })
    }

    pub(super) async fn await_outcome(
        &self,
        task_id: &str,
        timeout: Duration,
        deadline: Instant,
        mut rx: oneshot::Receiver<Outcome>,
        check_first: bool,
        landed: Landed,
    ) -> Result<Outcome> {
        let mut health = self.inner.health.clone();
        health.borrow_and_update();
        if check_first || !health.borrow().up {
            if let Some(outcome) = self.read_through_outage(task_id, deadline, landed).await? {
                return Ok(outcome);
            }
        }
        let poll = self.inner.options.fallback_poll;
        let mut next_poll = Instant::now() + poll;
        // The listener's health channel closed: it says nothing more (and
        // a closed channel is ready at once, forever).
        let mut listener_gone = false;
        loop {
            tokio::select! {
                delivered = &mut rx => {
                    if let Ok(outcome) = delivered {
                        return Ok(outcome);
                    }
                    // The listener is gone (client dropping); read the hash.
                    return match self.read_outcome(task_id).await? {
                        Some(outcome) => Ok(outcome),
                        None => Err(self.inner.conn.unavailable("the reply listener stopped")),
                    };
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let last = tokio::time::timeout(LAST_READ, self.read_outcome(task_id)).await;
                    return match last {
                        Ok(Ok(Some(outcome))) => Ok(outcome),
                        // Still away at the deadline: the task may have run
                        // (its end unreported), but it cannot start any more.
                        Ok(Err(e @ Error::Unavailable { .. })) => Err(e),
                        // Its submit unanswered, and not there by now: it
                        // may land yet, but it cannot start any more.
                        Ok(Err(Error::Lost { .. })) if landed == Landed::Unsure => {
                            Err(self.inner.conn.unavailable(
                                "redis did not answer the task's submit within the response \
                                 timeout, and the task was not there by its deadline",
                            ))
                        }
                        // Gone, as a poll before the deadline would have
                        // found: lost (it may have run), not timed out.
                        Ok(Err(e @ Error::Lost { .. })) => Err(e),
                        Err(_) => Err(self.inner.conn.unavailable(&format!(
                            "no answer to the read of the task at its deadline within {LAST_READ:?}"
                        ))),
                        _ => Err(Error::Timeout { task_id: task_id.to_owned(), timeout }),
                    };
                }
                _ = tokio::time::sleep_until(next_poll) => {
                    next_poll = Instant::now() + poll;
                    if let Some(outcome) = self.read_through_outage(task_id, deadline, landed).await? {
                        return Ok(outcome);
                    }
                }
                changed = health.changed(), if !listener_gone => {
                    if changed.is_err() {
                        // Listener gone (its runtime shut down): fall back
                        // to polling only.
                        listener_gone = true;
                        next_poll = Instant::now();
                        continue;
                    }
                    // Up again: a notification may have been lost during
                    // the outage. Down: the wait goes on.
                    if let Some(outcome) = self.read_through_outage(task_id, deadline, landed).await? {
                        return Ok(outcome);
                    }
                }
            }
        }
    }

    /// [`Self::read_outcome`], with Redis out of reach read as "not finished
    /// yet": a queued task is waited for through an outage, up to its
    /// `deadline` (no read goes past it), as it may run and end once Redis is
    /// back. A refusal (an ACL that forbids the read, say) is waited
    /// through alike: the task may still end meanwhile, and the error at
    /// the deadline names it. A task whose submit went unanswered
    /// ([`Landed::Unsure`]) and whose hash is missing is not there yet.
    async fn read_through_outage(
        &self,
        task_id: &str,
        deadline: Instant,
        landed: Landed,
    ) -> Result<Option<Outcome>> {
        let Ok(read) = tokio::time::timeout_at(deadline, self.read_outcome(task_id)).await else {
            return Ok(None);
        };
        match read {
            Err(Error::Unavailable { reason, .. }) => {
                log::debug!(
                    task = task_id;
                    "task {task_id}: its hash cannot be read ({reason}); waiting on"
                );
                Ok(None)
            }
            Err(Error::Lost { .. }) if landed == Landed::Unsure => Ok(None),
            read => read,
        }
    }

    /// Reads the task hash: its outcome, or `None` while it is not finished;
    /// [`Error::Lost`] when there is no hash (only tasks known to have been
    /// pushed are read).
    pub(super) async fn read_outcome(&self, task_id: &str) -> Result<Option<Outcome>> {
        // Bytes, then text: a third party may have left a field (a script,
        // a cancel reason) that is not UTF-8, which must not make the
        // outcome unreadable.
        let raw: Vec<(Vec<u8>, Vec<u8>)> = self
            .inner
            .conn
            .query_idempotent(redis::cmd("HGETALL").arg(keys::task_details(task_id)))
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
        if fields.is_empty() {
            return Err(Error::Lost {
                task_id: task_id.to_owned(),
            });
        }
        fields::outcome(task_id, &fields)
    }
}

/// The instant `timeout` from now; one past what the clock can hold (a
/// caller's `Duration::MAX`, meaning no limit) is a century from now.
pub(super) fn after(timeout: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let now = Instant::now();
    now.checked_add(timeout).unwrap_or(now + CENTURY)
}
