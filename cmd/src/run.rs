//! `circles_orchestrator [OPTIONS] [CONFIG]`: validate, find or start Redis,
//! prepare every circle, supervise workers and servers, draw the status, and
//! shut down cleanly on SIGINT/SIGTERM.
//!
//! Shutdown order: first the servers (they stop reading, answer the requests
//! they already submitted — the workers still run them — within their drain
//! timeout, and close sockets with 1001); then the workers (they stop taking
//! tasks and let the running script finish within `--shutdown-grace`); the
//! task tracker is awaited for the grace period plus [`DRAIN_MARGIN`], every
//! OurDB is closed, then the managed Redis (if any) is stopped. A second
//! signal stops at once (exit 1).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::{Output, RunArgs};
use crate::render::Renderer;
use crate::status::{CircleState, Header, lock, redact_url, snapshot};
use crate::{circles, config, logging, monitor, redis_setup, render, supervisor};

/// Time allowed beyond the grace period for servers and workers to return.
pub const DRAIN_MARGIN: Duration = Duration::from_secs(5);
/// Redraw interval while some circle is still starting.
const STARTUP_POLL: Duration = Duration::from_millis(50);
/// In plain mode counters are only context, read this often.
const PLAIN_STATS_EVERY: Duration = Duration::from_secs(10);

/// The default data directory: `$HOME/.hero/circles`, else the platform home.
pub fn default_data_dir() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(dirs::home_dir)
        .context("cannot find the home directory for the default data dir; pass --data-dir")?;
    Ok(home.join(".hero").join("circles"))
}

/// A malformed `--redis-url` is a usage error (exit 2), found before anything starts.
fn check_redis_url(url: &str) -> anyhow::Result<()> {
    let problem = match redis::Client::open(url) {
        Err(e) => Some(e.to_string()),
        Ok(_) if redis_setup::host_port(url).is_none() => Some("no host and port".to_string()),
        Ok(_) => None,
    };
    match problem {
        Some(why) => Err(crate::UsageError(format!(
            "--redis-url {} is not a redis:// URL ({why}); for example redis://127.0.0.1:6379",
            redact_url(url)
        ))
        .into()),
        None => Ok(()),
    }
}

/// A `--host` that does not resolve is a usage error (exit 2), found before
/// Redis is looked for or started. Whether the address can be bound is only
/// known when each circle binds it (exit 1, naming the circle).
fn check_host(host: &str) -> anyhow::Result<()> {
    use std::net::ToSocketAddrs;
    match (host, 0).to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(crate::UsageError(format!("--host {host} resolves to no address")).into()),
        Err(e) => Err(crate::UsageError(format!(
            "--host {host} is not an address or a name this machine resolves ({e}); for \
             example 127.0.0.1, 0.0.0.0 or ::1"
        ))
        .into()),
    }
}

/// Runs the orchestrator until a signal; returns after a clean shutdown.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let circles = config::load(&args.config)?;
    check_redis_url(&args.redis_url)?;
    check_host(&args.host)?;
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => default_data_dir()?,
    };
    let output = match args.output {
        Output::Auto if std::io::stdout().is_terminal() => Output::Live,
        Output::Auto => Output::Plain,
        other => other,
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
    let log_file = (output == Output::Live).then(|| {
        args.log_file
            .clone()
            .unwrap_or_else(|| data_dir.join("orchestrator.log"))
    });
    logging::init(log_file.as_deref())?;
    log::info!(
        "starting {} circles from {} (data dir {})",
        circles.len(),
        args.config.display(),
        data_dir.display()
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("orchestrator")
        .build()
        .context("cannot start the async runtime")?;
    // Signals are hooked before anything long-lived starts, so a SIGTERM
    // during start-up still leads to a clean stop of what was started.
    let signals = runtime.block_on(async { Signals::new() })?;
    let redis = redis_setup::ensure(&args.redis_url, &data_dir, !args.no_managed_redis)?;
    let header = Header {
        redis_url: redact_url(&redis.url),
        redis_managed: redis.managed.is_some(),
        data_dir: data_dir.display().to_string(),
        log_file: log_file.map(|f| f.display().to_string()),
        redis_restarts: Arc::default(),
        started: Instant::now(),
    };
    let managed = Arc::new(Mutex::new(redis.managed));
    let result = runtime.block_on(serve(
        &args,
        circles,
        &redis.url,
        &data_dir,
        header,
        output,
        signals,
        managed.clone(),
    ));
    runtime.shutdown_timeout(Duration::from_secs(2));
    // Dropping it stops a managed redis-server, after every circle drained.
    drop(lock(&managed).take());
    result
}

/// SIGINT, SIGTERM and SIGHUP (a closed terminal) all mean a clean shutdown.
struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("cannot hook SIGINT")?,
            term: signal(SignalKind::terminate()).context("cannot hook SIGTERM")?,
            hup: signal(SignalKind::hangup()).context("cannot hook SIGHUP")?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    args: &RunArgs,
    configs: Vec<config::CircleConfig>,
    redis_url: &str,
    data_dir: &Path,
    header: Header,
    output: Output,
    mut signals: Signals,
    managed: Arc<Mutex<Option<redis_setup::ManagedRedis>>>,
) -> anyhow::Result<()> {
    let client = tokio::select! {
        c = client::Client::connect(redis_url) => c.with_context(|| {
            format!(
                "cannot connect the task client to redis at {}. Fix: check that a Redis \
                 server (6.2 or newer) listens there, not another program; a Redis that wants \
                 a password gets it in the URL (redis://:PASSWORD@HOST:PORT, or \
                 redis://USER:PASSWORD@HOST:PORT); the cause below is what was answered",
                redact_url(redis_url)
            )
        })?,
        s = signals.next() => bail!("{s} during start-up; nothing was started"),
    };
    let preparing = Instant::now();
    let limits = engine_limits(args);
    let prepared = {
        let (configs, host, dir) = (configs.clone(), args.host.clone(), data_dir.to_path_buf());
        let limits = limits.clone();
        tokio::task::spawn_blocking(move || circles::prepare_all(&configs, &host, &dir, &limits))
            .await
            .context("preparing the circles panicked")??
    };
    log::info!(
        "{} circles prepared (ports bound, databases open, engines built) in {:?}",
        prepared.len(),
        preparing.elapsed()
    );
    // All or nothing here too: a circle whose queue another database's
    // workers serve would run their tasks (each worker checks again as it
    // starts, for a race between two starts).
    let clashes = circles::foreign_queues(&client, &prepared)
        .await
        .context("cannot read the queue owners from redis")?;
    if !clashes.is_empty() {
        let total = prepared.len();
        circles::close_all(
            prepared
                .into_iter()
                .map(|p| (p.config, p.db, p.engine))
                .collect(),
        );
        bail!(
            "{} of {total} circles cannot start, so none was started:\n  {}",
            clashes.len(),
            clashes.join("\n  ")
        );
    }

    let root = CancellationToken::new();
    let tracker = TaskTracker::new();
    let changed = Arc::new(Notify::new());
    let mut states = Vec::with_capacity(prepared.len());
    let mut dbs = Vec::with_capacity(prepared.len());
    let mut hosted = Vec::with_capacity(prepared.len());
    for p in prepared {
        let state = Arc::new(CircleState::new(p.config.clone(), &args.host));
        start_worker(args, redis_url, &p, &state, &root, &tracker, &changed);
        hosted.push((
            server_config(args, &state, limits.max_script_bytes),
            p.listener,
            state.server.clone(),
        ));
        dbs.push((p.config, p.db, p.engine));
        states.push(state);
    }
    // The servers stop first and answer what they took while the workers
    // still run it; the workers stop after them (see the shutdown below).
    let servers_root = CancellationToken::new();
    let host = start_host(&client, hosted, &servers_root, &tracker, &changed);
    let shutting_down = CancellationToken::new();
    let render_stop = CancellationToken::new();
    let poll_stop = CancellationToken::new();
    let poll_every = if output == Output::Plain {
        PLAIN_STATS_EVERY
    } else {
        args.refresh
    };
    let watcher = tokio::spawn(monitor::watch_redis(
        managed,
        header.redis_restarts.clone(),
        changed.clone(),
        poll_stop.clone(),
    ));
    let poller = tokio::spawn(monitor::poll_stats(
        client.clone(),
        states.clone(),
        poll_every,
        changed.clone(),
        poll_stop.clone(),
    ));
    let renderer: Box<dyn Renderer> = match output {
        Output::Live => {
            Box::new(render::live::Live::start().context("cannot set up the terminal")?)
        }
        Output::Json => Box::new(render::json::Json::new(std::io::stdout())),
        Output::Plain | Output::Auto => Box::new(render::plain::Plain::new(std::io::stdout())),
    };
    let drawer = tokio::spawn(draw(
        renderer,
        header,
        states.clone(),
        args.refresh,
        changed.clone(),
        shutting_down.clone(),
        render_stop.clone(),
    ));

    let which = signals.next().await;
    log::info!(
        "{which} received: shutting down (grace {:?})",
        args.shutdown_grace
    );
    shutting_down.cancel();
    changed.notify_one();
    // First the servers: they stop reading and wait (bounded by their drain
    // timeout) for the replies of requests already submitted, which the
    // workers, still running, produce. Stopping both at once left those
    // tasks queued, unanswered, to run at the next start.
    servers_root.cancel();
    let second = tokio::select! {
        _ = host => None,
        () = tokio::time::sleep(server_ws::ServerTiming::default().drain_timeout + DRAIN_MARGIN) => None,
        s = signals.next() => Some(s),
    };
    // Then the workers, each finishing its running script within the grace.
    root.cancel();
    tracker.close();
    let bound = args.shutdown_grace + DRAIN_MARGIN;
    let drained = match second {
        Some(s) => Err(anyhow::anyhow!(
            "{s} received again: stopped without waiting for running scripts"
        )),
        None => tokio::select! {
            () = tracker.wait() => Ok(()),
            () = tokio::time::sleep(bound) => Err(anyhow::anyhow!(
                "shutdown did not finish within {bound:?}; stopped anyway"
            )),
            s = signals.next() => Err(anyhow::anyhow!(
                "{s} received again: stopped without waiting for running scripts"
            )),
        },
    };
    poll_stop.cancel();
    let _ = poller.await;
    let _ = watcher.await;
    drop(client);
    // Every supervisor has returned (or we gave up): release the databases.
    tokio::task::spawn_blocking(move || circles::close_all(dbs))
        .await
        .context("closing the databases panicked")?;
    render_stop.cancel();
    let _ = drawer.await;
    match &drained {
        Ok(()) => log::info!("clean shutdown"),
        Err(e) => log::error!("{e}"),
    }
    drained
}

/// Starts the supervised worker of one circle.
fn start_worker(
    args: &RunArgs,
    redis_url: &str,
    circle: &circles::Prepared,
    state: &Arc<CircleState>,
    root: &CancellationToken,
    tracker: &TaskTracker,
    changed: &Arc<Notify>,
) {
    let token = root.child_token();
    let name = state.config.name.clone();
    let worker_config = worker::WorkerConfig {
        redis_url: redis_url.to_string(),
        queue: state.queue.clone(),
        result_ttl: args.result_ttl,
        shutdown_grace: args.shutdown_grace,
        owner: Some(circle.owner.clone()),
    };
    let engine = circle.engine.clone();
    let worker_options = worker_options(args);
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
    ));
}

/// The engine limits of every circle from the options.
fn engine_limits(args: &RunArgs) -> engine::Limits {
    engine::Limits {
        timeout: args.script_timeout,
        max_operations: args.max_operations,
        ..engine::Limits::default()
    }
}

/// The server limits of one circle from the options; `max_script_bytes` is
/// the engines' own, so the server refuses exactly what they would.
fn server_config(
    args: &RunArgs,
    state: &CircleState,
    max_script_bytes: usize,
) -> server_ws::ServerConfig {
    server_ws::ServerConfig {
        circle_name: state.config.name.clone(),
        queue: state.queue.clone(),
        task_timeout: args.task_timeout,
        max_message_bytes: args.max_message_bytes,
        max_in_flight: args.max_in_flight,
        max_connections: args.max_connections,
        max_script_bytes,
        allowed_origins: args.allowed_origins.clone(),
    }
}

/// A circle served by the websocket host: its limits, its bound port (every
/// run of the host gets a clone, so a restart never races for the port) and
/// the slot its server state is shown in.
type Hosted = (
    server_ws::ServerConfig,
    std::net::TcpListener,
    Arc<Mutex<crate::status::Slot>>,
);

/// Starts the one supervised websocket host that serves every circle's port
/// (one actix worker thread for all of them, see `server_ws::run_many`). Its
/// state is mirrored into every circle's server slot.
fn start_host(
    client: &client::Client,
    hosted: Vec<Hosted>,
    root: &CancellationToken,
    tracker: &TaskTracker,
    changed: &Arc<Notify>,
) -> tokio::task::JoinHandle<()> {
    let token = root.child_token();
    let client = client.clone();
    let (servers, slots): (Vec<_>, Vec<_>) = hosted
        .into_iter()
        .map(|(config, listener, slot)| ((config, listener), slot))
        .unzip();
    tracker.spawn(supervisor::supervise_shared(
        format!("websocket host of {} circles", servers.len()),
        slots,
        changed.clone(),
        token.clone(),
        move |slots| {
            let mut circles = Vec::with_capacity(servers.len());
            let mut failed = None;
            for ((config, listener), slot) in servers.iter().zip(slots.iter_mut()) {
                let status = Arc::new(server_ws::ServerStatus::default());
                slot.server = Some(status.clone());
                match listener.try_clone() {
                    Ok(listener) => {
                        circles.push(server_ws::CircleServer::new(
                            config.clone(),
                            listener,
                            status,
                        ));
                    }
                    Err(e) => {
                        failed.get_or_insert(format!(
                            "cannot reuse the listening socket of circle \"{}\": {e}",
                            config.circle_name
                        ));
                    }
                }
            }
            let (client, token) = (client.clone(), token.clone());
            async move {
                if let Some(failed) = failed {
                    return Err(failed);
                }
                server_ws::run_many(circles, server_ws::ServerTiming::default(), client, token)
                    .await
                    .map_err(|e| e.to_string())
            }
        },
    ))
}

/// The worker's timing knobs from the options; unlisted ones keep their defaults.
pub fn worker_options(args: &RunArgs) -> worker::WorkerOptions {
    let mut options = worker::WorkerOptions::default();
    options.pop_timeout = args.worker_pop_timeout;
    options.heartbeat_interval = args.worker_heartbeat;
    options.heartbeat_ttl = args.worker_heartbeat * 3;
    options.reap_interval = args.worker_reap_interval;
    options
}

async fn draw(
    mut renderer: Box<dyn Renderer>,
    header: Header,
    states: Vec<Arc<CircleState>>,
    refresh: Duration,
    changed: Arc<Notify>,
    shutting_down: CancellationToken,
    stop: CancellationToken,
) {
    // Until every circle has settled the worker's own state changes (which
    // do not notify) are polled quickly, so the plain table appears promptly.
    let mut settled = false;
    loop {
        let wait = if settled { refresh } else { STARTUP_POLL };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = changed.notified() => {}
            () = stop.cancelled() => break,
        }
        let phase = if shutting_down.is_cancelled() {
            "shutting down"
        } else {
            "running"
        };
        let snap = snapshot(&header, &states, phase);
        settled = snap.circles.iter().all(crate::status::Row::settled);
        renderer.frame(&header, &snap);
    }
    renderer.finish(&header, &snapshot(&header, &states, "stopped"));
}
