//! The `play` method: hand the script to the worker through the client and
//! turn how it ended into a JSON-RPC reply.

use std::sync::atomic::{AtomicBool, Ordering};

use client::{FailureKind, OnDrop, Outcome, Watched};
use serde_json::{Value, json};

use crate::circle::Shared;
use crate::no_worker::{no_live_worker, no_worker};
use crate::rpc;

/// Runs a request's `script` on the circle's queue and returns the reply
/// for `id`. Dropping the call cancels its task (its client went away, so
/// nobody would read the result) unless the server is shutting down and
/// the connection still waits to answer it: then the task runs on, and a
/// running script gets the worker's shutdown grace. Once that wait is over
/// (`abandoned`), dropping it cancels its task as well.
///
/// A task that times out is cancelled before its client is answered -32001
/// (see [`cancel_timed_out`]).
///
/// A circle with no live worker (its [`crate::WorkerSight`] says so, also
/// after the request's own look, see [`crate::no_worker`]) is answered
/// -32002 and nothing is submitted; a task that times out
/// while the circle has none is answered the same way and cancelled, so no
/// worker that comes up later runs it unseen.
pub(crate) async fn play(
    shared: &Shared,
    id: &Value,
    script: &str,
    abandoned: &AtomicBool,
) -> Value {
    let circle = shared.config.circle_name.as_str();
    if no_live_worker(shared).await {
        return no_worker(shared, id, None).await;
    }
    let shutting_down = || shared.token.is_cancelled() && !abandoned.load(Ordering::Acquire);
    let ended = crate::local::client_for(&shared.client)
        .run_with(
            &shared.config.queue,
            script,
            &shared.submit,
            OnDrop::CancelUnless(&shutting_down),
        )
        .await;
    if let Err(
        client::Error::Unavailable { url, reason }
        | client::Error::Interrupted { url, reason, .. }
        | client::Error::MaybeQueued { url, reason, .. },
    ) = &ended
    {
        broker_unavailable(shared, url, reason);
    }
    log_ended(circle, script.len(), &ended);
    if let Err(client::Error::Timeout { task_id, .. }) = &ended {
        if no_live_worker(shared).await {
            return no_worker(shared, id, Some(task_id)).await;
        }
        cancel_timed_out(shared, task_id).await;
    }
    reply(circle, id, ended)
}

/// The reason a task is cancelled with when its client is answered -32001
/// for it.
const TIMED_OUT_REASON: &str = "its client was answered that it timed out";

/// Cancels the task a client is about to be answered -32001 for, so that
/// it neither starts nor goes on after that answer (see
/// [`crate::no_worker::cancel_answered`]). A task that ended first stays as
/// it ended.
async fn cancel_timed_out(shared: &Shared, task_id: &str) {
    crate::no_worker::cancel_answered(shared, task_id, TIMED_OUT_REASON, "answered as timed out")
        .await;
}

/// Pushes a notification's task (its sender wants no reply), its waiter
/// registered; `None` when the broker refused it (logged: nobody else will
/// hear of it).
pub(crate) async fn submit_notification(shared: &Shared, script: &str) -> Option<Watched> {
    let circle = shared.config.circle_name.as_str();
    match crate::local::client_for(&shared.client)
        .submit_watched(&shared.config.queue, script, &shared.submit)
        .await
    {
        Ok(watched) => {
            log::debug!(
                circle, task = watched.task_id();
                "circle {circle}: notification ({} bytes) queued as task {}",
                script.len(),
                watched.task_id()
            );
            Some(watched)
        }
        Err(client::Error::Unavailable { url, reason }) => {
            broker_unavailable(shared, &url, &reason);
            None
        }
        // Its sender asked for no reply: the task runs if it was queued.
        Err(client::Error::MaybeQueued {
            task_id,
            url,
            reason,
        }) => {
            broker_unavailable(shared, &url, &reason);
            log::warn!(
                circle, task = task_id.as_str();
                "circle {circle}: a notification's task {task_id} may have been queued: redis \
                 became unavailable as it was submitted"
            );
            None
        }
        Err(e) => {
            log::error!(circle; "circle {circle}: a notification's task could not be queued: {e}");
            None
        }
    }
}

/// Waits until a notification's task ended (so it holds its in-flight slot
/// meanwhile); how it ended goes only to the debug log.
pub(crate) async fn await_notification(shared: &Shared, watched: Watched) {
    let task_id = watched.task_id().to_owned();
    match watched.outcome().await {
        Ok(Outcome::Completed(_)) => {}
        Ok(Outcome::Failed(f)) => log::debug!(
            circle = shared.config.circle_name.as_str(), task = task_id.as_str();
            "circle {}: notification task {task_id} failed ({}): {}",
            shared.config.circle_name,
            f.kind,
            f.message
        ),
        Err(e) => log::debug!(
            circle = shared.config.circle_name.as_str(), task = task_id.as_str();
            "circle {}: waiting for notification task {task_id}: {e}",
            shared.config.circle_name
        ),
    }
}

/// A request's end in the debug log, with its task id when it got one.
fn log_ended(circle: &str, bytes: usize, ended: &client::Result<Outcome>) {
    let (task, how) = match ended {
        Ok(Outcome::Completed(out)) => (Some(out.task_id.as_str()), "completed".to_owned()),
        Ok(Outcome::Failed(f)) => (Some(f.task_id.as_str()), format!("failed ({})", f.kind)),
        Err(client::Error::Timeout { task_id, .. }) => {
            (Some(task_id.as_str()), "timed out".to_owned())
        }
        // Its fate unknown: it may have run (its error says so).
        Err(
            e @ (client::Error::Interrupted { task_id, .. }
            | client::Error::MaybeQueued { task_id, .. }
            | client::Error::Lost { task_id }),
        ) => (Some(task_id.as_str()), e.to_string()),
        Err(e) => (None, format!("not run: {e}")),
    };
    match task {
        Some(task) => log::debug!(
            circle, task;
            "circle {circle}: play ({bytes} bytes) as task {task}: {how}"
        ),
        None => log::debug!(circle; "circle {circle}: play ({bytes} bytes): {how}"),
    }
}

/// Every request fails alike while Redis is away: a few lines, not one per
/// request.
fn broker_unavailable(shared: &Shared, url: &str, reason: &str) {
    if let Some(n) = shared.status.broker_unavailable() {
        log::warn!(
            circle = shared.config.circle_name.as_str();
            "circle {}: broker at {url} unavailable: {reason} ({n} requests answered \
             -32002 or notifications dropped so far; logged at powers of two)",
            shared.config.circle_name
        );
    }
}

/// Maps how a task ended to a reply. A script failure is -32000, or -32001 when
/// its kind is `timeout` (the engine stopped it) or `expired` (its deadline
/// passed before a worker took it), or -32004 when it is `forbidden` (the
/// caller's role does not allow a write); broker errors are -32002 / -32001; anything
/// else is a generic -32603 with the detail only in the log.
pub(crate) fn reply(circle: &str, id: &Value, ended: client::Result<Outcome>) -> Value {
    match ended {
        Ok(Outcome::Completed(out)) => rpc::success(
            id,
            json!({
                "output": out.output,
                "printed": out.printed,
                "task_id": out.task_id,
                // Microsecond precision, without float noise in the text.
                "run_time_ms": out.run_time.map(|d| d.as_micros() as f64 / 1000.0),
            }),
        ),
        Ok(Outcome::Failed(f)) => {
            // The one place a failure kind picks a JSON-RPC code.
            let code = match f.kind {
                FailureKind::Timeout | FailureKind::Expired => rpc::TIMED_OUT,
                FailureKind::Forbidden => rpc::FORBIDDEN,
                _ => rpc::SCRIPT_FAILED,
            };
            // Line and column only where the engine knows them (a limit
            // passed by the result, say, has none).
            let mut data = json!({ "kind": f.kind.as_str(), "task_id": f.task_id });
            for (name, at) in [("line", f.line), ("column", f.column)] {
                if let Some(at) = at {
                    data[name] = json!(at);
                }
            }
            rpc::error(id, code, &f.message, Some(data))
        }
        Err(client::Error::Timeout { task_id, timeout }) => rpc::error(
            id,
            rpc::TIMED_OUT,
            &format!("the task did not finish within {} ms", timeout.as_millis()),
            Some(json!({ "kind": FailureKind::Timeout.as_str(), "task_id": task_id })),
        ),
        // Refused until Redis's operator acts (out of memory, a failed
        // persistence, an ACL): trying again does not help, the reason says
        // what is wrong (and no address or credential).
        Err(e @ client::Error::Unavailable { .. }) => match e.refusal() {
            Some(refusal) => rpc::error(
                id,
                rpc::BROKER_UNAVAILABLE,
                &format!(
                    "the task broker (redis) refuses requests until its operator acts: {}",
                    refusal.describe()
                ),
                Some(json!({ "reason": refusal.describe() })),
            ),
            None => rpc::error(
                id,
                rpc::BROKER_UNAVAILABLE,
                "the task broker (redis) is unavailable; try again later",
                None,
            ),
        },
        Err(client::Error::Interrupted { task_id, .. }) => rpc::error(
            id,
            rpc::BROKER_UNAVAILABLE,
            "the task broker (redis) became unavailable after the task was queued and was \
             still unavailable at its deadline; it may have run, but it cannot start any \
             more: check its effects before sending it again",
            Some(json!({ "task_id": task_id })),
        ),
        Err(client::Error::MaybeQueued { task_id, .. }) => rpc::error(
            id,
            rpc::BROKER_UNAVAILABLE,
            "the task broker (redis) became unavailable while the task was being queued; it \
             may have been queued, and it is cancelled as soon as redis answers, but it may \
             run before that: check its effects before sending it again",
            Some(json!({ "task_id": task_id })),
        ),
        Err(client::Error::Lost { task_id }) => {
            log::warn!(
                circle, task = task_id.as_str();
                "circle {circle}: task {task_id} is gone from redis before its outcome was read"
            );
            rpc::error(
                id,
                rpc::BROKER_UNAVAILABLE,
                "the task broker (redis) lost the task before its outcome was read (a \
                 failover of the primary, or its data was flushed or expired); it may have run",
                Some(json!({ "task_id": task_id })),
            )
        }
        Err(other) => {
            log::error!(circle; "circle {circle}: play failed inside the server: {other}");
            rpc::internal(id)
        }
    }
}

#[cfg(test)]
mod tests;
