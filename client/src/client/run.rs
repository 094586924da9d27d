//! [`Client::run_with`]: submit and wait, and what becomes of the task
//! when the caller stops waiting first ([`OnDrop`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use super::Client;
use crate::{Error, Outcome, Result, SubmitOptions};

impl Client {
    /// Submits a script and waits for its outcome, up to `options.timeout`.
    ///
    /// `on_drop` says what happens to the task when the call does not end
    /// with the task's outcome — its future is dropped, say because the
    /// WebSocket client that asked went away, or the broker failed under
    /// it; not on [`Error::Timeout`], as the task's deadline ends it. With
    /// [`OnDrop::Cancel`] the call asks in the background for the task to be
    /// cancelled ([`Client::cancel`]), so no worker spends time on a result
    /// nobody reads: a queued task then ends without running, a running
    /// script is stopped and keeps none of its writes (unless it finished
    /// first). [`Client::submit_watched`] submits a task that outlives its
    /// submitter's interest.
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
            // Queued: a broker that fails now may fail after the task ran.
            Ok(watched) => watched.outcome().await.map_err(|e| match e {
                Error::Unavailable { url, reason } => Error::Interrupted {
                    task_id: task_id.clone(),
                    url,
                    reason,
                },
                other => other,
            }),
            Err(e) => Err(e),
        };
        match cancel_reason(&outcome) {
            Some(reason) => cancel.reason = reason,
            None => cancel.on_drop = OnDrop::Keep,
        }
        // Queued (or maybe queued), and Redis failed: its deadline keeps it
        // from starting only while Redis' clock does not step back (a Redis
        // restored, or failed over, with its clock behind), so the cancel
        // goes on until Redis answers it, however long it is away.
        match &outcome {
            Err(Error::Interrupted { .. }) => cancel.retry_for = Duration::MAX,
            // Its caller is told it is cancelled: nobody waits for it, so
            // even a server shutting down, which keeps its tasks for the
            // connections still waiting to answer them, cancels this one.
            Err(Error::MaybeQueued { .. }) => {
                cancel.retry_for = Duration::MAX;
                cancel.on_drop = OnDrop::Cancel;
            }
            _ => {}
        }
        outcome
    }
}

/// What happens to the task of a [`Client::run_with`] call that ends
/// without delivering the task's outcome (its future dropped, or the broker
/// failed under it). A call that timed out never cancels: the task's
/// deadline ends it.
#[derive(Clone, Copy)]
pub enum OnDrop<'a> {
    /// Cancel the task.
    Cancel,
    /// Let it run to its end (a JSON-RPC notification: its sender asked for
    /// no reply, not for nothing to happen).
    Keep,
    /// Cancel it unless the function, asked at that moment, says to keep it
    /// (a server shutting down keeps its tasks, which then get the worker's
    /// own shutdown grace).
    CancelUnless(&'a (dyn Fn() -> bool + Send + Sync)),
}

/// The reason [`Client::run_with`] gives when its future is dropped before the
/// task's outcome reached it.
pub const SUBMITTER_GONE: &str = "the client that sent the task went away";

/// The reason [`Client::run_with`] gives when the broker failed while it waited
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
/// request goes out on a task of the client's home runtime (for a twin, its
/// base client's and runtime: a server thread's runtime may stop with the
/// connection, the shared one runs to the end), retried through a broker
/// outage for up to the task's timeout, or, for a task known or maybe
/// queued ([`Error::Interrupted`], [`Error::MaybeQueued`]), until Redis
/// answers. [`Client::cancels_written`] waits for the ones asked for; a
/// runtime that shuts down first, or an outage that outlasts the retries,
/// leaves the task to its deadline.
struct CancelOnDrop<'a> {
    client: &'a Client,
    task_id: &'a str,
    on_drop: OnDrop<'a>,
    reason: &'static str,
    retry_for: Duration,
}

/// The cancels on drop asked for through one client and not yet settled.
#[derive(Default)]
pub(super) struct Pending {
    count: AtomicUsize,
    settled: Notify,
}

/// One pending cancel, settled when dropped (written, given up, or its
/// runtime gone).
struct Settles(Arc<Pending>);

impl Settles {
    fn new(pending: &Arc<Pending>) -> Settles {
        pending.count.fetch_add(1, Ordering::SeqCst);
        Settles(Arc::clone(pending))
    }
}

impl Drop for Settles {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.settled.notify_waiters();
        }
    }
}

impl Client {
    /// Waits up to `within` for the cancels asked for by dropped
    /// [`Client::run_with`] calls through this client (and its twins) to be
    /// written; how many are still unwritten then. A server stopping calls
    /// it last, so that a request it left unanswered does not run later.
    pub async fn cancels_written(&self, within: Duration) -> usize {
        let pending = &self.home().inner.cancels;
        let waiting = async {
            loop {
                let settled = pending.settled.notified();
                tokio::pin!(settled);
                settled.as_mut().enable();
                if pending.count.load(Ordering::SeqCst) == 0 {
                    return;
                }
                settled.await;
            }
        };
        let _ = tokio::time::timeout(within, waiting).await;
        pending.count.load(Ordering::SeqCst)
    }

    /// The client whose runtime this one's cancels on drop run on: its
    /// base for a twin, itself otherwise.
    fn home(&self) -> &Client {
        self.inner.base.as_ref().unwrap_or(self)
    }
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        match self.on_drop {
            OnDrop::Keep => return,
            OnDrop::CancelUnless(keep) if keep() => return,
            OnDrop::Cancel | OnDrop::CancelUnless(_) => {}
        }
        self.client
            .cancel_in_background(self.task_id, self.reason, self.retry_for);
    }
}

impl Client {
    /// Asks in the background for the task to be cancelled, as
    /// [`Client::cancel`] does, on the client's home runtime (for a twin,
    /// its base client's), retried through a broker outage until Redis
    /// answers, however long it is away. [`Client::cancels_written`] waits
    /// for it as for a cancel on drop.
    pub fn cancel_until_answered(&self, task_id: &str, reason: &str) {
        self.cancel_in_background(task_id, reason, Duration::MAX);
    }

    /// Sends a cancel on the home runtime, retried through a broker outage
    /// for up to `retry_for`.
    fn cancel_in_background(&self, task_id: &str, reason: &str, retry_for: Duration) {
        let client = self.home().clone();
        let settles = Settles::new(&client.inner.cancels);
        let task_id = task_id.to_owned();
        let reason = reason.to_owned();
        let give_up = super::wait::after(retry_for);
        let runtime = client.inner.home.clone();
        runtime.spawn(async move {
            let _settles = settles;
            let mut backoff = Duration::from_millis(100);
            loop {
                match client.cancel(&task_id, &reason).await {
                    Ok(true) => log::debug!(task = task_id.as_str(); "task {task_id}: cancelled: {reason}"),
                    Ok(false) => {}
                    Err(e @ Error::Unavailable { .. }) if super::wait::after(backoff) < give_up => {
                        log::debug!(
                            task = task_id.as_str();
                            "task {task_id}: asking for its cancellation failed: {e}; retrying"
                        );
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(client.inner.options.max_backoff);
                        continue;
                    }
                    Err(e) => {
                        log::debug!(task = task_id.as_str(); "task {task_id}: asking for its cancellation failed: {e}")
                    }
                }
                return;
            }
        });
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
