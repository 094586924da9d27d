//! What `/metrics` samples at scrape time instead of recording: values
//! that already exist elsewhere, read when asked (per circle: queue length
//! and tasks in flight as the stats poller last read them, connections,
//! restarts, OurDB sizes and counters; process wide: Redis reconnects,
//! managed Redis restarts, the process's memory, CPU and descriptors).
//! Nothing here touches the task path.
//!
//! A circle's name is free text, and prometheus-client writes label values
//! as given: each goes through [`telemetry::escape_label_value`] first.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::process;
use crate::roster::Roster;
use crate::status::{CircleState, Phase, lock};

/// The scrape-time metrics of the orchestrator.
#[derive(Debug)]
pub struct Orchestrator {
    /// The circles running at each scrape (a reload changes them).
    pub circles: Roster,
    /// Restarts of the managed redis-server (the header's count).
    pub redis_restarts: Arc<AtomicU32>,
}

type Fmt = Result<(), std::fmt::Error>;

/// One value per circle, of one metric.
struct PerCircle<'a, T> {
    name: &'a str,
    help: &'a str,
    values: Vec<(&'a str, T)>,
}

/// Shorthand for a [`PerCircle`].
fn per<'a, T>(name: &'a str, help: &'a str, values: Vec<(&'a str, T)>) -> PerCircle<'a, T> {
    PerCircle { name, help, values }
}

fn per_circle_gauge(encoder: &mut DescriptorEncoder, m: PerCircle<'_, i64>) -> Fmt {
    let mut metric = encoder.encode_descriptor(m.name, m.help, None, MetricType::Gauge)?;
    for (circle, value) in m.values {
        let labels = [("circle", telemetry::escape_label_value(circle))];
        ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn per_circle_counter<T>(encoder: &mut DescriptorEncoder, m: PerCircle<'_, T>) -> Fmt
where
    ConstCounter<T>: EncodeMetric,
{
    let mut metric = encoder.encode_descriptor(m.name, m.help, None, MetricType::Counter)?;
    for (circle, value) in m.values {
        let labels = [("circle", telemetry::escape_label_value(circle))];
        ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge<T>(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: Option<T>) -> Fmt
where
    ConstGauge<T>: EncodeMetric,
{
    let Some(value) = value else { return Ok(()) };
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

fn counter<T>(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: Option<T>) -> Fmt
where
    ConstCounter<T>: EncodeMetric,
{
    let Some(value) = value else { return Ok(()) };
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

/// What one circle shows at this scrape.
struct Now<'a> {
    name: &'a str,
    up: bool,
    /// Whether it started (a reload may not have started it: then only
    /// `circles_circle_up` shows it, at 0).
    started: bool,
    queue_len: Option<u64>,
    in_flight: Option<u64>,
    connections: usize,
    worker_restarts: u32,
    server_restarts: u32,
    db: Option<ourdb::Stats>,
}

fn now(c: &CircleState) -> Now<'_> {
    let row = c.row();
    let (worker_restarts, server_restarts) = (lock(&c.worker).restarts, lock(&c.server).restarts);
    let connections = {
        let slot = lock(&c.server);
        match (&slot.phase, &slot.server) {
            (Phase::Alive, Some(s)) => s.connections(),
            _ => 0,
        }
    };
    Now {
        name: &c.config.name,
        up: row.up(),
        started: !c.never_started(),
        queue_len: row.queue_len,
        in_flight: row.in_flight,
        connections,
        worker_restarts,
        server_restarts,
        db: c.db.get().and_then(Weak::upgrade).map(|db| db.stats()),
    }
}

fn as_gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Collector for Orchestrator {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Fmt {
        let states = self.circles.current();
        let circles: Vec<Now<'_>> = states.iter().map(|c| now(c)).collect();
        let each = |f: &dyn Fn(&Now<'_>) -> Option<i64>| -> Vec<(&str, i64)> {
            circles
                .iter()
                .filter_map(|c| f(c).map(|v| (c.name, v)))
                .collect()
        };
        let gauges = [
            per(
                "circles_circle_up",
                "1 while the circle's worker and server both run, else 0",
                each(&|c| Some(i64::from(c.up))),
            ),
            per(
                "circles_queue_length",
                "Tasks waiting in the circle's queue, as the stats poller last read them",
                each(&|c| c.queue_len.map(as_gauge)),
            ),
            per(
                "circles_tasks_in_flight",
                "Tasks of the circle taken by a worker and not yet finished, as last read",
                each(&|c| c.in_flight.map(as_gauge)),
            ),
            per(
                "circles_ws_connections",
                "Open WebSocket connections of the circle",
                each(&|c| c.started.then(|| as_gauge(c.connections as u64))),
            ),
            per(
                "circles_ourdb_records",
                "Live records in the circle's OurDB",
                each(&|c| c.db.map(|db| as_gauge(db.live_records))),
            ),
            per(
                "circles_ourdb_file_bytes",
                "Bytes of the circle's OurDB data files (headers and frames)",
                each(&|c| c.db.map(|db| as_gauge(db.file_bytes))),
            ),
        ];
        for metric in gauges {
            per_circle_gauge(&mut encoder, metric)?;
        }
        let counters = [
            per(
                "circles_worker_restarts",
                "Restarts of the circle's worker after a failure",
                (circles.iter().filter(|c| c.started))
                    .map(|c| (c.name, u64::from(c.worker_restarts)))
                    .collect(),
            ),
            per(
                "circles_ws_server_restarts",
                "Restarts of the WebSocket host serving the circle after a failure",
                (circles.iter().filter(|c| c.started))
                    .map(|c| (c.name, u64::from(c.server_restarts)))
                    .collect(),
            ),
            per(
                "circles_ourdb_commits",
                "Commits to the circle's OurDB since the orchestrator opened it",
                circles
                    .iter()
                    .filter_map(|c| Some((c.name, c.db?.commits)))
                    .collect(),
            ),
            per(
                "circles_ourdb_fsyncs",
                "fsyncs of the circle's OurDB since the orchestrator opened it",
                circles
                    .iter()
                    .filter_map(|c| Some((c.name, c.db?.fsyncs)))
                    .collect(),
            ),
        ];
        for metric in counters {
            per_circle_counter(&mut encoder, metric)?;
        }
        per_circle_counter(
            &mut encoder,
            PerCircle {
                name: "circles_ourdb_fsync_seconds",
                help: "Time spent in fsyncs of the circle's OurDB since it was opened",
                values: circles
                    .iter()
                    .filter_map(|c| Some((c.name, c.db?.fsync_time.as_secs_f64())))
                    .collect(),
            },
        )?;
        counter(
            &mut encoder,
            "circles_redis_reconnects",
            "Connections to Redis made again after one was lost or an attempt failed",
            Some(client::reconnects()),
        )?;
        counter(
            &mut encoder,
            "circles_managed_redis_restarts",
            "Restarts of the managed redis-server after it died",
            Some(u64::from(self.redis_restarts.load(Ordering::Relaxed))),
        )?;
        let p = process::read();
        gauge(
            &mut encoder,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            p.rss_bytes.map(as_gauge),
        )?;
        counter(
            &mut encoder,
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            p.cpu_seconds,
        )?;
        gauge(
            &mut encoder,
            "process_open_fds",
            "Number of open file descriptors",
            p.open_fds.map(as_gauge),
        )?;
        gauge(
            &mut encoder,
            "process_max_fds",
            "Maximum number of open file descriptors",
            p.max_fds.map(as_gauge),
        )?;
        gauge(
            &mut encoder,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            p.start_time_seconds,
        )
    }
}
