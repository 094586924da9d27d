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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_task_reusing_a_finished_id_runs_and_is_not_answered_with_the_old_result() {
    a_pushed_again_id_behind_a_failed_finish_runs(QUEUE, Reuse::Pending, false).await;
}

/// The new task's claim shows it `processing` by this worker, as the old
/// run whose finish Redis lost would be: its `createdAt` tells them apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_task_reusing_a_finished_id_claimed_before_the_lost_reply_runs() {
    a_pushed_again_id_behind_a_failed_finish_runs(QUEUE, Reuse::Claimed, false).await;
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
