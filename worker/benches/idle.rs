//! Idle cost of many circles: `IDLE_N` (default 50) idle workers with the
//! default options against one real Redis. Prints Redis round trips per
//! second per circle (INFO commandstats), Redis' CPU and this process' CPU
//! over `IDLE_SECS` (default 20), then how long the idle workers take to stop
//! once cancelled. `cargo bench -p worker --bench idle`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn info(conn: &mut redis::aio::MultiplexedConnection, section: &str) -> String {
    redis::cmd("INFO")
        .arg(section)
        .query_async(conn)
        .await
        .expect("info")
}

fn redis_cpu(info: &str) -> f64 {
    info.lines()
        .filter_map(|l| {
            l.strip_prefix("used_cpu_sys:")
                .or_else(|| l.strip_prefix("used_cpu_user:"))
        })
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum()
}

/// (command, calls) of INFO commandstats.
fn calls(commandstats: &str) -> Vec<(String, u64)> {
    commandstats
        .lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

fn main() {
    let n = env("IDLE_N", 50) as usize;
    let secs = env("IDLE_SECS", 20);
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
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            workers.push(tokio::spawn(worker::run(
                worker::WorkerConfig::new(&url, &format!("idle_{i}")),
                Arc::clone(&engine),
                Arc::new(worker::WorkerStatus::default()),
                token.clone(),
            )));
        }
        let mut conn = redis::Client::open(url.as_str())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("conn");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut conn)
            .await
            .expect("resetstat");
        let cpu0 = redis_cpu(&info(&mut conn, "cpu").await);
        let ours0 = common::process_cpu();
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let wall = t0.elapsed().as_secs_f64();
        let ours = (common::process_cpu() - ours0).as_secs_f64();
        let cpu = redis_cpu(&info(&mut conn, "cpu").await) - cpu0;
        let stats = calls(&info(&mut conn, "commandstats").await);
        // The two INFO calls of this bench are not the workers'.
        let total: u64 = stats
            .iter()
            .filter(|(c, _)| c != "info" && c != "config|resetstat")
            .map(|(_, k)| k)
            .sum();
        println!("{n} idle workers, default options, over {wall:.1} s:");
        println!(
            "  redis commands per second per circle  {:>8.3}",
            total as f64 / wall / n as f64
        );
        for (command, k) in &stats {
            println!(
                "    {command:<20} {:>8.3} /s per circle",
                *k as f64 / wall / n as f64
            );
        }
        println!(
            "  redis-server CPU                      {:>8.3} % of one core",
            cpu / wall * 100.0
        );
        println!(
            "  worker process CPU                    {:>8.3} % of one core",
            ours / wall * 100.0
        );
        // The status table's read: `stats` per queue vs one `stats_many`.
        let client = client::Client::connect(&url).await.expect("client");
        let queues: Vec<String> = (0..n).map(|i| format!("idle_{i}")).collect();
        let refs: Vec<&str> = queues.iter().map(String::as_str).collect();
        client.stats_many(&refs).await.expect("warm up");
        let mut per_queue = Duration::MAX;
        let mut batched = Duration::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            for q in &refs {
                client.stats_many(&[q]).await.expect("stats").remove(0);
            }
            per_queue = per_queue.min(t.elapsed());
            let t = Instant::now();
            client.stats_many(&refs).await.expect("stats_many");
            batched = batched.min(t.elapsed());
        }
        println!(
            "  counters of all {n} queues: stats one by one {:>8.1} us, stats_many {:>8.1} us (best of 5)",
            per_queue.as_secs_f64() * 1e6,
            batched.as_secs_f64() * 1e6
        );
        let t = Instant::now();
        token.cancel();
        for w in workers {
            w.await.expect("join").expect("worker");
        }
        println!(
            "  all {n} idle workers stopped {:>8.1} ms after cancellation",
            t.elapsed().as_secs_f64() * 1e3
        );
    });
}
