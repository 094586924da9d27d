//! [`Row`]: one circle in the table, and its JSON shape.

use serde::{Deserialize, Deserializer, Serialize};

use super::{DEGRADED, GatewayRow, LEASE_LOST, NOT_HERE, STANDBY, serving};

/// A state or phase name read back from JSON (the `status` command), as
/// one of the names this version writes; `unknown` for any other.
pub(super) fn known_name<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    const KNOWN: &[&str] = &[
        "starting",
        "running",
        "reconnecting",
        "restarting",
        "stopped",
        "failed",
        "shutting down",
        NOT_HERE,
        STANDBY,
        LEASE_LOST,
        DEGRADED,
    ];
    let name = String::deserialize(d)?;
    Ok(KNOWN
        .iter()
        .find(|k| **k == name)
        .copied()
        .unwrap_or("unknown"))
}

/// One row of the table, also the JSON shape of a circle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Circle name.
    pub name: String,
    /// Circle id.
    pub id: u32,
    /// Redis queue name.
    pub queue: String,
    /// The queue's Redis key ([`client::keys::tasks`]), shown under `Worker Queues`.
    pub queue_key: String,
    /// WebSocket URL.
    pub url: String,
    /// How many principals may connect; 0: the circle is open.
    pub principals: usize,
    /// starting | running | reconnecting | standby | lease lost |
    /// restarting | stopped | failed | not here (the process's `--role` is
    /// `gateway`)
    #[serde(deserialize_with = "known_name")]
    pub worker: &'static str,
    /// Why the worker is not running, when known.
    pub worker_detail: Option<String>,
    /// The queue's lease: token, pid, host and database directory of the
    /// orchestrator (this or another) whose worker serves it, if one does.
    #[serde(default)]
    pub worker_lease: Option<client::Lease>,
    /// starting | running | restarting | stopped | not here (the
    /// process's `--role` is `worker`)
    #[serde(deserialize_with = "known_name")]
    pub server: &'static str,
    /// Why the server is not running, when known.
    pub server_detail: Option<String>,
    /// Tasks waiting in the queue (unknown until the first stats read).
    pub queue_len: Option<u64>,
    /// Tasks running.
    pub in_flight: Option<u64>,
    /// Tasks completed.
    pub processed: Option<u64>,
    /// Tasks ended in error.
    pub failed: Option<u64>,
    /// Connected WebSocket clients.
    pub clients: usize,
    /// Seconds since worker and server are both up (0 while either is not).
    pub uptime_secs: u64,
    /// Restarts of the worker and the server after failures.
    pub restarts: u32,
    /// Whether the circle has a live worker as this process sees it (it
    /// serves the endpoint): `false` once none was seen for the worker
    /// heartbeat's TTL; `null` when this process does not look, or has not
    /// been able to.
    #[serde(default)]
    pub worker_live: Option<bool>,
    /// How many gateways (processes serving its WebSocket endpoint, on any
    /// machine) announce the circle in Redis; `null` until first read.
    #[serde(default)]
    pub gateway_count: Option<usize>,
    /// Those gateways, ordered by id; `null` until first read.
    #[serde(default)]
    pub gateways: Option<Vec<GatewayRow>>,
}

impl Row {
    /// Whether every component of the circle this process runs is running
    /// (a component its role leaves to another process does not count).
    pub fn up(&self) -> bool {
        serving(self.worker) && serving(self.server)
    }

    /// Whether the row has left the starting phase (up, or visibly failing).
    pub fn settled(&self) -> bool {
        self.worker != "starting" && self.server != "starting"
    }

    /// The fields whose change is worth a line in plain mode.
    pub fn state_key(
        &self,
    ) -> (
        &'static str,
        &Option<String>,
        &'static str,
        &Option<String>,
        u32,
    ) {
        (
            self.worker,
            &self.worker_detail,
            self.server,
            &self.server_detail,
            self.restarts,
        )
    }
}

#[cfg(test)]
impl Row {
    /// Test fixture: circle `name` with queue `queue`, worker and server
    /// running on port 8081, no counters read yet.
    pub fn sample(name: &str, id: u32, queue: &str) -> Row {
        Row {
            name: name.into(),
            id,
            queue: queue.into(),
            queue_key: client::keys::tasks(queue),
            url: "ws://127.0.0.1:8081/ws".into(),
            principals: 0,
            worker: "running",
            worker_detail: None,
            worker_lease: None,
            server: "running",
            server_detail: None,
            queue_len: None,
            in_flight: None,
            processed: None,
            failed: None,
            clients: 0,
            uptime_secs: 0,
            restarts: 0,
            worker_live: None,
            gateway_count: None,
            gateways: None,
        }
    }
}
