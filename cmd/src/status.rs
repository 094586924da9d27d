//! What the status table shows: per-circle shared state written by the
//! supervisor and the stats poller, and the [`Snapshot`] the renderers draw.
//!
//! Invariant: a component is shown `running` only while its task is alive and,
//! for the worker, while the worker itself reports `Running`. A task that ended
//! is `restarting` (with the reason) or `stopped`/`failed`, never `running`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize};

use crate::config::CircleConfig;

/// Lifecycle of one supervised component as the supervisor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Spawned, not yet known to be up.
    Starting,
    /// Its task is alive.
    Alive,
    /// Its task ended with `reason`; it is restarted after a backoff.
    Restarting(String),
    /// Ended by shutdown.
    Stopped,
    /// Not run by this process: its `--role` (the name given) leaves the
    /// component to another process. Never shown as running.
    NotHere(&'static str),
}

/// One supervised component (worker or server).
#[derive(Debug)]
pub struct Slot {
    /// Lifecycle.
    pub phase: Phase,
    /// Times it was restarted after a failure.
    pub restarts: u32,
    /// When the current run started.
    pub started: Instant,
    /// The live worker status of the current run (worker slots).
    pub worker: Option<Arc<worker::WorkerStatus>>,
    /// The live server status of the current run (server slots).
    pub server: Option<Arc<server_ws::ServerStatus>>,
    /// Where each run of a server records its metrics (server slots, when
    /// the admin endpoint is on).
    pub server_metrics: Option<telemetry::ServerMetrics>,
}

impl Default for Slot {
    fn default() -> Self {
        Slot::new()
    }
}

impl Slot {
    /// A slot of a component about to start.
    pub fn new() -> Self {
        Slot {
            phase: Phase::Starting,
            restarts: 0,
            started: Instant::now(),
            worker: None,
            server: None,
            server_metrics: None,
        }
    }

    /// A fresh server status for a new run, recording into
    /// [`Slot::server_metrics`] when set.
    pub fn new_server_status(&self) -> Arc<server_ws::ServerStatus> {
        Arc::new(match &self.server_metrics {
            Some(m) => server_ws::ServerStatus::with_metrics(m.clone()),
            None => server_ws::ServerStatus::default(),
        })
    }
}

/// Counters read from Redis by the stats poller.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// The latest counters, if any read succeeded.
    pub latest: Option<client::QueueStats>,
}

/// Everything known about one circle. Shared between the supervisor, the
/// poller and the renderer; every lock is held only to copy a few fields.
#[derive(Debug)]
pub struct CircleState {
    /// Its configuration.
    pub config: CircleConfig,
    /// Its queue name.
    pub queue: String,
    /// Its queue's Redis key ([`client::keys::tasks`]), the `Worker Queues` column.
    pub queue_key: String,
    /// Its WebSocket URL.
    pub url: String,
    /// The worker's slot.
    pub worker: Arc<Mutex<Slot>>,
    /// The server's slot.
    pub server: Arc<Mutex<Slot>>,
    /// Counters from Redis.
    pub stats: Mutex<Stats>,
    /// Where its worker records task metrics (when the admin endpoint is on).
    pub task_metrics: Option<telemetry::TaskMetrics>,
    /// Its database, for the metrics sampled at scrape time; weak, so the
    /// drain can still close it.
    pub db: Option<std::sync::Weak<ourdb::OurDb>>,
}

/// Locks a mutex even if a panicking thread poisoned it: the data is plain
/// display state and stays meaningful.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl CircleState {
    /// A circle about to start.
    pub fn new(config: CircleConfig, scheme: &str, host: &str) -> Self {
        let url = ws_url(scheme, host, config.port);
        let queue = config.queue();
        CircleState {
            queue_key: client::keys::tasks(&queue),
            queue,
            url,
            config,
            worker: Arc::new(Mutex::new(Slot::new())),
            server: Arc::new(Mutex::new(Slot::new())),
            stats: Mutex::new(Stats::default()),
            task_metrics: None,
            db: None,
        }
    }

    /// The same circle, its database sampled by the metrics.
    pub fn with_db(mut self, db: &Arc<ourdb::OurDb>) -> Self {
        self.db = Some(Arc::downgrade(db));
        self
    }

    /// The same circle, its worker and server recording into `metrics`
    /// (handles resolved once, here).
    pub fn with_metrics(mut self, metrics: Option<&telemetry::Metrics>) -> Self {
        if let Some(metrics) = metrics {
            self.task_metrics = Some(metrics.tasks(&self.config.name));
            lock(&self.server).server_metrics = Some(metrics.server(&self.config.name));
        }
        self
    }

    /// The row of this circle now.
    pub fn row(&self) -> Row {
        let (worker, worker_detail, worker_restarts, worker_started, counts) = {
            let slot = lock(&self.worker);
            let (state, detail) = worker_display(&slot);
            let counts = slot.worker.as_ref().map(|w| w.counts());
            (state, detail, slot.restarts, slot.started, counts)
        };
        let (server, server_detail, server_restarts, server_started, clients) = {
            let slot = lock(&self.server);
            let (state, detail) = phase_display(&slot.phase);
            let clients = match (&slot.phase, &slot.server) {
                (Phase::Alive, Some(s)) => s.connections(),
                _ => 0,
            };
            (state, detail, slot.restarts, slot.started, clients)
        };
        let stats = lock(&self.stats).latest.clone();
        let up_since = match (worker, server) {
            (NOT_HERE, _) => server_started,
            (_, NOT_HERE) => worker_started,
            _ => worker_started.max(server_started),
        };
        let uptime = if serving(worker) && serving(server) {
            up_since.elapsed()
        } else {
            Duration::ZERO
        };
        let (processed, failed) = match (&stats, counts) {
            (Some(s), _) => (Some(s.processed), Some(s.failed)),
            (None, Some((p, f))) => (Some(p), Some(f)),
            (None, None) => (None, None),
        };
        Row {
            name: self.config.name.clone(),
            id: self.config.id,
            queue: self.queue.clone(),
            queue_key: self.queue_key.clone(),
            url: self.url.clone(),
            principals: self.config.principals.len(),
            worker,
            worker_detail,
            server,
            server_detail,
            queue_len: stats.as_ref().map(|s| s.queue_len),
            in_flight: stats.as_ref().map(|s| s.in_flight),
            processed,
            failed,
            clients,
            uptime_secs: uptime.as_secs(),
            restarts: worker_restarts + server_restarts,
        }
    }
}

/// Whether a component in `state` does its part: running, or run by
/// another process (its role leaves it elsewhere).
fn serving(state: &str) -> bool {
    state == "running" || state == NOT_HERE
}

/// `<scheme>://host:port/ws` (`ws` or `wss`), with IPv6 hosts bracketed.
pub fn ws_url(scheme: &str, host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("{scheme}://[{host}]:{port}/ws")
    } else {
        format!("{scheme}://{host}:{port}/ws")
    }
}

fn phase_display(phase: &Phase) -> (&'static str, Option<String>) {
    match phase {
        Phase::Starting => ("starting", None),
        Phase::Alive => ("running", None),
        Phase::Restarting(reason) => ("restarting", Some(reason.clone())),
        Phase::Stopped => ("stopped", None),
        Phase::NotHere(role) => (NOT_HERE, Some(format!("role {role}"))),
    }
}

fn worker_display(slot: &Slot) -> (&'static str, Option<String>) {
    if slot.phase != Phase::Alive {
        return phase_display(&slot.phase);
    }
    match slot.worker.as_ref().map(|w| w.state()) {
        None | Some(worker::WorkerState::Starting) => ("starting", None),
        Some(worker::WorkerState::Running) => ("running", None),
        Some(worker::WorkerState::Reconnecting(reason)) => ("reconnecting", Some(reason)),
        Some(worker::WorkerState::Stopped) => ("stopped", None),
        Some(worker::WorkerState::Failed(reason)) => ("failed", Some(reason)),
    }
}

/// The state of a component this process's `--role` does not run.
pub const NOT_HERE: &str = "not here";

/// A state or phase name read back from JSON (the `status` command), as
/// one of the names this version writes; `unknown` for any other.
fn known_name<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    const KNOWN: &[&str] = &[
        "starting",
        "running",
        "reconnecting",
        "restarting",
        "stopped",
        "failed",
        "shutting down",
        NOT_HERE,
    ];
    let name = String::deserialize(d)?;
    Ok(KNOWN
        .iter()
        .find(|k| **k == name)
        .copied()
        .unwrap_or("unknown"))
}

/// One row of the table, also the JSON shape of a circle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Circle name.
    pub name: String,
    /// Circle id.
    pub id: u32,
    /// Redis queue name.
    pub queue: String,
    /// The queue's Redis key ([`client::keys::tasks`]), shown under `Worker Queues`.
    pub queue_key: String,
    /// WebSocket URL.
    pub url: String,
    /// How many principals may connect; 0: the circle is open.
    pub principals: usize,
    /// starting | running | reconnecting | restarting | stopped | failed |
    /// not here (the process's `--role` is `gateway`)
    #[serde(deserialize_with = "known_name")]
    pub worker: &'static str,
    /// Why the worker is not running, when known.
    pub worker_detail: Option<String>,
    /// starting | running | restarting | stopped | not here (the
    /// process's `--role` is `worker`)
    #[serde(deserialize_with = "known_name")]
    pub server: &'static str,
    /// Why the server is not running, when known.
    pub server_detail: Option<String>,
    /// Tasks waiting in the queue (unknown until the first stats read).
    pub queue_len: Option<u64>,
    /// Tasks running.
    pub in_flight: Option<u64>,
    /// Tasks completed.
    pub processed: Option<u64>,
    /// Tasks ended in error.
    pub failed: Option<u64>,
    /// Connected WebSocket clients.
    pub clients: usize,
    /// Seconds since worker and server are both up (0 while either is not).
    pub uptime_secs: u64,
    /// Restarts of the worker and the server after failures.
    pub restarts: u32,
}

impl Row {
    /// Whether every component of the circle this process runs is running
    /// (a component its role leaves to another process does not count).
    pub fn up(&self) -> bool {
        serving(self.worker) && serving(self.server)
    }

    /// Whether the row has left the starting phase (up, or visibly failing).
    pub fn settled(&self) -> bool {
        self.worker != "starting" && self.server != "starting"
    }

    /// The fields whose change is worth a line in plain mode.
    pub fn state_key(
        &self,
    ) -> (
        &'static str,
        &Option<String>,
        &'static str,
        &Option<String>,
        u32,
    ) {
        (
            self.worker,
            &self.worker_detail,
            self.server,
            &self.server_detail,
            self.restarts,
        )
    }
}

#[cfg(test)]
impl Row {
    /// Test fixture: circle `name` with queue `queue`, worker and server
    /// running on port 8081, no counters read yet.
    pub fn sample(name: &str, id: u32, queue: &str) -> Row {
        Row {
            name: name.into(),
            id,
            queue: queue.into(),
            queue_key: client::keys::tasks(queue),
            url: "ws://127.0.0.1:8081/ws".into(),
            principals: 0,
            worker: "running",
            worker_detail: None,
            server: "running",
            server_detail: None,
            queue_len: None,
            in_flight: None,
            processed: None,
            failed: None,
            clients: 0,
            uptime_secs: 0,
            restarts: 0,
        }
    }
}

/// The whole system at one moment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// Redis URL (password removed).
    pub redis_url: String,
    /// Whether we started that Redis.
    pub redis_managed: bool,
    /// Times the managed Redis was restarted after it died.
    pub redis_restarts: u32,
    /// Data directory.
    pub data_dir: String,
    /// The admin endpoint's URL (`http://ADDR`); `null` with `--admin off`.
    pub admin: Option<String>,
    /// `running`, `shutting down` or `stopped`.
    #[serde(deserialize_with = "known_name")]
    pub phase: &'static str,
    /// Seconds since the orchestrator started.
    pub uptime_secs: u64,
    /// One row per circle, in circles.json order.
    pub circles: Vec<Row>,
    /// The last reload of circles.json, if any.
    pub reload: Option<crate::reload::LastReload>,
}

/// Facts the header shows.
#[derive(Debug, Clone)]
pub struct Header {
    /// Redis URL (password removed).
    pub redis_url: String,
    /// Whether we started that Redis.
    pub redis_managed: bool,
    /// Data directory.
    pub data_dir: String,
    /// Where logs go, when not stderr.
    pub log_file: Option<String>,
    /// The admin endpoint's URL, when it is on.
    pub admin: Option<String>,
    /// Times the managed Redis was restarted after it died.
    pub redis_restarts: Arc<std::sync::atomic::AtomicU32>,
    /// When the orchestrator started.
    pub started: Instant,
    /// The last reload of circles.json, if any.
    pub reload: Arc<Mutex<Option<crate::reload::LastReload>>>,
}

/// Takes a snapshot of every circle.
pub fn snapshot(header: &Header, circles: &[Arc<CircleState>], phase: &'static str) -> Snapshot {
    Snapshot {
        redis_url: header.redis_url.clone(),
        redis_managed: header.redis_managed,
        redis_restarts: header
            .redis_restarts
            .load(std::sync::atomic::Ordering::Relaxed),
        data_dir: header.data_dir.clone(),
        admin: header.admin.clone(),
        phase,
        uptime_secs: header.started.elapsed().as_secs(),
        circles: circles.iter().map(|c| c.row()).collect(),
        reload: lock(&header.reload).clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_bracket_ipv6_hosts() {
        assert_eq!(ws_url("ws", "127.0.0.1", 8081), "ws://127.0.0.1:8081/ws");
        assert_eq!(ws_url("ws", "::1", 8081), "ws://[::1]:8081/ws");
        assert_eq!(ws_url("wss", "::1", 8081), "wss://[::1]:8081/ws");
    }

    #[test]
    fn a_component_whose_task_ended_is_never_shown_running() {
        let cfg = CircleConfig {
            id: 1,
            name: "A".into(),
            port: 1,
            principals: Vec::new(),
            redis: None,
        };
        let state = CircleState {
            queue: "a".into(),
            queue_key: client::keys::tasks("a"),
            url: ws_url("ws", "127.0.0.1", 1),
            config: cfg,
            worker: Arc::new(Mutex::new(Slot::new())),
            server: Arc::new(Mutex::new(Slot::new())),
            stats: Mutex::new(Stats::default()),
            task_metrics: None,
            db: None,
        };
        lock(&state.server).phase = Phase::Restarting("boom".into());
        lock(&state.worker).phase = Phase::Restarting("lost".into());
        let row = state.row();
        assert_eq!(row.server, "restarting");
        assert_eq!(row.server_detail.as_deref(), Some("boom"));
        assert_eq!(row.worker, "restarting");
        assert_eq!(row.uptime_secs, 0);
        assert!(!row.up());
        lock(&state.worker).phase = Phase::NotHere("gateway");
        let row = state.row();
        assert_eq!(row.worker, NOT_HERE);
        assert_eq!(row.worker_detail.as_deref(), Some("role gateway"));
        assert!(!row.up(), "the server still restarts");
        lock(&state.server).phase = Phase::Alive;
        assert!(
            state.row().up(),
            "a gateway's circle is up when its server runs"
        );
    }
}
