//! The `GET /ws` upgrade handler, shared by every circle of a host: finds the
//! circle by the listener the request came in on, checks the origin and the
//! connection limit, guards frame lengths, and hands the socket to
//! `connection::serve`.

use std::pin::Pin;
use std::sync::Arc;

use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use futures_util::Stream;

use crate::circle::Routes;
use crate::frame_guard::FrameGuard;
use crate::{connection, origin};

/// `GET /ws`: checks the origin and the connection limit, then upgrades.
pub(crate) async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    routes: web::Data<Routes>,
) -> actix_web::Result<HttpResponse> {
    // Each listener of the host belongs to one circle; actix records which
    // listener (by its local address) the request came in on.
    let local = req.app_config().local_addr();
    let Some(shared) = routes.get(&local).map(Arc::clone) else {
        log::error!("a websocket upgrade arrived on {local}, which no circle listens on");
        return Ok(HttpResponse::NotFound().body("no circle is served on this address\n"));
    };
    let circle = &shared.config.circle_name;
    let origin = match req.headers().get(header::ORIGIN).map(|v| v.to_str()) {
        None => None,
        Some(Ok(o)) => Some(o),
        Some(Err(_)) => Some(""),
    };
    if !origin::is_allowed(origin, &shared.config.allowed_origins) {
        if let Some(n) = shared.status.refused() {
            log::warn!(
                "circle {circle}: refused a websocket upgrade from origin {origin:?} \
                 ({n} upgrades refused so far; logged at powers of two)"
            );
        }
        return Ok(HttpResponse::Forbidden().body(
            "origin not allowed: only loopback origins and the configured allowed_origins may connect\n",
        ));
    }
    if shared.token.is_cancelled() {
        return Ok(HttpResponse::ServiceUnavailable().body("server shutting down\n"));
    }
    let max = shared.config.max_connections;
    let Some(slot) = shared.status.try_connect(max) else {
        if let Some(n) = shared.status.refused() {
            log::warn!(
                "circle {circle}: refused a websocket upgrade: {max} connections already open \
                 ({n} upgrades refused so far; logged at powers of two)"
            );
        }
        return Ok(HttpResponse::ServiceUnavailable()
            .insert_header((header::RETRY_AFTER, "1"))
            .body(format!("too many connections (limit {max})\n")));
    };
    // Frame lengths are checked as the bytes arrive (see `frame_guard`): the
    // codec would keep every byte of an oversize frame until it is whole.
    let guarded: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> =
        Box::pin(FrameGuard::new(body, shared.config.max_message_bytes));
    let mut guarded = actix_web::dev::Payload::from(guarded);
    let body = web::Payload::from_request(&req, &mut guarded).await?;
    let (response, session, stream) = actix_ws::handle(&req, body)?;
    // Oversize data frames never reach the codec (the frame guard answers
    // them); its own limit only has to let control frames (at most 125
    // bytes) and the guard's stand-ins through, whatever the message limit.
    let stream = stream.max_frame_size(shared.config.max_message_bytes.max(125));
    actix_web::rt::spawn(connection::serve(
        Arc::clone(&shared),
        session,
        stream,
        slot,
    ));
    Ok(response)
}
