//! The WebSocket side: size limit, binary frames, origin check, connection
//! limit, heartbeat, shutdown.

mod common;

use std::time::Duration;

use common::{Fixture, PROMPTLY, Ws, call, code, eventually, play, recv, send};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use server_ws::{ServerTiming, codes};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::{self, Message};

/// The close frame the server sends next (skipping pings), or `None` when the
/// connection ended without one.
async fn next_close(ws: &mut Ws) -> Option<CloseFrame> {
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        match tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("the server closes within the deadline")
        {
            Some(Ok(Message::Close(frame))) => return frame,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(other)) => panic!("expected a close frame, got {other:?}"),
            Some(Err(_)) | None => return None,
        }
    }
}

/// Tries an upgrade with `origin`; the HTTP status on refusal, `None` on success.
async fn upgrade_status(fx: &Fixture, origin: Option<&str>) -> Option<u16> {
    let mut request = fx.url().into_client_request().expect("request");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_message_gets_32003_and_the_connection_keeps_working() {
    let fx = Fixture::start(|c| c.max_message_bytes = 1024).await;
    let mut ws = fx.connect().await;
    let big = play(1, &format!("echo:{}", "x".repeat(2000)));
    let reply = call(&mut ws, &big).await;
    assert_eq!(code(&reply), codes::LIMIT_EXCEEDED, "{reply}");
    assert_eq!(reply["id"], Value::Null);
    assert_eq!(reply["error"]["data"]["max"], 1024);
    let reply = call(&mut ws, &play(2, "echo:still here")).await;
    assert_eq!(reply["result"]["output"], "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_fragmented_message_gets_32003_and_the_connection_keeps_working() {
    let fx = Fixture::start(|c| c.max_message_bytes = 1024).await;
    let mut ws = fx.connect().await;
    let body = play(1, &format!("echo:{}", "y".repeat(1500)));
    let (a, b) = body.as_bytes().split_at(800);
    let first = Frame::message(a.to_vec(), OpCode::Data(Data::Text), false);
    let last = Frame::message(b.to_vec(), OpCode::Data(Data::Continue), true);
    ws.send(Message::Frame(first))
        .await
        .expect("send first fragment");
    ws.send(Message::Frame(last))
        .await
        .expect("send last fragment");
    let reply = recv(&mut ws).await;
    assert_eq!(code(&reply), codes::LIMIT_EXCEEDED, "{reply}");

    // A fragmented message within the limit is reassembled and served.
    let body = play(2, "echo:in pieces");
    let (a, b) = body.as_bytes().split_at(10);
    let first = Frame::message(a.to_vec(), OpCode::Data(Data::Text), false);
    let last = Frame::message(b.to_vec(), OpCode::Data(Data::Continue), true);
    ws.send(Message::Frame(first))
        .await
        .expect("send first fragment");
    ws.send(Message::Frame(last))
        .await
        .expect("send last fragment");
    assert_eq!(recv(&mut ws).await["result"]["output"], "in pieces");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_first_fragment_gets_32003_and_its_continuations_are_skipped() {
    // The first fragment alone is over the limit: the codec drops it, so the
    // continuation frames that follow belong to a message it never started.
    let fx = Fixture::start(|c| c.max_message_bytes = 1024).await;
    let mut ws = fx.connect().await;
    let body = play(1, &format!("echo:{}", "z".repeat(3000)));
    let bytes = body.as_bytes();
    let frames = [
        Frame::message(bytes[..2000].to_vec(), OpCode::Data(Data::Text), false),
        Frame::message(
            bytes[2000..2500].to_vec(),
            OpCode::Data(Data::Continue),
            false,
        ),
        Frame::message(bytes[2500..].to_vec(), OpCode::Data(Data::Continue), true),
    ];
    for frame in frames {
        ws.send(Message::Frame(frame)).await.expect("send fragment");
    }
    let reply = recv(&mut ws).await;
    assert_eq!(code(&reply), codes::LIMIT_EXCEEDED, "{reply}");
    assert_eq!(reply["error"]["data"]["max"], 1024);
    // The connection is still open and serves the next message.
    let reply = call(&mut ws, &play(2, "echo:after the big one")).await;
    assert_eq!(reply["result"]["output"], "after the big one", "{reply}");
    // An orphan continuation with no oversize frame before it is still a
    // protocol error.
    ws.send(Message::Frame(Frame::message(
        b"stray".to_vec(),
        OpCode::Data(Data::Continue),
        true,
    )))
    .await
    .expect("send stray continuation");
    let close = next_close(&mut ws).await.expect("a close frame");
    assert_eq!(close.code, CloseCode::Protocol);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_frame_that_is_not_utf8_gets_32700_and_the_connection_keeps_working() {
    let fx = Fixture::start(|_| {}).await;
    let mut ws = fx.connect().await;
    ws.send(Message::Frame(Frame::message(
        vec![b'{', 0xff, 0xfe, b'}'],
        OpCode::Data(Data::Text),
        true,
    )))
    .await
    .expect("send");
    let reply = recv(&mut ws).await;
    assert_eq!(code(&reply), -32700, "{reply}");
    let reply = call(&mut ws, &play(2, "echo:still here")).await;
    assert_eq!(reply["result"]["output"], "still here", "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_with_a_reserved_bit_set_closes_with_1002_at_once() {
    // No extension is negotiated, so RSV1-3 must be 0 (RFC 6455 §5.2). The
    // codec refuses such a frame without consuming it: answering it as a bad
    // message instead of closing would answer it again, forever.
    for bit in 1..=3 {
        let fx = Fixture::start(|_| {}).await;
        let mut ws = fx.connect().await;
        let mut frame = Frame::message(b"{}".to_vec(), OpCode::Data(Data::Text), true);
        match bit {
            1 => frame.header_mut().rsv1 = true,
            2 => frame.header_mut().rsv2 = true,
            _ => frame.header_mut().rsv3 = true,
        }
        ws.send(Message::Frame(frame)).await.expect("send");
        let close = next_close(&mut ws)
            .await
            .unwrap_or_else(|| panic!("RSV{bit}: a close frame, not a stream of replies"));
        assert_eq!(close.code, CloseCode::Protocol, "RSV{bit}");
    }
}

/// A frame the codec refuses (a reserved bit, a reserved opcode, no mask)
/// closes the connection with 1002 whatever length it declares; declared
/// over the message limit it is not answered as an oversize message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_breaking_the_protocol_closes_with_1002_small_or_oversize() {
    let fx = Fixture::start(|c| c.max_message_bytes = 1024).await;
    for len in [10u64, 2000] {
        let rsv1 = {
            let mut h = text_header(len);
            h[0] = 0xc1;
            h
        };
        let reserved_opcode = {
            let mut h = text_header(len);
            h[0] = 0x83;
            h
        };
        let unmasked = {
            let mut h = text_header(len);
            h[1] &= 0x7f;
            h.truncate(10);
            h
        };
        for (what, mut bytes) in [
            ("RSV1", rsv1),
            ("opcode 0x3", reserved_opcode),
            ("unmasked", unmasked),
        ] {
            let mut ws = fx.connect().await;
            bytes.extend(vec![b' '; len as usize]);
            write_raw(&mut ws, &bytes).await;
            let close = next_close(&mut ws)
                .await
                .unwrap_or_else(|| panic!("{what}, {len} bytes: a close frame"));
            assert_eq!(close.code, CloseCode::Protocol, "{what}, {len} bytes");
        }
    }
}

/// An unsolicited pong gets no answer (RFC 6455 §5.5.3), whatever it
/// carries: also not the payload the frame guard's stand-in for an
/// oversize message has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pong_is_never_answered_whatever_its_payload() {
    let fx = Fixture::start(|_| {}).await;
    let mut ws = fx.connect().await;
    for payload in [&b"circles:oversize"[..], b"", b"anything"] {
        ws.send(Message::Pong(payload.to_vec().into()))
            .await
            .expect("send a pong");
    }
    let reply = call(&mut ws, &play(1, "echo:only reply")).await;
    assert_eq!(reply["id"], 1, "{reply}");
    assert_eq!(reply["result"]["output"], "only reply", "{reply}");
}

/// Writes `bytes` straight to the socket under `ws`, past its framing.
async fn write_raw(ws: &mut Ws, bytes: &[u8]) {
    use tokio::io::AsyncWriteExt;
    ws.get_mut().write_all(bytes).await.expect("raw write");
}

/// The header of a masked text frame declaring `len` payload bytes (64-bit
/// length form), with mask 0 so the payload goes as it is.
fn text_header(len: u64) -> Vec<u8> {
    let mut h = vec![0x81, 0x80 | 127];
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 0]);
    h
}

/// This process's resident memory, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_frame_is_refused_when_its_header_arrives_and_its_body_is_not_kept() {
    let fx = Fixture::start(|c| c.max_message_bytes = 1024).await;
    // A frame declared at 3 MiB: refused before any of its body is sent,
    // then its body is read and dropped and the connection goes on.
    let mut ws = fx.connect().await;
    write_raw(&mut ws, &text_header(3 << 20)).await;
    let reply = recv(&mut ws).await;
    assert_eq!(code(&reply), codes::LIMIT_EXCEEDED, "{reply}");
    write_raw(&mut ws, &vec![b' '; 3 << 20]).await;
    let reply = call(&mut ws, &play(2, "echo:after the body")).await;
    assert_eq!(reply["result"]["output"], "after the body", "{reply}");

    // A frame declared at 1 TiB, and 256 MiB of it sent: the server keeps
    // none of it (it does not buffer the frame until it is whole).
    let mut ws = fx.connect().await;
    write_raw(&mut ws, &text_header(1 << 40)).await;
    let reply = recv(&mut ws).await;
    assert_eq!(code(&reply), codes::LIMIT_EXCEEDED, "{reply}");
    let before = rss();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..256 {
        write_raw(&mut ws, &chunk).await;
    }
    // The server has read it all once a second connection is answered after
    // the first one's bytes were written (one server thread serves both).
    let mut other = fx.connect().await;
    let reply = call(&mut other, &play(3, "echo:served")).await;
    assert_eq!(reply["result"]["output"], "served", "{reply}");
    let grown = rss().saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "resident memory grew by {} MiB while 256 MiB of an oversize frame came in",
        grown >> 20
    );
}

/// A masked frame (mask key 0) with first byte `first` and `payload`.
fn raw_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = text_header(payload.len() as u64);
    f[0] = first;
    f.extend_from_slice(payload);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_before_an_oversize_one_in_the_same_write_is_answered_and_the_connection_stays_open()
 {
    // One write: a request, an oversize first fragment, its last fragment.
    // The oversize message is refused in its place in the stream, and its
    // continuation does not break the connection (the codec's refusal must
    // not come out before the request, or the skip flag is reset and the
    // continuation closes the connection with 1002).
    let fx = Fixture::start(|c| c.max_message_bytes = 1024).await;
    let mut ws = fx.connect().await;
    let mut bytes = raw_frame(0x81, play(1, "echo:first").as_bytes());
    bytes.extend(raw_frame(0x01, &[b' '; 2000]));
    bytes.extend(raw_frame(0x80, b"{}"));
    write_raw(&mut ws, &bytes).await;
    // The request runs on the worker, so its reply may come after the
    // refusal (replies go out as they are ready); both come.
    let (one, two) = (recv(&mut ws).await, recv(&mut ws).await);
    let (answer, refusal) = if one["id"] == 1 {
        (one, two)
    } else {
        (two, one)
    };
    assert_eq!(answer["result"]["output"], "first", "{answer}");
    assert_eq!(code(&refusal), codes::LIMIT_EXCEEDED, "{refusal}");
    let reply = call(&mut ws, &play(2, "echo:still open")).await;
    assert_eq!(reply["result"]["output"], "still open", "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_later_fragment_refuses_its_message_and_never_runs_what_is_left() {
    let fx = Fixture::start(|c| c.max_message_bytes = 1024).await;
    let mut ws = fx.connect().await;
    // Without the oversize middle the fragments would make a valid request
    // that echoes "ab".
    let mut bytes = raw_frame(
        0x01,
        br#"{"jsonrpc":"2.0","id":1,"method":"play","params":{"script":"echo:a"#,
    );
    bytes.extend(raw_frame(0x00, &[b'z'; 2000]));
    bytes.extend(raw_frame(0x80, br#"b"}}"#));
    write_raw(&mut ws, &bytes).await;
    let reply = recv(&mut ws).await;
    assert_eq!(code(&reply), codes::LIMIT_EXCEEDED, "{reply}");
    // Nothing else comes for that message: the next reply is the next request's.
    let reply = call(&mut ws, &play(2, "echo:next")).await;
    assert_eq!(reply["id"], 2, "{reply}");
    assert_eq!(reply["result"]["output"], "next", "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_length_with_the_top_bit_set_closes_with_1002_at_once() {
    let fx = Fixture::start(|_| {}).await;
    let mut ws = fx.connect().await;
    write_raw(&mut ws, &text_header(1 << 63)).await;
    let close = next_close(&mut ws)
        .await
        .expect("a close frame, not a stream of replies");
    assert_eq!(close.code, CloseCode::Protocol);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_frame_gets_an_invalid_request_reply() {
    let fx = Fixture::start(|_| {}).await;
    let mut ws = fx.connect().await;
    ws.send(Message::binary(play(1, "echo:x").into_bytes()))
        .await
        .expect("send binary");
    let reply = recv(&mut ws).await;
    assert_eq!(code(&reply), codes::INVALID_REQUEST, "{reply}");
    assert_eq!(
        call(&mut ws, &play(2, "echo:text")).await["result"]["output"],
        "text"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_origin_upgrade_is_refused_with_403_and_loopback_origins_connect() {
    let fx = Fixture::start(|c| c.allowed_origins = vec!["https://app.example.com".into()]).await;
    assert_eq!(
        upgrade_status(&fx, Some("http://evil.example")).await,
        Some(403)
    );
    assert_eq!(upgrade_status(&fx, Some("null")).await, Some(403));
    assert_eq!(
        upgrade_status(&fx, Some("http://localhost.evil.example")).await,
        Some(403)
    );
    assert_eq!(upgrade_status(&fx, None).await, None);
    assert_eq!(
        upgrade_status(&fx, Some("http://localhost:3000")).await,
        None
    );
    assert_eq!(
        upgrade_status(&fx, Some("http://127.0.0.1:8080")).await,
        None
    );
    assert_eq!(upgrade_status(&fx, Some("http://[::1]:5173")).await, None);
    assert_eq!(
        upgrade_status(&fx, Some("https://app.example.com")).await,
        None
    );
    assert_eq!(fx.status.refused_upgrades(), 3);
    // The refusal says who may connect, naming the option that allows more.
    let mut request = fx.url().into_client_request().expect("request");
    request.headers_mut().insert(
        "Origin",
        "http://evil.example".parse().expect("header value"),
    );
    match tokio_tungstenite::connect_async(request).await {
        Err(tungstenite::Error::Http(response)) => {
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default());
            assert!(body.contains("(--allowed-origin)"), "{body}");
        }
        other => panic!("a foreign origin connected: {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_refused_with_503_until_one_leaves() {
    let fx = Fixture::start(|c| c.max_connections = 2).await;
    let a = fx.connect().await;
    let mut b = fx.connect().await;
    let status = fx.status.clone();
    eventually("two connections", || status.connections() == 2).await;
    assert_eq!(upgrade_status(&fx, None).await, Some(503));
    drop(a);
    eventually("the first connection to be released", || {
        status.connections() == 1
    })
    .await;
    let mut c = fx.connect().await;
    assert_eq!(
        call(&mut c, &play(1, "echo:c")).await["result"]["output"],
        "c"
    );
    assert_eq!(
        call(&mut b, &play(1, "echo:b")).await["result"]["output"],
        "b"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_pings_and_a_client_that_answers_stays_connected() {
    let timing = ServerTiming::heartbeat(Duration::from_millis(50), Duration::from_millis(300));
    let fx = Fixture::start_with(|_| {}, timing, true).await;
    let mut ws = fx.connect().await;
    let mut pings = 0;
    // Reading answers each ping with a pong; keep it up well past the timeout.
    while pings < 15 {
        match tokio::time::timeout(PROMPTLY, ws.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            other => panic!("expected pings, got {other:?}"),
        }
    }
    assert_eq!(fx.status.connections(), 1);
    assert_eq!(
        call(&mut ws, &play(1, "echo:alive")).await["result"]["output"],
        "alive"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_answers_pings_is_dropped() {
    let timing = ServerTiming::heartbeat(Duration::from_millis(50), Duration::from_millis(200));
    let fx = Fixture::start_with(|_| {}, timing, true).await;
    let mut ws = fx.connect().await;
    let status = fx.status.clone();
    eventually("the connection to be counted", || status.connections() == 1).await;
    // Not reading means no pong goes out.
    eventually("the silent client to be dropped", || {
        status.connections() == 0
    })
    .await;
    if let Some(frame) = next_close(&mut ws).await {
        assert_eq!(frame.code, CloseCode::Policy);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_its_replies_is_dropped_instead_of_stalling() {
    let timing = ServerTiming::heartbeat(Duration::from_millis(50), Duration::from_millis(300));
    let fx = Fixture::start_with(|c| c.max_in_flight = 100, timing, true).await;
    let mut ws = fx.connect().await;
    // About 50 MB of replies: far more than socket buffers and the outgoing
    // queue hold, so every send on the server side blocks.
    for id in 0..100 {
        send(&mut ws, &play(id, "big:500000")).await;
    }
    // Keep showing signs of life (unsolicited pongs) without ever reading, so
    // only the blocked sends can tell the server that this client is stuck.
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    while fx.status.connections() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stuck client was never dropped"
        );
        let _ = tokio::time::timeout(
            Duration::from_millis(100),
            ws.send(Message::Pong(Vec::new().into())),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = fx.status.clone();
    eventually("its requests to be abandoned", || status.in_flight() == 0).await;
    // The server still serves others.
    let mut other = fx.connect().await;
    assert_eq!(
        call(&mut other, &play(1, "echo:fine")).await["result"]["output"],
        "fine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_socket_with_1001_and_run_returns() {
    let mut fx = Fixture::start(|_| {}).await;
    let mut a = fx.connect().await;
    let mut b = fx.connect().await;
    assert_eq!(
        call(&mut a, &play(1, "echo:a")).await["result"]["output"],
        "a"
    );
    let status = fx.status.clone();
    eventually("two connections", || status.connections() == 2).await;
    fx.token.cancel();
    for ws in [&mut a, &mut b] {
        let frame = next_close(ws).await.expect("a close frame");
        assert_eq!(frame.code, CloseCode::Away);
        assert!(frame.reason.contains("is stopping"), "{}", frame.reason);
    }
    fx.shut_down().await.expect("run returns Ok");
    assert_eq!(fx.status.connections(), 0);
    assert!(
        tokio_tungstenite::connect_async(fx.url()).await.is_err(),
        "nothing listens after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_requests_in_flight_before_closing() {
    let mut fx = Fixture::start(|_| {}).await;
    let mut ws = fx.connect().await;
    send(&mut ws, &play(1, "sleep:300")).await;
    let status = fx.status.clone();
    eventually("the request to be in flight", || status.in_flight() == 1).await;
    fx.token.cancel();
    let reply = recv(&mut ws).await;
    assert_eq!(reply["id"], 1);
    assert_eq!(reply["result"]["output"], "slept");
    let frame = next_close(&mut ws).await.expect("a close frame");
    assert_eq!(frame.code, CloseCode::Away);
    fx.shut_down().await.expect("run returns Ok");
}

/// The server's frames in `bytes` that are whole: (opcode, payload) each, and
/// how many bytes they took.
fn server_frames(bytes: &[u8]) -> (Vec<(u8, Vec<u8>)>, usize) {
    let mut frames = Vec::new();
    let mut at = 0;
    while bytes.len() >= at + 2 {
        let (len, header) = match bytes[at + 1] & 0x7F {
            126 if bytes.len() >= at + 4 => (
                u64::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]])),
                4,
            ),
            127 if bytes.len() >= at + 10 => (
                u64::from_be_bytes(bytes[at + 2..at + 10].try_into().expect("8 bytes")),
                10,
            ),
            126 | 127 => break,
            n => (u64::from(n), 2),
        };
        let end = at + header + usize::try_from(len).expect("a frame length fits");
        if bytes.len() < end {
            break;
        }
        frames.push((bytes[at] & 0x0F, bytes[at + header..end].to_vec()));
        at = end;
    }
    (frames, at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_while_a_client_pipelines_ends_with_the_close_handshake_not_a_reset() {
    // Requests a client sends while the server shuts down are never read.
    // Closing a TCP socket with unread bytes makes the kernel reset the
    // connection, and a reset throws away whatever the client had not yet
    // received: replies to tasks that ran, and the close frame. The server
    // reads (and drops) what comes after its close frame until the client's
    // own close frame, so the connection ends with a FIN after both.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fx = Fixture::start(|_| {}).await;
    let mut ws = fx.connect().await;
    let (mut rd, mut wr) = tokio::io::split(ws.get_mut());
    // A request in flight keeps the shutdown draining while more arrive.
    wr.write_all(&raw_frame(0x81, play(0, "sleep:300").as_bytes()))
        .await
        .expect("write the first request");
    let status = fx.status.clone();
    eventually("the request to be in flight", || status.in_flight() == 1).await;
    fx.token.cancel();
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    let mut next_id = 1u64;
    // More than actix buffers of a connection it is not reading (32 KiB),
    // so the rest waits unread in the kernel.
    let filler = format!("echo:{}", "x".repeat(4000));
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    let (frames, close) = loop {
        tokio::select! {
            _ = tick.tick() => {
                let request = raw_frame(0x81, play(next_id, &filler).as_bytes());
                wr.write_all(&request)
                    .await
                    .unwrap_or_else(|e| panic!("request {next_id}, sent before the close frame came: {e}"));
                next_id += 1;
            }
            read = rd.read(&mut buf) => {
                let n = read.expect("the replies and the close frame arrive, not a reset");
                assert!(n > 0, "the connection ended before a close frame");
                received.extend_from_slice(&buf[..n]);
                let (frames, _) = server_frames(&received);
                if let Some(at) = frames.iter().position(|(op, _)| *op == 0x8) {
                    let close = frames[at].1.clone();
                    break (frames, close);
                }
            }
            () = tokio::time::sleep_until(deadline) => panic!("no close frame within {PROMPTLY:?}"),
        }
    };
    assert_eq!(close[..2], 1001u16.to_be_bytes(), "the close code");
    let replies: Vec<Value> = frames
        .iter()
        .filter(|(op, _)| *op == 0x1)
        .map(|(_, p)| serde_json::from_slice(p).expect("a JSON reply"))
        .collect();
    assert!(
        replies
            .iter()
            .any(|r| r["id"] == 0 && r["result"]["output"] == "slept"),
        "the request in flight is answered before the close: {replies:?}"
    );
    assert!(
        next_id > 40,
        "more requests came during the shutdown than actix buffers ({next_id})"
    );
    // The client answers the close frame (masked, code 1000), and the server
    // then ends the connection cleanly.
    wr.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8])
        .await
        .expect("the client's close frame goes out");
    let ended = tokio::time::timeout(PROMPTLY, async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(_) => continue,
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("the server ends the connection after the close handshake");
    ended.expect("the connection ends with a FIN, not a reset");
    fx.token.cancel();
}

/// The status line the server answers a hand-written upgrade request of
/// HTTP `version` with.
async fn raw_upgrade_status(fx: &Fixture, version: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(fx.addr)
        .await
        .expect("connect");
    let request = format!(
        "GET /ws HTTP/{version}\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        fx.addr
    );
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        let n = tokio::time::timeout(PROMPTLY, tcp.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(n > 0, "closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    text.lines().next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_1_0_upgrade_is_refused_with_400_and_http_1_1_upgrades() {
    let fx = Fixture::start(|_| {}).await;
    let old = raw_upgrade_status(&fx, "1.0").await;
    assert!(old.contains(" 400 "), "{old}");
    let current = raw_upgrade_status(&fx, "1.1").await;
    assert!(current.contains(" 101 "), "{current}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_another_path_is_not_found() {
    let fx = Fixture::start(|_| {}).await;
    let url = format!("ws://{}/other", fx.addr);
    match tokio_tungstenite::connect_async(url).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status().as_u16(), 404),
        other => panic!("expected 404, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_run_future_stops_the_server() {
    let fx = Fixture::start(|_| {}).await;
    let mut ws = fx.connect().await;
    assert_eq!(
        call(&mut ws, &play(1, "echo:up")).await["result"]["output"],
        "up"
    );
    fx.server.abort();
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    while tokio::net::TcpStream::connect(fx.addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the port is still served"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_with_a_reserved_bit_set_while_a_notification_waits_closes_with_1002() {
    // The codec reports such a frame again on every read. While a
    // notification waits for a slot the connection must not be read on and
    // on: the same error would be buffered without end, the circle's thread
    // spinning.
    let fx = Fixture::start(|c| c.max_in_flight = 1).await;
    let mut ws = fx.connect().await;
    let mut bytes = raw_frame(0x81, play(1, "hang").as_bytes());
    bytes.extend(raw_frame(
        0x81,
        br#"{"jsonrpc":"2.0","method":"play","params":{"script":"echo:n"}}"#,
    ));
    write_raw(&mut ws, &bytes).await;
    // The request holds the one slot; the notification read with it waits.
    let status = fx.status.clone();
    eventually("the request to be in flight", move || {
        status.in_flight() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A separate write: actix-ws reports a codec error before the frames
    // decoded with it in the same read.
    write_raw(&mut ws, &raw_frame(0xC1, b"{}")).await;
    let close = next_close(&mut ws)
        .await
        .expect("a close frame, not a stream of replies");
    assert_eq!(close.code, CloseCode::Protocol);
    // The circle goes on serving.
    let mut other = fx.connect().await;
    let reply = call(&mut other, &play(2, "echo:served")).await;
    assert_eq!(reply["result"]["output"], "served", "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_half_closes_is_told_the_connection_is_over() {
    let fx = Fixture::start(|_| {}).await;
    let mut ws = fx.connect().await;
    {
        use tokio::io::AsyncWriteExt;
        // FIN without a close frame; the client can still read.
        ws.get_mut().shutdown().await.expect("half-close");
    }
    let close = next_close(&mut ws)
        .await
        .expect("a close frame for a client that can still read");
    assert_eq!(close.code, CloseCode::Normal);
    let status = fx.status.clone();
    eventually("the connection to be released", move || {
        status.connections() == 0
    })
    .await;
}
