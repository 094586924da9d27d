//! A circle served with a [`server_ws::TlsConfig`]: a client that trusts the
//! certificate speaks JSON-RPC over `wss://`; one that does not trust it, or
//! speaks plain `ws://` to the TLS port, gets no WebSocket. A connection
//! counts against the host's budget from the moment it is accepted, before
//! its TLS handshake.

mod common;

use std::sync::Arc;

use common::tls::{certificate, trusting};
use common::{Fixture, QUEUE, call, eventually, play, stand_in_worker};
use server_ws::{Budget, CircleServer, Pause, ServerConfig, ServerStatus, ServerTiming};
use tokio::net::TcpStream;
use tokio_tungstenite::Connector;
use tokio_util::sync::CancellationToken;

async fn connect(
    url: String,
    connector: Connector,
) -> Result<common::Ws, tokio_tungstenite::tungstenite::Error> {
    tokio_tungstenite::connect_async_tls_with_config(url, None, false, Some(connector))
        .await
        .map(|(ws, _)| ws)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusting_client_plays_over_wss_and_others_get_no_websocket() {
    let cert = certificate();
    let tls = cert.config.clone();
    let fx = Fixture::start(move |c| c.tls = Some(tls)).await;
    let wss = format!("wss://127.0.0.1:{}/ws", fx.addr.port());

    let mut ws = connect(wss.clone(), trusting(vec![cert.der.clone()]))
        .await
        .expect("a client trusting the certificate is upgraded");
    let reply = call(&mut ws, &play(1, "echo:over tls")).await;
    assert_eq!(reply["result"]["output"], "over tls", "{reply}");
    drop(ws);

    let untrusting = connect(wss, trusting(vec![certificate().der]));
    let err = untrusting
        .await
        .expect_err("another certificate is not trusted");
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );

    let plain = tokio_tungstenite::connect_async(fx.url()).await;
    assert!(plain.is_err(), "a plain client was upgraded on a TLS port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_send_no_client_hello_count_against_the_budget_and_give_their_place_back()
{
    let redis = testkit::RedisServer::start();
    let client = client::Client::connect(&redis.url())
        .await
        .expect("connect the client");
    let worker_token = CancellationToken::new();
    tokio::spawn(stand_in_worker(redis.url(), worker_token.clone()));
    let cert = certificate();
    let mut config = ServerConfig::new("Alpha", QUEUE);
    config.tls = Some(cert.config.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let addr = listener.local_addr().expect("local addr");
    let circle = CircleServer::new(config, listener, Arc::new(ServerStatus::default()));
    let budget = Budget::new("test host", 3);
    let token = CancellationToken::new();
    let host = tokio::spawn(server_ws::run_many_pausable(
        vec![circle],
        ServerTiming::default(),
        client,
        token.clone(),
        Pause::new(),
        Arc::clone(&budget),
    ));
    let wss = format!("wss://{addr}/ws");

    // Three connections that never begin their TLS handshake fill the budget.
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(addr).await.expect("connect"));
    }
    eventually("the silent connections to count", || budget.open() == 3).await;
    let full = connect(wss.clone(), trusting(vec![cert.der.clone()])).await;
    assert!(full.is_err(), "a client was upgraded past the budget");

    drop(silent);
    eventually("the silent connections to give their places back", || {
        budget.open() == 0
    })
    .await;
    let mut ws = connect(wss, trusting(vec![cert.der.clone()]))
        .await
        .expect("a client is upgraded once the budget has room");
    let reply = call(&mut ws, &play(1, "echo:room")).await;
    assert_eq!(reply["result"]["output"], "room", "{reply}");
    drop(ws);
    token.cancel();
    host.await.expect("host task").expect("host");
    worker_token.cancel();
}
