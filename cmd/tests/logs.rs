//! `--log-format json`: every log line of the built binary is one JSON object
//! with timestamp, level, target and message, and the lines about a task
//! carry its id (and the circle's name or queue) as fields.

mod common;

use std::time::{Duration, Instant};

use common::{Orchestrator, Sandbox, connect, play, port, run_to_end};
use serde_json::Value;

/// Every stderr line parsed as JSON; panics naming the first that is not.
fn json_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {l}\n{stderr}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_and_a_tasks_lines_carry_its_id() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let p = port();
    let config = sandbox.circles(&[(1, "Alpha Circle", p)]);
    let mut cmd = sandbox.serve_command(&config, &redis.url(), &sandbox.data_dir());
    cmd.args(["--log-format", "json"])
        .env("RUST_LOG", "info,worker=debug,server_ws=debug");
    let mut o = Orchestrator::spawn(cmd);
    o.wait_table();
    let mut ws = connect(p).await;
    let reply = play(&mut ws, 1, "40 + 2").await;
    let task = reply["result"]["task_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no task id: {reply}"))
        .to_string();
    // The worker's and the server's lines about the task.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let about: usize = o.stderr().lines().filter(|l| l.contains(&task)).count();
        if about >= 3 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(ws);
    assert!(o.stop().success(), "{}", o.stderr());

    let lines = json_lines(&o.stderr());
    assert!(!lines.is_empty(), "no log lines");
    for line in &lines {
        let timestamp = line["timestamp"].as_str().expect("timestamp");
        // RFC 3339 in UTC: 2026-12-03T23:44:42.123Z
        assert!(
            timestamp.len() >= 20
                && timestamp.ends_with('Z')
                && timestamp.as_bytes()[10] == b'T'
                && timestamp[..4].parse::<u32>().is_ok(),
            "{line}"
        );
        for field in ["level", "target", "message"] {
            assert!(line[field].is_string(), "no {field}: {line}");
        }
    }
    let about: Vec<&Value> = lines
        .iter()
        .filter(|l| l.to_string().contains(&task))
        .collect();
    assert!(
        about.len() >= 3,
        "the worker's running and completed lines and the server's line: {about:?}"
    );
    for line in &about {
        assert_eq!(line["task"], task.as_str(), "{line}");
    }
    assert!(
        about.iter().any(|l| l["circle"] == "Alpha Circle"
            && l["target"].as_str().unwrap_or("").starts_with("server_ws")),
        "the server's line names the circle: {about:?}"
    );
    // Every line of the worker about the task names its circle and its
    // queue, so one filter on `circle` finds the server's and the worker's.
    let worker_lines: Vec<&&Value> = about
        .iter()
        .filter(|l| l["target"].as_str().unwrap_or("").starts_with("worker"))
        .collect();
    assert!(worker_lines.len() >= 2, "running, completed: {about:?}");
    for line in worker_lines {
        assert_eq!(line["circle"], "Alpha Circle", "{line}");
        assert_eq!(line["queue"], "alpha_circle", "{line}");
    }
    // A line about the circle carries it as a field, for filtering.
    for line in &lines {
        if line["message"]
            .as_str()
            .unwrap_or("")
            .contains("Alpha Circle")
        {
            assert!(
                line["circle"] == "Alpha Circle" || line["queue"] == "alpha_circle",
                "a line naming the circle without its field: {line}"
            );
        }
    }
}

#[test]
fn an_unknown_log_format_exits_2() {
    let sandbox = Sandbox::new();
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    let mut cmd = sandbox.command();
    cmd.arg(&config).args(["--log-format", "xml"]);
    let (status, _, err) = run_to_end(cmd, Duration::from_secs(30));
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("--log-format") && err.contains("json"),
        "{err}"
    );
}

/// A script that makes Rhai or std panic (a `sort` comparer that is not a
/// total order) fails alone, and the panic is one JSON log line at debug
/// level, not a raw panic message (with a backtrace under
/// `RUST_BACKTRACE=1`) in the middle of the JSON lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_inside_a_script_is_one_json_line_and_fails_that_script_alone() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let p = port();
    let config = sandbox.circles(&[(1, "Alpha", p)]);
    let mut cmd = sandbox.serve_command(&config, &redis.url(), &sandbox.data_dir());
    cmd.args(["--log-format", "json"])
        .env("RUST_LOG", "info,circles_orchestrator=debug")
        .env("RUST_BACKTRACE", "1");
    let mut o = Orchestrator::spawn(cmd);
    o.wait_table();
    let mut ws = connect(p).await;
    let script = "let a = []; for i in 0..500 { a.push((i * 7919) % 503) } let c = 0; \
                  a.sort(|x, y| { c += 1; if c % 3 == 0 { 1 } else { -1 } }); a.len()";
    let reply = play(&mut ws, 1, script).await;
    assert_eq!(reply["error"]["code"], -32000, "{reply}");
    let reply = play(&mut ws, 2, "40 + 2").await;
    assert_eq!(
        reply["result"]["output"], "42",
        "the circle serves on: {reply}"
    );
    drop(ws);
    assert!(o.stop().success(), "{}", o.stderr());
    let lines = json_lines(&o.stderr());
    let panics: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"].as_str().unwrap_or("").contains("panicked"))
        .collect();
    assert!(!panics.is_empty(), "the panic is logged: {lines:?}");
    for line in panics {
        assert_eq!(line["level"], "DEBUG", "{line}");
    }
}

/// The lines the broker writes itself (a dead worker reaped, an id in the
/// processing list that is not UTF-8) carry the circle and the queue as the
/// worker's own lines do: one filter on `circle` finds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reaped_workers_line_names_its_circle_and_queue() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let p = port();
    let config = sandbox.circles(&[(1, "Alpha Circle", p)]);
    let mut cmd = sandbox.serve_command(&config, &redis.url(), &sandbox.data_dir());
    cmd.args(["--log-format", "json", "--worker-reap-interval", "100ms"]);
    let mut o = Orchestrator::spawn(cmd);
    o.wait_table();
    // A worker of another process that died holding a task: registered,
    // no heartbeat, the task `processing` by it.
    let client = redis::Client::open(redis.url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let (queue, dead) = ("alpha_circle", "99999-deadbeef0000");
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg(client::keys::task_details("orphan"))
        .arg(&["script", "1", "status", "processing", "workerId", dead])
        .ignore()
        .cmd("RPUSH")
        .arg(client::keys::processing(queue, dead))
        .arg("orphan")
        .ignore()
        .cmd("SADD")
        .arg(client::keys::workers(queue))
        .arg(dead)
        .ignore()
        .query_async(&mut conn)
        .await
        .expect("a dead worker's leftovers");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !o.stderr().contains(&format!("worker {dead} died")) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(o.stop().success(), "{}", o.stderr());
    let lines = json_lines(&o.stderr());
    let reaped: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("worker {dead} died")))
        })
        .collect();
    assert_eq!(reaped.len(), 1, "{}", o.stderr());
    assert_eq!(reaped[0]["circle"], "Alpha Circle", "{}", reaped[0]);
    assert_eq!(reaped[0]["queue"], queue, "{}", reaped[0]);
}
