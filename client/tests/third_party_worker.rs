//! A worker of another program, written from the documented protocol alone
//! (README "The Redis protocol, for other programs", ARCHITECTURE.md "Redis
//! keys and fields"), serving this client: what it writes and publishes
//! reaches the waiter.

use std::time::Duration;

use client::{Client, ClientOptions, OnDrop, Outcome, SubmitOptions};
use tokio::task::JoinHandle;

/// Neither the submit timeout nor the fallback poll can deliver a result
/// within this; only the notification can.
const NOTIFIED_WITHIN: Duration = Duration::from_secs(20);

/// A third-party worker of `queue`: takes each id from the right, writes its
/// end into the hash as the docs say, and publishes the ended fields with
/// `id` and `updatedAt` on the task's `replyTo`, written as
/// `notification(id, updated_at)` gives them. "40 + 2" completes with "42",
/// anything else fails on line 3, column 7.
fn worker(
    url: &str,
    queue: &str,
    notification: fn(&str, u64, bool) -> serde_json::Value,
) -> JoinHandle<()> {
    let url = url.to_owned();
    let queue = queue.to_owned();
    tokio::spawn(async move {
        let mut conn = redis::Client::open(url)
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        loop {
            let id: Option<String> = redis::cmd("RPOP")
                .arg(client::keys::tasks(&queue))
                .query_async(&mut conn)
                .await
                .expect("rpop");
            let Some(id) = id else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let key = client::keys::task_details(&id);
            let (script, reply): (String, String) = redis::cmd("HMGET")
                .arg(&key)
                .arg("script")
                .arg("replyTo")
                .query_async(&mut conn)
                .await
                .expect("hmget");
            let ok = script == "40 + 2";
            let fields: &[(&str, &str)] = if ok {
                &[
                    ("status", "completed"),
                    ("output", "42"),
                    ("runTimeUs", "17"),
                ]
            } else {
                &[
                    ("status", "error"),
                    ("error", "no such thing"),
                    ("errorKind", "runtime"),
                    ("errorLine", "3"),
                    ("errorColumn", "7"),
                ]
            };
            let updated_at = 1_765_000_000_000_u64;
            let _: () = redis::cmd("HSET")
                .arg(&key)
                .arg(fields)
                .arg("updatedAt")
                .arg(updated_at)
                .query_async(&mut conn)
                .await
                .expect("hset");
            let note = notification(&id, updated_at, ok).to_string();
            let _: i64 = redis::cmd("PUBLISH")
                .arg(&reply)
                .arg(note)
                .query_async(&mut conn)
                .await
                .expect("publish");
        }
    })
}

/// The docs call a notification "the JSON object of the fields the finish
/// wrote plus `id` and `updatedAt`"; they do not say its numbers are
/// strings. A worker that writes the times, the run time and the error's
/// position as JSON numbers, as most JSON encoders write numbers, is heard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_with_its_numbers_as_json_numbers_reaches_the_waiter() {
    let redis = testkit::RedisServer::start();
    let third = worker(&redis.url(), "numbers", |id, updated_at, ok| {
        if ok {
            serde_json::json!({
                "id": id, "updatedAt": updated_at, "status": "completed",
                "output": "42", "runTimeUs": 17,
            })
        } else {
            serde_json::json!({
                "id": id, "updatedAt": updated_at, "status": "error",
                "error": "no such thing", "errorKind": "runtime",
                "errorLine": 3, "errorColumn": 7,
            })
        }
    });
    let mut options = ClientOptions::default();
    options.fallback_poll = Duration::from_secs(3600);
    let client = Client::connect_with(&redis.url(), options)
        .await
        .expect("connect");
    let submit = SubmitOptions::with_timeout(Duration::from_secs(3600));
    let run = |script: &'static str| {
        let client = client.clone();
        let submit = submit.clone();
        async move {
            tokio::time::timeout(
                NOTIFIED_WITHIN,
                client.run_with("numbers", script, &submit, OnDrop::Cancel),
            )
            .await
            .unwrap_or_else(|_| panic!("{script:?}: no outcome without the notification"))
            .expect("run")
        }
    };
    match run("40 + 2").await {
        Outcome::Completed(out) => assert_eq!(
            (out.output.as_str(), out.run_time),
            ("42", Some(Duration::from_micros(17)))
        ),
        other => panic!("expected completed, got {other:?}"),
    }
    match run("nothing").await {
        Outcome::Failed(f) => assert_eq!(
            (f.kind.as_str(), f.message.as_str(), f.line, f.column),
            ("runtime", "no such thing", Some(3), Some(7))
        ),
        other => panic!("expected failed, got {other:?}"),
    }
    third.abort();
}

/// A notification whose output is of another JSON type than the hash's
/// text (an object, where the hash holds "42") does not stand for the
/// outcome: the waiter reads the hash, and gets "42", not an empty output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_with_an_output_of_another_type_leaves_the_outcome_to_the_hash() {
    let redis = testkit::RedisServer::start();
    let third = worker(&redis.url(), "objects", |id, updated_at, _| {
        serde_json::json!({
            "id": id, "updatedAt": updated_at, "status": "completed",
            "output": { "value": 42 }, "runTimeUs": 17,
        })
    });
    let client = Client::connect(&redis.url()).await.expect("connect");
    let submit = SubmitOptions::with_timeout(Duration::from_secs(3600));
    let ended = tokio::time::timeout(
        NOTIFIED_WITHIN,
        client.run_with("objects", "40 + 2", &submit, OnDrop::Cancel),
    )
    .await
    .expect("an outcome within the fallback poll")
    .expect("run");
    match ended {
        Outcome::Completed(out) => assert_eq!(out.output, "42"),
        other => panic!("expected completed, got {other:?}"),
    }
    third.abort();
}
