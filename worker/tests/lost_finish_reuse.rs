//! `finished::Finished` must not answer a *new* task that reuses the id
//! of one this worker finished earlier. DESIGN §3: "A task written by a
//! third-party program with only `script` and `status` must run"; a third
//! party picks its own ids (and may reuse one once the old one is done).

mod common;

use std::time::Duration;

use common::*;
use worker::WorkerConfig;

const WAIT: Duration = Duration::from_secs(30);
const QUEUE: &str = "reuse";

/// Where the new `job` stands when the worker's finish fails (the finish
/// that claims the next batch stops at `t2`, whose cancel it ends and whose
/// notification the ACL refuses): still pending in the processing list,
/// or claimed (`processing` by this worker) with the claim's reply lost.
#[derive(Clone, Copy)]
enum Reuse {
    Pending,
    Claimed,
}

/// `job` ran here once ("first") and its hash is gone. The third party
/// submits `job` again with another script; it lands in the worker's
/// processing list behind a finish that fails, so the worker finds it in
/// its look at that list after the failure (the `check_own` path, as in
/// `finish_failures.rs`). The new `job` runs and answers "second": it is
/// not the task whose result the worker kept.
async fn a_new_task_under_a_finished_id_runs(reuse: Reuse) {
    let redis = testkit::RedisServer::start();
    let port = redis.port();
    let url = acl_user(port, Some("rhai_*"));
    let worker = TestWorker::start_fresh(
        WorkerConfig::new(&url, QUEUE),
        fast_options(),
        slow_limits(),
    );
    let mut conn = raw(&redis.url()).await;
    push_task(&mut conn, QUEUE, "job", &[], "\"first\"").await;
    until_status(&conn, "job", "completed", WAIT).await;
    assert_eq!(
        hget(&mut conn, "job", "output").await.as_deref(),
        Some("first")
    );
    // The old hash is gone (expired, or deleted by its owner).
    let _: () = redis::cmd("DEL")
        .arg(client::keys::task_details("job"))
        .query_async(&mut conn)
        .await
        .expect("del");

    push_task(
        &mut conn,
        QUEUE,
        "t0",
        &[],
        "let t = timestamp(); while t.elapsed < 1.0 { } \"t0\"",
    )
    .await;
    until_status(&conn, "t0", "processing", WAIT).await;
    push_task(&mut conn, QUEUE, "t1", &[], "\"t1\"").await;
    let job = async |conn: &mut redis::aio::MultiplexedConnection| {
        push_task(conn, QUEUE, "job", &[], "\"second\"").await;
    };
    if let Reuse::Claimed = reuse {
        job(&mut conn).await;
    }
    push_task(
        &mut conn,
        QUEUE,
        "t2",
        &[("cancel", "gone"), ("replyTo", "refused_channel")],
        "\"t2\"",
    )
    .await;
    if let Reuse::Pending = reuse {
        job(&mut conn).await;
    }
    for id in ["t0", "t1"] {
        until_status(&conn, id, "completed", WAIT).await;
    }
    until_status(&conn, "t2", "error", WAIT).await;
    until_ended(&conn, "job", WAIT).await;
    let job = hgetall(&mut conn, "job").await;
    assert_eq!(
        (
            job.get("status").map(String::as_str),
            job.get("output").map(String::as_str)
        ),
        (Some("completed"), Some("second")),
        "the new task `job` did not run; it got the old one's result: {job:?}"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_task_reusing_a_finished_id_runs_and_is_not_answered_with_the_old_result() {
    a_new_task_under_a_finished_id_runs(Reuse::Pending).await;
}

/// The new task's claim shows it `processing` by this worker, as the old
/// run whose finish Redis lost would be: its `createdAt` tells them apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_task_reusing_a_finished_id_claimed_before_the_lost_reply_runs() {
    a_new_task_under_a_finished_id_runs(Reuse::Claimed).await;
}

/// A task whose acknowledged finish Redis lost is written again, not run
/// again; it is still one task this worker processed. The worker's counts
/// (the status table's processed column, and the metrics through the same
/// `count_written`) count it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_written_again_after_redis_lost_it_is_counted_once() {
    let mut redis = testkit::RedisServer::start();
    let url = redis.url();
    let worker = TestWorker::start_fresh(
        WorkerConfig::new(&url, QUEUE),
        fast_options(),
        slow_limits(),
    );
    let mut conn = raw(&url).await;
    push_task(
        &mut conn,
        QUEUE,
        "once",
        &[],
        "let t = timestamp(); while t.elapsed < 1.0 { } db::insert(1); \"once\"",
    )
    .await;
    until_status(&conn, "once", "processing", WAIT).await;
    let _: () = redis::cmd("SAVE")
        .query_async(&mut conn)
        .await
        .expect("save");
    until_status(&conn, "once", "completed", WAIT).await;
    until_counts(&worker.status, 1, 0).await;
    redis.kill();
    redis.restart();
    let mut conn = raw(&url).await;
    assert_eq!(
        hget(&mut conn, "once", "status").await.as_deref(),
        Some("processing")
    );
    until_status(&conn, "once", "completed", WAIT).await;
    assert_eq!(worker.engine.db().next_id(), 2, "it ran once");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        worker.status.counts(),
        (1, 0),
        "one task ran and completed once; the worker counts it twice"
    );
    worker.stop().await;
}
