//! A group whose fsync fails, against a real worker, Redis and OurDB (the
//! fsync failed on demand through `ourdb::fault`): no task of the group that
//! saw writes the disk may not hold is reported `completed`.

mod common;

use std::time::Duration;

use client::{Client, FailureKind, Outcome, SubmitOptions};
use common::*;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failed_group_fsync_the_scripts_that_ran_after_its_first_write_end_as_database_errors()
 {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let queue = "failing_fsync";
    let client = Client::connect(&url).await.expect("connect");
    let opts = SubmitOptions::with_timeout(WAIT);
    // Queued before the worker starts: one batch, and (with a window no
    // group of these reaches) one group.
    let mut ids = Vec::new();
    for script in [
        "40 + 2",
        "db::insert(\"maybe lost\")",
        "db::get(2)",
        "let n = db::get(2); throw `saw ${n}`",
    ] {
        ids.push(client.submit(queue, script, &opts).await.expect("submit"));
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open_engine(dir.path(), engine::Limits::default());
    // A first record, synced: the data file exists before the fsyncs fail
    // (creating one is synced at once).
    assert_eq!(engine.db().insert(b"\"kept\"").expect("insert"), 1);
    let _failing = ourdb::fault::fail_syncs_under(dir.path());
    let mut options = fast_options();
    options.group_window = Duration::from_secs(60);
    let worker = TestWorker::start_with(worker::WorkerConfig::new(&url, queue), options, engine);

    let mut outcomes = Vec::new();
    for id in &ids {
        outcomes.push(client.wait(id, WAIT).await.expect("wait"));
    }
    match &outcomes[0] {
        Outcome::Completed(out) => assert_eq!(out.output, "42", "it ran before any write"),
        other => panic!("the script before the first write completes: {other:?}"),
    }
    for (n, outcome) in outcomes.iter().enumerate().skip(1) {
        match outcome {
            Outcome::Failed(f) => {
                assert_eq!(f.kind, FailureKind::Database, "task {n}: {f:?}");
                assert!(
                    f.message.contains("injected fsync failure"),
                    "task {n}: {}",
                    f.message
                );
            }
            other => panic!(
                "task {n} ran on a write the failed fsync may have lost, yet ended {other:?}"
            ),
        }
    }
    let Outcome::Failed(reader) = &outcomes[2] else {
        unreachable!()
    };
    assert!(
        reader.message.contains("may have read writes"),
        "a reader's error says why it failed: {}",
        reader.message
    );
    worker.stop().await;
}
