//! A worker in this process, a real Redis, a real OurDB: the task life cycle.

mod common;

use std::time::Duration;

use client::{Client, OnDrop, Outcome, SubmitOptions};
use common::*;

const WAIT: Duration = Duration::from_secs(30);

fn opts() -> SubmitOptions {
    SubmitOptions::with_timeout(WAIT)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_plus_two_round_trips_to_forty_two() {
    let redis = testkit::RedisServer::start();
    let worker = TestWorker::start(&redis.url(), "alpha_circle");
    let client = Client::connect(&redis.url()).await.expect("connect");
    let outcome = client
        .run_with(
            "alpha_circle",
            "print(\"hi\"); 40 + 2",
            &opts(),
            OnDrop::Cancel,
        )
        .await
        .expect("run");
    let Outcome::Completed(out) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(out.output, "42");
    assert!(out.printed.contains("hi"), "printed: {:?}", out.printed);
    assert!(out.run_time.is_some());
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_error_carries_kind_and_position() {
    let redis = testkit::RedisServer::start();
    let worker = TestWorker::start(&redis.url(), "q");
    let client = Client::connect(&redis.url()).await.expect("connect");
    let outcome = client
        .run_with("q", "let x = ;", &opts(), OnDrop::Cancel)
        .await
        .expect("run");
    let Outcome::Failed(f) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(f.kind.as_str(), "syntax");
    assert_eq!(f.line, Some(1));
    assert!(f.column.is_some());
    // The worker counts right after Redis confirmed the write, so poll.
    let status = worker.status.clone();
    until("the worker to count the failure", WAIT, || {
        let counts = status.counts();
        async move { (counts == (0, 1)).then_some(()) }
    })
    .await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_runs_oldest_first() {
    let redis = testkit::RedisServer::start();
    let client = Client::connect(&redis.url()).await.expect("connect");
    // Queued before any worker exists; task i sees exactly i earlier inserts.
    let mut ids = Vec::new();
    for i in 0..40 {
        let script = format!("let before = db::next_id(); db::insert({i}); before");
        ids.push(
            client
                .submit("fifo", &script, &opts())
                .await
                .expect("submit"),
        );
    }
    let worker = TestWorker::start(&redis.url(), "fifo");
    for (i, id) in ids.iter().enumerate() {
        match client.wait(id, WAIT).await.expect("wait") {
            Outcome::Completed(out) => {
                assert_eq!(out.output, (i + 1).to_string(), "task {i} ran out of order")
            }
            other => panic!("task {i}: {other:?}"),
        }
    }
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_party_task_with_only_script_and_status_runs() {
    let redis = testkit::RedisServer::start();
    let worker = TestWorker::start(&redis.url(), "third");
    let mut conn = raw(&redis.url()).await;
    // Exactly what an old client does: HSET script + status, LPUSH the id.
    hset_raw(
        &mut conn,
        b"legacy-1",
        &[(b"script", b"40 + 2"), (b"status", b"pending")],
    )
    .await;
    lpush_raw(&mut conn, "rhai_tasks:third", &[b"legacy-1"]).await;
    let status = until("the legacy task to finish", WAIT, || {
        let mut conn = conn.clone();
        async move {
            hget(&mut conn, "legacy-1", "status")
                .await
                .filter(|s| s == "completed" || s == "error")
        }
    })
    .await;
    assert_eq!(status, "completed");
    assert_eq!(
        hget(&mut conn, "legacy-1", "output").await.as_deref(),
        Some("42")
    );
    // The system writes the time fields (DESIGN §3) even when the submitter
    // did not.
    for field in ["createdAt", "startedAt", "updatedAt"] {
        let at = hget(&mut conn, "legacy-1", field).await.unwrap_or_default();
        assert!(
            at.parse::<u64>().is_ok_and(|ms| ms > 1_600_000_000_000),
            "{field} is a time in ms: {at:?}"
        );
    }
    worker.stop().await;
}

/// Pushes task `id` with `fields` (status `pending` added) and waits for it
/// to end as `status`; its hash then.
async fn run_raw(
    conn: &mut redis::aio::MultiplexedConnection,
    queue: &str,
    id: &str,
    fields: &[(&str, &str)],
    status: &str,
) -> std::collections::BTreeMap<String, String> {
    let mut raw_fields: Vec<(&[u8], &[u8])> = vec![(b"status", b"pending")];
    raw_fields.extend(fields.iter().map(|(f, v)| (f.as_bytes(), v.as_bytes())));
    hset_raw(conn, id.as_bytes(), &raw_fields).await;
    lpush_raw(conn, &format!("rhai_tasks:{queue}"), &[id.as_bytes()]).await;
    until_status(conn, id, status, WAIT).await;
    hgetall(conn, id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_keeps_no_outcome_field_of_an_earlier_run_of_its_id_or_of_its_submitter() {
    let redis = testkit::RedisServer::start();
    let worker = TestWorker::start(&redis.url(), "again");
    let mut conn = raw(&redis.url()).await;

    let first = run_raw(
        &mut conn,
        "again",
        "reused",
        &[("script", "print(\"p\"); \"first run\"")],
        "completed",
    )
    .await;
    assert_eq!(first["output"], "first run");
    assert!(
        first.contains_key("printed") && first.contains_key("runTimeUs"),
        "{first:?}"
    );

    // The same id again, failing: nothing of the first run's outcome stays.
    let second = run_raw(
        &mut conn,
        "again",
        "reused",
        &[("script", "throw \"second run failed\"")],
        "error",
    )
    .await;
    assert!(second["error"].contains("second run failed"), "{second:?}");
    assert_eq!(second["errorKind"], "runtime");
    assert!(second.contains_key("errorLine"), "{second:?}");
    for field in ["output", "printed", "runTimeUs"] {
        assert!(
            !second.contains_key(field),
            "{field} of the first run stayed: {second:?}"
        );
    }

    // And again, completing: the failure's fields go.
    let third = run_raw(
        &mut conn,
        "again",
        "reused",
        &[("script", "40 + 2")],
        "completed",
    )
    .await;
    assert_eq!(third["output"], "42");
    for field in ["error", "errorKind", "errorLine", "errorColumn"] {
        assert!(
            !third.contains_key(field),
            "{field} of the second run stayed: {third:?}"
        );
    }

    // A submitter's own outcome fields go too, also when the task ends
    // without running (its deadline passed while queued).
    let stale = [
        ("error", "stale"),
        ("errorKind", "timeout"),
        ("errorLine", "9"),
        ("errorColumn", "3"),
    ];
    let mut fields = vec![("script", "1 + 1")];
    fields.extend(stale);
    let ran = run_raw(&mut conn, "again", "preset-error", &fields, "completed").await;
    assert_eq!(ran["output"], "2");
    for (field, _) in stale {
        assert!(
            !ran.contains_key(field),
            "the submitter's {field} stayed: {ran:?}"
        );
    }
    let expired = run_raw(
        &mut conn,
        "again",
        "preset-output",
        &[
            ("script", "1 + 1"),
            ("deadline", "1"),
            ("output", "stale"),
            ("printed", "stale too"),
            ("runTimeUs", "5"),
        ],
        "error",
    )
    .await;
    assert_eq!(expired["errorKind"], "expired", "{expired:?}");
    for field in ["output", "printed", "runTimeUs", "errorLine", "errorColumn"] {
        assert!(!expired.contains_key(field), "{field} stayed: {expired:?}");
    }
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_pushed_without_a_hash_or_without_a_script_ends_as_error_with_the_reason() {
    let redis = testkit::RedisServer::start();
    let worker = TestWorker::start(&redis.url(), "broken");
    let mut conn = raw(&redis.url()).await;
    // A submitter that pushes an id and never writes its hash, one that
    // writes a hash without a script, one with a status the protocol does
    // not know; then a good task behind them.
    hset_raw(&mut conn, b"no-script", &[(b"status", b"pending")]).await;
    hset_raw(
        &mut conn,
        b"odd-status",
        &[(b"script", b"db::insert(1)"), (b"status", b"queued")],
    )
    .await;
    hset_raw(
        &mut conn,
        b"fine",
        &[(b"script", b"1 + 1"), (b"status", b"pending")],
    )
    .await;
    lpush_raw(
        &mut conn,
        "rhai_tasks:broken",
        &[b"no-hash", b"no-script", b"odd-status", b"fine"],
    )
    .await;
    until_status(&conn, "fine", "completed", WAIT).await;
    for (id, says) in [
        ("no-hash", "rhai_task_details:no-hash did not exist"),
        ("no-script", "no script"),
        ("odd-status", "unknown status \"queued\""),
    ] {
        assert_eq!(
            hget(&mut conn, id, "status").await.as_deref(),
            Some("error"),
            "{id}"
        );
        assert_eq!(
            hget(&mut conn, id, "errorKind").await.as_deref(),
            Some("invalid"),
            "{id}"
        );
        let error = hget(&mut conn, id, "error").await.unwrap_or_default();
        assert!(error.contains(says), "{id}: {error}");
        assert!(
            hget(&mut conn, id, "createdAt").await.is_some(),
            "{id}: the system writes createdAt"
        );
        let ttl: i64 = redis::cmd("PTTL")
            .arg(client::keys::task_details(id))
            .query_async(&mut conn)
            .await
            .expect("pttl");
        assert!(
            ttl > 0,
            "{id}: the error hash expires like any result (pttl {ttl})"
        );
    }
    assert_settled(&redis.url(), "broken", &worker, 1, 3).await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_whose_details_key_is_not_a_hash_is_dropped_as_failed_and_the_queue_goes_on() {
    let redis = testkit::RedisServer::start();
    let worker = TestWorker::start(&redis.url(), "typed");
    let mut conn = raw(&redis.url()).await;
    // A third party's keys of other types where task hashes belong: the
    // oldest is taken by the blocking pop, the next ones in a batch behind it.
    let _: () = redis::cmd("SET")
        .arg(client::keys::task_details("a-string"))
        .arg("not a task")
        .query_async(&mut conn)
        .await
        .expect("set");
    let _: () = redis::cmd("RPUSH")
        .arg(client::keys::task_details("a-list"))
        .arg("x")
        .query_async(&mut conn)
        .await
        .expect("rpush");
    for id in [&b"fine-1"[..], b"fine-2"] {
        hset_raw(
            &mut conn,
            id,
            &[(b"script", b"1 + 1"), (b"status", b"pending")],
        )
        .await;
    }
    lpush_raw(
        &mut conn,
        "rhai_tasks:typed",
        &[b"a-string", b"a-list", b"fine-1", b"fine-2"],
    )
    .await;
    until_status(&conn, "fine-2", "completed", WAIT).await;
    assert_eq!(
        hget(&mut conn, "fine-1", "status").await.as_deref(),
        Some("completed")
    );
    // The keys are left as they were.
    let text: String = redis::cmd("GET")
        .arg(client::keys::task_details("a-string"))
        .query_async(&mut conn)
        .await
        .expect("get");
    assert_eq!(text, "not a task");
    let list: Vec<String> = redis::cmd("LRANGE")
        .arg(client::keys::task_details("a-list"))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("lrange");
    assert_eq!(list, ["x"]);
    assert_settled(&redis.url(), "typed", &worker, 2, 2).await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_utf8_end_their_task_as_invalid_and_the_worker_goes_on() {
    let redis = testkit::RedisServer::start();
    let worker = TestWorker::start(&redis.url(), "bytes");
    let mut conn = raw(&redis.url()).await;
    // Written by a third party: a script, a status and an id that are not
    // UTF-8; then a good task behind them.
    let details = |id: &[u8]| [b"rhai_task_details:".as_slice(), id].concat();
    let tasks: [(&[u8], &[u8], &[u8]); 4] = [
        (b"bin-script", b"\xff\xfe + 1", b"pending"),
        (b"bin-status", b"1", b"\xff"),
        (b"bin-\xffid", b"2", b"pending"),
        (b"after", b"3 + 4", b"pending"),
    ];
    for (id, script, status) in tasks {
        // An outcome left from before: the end removes it.
        let stale: &[(&[u8], &[u8])] = &[(b"output", b"stale"), (b"errorLine", b"9")];
        let mut fields: Vec<(&[u8], &[u8])> = vec![(b"script", script), (b"status", status)];
        fields.extend_from_slice(stale);
        hset_raw(&mut conn, id, &fields).await;
        lpush_raw(&mut conn, "rhai_tasks:bytes", &[id]).await;
    }
    until_status(&conn, "after", "completed", WAIT).await;
    assert_eq!(
        hget(&mut conn, "after", "output").await.as_deref(),
        Some("7")
    );
    for (id, says) in [
        (b"bin-script".as_slice(), "script is not valid UTF-8"),
        (b"bin-status".as_slice(), "unknown status"),
        (b"bin-\xffid".as_slice(), "id is not valid UTF-8"),
    ] {
        let fields: std::collections::HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
            .arg(details(id))
            .query_async(&mut conn)
            .await
            .expect("hgetall");
        let text = |f: &str| String::from_utf8_lossy(&fields[f]).into_owned();
        let shown = String::from_utf8_lossy(id);
        assert_eq!(text("status"), "error", "{shown}");
        assert_eq!(text("errorKind"), "invalid", "{shown}");
        assert!(text("error").contains(says), "{shown}: {}", text("error"));
        for stale in ["output", "errorLine"] {
            assert!(!fields.contains_key(stale), "{shown}: {stale} stayed");
        }
        let ttl: i64 = redis::cmd("PTTL")
            .arg(details(id))
            .query_async(&mut conn)
            .await
            .expect("pttl");
        assert!(ttl > 0, "{shown}: the error hash expires (pttl {ttl})");
    }
    until_counts(&worker.status, 1, 3).await;
    assert!(
        keys(&mut conn, &client::keys::processing("bytes", "*"))
            .await
            .is_empty(),
        "nothing is left claimed"
    );
    worker.stop().await;
}

/// [`fast_options`] with a group window no test run crosses: what a worker
/// claims at once runs in one group.
fn one_group() -> worker::WorkerOptions {
    let mut options = fast_options();
    options.group_window = Duration::from_secs(10);
    options
}

/// The id of the one worker registered for `queue`, once it registered.
async fn registered_worker(conn: &redis::aio::MultiplexedConnection, queue: &str) -> String {
    until("the worker to register", WAIT, || {
        let mut conn = conn.clone();
        async move {
            let members: Vec<String> = redis::cmd("SMEMBERS")
                .arg(client::keys::workers(queue))
                .query_async(&mut conn)
                .await
                .expect("smembers");
            members.into_iter().next()
        }
    })
    .await
}

/// Puts task `task` (script `script`) in worker `worker`'s processing list
/// of `queue`, `copies` times, as `processing` by it: what a claim whose
/// result could not be written leaves there.
async fn held_by(
    conn: &mut redis::aio::MultiplexedConnection,
    queue: &str,
    worker: &str,
    task: &str,
    script: &str,
    copies: usize,
) {
    hset_raw(
        conn,
        task.as_bytes(),
        &[
            (b"script", script.as_bytes()),
            (b"status", b"processing"),
            (b"workerId", worker.as_bytes()),
        ],
    )
    .await;
    let ids = vec![task.as_bytes(); copies];
    lpush_raw(conn, &client::keys::processing(queue, worker), &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_pop_never_runs_again_a_task_this_worker_already_holds() {
    // A task whose result this worker could not write stays in its
    // processing list as `processing` by it. The claim pipelined behind an
    // idle blocking pop reads the head of that list; it must not take this
    // leftover for a newly popped task and run it a second time.
    let redis = testkit::RedisServer::start();
    let worker = TestWorker::start(&redis.url(), "held");
    let mut conn = raw(&redis.url()).await;
    let id = registered_worker(&conn, "held").await;
    held_by(&mut conn, "held", &id, "held-1", "db::insert(1)", 1).await;
    let pops = |info: String| {
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_blmove:calls="))
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let info = |mut conn: redis::aio::MultiplexedConnection| async move {
        redis::cmd("INFO")
            .arg("commandstats")
            .query_async::<String>(&mut conn)
            .await
            .expect("info")
    };
    let before = pops(info(conn.clone()).await);
    // fast_options: a blocking pop lasts 200 ms; wait for three more.
    until("three idle pops", WAIT, || {
        let conn = conn.clone();
        async move { (pops(info(conn).await) >= before + 3).then_some(()) }
    })
    .await;
    assert_eq!(
        hget(&mut conn, "held-1", "status").await.as_deref(),
        Some("processing")
    );
    assert_eq!(
        worker.engine.db().next_id(),
        1,
        "the held task did not run again (an empty database's next id is 1)"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_waiter_gave_up_is_not_run() {
    let redis = testkit::RedisServer::start();
    let client = Client::connect(&redis.url()).await.expect("connect");
    let err = client
        .run_with(
            "late",
            "db::insert(1); 1",
            &SubmitOptions::with_timeout(Duration::from_millis(100)),
            OnDrop::Cancel,
        )
        .await
        .expect_err("no worker yet");
    let client::Error::Timeout { task_id, .. } = err else {
        panic!("{err:?}")
    };
    let worker = TestWorker::start(&redis.url(), "late");
    let outcome = client.wait(&task_id, WAIT).await.expect("wait");
    let Outcome::Failed(f) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(f.kind.as_str(), "expired");
    assert!(f.message.contains("expired before it ran"), "{}", f.message);
    assert_eq!(
        worker.engine.db().next_id(),
        1,
        "the expired script must not have run"
    );
    // The redis counters change in the same script as the notification.
    let stats = client.stats_many(&["late"]).await.expect("stats").remove(0);
    assert_eq!((stats.processed, stats.failed), (0, 1));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_task_hashes_expire_after_the_result_ttl() {
    let redis = testkit::RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = worker::WorkerConfig::new(&redis.url(), "ttl");
    config.result_ttl = Duration::from_millis(300);
    let worker = TestWorker::start_with(
        config,
        fast_options(),
        open_engine(dir.path(), engine::Limits::default()),
    );
    let client = Client::connect(&redis.url()).await.expect("connect");
    let id = client.submit("ttl", "1", &opts()).await.expect("submit");
    client.wait(&id, WAIT).await.expect("wait");
    let mut conn = raw(&redis.url()).await;
    let pttl: i64 = redis::cmd("PTTL")
        .arg(client::keys::task_details(&id))
        .query_async(&mut conn)
        .await
        .expect("pttl");
    assert!(pttl > 0 && pttl <= 300, "pttl {pttl}");
    until("the hash to expire", WAIT, || {
        let mut conn = conn.clone();
        let id = id.clone();
        async move { hget(&mut conn, &id, "status").await.is_none().then_some(()) }
    })
    .await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_a_long_script_after_the_grace_and_leaves_nothing_claimed() {
    let redis = testkit::RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = worker::WorkerConfig::new(&redis.url(), "stop");
    config.shutdown_grace = Duration::from_millis(200);
    let worker = TestWorker::start_with(
        config,
        fast_options(),
        open_engine(dir.path(), slow_limits()),
    );
    let client = Client::connect(&redis.url()).await.expect("connect");
    let slow = client
        .submit("stop", &slow_script("slow"), &opts())
        .await
        .expect("submit");
    let queued = client.submit("stop", "1", &opts()).await.expect("submit");
    let mut conn = raw(&redis.url()).await;
    until_status(&conn, &slow, "processing", WAIT).await;
    // The queued task is either still queued or claimed in the slow one's
    // batch; it does not run.
    let stats = client.stats_many(&["stop"]).await.expect("stats").remove(0);
    assert_eq!(stats.in_flight + stats.queue_len, 2);
    assert_eq!(hget(&mut conn, &queued, "output").await, None);
    let status = worker.status.clone();
    let engine = worker.engine.clone();
    worker.stop().await;
    assert_eq!(status.state(), worker::WorkerState::Stopped);
    let Outcome::Failed(f) = client.wait(&slow, WAIT).await.expect("wait") else {
        panic!("slow task should fail")
    };
    assert_eq!(f.kind.as_str(), "cancelled");
    assert_eq!(
        f.message,
        "cancelled: the worker shut down and its 200ms grace for running scripts is over"
    );
    assert_eq!(
        engine.db().next_id(),
        1,
        "a cancelled script commits nothing"
    );
    // Nothing claimed: no processing list, no registered worker, and the
    // queued task is still pending in the queue for the next worker.
    assert!(
        keys(&mut conn, &client::keys::processing("stop", "*"))
            .await
            .is_empty()
    );
    assert!(
        keys(&mut conn, &client::keys::workers("stop"))
            .await
            .is_empty()
    );
    assert_eq!(
        hget(&mut conn, &queued, "status").await.as_deref(),
        Some("pending")
    );
    assert_eq!(
        client
            .stats_many(&["stop"])
            .await
            .expect("stats")
            .remove(0)
            .queue_len,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_script_within_the_grace_complete() {
    let redis = testkit::RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = worker::WorkerConfig::new(&redis.url(), "grace");
    config.shutdown_grace = Duration::from_secs(60);
    let worker = TestWorker::start_with(
        config,
        fast_options(),
        open_engine(dir.path(), slow_limits()),
    );
    let client = Client::connect(&redis.url()).await.expect("connect");
    let id = client
        .submit(
            "grace",
            "db::insert(1); let x = 0; while x < 300_000 { x += 1; } x",
            &opts(),
        )
        .await
        .expect("submit");
    let conn = raw(&redis.url()).await;
    until("the task to be claimed", WAIT, || {
        let mut conn = conn.clone();
        let id = id.clone();
        async move { (hget(&mut conn, &id, "status").await.as_deref() != Some("pending")).then_some(()) }
    })
    .await;
    worker.stop().await;
    let outcome = client.wait(&id, WAIT).await.expect("wait");
    assert!(
        matches!(outcome, Outcome::Completed(ref o) if o.output == "300000"),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_track_processed_failed_queue_and_heartbeat() {
    let redis = testkit::RedisServer::start();
    let client = Client::connect(&redis.url()).await.expect("connect");
    let empty = client
        .stats_many(&["count"])
        .await
        .expect("stats")
        .remove(0);
    assert_eq!(empty, client::QueueStats::default(), "no worker ever beat");
    for script in ["1", "2", "throw \"no\""] {
        client
            .submit("count", script, &opts())
            .await
            .expect("submit");
    }
    assert_eq!(
        client
            .stats_many(&["count"])
            .await
            .expect("stats")
            .remove(0)
            .queue_len,
        3
    );
    let worker = TestWorker::start(&redis.url(), "count");
    let stats = until("all three to finish", WAIT, || {
        let client = client.clone();
        async move {
            let s = client
                .stats_many(&["count"])
                .await
                .expect("stats")
                .remove(0);
            (s.processed + s.failed == 3).then_some(s)
        }
    })
    .await;
    assert_eq!(
        (
            stats.processed,
            stats.failed,
            stats.queue_len,
            stats.in_flight
        ),
        (2, 1, 0, 0)
    );
    assert!(stats.heartbeat_age.is_some());
    let status = worker.status.clone();
    until("the worker to count all three", WAIT, || {
        let counts = status.counts();
        async move { (counts == (2, 1)).then_some(()) }
    })
    .await;
    assert_eq!(worker.status.state(), worker::WorkerState::Running);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circles_run_in_parallel_while_each_runs_one_task_at_a_time() {
    let redis = testkit::RedisServer::start();
    let dir_a = tempfile::tempdir().expect("tempdir");
    let mut config_a = worker::WorkerConfig::new(&redis.url(), "a");
    // The slow script is cancelled at the end; do not wait the default grace.
    config_a.shutdown_grace = Duration::from_millis(100);
    let a = TestWorker::start_with(
        config_a,
        fast_options(),
        open_engine(dir_a.path(), slow_limits()),
    );
    let b = TestWorker::start(&redis.url(), "b");
    let client = Client::connect(&redis.url()).await.expect("connect");
    let slow = client
        .submit("a", &slow_script("a"), &opts())
        .await
        .expect("submit");
    let behind = client.submit("a", "1", &opts()).await.expect("submit");
    let mut conn = raw(&redis.url()).await;
    until_status(&conn, &slow, "processing", WAIT).await;
    // Circle b answers while circle a is busy; a's second task waits its turn.
    let outcome = client
        .run_with("b", "40 + 2", &opts(), OnDrop::Cancel)
        .await
        .expect("run b");
    assert!(matches!(outcome, Outcome::Completed(ref o) if o.output == "42"));
    // Queued, or claimed in a's batch behind the slow one: not run.
    let status = hget(&mut conn, &behind, "status").await;
    assert!(
        matches!(status.as_deref(), Some("pending" | "processing")),
        "{status:?}"
    );
    assert_eq!(hget(&mut conn, &behind, "output").await, None);
    a.token.cancel();
    let _ = a.handle.await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_script_never_silences_the_heartbeat_so_no_reaper_takes_its_task() {
    // Scripts run on the circle's own thread; the heartbeat must not wait
    // for them, or a second worker's reaper would end a healthy task as
    // worker_lost once the heartbeat's TTL ran out. A beat every 100 ms
    // against a TTL of 1.5 s: a loaded machine cannot make a live worker
    // look dead, while a heartbeat stalled for the whole script would lapse
    // within the watch below.
    let redis = testkit::RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = worker::WorkerConfig::new(&redis.url(), "beat");
    config.shutdown_grace = Duration::from_millis(100);
    let mut options = fast_options();
    options.heartbeat_ttl = Duration::from_millis(1500);
    let busy = TestWorker::start_with(config, options, open_engine(dir.path(), slow_limits()));
    let client = Client::connect(&redis.url()).await.expect("connect");
    let slow = client
        .submit("beat", &slow_script("slow"), &opts())
        .await
        .expect("submit");
    let mut conn = raw(&redis.url()).await;
    let busy_id = until("the slow task to be claimed", WAIT, || {
        let mut conn = conn.clone();
        let slow = slow.clone();
        async move {
            if hget(&mut conn, &slow, "status").await.as_deref() != Some("processing") {
                return None;
            }
            hget(&mut conn, &slow, "workerId").await
        }
    })
    .await;
    // A second worker on the queue reaps every 200 ms.
    let reaper = TestWorker::start(&redis.url(), "beat");
    let heartbeat = client::keys::heartbeat("beat", &busy_id);
    let watch_until = tokio::time::Instant::now() + Duration::from_secs(4);
    let mut looks = 0;
    while tokio::time::Instant::now() < watch_until {
        let alive: bool = redis::cmd("EXISTS")
            .arg(&heartbeat)
            .query_async(&mut conn)
            .await
            .expect("exists");
        assert!(
            alive,
            "the busy worker's heartbeat lapsed while its script ran"
        );
        assert_eq!(
            hget(&mut conn, &slow, "status").await.as_deref(),
            Some("processing"),
            "the running task was taken from its live worker"
        );
        looks += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(looks >= 20, "watched only {looks} times");
    busy.stop().await;
    let Outcome::Failed(f) = client.wait(&slow, WAIT).await.expect("wait") else {
        panic!("the slow task should end cancelled by the shutdown")
    };
    assert_eq!(f.kind.as_str(), "cancelled", "{f:?}");
    reaper.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_id_was_pushed_twice_runs_once() {
    let redis = testkit::RedisServer::start();
    let client = Client::connect(&redis.url()).await.expect("connect");
    let mut conn = raw(&redis.url()).await;
    let opts = SubmitOptions::default();
    let once = client
        .submit("twice", "db::insert(\"once\"); 1", &opts)
        .await
        .expect("submit");
    // A submitter whose first push's reply was lost pushes the id again.
    lpush_raw(&mut conn, &client::keys::tasks("twice"), &[once.as_bytes()]).await;
    let after = client.submit("twice", "2", &opts).await.expect("submit");
    // The worker's first claim takes all three ids in one batch, and runs
    // what it claimed in one group however long the first run takes.
    let worker = TestWorker::start_fresh(
        worker::WorkerConfig::new(&redis.url(), "twice"),
        one_group(),
        engine::Limits::default(),
    );
    for id in [&once, &after] {
        assert!(matches!(
            client.wait(id, WAIT).await.expect("wait"),
            Outcome::Completed(_)
        ));
    }
    let id = registered_worker(&conn, "twice").await;
    let listed = processing_list(&mut conn, "twice", &id).await;
    assert!(listed.is_empty(), "{listed:?}");
    assert_eq!(
        worker.engine.db().next_id(),
        2,
        "the task ran more than once"
    );
    until_counts(&worker.status, 2, 0).await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_listed_twice_in_the_processing_list_after_an_outage_runs_once() {
    let redis = testkit::RedisServer::start();
    let proxy = testkit::Proxy::start(redis.port());
    // What it claims after the outage runs in one group, however long the
    // first run takes.
    let worker = TestWorker::start_fresh(
        worker::WorkerConfig::new(&proxy.redis_url(), "listed"),
        one_group(),
        engine::Limits::default(),
    );
    let mut conn = raw(&redis.url()).await;
    let id = registered_worker(&conn, "listed").await;
    // Cut off, the worker looks at its processing list once Redis answers
    // again; meanwhile a task claimed by it sits there twice (its id was
    // pushed twice, and both copies were moved).
    proxy.freeze();
    until("the worker to notice the outage", WAIT, || {
        let state = worker.status.state();
        async move { matches!(state, worker::WorkerState::Reconnecting(_)).then_some(()) }
    })
    .await;
    held_by(
        &mut conn,
        "listed",
        &id,
        "listed-1",
        "db::insert(\"once\"); 1",
        2,
    )
    .await;
    proxy.thaw();
    until_status(&conn, "listed-1", "completed", WAIT).await;
    // The copy left over left the list when it was read.
    let len: usize = redis::cmd("LLEN")
        .arg(client::keys::processing("listed", &id))
        .query_async(&mut conn)
        .await
        .expect("llen");
    assert_eq!(len, 0);
    assert_eq!(
        worker.engine.db().next_id(),
        2,
        "the task ran more than once"
    );
    worker.stop().await;
}
