//! Waking a blocked pop with `CLIENT UNBLOCK` from the broker's connection.

use std::sync::Arc;
use std::time::Duration;

use client::broker::{BlockingPopper, BrokerOptions, WorkerBroker};
use client::{Client, SubmitOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_pop_woken_returns_nothing_and_moves_nothing() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let options = BrokerOptions::new(Duration::from_secs(60));
    let broker = WorkerBroker::new(&url, "w", "waker", &options).expect("broker");
    let popper = Arc::new(
        BlockingPopper::new(&url, "w", "waker", Duration::from_secs(600), &options)
            .expect("popper"),
    );
    assert!(!popper.is_popping());
    assert!(
        !broker.wake(&popper).await.expect("wake"),
        "no pop in progress, nothing to wake"
    );

    // The pop blocks for ten minutes unless woken.
    let pop = {
        let popper = Arc::clone(&popper);
        tokio::spawn(async move { popper.pop_and_claim(Duration::from_secs(600)).await })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !broker.wake(&popper).await.expect("wake") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pop never blocked"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let popped = tokio::time::timeout(Duration::from_secs(20), pop)
        .await
        .expect("the woken pop did not return")
        .expect("join")
        .expect("pop");
    assert_eq!(popped, None);
    assert!(!popper.is_popping());

    // Nothing was moved: a task submitted now is still queued and the
    // processing list is empty.
    let client = Client::connect(&url).await.expect("connect");
    let id = client
        .submit("w", "1", &SubmitOptions::default())
        .await
        .expect("submit");
    assert_eq!(
        broker.processing().await.expect("processing"),
        Vec::<String>::new()
    );
    assert_eq!(
        client
            .stats_many(&["w"])
            .await
            .expect("stats")
            .remove(0)
            .queue_len,
        1
    );
    // The same connection pops again normally.
    let claim = popper
        .pop_and_claim(Duration::from_secs(5))
        .await
        .expect("pop");
    assert!(
        matches!(claim, Some(client::broker::Claim::Run(ref task)) if task.task_id == id),
        "{claim:?}"
    );
}
