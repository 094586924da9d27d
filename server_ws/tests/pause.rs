//! A circle's own token and a paused host (`CircleServer::with_token`,
//! `run_many_pausable`): what the orchestrator's reload is built on.

mod common;

use std::sync::Arc;

use common::*;
use server_ws::{CircleServer, Pause, ServerConfig, ServerStatus, ServerTiming};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

/// Threads of this process that actix's servers started (acceptors and
/// workers; Linux cuts thread names at 15 bytes).
fn actix_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("read /proc/self/task")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("actix-server"))
        .count()
}

async fn connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket upgrade")
        .0
}

/// A circle bound on port 0: its URL, the orchestrator's copy of its
/// listener, and the server to hand to a host.
fn circle(name: &str, token: &CancellationToken) -> (String, std::net::TcpListener, CircleServer) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let url = format!("ws://{}/ws", listener.local_addr().expect("local addr"));
    let served = CircleServer::new(
        ServerConfig::new(name, QUEUE),
        listener.try_clone().expect("clone"),
        Arc::new(ServerStatus::default()),
    )
    .with_token(token.clone());
    (url, listener, served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circles_token_closes_only_its_sockets_and_a_paused_host_keeps_its_connections_until_idle()
 {
    let redis = testkit::RedisServer::start();
    let client = client::Client::connect(&redis.url())
        .await
        .expect("connect the client");
    let worker_token = CancellationToken::new();
    tokio::spawn(stand_in_worker(redis.url(), worker_token.clone()));
    let host_token = CancellationToken::new();
    let (alpha_token, beta_token) = (host_token.child_token(), host_token.child_token());
    let (alpha_url, alpha_listener, alpha) = circle("Alpha", &alpha_token);
    let (beta_url, _beta_listener, beta) = circle("Beta", &beta_token);
    let pause = Pause::new();
    let host = tokio::spawn(server_ws::run_many_pausable(
        vec![alpha, beta],
        ServerTiming::default(),
        client.clone(),
        host_token.clone(),
        pause.clone(),
        server_ws::Budget::unbounded(),
    ));
    let mut ws_alpha = connect(&alpha_url).await;
    let mut ws_beta = connect(&beta_url).await;
    assert_eq!(
        call(&mut ws_alpha, &play(1, "echo:a")).await["result"]["output"],
        "a"
    );

    // Beta's own token: its socket closes with 1001, Alpha's carries on.
    beta_token.cancel();
    assert_eq!(close_code(&mut ws_beta).await, Some(CloseCode::Away));
    assert_eq!(
        call(&mut ws_alpha, &play(2, "echo:b")).await["result"]["output"],
        "b"
    );

    // Paused: Alpha's open socket carries on; a second host given a clone
    // of Alpha's listener accepts the new connections.
    pause.pause().await;
    assert!(pause.is_requested());
    let second_token = CancellationToken::new();
    let second = tokio::spawn(server_ws::run_many(
        vec![
            CircleServer::new(
                ServerConfig::new("Alpha", QUEUE),
                alpha_listener.try_clone().expect("clone"),
                Arc::new(ServerStatus::default()),
            )
            .with_token(alpha_token.clone()),
        ],
        ServerTiming::default(),
        client,
        second_token.clone(),
    ));
    for i in 0..3 {
        let mut fresh = connect(&alpha_url).await;
        assert_eq!(
            call(&mut fresh, &play(i, "echo:new")).await["result"]["output"],
            "new"
        );
    }
    assert_eq!(
        call(&mut ws_alpha, &play(3, "echo:c")).await["result"]["output"],
        "c"
    );

    // Alpha's token closes its sockets on both hosts; the paused host then
    // holds no connection and its actix threads end before its token fires.
    assert_eq!(
        actix_threads(),
        4,
        "two hosts, an acceptor and a worker each"
    );
    alpha_token.cancel();
    assert_eq!(close_code(&mut ws_alpha).await, Some(CloseCode::Away));
    eventually("the idle paused host's threads end", || {
        actix_threads() == 2
    })
    .await;
    assert!(
        !host.is_finished(),
        "a paused host returns when its token fires"
    );
    second_token.cancel();
    host_token.cancel();
    for h in [host, second] {
        tokio::time::timeout(PROMPTLY, h)
            .await
            .expect("a host returns promptly after cancellation")
            .expect("host task did not panic")
            .expect("host ran");
    }
    worker_token.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_a_host_that_ended_returns_at_once() {
    let redis = testkit::RedisServer::start();
    let client = client::Client::connect(&redis.url())
        .await
        .expect("connect the client");
    let token = CancellationToken::new();
    let pause = Pause::new();
    let host = tokio::spawn(server_ws::run_many_pausable(
        Vec::new(),
        ServerTiming::default(),
        client,
        token.clone(),
        pause.clone(),
        server_ws::Budget::unbounded(),
    ));
    token.cancel();
    host.await.expect("no panic").expect("host ran");
    tokio::time::timeout(PROMPTLY, pause.pause())
        .await
        .expect("pause returns once the host has ended");
}
