//! The running circles and the websocket hosts that accept for them, as a
//! reload changes them.
//!
//! Each circle has its own worker token (a child of the root) and its own
//! connections token (a child of the hosts' token), so one circle can be
//! drained and stopped while the others run on. A host is one actix server
//! for many circles; actix cannot drop one listener from a running server,
//! so a reload that removes or changes a circle of a host *retires* that
//! host: a new host takes over the untouched circles' listeners (clones of
//! the same sockets, so nothing is refused meanwhile), the old host is
//! paused (it accepts no more but keeps serving the connections it holds
//! until they close or shutdown), and the outgoing circles' listening
//! sockets are shut, so their ports refuse connections and can be bound
//! again at once. Circles added by a reload get a host of their own.

use std::net::TcpListener;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::kept::Kept;
use super::spawn::{self, Hosted};
use crate::circles;
use crate::config::CircleConfig;
use crate::settings::Settings;
use crate::status::{CircleState, Phase, lock};

mod drain;

/// What every start and stop needs.
pub struct Ctx {
    /// The resolved options.
    pub settings: Settings,
    /// The task clients, one per Redis URL; each circle's host submits
    /// through the client of its Redis.
    pub clients: crate::clients::Clients,
    /// Parent of every circle's worker token.
    pub root: CancellationToken,
    /// Parent of every host's token and every circle's connections token:
    /// cancelled first at shutdown.
    pub hosts: CancellationToken,
    /// Every worker and host.
    pub serving: TaskTracker,
    /// Wakes the display.
    pub changed: Arc<Notify>,
    /// Where circles record their metrics (the admin endpoint is on).
    pub metrics: Option<telemetry::Metrics>,
    /// The connections the hosts and the admin endpoint may hold.
    pub budgets: super::descriptors::Budgets,
    /// Cancelled by a second stop signal during a reload: the drain of its
    /// outgoing circles ends at once, without waiting for their workers.
    pub hurry: CancellationToken,
    /// The circles the status, the metrics and the gateway beat show: a
    /// reload's added circles join it as soon as they serve.
    pub roster: crate::roster::Roster,
}

/// One running circle: its worker and database when the role works it,
/// its listening socket and host when the role serves it.
pub struct Live {
    /// What the status shows of it.
    pub state: Arc<CircleState>,
    worker_token: CancellationToken,
    worker: Option<JoinHandle<()>>,
    conns: CancellationToken,
    listener: Option<TcpListener>,
    server: server_ws::ServerConfig,
    /// What closes its database: set at start, or by its worker once it
    /// opened it (`--standby`).
    closing: Arc<Mutex<Option<circles::Closing>>>,
    /// The host that accepts for it (unused without a listener).
    host: usize,
    /// The task client of its Redis.
    client: client::Client,
    /// Who its worker takes the queue's lease as.
    lease: client::Lease,
    /// Set before its worker stops to leave the lease in place
    /// (`worker::WorkerConfig::keep_lease`).
    keep_lease: Arc<AtomicBool>,
}

/// One websocket host.
struct Host {
    id: usize,
    /// Kept so that the host's token lives as long as the host; shutdown
    /// cancels it through its parent.
    _token: CancellationToken,
    pause: server_ws::Pause,
    handle: JoinHandle<()>,
    /// The sockets its runs are given clones of; emptied once it is paused.
    circles: spawn::HostCircles,
}

/// The running circles, in circles.json order, and their hosts.
#[derive(Default)]
pub struct CircleSet {
    live: Vec<Live>,
    /// The circles of the file the last applied reload could not start:
    /// shown, as failed, until a later reload applies.
    pub not_started: Vec<Arc<CircleState>>,
    /// The ids in file order, as the last reload applied read them.
    order: Vec<u32>,
    hosts: Vec<Host>,
    next_host: usize,
    /// The leases kept where circles were before a reload moved them
    /// (`kept.rs`).
    pub kept: Vec<Kept>,
}

impl Live {
    /// The database directory its worker's lease names: the name a circle
    /// a reload changes keeps when it starts again.
    pub fn lease_dir(&self) -> &str {
        &self.lease.dir
    }
}

impl CircleSet {
    /// The configurations running now, in file order.
    pub fn configs(&self) -> Vec<CircleConfig> {
        self.live.iter().map(|l| l.state.config.clone()).collect()
    }

    /// The status of every running circle and of every one a reload could
    /// not start (unless one of its id runs: a reload started it), in file
    /// order.
    pub fn states(&self) -> Vec<Arc<CircleState>> {
        let running = |id: u32| self.live.iter().any(|l| l.state.config.id == id);
        let mut states: Vec<Arc<CircleState>> = (self.live.iter().map(|l| l.state.clone()))
            .chain(
                (self.not_started.iter())
                    .filter(|s| !running(s.config.id))
                    .cloned(),
            )
            .collect();
        if !self.not_started.is_empty() {
            let place = |s: &Arc<CircleState>| self.order.iter().position(|id| *id == s.config.id);
            states.sort_by_key(|s| place(s).unwrap_or(usize::MAX));
        }
        states
    }

    /// Starts the workers of `prepared` and one new host for them all (as
    /// far as the role runs them: a gateway starts no worker, a worker no
    /// host).
    pub fn start(&mut self, ctx: &Ctx, prepared: Vec<circles::Prepared>) {
        if prepared.is_empty() {
            return;
        }
        let host = self.next_host;
        let role = ctx.settings.role.name();
        let mut hosted = Vec::with_capacity(prepared.len());
        for p in prepared {
            let mut state = CircleState::new(
                p.config.clone(),
                ctx.settings.ws_scheme(),
                &ctx.settings.host,
            )
            .with_metrics(ctx.metrics.as_ref());
            if let Some(store) = &p.store {
                state = state.with_db(&store.db);
            }
            if p.listener.is_some() {
                state = state.with_sight(server_ws::WorkerSight::new(
                    p.config.id,
                    ctx.settings.worker.heartbeat_ttl,
                ));
            }
            let state = Arc::new(state);
            let worker_token = ctx.root.child_token();
            let closing = Arc::new(Mutex::new(None));
            let keep_lease = Arc::new(AtomicBool::new(false));
            let mut worker_config = ctx
                .settings
                .worker_config(&p.config, &state.queue, &p.lease);
            worker_config.keep_lease = keep_lease.clone();
            let worker = match (&p.store, p.works) {
                (Some(store), _) => Some(spawn::start_worker(
                    &ctx.settings,
                    &store.engine,
                    worker_config,
                    &state,
                    worker_token.clone(),
                    &ctx.serving,
                    &ctx.changed,
                )),
                (None, true) => Some(spawn::start_standby_worker(
                    &ctx.settings,
                    worker_config,
                    &closing,
                    &state,
                    worker_token.clone(),
                    &ctx.serving,
                    &ctx.changed,
                )),
                (None, false) => {
                    lock(&state.worker).phase = Phase::NotHere(role);
                    None
                }
            };
            let conns = ctx.hosts.child_token();
            let mut server = ctx.settings.server_config(&p.config, &state.queue);
            server.workers = state.sight.clone();
            let client = ctx.clients.of(&p.config);
            let circles::Prepared {
                config,
                store,
                listener,
                lease,
                ..
            } = p;
            match &listener {
                Some(listener) => {
                    hosted.push(hosted_of(&state, &server, &client, listener, &conns));
                }
                None => lock(&state.server).phase = Phase::NotHere(role),
            }
            self.live.push(Live {
                state,
                worker_token,
                worker,
                conns,
                listener,
                server,
                closing: {
                    *lock(&closing) = store.map(|s| (config, s.db, s.engine));
                    closing
                },
                host,
                client,
                lease,
                keep_lease,
            });
        }
        // Sized before a host starts, for every circle running (the ones a
        // reload takes out are still counted until the next start).
        let take = self.live.iter().fold(0usize, |sum, l| {
            sum.saturating_add(l.server.max_connections)
        });
        ctx.budgets.fit(self.live.len(), take);
        let hosted: Vec<Hosted> = hosted.into_iter().flatten().collect();
        if !hosted.is_empty() {
            self.start_host(ctx, hosted, false);
        }
    }

    fn start_host(&mut self, ctx: &Ctx, hosted: Vec<Hosted>, carry: bool) {
        let id = self.next_host;
        self.next_host += 1;
        let token = ctx.hosts.child_token();
        let pause = server_ws::Pause::new();
        let (handle, circles) = spawn::start_host(
            ctx.clients.main(),
            hosted,
            spawn::HostControl {
                token: token.clone(),
                pause: pause.clone(),
                budget: Arc::clone(&ctx.budgets.hosts),
            },
            carry,
            &ctx.serving,
            &ctx.changed,
        );
        self.hosts.push(Host {
            id,
            _token: token,
            pause,
            handle,
            circles,
        });
    }

    /// Orders the circles as `ids` lists them (the file order).
    pub fn order(&mut self, ids: &[u32]) {
        let place = |l: &Live| ids.iter().position(|id| *id == l.state.config.id);
        self.live.sort_by_key(|l| place(l).unwrap_or(usize::MAX));
        ids.clone_into(&mut self.order);
    }

    /// Takes the circles of `ids` out of the set, and out of the hosts that
    /// accept for them: those hosts are paused after a new host took over
    /// their other circles, and the outgoing circles' listening sockets are
    /// shut (their ports refuse connections and are free to bind).
    pub async fn take_out(&mut self, ctx: &Ctx, ids: &[u32]) -> Vec<Live> {
        let (out, keep): (Vec<Live>, Vec<Live>) = std::mem::take(&mut self.live)
            .into_iter()
            .partition(|l| ids.contains(&l.state.config.id));
        self.live = keep;
        let retiring: Vec<usize> = {
            let mut r: Vec<usize> = out
                .iter()
                .filter(|l| l.listener.is_some())
                .map(|l| l.host)
                .collect();
            r.sort_unstable();
            r.dedup();
            r
        };
        // The untouched circles of a retiring host move to one new host first,
        // so their ports never stop accepting.
        let new_host = self.next_host;
        let moving: Vec<Hosted> = self
            .live
            .iter_mut()
            .filter(|l| retiring.contains(&l.host))
            .filter_map(|l| {
                l.host = new_host;
                let listener = l.listener.as_ref()?;
                hosted_of(&l.state, &l.server, &l.client, listener, &l.conns)
            })
            .collect();
        if !moving.is_empty() {
            self.start_host(ctx, moving, true);
        }
        for host in self.hosts.iter().filter(|h| retiring.contains(&h.id)) {
            host.pause.pause().await;
            // A paused host is never given its sockets again: its copies
            // close, and the actix server's own close once it holds no
            // connection. The ports stay open where a new host took them.
            lock(&host.circles).clear();
        }
        for l in &out {
            l.state
                .leaving
                .store(true, std::sync::atomic::Ordering::Relaxed);
            let Some(listener) = &l.listener else {
                continue;
            };
            // Its row says so while it drains; the paused host keeps running.
            lock(&l.state.server).phase = Phase::Stopped;
            l.conns.cancel();
            let shut = socket2::SockRef::from(listener).shutdown(std::net::Shutdown::Read);
            if let Err(e) = shut {
                log::warn!(
                    circle = l.state.config.name.as_str();
                    "circle \"{}\": closing its listening socket failed: {e}",
                    l.state.config.name
                );
            }
        }
        out
    }

    /// The configurations of the circles whose worker runs here.
    pub fn worked(&self) -> Vec<CircleConfig> {
        let worked = self.live.iter().filter(|l| l.worker.is_some());
        worked.map(|l| l.state.config.clone()).collect()
    }

    /// Cancels every circle's worker (the shutdown's second step).
    pub fn stop_workers(&self) {
        for l in &self.live {
            l.worker_token.cancel();
        }
    }

    /// Every host's task, to await at shutdown.
    pub fn host_handles(&mut self) -> Vec<JoinHandle<()>> {
        self.hosts.drain(..).map(|h| h.handle).collect()
    }

    /// What [`circles::close_all`] needs once every worker returned.
    pub fn into_closing(self) -> Vec<circles::Closing> {
        self.live
            .into_iter()
            .filter_map(|l| lock(&l.closing).take())
            .collect()
    }
}

/// A circle for a host, with a clone of its listening socket (the
/// orchestrator keeps its own copy so that a host's restart never races for
/// the port). `None` when the socket cannot be cloned (logged).
fn hosted_of(
    state: &Arc<CircleState>,
    server: &server_ws::ServerConfig,
    client: &client::Client,
    listener: &TcpListener,
    conns: &CancellationToken,
) -> Option<Hosted> {
    match listener.try_clone() {
        Ok(listener) => Some(Hosted {
            config: server.clone(),
            listener,
            slot: state.server.clone(),
            token: conns.clone(),
            client: client.clone(),
        }),
        Err(e) => {
            log::error!(
                circle = state.config.name.as_str();
                "circle \"{}\": cannot clone its listening socket: {e}",
                state.config.name
            );
            None
        }
    }
}
