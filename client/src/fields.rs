//! Field names of the task hash `rhai_task_details:<id>` and how a hash (or a
//! notification carrying the same fields) becomes an [`Outcome`].
//!
//! State changes: a submitter writes `pending`; a worker's claim writes
//! `processing`; the worker's finish writes `completed` or `error`. Only
//! `script` and `status` are required of a third-party submitter.

use std::collections::HashMap;
use std::time::Duration;

use crate::{Error, FailureKind, Outcome, Result, TaskFailure, TaskOutput};

/// The script source. Written by the submitter.
pub const SCRIPT: &str = "script";
/// `pending` → `processing` → `completed` | `error`.
pub const STATUS: &str = "status";
/// Submission time, ms since the Unix epoch.
pub const CREATED_AT: &str = "createdAt";
/// Time of the last state change, ms since the Unix epoch.
pub const UPDATED_AT: &str = "updatedAt";
/// Optional: after this time (ms since the epoch) the task is not run; it
/// ends as `error` with kind `expired`.
pub const DEADLINE: &str = "deadline";
/// Optional: pub/sub channel to publish the result on.
pub const REPLY_TO: &str = "replyTo";
/// Optional, with [`REPLY_TO`]: the submitter's promise to read the
/// outcome from the notification, as milliseconds (a positive integer).
/// When a task that has it ends, its notification reaches at least one
/// subscriber of `replyTo` (`PUBLISH` counts them), the task has no
/// [`CANCEL`] and its [`DEADLINE`] (the waiter's end) has not passed, the
/// hash expires after this many ms — at most the worker's result TTL —
/// instead of the result TTL. Otherwise (no waiter listening, a waiter that
/// went away or gave up, a task without the field, such as one another
/// program pushed) the result TTL applies, so whoever polls the hash still
/// finds it. Written by servers that deliver results over WebSocket
/// (`--delivered-ttl`), so delivered results leave Redis early.
pub const DELIVERED_TTL: &str = "deliveredTtl";
/// Optional: `1` lets a reaper put the task back on the queue when its worker
/// died while running it, instead of ending it with `worker_lost`.
pub const RETRY: &str = "retry";
/// Written by a reaper that put a [`RETRY`] task back on the queue (its
/// worker died while it ran), with the time (ms since the epoch): the task
/// may have run and committed writes, so if it is then cancelled, or its
/// deadline passes, before it starts again, it ends as `worker_lost`, never
/// as "cancelled" or "expired before it ran".
pub const LOST_AT: &str = "lostAt";
/// Optional: the name of the authenticated principal that submitted the
/// task ([`crate::Caller`]); never the token. Scripts read it with
/// `caller()`. Read only together with [`ROLE`]; absent for an open circle
/// and for tasks other programs push straight into Redis.
pub const CALLER: &str = "caller";
/// Optional: the submitting principal's role (`read`, `write`,
/// [`crate::Role`]), which the worker enforces: with `read`, a script's
/// `db::insert`, `db::update` and `db::delete` fail with kind `forbidden`
/// and nothing is written.
///
/// A task without `role` runs as the trusted identity: role `write`, and
/// `caller()` gives `""` whatever [`CALLER`] holds. Such tasks come from
/// programs that push straight into Redis, and whoever can write to the
/// circle's Redis already controls every task, queue and result there:
/// Redis access is admin access, so protect it as such (bind, password, ACL).
/// Any other value (`""`, `admin`, `Read`, ...) ends the task as `error`,
/// kind `invalid`, naming the value, without running it.
pub const ROLE: &str = "role";
/// The id of the worker that claimed the task.
pub const WORKER_ID: &str = "workerId";
/// The queue of the worker that claimed the task: that worker's processing
/// list is `rhai_processing:<workerQueue>:<workerId>`. A worker of another
/// queue that takes a copy of the id (pushed onto two queues) looks there
/// to see that the task is held, and leaves it. Written and deleted with
/// [`WORKER_ID`]; a hash without it names a worker of the claiming queue.
pub const WORKER_QUEUE: &str = "workerQueue";
/// When the worker claimed the task, ms since the epoch.
pub const STARTED_AT: &str = "startedAt";
/// On `completed`: the final value as text.
pub const OUTPUT: &str = "output";
/// What the script printed (capped by the engine).
pub const PRINTED: &str = "printed";
/// Microseconds the engine spent running the script.
pub const RUN_TIME_US: &str = "runTimeUs";
/// On `error`: the message.
pub const ERROR: &str = "error";
/// On `error`: the kind's wire name ([`crate::FailureKind::as_str`]:
/// `syntax`, `runtime`, `limit`, `timeout`, `cancelled`, `expired`,
/// `worker_lost`, …).
pub const ERROR_KIND: &str = "errorKind";
/// On `error`: 1-based line, when known.
pub const ERROR_LINE: &str = "errorLine";
/// On `error`: 1-based column, when known.
pub const ERROR_COLUMN: &str = "errorColumn";
/// Every field an end writes (of `completed` or of `error`): a claim
/// removes those a task holds before it runs or ends, so an id used again,
/// or a hash a submitter filled with them, ends with one outcome only.
pub const OUTCOME: [&str; 7] = [
    OUTPUT,
    PRINTED,
    RUN_TIME_US,
    ERROR,
    ERROR_KIND,
    ERROR_LINE,
    ERROR_COLUMN,
];
/// Optional: set by whoever cancels the task ([`crate::Client::cancel`]),
/// holding the reason. A task that has it when a worker claims it ends as
/// `error` (kind `cancelled`) without running; a running task's worker
/// looks for it while the script runs (every 100 ms by default, the
/// worker's `cancel_poll`) and stops the script, keeping none of its
/// writes. Written only while the task is `pending` or `processing`.
pub const CANCEL: &str = "cancel";
/// In notifications only: the task id.
pub const ID: &str = "id";

/// Status values.
pub mod status {
    /// Waiting in the queue.
    pub const PENDING: &str = "pending";
    /// Claimed by a worker.
    pub const PROCESSING: &str = "processing";
    /// Finished with an output.
    pub const COMPLETED: &str = "completed";
    /// Finished with an error.
    pub const ERROR: &str = "error";
}

/// The outcome the fields describe, or `None` while the task is not finished.
pub(crate) fn outcome(task_id: &str, fields: &HashMap<String, String>) -> Result<Option<Outcome>> {
    let get = |name: &str| fields.get(name).cloned().unwrap_or_default();
    let number = |name: &str| fields.get(name).and_then(|v| v.parse::<u32>().ok());
    match fields.get(STATUS).map(String::as_str) {
        Some(status::COMPLETED) => Ok(Some(Outcome::Completed(TaskOutput {
            task_id: task_id.to_owned(),
            output: get(OUTPUT),
            printed: get(PRINTED),
            run_time: fields
                .get(RUN_TIME_US)
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_micros),
        }))),
        Some(status::ERROR) => Ok(Some(Outcome::Failed(TaskFailure {
            task_id: task_id.to_owned(),
            kind: fields
                .get(ERROR_KIND)
                .map_or(FailureKind::Unknown, |name| FailureKind::from_wire(name)),
            message: get(ERROR),
            line: number(ERROR_LINE),
            column: number(ERROR_COLUMN),
        }))),
        Some(status::PENDING) | Some(status::PROCESSING) => Ok(None),
        None if fields.is_empty() => Err(Error::Protocol(format!(
            "task {task_id} does not exist (unknown id, or its result expired)"
        ))),
        None => Ok(None),
        Some(other) => Err(Error::Protocol(format!(
            "task {task_id} has unknown status {other:?}"
        ))),
    }
}

/// The fields a worker writes when the task ended as `outcome` (the inverse
/// of [`outcome`], without the id): `status` first, as the finishing script
/// expects.
pub(crate) fn terminal(outcome: &Outcome) -> Vec<(&'static str, String)> {
    let mut pairs: Vec<(&str, String)> = Vec::with_capacity(5);
    match outcome {
        Outcome::Completed(out) => {
            pairs.push((STATUS, status::COMPLETED.to_owned()));
            pairs.push((OUTPUT, out.output.clone()));
            pairs.push((PRINTED, out.printed.clone()));
            if let Some(run_time) = out.run_time {
                pairs.push((RUN_TIME_US, run_time.as_micros().to_string()));
            }
        }
        Outcome::Failed(failure) => {
            pairs.push((STATUS, status::ERROR.to_owned()));
            pairs.push((ERROR, failure.message.clone()));
            pairs.push((ERROR_KIND, failure.kind.as_str().to_owned()));
            if let Some(line) = failure.line {
                pairs.push((ERROR_LINE, line.to_string()));
            }
            if let Some(column) = failure.column {
                pairs.push((ERROR_COLUMN, column.to_string()));
            }
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::{OUTCOME, STATUS, outcome, terminal};
    use crate::{FailureKind, Outcome, TaskFailure, TaskOutput};

    /// What a worker writes reads back as the outcome it wrote.
    #[test]
    fn the_fields_a_worker_writes_read_back_as_its_outcome() {
        let ended = [
            Outcome::Completed(TaskOutput {
                task_id: "t".into(),
                output: "42".into(),
                printed: "hi\n".into(),
                run_time: Some(Duration::from_micros(7)),
            }),
            Outcome::Failed(TaskFailure {
                task_id: "t".into(),
                kind: FailureKind::Syntax,
                message: "unexpected end".into(),
                line: Some(1),
                column: Some(4),
            }),
            Outcome::Failed(TaskFailure {
                task_id: "t".into(),
                kind: FailureKind::Other("quota".into()),
                message: "over quota".into(),
                line: None,
                column: None,
            }),
        ];
        for written in ended {
            let hash: HashMap<String, String> = terminal(&written)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            assert_eq!(outcome("t", &hash).expect("readable"), Some(written));
            // Everything an end writes besides its status is an outcome
            // field, which a claim removes from a hash before the run.
            for field in hash.keys().filter(|f| *f != STATUS) {
                assert!(
                    OUTCOME.contains(&field.as_str()),
                    "{field} is not in OUTCOME"
                );
            }
        }
    }
}
