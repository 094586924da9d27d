//! The admin endpoint: one HTTP listener for the whole orchestrator
//! (`--admin`, default [`args::DEFAULT_ADMIN`]) serving
//!
//! - `/healthz` — 200 while the process is alive;
//! - `/readyz` — 200 when every circle serves and Redis answers, else 503
//!   with a JSON body naming what is not ready;
//! - `/api/status` — the status snapshot of every circle, the shape of
//!   `--output json`;
//! - `/api/events` — the same snapshot pushed as server-sent events
//!   ([`events`]);
//! - `/metrics` — Prometheus text (OpenMetrics) of [`telemetry::Metrics`]
//!   and what is sampled at scrape time ([`collect`]);
//! - `POST /api/reload` — re-reads circles.json ([`crate::reload`]) and
//!   answers what changed, or why nothing did (any other method: 405);
//! - `/` and `/assets/…` — the browser console's embedded files ([`console`]).
//!
//! Each path takes its one method; any other gets 405 with `Allow`.
//!
//! Requests whose `Host` is not an IP address, `localhost` or the name
//! `--admin` gave get 421 (a DNS-rebound page names its own site there);
//! requests with a foreign `Origin` get 403; with `--admin-token-sha256`
//! every route but the probes and the console's files (which hold no data)
//! needs its bearer token ([`access`]). The `status` and `reload` commands
//! ask the endpoint ([`ask`]).
//!
//! One client address (IPv6 by its /64) holds at most [`PER_ADDRESS`]
//! connections to it, and all clients at most [`events::MAX_STREAMS`] event
//! streams; past either, a request gets 503 saying which. Every answer but a
//! success closes its connection, so keep-alive holds none for a refused
//! client. One client can thus take neither the process's file descriptors
//! nor the endpoint from another address's probes. All addresses together
//! hold at most the endpoint's budget of connections (`Running::budget`, a
//! share of its own beside the circles' ports): past it one is closed at
//! once, so many addresses take no descriptor the circles need. A
//! connection whose client takes nothing sent to it for 30 s (gone without
//! a word, or never reading) is cut off by the kernel ([`bind`]), so such
//! clients keep neither stream slots nor connections for long.
//!
//! It is one more actix server with one worker thread, beside the circles'
//! host and independent of it (a host restart leaves it serving). Its port
//! is bound before Redis is looked for, so a busy port stops the start with
//! nothing started (exit 1, as a circle's busy port does).

pub mod access;
pub mod args;
pub mod ask;
pub mod collect;
pub mod console;
pub mod events;
pub mod process;
pub mod redis_probe;
pub mod routes;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use actix_web::{App, HttpServer, web};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::UsageError;
use crate::reload::ReloadHandle;
use crate::roster::Roster;
use crate::status::Header;
pub use args::{AdminArgs, AdminSettings, DEFAULT_ADMIN};

/// Connections one client address may hold to the admin endpoint: a
/// console's page and its event streams, a scraper and a prober need a
/// few each.
pub const PER_ADDRESS: usize = 32;

/// The admin listener, bound.
#[derive(Debug)]
pub struct Bound {
    /// The listening socket.
    pub listener: TcpListener,
    /// Its address (the real port when port 0 was asked for).
    pub addr: SocketAddr,
}

impl Bound {
    /// `http://ADDR`, as the status header shows it.
    pub fn url(&self) -> String {
        url_of(self.addr)
    }
}

/// `http://ADDR` (IPv6 in brackets, as `SocketAddr` prints it).
pub fn url_of(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// Binds the admin address of `settings`, if any. A busy address is a
/// runtime failure (exit 1), one this host cannot listen on a usage error
/// (exit 2); either names it and the fix.
///
/// A client that takes nothing the endpoint sent for the circles' client
/// timeout (30 s) is cut off by the kernel (TCP_USER_TIMEOUT, as on the
/// circles' listeners): one that vanished without closing (its host asleep,
/// cut off or dead) would otherwise keep its connection, an event stream
/// among them, until the retransmissions give up (about 15 minutes), and
/// one that never reads (its window shut) for as long as it likes.
pub fn bind(settings: &AdminSettings) -> anyhow::Result<Option<Bound>> {
    let Some(addr) = settings.addr else {
        return Ok(None);
    };
    let fix = "Pass another --admin address (port 0 picks a free one), or --admin off";
    let listener = TcpListener::bind(addr).map_err(|e| {
        // A port in use is a runtime failure, as for a circle's port (exit
        // 1); an address this host cannot listen on is a usage error (exit 2).
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!(
                "cannot listen for the admin endpoint on {addr}: the address is in use \
                 (another orchestrator, or another program). {fix}"
            )
        } else {
            UsageError(format!(
                "cannot listen for the admin endpoint on {addr}: {e}. {fix}"
            ))
            .into()
        }
    })?;
    let addr = listener.local_addr()?;
    // Right after the bind: the sockets the kernel accepts from now on take
    // the listener's options, the circles' client timeout among them.
    server_ws::prepare_listener(&listener, &server_ws::ServerTiming::default()).map_err(|e| {
        anyhow::anyhow!("cannot configure the admin endpoint's socket on {addr}: {e}")
    })?;
    Ok(Some(Bound { listener, addr }))
}

/// The admin endpoint between its bind and its start: the registry the
/// circles' metrics are made in before they start.
pub struct Plan {
    bound: Bound,
    access: access::Access,
    registry: Registry,
    metrics: telemetry::Metrics,
    redis: Arc<redis_probe::RedisHealth>,
}

impl Plan {
    /// The registry of `bound`'s endpoint, its recorded metrics registered.
    pub fn new(bound: Bound, settings: &AdminSettings) -> Plan {
        let mut registry = Registry::default();
        let metrics = telemetry::Metrics::new(&mut registry);
        let redis = Arc::new(redis_probe::RedisHealth::new(&mut registry));
        Plan {
            access: access::Access {
                own_origin: bound.url(),
                own_host: settings.host_name.clone(),
                token_sha256: settings.token_sha256,
            },
            bound,
            registry,
            metrics,
            redis,
        }
    }

    /// The metrics each circle's handles come from.
    pub fn metrics(&self) -> &telemetry::Metrics {
        &self.metrics
    }

    /// Starts the endpoint and its Redis probe on `tracker` until `stop`.
    pub fn spawn(self, running: Running, stop: CancellationToken, tracker: &TaskTracker) {
        let Plan {
            bound,
            access,
            mut registry,
            redis,
            ..
        } = self;
        registry.register_collector(Box::new(collect::Orchestrator {
            circles: running.roster.clone(),
            redis_restarts: Arc::clone(&running.header.redis_restarts),
        }));
        tracker.spawn(redis_probe::run(
            running.client,
            Arc::clone(&redis),
            stop.clone(),
        ));
        let source = events::Source {
            header: running.header.clone(),
            circles: running.roster.clone(),
            draining: Arc::clone(&running.draining),
        };
        let (publish, latest) = events::channel(&source);
        tracker.spawn(events::produce(publish, source, stop.clone()));
        let state = AdminState {
            header: running.header,
            circles: running.roster,
            draining: running.draining,
            reload: running.reload,
            registry,
            redis,
            access,
            events: latest,
            streams: events::Streams::default(),
        };
        tracker.spawn(serve(bound, state, running.budget, stop));
    }
}

/// What a running orchestrator hands its admin endpoint.
pub struct Running {
    /// The header facts.
    pub header: Header,
    /// The circles running (a reload changes them), in circles.json order.
    pub roster: Roster,
    /// The task client (the Redis probe uses its connection).
    pub client: client::Client,
    /// Set once the drain starts.
    pub draining: Arc<AtomicBool>,
    /// Asks the orchestrator to reload circles.json (`POST /api/reload`).
    pub reload: ReloadHandle,
    /// The connections the endpoint may hold, whatever their addresses.
    pub budget: Arc<server_ws::Budget>,
}

/// Everything the routes read.
pub struct AdminState {
    /// The header facts of the status snapshot.
    pub header: Header,
    /// The circles running, in circles.json order.
    pub circles: Roster,
    /// Asks the orchestrator to reload circles.json.
    pub reload: ReloadHandle,
    /// Set once the drain starts (the snapshot's phase, readiness).
    pub draining: Arc<AtomicBool>,
    /// The metrics registry (collectors included).
    pub registry: Registry,
    /// The latest Redis probe.
    pub redis: Arc<redis_probe::RedisHealth>,
    /// Who may ask.
    pub access: access::Access,
    /// The latest snapshot of `/api/events`.
    pub events: events::Latest,
    /// The event streams that may open yet.
    pub streams: events::Streams,
}

/// Serves the admin endpoint on `bound` until `stop`; returns once the
/// server has stopped. A failure to serve is logged, never fatal: the
/// circles go on without it.
pub async fn serve(
    bound: Bound,
    state: AdminState,
    budget: Arc<server_ws::Budget>,
    stop: CancellationToken,
) {
    let url = bound.url();
    let server = match build(bound, state, budget) {
        Ok(server) => server,
        Err(e) => {
            log::error!("the admin endpoint cannot serve on {url}: {e}");
            return;
        }
    };
    log::info!(
        "admin endpoint on {url} (/, /metrics, /healthz, /readyz, /api/status, /api/events, \
         POST /api/reload)"
    );
    let handle = server.handle();
    let mut serving = tokio::spawn(server);
    tokio::select! {
        ended = &mut serving => {
            log::error!("the admin endpoint on {url} stopped: {ended:?}");
            return;
        }
        () = stop.cancelled() => {}
    }
    handle.stop(true).await;
    let _ = serving.await;
}

/// The actix server (not yet polled). A plain function: the builder is not
/// `Send` and must not live in `serve`'s future.
fn build(
    bound: Bound,
    state: AdminState,
    budget: Arc<server_ws::Budget>,
) -> std::io::Result<actix_web::dev::Server> {
    let state = web::Data::new(state);
    let peers = server_ws::Peers::new(PER_ADDRESS, budget);
    let accepted_max = peers.accepted_max();
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap_fn(|req, srv| server_ws::serve_bounded(req, srv, |status| status.is_success()))
            .configure(routes::configure)
    })
    .max_connections(accepted_max)
    .on_connect(move |conn, data| peers.on_connect(conn, data))
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(bound.listener)?
    .run())
}
