//! A circle whose workers are gone, as its [`server_ws::WorkerSight`] says:
//! `play` is answered -32002 naming the circle, at once and without
//! queueing anything; a task that times out after the workers went is
//! answered the same way and cancelled, so a worker that comes up later
//! ends it without running it. A worker that comes back is seen by the
//! first request after it, before the owner looks again.

mod common;

use std::time::{Duration, Instant};

use common::{Fixture, QUEUE, Ws, call, code, eventually, play, redis_conn};
use redis::AsyncCommands;
use server_ws::{ServerTiming, WorkerSight};
use tokio_util::sync::CancellationToken;

/// Keeps recording what `live` says about the circle's workers, as the
/// orchestrator's beat does, until `stop` (a live worker's heartbeat with
/// 200 ms to live).
fn keep_looking(sight: WorkerSight, live: bool, stop: CancellationToken) {
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            sight.record(live.then_some(Duration::from_millis(200)), Instant::now());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}

/// A circle (id 3, tasks timing out after 2 s) on `redis` whose sight sees
/// a live worker until `alive` is cancelled, with a client's play
/// `echo:late` queued.
struct Queued {
    fx: Fixture,
    sight: WorkerSight,
    alive: CancellationToken,
    ws: Ws,
    redis: redis::aio::MultiplexedConnection,
}

impl Queued {
    async fn start(redis: testkit::RedisServer) -> Queued {
        let sight = WorkerSight::new(3, Duration::from_millis(300));
        let seen = sight.clone();
        let fx = Fixture::start_on(
            redis,
            |c| {
                c.workers = Some(seen);
                c.task_timeout = Duration::from_secs(2);
            },
            ServerTiming::default(),
            false,
        )
        .await;
        let alive = CancellationToken::new();
        keep_looking(sight.clone(), true, alive.clone());
        eventually("a live worker to be seen", || sight.live() == Some(true)).await;
        let mut ws = fx.connect().await;
        common::send(&mut ws, &play(1, "echo:late")).await;
        let redis = redis_conn(&fx).await;
        let queue = client::keys::tasks(QUEUE);
        common::eventually_async("the task to be queued", || {
            let mut redis = redis.clone();
            let queue = queue.clone();
            async move { redis.llen::<_, u64>(&queue).await.expect("llen") == 1 }
        })
        .await;
        Queued {
            fx,
            sight,
            alive,
            ws,
            redis,
        }
    }

    /// The worker dies: from now on no live worker is seen (until the
    /// token returned is cancelled). Returns the play's answer, -32002, and
    /// its task's id.
    async fn workers_gone(&mut self) -> (serde_json::Value, String, CancellationToken) {
        self.alive.cancel();
        let gone = CancellationToken::new();
        keep_looking(self.sight.clone(), false, gone.clone());
        let reply = common::recv(&mut self.ws).await;
        assert_eq!(code(&reply), -32002, "{reply}");
        let task_id = reply["error"]["data"]["task_id"]
            .as_str()
            .expect("the task id of the submitted task")
            .to_owned();
        (reply, task_id, gone)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circle_without_a_live_worker_answers_play_with_32002_naming_it_and_queues_nothing() {
    let sight = WorkerSight::new(7, Duration::from_millis(200));
    let seen = sight.clone();
    let fx = Fixture::start_with(|c| c.workers = Some(seen), ServerTiming::default(), false).await;
    let stop = CancellationToken::new();
    keep_looking(sight.clone(), false, stop.clone());
    eventually("the workers to count as gone", || {
        sight.live() == Some(false)
    })
    .await;

    let mut ws = fx.connect().await;
    let reply = call(&mut ws, &play(1, "echo:hi")).await;
    assert_eq!(code(&reply), -32002, "{reply}");
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("no live worker for circle Test Circle (7)"),
        "{reply}"
    );
    assert_eq!(reply["error"]["data"]["kind"], "no_worker", "{reply}");
    assert_eq!(reply["error"]["data"]["circle_id"], 7, "{reply}");
    assert!(reply["error"]["data"]["task_id"].is_null(), "{reply}");
    let mut redis = redis_conn(&fx).await;
    let queued: u64 = redis.llen(client::keys::tasks(QUEUE)).await.expect("llen");
    assert_eq!(queued, 0, "nothing was submitted");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_times_out_after_the_workers_went_is_answered_32002_and_never_runs() {
    let mut q = Queued::start(testkit::RedisServer::start()).await;
    let (reply, task_id, gone) = q.workers_gone().await;
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("no live worker for circle Test Circle (3)"),
        "{reply}"
    );
    let mut redis = q.redis.clone();
    let details = client::keys::task_details(&task_id);
    let cancel: Option<String> = redis.hget(&details, "cancel").await.expect("hget");
    assert!(
        cancel.is_some_and(|c| c.starts_with("no live worker for circle")),
        "the task was cancelled"
    );

    // A worker comes up: it ends the task without running it.
    tokio::spawn(common::stand_in_worker(
        q.fx.redis.url(),
        q.fx.worker_token.clone(),
    ));
    common::eventually_async("the task to end", || {
        let mut redis = redis.clone();
        let details = details.clone();
        async move {
            let status: Option<String> = redis.hget(&details, "status").await.expect("hget");
            status.as_deref() == Some("error")
        }
    })
    .await;
    let kind: Option<String> = redis.hget(&details, "errorKind").await.expect("hget");
    assert_eq!(kind.as_deref(), Some("cancelled"));
    let output: Option<String> = redis.hget(&details, "output").await.expect("hget");
    assert_eq!(output, None, "it never ran");
    gone.cancel();
    q.fx.shut_down().await.expect("shut down");
}

/// As above, while Redis refuses the cancel (here its ACL, for a moment; as
/// well a Redis that went away just then), then comes back with its clock a
/// minute behind, which puts the task's deadline ahead again: the cancel is
/// written then, and no worker runs the task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_answered_32002_for_want_of_a_worker_whose_cancel_redis_refused_never_runs() {
    let mut q = Queued::start(testkit::RedisServer::start_persistent()).await;
    // Not persisted: the restart below lifts it.
    assert_eq!(
        testkit::command(
            q.fx.redis.port(),
            &["ACL", "SETUSER", "default", "-eval", "-evalsha"],
        ),
        Ok(testkit::Reply::Status("OK".into()))
    );
    let (_, task_id, gone) = q.workers_gone().await;
    q.fx.redis.restart_with_clock(-60);

    // The cancel comes back with Redis (a reconnect and a retry, at most a
    // few seconds); the claim below says whether it did.
    let _ = common::cancel_written(q.fx.redis.port(), &task_id).await;
    let claim = common::late_claim(&q.fx.redis.url(), QUEUE).await;
    assert!(
        matches!(claim, Some(client::broker::Claim::Cancelled { .. })),
        "a worker was handed the task its client was answered -32002 for: {claim:?}"
    );
    gone.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_comes_back_is_seen_by_the_next_request_before_the_owner_looks_again() {
    let sight = WorkerSight::new(5, Duration::from_secs(2));
    let seen = sight.clone();
    let fx = Fixture::start_with(|c| c.workers = Some(seen), ServerTiming::default(), false).await;
    // The owner looked once, a dead time after the start, and saw no
    // worker; it does not look again during the test.
    eventually("the start's dead time to pass", || {
        sight.record(None, Instant::now());
        sight.live() == Some(false)
    })
    .await;
    let mut ws = fx.connect().await;
    let reply = call(&mut ws, &play(1, "40 + 2")).await;
    assert_eq!(code(&reply), -32002, "{reply}");
    assert_eq!(reply["error"]["data"]["kind"], "no_worker", "{reply}");

    let dir = tempfile::tempdir().expect("tempdir");
    let worker = common::start_worker(&fx, dir.path());
    let mut redis = redis_conn(&fx).await;
    let workers = client::keys::workers(QUEUE);
    common::eventually_async("the worker's heartbeat", || {
        let mut redis = redis.clone();
        let workers = workers.clone();
        async move {
            let ids: Vec<String> = redis.smembers(&workers).await.expect("smembers");
            !ids.is_empty()
        }
    })
    .await;
    // Past the relook time of the refusal's own look.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let reply = call(&mut ws, &play(2, "40 + 2")).await;
    assert_eq!(reply["result"]["output"], "42", "served at once: {reply}");
    assert_eq!(sight.live(), Some(true), "the request's look is recorded");
    let ids: Vec<String> = redis.smembers(&workers).await.expect("smembers");
    assert_eq!(ids.len(), 1);
    worker.cancel();
}
