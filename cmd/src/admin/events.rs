//! `GET /api/events`: the status snapshot as server-sent events, for the
//! browser console's live table and charts.
//!
//! One producer ([`produce`]) builds the snapshot every [`REFRESH`] and
//! publishes its JSON on a watch channel when it changed, and at least every
//! [`AT_LEAST_EVERY`] (so charts advance while nothing changes). Every
//! client's stream follows that channel: a connection costs no snapshot and
//! no Redis round trip of its own. A stream opens with the latest snapshot
//! and ends when the producer stops with the admin endpoint, so no client
//! holds up the shutdown. At most [`MAX_STREAMS`] are open at once: a
//! stream holds its connection for as long as the client keeps it and
//! takes what is sent; one whose client takes nothing for 30 s (vanished
//! without closing, or never reading) the kernel cuts off
//! ([`super::bind`]), and its slot comes free.
//!
//! Each circle of an event carries what `/api/status` shows plus
//! `latency_sum_seconds` and `latency_count`: the totals of its end-to-end
//! task times (`null` without metrics), from which the console draws the
//! mean latency between two events.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

use super::AdminState;
use super::access::Need;
use crate::roster::Roster;
use crate::status::{Header, snapshot};

/// How often the producer builds the snapshot.
pub const REFRESH: Duration = Duration::from_millis(250);
/// The longest time between two events.
pub const AT_LEAST_EVERY: Duration = Duration::from_secs(1);

/// Event streams open at once, over every client; past it, 503.
pub const MAX_STREAMS: usize = 64;

/// The event streams that may open yet: a stream holds one permit until
/// actix drops its body (the client gone, or the endpoint stopping).
#[derive(Clone)]
pub struct Streams(Arc<Semaphore>);

impl Default for Streams {
    fn default() -> Streams {
        Streams(Arc::new(Semaphore::new(MAX_STREAMS)))
    }
}

/// The latest event's JSON, as the producer published it.
pub type Latest = watch::Receiver<Arc<str>>;

/// What the producer reads.
pub struct Source {
    /// The header facts.
    pub header: Header,
    /// The circles running (a reload changes them), in circles.json order.
    pub circles: Roster,
    /// Set once the drain starts.
    pub draining: Arc<AtomicBool>,
}

impl Source {
    /// The event's JSON now: the snapshot, each circle with its latency
    /// totals.
    pub fn json(&self) -> String {
        let phase = if self.draining.load(Ordering::Relaxed) {
            "shutting down"
        } else {
            "running"
        };
        let circles = self.circles.current();
        let snap = snapshot(&self.header, &circles, phase);
        let mut value = serde_json::to_value(&snap).expect("a snapshot serializes to JSON");
        if let Some(rows) = value.get_mut("circles").and_then(Value::as_array_mut) {
            for (row, circle) in rows.iter_mut().zip(&circles) {
                let totals = circle.task_metrics.as_ref().map(|m| m.end_to_end_totals());
                if let Some(row) = row.as_object_mut() {
                    row.insert("latency_sum_seconds".into(), json!(totals.map(|t| t.0)));
                    row.insert("latency_count".into(), json!(totals.map(|t| t.1)));
                }
            }
        }
        value.to_string()
    }
}

/// The channel the producer publishes on, holding the snapshot of now.
pub fn channel(source: &Source) -> (watch::Sender<Arc<str>>, Latest) {
    watch::channel(Arc::from(source.json()))
}

/// Publishes `source`'s snapshot on `tx` until `stop`; dropping `tx` then
/// ends every client's stream. While no client listens (the one receiver
/// left is the endpoint's own, which a connecting client clones) it builds
/// nothing: an idle console costs no work, and a client's first event is
/// built fresh by [`events`] itself.
pub async fn produce(tx: watch::Sender<Arc<str>>, source: Source, stop: CancellationToken) {
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent = Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if tx.receiver_count() <= 1 {
            continue;
        }
        let json = source.json();
        let changed = *tx.borrow().as_ref() != *json;
        if changed || sent.elapsed() >= AT_LEAST_EVERY {
            tx.send_replace(Arc::from(json));
            sent = Instant::now();
        }
    }
}

/// One server-sent event carrying `json`.
fn event(json: &str) -> Bytes {
    Bytes::from(format!("data: {json}\n\n"))
}

/// `GET /api/events`: `text/event-stream`, the latest snapshot at once and
/// then each one the producer publishes; 503 while [`MAX_STREAMS`] are open.
pub async fn events(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    if let Some(refused) = state.access.check(&req, Need::Token) {
        return refused;
    }
    let Ok(permit) = Arc::clone(&state.streams.0).try_acquire_owned() else {
        return HttpResponse::ServiceUnavailable()
            .insert_header((header::RETRY_AFTER, "5"))
            .body(format!(
                "too many event streams open ({MAX_STREAMS}); try again when one closes\n"
            ));
    };
    let mut latest = state.events.clone();
    latest.mark_unchanged();
    let now = Source {
        header: state.header.clone(),
        circles: state.circles.clone(),
        draining: Arc::clone(&state.draining),
    };
    let first = event(&now.json());
    // The permit goes with the stream's state, and back when it is dropped.
    let rest = futures_util::stream::unfold((latest, permit), |(mut latest, permit)| async move {
        latest.changed().await.ok()?;
        let next = event(&latest.borrow_and_update());
        Some((next, (latest, permit)))
    });
    let body = futures_util::stream::once(async move { first })
        .chain(rest)
        .map(Ok::<_, Infallible>);
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}
