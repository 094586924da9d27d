//! The browser console at its edges, through the built binary and a real
//! headless Chromium: the playground's error position after characters a
//! JavaScript string counts twice, a picked circle that a reload removes, a
//! token that a reload revokes, an event stream the admin endpoint refuses
//! because it holds as many as it takes, many circles pushed to the page, a
//! browser that blocks the site's data or whose storage refuses every write,
//! and a run longer than a minute.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::browser::Browser;
use common::http::{admin_addr, start_with_admin, stream_from};
use common::{Orchestrator, Sandbox, port, sha256_hex};
use serde_json::{Value, json};

const WALT: &str = "console-edges-walt-token-3c8e1f5a7b2d";
const RITA: &str = "console-edges-rita-token-9d4b2e6f1a0c";

/// Rhai counts a script's columns in characters; a JavaScript string counts
/// an emoji as two. The cursor goes to the error's column in characters;
/// a run on a circle that a reload removed from the playground's list runs
/// nowhere else; a run with a token the reload revoked says the token was
/// refused.
#[test]
fn the_playground_marks_the_error_after_emoji_keeps_a_removed_pick_and_names_a_refused_token() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let ports = [port(), port(), port()];
    let vault = |name: &str, token: &str| {
        json!({"id": 3, "name": "Vault", "port": ports[2], "principals": [
            {"name": name, "token_sha256": sha256_hex(token), "role": "write"},
        ]})
    };
    let circles = json!([
        {"id": 1, "name": "Kitchen", "port": ports[0]},
        {"id": 2, "name": "Garden", "port": ports[1]},
        vault("walt", WALT),
    ]);
    let config = sandbox.write("circles.json", &circles.to_string());
    let (mut o, admin) = start_with_admin(&sandbox, &config, &redis, &[]);
    let reloaded = json!([
        {"id": 1, "name": "Kitchen", "port": ports[0]},
        vault("rita", RITA),
    ]);
    let seen = Browser::find().timeout(Duration::from_secs(90)).run(
        "console_playground_edges.py",
        json!({
            "url": format!("http://{admin}/"),
            "admin": format!("http://{admin}"),
            "config": config,
            "circles": 3,
            "open": 1,
            "removed": 2,
            "guarded": 3,
            "token": WALT,
            "unicode": "let s = \"😀😀\"; s + nope",
            "reloaded": reloaded.to_string(),
        }),
    );

    let unicode = &seen["unicode"];
    let error = unicode["error"].as_str().unwrap_or_default();
    assert!(error.contains("line 1, column 19"), "{unicode:#}");
    assert_eq!(
        unicode["selected"], "n",
        "the cursor is not on the error's column: {unicode:#}"
    );

    assert_eq!(seen["before"]["output"], "walt", "{seen:#}");
    assert_eq!(seen["reload_code"], 200, "{seen:#}");

    let removed = &seen["removed"];
    assert_eq!(
        removed["output"],
        Value::Null,
        "a run for the removed circle ran on another: {removed:#}"
    );
    assert!(
        removed["circle"]
            .as_str()
            .is_some_and(|c| c.starts_with("Garden") && c.contains("removed")),
        "{removed:#}"
    );
    assert!(
        removed["error"]
            .as_str()
            .is_some_and(|e| e.contains("removed")),
        "{removed:#}"
    );

    let revoked = &seen["revoked"];
    assert_eq!(revoked["state"], "failed", "{revoked:#}");
    assert!(
        revoked["error"]
            .as_str()
            .is_some_and(|e| e.contains("token") && e.contains("refused")),
        "a refused token is not named: {revoked:#}"
    );
    assert_eq!(seen["pageerrors"], json!([]), "{seen:#}");
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}

/// The admin endpoint answers a stream past its 64 with 503 and the reason:
/// the page says that reason instead of only "reconnecting", and is live
/// once a stream closes.
#[test]
fn the_console_says_why_its_event_stream_is_refused_and_is_live_once_there_is_room() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let config = sandbox.circles(&[(1, "Kitchen", port())]);
    let (mut o, admin) = start_with_admin(&sandbox, &config, &redis, &[]);
    // 32 a client address: two addresses hold the 64.
    let mut held: Vec<TcpStream> = [[127, 0, 0, 3], [127, 0, 0, 4]]
        .iter()
        .flat_map(|from| (0..32).map(move |_| stream_from(*from, admin)))
        .map(|(code, s)| {
            assert_eq!(code, 200);
            s
        })
        .collect();
    let release = sandbox.path().join("release");
    let browser = {
        let url = format!("http://{admin}/");
        let release = release.clone();
        std::thread::spawn(move || {
            Browser::find().timeout(Duration::from_secs(60)).run(
                "console_streams_full.py",
                json!({"url": url, "release": release}),
            )
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !release.exists() && !browser.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the page never read its indicator"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    held.pop();
    let seen = browser.join().expect("the browser script");
    let refused = seen["refused"].as_str().unwrap_or_default();
    assert!(
        refused.contains("too many event streams open"),
        "the page does not say why it gets no updates: {seen:#}"
    );
    assert_eq!(seen["after"], "live", "{seen:#}");
    drop(held);
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}

/// Many circles, each event pushed to the page: text an operator selects in
/// the table (a URL to copy) stays selected while events come, as no cell
/// whose text is the same is written again; a chart is drawn when it gets
/// a sample (or a new name), not at every event.
#[test]
fn with_many_circles_a_selection_in_the_table_survives_the_events_and_charts_draw_per_sample() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let count = 60;
    let circles: Vec<Value> = (1..=count)
        .map(|id| json!({"id": id, "name": format!("Circle {id}"), "port": port()}))
        .collect();
    let config = sandbox.write("circles.json", &Value::from(circles.clone()).to_string());
    let (mut o, admin) = start_with_admin(&sandbox, &config, &redis, &[]);
    let seen = Browser::find().timeout(Duration::from_secs(60)).run(
        "console_many.py",
        json!({"url": format!("http://{admin}/"), "circles": count, "circle": 7}),
    );
    let ids: Vec<u64> = (1..=count).collect();
    assert_eq!(seen["ids"], json!(ids), "{seen:#}");
    let url = circles[6]["port"].as_u64().map(|p| common::ws(p as u16));
    assert_eq!(seen["selected_before"], json!(url), "{seen:#}");
    assert_eq!(
        seen["selected_after"], seen["selected_before"],
        "the events took the operator's selection away"
    );
    for chart in seen["charts"].as_array().expect("charts") {
        let (draws, points) = (chart["draws"].as_u64(), chart["points"].as_u64());
        assert!(
            draws.zip(points).is_some_and(|(d, p)| d <= p + 1),
            "a chart drawn more often than it got samples: {chart}"
        );
    }
    assert_eq!(seen["pageerrors"], json!([]), "{seen:#}");
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}

/// A browser set to block the site's data throws on every read of
/// `sessionStorage` and `localStorage`: the console still asks for the
/// admin token once, shows the table, runs a script and lists the run (for
/// the page's life).
#[test]
fn the_console_works_in_a_browser_that_blocks_site_data() {
    let seen = console_without_storage(json!({"block_site_data": true}));
    assert_eq!(seen["storage"], "SecurityError", "{seen:#}");
}

/// A storage that reads but refuses every write (`setItem` throws
/// `QuotaExceededError`: a quota of nothing): the token typed once is sent
/// on every request, not read back from the storage that holds nothing and
/// asked for again, and the history shows the run.
#[test]
fn the_console_works_in_a_browser_whose_storage_refuses_every_write() {
    let seen = console_without_storage(json!({"refuse_writes": true}));
    assert_eq!(seen["storage"], "readable", "{seen:#}");
}

/// The console on an admin endpoint that needs its token, in a browser
/// `how` sets up (`console_no_storage.py`): the token asked for once, the
/// table, a run and its history, no page error. What the script saw.
fn console_without_storage(how: Value) -> Value {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let config = sandbox.circles(&[(1, "Kitchen", port()), (2, "Garden", port())]);
    let token = "console-edges-admin-token-6e2f9a1c4b7d";
    let mut o = Orchestrator::start(
        &sandbox,
        &config,
        &redis.url(),
        &[
            "--admin",
            "127.0.0.1:0",
            "--admin-token-sha256",
            &sha256_hex(token),
        ],
    );
    o.wait_table();
    let admin = admin_addr(&o.stdout());
    let mut job = json!({
        "url": format!("http://{admin}/"),
        "token": token,
        "circles": 2,
        "circle": 1,
        "action_timeout_s": 8,
    });
    for (key, value) in how.as_object().expect("an object") {
        job[key] = value.clone();
    }
    let seen = Browser::find()
        .timeout(Duration::from_secs(60))
        .run("console_no_storage.py", job);
    assert_eq!(seen["rows"], 2, "no table without storage: {seen:#}");
    assert_eq!(seen["stream"], "live", "{seen:#}");
    assert_eq!(seen["dialogs"], 1, "the token is asked for once: {seen:#}");
    assert_eq!(seen["run"]["output"], "42", "{seen:#}");
    let history = seen["history"].as_array().expect("history");
    assert!(
        history.len() == 1 && history[0].as_str().is_some_and(|h| h.contains("40 + 2")),
        "{seen:#}"
    );
    assert_eq!(seen["pageerrors"], json!([]), "{seen:#}");
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
    seen
}

/// The orchestrator waits `--task-timeout` for a run's result and answers
/// within it: a run longer than a minute shows its output in the console
/// (the page sets no shorter deadline of its own), and Cancel ends a run
/// (closing its connection cancels the script: the circle is free again).
#[test]
fn the_playground_waits_for_a_run_longer_than_a_minute_and_cancel_ends_a_run() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let config = sandbox.circles(&[(1, "Kitchen", port())]);
    let mut o = Orchestrator::start(
        &sandbox,
        &config,
        &redis.url(),
        &[
            "--admin",
            "127.0.0.1:0",
            "--task-timeout",
            "3m",
            "--script-timeout",
            "2m",
            "--max-operations",
            "1000000000000",
        ],
    );
    o.wait_table();
    let admin = admin_addr(&o.stdout());
    let seen = Browser::find().timeout(Duration::from_secs(150)).run(
        "console_long_run.py",
        json!({
            "url": format!("http://{admin}/"),
            "circles": 1,
            "circle": 1,
            "long": "let t = timestamp(); while t.elapsed < 62.0 {} 42",
            "endless": "let t = timestamp(); while t.elapsed < 110.0 {} 0",
            "wait_s": 120,
        }),
    );
    assert_eq!(
        seen["long"]["output"], "42",
        "the console gave up on a run the orchestrator still waited for: {seen:#}"
    );
    assert_eq!(seen["cancel_while_running"], true, "{seen:#}");
    assert_eq!(seen["cancelled"]["state"], "cancelled", "{seen:#}");
    assert_eq!(seen["cancelled"]["cancel_shown"], false, "{seen:#}");
    assert_eq!(seen["after"]["output"], "42", "{seen:#}");
    assert_eq!(seen["pageerrors"], json!([]), "{seen:#}");
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}

/// A console reached at an address that is not loopback (here through a
/// proxy, as a page at `http://192.0.2.77:PORT`) is a foreign origin to the
/// circles, which refuse its runs unless `--allowed-origin` names it: the
/// page's error says so, naming the option and its origin.
#[test]
fn a_run_from_a_console_at_a_non_loopback_origin_names_the_allowed_origin_it_needs() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let config = sandbox.circles(&[(1, "Kitchen", port())]);
    let (mut o, admin) = start_with_admin(&sandbox, &config, &redis, &[]);
    let origin = format!("http://192.0.2.77:{}", admin.port());
    let seen = Browser::find()
        .chromium_arg(format!("--proxy-server=http://{admin}"))
        .timeout(Duration::from_secs(60))
        .run(
            "console_foreign_origin.py",
            json!({"url": format!("{origin}/"), "circles": 1, "circle": 1}),
        );
    assert_eq!(seen["origin"], origin, "{seen:#}");
    assert_eq!(seen["run"]["state"], "failed", "{seen:#}");
    let error = seen["run"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("--allowed-origin {origin}")),
        "the page does not say why the circle refuses it: {seen:#}"
    );
    assert_eq!(seen["pageerrors"], json!([]), "{seen:#}");
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}
