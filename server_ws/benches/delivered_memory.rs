//! Redis memory under a sustained load through the real path (WebSocket →
//! server → Redis → worker → Rhai on OurDB → Redis → server → WebSocket),
//! with the delivered TTL short, then, for contrast, equal to the result
//! TTL. Each phase gets a fresh `redis-server` and samples `used_memory`
//! and the number of task hashes every second; with a short delivered TTL
//! the curve goes flat once the first results expire, with delivered TTL =
//! result TTL it grows with every task. Also prints `MEMORY USAGE` of a
//! finished task hash, the bytes-per-hash constant of the memory formula:
//!
//! ```text
//! used_memory ≈ base + b × (r_delivered × (delivered_ttl + lag) + r_other × result_ttl)
//! ```
//!
//! `r_delivered`: tasks/s whose outcome reached their WebSocket server in
//! time; `r_other`: every other task (pushed by other programs, cancelled,
//! ended after their deadline, notification lost); `lag`: Redis' active
//! expiry, a second or two; `b`: `MEMORY USAGE` of a finished hash plus
//! about 70 B of keyspace entries — about 490 B for a small task (every
//! value within `hash-max-listpack-value`, 64 B by default), about
//! 1 KB + the script and output lengths once one value is longer.
//!
//! `cargo bench -p server_ws --bench delivered_memory`. `DELIVERED_SECS`
//! (default 30): length of each phase; `DELIVERED_TTL_SECS` (default 5):
//! the short delivered TTL; `DELIVERED_CONNS` (default 4) connections with
//! `DELIVERED_IN_FLIGHT` (default 16) requests in flight each. Prints
//! figures; asserts nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use server_ws::{ServerConfig, ServerStatus, ServerTiming};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const QUEUE: &str = "bench_circle";
/// A typical small task: a value computed and returned as text.
const SCRIPT: &str = r#"let x = 40 + 2; `answer ${x}`"#;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A field of `INFO` as a number.
async fn info_field(
    conn: &mut redis::aio::MultiplexedConnection,
    section: &str,
    name: &str,
) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(conn)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// `MEMORY USAGE` of a random finished task hash and its field names, if
/// one is found in a few tries.
async fn finished_hash_usage(
    conn: &mut redis::aio::MultiplexedConnection,
) -> Option<(u64, String)> {
    for _ in 0..20 {
        let key: Option<String> = redis::cmd("RANDOMKEY")
            .query_async(conn)
            .await
            .expect("RANDOMKEY");
        let Some(key) = key.filter(|k| k.starts_with(client::keys::TASK_DETAILS_PREFIX)) else {
            continue;
        };
        let fields: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(conn)
            .await
            .expect("HGETALL");
        if !fields
            .iter()
            .any(|(k, v)| k == "status" && v == "completed")
        {
            continue;
        }
        let bytes: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .arg("SAMPLES")
            .arg(0)
            .query_async(conn)
            .await
            .expect("MEMORY USAGE");
        let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        return bytes.map(|b| (b, names.join(" ")));
    }
    None
}

/// Keeps `in_flight` `play` calls going on one connection until `stop`,
/// counting replies in `done`.
async fn load(url: String, in_flight: u64, stop: CancellationToken, done: Arc<AtomicU64>) {
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket upgrade");
    let (mut tx, mut rx) = ws.split();
    let request = |id: u64| {
        Message::text(
            serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "play",
                "params": {"script": SCRIPT}})
            .to_string(),
        )
    };
    let mut next = 0;
    for _ in 0..in_flight {
        next += 1;
        tx.send(request(next)).await.expect("send");
    }
    let mut outstanding = in_flight;
    while outstanding > 0 {
        let text = match rx.next().await {
            Some(Ok(Message::Text(text))) => text,
            // The server's pings (answered by tungstenite as it reads).
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break,
        };
        let reply: serde_json::Value = serde_json::from_str(&text).expect("json reply");
        assert!(reply.get("result").is_some(), "failed: {reply}");
        done.fetch_add(1, Ordering::Relaxed);
        outstanding -= 1;
        if !stop.is_cancelled() {
            next += 1;
            tx.send(request(next)).await.expect("send");
            outstanding += 1;
        }
    }
    let _ = tx.close().await;
}

/// One phase: a fresh Redis, worker and server with `delivered_ttl`; load
/// for `secs`, sampling every second. Returns the last `used_memory`.
async fn phase(label: &str, delivered_ttl: Duration, secs: u64, conns: u64, in_flight: u64) -> u64 {
    let redis = testkit::RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = ourdb::OurDb::open(dir.path(), ourdb::Config::default()).expect("open ourdb");
    let engine = Arc::new(engine::CircleEngine::new(
        Arc::new(db),
        engine::Limits::default(),
    ));
    let worker_token = CancellationToken::new();
    let worker = tokio::spawn(worker::run(
        worker::WorkerConfig::new(&redis.url(), QUEUE),
        engine,
        Arc::new(worker::WorkerStatus::default()),
        worker_token.clone(),
    ));
    let client = client::Client::connect(&redis.url())
        .await
        .expect("connect");
    let mut config = ServerConfig::new("Bench Circle", QUEUE);
    config.delivered_ttl = Some(delivered_ttl);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let url = format!("ws://{}/ws", listener.local_addr().expect("addr"));
    let server_token = CancellationToken::new();
    let server = tokio::spawn(server_ws::run_with(
        config,
        ServerTiming::default(),
        listener,
        client,
        Arc::new(ServerStatus::default()),
        server_token.clone(),
    ));
    let mut conn = redis::Client::open(redis.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");

    let base = info_field(&mut conn, "memory", "used_memory").await;
    println!(
        "\n{label}: delivered TTL {delivered_ttl:?}, result TTL {:?}, {conns} connections × \
         {in_flight} in flight, {secs} s; base used_memory {base} B",
        worker::DEFAULT_RESULT_TTL
    );
    println!(
        "{:>5} {:>9} {:>8} {:>9} {:>14} {:>10}",
        "t_s", "tasks", "rate/s", "hashes", "used_memory", "Δ_B/hash"
    );
    let stop = CancellationToken::new();
    let done = Arc::new(AtomicU64::new(0));
    let loaders: Vec<_> = (0..conns)
        .map(|_| {
            tokio::spawn(load(
                url.clone(),
                in_flight,
                stop.clone(),
                Arc::clone(&done),
            ))
        })
        .collect();
    let started = Instant::now();
    let mut last_done = 0;
    let mut used = base;
    let mut sample = None;
    for t in 1..=secs {
        tokio::time::sleep_until((started + Duration::from_secs(t)).into()).await;
        let now_done = done.load(Ordering::Relaxed);
        used = info_field(&mut conn, "memory", "used_memory").await;
        let keys: u64 = redis::cmd("DBSIZE")
            .query_async(&mut conn)
            .await
            .expect("DBSIZE");
        // Every key but the queue's few bookkeeping keys is a task hash.
        let hashes = keys.saturating_sub(4);
        let per_hash = used.saturating_sub(base).checked_div(hashes).unwrap_or(0);
        println!(
            "{t:>5} {now_done:>9} {:>8} {hashes:>9} {used:>14} {per_hash:>10}",
            now_done - last_done
        );
        last_done = now_done;
        if sample.is_none() {
            sample = finished_hash_usage(&mut conn).await;
        }
    }
    stop.cancel();
    for loader in loaders {
        loader.await.expect("loader");
    }
    let total = done.load(Ordering::Relaxed);
    println!(
        "{label}: {total} tasks, {:.0}/s on average",
        total as f64 / started.elapsed().as_secs_f64()
    );
    if let Some((bytes, fields)) = sample {
        println!("{label}: MEMORY USAGE of a finished task hash: {bytes} B (fields: {fields})");
    }
    server_token.cancel();
    worker_token.cancel();
    let _ = server.await;
    let _ = worker.await;
    used
}

fn main() {
    let secs = env_or("DELIVERED_SECS", 30);
    let short = Duration::from_secs(env_or("DELIVERED_TTL_SECS", 5));
    let conns = env_or("DELIVERED_CONNS", 4);
    let in_flight = env_or("DELIVERED_IN_FLIGHT", 16);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let flat = phase("short delivered TTL", short, secs, conns, in_flight).await;
        let grows = phase(
            "delivered TTL = result TTL",
            worker::DEFAULT_RESULT_TTL,
            secs,
            conns,
            in_flight,
        )
        .await;
        println!(
            "\nused_memory at the end: {flat} B with delivered TTL {short:?}, {grows} B with \
             delivered TTL = result TTL"
        );
    });
}
