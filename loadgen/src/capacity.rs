//! Where a task's CPU goes, for the capacity model: one `--role worker`
//! and one `--role gateway` orchestrator on the benchmark's Redis, a
//! closed-loop load through the gateway, and the CPU time each process
//! (and Redis, and the load generator itself) spent per task. A figure of
//! microseconds of CPU per task is tasks per second per core: 1,000,000
//! divided by it. With a memory run, Redis `used_memory` is sampled while a
//! steady load runs, so the delivered-result TTL's bound can be read off.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

use crate::client;
use crate::meter::{dbsize, field, info, process_cpu, redis_cpu};
use crate::orchestrator::{Orchestrator, write_config};
use crate::plan::Script;

/// What a capacity run measures.
#[derive(Debug, Clone)]
pub struct CapacityOptions {
    /// The orchestrator under test.
    pub binary: PathBuf,
    /// Circles served by the gateway and the worker.
    pub circles: usize,
    /// Connections of the closed-loop loads, spread over the circles.
    pub conns: usize,
    /// Unmeasured load before each measured one.
    pub warmup: Duration,
    /// Measured time of each load.
    pub duration: Duration,
    /// A steady trivial load of this length with `used_memory` sampled
    /// every `sample` (none: no memory run).
    pub memory: Option<Duration>,
    /// Interval between memory samples.
    pub sample: Duration,
    /// Extra orchestrator options for both processes (`--delivered-ttl 5s`).
    pub extra: Vec<String>,
}

/// The CPU one load cost, per task, by process.
#[derive(Debug, Clone)]
pub struct CpuRow {
    /// The load's name.
    pub load: &'static str,
    /// Tasks answered per second.
    pub throughput: f64,
    /// Error replies.
    pub errors: u64,
    /// CPU microseconds per task of the gateway process.
    pub gateway_us: f64,
    /// Of the worker process.
    pub worker_us: f64,
    /// Of redis-server.
    pub redis_us: f64,
    /// Of the load generator (the WebSocket clients).
    pub clients_us: f64,
}

/// One memory sample.
#[derive(Debug, Clone, Copy)]
pub struct MemorySample {
    /// Seconds since the memory run started.
    pub at_s: f64,
    /// Redis `used_memory`, bytes.
    pub used_memory: u64,
    /// Task hashes in Redis (`DBSIZE`, which the hashes dominate).
    pub keys: u64,
}

/// What a capacity run measured.
#[derive(Debug, Clone)]
pub struct CapacityReport {
    /// Rows, one per load.
    pub rows: Vec<CpuRow>,
    /// Memory samples of the memory run (empty without one).
    pub memory: Vec<MemorySample>,
    /// Throughput of the memory run.
    pub memory_throughput: f64,
    /// The options it ran with.
    pub options: CapacityOptions,
}

/// Runs the capacity loads (and the memory run) against a gateway and a worker process.
pub async fn run(options: &CapacityOptions) -> anyhow::Result<CapacityReport> {
    let redis = testkit::RedisServer::start();
    let dir = tempfile::tempdir().context("a temp dir")?;
    let (config, urls) = write_config(dir.path(), options.circles, "capacity")?;
    let data = dir.path().join("data");
    let extra: Vec<&str> = options.extra.iter().map(String::as_str).collect();
    let with_role = |role: &'static str| {
        let mut args = vec!["--role", role];
        args.extend(&extra);
        args
    };
    let worker = Orchestrator::start_with(
        &options.binary,
        &config,
        &data,
        &redis.url(),
        Vec::new(),
        &with_role("worker"),
    )
    .await?;
    let gateway = Orchestrator::start_with(
        &options.binary,
        &config,
        &data,
        &redis.url(),
        urls.clone(),
        &with_role("gateway"),
    )
    .await?;
    let urls = Arc::new(urls);
    let mut rows = Vec::new();
    for (load, script) in [
        ("trivial `40 + 2`", Script::Trivial),
        ("1 KiB insert", Script::Write),
    ] {
        let scripts = Arc::new(script.texts(0));
        client::closed_loop(
            &urls,
            options.conns,
            &scripts,
            Duration::ZERO,
            options.warmup,
        )
        .await?;
        let before = Cpu::read(&gateway, &worker, redis.port()).await?;
        let m = client::closed_loop(
            &urls,
            options.conns,
            &scripts,
            Duration::ZERO,
            options.duration,
        )
        .await?;
        let after = Cpu::read(&gateway, &worker, redis.port()).await?;
        let tasks = (m.throughput * options.duration.as_secs_f64()).max(1.0);
        let per_task = |a: f64, b: f64| (b - a) * 1e6 / tasks;
        rows.push(CpuRow {
            load,
            throughput: m.throughput,
            errors: m.errors,
            gateway_us: per_task(before.gateway, after.gateway),
            worker_us: per_task(before.worker, after.worker),
            redis_us: per_task(before.redis, after.redis),
            clients_us: per_task(before.clients, after.clients),
        });
    }
    let (memory, memory_throughput) = match options.memory {
        Some(length) => memory_run(options, &urls, redis.port(), length).await?,
        None => (Vec::new(), 0.0),
    };
    gateway.stop().await?;
    worker.stop().await?;
    Ok(CapacityReport {
        rows,
        memory,
        memory_throughput,
        options: options.clone(),
    })
}

/// A steady trivial load of `length`, sampling Redis memory meanwhile.
async fn memory_run(
    options: &CapacityOptions,
    urls: &Arc<Vec<String>>,
    port: u16,
    length: Duration,
) -> anyhow::Result<(Vec<MemorySample>, f64)> {
    let scripts = Arc::new(Script::Trivial.texts(0));
    let (urls, conns) = (urls.clone(), options.conns);
    let load = tokio::spawn(async move {
        client::closed_loop(&urls, conns, &scripts, Duration::ZERO, length).await
    });
    let start = Instant::now();
    let mut samples = Vec::new();
    // Every sample falls inside the load: none of Redis after it ended.
    let step = options.sample.min(length);
    let mut due = step;
    while due <= length {
        tokio::time::sleep_until(start + due).await;
        due += step;
        let info = info(port, "memory").await?;
        samples.push(MemorySample {
            at_s: start.elapsed().as_secs_f64(),
            used_memory: field(&info, "used_memory")? as u64,
            keys: dbsize(port).await?,
        });
    }
    let m = load.await.context("the memory load panicked")??;
    Ok((samples, m.throughput))
}

/// CPU seconds so far of each process.
struct Cpu {
    gateway: f64,
    worker: f64,
    redis: f64,
    clients: f64,
}

impl Cpu {
    async fn read(gateway: &Orchestrator, worker: &Orchestrator, port: u16) -> anyhow::Result<Cpu> {
        Ok(Cpu {
            gateway: process_cpu(&gateway.pid().to_string())?,
            worker: process_cpu(&worker.pid().to_string())?,
            redis: redis_cpu(port).await?,
            clients: process_cpu("self")?,
        })
    }
}

impl CapacityReport {
    /// A markdown report: CPU per task by process and what one core of each
    /// sustains, then the memory samples.
    pub fn render(&self) -> String {
        let o = &self.options;
        let mut out = format!(
            "Capacity: {} circles, {} connections, one gateway and one worker process, \
             {:.0} s per load ({})\n\n",
            o.circles,
            o.conns,
            o.duration.as_secs_f64(),
            crate::report::machine(),
        );
        out.push_str(
            "| load | tasks/s | errors | gateway µs/task | worker µs/task | redis µs/task | clients µs/task |\n\
             |---|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in &self.rows {
            out.push_str(&format!(
                "| {} | {:.0} | {} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
                r.load, r.throughput, r.errors, r.gateway_us, r.worker_us, r.redis_us, r.clients_us
            ));
        }
        out.push_str("\nTasks per second one core of each sustains (1,000,000 / µs per task):\n\n");
        out.push_str("| load | gateway | worker | redis |\n|---|---:|---:|---:|\n");
        let per_core = |us: f64| if us > 0.0 { 1e6 / us } else { f64::INFINITY };
        for r in &self.rows {
            out.push_str(&format!(
                "| {} | {:.0} | {:.0} | {:.0} |\n",
                r.load,
                per_core(r.gateway_us),
                per_core(r.worker_us),
                per_core(r.redis_us)
            ));
        }
        if !self.memory.is_empty() {
            out.push_str(&format!(
                "\nMemory run: trivial load at {:.0} tasks/s, options {:?}\n\n\
                 | at s | used_memory MB | keys |\n|---:|---:|---:|\n",
                self.memory_throughput, o.extra
            ));
            for s in &self.memory {
                out.push_str(&format!(
                    "| {:.0} | {:.1} | {} |\n",
                    s.at_s,
                    s.used_memory as f64 / 1e6,
                    s.keys
                ));
            }
            let max = self.memory.iter().map(|s| s.used_memory).max().unwrap_or(0);
            out.push_str(&format!("\nmax used_memory {:.1} MB\n", max as f64 / 1e6));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_memory_sample_is_taken_while_the_load_runs() {
        // A 250 ms load sampled every 100 ms: samples at 0.1 and 0.2 s; one
        // at 0.3 s would be of Redis after the load, shown as of the load.
        let redis = testkit::RedisServer::start();
        let urls = Arc::new(vec![crate::echo::start().expect("echo server")]);
        let length = Duration::from_millis(250);
        let options = CapacityOptions {
            binary: PathBuf::new(),
            circles: 1,
            conns: 2,
            warmup: Duration::ZERO,
            duration: length,
            memory: Some(length),
            sample: Duration::from_millis(100),
            extra: Vec::new(),
        };
        let (samples, throughput) = memory_run(&options, &urls, redis.port(), length)
            .await
            .expect("memory run");
        assert!(throughput > 0.0);
        assert!(!samples.is_empty());
        for s in &samples {
            assert!(s.at_s <= length.as_secs_f64(), "a sample at {} s", s.at_s);
        }
    }

    #[test]
    fn this_process_has_spent_some_cpu() {
        // Spins until a tick of CPU is counted, however busy the machine
        // (within 10 s of wall time).
        let spin = Instant::now();
        while process_cpu("self").expect("reads /proc/self/stat") == 0.0 {
            assert!(spin.elapsed() < Duration::from_secs(10), "no CPU counted");
            std::hint::black_box(spin.elapsed());
        }
        assert!(process_cpu("self").expect("reads /proc/self/stat") > 0.0);
    }
}
