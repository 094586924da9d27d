//! The WebSocket part of the floor: a server on loopback that answers every
//! `play` at once with a constant result, driven by the same client code as
//! the orchestrator, so its latency is what the WebSocket hop alone costs.

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// Serves echo connections on a free loopback port, on a thread of its own
/// (as the orchestrator is a process of its own: a round trip to it wakes
/// another thread, never just the caller's), until the process ends;
/// returns its `ws://` URL.
pub fn start() -> anyhow::Result<String> {
    serve_on_thread(None, std::time::Duration::ZERO)
}

/// When each request reached an echo server started by `start_logged`.
pub(crate) type Arrivals = std::sync::Arc<std::sync::Mutex<Vec<std::time::Instant>>>;

/// [`start`], also noting when each request arrives.
#[cfg(test)]
pub(crate) fn start_logged() -> anyhow::Result<(String, Arrivals)> {
    let arrivals = Arrivals::default();
    Ok((
        serve_on_thread(Some(arrivals.clone()), std::time::Duration::ZERO)?,
        arrivals,
    ))
}

/// [`start`], each reply sent `delay` after its request arrived.
#[cfg(test)]
pub(crate) fn start_slow(delay: std::time::Duration) -> anyhow::Result<String> {
    serve_on_thread(None, delay)
}

fn serve_on_thread(log: Option<Arrivals>, delay: std::time::Duration) -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let url = format!("ws://{}/ws", listener.local_addr()?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("echo".into())
        .spawn(move || runtime.block_on(serve(listener, log, delay)))?;
    Ok(url)
}

async fn serve(listener: std::net::TcpListener, log: Option<Arrivals>, delay: std::time::Duration) {
    let Ok(listener) = TcpListener::from_std(listener) else {
        return;
    };
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        let log = log.clone();
        tokio::spawn(async move {
            let Ok(mut ws) =
                tokio_tungstenite::accept_async_with_config(stream, Some(crate::client::config()))
                    .await
            else {
                return;
            };
            while let Some(Ok(message)) = ws.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                if let Some(log) = &log {
                    log.lock()
                        .expect("nothing panics while it holds the arrival log")
                        .push(std::time::Instant::now());
                }
                let id = serde_json::from_str::<serde_json::Value>(&text)
                    .map(|v| v["id"].clone())
                    .unwrap_or(serde_json::Value::Null);
                let reply = serde_json::json!({
                    "jsonrpc": "2.0", "id": id, "result": {"output": "42"}
                });
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if ws
                    .send(Message::Text(reply.to_string().into()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}

/// The median of `count` `PING` round trips to the Redis at `port`, in milliseconds.
pub async fn redis_ping_ms(port: u16, count: usize) -> anyhow::Result<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let mut rtts = Vec::with_capacity(count);
    let mut buf = [0u8; 7];
    for _ in 0..count {
        let start = std::time::Instant::now();
        stream.write_all(b"PING\r\n").await?;
        stream.read_exact(&mut buf).await?;
        anyhow::ensure!(&buf == b"+PONG\r\n", "redis answered PING with {buf:?}");
        rtts.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(crate::stats::median(&rtts))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_echo_floor_answers_every_call_through_the_client_code() {
        let url = super::start().expect("echo server");
        let scripts = Arc::new(vec!["40 + 2".to_string()]);
        let seq = crate::client::sequential_sides(std::slice::from_ref(&url), &scripts, 5, 50)
            .await
            .expect("sequential")
            .remove(0);
        assert_eq!((seq.latencies.len(), seq.errors), (50, 0));
        assert!(seq.latencies.percentile_ms(50.0) > 0.0);
        let urls = vec![url];
        let load = crate::client::closed_loop(
            &urls,
            8,
            &scripts,
            Duration::from_millis(50),
            Duration::from_millis(300),
        )
        .await
        .expect("closed loop");
        assert_eq!(load.errors, 0);
        assert!(load.throughput > 0.0 && !load.latencies.is_empty());
    }

    #[tokio::test]
    async fn a_redis_ping_round_trip_is_measured() {
        let redis = testkit::RedisServer::start();
        let ms = super::redis_ping_ms(redis.port(), 20).await.expect("ping");
        assert!(ms > 0.0, "{ms}");
    }
}
