//! Edges of the WebSocket layer: fragments, control frames between them,
//! close frames, protocol errors right behind valid messages.

mod common;

use common::{Fixture, PROMPTLY, Ws, call, code, play, recv, task_of_script};
use futures_util::StreamExt;
use server_ws::codes;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Writes `bytes` straight to the socket under `ws`, past its framing.
async fn write_raw(ws: &mut Ws, bytes: &[u8]) {
    use tokio::io::AsyncWriteExt;
    ws.get_mut().write_all(bytes).await.expect("raw write");
}

/// A masked frame (mask key 0) with first byte `first` and `payload`.
fn raw_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![first, 0x80 | 127];
    f.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// A masked control frame (7-bit length form, as RFC 6455 requires).
fn control_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() <= 125);
    let mut f = vec![first, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    f.extend_from_slice(payload);
    f
}

fn notification(script: &str) -> String {
    serde_json::json!({"jsonrpc":"2.0","method":"play","params":{"script":script}}).to_string()
}

/// The close frame the server sends next (skipping pings and text).
async fn next_close(ws: &mut Ws) -> Option<(CloseCode, String)> {
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        match tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("the server closes within the deadline")
        {
            Some(Ok(Message::Close(frame))) => {
                return frame.map(|f| (f.code, f.reason.to_string()));
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_message_split_inside_a_utf8_character_is_one_message() {
    let fx = Fixture::start(|_| {}).await;
    let mut ws = fx.connect().await;
    let text = play(1, "echo:grüße");
    let bytes = text.as_bytes();
    let at = text.find('ü').expect("ü") + 1; // inside ü
    let mut raw = raw_frame(0x01, &bytes[..at]);
    raw.extend(control_frame(0x89, b"p"));
    raw.extend(raw_frame(0x80, &bytes[at..]));
    write_raw(&mut ws, &raw).await;
    let mut pong = false;
    let reply = loop {
        match tokio::time::timeout(PROMPTLY, ws.next()).await {
            Ok(Some(Ok(Message::Pong(p)))) => {
                assert_eq!(&p[..], b"p");
                pong = true;
            }
            Ok(Some(Ok(Message::Text(t)))) => {
                break serde_json::from_str::<serde_json::Value>(t.as_str()).unwrap();
            }
            Ok(Some(Ok(Message::Ping(_)))) => {}
            other => panic!("{other:?}"),
        }
    };
    assert!(pong, "the ping between fragments is answered");
    assert_eq!(reply["result"]["output"], "grüße", "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_over_the_limit_only_in_sum_are_refused_and_the_connection_goes_on() {
    let fx = Fixture::start(|c| c.max_message_bytes = 1024).await;
    let mut ws = fx.connect().await;
    let mut raw = raw_frame(0x01, &[b' '; 800]);
    raw.extend(raw_frame(0x00, &[b' '; 800]));
    raw.extend(raw_frame(0x80, b"{}"));
    write_raw(&mut ws, &raw).await;
    let reply = recv(&mut ws).await;
    assert_eq!(code(&reply), codes::LIMIT_EXCEEDED, "{reply}");
    // A fragmented binary message.
    let mut raw = raw_frame(0x02, b"ab");
    raw.extend(raw_frame(0x80, b"cd"));
    write_raw(&mut ws, &raw).await;
    let reply = recv(&mut ws).await;
    assert_eq!(code(&reply), codes::INVALID_REQUEST, "{reply}");
    let reply = call(&mut ws, &play(2, "echo:on")).await;
    assert_eq!(reply["result"]["output"], "on", "{reply}");
}

/// RFC 6455 §7.4.1: 1005, 1006 and 1015 must never be sent in a close
/// frame; a close frame carrying one is a protocol error (§7.4.2 / §5.5.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_with_a_reserved_code_is_answered_1002_not_echoed() {
    let fx = Fixture::start(|_| {}).await;
    for bad in [1005u16, 1006, 1015, 999, 5000] {
        let mut ws = fx.connect().await;
        write_raw(&mut ws, &control_frame(0x88, &bad.to_be_bytes())).await;
        let close = next_close(&mut ws).await;
        assert_eq!(close.map(|c| c.0), Some(CloseCode::Protocol), "code {bad}");
    }
    // One byte of payload.
    let mut ws = fx.connect().await;
    write_raw(&mut ws, &control_frame(0x88, &[3])).await;
    assert_eq!(
        next_close(&mut ws).await.map(|c| c.0),
        Some(CloseCode::Protocol)
    );
    // A valid one is echoed.
    let mut ws = fx.connect().await;
    let mut payload = 4001u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    write_raw(&mut ws, &control_frame(0x88, &payload)).await;
    assert_eq!(
        next_close(&mut ws).await,
        Some((CloseCode::from(4001), "bye".to_string()))
    );
}

/// A notification the server read is queued (README: "every notification
/// the server read is queued"), also when the very next frame in the same
/// write breaks the protocol: the frames before it were whole and valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_right_before_a_reserved_bit_frame_in_the_same_write_is_queued() {
    let fx = Fixture::start(|_| {}).await;
    let mut ws = fx.connect().await;
    let mut raw = raw_frame(0x81, notification("echo:before rsv").as_bytes());
    raw.extend(raw_frame(0xc1, b"{}"));
    write_raw(&mut ws, &raw).await;
    assert_eq!(
        next_close(&mut ws).await.map(|c| c.0),
        Some(CloseCode::Protocol)
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    while task_of_script(&fx, "echo:before rsv").await.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the notification sent before the bad frame was never queued"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The same, where the codec (not the frame guard) refuses the next frame:
/// a close frame with a code no endpoint may send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_right_before_a_bad_close_frame_in_the_same_write_is_queued() {
    let fx = Fixture::start(|_| {}).await;
    let mut ws = fx.connect().await;
    let mut raw = raw_frame(0x81, notification("echo:before close").as_bytes());
    raw.extend(control_frame(0x88, &1005u16.to_be_bytes()));
    write_raw(&mut ws, &raw).await;
    let _ = next_close(&mut ws).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    while task_of_script(&fx, "echo:before close").await.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the notification sent before the bad close frame was never queued"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The guard ends a message whose rest it refused with a last fragment of
/// `\xff\xfecircles:oversize`, which the assembler takes for "too large". A
/// client that sends those 20 bytes as its own last fragment gets the
/// -32700 any other text that is not UTF-8 gets, not -32003 "message too
/// large" for a 21-byte message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_message_ending_in_the_guards_stand_in_bytes_is_not_called_too_large() {
    let fx = Fixture::start(|_| {}).await;
    let mut ws = fx.connect().await;
    let mut raw = raw_frame(0x01, b"{");
    raw.extend(raw_frame(0x80, b"\xff\xfecircles:oversize"));
    write_raw(&mut ws, &raw).await;
    let reply = recv(&mut ws).await;
    assert_eq!(
        code(&reply),
        codes::PARSE_ERROR,
        "a 21-byte message that is not UTF-8: {reply}"
    );
    // The connection serves on.
    let reply = call(&mut ws, &play(2, "echo:after")).await;
    assert_eq!(reply["result"]["output"], "after", "{reply}");
}
