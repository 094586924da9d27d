//! DESIGN §3: "Every task that was pushed reaches `completed` or `error`;
//! ... none is run twice." README ("Running on several machines", Redis
//! Sentinel): a task whose finish was lost "(also a Redis restarted from an
//! older snapshot) is not run again". A Redis restarted from a snapshot taken
//! while the task still waited in its queue shows it `pending` and queued
//! again, although this worker ran it and Redis acknowledged its result.

mod common;

use std::time::Duration;

use common::*;
use worker::WorkerConfig;

const WAIT: Duration = Duration::from_secs(30);
const QUEUE: &str = "snap";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_queued_in_an_older_snapshot_is_not_run_again_after_redis_restarts_from_it() {
    let mut redis = testkit::RedisServer::start();
    let url = redis.url();
    let worker = TestWorker::start_fresh(
        WorkerConfig::new(&url, QUEUE),
        fast_options(),
        slow_limits(),
    );
    let mut conn = raw(&url).await;
    // The worker is busy, so `once` waits in the queue when Redis saves
    // the snapshot it will restart from.
    queued_behind_a_blocker_then_saved(&mut conn, QUEUE, WAIT).await;
    until_status(&conn, "once", "completed", WAIT).await;
    assert_eq!(worker.engine.db().next_id(), 2, "it ran once");
    // Redis crashes and comes back from its last snapshot.
    redis.kill();
    redis.restart();
    let mut conn = raw(&url).await;
    assert_eq!(
        hget(&mut conn, "once", "status").await.as_deref(),
        Some("pending"),
        "the snapshot holds `once` queued"
    );
    until_ended(&conn, "once", WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let once = hgetall(&mut conn, "once").await;
    assert_eq!(
        worker.engine.db().next_id(),
        2,
        "task `once` ran a second time after Redis restarted from a snapshot that still \
         had it queued (its hash now: {once:?})"
    );
    assert_eq!(
        (
            once.get("status").map(String::as_str),
            once.get("output").map(String::as_str)
        ),
        (Some("completed"), Some("once")),
        "its kept result is written again"
    );
    worker.stop().await;
}

/// The snapshot shows three tasks claimed by this worker in one script:
/// `slow`, then `unrun` (cancelled after the snapshot, so it never ran
/// here), then `once`, which ran and whose finish Redis acknowledged.
/// After the restart the worker finds all three in its processing list;
/// `once` is written again, not run again, though an id that never ran
/// here lies before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_task_in_an_older_snapshot_behind_one_that_never_ran_here_is_not_run_again() {
    let mut redis = testkit::RedisServer::start();
    let url = redis.url();
    let worker = TestWorker::start_fresh(
        WorkerConfig::new(&url, QUEUE),
        fast_options(),
        slow_limits(),
    );
    let mut conn = raw(&url).await;
    let wait_1s = "let t = timestamp(); while t.elapsed < 1.0 { }";
    push_task(&mut conn, QUEUE, "blocker", &[], &format!("{wait_1s} 1")).await;
    until_status(&conn, "blocker", "processing", WAIT).await;
    for (id, script) in [
        ("slow", format!("{wait_1s} \"slow\"")),
        ("unrun", "db::insert(0); \"unrun\"".to_owned()),
        ("once", "db::insert(1); \"once\"".to_owned()),
    ] {
        let created = now_ms();
        push_task(&mut conn, QUEUE, id, &[("createdAt", &created)], &script).await;
    }
    // The blocker's finish claims all three; `slow` runs first.
    until_status(&conn, "slow", "processing", WAIT).await;
    for id in ["unrun", "once"] {
        assert_eq!(
            hget(&mut conn, id, "status").await.as_deref(),
            Some("processing"),
            "{id} is claimed with `slow`"
        );
    }
    let () = redis::cmd("SAVE")
        .query_async(&mut conn)
        .await
        .expect("save");
    let () = redis::cmd("HSET")
        .arg(client::keys::task_details("unrun"))
        .arg("cancel")
        .arg("not wanted")
        .query_async(&mut conn)
        .await
        .expect("cancel");
    until_status(&conn, "unrun", "error", WAIT).await;
    until_status(&conn, "once", "completed", WAIT).await;
    assert_eq!(worker.engine.db().next_id(), 2, "`once` ran once");
    redis.kill();
    redis.restart();
    let mut conn = raw(&url).await;
    assert_eq!(
        hget(&mut conn, "once", "status").await.as_deref(),
        Some("processing"),
        "the snapshot holds `once` claimed"
    );
    until_ended(&conn, "once", WAIT).await;
    until_ended(&conn, "unrun", WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let once = hgetall(&mut conn, "once").await;
    assert_eq!(
        worker.engine.db().next_id(),
        3,
        "`unrun` runs once (the restored Redis lost its cancel), `once` not again \
         (its hash now: {once:?})"
    );
    assert_eq!(
        once.get("output").map(String::as_str),
        Some("once"),
        "its kept result is written again"
    );
    worker.stop().await;
}
