//! Whether Redis answers: a `PING` on the task client's connection every
//! [`PROBE_EVERY`], its round trip recorded, its verdict kept for `/readyz`
//! and `circles_redis_up`. One probe for every reader, so a scrape or a
//! readiness probe costs Redis nothing.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::status::lock;

/// How often Redis is pinged.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long one ping may take before Redis counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The latest verdict on Redis, and its metrics.
#[derive(Debug)]
pub struct RedisHealth {
    up: AtomicBool,
    /// Why it is down, when it is.
    why: Mutex<Option<String>>,
    up_gauge: Gauge,
    ping: Histogram,
}

impl RedisHealth {
    /// Registers `circles_redis_up` and `circles_redis_ping_seconds`; Redis
    /// counts as down until the first probe answers.
    pub fn new(registry: &mut Registry) -> RedisHealth {
        let health = RedisHealth {
            up: AtomicBool::new(false),
            why: Mutex::new(Some("not probed yet".to_string())),
            up_gauge: Gauge::default(),
            ping: Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
        };
        registry.register(
            "circles_redis_up",
            "1 when the last PING of the task client's Redis was answered, else 0",
            health.up_gauge.clone(),
        );
        registry.register(
            "circles_redis_ping_seconds",
            "Round-trip time of the PINGs the admin endpoint sends Redis every second",
            health.ping.clone(),
        );
        health
    }

    /// `Ok` when the last probe was answered, else why not.
    pub fn verdict(&self) -> Result<(), String> {
        if self.up.load(Ordering::Relaxed) {
            return Ok(());
        }
        Err(lock(&self.why)
            .clone()
            .unwrap_or_else(|| "no answer".to_string()))
    }

    fn record(&self, result: Result<Duration, String>) {
        match result {
            Ok(rtt) => {
                self.ping.observe(rtt.as_secs_f64());
                *lock(&self.why) = None;
                self.up.store(true, Ordering::Relaxed);
                self.up_gauge.set(1);
            }
            Err(why) => {
                *lock(&self.why) = Some(why);
                self.up.store(false, Ordering::Relaxed);
                self.up_gauge.set(0);
            }
        }
    }
}

/// Pings Redis every [`PROBE_EVERY`] until `stop`.
pub async fn run(
    client: client::Client,
    health: std::sync::Arc<RedisHealth>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let result = match tokio::time::timeout(PROBE_TIMEOUT, client.ping()).await {
            Ok(Ok(rtt)) => Ok(rtt),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer to PING within {PROBE_TIMEOUT:?}")),
        };
        health.record(result);
    }
}
