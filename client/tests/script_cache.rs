//! The claim pipelined behind a blocking pop is sent by `EVALSHA`; a Redis
//! that lost its script cache must not lose the popped task.

use std::time::Duration;

use client::broker::{BlockingPopper, BrokerOptions, Claim};
use client::{Client, SubmitOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pop_after_the_script_cache_was_flushed_still_claims_the_task() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let options = BrokerOptions::new(Duration::from_secs(60));
    let popper = BlockingPopper::new(&url, "f", "flusher", Duration::from_secs(5), &options)
        .expect("popper");
    let client = Client::connect(&url).await.expect("connect");
    let raw = redis::Client::open(url.as_str()).expect("open");
    let mut raw = raw
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection");

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
