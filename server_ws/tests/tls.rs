//! A circle served with a [`server_ws::TlsConfig`]: a client that trusts the
//! certificate speaks JSON-RPC over `wss://`; one that does not trust it, or
//! speaks plain `ws://` to the TLS port, gets no WebSocket.

mod common;

use std::sync::Arc;

use common::{Fixture, call, play};
use tokio_tungstenite::Connector;

struct Certificate {
    _dir: tempfile::TempDir,
    config: server_ws::TlsConfig,
    der: rustls::pki_types::CertificateDer<'static>,
}

fn certificate() -> Certificate {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let pair = rcgen::generate_simple_self_signed(names).expect("rcgen");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, pair.cert.pem()).expect("write cert");
    std::fs::write(&key, pair.signing_key.serialize_pem()).expect("write key");
    let config = server_ws::TlsConfig::from_pem_files(&cert, &key).expect("tls config");
    Certificate {
        _dir: dir,
        config,
        der: pair.cert.der().clone(),
    }
}

fn trusting(roots: Vec<rustls::pki_types::CertificateDer<'static>>) -> Connector {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root).expect("trust anchor");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    Connector::Rustls(Arc::new(config))
}

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
