//! A circle served with a [`server_ws::TlsConfig`]: a client that trusts the
//! certificate speaks JSON-RPC over `wss://`; one that does not trust it, or
//! speaks plain `ws://` to the TLS port, gets no WebSocket. A connection
//! counts against the host's budget from the moment it is accepted, before
//! its TLS handshake.

mod common;

use std::sync::Arc;

use common::host::Host;
use common::tls::{certificate, trusting};
use common::{Fixture, call, eventually, play};
use tokio::net::TcpStream;
use tokio_tungstenite::Connector;

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
    let cert = certificate();
    let host = Host::start_with(Some(&cert), 64, 3).await;
    let (addr, budget) = (host.addr, Arc::clone(&host.budget));
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
    host.stop().await;
}
