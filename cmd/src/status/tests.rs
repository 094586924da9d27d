//! The rows a circle's state makes.

use super::*;

#[test]
fn urls_bracket_ipv6_hosts() {
    assert_eq!(ws_url("ws", "127.0.0.1", 8081), "ws://127.0.0.1:8081/ws");
    assert_eq!(ws_url("ws", "::1", 8081), "ws://[::1]:8081/ws");
    assert_eq!(ws_url("wss", "::1", 8081), "wss://[::1]:8081/ws");
}

/// Circle "A" (queue `a`), nothing running, nothing read.
fn state() -> CircleState {
    let cfg = CircleConfig {
        id: 1,
        name: "A".into(),
        port: 1,
        principals: Vec::new(),
        redis: None,
    };
    CircleState::new(cfg, "ws", "127.0.0.1")
}

#[test]
fn a_component_whose_task_ended_is_never_shown_running() {
    let state = state();
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
fn a_failed_read_of_the_counters_shows_the_last_ones_read() {
    let state = state();
    assert_eq!((state.row().processed, state.row().failed), (None, None));
    lock(&state.stats).read(Some(client::QueueStats {
        queue_len: 3,
        processed: 14,
        failed: 2,
        ..client::QueueStats::default()
    }));
    lock(&state.stats).read(None);
    let row = state.row();
    assert_eq!((row.processed, row.failed), (Some(14), Some(2)));
    assert_eq!(row.queue_len, None, "the queue's length is not known");
}

#[test]
fn a_circle_a_reload_could_not_start_shows_failed_saying_why_in_both_cells() {
    let why = "port 8093 is in use";
    let state = CircleState::new_not_started(state().config, "ws", "::1", why);
    let row = state.row();
    for (state, detail) in [
        (row.worker, &row.worker_detail),
        (row.server, &row.server_detail),
    ] {
        assert_eq!(state, "failed");
        assert_eq!(
            detail.as_deref(),
            Some("did not start: port 8093 is in use")
        );
    }
    assert!(!row.up() && row.settled() && state.never_started());
    assert_eq!((row.clients, row.url.as_str()), (0, "ws://[::1]:1/ws"));
    assert!(!self::state().never_started(), "a circle about to start");
}
