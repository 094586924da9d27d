//! A Redis restarted under an idle client: the client's next request,
//! whichever it is, reconnects and goes through. `Client::ping` promises
//! its round trip "a reconnect included, when one was needed"; a cancel,
//! a read of the queue or of the counters is as safe to send again on a
//! fresh connection as the submit that already is.

use std::time::Duration;

use client::{Client, SubmitOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_request_after_redis_restarted_under_an_idle_client_goes_through() {
    let mut redis = testkit::RedisServer::start_persistent();
    let client = Client::connect(&redis.url()).await.expect("connect");
    let id = client
        .submit(
            "q",
            "1",
            &SubmitOptions::with_timeout(Duration::from_secs(600)),
        )
        .await
        .expect("submit");

    redis.kill();
    redis.restart();
    let ping = client.ping().await;
    assert!(ping.is_ok(), "ping after a restart: {ping:?}");

    redis.kill();
    redis.restart();
    let queued = client.queued("q", 10).await;
    assert!(
        matches!(&queued, Ok(ids) if *ids == [id.clone()]),
        "queued after a restart: {queued:?}"
    );

    redis.kill();
    redis.restart();
    let stats = client.stats_many(&["q"]).await;
    assert!(stats.is_ok(), "stats after a restart: {stats:?}");

    redis.kill();
    redis.restart();
    let cancelled = client.cancel(&id, "changed my mind").await;
    assert!(
        matches!(cancelled, Ok(true)),
        "cancel of a pending task after a restart: {cancelled:?}"
    );
}
