//! Gateways through the built binary: a process that serves a circle's
//! endpoint announces itself in Redis (with the worker heartbeat's TTL,
//! gone at shutdown) and shows in `status --json`; while its circle has no
//! live worker it answers `play` with -32002 naming the circle, at once
//! once the dead time passed, and a task that timed out after the worker
//! was killed never runs when a worker comes up.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::http::admin_addr;
use common::{Orchestrator, Sandbox, connect, play, port, run_to_end};
use redis::Commands;
use serde_json::Value;

/// Short beats, so that dead times pass in about a second.
const BEAT: &str = "200ms";
/// The heartbeat TTL that [`BEAT`] gives (three beats), in ms.
const TTL_MS: i64 = 600;
const DEADLINE: Duration = Duration::from_secs(30);

fn start(
    sandbox: &Sandbox,
    config: &Path,
    redis: &testkit::RedisServer,
    data_dir: &Path,
    extra: &[&str],
) -> Orchestrator {
    let mut cmd = sandbox.serve_command(config, &redis.url(), data_dir);
    cmd.args(["--worker-heartbeat", BEAT]).args(extra);
    let mut o = Orchestrator::spawn(cmd);
    o.wait_table();
    o
}

fn redis_conn(redis: &testkit::RedisServer) -> redis::Connection {
    redis::Client::open(redis.url())
        .expect("url")
        .get_connection()
        .expect("connect to the test redis")
}

/// Polls `check` until it gives a value, or panics naming `what`.
fn wait_for<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    testkit::wait_for(what, DEADLINE, check)
}

/// `status --json` of the orchestrator whose admin endpoint is `addr`.
fn status_json(sandbox: &Sandbox, addr: &str) -> Value {
    let mut cmd = sandbox.command();
    cmd.args(["status", "--admin", addr, "--json"]);
    let (code, stdout, stderr) = run_to_end(cmd, DEADLINE);
    assert!(code.success(), "{stderr}");
    serde_json::from_str(stdout.trim()).expect("one JSON snapshot")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateways_keys_appear_with_the_heartbeat_ttl_and_go_at_shutdown() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let alpha = port();
    let config = sandbox.circles(&[(1, "Alpha", alpha)]);
    let mut gateway = start(
        &sandbox,
        &config,
        &redis,
        &sandbox.data_dir(),
        &["--role", "gateway"],
    );
    let mut conn = redis_conn(&redis);
    let members: Vec<String> = wait_for("the gateway to announce itself", || {
        let m: Vec<String> = conn.smembers("rhai_gateways:alpha").expect("smembers");
        (!m.is_empty()).then_some(m)
    });
    assert_eq!(members.len(), 1, "{members:?}");
    let key = format!("rhai_gateway_heartbeat:alpha:{}", members[0]);
    let value: String = conn.get(&key).expect("get");
    let (pid, rest) = value.split_once('|').expect("pid|host|url");
    assert_eq!(pid, gateway.pid().to_string(), "{value}");
    assert!(
        rest.ends_with(&format!("|ws://127.0.0.1:{alpha}/ws")),
        "{value}"
    );
    let ttl: i64 = conn.pttl(&key).expect("pttl");
    assert!(ttl > 0 && ttl <= TTL_MS, "{key} has a TTL of {ttl} ms");

    assert!(gateway.stop().success(), "{}", gateway.stderr());
    let members: Vec<String> = conn.smembers("rhai_gateways:alpha").expect("smembers");
    assert!(members.is_empty(), "left the set at shutdown: {members:?}");
    let exists: bool = conn.exists(&key).expect("exists");
    assert!(!exists, "{key} deleted at shutdown");
}

/// A reload that gives a circle its own Redis takes the gateway out of the
/// circle on the Redis it left at the next beat, not when the heartbeat's
/// TTL runs out (the set has none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_leaves_the_redis_a_reload_moved_its_circle_off() {
    let sandbox = Sandbox::new();
    let (main, own) = (testkit::RedisServer::start(), testkit::RedisServer::start());
    let alpha = port();
    let config = sandbox.circles(&[(1, "Alpha", alpha)]);
    // Beats 5 s apart: a heartbeat key lives 15 s.
    let mut cmd = sandbox.serve_command(&config, &main.url(), &sandbox.data_dir());
    cmd.args(["--worker-heartbeat", "5s", "--role", "gateway"]);
    let mut gateway = Orchestrator::spawn(cmd);
    gateway.wait_table();
    let members = |redis: &testkit::RedisServer| -> Vec<String> {
        redis_conn(redis)
            .smembers("rhai_gateways:alpha")
            .expect("smembers")
    };
    let id = wait_for("the gateway on --redis-url", || members(&main).pop());
    sandbox.write(
        "circles.json",
        &serde_json::json!([{"id": 1, "name": "Alpha", "port": alpha, "redis": own.url()}])
            .to_string(),
    );
    gateway.reload(1, DEADLINE);
    let moved = wait_for("the gateway on the circle's own redis", || {
        members(&own).pop()
    });
    assert_eq!(moved, id);
    let key = format!("rhai_gateway_heartbeat:alpha:{id}");
    testkit::wait_for(
        "the gateway to leave the redis its circle left, before its key's 15 s TTL",
        Duration::from_secs(4),
        || {
            let exists: bool = redis_conn(&main).exists(&key).expect("exists");
            (members(&main).is_empty() && !exists).then_some(())
        },
    );
    // Back to --redis-url: the reload closes this process's client of the
    // circle's own Redis, which the gateway still leaves.
    sandbox.circles(&[(1, "Alpha", alpha)]);
    gateway.reload(2, DEADLINE);
    testkit::wait_for(
        "the gateway to leave the circle's own redis once moved back",
        Duration::from_secs(10),
        || members(&own).is_empty().then_some(()),
    );
    assert!(gateway.stop().success(), "{}", gateway.stderr());
    assert!(
        !gateway.stderr().contains("has no client"),
        "{}",
        gateway.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_of_one_circle_both_show_in_status_json() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let alpha = port();
    let config = sandbox.circles(&[(1, "Alpha", alpha)]);
    let path = sandbox.path();
    let one = start(
        &sandbox,
        &config,
        &redis,
        &path.join("g1"),
        &["--role", "gateway", "--admin", "127.0.0.1:0"],
    );
    let _two = start(
        &sandbox,
        &config,
        &redis,
        &path.join("g2"),
        &["--role", "gateway", "--host", "127.0.0.2"],
    );
    let addr = admin_addr(&one.stdout()).to_string();
    let circle = wait_for("both gateways in status --json", || {
        let snap = status_json(&sandbox, &addr);
        let circle = snap["circles"][0].clone();
        (circle["gateway_count"] == 2).then_some(circle)
    });
    let mut urls: Vec<&str> = circle["gateways"]
        .as_array()
        .expect("a list of gateways")
        .iter()
        .map(|g| g["url"].as_str().expect("url"))
        .collect();
    urls.sort();
    assert_eq!(
        urls,
        [
            format!("ws://127.0.0.1:{alpha}/ws"),
            format!("ws://127.0.0.2:{alpha}/ws")
        ],
        "{circle}"
    );
    for g in circle["gateways"].as_array().expect("list") {
        assert!(g["host"].as_str().is_some_and(|h| !h.is_empty()), "{g}");
        assert!(g["pid"].as_u64().is_some(), "{g}");
    }
    let mut cmd = sandbox.command();
    cmd.args(["status", "--admin", &addr]);
    let (code, table, stderr) = run_to_end(cmd, DEADLINE);
    assert!(code.success(), "{stderr}");
    assert!(table.contains("Gateways"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_alone_answers_play_with_32002_naming_the_circle_once_the_dead_time_passed() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let alpha = port();
    let config = sandbox.circles(&[(1, "Alpha", alpha)]);
    let mut gateway = start(
        &sandbox,
        &config,
        &redis,
        &sandbox.data_dir(),
        &["--role", "gateway", "--task-timeout", "30s"],
    );
    gateway.wait_stdout("Not here: role gateway; no live worker", DEADLINE);
    let mut ws = connect(alpha).await;
    let reply = play(&mut ws, 1, "40 + 2").await;
    assert_eq!(reply["error"]["code"], -32002, "{reply}");
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("no live worker for circle Alpha (1)"),
        "{reply}"
    );
    assert_eq!(reply["error"]["data"]["kind"], "no_worker", "{reply}");
    assert!(reply["error"]["data"]["task_id"].is_null(), "{reply}");
    let queued: u64 = redis_conn(&redis).llen("rhai_tasks:alpha").expect("llen");
    assert_eq!(queued, 0, "nothing was submitted");
}

/// A worker set another program wrote as another type (its mistake) names
/// no worker of its own circle, and changes nothing for the circles beside
/// it on the same Redis: both are seen without a live worker and answered
/// -32002, none is shown with its Redis unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_set_of_another_type_hides_no_other_circle_s_missing_worker() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let () = redis_conn(&redis)
        .set("rhai_workers:beta", "not a set")
        .expect("set");
    let (alpha, beta) = (port(), port());
    let config = sandbox.circles(&[(1, "Alpha", alpha), (2, "Beta", beta)]);
    let gateway = start(
        &sandbox,
        &config,
        &redis,
        &sandbox.data_dir(),
        &[
            "--role",
            "gateway",
            "--task-timeout",
            "30s",
            "--admin",
            "127.0.0.1:0",
        ],
    );
    let admin = admin_addr(&gateway.stdout()).to_string();
    let rows = wait_for("both circles seen without a live worker", || {
        let rows = status_json(&sandbox, &admin)["circles"].clone();
        let rows = rows.as_array().cloned().unwrap_or_default();
        rows.iter()
            .all(|c| c["worker_live"] == false)
            .then_some(rows)
    });
    for row in &rows {
        let detail = row["worker_detail"].as_str().unwrap_or_default();
        assert!(!detail.contains("unreachable"), "{row}");
    }
    for (port, name) in [(alpha, "Alpha (1)"), (beta, "Beta (2)")] {
        let mut ws = connect(port).await;
        let reply = play(&mut ws, 1, "40 + 2").await;
        assert_eq!(reply["error"]["data"]["kind"], "no_worker", "{reply}");
        let message = reply["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with(&format!("no live worker for circle {name}")),
            "{reply}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_whose_worker_was_killed_answers_32002_and_the_task_never_runs_later() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let alpha = port();
    let config = sandbox.circles(&[(1, "Alpha", alpha)]);
    let worker_dir = sandbox.path().join("wk");
    // A longer beat for the worker: its heartbeat outlives the kill long
    // enough for the next play to be submitted.
    let worker_args = ["--role", "worker", "--worker-heartbeat", "1s"];
    let mut worker = start(&sandbox, &config, &redis, &worker_dir, &worker_args);
    let gateway = start(
        &sandbox,
        &config,
        &redis,
        &sandbox.path().join("gw"),
        &[
            "--role",
            "gateway",
            "--worker-heartbeat",
            "1s",
            "--task-timeout",
            "8s",
        ],
    );
    let mut ws = connect(alpha).await;
    let reply = play(&mut ws, 1, "40 + 2").await;
    assert_eq!(
        reply["result"]["output"], "42",
        "a live worker: as before: {reply}"
    );

    worker.signal("KILL");
    worker.wait_exit(DEADLINE);
    let reply = play(&mut ws, 2, "db::insert(#{ late: true })").await;
    assert_eq!(reply["error"]["code"], -32002, "{reply}");
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("no live worker for circle Alpha (1)"),
        "{reply}"
    );
    let task_id = reply["error"]["data"]["task_id"]
        .as_str()
        .unwrap_or_else(|| {
            panic!("the task was submitted before the worker was known gone: {reply}")
        })
        .to_owned();
    let details = format!("rhai_task_details:{task_id}");
    let mut conn = redis_conn(&redis);
    let status: Option<String> = conn.hget(&details, "status").expect("hget");
    assert_eq!(status.as_deref(), Some("pending"), "nobody took it yet");

    // A worker comes up: the task ends without running.
    let _worker = start(&sandbox, &config, &redis, &worker_dir, &worker_args);
    let (status, kind) = wait_for("the task to end", || {
        let (status, kind): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(&details)
            .arg("status")
            .arg("errorKind")
            .query(&mut conn)
            .expect("hmget");
        (status.as_deref() != Some("pending")).then_some((status, kind))
    });
    assert_eq!(status.as_deref(), Some("error"));
    assert_eq!(kind.as_deref(), Some("cancelled"));
    let mut ws = connect(alpha).await;
    let started = Instant::now();
    let next_id = loop {
        let reply = play(&mut ws, 3, "db::next_id()").await;
        if let Some(out) = reply["result"]["output"].as_str() {
            break out.to_owned();
        }
        assert_eq!(reply["error"]["code"], -32002, "{reply}");
        assert!(started.elapsed() < DEADLINE, "{reply}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(next_id, "1", "the insert of the cancelled task never ran");
    drop(gateway);
}

/// A circle whose worker was killed refuses `play` at once as soon as the
/// worker's heartbeat key expires (three missed beats), not a further dead
/// time after the gateway last saw that key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_is_known_gone_once_its_heartbeat_expires() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let alpha = port();
    let config = sandbox.circles(&[(1, "Alpha", alpha)]);
    // Beats of 2 s: the heartbeat lives 6 s. Gone at most 6 s after the
    // kill; counting a dead time from the last sighting of the live key
    // would take 10 s or more.
    let beat = ["--worker-heartbeat", "2s"];
    let mut worker = start(
        &sandbox,
        &config,
        &redis,
        &sandbox.path().join("wk"),
        &[&["--role", "worker"][..], &beat[..]].concat(),
    );
    let gateway = start(
        &sandbox,
        &config,
        &redis,
        &sandbox.path().join("gw"),
        &[
            &["--role", "gateway", "--task-timeout", "1s"][..],
            &beat[..],
        ]
        .concat(),
    );
    let mut ws = connect(alpha).await;
    let reply = play(&mut ws, 1, "40 + 2").await;
    assert_eq!(reply["result"]["output"], "42", "{reply}");
    worker.signal("KILL");
    worker.wait_exit(DEADLINE);
    let killed = Instant::now();
    let gone_after = loop {
        let reply = play(&mut ws, 2, "1").await;
        // Before it is known gone a task is queued and times out (-32001,
        // or -32002 with its task id once the worker is known gone).
        let code = reply["error"]["code"].as_i64();
        assert!(matches!(code, Some(-32001 | -32002)), "{reply}");
        // Refused at once: nothing was queued.
        if code == Some(-32002) && reply["error"]["data"]["task_id"].is_null() {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < DEADLINE, "{reply}");
    };
    assert!(
        gone_after < Duration::from_secs(8),
        "refused at once {gone_after:?} after the kill; the heartbeat lives 6 s"
    );
    drop(gateway);
}

/// A gateway is a circle's only contact with Redis in its process: when
/// the circle's Redis (here its own, not --redis-url) stops answering the
/// beat, the table says so and `/readyz` names the circle, and both come
/// back once it answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_shows_its_circles_redis_away_in_the_table_and_readyz_until_it_is_back() {
    let sandbox = Sandbox::new();
    let main = testkit::RedisServer::start();
    let mut own = testkit::RedisServer::start();
    let alpha = port();
    let circles =
        serde_json::json!([{"id": 1, "name": "Alpha", "port": alpha, "redis": own.url()}]);
    let config = sandbox.write("circles.json", &circles.to_string());
    let _worker = start(
        &sandbox,
        &config,
        &main,
        &sandbox.path().join("wk"),
        &["--role", "worker"],
    );
    let mut gateway = start(
        &sandbox,
        &config,
        &main,
        &sandbox.path().join("gw"),
        &["--role", "gateway", "--admin", "127.0.0.1:0"],
    );
    let admin = admin_addr(&gateway.stdout());
    const SEEN: &str = "live worker seen";
    const AWAY: &str = "role gateway; redis unreachable: ";
    gateway.wait_stdout(SEEN, DEADLINE);
    wait_for("ready", || {
        (common::http::get(admin, "/readyz", &[]).code == 200).then_some(())
    });

    own.kill();
    gateway.wait_stdout(AWAY, DEADLINE);
    let not_ready = wait_for("/readyz to name the circle's Redis", || {
        let answer = common::http::get(admin, "/readyz", &[]);
        (answer.code == 503).then_some(answer.body)
    });
    let body: Value = serde_json::from_str(&not_ready).expect("JSON");
    let entries = body["not_ready"].as_array().expect("a list");
    assert!(
        entries
            .iter()
            .any(|e| e["component"] == "redis" && e["circle"] == "Alpha"),
        "{body}"
    );
    // The main Redis still answers: only the circle's own is named.
    assert!(
        entries
            .iter()
            .all(|e| e["component"] != "redis" || e["circle"] == "Alpha"),
        "{body}"
    );

    own.restart();
    let away_at = gateway.stdout().rfind(AWAY).expect("said");
    wait_for("the worker seen again", || {
        gateway.stdout()[away_at..].contains(SEEN).then_some(())
    });
    wait_for("ready again", || {
        (common::http::get(admin, "/readyz", &[]).code == 200).then_some(())
    });
}
