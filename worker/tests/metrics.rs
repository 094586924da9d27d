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
    let text = eventually("three runs counted", WAIT, || {
        let text = scrape(&registry);
        let done = value(
            &text,
            r#"circles_task_end_to_end_seconds_count{circle="M"}"#,
        ) == 3;
        async move { done.then_some(text) }
    })
    .await;
    assert_eq!(value(&text, &series("completed", "none")), 2, "{text}");
    assert_eq!(value(&text, &series("failed", "runtime")), 1, "{text}");
    assert_eq!(value(&text, &series("failed", "expired")), 1, "{text}");
    for histogram in ["queue_wait", "run", "end_to_end"] {
        let count = format!(r#"circles_task_{histogram}_seconds_count{{circle="M"}}"#);
        assert_eq!(value(&text, &count), 3, "{count} in\n{text}");
    }
    worker.stop().await;
}
