//! A timeout past what the clock can hold (`Duration::MAX`, meaning no
//! limit) is taken as a very long wait, never a panic: a submit, a wait and
//! a run with it end with the task's outcome.

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
