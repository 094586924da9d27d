//! The gateways of a circle as the status shows them.

use serde::{Deserialize, Serialize};

/// One gateway serving a circle, as `status --json` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayRow {
    /// The gateway's id (one per process run).
    pub id: String,
    /// Its process id, when its heartbeat said one.
    pub pid: Option<u32>,
    /// The machine it runs on.
    pub host: String,
    /// The URL it serves the circle at.
    pub url: String,
}

impl From<&client::Gateway> for GatewayRow {
    fn from(g: &client::Gateway) -> Self {
        GatewayRow {
            id: g.id.clone(),
            pid: g.pid,
            host: g.host.clone(),
            url: g.url.clone(),
        }
    }
}
