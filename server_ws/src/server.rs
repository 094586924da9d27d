//! The actix-web server of one circle: `GET /ws` upgrade with origin and
//! connection checks, one worker thread, shutdown driven by the token.

use std::pin::pin;
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

    let handle = server.handle();
    let mut server = pin!(server);
    tokio::select! {
        ended = &mut server => return ended.map_err(io_error),
        () = token.cancelled() => {}
    }
    log::debug!("circle {circle}: websocket server stopping");
    let (ended, ()) = tokio::join!(server, handle.stop(true));
    log::info!("circle {circle}: websocket server stopped");
    ended.map_err(io_error)
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
