//! Batched claims and group commit against a real worker, Redis and OurDB:
//! tasks queued before the worker starts are claimed in one batch.

mod common;

use std::time::Duration;

use client::{Client, Outcome, SubmitOptions};
use common::*;

const WAIT: Duration = Duration::from_secs(30);

fn opts() -> SubmitOptions {
    SubmitOptions::with_timeout(WAIT)
}

/// A worker on a fresh database whose slow scripts only a cancel stops,
/// with `window` as its group window.
fn batch_worker(url: &str, queue: &str, window: Duration) -> (TestWorker, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut options = fast_options();
    options.group_window = window;
    let worker = TestWorker::start_with(
        worker::WorkerConfig::new(url, queue),
        options,
        open_engine(dir.path(), slow_limits()),
    );
    (worker, dir)
}

/// A slow first task, then two that each insert their name (`second`,
/// `third`), queued in that order; their ids.
async fn behind_a_slow_one(client: &Client, queue: &str, slow: &str) -> [String; 3] {
    let mut ids = Vec::new();
    for script in [
        slow,
        "db::insert(\"second\"); 2",
        "db::insert(\"third\"); 3",
    ] {
        ids.push(client.submit(queue, script, &opts()).await.expect("submit"));
    }
    ids.try_into().expect("three ids")
}

/// Puts the finish script in Redis's cache, as on any Redis a worker
/// finished a task on before (with replies lost, a NOSCRIPT would be lost
/// too, and the script would never run).
async fn load_finish_script(url: &str) {
    client::broker::WorkerBroker::new(
        url,
        "warm_up",
        "w",
        &client::broker::BrokerOptions::new(WAIT),
    )
    .expect("broker")
    .finish_batch(&[], &[], 0, false)
    .await
    .expect("finish script loaded");
}

fn values(engine: &engine::CircleEngine) -> Vec<String> {
    let db = engine.db();
    (1..db.next_id())
        .filter_map(|id| db.get(id).expect("get"))
        .map(|v| String::from_utf8(v).expect("utf8"))
        .collect()
}

fn completed(outcome: Outcome) -> String {
    match outcome {
        Outcome::Completed(out) => out.output,
        other => panic!("expected completed, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_runs_in_queue_order_each_script_sees_the_writes_before_it_and_shares_one_fsync() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let queue = "group_circle";
    let client = Client::connect(&url).await.expect("connect");
    let mut ids = Vec::new();
    for i in 1..=20 {
        // Each task reads the record of the one before it, then adds its own.
        let script = format!(
            "let before = if {i} > 1 {{ db::get({i} - 1) }} else {{ \"none\" }}; \
             db::insert(\"t{i}\"); before"
        );
        ids.push(
            client
                .submit(queue, &script, &opts())
                .await
                .expect("submit"),
        );
    }
    // A third party's task (only `script` and `status`) in the same batch.
    let mut conn = raw(&url).await;
    hset_raw(
        &mut conn,
        b"third-party",
        &[(b"script", b"40 + 2"), (b"status", b"pending")],
    )
    .await;
    lpush_raw(&mut conn, &client::keys::tasks(queue), &[b"third-party"]).await;

    // A window no group of these reaches: the whole batch is one group.
    // After each fsync of its database returns (before the worker goes on),
    // how many of the batch's tasks Redis shows `completed`.
    let mut all = ids.clone();
    all.push("third-party".to_owned());
    let dir = tempfile::tempdir().expect("tempdir");
    let at_fsyncs = completed_at_each_fsync(&url, dir.path(), all);
    let mut options = fast_options();
    options.group_window = Duration::from_secs(60);
    let worker = TestWorker::start_with(
        worker::WorkerConfig::new(&url, queue),
        options,
        open_engine(dir.path(), slow_limits()),
    );
    for (n, id) in ids.iter().enumerate() {
        let output = completed(client.wait(id, WAIT).await.expect("wait"));
        let expected = if n == 0 {
            "none".to_owned()
        } else {
            format!("t{n}")
        };
        assert_eq!(
            output,
            expected,
            "task {} saw the write of the one before",
            n + 1
        );
    }
    assert_eq!(
        completed(client.wait("third-party", WAIT).await.expect("wait")),
        "42"
    );
    let stats = worker.engine.db().stats();
    assert_eq!(stats.commits, 20);
    // A fresh database's first commit reserves file space (one fsync, 1 MiB
    // that the 20 small commits stay within); then the group's one fsync.
    // Nothing else syncs the file here: no checkpoint is due before 8 MiB.
    assert_eq!(
        stats.fsyncs, 2,
        "20 committing scripts of one group take the preallocation's fsync and one fsync of \
         their own"
    );
    let found = at_fsyncs.found.lock().expect("no watcher panicked").clone();
    assert_eq!(
        found,
        [0, 0],
        "tasks found `completed` as each fsync returned: none may be reported before the \
         group's fsync has returned"
    );
    let mut seen = values(&worker.engine);
    seen.sort();
    let mut want: Vec<String> = (1..=20).map(|i| format!("\"t{i}\"")).collect();
    want.sort();
    assert_eq!(seen, want, "each script ran once");
    worker.stop().await;
    drop(at_fsyncs);
}

/// What [`completed_at_each_fsync`] found, in fsync order, and the watch
/// that keeps finding it.
struct AtFsyncs {
    found: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
    _watch: ourdb::fault::WatchedSyncs,
}

/// After each fsync of the database in `dir` returns, on the thread that
/// made it and before that thread goes on, counts the tasks of `ids` whose
/// status in Redis is `completed`.
fn completed_at_each_fsync(url: &str, dir: &std::path::Path, ids: Vec<String>) -> AtFsyncs {
    let conn = redis::Client::open(url)
        .expect("url")
        .get_connection()
        .expect("a blocking connection for the watcher");
    let conn = std::sync::Mutex::new(conn);
    let found = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = std::sync::Arc::clone(&found);
    let watch = ourdb::fault::after_syncs_under(dir, move || {
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGET")
                .arg(client::keys::task_details(id))
                .arg("status");
        }
        let statuses: Vec<Option<String>> = pipe
            .query(&mut *conn.lock().expect("one watcher at a time"))
            .expect("statuses at the fsync");
        let completed = statuses
            .iter()
            .filter(|s| s.as_deref() == Some("completed"))
            .count();
        record.lock().expect("record").push(completed);
    });
    AtFsyncs {
        found,
        _watch: watch,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_cancelled_after_its_batch_was_claimed_ends_cancelled_without_running() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let queue = "batch_cancel_circle";
    let client = Client::connect(&url).await.expect("connect");
    let [first, second, third] = behind_a_slow_one(&client, queue, &slow_script("first")).await;
    let (worker, _dir) = batch_worker(&url, queue, Duration::from_millis(3));
    let conn = raw(&url).await;
    // One claim took all three: the last one is already `processing` while
    // the first one's slow script runs.
    until_status(&conn, &third, "processing", WAIT).await;
    assert!(
        client
            .cancel(&second, "the caller went away")
            .await
            .expect("cancel")
    );
    assert!(
        client
            .cancel(&first, "stop the slow one")
            .await
            .expect("cancel")
    );

    let Outcome::Failed(f) = client.wait(&first, WAIT).await.expect("wait") else {
        panic!("the running task is cut")
    };
    assert_eq!(f.kind.as_str(), "cancelled");
    assert!(f.message.contains("while it ran"), "{}", f.message);
    let Outcome::Failed(f) = client.wait(&second, WAIT).await.expect("wait") else {
        panic!("the cancelled task must not run")
    };
    assert_eq!(f.kind.as_str(), "cancelled");
    assert_eq!(f.message, "cancelled before it ran: the caller went away");
    assert_eq!(
        completed(client.wait(&third, WAIT).await.expect("wait")),
        "3"
    );
    assert_eq!(
        values(&worker.engine),
        ["\"third\""],
        "only the third one wrote"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_deadline_passed_while_it_waited_in_a_batch_times_out_without_running() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let queue = "batch_deadline_circle";
    let client = Client::connect(&url).await.expect("connect");
    let first = client
        .submit(queue, &slow_script("first"), &opts())
        .await
        .expect("submit");
    let late = client
        .submit(
            queue,
            "db::insert(\"late\"); 2",
            &SubmitOptions::with_timeout(Duration::from_millis(1500)),
        )
        .await
        .expect("submit");
    let (worker, _dir) = batch_worker(&url, queue, Duration::from_millis(3));
    let mut conn = raw(&url).await;
    until_status(&conn, &late, "processing", WAIT).await;
    let deadline: u64 = hget(&mut conn, &late, "deadline")
        .await
        .expect("deadline")
        .parse()
        .expect("number");
    until("the deadline to pass", WAIT, || async {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64;
        (now > deadline + 50).then_some(())
    })
    .await;
    assert!(
        client
            .cancel(&first, "stop the slow one")
            .await
            .expect("cancel")
    );
    until_status(&conn, &late, "error", WAIT).await;
    assert_eq!(
        hget(&mut conn, &late, "errorKind").await.as_deref(),
        Some("timeout")
    );
    assert!(values(&worker.engine).is_empty(), "neither task wrote");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_task_runs_at_once_with_a_large_claim_batch() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let queue = "lone_circle";
    let dir = tempfile::tempdir().expect("tempdir");
    let mut options = fast_options();
    options.claim_batch = client::broker::MAX_CLAIM_BATCH;
    options.group_window = Duration::from_secs(60);
    let worker = TestWorker::start_with(
        worker::WorkerConfig::new(&url, queue),
        options,
        open_engine(dir.path(), engine::Limits::default()),
    );
    let client = Client::connect(&url).await.expect("connect");
    for i in 0..3 {
        // Each waits for its reply before the next is sent: a batch that
        // waited to fill would never answer.
        let id = client
            .submit(queue, &format!("{i} + 1"), &opts())
            .await
            .expect("submit");
        assert_eq!(
            completed(client.wait(&id, WAIT).await.expect("wait")),
            (i + 1).to_string()
        );
    }
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_batch_out_of_range_stops_the_worker_naming_the_bounds() {
    let redis = testkit::RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    for bad in [0, client::broker::MAX_CLAIM_BATCH + 1] {
        let mut options = fast_options();
        options.claim_batch = bad;
        let worker = TestWorker::start_with(
            worker::WorkerConfig::new(&redis.url(), "bad_batch"),
            options,
            open_engine(dir.path(), engine::Limits::default()),
        );
        let err = worker.handle.await.expect("join").expect_err("refused");
        let shown = err.to_string();
        assert!(
            shown.contains(&format!("claim batch {bad} is out of range")),
            "{shown}"
        );
        assert!(shown.contains("1 to 1024"), "{shown}");
        drop(worker.engine);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_worker_puts_the_unstarted_tasks_of_its_batch_back_in_order() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let queue = "batch_stop_circle";
    let client = Client::connect(&url).await.expect("connect");
    let slow = client
        .submit(queue, &slow_script("slow"), &opts())
        .await
        .expect("submit");
    let mut behind = Vec::new();
    for i in 0..3 {
        behind.push(
            client
                .submit(queue, &format!("{i}"), &opts())
                .await
                .expect("submit"),
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = worker::WorkerConfig::new(&url, queue);
    config.shutdown_grace = Duration::from_millis(100);
    let worker = TestWorker::start_with(
        config,
        fast_options(),
        open_engine(dir.path(), slow_limits()),
    );
    let mut conn = raw(&url).await;
    until_status(&conn, &behind[2], "processing", WAIT).await;
    worker.stop().await;
    let Outcome::Failed(f) = client.wait(&slow, WAIT).await.expect("wait") else {
        panic!("the running task is cancelled by the shutdown")
    };
    assert_eq!(f.kind.as_str(), "cancelled");
    for id in &behind {
        assert_eq!(
            hget(&mut conn, id, "status").await.as_deref(),
            Some("pending")
        );
        assert_eq!(hget(&mut conn, id, "workerId").await, None);
    }
    // Back at the head of the queue (its right end), oldest first.
    let queued: Vec<String> = redis::cmd("LRANGE")
        .arg(client::keys::tasks(queue))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("lrange");
    let mut expected = behind.clone();
    expected.reverse();
    assert_eq!(queued, expected);
    assert!(
        keys(&mut conn, &client::keys::processing(queue, "*"))
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_task_cancelled_by_a_finish_whose_reply_was_lost_does_not_run_and_counts_once() {
    let redis = testkit::RedisServer::start();
    let proxy = testkit::Proxy::start(redis.port());
    let url = redis.url();
    let queue = "lost_finish_reply";
    let client = Client::connect(&url).await.expect("connect");
    // The first one runs until its time limit; the other two wait behind it
    // in the same batch.
    let [first, second, third] =
        behind_a_slow_one(&client, queue, "let x = 0; loop { x += 1; }").await;
    let worker = TestWorker::start_fresh(
        worker::WorkerConfig::new(&proxy.redis_url(), queue),
        fast_options(),
        timing_out_after(Duration::from_millis(1500)),
    );
    load_finish_script(&url).await;
    let conn = raw(&url).await;
    until_status(&conn, &third, "processing", WAIT).await;
    assert!(
        client
            .cancel(&second, "the caller went away")
            .await
            .expect("cancel")
    );
    // Redis acts on the worker's requests from here on, but the worker
    // hears nothing back: the finish of the first task ends the second as
    // cancelled, and after its response timeout (5 s) the worker sends the
    // same finish again, which finds the second no longer its own.
    proxy.freeze_replies();
    until_status(&conn, &first, "error", WAIT).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    proxy.thaw();

    assert_eq!(
        completed(client.wait(&third, WAIT).await.expect("wait")),
        "3"
    );
    let Outcome::Failed(f) = client.wait(&second, WAIT).await.expect("wait") else {
        panic!("the cancelled task must not run")
    };
    assert_eq!(f.message, "cancelled before it ran: the caller went away");
    assert_eq!(
        values(&worker.engine),
        ["\"third\""],
        "the second one ran although it ended as cancelled before it ran"
    );
    // The finish sent again tells the worker what its first try ended: the
    // first one (timed out) and the second (cancelled) count as failed
    // once each, as Redis counted them.
    until_counts(&worker.status, 1, 2).await;
    let stats = client.stats_many(&[queue]).await.expect("stats").remove(0);
    assert_eq!((stats.processed, stats.failed), (1, 2));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_claimed_by_a_finish_whose_reply_was_lost_runs_before_the_ones_queued_after_it() {
    let redis = testkit::RedisServer::start();
    let proxy = testkit::Proxy::start(redis.port());
    let url = redis.url();
    let queue = "lost_claiming_finish";
    let client = Client::connect(&url).await.expect("connect");
    // One task at a time: the slow one first, then six that each record
    // their turn in the database.
    let slow = client
        .submit(queue, "let x = 0; loop { x += 1; }", &opts())
        .await
        .expect("submit");
    let mut ids = Vec::new();
    for i in 1..=6 {
        ids.push(
            client
                .submit(queue, &format!("db::insert({i}); {i}"), &opts())
                .await
                .expect("submit"),
        );
    }
    let mut options = fast_options();
    options.claim_batch = 1;
    let worker = TestWorker::start_fresh(
        worker::WorkerConfig::new(&proxy.redis_url(), queue),
        options,
        timing_out_after(Duration::from_secs(3)),
    );
    load_finish_script(&url).await;
    let conn = raw(&url).await;
    until_status(&conn, &slow, "processing", WAIT).await;
    // The claim's reply reaches the worker well within this second, and the
    // slow task runs on for two more.
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The slow task's finish claims the first of the six, and its reply is
    // lost; every finish the worker sends again claims nothing until it has
    // read its processing list, where that first one waits. Were the next
    // one claimed meanwhile, it would run first.
    proxy.freeze_replies();
    until_status(&conn, &slow, "error", WAIT).await;
    until_status(&conn, &ids[0], "processing", WAIT).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    proxy.thaw();

    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            completed(client.wait(id, WAIT).await.expect("wait")),
            (i + 1).to_string()
        );
    }
    assert_eq!(
        values(&worker.engine),
        ["1", "2", "3", "4", "5", "6"],
        "the tasks ran out of queue order"
    );
    worker.stop().await;
}

/// Subscribers of `channel`.
async fn subscribers(conn: &mut redis::aio::MultiplexedConnection, channel: &str) -> i64 {
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(conn)
        .await
        .expect("numsub");
    n
}

/// A `deliveredTtl` Lua reads as NaN (a third party's `"nan"`) asks for no
/// TTL: the task's hash gets the result TTL, and the script goes on to the
/// other tasks of its group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nan_delivered_ttl_is_no_ttl_asked_and_the_rest_of_its_group_is_written() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let queue = "nanq";
    let client = Client::connect(&url).await.expect("connect");
    let opts = SubmitOptions::with_timeout(Duration::from_secs(60));
    let a = client.submit(queue, "1", &opts).await.expect("submit a");
    let b = client.submit(queue, "2", &opts).await.expect("submit b");
    let mut conn = raw(&url).await;
    // A third party (or an older submitter) wrote a deliveredTtl Lua reads
    // as NaN.
    hset_raw(&mut conn, a.as_bytes(), &[(b"deliveredTtl", b"nan")]).await;
    let reply_to = hget(&mut conn, &a, "replyTo").await.expect("replyTo");
    until(
        "the client's listener to subscribe",
        Duration::from_secs(10),
        || {
            let mut conn = conn.clone();
            let reply_to = reply_to.clone();
            async move { (subscribers(&mut conn, &reply_to).await > 0).then_some(()) }
        },
    )
    .await;

    // Both tasks are claimed in one batch and run in one group.
    let mut options = fast_options();
    options.group_window = Duration::from_secs(5);
    let worker = TestWorker::start_fresh(
        worker::WorkerConfig::new(&url, queue),
        options,
        engine::Limits::default(),
    );

    // B is an ordinary task: it must complete.
    let outcome_b = client.wait(&b, Duration::from_secs(10)).await;
    let status_a = hget(&mut conn, &a, "status").await;
    let pttl_a: i64 = redis::cmd("PTTL")
        .arg(client::keys::task_details(&a))
        .query_async(&mut conn)
        .await
        .expect("pttl");
    let status_b = hget(&mut conn, &b, "status").await;
    let lists = keys(&mut conn, &client::keys::processing(queue, "*")).await;
    assert!(lists.is_empty(), "held still: {lists:?}");
    assert_eq!(status_a.as_deref(), Some("completed"));
    assert!(
        matches!(outcome_b, Ok(Outcome::Completed(_))),
        "task B, a well-formed task of the same group, never completes: {outcome_b:?} \
         (status {status_b:?})"
    );
    assert!(
        pttl_a > 0,
        "task A's finished hash has no TTL: PTTL {pttl_a}"
    );
    worker.stop().await;
}

/// The queue's `failed` counter edited to something that is not an
/// integer: the finish that counts a failure still writes its results and
/// the next batch it claimed runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_that_is_no_integer_fails_no_finish_and_strands_no_task() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let queue = "counterq";
    let worker = TestWorker::start_fresh(
        worker::WorkerConfig::new(&url, queue),
        fast_options(),
        slow_limits(),
    );
    let client = Client::connect(&url).await.expect("connect");
    let opts = SubmitOptions::with_timeout(Duration::from_secs(60));
    let mut conn = raw(&url).await;
    // The queue's failed counter is not an integer (an operator's edit):
    // HINCRBY on it fails, after the script did everything else.
    let _: () = redis::cmd("HSET")
        .arg(client::keys::stats(queue))
        .arg("failed")
        .arg("n/a")
        .query_async(&mut conn)
        .await
        .expect("hset");
    let a = client
        .submit(queue, &slow_script("a"), &opts)
        .await
        .expect("submit a");
    until_status(&conn, &a, "processing", Duration::from_secs(10)).await;
    let b = client
        .submit(queue, "40 + 2", &opts)
        .await
        .expect("submit b");
    assert!(client.cancel(&a, "test").await.expect("cancel"));
    let outcome_a = client.wait(&a, Duration::from_secs(10)).await;
    let outcome_b = client.wait(&b, Duration::from_secs(10)).await;
    assert!(
        matches!(&outcome_a, Ok(Outcome::Failed(f)) if f.kind == client::FailureKind::Cancelled),
        "{outcome_a:?}"
    );
    assert!(
        matches!(outcome_b, Ok(Outcome::Completed(_))),
        "task B, claimed by the finish of A, never runs: {outcome_b:?}"
    );
    worker.stop().await;
}
