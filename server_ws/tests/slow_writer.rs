//! A client that sends one large message slowly over a slow link
//! is sending all the time; it cannot answer a ping in the middle of a frame
//! (RFC 6455 §5.4: control frames go between frames, not inside one), so it
//! must not be dropped as dead while its bytes keep coming.

mod common;

use std::time::Duration;

use common::{Fixture, Ws, play};
use futures_util::StreamExt;
use server_ws::ServerTiming;
use tokio_tungstenite::tungstenite::Message;

/// Writes `bytes` straight to the socket under `ws`, past its framing.
async fn write_raw(ws: &mut Ws, bytes: &[u8]) {
    use tokio::io::AsyncWriteExt;
    if let Err(e) = ws.get_mut().write_all(bytes).await {
        panic!("the server dropped a client that was still sending its message: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_a_large_message_slowly_is_not_dropped_as_dead() {
    // Pings every 200 ms, dropped after 1 s without a frame; the message
    // (within the 1 MiB limit) takes 3 s to arrive, its bytes coming every
    // 100 ms.
    let timing = ServerTiming::heartbeat(Duration::from_millis(200), Duration::from_secs(1));
    let fx = Fixture::start_with(|_| {}, timing, true).await;
    let mut ws = fx.connect().await;
    let padding = "x".repeat(60_000);
    let text = play(1, &format!("echo:{padding}"));
    // One masked text frame (mask key 0: the payload goes as it is), as
    // browsers send every message.
    let mut frame = vec![0x81, 0x80 | 127];
    frame.extend_from_slice(&(text.len() as u64).to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    write_raw(&mut ws, &frame).await;
    for piece in text.as_bytes().chunks(text.len() / 30 + 1) {
        write_raw(&mut ws, piece).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("an answer within the deadline");
        match msg {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Text(reply))) => {
                let reply: serde_json::Value = serde_json::from_str(reply.as_str()).expect("JSON");
                assert_eq!(reply["result"]["output"], padding, "{reply}");
                return;
            }
            other => panic!(
                "the client was still sending its message, yet the server ended the \
                 connection: {other:?}"
            ),
        }
    }
}
