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

/// One connection to each of `urls` (the sides: builds, or the echo floor),
/// `warmup` unmeasured then `requests` measured calls on each, one request in
/// flight in all: request `n` goes to every side in turn, the first side
/// rotating with `n`, so a change in the machine's other work weighs on
/// every side alike. One [`Measured`] per side, in the order of `urls`.
pub async fn sequential_sides(
    urls: &[String],
    scripts: &Scripts,
    warmup: usize,
    requests: usize,
) -> anyhow::Result<Vec<Measured>> {
    let mut sockets = Vec::with_capacity(urls.len());
    for url in urls {
        sockets.push(connect(url).await?);
    }
    let mut tallies = vec![Tally::default(); urls.len()];
    for n in 0..warmup + requests {
        for k in 0..urls.len() {
            let side = (n + k) % urls.len();
            let reply = call(&mut sockets[side], n as u64, &scripts[n % scripts.len()]).await?;
            if n >= warmup {
                tallies[side].add(reply);
            }
        }
    }
    for mut ws in sockets {
        let _ = ws.close(None).await;
    }
    // One request in flight at a time: a side's time is its replies' latencies.
    Ok(tallies
        .into_iter()
        .map(|tally| {
            let over = Duration::from_micros(tally.latencies.iter().sum());
            tally.measured(over)
        })
        .collect())
}

/// What the replies of a load (or of a part of it) came to.
#[derive(Debug, Clone, Default)]
struct Tally {
    latencies: Vec<u64>,
    runs: Vec<f64>,
    errors: u64,
}

impl Tally {
    fn add(&mut self, reply: Reply) {
        if reply.ok {
            self.latencies.push(reply.latency_us);
            self.runs.extend(reply.run_ms);
        } else {
            self.errors += 1;
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.runs.extend(other.runs);
        self.errors += other.errors;
    }

    /// The figures of the tally, its successful replies spread over `over`.
    fn measured(self, over: Duration) -> Measured {
        let ok = self.latencies.len();
        Measured {
            latencies: Latencies::new(self.latencies),
            run_ms: median(&self.runs),
            errors: self.errors,
            throughput: ok as f64 / over.as_secs_f64().max(1e-9),
            saturation: None,
        }
    }
}

/// The open connections of a closed-loop load on one side, kept across the
/// slices it runs; what the slices measure adds up.
pub struct Pool {
    /// Each connection with the id of its next request.
    conns: Vec<(Ws, u64)>,
    /// Ids of one connection step by the number of connections, so no two share one.
    step: u64,
    tally: Tally,
    measured: Duration,
}

impl Pool {
    /// `conns` connections spread over `urls` round-robin.
    pub async fn open(urls: &[String], conns: usize) -> anyhow::Result<Pool> {
        let mut sockets = Vec::with_capacity(conns);
        for i in 0..conns {
            sockets.push((connect(&urls[i % urls.len()]).await?, i as u64));
        }
        Ok(Pool {
            conns: sockets,
            step: conns as u64,
            tally: Tally::default(),
            measured: Duration::ZERO,
        })
    }

    /// Every connection calls in a loop, one request in flight on each,
    /// starting requests for `settle + measured`; the replies that arrive
    /// inside `measured` (from its start, up to but not at its end) count.
    /// Returns once every connection has its last reply, so nothing of this
    /// pool is in flight afterwards. A connection whose call fails counts
    /// one error and is closed.
    pub async fn run(
        &mut self,
        scripts: &Scripts,
        settle: Duration,
        measured: Duration,
    ) -> anyhow::Result<()> {
        let measure_from = Instant::now() + settle;
        let end = measure_from + measured;
        let step = self.step;
        let mut tasks = Vec::with_capacity(self.conns.len());
        for (mut ws, mut n) in self.conns.drain(..) {
            let scripts = scripts.clone();
            tasks.push(tokio::spawn(async move {
                let mut tally = Tally::default();
                while Instant::now() < end {
                    let script = &scripts[n as usize % scripts.len()];
                    let reply = match call(&mut ws, n, script).await {
                        Ok(reply) => reply,
                        Err(_) => {
                            tally.errors += 1;
                            let _ = ws.close(None).await;
                            return (None, tally);
                        }
                    };
                    n += step;
                    let finished = Instant::now();
                    if finished >= measure_from && finished < end {
                        tally.add(reply);
                    }
                }
                (Some((ws, n)), tally)
            }));
        }
        for task in tasks {
            let (conn, tally) = task.await.context("a client task panicked")?;
            self.conns.extend(conn);
            self.tally.merge(tally);
        }
        self.measured += measured;
        Ok(())
    }

    /// Closes the connections; the figures of every slice run.
    pub async fn close(self) -> Measured {
        for (mut ws, _) in self.conns {
            let _ = ws.close(None).await;
        }
        self.tally.measured(self.measured)
    }
}

/// Unmeasured start of every slice of an interleaved load, while the
/// side's connections ramp up from idle.
pub const SETTLE: Duration = Duration::from_millis(100);

/// Measured length of one slice of an interleaved load (at most).
pub const SLICE: Duration = Duration::from_millis(500);

/// One turn of a side in an interleaved load: its connections call for
/// `settle` unmeasured, then `measured`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    /// Which side.
    pub side: usize,
    /// Unmeasured time first.
    pub settle: Duration,
    /// Measured time after it.
    pub measured: Duration,
}

/// The turns of a closed-loop load on `sides` sides, one side at a time.
/// One side: one turn, `warmup` then `duration`, as a load without a
/// baseline runs. Several: a warm-up turn of each, then `duration` cut into
/// slices of at most [`SLICE`], each after an unmeasured [`SETTLE`]; every
/// slice runs every side once, the order reversed every other slice
/// (forth, back: ABBA), so a drift in the machine's speed weighs on every
/// side alike.
pub fn schedule(sides: usize, warmup: Duration, duration: Duration) -> Vec<Turn> {
    let turn = |side, settle, measured| Turn {
        side,
        settle,
        measured,
    };
    if sides == 1 {
        return vec![turn(0, warmup, duration)];
    }
    let slices = duration.div_duration_f64(SLICE).ceil().max(1.0) as u32;
    let slice = duration / slices;
    let mut turns: Vec<Turn> = (0..sides)
        .map(|side| turn(side, warmup, Duration::ZERO))
        .collect();
    for k in 0..slices {
        let mut order: Vec<usize> = (0..sides).collect();
        if k % 2 == 1 {
            order.reverse();
        }
        turns.extend(order.into_iter().map(|side| turn(side, SETTLE, slice)));
    }
    turns
}

/// A closed-loop load on several sides (builds) at once, each side's
/// connections open in one of `pools`, run turn by turn as [`schedule`]
/// lays out. With `meter`, Redis's port, the first side's figures say how
/// busy the machine and Redis were during the measured part of its turns
/// (warm-ups and settles left out). One [`Measured`] per side.
pub async fn interleaved(
    mut pools: Vec<Pool>,
    scripts: &Scripts,
    warmup: Duration,
    duration: Duration,
    meter: Option<u16>,
) -> anyhow::Result<Vec<Measured>> {
    let mut usage = crate::meter::Usage::default();
    for turn in schedule(pools.len(), warmup, duration) {
        let pool = &mut pools[turn.side];
        match meter {
            Some(port) if turn.side == 0 && !turn.measured.is_zero() => {
                usage += metered(pool, scripts, &turn, port).await?;
            }
            _ => pool.run(scripts, turn.settle, turn.measured).await?,
        }
    }
    let mut measured = Vec::with_capacity(pools.len());
    for pool in pools {
        measured.push(pool.close().await);
    }
    if let (Some(_), Some(first)) = (meter, measured.first_mut()) {
        first.saturation = Some(usage.saturation());
    }
    Ok(measured)
}

/// Runs one turn of `pool` with the machine's and Redis's counters read at
/// the start and the end of its measured part, so the busy share is that of
/// the window alone: neither the settle nor the last replies the pool drains
/// after it.
async fn metered(
    pool: &mut Pool,
    scripts: &Scripts,
    turn: &Turn,
    port: u16,
) -> anyhow::Result<crate::meter::Usage> {
    let from = tokio::time::Instant::now() + turn.settle;
    let (ran, used) = tokio::join!(pool.run(scripts, turn.settle, turn.measured), async {
        tokio::time::sleep_until(from).await;
        let meter = crate::meter::Meter::start(port).await?;
        tokio::time::sleep_until(from + turn.measured).await;
        meter.stop().await
    });
    ran?;
    used
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
    let mut pool = Pool::open(urls, conns).await?;
    pool.run(scripts, warmup, duration).await?;
    Ok(pool.close().await)
}

#[cfg(test)]
mod tests;
