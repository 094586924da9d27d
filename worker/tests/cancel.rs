//! Cancelling a task from outside (an external cancel, client gone or
//! shutdown, stops a running script promptly): a `Client::run_with` whose
//! caller went away, and `Client::cancel`, against a real worker, Redis and
//! OurDB. Shutdown's cancel is in `tasks.rs`.

mod common;

use std::time::Duration;

use client::{Client, OnDrop, Outcome, SubmitOptions};
use common::*;

const WAIT: Duration = Duration::from_secs(30);

fn opts() -> SubmitOptions {
    SubmitOptions::with_timeout(WAIT)
}

/// A worker whose scripts may run two minutes (so only a cancel stops the
/// slow script of these tests before the test's own wait ends).
fn slow_worker(url: &str, queue: &str) -> (TestWorker, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = TestWorker::start_with(
        worker::WorkerConfig::new(url, queue),
        fast_options(),
        open_engine(dir.path(), slow_limits()),
    );
    (worker, dir)
}

async fn status_of(conn: &mut redis::aio::MultiplexedConnection, id: &str) -> Option<String> {
    hget(conn, id, "status").await
}

/// The one id in `queue`'s list (a task submitted by a `run` whose id the
/// test cannot see otherwise).
async fn only_queued_id(url: &str, queue: &str) -> String {
    let conn = raw(url).await;
    until("the task to be queued", WAIT, || {
        let mut conn = conn.clone();
        async move {
            let ids: Vec<String> = redis::cmd("LRANGE")
                .arg(client::keys::tasks(queue))
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .expect("lrange");
            (ids.len() == 1).then(|| ids[0].clone())
        }
    })
    .await
}

/// The id of the task `worker` is running (its processing list's one entry).
async fn running_id(url: &str, queue: &str) -> String {
    let conn = raw(url).await;
    let pattern = client::keys::processing(queue, "*");
    until("a task to be running", WAIT, || {
        let mut conn = conn.clone();
        let pattern = pattern.clone();
        async move {
            for list in keys(&mut conn, &pattern).await {
                let ids: Vec<String> = redis::cmd("LRANGE")
                    .arg(&list)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn)
                    .await
                    .expect("lrange");
                if let Some(id) = ids.first()
                    && status_of(&mut conn, id).await.as_deref() == Some("processing")
                {
                    return Some(id.clone());
                }
            }
            None
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_script_whose_caller_went_away_stops_and_keeps_none_of_its_writes() {
    let redis = testkit::RedisServer::start();
    let (worker, _dir) = slow_worker(&redis.url(), "gone");
    let client = Client::connect(&redis.url()).await.expect("connect");

    let waiting = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .run_with("gone", &slow_script("kept?"), &opts(), OnDrop::Cancel)
                .await
        })
    };
    let id = running_id(&redis.url(), "gone").await;
    // The caller goes away, as a WebSocket client's request does when its
    // connection ends.
    waiting.abort();
    assert!(waiting.await.expect_err("aborted").is_cancelled());

    // The script would run for a minute; only the cancel ends it in time
    // (and a timeout would say `timeout`).
    let outcome = client.wait(&id, WAIT).await.expect("wait");
    let Outcome::Failed(f) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(f.kind.as_str(), "cancelled", "{f:?}");
    assert_eq!(
        f.message,
        format!(
            "cancelled while it ran: {}; none of its writes were kept",
            client::SUBMITTER_GONE
        )
    );
    assert_eq!(
        worker.engine.db().next_id(),
        1,
        "the insert before the cancel was not kept"
    );
    let mut conn = raw(&redis.url()).await;
    assert_eq!(
        hget(&mut conn, &id, client::fields::CANCEL)
            .await
            .as_deref(),
        Some(client::SUBMITTER_GONE)
    );
    let stats = client.stats_many(&["gone"]).await.expect("stats").remove(0);
    assert_eq!((stats.processed, stats.failed, stats.in_flight), (0, 1, 0));

    // The worker goes on with the next task, on the same engine.
    let outcome = client
        .run_with(
            "gone",
            "db::insert(7); db::next_id()",
            &opts(),
            OnDrop::Cancel,
        )
        .await
        .expect("run");
    let Outcome::Completed(out) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(out.output, "2", "the next script's insert got id 1");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_task_whose_caller_went_away_ends_without_running() {
    let redis = testkit::RedisServer::start();
    let (worker, _dir) = slow_worker(&redis.url(), "queued");
    let client = Client::connect(&redis.url()).await.expect("connect");

    // Keep the worker busy so the next task waits in the queue.
    let slow = client
        .submit("queued", &slow_script("slow"), &opts())
        .await
        .expect("submit");
    until_status(&raw(&redis.url()).await, &slow, "processing", WAIT).await;
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .run_with("queued", "db::insert(2); 2", &opts(), OnDrop::Cancel)
                .await
        })
    };
    let queued = only_queued_id(&redis.url(), "queued").await;
    waiting.abort();
    let mut conn = raw(&redis.url()).await;
    until("the queued task's cancel to be recorded", WAIT, || {
        let mut conn = conn.clone();
        let queued = queued.clone();
        async move {
            hget(&mut conn, &queued, client::fields::CANCEL)
                .await
                .map(|_| ())
        }
    })
    .await;
    assert_eq!(
        status_of(&mut conn, &queued).await.as_deref(),
        Some("pending"),
        "a cancel only marks a queued task; its worker ends it"
    );

    // Free the worker: a cancel by hand, as another program may send one.
    assert!(
        client
            .cancel(&slow, "stopped by the operator")
            .await
            .expect("cancel")
    );
    let Outcome::Failed(f) = client.wait(&slow, WAIT).await.expect("wait") else {
        panic!("the slow task should have been cancelled")
    };
    assert_eq!(f.kind.as_str(), "cancelled");
    assert!(
        f.message.contains("stopped by the operator"),
        "{}",
        f.message
    );

    let Outcome::Failed(f) = client.wait(&queued, WAIT).await.expect("wait") else {
        panic!("the queued task should have been cancelled")
    };
    assert_eq!(f.kind.as_str(), "cancelled");
    assert_eq!(
        f.message,
        format!("cancelled before it ran: {}", client::SUBMITTER_GONE)
    );
    assert_eq!(
        hget(&mut conn, &queued, client::fields::STARTED_AT).await,
        None,
        "it never started"
    );
    assert_eq!(worker.engine.db().next_id(), 1, "neither script wrote");
    let stats = client
        .stats_many(&["queued"])
        .await
        .expect("stats")
        .remove(0);
    assert_eq!((stats.processed, stats.failed, stats.queue_len), (0, 2, 0));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_of_an_ended_or_unknown_task_changes_nothing() {
    let redis = testkit::RedisServer::start();
    let worker = TestWorker::start(&redis.url(), "ended");
    let client = Client::connect(&redis.url()).await.expect("connect");
    let id = client
        .submit("ended", "40 + 2", &opts())
        .await
        .expect("submit");
    let Outcome::Completed(out) = client.wait(&id, WAIT).await.expect("wait") else {
        panic!("should complete")
    };
    assert_eq!(out.output, "42");

    assert!(!client.cancel(&id, "too late").await.expect("cancel"));
    let mut conn = raw(&redis.url()).await;
    assert_eq!(hget(&mut conn, &id, client::fields::CANCEL).await, None);
    assert_eq!(
        status_of(&mut conn, &id).await.as_deref(),
        Some("completed")
    );

    assert!(!client.cancel("no-such-task", "why").await.expect("cancel"));
    assert!(
        keys(&mut conn, &client::keys::task_details("no-such-task"))
            .await
            .is_empty(),
        "a cancel never creates a task hash"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_timed_out_leaves_its_task_to_its_deadline() {
    let redis = testkit::RedisServer::start();
    let client = Client::connect(&redis.url()).await.expect("connect");
    // No worker yet: the wait times out with the task still queued.
    let err = client
        .run_with(
            "late",
            "1",
            &SubmitOptions::with_timeout(Duration::from_millis(200)),
            OnDrop::Cancel,
        )
        .await
        .expect_err("no worker");
    let client::Error::Timeout { task_id, .. } = err else {
        panic!("{err:?}")
    };
    // A background cancel would have landed by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut conn = raw(&redis.url()).await;
    assert_eq!(
        hget(&mut conn, &task_id, client::fields::CANCEL).await,
        None
    );
    assert_eq!(
        status_of(&mut conn, &task_id).await.as_deref(),
        Some("pending")
    );
    // Its deadline ends it, as `expired`, not `cancelled`.
    let worker = TestWorker::start(&redis.url(), "late");
    let Outcome::Failed(f) = client.wait(&task_id, WAIT).await.expect("wait") else {
        panic!("should have expired")
    };
    assert_eq!(f.kind.as_str(), "expired");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_party_cancel_reason_that_is_not_printable_text_is_not_copied() {
    let redis = testkit::RedisServer::start();
    let client = Client::connect(&redis.url()).await.expect("connect");
    let mut conn = raw(&redis.url()).await;
    // Queued before any worker runs, each cancelled with a raw reason.
    let bad = client.submit("raw", "1", &opts()).await.expect("submit");
    let long = client.submit("raw", "2", &opts()).await.expect("submit");
    hset_raw(
        &mut conn,
        bad.as_bytes(),
        &[(client::fields::CANCEL.as_bytes(), &b"stop \xff\xfe now"[..])],
    )
    .await;
    hset_raw(
        &mut conn,
        long.as_bytes(),
        &[(
            client::fields::CANCEL.as_bytes(),
            "x".repeat(5000).as_bytes(),
        )],
    )
    .await;
    let worker = TestWorker::start(&redis.url(), "raw");
    // The waiter reads the outcome (the fields stay valid UTF-8).
    let Outcome::Failed(f) = client.wait(&bad, WAIT).await.expect("wait") else {
        panic!("should be cancelled")
    };
    assert_eq!(f.kind.as_str(), "cancelled");
    assert_eq!(
        f.message,
        "cancelled before it ran: (a reason that is not printable text)"
    );
    let Outcome::Failed(f) = client.wait(&long, WAIT).await.expect("wait") else {
        panic!("should be cancelled")
    };
    assert_eq!(
        f.message,
        format!("cancelled before it ran: {}", "x".repeat(200))
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_script_right_after_a_stream_of_short_ones_is_still_cancelled() {
    let redis = testkit::RedisServer::start();
    let (worker, _dir) = slow_worker(&redis.url(), "after");
    let client = Client::connect(&redis.url()).await.expect("connect");
    // Each short script's start wakes the watcher or leaves it a permit; it
    // ends before the watcher looks, so the watcher is between two looks
    // when the long script starts.
    for i in 0..50 {
        let out = client
            .run_with("after", &format!("{i} + 1"), &opts(), OnDrop::Cancel)
            .await;
        assert!(
            matches!(out, Ok(Outcome::Completed(ref o)) if o.output == (i + 1).to_string()),
            "{out:?}"
        );
    }
    let id = client
        .submit("after", &slow_script("kept?"), &opts())
        .await
        .expect("submit");
    assert_eq!(running_id(&redis.url(), "after").await, id);
    assert!(client.cancel(&id, "enough").await.expect("cancel"));
    let Outcome::Failed(f) = client.wait(&id, WAIT).await.expect("wait") else {
        panic!("should be cancelled")
    };
    assert_eq!(f.kind.as_str(), "cancelled", "{f:?}");
    assert_eq!(
        f.message,
        "cancelled while it ran: enough; none of its writes were kept"
    );
    assert_eq!(worker.engine.db().next_id(), 1, "the insert was not kept");
    worker.stop().await;
}
