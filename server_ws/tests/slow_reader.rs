//! A client on a slow link that reads a large reply all the time is alive:
//! what the socket takes of the reply shows as it goes, so the client
//! timeout does not drop it while its pongs wait behind the reply.

mod common;

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use common::{Fixture, PROMPTLY, play};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use server_ws::ServerTiming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// A TCP stream that reads at most `chunk` bytes every `every`.
struct Slow {
    inner: TcpStream,
    chunk: usize,
    every: Duration,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl AsyncRead for Slow {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if let Some(pause) = this.pause.as_mut() {
            ready!(pause.as_mut().poll(cx));
            this.pause = None;
        }
        let n = buf.remaining().min(this.chunk);
        let mut limited = ReadBuf::new(buf.initialize_unfilled_to(n));
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
        let got = limited.filled().len();
        buf.advance(got);
        if got > 0 {
            this.pause = Some(Box::pin(tokio::time::sleep(this.every)));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Slow {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A 3 MB reply read at about 800 KB/s takes some 4 s, past the client
/// timeout of 1.5 s; the client reads all along, so it gets the reply, and
/// then the answer to its next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reading_a_large_reply_slowly_is_not_dropped_as_dead() {
    reads_slowly(None).await;
}

/// The same over `wss://`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reading_a_large_reply_slowly_over_tls_is_not_dropped_as_dead() {
    let cert = common::tls::certificate();
    reads_slowly(Some(cert)).await;
}

async fn reads_slowly(cert: Option<common::tls::Certificate>) {
    let timing = ServerTiming::heartbeat(Duration::from_millis(250), Duration::from_millis(1500));
    let tls = cert.as_ref().map(|c| c.config.clone());
    let fx = Fixture::start_with(move |c| c.tls = tls, timing, true).await;
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(32 * 1024).expect("rcvbuf");
    let tcp = socket.connect(fx.addr).await.expect("connect");
    let slow = Slow {
        inner: tcp,
        chunk: 8 * 1024,
        every: Duration::from_millis(10),
        pause: None,
    };
    let (url, connector) = match &cert {
        Some(cert) => (
            format!("wss://127.0.0.1:{}/ws", fx.addr.port()),
            Some(common::tls::trusting(vec![cert.der.clone()])),
        ),
        None => (fx.url(), None),
    };
    let (mut ws, _) = tokio_tungstenite::client_async_tls_with_config(url, slow, None, connector)
        .await
        .expect("websocket upgrade");
    ws.send(Message::text(play(1, "big:3000000")))
        .await
        .expect("send");
    let started = tokio::time::Instant::now();
    let deadline = started + PROMPTLY * 3;
    let mut seen = Vec::new();
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no reply in time; {seen:?}"));
        match msg {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).expect("json");
                seen.push(format!("reply {} after {:?}", v["id"], started.elapsed()));
                if v["id"] == 1 {
                    assert_eq!(
                        v["result"]["output"].as_str().map(str::len),
                        Some(3_000_000)
                    );
                    ws.send(Message::text(play(2, "echo:still here")))
                        .await
                        .unwrap_or_else(|e| panic!("the connection was dropped: {e}; {seen:?}"));
                } else {
                    assert_eq!(v["id"], 2, "{v}");
                    assert_eq!(v["result"]["output"], "still here", "{v}");
                    break;
                }
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!(
                "the connection ended: {other:?} after {:?}; {seen:?}",
                started.elapsed()
            ),
        }
    }
    // The reply took longer than the client timeout: the test saw a slow
    // client, not a fast one.
    assert!(started.elapsed() > Duration::from_millis(1500), "{seen:?}");
}
