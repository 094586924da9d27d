//! [`Snapshot`]: the whole system at one moment, as the renderers draw it
//! and `--output json` prints it, and the [`Header`] facts it is taken with.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::Row;
use super::{CircleState, lock, row};

/// The whole system at one moment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// Redis URL (password removed).
    pub redis_url: String,
    /// Whether we started that Redis.
    pub redis_managed: bool,
    /// Times the managed Redis was restarted after it died.
    pub redis_restarts: u32,
    /// Data directory.
    pub data_dir: String,
    /// The admin endpoint's URL (`http://ADDR`); `null` with `--admin off`.
    pub admin: Option<String>,
    /// `running`, `shutting down` or `stopped`.
    #[serde(deserialize_with = "row::known_name")]
    pub phase: &'static str,
    /// Seconds since the orchestrator started.
    pub uptime_secs: u64,
    /// One row per circle, in circles.json order.
    pub circles: Vec<Row>,
    /// The last reload of circles.json, if any.
    pub reload: Option<crate::reload::LastReload>,
    /// Whether the counters and gateways have been read once (or failed to
    /// be): until then a row's `Gateways` may miss this very process.
    #[serde(skip)]
    pub polled: bool,
}

/// Facts the header shows.
#[derive(Debug, Clone)]
pub struct Header {
    /// Redis URL (password removed).
    pub redis_url: String,
    /// Whether we started that Redis.
    pub redis_managed: bool,
    /// Data directory.
    pub data_dir: String,
    /// Where logs go, when not stderr.
    pub log_file: Option<String>,
    /// The admin endpoint's URL, when it is on.
    pub admin: Option<String>,
    /// Times the managed Redis was restarted after it died.
    pub redis_restarts: Arc<std::sync::atomic::AtomicU32>,
    /// When the orchestrator started.
    pub started: Instant,
    /// The last reload of circles.json, if any.
    pub reload: Arc<Mutex<Option<crate::reload::LastReload>>>,
}

#[cfg(test)]
impl Header {
    /// A header for the tests of what shows it: nothing reloaded yet, no
    /// admin endpoint, no log file.
    pub fn for_tests(redis_url: &str, redis_managed: bool, data_dir: &str) -> Header {
        Header {
            redis_url: redis_url.into(),
            redis_managed,
            data_dir: data_dir.into(),
            log_file: None,
            admin: None,
            redis_restarts: Arc::default(),
            started: Instant::now(),
            reload: Arc::default(),
        }
    }
}

/// Takes a snapshot of every circle.
pub fn snapshot(header: &Header, circles: &[Arc<CircleState>], phase: &'static str) -> Snapshot {
    Snapshot {
        redis_url: header.redis_url.clone(),
        redis_managed: header.redis_managed,
        redis_restarts: header
            .redis_restarts
            .load(std::sync::atomic::Ordering::Relaxed),
        data_dir: header.data_dir.clone(),
        admin: header.admin.clone(),
        phase,
        uptime_secs: header.started.elapsed().as_secs(),
        circles: circles.iter().map(|c| c.row()).collect(),
        reload: lock(&header.reload).clone(),
        polled: false,
    }
}
