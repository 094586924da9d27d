//! `Client::stats_many` reads the same counters for many queues at once as
//! for each queue alone.

use std::time::Duration;

use client::broker::{BrokerOptions, WorkerBroker};
use client::{Client, Outcome, SubmitOptions, TaskFailure, TaskOutput};

#[tokio::test]
async fn stats_of_many_queues_match_the_stats_of_each() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let client = Client::connect(&url).await.expect("connect");
    let opts = SubmitOptions::default();
    // "a": one completed, one failed, one running, two queued, a heartbeat.
    for script in ["ok", "bad", "running", "q1", "q2"] {
        client.submit("a", script, &opts).await.expect("submit");
    }
    let broker = WorkerBroker::new(
        &url,
        "a",
        "w1",
        &BrokerOptions::new(Duration::from_secs(60)),
    )
    .expect("broker");
    broker
        .beat(Duration::from_secs(60), false)
        .await
        .expect("beat");
    let done_then_failed: [fn(String) -> Outcome; 2] = [
        |task_id| {
            Outcome::Completed(TaskOutput {
                task_id,
                output: String::new(),
                printed: String::new(),
                run_time: Some(Duration::ZERO),
            })
        },
        |task_id| {
            Outcome::Failed(TaskFailure {
                task_id,
                kind: client::FailureKind::from_wire("runtime"),
                message: "no".into(),
                line: None,
                column: None,
            })
        },
    ];
    for ended in done_then_failed {
        let Some(client::broker::Claim::Run(task)) = broker.pop_and_claim().await.expect("take")
        else {
            panic!("a task to take")
        };
        assert!(broker.finish(&ended(task.task_id)).await.expect("finish"));
    }
    broker
        .pop_and_claim()
        .await
        .expect("take")
        .expect("a running task");
    // "b": one queued task, no worker; "c": never used.
    client.submit("b", "x", &opts).await.expect("submit");

    let many = client
        .stats_many(&["a", "b", "c"])
        .await
        .expect("stats_many");
    let each = [
        client.stats_many(&["a"]).await.expect("stats").remove(0),
        client.stats_many(&["b"]).await.expect("stats").remove(0),
        client.stats_many(&["c"]).await.expect("stats").remove(0),
    ];
    let counts = |s: &client::QueueStats| (s.queue_len, s.processed, s.failed, s.in_flight);
    assert_eq!(
        many.iter().map(counts).collect::<Vec<_>>(),
        vec![(2, 1, 1, 1), (1, 0, 0, 0), (0, 0, 0, 0)]
    );
    assert_eq!(
        many.iter().map(counts).collect::<Vec<_>>(),
        each.iter().map(counts).collect::<Vec<_>>()
    );
    assert!(many[0].heartbeat_age.is_some());
    assert_eq!((many[1].heartbeat_age, many[2].heartbeat_age), (None, None));
    assert!(client.stats_many(&[]).await.expect("no queues").is_empty());

    // More queues than one script call reads.
    let names: Vec<String> = (0..client::STATS_BATCH + 3)
        .map(|i| format!("q{i}"))
        .collect();
    client.submit("q1", "x", &opts).await.expect("submit");
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let all = client.stats_many(&refs).await.expect("stats_many");
    assert_eq!(all.len(), names.len());
    assert_eq!(
        all.iter().map(|s| s.queue_len).sum::<u64>(),
        1,
        "only q1 holds a task"
    );
    assert_eq!(all[1].queue_len, 1);
}

/// A counter an operator edited into something that is not a count (the
/// finish script leaves such a counter as it is and goes on) must not
/// make the counters of every queue read with it unreadable: the status
/// table and a reload's drain read them all in one call.
#[tokio::test]
async fn a_counter_that_is_no_count_does_not_hide_the_stats_of_the_other_queues() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let client = Client::connect(&url).await.expect("connect");
    let opts = SubmitOptions::default();
    client.submit("a", "x", &opts).await.expect("submit");
    client.submit("b", "y", &opts).await.expect("submit");
    let mut conn = redis::Client::open(url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    for (field, value) in [
        ("failed", "n/a"),
        ("processed", "-3"),
        ("lastHeartbeat", "soon"),
    ] {
        let _: () = redis::cmd("HSET")
            .arg(client::keys::stats("a"))
            .arg(field)
            .arg(value)
            .query_async(&mut conn)
            .await
            .expect("hset");
        let read = client.stats_many(&["a", "b"]).await;
        let lens = read
            .as_ref()
            .map(|all| all.iter().map(|s| s.queue_len).collect::<Vec<_>>());
        assert_eq!(
            lens.as_ref().ok(),
            Some(&vec![1, 1]),
            "{field} = {value:?}: {:?}",
            lens
        );
    }
}

/// An id that is not UTF-8 in a queue (a third party's push; the worker
/// ends such a task as `invalid`) must not make the queue unreadable: the
/// other ids are still listed (a reload's drain cancels what it lists),
/// and the error, if any, is not "redis unavailable".
#[tokio::test]
async fn a_queued_id_that_is_not_utf8_leaves_the_other_ids_listed() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let client = Client::connect(&url).await.expect("connect");
    let opts = SubmitOptions::default();
    let first = client.submit("a", "x", &opts).await.expect("submit");
    let mut conn = redis::Client::open(url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: () = redis::cmd("LPUSH")
        .arg(client::keys::tasks("a"))
        .arg(&b"t\xff"[..])
        .query_async(&mut conn)
        .await
        .expect("lpush");
    let last = client.submit("a", "y", &opts).await.expect("submit");
    let listed = client.queued("a", 10).await;
    assert_eq!(listed.as_ref().ok(), Some(&vec![first, last]), "{listed:?}");
}

/// A third party's key of another type than the protocol's (a queue key
/// written as a string, a stats key or a worker set that is not a hash or a
/// set) must not make the counters of every other queue read with it
/// unreadable, as a counter that is no count does not: the status table,
/// `/metrics` and a reload's drain read them all in one call.
#[tokio::test]
async fn a_key_of_another_type_does_not_hide_the_stats_of_the_other_queues() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let client = Client::connect(&url).await.expect("connect");
    let opts = SubmitOptions::default();
    client.submit("b", "y", &opts).await.expect("submit");
    let mut conn = redis::Client::open(url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    for key in [
        client::keys::tasks("a"),
        client::keys::stats("a"),
        client::keys::workers("a"),
    ] {
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg("not the type the protocol asks for")
            .query_async(&mut conn)
            .await
            .expect("set");
        let read = client.stats_many(&["a", "b"]).await;
        let lens = read
            .as_ref()
            .map(|all| all.iter().map(|s| s.queue_len).collect::<Vec<_>>());
        assert_eq!(lens.as_ref().ok(), Some(&vec![0, 1]), "{key}: {lens:?}");
        let _: () = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("del");
    }
}
