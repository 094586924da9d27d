//! Bounded Redis memory: a task whose outcome the server got for its
//! WebSocket client keeps its hash only for the delivered TTL; every other
//! finished task (pushed by another program, cancelled because its client
//! went away, ended after its waiter gave up, or whose notification reached
//! nobody) keeps the worker's result TTL, so whoever polls the hash finds it.

mod common;

use std::time::Duration;

use common::{
    Fixture, PROMPTLY, QUEUE, call, code, play, redis_conn, start_worker, start_worker_with,
};
use server_ws::{ServerTiming, codes};

/// The delivered TTL of these tests: short enough to watch a hash expire.
const DELIVERED: Duration = Duration::from_millis(1500);

/// The worker's result TTL (the default, an hour), in ms.
const RESULT_TTL_MS: i64 = worker::DEFAULT_RESULT_TTL.as_millis() as i64;

/// The remaining TTL of task `id`'s hash in ms (-2: no hash, -1: no TTL).
async fn pttl(conn: &mut redis::aio::MultiplexedConnection, id: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(client::keys::task_details(id))
        .query_async(conn)
        .await
        .expect("pttl")
}

/// The fields of task `id` once it has ended (or as they are after a while).
async fn until_ended(
    conn: &mut redis::aio::MultiplexedConnection,
    id: &str,
) -> std::collections::HashMap<String, String> {
    let give_up = tokio::time::Instant::now() + PROMPTLY;
    loop {
        let fields: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(client::keys::task_details(id))
            .query_async(conn)
            .await
            .expect("hgetall");
        let ended = matches!(
            fields.get("status").map(String::as_str),
            Some("completed" | "error")
        );
        if ended || tokio::time::Instant::now() > give_up {
            return fields;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts that the hash of `id` keeps (close to) the full result TTL.
async fn assert_result_ttl(conn: &mut redis::aio::MultiplexedConnection, id: &str, what: &str) {
    let left = pttl(conn, id).await;
    assert!(
        left > RESULT_TTL_MS - 60_000 && left <= RESULT_TTL_MS,
        "{what}: the hash keeps the result TTL, but its PTTL is {left} ms"
    );
}

/// Pushes a task as another program would: the hash, then the id.
async fn push_raw(conn: &mut redis::aio::MultiplexedConnection, id: &str, fields: &[(&str, &str)]) {
    let _: () = redis::pipe()
        .atomic()
        .cmd("HSET")
        .arg(client::keys::task_details(id))
        .arg(fields)
        .ignore()
        .cmd("LPUSH")
        .arg(client::keys::tasks(QUEUE))
        .arg(id)
        .ignore()
        .query_async(conn)
        .await
        .expect("push a raw task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_delivered_over_websocket_leaves_redis_after_the_delivered_ttl() {
    let fx = Fixture::start_with(
        |c| c.delivered_ttl = Some(DELIVERED),
        ServerTiming::default(),
        false,
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker(&fx, dir.path());
    let mut conn = redis_conn(&fx).await;
    let mut ws = fx.connect().await;

    let reply = call(&mut ws, &play(1, "40 + 2")).await;
    assert_eq!(reply["result"]["output"], "42", "{reply}");
    let completed = reply["result"]["task_id"]
        .as_str()
        .expect("task id")
        .to_owned();
    let reply = call(&mut ws, &play(2, "let x = ;")).await;
    assert_eq!(code(&reply), codes::SCRIPT_FAILED, "{reply}");
    let failed = reply["error"]["data"]["task_id"]
        .as_str()
        .expect("task id")
        .to_owned();

    for id in [&completed, &failed] {
        let left = pttl(&mut conn, id).await;
        assert!(
            left > 0 && left <= DELIVERED.as_millis() as i64,
            "task {id}: PTTL {left} ms, not within the delivered TTL"
        );
    }
    // And the hashes are gone soon after, not in an hour.
    let give_up = tokio::time::Instant::now() + DELIVERED + PROMPTLY;
    for id in [&completed, &failed] {
        while pttl(&mut conn, id).await != -2 {
            assert!(
                tokio::time::Instant::now() < give_up,
                "task {id} outlived its delivered TTL"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    worker.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_pushed_straight_into_redis_keeps_the_result_ttl() {
    let fx = Fixture::start_with(
        |c| c.delivered_ttl = Some(DELIVERED),
        ServerTiming::default(),
        false,
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker(&fx, dir.path());
    let mut conn = redis_conn(&fx).await;
    // The server delivers results meanwhile: its tasks do not shorten others'.
    let mut ws = fx.connect().await;
    let reply = call(&mut ws, &play(1, "1")).await;
    assert_eq!(reply["result"]["output"], "1", "{reply}");

    push_raw(
        &mut conn,
        "third-party",
        &[("script", "6 * 7"), ("status", "pending")],
    )
    .await;
    let fields = until_ended(&mut conn, "third-party").await;
    assert_eq!(fields["output"], "42", "{fields:?}");
    assert_result_ttl(&mut conn, "third-party", "a third party's task").await;
    worker.cancel();
}

/// The field's contract as another program may use it: the shorter TTL
/// applies only when the notification reached a subscriber of `replyTo`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivered_ttl_applies_only_when_the_notification_reached_a_subscriber() {
    let fx = Fixture::start_with(|_| {}, ServerTiming::default(), false).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker(&fx, dir.path());
    let mut conn = redis_conn(&fx).await;
    let asked = DELIVERED.as_millis().to_string();

    push_raw(
        &mut conn,
        "nobody-listens",
        &[
            ("script", "1"),
            ("status", "pending"),
            ("replyTo", "replies-nobody-reads"),
            (client::fields::DELIVERED_TTL, &asked),
        ],
    )
    .await;
    let fields = until_ended(&mut conn, "nobody-listens").await;
    assert_eq!(fields["status"], "completed", "{fields:?}");
    assert_result_ttl(&mut conn, "nobody-listens", "a notification nobody got").await;

    let mut pubsub = redis::Client::open(fx.redis.url())
        .expect("url")
        .get_async_pubsub()
        .await
        .expect("pubsub");
    pubsub.subscribe("replies-read").await.expect("subscribe");
    push_raw(
        &mut conn,
        "someone-listens",
        &[
            ("script", "2"),
            ("status", "pending"),
            ("replyTo", "replies-read"),
            (client::fields::DELIVERED_TTL, &asked),
        ],
    )
    .await;
    let fields = until_ended(&mut conn, "someone-listens").await;
    assert_eq!(fields["status"], "completed", "{fields:?}");
    let left = pttl(&mut conn, "someone-listens").await;
    assert!(
        left > 0 && left <= DELIVERED.as_millis() as i64,
        "PTTL {left} ms, not within the delivered TTL"
    );

    // A delivered TTL above the worker's result TTL is cut down to it.
    push_raw(
        &mut conn,
        "asks-too-much",
        &[
            ("script", "3"),
            ("status", "pending"),
            ("replyTo", "replies-read"),
            (client::fields::DELIVERED_TTL, "999999999999"),
        ],
    )
    .await;
    until_ended(&mut conn, "asks-too-much").await;
    assert_result_ttl(
        &mut conn,
        "asks-too-much",
        "a delivered TTL over the result TTL",
    )
    .await;
    worker.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_client_went_away_keeps_the_result_ttl() {
    let fx = Fixture::start_with(
        |c| c.delivered_ttl = Some(DELIVERED),
        ServerTiming::default(),
        false,
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = engine::Limits {
        timeout: Duration::from_secs(120),
        max_operations: 0,
        ..engine::Limits::default()
    };
    let worker = start_worker_with(&fx, dir.path(), limits);
    let mut conn = redis_conn(&fx).await;

    let mut ws = fx.connect().await;
    common::send(&mut ws, &play(1, "loop { }")).await;
    let give_up = tokio::time::Instant::now() + PROMPTLY;
    let id = loop {
        let hashes: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", client::keys::TASK_DETAILS_PREFIX))
            .query_async(&mut conn)
            .await
            .expect("keys");
        if let [hash] = &hashes[..] {
            let id = hash[client::keys::TASK_DETAILS_PREFIX.len()..].to_owned();
            let status: Option<String> = redis::cmd("HGET")
                .arg(hash)
                .arg("status")
                .query_async(&mut conn)
                .await
                .expect("hget");
            if status.as_deref() == Some("processing") {
                break id;
            }
        }
        assert!(tokio::time::Instant::now() < give_up, "the task never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    drop(ws);
    let fields = until_ended(&mut conn, &id).await;
    assert_eq!(fields["errorKind"], "cancelled", "{fields:?}");
    assert_result_ttl(&mut conn, &id, "a task whose client went away").await;
    worker.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_ends_after_its_waiter_gave_up_keeps_the_result_ttl() {
    let fx = Fixture::start_with(
        |c| {
            c.delivered_ttl = Some(DELIVERED);
            c.task_timeout = Duration::from_millis(300);
        },
        ServerTiming::default(),
        false,
    )
    .await;
    let mut conn = redis_conn(&fx).await;
    let mut ws = fx.connect().await;
    // No worker yet: the waiter gives up, and its client gets the task id.
    let reply = call(&mut ws, &play(1, "1")).await;
    assert_eq!(code(&reply), codes::TIMED_OUT, "{reply}");
    let id = reply["error"]["data"]["task_id"]
        .as_str()
        .expect("task id")
        .to_owned();

    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker(&fx, dir.path());
    let fields = until_ended(&mut conn, &id).await;
    // Cancelled when its client was answered -32001.
    assert_eq!(fields["errorKind"], "cancelled", "{fields:?}");
    // The server's listener got the notification, but nobody was waiting:
    // a client holding the id may still read the hash.
    assert_result_ttl(&mut conn, &id, "a task ended after its deadline").await;
    worker.cancel();
}
