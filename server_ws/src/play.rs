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
        client::Error::Unavailable { url, reason } | client::Error::Interrupted { url, reason, .. },
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
mod tests {
    use std::time::Duration;

    use client::{TaskFailure, TaskOutput};

    use super::*;

    #[test]
    fn completed_task_gives_output_printed_and_task_id() {
        let v = reply(
            "c",
            &json!(1),
            Ok(Outcome::Completed(TaskOutput {
                task_id: "t1".into(),
                output: "42".into(),
                printed: "hi\n".into(),
                run_time: Some(Duration::from_millis(3)),
            })),
        );
        assert_eq!(v["id"], 1);
        assert_eq!(v["result"]["output"], "42");
        assert_eq!(v["result"]["printed"], "hi\n");
        assert_eq!(v["result"]["task_id"], "t1");
        assert_eq!(v["result"]["run_time_ms"], 3.0);
    }

    #[test]
    fn failed_script_gives_32000_with_kind_line_and_column() {
        let v = reply(
            "c",
            &json!("x"),
            Ok(Outcome::Failed(TaskFailure {
                task_id: "t2".into(),
                kind: FailureKind::from_wire("syntax"),
                message: "unexpected end".into(),
                line: Some(1),
                column: Some(4),
            })),
        );
        assert_eq!(v["error"]["code"], rpc::SCRIPT_FAILED);
        assert_eq!(v["error"]["message"], "unexpected end");
        assert_eq!(
            v["error"]["data"],
            json!({"kind":"syntax","line":1,"column":4,"task_id":"t2"})
        );
    }

    #[test]
    fn a_failure_without_a_position_has_no_line_or_column() {
        let v = reply(
            "c",
            &json!("x"),
            Ok(Outcome::Failed(TaskFailure {
                task_id: "t9".into(),
                kind: FailureKind::from_wire("limit"),
                message: "result of 3600000 bytes exceeds the output limit".into(),
                line: None,
                column: None,
            })),
        );
        assert_eq!(v["error"]["data"], json!({"kind":"limit","task_id":"t9"}));
    }

    #[test]
    fn timeouts_give_32001() {
        let v = reply(
            "c",
            &json!(1),
            Err(client::Error::Timeout {
                task_id: "t3".into(),
                timeout: Duration::from_secs(2),
            }),
        );
        assert_eq!(v["error"]["code"], rpc::TIMED_OUT);
        assert_eq!(v["error"]["data"]["task_id"], "t3");
        let v = reply(
            "c",
            &json!(1),
            Ok(Outcome::Failed(TaskFailure {
                task_id: "t4".into(),
                kind: FailureKind::from_wire("timeout"),
                message: "script ran out of time".into(),
                line: None,
                column: None,
            })),
        );
        assert_eq!(v["error"]["code"], rpc::TIMED_OUT);
        let v = reply(
            "c",
            &json!(1),
            Ok(Outcome::Failed(TaskFailure {
                task_id: "t5".into(),
                kind: FailureKind::from_wire("expired"),
                message: "the deadline passed before a worker took the task".into(),
                line: None,
                column: None,
            })),
        );
        assert_eq!(v["error"]["code"], rpc::TIMED_OUT);
        assert_eq!(v["error"]["data"]["kind"], "expired");
    }

    #[test]
    fn a_forbidden_write_gives_32004_with_kind_forbidden() {
        let message = "db::insert is not allowed: principal 'bob' has role read; \
                       writes need role write";
        let v = reply(
            "c",
            &json!(7),
            Ok(Outcome::Failed(TaskFailure {
                task_id: "t6".into(),
                kind: FailureKind::from_wire("forbidden"),
                message: message.into(),
                line: Some(1),
                column: Some(5),
            })),
        );
        assert_eq!(rpc::FORBIDDEN, -32004);
        assert_eq!(v["id"], 7);
        assert_eq!(v["error"]["code"], -32004);
        assert_eq!(v["error"]["message"], message);
        assert_eq!(
            v["error"]["data"],
            json!({"kind":"forbidden","line":1,"column":5,"task_id":"t6"})
        );
    }

    /// The whole chain behind a read principal's write: its task goes
    /// through a real Redis to the real worker and engine, which refuse the
    /// write, and the reply is -32004 with kind `forbidden`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_callers_write_through_the_real_worker_gives_32004() {
        use std::sync::Arc;

        let redis = testkit::RedisServer::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let db = ourdb::OurDb::open(dir.path(), ourdb::Config::default()).expect("open ourdb");
        let engine = Arc::new(engine::CircleEngine::new(
            Arc::new(db),
            engine::Limits::default(),
        ));
        let token = tokio_util::sync::CancellationToken::new();
        tokio::spawn(worker::run(
            worker::WorkerConfig::new(&redis.url(), "roles"),
            engine,
            Arc::new(worker::WorkerStatus::default()),
            token.clone(),
        ));
        let client = client::Client::connect(&redis.url())
            .await
            .expect("connect");
        let as_bob = client::SubmitOptions {
            caller: Some(client::Caller {
                name: "bob".into(),
                role: client::Role::Read,
            }),
            ..client::SubmitOptions::with_timeout(Duration::from_secs(30))
        };
        let ended = client
            .run_with("roles", "db::insert(1)", &as_bob, client::OnDrop::Cancel)
            .await;
        let v = reply("c", &json!(9), ended);
        assert_eq!(v["error"]["code"], rpc::FORBIDDEN, "{v}");
        assert_eq!(v["error"]["data"]["kind"], "forbidden", "{v}");
        assert_eq!(
            v["error"]["message"],
            "db::insert is not allowed: principal 'bob' has role read; writes need role write"
        );
        let ended = client
            .run_with(
                "roles",
                "`${caller()}: ${db::next_id()}`",
                &as_bob,
                client::OnDrop::Cancel,
            )
            .await;
        let v = reply("c", &json!(10), ended);
        assert_eq!(v["result"]["output"], "bob: 1", "{v}");
        token.cancel();
    }

    #[test]
    fn broker_faults_leak_no_internals() {
        let v = reply(
            "c",
            &json!(1),
            Err(client::Error::Unavailable {
                url: "redis://127.0.0.1:1/".into(),
                reason: "connection refused".into(),
            }),
        );
        assert_eq!(v["error"]["code"], rpc::BROKER_UNAVAILABLE);
        assert!(!v.to_string().contains("127.0.0.1"));
        let v = reply(
            "c",
            &json!(1),
            Err(client::Error::Protocol("bad hash field".into())),
        );
        assert_eq!(v["error"]["code"], rpc::INTERNAL_ERROR);
        assert!(!v.to_string().contains("hash"));
        // Queued before the broker failed: it may have run, and is named.
        let v = reply(
            "c",
            &json!(1),
            Err(client::Error::Interrupted {
                task_id: "t-1".into(),
                url: "redis://127.0.0.1:1/".into(),
                reason: "connection refused".into(),
            }),
        );
        assert_eq!(v["error"]["code"], rpc::BROKER_UNAVAILABLE);
        assert_eq!(v["error"]["data"]["task_id"], "t-1");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("it may have run, but it cannot start any more"),
            "{v}"
        );
        assert!(!message.contains("try again later"), "{v}");
        assert!(!v.to_string().contains("127.0.0.1"));
    }
}
