//! Many circles on one shared host (`run_many`): each keeps its own limits,
//! origin allow-list, queue, task timeout and counters.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use server_ws::{CircleServer, ServerConfig, ServerStatus, ServerTiming, codes};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

/// Tries an upgrade at `url` with `origin`; the HTTP status on refusal,
/// `None` on success (the socket is then dropped).
async fn upgrade_status(url: &str, origin: Option<&str>) -> Option<u16> {
    let mut request = url.into_client_request().expect("request");
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", origin.parse().expect("header value"));
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => None,
        Err(tungstenite::Error::Http(response)) => Some(response.status().as_u16()),
        Err(e) => panic!("unexpected upgrade failure: {e}"),
    }
}

async fn connect(url: &str, origin: Option<&str>) -> Ws {
    let mut request = url.into_client_request().expect("request");
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", origin.parse().expect("header value"));
    }
    tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket upgrade")
        .0
}

struct Circle {
    url: String,
    status: Arc<ServerStatus>,
}

fn circle(config: ServerConfig) -> (Circle, CircleServer) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let url = format!("ws://{}/ws", listener.local_addr().expect("local addr"));
    let status = Arc::new(ServerStatus::default());
    let served = CircleServer::new(config, listener, Arc::clone(&status));
    (Circle { url, status }, served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_circles_on_one_host_keep_their_own_limits_counters_and_queues() {
    let redis = testkit::RedisServer::start();
    let client = client::Client::connect(&redis.url())
        .await
        .expect("connect the client");
    let mut alpha = ServerConfig::new("Alpha", "alpha_queue");
    alpha.max_connections = 1;
    alpha.max_message_bytes = 200;
    let mut beta = ServerConfig::new("Beta", "beta_queue");
    beta.max_connections = 2;
    beta.allowed_origins = vec!["https://beta.example".into()];
    beta.task_timeout = Duration::from_millis(300);
    let (a, served_a) = circle(alpha);
    let (b, served_b) = circle(beta);
    // Only Alpha's queue has a worker: Beta's tasks must never reach it.
    let worker_token = CancellationToken::new();
    tokio::spawn(stand_in_worker_on(
        redis.url(),
        "alpha_queue",
        worker_token.clone(),
    ));
    let token = CancellationToken::new();
    let host = tokio::spawn(server_ws::run_many(
        vec![served_a, served_b],
        ServerTiming::default(),
        client,
        token.clone(),
    ));

    // Alpha: one connection at most, no extra origins.
    let mut ws_a = connect(&a.url, None).await;
    assert_eq!(
        call(&mut ws_a, &play(1, "echo:alpha")).await["result"]["output"],
        "alpha"
    );
    assert_eq!(upgrade_status(&a.url, None).await, Some(503));
    assert_eq!(
        upgrade_status(&a.url, Some("https://beta.example")).await,
        Some(403)
    );
    // Beta: its own allow-list and two connections.
    let mut ws_b = connect(&b.url, Some("https://beta.example")).await;
    let _ws_b2 = connect(&b.url, None).await;
    let status_b = Arc::clone(&b.status);
    eventually("two connections on beta", || status_b.connections() == 2).await;
    assert_eq!(upgrade_status(&b.url, None).await, Some(503));
    assert_eq!(a.status.connections(), 1);
    assert_eq!(a.status.refused_upgrades(), 2);
    assert_eq!(b.status.refused_upgrades(), 1);

    // The same 300-byte message: over Alpha's size limit, within Beta's; Beta's
    // queue has no worker, so it times out after Beta's own task timeout.
    let big = play(2, &format!("echo:{}", "x".repeat(300)));
    let reply = call(&mut ws_a, &big).await;
    assert_eq!(code(&reply), codes::LIMIT_EXCEEDED, "{reply}");
    assert_eq!(reply["error"]["data"]["max"], 200);
    let reply = call(&mut ws_b, &big).await;
    assert_eq!(code(&reply), codes::TIMED_OUT, "{reply}");
    assert_eq!(a.status.requests(), 1);
    assert_eq!(b.status.requests(), 1);
    assert_eq!((a.status.in_flight(), b.status.in_flight()), (0, 0));

    token.cancel();
    assert_eq!(close_code(&mut ws_a).await, Some(CloseCode::Away));
    assert_eq!(close_code(&mut ws_b).await, Some(CloseCode::Away));
    tokio::time::timeout(PROMPTLY, host)
        .await
        .expect("run_many returns promptly after cancellation")
        .expect("host task did not panic")
        .expect("host ran");
    worker_token.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_with_no_circles_waits_for_its_token() {
    let redis = testkit::RedisServer::start();
    let client = client::Client::connect(&redis.url())
        .await
        .expect("connect the client");
    let token = CancellationToken::new();
    let host = tokio::spawn(server_ws::run_many(
        Vec::new(),
        ServerTiming::default(),
        client,
        token.clone(),
    ));
    tokio::task::yield_now().await;
    assert!(!host.is_finished());
    token.cancel();
    tokio::time::timeout(PROMPTLY, host)
        .await
        .expect("returns after cancellation")
        .expect("no panic")
        .expect("ok");
}
