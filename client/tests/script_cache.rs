//! The claim pipelined behind a blocking pop and the finish pipelined
//! behind a `PING` are sent by `EVALSHA`; a Redis that lost its script cache
//! must lose neither the popped task nor its result.

mod common;
use common::raw;

use std::time::Duration;

use client::broker::{BlockingPopper, BrokerOptions, Claim, WorkerBroker};
use client::{Client, Outcome, SubmitOptions, TaskOutput};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pop_after_the_script_cache_was_flushed_still_claims_the_task() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let options = BrokerOptions::new(Duration::from_secs(60));
    let popper = BlockingPopper::new(&url, "f", "flusher", Duration::from_secs(5), &options)
        .expect("popper");
    let client = Client::connect(&url).await.expect("connect");
    let mut raw = raw(&url).await;

    for round in 0..3 {
        let id = client
            .submit("f", "1", &SubmitOptions::default())
            .await
            .expect("submit");
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut raw)
            .await
            .expect("script flush");
        let claim = popper
            .pop_and_claim(Duration::from_secs(5))
            .await
            .expect("pop");
        assert!(
            matches!(claim, Some(Claim::Run(ref task)) if task.task_id == id),
            "round {round}: {claim:?}"
        );
        let status: Option<String> = redis::cmd("HGET")
            .arg(client::keys::task_details(&id))
            .arg("status")
            .query_async(&mut raw)
            .await
            .expect("status");
        assert_eq!(status.as_deref(), Some("processing"), "round {round}");
        let _: () = redis::cmd("DEL")
            .arg(client::keys::processing("f", "flusher"))
            .query_async(&mut raw)
            .await
            .expect("clear processing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finish_after_the_script_cache_was_flushed_still_writes_and_notifies() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let broker = WorkerBroker::new(
        &url,
        "f",
        "flusher",
        &BrokerOptions::new(Duration::from_secs(60)),
    )
    .expect("broker");
    let client = Client::connect(&url).await.expect("connect");
    let mut raw = raw(&url).await;

    for round in 0..3 {
        let watched = client
            .submit_watched("f", "1", &SubmitOptions::default())
            .await
            .expect("submit");
        let id = watched.task_id().to_owned();
        let claim = broker.pop_and_claim().await.expect("claim");
        assert!(
            matches!(claim, Some(Claim::Run(ref task)) if task.task_id == id),
            "round {round}: {claim:?}"
        );
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut raw)
            .await
            .expect("script flush");
        let done = Outcome::Completed(TaskOutput {
            task_id: id.clone(),
            output: format!("done {round}"),
            printed: String::new(),
            run_time: None,
        });
        assert!(
            broker.finish(&done).await.expect("finish"),
            "round {round}: written"
        );
        match tokio::time::timeout(Duration::from_secs(10), watched.outcome()).await {
            Ok(Ok(Outcome::Completed(out))) => assert_eq!(out.output, format!("done {round}")),
            other => panic!("round {round}: {other:?}"),
        }
        let status: Option<String> = redis::cmd("HGET")
            .arg(client::keys::task_details(&id))
            .arg("status")
            .query_async(&mut raw)
            .await
            .expect("status");
        assert_eq!(status.as_deref(), Some("completed"), "round {round}");
    }
}
