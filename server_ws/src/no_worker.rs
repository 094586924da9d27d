//! `play` on a circle with no live worker: whether it has none (its
//! [`crate::WorkerSight`], looked at again by the request itself when it
//! says none), and the -32002 such a request is answered with.

use serde_json::{Value, json};

use crate::circle::Shared;
use crate::rpc;

/// Whether the circle's workers are known to be gone (never while nothing
/// is known of them). When the record says so, the request looks at them
/// itself first (one round trip, at most one request per circle per
/// `sight::RELOOK_EVERY`; the others go by the record): a worker back since the owner's
/// last look is seen at once.
pub(crate) async fn no_live_worker(shared: &Shared) -> bool {
    let Some(sight) = shared.config.workers.as_ref() else {
        return false;
    };
    if sight.live() != Some(false) {
        return false;
    }
    if sight.may_look_again() {
        let at = std::time::Instant::now();
        let look = shared
            .client
            .worker_heartbeat(&shared.config.queue, sight.dead_after());
        // Redis away or slow: the record stands.
        if let Ok(Ok(heartbeat)) = tokio::time::timeout(RELOOK_TIMEOUT, look).await {
            sight.record(heartbeat, at);
        }
    }
    sight.live() == Some(false)
}

/// Bound on a request's own look at its circle's workers.
const RELOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// What a `play` on a circle with no live worker is told, and the reason
/// its task (if it was submitted) is cancelled with.
/// It names no silence: a worker's heartbeat lives three of its own
/// `--worker-heartbeat`, which the process that serves the circle need not
/// share.
fn no_worker_message(circle: &str, circle_id: u32) -> String {
    format!(
        "no live worker for circle {circle} ({circle_id}): the heartbeats of its workers \
         expired (or none was seen since its endpoint started), so the task cannot run; \
         start its worker (--role all or worker) and try again"
    )
}

/// The one answer to a `play` on a circle with no live worker: -32002
/// naming the circle. `task`: the id of the task submitted before the
/// workers were known to be gone, which is cancelled here (a queued task
/// then ends without running when a worker takes it).
pub(crate) async fn no_worker(shared: &Shared, id: &Value, task: Option<&str>) -> Value {
    let circle = shared.config.circle_name.as_str();
    let circle_id = shared.config.workers.as_ref().map_or(0, |w| w.circle_id());
    let message = no_worker_message(circle, circle_id);
    if let Some(task_id) = task {
        cancel_answered(shared, task_id, &message, "no live worker").await;
    }
    if let Some(n) = shared.status.no_worker() {
        log::warn!(
            circle;
            "{message} ({n} requests answered -32002 for want of a worker so far; logged at \
             powers of two)"
        );
    }
    rpc::error(
        id,
        rpc::BROKER_UNAVAILABLE,
        &message,
        Some(json!({
            "kind": NO_WORKER,
            "circle": circle,
            "circle_id": circle_id,
            "task_id": task,
        })),
    )
}

/// How long an answer waits for the cancel of its task: a Redis that has
/// not taken it by then gets it in the background, so the answer does not
/// wait for a Redis that stalled or went away at that moment.
const CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Cancels `task_id` with `reason` before its client is answered that it
/// will not run (`why`, for the log). Its passed deadline alone does not
/// promise it: it is kept by Redis' clock, and a Redis restarted or failed
/// over with a clock behind the one that wrote it puts it further off; so
/// a cancel Redis does not take within [`CANCEL_WAIT`] is retried in the
/// background until Redis answers.
pub(crate) async fn cancel_answered(shared: &Shared, task_id: &str, reason: &str, why: &str) {
    let failed =
        match tokio::time::timeout(CANCEL_WAIT, shared.client.cancel(task_id, reason)).await {
            Ok(Ok(_)) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {CANCEL_WAIT:?}"),
        };
    let circle = shared.config.circle_name.as_str();
    log::warn!(
        circle, task = task_id;
        "circle {circle}: cancelling task {task_id} ({why}) failed: {failed}; retried until \
         redis answers"
    );
    shared.client.cancel_until_answered(task_id, reason);
}

/// `error.data.kind` of a -32002 for want of a live worker.
pub(crate) const NO_WORKER: &str = "no_worker";
