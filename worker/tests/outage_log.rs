//! An outage is logged once when it starts and once when it ends, not once
//! per retry: a real logger captures every record of this test process.

mod common;

use std::time::Duration;

use common::*;

const QUEUE: &str = "logged";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_logged_once_when_it_starts_and_once_when_it_ends() {
    capture_log();
    let mut redis = testkit::RedisServer::start_persistent();
    let worker = TestWorker::start(&redis.url(), QUEUE);
    let wait = Duration::from_secs(30);
    let status = worker.status.clone();
    until("the worker to run", wait, || {
        let running = status.state() == worker::WorkerState::Running;
        async move { running.then_some(()) }
    })
    .await;

    let mut options = client::ClientOptions::default();
    options.max_backoff = Duration::from_millis(200);
    let client = client::Client::connect_with(&redis.url(), options)
        .await
        .expect("connect");

    redis.kill();
    // fast_options caps the backoff at 200 ms: wait until the take loop has
    // retried many times.
    until("ten retries of the take loop", wait, || {
        let retries = lines(log::Level::Debug, "redis still unreachable").len();
        async move { (retries >= 10).then_some(()) }
    })
    .await;
    let down = lines(
        log::Level::Warn,
        &format!("worker for queue {QUEUE} cannot reach redis"),
    );
    assert_eq!(down.len(), 1, "{down:#?}");
    let listener_down = lines(log::Level::Warn, "reply listener");
    assert_eq!(listener_down.len(), 1, "{listener_down:#?}");
    // Each of the worker's three connections (take side, heartbeat, blocking
    // pop) reports its own outage at most once; the idle client's request
    // connection has not noticed.
    let url = redis.url();
    let url = url.trim_end_matches('/');
    let per_connection: Vec<String> = lines(log::Level::Warn, url)
        .into_iter()
        .filter(|m| !m.starts_with("worker for queue") && !m.starts_with("reply listener"))
        .collect();
    assert!(
        (1..=3).contains(&per_connection.len()),
        "{per_connection:#?}"
    );

    redis.restart();
    until("the worker to run again", wait, || {
        let running = status.state() == worker::WorkerState::Running;
        async move { running.then_some(()) }
    })
    .await;
    until("the reply listener to resubscribe", wait, || {
        let n = lines(log::Level::Info, "reply listener resubscribed").len();
        async move { (n >= 1).then_some(()) }
    })
    .await;
    let up = lines(
        log::Level::Info,
        &format!("worker for queue {QUEUE} is connected to redis again"),
    );
    assert_eq!(up.len(), 1, "{up:#?}");
    let listener_up = lines(log::Level::Info, "reply listener resubscribed");
    assert_eq!(listener_up.len(), 1, "{listener_up:#?}");
    let warnings = lines(log::Level::Warn, "");
    assert_eq!(
        warnings.len(),
        down.len() + listener_down.len() + per_connection.len(),
        "no new warnings after the outage ended: {warnings:#?}"
    );
    let errors = lines(log::Level::Error, "");
    assert!(errors.is_empty(), "an outage is not an error: {errors:#?}");
    drop(client);
    worker.stop().await;
}
