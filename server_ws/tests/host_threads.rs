//! The thread cost of a host does not grow with its circles. Alone in its
//! test binary: it counts the threads of the whole process.

mod common;

use std::sync::Arc;
use std::time::Duration;

use server_ws::{CircleServer, ServerConfig, ServerStatus, ServerTiming};
use tokio_util::sync::CancellationToken;

/// Threads of this process, from /proc/self/status.
fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .expect("read /proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a Threads: line")
}

/// Starts a host of `n` circles and waits until every one accepts an upgrade.
async fn host(
    n: usize,
    client: &client::Client,
    token: &CancellationToken,
) -> tokio::task::JoinHandle<server_ws::Result<()>> {
    let mut circles = Vec::with_capacity(n);
    let mut urls = Vec::with_capacity(n);
    for i in 0..n {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        urls.push(format!("ws://{}/ws", listener.local_addr().expect("addr")));
        let config = ServerConfig::new(format!("circle {i}"), format!("circle_{i}"));
        circles.push(CircleServer::new(
            config,
            listener,
            Arc::new(ServerStatus::default()),
        ));
    }
    let handle = tokio::spawn(server_ws::run_many(
        circles,
        ServerTiming::default(),
        client.clone(),
        token.clone(),
    ));
    for url in urls {
        let deadline = tokio::time::Instant::now() + common::PROMPTLY;
        loop {
            if let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&url).await {
                let _ = ws.close(None).await;
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{url} never served");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    handle
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_costs_the_same_threads_for_one_circle_as_for_thirty() {
    let redis = testkit::RedisServer::start();
    let client = client::Client::connect(&redis.url())
        .await
        .expect("connect the client");
    let token = CancellationToken::new();
    let before = threads();
    let one = host(1, &client, &token).await;
    let with_one = threads();
    let many = host(30, &client, &token).await;
    let with_many = threads();
    let cost_one = with_one - before;
    let cost_many = with_many - with_one;
    assert!(
        (1..=server_ws::HOST_WORKERS + 1).contains(&cost_one),
        "a host of one circle added {cost_one} threads"
    );
    assert_eq!(
        cost_many, cost_one,
        "a host of 30 circles added {cost_many} threads, one of 1 circle {cost_one}"
    );
    token.cancel();
    for handle in [one, many] {
        tokio::time::timeout(common::PROMPTLY, handle)
            .await
            .expect("the host stops promptly")
            .expect("no panic")
            .expect("host ran");
    }
}
