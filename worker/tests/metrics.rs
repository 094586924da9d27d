//! What a worker records into its `telemetry` handles: one count per task
//! by outcome and kind (tasks the claim ends unrun included), and one
//! observation of each time per task run.

mod common;

use std::time::Duration;

use client::{Client, OnDrop, Outcome, SubmitOptions};
use common::*;
use worker::WorkerConfig;

const WAIT: Duration = Duration::from_secs(30);

fn scrape(registry: &prometheus_client::registry::Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
    text
}

fn value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0, |v| v.trim().parse().expect("an integer"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_task_is_counted_once_by_outcome_and_kind_and_each_run_is_timed() {
    let redis = testkit::RedisServer::start();
    let client = Client::connect(&redis.url()).await.expect("connect");
    // A task that expires in the queue before any worker runs: ended unrun.
    let err = client
        .run_with(
            "m",
            "1",
            &SubmitOptions::with_timeout(Duration::from_millis(50)),
            OnDrop::Cancel,
        )
        .await
        .expect_err("no worker yet");
    let client::Error::Timeout { task_id, .. } = err else {
        panic!("{err:?}")
    };

    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = telemetry::Metrics::new(&mut registry);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut options = fast_options();
    options.metrics = Some(metrics.tasks("M"));
    let worker = TestWorker::start_with(
        WorkerConfig::new(&redis.url(), "m"),
        options,
        open_engine(dir.path(), engine::Limits::default()),
    );
    let expired = client.wait(&task_id, WAIT).await.expect("wait");
    assert!(matches!(expired, Outcome::Failed(_)), "{expired:?}");
    for script in ["40 + 2", "1 + 1", r#"throw "no""#] {
        client
            .run_with("m", script, &SubmitOptions::default(), OnDrop::Cancel)
            .await
            .expect("run");
    }
    let series = |outcome: &str, kind: &str| {
        format!(r#"circles_tasks_finished_total{{circle="M",outcome="{outcome}",kind="{kind}"}}"#)
    };
    // The count follows the result's write, which the reply may overtake.
    until("three runs counted", WAIT, || {
        let done = value(
            &scrape(&registry),
            r#"circles_task_end_to_end_seconds_count{circle="M"}"#,
        ) == 3;
        async move { done.then_some(()) }
    })
    .await;
    // A scrape is not a snapshot: the counters are encoded before the
    // histograms, so the scrape that saw the third end-to-end time may
    // predate its count. Each task is counted before its end-to-end time is
    // recorded, so a scrape taken now sees every count.
    let text = scrape(&registry);
    assert_eq!(value(&text, &series("completed", "none")), 2, "{text}");
    assert_eq!(value(&text, &series("failed", "runtime")), 1, "{text}");
    assert_eq!(value(&text, &series("failed", "expired")), 1, "{text}");
    for histogram in ["queue_wait", "run", "end_to_end"] {
        let count = format!(r#"circles_task_{histogram}_seconds_count{{circle="M"}}"#);
        assert_eq!(value(&text, &count), 3, "{count} in\n{text}");
    }
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_task_ended_by_the_reaper_is_counted_as_worker_lost() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let client = Client::connect(&url).await.expect("connect");
    let task_id = client
        .submit("g", "40 + 2", &SubmitOptions::with_timeout(WAIT))
        .await
        .expect("submit");
    // A "ghost" worker claims the task and never beats again, as a killed
    // process would.
    let broker_options = client::broker::BrokerOptions::new(Duration::from_secs(60));
    let ghost =
        client::broker::WorkerBroker::new(&url, "g", "ghost", &broker_options).expect("broker");
    ghost
        .beat(Duration::from_millis(100), false)
        .await
        .expect("beat");
    match ghost.pop_and_claim().await.expect("claim") {
        Some(client::broker::Claim::Run(task)) => assert_eq!(task.task_id, task_id),
        other => panic!("{other:?}"),
    }

    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = telemetry::Metrics::new(&mut registry);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut options = fast_options();
    options.metrics = Some(metrics.tasks("G"));
    let worker = TestWorker::start_with(
        WorkerConfig::new(&url, "g"),
        options,
        open_engine(dir.path(), engine::Limits::default()),
    );
    let lost = client.wait(&task_id, WAIT).await.expect("wait");
    match &lost {
        Outcome::Failed(f) => assert_eq!(f.kind, client::FailureKind::WorkerLost, "{lost:?}"),
        other => panic!("{other:?}"),
    }
    let series = r#"circles_tasks_finished_total{circle="G",outcome="failed",kind="worker_lost"}"#;
    // The reaper's count follows its script's reply, which the waiter's
    // notification may overtake.
    let text = until("the lost task counted", WAIT, || {
        let text = scrape(&registry);
        let done = value(&text, series) == 1;
        async move { done.then_some(text) }
    })
    .await;
    assert_eq!(value(&text, series), 1, "{text}");
    assert_eq!(
        value(
            &text,
            r#"circles_tasks_finished_total{circle="G",outcome="completed",kind="none"}"#
        ),
        0,
        "{text}"
    );
    worker.stop().await;
}
