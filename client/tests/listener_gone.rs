//! A waiter whose client's listener is gone (the runtime it ran on shut
//! down) falls back to polling: it must not spin on the closed health
//! channel until its deadline.

use std::time::Duration;

use client::{Client, ClientOptions, SubmitOptions};

/// CPU time this thread has used so far.
fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    let ns: u64 = text
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("ns on cpu");
    Duration::from_nanos(ns)
}

#[test]
fn a_waiter_whose_listener_is_gone_does_not_spin() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    // The client and its listener live on runtime A.
    let a = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime a");
    let watched = a.block_on(async {
        let mut options = ClientOptions::default();
        options.fallback_poll = Duration::from_millis(500);
        let client = Client::connect_with(&url, options).await.expect("connect");
        client
            .submit_watched(
                "nobody",
                "1",
                &SubmitOptions::with_timeout(Duration::from_millis(1500)),
            )
            .await
            .expect("submit")
    });
    // A shuts down: the listener goes with it.
    a.shutdown_timeout(Duration::from_secs(1));
    // The wait happens on runtime B, on this thread.
    let b = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime b");
    let before = thread_cpu();
    let ended = b.block_on(watched.outcome());
    let used = thread_cpu() - before;
    assert!(ended.is_err(), "{ended:?}");
    assert!(
        used < Duration::from_millis(500),
        "waiting 1.5 s with the listener gone used {used:?} of CPU ({ended:?})"
    );
}
