//! Spawning the long-lived components under supervision: each circle's
//! worker (its own child token) and a websocket host that serves many
//! circles' ports (one at start; more after reloads, see `set.rs`). Both are
//! tracked by the caller's [`TaskTracker`].

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::circles::{self, Closing};
use crate::settings::Settings;
use crate::status::{CircleState, Slot, lock};
use crate::supervisor;

/// Starts the supervised worker of one circle as `worker_config` says
/// (`Settings::worker_config`), running its tasks on `engine`; `token`
/// stops it.
pub fn start_worker(
    settings: &Settings,
    engine: &Arc<engine::CircleEngine>,
    worker_config: worker::WorkerConfig,
    state: &Arc<CircleState>,
    token: CancellationToken,
    tracker: &TaskTracker,
    changed: &Arc<Notify>,
) -> tokio::task::JoinHandle<()> {
    let name = state.config.name.clone();
    let engine = engine.clone();
    let mut worker_options = settings.worker.clone();
    worker_options.metrics = state.task_metrics.clone();
    tracker.spawn(supervisor::supervise(
        format!("worker of circle \"{name}\""),
        state.worker.clone(),
        changed.clone(),
        token.clone(),
        move |slot| {
            let status = Arc::new(worker::WorkerStatus::default());
            slot.worker = Some(status.clone());
            let fut = worker::run_with(
                worker_config.clone(),
                worker_options.clone(),
                engine.clone(),
                status,
                token.clone(),
            );
            async move { fut.await.map_err(|e| e.to_string()) }
        },
    ))
}

/// Starts the supervised worker of one circle in standby (`--standby`):
/// each run waits for the queue's lease (shown as `standby`, naming the
/// holder), then opens the circle's database (the first run only; it is
/// kept in `closing` for the shutdown), then runs the worker. The database
/// is never opened while another host holds the lease, so a standby on
/// shared storage cannot touch a database the holder writes.
pub fn start_standby_worker(
    settings: &Settings,
    worker_config: worker::WorkerConfig,
    closing: &Arc<Mutex<Option<Closing>>>,
    state: &Arc<CircleState>,
    token: CancellationToken,
    tracker: &TaskTracker,
    changed: &Arc<Notify>,
) -> tokio::task::JoinHandle<()> {
    let name = state.config.name.clone();
    let mut worker_options = settings.worker.clone();
    worker_options.metrics = state.task_metrics.clone();
    let circle = state.config.clone();
    let (data_dir, limits, durability) = (
        settings.data_dir.clone(),
        settings.engine.clone(),
        settings.durability,
    );
    let closing = closing.clone();
    let circle_state = Arc::clone(state);
    tracker.spawn(supervisor::supervise(
        format!("worker of circle \"{name}\""),
        state.worker.clone(),
        changed.clone(),
        token.clone(),
        move |slot| {
            let status = Arc::new(worker::WorkerStatus::default());
            slot.worker = Some(status.clone());
            let (mut config, options, token) =
                (worker_config.clone(), worker_options.clone(), token.clone());
            let (circle, data_dir, limits) = (circle.clone(), data_dir.clone(), limits.clone());
            let closing = closing.clone();
            let state = Arc::clone(&circle_state);
            async move {
                let opened = lock(&closing).is_some();
                if !opened
                    && !wait_database_free(&circle, &data_dir, &options, &status, &token).await?
                {
                    return Ok(());
                }
                match worker::await_lease(&config, &options, &status, &token)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    worker::Awaited::Held { predecessor } => config.predecessor = predecessor,
                    worker::Awaited::Cancelled => return Ok(()),
                }
                let opened = lock(&closing).as_ref().map(|(_, _, engine)| engine.clone());
                let engine = match opened {
                    Some(engine) => engine,
                    None => {
                        let opening = tokio::task::spawn_blocking(move || {
                            circles::open_store(&circle, &data_dir, &limits, durability)
                                .map(|s| (circle, s))
                        });
                        // The lease stays this database's while it opens.
                        let store = worker::keeping_lease(&config, &options, opening)
                            .await
                            .map_err(|e| e.to_string())?
                            .map_err(|e| format!("opening the database panicked: {e}"))?
                            .map_err(|e| e.to_string())?;
                        let (circle, store) = store;
                        state.opened(&store.db);
                        let engine = store.engine.clone();
                        *lock(&closing) = Some((circle, store.db, store.engine));
                        engine
                    }
                };
                worker::run_with(config, options, engine, status, token)
                    .await
                    .map_err(|e| e.to_string())
            }
        },
    ))
}

/// A standby's wait while another process of this host has the circle's
/// database open (the same `--data-dir`): that process holds the lease
/// under the same host and directory, which the lease would hand this one
/// at once (it takes a lease its own database held before, for a restart
/// after a crash), leaving a worker that cannot open the database. Checked
/// each heartbeat; `Ok(false)` when `token` is cancelled first.
async fn wait_database_free(
    circle: &crate::config::CircleConfig,
    data_dir: &std::path::Path,
    options: &worker::WorkerOptions,
    status: &worker::WorkerStatus,
    token: &CancellationToken,
) -> Result<bool, String> {
    let dir = circles::db_dir(data_dir, circle.id);
    loop {
        let probe = dir.clone();
        let open = tokio::task::spawn_blocking(move || ourdb::OurDb::is_open_elsewhere(&probe))
            .await
            .map_err(|e| format!("looking at the database panicked: {e}"))?
            .map_err(|e| e.to_string())?;
        if !open {
            return Ok(true);
        }
        status.set_standby(format!(
            "database {} is open in another process on this host (the same --data-dir); \
             taking over once it closes",
            dir.display()
        ));
        tokio::select! {
            () = token.cancelled() => return Ok(false),
            () = tokio::time::sleep(options.heartbeat_interval) => {}
        }
    }
}

/// A circle served by a websocket host: its limits, its bound port (every
/// run of a host gets a clone, so a restart never races for the port), the
/// slot its server state is shown in and the token of its connections.
pub struct Hosted {
    /// The circle's limits and queue.
    pub config: server_ws::ServerConfig,
    /// The orchestrator's copy of its listening socket.
    pub listener: std::net::TcpListener,
    /// Where its server state is shown.
    pub slot: Arc<Mutex<Slot>>,
    /// Cancelled when the circle goes (its connections close with 1001).
    pub token: CancellationToken,
    /// The task client of its Redis.
    pub client: client::Client,
}

/// What every run of a host is given a clone of: each circle's limits, its
/// listening socket, its connections' token and its Redis client. Shared
/// with the owner, who empties it once the host is paused for good, so that
/// the host keeps no socket of a circle it no longer serves open.
pub type HostCircles = Arc<
    Mutex<
        Vec<(
            server_ws::ServerConfig,
            std::net::TcpListener,
            CancellationToken,
            client::Client,
        )>,
    >,
>;

/// How a host is stopped, and what its connections count against.
pub struct HostControl {
    /// Stops it.
    pub token: CancellationToken,
    /// Makes it stop accepting (for good: a restart of a paused host serves
    /// nothing and waits for `token`).
    pub pause: server_ws::Pause,
    /// The connections every host may hold together.
    pub budget: Arc<server_ws::Budget>,
}

/// Starts a supervised websocket host that serves every given circle's port
/// (one actix worker thread for all of them, see `server_ws::run_many`). Its
/// state is mirrored into every circle's server slot; `control` stops or
/// pauses it. With `carry`, its first run keeps the server status already
/// in each slot: the circles move from a paused host and their open
/// connections are still counted there.
pub fn start_host(
    client: &client::Client,
    hosted: Vec<Hosted>,
    control: HostControl,
    carry: bool,
    tracker: &TaskTracker,
    changed: &Arc<Notify>,
) -> (tokio::task::JoinHandle<()>, HostCircles) {
    let HostControl {
        token,
        pause,
        budget,
    } = control;
    let client = client.clone();
    let (servers, slots): (Vec<_>, Vec<_>) = hosted
        .into_iter()
        .map(|h| ((h.config, h.listener, h.token, h.client), h.slot))
        .unzip();
    let what = format!("websocket host of {} circles", servers.len());
    let servers: HostCircles = Arc::new(Mutex::new(servers));
    let shared = servers.clone();
    let mut first = true;
    let handle = tracker.spawn(supervisor::supervise_shared(
        what,
        slots,
        changed.clone(),
        token.clone(),
        move |slots| {
            let carried = std::mem::take(&mut first) && carry;
            let servers = lock(&servers);
            let mut circles = Vec::with_capacity(servers.len());
            let mut failed = None;
            let retired = pause.is_requested();
            for ((config, listener, circle_token, circle_client), slot) in
                servers.iter().zip(slots.iter_mut())
            {
                if retired {
                    break;
                }
                let status = match (&slot.server, carried) {
                    (Some(status), true) => status.clone(),
                    _ => slot.new_server_status(),
                };
                slot.server = Some(status.clone());
                match listener.try_clone() {
                    Ok(listener) => {
                        circles.push(
                            server_ws::CircleServer::new(config.clone(), listener, status)
                                .with_token(circle_token.clone())
                                .with_client(circle_client.clone()),
                        );
                    }
                    Err(e) => {
                        failed.get_or_insert(format!(
                            "cannot reuse the listening socket of circle \"{}\": {e}",
                            config.circle_name
                        ));
                    }
                }
            }
            let (client, token, pause) = (client.clone(), token.clone(), pause.clone());
            let budget = Arc::clone(&budget);
            async move {
                if let Some(failed) = failed {
                    return Err(failed);
                }
                let timing = server_ws::ServerTiming::default();
                server_ws::run_many_pausable(circles, timing, client, token, pause, budget)
                    .await
                    .map_err(|e| e.to_string())
            }
        },
    ));
    (handle, shared)
}
