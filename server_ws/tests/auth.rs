//! Upgrade authentication of a circle with principals: raw HTTP over a real
//! socket for the refusals (401, 429) and tokio-tungstenite for the accepted
//! upgrades; the task hash of an authenticated `play` names the principal.

mod common;

use std::net::SocketAddr;

use common::{Fixture, call, play};
use server_ws::{AUTH_MAX_FAILURES, Principal};
use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};

const ANN: &str = "ann-token-0123456789abcdefghijklmnopq";
const BOB: &str = "bob-token-0123456789abcdefghijklmnopq";

fn principal(name: &str, token: &str, role: client::Role) -> Principal {
    Principal {
        name: name.to_string(),
        token_sha256: sha2::Sha256::digest(token.as_bytes()).into(),
        role,
    }
}

/// A circle whose principals are ann (read) and bob (write).
async fn protected() -> Fixture {
    Fixture::start(|c| {
        c.principals = vec![
            principal("ann", ANN, client::Role::Read),
            principal("bob", BOB, client::Role::Write),
        ];
    })
    .await
}

/// What a raw upgrade request got back.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Lowercased names, without `date` (it differs between two answers).
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `GET /ws` with the upgrade headers and `extra` from `from` (an
/// address of this machine) and reads the answer's head (and body, if any).
async fn upgrade_from(from: &str, addr: SocketAddr, extra: &[(&str, &str)]) -> Answer {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{from}:0").parse().expect("address"))
        .expect("bind the client side");
    let mut stream = socket.connect(addr).await.expect("connect");
    let mut request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for (name, value) in extra {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = tokio::time::timeout(common::PROMPTLY, stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(
            n > 0,
            "closed before the head: {:?}",
            String::from_utf8_lossy(&bytes)
        );
        bytes.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8(bytes[..head_end].to_vec()).expect("utf-8 head");
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .filter(|(n, _)| n != "date")
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().expect("content-length"));
    let mut body = bytes[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).await.expect("read body");
        assert!(n > 0, "closed inside the body");
        body.extend_from_slice(&buf[..n]);
    }
    Answer {
        status,
        headers,
        body: String::from_utf8(body).expect("utf-8 body"),
    }
}

async fn upgrade(addr: SocketAddr, extra: &[(&str, &str)]) -> Answer {
    upgrade_from("127.0.0.1", addr, extra).await
}

/// Connects with tokio-tungstenite, adding `header`.
async fn connect_with(fx: &Fixture, name: &str, value: &str) -> (common::Ws, Option<String>) {
    let mut request = fx.url().into_client_request().expect("request");
    request.headers_mut().insert(
        HeaderName::from_bytes(name.as_bytes()).expect("header name"),
        HeaderValue::from_str(value).expect("header value"),
    );
    let (ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket upgrade");
    let protocol = response
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().expect("ascii").to_string());
    (ws, protocol)
}

#[tokio::test]
async fn a_missing_and_a_wrong_token_get_the_same_401() {
    let fx = protected().await;
    let missing = upgrade(fx.addr, &[]).await;
    assert_eq!(missing.status, 401, "{missing:?}");
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    assert!(missing.body.contains("Bearer <token>"), "{missing:?}");
    let wrong = upgrade(fx.addr, &[("Authorization", "Bearer not-a-token")]).await;
    let wrong_protocol =
        upgrade(fx.addr, &[("Sec-WebSocket-Protocol", "bearer.not-a-token")]).await;
    let not_bearer = upgrade(fx.addr, &[("Authorization", &format!("Basic {ANN}"))]).await;
    for other in [&wrong, &wrong_protocol, &not_bearer] {
        assert_eq!(other.status, missing.status);
        assert_eq!(other.headers, missing.headers);
        assert_eq!(other.body, missing.body);
    }
    assert!(!missing.body.contains("ann") && !missing.body.contains("bob"));
}

/// An upgrade is one guess: offering several tokens gets the 401 a wrong
/// one gets, whichever comes first, and so does an empty `Bearer` header
/// beside a right subprotocol (the header's token counts).
#[tokio::test]
async fn several_tokens_or_an_empty_bearer_header_get_the_same_401() {
    let fx = protected().await;
    let missing = upgrade(fx.addr, &[]).await;
    let ann = format!("bearer.{ANN}");
    let bob = format!("bearer.{BOB}");
    let offers = [
        vec![("Sec-WebSocket-Protocol", format!("{ann}, {bob}"))],
        vec![(
            "Sec-WebSocket-Protocol",
            format!("{ann}, bearer.not-a-token"),
        )],
        vec![(
            "Sec-WebSocket-Protocol",
            format!("bearer.not-a-token, {ann}"),
        )],
        vec![
            ("Sec-WebSocket-Protocol", ann.clone()),
            ("Sec-WebSocket-Protocol", format!("jsonrpc, {bob}")),
        ],
        vec![
            ("Authorization", "Bearer ".to_string()),
            ("Sec-WebSocket-Protocol", ann.clone()),
        ],
        vec![
            ("Authorization", format!("Bearer {ANN}")),
            ("Authorization", "Bearer not-a-token".to_string()),
        ],
        vec![
            ("Authorization", "Bearer not-a-token".to_string()),
            ("Authorization", format!("Bearer {ANN}")),
        ],
    ];
    for offer in &offers {
        let extra: Vec<(&str, &str)> = offer.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let got = upgrade(fx.addr, &extra).await;
        assert_eq!(got.status, 401, "{offer:?}: {got:?}");
        assert_eq!(got.headers, missing.headers, "{offer:?}");
        assert_eq!(got.body, missing.body, "{offer:?}");
    }
    // Each of them alone gets in.
    for one in [&ann, &bob] {
        let got = upgrade(fx.addr, &[("Sec-WebSocket-Protocol", one)]).await;
        assert_eq!(got.status, 101, "{got:?}");
    }
}

#[tokio::test]
async fn a_token_of_another_circle_gets_401() {
    let fx = protected().await;
    let other_circle_token = "carl-token-of-another-circle-0123456789";
    let answer = upgrade(
        fx.addr,
        &[("Authorization", &format!("Bearer {other_circle_token}"))],
    )
    .await;
    assert_eq!(answer.status, 401, "{answer:?}");
    // And the other circle's own principal is not one of this circle's.
    let other = Fixture::start(|c| {
        c.principals = vec![principal("carl", other_circle_token, client::Role::Write)];
    })
    .await;
    let answer = upgrade(other.addr, &[("Authorization", &format!("Bearer {ANN}"))]).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    let answer = upgrade(
        other.addr,
        &[("Authorization", &format!("Bearer {other_circle_token}"))],
    )
    .await;
    assert_eq!(answer.status, 101, "{answer:?}");
}

#[tokio::test]
async fn the_right_token_in_the_header_upgrades_and_plays() {
    let fx = protected().await;
    let (mut ws, protocol) = connect_with(&fx, "authorization", &format!("Bearer {BOB}")).await;
    assert_eq!(protocol, None, "no subprotocol was offered");
    let reply = call(&mut ws, &play(1, "echo:hi")).await;
    assert_eq!(reply["result"]["output"], "hi", "{reply}");
}

#[tokio::test]
async fn the_right_token_as_a_subprotocol_upgrades_and_the_subprotocol_is_echoed() {
    let fx = protected().await;
    let offered = format!("bearer.{ANN}");
    let (mut ws, protocol) = connect_with(
        &fx,
        "sec-websocket-protocol",
        &format!("jsonrpc, {offered}"),
    )
    .await;
    assert_eq!(protocol.as_deref(), Some(offered.as_str()));
    let reply = call(&mut ws, &play(1, "echo:hi")).await;
    assert_eq!(reply["result"]["output"], "hi", "{reply}");
    // Raw: the 101 carries it too.
    let answer = upgrade(fx.addr, &[("Sec-WebSocket-Protocol", &offered)]).await;
    assert_eq!(answer.status, 101, "{answer:?}");
    assert_eq!(
        answer.header("sec-websocket-protocol"),
        Some(offered.as_str())
    );
    // Beside an `Authorization` header of another scheme (a browser sends
    // its `Basic` credentials on its own), the subprotocol's token counts.
    let basic = upgrade(
        fx.addr,
        &[
            ("Authorization", "Basic dXNlcjpwYXNz"),
            ("Sec-WebSocket-Protocol", &offered),
        ],
    )
    .await;
    assert_eq!(basic.status, 101, "{basic:?}");
}

#[tokio::test]
async fn after_max_failures_an_address_gets_429_even_with_the_right_token_and_others_do_not() {
    let fx = protected().await;
    for i in 0..AUTH_MAX_FAILURES {
        let answer = upgrade(fx.addr, &[("Authorization", "Bearer guess")]).await;
        assert_eq!(answer.status, 401, "attempt {i}: {answer:?}");
    }
    let limited = upgrade(fx.addr, &[("Authorization", "Bearer guess")]).await;
    assert_eq!(limited.status, 429, "{limited:?}");
    let seconds: u64 = limited
        .header("retry-after")
        .and_then(|s| s.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&seconds), "{seconds}");
    // While limited, the token is not even looked at.
    let right = upgrade(fx.addr, &[("Authorization", &format!("Bearer {BOB}"))]).await;
    assert_eq!(right.status, 429, "{right:?}");
    // Another address of this machine is unaffected.
    let elsewhere = upgrade_from(
        "127.0.0.2",
        fx.addr,
        &[("Authorization", &format!("Bearer {BOB}"))],
    )
    .await;
    assert_eq!(elsewhere.status, 101, "{elsewhere:?}");
    let elsewhere = upgrade_from("127.0.0.2", fx.addr, &[]).await;
    assert_eq!(elsewhere.status, 401, "{elsewhere:?}");
}

#[tokio::test]
async fn an_open_circle_needs_no_token_and_ignores_one() {
    let fx = Fixture::start(|_| {}).await;
    assert_eq!(upgrade(fx.addr, &[]).await.status, 101);
    assert_eq!(
        upgrade(fx.addr, &[("Authorization", "Bearer whatever")])
            .await
            .status,
        101
    );
    let mut ws = fx.connect().await;
    let reply = call(&mut ws, &play(1, "echo:open")).await;
    let task_id = reply["result"]["task_id"]
        .as_str()
        .expect("task id")
        .to_string();
    let hash = task_hash(&fx, &task_id).await;
    assert!(
        !hash.contains_key("caller") && !hash.contains_key("role"),
        "{hash:?}"
    );
}

#[tokio::test]
async fn the_task_hash_of_an_authenticated_play_names_the_principal_and_role() {
    let fx = protected().await;
    for (token, name, role) in [(ANN, "ann", "read"), (BOB, "bob", "write")] {
        let (mut ws, _) = connect_with(&fx, "authorization", &format!("Bearer {token}")).await;
        let reply = call(&mut ws, &play(1, "echo:who")).await;
        let task_id = reply["result"]["task_id"]
            .as_str()
            .expect("task id")
            .to_string();
        let hash = task_hash(&fx, &task_id).await;
        assert_eq!(
            hash.get("caller").map(String::as_str),
            Some(name),
            "{hash:?}"
        );
        assert_eq!(hash.get("role").map(String::as_str), Some(role), "{hash:?}");
        assert!(
            hash.values().all(|v| !v.contains(token)),
            "the token never reaches Redis: {hash:?}"
        );
    }
}

async fn task_hash(fx: &Fixture, task_id: &str) -> std::collections::HashMap<String, String> {
    let redis = redis::Client::open(fx.redis.url()).expect("redis url");
    let mut conn = redis
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");
    redis::cmd("HGETALL")
        .arg(client::keys::task_details(task_id))
        .query_async(&mut conn)
        .await
        .expect("HGETALL")
}
