//! Dev-only end-to-end load generator of the circles workspace.
//!
//! [`run`] starts its own `redis-server` (`testkit`), then the real
//! `circles_orchestrator` binary (and a `--baseline` one) with a generated
//! circles.json, drives real WebSocket JSON-RPC clients against it and
//! returns a [`Report`]: sequential latency of `40 + 2`, closed-loop
//! throughput at several connection counts over 1 and 4 circles, and a
//! read-heavy and a write-heavy script in each OurDB durability mode. Every
//! figure comes with its floor (see [`Report::render`]). The binary `loadgen`
//! is the command line around it.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! let options = loadgen::Options::quick("target/release/circles_orchestrator".into());
//! println!("{}", loadgen::run(&options).await?.render());
//! # Ok(()) }
//! ```

pub mod capacity;
mod client;
mod echo;
pub mod meter;
mod orchestrator;
mod plan;
mod report;
mod stats;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

pub use plan::{Durability, Load, Script};
pub use report::{Metric, Report, Row};

use client::Measured;
use orchestrator::Orchestrator;

/// Redis round trips on a request's critical path, counted as one-way hops
/// halved: the submit reaches Redis, the worker's blocked pop (with its
/// pipelined claim) returns, the finish script reaches Redis, its `PUBLISH`
/// reaches the submitter — four hops, two round trips.
pub const REDIS_ROUND_TRIPS: f64 = 2.0;

/// Records every circle holds before the read-heavy load.
const PREFILL: usize = 1000;

/// What to run and for how long.
#[derive(Debug, Clone)]
pub struct Options {
    /// The orchestrator under test.
    pub binary: PathBuf,
    /// An orchestrator to compare with, run beside the binary on the same
    /// Redis, each sync load interleaved between the two: request by
    /// request (sequential), in slices of at most half a second (closed
    /// loop). The baseline runs no flush load: it has no `--durability`.
    pub baseline: Option<PathBuf>,
    /// Unmeasured time at the start of every closed-loop load.
    pub warmup: Duration,
    /// Measured time of every closed-loop load.
    pub duration: Duration,
    /// Measured requests of the sequential load.
    pub requests: usize,
    /// Options passed to the orchestrator under test (not to the baseline),
    /// after its own.
    pub extra: Vec<String>,
}

impl Options {
    /// The full run: 1 s warm-up, 5 s per load, 2000 sequential requests.
    pub fn full(binary: PathBuf) -> Options {
        Options {
            binary,
            baseline: None,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(5),
            requests: 2000,
            extra: Vec::new(),
        }
    }

    /// A smoke run well under a minute.
    pub fn quick(binary: PathBuf) -> Options {
        Options {
            warmup: Duration::from_millis(200),
            duration: Duration::from_secs(1),
            requests: 200,
            ..Options::full(binary)
        }
    }
}

/// Runs every load of `plan::loads` against the binary (and the baseline),
/// with the floor measured in the same run.
pub async fn run(options: &Options) -> anyhow::Result<Report> {
    let redis = testkit::RedisServer::start();
    let ping_ms = echo::redis_ping_ms(redis.port(), 1000).await?;
    let echo_url = echo::start()?;
    let mut floors = Floors::new(echo_url, options);
    let mut rows = Vec::new();
    for durability in [Durability::Sync, Durability::Flush] {
        let loads = plan::loads(durability);
        let tag = format!("new {}", durability.name());
        let mut flags = vec!["--durability", durability.name()];
        flags.extend(options.extra.iter().map(String::as_str));
        let new = start_prefilled(&options.binary, &redis.url(), &tag, &flags).await?;
        // The baseline predates --durability and always syncs.
        let base = match (&options.baseline, durability) {
            (Some(binary), Durability::Sync) => {
                Some(start_prefilled(binary, &redis.url(), "base sync", &[]).await?)
            }
            _ => None,
        };
        // With a baseline (sync loads), both builds run each load,
        // interleaved within it (see `measure`), so a change in the
        // machine's other work weighs on both alike.
        for load in &loads {
            let measured = measure(
                options,
                &new,
                base.as_ref(),
                load,
                &floors.url,
                redis.port(),
            )
            .await?;
            rows.extend(floors.rows(load, &measured, ping_ms).await?);
        }
        new.stop().await?;
        if let Some(base) = base {
            base.stop().await?;
        }
    }
    Ok(Report {
        machine: report::machine(),
        date: report::date(),
        ping_ms,
        binary: options.binary.clone(),
        extra: options.extra.clone(),
        baseline: options.baseline.clone(),
        rows,
    })
}

/// Starts `binary` with four circles and prefills each with [`PREFILL`] records.
async fn start_prefilled(
    binary: &std::path::Path,
    redis_url: &str,
    tag: &str,
    extra: &[&str],
) -> anyhow::Result<Orchestrator> {
    let orchestrator = Orchestrator::start(binary, redis_url, 4, tag, extra).await?;
    let prefill =
        format!("for i in 0..{PREFILL} {{ db::insert(#{{ n: i, name: `record ${{i}}` }}); }}");
    for circle in 0..orchestrator.urls.len() {
        orchestrator.play(circle, &prefill).await?;
    }
    Ok(orchestrator)
}

/// What one load measured on each side.
struct Sides {
    /// The build under test.
    new: Measured,
    /// The baseline, when there is one.
    base: Option<Measured>,
    /// The floor's echo server, in the rotation of a sequential load.
    echo: Option<Measured>,
}

/// Runs one load against a running orchestrator and, beside it, the
/// baseline. The sequential load sends each request to every side in turn
/// (the orchestrator, the baseline, the floor's echo server at `echo_url`);
/// a closed-loop load keeps each side's connections open and alternates the
/// sides in slices of [`client::SLICE`], one side at a time, and also tells
/// how busy the machine and Redis (on `port`) were during the orchestrator's
/// slices.
async fn measure(
    options: &Options,
    orchestrator: &Orchestrator,
    baseline: Option<&Orchestrator>,
    load: &Load,
    echo_url: &str,
    port: u16,
) -> anyhow::Result<Sides> {
    let scripts = Arc::new(load.script.texts(PREFILL));
    let sides: Vec<Arc<Vec<String>>> = std::iter::once(orchestrator)
        .chain(baseline)
        .map(|o| o.first(load.circles))
        .collect();
    let (measured, echo) = if load.sequential {
        let mut urls: Vec<String> = sides.iter().map(|urls| urls[0].clone()).collect();
        urls.push(echo_url.to_string());
        let (warmup, requests) = (options.requests / 10, options.requests);
        let mut measured = client::sequential_sides(&urls, &scripts, warmup, requests).await?;
        let echo = measured.pop();
        (measured, echo)
    } else {
        let mut pools = Vec::with_capacity(sides.len());
        for urls in &sides {
            pools.push(client::Pool::open(urls, load.conns).await?);
        }
        let (warmup, duration) = (options.warmup, options.duration);
        let measured = client::interleaved(pools, &scripts, warmup, duration, Some(port)).await?;
        (measured, None)
    };
    let mut measured = measured.into_iter();
    let new = measured
        .next()
        .context("the build under test is always a side")?;
    Ok(Sides {
        new,
        base: measured.next(),
        echo,
    })
}

/// The echo part of the floor of the closed-loop loads, measured once per
/// connection count (a sequential load's comes from its own rotation, see
/// `measure`).
struct Floors {
    url: String,
    options: Options,
    by_conns: HashMap<usize, Measured>,
}

impl Floors {
    fn new(url: String, options: &Options) -> Floors {
        Floors {
            url,
            options: options.clone(),
            by_conns: HashMap::new(),
        }
    }

    async fn closed_loop(&mut self, conns: usize) -> anyhow::Result<&Measured> {
        if !self.by_conns.contains_key(&conns) {
            let scripts = Arc::new(vec!["40 + 2".to_string()]);
            let urls = [self.url.clone()];
            let (warmup, duration) = (self.options.warmup, self.options.duration / 2);
            let m = client::closed_loop(&urls, conns, &scripts, warmup, duration).await?;
            self.by_conns.insert(conns, m);
        }
        Ok(&self.by_conns[&conns])
    }

    /// The rows of one load: p50 and p99 for the sequential one, req/s otherwise.
    async fn rows(&mut self, load: &Load, sides: &Sides, ping_ms: f64) -> anyhow::Result<Vec<Row>> {
        let (m, base) = (&sides.new, sides.base.as_ref());
        let redis_ms = REDIS_ROUND_TRIPS * ping_ms;
        let row = |metric, value, floor, baseline| Row {
            load: load.name(),
            circles: load.circles,
            conns: load.conns,
            durability: load.durability.name(),
            metric,
            value,
            floor,
            baseline,
            errors: m.errors + base.map_or(0, |b| b.errors),
            saturation: m.saturation,
        };
        if load.sequential {
            let echo = sides
                .echo
                .as_ref()
                .context("the echo floor runs in the sequential load's rotation")?;
            let floor = |p| echo.latencies.percentile_ms(p) + redis_ms + m.run_ms;
            let at = |x: &Measured, p| x.latencies.percentile_ms(p);
            return Ok(vec![
                row(
                    Metric::P50,
                    at(m, 50.0),
                    floor(50.0),
                    base.map(|b| at(b, 50.0)),
                ),
                row(
                    Metric::P99,
                    at(m, 99.0),
                    floor(99.0),
                    base.map(|b| at(b, 99.0)),
                ),
            ]);
        }
        // An upper bound of what the path allows, the least of: each connection waiting
        // at least the floor latency of an unloaded request (the echo of one
        // connection alone; queueing under load only adds to it); what the
        // same connections get from the echo server (an answer at once, so
        // the clients and the WebSocket hops are all that bound it); and
        // what the circles' workers can run, one script at a time each, back
        // to back (a batch's claim and finish are shared by its scripts).
        let alone = self.closed_loop(1).await?.latencies.percentile_ms(50.0);
        let latency_ms = alone + redis_ms + m.run_ms;
        let echo = self.closed_loop(load.conns).await?.throughput;
        let workers = load.circles as f64 * 1000.0 / m.run_ms.max(1e-3);
        let floor = (load.conns as f64 * 1000.0 / latency_ms)
            .min(echo)
            .min(workers);
        Ok(vec![row(
            Metric::Throughput,
            m.throughput,
            floor,
            base.map(|b| b.throughput),
        )])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Latencies;

    fn measured(latencies_us: Vec<u64>, errors: u64) -> Measured {
        Measured {
            latencies: Latencies::new(latencies_us),
            run_ms: 0.002,
            errors,
            throughput: 0.0,
            saturation: None,
        }
    }

    #[tokio::test]
    async fn a_latency_without_a_successful_reply_is_no_figure() {
        // The build under test answers every sequential request with an
        // error: it has no latency, and a p50 of 0.000 ms or a new/baseline
        // of 0.00 would read as infinitely faster than the baseline.
        let options = Options::quick("new".into());
        let mut floors = Floors::new("ws://127.0.0.1:9/ws".into(), &options);
        let load = plan::loads(Durability::Sync)[0];
        assert!(load.sequential);
        let sides = Sides {
            new: measured(Vec::new(), 200),
            base: Some(measured(vec![250; 200], 0)),
            echo: Some(measured(vec![50; 200], 0)),
        };
        let rows = floors.rows(&load, &sides, 0.02).await.expect("rows");
        let report = Report {
            machine: "m".into(),
            date: "d".into(),
            ping_ms: 0.02,
            binary: "new".into(),
            extra: Vec::new(),
            baseline: Some("old".into()),
            rows,
        };
        let shown = report.render();
        assert!(!shown.contains("| 0.000 |"), "{shown}");
        assert!(!shown.contains("| 0.00 |"), "{shown}");
        assert!(report.to_json()["rows"][0]["value"].is_null());
    }
}
