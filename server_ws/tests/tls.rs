//! A circle served with a [`server_ws::TlsConfig`]: a client that trusts the
//! certificate speaks JSON-RPC over `wss://`; one that does not trust it, or
//! speaks plain `ws://` to the TLS port, gets no WebSocket.

mod common;

use common::tls::{certificate, trusting};
use common::{Fixture, call, play};
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
