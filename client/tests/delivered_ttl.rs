//! The delivered TTL through the typed client and the worker side of the
//! protocol: a task submitted with [`SubmitOptions::delivered_ttl`] whose
//! notification reached its waiter keeps its hash only that long; without
//! it, or when the task was cancelled, the hash keeps the result TTL.

mod common;
use common::raw;

use std::time::Duration;

use client::broker::{BrokerOptions, Claim, WorkerBroker};
use client::{Client, Outcome, SubmitOptions, TaskOutput, fields, keys};

const RESULT_TTL: Duration = Duration::from_secs(60);
const DELIVERED: Duration = Duration::from_secs(2);

async fn pttl(conn: &mut redis::aio::MultiplexedConnection, task_id: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(keys::task_details(task_id))
        .query_async(conn)
        .await
        .expect("pttl")
}

/// Claims the next task of `broker`'s queue and finishes it as completed.
async fn run_next(broker: &WorkerBroker, task_id: &str) {
    let claim = broker.pop_and_claim().await.expect("claim");
    assert!(
        matches!(&claim, Some(Claim::Run(t)) if t.task_id == task_id),
        "{claim:?}"
    );
    let done = Outcome::Completed(TaskOutput {
        task_id: task_id.to_owned(),
        output: "1".into(),
        printed: String::new(),
        run_time: None,
    });
    assert!(broker.finish(&done).await.expect("finish"), "written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_result_gets_the_delivered_ttl_and_any_other_the_result_ttl() {
    let redis = testkit::RedisServer::start();
    let client = Client::connect(&redis.url()).await.expect("connect");
    let mut conn = raw(&redis.url()).await;
    let broker = WorkerBroker::new(&redis.url(), "q", "w1", &BrokerOptions::new(RESULT_TTL))
        .expect("broker");
    let delivered = SubmitOptions {
        delivered_ttl: Some(DELIVERED),
        ..SubmitOptions::default()
    };

    // Asked for, and the waiter got the notification.
    let watched = client
        .submit_watched("q", "1", &delivered)
        .await
        .expect("submit");
    let id = watched.task_id().to_owned();
    let asked: Option<String> = redis::cmd("HGET")
        .arg(keys::task_details(&id))
        .arg(fields::DELIVERED_TTL)
        .query_async(&mut conn)
        .await
        .expect("hget");
    assert_eq!(asked.as_deref(), Some("2000"));
    run_next(&broker, &id).await;
    assert!(matches!(watched.outcome().await, Ok(Outcome::Completed(_))));
    let left = pttl(&mut conn, &id).await;
    assert!(left > 0 && left <= 2000, "delivered: PTTL {left} ms");

    // Not asked for: the field is absent and the result TTL applies.
    let watched = client
        .submit_watched("q", "1", &SubmitOptions::default())
        .await
        .expect("submit");
    let id = watched.task_id().to_owned();
    run_next(&broker, &id).await;
    assert!(matches!(watched.outcome().await, Ok(Outcome::Completed(_))));
    let left = pttl(&mut conn, &id).await;
    assert!(
        left > 55_000 && left <= 60_000,
        "not asked for: PTTL {left} ms"
    );

    // Asked for, but its waiter went away (the task has a cancel, which
    // came too late to stop it): nobody read the result, so it stays.
    let watched = client
        .submit_watched("q", "1", &delivered)
        .await
        .expect("submit");
    let id = watched.task_id().to_owned();
    let claim = broker.pop_and_claim().await.expect("claim");
    assert!(matches!(claim, Some(Claim::Run(_))), "{claim:?}");
    assert!(client.cancel(&id, "gone").await.expect("cancel"));
    let done = Outcome::Completed(TaskOutput {
        task_id: id.clone(),
        output: "1".into(),
        printed: String::new(),
        run_time: None,
    });
    assert!(broker.finish(&done).await.expect("finish"));
    drop(watched);
    let left = pttl(&mut conn, &id).await;
    assert!(left > 55_000 && left <= 60_000, "cancelled: PTTL {left} ms");
}
