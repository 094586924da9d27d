//! A Redis that lost a claim or a finish (restored from an older snapshot,
//! an outage that cut a reply) and ids a third party pushes again after
//! they ended, the old hash kept (`status` and `script` overwritten, as a
//! "retry" tool does): a pushed-again id runs, whether the claim is read at
//! once or found in the processing list after an outage; a result written
//! again for a task the restored Redis shows queued is not turned into a
//! database error by a failed fsync of the group it lands in.

mod common;

use std::time::Duration;

use common::*;
use worker::WorkerConfig;

const WAIT: Duration = Duration::from_secs(30);
const QUEUE: &str = "reused";

/// Control: no outage. The re-pushed `job` runs (the claim's `ended_before`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_id_with_old_hash_runs_without_an_outage() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let worker = TestWorker::start_fresh(
        WorkerConfig::new(&url, QUEUE),
        fast_options(),
        slow_limits(),
    );
    let mut conn = raw(&url).await;
    push_task(&mut conn, QUEUE, "job", &[], "\"first\"").await;
    until_status(&conn, "job", "completed", WAIT).await;
    push_task(&mut conn, QUEUE, "job", &[], "\"second\"").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    until_ended(&conn, "job", WAIT).await;
    let job = hgetall(&mut conn, "job").await;
    assert_eq!(
        job.get("output").map(String::as_str),
        Some("second"),
        "{job:?}"
    );
    worker.stop().await;
}

/// The same reuse, landing in the worker's processing list behind a finish
/// that fails (as `lost_finish_reuse.rs`, the old hash kept): pending
/// there, or claimed by that finish, its reply lost. Claimed, its hash
/// shows it `processing` by this worker with the `createdAt` of the run
/// that ended, as a run whose finish Redis lost would: the claim's own
/// `startedAt` tells them apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_id_with_old_hash_found_pending_in_the_processing_list_after_an_outage_runs() {
    a_pushed_again_id_behind_a_failed_finish_runs(QUEUE, Reuse::Pending, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_id_with_old_hash_claimed_before_the_lost_reply_runs() {
    a_pushed_again_id_behind_a_failed_finish_runs(QUEUE, Reuse::Claimed, true).await;
}

/// A task a restored Redis shows queued again (`group.rs`: its kept result
/// written again, not run) that lands in a group behind a task that writes,
/// whose fsync then fails. It did not run in that group and read nothing
/// of it (its own writes were made durable before its first finish): its
/// kept result is written, not "the script may have read writes of its
/// group that could not be made durable".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_written_again_is_not_turned_into_a_database_error_by_its_groups_fsync() {
    let mut redis = testkit::RedisServer::start();
    let port = redis.port();
    let url = acl_user(port, Some("rhai_*"));
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open_engine(dir.path(), slow_limits());
    assert_eq!(engine.db().insert(b"\"kept\"").expect("insert"), 1);
    let mut options = fast_options();
    options.group_window = Duration::from_secs(60);
    let worker = TestWorker::start_with(WorkerConfig::new(&url, QUEUE), options, engine);
    let mut conn = raw(&redis.url()).await;
    queued_behind_a_blocker_then_saved(&mut conn, QUEUE, WAIT).await;
    until_status(&conn, "once", "completed", WAIT).await;
    assert_eq!(worker.engine.db().next_id(), 3, "it ran once");
    // Redis comes back from the snapshot, without the ACL user: the worker
    // waits outside until a writer is queued ahead of `once`.
    redis.kill();
    redis.restart();
    let mut conn = raw(&redis.url()).await;
    assert_eq!(
        hget(&mut conn, "once", "status").await.as_deref(),
        Some("pending")
    );
    hset_raw(
        &mut conn,
        b"writer",
        &[
            (b"script", b"db::insert(2); \"writer\""),
            (b"status", b"pending"),
        ],
    )
    .await;
    let _: () = redis::cmd("RPUSH")
        .arg(client::keys::tasks(QUEUE))
        .arg("writer")
        .query_async(&mut conn)
        .await
        .expect("rpush");
    let _failing = ourdb::fault::fail_syncs_under(dir.path());
    acl_user(port, Some("rhai_*"));
    for id in ["writer", "once"] {
        until_ended(&conn, id, WAIT).await;
    }
    let writer = hgetall(&mut conn, "writer").await;
    assert_eq!(
        writer.get("errorKind").map(String::as_str),
        Some("database"),
        "{writer:?}"
    );
    let once = hgetall(&mut conn, "once").await;
    assert_eq!(worker.engine.db().next_id(), 4, "`once` did not run again");
    assert_eq!(
        (
            once.get("status").map(String::as_str),
            once.get("output").map(String::as_str)
        ),
        (Some("completed"), Some("once")),
        "the kept result of `once` (its writes durable since its first finish) became: {once:?}"
    );
    worker.stop().await;
}
