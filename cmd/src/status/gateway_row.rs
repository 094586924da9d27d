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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::config::CircleConfig;
    use crate::status::{CircleState, Phase, lock};

    #[test]
    fn a_gateway_row_says_whether_a_live_worker_is_seen_and_lists_the_gateways() {
        let cfg = CircleConfig {
            id: 4,
            name: "Gw".into(),
            port: 1,
            principals: Vec::new(),
            redis: None,
        };
        // Looked, none seen yet: within the start's dead time neither live
        // nor gone.
        let waiting = server_ws::WorkerSight::new(4, Duration::from_secs(600));
        let state = CircleState::new(cfg.clone(), "ws", "127.0.0.1").with_sight(waiting.clone());
        lock(&state.worker).phase = Phase::NotHere("gateway");
        waiting.record(None, Instant::now());
        let row = state.row();
        assert_eq!(
            row.worker_detail.as_deref(),
            Some("role gateway; no worker seen yet")
        );
        assert_eq!(row.worker_live, None);

        let sight = server_ws::WorkerSight::new(4, Duration::from_millis(50));
        let state = CircleState::new(cfg, "ws", "127.0.0.1").with_sight(sight.clone());
        lock(&state.worker).phase = Phase::NotHere("gateway");
        lock(&state.server).phase = Phase::Alive;
        let row = state.row();
        assert_eq!(
            row.worker_detail.as_deref(),
            Some("role gateway"),
            "unknown yet"
        );
        assert_eq!((row.worker_live, row.gateway_count), (None, None));
        sight.record(Some(Duration::from_millis(50)), Instant::now());
        let row = state.row();
        assert_eq!(row.worker_live, Some(true));
        assert_eq!(
            row.worker_detail.as_deref(),
            Some("role gateway; live worker seen")
        );
        // With the stats' lease read, the worker's process and machine.
        lock(&state.stats).latest = Some(client::QueueStats {
            lease: Some(client::Lease {
                token: 3,
                pid: 4242,
                host: "worker-box/0123abcd".into(),
                dir: "/srv/circles/4".into(),
            }),
            ..client::QueueStats::default()
        });
        assert_eq!(
            state.row().worker_detail.as_deref(),
            Some("role gateway; live worker seen: pid 4242 on worker-box")
        );
        // A beat Redis did not answer: nothing is known of the worker now.
        sight.record_failure("redis at redis://h:1 is unavailable: refused".into());
        let row = state.row();
        assert_eq!(
            row.worker_detail.as_deref(),
            Some("role gateway; redis unreachable: redis at redis://h:1 is unavailable: refused")
        );
        assert_eq!(row.worker_live, None);
        sight.record(Some(Duration::from_millis(50)), Instant::now());
        assert_eq!(state.row().worker_live, Some(true));
        let later = Instant::now() + Duration::from_millis(60);
        sight.record(None, later);
        // Seen 60 ms before `later`, looked at `later`: gone by then.
        let deadline = Instant::now() + Duration::from_secs(10);
        while state.row().worker_live != Some(false) {
            assert!(Instant::now() < deadline, "{:?}", state.row());
            std::thread::sleep(Duration::from_millis(5));
        }
        let row = state.row();
        assert_eq!(
            row.worker_detail.as_deref(),
            Some("role gateway; no live worker")
        );
        assert!(row.up(), "the circle's endpoint still serves");
        *lock(&state.gateways) = Some(vec![client::Gateway {
            id: "g1".into(),
            pid: Some(9),
            host: "box".into(),
            url: "ws://127.0.0.1:1/ws".into(),
        }]);
        let row = state.row();
        assert_eq!(row.gateway_count, Some(1));
        let json = serde_json::to_value(&row).expect("encodes");
        assert_eq!(json["worker_live"], false);
        assert_eq!(json["gateways"][0]["host"], "box");
        assert_eq!(json["gateways"][0]["url"], "ws://127.0.0.1:1/ws");
        assert_eq!(json["gateways"][0]["pid"], 9);
    }
}
