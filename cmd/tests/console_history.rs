//! The browser console through the built binary and a real headless
//! Chromium: its run history ("The last 30 runs are kept in the browser",
//! README) and its table's columns against the status table's.

mod common;

use std::time::Duration;

use common::browser::Browser;
use common::http::start_with_admin;
use common::{Sandbox, port};
use serde_json::json;

/// A run's output may be 1 MiB (README, "Limits"). The history keeps each
/// run's whole output in localStorage although it shows 40 characters of
/// it: a few large outputs fill the browser's quota, every later save
/// fails (silently), and the runs made after that never appear in the
/// history: the newest shown is an old one.
#[test]
fn the_newest_run_is_in_the_history_also_after_runs_with_large_outputs() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let config = sandbox.write(
        "circles.json",
        &json!([{"id": 1, "name": "Kitchen", "port": port()}]).to_string(),
    );
    let (mut o, admin) = start_with_admin(&sandbox, &config, &redis, &[]);
    // 10 × 2^16 = 655360 characters, under the 1 MiB output limit.
    let big = r#"let s = "xxxxxxxxxx"; for i in 0..16 { s += s; } s"#;
    let last_big = r#"let s = "yyyyyyyyyy"; for i in 0..16 { s += s; } s"#;
    let runs = 12;
    let seen = Browser::find().timeout(Duration::from_secs(150)).run(
        "console_history_quota.py",
        json!({
            "url": format!("http://{admin}/"),
            "circle": 1,
            "big": big,
            "runs": runs,
            "last_big": last_big,
            "small": "40 + 2",
            "circles": 1,
            "timeout_s": 140,
        }),
    );
    let states = seen["states"].as_array().expect("states");
    assert!(
        states.iter().all(|s| s == "done"),
        "every run answered: {seen:#}"
    );
    let history: Vec<&str> = seen["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h.as_str().unwrap_or_default())
        .collect();
    let stored = &seen["stored_chars"];
    assert!(
        history.len() >= 2 && history[0].contains("40 + 2") && history[1].contains("yyyyyyyyyy"),
        "the two newest runs are not the first two of the history ({} runs kept of {}; \
         localStorage holds {stored} characters of whole outputs): {:?}",
        history.len(),
        runs + 2,
        history
            .iter()
            .map(|h| h.chars().take(50).collect::<String>())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        history.len(),
        runs + 2,
        "the last 30 runs are kept; {stored} characters stored"
    );
    assert_eq!(o.stop().code(), Some(0));
}

/// The console's table shows the figures of the status table and of
/// `/api/status`: the same columns in the same order (DESIGN §6: the five
/// fixed ones, then the extras), `Gateways` (how many processes serve the
/// circle's endpoint, what tells a scale-out set-up apart) included.
#[test]
fn the_console_table_has_the_columns_of_the_status_table_and_the_gateways_of_api_status() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let config = sandbox.write(
        "circles.json",
        &json!([
            {"id": 1, "name": "Kitchen", "port": port()},
            {"id": 2, "name": "Garden", "port": port()},
        ])
        .to_string(),
    );
    let (mut o, admin) = start_with_admin(&sandbox, &config, &redis, &[]);
    let seen = Browser::find().timeout(Duration::from_secs(60)).run(
        "console_columns.py",
        json!({"url": format!("http://{admin}/"), "circles": 2}),
    );
    // The status table's columns (render::table::COLUMNS), as `plain` prints them.
    let out = o.stdout();
    let header = out
        .lines()
        .find(|l| l.contains("Circle Name"))
        .expect("the plain table's header");
    let columns: Vec<&str> = header
        .split('|')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let heads: Vec<&str> = seen["heads"]
        .as_array()
        .expect("heads")
        .iter()
        .map(|h| h.as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        heads[..columns.len().min(heads.len())],
        columns[..],
        "the console's columns are not the status table's: {heads:?}"
    );
    for circle in seen["status"]["circles"].as_array().expect("circles") {
        let id = circle["id"].to_string();
        let row = &seen["rows"][&id];
        assert_eq!(
            row["Gateways"].as_str(),
            Some(circle["gateway_count"].to_string().as_str()),
            "circle {id}'s Gateways in the console: {row:#}"
        );
    }
    assert_eq!(o.stop().code(), Some(0));
}
