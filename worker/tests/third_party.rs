//! A third-party program that speaks the Redis protocol by hand (DESIGN §3,
//! README "The Redis protocol, for other programs"), against a worker in
//! this process: every field the worker writes, and odd but valid inputs.

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(30);

/// A submitter may put an expiry on the hash it writes (in the same
/// MULTI/EXEC as the push, so an abandoned task does not stay in Redis for
/// good). Once a worker claims the task the system owns its hash: the
/// keys table says a task hash has no TTL "while pending or processing",
/// and DESIGN §3 says every pushed task reaches `completed` or `error`. A
/// run that outlives the submitter's expiry must still end in a hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitter_s_expiry_on_the_hash_does_not_drop_the_outcome_of_a_run_that_outlives_it() {
    let redis = testkit::RedisServer::start();
    let (worker, _dir) = {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = open_engine(dir.path(), timing_out_after(Duration::from_secs(3)));
        let worker = TestWorker::start_with(
            worker::WorkerConfig::new(&redis.url(), "ttl"),
            fast_options(),
            engine,
        );
        (worker, dir)
    };
    let mut conn = raw(&redis.url()).await;
    let key = client::keys::task_details("t-ttl");
    let _: () = redis::pipe()
        .atomic()
        .cmd("HSET")
        .arg(&key)
        .arg("script")
        .arg("loop { }")
        .arg("status")
        .arg("pending")
        .ignore()
        .cmd("PEXPIRE")
        .arg(&key)
        .arg(1500)
        .ignore()
        .cmd("LPUSH")
        .arg(client::keys::tasks("ttl"))
        .arg("t-ttl")
        .ignore()
        .query_async(&mut conn)
        .await
        .expect("submit");
    until_status(&conn, "t-ttl", "processing", WAIT).await;
    // The engine stops the script after 3 s with a timeout error; the
    // submitter's 1.5 s expiry is long past by then.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let hash = hgetall(&mut conn, "t-ttl").await;
    assert_eq!(
        (
            hash.get("status").map(String::as_str),
            hash.get("errorKind").map(String::as_str)
        ),
        (Some("error"), Some("timeout")),
        "the task's hash after its run: {hash:?}"
    );
    worker.stop().await;
}

/// A queue key that holds another type (a third party's mistake) stops
/// nothing for good: once it is a list again, its tasks run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_key_of_another_type_stops_no_worker_and_its_tasks_run_once_it_is_a_list() {
    let redis = testkit::RedisServer::start();
    let mut conn = raw(&redis.url()).await;
    let _: () = redis::cmd("SET")
        .arg(client::keys::tasks("wrongtype"))
        .arg("x")
        .query_async(&mut conn)
        .await
        .expect("set");
    let worker = TestWorker::start(&redis.url(), "wrongtype");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _: () = redis::cmd("DEL")
        .arg(client::keys::tasks("wrongtype"))
        .query_async(&mut conn)
        .await
        .expect("del");
    push_task(&mut conn, "wrongtype", "t-wt", &[], "40 + 2").await;
    until_status(&conn, "t-wt", "completed", WAIT).await;
    assert_eq!(
        hget(&mut conn, "t-wt", "output").await.as_deref(),
        Some("42")
    );
    worker.stop().await;
}

/// Every field of a completed and a failed task pushed by hand, its TTL and
/// its notification on a `replyTo` channel of the third party's own; an
/// unknown field stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_pushed_task_gets_every_field_the_protocol_names_its_ttl_and_its_notification() {
    let redis = testkit::RedisServer::start();
    let worker = TestWorker::start(&redis.url(), "fields");
    let mut conn = raw(&redis.url()).await;
    let mut pubsub = pubsub(&redis).await;
    pubsub.subscribe("my-channel").await.expect("subscribe");
    let before = client_now();
    push_task(
        &mut conn,
        "fields",
        "t-ok",
        &[("replyTo", "my-channel"), ("myField", "kept")],
        "print(\"hi\"); 40 + 2",
    )
    .await;
    push_task(
        &mut conn,
        "fields",
        "t-err",
        &[("replyTo", "my-channel")],
        "let x = 1;\nx / 0",
    )
    .await;
    push_task(&mut conn, "fields", "t-empty", &[], "").await;
    until_status(&conn, "t-ok", "completed", WAIT).await;
    until_status(&conn, "t-err", "error", WAIT).await;
    until_status(&conn, "t-empty", "completed", WAIT).await;
    let after = client_now();
    let ok = hgetall(&mut conn, "t-ok").await;
    let time = |h: &std::collections::BTreeMap<String, String>, f: &str| -> u64 {
        h.get(f)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{f} in {h:?}"))
    };
    for f in ["createdAt", "startedAt", "updatedAt"] {
        let t = time(&ok, f);
        // Redis' clock (a claim after a blocking pop) may read a ms behind.
        assert!(
            before <= t + 5 && t <= after,
            "{f} {t} not in [{before}, {after}]"
        );
    }
    assert!(time(&ok, "createdAt") <= time(&ok, "startedAt"));
    assert!(time(&ok, "startedAt") <= time(&ok, "updatedAt"));
    assert_eq!(ok.get("output").map(String::as_str), Some("42"));
    assert_eq!(ok.get("printed").map(String::as_str), Some("hi\n"));
    assert_eq!(ok.get("myField").map(String::as_str), Some("kept"));
    assert!(
        ok.get("runTimeUs")
            .is_some_and(|v| v.parse::<u64>().is_ok())
    );
    assert!(ok.contains_key("workerId"));
    for f in ["error", "errorKind", "errorLine", "errorColumn", "cancel"] {
        assert!(!ok.contains_key(f), "{f} in {ok:?}");
    }
    let err = hgetall(&mut conn, "t-err").await;
    assert_eq!(
        err.get("errorKind").map(String::as_str),
        Some("runtime"),
        "{err:?}"
    );
    assert_eq!(
        err.get("errorLine").map(String::as_str),
        Some("2"),
        "{err:?}"
    );
    assert!(err.contains_key("errorColumn"), "{err:?}");
    for f in ["output", "printed", "runTimeUs"] {
        assert!(!err.contains_key(f), "{f} in {err:?}");
    }
    let empty = hgetall(&mut conn, "t-empty").await;
    assert_eq!(
        empty.get("output").map(String::as_str),
        Some(""),
        "{empty:?}"
    );
    for id in ["t-ok", "t-err", "t-empty"] {
        let ttl = pttl(&mut conn, id).await;
        assert!(
            ttl > 3_500_000 && ttl <= 3_600_000,
            "{id}: the default result TTL (1 h), not {ttl}"
        );
    }
    use futures_util::StreamExt as _;
    let mut messages = pubsub.on_message();
    let mut notes = Vec::new();
    for _ in 0..2 {
        let msg = tokio::time::timeout(WAIT, messages.next())
            .await
            .expect("a notification")
            .expect("open");
        notes.push(msg.get_payload::<String>().expect("text"));
    }
    assert!(notes[0].contains("\"id\":\"t-ok\""), "{notes:?}");
    assert!(notes[0].contains("\"output\":\"42\""), "{notes:?}");
    assert!(notes[0].contains("\"status\":\"completed\""), "{notes:?}");
    assert!(notes[1].contains("\"errorKind\":\"runtime\""), "{notes:?}");
    drop(messages);
    worker.stop().await;
}

fn client_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// A stats key of another type than a hash (edited by hand; the finish
/// scripts already leave such a counter alone and go on) must not stop the
/// reaper: a dead worker's task still ends `worker_lost` (DESIGN §3: every
/// pushed task reaches `completed` or `error`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stats_key_of_another_type_does_not_stop_the_reaper() {
    use client::broker::{BrokerOptions, Claim, WorkerBroker};
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let mut conn = raw(&url).await;
    push_task(&mut conn, "reapq", "t-lost", &[], "40 + 2").await;
    let options = BrokerOptions::new(Duration::from_secs(60));
    let ghost = WorkerBroker::new(&url, "reapq", "ghost", &options).expect("broker");
    ghost
        .beat(Duration::from_millis(300), false)
        .await
        .expect("beat");
    match ghost.pop_and_claim().await.expect("claim") {
        Some(Claim::Run(task)) => assert_eq!(task.task_id, "t-lost"),
        other => panic!("{other:?}"),
    }
    // The ghost "dies" (no more beats); its task is processing.
    let _: () = redis::cmd("SET")
        .arg(client::keys::stats("reapq"))
        .arg("not a hash")
        .query_async(&mut conn)
        .await
        .expect("set");
    // What a worker's beat with a reap does, by hand: it must not fail.
    let reaper = WorkerBroker::new(&url, "reapq", "reaper", &options).expect("broker");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reaped = reaper.beat(Duration::from_secs(5), true).await;
    assert!(reaped.is_ok(), "a beat with a reap: {reaped:?}");
    let worker = TestWorker::start(&url, "reapq");
    until_status(&conn, "t-lost", "error", WAIT).await;
    assert_eq!(
        hget(&mut conn, "t-lost", "errorKind").await.as_deref(),
        Some("worker_lost")
    );
    worker.stop().await;
}

/// A queue key of another type is one outage of its worker, "logged once
/// at warn when it starts and once at info when it ends"
/// (ARCHITECTURE.md, worker, Outages), not an error line at every retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_key_of_another_type_is_logged_once_not_at_every_retry() {
    capture_log();
    let redis = testkit::RedisServer::start();
    let mut conn = raw(&redis.url()).await;
    let _: () = redis::cmd("SET")
        .arg(client::keys::tasks("wrongtype_log"))
        .arg("x")
        .query_async(&mut conn)
        .await
        .expect("set");
    let worker = TestWorker::start(&redis.url(), "wrongtype_log");
    // fast_options: backoff up to 200 ms, so about 10 retries in 2 s.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let queue_lines = |level| lines(level, "worker for queue wrongtype_log");
    let errors = queue_lines(log::Level::Error);
    let warns = queue_lines(log::Level::Warn);
    assert_eq!(warns.len(), 1, "{warns:#?}");
    assert!(
        errors.len() <= 1,
        "{} error lines: {:#?}",
        errors.len(),
        &errors[..2.min(errors.len())]
    );
    worker.stop().await;
}

/// A task claimed in a batch behind a long one is `processing`, its script
/// not started, for that task's whole run (here 3 s), as README says ("The
/// Redis protocol, for other programs").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_claimed_behind_a_long_one_is_processing_unstarted_for_that_one_s_run() {
    let redis = testkit::RedisServer::start();
    let mut conn = raw(&redis.url()).await;
    push_task(&mut conn, "held", "t-long", &[], "loop { }").await;
    push_task(&mut conn, "held", "t-behind", &[], "40 + 2").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open_engine(dir.path(), timing_out_after(Duration::from_secs(3)));
    let worker = TestWorker::start_with(
        worker::WorkerConfig::new(&redis.url(), "held"),
        fast_options(),
        engine,
    );
    until_status(&conn, "t-behind", "processing", WAIT).await;
    let since = std::time::Instant::now();
    until_status(&conn, "t-behind", "completed", WAIT).await;
    let held = since.elapsed();
    assert!(
        held > Duration::from_secs(2),
        "t-behind was processing, its script not started, for {held:?}"
    );
    worker.stop().await;
}

/// A pub/sub connection to `redis`.
async fn pubsub(redis: &testkit::RedisServer) -> redis::aio::PubSub {
    redis::Client::open(redis.url())
        .expect("url")
        .get_async_pubsub()
        .await
        .expect("pubsub")
}

async fn redis_now(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query_async(conn).await.expect("time");
    s * 1000 + us / 1000
}

/// Cancel while queued (raw `HSET cancel`), with `replyTo` and
/// `deliveredTtl`: the notification is the fields written plus id and
/// updatedAt; the TTL is the result TTL (a cancelled task gets no delivered
/// TTL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_cancelled_queued_task_notifies_the_fields_written_and_keeps_the_result_ttl() {
    let redis = testkit::RedisServer::start();
    let mut conn = raw(&redis.url()).await;
    let mut pubsub = pubsub(&redis).await;
    pubsub.subscribe("ch").await.expect("subscribe");
    push_task(
        &mut conn,
        "cq",
        "t-c",
        &[
            ("replyTo", "ch"),
            ("deliveredTtl", "5000"),
            ("cancel", "gone away"),
        ],
        "40 + 2",
    )
    .await;
    let worker = TestWorker::start(&redis.url(), "cq");
    until_status(&conn, "t-c", "error", WAIT).await;
    let h = hgetall(&mut conn, "t-c").await;
    eprintln!("{h:?}");
    assert_eq!(h.get("errorKind").map(String::as_str), Some("cancelled"));
    assert_eq!(
        h.get("error").map(String::as_str),
        Some("cancelled before it ran: gone away")
    );
    let ttl = pttl(&mut conn, "t-c").await;
    assert!(ttl > 3_500_000, "ttl {ttl}");
    use futures_util::StreamExt as _;
    let mut messages = pubsub.on_message();
    let msg = tokio::time::timeout(WAIT, messages.next())
        .await
        .expect("note")
        .expect("open");
    let note = msg.get_payload::<String>().unwrap();
    assert!(note.contains("\"id\":\"t-c\""), "{note}");
    drop(messages);
    worker.stop().await;
}

/// A deadline ahead by Redis' clock bounds the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_ahead_by_redis_time_bounds_the_run() {
    let redis = testkit::RedisServer::start();
    let mut conn = raw(&redis.url()).await;
    let worker = TestWorker::start_fresh(
        worker::WorkerConfig::new(&redis.url(), "dl"),
        fast_options(),
        slow_limits(),
    );
    let deadline = (redis_now(&mut conn).await + 1500).to_string();
    let since = std::time::Instant::now();
    push_task(
        &mut conn,
        "dl",
        "t-d",
        &[("deadline", &deadline)],
        "loop { }",
    )
    .await;
    until_ended(&conn, "t-d", WAIT).await;
    let took = since.elapsed();
    let h = hgetall(&mut conn, "t-d").await;
    eprintln!("{took:?} {h:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    worker.stop().await;
}

/// A third-party ghost worker (raw commands, as the keys table describes a
/// worker) dies holding a `retry=1` task: the reaper puts it back as
/// `pending` with `lostAt`, without `workerId`/`startedAt`; it then runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_task_of_a_dead_hand_made_worker_runs_again_keeping_lost_at() {
    let redis = testkit::RedisServer::start();
    let mut conn = raw(&redis.url()).await;
    push_task(&mut conn, "rq", "t-r", &[("retry", "1")], "40 + 2").await;
    let now = redis_now(&mut conn).await.to_string();
    let _: () = redis::pipe()
        .atomic()
        .cmd("LMOVE")
        .arg("rhai_tasks:rq")
        .arg("rhai_processing:rq:ghost")
        .arg("RIGHT")
        .arg("LEFT")
        .ignore()
        .cmd("HSET")
        .arg("rhai_task_details:t-r")
        .arg("status")
        .arg("processing")
        .arg("workerId")
        .arg("ghost")
        .arg("startedAt")
        .arg(&now)
        .ignore()
        .cmd("SADD")
        .arg("rhai_workers:rq")
        .arg("ghost")
        .ignore()
        .cmd("SET")
        .arg("rhai_worker_heartbeat:rq:ghost")
        .arg(&now)
        .arg("PX")
        .arg(300)
        .ignore()
        .query_async(&mut conn)
        .await
        .expect("ghost");
    let worker = TestWorker::start(&redis.url(), "rq");
    until_status(&conn, "t-r", "completed", WAIT).await;
    let h = hgetall(&mut conn, "t-r").await;
    eprintln!("{h:?}");
    assert!(h.contains_key("lostAt"));
    assert_eq!(h.get("output").map(String::as_str), Some("42"));
    worker.stop().await;
}

/// DESIGN §3: "Every task that was pushed reaches `completed` or `error`;
/// none is silently dropped". A `status` of `processing` whose `workerId`
/// names a worker whose processing list does not hold it (none registered,
/// no heartbeat, no list) is as unclaimed as one without `workerId`: it
/// ends `invalid` too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processing_task_naming_a_worker_that_does_not_hold_it_ends_invalid() {
    let redis = testkit::RedisServer::start();
    let mut conn = raw(&redis.url()).await;
    push_task(
        &mut conn,
        "nobody",
        "t-n",
        &[("status", "processing"), ("workerId", "no-such-worker")],
        "40 + 2",
    )
    .await;
    let worker = TestWorker::start(&redis.url(), "nobody");
    let ended = until("the task to end", WAIT, || {
        let mut conn = conn.clone();
        async move {
            let h = hgetall(&mut conn, "t-n").await;
            (h.get("status").map(String::as_str) == Some("error")).then_some(h)
        }
    })
    .await;
    assert_eq!(
        ended.get("errorKind").map(String::as_str),
        Some("invalid"),
        "{ended:?}"
    );
    worker.stop().await;
}

/// A hash a third party wrote `processing` naming the very worker that
/// takes its id (which never claimed it: its processing list held no other
/// copy) is no second copy of a task in hand: it ends `invalid`, as one
/// naming another worker does, and the task behind it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processing_task_naming_the_worker_that_takes_it_ends_invalid() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let worker = slow_worker(&url, "self");
    let mut conn = raw(&url).await;
    push_task(&mut conn, "self", "t-busy", &[], &slow_script("ran")).await;
    until_status(&conn, "t-busy", "processing", WAIT).await;
    let me = hget(&mut conn, "t-busy", "workerId")
        .await
        .expect("its worker");
    push_task(
        &mut conn,
        "self",
        "t-forged",
        &[("status", "processing"), ("workerId", me.as_str())],
        "40 + 2",
    )
    .await;
    push_task(&mut conn, "self", "t-after", &[], "1 + 1").await;
    cancelled_by_its_holder(&url, &mut conn, "t-busy").await;
    until_ended(&conn, "t-forged", WAIT).await;
    let h = hgetall(&mut conn, "t-forged").await;
    assert_eq!(h.get("status").map(String::as_str), Some("error"), "{h:?}");
    assert_eq!(
        h.get("errorKind").map(String::as_str),
        Some("invalid"),
        "{h:?}"
    );
    assert!(
        h.get("error")
            .is_some_and(|e| e.contains("no worker holds it")),
        "{h:?}"
    );
    assert!(!h.contains_key("output"), "it did not run: {h:?}");
    until_status(&conn, "t-after", "completed", WAIT).await;
    let listed = processing_list(&mut conn, "self", &me).await;
    assert!(listed.is_empty(), "{listed:?}");
    worker.stop().await;
}

/// An id pushed onto a second circle's queue while the first circle's
/// worker runs it (by hand, or by a program that got the queue wrong) runs
/// once: the second circle's worker finds it held by a worker of another
/// queue and leaves it, neither ending it nor running it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_pushed_onto_another_queue_while_it_runs_is_left_to_its_worker() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let one = slow_worker(&url, "one");
    let two = slow_worker(&url, "two");
    let mut conn = raw(&url).await;
    push_task(&mut conn, "one", "t-both", &[], &slow_script("ran")).await;
    until_status(&conn, "t-both", "processing", WAIT).await;
    lpush_raw(&mut conn, &client::keys::tasks("two"), &[b"t-both"]).await;
    let holder = until_held_once(&conn, "t-both", &["one", "two"]).await;
    assert_eq!(holder, "one", "the worker that runs it holds it");
    cancelled_by_its_holder(&url, &mut conn, "t-both").await;
    one.stop().await;
    two.stop().await;
}

/// The same id pushed onto two circles' queues in one transaction, both
/// workers idle: both take it, one claims it and runs it, and the other
/// finds it held and leaves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_pushed_onto_two_queues_at_once_runs_on_one_worker_only() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let one = slow_worker(&url, "one");
    let two = slow_worker(&url, "two");
    let mut conn = raw(&url).await;
    let _: () = redis::pipe()
        .atomic()
        .cmd("HSET")
        .arg(client::keys::task_details("t-twice"))
        .arg("script")
        .arg(slow_script("ran"))
        .arg("status")
        .arg("pending")
        .ignore()
        .cmd("LPUSH")
        .arg(client::keys::tasks("one"))
        .arg("t-twice")
        .ignore()
        .cmd("LPUSH")
        .arg(client::keys::tasks("two"))
        .arg("t-twice")
        .ignore()
        .query_async(&mut conn)
        .await
        .expect("push onto both queues");
    until_held_once(&conn, "t-twice", &["one", "two"]).await;
    cancelled_by_its_holder(&url, &mut conn, "t-twice").await;
    one.stop().await;
    two.stop().await;
}

fn slow_worker(url: &str, queue: &str) -> TestWorker {
    TestWorker::start_fresh(
        worker::WorkerConfig::new(url, queue),
        fast_options(),
        slow_limits(),
    )
}

/// Waits until `id` is off every queue of `queues` and in exactly one of
/// their workers' processing lists, the one its hash names (`workerId`,
/// `workerQueue`), while it runs; returns that worker's queue. A worker
/// that took a copy of the id and ended the task instead fails the wait
/// (the task is then no longer `processing`).
async fn until_held_once(
    conn: &redis::aio::MultiplexedConnection,
    id: &str,
    queues: &[&str],
) -> String {
    until(&format!("task {id} held by one worker only"), WAIT, || {
        let mut conn = conn.clone();
        async move {
            let h = hgetall(&mut conn, id).await;
            let status = h.get("status").map(String::as_str);
            assert!(
                matches!(status, None | Some("pending" | "processing")),
                "a copy of the id ended the task that another worker runs: {h:?}"
            );
            let mut holders = Vec::new();
            for queue in queues {
                let queued: i64 = redis::cmd("LLEN")
                    .arg(client::keys::tasks(queue))
                    .query_async(&mut conn)
                    .await
                    .expect("llen");
                if queued > 0 {
                    return None;
                }
                for list in keys(&mut conn, &client::keys::processing(queue, "*")).await {
                    let ids: Vec<String> = redis::cmd("LRANGE")
                        .arg(&list)
                        .arg(0)
                        .arg(-1)
                        .query_async(&mut conn)
                        .await
                        .expect("lrange");
                    holders.extend(ids.iter().filter(|i| *i == id).map(|_| list.clone()));
                }
            }
            let (Some(worker), Some(queue)) = (h.get("workerId"), h.get("workerQueue")) else {
                return None;
            };
            let named = client::keys::processing(queue, worker);
            (status == Some("processing") && holders == [named]).then(|| queue.clone())
        }
    })
    .await
}

/// Cancels the running task `id` and checks that the worker that held it
/// ended it (kind `cancelled`, still naming that worker), not a worker that
/// found a copy of its id.
async fn cancelled_by_its_holder(
    url: &str,
    conn: &mut redis::aio::MultiplexedConnection,
    id: &str,
) {
    let holder = hget(conn, id, "workerId").await;
    let client = client::Client::connect(url).await.expect("connect");
    assert!(client.cancel(id, "test over").await.expect("cancel"));
    until_ended(conn, id, WAIT).await;
    let h = hgetall(conn, id).await;
    assert_eq!(
        h.get("errorKind").map(String::as_str),
        Some("cancelled"),
        "{h:?}"
    );
    assert!(
        h.get("error").is_some_and(|e| e.contains("while it ran")),
        "{h:?}"
    );
    assert_eq!(h.get("workerId"), holder.as_ref(), "{h:?}");
}
