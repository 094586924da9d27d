//! README: "When the orchestrator shuts down, the server first
//! waits up to 5 s to answer the requests it has submitted; those still
//! unanswered then are cancelled as for a client that went away, before the
//! 1001 close. So a request that got no reply never runs later, after a
//! restart."

mod common;

use std::time::Duration;

use common::{Fixture, PROMPTLY, eventually_async, pause_writes, play, send, task_of_script};
use futures_util::StreamExt;
use server_ws::ServerTiming;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_unanswered_at_the_end_of_the_shutdown_drain_is_cancelled_even_with_redis_slow_then()
 {
    let timing = ServerTiming::default().with_drain_timeout(Duration::from_millis(300));
    let mut fx = Fixture::start_with(|_| {}, timing, true).await;
    let mut ws = fx.connect().await;
    // A request the stand-in worker claims and never finishes.
    send(&mut ws, &play(1, "hang")).await;
    eventually_async("the request's task to be claimed", || async {
        task_of_script(&fx, "hang")
            .await
            .is_some_and(|h| h.get("status").map(String::as_str) == Some("processing"))
    })
    .await;
    // Redis is slow to take writes for a moment (a fsync stall, a long
    // script, a failover) just as the server shuts down.
    pause_writes(&fx, 1000).await;
    // The client reads on (and answers the close) while the server shuts down.
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
    fx.shut_down().await.expect("the server stops cleanly");
    let _ = tokio::time::timeout(PROMPTLY, reader).await;
    // Past the pause, a cancel that was asked for is written: up to 10 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut h = task_of_script(&fx, "hang").await.expect("the task's hash");
    while !h.contains_key("cancel") && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        h = task_of_script(&fx, "hang").await.expect("the task's hash");
    }
    assert!(
        h.contains_key("cancel"),
        "the shutdown closed the connection without an answer to the request, yet its \
         task was not cancelled (a worker may still run it, after a restart too): {h:?}"
    );
}
