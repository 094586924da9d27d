//! What the status table shows: per-circle shared state written by the
//! supervisor and the stats poller, and the [`Snapshot`] the renderers draw.
//!
//! Invariant: a component is shown `running` only while its task is alive and,
//! for the worker, while the worker itself reports `Running`. A task that ended
//! is `restarting` (with the reason) or `stopped`/`failed`, never `running`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::CircleConfig;

mod gateway_row;
mod row;
mod snapshot;
pub use gateway_row::GatewayRow;
pub use row::Row;
pub use snapshot::{Header, Snapshot, snapshot};

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
    /// Never started: the reload that was to start it could not (`why`).
    /// It stays so until a later reload applies (and starts it, or drops
    /// it from the file).
    NotStarted(String),
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
    /// The latest counters; `None` when the last read failed.
    pub latest: Option<client::QueueStats>,
    /// The processed and failed counts of the last read that succeeded:
    /// shown while a read fails (a stalled Redis), instead of the worker's
    /// own counts since it started, which would make the columns jump back
    /// and forth.
    pub counted: Option<(u64, u64)>,
}

impl Stats {
    /// Takes the outcome of one read.
    pub fn read(&mut self, latest: Option<client::QueueStats>) {
        if let Some(s) = &latest {
            self.counted = Some((s.processed, s.failed));
        }
        self.latest = latest;
    }
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
    /// drain can still close it. Set when it is opened: at the start, or by
    /// a standby once it holds the lease ([`CircleState::opened`]).
    pub db: std::sync::OnceLock<std::sync::Weak<ourdb::OurDb>>,
    /// Whether it has a live worker, as this process sees it (when it
    /// serves the circle's endpoint: see `crate::gateway`).
    pub sight: Option<server_ws::WorkerSight>,
    /// The gateways serving it, as the stats poller last read them.
    pub gateways: Mutex<Option<Vec<client::Gateway>>>,
    /// Set while a reload takes it out (it drains, then goes): its row still
    /// shows, and `/readyz` does not wait for it.
    pub leaving: std::sync::atomic::AtomicBool,
    /// When a row last saw its worker and server both up after either was
    /// not (a standby that took over, a worker back from an outage).
    up_seen: Mutex<Option<Instant>>,
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
            db: std::sync::OnceLock::new(),
            sight: None,
            gateways: Mutex::new(None),
            leaving: std::sync::atomic::AtomicBool::new(false),
            up_seen: Mutex::new(None),
        }
    }

    /// A circle of the file that a reload could not start, for `why`: its
    /// row says so until a later reload applies, in both components' cells
    /// whatever the process's `--role` (a narrow table shows the worker's
    /// only, and a gateway's circle that did not start serves nothing).
    pub fn new_not_started(config: CircleConfig, scheme: &str, host: &str, why: &str) -> Self {
        let state = CircleState::new(config, scheme, host);
        for slot in [&state.worker, &state.server] {
            lock(slot).phase = Phase::NotStarted(why.to_owned());
        }
        state
    }

    /// Whether a reload could not start it (see [`CircleState::new_not_started`]):
    /// nothing of it runs, and its Redis may be one no client connects.
    pub fn never_started(&self) -> bool {
        matches!(lock(&self.worker).phase, Phase::NotStarted(_))
            || matches!(lock(&self.server).phase, Phase::NotStarted(_))
    }

    /// The same circle, its workers' liveness kept in `sight`.
    pub fn with_sight(mut self, sight: server_ws::WorkerSight) -> Self {
        self.sight = Some(sight);
        self
    }

    /// The same circle, its database sampled by the metrics.
    pub fn with_db(self, db: &Arc<ourdb::OurDb>) -> Self {
        self.opened(db);
        self
    }

    /// Its database is open (a standby's, once it holds the lease): the
    /// metrics sample it from now on.
    pub fn opened(&self, db: &Arc<ourdb::OurDb>) {
        let _ = self.db.set(Arc::downgrade(db));
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
        // While no worker was seen since the start, the sight's start grace
        // (live until one dead time passed) says nothing of a worker: not
        // shown as live.
        let seen_any = self
            .sight
            .as_ref()
            .is_some_and(server_ws::WorkerSight::seen_any);
        // The latest look at Redis failed: nothing is known of the workers now.
        let unreachable = self
            .sight
            .as_ref()
            .and_then(server_ws::WorkerSight::failure);
        let sight_live = self.sight.as_ref().and_then(|s| s.live());
        let worker_live = sight_live
            .filter(|&live| seen_any || !live)
            .filter(|_| unreachable.is_none());
        let waiting = !seen_any && sight_live == Some(true);
        let (stats, counted) = {
            let stats = lock(&self.stats);
            (stats.latest.clone(), stats.counted)
        };
        let worker_lease = stats.as_ref().and_then(|s| s.lease.clone());
        let (worker, worker_detail, worker_restarts, worker_started, counts) = {
            let slot = lock(&self.worker);
            let (state, detail) = worker_display(&slot);
            let detail = match (state, worker_live) {
                (NOT_HERE, _) if unreachable.is_some() => Some(format!(
                    "{}; redis unreachable: {}",
                    detail.unwrap_or_default(),
                    unreachable.as_deref().unwrap_or_default()
                )),
                (NOT_HERE, Some(live)) => Some(format!(
                    "{}; {}",
                    detail.unwrap_or_default(),
                    seen(live, worker_lease.as_ref())
                )),
                (NOT_HERE, None) if waiting => {
                    Some(format!("{}; {NO_WORKER_YET}", detail.unwrap_or_default()))
                }
                _ => detail,
            };
            let counts = slot.worker.as_ref().map(|w| w.counts());
            (state, detail, slot.restarts, slot.started, counts)
        };
        let gateways: Option<Vec<GatewayRow>> = lock(&self.gateways)
            .as_ref()
            .map(|all| all.iter().map(GatewayRow::from).collect());
        let (server, server_detail, server_restarts, server_started, clients) = {
            let slot = lock(&self.server);
            let (state, detail) = phase_display(&slot.phase);
            let clients = match (&slot.phase, &slot.server) {
                (Phase::Alive, Some(s)) => s.connections(),
                _ => 0,
            };
            (state, detail, slot.restarts, slot.started, clients)
        };
        let up_since = match (worker, server) {
            (NOT_HERE, _) => server_started,
            (_, NOT_HERE) => worker_started,
            _ => worker_started.max(server_started),
        };
        // From when both came up: the later of their starts and the first row
        // that saw both up (a standby's run starts long before it takes over).
        let uptime = {
            let mut seen = lock(&self.up_seen);
            if serving(worker) && serving(server) {
                up_since
                    .max(*seen.get_or_insert_with(Instant::now))
                    .elapsed()
            } else {
                *seen = None;
                Duration::ZERO
            }
        };
        // Redis's counts (every worker's, kept there); the worker's own
        // since it started only before Redis was ever read.
        let (processed, failed) = match (&stats, counted.or(counts)) {
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
            worker_lease,
            server,
            server_detail,
            queue_len: stats.as_ref().map(|s| s.queue_len),
            in_flight: stats.as_ref().map(|s| s.in_flight),
            processed,
            failed,
            clients,
            uptime_secs: uptime.as_secs(),
            restarts: worker_restarts + server_restarts,
            worker_live,
            gateway_count: gateways.as_ref().map(Vec::len),
            gateways,
        }
    }
}

/// What a gateway-only row says of the circle's worker: whether one is
/// alive and, when its lease says, which process on which machine (the
/// machine id the lease adds to the host name is left out).
fn seen(live: bool, lease: Option<&client::Lease>) -> String {
    match (live, lease) {
        (true, Some(l)) => {
            let host = l.host.split('/').next().unwrap_or(&l.host);
            format!("{LIVE_WORKER}: pid {} on {host}", l.pid)
        }
        (true, None) => LIVE_WORKER.to_owned(),
        (false, _) => NO_LIVE_WORKER.to_owned(),
    }
}

/// How the worker column of a circle this process only serves ends while
/// a live worker is seen elsewhere.
pub const LIVE_WORKER: &str = "live worker seen";
/// … and while none is: `play` is then answered -32002.
pub const NO_LIVE_WORKER: &str = "no live worker";
/// … and in the first dead time of a process that has seen none yet (a
/// worker starting beside it may still come; `play` is not refused yet).
pub const NO_WORKER_YET: &str = "no worker seen yet";

/// Whether a component in `state` does its part: running, or run by
/// another process (its role leaves it elsewhere).
pub(crate) fn serving(state: &str) -> bool {
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
        Phase::NotStarted(why) => ("failed", Some(format!("did not start: {why}"))),
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
        Some(worker::WorkerState::Standby(reason)) => (STANDBY, Some(reason)),
        Some(worker::WorkerState::LeaseLost(reason)) => (LEASE_LOST, Some(reason)),
        Some(worker::WorkerState::Stopped) => ("stopped", None),
        Some(worker::WorkerState::Failed(reason)) => ("failed", Some(reason)),
        Some(worker::WorkerState::Degraded(reason)) => (DEGRADED, Some(reason)),
    }
}

/// The state of a component this process's `--role` does not run.
pub const NOT_HERE: &str = "not here";
/// A worker waiting (`--standby`) for the lease another orchestrator holds.
pub const STANDBY: &str = "standby";
/// A worker that stopped taking tasks: its lease was lost or not renewed.
pub const LEASE_LOST: &str = "lease lost";
/// A worker that takes tasks while its database refuses writes.
pub const DEGRADED: &str = "degraded";

#[cfg(test)]
mod tests;
