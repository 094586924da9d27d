//! Connections that never finish their TLS handshake, through the built
//! binary. README ("Limits to know") and `server_ws::peers` bound what one
//! client address can hold at the circles' ports, so that one address cannot
//! shut another out (`unauthenticated_load.rs` shows it for `ws://`). On a
//! `wss://` circle the same must hold for connections that connect and then
//! send nothing, not even a ClientHello.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Orchestrator, Sandbox, hold_quietly, port};

/// Silent connections the one client (127.0.0.2) holds: past its bound of
/// 128 at one circle (64 upgraded + 64 pending), as many as
/// `unauthenticated_load.rs`.
const HELD: usize = 900;

/// A TLS handshake and a WebSocket upgrade from 127.0.0.1 within 3 s: the
/// status line's code, or why there is none.
fn upgrade_over_tls(port: u16, config: Arc<rustls::ClientConfig>) -> Result<u16, String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    let tcp = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(3))
        .map_err(|e| format!("connect: {e}"))?;
    let left = deadline.saturating_duration_since(Instant::now());
    tcp.set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tls.write_all(request.as_bytes())
        .map_err(|e| format!("handshake or write: {e}"))?;
    let mut head = [0u8; 64];
    let n = tls.read(&mut head).map_err(|e| format!("read: {e}"))?;
    let line = String::from_utf8_lossy(&head[..n]).to_string();
    line.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(format!("not HTTP: {line:?}"))
}

#[test]
fn silent_tls_connections_of_one_address_past_its_bound_do_not_shut_another_address_out() {
    let redis = testkit::RedisServer::start();
    let sandbox = Sandbox::new();
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let pair = rcgen::generate_simple_self_signed(names).expect("rcgen");
    let cert = sandbox.write("cert.pem", &pair.cert.pem());
    let key = sandbox.write("key.pem", &pair.signing_key.serialize_pem());
    let circle = port();
    let config = sandbox.circles(&[(1, "Alpha", circle)]);
    let tls_args = [
        "--tls-cert",
        cert.to_str().expect("utf-8"),
        "--tls-key",
        key.to_str().expect("utf-8"),
    ];
    let mut o = Orchestrator::start(&sandbox, &config, &redis.url(), &tls_args);
    o.wait_table();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(pair.cert.der().clone()).expect("trust the cert");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    assert_eq!(
        upgrade_over_tls(circle, client.clone()),
        Ok(101),
        "before the load"
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let stop = Arc::new(AtomicBool::new(false));
    let holders: Vec<_> = (0..HELD)
        .map(|_| runtime.spawn(hold_quietly([127, 0, 0, 2], circle, Arc::clone(&stop))))
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let mut upgrades = Vec::new();
    for _ in 0..6 {
        let t = Instant::now();
        let u = upgrade_over_tls(circle, client.clone());
        eprintln!("probe: {u:?} in {:?}", t.elapsed());
        upgrades.push(u);
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, Ordering::Relaxed);
    for h in holders {
        h.abort();
    }
    drop(runtime);
    assert!(
        upgrades.iter().all(|u| *u == Ok(101)),
        "while 127.0.0.2 held {HELD} connections that never began their TLS handshake \
         (its bound is 128), TLS upgrades from 127.0.0.1 got {upgrades:?}"
    );
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}
