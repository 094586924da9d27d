//! `circles_orchestrator [OPTIONS] [CONFIG]`: the lifecycle in two explicit
//! steps. [`Orchestrator::start`] finds or starts Redis, prepares every
//! circle (all or nothing), and starts the supervised workers and websocket
//! host, the watchers and the status display; [`Orchestrator::shutdown`]
//! drains them in order. [`run`] puts the two around the wait for a signal.
//! Long: `start` reads as the start-up sequence, step by step, in one place.
//!
//! Cancellation is one tree under a root token:
//!
//! ```text
//! root ─┬─ hosts ─┬─ host × H        websocket hosts (one at start)     (cancelled 1st)
//!       │         ├─ connections × N each circle's sockets
//!       │         └─ gateway beat     announces the circles served (src/gateway.rs)
//!       ├─ circle × N      each circle's worker                 (cancelled 2nd)
//!       └─ watchers        stats poller, managed-Redis watcher,  (cancelled 3rd)
//!                          admin endpoint and its Redis probe
//!  root itself             the status display                   (cancelled last)
//! ```
//!
//! SIGHUP, or any [`ReloadHandle`], re-reads circles.json between signals
//! (`apply.rs`; the running set and its hosts in `set.rs`).
//!
//! Shutdown order: first the servers (they stop reading, answer the requests
//! they already submitted — the workers still run them — within their drain
//! timeout, and close sockets with 1001); then the workers (they stop taking
//! tasks and let the running script finish within `--shutdown-grace`); their
//! tracker is awaited for the grace period plus [`DRAIN_MARGIN`]; the watchers
//! stop, every OurDB is closed, the display draws its last frame, and then
//! the managed Redis (if any) is stopped. A second SIGINT or SIGTERM stops
//! at once (exit 1).

mod apply;
mod descriptors;
mod kept;
mod set;
mod signals;
pub use signals::hook_early as hook_early_signals;
mod spawn;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::runtime::Runtime;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::RunArgs;
use crate::redis_setup::{self, ManagedRedis};
use crate::reload::{self, LastReload, ReloadHandle, Requests};
use crate::role::Role;
use crate::roster::Roster;
use crate::settings::Settings;
use crate::status::{Header, lock};
use crate::{admin, circles, gateway, logging, monitor, render};
use signals::Signals;

/// Time allowed beyond the grace period for servers and workers to return.
pub const DRAIN_MARGIN: Duration = Duration::from_secs(5);
/// How long the exit waits for the cancels of requests left unanswered (see
/// [`client::Client::cancels_written`]).
const CANCELS_BOUND: Duration = Duration::from_secs(5);
/// How long the exit waits for the display to write its last frame.
const LAST_FRAME: Duration = Duration::from_secs(5);
/// How long the runtime's leftover tasks may take to stop at exit.
const RUNTIME_STOP: Duration = Duration::from_secs(2);

/// Runs the orchestrator until a signal; returns after a clean shutdown.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let settings = Settings::resolve(args)?;
    crate::circles::create_dir(&settings.data_dir, "the data dir")?;
    logging::init(settings.log_file.as_deref(), settings.log_format)?;
    log::info!(
        "starting {} circles from {} as role {} (data dir {})",
        settings.circles.len(),
        settings.config_path.display(),
        settings.role.name(),
        settings.data_dir.display()
    );
    crate::systemd::init();
    let circles = settings.circles.len();
    let mut orchestrator = match Orchestrator::start(settings) {
        Ok(orchestrator) => orchestrator,
        // Asked to stop before anything started: done, as asked.
        Err(e) if e.is::<StoppedStarting>() => {
            log::info!("{e}");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    if let Some(every) = crate::systemd::watchdog_every() {
        orchestrator.runtime.spawn(crate::systemd::watchdog(every));
    }
    crate::systemd::ready(&format!("serving {circles} circles"));
    let signal = orchestrator.serve_until_signal();
    crate::systemd::stopping(signal);
    orchestrator.shutdown(signal)
}

/// Finds Redis or starts a managed one ([`redis_setup::ensure`], on a
/// blocking thread); a stop signal meanwhile makes it give up
/// ([`StoppedStarting`]), and a managed server it started is stopped again.
async fn find_redis(
    settings: &Settings,
    signals: &mut Signals,
) -> anyhow::Result<Option<ManagedRedis>> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut finding = tokio::task::spawn_blocking({
        let (url, dir, allow) = (
            settings.redis.clone(),
            settings.data_dir.clone(),
            settings.managed_redis,
        );
        let stop = Arc::clone(&stop);
        move || redis_setup::ensure(&url, &dir, allow, &stop)
    });
    let found = tokio::select! {
        found = &mut finding => found,
        s = signals.next_stop_starting() => {
            stop.store(true, Ordering::Release);
            // The search ends within one PING's wait; a server it started
            // meanwhile is stopped as it is dropped.
            drop(finding.await);
            return Err(StoppedStarting(s).into());
        }
    };
    found.context("looking for redis panicked")?
}

/// A SIGINT or SIGTERM (named) while Redis was looked for or the task client
/// connected: the start stops with nothing started, and the run ends as a
/// clean stop (exit 0).
#[derive(Debug)]
struct StoppedStarting(&'static str);

impl std::fmt::Display for StoppedStarting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} during start-up: stopped; nothing was started",
            self.0
        )
    }
}

impl std::error::Error for StoppedStarting {}

/// A started orchestrator: every circle serving until [`Orchestrator::shutdown`].
pub struct Orchestrator {
    settings: Settings,
    runtime: Runtime,
    signals: Signals,
    /// The redis-server we started, if we did; shared with its watcher.
    managed: Arc<Mutex<Option<ManagedRedis>>>,
    running: Running,
    reloads: Requests,
    reload: ReloadHandle,
    /// A second stop signal that came while a reload drained after the
    /// first: the shutdown stops at once.
    again: Option<&'static str>,
}

impl Orchestrator {
    /// Finds or starts Redis, prepares every circle and starts them all. A
    /// stop signal while Redis is looked for or the task client connects
    /// stops the start with nothing started ([`StoppedStarting`]); on any
    /// error whatever was started is stopped again.
    pub fn start(mut settings: Settings) -> anyhow::Result<Orchestrator> {
        raise_open_files_limit();
        if let Some(why) = descriptors::shortfall(settings.circles.len()) {
            anyhow::bail!(
                "{why}, so none was started. Fix: {}",
                descriptors::SHORTFALL_FIX
            );
        }
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
        // The bound address from here on (the real port when port 0 was
        // asked for), so that a reload's clash check knows the port.
        if let Some(bound) = &admin {
            settings.admin.addr = Some(bound.addr);
        }
        let managed = runtime.block_on(find_redis(&settings, &mut signals))?;
        let header = Header {
            redis_url: settings.redis.to_string(),
            redis_managed: managed.is_some(),
            data_dir: settings.data_dir.display().to_string(),
            log_file: settings.log_file.as_ref().map(|f| f.display().to_string()),
            admin: admin.as_ref().map(admin::Bound::url),
            redis_restarts: Arc::default(),
            started: Instant::now(),
            reload: Arc::default(),
        };
        let managed = Arc::new(Mutex::new(managed));
        // Made before the start, so that anything started with the circles
        // (the admin endpoint) can hold a clone; requests wait until
        // `serve_until_signal` runs.
        let (reload, reloads) = reload::channel();
        let admin = admin.map(|bound| admin::Plan::new(bound, &settings.admin));
        let started = runtime.block_on(Running::start(
            &settings,
            header,
            &mut signals,
            &managed,
            admin,
            reload.clone(),
        ));
        match started {
            Ok(running) => Ok(Orchestrator {
                settings,
                runtime,
                signals,
                managed,
                running,
                reloads,
                reload,
                again: None,
            }),
            Err(e) => {
                stop_runtime_then_redis(runtime, &managed);
                Err(e)
            }
        }
    }

    /// A handle that asks this orchestrator to reload circles.json (for
    /// the admin endpoint); reloads are applied while
    /// [`Orchestrator::serve_until_signal`] runs.
    pub fn reload_handle(&self) -> ReloadHandle {
        self.reload.clone()
    }

    /// Serves until SIGINT or SIGTERM and returns its name; meanwhile each
    /// SIGHUP and each [`ReloadHandle::reload`] re-reads circles.json.
    pub fn serve_until_signal(&mut self) -> &'static str {
        let Orchestrator {
            runtime,
            signals,
            running,
            reloads,
            again,
            ..
        } = self;
        runtime.block_on(async {
            // A SIGHUP that came during start-up or while a reload ran: read
            // the file again. (Each SIGHUP opened the log file again as it
            // came: `Signals::next`.)
            let mut hup_pending = signals.take_hup();
            loop {
                let reply = if std::mem::take(&mut hup_pending) {
                    None
                } else {
                    tokio::select! {
                        s = signals.next() => match s {
                            "SIGHUP" => None,
                            other => return other,
                        },
                        Some(reply) = reloads.next() => Some(reply),
                    }
                };
                // Signals are heard while the reload runs (it may drain a
                // removed circle for the whole grace): a stop shows at once
                // (status, admin: no further reload runs) and is acted on as
                // soon as this reload is applied.
                let (draining, changed, hurry) = (
                    Arc::clone(&running.draining),
                    Arc::clone(&running.ctx.changed),
                    running.ctx.hurry.clone(),
                );
                let reload = running.reload();
                tokio::pin!(reload);
                let mut stop = None;
                let outcome = loop {
                    tokio::select! {
                        outcome = &mut reload => break outcome,
                        s = signals.next(), if again.is_none() => match s {
                            "SIGHUP" if stop.is_some() => {
                                log::info!("SIGHUP ignored: shutting down");
                            }
                            "SIGHUP" => hup_pending = true,
                            // A second stop: the reload's drain ends at once,
                            // and so does the shutdown after it.
                            other if stop.is_some() => {
                                log::info!(
                                    "{other} received again during a reload: its drain stops \
                                     without waiting"
                                );
                                hurry.cancel();
                                *again = Some(other);
                            }
                            other => {
                                log::info!(
                                    "{other} received during a reload: shutting down once it \
                                     is applied"
                                );
                                draining.store(true, Ordering::Relaxed);
                                changed.notify_one();
                                stop = Some(other);
                            }
                        },
                    }
                };
                if let Some(request) = reply {
                    // The asker may have gone; the outcome is in the log and status.
                    request.answer(outcome);
                }
                if let Some(stop) = stop {
                    return stop;
                }
            }
        })
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
            again,
            ..
        } = self;
        let drained = runtime.block_on(running.drain(signal, again, &settings, &mut signals));
        stop_runtime_then_redis(runtime, &managed);
        drained
    }
}

/// Raises the soft limit of open files to the hard one: every circle's
/// connections, databases and Redis connections share the process's
/// descriptors, and the usual soft limit (1,024) is soon reached. (Each
/// client address is bounded by `server_ws`'s per-address count, all of
/// them by the budgets cut from this limit: [`descriptors`].)
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => log::debug!("open files limit: {limit}"),
        Err(e) => log::warn!("cannot raise the open files limit: {e}"),
    }
}

/// Waits (up to [`CANCELS_BOUND`]) for the cancels of requests the servers
/// left unanswered to be written: a task whose cancel is lost could run at
/// the next start, for nobody.
async fn cancels_written(clients: &crate::clients::Clients) {
    let waits = clients
        .all()
        .into_iter()
        .map(|client| async move { client.cancels_written(CANCELS_BOUND).await });
    let unwritten: usize = futures_util::future::join_all(waits)
        .await
        .into_iter()
        .sum();
    if unwritten > 0 {
        log::warn!(
            "{unwritten} cancels of unanswered requests could not be written to redis within \
             {CANCELS_BOUND:?}: those tasks end at their deadlines, or run at the next start"
        );
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
    /// The options, the client, the token tree and the serving tracker
    /// (every host and worker: the bounded drain waits for it).
    ctx: set::Ctx,
    /// The running circles and their hosts.
    set: set::CircleSet,
    /// The circles the display shows.
    roster: Roster,
    /// Where the status header and the admin endpoint read the last reload.
    last_reload: Arc<Mutex<Option<LastReload>>>,
    /// Hands each reload's outcome to the display, which draws every one.
    reloads_shown: mpsc::UnboundedSender<LastReload>,
    reloads_done: u64,
    watchers_token: CancellationToken,
    /// The stats poller and the managed-Redis watcher: awaited before the
    /// databases close.
    watchers: TaskTracker,
    /// The display: it draws the last frame after everything else stopped.
    support: TaskTracker,
    /// Set when the drain starts; the display then shows `shutting down`.
    draining: Arc<AtomicBool>,
}

impl Running {
    async fn start(
        settings: &Settings,
        header: Header,
        signals: &mut Signals,
        managed: &Arc<Mutex<Option<ManagedRedis>>>,
        admin: Option<admin::Plan>,
        reload: ReloadHandle,
    ) -> anyhow::Result<Running> {
        // The terminal is set up before anything is spawned: a terminal that
        // cannot be set up stops the start with nothing running.
        let renderer = render::renderer(settings.mode).context("cannot set up the terminal")?;
        let redis = &settings.redis;
        let failing = format!("cannot connect the task client to redis at {redis}");
        let client = tokio::select! {
            c = crate::clients::connect(
                redis,
                client_options(settings),
                &failing,
                || if redis.is_sentinel() {
                    ". Fix: check that the sentinels listen there and monitor that service \
                     (`SENTINEL GET-MASTER-ADDR-BY-NAME <service>` on one of them names its \
                     primary), and that the primary answers; a primary that wants a password \
                     gets it in the URL (redis+sentinel://:PASSWORD@HOST:PORT/SERVICE), \
                     sentinels that want one get ?sentinel_password=…; the cause below is what \
                     was answered"
                        .to_string()
                } else {
                    ". Fix: check that a Redis server (6.2 or newer) listens there, not another \
                     program; a Redis that wants a password gets it in the URL \
                     (redis://:PASSWORD@HOST:PORT, or redis://USER:PASSWORD@HOST:PORT); the \
                     cause below is what was answered"
                        .to_string()
                },
            ) => c?,
            s = signals.next_stop_starting() => return Err(StoppedStarting(s).into()),
        };
        let clients =
            crate::clients::Clients::new(client.clone(), redis.clone(), client_options(settings));
        tokio::select! {
            c = clients.connect_for(&settings.circles) => c?,
            s = signals.next_stop_starting() => return Err(StoppedStarting(s).into()),
        };
        let preparing = Instant::now();
        let prepared = {
            let settings = settings.clone();
            tokio::task::spawn_blocking(move || {
                circles::prepare_all(&settings.circles, settings.plan())
            })
            .await
            .context("preparing the circles panicked")??
        };
        let done = match (settings.role, settings.standby) {
            (Role::All, false) => "ports bound, databases open, engines built",
            (Role::All, true) => "ports bound; standby: each database opens once its lease is held",
            (Role::Gateway, _) => "ports bound; role gateway: no database opened",
            (Role::Worker, false) => "databases open, engines built; role worker: no port bound",
            (Role::Worker, true) => {
                "role worker: no port bound; standby: each database opens once its lease is held"
            }
        };
        log::info!(
            "{} circles prepared ({done}) in {:?}",
            prepared.len(),
            preparing.elapsed()
        );
        // All or nothing here too: a circle whose queue's lease another
        // database holds would run its tasks (each worker checks again as it
        // starts, for a race between two starts). With --standby those
        // circles wait for the lease instead.
        let clashes = if settings.standby {
            Vec::new()
        } else {
            circles::foreign_queues(&clients, &prepared)
                .await
                .context("cannot read the queue leases from redis")?
        };
        if !clashes.is_empty() {
            let total = prepared.len();
            circles::close_prepared(prepared);
            let why: Vec<String> = clashes.into_iter().map(|(_, why)| why).collect();
            bail!(
                "{} of {total} circles cannot start, so none was started:\n  {}",
                why.len(),
                why.join("\n  ")
            );
        }

        let root = CancellationToken::new();
        let ctx = set::Ctx {
            settings: settings.clone(),
            clients: clients.clone(),
            hosts: root.child_token(),
            root: root.clone(),
            serving: TaskTracker::new(),
            changed: Arc::new(Notify::new()),
            metrics: admin.as_ref().map(|a| a.metrics().clone()),
            budgets: descriptors::Budgets::from_limit(),
            hurry: CancellationToken::new(),
            roster: Roster::default(),
        };
        // The servers stop first and answer what they took while the workers
        // still run it; the workers stop after them (see the shutdown).
        let mut circle_set = set::CircleSet::default();
        circle_set.start(&ctx, prepared);
        let roster = ctx.roster.clone();
        roster.set(circle_set.states());
        let changed = ctx.changed.clone();

        let watchers_token = root.child_token();
        let watchers = TaskTracker::new();
        let header_restarts = header.redis_restarts.clone();
        watchers.spawn(monitor::watch_redis(
            managed.clone(),
            header_restarts,
            changed.clone(),
            watchers_token.clone(),
        ));
        let (announced, first_beat) = if settings.role.serves() {
            let (sent, beat) = tokio::sync::oneshot::channel();
            (Some(sent), Some(beat))
        } else {
            (None, None)
        };
        watchers.spawn(monitor::poll_stats(
            clients.clone(),
            roster.clone(),
            settings.stats_every,
            first_beat,
            changed.clone(),
            watchers_token.clone(),
        ));
        if let Some(announced) = announced {
            // Under the hosts' token: a process that stops serving stops
            // announcing itself before its workers stop.
            watchers.spawn(gateway::beat(
                clients.clone(),
                roster.clone(),
                client::GatewayProcess::new(circles::host_name()),
                gateway::Beats {
                    every: settings.worker.heartbeat_interval,
                    ttl: settings.worker.heartbeat_ttl,
                },
                announced,
                changed.clone(),
                ctx.hosts.child_token(),
            ));
        }
        let draining = Arc::new(AtomicBool::new(false));
        if let Some(admin) = admin {
            let running = admin::Running {
                header: header.clone(),
                roster: roster.clone(),
                client: client.clone(),
                draining: draining.clone(),
                reload,
                budget: Arc::clone(&ctx.budgets.admin),
            };
            admin.spawn(running, watchers_token.clone(), &watchers);
        }
        watchers.close();
        let support = TaskTracker::new();
        let last_reload = header.reload.clone();
        let (reloads_shown, reloads) = mpsc::unbounded_channel();
        let source = render::Source {
            header,
            roster: roster.clone(),
            draining: draining.clone(),
            reloads,
        };
        support.spawn(render::draw(
            renderer,
            source,
            settings.refresh,
            changed.clone(),
            root.clone(),
        ));
        Ok(Running {
            ctx,
            set: circle_set,
            roster,
            last_reload,
            reloads_shown,
            reloads_done: 0,
            watchers_token,
            watchers,
            support,
            draining,
        })
    }

    /// One reload of circles.json (see `apply.rs`): logged, shown in the
    /// status, and returned to whoever asked.
    async fn reload(&mut self) -> reload::ReloadResult {
        let path = self.ctx.settings.config_path.display().to_string();
        log::info!("reloading {path}");
        crate::systemd::reloading();
        let outcome = apply::reload(&mut self.set, &self.ctx).await;
        self.roster.set(self.set.states());
        let serving = self.set.configs().len();
        crate::systemd::ready(
            &match &outcome {
                Ok(summary) => format!("serving {serving} circles; reload applied: {summary}"),
                Err(e) if e.applied.as_ref().is_some_and(|a| !a.is_empty()) => {
                    format!("serving {serving} circles; reload partly applied: {e}")
                }
                Err(e) => format!("serving {serving} circles; reload failed, nothing changed: {e}"),
            }
            .replace('\n', " "),
        );
        match &outcome {
            Ok(summary) => log::info!("reloaded {path}: {summary}"),
            Err(e) => log::error!("reload of {path} failed: {e}"),
        }
        self.reloads_done += 1;
        let (summary, error) = match &outcome {
            Ok(s) => (Some(s.clone()), None),
            Err(e) => (e.applied.clone(), Some(e.clone())),
        };
        let stopped = match &error {
            None => None,
            Some(e) if e.kind == crate::reload::ReloadErrorKind::CannotStart => {
                Some(e.message.clone())
            }
            // Refused whole: nothing changed, circles a reload before could
            // not start are still out.
            Some(_) => lock(&self.last_reload)
                .as_ref()
                .and_then(|l| l.stopped.clone()),
        };
        let last = LastReload {
            seq: self.reloads_done,
            applied: error.is_none(),
            summary,
            error,
            stopped,
        };
        *lock(&self.last_reload) = Some(last.clone());
        // The display may have stopped already; the outcome is in the log.
        let _ = self.reloads_shown.send(last);
        outcome
    }

    /// The shutdown after `which` (see the module docs for the order).
    async fn drain(
        self,
        which: &str,
        again: Option<&'static str>,
        settings: &Settings,
        signals: &mut Signals,
    ) -> anyhow::Result<()> {
        log::info!(
            "{which} received: shutting down (grace {:?})",
            settings.shutdown_grace
        );
        let signalled = Instant::now();
        let Running {
            ctx,
            set: mut circle_set,
            watchers_token,
            watchers,
            support,
            draining,
            ..
        } = self;
        draining.store(true, Ordering::Relaxed);
        ctx.changed.notify_one();
        // First the servers: they stop reading and wait (bounded by their drain
        // timeout) for the replies of requests already submitted, which the
        // workers, still running, produce. Stopping both at once would leave
        // those tasks queued, unanswered, to run at the next start.
        ctx.hosts.cancel();
        let hosts = futures_util::future::join_all(circle_set.host_handles());
        let second = if again.is_some() {
            again
        } else {
            let drain = server_ws::ServerTiming::default().drain_timeout + DRAIN_MARGIN;
            tokio::select! {
                _ = hosts => None,
                () = tokio::time::sleep(drain) => None,
                s = signals.next_stop() => Some(s),
            }
        };
        // Then the workers, each finishing its running script within the grace.
        circle_set.stop_workers();
        ctx.serving.close();
        let bound = settings.shutdown_grace + DRAIN_MARGIN;
        // Whether a stop signal came again: nothing more is waited for.
        let mut again = second.is_some();
        let drained = match second {
            Some(s) => Err(anyhow::anyhow!(
                "{s} received again: stopped without waiting for running scripts"
            )),
            None => tokio::select! {
                () = ctx.serving.wait() => Ok(()),
                () = tokio::time::sleep(bound) => Err(anyhow::anyhow!(
                    "the workers did not stop within {bound:?} of the servers' drain ({:.1?} \
                     after {which}); stopped anyway",
                    signalled.elapsed()
                )),
                s = signals.next_stop() => {
                    again = true;
                    Err(anyhow::anyhow!(
                        "{s} received again: stopped without waiting for running scripts"
                    ))
                }
            },
        };
        if !again {
            tokio::select! {
                () = cancels_written(&ctx.clients) => {}
                _ = signals.next_stop() => again = true,
            }
        }
        watchers_token.cancel();
        watchers.wait().await;
        // Every supervisor has returned (or we gave up): release the databases.
        let kept = std::mem::take(&mut circle_set.kept);
        let dbs = circle_set.into_closing();
        let unsynced = tokio::task::spawn_blocking(move || circles::close_all(dbs))
            .await
            .context("closing the databases panicked")?;
        // Then the leases kept where moved circles were, for a standby there
        // to take over once no database of theirs is open here.
        kept::release_all(kept).await;
        // A database that could not be made durable is no clean shutdown.
        let drained = match drained {
            Ok(()) if !unsynced.is_empty() => Err(anyhow::anyhow!(
                "{} of the databases could not be synced at exit (writes may be lost):\n  {}",
                unsynced.len(),
                unsynced.join("\n  ")
            )),
            other => other,
        };
        // The display draws its last frame, and everything left stops.
        ctx.root.cancel();
        drop(ctx);
        support.close();
        // Bounded: a stdout nobody reads (a full pipe, a stalled journal)
        // blocks the display's write for ever, and the exit must not wait
        // for it; after a second stop signal it does not wait at all.
        let drained = tokio::select! {
            biased;
            () = support.wait() => drained,
            () = tokio::time::sleep(LAST_FRAME), if !again => {
                log::warn!(
                    "the display could not write its last frame within {LAST_FRAME:?} (is its \
                     output read?): stopped without it"
                );
                drained
            }
            () = std::future::ready(()), if again => drained,
            s = signals.next_stop() => drained.and(Err(anyhow::anyhow!(
                "{s} received again: stopped without waiting for the display's last frame"
            ))),
        };
        match &drained {
            Ok(()) => log::info!("clean shutdown"),
            Err(e) => log::error!("{e}"),
        }
        drained
    }
}
