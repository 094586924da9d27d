//! Round-trip benchmark: client → Redis → worker → Redis → client, script `40 + 2`.
//!
//! Starts its own `redis-server` (testkit) and a worker on a temp OurDB, then
//! prints: the floor (Redis round trip × round trips on the critical path +
//! the engine's own run time), sequential p50/p99 and the ratio p50/floor,
//! throughput at 1, 16 and 64 in flight with where the time goes at 64, and
//! the idle CPU of the worker + client, and the cost of recording metrics:
//! two more workers, one recording into `telemetry` handles and one not,
//! measured interleaved in the same run. `cargo bench -p worker`.
//! `ROUND_TRIP_N` sets the number of sequential round trips (default 3000).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{Client, OnDrop, Outcome, SubmitOptions};
use tokio_util::sync::CancellationToken;

const SCRIPT: &str = "40 + 2";
/// One-way hops on the critical path of an idle worker: client → Redis
/// (submit), Redis → worker (BLMOVE returns with the pipelined claim), worker →
/// Redis (finish + PUBLISH), Redis → client (push): four hops, two round trips.
const CRITICAL_ROUND_TRIPS: f64 = 2.0;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Redis' own CPU (user + sys) from INFO.
async fn redis_cpu(conn: &mut redis::aio::MultiplexedConnection) -> Duration {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(conn)
        .await
        .expect("info");
    let mut secs = 0.0;
    for line in info.lines() {
        if let Some(v) = line
            .strip_prefix("used_cpu_sys:")
            .or_else(|| line.strip_prefix("used_cpu_user:"))
        {
            secs += v.trim().parse::<f64>().unwrap_or(0.0);
        }
    }
    Duration::from_secs_f64(secs)
}

/// Total microseconds Redis spent in `command` (INFO commandstats).
fn usec_total(commandstats: &str, command: &str) -> f64 {
    let prefix = format!("cmdstat_{command}:");
    commandstats
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').find_map(|kv| kv.strip_prefix("usec=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn run_once(client: &Client, queue: &str) -> Duration {
    let started = Instant::now();
    match client
        .run_with(queue, SCRIPT, &SubmitOptions::default(), OnDrop::Cancel)
        .await
        .expect("run")
    {
        Outcome::Completed(out) => assert_eq!(out.output, "42"),
        other => panic!("{other:?}"),
    }
    started.elapsed()
}

async fn throughput(
    client: &Client,
    queue: &str,
    in_flight: usize,
    total: usize,
) -> (f64, Duration) {
    let started = Instant::now();
    let per = total / in_flight;
    let mut handles = Vec::new();
    for _ in 0..in_flight {
        let client = client.clone();
        let queue = queue.to_owned();
        handles.push(tokio::spawn(async move {
            for _ in 0..per {
                run_once(&client, &queue).await;
            }
        }));
    }
    for h in handles {
        h.await.expect("join");
    }
    let elapsed = started.elapsed();
    ((per * in_flight) as f64 / elapsed.as_secs_f64(), elapsed)
}

fn main() {
    let n: usize = std::env::var("ROUND_TRIP_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let db = Arc::new(ourdb::OurDb::open(dir.path(), ourdb::Config::default()).expect("ourdb"));
        let engine = Arc::new(engine::CircleEngine::new(db, engine::Limits::default()));
        let token = CancellationToken::new();
        let status = Arc::new(worker::WorkerStatus::default());
        let queue = "bench";
        let worker = tokio::spawn(worker::run(
            worker::WorkerConfig::new(&url, queue),
            Arc::clone(&engine),
            Arc::clone(&status),
            token.clone(),
        ));
        let client = Client::connect(&url).await.expect("connect");
        for _ in 0..300 {
            run_once(&client, queue).await;
        }

        // Floor, part 1: a Redis round trip on the same kind of connection,
        // sampled interleaved with the round trips below so both see the same
        // machine load.
        let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())
            .expect("url")
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let mut conn = redis::Client::open(info)
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("conn");
        // Floor, part 2: the engine's own run time, on a script-sized thread.
        let engine_time = {
            let engine = Arc::clone(&engine);
            std::thread::Builder::new()
                .stack_size(engine::SCRIPT_STACK_SIZE)
                .spawn(move || {
                    let mut runs = Vec::with_capacity(n);
                    for _ in 0..n {
                        let t = Instant::now();
                        engine.run(SCRIPT, &engine::RunControl::default()).expect("engine run");
                        runs.push(t.elapsed());
                    }
                    runs.sort();
                    percentile(&runs, 0.5)
                })
                .expect("thread")
                .join()
                .expect("engine thread")
        };
        let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut conn).await.expect("resetstat");
        let mut pings = Vec::with_capacity(n);
        let mut seq = Vec::with_capacity(n);
        let mut seq_time = Duration::ZERO;
        for _ in 0..n {
            let t = Instant::now();
            let _: String = redis::cmd("PING").query_async(&mut conn).await.expect("ping");
            pings.push(t.elapsed());
            let d = run_once(&client, queue).await;
            seq_time += d;
            seq.push(d);
        }
        let seq_stats: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.expect("info");
        // Redis' own execution of the three state changes on the critical
        // path (submit EXEC, claim EVAL, finish EVALSHA), per round trip.
        let redis_exec = Duration::from_secs_f64(
            ["exec", "eval", "evalsha"]
                .iter()
                .map(|c| usec_total(&seq_stats, c))
                .sum::<f64>()
                / 1e6
                / n as f64,
        );
        pings.sort();
        seq.sort();
        let rtt = percentile(&pings, 0.5);
        let floor = rtt.mul_f64(CRITICAL_ROUND_TRIPS) + engine_time;
        let (p50, p99) = (percentile(&seq, 0.5), percentile(&seq, 0.99));

        println!("round trip of `{SCRIPT}` ({n} sequential runs, debug={})", cfg!(debug_assertions));
        println!("  redis PING round trip p50     {:>9.1} us", us(rtt));
        println!("  engine run time p50           {:>9.1} us", us(engine_time));
        println!(
            "  floor = {CRITICAL_ROUND_TRIPS} x PING + engine   {:>9.1} us",
            us(floor)
        );
        println!(
            "  redis execution of submit+claim+finish per round trip {:>9.1} us (not in the floor)",
            us(redis_exec)
        );
        for command in ["exec", "eval", "evalsha"] {
            println!(
                "    of which {command:<8} {:>9.1} us",
                usec_total(&seq_stats, command) / n as f64
            );
        }
        println!("  sequential p50                {:>9.1} us", us(p50));
        println!("  sequential p99                {:>9.1} us", us(p99));
        println!("  ratio p50 / floor             {:>9.2}   (target <= 1.5)", us(p50) / us(floor));
        println!(
            "  throughput, 1 in flight       {:>9.0} req/s",
            n as f64 / seq_time.as_secs_f64()
        );

        let total = n.max(64 * 10) / 64 * 64;
        let (t16, _) = throughput(&client, queue, 16, total).await;
        println!("  throughput, 16 in flight      {:>9.0} req/s", t16);
        let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut conn).await.expect("resetstat");
        let cpu0 = common::process_cpu();
        let rcpu0 = redis_cpu(&mut conn).await;
        let (t64, wall64) = throughput(&client, queue, 64, total).await;
        let cpu64 = common::process_cpu() - cpu0;
        let rcpu64 = redis_cpu(&mut conn).await - rcpu0;
        let commandstats: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.expect("info");
        println!("  throughput, 64 in flight      {:>9.0} req/s", t64);
        let per_task = wall64.div_f64(total as f64);
        println!("  where the time goes at 64 in flight, per task (one worker runs one task at a time):");
        println!("    wall time per task                        {:>9.1} us", us(per_task));
        println!(
            "    worker cycle floor: 1 x PING + engine      {:>9.1} us  (finish-and-take-next is one script)",
            us(rtt + engine_time)
        );
        println!("    redis CPU per task                        {:>9.1} us", us(rcpu64.div_f64(total as f64)));
        println!(
            "    our CPU per task (worker+client+engine)   {:>9.1} us",
            us(cpu64.div_f64(total as f64))
        );
        println!("    redis commands (calls, usec per call):");
        for line in commandstats.lines().filter(|l| l.starts_with("cmdstat_")) {
            let name = line.trim_start_matches("cmdstat_").split(':').next().unwrap_or("");
            let field = |key: &str| {
                line.split(',')
                    .find_map(|kv| kv.split_once('=').filter(|(k, _)| k.ends_with(key)).map(|(_, v)| v.to_owned()))
                    .unwrap_or_default()
            };
            println!("      {name:<10} calls={:<8} usec_per_call={}", field("calls"), field("usec_per_call"));
        }

        // Idle: nothing submitted; the worker blocks in BLMOVE and beats.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle_for = Duration::from_secs(5);
        let c0 = common::process_cpu();
        tokio::time::sleep(idle_for).await;
        let idle = common::process_cpu() - c0;
        println!(
            "  idle CPU of worker + client   {:>9.3} % of one core over {idle_for:?} (target < 1 %)",
            idle.as_secs_f64() / idle_for.as_secs_f64() * 100.0
        );
        metrics_cost(&client, &url, n).await;
        token.cancel();
        worker.await.expect("join").expect("worker");
    });
}

/// A worker on `queue` with its own database, recording into `metrics` when
/// given; stopped by `token`.
fn start_worker(
    url: &str,
    queue: &str,
    metrics: Option<telemetry::TaskMetrics>,
    dir: &std::path::Path,
    token: &CancellationToken,
) -> tokio::task::JoinHandle<worker::Result<()>> {
    let db = Arc::new(ourdb::OurDb::open(dir, ourdb::Config::default()).expect("ourdb"));
    let engine = Arc::new(engine::CircleEngine::new(db, engine::Limits::default()));
    let mut options = worker::WorkerOptions::default();
    options.metrics = metrics;
    tokio::spawn(worker::run_with(
        worker::WorkerConfig::new(url, queue),
        options,
        engine,
        Arc::new(worker::WorkerStatus::default()),
        token.clone(),
    ))
}

/// Metrics recording off and on, in the same run: two workers alike but for
/// the recording, sequential round trips alternating between them (so both
/// see the same machine load), then 16 in flight on each in turn.
async fn metrics_cost(client: &Client, url: &str, n: usize) {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = telemetry::Metrics::new(&mut registry);
    let (off_dir, on_dir) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let token = CancellationToken::new();
    let off = start_worker(url, "bench_off", None, off_dir.path(), &token);
    let on = start_worker(
        url,
        "bench_on",
        Some(metrics.tasks("bench_on")),
        on_dir.path(),
        &token,
    );
    for _ in 0..300 {
        run_once(client, "bench_off").await;
        run_once(client, "bench_on").await;
    }
    let (mut seq_off, mut seq_on) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        seq_off.push(run_once(client, "bench_off").await);
        seq_on.push(run_once(client, "bench_on").await);
    }
    seq_off.sort();
    seq_on.sort();
    let total = n.max(16 * 10) / 16 * 16;
    let (t_off, _) = throughput(client, "bench_off", 16, total).await;
    let (t_on, _) = throughput(client, "bench_on", 16, total).await;
    let mut scraped = String::new();
    prometheus_client::encoding::text::encode(&mut scraped, &registry).expect("encode");
    let recorded = scraped
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"circles_tasks_finished_total{circle="bench_on",outcome="completed",kind="none"} "#)
        })
        .unwrap_or("?");
    println!("  metrics recording, off vs on (same run, interleaved; {recorded} tasks recorded):");
    println!(
        "    sequential p50   off {:>9.1} us   on {:>9.1} us",
        us(percentile(&seq_off, 0.5)),
        us(percentile(&seq_on, 0.5))
    );
    println!(
        "    sequential p99   off {:>9.1} us   on {:>9.1} us",
        us(percentile(&seq_off, 0.99)),
        us(percentile(&seq_on, 0.99))
    );
    println!(
        "    16 in flight     off {:>9.0} req/s on {:>9.0} req/s",
        t_off, t_on
    );
    token.cancel();
    off.await.expect("join").expect("worker off");
    on.await.expect("join").expect("worker on");
}
