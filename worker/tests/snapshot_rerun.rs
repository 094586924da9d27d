//! DESIGN §3: "Every task that was pushed reaches `completed` or `error`;
//! ... none is run twice." README ("Running on several machines", Redis
//! Sentinel): a task whose finish was lost "(also a Redis restarted from an
//! older snapshot) is not run again". A Redis restarted from a snapshot taken
//! while the task still waited in its queue shows it `pending` and queued
//! again, although this worker ran it and Redis acknowledged its result;
//! an old primary the sentinels promote again shows it claimed by this
//! worker under a claim earlier than the one it ran under.

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

/// A failover cuts the reply of a claim of `once` on the old primary; the
/// worker claims it again on the new one (a later `startedAt`), runs it
/// there and Redis acknowledges its result. The old primary, promoted again
/// before the sentinels made it a replica, shows `once` `processing` by
/// this worker under the first claim's `startedAt`: an earlier claim of the
/// run the worker kept, not a task pushed again (a push after that run
/// ended is claimed after it), so its kept result is written again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_claim_of_a_task_that_ran_here_is_not_run_again() {
    an_earlier_claim_is_not_run_again(true).await;
}

/// The same for a third party's task without `createdAt`: each claim
/// writes its own, so the two claims show different ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_claim_of_a_task_without_created_at_is_not_run_again() {
    an_earlier_claim_is_not_run_again(false).await;
}

/// `once` (its `createdAt` the submitter's, or none) runs here; then
/// Redis shows it claimed by this worker right after it was created, a
/// second before the claim it ran under.
async fn an_earlier_claim_is_not_run_again(submitter_created: bool) {
    let mut redis = testkit::RedisServer::start();
    let url = redis.url();
    let worker = TestWorker::start_fresh(
        WorkerConfig::new(&url, QUEUE),
        fast_options(),
        slow_limits(),
    );
    let mut conn = raw(&url).await;
    // Created a second ago and claimed at once; the run's claim came later.
    let created = now_ms().parse::<u64>().expect("ms") - 1000;
    let first_claim = created + 1;
    let mut created = created.to_string();
    let extra = [
        ("createdAt", created.as_str()),
        ("updatedAt", created.as_str()),
    ];
    let extra = if submitter_created { &extra[..] } else { &[] };
    push_task(&mut conn, QUEUE, "once", extra, "db::insert(1); \"once\"").await;
    until_status(&conn, "once", "completed", WAIT).await;
    assert_eq!(worker.engine.db().next_id(), 2, "it ran once");
    let ran = hgetall(&mut conn, "once").await;
    let (worker_id, started) = (&ran["workerId"], &ran["startedAt"]);
    assert!(
        first_claim < started.parse().expect("ms"),
        "the first claim is earlier than the run's: {ran:?}"
    );
    let first_claim = first_claim.to_string();
    if !submitter_created {
        assert_eq!(&ran["createdAt"], started, "written by its claim");
        created = first_claim.clone();
    }
    // The worker busy with a blocker (it pops nothing meanwhile, so it
    // never sees the edit below on the live Redis)...
    push_task(
        &mut conn,
        QUEUE,
        "blocker",
        &[],
        "let t = timestamp(); while t.elapsed < 1.5 { } \"blocker\"",
    )
    .await;
    until_status(&conn, "blocker", "processing", WAIT).await;
    // ...Redis as the old primary holds it: `once` claimed by this worker
    // at its first claim, whose reply the failover cut.
    let () = redis::cmd("DEL")
        .arg(client::keys::task_details("once"))
        .query_async(&mut conn)
        .await
        .expect("del");
    hset_raw(
        &mut conn,
        b"once",
        &[
            (b"script", b"db::insert(1); \"once\""),
            (b"status", b"processing"),
            (b"workerId", worker_id.as_bytes()),
            (b"createdAt", created.as_bytes()),
            (b"startedAt", first_claim.as_bytes()),
            (b"updatedAt", first_claim.as_bytes()),
        ],
    )
    .await;
    lpush_raw(
        &mut conn,
        &client::keys::processing(QUEUE, worker_id),
        &[b"once"],
    )
    .await;
    let () = redis::cmd("SAVE")
        .query_async(&mut conn)
        .await
        .expect("save");
    // Down past the blocker's end: its finish fails, so the worker looks
    // at its own list once that Redis is back.
    redis.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.restart();
    let mut conn = raw(&url).await;
    until_ended(&conn, "once", WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let once = hgetall(&mut conn, "once").await;
    assert_eq!(
        worker.engine.db().next_id(),
        2,
        "task `once` ran a second time after the old primary came back with an earlier \
         claim of it (its hash now: {once:?})"
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

/// A failover to a replica that lacked a task's claim (or its push) while
/// the task ran here: the finish finds it resolved elsewhere and drops its
/// result, but the task ran and its writes are committed. An old primary
/// promoted again (here: a Redis restarted from a snapshot taken while the
/// task ran) shows it `processing` by this worker under the claim it ran
/// under: it is not run a second time; the result of the run is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_finish_found_it_gone_is_not_run_again_when_redis_shows_it_again() {
    let mut redis = testkit::RedisServer::start();
    let url = redis.url();
    let worker = TestWorker::start_fresh(
        WorkerConfig::new(&url, QUEUE),
        fast_options(),
        slow_limits(),
    );
    let mut conn = raw(&url).await;
    let wait_1s = "let t = timestamp(); while t.elapsed < 1.0 { }";
    let created = now_ms();
    push_task(
        &mut conn,
        QUEUE,
        "gone",
        &[("createdAt", &created)],
        &format!("{wait_1s} db::insert(1); \"gone\""),
    )
    .await;
    until_status(&conn, "gone", "processing", WAIT).await;
    let () = redis::cmd("SAVE")
        .query_async(&mut conn)
        .await
        .expect("save");
    // The Redis the worker reaches now lacks the task: no hash, not in the
    // worker's processing list.
    let lists = keys(&mut conn, &client::keys::processing(QUEUE, "*")).await;
    assert_eq!(lists.len(), 1, "{lists:?}");
    let _: () = redis::pipe()
        .cmd("DEL")
        .arg(client::keys::task_details("gone"))
        .ignore()
        .cmd("LREM")
        .arg(&lists[0])
        .arg(0)
        .arg("gone")
        .ignore()
        .query_async(&mut conn)
        .await
        .expect("drop the task");
    // Queued behind it: once it completes, the finish of `gone` is done.
    push_task(&mut conn, QUEUE, "after", &[], "db::insert(2); \"after\"").await;
    until_status(&conn, "after", "completed", WAIT).await;
    assert_eq!(worker.engine.db().next_id(), 3, "both ran once");
    assert!(
        hgetall(&mut conn, "gone").await.is_empty(),
        "its result was dropped"
    );
    redis.kill();
    redis.restart();
    let mut conn = raw(&url).await;
    assert_eq!(
        hget(&mut conn, "gone", "status").await.as_deref(),
        Some("processing"),
        "the snapshot holds `gone` claimed"
    );
    until_ended(&conn, "gone", WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gone = hgetall(&mut conn, "gone").await;
    assert_eq!(
        worker.engine.db().next_id(),
        3,
        "task `gone` ran a second time (its hash now: {gone:?})"
    );
    assert_eq!(
        (
            gone.get("status").map(String::as_str),
            gone.get("output").map(String::as_str)
        ),
        (Some("completed"), Some("gone")),
        "the result of its run is written"
    );
    // Counted once, when its result was written: `after` and `gone`.
    until_counts(&worker.status, 2, 0).await;
    worker.stop().await;
}
