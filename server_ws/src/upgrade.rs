//! The `GET /ws` upgrade handler, shared by every circle of a host: finds the
//! circle by the listener the request came in on, checks the origin, the
//! token (circles with principals) and the connection limit, guards frame
//! lengths, and hands the socket to `connection::serve`.

use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::BoxBody;
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use futures_util::Stream;
use telemetry::Rejection;

use crate::circle::Routes;
use crate::circle::Shared;
use crate::frame_guard::FrameGuard;
use crate::outbox::Outbox;
use crate::{auth, connection, origin};

/// The body of every 401: the same for a missing and a wrong token.
const UNAUTHORIZED: &str = "a valid token is needed: send Authorization: Bearer <token>, or \
                            offer the WebSocket subprotocol bearer.<token>\n";

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
    let circle = shared.config.circle_name.clone();
    // RFC 6455 §4.1: the opening handshake is HTTP/1.1 or later (actix-ws
    // does not check); an HTTP/1.0 client would not know the 101.
    if req.version() < actix_web::http::Version::HTTP_11 {
        return Ok(HttpResponse::BadRequest()
            .body("a websocket upgrade needs HTTP/1.1 (RFC 6455); this request is HTTP/1.0\n"));
    }
    let origin = origin::of_request(req.headers());
    if !origin::is_allowed(origin, &shared.config.allowed_origins) {
        if let Some(n) = shared.status.refused(Rejection::Origin) {
            log::warn!(circle:%;
                "circle {circle}: refused a websocket upgrade from origin {origin:?} \
                 ({n} upgrades refused so far; logged at powers of two)"
            );
        }
        return Ok(HttpResponse::Forbidden().body(
            "origin not allowed: only loopback origins and those the server allows (--allowed-origin) may connect\n",
        ));
    }
    // Circles with principals: the connection's own copy of what the circle
    // shares, its submissions naming the principal.
    let subprotocol = auth::bearer_subprotocol(req.headers()).map(str::to_owned);
    let shared = if shared.config.principals.is_empty() {
        shared
    } else {
        match authorize(&req, &shared) {
            Ok(caller) => {
                let mut own = Shared::clone(&shared);
                own.submit.caller = Some(caller);
                Arc::new(own)
            }
            Err(refusal) => return Ok(*refusal),
        }
    };
    if shared.token.is_cancelled() {
        shared.status.rejected(Rejection::ShuttingDown);
        return Ok(HttpResponse::ServiceUnavailable().body("server shutting down\n"));
    }
    let max = shared.config.max_connections;
    let Some(slot) = shared.status.try_connect(max) else {
        if let Some(n) = shared.status.refused(Rejection::TooManyConnections) {
            log::warn!(circle:%;
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
    let guard = FrameGuard::new(body, shared.config.max_message_bytes);
    let received = guard.received();
    let guarded: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(guard);
    let mut guarded = actix_web::dev::Payload::from(guarded);
    let body = web::Payload::from_request(&req, &mut guarded).await?;
    // A browser that offered `bearer.<token>` needs that subprotocol back,
    // or it drops the connection (`auth::bearer_subprotocol`).
    let protocols: Vec<&str> = subprotocol.iter().map(String::as_str).collect();
    let (response, session, stream) = actix_ws::handle_with_protocols(&req, body, &protocols)?;
    // The body actix-ws made, wrapped to see what the socket takes: the
    // connection's replies queued for it stay within MAX_UNSENT_BYTES.
    let (response, body) = response.into_parts();
    let (outbox, drain, release) = Outbox::new(session, body, Arc::clone(&shared.status));
    let response = response.set_body(BoxBody::new(drain));
    // Oversize data frames never reach the codec (the frame guard answers
    // them); its own limit only has to let control frames (at most 125
    // bytes) and the guard's stand-ins through, whatever the message limit.
    let stream = stream.max_frame_size(shared.config.max_message_bytes.max(125));
    let host_slot = shared.host_open.try_connect(usize::MAX);
    let acked = crate::acked::Acked::of(&req);
    let serving = connection::serve(
        Arc::clone(&shared),
        outbox,
        (acked, received),
        release,
        stream,
        slot,
    );
    actix_web::rt::spawn(async move {
        let _host_slot = host_slot;
        serving.await;
    });
    Ok(response)
}

/// The caller of an upgrade to a circle with principals, or the 401 / 429
/// that refuses it.
fn authorize(req: &HttpRequest, shared: &Shared) -> Result<client::Caller, Box<HttpResponse>> {
    let circle = &shared.config.circle_name;
    let ip = req
        .peer_addr()
        .map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |a| a.ip());
    let now = Instant::now();
    if let Some(seconds) = shared.limiter.limited(ip, now) {
        shared.status.rejected(Rejection::RateLimited);
        return Err(Box::new(
            HttpResponse::TooManyRequests()
                .insert_header((header::RETRY_AFTER, seconds.to_string()))
                .body(format!(
                    "too many failed upgrades from this address: try again in {seconds} s\n"
                )),
        ));
    }
    let offered = auth::offered(req.headers());
    let Some(principal) = auth::authenticate(&shared.config.principals, offered) else {
        shared.limiter.failed(ip, now);
        if let Some(n) = shared.status.refused(Rejection::Unauthorized) {
            log::warn!(circle:%;
                "circle {circle}: refused a websocket upgrade from {ip} without a valid token \
                 ({n} upgrades refused so far; logged at powers of two)"
            );
        }
        return Err(Box::new(
            HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
                .body(UNAUTHORIZED),
        ));
    };
    log::debug!(circle:%;
        "circle {circle}: {ip} connects as {:?} ({})",
        principal.name,
        principal.role
    );
    Ok(client::Caller {
        name: principal.name.clone(),
        role: principal.role,
    })
}
