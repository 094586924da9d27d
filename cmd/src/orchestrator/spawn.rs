//! Spawning the long-lived components under supervision: each circle's
//! worker (its own child token) and the one websocket host that serves every
//! circle's port. Both are tracked by the caller's [`TaskTracker`].

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::settings::Settings;
use crate::status::{CircleState, Slot};
use crate::{circles, supervisor};

/// Starts the supervised worker of one circle; `token` stops it.
pub fn start_worker(
    settings: &Settings,
    circle: &circles::Prepared,
    state: &Arc<CircleState>,
    token: CancellationToken,
    tracker: &TaskTracker,
    changed: &Arc<Notify>,
) {
    let name = state.config.name.clone();
    let worker_config = settings.worker_config(&state.queue, &circle.owner);
    let engine = circle.engine.clone();
    let mut worker_options = settings.worker.clone();
    worker_options.metrics = state.task_metrics.clone();
    tracker.spawn(supervisor::supervise(
        format!("worker of circle \"{name}\""),
        state.worker.clone(),
        changed.clone(),
        token.clone(),
        move |slot| {
            let status = Arc::new(worker::WorkerStatus::default());
            slot.worker = Some(status.clone());
            let fut = worker::run_with(
                worker_config.clone(),
                worker_options.clone(),
                engine.clone(),
                status,
                token.clone(),
            );
            async move { fut.await.map_err(|e| e.to_string()) }
        },
    ));
}

/// A circle served by the websocket host: its limits, its bound port (every
/// run of the host gets a clone, so a restart never races for the port) and
/// the slot its server state is shown in.
pub type Hosted = (
    server_ws::ServerConfig,
    std::net::TcpListener,
    Arc<Mutex<Slot>>,
);

/// Starts the one supervised websocket host that serves every circle's port
/// (one actix worker thread for all of them, see `server_ws::run_many`). Its
/// state is mirrored into every circle's server slot; `token` stops it.
pub fn start_host(
    client: &client::Client,
    hosted: Vec<Hosted>,
    token: CancellationToken,
    tracker: &TaskTracker,
    changed: &Arc<Notify>,
) -> tokio::task::JoinHandle<()> {
    let client = client.clone();
    let (servers, slots): (Vec<_>, Vec<_>) = hosted
        .into_iter()
        .map(|(config, listener, slot)| ((config, listener), slot))
        .unzip();
    tracker.spawn(supervisor::supervise_shared(
        format!("websocket host of {} circles", servers.len()),
        slots,
        changed.clone(),
        token.clone(),
        move |slots| {
            let mut circles = Vec::with_capacity(servers.len());
            let mut failed = None;
            for ((config, listener), slot) in servers.iter().zip(slots.iter_mut()) {
                let status = slot.new_server_status();
                slot.server = Some(status.clone());
                match listener.try_clone() {
                    Ok(listener) => {
                        circles.push(server_ws::CircleServer::new(
                            config.clone(),
                            listener,
                            status,
                        ));
                    }
                    Err(e) => {
                        failed.get_or_insert(format!(
                            "cannot reuse the listening socket of circle \"{}\": {e}",
                            config.circle_name
                        ));
                    }
                }
            }
            let (client, token) = (client.clone(), token.clone());
            async move {
                if let Some(failed) = failed {
                    return Err(failed);
                }
                server_ws::run_many(circles, server_ws::ServerTiming::default(), client, token)
                    .await
                    .map_err(|e| e.to_string())
            }
        },
    ))
}
