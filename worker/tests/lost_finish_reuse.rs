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

/// `job` ran here once ("first"). The third party submits `job` again with
/// another script, and it lands in the worker's processing list through the
/// `check_own` path (a finish that fails after claiming the next batch, as
/// in `finish_failures.rs`). The new `job` must run and answer "second";
/// the worker instead writes the first run's kept result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_task_reusing_a_finished_id_runs_and_is_not_answered_with_the_old_result() {
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
    push_task(
        &mut conn,
        QUEUE,
        "t2",
        &[("cancel", "gone"), ("replyTo", "refused_channel")],
        "\"t2\"",
    )
    .await;
    push_task(&mut conn, QUEUE, "job", &[], "\"second\"").await;
    for id in ["t0", "t1"] {
        until_status(&conn, id, "completed", WAIT).await;
    }
    until_status(&conn, "t2", "error", WAIT).await;
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline
        && !matches!(
            hget(&mut conn, "job", "status").await.as_deref(),
            Some("completed" | "error")
        )
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let job = hgetall(&mut conn, "job").await;
    assert_eq!(
        (
            job.get("status").map(String::as_str),
            job.get("output").map(String::as_str)
        ),
        (Some("completed"), Some("second")),
        "the new task `job` never ran; it got the old one's result: {job:?}"
    );
    worker.stop().await;
}

/// A task whose acknowledged finish Redis lost is written again, not run
/// again; it is still one task this worker processed. The worker's counts
/// (the status table's processed column, and the metrics through the same
/// `count_written`) count it once per write: twice.
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
