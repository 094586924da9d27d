//! The client against a real Redis, with a stand-in worker built on the
//! broker operations (it "runs" a script by echoing it), so the protocol is
//! tested without the engine.

mod common;

use std::time::Duration;

use client::broker::{BlockingPopper, BrokerOptions, Claim, WorkerBroker};
use client::{Client, OnDrop, Outcome, SubmitOptions, TaskFailure, TaskOutput};
use tokio::task::JoinHandle;

/// A stand-in worker: completes every task with its script as output, or
/// fails it when the script starts with "fail".
fn echo_worker(url: &str, queue: &str) -> JoinHandle<()> {
    let options = BrokerOptions::new(Duration::from_secs(60));
    let id = format!("echo-{}", uuid::Uuid::new_v4().simple());
    let broker = WorkerBroker::new(url, queue, &id, &options).expect("broker");
    let popper =
        BlockingPopper::new(url, queue, &id, Duration::from_millis(200), &options).expect("popper");
    tokio::spawn(async move {
        loop {
            let claim = match broker.pop_and_claim().await {
                Ok(Some(claim)) => claim,
                Ok(None) => match popper.pop_and_claim(Duration::from_millis(200)).await {
                    Ok(Some(claim)) => claim,
                    _ => continue,
                },
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            if let Claim::Run(task) = claim {
                let outcome = if task.script.starts_with("fail") {
                    Outcome::Failed(TaskFailure {
                        kind: client::FailureKind::from_wire("runtime"),
                        message: format!("asked to fail: {}", task.script),
                        line: Some(1),
                        column: Some(5),
                        task_id: task.task_id,
                    })
                } else {
                    Outcome::Completed(TaskOutput {
                        output: task.script,
                        printed: String::new(),
                        run_time: Some(Duration::from_micros(7)),
                        task_id: task.task_id,
                    })
                };
                let _ = broker.finish(&outcome).await;
            }
        }
    })
}

#[tokio::test]
async fn a_submitted_script_comes_back_completed_with_its_output() {
    let redis = testkit::RedisServer::start();
    let worker = echo_worker(&redis.url(), "alpha");
    let client = Client::connect(&redis.url()).await.expect("connect");
    let outcome = client
        .run_with("alpha", "40 + 2", &SubmitOptions::default(), OnDrop::Cancel)
        .await
        .expect("run");
    match outcome {
        Outcome::Completed(out) => {
            assert_eq!(out.output, "40 + 2");
            assert_eq!(out.run_time, Some(Duration::from_micros(7)));
        }
        other => panic!("expected completed, got {other:?}"),
    }
    assert_eq!(client.waiting(), 0, "the waiter is unregistered afterwards");
    worker.abort();
}

#[tokio::test]
async fn a_failed_script_is_an_outcome_with_kind_line_and_column() {
    let redis = testkit::RedisServer::start();
    let worker = echo_worker(&redis.url(), "alpha");
    let client = Client::connect(&redis.url()).await.expect("connect");
    let outcome = client
        .run_with(
            "alpha",
            "fail here",
            &SubmitOptions::default(),
            OnDrop::Cancel,
        )
        .await
        .expect("run");
    let Outcome::Failed(failure) = outcome else {
        panic!("expected a failure, got {outcome:?}");
    };
    assert_eq!(failure.kind.as_str(), "runtime");
    assert_eq!(failure.message, "asked to fail: fail here");
    assert_eq!((failure.line, failure.column), (Some(1), Some(5)));
    worker.abort();
}

#[tokio::test]
async fn submit_then_wait_by_id_works_even_after_the_task_finished() {
    let redis = testkit::RedisServer::start();
    let worker = echo_worker(&redis.url(), "q");
    let client = Client::connect(&redis.url()).await.expect("connect");
    let id = client
        .submit("q", "hello", &SubmitOptions::default())
        .await
        .expect("submit");
    let other = Client::connect(&redis.url()).await.expect("connect");
    // Wait until the hash says completed, then wait from a client that never
    // got the notification: the hash is the source of truth.
    let probe = client.clone();
    let pid = id.clone();
    tokio::time::timeout(Duration::from_secs(10), async move {
        while probe.check(&pid).await.expect("check").is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("task finished");
    let outcome = other.wait(&id, Duration::from_secs(5)).await.expect("wait");
    assert!(
        matches!(outcome, Outcome::Completed(ref o) if o.output == "hello"),
        "{outcome:?}"
    );
    worker.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_serves_a_thousand_concurrent_waiters() {
    let redis = testkit::RedisServer::start();
    let client = Client::connect(&redis.url()).await.expect("connect");
    let mut handles = Vec::new();
    for i in 0..1000 {
        let client = client.clone();
        handles.push(tokio::spawn(async move {
            let script = format!("task {i}");
            let outcome = client
                .run_with(
                    "many",
                    &script,
                    &SubmitOptions::with_timeout(Duration::from_secs(60)),
                    OnDrop::Cancel,
                )
                .await
                .expect("run");
            (script, outcome)
        }));
    }
    // All 1,000 are submitted and waiting before any worker exists.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while client.waiting() < 1000 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} waiters registered",
            client.waiting()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let workers: Vec<_> = (0..4).map(|_| echo_worker(&redis.url(), "many")).collect();
    for handle in handles {
        let (script, outcome) = handle.await.expect("join");
        match outcome {
            Outcome::Completed(out) => assert_eq!(out.output, script),
            other => panic!("{script}: {other:?}"),
        }
    }
    assert_eq!(client.waiting(), 0);
    let stats = client.stats_many(&["many"]).await.expect("stats").remove(0);
    assert_eq!(stats.processed, 1000);
    assert_eq!(stats.queue_len, 0);
    for w in workers {
        w.abort();
    }
}

#[tokio::test]
async fn waiting_past_the_timeout_is_a_timeout_error() {
    let redis = testkit::RedisServer::start();
    let client = Client::connect(&redis.url()).await.expect("connect");
    let err = client
        .run_with(
            "nobody_listens",
            "1",
            &SubmitOptions::with_timeout(Duration::from_millis(200)),
            OnDrop::Cancel,
        )
        .await
        .expect_err("no worker, so it must time out");
    assert!(matches!(err, client::Error::Timeout { .. }), "{err:?}");
    assert_eq!(client.waiting(), 0);
}

#[tokio::test]
async fn a_third_party_result_written_by_hand_is_read_back() {
    let redis = testkit::RedisServer::start();
    let client = Client::connect(&redis.url()).await.expect("connect");
    let raw = redis::Client::open(redis.url()).expect("url");
    let mut conn = raw
        .get_multiplexed_async_connection()
        .await
        .expect("raw conn");
    let _: () = redis::cmd("HSET")
        .arg(client::keys::task_details("by-hand"))
        .arg(&[("status", "error"), ("error", "boom")])
        .query_async(&mut conn)
        .await
        .expect("hset");
    let outcome = client
        .wait("by-hand", Duration::from_secs(1))
        .await
        .expect("wait");
    let Outcome::Failed(f) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!((f.kind.as_str(), f.message.as_str()), ("unknown", "boom"));
    let missing = client.wait("never-submitted", Duration::from_secs(1)).await;
    assert!(
        matches!(missing, Err(client::Error::Lost { .. })),
        "{missing:?}"
    );
}

#[tokio::test]
async fn connecting_to_a_dead_redis_fails_fast_as_unavailable() {
    let port = testkit::free_port();
    let err = Client::connect(&format!("redis://127.0.0.1:{port}/"))
        .await
        .expect_err("nothing listens there");
    assert!(matches!(err, client::Error::Unavailable { .. }), "{err:?}");
}

/// Waits until `client` has a waiter and `queue` holds a task: queued, so
/// what happens to Redis from now on happens after the push.
async fn until_queued(client: &Client, queue: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while client.waiting() == 0 || client.queued(queue, 1).await.expect("LRANGE").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the task was never queued"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A client of `url` that retries a lost Redis every 100 ms at most.
async fn quick_client(url: &str) -> Client {
    let mut options = client::ClientOptions::default();
    options.max_backoff = Duration::from_millis(100);
    Client::connect_with(url, options).await.expect("connect")
}

/// `run_with` of `script` on `queue` in a task of its own, with how long
/// it took; once it returns, `until_queued` can tell its task is queued.
fn spawn_run(
    client: &Client,
    queue: &'static str,
    script: &'static str,
    timeout: Duration,
) -> JoinHandle<(client::Result<Outcome>, Duration)> {
    let client = client.clone();
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        let ended = client
            .run_with(
                queue,
                script,
                &SubmitOptions::with_timeout(timeout),
                OnDrop::Cancel,
            )
            .await;
        (ended, started.elapsed())
    })
}

/// Redis dies while a task waits in its queue and comes back with its data
/// before the task's deadline: the waiter waits through the outage and
/// gets the task's outcome, not an error that leaves its fate open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_gets_the_outcome_of_its_task_when_redis_comes_back_before_the_deadline() {
    let mut redis = testkit::RedisServer::start_persistent();
    let client = quick_client(&redis.url()).await;
    let waiter = spawn_run(
        &client,
        "later",
        "through the outage",
        Duration::from_secs(60),
    );
    until_queued(&client, "later").await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiter.is_finished(),
        "the waiter gave up during the outage"
    );
    redis.restart();
    let worker = echo_worker(&redis.url(), "later");
    let (outcome, _) = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("the waiter ends once the task ran")
        .expect("join");
    match outcome {
        Ok(Outcome::Completed(out)) => assert_eq!(out.output, "through the outage"),
        other => panic!("{other:?}"),
    }
    worker.abort();
}

/// A Redis that stops answering (a partition, not a closed socket) holds
/// no read past the task's deadline: the waiter is told at its deadline,
/// give or take the last read's second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_behind_a_redis_that_stops_answering_is_told_at_its_deadline() {
    let redis = testkit::RedisServer::start();
    let proxy = testkit::Proxy::start(redis.port());
    let client = Client::connect(&proxy.redis_url()).await.expect("connect");
    let timeout = Duration::from_secs(3);
    let waiter = spawn_run(&client, "frozen", "1", timeout);
    until_queued(&client, "frozen").await;
    proxy.freeze();
    let (ended, took) = waiter.await.expect("join");
    let err = ended.expect_err("no outcome: nobody runs the task");
    assert!(matches!(err, client::Error::Interrupted { .. }), "{err:?}");
    // The deadline, the last read's second, and room for a slow machine;
    // a read held for the connection's response timeout (5 s) or a
    // reconnect after it would pass this.
    assert!(took < timeout + Duration::from_millis(2500), "{took:?}");
    proxy.thaw();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_is_told_its_queued_task_may_have_run_when_redis_stays_away_past_its_deadline() {
    let mut redis = testkit::RedisServer::start();
    let client = quick_client(&redis.url()).await;
    // No worker: the wait ends at the task's deadline.
    let waiter = spawn_run(&client, "nobody", "1", Duration::from_secs(2));
    // Registered and queued: Redis dies while the task waits, not while
    // it is pushed (a push that fails is unavailable, nothing queued).
    until_queued(&client, "nobody").await;
    redis.kill();
    let err = waiter.await.expect("join").0.expect_err("redis died");
    // Queued before Redis died: it may have run, and the error says so.
    assert!(matches!(err, client::Error::Interrupted { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("it may have run, but it cannot start any more"),
        "{err}"
    );
    let submit = client.submit("q", "1", &SubmitOptions::default()).await;
    assert!(
        matches!(submit, Err(client::Error::Unavailable { .. })),
        "{submit:?}"
    );

    redis.restart();
    let worker = echo_worker(&redis.url(), "q");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match client
            .run_with(
                "q",
                "back",
                &SubmitOptions::with_timeout(Duration::from_secs(5)),
                OnDrop::Cancel,
            )
            .await
        {
            Ok(Outcome::Completed(out)) => {
                assert_eq!(out.output, "back");
                break;
            }
            other => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "never recovered: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    worker.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_serves_callers_on_other_runtimes() {
    // As actix does: every server thread runs its own current-thread runtime.
    let redis = testkit::RedisServer::start();
    let worker = echo_worker(&redis.url(), "rt");
    let client = Client::connect(&redis.url()).await.expect("connect");
    let threads: Vec<_> = (0..3)
        .map(|i| {
            let client = client.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    client
                        .run_with(
                            "rt",
                            &format!("from thread {i}"),
                            &SubmitOptions::default(),
                            OnDrop::Cancel,
                        )
                        .await
                })
            })
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let outcome = tokio::task::spawn_blocking(move || t.join().expect("thread"))
            .await
            .expect("join")
            .expect("run");
        assert!(
            matches!(outcome, Outcome::Completed(ref o) if o.output == format!("from thread {i}")),
            "{outcome:?}"
        );
    }
    worker.abort();
}

/// Neither the submit timeout nor the fallback poll can deliver a result
/// within this; only the notification can.
const NOTIFIED_WITHIN: Duration = Duration::from_secs(20);

#[tokio::test]
async fn results_arrive_by_notification_with_the_fallback_poll_an_hour_away() {
    let redis = testkit::RedisServer::start();
    let worker = echo_worker(&redis.url(), "alpha");
    let mut options = client::ClientOptions::default();
    options.fallback_poll = Duration::from_secs(3600);
    let client = Client::connect_with(&redis.url(), options)
        .await
        .expect("connect");
    let submit = SubmitOptions::with_timeout(Duration::from_secs(3600));
    for i in 0..5 {
        let script = format!("task {i}");
        let outcome = tokio::time::timeout(
            NOTIFIED_WITHIN,
            client.run_with("alpha", &script, &submit, OnDrop::Cancel),
        )
        .await
        .expect("no result without the notification: the push path is broken")
        .expect("run");
        match outcome {
            Outcome::Completed(out) => assert_eq!(out.output, script),
            other => panic!("expected completed, got {other:?}"),
        }
    }
    worker.abort();
}

#[tokio::test]
async fn a_lost_notification_is_covered_by_the_fallback_poll() {
    let redis = testkit::RedisServer::start();
    let mut options = client::ClientOptions::default();
    options.fallback_poll = Duration::from_millis(200);
    let client = Client::connect_with(&redis.url(), options)
        .await
        .expect("connect");
    // A worker that writes the result into the hash and never publishes
    // (a third-party worker, or a notification lost on the way).
    let url = redis.url();
    let silent = tokio::spawn(async move {
        let mut conn = redis::Client::open(url)
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        loop {
            let id: Option<String> = redis::cmd("RPOP")
                .arg(client::keys::tasks("alpha"))
                .query_async(&mut conn)
                .await
                .expect("rpop");
            let Some(id) = id else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let _: () = redis::cmd("HSET")
                .arg(client::keys::task_details(&id))
                .arg(&[("status", "completed"), ("output", "quietly done")])
                .query_async(&mut conn)
                .await
                .expect("hset");
        }
    });
    let submit = SubmitOptions::with_timeout(Duration::from_secs(3600));
    let outcome = tokio::time::timeout(
        NOTIFIED_WITHIN,
        client.run_with("alpha", "x", &submit, OnDrop::Cancel),
    )
    .await
    .expect("the fallback poll never read the finished hash")
    .expect("run");
    match outcome {
        Outcome::Completed(out) => assert_eq!(out.output, "quietly done"),
        other => panic!("expected completed, got {other:?}"),
    }
    silent.abort();
}

/// Redis restarted while the client had nothing to send: its connection is
/// dead and the first request on it fails. The submit tries again on a
/// fresh connection, writing only when its first try did not land, so the
/// caller sees no error and the task is queued once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_submit_after_redis_restarted_under_an_idle_client_is_queued_once() {
    let mut redis = testkit::RedisServer::start();
    let client = Client::connect(&redis.url()).await.expect("connect");
    let before = client
        .submit("q", "1", &SubmitOptions::default())
        .await
        .expect("submit");
    assert_eq!(client.queued("q", 10).await.expect("queued"), [before]);
    redis.kill();
    redis.restart();
    let id = client
        .submit("q", "2", &SubmitOptions::default())
        .await
        .expect("the first submit after the restart");
    assert_eq!(
        client.queued("q", 10).await.expect("queued"),
        std::slice::from_ref(&id)
    );
    assert_eq!(client.check(&id).await.expect("its hash exists"), None);
}

/// Redis took a submit, then died before its reply (a Sentinel primary
/// killed after its replica had the task) and no Redis answers the submit
/// sent again: the caller is told that the task, named, may have been
/// queued, not that nothing was; and it is cancelled once Redis answers,
/// also after the task's timeout and by a caller that keeps the tasks it
/// stops waiting for (a server shutting down), so a worker that comes
/// later ends it without running it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_cut_off_after_redis_took_it_is_maybe_queued_and_cancelled_once_redis_answers() {
    use redis::AsyncCommands;
    let redis = testkit::RedisServer::start();
    let proxy = testkit::Proxy::start(redis.port());
    let client = quick_client(&proxy.redis_url()).await;
    let mut direct = common::raw(&redis.url()).await;
    proxy.freeze_replies();
    let timeout = Duration::from_secs(2);
    let waiter = {
        let client = client.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let keep = || true;
            let ended = client
                .run_with(
                    "cut",
                    "ran",
                    &SubmitOptions::with_timeout(timeout),
                    OnDrop::CancelUnless(&keep),
                )
                .await;
            (ended, started.elapsed())
        })
    };
    let queued = one_queued(&mut direct, "cut").await;
    proxy.cut_and_refuse();
    let (ended, took) = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("the caller is answered while no redis answers")
        .expect("join");
    match &ended {
        Err(err @ client::Error::MaybeQueued { task_id, .. }) => {
            assert_eq!(task_id, &queued);
            assert!(err.to_string().contains("it may have been queued"), "{err}");
        }
        other => panic!("{other:?}"),
    }
    // Away past the task's timeout: the cancel is still sent once it is back.
    tokio::time::sleep((timeout + Duration::from_secs(1)).saturating_sub(took)).await;
    proxy.thaw();
    let cancel_of = format!("rhai_task_details:{queued}");
    testkit::until(
        "the task cancelled once redis answered",
        Duration::from_secs(30),
        || {
            let (mut direct, cancel_of) = (direct.clone(), cancel_of.clone());
            async move {
                let cancel: Option<String> = direct.hget(cancel_of, "cancel").await.expect("HGET");
                cancel.map(|_| ())
            }
        },
    )
    .await;
    let worker = echo_worker(&redis.url(), "cut");
    let outcome = client
        .wait(&queued, Duration::from_secs(30))
        .await
        .expect("the task ends");
    match outcome {
        Outcome::Failed(f) => assert!(["cancelled", "expired"].contains(&f.kind.as_str()), "{f:?}"),
        other => panic!("a task maybe queued and cancelled ran: {other:?}"),
    }
    worker.abort();
}

/// Redis died while the client idled: its listener notices at once, and
/// the client's next submit connects afresh instead of going out on the
/// dead connection, so the caller is told plainly that nothing was queued
/// (try again), not that the task may have been.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_submit_after_redis_died_under_an_idle_client_queued_nothing() {
    let mut redis = testkit::RedisServer::start();
    let client = quick_client(&redis.url()).await;
    client
        .submit("q", "1", &SubmitOptions::default())
        .await
        .expect("submit while redis is up");
    redis.kill();
    until_not_listening(&client).await;
    let err = client
        .run_with(
            "q",
            "2",
            &SubmitOptions::with_timeout(Duration::from_secs(5)),
            OnDrop::Cancel,
        )
        .await
        .expect_err("redis is down");
    assert!(matches!(err, client::Error::Unavailable { .. }), "{err:?}");
}

/// Only the listener's connection is cut, and Redis takes no new one (at
/// `maxclients`): the command connection, checked once, is alive and kept,
/// so submits go on rather than being refused for want of a connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_listener_connection_leaves_a_live_command_connection_in_use() {
    let redis = testkit::RedisServer::start();
    let client = quick_client(&redis.url()).await;
    client
        .submit("q", "1", &SubmitOptions::default())
        .await
        .expect("submit");
    let mut direct = common::raw(&redis.url()).await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxclients")
        .arg(1)
        .query_async(&mut direct)
        .await
        .expect("CONFIG SET maxclients");
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut direct)
        .await
        .expect("CLIENT KILL");
    until_not_listening(&client).await;
    let id = client
        .submit("q", "2", &SubmitOptions::default())
        .await
        .expect("a submit on the command connection still alive");
    assert_eq!(client.queued("q", 10).await.expect("queued").len(), 2);
    assert!(client.check(&id).await.expect("read").is_none());
}

/// Waits until `client`'s listener has noticed that its connection ended.
async fn until_not_listening(client: &Client) {
    testkit::until(
        "the listener to notice",
        Duration::from_secs(10),
        || async { (!client.listening()).then_some(()) },
    )
    .await;
}

/// The id of the one task in `queue`, read on Redis itself, once there.
async fn one_queued(direct: &mut redis::aio::MultiplexedConnection, queue: &str) -> String {
    use redis::AsyncCommands;
    testkit::until("redis to take the submit", Duration::from_secs(10), || {
        let mut direct = direct.clone();
        async move {
            let ids: Vec<String> = direct
                .lrange(format!("rhai_tasks:{queue}"), 0, -1)
                .await
                .expect("LRANGE");
            match ids.as_slice() {
                [id] => Some(id.clone()),
                _ => None,
            }
        }
    })
    .await
}

/// The submit sent again after its first try's connection broke gets no
/// reply in time (Redis, its writes paused, takes it later): it may still
/// land, so the task counts as queued and its waiter gets its outcome,
/// rather than a cancel racing the resend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_sent_again_whose_reply_is_lost_is_waited_for_as_queued() {
    let redis = testkit::RedisServer::start();
    let proxy = testkit::Proxy::start(redis.port());
    let mut options = client::ClientOptions::default();
    options.max_backoff = Duration::from_millis(100);
    options.response_timeout = Duration::from_secs(1);
    let client = Client::connect_with(&proxy.redis_url(), options)
        .await
        .expect("connect");
    let mut direct = common::raw(&redis.url()).await;
    proxy.freeze_replies();
    let waiter = spawn_run(&client, "lost", "ran", Duration::from_secs(30));
    let queued = one_queued(&mut direct, "lost").await;
    // Writes (the resend's script among them) wait 3 s; a new connection's
    // first requests and reads go through.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(3000)
        .arg("WRITE")
        .query_async(&mut direct)
        .await
        .expect("CLIENT PAUSE");
    // The first try's connection breaks with its reply; the resend goes out
    // on a new one, and its reply does not come within the 1 s timeout.
    proxy.cut();
    proxy.thaw();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(!waiter.is_finished(), "{:?}", waiter.await);
    let worker = echo_worker(&redis.url(), "lost");
    let (ended, _) = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("the waiter gets the outcome")
        .expect("join");
    match ended {
        Ok(Outcome::Completed(out)) => {
            assert_eq!(out.output, "ran");
            assert_eq!(out.task_id, queued);
        }
        other => panic!("{other:?}"),
    }
    worker.abort();
}

/// The first try of a submit is refused (Redis out of memory), its reply
/// lost with its connection; the submit sent again is refused as well:
/// the task is not there, so the caller gets the refusal naming why, not
/// "it may have been queued".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_sent_again_that_redis_refuses_names_why_and_nothing_is_queued() {
    use redis::AsyncCommands;
    let redis = testkit::RedisServer::start();
    let proxy = testkit::Proxy::start(redis.port());
    let client = quick_client(&proxy.redis_url()).await;
    let mut direct = common::raw(&redis.url()).await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("noeviction")
        .query_async(&mut direct)
        .await
        .expect("CONFIG SET");
    let refused = || async {
        let info: String = redis::cmd("INFO")
            .arg("errorstats")
            .query_async(&mut common::raw(&redis.url()).await)
            .await
            .expect("INFO");
        info.contains("errorstat_OOM") || info.contains("errorstat_EXECABORT")
    };
    assert!(!refused().await);
    proxy.freeze_replies();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(1)
        .query_async(&mut direct)
        .await
        .expect("CONFIG SET maxmemory");
    let waiter = spawn_run(&client, "full", "ran", Duration::from_secs(30));
    testkit::until(
        "redis to refuse the submit",
        Duration::from_secs(10),
        || async { refused().await.then_some(()) },
    )
    .await;
    proxy.cut();
    proxy.thaw();
    let (ended, _) = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("the caller is answered")
        .expect("join");
    let err = ended.expect_err("out of memory");
    assert!(matches!(err, client::Error::Unavailable { .. }), "{err:?}");
    assert!(err.refusal().is_some(), "{err:?}");
    let queued: Vec<String> = direct
        .lrange("rhai_tasks:full", 0, -1)
        .await
        .expect("LRANGE");
    assert!(queued.is_empty(), "{queued:?}");
}

/// A Redis that refuses writes for a state its operator must fix (out of
/// memory under `noeviction`) is unavailable, naming that state; once fixed,
/// the same client submits again.
#[tokio::test]
async fn a_redis_out_of_memory_is_unavailable_naming_why_and_served_again_once_fixed() {
    let redis = testkit::RedisServer::start();
    let worker = echo_worker(&redis.url(), "oom");
    let client = Client::connect(&redis.url()).await.expect("connect");
    let set = |value: &str| testkit::command(redis.port(), &["CONFIG", "SET", "maxmemory", value]);
    set("1").expect("maxmemory 1 byte");
    testkit::command(
        redis.port(),
        &["CONFIG", "SET", "maxmemory-policy", "noeviction"],
    )
    .expect("noeviction");
    let err = client
        .run_with(
            "oom",
            "1",
            &SubmitOptions::with_timeout(Duration::from_secs(5)),
            OnDrop::Cancel,
        )
        .await
        .expect_err("redis is out of memory");
    assert!(matches!(err, client::Error::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("OOM"), "{err}");
    set("0").expect("no limit");
    let outcome = client
        .run_with(
            "oom",
            "2",
            &SubmitOptions::with_timeout(Duration::from_secs(10)),
            OnDrop::Cancel,
        )
        .await
        .expect("served again");
    assert!(
        matches!(outcome, Outcome::Completed(ref o) if o.output == "2"),
        "{outcome:?}"
    );
    worker.abort();
}

/// A user whose ACL refuses MULTI would have a submit's HSET and LPUSH run
/// one by one outside the transaction (Redis runs the commands after a
/// refused MULTI on their own), so a submit told "unavailable" would still
/// be queued and run, and run twice if sent again. Such a connection is
/// refused as it is made, naming the ACL, and nothing is queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_the_acl_refuses_multi_submits_nothing_and_is_told_why() {
    let redis = testkit::RedisServer::start();
    let port = redis.port();
    testkit::command(
        port,
        &[
            "ACL", "SETUSER", "s", "on", ">pw", "~*", "&*", "+@all", "-multi",
        ],
    )
    .expect("acl user without multi");
    let restricted = format!("redis://s:pw@127.0.0.1:{port}/");
    let opts = SubmitOptions::with_timeout(Duration::from_secs(5));
    let err = match Client::connect(&restricted).await {
        Err(err) => err,
        Ok(client) => client
            .run_with("acl", "40 + 2", &opts, OnDrop::Cancel)
            .await
            .expect_err("a submit without MULTI"),
    };
    assert_eq!(err.refusal(), Some(client::Refusal::Permission), "{err:?}");
    assert!(err.to_string().contains("MULTI"), "{err}");
    let queued = testkit::command(port, &["LLEN", "rhai_tasks:acl"]).expect("llen");
    assert_eq!(queued, testkit::Reply::Int(0), "nothing is queued");
    let keys = testkit::command(port, &["KEYS", "rhai_task_details:*"]).expect("keys");
    assert!(keys.items().is_empty(), "no task hash is left: {keys:?}");
}

/// At `maxclients` Redis writes "max number of clients reached" to a new
/// connection and closes it; a connection that already sent its handshake
/// usually sees only the reset. The error names the limit all the same, and
/// a connection is made once there is room again.
#[tokio::test]
async fn a_redis_at_maxclients_is_unavailable_naming_the_limit() {
    let redis = testkit::RedisServer::start();
    common::at_maxclients_each_connect_names_the_limit(&redis, &redis.url()).await;
}
