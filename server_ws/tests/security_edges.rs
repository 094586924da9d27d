//! The security surface over real sockets: HTTP/1.0 and
//! plaintext on a `wss://` port, a bogus ClientHello, an `h2`-only ALPN
//! offer, a token in the URL, and Origin edge cases.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tls::{certificate, trusting};
use common::{Fixture, call, play};
use server_ws::Principal;
use sha2::Digest as _;

const ANN: &str = "ann-token-0123456789abcdefghijklmnopq";

fn ann() -> Principal {
    Principal {
        name: "ann".into(),
        token_sha256: sha2::Sha256::digest(ANN.as_bytes()).into(),
        role: client::Role::Write,
    }
}

fn client_config(
    roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root).expect("trust anchor");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Sends `request` over TLS (blocking) and returns what came back, or the
/// TLS error.
fn tls_exchange(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    request: &str,
) -> Result<String, String> {
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let sock = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(8))).ok();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(e) if out.is_empty() => return Err(e.to_string()),
            Err(_) => break,
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn upgrade_request(version: &str, extra: &str) -> String {
    format!(
        "GET /ws HTTP/{version}\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

async fn tls_fixture() -> (Fixture, common::tls::Certificate) {
    let cert = certificate();
    let tls = cert.config.clone();
    let fx = Fixture::start(move |c| {
        c.tls = Some(tls);
        c.principals = vec![ann()];
    })
    .await;
    (fx, cert)
}

async fn still_plays(fx: &Fixture, cert: &common::tls::Certificate) {
    let url = format!("wss://localhost:{}/ws", fx.addr.port());
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {ANN}").parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        req,
        None,
        false,
        Some(trusting(vec![cert.der.clone()])),
    )
    .await
    .expect("a trusting client with the token is upgraded");
    let reply = call(&mut ws, &play(1, "echo:ok")).await;
    assert_eq!(reply["result"]["output"], "ok", "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_0_over_wss_with_the_right_token_is_not_upgraded() {
    let (fx, cert) = tls_fixture().await;
    let config = client_config(vec![cert.der.clone()], &[b"http/1.1"]);
    let addr = fx.addr;
    let req = upgrade_request("1.0", &format!("Authorization: Bearer {ANN}\r\n"));
    let got = tokio::task::spawn_blocking(move || tls_exchange(addr, config, &req))
        .await
        .expect("join")
        .expect("tls");
    assert!(
        got.starts_with("HTTP/1.0 400") || got.starts_with("HTTP/1.1 400"),
        "{got}"
    );
    still_plays(&fx, &cert).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_only_alpn_offer_gets_no_http2() {
    let (fx, cert) = tls_fixture().await;
    let config = client_config(vec![cert.der.clone()], &[b"h2"]);
    let addr = fx.addr;
    let req = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_string();
    let got = tokio::task::spawn_blocking(move || tls_exchange(addr, config, &req))
        .await
        .expect("join");
    // Either the handshake is refused (no common protocol) or the preface
    // is answered as HTTP/1.1; never an HTTP/2 session.
    if let Ok(text) = &got {
        assert!(!text.contains("\0"), "{text:?}");
    }
    still_plays(&fx, &cert).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_and_a_bogus_client_hello_on_the_tls_port_are_closed_promptly() {
    let (fx, cert) = tls_fixture().await;
    let addr = fx.addr;
    let results = tokio::task::spawn_blocking(move || {
        let mut results = Vec::new();
        for bytes in [
            upgrade_request("1.1", &format!("Authorization: Bearer {ANN}\r\n")).into_bytes(),
            // A handshake record whose ClientHello claims 16 MiB.
            {
                let mut b = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0xff, 0xff, 0xff];
                b.extend(std::iter::repeat_n(0x41u8, 16_000));
                b
            },
            // Records of 64 KiB declared length (over the 16 KiB limit).
            vec![0x16, 0x03, 0x03, 0xff, 0xff, 0x01, 0x00, 0x00, 0x10],
        ] {
            let started = Instant::now();
            let mut sock = std::net::TcpStream::connect(addr).expect("connect");
            sock.set_read_timeout(Some(Duration::from_secs(10))).ok();
            let _ = sock.write_all(&bytes);
            let mut out = Vec::new();
            let _ = sock.read_to_end(&mut out);
            results.push((started.elapsed(), out));
        }
        results
    })
    .await
    .expect("join");
    for (i, (took, out)) in results.iter().enumerate() {
        assert!(*took < Duration::from_secs(4), "probe {i} held {took:?}");
        assert!(
            !String::from_utf8_lossy(out).contains("HTTP/1.1 101"),
            "probe {i} upgraded"
        );
    }
    still_plays(&fx, &cert).await;
}

async fn raw(addr: SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("answer in time")
            .expect("read");
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_token_in_the_url_is_never_taken() {
    let fx = Fixture::start(|c| c.principals = vec![ann()]).await;
    for query in [
        format!("token={ANN}"),
        format!("access_token={ANN}"),
        format!("bearer={ANN}"),
    ] {
        let req = upgrade_request("1.1", "").replacen("/ws", &format!("/ws?{query}"), 1);
        let got = raw(fx.addr, &req).await;
        assert!(got.starts_with("HTTP/1.1 401"), "{query}: {got}");
    }
}

#[tokio::test]
async fn origin_edge_cases_on_an_open_circle() {
    let fx = Fixture::start(|_| {}).await;
    for (origin, allowed) in [
        ("null", false),
        ("http://localhost.", false),
        ("http://evil.example", false),
        ("HTTP://LOCALHOST:3000", true),
        ("http://127.0.0.1:5173", true),
        ("http://[::1]:1", true),
        ("http://localhost:3000/", false),
        ("http://xn--localhost", false),
        ("http://127.0.0.1@evil.example", false),
    ] {
        let req = upgrade_request("1.1", &format!("Origin: {origin}\r\n"));
        let got = raw(fx.addr, &req).await;
        let status = if allowed { "101" } else { "403" };
        assert!(
            got.starts_with(&format!("HTTP/1.1 {status}")),
            "{origin}: {got}"
        );
    }
    // Several `Origin`s (a browser sends one) are refused in either order,
    // also when each alone would pass.
    for origins in [
        ["http://127.0.0.1", "http://evil.example"],
        ["http://evil.example", "http://127.0.0.1"],
        ["http://127.0.0.1", "http://localhost"],
    ] {
        let req = upgrade_request(
            "1.1",
            &format!("Origin: {}\r\nOrigin: {}\r\n", origins[0], origins[1]),
        );
        let got = raw(fx.addr, &req).await;
        assert!(got.starts_with("HTTP/1.1 403"), "{origins:?}: {got}");
    }
}
