//! A group's finish (`FINISH_BATCH`) that fails: partway, after it claimed
//! the next batch (the worker must then read its own processing list and run
//! what the failed script claimed, each once, in order); and at shutdown,
//! past the grace (the tasks whose results could not be written must never
//! run again).

mod common;

use std::time::Duration;

use common::*;
use worker::{WorkerConfig, WorkerState};

const WAIT: Duration = Duration::from_secs(30);

const PARTWAY: &str = "finish_partway";

/// The finish of `t0` claims the next batch `t1 t2 t3 t4`; `t2` was
/// cancelled while queued and its `replyTo` is a channel this worker's ACL
/// user may not publish to, so the claim of `t2` (inside the finish) ends it
/// and then fails the whole script: `t1` is then `processing` by this worker
/// and `t3`, `t4` sit unclaimed in its processing list, the reply lost (the
/// worker's `check_own` path). Returns once every task has ended.
async fn finish_failing_partway() -> (
    testkit::RedisServer,
    TestWorker,
    redis::aio::MultiplexedConnection,
) {
    static LOGGER: std::sync::Once = std::sync::Once::new();
    LOGGER.call_once(capture_log);
    let redis = testkit::RedisServer::start();
    let port = redis.port();
    let url = acl_user(port, Some("rhai_*"));
    let worker = TestWorker::start_fresh(
        WorkerConfig::new(&url, PARTWAY),
        fast_options(),
        slow_limits(),
    );
    let mut conn = raw(&redis.url()).await;
    // Holds the worker for a second, so the rest is queued behind it.
    push_task(
        &mut conn,
        PARTWAY,
        "t0",
        &[],
        "let t = timestamp(); while t.elapsed < 1.0 { } \"t0\"",
    )
    .await;
    until_status(&conn, "t0", "processing", WAIT).await;
    let script = |name: &str| format!("let n = db::next_id(); db::insert(\"{name}\"); n");
    push_task(&mut conn, PARTWAY, "t1", &[], &script("t1")).await;
    push_task(
        &mut conn,
        PARTWAY,
        "t2",
        &[("cancel", "gone"), ("replyTo", "refused_channel")],
        &script("t2"),
    )
    .await;
    push_task(&mut conn, PARTWAY, "t3", &[], &script("t3")).await;
    push_task(&mut conn, PARTWAY, "t4", &[], &script("t4")).await;
    for id in ["t0", "t1", "t3", "t4"] {
        until_status(&conn, id, "completed", WAIT).await;
    }
    until_status(&conn, "t2", "error", WAIT).await;
    // The path under test was taken: the finish was refused (the publish
    // for `t2`), and the worker then read its own processing list.
    let refused = lines(
        log::Level::Warn,
        &format!("worker for queue {PARTWAY} is refused by redis"),
    );
    assert!(
        refused.iter().any(|l| l.contains("publish")),
        "{refused:#?}"
    );
    (redis, worker, conn)
}

/// The worker runs `t1`, `t3`, `t4` once each, in queue order, and leaves
/// nothing claimed; `t2` ends `cancelled` without running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finish_that_fails_after_claiming_the_next_batch_runs_what_it_claimed_once_in_order() {
    let (redis, worker, mut conn) = finish_failing_partway().await;
    let t2 = hgetall(&mut conn, "t2").await;
    assert_eq!(
        t2.get("errorKind").map(String::as_str),
        Some("cancelled"),
        "{t2:?}"
    );
    // Each ran once, in queue order: each got the next database id.
    for (id, n) in [("t1", "1"), ("t3", "2"), ("t4", "3")] {
        assert_eq!(
            hget(&mut conn, id, "output").await.as_deref(),
            Some(n),
            "{id}"
        );
    }
    assert_eq!(worker.engine.db().next_id(), 4, "three inserts, none twice");
    let client = client::Client::connect(&redis.url())
        .await
        .expect("connect");
    let stats = client
        .stats_many(&[PARTWAY])
        .await
        .expect("stats")
        .remove(0);
    assert_eq!(
        (
            stats.processed,
            stats.failed,
            stats.queue_len,
            stats.in_flight
        ),
        (4, 1, 0, 0)
    );
    assert!(
        keys(&mut conn, &client::keys::processing(PARTWAY, "*"))
            .await
            .is_empty(),
        "nothing is left claimed"
    );
    worker.stop().await;
}

/// A task ran (its writes committed and fsynced), but its result cannot be
/// written: here Redis refuses the finish outright (the notification is
/// larger than `proto-max-bulk-len`, so Redis drops the connection), while
/// it accepts the small requests (claims, reading the list). The worker is
/// stopped meanwhile: it gives up on the finish past its grace. What it
/// does next must not run the task again, here or on another worker: the
/// task did not opt in to retry (DESIGN §3: "none is run twice").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_result_could_not_be_written_before_shutdown_never_runs_again() {
    const QUEUE: &str = "finish_giveup";
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    testkit::command(
        redis.port(),
        &["CONFIG", "SET", "proto-max-bulk-len", "1mb"],
    )
    .expect("config set");
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = engine::Limits {
        max_string_size: 4 << 20,
        max_output_bytes: 4 << 20,
        ..engine::Limits::default()
    };
    let engine = open_engine(dir.path(), limits);
    let mut config = WorkerConfig::new(&url, QUEUE);
    config.shutdown_grace = Duration::from_millis(300);
    let first = TestWorker::start_with(config.clone(), fast_options(), engine.clone());
    let mut conn = raw(&url).await;
    push_task(
        &mut conn,
        QUEUE,
        "big",
        &[],
        "db::insert(\"big\"); let s = \"\"; s.pad(2000000, 'x'); s",
    )
    .await;
    // Its finish failed at least once (the worker is in an outage) ...
    until("the finish of `big` to fail", WAIT, || {
        let state = first.status.state();
        async move { matches!(state, WorkerState::Reconnecting(_)).then_some(()) }
    })
    .await;
    assert_eq!(engine.db().next_id(), 2, "it ran and committed");
    // ... and the worker is stopped.
    first.stop().await;
    let after_stop = hgetall(&mut conn, "big").await;

    // Redis takes large requests again; a second worker on the same database.
    testkit::command(
        redis.port(),
        &["CONFIG", "SET", "proto-max-bulk-len", "512mb"],
    )
    .expect("config set");
    let second = TestWorker::start_with(config, fast_options(), engine.clone());
    until("`big` to end", WAIT, || {
        let mut conn = conn.clone();
        async move {
            let status = hget(&mut conn, "big", "status").await;
            matches!(status.as_deref(), Some("completed" | "error")).then_some(())
        }
    })
    .await;
    let end = hgetall(&mut conn, "big").await;
    second.stop().await;
    assert_eq!(
        end.get("errorKind").map(String::as_str),
        Some("worker_lost"),
        "{end:?}"
    );
    assert_eq!(
        engine.db().next_id(),
        2,
        "`big` ran twice: after the stop its hash was {:?}; at its end {:?}",
        after_stop.get("status"),
        end.get("status")
    );
}
