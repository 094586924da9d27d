//! The host: one actix server serving the listeners of one or many circles
//! until a token fires ([`run_many`]; [`run`] and [`run_with`] for one
//! circle). Every listener is added to the same server (one worker thread
//! plus actix's accept thread, however many circles) with the actix-web app
//! and settings `listen.rs` gives it, and each request is routed to its
//! circle by the local address of the listener it arrived on.
//!
//! Why one server and not one per circle: every actix worker thread runs
//! actix-http's `DateService`, a 500 ms timer that cannot be turned off, so
//! idle per-circle servers cost wake-ups (and CPU) in proportion to the
//! number of circles.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Arc;

use actix_web::{App, web};
use client::SubmitOptions;
use tokio_util::sync::CancellationToken;

use crate::circle::{Routes, Shared};
use crate::config::{ServerConfig, ServerTiming};
use crate::listen::Listener;
use crate::pause::Pause;
use crate::peers::Budget;
use crate::status::ServerStatus;
use crate::upgrade::upgrade;
use crate::{Error, Result};

/// How long a pause is given to reach actix's accept thread before it is
/// acknowledged (actix gives no acknowledgement of its own).
const PAUSE_SETTLE: std::time::Duration = std::time::Duration::from_millis(100);

/// How often a paused host looks whether it still holds a connection.
const IDLE_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Actix worker threads of one host, whatever the number of circles.
pub const HOST_WORKERS: usize = 1;

/// One circle served by [`run_many`]: its limits, its bound listener and its
/// live counters.
#[derive(Debug)]
pub struct CircleServer {
    /// The circle's limits and queue.
    pub config: ServerConfig,
    /// Its already-bound listening socket.
    pub listener: TcpListener,
    /// Its live counters (connections, in flight, refused upgrades).
    pub status: Arc<ServerStatus>,
    /// The circle's own token, if any ([`CircleServer::with_token`]).
    pub token: Option<CancellationToken>,
    /// The circle's own task client, if any ([`CircleServer::with_client`]).
    pub client: Option<client::Client>,
}

impl CircleServer {
    /// Bundles a circle's configuration, listener and status.
    pub fn new(config: ServerConfig, listener: TcpListener, status: Arc<ServerStatus>) -> Self {
        CircleServer {
            config,
            listener,
            status,
            token: None,
            client: None,
        }
    }

    /// Gives the circle a task client of its own (a circle whose tasks live
    /// on another Redis than the host's other circles); without one it
    /// submits through the host's client.
    pub fn with_client(mut self, client: client::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Gives the circle a token of its own, a child of the host's token:
    /// cancelling it refuses the circle's upgrades and closes its connections
    /// with 1001 (after their requests in flight were answered) while the
    /// host and its other circles carry on. One token may serve the circle on
    /// several hosts at once.
    pub fn with_token(mut self, token: CancellationToken) -> Self {
        self.token = Some(token);
        self
    }
}

/// Serves `listener` until `token` is cancelled, with [`ServerTiming::default`].
///
/// Every socket is then closed with 1001 (after its in-flight requests were
/// answered, up to [`ServerTiming::drain_timeout`]) and `run` returns once the
/// server's thread has stopped. Works from any tokio runtime; the server runs
/// on one dedicated actix worker thread and installs no signal handlers.
/// To serve many circles, use [`run_many`]: one thread for all of them.
/// Dropping the future instead of awaiting it stops the server without
/// draining (the port is released shortly after).
pub async fn run(
    config: ServerConfig,
    listener: std::net::TcpListener,
    client: client::Client,
    status: Arc<ServerStatus>,
    token: CancellationToken,
) -> Result<()> {
    run_with(
        config,
        ServerTiming::default(),
        listener,
        client,
        status,
        token,
    )
    .await
}

/// [`run`] with explicit heartbeat and drain timings: [`run_many`] with
/// one circle.
pub async fn run_with(
    config: ServerConfig,
    timing: ServerTiming,
    listener: std::net::TcpListener,
    client: client::Client,
    status: Arc<ServerStatus>,
    token: CancellationToken,
) -> Result<()> {
    run_many(
        vec![CircleServer::new(config, listener, status)],
        timing,
        client,
        token,
    )
    .await
}

/// Serves every circle's listener on one shared actix server until `token`
/// is cancelled.
///
/// Each circle keeps its own [`ServerConfig`] (limits, origin allow-list,
/// queue, task timeout), its own [`ServerStatus`] and its own connection
/// limit; only the thread is shared ([`HOST_WORKERS`] actix worker thread plus
/// actix's accept thread for the whole host). On cancellation every socket of
/// every circle drains its in-flight requests (up to
/// [`ServerTiming::drain_timeout`]) and closes with 1001, then `run_many`
/// returns once the worker thread has stopped. Dropping the future stops the
/// host without draining. With no circles it just waits for the token.
/// Its connections are bounded per address only ([`Budget::unbounded`]).
pub async fn run_many(
    circles: Vec<CircleServer>,
    timing: ServerTiming,
    client: client::Client,
    token: CancellationToken,
) -> Result<()> {
    let budget = Budget::unbounded();
    run_many_pausable(circles, timing, client, token, Pause::new(), budget).await
}

/// [`run_many`] that stops accepting on every listener once `pause` is
/// requested, while its open connections carry on until `token` (or their
/// circle's own token) fires. A paused host never accepts again; once it
/// holds no connection its actix server stops (its threads end) and it waits
/// for `token` to return. Its connections count against `budget` (with
/// those of the hosts that share it): past it one is closed at once.
pub async fn run_many_pausable(
    circles: Vec<CircleServer>,
    timing: ServerTiming,
    client: client::Client,
    token: CancellationToken,
    pause: Pause,
    budget: Arc<Budget>,
) -> Result<()> {
    // However it returns, a waiting `Pause::pause` is released.
    let _released = ReleaseOnDrop(pause.clone());
    if circles.is_empty() {
        pause.acknowledge();
        token.cancelled().await;
        return Ok(());
    }
    // What all the circles take upgraded: one address may hold that many.
    let circles_max = circles.iter().fold(0usize, |sum, c| {
        sum.saturating_add(c.config.max_connections)
    });
    let what = describe(&circles);
    // Actix force-closes what is still open after this; connections drain first.
    let shutdown_secs = timing.drain_timeout.as_secs() + 2;
    let host_open = Arc::new(ServerStatus::default());
    let mut routes: Routes = HashMap::with_capacity(circles.len());
    let mut listeners = Vec::with_capacity(circles.len());
    for circle in circles {
        let name = circle.config.circle_name.clone();
        let io_error = |source| Error::Io {
            circle: name.clone(),
            source,
        };
        let addr = circle.listener.local_addr().map_err(io_error)?;
        prepare_listener(&circle.listener, &timing).map_err(io_error)?;
        let tls = circle.config.tls.clone();
        let shared = Arc::new(Shared {
            submit: SubmitOptions {
                delivered_ttl: circle.config.delivered_ttl,
                ..SubmitOptions::with_timeout(circle.config.task_timeout)
            },
            config: circle.config,
            timing: timing.clone(),
            client: circle.client.unwrap_or_else(|| client.clone()),
            status: circle.status,
            token: circle.token.unwrap_or_else(|| token.clone()),
            limiter: Arc::default(),
            host_open: host_open.clone(),
        });
        if routes.insert(addr, shared).is_some() {
            return Err(io_error(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("two circles were given a listener on {addr}"),
            )));
        }
        listeners.push(Listener {
            name,
            addr,
            socket: circle.listener,
            tls,
        });
    }
    let per_address = circles_max.saturating_add(crate::peers::PENDING_PER_ADDRESS);
    let peers = crate::peers::Peers::new(per_address, budget);
    let server = build(routes, listeners, shutdown_secs, peers)?;
    let host_error = |source| what.error(source);

    // The actix server runs in its own task so that it can still process a stop
    // command when this future is dropped instead of awaited to the end.
    let handle = server.handle();
    let mut serving = tokio::spawn(server);
    let mut guard = StopOnDrop(Some(handle.clone()));
    let mut paused = false;
    loop {
        tokio::select! {
            ended = &mut serving => {
                guard.0 = None;
                return joined(ended).map_err(host_error);
            }
            () = token.cancelled() => break,
            () = pause.requested(), if !paused => {
                handle.pause().await;
                // Actix hands the pause to its accept thread and does not say
                // when that thread has let go of the listeners; an owner that
                // shuts a listener before then makes it log an accept error.
                tokio::time::sleep(PAUSE_SETTLE).await;
                paused = true;
                what.log(log::Level::Info, "paused; its open connections carry on");
                pause.acknowledge();
            }
            () = tokio::time::sleep(IDLE_CHECK), if paused => {
                if host_open.connections() == 0 {
                    // Nothing left to serve: free the threads now, not at shutdown.
                    handle.stop(true).await;
                    let ended = serving.await;
                    guard.0 = None;
                    what.log(log::Level::Info, "paused and idle; stopped");
                    token.cancelled().await;
                    return joined(ended).map_err(host_error);
                }
            }
        }
    }
    what.log(log::Level::Debug, "stopping");
    handle.stop(true).await;
    let ended = serving.await;
    guard.0 = None;
    what.log(log::Level::Info, "stopped");
    joined(ended).map_err(host_error)
}

/// Gives a circle's listening socket the options its accepted sockets need.
/// A client that takes nothing the server sent (its window stays shut) or
/// leaves it unacknowledged for `timing`'s client timeout is cut off by the
/// kernel: actix would otherwise keep its socket, and the bytes queued for
/// it, for as long as the client keeps it open, also after the connection
/// dropped it. An accepted socket takes the listener's TCP_USER_TIMEOUT
/// when the kernel accepts it (before the server does), so the owner of a
/// listener sets it right after binding; the hosts set it again.
pub fn prepare_listener(listener: &TcpListener, timing: &ServerTiming) -> std::io::Result<()> {
    socket2::SockRef::from(listener).set_tcp_user_timeout(Some(timing.client_timeout))
}

/// The actix server of `listeners` (not yet polled). A plain function: the
/// builder is not `Send` and must not live in `run_many`'s future.
fn build(
    routes: Routes,
    listeners: Vec<Listener>,
    shutdown_secs: u64,
    peers: Arc<crate::peers::Peers>,
) -> Result<actix_web::dev::Server> {
    let routes = web::Data::new(routes);
    let app = move || {
        App::new()
            .app_data(routes.clone())
            // An address past its bound (`peers`) gets no service, and
            // every answer but an upgrade closes its connection.
            .wrap_fn(|req, srv| {
                crate::peers::serve_bounded(req, srv, |status| {
                    status == actix_web::http::StatusCode::SWITCHING_PROTOCOLS
                })
            })
            .route("/ws", web::get().to(upgrade))
    };
    let mut server = actix_server::Server::build()
        .workers(HOST_WORKERS)
        // Connections the accept thread took and the worker has not yet
        // counted (a burst) are bounded too: past this actix stops
        // accepting, and the rest wait in the kernel's backlog.
        .max_concurrent_connections(peers.accepted_max())
        .disable_signals()
        .shutdown_timeout(shutdown_secs);
    let mut serving_on = Vec::with_capacity(listeners.len());
    for listener in listeners {
        let (name, addr) = (listener.name.clone(), listener.addr);
        let scheme = if listener.tls.is_some() { "wss" } else { "ws" };
        // Each connection is counted (`peers`) before anything else, its
        // TLS handshake included, and keeps its socket's descriptor for the
        // heartbeat (`acked`).
        server =
            crate::listen::listen(server, listener, app.clone(), &peers).map_err(|source| {
                Error::Io {
                    circle: name.clone(),
                    source,
                }
            })?;
        serving_on.push((name, scheme, addr));
    }
    let server = server.run();
    for (name, scheme, addr) in serving_on {
        log::info!(circle:% = name; "circle {name}: websocket server listening on {scheme}://{addr}/ws");
    }
    Ok(server)
}

/// What a host serves, for its errors and log lines.
enum Described {
    One(String),
    Many(usize),
}

fn describe(circles: &[CircleServer]) -> Described {
    match circles {
        [one] => Described::One(one.config.circle_name.clone()),
        many => Described::Many(many.len()),
    }
}

impl Described {
    /// Logs `message` about the host at `level`, with its circle as a field
    /// when it serves one.
    fn log(&self, level: log::Level, message: &str) {
        match self {
            Described::One(circle) => log::log!(level, circle:% = circle; "{self}: {message}"),
            Described::Many(_) => log::log!(level, "{self}: {message}"),
        }
    }

    fn error(&self, source: std::io::Error) -> Error {
        match self {
            Described::One(circle) => Error::Io {
                circle: circle.clone(),
                source,
            },
            Described::Many(circles) => Error::Host {
                circles: *circles,
                source,
            },
        }
    }
}

impl std::fmt::Display for Described {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Described::One(circle) => write!(f, "circle {circle}: websocket server"),
            Described::Many(n) => write!(f, "websocket host of {n} circles"),
        }
    }
}

/// Releases a waiting [`Pause::pause`] when the host returns or is dropped.
struct ReleaseOnDrop(Pause);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.0.acknowledge();
    }
}

/// Stops the actix server (without waiting) if `run_many` is dropped midway.
struct StopOnDrop(Option<actix_web::dev::ServerHandle>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            // `stop` sends its command at once; the returned future only waits.
            drop(handle.stop(false));
        }
    }
}

fn joined(
    ended: std::result::Result<std::io::Result<()>, tokio::task::JoinError>,
) -> std::io::Result<()> {
    ended.unwrap_or_else(|e| {
        Err(std::io::Error::other(format!(
            "the server task failed: {e}"
        )))
    })
}
