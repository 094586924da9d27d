//! What the host's own listeners (`listen.rs`, in place of actix-web's
//! `HttpServer`) must keep doing: an address past its bound is answered 503
//! (plain and TLS), past twice it dropped unanswered, and nothing of a
//! refused connection stays with its address; actix-web's timeouts (request
//! 5 s, TLS handshake 3 s) and no lingering after a refusal.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::eventually;
use common::host::Host;
use common::tls::{Certificate, certificate};

/// The per-address bound of a host of one circle with `--max-connections 1`.
const BOUND: usize = 1 + 64; // server_ws::peers::PENDING_PER_ADDRESS

/// A blocking client stream, plain or TLS.
trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

fn tls_client(cert: &Certificate) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    store.add(cert.der.clone()).expect("trust anchor");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(store)
            .with_no_client_auth(),
    )
}

fn open(addr: SocketAddr, tls: Option<&Arc<rustls::ClientConfig>>) -> Box<dyn Stream> {
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    match tls {
        None => Box::new(tcp),
        Some(config) => {
            let conn = rustls::ClientConnection::new(
                Arc::clone(config),
                "127.0.0.1".try_into().expect("name"),
            )
            .expect("client connection");
            Box::new(rustls::StreamOwned::new(conn, tcp))
        }
    }
}

fn upgrade_request(addr: SocketAddr) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// What the server sends on `stream` after `request`, up to its close (or
/// up to the head of a 101), and how long the close took.
fn ask(stream: &mut dyn Stream, request: &str) -> (String, Duration) {
    let _ = stream.write_all(request.as_bytes());
    let _ = stream.flush();
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        if got.starts_with(b"HTTP/1.1 101") && got.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

async fn past_the_bound_503_and_past_twice_dropped(tls: bool) {
    let cert = certificate();
    let host = Host::start(tls.then_some(&cert)).await;
    let client = tls.then(|| tls_client(&cert));
    let addr = host.addr;
    let budget = Arc::clone(&host.budget);
    let client2 = client.clone();
    tokio::task::spawn_blocking(move || {
        let client = client2.as_ref();
        // The address's bound, held by connections that send nothing.
        let held: Vec<TcpStream> = (0..BOUND)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(2);
        while budget.open() < BOUND {
            assert!(Instant::now() < deadline, "held: {}", budget.open());
            std::thread::sleep(Duration::from_millis(5));
        }
        // One more is served, and answered 503; the answer closes it at once.
        let mut over = open(addr, client);
        let (answer, closing) = ask(&mut *over, &upgrade_request(addr));
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
        assert!(
            answer.contains("too many connections from this address"),
            "{answer:?}"
        );
        assert!(
            closing < Duration::from_millis(500),
            "the 503 lingered {closing:?}"
        );
        drop(over);
        // Up to twice the bound they are still taken; one past it is dropped
        // unanswered.
        let more: Vec<TcpStream> = (0..BOUND)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(2);
        while budget.open() < 2 * BOUND {
            assert!(Instant::now() < deadline, "held: {}", budget.open());
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut dropped = TcpStream::connect(addr).expect("connect");
        dropped
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        match dropped.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("past twice the bound: {other:?}"),
        }
        drop((held, more, dropped));
        let deadline = Instant::now() + Duration::from_secs(2);
        while budget.open() > 0 {
            assert!(Instant::now() < deadline, "held: {}", budget.open());
            std::thread::sleep(Duration::from_millis(5));
        }
        // Nothing of the refused ones stays with the address: it is upgraded.
        let mut again = open(addr, client);
        let (answer, _) = ask(&mut *again, &upgrade_request(addr));
        assert!(answer.starts_with("HTTP/1.1 101"), "{answer:?}");
    })
    .await
    .expect("client");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_past_its_address_bound_a_connection_is_answered_503_and_past_twice_dropped() {
    past_the_bound_503_and_past_twice_dropped(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_past_its_address_bound_a_connection_is_answered_503_and_past_twice_dropped() {
    past_the_bound_503_and_past_twice_dropped(true).await;
}

/// How long the server keeps a connection that sends nothing (after `tls`'s
/// handshake when given).
async fn silent_for(tls: bool, handshake: bool) -> Duration {
    let cert = certificate();
    let host = Host::start(tls.then_some(&cert)).await;
    let client = tls.then(|| tls_client(&cert));
    let addr = host.addr;
    let budget = Arc::clone(&host.budget);
    let kept = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut stream: Box<dyn Stream> = if handshake {
            let mut s = open(addr, client.as_ref());
            // A zero-length write drives the handshake to its end.
            s.write_all(b"").expect("handshake");
            s.flush().expect("handshake");
            s
        } else {
            let tcp = TcpStream::connect(addr).expect("connect");
            tcp.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            Box::new(tcp)
        };
        let mut buf = [0u8; 64];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let kept = started.elapsed();
        let deadline = Instant::now() + Duration::from_secs(2);
        while budget.open() > 0 {
            assert!(Instant::now() < deadline, "its place stays taken");
            std::thread::sleep(Duration::from_millis(5));
        }
        kept
    })
    .await
    .expect("client");
    host.stop().await;
    kept
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_plain_connection_is_closed_by_the_5_s_request_timeout() {
    let kept = silent_for(false, false).await;
    assert!(
        kept > Duration::from_millis(4500) && kept < Duration::from_millis(6500),
        "{kept:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_connection_that_sends_no_client_hello_is_closed_by_the_3_s_handshake_timeout() {
    let kept = silent_for(true, false).await;
    assert!(
        kept > Duration::from_millis(2500) && kept < Duration::from_millis(4500),
        "{kept:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_tls_connection_after_its_handshake_is_closed_by_the_5_s_request_timeout() {
    let kept = silent_for(true, true).await;
    assert!(
        kept > Duration::from_millis(4500) && kept < Duration::from_millis(6500),
        "{kept:?}"
    );
}

/// A refusal (404 for another path) closes its connection at once, plain
/// and TLS, and the TLS listener negotiates HTTP/1.1 alone (no h2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_closes_at_once_and_tls_offers_http_1_1_only() {
    let cert = certificate();
    for tls in [false, true] {
        let host = Host::start(tls.then_some(&cert)).await;
        let mut client = tls.then(|| tls_client(&cert));
        if let Some(config) = client.as_mut() {
            let mut with_alpn = (**config).clone();
            with_alpn.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            *config = Arc::new(with_alpn);
        }
        let addr = host.addr;
        tokio::task::spawn_blocking(move || {
            let tcp = TcpStream::connect(addr).expect("connect");
            tcp.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let request = format!("GET /other HTTP/1.1\r\nHost: {addr}\r\n\r\n");
            let (answer, closing) = match client {
                None => ask(&mut { tcp }, &request),
                Some(config) => {
                    let conn = rustls::ClientConnection::new(
                        config,
                        "127.0.0.1".try_into().expect("name"),
                    )
                    .expect("client connection");
                    let mut s = rustls::StreamOwned::new(conn, tcp);
                    s.write_all(b"").expect("handshake");
                    let got = ask(&mut s, &request);
                    assert_eq!(
                        s.conn.alpn_protocol(),
                        Some(&b"http/1.1"[..]),
                        "ALPN chose another protocol"
                    );
                    got
                }
            };
            assert!(answer.starts_with("HTTP/1.1 404"), "{tls}: {answer:?}");
            assert!(
                closing < Duration::from_millis(500),
                "{tls}: closed after {closing:?}"
            );
        })
        .await
        .expect("client");
        host.stop().await;
    }
}

/// A graceful stop of a TLS host: an upgraded connection is closed with
/// 1001 and the host returns; its place is given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_host_stops_gracefully_closing_its_websockets_with_1001() {
    use futures_util::StreamExt;
    let cert = certificate();
    let host = Host::start(Some(&cert)).await;
    let url = format!("wss://{}/ws", host.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        url,
        None,
        false,
        Some(common::tls::trusting(vec![cert.der.clone()])),
    )
    .await
    .expect("upgrade");
    let budget = Arc::clone(&host.budget);
    eventually("the connection to count", || budget.open() == 1).await;
    let started = Instant::now();
    host.token.cancel();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => {}
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(
        close.map(|f| u16::from(f.code)),
        Some(1001),
        "the close code"
    );
    drop(ws);
    tokio::time::timeout(Duration::from_secs(5), host.host)
        .await
        .expect("the host returns")
        .expect("host task")
        .expect("host");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(budget.open(), 0, "a place stayed taken");
    host.worker.cancel();
}

/// A connection from `from` (a fixed source address), with the address
/// reusable at once.
fn connect_from(from: SocketAddr, to: SocketAddr) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_reuse_address(true).expect("reuse");
    socket.bind(&from.into()).expect("bind the source address");
    socket.connect(&to.into()).expect("connect");
    let tcp: TcpStream = socket.into();
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    tcp
}

/// A connection within its address's bound is served, whatever a connection
/// closed before it from the same source address and port was: a note left
/// by one past its bound (`Pending`, by peer address) must not mark the
/// next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_within_the_bound_is_not_answered_503_for_a_reset_one_of_its_source_port() {
    let cert = certificate();
    let host = Host::start_with(Some(&cert), 2, 10_000).await;
    // Another address's WebSocket keeps the host's one worker busy (a
    // large message to parse) while `a` is reset and `b` comes.
    let from_other = connect_from("127.0.0.2:0".parse().expect("addr"), host.addr);
    from_other.set_nonblocking(true).expect("nonblocking");
    let (busy, _) = tokio_tungstenite::client_async_tls_with_config(
        format!("wss://127.0.0.1:{}/ws", host.addr.port()),
        tokio::net::TcpStream::from_std(from_other).expect("tokio stream"),
        None,
        Some(common::tls::trusting(vec![cert.der.clone()])),
    )
    .await
    .expect("upgrade");
    let busy = Arc::new(tokio::sync::Mutex::new(busy));
    let rt = tokio::runtime::Handle::current();
    let client = tls_client(&cert);
    let addr = host.addr;
    let budget = Arc::clone(&host.budget);
    let bound = 2 + 64;
    let wrong = tokio::task::spawn_blocking(move || {
        let wait_for = |n: usize| {
            let deadline = Instant::now() + Duration::from_secs(2);
            while budget.open() != n + 1 {
                assert!(Instant::now() < deadline, "held {} not {n}", budget.open());
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        let mut wrong = Vec::new();
        for round in 0..40u16 {
            // The bound, and one past it from `from` (noted, its handshake
            // not begun).
            let mut held: Vec<TcpStream> = (0..bound)
                .map(|_| TcpStream::connect(addr).expect("connect"))
                .collect();
            wait_for(bound);
            let a = connect_from("127.0.0.1:0".parse().expect("addr"), addr);
            let from = a.local_addr().expect("source address");
            wait_for(bound + 1);
            // Two others leave: the address is below its bound once `a` goes.
            held.truncate(bound - 2);
            wait_for(bound - 1);
            // `a` is reset and `b` comes from the same source port at once.
            socket2::SockRef::from(&a)
                .set_linger(Some(Duration::ZERO))
                .expect("linger");
            let busy = Arc::clone(&busy);
            rt.block_on(async move {
                use futures_util::SinkExt;
                let big = format!("[{}0]", "0,".repeat(480_000));
                busy.lock()
                    .await
                    .send(tokio_tungstenite::tungstenite::Message::text(big))
                    .await
                    .expect("send");
            });
            std::thread::sleep(Duration::from_millis(u64::from(round % 8)));
            drop(a);
            let b = connect_from(from, addr);
            let conn = rustls::ClientConnection::new(
                Arc::clone(&client),
                "127.0.0.1".try_into().expect("name"),
            )
            .expect("client connection");
            let mut b = rustls::StreamOwned::new(conn, b);
            let (answer, _) = ask(&mut b, &upgrade_request(addr));
            if !answer.starts_with("HTTP/1.1 101") {
                wrong.push(format!(
                    "round {round}: {}",
                    answer.lines().next().unwrap_or("")
                ));
            }
            drop((b, held));
            wait_for(0);
        }
        wrong
    })
    .await
    .expect("client");
    host.stop().await;
    assert!(wrong.is_empty(), "{} of 40 refused: {wrong:?}", wrong.len());
}
