//! The blocking pop moves an id into the worker's processing list
//! (`BLMOVE`) and only then claims it (a second command, which writes
//! `startedAt`). A Redis restored to a point between the two (a snapshot,
//! an AOF that lost its last second) shows the id in this worker's list,
//! `pending`, with its own `createdAt` and no `startedAt`, though the
//! worker ran it and Redis acknowledged its result. The look after the
//! outage keeps it known (no `startedAt`: no other claim), and its claim
//! writes the kept result again by `createdAt`: it does not run a second
//! time (DESIGN §3: "none is run twice").

mod common;

use std::time::Duration;

use common::*;
use worker::WorkerConfig;

const WAIT: Duration = Duration::from_secs(30);
const QUEUE: &str = "moved";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_moved_but_not_yet_claimed_in_a_restored_redis_is_not_run_again() {
    capture_log();
    let mut redis = testkit::RedisServer::start();
    let url = redis.url();
    let worker = TestWorker::start_fresh(
        WorkerConfig::new(&url, QUEUE),
        fast_options(),
        slow_limits(),
    );
    let mut conn = raw(&url).await;
    let created = now_ms();
    push_task(
        &mut conn,
        QUEUE,
        "once",
        &[("createdAt", &created), ("updatedAt", &created)],
        "db::insert(1); \"once\"",
    )
    .await;
    until_status(&conn, "once", "completed", WAIT).await;
    assert_eq!(worker.engine.db().next_id(), 2, "it ran once");
    let workers: Vec<String> = redis::cmd("SMEMBERS")
        .arg(client::keys::workers(QUEUE))
        .query_async(&mut conn)
        .await
        .expect("smembers");
    assert_eq!(workers.len(), 1, "{workers:?}");
    let plist = client::keys::processing(QUEUE, &workers[0]);
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
    // ...Redis as right after a BLMOVE of `once`, before its claim: the id
    // at the head of this worker's list, its hash as the submitter wrote it.
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
            (b"status", b"pending"),
            (b"createdAt", created.as_bytes()),
            (b"updatedAt", created.as_bytes()),
        ],
    )
    .await;
    lpush_raw(&mut conn, &plist, &[b"once"]).await;
    let () = redis::cmd("SAVE")
        .query_async(&mut conn)
        .await
        .expect("save");
    // Redis crashes and comes back from that point.
    // Down past the blocker's end: its finish fails, so the worker looks
    // at its own list once Redis is back.
    redis.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.restart();
    let conn = raw(&url).await;
    until_ended(&conn, "once", WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut conn = conn;
    let once = hgetall(&mut conn, "once").await;
    let log: Vec<String> = [log::Level::Info, log::Level::Warn, log::Level::Debug]
        .into_iter()
        .flat_map(|l| lines(l, ""))
        .collect();
    assert_eq!(
        worker.engine.db().next_id(),
        2,
        "task `once` ran a second time after Redis came back with it moved into the \
         worker's list but not yet claimed (its hash now: {once:?})\n{log:#?}"
    );
    worker.stop().await;
}
