//! An idle worker with a long blocking pop still stops promptly: the pop is
//! woken with `CLIENT UNBLOCK`, also after the blocking connection was
//! re-established by a Redis restart.

mod common;

use std::time::Duration;

use client::{Client, OnDrop, SubmitOptions};
use common::*;
use worker::{WorkerConfig, WorkerState};

/// Far longer than any deadline below: a worker that waited for its pop to
/// time out would fail these tests.
const LONG_POP: Duration = Duration::from_secs(120);
const STOP_DEADLINE: Duration = Duration::from_secs(20);

fn long_pop_worker(url: &str, queue: &str) -> (TestWorker, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open_engine(dir.path(), engine::Limits::default());
    let mut options = fast_options();
    options.pop_timeout = LONG_POP;
    let worker = TestWorker::start_with(WorkerConfig::new(url, queue), options, engine);
    (worker, dir)
}

/// Cancels the worker and waits (bounded) until it has stopped.
async fn stop_within_deadline(worker: TestWorker) {
    worker.token.cancel();
    tokio::time::timeout(STOP_DEADLINE, worker.handle)
        .await
        .expect("the idle worker did not stop before its blocking pop timed out")
        .expect("join")
        .expect("worker result");
    assert_eq!(worker.status.state(), WorkerState::Stopped);
}

/// Waits until the worker is blocked in its pop (its pop connection shows
/// up as blocked in Redis).
async fn wait_until_blocked(url: &str) {
    let mut conn = raw(url).await;
    until("the worker to block in its pop", STOP_DEADLINE, || {
        let mut conn = conn.clone();
        async move {
            let info: String = redis::cmd("INFO")
                .arg("clients")
                .query_async(&mut conn)
                .await
                .ok()?;
            info.lines()
                .find_map(|l| l.strip_prefix("blocked_clients:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|&n| n >= 1)
        }
    })
    .await;
    let _: () = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .expect("ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_stops_at_once_though_its_pop_blocks_for_minutes() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let (worker, _dir) = long_pop_worker(&url, "idle");
    let client = Client::connect(&url).await.expect("connect");
    // It serves while blocking with the long timeout …
    let outcome = client
        .run_with("idle", "40 + 2", &SubmitOptions::default(), OnDrop::Cancel)
        .await
        .expect("run");
    assert!(matches!(outcome, client::Outcome::Completed(ref out) if out.output == "42"));
    wait_until_blocked(&url).await;
    // … and stops without waiting for it; nothing stays claimed.
    stop_within_deadline(worker).await;
    let mut conn = raw(&url).await;
    assert!(keys(&mut conn, "rhai_processing:*").await.is_empty());
    assert!(keys(&mut conn, "rhai_worker_heartbeat:*").await.is_empty());
    // A task submitted after the shutdown waits in the queue for the next worker.
    let id = client
        .submit("idle", "1", &SubmitOptions::default())
        .await
        .expect("submit");
    assert_eq!(
        hget(&mut conn, &id, "status").await.as_deref(),
        Some("pending")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_stops_at_once_after_redis_restarted_under_it() {
    let mut redis = testkit::RedisServer::start_persistent();
    let url = redis.url();
    let (worker, _dir) = long_pop_worker(&url, "restarted");
    wait_until_blocked(&url).await;
    redis.kill();
    until("the worker to notice the outage", STOP_DEADLINE, || {
        let state = worker.status.state();
        async move { matches!(state, WorkerState::Reconnecting(_)).then_some(()) }
    })
    .await;
    redis.restart();
    // Blocked again, on a new connection with a new client id.
    wait_until_blocked(&url).await;
    let client = Client::connect(&url).await.expect("connect");
    let outcome = client
        .run_with(
            "restarted",
            "40 + 2",
            &SubmitOptions::default(),
            OnDrop::Cancel,
        )
        .await
        .expect("run after the restart");
    assert!(matches!(outcome, client::Outcome::Completed(ref out) if out.output == "42"));
    wait_until_blocked(&url).await;
    stop_within_deadline(worker).await;
}

/// Waits (bounded by far less than the pop timeout) until the worker shows `state`.
async fn until_state(worker: &TestWorker, state: WorkerState, what: &str) {
    until(what, STOP_DEADLINE, || {
        let now = worker.status.state();
        let want = state.clone();
        async move { (now == want).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_shows_running_at_once_and_again_after_redis_came_back() {
    let mut redis = testkit::RedisServer::start_persistent();
    let url = redis.url();
    let (worker, _dir) = long_pop_worker(&url, "shown");
    // No task ever arrives: Running must not wait for the blocking pop to end.
    until_state(&worker, WorkerState::Running, "Running on an empty queue").await;
    wait_until_blocked(&url).await;
    redis.kill();
    until_state(
        &worker,
        WorkerState::Reconnecting("redis is unreachable".into()),
        "Reconnecting in the outage",
    )
    .await;
    redis.restart();
    // Still no task: the table must show Running again once Redis answers.
    until_state(&worker, WorkerState::Running, "Running after the outage").await;
    stop_within_deadline(worker).await;
}
