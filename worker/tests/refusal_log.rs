//! A command Redis refuses while it answers the rest (an ACL without
//! `BLMOVE`) is one outage: logged once, retried with a growing backoff,
//! the worker's row naming it, while the tasks still run through the
//! requests Redis accepts. A real logger captures every record of this
//! test process.

mod common;

use std::time::Duration;

use client::{Client, OnDrop, Outcome, SubmitOptions};
use common::*;

const QUEUE: &str = "refused";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_redis_refuses_is_one_outage_with_a_growing_backoff_and_tasks_still_run() {
    capture_log();
    let redis = testkit::RedisServer::start();
    let port = redis.port();
    testkit::command(
        port,
        &[
            "ACL", "SETUSER", "w", "on", ">pw", "~*", "&*", "+@all", "-blmove",
        ],
    )
    .expect("acl user without blmove");
    let worker = TestWorker::start(&format!("redis://w:pw@127.0.0.1:{port}/"), QUEUE);
    let client = Client::connect(&redis.url()).await.expect("connect");
    let opts = SubmitOptions::with_timeout(Duration::from_secs(20));
    for n in 0..3 {
        let outcome = client
            .run_with(QUEUE, &format!("{n} + 1"), &opts, OnDrop::Cancel)
            .await
            .expect("run");
        assert!(
            matches!(&outcome, Outcome::Completed(o) if o.output == (n + 1).to_string()),
            "{outcome:?}"
        );
    }
    // fast_options caps the backoff at 200 ms; reset at every turn, it
    // would retry every 50 ms (about 40 times in two seconds).
    let retries = |log: &str| lines(log::Level::Debug, log).len();
    let before = retries("redis still unreachable");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = retries("redis still unreachable") - before;
    assert!((5..=15).contains(&during), "{during} retries in 2 s");
    let refused = lines(
        log::Level::Warn,
        &format!("worker for queue {QUEUE} is refused by redis"),
    );
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert!(refused[0].contains("blmove"), "{refused:#?}");
    let back = lines(log::Level::Info, &format!("worker for queue {QUEUE}"));
    assert!(back.iter().all(|l| !l.contains("again")), "{back:#?}");
    assert_eq!(
        worker.status.state(),
        worker::WorkerState::Reconnecting(
            "redis refuses this user a command (ACL; see the log)".into()
        )
    );
    worker.stop().await;
}
