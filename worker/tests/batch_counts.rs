//! The queue's counters and the worker's own counts under a batch that
//! mixes every way a task ends: each task counted once, exactly.

mod common;

use std::time::Duration;

use client::{Client, SubmitOptions};
use common::*;

const WAIT: Duration = Duration::from_secs(30);

async fn hset(conn: &mut redis::aio::MultiplexedConnection, id: &str, pairs: &[(&str, &str)]) {
    let mut cmd = redis::cmd("HSET");
    cmd.arg(client::keys::task_details(id));
    for (k, v) in pairs {
        cmd.arg(*k).arg(*v);
    }
    let _: () = cmd.query_async(conn).await.expect("hset");
}

async fn lpush(conn: &mut redis::aio::MultiplexedConnection, queue: &str, id: &str) {
    let _: () = redis::cmd("LPUSH")
        .arg(client::keys::tasks(queue))
        .arg(id)
        .query_async(conn)
        .await
        .expect("lpush");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_batch_counts_each_task_once_in_redis_and_in_the_worker() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let queue = "mixed_count";
    let client = Client::connect(&url).await.expect("connect");
    let mut conn = raw(&url).await;
    let opts = SubmitOptions::with_timeout(WAIT);
    let mut ids = Vec::new();
    // Completed (2), a syntax error, a runtime error.
    for script in ["1", "2", "let x = ;", "throw \"no\""] {
        ids.push(client.submit(queue, script, &opts).await.expect("submit"));
    }
    // One pushed twice: it runs and counts once.
    lpush(&mut conn, queue, &ids[0]).await;
    // Expired while queued.
    let expired = client
        .submit(
            queue,
            "3",
            &SubmitOptions::with_timeout(Duration::from_millis(1)),
        )
        .await
        .expect("submit");
    // Cancelled while queued.
    let cancelled = client.submit(queue, "4", &opts).await.expect("submit");
    assert!(client.cancel(&cancelled, "no").await.expect("cancel"));
    // A third party's: without a script, and one without its hash.
    hset(&mut conn, "noscript", &[("status", "pending")]).await;
    lpush(&mut conn, queue, "noscript").await;
    lpush(&mut conn, queue, "nohash").await;
    // A third party's hash already completed: not run, not counted.
    hset(
        &mut conn,
        "done",
        &[("status", "completed"), ("output", "x"), ("script", "5")],
    )
    .await;
    lpush(&mut conn, queue, "done").await;
    // A third party's, with only script and status.
    hset(
        &mut conn,
        "plain",
        &[("status", "pending"), ("script", "6")],
    )
    .await;
    lpush(&mut conn, queue, "plain").await;
    tokio::time::sleep(Duration::from_millis(5)).await;

    let worker = TestWorker::start(&url, queue);
    // processed: 1, 2, plain; failed: syntax, runtime, expired, cancelled,
    // noscript, nohash.
    let stats = until("all to end", WAIT, || {
        let client = client.clone();
        async move {
            let s = client.stats_many(&[queue]).await.expect("stats").remove(0);
            (s.queue_len == 0 && s.in_flight == 0 && s.processed + s.failed >= 9).then_some(s)
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats2 = client.stats_many(&[queue]).await.expect("stats").remove(0);
    assert_eq!((stats.processed, stats.failed), (3, 6), "{stats:?}");
    assert_eq!((stats2.processed, stats2.failed), (3, 6), "{stats2:?}");
    until_counts(&worker.status, 3, 6).await;
    for id in [&expired, &cancelled] {
        assert_eq!(
            hget(&mut conn, id, "status").await.as_deref(),
            Some("error")
        );
    }
    assert_eq!(
        hget(&mut conn, "done", "output").await.as_deref(),
        Some("x")
    );
    worker.stop().await;
}
