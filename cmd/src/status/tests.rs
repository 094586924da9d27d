//! Tests of the status rows.
use super::*;

#[test]
fn urls_bracket_ipv6_hosts() {
    assert_eq!(ws_url("ws", "127.0.0.1", 8081), "ws://127.0.0.1:8081/ws");
    assert_eq!(ws_url("ws", "::1", 8081), "ws://[::1]:8081/ws");
    assert_eq!(ws_url("wss", "::1", 8081), "wss://[::1]:8081/ws");
}

#[test]
fn a_component_whose_task_ended_is_never_shown_running() {
    let cfg = CircleConfig {
        id: 1,
        name: "A".into(),
        port: 1,
        principals: Vec::new(),
    };
    let state = CircleState {
        queue: "a".into(),
        queue_key: client::keys::tasks("a"),
        url: ws_url("ws", "127.0.0.1", 1),
        config: cfg,
        worker: Arc::new(Mutex::new(Slot::new())),
        server: Arc::new(Mutex::new(Slot::new())),
        stats: Mutex::new(Stats::default()),
        task_metrics: None,
        db: None,
        sight: None,
        gateways: Mutex::new(None),
    };
    lock(&state.server).phase = Phase::Restarting("boom".into());
    lock(&state.worker).phase = Phase::Restarting("lost".into());
    let row = state.row();
    assert_eq!(row.server, "restarting");
    assert_eq!(row.server_detail.as_deref(), Some("boom"));
    assert_eq!(row.worker, "restarting");
    assert_eq!(row.uptime_secs, 0);
    assert!(!row.up());
    lock(&state.worker).phase = Phase::NotHere("gateway");
    let row = state.row();
    assert_eq!(row.worker, NOT_HERE);
    assert_eq!(row.worker_detail.as_deref(), Some("role gateway"));
    assert!(!row.up(), "the server still restarts");
    lock(&state.server).phase = Phase::Alive;
    assert!(
        state.row().up(),
        "a gateway's circle is up when its server runs"
    );
}

#[test]
fn a_gateway_row_says_whether_a_live_worker_is_seen_and_lists_the_gateways() {
    let cfg = CircleConfig {
        id: 4,
        name: "Gw".into(),
        port: 1,
        principals: Vec::new(),
    };
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
    sight.record(true, Instant::now());
    let row = state.row();
    assert_eq!(row.worker_live, Some(true));
    assert_eq!(
        row.worker_detail.as_deref(),
        Some("role gateway; live worker seen")
    );
    let later = Instant::now() + Duration::from_millis(60);
    sight.record(false, later);
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
