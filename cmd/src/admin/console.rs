//! The browser console's files, embedded in the binary (it must work with
//! no internet access): `/` serves `index.html`, `/assets/<name>` the rest
//! of [`ASSETS`] (its stylesheet and its script). The console follows
//! `/api/events` ([`super::events`]) for its table and charts and runs
//! scripts through each circle's own WebSocket endpoint, as any client
//! does (so the circle's Origin check and tokens apply: a page on a
//! loopback admin address is a loopback origin; any other admin origin must
//! be one of the circles' `--allowed-origin`s).
//!
//! The page and its assets hold no data, and a browser cannot send a bearer
//! header when it navigates: they need the Origin check only, also with an
//! admin token. The page asks for the token when `/api/events` answers 401,
//! keeps it in `sessionStorage` (in the page alone when the browser blocks
//! the site's data) and sends it as `Authorization` on every request for
//! data.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};

use super::AdminState;
use super::access::Need;

/// The page at `/`.
const INDEX: &str = include_str!("console/index.html");

/// Files under `/assets/`: name, content type, bytes.
pub const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("console/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("console/console.js"),
    ),
];

/// `GET /`.
pub async fn index(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    if let Some(refused) = state.access.check(&req, Need::Origin) {
        return refused;
    }
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // The page runs scripts on every circle and a frame sends no
        // `Origin`: no other site may frame it (clickjacking).
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"))
        .body(INDEX)
}

/// `GET /assets/{name}`.
pub async fn asset(
    req: HttpRequest,
    state: web::Data<AdminState>,
    name: web::Path<String>,
) -> HttpResponse {
    if let Some(refused) = state.access.check(&req, Need::Origin) {
        return refused;
    }
    match ASSETS.iter().find(|(n, _, _)| *n == name.as_str()) {
        Some((_, content_type, bytes)) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, *content_type))
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .body(*bytes),
        None => HttpResponse::NotFound().body("no such asset\n"),
    }
}
