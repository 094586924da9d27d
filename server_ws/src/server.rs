//! The actix-web server of one circle: `GET /ws` upgrade with origin and
//! connection checks, one worker thread, shutdown driven by the token.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use client::SubmitOptions;
use tokio_util::sync::CancellationToken;

use crate::config::{ServerConfig, ServerTiming};
use crate::status::ServerStatus;
use crate::{Error, Result, connection, origin};

/// What every connection of one server shares.
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) timing: ServerTiming,
    pub(crate) client: client::Client,
    pub(crate) status: Arc<ServerStatus>,
    pub(crate) token: CancellationToken,
    pub(crate) submit: SubmitOptions,
}

/// Serves `listener` until `token` is cancelled, with [`ServerTiming::default`].
///
/// Every socket is then closed with 1001 (after its in-flight requests were
/// answered, up to [`ServerTiming::drain_timeout`]) and `run` returns once the
/// server's thread has stopped. Works from any tokio runtime; the server runs
/// on one dedicated actix worker thread and installs no signal handlers.
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

/// [`run`] with explicit heartbeat and drain timings.
pub async fn run_with(
    config: ServerConfig,
    timing: ServerTiming,
    listener: std::net::TcpListener,
    client: client::Client,
    status: Arc<ServerStatus>,
    token: CancellationToken,
) -> Result<()> {
    let circle = config.circle_name.clone();
    let io_error = |source| Error::Io {
        circle: circle.clone(),
        source,
    };
    // Actix force-closes what is still open after this; connections drain first.
    let shutdown_secs = timing.drain_timeout.as_secs() + 2;
    let submit = SubmitOptions {
        timeout: config.task_timeout,
    };
    let shared = Arc::new(Shared {
        config,
        timing,
        client,
        status,
        token: token.clone(),
        submit,
    });
    let addr = listener.local_addr().map_err(io_error)?;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::from(Arc::clone(&shared)))
            .route("/ws", web::get().to(upgrade))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(shutdown_secs)
    .listen(listener)
    .map_err(io_error)?
    .run();
    log::info!("circle {circle}: websocket server listening on ws://{addr}/ws");

    // The actix server runs in its own task so that it can still process a stop
    // command when this future is dropped instead of awaited to the end.
    let handle = server.handle();
    let mut serving = tokio::spawn(server);
    let mut guard = StopOnDrop(Some(handle.clone()));
    tokio::select! {
        ended = &mut serving => {
            guard.0 = None;
            return joined(ended).map_err(io_error);
        }
        () = token.cancelled() => {}
    }
    log::debug!("circle {circle}: websocket server stopping");
    handle.stop(true).await;
    let ended = serving.await;
    guard.0 = None;
    log::info!("circle {circle}: websocket server stopped");
    joined(ended).map_err(io_error)
}

/// Stops the actix server (without waiting) if `run` is dropped midway.
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

/// `GET /ws`: checks the origin and the connection limit, then upgrades.
async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    shared: web::Data<Shared>,
) -> actix_web::Result<HttpResponse> {
    let circle = &shared.config.circle_name;
    let origin = match req.headers().get(header::ORIGIN).map(|v| v.to_str()) {
        None => None,
        Some(Ok(o)) => Some(o),
        Some(Err(_)) => Some(""),
    };
    if !origin::is_allowed(origin, &shared.config.allowed_origins) {
        shared.status.refused();
        log::warn!("circle {circle}: refused a websocket upgrade from origin {origin:?}");
        return Ok(HttpResponse::Forbidden().body(
            "origin not allowed: only loopback origins and the configured allowed_origins may connect\n",
        ));
    }
    if shared.token.is_cancelled() {
        return Ok(HttpResponse::ServiceUnavailable().body("server shutting down\n"));
    }
    let max = shared.config.max_connections;
    let Some(slot) = shared.status.try_connect(max) else {
        shared.status.refused();
        log::warn!("circle {circle}: refused a websocket upgrade: {max} connections already open");
        return Ok(HttpResponse::ServiceUnavailable()
            .insert_header((header::RETRY_AFTER, "1"))
            .body(format!("too many connections (limit {max})\n")));
    };
    let (response, session, stream) = actix_ws::handle(&req, body)?;
    let stream = stream.max_frame_size(shared.config.max_message_bytes);
    actix_web::rt::spawn(connection::serve(
        shared.into_inner(),
        session,
        stream,
        slot,
    ));
    Ok(response)
}
