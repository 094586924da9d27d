//! Cost of idle circle servers in one process: threads and RSS per server,
//! time until all serve, idle CPU, shutdown time.
//!
//! `cargo bench -p server_ws --bench idle_servers` (`IDLE_SERVERS=200` for the
//! orchestrator's scale target; default 50). By default all circles share one
//! `run_many` host (what the orchestrator does); `IDLE_MODE=per-circle` starts
//! one `run` server per circle instead, for comparison. Prints figures;
//! asserts nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use server_ws::{CircleServer, ServerConfig, ServerStatus, ServerTiming};
use tokio_util::sync::CancellationToken;

/// `(threads, rss_kib)` of this process, from /proc/self/status.
fn threads_and_rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("Threads:"), field("VmRSS:"))
}

/// CPU time (user + system) of this process, in clock ticks.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0)
}

/// Whether a WebSocket upgrade at `addr` succeeds.
async fn serves(addr: std::net::SocketAddr) -> bool {
    tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .map(|(mut ws, _)| {
            tokio::spawn(async move {
                let _ = ws.close(None).await;
            });
        })
        .is_ok()
}

fn main() {
    let n: usize = std::env::var("IDLE_SERVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let redis = testkit::RedisServer::start();
        let client = client::Client::connect(&redis.url())
            .await
            .expect("connect to redis");
        let (threads_before, rss_before) = threads_and_rss();

        let token = CancellationToken::new();
        let started = Instant::now();
        let mut addrs = Vec::with_capacity(n);
        let per_circle = std::env::var("IDLE_MODE").is_ok_and(|m| m == "per-circle");
        let mut servers = Vec::with_capacity(n);
        let mut hosted = Vec::with_capacity(n);
        for i in 0..n {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            addrs.push(listener.local_addr().expect("addr"));
            let config = ServerConfig::new(format!("circle {i}"), format!("circle_{i}"));
            let status = Arc::new(ServerStatus::default());
            if per_circle {
                servers.push(tokio::spawn(server_ws::run(
                    config,
                    listener,
                    client.clone(),
                    status,
                    token.clone(),
                )));
            } else {
                hosted.push(CircleServer::new(config, listener, status));
            }
        }
        if !per_circle {
            servers.push(tokio::spawn(server_ws::run_many(
                hosted,
                ServerTiming::default(),
                client.clone(),
                token.clone(),
            )));
        }
        for addr in &addrs {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !serves(*addr).await {
                assert!(Instant::now() < deadline, "server at {addr} never served");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let all_serving = started.elapsed();
        // Let the probe connections close before measuring idle state.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (threads_after, rss_after) = threads_and_rss();

        let idle_window = Duration::from_secs(10);
        let ticks_before = cpu_ticks();
        tokio::time::sleep(idle_window).await;
        let ticks = cpu_ticks() - ticks_before;
        // Clock ticks are 1/100 s on Linux (sysconf(_SC_CLK_TCK)).
        let idle_cpu_pct = ticks as f64 / 100.0 / idle_window.as_secs_f64() * 100.0;

        let stopping = Instant::now();
        token.cancel();
        for server in servers {
            server.await.expect("join").expect("server ran");
        }
        let stopped = stopping.elapsed();

        let per_server_threads = (threads_after - threads_before) as f64 / n as f64;
        let per_server_rss = (rss_after.saturating_sub(rss_before)) as f64 / n as f64;
        let mode = if per_circle {
            "one server per circle"
        } else {
            "one shared host"
        };
        println!("idle_servers: {n} circles in one process, {mode}");
        println!("  all serving after        {:>8.1} ms", all_serving.as_secs_f64() * 1e3);
        println!(
            "  threads                  {threads_before} -> {threads_after} ({per_server_threads:.2} per server)"
        );
        println!(
            "  RSS                      {rss_before} KiB -> {rss_after} KiB ({per_server_rss:.0} KiB = {:.2} MiB per server)",
            per_server_rss / 1024.0
        );
        println!(
            "  idle CPU over {:?}      {idle_cpu_pct:.2} % of one core",
            idle_window
        );
        println!("  shutdown of all          {:>8.1} ms", stopped.as_secs_f64() * 1e3);
    });
}
