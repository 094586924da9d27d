//! The WebSocket side: JSON-RPC `play` calls over real connections, a
//! sequential run and a closed-loop run (every connection keeps exactly one
//! request in flight). The echo floor goes through this same code.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::stats::{Latencies, median};

/// One client connection.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The WebSocket settings of both ends of the load generator: without
/// Nagle's algorithm, and with a read buffer sized for its small messages.
/// tungstenite zeroes its whole read buffer (128 KiB by default) before
/// every read; at the default size that memset took about a fifth of the
/// load generator's CPU, which on a small machine is CPU the orchestrator
/// under test does not get. Larger frames still arrive whole: the buffer
/// only bounds one read.
pub fn config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(8 * 1024)
}

/// Opens a connection to `url` (`ws://host:port/ws`).
pub async fn connect(url: &str) -> anyhow::Result<Ws> {
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config()), true)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    Ok(ws)
}

/// What one call returned.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    /// Send to reply, in microseconds.
    pub latency_us: u64,
    /// The reply's `result.run_time_ms`, when it has one.
    pub run_ms: Option<f64>,
    /// Whether the reply is a `result` (not an `error`).
    pub ok: bool,
}

/// Sends `play(script)` with `id` and waits for the reply with that id.
pub async fn call(ws: &mut Ws, id: u64, script: &str) -> anyhow::Result<Reply> {
    let request = serde_json::json!({
        "jsonrpc": "2.0", "id": id, "method": "play", "params": {"script": script}
    })
    .to_string();
    let start = Instant::now();
    ws.send(Message::Text(request.into())).await?;
    loop {
        let text = match ws.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None => bail!("the server closed the connection"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
        };
        let latency_us = start.elapsed().as_micros() as u64;
        let reply: serde_json::Value =
            serde_json::from_str(&text).context("a reply that is not JSON")?;
        if reply["id"].as_u64() != Some(id) {
            continue;
        }
        let result = reply.get("result");
        return Ok(Reply {
            latency_us,
            run_ms: result.and_then(|r| r["run_time_ms"].as_f64()),
            ok: result.is_some(),
        });
    }
}

/// What one load measured.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// Latencies of the successful replies.
    pub latencies: Latencies,
    /// Median `run_time_ms` of the replies that carry one.
    pub run_ms: f64,
    /// Replies that were errors, or connections that failed.
    pub errors: u64,
    /// Successful replies per second.
    pub throughput: f64,
    /// How busy the machine and Redis were meanwhile (closed-loop loads).
    pub saturation: Option<crate::meter::Saturation>,
}

/// The scripts a load sends: request `n` sends `scripts[n % len]`.
pub type Scripts = Arc<Vec<String>>;

/// `requests` calls one after another on one connection, after `warmup` unmeasured ones.
pub async fn sequential(
    url: &str,
    scripts: &Scripts,
    warmup: usize,
    requests: usize,
) -> anyhow::Result<Measured> {
    let mut ws = connect(url).await?;
    let (mut latencies, mut runs, mut errors) = (Vec::new(), Vec::new(), 0);
    let start = Instant::now();
    for n in 0..warmup + requests {
        let reply = call(&mut ws, n as u64, &scripts[n % scripts.len()]).await?;
        if n < warmup {
            continue;
        }
        if !reply.ok {
            errors += 1;
            continue;
        }
        latencies.push(reply.latency_us);
        runs.extend(reply.run_ms);
    }
    let _ = ws.close(None).await;
    let ok = latencies.len();
    Ok(Measured {
        latencies: Latencies::new(latencies),
        run_ms: median(&runs),
        errors,
        throughput: ok as f64 / start.elapsed().as_secs_f64(),
        saturation: None,
    })
}

/// `conns` connections spread over `urls` round-robin, each with one
/// request in flight at a time, for `warmup` then `duration`; the calls
/// that end inside `duration` count.
pub async fn closed_loop(
    urls: &[String],
    conns: usize,
    scripts: &Scripts,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Measured> {
    let mut sockets = Vec::with_capacity(conns);
    for i in 0..conns {
        sockets.push(connect(&urls[i % urls.len()]).await?);
    }
    let measure_from = Instant::now() + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::with_capacity(conns);
    for (i, mut ws) in sockets.into_iter().enumerate() {
        let scripts = scripts.clone();
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut runs, mut errors) = (Vec::new(), Vec::new(), 0u64);
            let mut n = i as u64;
            loop {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                let script = &scripts[n as usize % scripts.len()];
                let reply = match call(&mut ws, n, script).await {
                    Ok(reply) => reply,
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                };
                n += conns as u64;
                let finished = Instant::now();
                if finished < measure_from || finished > end {
                    continue;
                }
                if reply.ok {
                    latencies.push(reply.latency_us);
                    runs.extend(reply.run_ms);
                } else {
                    errors += 1;
                }
            }
            let _ = ws.close(None).await;
            (latencies, runs, errors)
        }));
    }
    let (mut latencies, mut runs, mut errors) = (Vec::new(), Vec::new(), 0);
    for task in tasks {
        let (l, r, e) = task.await.context("a client task panicked")?;
        latencies.extend(l);
        runs.extend(r);
        errors += e;
    }
    let ok = latencies.len();
    Ok(Measured {
        latencies: Latencies::new(latencies),
        run_ms: median(&runs),
        errors,
        throughput: ok as f64 / duration.as_secs_f64(),
        saturation: None,
    })
}
