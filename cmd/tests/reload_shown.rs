//! What a reload shows while and after it runs: a refused reload's message
//! as one clean line, a circle it adds in the status and the metrics as
//! soon as it serves.

mod common;

use std::time::Duration;

use common::tasks::queue_slow_tasks;
use common::{Orchestrator, Sandbox, port};

const RELOAD_DEADLINE: Duration = Duration::from_secs(30);

/// A field name is free text in the file: a reload refused for an unknown
/// field whose name holds a line feed and an escape sequence must still be
/// one line in plain output ("one line per change", DESIGN §6) and must not
/// send the escape sequence to the terminal (names are shown escaped for
/// that reason, `config::describe`).
#[test]
fn a_reload_refused_for_a_field_name_with_control_characters_prints_one_clean_line() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let p = port();
    let config = sandbox.circles(&[(1, "Alpha", p)]);
    let mut o = Orchestrator::start(&sandbox, &config, &redis.url(), &[]);
    o.wait_table();
    // JSON escapes: the decoded key is `po` ESC `[2J` `rt` LF `SECOND LINE`.
    std::fs::write(
        &config,
        format!(r#"[{{"id": 1, "name": "Alpha", "port": {p}, "po\u001b[2Jrt\nSECOND LINE": 1}}]"#),
    )
    .expect("write");
    o.signal("HUP");
    o.wait_stdout("reload failed", RELOAD_DEADLINE);
    o.wait_stdout("SECOND LINE", RELOAD_DEADLINE);
    let stdout = o.stdout();
    assert!(
        !stdout.contains('\u{1b}'),
        "an escape sequence of the file reached the terminal:\n{stdout:?}"
    );
    let line = stdout
        .lines()
        .find(|l| l.contains("reload failed"))
        .expect("the reload line");
    assert!(
        line.contains("SECOND LINE"),
        "the reload's message is split over lines:\n{stdout}"
    );
    assert!(o.stop().success());
}

/// README: a reload's added circle serves at once, while a removed one
/// drains (`--shutdown-grace` + 5 s). Meanwhile it serves clients, so the
/// status of every circle (`/api/status`, the table) and `/metrics` must
/// show it; the roster is swapped only once the whole reload ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_circle_serving_while_a_removed_one_drains_shows_in_the_status() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, b, g) = (port(), port(), port());
    let config = sandbox.circles(&[(1, "Alpha", a), (2, "Beta", b)]);
    let mut o = Orchestrator::start(
        &sandbox,
        &config,
        &redis.url(),
        &[
            "--admin",
            "127.0.0.1:0",
            "--shutdown-grace",
            "5s",
            "--max-operations",
            "100000000",
        ],
    );
    o.wait_table();
    let addr = common::http::admin_addr(&o.stdout());
    queue_slow_tasks(&redis, "beta", 30);
    let list = serde_json::json!([
        {"id": 1, "name": "Alpha", "port": a},
        {"id": 3, "name": "Gamma", "port": g},
    ]);
    std::fs::write(&config, list.to_string()).expect("write");
    o.signal("HUP");
    o.wait_stderr("reloading", RELOAD_DEADLINE);
    // Gamma answers while Beta still drains.
    let answered = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(Ok((mut ws, _))) = tokio::time::timeout(
                Duration::from_millis(500),
                tokio_tungstenite::connect_async(common::ws(g)),
            )
            .await
            {
                return common::output(&mut ws, "1").await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(answered.as_deref(), Ok("1"), "{}", o.stderr());
    // Give the status a few refreshes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !o.stdout().contains("reload applied"),
        "the drain ended first: {}",
        o.stdout()
    );
    let (snap, metrics) = tokio::task::spawn_blocking(move || {
        (
            common::http::get(addr, "/api/status", &[]).body,
            common::http::get(addr, "/metrics", &[]).body,
        )
    })
    .await
    .expect("asked");
    let snap: serde_json::Value = serde_json::from_str(&snap).expect("json");
    let names: Vec<&str> = snap["circles"]
        .as_array()
        .expect("circles")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(
        names.contains(&"Gamma"),
        "Gamma serves clients but /api/status lists only {names:?}"
    );
    assert!(
        metrics.contains("circles_circle_up{circle=\"Gamma\"} 1"),
        "Gamma serves but has no circles_circle_up:\n{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("circles_circle_up"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(o.stop().success(), "{}", o.stderr());
}
