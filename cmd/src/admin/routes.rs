//! The admin routes: probes, the status snapshot, the metrics, the reload,
//! and the console's files ([`super::console`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use super::AdminState;
use super::access::Need;
use super::console;
use crate::reload::{ReloadError, ReloadErrorKind};
use crate::status::snapshot;

/// The content type of OpenMetrics text, which Prometheus asks for and
/// `prometheus-client` writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the Prometheus text format, for every other client
/// (`curl`, `promtool check metrics`).
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Registers every route. Each path is a resource with the one method it
/// takes (the probes HEAD too, which some health checkers send): any other
/// method gets 405 with `Allow` naming it, not 404 (and a link or a
/// cross-site GET never reloads).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/healthz")
            .route(web::get().to(healthz))
            .route(web::head().to(healthz)),
    )
    .service(
        web::resource("/readyz")
            .route(web::get().to(readyz))
            .route(web::head().to(readyz)),
    )
    .service(web::resource("/api/status").route(web::get().to(status)))
    .service(web::resource("/api/events").route(web::get().to(super::events::events)))
    .service(web::resource("/metrics").route(web::get().to(metrics)))
    .service(web::resource("/api/reload").route(web::post().to(reload)))
    .service(web::resource("/").route(web::get().to(console::index)))
    .service(web::resource("/assets/{name}").route(web::get().to(console::asset)));
}

/// `GET /healthz`: 200 while the process answers.
async fn healthz(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    if let Some(refused) = state.access.check(&req, Need::Origin) {
        return refused;
    }
    HttpResponse::Ok().body("ok\n")
}

/// `GET /readyz`: 200 when every circle's worker and server run (those this
/// process's `--role` runs: a gateway's servers, a worker's workers), Redis
/// answered its last probe, and every circle on its own Redis that this
/// process serves answered its last gateway beat; else 503 naming each
/// thing that is not ready. A circle a reload is taking out is not waited
/// for.
async fn readyz(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    if let Some(refused) = state.access.check(&req, Need::Origin) {
        return refused;
    }
    let mut not_ready = Vec::new();
    if state.draining.load(Ordering::Relaxed) {
        not_ready.push(json!({"component": "orchestrator", "reason": "shutting down"}));
    }
    if let Err(why) = state.redis.verdict() {
        not_ready.push(json!({"component": "redis", "reason": why}));
    }
    // A reload applied in part left circles of the file stopped, until a
    // later reload starts them (a refused one starts nothing).
    if let Some(last) = crate::status::lock(&state.header.reload).as_ref()
        && let Some(why) = &last.stopped
    {
        not_ready.push(json!({"component": "reload", "reason": why}));
    }
    for circle in &state.circles.current() {
        // Read before `leaving`: a circle's row shows it stopped only after
        // its take-out marked it leaving (the row's lock orders the two).
        let row = circle.row();
        // A circle a reload takes out is going, as asked: not waited for.
        if circle.leaving.load(Ordering::Relaxed) {
            continue;
        }
        // A circle on its own Redis: the probe above pings only --redis-url;
        // the gateway beat tells whether the circle's own one answers.
        if circle.config.redis.is_some()
            && let Some(why) = circle
                .sight
                .as_ref()
                .and_then(server_ws::WorkerSight::failure)
        {
            not_ready.push(json!({
                "component": "redis",
                "circle": circle.config.name,
                "reason": why,
            }));
        }
        for (component, phase, detail) in [
            ("worker", row.worker, &row.worker_detail),
            ("server", row.server, &row.server_detail),
        ] {
            if phase != "running" && phase != crate::status::NOT_HERE {
                not_ready.push(json!({
                    "component": component,
                    "circle": row.name,
                    "state": phase,
                    "reason": detail,
                }));
            }
        }
    }
    if not_ready.is_empty() {
        HttpResponse::Ok().json(json!({"ready": true}))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({"ready": false, "not_ready": not_ready}))
    }
}

/// `GET /api/status`: the snapshot `--output json` prints.
async fn status(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    if let Some(refused) = state.access.check(&req, Need::Token) {
        return refused;
    }
    let phase = if state.draining.load(Ordering::Relaxed) {
        "shutting down"
    } else {
        "running"
    };
    HttpResponse::Ok().json(snapshot(&state.header, &state.circles.current(), phase))
}

/// `POST /api/reload`: re-reads circles.json and answers once it is applied
/// (removed and changed circles drained): 200 with the summary
/// (`{"added", "removed", "changed"}`), else `{"error": {"kind", "message"}}`
/// with 422 for an invalid file (nothing changed), 500 when a circle could
/// not start, 503 while shutting down.
///
/// The orchestrator takes reloads only until a stop signal, and a reload it
/// took ends before it reads one; the channel to it lives on until the
/// process exits. So once `draining` is set no reload will run, and a request
/// asked then, or still queued, is answered 503 at once rather than left
/// waiting for the drain to end.
async fn reload(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    if let Some(refused) = state.access.check(&req, Need::Token) {
        return refused;
    }
    let outcome = if state.draining.load(Ordering::Relaxed) {
        log::info!("reload asked through the admin endpoint refused: shutting down");
        Err(shutting_down())
    } else {
        log::info!("reload asked through the admin endpoint");
        // Withdrawn if the drain starts before the orchestrator takes it;
        // a reload it took is applied, and its outcome told.
        state.reload.reload_unless(draining(&state.draining)).await
    };
    match outcome {
        Ok(summary) => HttpResponse::Ok().json(summary),
        Err(error) => {
            let mut answer = match error.kind {
                ReloadErrorKind::InvalidConfig => HttpResponse::UnprocessableEntity(),
                ReloadErrorKind::CannotStart => HttpResponse::InternalServerError(),
                ReloadErrorKind::ShuttingDown => HttpResponse::ServiceUnavailable(),
            };
            answer.json(json!({ "error": error }))
        }
    }
}

/// How often a waiting reload looks whether the drain started.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// Returns once the drain has started.
async fn draining(flag: &AtomicBool) {
    while !flag.load(Ordering::Relaxed) {
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// The refusal of a reload asked while shutting down.
fn shutting_down() -> ReloadError {
    ReloadError::new(
        ReloadErrorKind::ShuttingDown,
        "the orchestrator is shutting down; nothing was reloaded",
    )
}

/// `GET /metrics`: every metric, as OpenMetrics text when the client
/// accepts it (Prometheus does), else in the Prometheus text format.
async fn metrics(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    if let Some(refused) = state.access.check(&req, Need::Token) {
        return refused;
    }
    let openmetrics = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let mut text = String::with_capacity(16 << 10);
    match prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        Ok(()) if openmetrics => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, OPENMETRICS))
            .body(text),
        Ok(()) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, PROMETHEUS_TEXT))
            .body(prometheus_text(&text)),
        Err(e) => {
            log::error!("cannot encode the metrics: {e}");
            HttpResponse::InternalServerError().body("cannot encode the metrics\n")
        }
    }
}

/// OpenMetrics text as the Prometheus text format (0.0.4): a counter's
/// family is named with its `_total` suffix, as its samples are (OpenMetrics
/// names the family without it), and the `# EOF` line goes.
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + counters.len() * 12);
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::prometheus_text;

    #[test]
    fn counter_families_take_their_total_suffix_and_eof_goes() {
        let open = "# HELP a_b Things.\n# TYPE a_b counter\na_b_total{x=\"1\"} 2\n\
                    # HELP g A gauge.\n# TYPE g gauge\ng 1\n# EOF\n";
        assert_eq!(
            prometheus_text(open),
            "# HELP a_b_total Things.\n# TYPE a_b_total counter\na_b_total{x=\"1\"} 2\n\
             # HELP g A gauge.\n# TYPE g gauge\ng 1\n"
        );
    }
}
