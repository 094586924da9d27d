//! The admin endpoint's browser console, through the built binary and a real
//! headless Chromium (Debian's, driven by Playwright): the live table shows
//! every circle, the playground runs scripts through each circle's own
//! WebSocket (by click and by Ctrl+Enter, with a typed token for a protected
//! circle), a failing script marks its line, the chart draws points, the
//! history restores a script, the keyboard alone reaches the editor and runs,
//! and a narrow screen does not overflow. With an admin token the page opens
//! without it, asks for it, and then shows the table. `/api/events`, the stream the table
//! follows, is checked raw: server-sent events of one shared snapshot, the
//! admin endpoint's access rules, and a shutdown that an open stream does not
//! hold up.
//!
//! With `CIRCLES_SCREENSHOT_DIR` set, the screenshot of the console goes to
//! `$CIRCLES_SCREENSHOT_DIR/console.png` (the README's `docs/console.png`
//! comes from `CIRCLES_SCREENSHOT_DIR=docs`); else into the test's sandbox.

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::browser::Browser;
use common::http::admin_addr;
use common::{Orchestrator, Sandbox, port, sha256_hex};
use serde_json::{Value, json};

const WRITER: &str = "console-writer-token-5d1c8e7a2b9f";
/// The admin endpoint's token in the test with one.
const ADMIN_TOKEN: &str = "console-admin-token-9a4e1f07c3b2";

/// Where the screenshot goes, when not into the sandbox.
const SCREENSHOT_DIR_ENV: &str = "CIRCLES_SCREENSHOT_DIR";

struct Running {
    sandbox: Sandbox,
    _redis: testkit::RedisServer,
    orchestrator: Orchestrator,
    admin: SocketAddr,
    ports: [u16; 3],
}

/// Three circles, the third protected (walt may write), and the admin
/// endpoint on a free loopback port.
fn serve() -> Running {
    serve_with(&[])
}

/// [`serve`] with `extra` options.
fn serve_with(extra: &[&str]) -> Running {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let ports = [port(), port(), port()];
    let circles = json!([
        {"id": 1, "name": "Kitchen", "port": ports[0]},
        {"id": 2, "name": "Garden", "port": ports[1]},
        {"id": 3, "name": "Vault", "port": ports[2], "principals": [
            {"name": "walt", "token_sha256": sha256_hex(WRITER), "role": "write"},
        ]},
    ]);
    let config = sandbox.write("circles.json", &circles.to_string());
    let mut args = vec!["--admin", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut orchestrator = Orchestrator::start(&sandbox, &config, &redis.url(), &args);
    orchestrator.wait_table();
    let admin = admin_addr(&orchestrator.stdout());
    Running {
        sandbox,
        _redis: redis,
        orchestrator,
        admin,
        ports,
    }
}

#[test]
fn the_browser_console_shows_every_circle_runs_scripts_marks_errors_and_charts_the_work() {
    let mut run = serve();
    let shot = match std::env::var_os(SCREENSHOT_DIR_ENV) {
        Some(dir) => {
            std::fs::create_dir_all(&dir).expect("create the screenshot folder");
            PathBuf::from(dir).join("console.png")
        }
        None => run.sandbox.path().join("console.png"),
    };
    let seen = Browser::find().timeout(Duration::from_secs(90)).run(
        "admin_console.py",
        json!({
            "url": format!("http://{}/", run.admin),
            "circles": 3,
            "open": {"id": 1, "name": "Kitchen"},
            "guarded": {"id": 3, "name": "Vault"},
            "token": WRITER,
            "screenshot": shot,
        }),
    );

    // Every circle's row, with its name and its own WebSocket URL.
    let rows = seen["rows"].as_array().expect("rows");
    let names: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["Kitchen", "Garden", "Vault"], "{seen:#}");
    for (row, port) in rows.iter().zip(run.ports) {
        assert_eq!(row["url"], common::ws(port), "{row:#}");
        assert_eq!(row["worker"], "running", "{row:#}");
    }
    assert_eq!(rows[0]["queue"], "rhai_tasks:kitchen", "{seen:#}");
    assert_eq!(rows[2]["access"], "1 principal", "{seen:#}");
    assert_eq!(seen["header_phase"], "running");

    // A script run by click: its output, what it printed, its run time.
    let clicked = &seen["clicked"];
    assert_eq!(clicked["state"], "done", "{clicked:#}");
    assert_eq!(clicked["output"], "42", "{clicked:#}");
    assert_eq!(clicked["printed"], "hello from the console", "{clicked:#}");
    assert_eq!(clicked["error"], Value::Null, "{clicked:#}");
    let timing = clicked["timing"].as_str().unwrap_or_default();
    assert!(
        timing.contains("ran ") && timing.contains("round trip"),
        "{clicked:#}"
    );
    // And by Ctrl+Enter.
    assert_eq!(seen["ctrl_enter"]["output"], "54", "{seen:#}");

    // A script failing on line 2: the error names line 2 and the gutter
    // marks it (and only it).
    let failing = &seen["failing"];
    assert_eq!(failing["state"], "error", "{failing:#}");
    let error = failing["error"].as_str().unwrap_or_default();
    assert!(error.contains("-32000"), "{failing:#}");
    assert!(error.contains("line 2, column"), "{failing:#}");
    assert!(error.contains("no_such_variable"), "{failing:#}");
    assert_eq!(failing["error_lines"], json!(["2"]), "{failing:#}");
    assert_eq!(failing["output"], Value::Null, "{failing:#}");

    // The chart of the circle that ran them draws points showing the work.
    let chart = &seen["chart"];
    assert!(chart["busy"].as_u64().unwrap_or(0) > 0, "{seen:#}");
    assert!(chart["points"].as_u64().unwrap_or(0) > 0, "{seen:#}");
    assert!(
        chart["label"]
            .as_str()
            .is_some_and(|l| l.starts_with("Kitchen: ")),
        "{seen:#}"
    );

    // The protected circle: no token, no answer; with walt's token, as walt.
    let refused = &seen["guarded_no_token"];
    assert_eq!(refused["state"], "failed", "{refused:#}");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("this circle needs a token")),
        "{refused:#}"
    );
    assert_eq!(seen["guarded_token"]["output"], "walt", "{seen:#}");

    // The history lists the runs, newest first; a click restores one.
    let history = seen["history"].as_array().expect("history");
    assert!(history.len() >= 8, "{seen:#}");
    assert!(
        history[0].as_str().is_some_and(|h| h.contains("Vault")),
        "{seen:#}"
    );
    let restored = &seen["restored"];
    assert_eq!(
        restored["script"], "let x = 40;\nprint(\"hello from the console\");\nx + 2",
        "{restored:#}"
    );
    assert_eq!(restored["circle"], "1", "{restored:#}");
    assert_eq!(restored["focused"], "script", "{restored:#}");

    // The keyboard alone: Tab reaches the editor, typing and Ctrl+Enter run.
    assert_eq!(seen["keyboard_focus"], "script", "{seen:#}");
    let keyboard = &seen["keyboard"];
    assert_eq!(keyboard["output"], "10", "{keyboard:#}");
    assert_eq!(keyboard["printed"], "sum 10", "{keyboard:#}");
    // Escape then Tab leaves the editor: the keyboard is never trapped.
    assert_ne!(seen["after_escape_tab"], "script", "{seen:#}");
    // A row's Play button selects its circle and puts the cursor in the editor.
    assert_eq!(
        seen["play_button"],
        json!({"circle": "3", "focused": "script"})
    );

    // The table follows the counters: Kitchen ran 7 scripts (6 done, 1
    // failed) before it was read; Vault ran walt's one.
    let processed = &seen["processed"];
    assert_eq!(processed[0]["name"], "Kitchen", "{processed:#}");
    assert_eq!(processed[0]["failed"], "1", "{processed:#}");
    assert!(
        processed[0]["processed"]
            .as_str()
            .and_then(|p| p.parse::<u64>().ok())
            .is_some_and(|p| p >= 6),
        "{processed:#}"
    );
    assert_eq!(processed[2]["processed"], "1", "{processed:#}");

    // The screenshot, taken with the table and the chart filled.
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(seen["chart_at_screenshot"]["busy"].as_u64().unwrap_or(0) > 0);

    // 390 px wide: the page does not scroll sideways; the table scrolls
    // inside its own box.
    let narrow = &seen["narrow"];
    assert_eq!(narrow["viewport"], 390, "{narrow:#}");
    assert!(
        narrow["document"].as_u64() <= narrow["viewport"].as_u64(),
        "{narrow:#}"
    );
    assert!(
        narrow["body"].as_u64() <= narrow["viewport"].as_u64(),
        "{narrow:#}"
    );
    assert_eq!(narrow["table_box_scrolls"], "auto", "{narrow:#}");

    // No script error on the page.
    let console = seen["console"].as_array().expect("console lines");
    assert!(
        !console
            .iter()
            .any(|l| l.as_str().is_some_and(|l| l.starts_with("pageerror"))),
        "{seen:#}"
    );
    assert_eq!(run.orchestrator.stop().code(), Some(0));
}

#[test]
fn with_an_admin_token_the_console_page_opens_asks_for_the_token_and_then_shows_the_table() {
    let mut run = serve_with(&["--admin-token-sha256", &sha256_hex(ADMIN_TOKEN)]);
    let seen = Browser::find().timeout(Duration::from_secs(60)).run(
        "admin_console_token.py",
        json!({
            "url": format!("http://{}/", run.admin),
            "token": ADMIN_TOKEN,
            "circles": 3,
        }),
    );

    // Asked, given a wrong token, asked again saying so, given the right one.
    let dialogs = seen["dialogs"].as_array().expect("dialogs");
    assert_eq!(dialogs.len(), 2, "{seen:#}");
    assert!(dialogs.iter().all(|d| d["type"] == "prompt"), "{seen:#}");
    let first = dialogs[0]["message"].as_str().unwrap_or_default();
    assert!(first.contains("admin token"), "{seen:#}");
    assert!(!first.contains("refused"), "{seen:#}");
    let second = dialogs[1]["message"].as_str().unwrap_or_default();
    assert!(second.contains("refused"), "{seen:#}");
    // Then the table, and the token kept for the tab only.
    assert_eq!(
        seen["names"],
        json!(["Kitchen", "Garden", "Vault"]),
        "{seen:#}"
    );
    assert_eq!(seen["stored"], ADMIN_TOKEN, "{seen:#}");
    assert_eq!(seen["dialogs_after_reload"], 2, "a reload asks nothing");

    // A dismissed prompt: asked once, no data, the page says why.
    let dismissed = &seen["dismissed"];
    assert_eq!(dismissed["dialogs"], 1, "{dismissed:#}");
    assert_eq!(dismissed["rows"], 0, "{dismissed:#}");
    assert!(
        dismissed["stream"]
            .as_str()
            .is_some_and(|s| s.contains("admin token needed")),
        "{dismissed:#}"
    );
    assert_eq!(seen["console"], json!([]), "{seen:#}");
    assert_eq!(run.orchestrator.stop().code(), Some(0));
}

/// A `GET path` at `addr` left open: the answer's head and the reader on
/// its body.
fn open_stream(addr: SocketAddr, path: &str, headers: &[&str]) -> (String, BufReader<TcpStream>) {
    let mut stream = TcpStream::connect(addr).expect("connect to the admin endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).expect("read the head");
        head.push_str(&line);
        if n == 0 || line == "\r\n" {
            break;
        }
    }
    (head, reader)
}

/// The next server-sent event's data on `body` (chunked transfer framing
/// skipped), parsed.
fn next_event(body: &mut BufReader<TcpStream>) -> Value {
    loop {
        let mut line = String::new();
        let n = body.read_line(&mut line).expect("read an event");
        assert!(n > 0, "the stream ended");
        if let Some(data) = line.trim_end().strip_prefix("data: ") {
            return serde_json::from_str(data).expect("an event's data is JSON");
        }
    }
}

#[test]
fn api_events_pushes_the_snapshot_with_latency_totals_and_ends_at_shutdown() {
    let mut run = serve();

    // A foreign page may not follow it.
    let (head, _) = open_stream(
        run.admin,
        "/api/events",
        &["Origin: https://evil.example", "Connection: close"],
    );
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");

    let (head, mut body) = open_stream(run.admin, "/api/events", &[]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );
    let first = next_event(&mut body);
    let circles = first["circles"].as_array().expect("circles");
    assert_eq!(circles.len(), 3, "{first:#}");
    assert_eq!(circles[0]["name"], "Kitchen", "{first:#}");
    assert_eq!(circles[0]["latency_count"], 0, "{first:#}");
    assert_eq!(circles[0]["latency_sum_seconds"], 0.0, "{first:#}");

    // A task through the circle moves its end-to-end totals in a later event,
    // and events keep coming while nothing else changes.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let reply = rt.block_on(async {
        let mut ws = common::connect(run.ports[0]).await;
        common::play(&mut ws, 1, "40 + 2").await
    });
    assert_eq!(reply["result"]["output"], "42", "{reply:#}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let moved = loop {
        let event = next_event(&mut body);
        if event["circles"][0]["latency_count"] == 1 {
            break event;
        }
        assert!(
            Instant::now() < deadline,
            "no event counted the task: {event:#}"
        );
    };
    let sum = moved["circles"][0]["latency_sum_seconds"]
        .as_f64()
        .expect("a sum");
    assert!(sum > 0.0, "{moved:#}");
    let (a, b) = (next_event(&mut body), next_event(&mut body));
    assert!(a["circles"].is_array() && b["circles"].is_array());

    // An open stream does not hold up the shutdown; the stream ends.
    let asked = Instant::now();
    assert_eq!(run.orchestrator.stop().code(), Some(0));
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
    let mut rest = Vec::new();
    let _ = body.read_to_end(&mut rest);
}

/// The console across reloads: a renamed circle's name reaches the
/// playground's circle list (not only the table), the rows follow a
/// reordered file (as the snapshot's do), and a reload refused for
/// an invalid file shows in the page's header, as it does in the terminal
/// table's header and in every snapshot's `"reload"`.
#[test]
fn the_console_follows_a_renamed_circle_in_its_circle_list_and_shows_a_refused_reload() {
    let mut run = serve();
    let renamed = json!([
        {"id": 1, "name": "Kitchen", "port": run.ports[0]},
        {"id": 2, "name": "Orchard", "port": run.ports[1]},
        {"id": 3, "name": "Vault", "port": run.ports[2], "principals": [
            {"name": "walt", "token_sha256": sha256_hex(WRITER), "role": "write"},
        ]},
    ]);
    let mut reordered = renamed.clone();
    reordered.as_array_mut().expect("an array").reverse();
    let seen = Browser::find().timeout(Duration::from_secs(90)).run(
        "console_reload.py",
        json!({
            "url": format!("http://{}/", run.admin),
            "admin": format!("http://{}", run.admin),
            "config": run.sandbox.path().join("circles.json"),
            "renamed": renamed.to_string(),
            "reordered": reordered.to_string(),
            "invalid": "[{\"id\": 1, \"name\": \"Kitchen\"",
            "circles": 3,
        }),
    );
    assert_eq!(seen["renamed_code"], 200, "{seen:#}");
    assert_eq!(
        seen["names_after_rename"],
        json!(["Kitchen", "Orchard", "Vault"]),
        "{seen:#}"
    );
    let options = seen["options_after_rename"].as_array().expect("options");
    assert!(
        options
            .iter()
            .any(|o| o.as_str().is_some_and(|o| o.starts_with("Orchard (2)"))),
        "the playground still lists circle 2 under its old name: {seen:#}"
    );
    assert_eq!(seen["reordered_code"], 200, "{seen:#}");
    assert_eq!(
        seen["snapshot_order"],
        json!(["Vault", "Orchard", "Kitchen"]),
        "{seen:#}"
    );
    assert_eq!(
        seen["names_after_reorder"], seen["snapshot_order"],
        "the console's rows do not follow the file's order: {seen:#}"
    );
    assert_eq!(seen["invalid_code"], 422, "{seen:#}");
    assert!(
        seen["reload_error_shown"]
            .as_str()
            .is_some_and(|s| s.contains("reload failed") && s.contains("circles.json")),
        "the refused reload does not show in the console: {seen:#}"
    );
    assert_eq!(seen["pageerrors"], json!([]), "{seen:#}");
    assert_eq!(run.orchestrator.stop().code(), Some(0));
}

/// Events come at least once a second: a stream that stays open but
/// carries nothing more (the orchestrator stopped by SIGSTOP, a proxy or a
/// link that hangs) is not shown as live; the page says it is reconnecting,
/// shows no phase of now and says its rows are out of date, and is live
/// again once events come.
#[test]
fn a_stalled_event_stream_is_not_shown_as_live() {
    let mut run = serve();
    let seen = Browser::find().timeout(Duration::from_secs(60)).run(
        "console_stalled.py",
        json!({
            "url": format!("http://{}/", run.admin),
            "pid": run.orchestrator.pid(),
            "circles": 3,
        }),
    );
    assert_eq!(seen["before"], "live", "{seen:#}");
    assert_ne!(
        seen["stalled"], "live",
        "no event for 6 s, and the page still says live: {seen:#}"
    );
    // The rows and the phase are the last ones pushed: not shown as now.
    assert_ne!(seen["stalled_phase"], "running", "{seen:#}");
    assert!(
        seen["stalled_note"]
            .as_str()
            .is_some_and(|n| n.contains("not updated since")),
        "the table does not say it is out of date: {seen:#}"
    );
    assert_eq!(seen["after"], "live", "{seen:#}");
    assert_eq!(seen["after_phase"], "running", "{seen:#}");
    assert_eq!(seen["after_note"], Value::Null, "{seen:#}");
    assert_eq!(run.orchestrator.stop().code(), Some(0));
}
