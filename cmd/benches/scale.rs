//! Scale benchmark: N circles (default 200, `CIRCLES_SCALE_N` to change) in
//! ONE `circles_orchestrator` process — the real binary, free ports, a temp
//! data dir, its own Redis. Reports the time until every circle serves (each
//! WS port answers a `play` round trip), the RSS in all and per circle, and the
//! idle CPU over `CIRCLES_SCALE_IDLE_SECS` (default 10) seconds, measured after
//! `CIRCLES_SCALE_SETTLE_SECS` (default 5) seconds of rest. Also runs one
//! circle the same way, so the per-circle cost is shown both as total / N and
//! as the marginal (RSS_N - RSS_1) / (N - 1).
//!
//! Targets: all serving in ≤ 2 s; ≤ 3 MiB RSS per idle circle;
//! idle CPU under 1% of a core.
//!
//! `cargo bench -p cmd --bench scale`; `CIRCLES_SCALE_ARGS="--worker-heartbeat 5s"`
//! passes extra options to the orchestrator.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_circles_orchestrator");

struct Measured {
    circles: usize,
    serve: Duration,
    table: Option<Duration>,
    rss_kib: u64,
    threads: u64,
    idle_cpu_pct: f64,
    redis_idle_cpu_pct: f64,
    stop: Duration,
    exit: Option<i32>,
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Extra orchestrator options from `CIRCLES_SCALE_ARGS` (split on spaces).
fn extra_args() -> Vec<String> {
    std::env::var("CIRCLES_SCALE_ARGS")
        .map(|v| v.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

async fn round_trip(port: u16) -> bool {
    let Ok((mut ws, _)) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws")).await
    else {
        return false;
    };
    let request = r#"{"jsonrpc":"2.0","id":1,"method":"play","params":{"script":"40 + 2"}}"#;
    if ws.send(Message::text(request)).await.is_err() {
        return false;
    }
    while let Some(Ok(message)) = ws.next().await {
        if let Message::Text(text) = message {
            let _ = ws.close(None).await;
            return text.contains("\"42\"");
        }
    }
    false
}

async fn wait_serving(port: u16, deadline: Instant) -> bool {
    while Instant::now() < deadline {
        if round_trip(port).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

fn measure(n: usize, idle: Duration) -> Measured {
    let dir = tempfile::Builder::new()
        .prefix("circles-scale-")
        .tempdir()
        .expect("temp dir");
    let redis = testkit::RedisServer::start();
    let mut ports = HashSet::new();
    while ports.len() < n {
        ports.insert(testkit::free_port());
    }
    let ports: Vec<u16> = ports.into_iter().collect();
    let circles: Vec<serde_json::Value> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| serde_json::json!({"id": i + 1, "name": format!("circle {}", i + 1), "port": p}))
        .collect();
    let config = dir.path().join("circles.json");
    std::fs::write(&config, serde_json::Value::Array(circles).to_string()).expect("write config");

    let started = Instant::now();
    let mut child: Child = Command::new(BIN)
        .arg(&config)
        .args([
            "--redis-url",
            &redis.url(),
            "--no-managed-redis",
            "--output",
            "plain",
            // A free port: the default one may be taken by another run.
            "--admin",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(extra_args())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn orchestrator");
    let pid = child.id();
    let stdout = child.stdout.take().expect("stdout");
    let (table_tx, table_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("circles serving;") {
                let _ = table_tx.send(Instant::now());
            }
        }
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let deadline = Instant::now() + Duration::from_secs(120);
    let all = runtime.block_on(async {
        let tasks: Vec<_> = ports
            .iter()
            .map(|&p| tokio::spawn(wait_serving(p, deadline)))
            .collect();
        let mut ok = true;
        for t in tasks {
            ok &= t.await.unwrap_or(false);
        }
        ok
    });
    let serve = started.elapsed();
    assert!(all, "not every circle served within 120 s");
    let table = table_rx
        .recv_timeout(Duration::from_secs(30))
        .ok()
        .map(|t| t.duration_since(started));

    // Let the start-up settle (first reaps, first stats read), then measure idle.
    std::thread::sleep(Duration::from_secs(env_num("CIRCLES_SCALE_SETTLE_SECS", 5)));
    let rss_kib = testkit::proc_status(pid, "VmRSS:");
    let threads = testkit::proc_status(pid, "Threads:");
    let redis_pid = redis.pid();
    let cpu = |pid: Option<u32>| {
        pid.and_then(|p| testkit::process_cpu(&p.to_string()).ok())
            .unwrap_or(0.0)
    };
    let (c0, r0) = (cpu(Some(pid)), cpu(redis_pid));
    let t0 = Instant::now();
    std::thread::sleep(idle);
    let (c1, r1) = (cpu(Some(pid)), cpu(redis_pid));
    let secs = t0.elapsed().as_secs_f64();
    let idle_cpu_pct = (c1 - c0) / secs * 100.0;
    let redis_idle_cpu_pct = (r1 - r0) / secs * 100.0;

    let stop_at = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let exit = child.wait().ok().and_then(|s| s.code());
    let stop = stop_at.elapsed();
    Measured {
        circles: n,
        serve,
        table,
        rss_kib,
        threads,
        idle_cpu_pct,
        redis_idle_cpu_pct,
        stop,
        exit,
    }
}

fn report(m: &Measured) {
    println!(
        "circles={:<4} serve_all={:>8.3}s table_printed={} rss={:.1}MiB rss/circle={:.2}MiB threads={} \
         idle_cpu={:.2}%core redis_idle_cpu={:.2}%core sigterm_to_exit={:.3}s exit={:?}",
        m.circles,
        m.serve.as_secs_f64(),
        m.table
            .map(|t| format!("{:.3}s", t.as_secs_f64()))
            .unwrap_or_else(|| "never".into()),
        m.rss_kib as f64 / 1024.0,
        m.rss_kib as f64 / 1024.0 / m.circles as f64,
        m.threads,
        m.idle_cpu_pct,
        m.redis_idle_cpu_pct,
        m.stop.as_secs_f64(),
        m.exit,
    );
}

fn main() {
    // `cargo bench` passes --bench; nothing else is accepted.
    let n = env_num("CIRCLES_SCALE_N", 200) as usize;
    let idle = Duration::from_secs(env_num("CIRCLES_SCALE_IDLE_SECS", 10));
    println!("scale benchmark: {n} circles in one orchestrator process ({BIN})");
    let one = measure(1, idle);
    report(&one);
    let many = measure(n, idle);
    report(&many);
    let marginal =
        (many.rss_kib.saturating_sub(one.rss_kib)) as f64 / 1024.0 / (n.max(2) - 1) as f64;
    println!(
        "summary: {n} circles serving after {:.3}s (target <= 2s); RSS {:.1}MiB = {:.2}MiB/circle, \
         marginal {:.2}MiB/circle (target <= 3MiB); idle CPU {:.2}% of a core (target < 1%), \
         redis {:.2}%",
        many.serve.as_secs_f64(),
        many.rss_kib as f64 / 1024.0,
        many.rss_kib as f64 / 1024.0 / n as f64,
        marginal,
        many.idle_cpu_pct,
        many.redis_idle_cpu_pct
    );
}
