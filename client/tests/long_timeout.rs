//! A timeout past what the clock can hold (`Duration::MAX`, meaning no
//! limit) is taken as a very long wait, never a panic: a submit, a wait and
//! a run with it end with the task's outcome. A timeout too long to count
//! in u64 milliseconds is no deadline of now: the task's `deadline` field
//! never comes before `timeout` from its sending (or the end of a u64 of ms).

mod common;

use std::time::Duration;

use client::broker::{BrokerOptions, Claim, WorkerBroker};
use client::{Client, Outcome, SubmitOptions, TaskOutput};

/// Claims the next task of `broker`'s queue and finishes it with `output`.
async fn run_next(broker: &WorkerBroker, output: &str) -> String {
    let claim = loop {
        match broker.pop_and_claim().await.expect("claim") {
            Some(Claim::Run(task)) => break task,
            Some(other) => panic!("{other:?}"),
            None => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let done = Outcome::Completed(TaskOutput {
        task_id: claim.task_id.clone(),
        output: output.into(),
        printed: String::new(),
        run_time: None,
    });
    assert!(broker.finish(&done).await.expect("finish"), "written");
    claim.task_id
}

fn output(outcome: client::Result<Outcome>) -> String {
    match outcome {
        Ok(Outcome::Completed(out)) => out.output,
        other => panic!("expected completed, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_of_duration_max_waits_for_the_outcome() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let client = Client::connect(&url).await.expect("connect");
    let forever = SubmitOptions::with_timeout(Duration::MAX);
    let broker = WorkerBroker::new(&url, "q", "w", &BrokerOptions::new(Duration::from_secs(60)))
        .expect("broker");

    let id = client
        .submit("q", "40 + 2", &forever)
        .await
        .expect("submit");
    assert_eq!(run_next(&broker, "42").await, id);
    assert_eq!(output(client.wait(&id, Duration::MAX).await), "42");

    let run = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .run_with("q", "1 + 1", &forever, client::OnDrop::Cancel)
                .await
        }
    });
    run_next(&broker, "2").await;
    assert_eq!(output(run.await.expect("run task")), "2");
}

#[tokio::test]
async fn a_timeout_past_u64_milliseconds_is_no_deadline_of_now() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let client = Client::connect(&url).await.expect("connect");
    let mut raw = common::raw(&url).await;
    // 2^62 s is 2^64 * 250 ms: exactly 0 once cut to u64 milliseconds;
    // u64::MAX ms + 5 s is 4999 ms once cut.
    for timeout in [
        Duration::from_secs(1 << 62),
        Duration::from_millis(u64::MAX) + Duration::from_millis(5_000),
    ] {
        let options = SubmitOptions::with_timeout(timeout);
        let id = client
            .submit("q", "40 + 2", &options)
            .await
            .expect("submit");
        let (created, deadline): (u64, u64) = redis::cmd("HMGET")
            .arg(client::keys::task_details(&id))
            .arg(client::fields::CREATED_AT)
            .arg(client::fields::DEADLINE)
            .query_async(&mut raw)
            .await
            .expect("HMGET");
        let year = 365 * 24 * 3600 * 1000;
        assert!(
            deadline >= created.saturating_add(year),
            "a timeout of {timeout:?} wrote a deadline {} ms after the task was sent",
            deadline.saturating_sub(created)
        );
    }
}
