//! `circles_orchestrator [OPTIONS] [CONFIG]`: the lifecycle in two explicit
//! steps. [`Orchestrator::start`] finds or starts Redis, prepares every
//! circle (all or nothing), and starts the supervised workers and websocket
//! host, the watchers and the status display; [`Orchestrator::shutdown`]
//! drains them in order. [`run`] puts the two around the wait for a signal.
//!
//! Cancellation is one tree under a root token:
//!
//! ```text
//! root ─┬─ host            the websocket host of every circle (cancelled 1st)
//!       ├─ circle × N      each circle's worker                 (cancelled 2nd)
//!       └─ watchers        stats poller, managed-Redis watcher,  (cancelled 3rd)
//!                          admin endpoint and its Redis probe
//!  root itself             the status display                   (cancelled last)
//! ```
//!
//! Shutdown order: first the servers (they stop reading, answer the requests
//! they already submitted — the workers still run them — within their drain
//! timeout, and close sockets with 1001); then the workers (they stop taking
//! tasks and let the running script finish within `--shutdown-grace`); their
//! tracker is awaited for the grace period plus [`DRAIN_MARGIN`]; the watchers
//! stop, every OurDB is closed, the display draws its last frame, and then
//! the managed Redis (if any) is stopped. A second signal stops at once
//! (exit 1).

mod signals;
mod spawn;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::runtime::Runtime;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::RunArgs;
use crate::redis_setup::{self, ManagedRedis};
use crate::settings::Settings;
use crate::status::{CircleState, Header, lock};
use crate::{admin, circles, logging, monitor, render};
use signals::Signals;

/// Time allowed beyond the grace period for servers and workers to return.
pub const DRAIN_MARGIN: Duration = Duration::from_secs(5);
/// How long the runtime's leftover tasks may take to stop at exit.
const RUNTIME_STOP: Duration = Duration::from_secs(2);

/// Runs the orchestrator until a signal; returns after a clean shutdown.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let settings = Settings::resolve(args)?;
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("cannot create the data dir {}", settings.data_dir.display()))?;
    logging::init(settings.log_file.as_deref())?;
    log::info!(
        "starting {} circles from {} (data dir {})",
        settings.circles.len(),
        settings.config_path.display(),
        settings.data_dir.display()
    );
    let mut orchestrator = Orchestrator::start(settings)?;
    let signal = orchestrator.wait_for_signal();
    orchestrator.shutdown(signal)
}

/// A started orchestrator: every circle serving until [`Orchestrator::shutdown`].
pub struct Orchestrator {
    settings: Settings,
    runtime: Runtime,
    signals: Signals,
    /// The redis-server we started, if we did; shared with its watcher.
    managed: Arc<Mutex<Option<ManagedRedis>>>,
    running: Running,
}

impl Orchestrator {
    /// Finds or starts Redis, prepares every circle and starts them all. A
    /// signal while the task client connects stops the start with nothing
    /// started; on any error whatever was started is stopped again.
    pub fn start(settings: Settings) -> anyhow::Result<Orchestrator> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("orchestrator")
            .build()
            .context("cannot start the async runtime")?;
        // Signals are hooked before anything long-lived starts, so a SIGTERM
        // during start-up still leads to a clean stop of what was started.
        let mut signals = runtime.block_on(async { Signals::new() })?;
        // Bound before Redis is looked for: a busy admin port starts nothing.
        let admin = admin::bind(&settings.admin)?;
        let managed =
            redis_setup::ensure(&settings.redis, &settings.data_dir, settings.managed_redis)?;
        let header = Header {
            redis_url: settings.redis.to_string(),
            redis_managed: managed.is_some(),
            data_dir: settings.data_dir.display().to_string(),
            log_file: settings.log_file.as_ref().map(|f| f.display().to_string()),
            admin: admin.as_ref().map(admin::Bound::url),
            redis_restarts: Arc::default(),
            started: Instant::now(),
        };
        let managed = Arc::new(Mutex::new(managed));
        let admin = admin.map(|bound| admin::Plan::new(bound, &settings.admin));
        let started = runtime.block_on(Running::start(
            &settings,
            header,
            &mut signals,
            &managed,
            admin,
        ));
        match started {
            Ok(running) => Ok(Orchestrator {
                settings,
                runtime,
                signals,
                managed,
                running,
            }),
            Err(e) => {
                stop_runtime_then_redis(runtime, &managed);
                Err(e)
            }
        }
    }

    /// Waits for SIGINT, SIGTERM or SIGHUP; returns its name.
    pub fn wait_for_signal(&mut self) -> &'static str {
        self.runtime.block_on(self.signals.next())
    }

    /// Drains everything in order (see the module docs) after `signal`, then
    /// stops the managed Redis. An error when the drain was cut short.
    pub fn shutdown(self, signal: &str) -> anyhow::Result<()> {
        let Orchestrator {
            settings,
            runtime,
            mut signals,
            managed,
            running,
        } = self;
        let drained = runtime.block_on(running.drain(signal, &settings, &mut signals));
        stop_runtime_then_redis(runtime, &managed);
        drained
    }
}

/// Stops the runtime, then (dropping it) a managed redis-server: after every
/// circle drained.
fn stop_runtime_then_redis(runtime: Runtime, managed: &Mutex<Option<ManagedRedis>>) {
    runtime.shutdown_timeout(RUNTIME_STOP);
    drop(lock(managed).take());
}

/// The task client's options: the defaults, with `--redis-ca`.
fn client_options(settings: &Settings) -> client::ClientOptions {
    let mut options = client::ClientOptions::default();
    options.redis_ca = settings.redis_ca.clone();
    options
}

/// Everything that runs between start and shutdown.
struct Running {
    client: client::Client,
    root: CancellationToken,
    host_token: CancellationToken,
    circle_tokens: Vec<CancellationToken>,
    watchers_token: CancellationToken,
    /// The websocket host and every worker: the bounded drain waits for it.
    serving: TaskTracker,
    host: JoinHandle<()>,
    /// The stats poller and the managed-Redis watcher: awaited before the
    /// databases close.
    watchers: TaskTracker,
    /// The display: it draws the last frame after everything else stopped.
    support: TaskTracker,
    changed: Arc<Notify>,
    /// Set when the drain starts; the display then shows `shutting down`.
    draining: Arc<AtomicBool>,
    dbs: Vec<circles::Closing>,
}

impl Running {
    async fn start(
        settings: &Settings,
        header: Header,
        signals: &mut Signals,
        managed: &Arc<Mutex<Option<ManagedRedis>>>,
        admin: Option<admin::Plan>,
    ) -> anyhow::Result<Running> {
        // The terminal is set up before anything is spawned: a terminal that
        // cannot be set up stops the start with nothing running.
        let renderer = render::renderer(settings.mode).context("cannot set up the terminal")?;
        let redis = &settings.redis;
        let client = tokio::select! {
            c = client::Client::connect_with(redis.as_str(), client_options(settings)) => c.with_context(|| {
                format!(
                    "cannot connect the task client to redis at {redis}. Fix: check that a \
                     Redis server (6.2 or newer) listens there, not another program; a Redis \
                     that wants a password gets it in the URL (redis://:PASSWORD@HOST:PORT, or \
                     redis://USER:PASSWORD@HOST:PORT); the cause below is what was answered"
                )
            })?,
            s = signals.next() => bail!("{s} during start-up; nothing was started"),
        };
        let preparing = Instant::now();
        let prepared = {
            let (configs, host) = (settings.circles.clone(), settings.host.clone());
            let (dir, limits) = (settings.data_dir.clone(), settings.engine.clone());
            tokio::task::spawn_blocking(move || {
                circles::prepare_all(&configs, &host, &dir, &limits)
            })
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
                    .map(circles::Prepared::closing)
                    .collect(),
            );
            bail!(
                "{} of {total} circles cannot start, so none was started:\n  {}",
                clashes.len(),
                clashes.join("\n  ")
            );
        }

        let root = CancellationToken::new();
        let serving = TaskTracker::new();
        let changed = Arc::new(Notify::new());
        let mut states = Vec::with_capacity(prepared.len());
        let mut circle_tokens = Vec::with_capacity(prepared.len());
        let mut dbs = Vec::with_capacity(prepared.len());
        let mut hosted = Vec::with_capacity(prepared.len());
        for p in prepared {
            let state = Arc::new(
                CircleState::new(p.config.clone(), settings.ws_scheme(), &settings.host)
                    .with_metrics(admin.as_ref().map(admin::Plan::metrics)),
            );
            let token = root.child_token();
            spawn::start_worker(settings, &p, &state, token.clone(), &serving, &changed);
            circle_tokens.push(token);
            let circles::Prepared {
                config,
                db,
                engine,
                listener,
                ..
            } = p;
            let server = settings.server_config(&config, &state.queue);
            hosted.push((server, listener, state.server.clone()));
            dbs.push((config, db, engine));
            states.push(state);
        }
        // The servers stop first and answer what they took while the workers
        // still run it; the workers stop after them (see the shutdown).
        let host_token = root.child_token();
        let host = spawn::start_host(&client, hosted, host_token.clone(), &serving, &changed);

        let watchers_token = root.child_token();
        let watchers = TaskTracker::new();
        let header_restarts = header.redis_restarts.clone();
        watchers.spawn(monitor::watch_redis(
            managed.clone(),
            header_restarts,
            changed.clone(),
            watchers_token.clone(),
        ));
        watchers.spawn(monitor::poll_stats(
            client.clone(),
            states.clone(),
            settings.stats_every,
            changed.clone(),
            watchers_token.clone(),
        ));
        let draining = Arc::new(AtomicBool::new(false));
        if let Some(admin) = admin {
            let running = admin::Running {
                header: header.clone(),
                circles: states.clone(),
                dbs: dbs.iter().map(|(_, db, _)| Arc::clone(db)).collect(),
                client: client.clone(),
                draining: draining.clone(),
            };
            admin.spawn(running, watchers_token.clone(), &watchers);
        }
        watchers.close();
        let support = TaskTracker::new();
        support.spawn(render::draw(
            renderer,
            header,
            states,
            settings.refresh,
            changed.clone(),
            draining.clone(),
            root.clone(),
        ));
        Ok(Running {
            client,
            root,
            host_token,
            circle_tokens,
            watchers_token,
            serving,
            host,
            watchers,
            support,
            changed,
            draining,
            dbs,
        })
    }

    /// The shutdown after `which` (see the module docs for the order).
    async fn drain(
        self,
        which: &str,
        settings: &Settings,
        signals: &mut Signals,
    ) -> anyhow::Result<()> {
        log::info!(
            "{which} received: shutting down (grace {:?})",
            settings.shutdown_grace
        );
        self.draining.store(true, Ordering::Relaxed);
        self.changed.notify_one();
        // First the servers: they stop reading and wait (bounded by their drain
        // timeout) for the replies of requests already submitted, which the
        // workers, still running, produce. Stopping both at once would leave
        // those tasks queued, unanswered, to run at the next start.
        self.host_token.cancel();
        let second = tokio::select! {
            _ = self.host => None,
            () = tokio::time::sleep(server_ws::ServerTiming::default().drain_timeout + DRAIN_MARGIN) => None,
            s = signals.next() => Some(s),
        };
        // Then the workers, each finishing its running script within the grace.
        for token in &self.circle_tokens {
            token.cancel();
        }
        self.serving.close();
        let bound = settings.shutdown_grace + DRAIN_MARGIN;
        let drained = match second {
            Some(s) => Err(anyhow::anyhow!(
                "{s} received again: stopped without waiting for running scripts"
            )),
            None => tokio::select! {
                () = self.serving.wait() => Ok(()),
                () = tokio::time::sleep(bound) => Err(anyhow::anyhow!(
                    "shutdown did not finish within {bound:?}; stopped anyway"
                )),
                s = signals.next() => Err(anyhow::anyhow!(
                    "{s} received again: stopped without waiting for running scripts"
                )),
            },
        };
        self.watchers_token.cancel();
        self.watchers.wait().await;
        drop(self.client);
        // Every supervisor has returned (or we gave up): release the databases.
        let dbs = self.dbs;
        tokio::task::spawn_blocking(move || circles::close_all(dbs))
            .await
            .context("closing the databases panicked")?;
        // The display draws its last frame, and everything left stops.
        self.root.cancel();
        self.support.close();
        self.support.wait().await;
        match &drained {
            Ok(()) => log::info!("clean shutdown"),
            Err(e) => log::error!("{e}"),
        }
        drained
    }
}
