//! A task whose hash is gone is `Lost`, whenever the waiter finds out: at a
//! fallback poll or at the deadline's last read alike.

use std::time::Duration;

use client::{Client, ClientOptions, Error, SubmitOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_deleted_while_waiting_is_lost_also_when_found_at_the_deadline() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let mut options = ClientOptions::default();
    // No fallback poll before the deadline: the last read finds it gone.
    options.fallback_poll = Duration::from_secs(60);
    let client = Client::connect_with(&url, options).await.expect("connect");
    let watched = client
        .submit_watched(
            "nobody",
            "40 + 2",
            &SubmitOptions::with_timeout(Duration::from_millis(800)),
        )
        .await
        .expect("submit");
    // The task's data goes (a flush, a failover that lost it).
    let redis_client = redis::Client::open(url.as_str()).expect("url");
    let mut conn = redis_client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let _: () = redis::cmd("DEL")
        .arg(client::keys::task_details(watched.task_id()))
        .query_async(&mut conn)
        .await
        .expect("DEL");
    let ended = watched.outcome().await;
    assert!(
        matches!(ended, Err(Error::Lost { .. })),
        "a task whose hash is gone is lost, not timed out: {ended:?}"
    );
}
