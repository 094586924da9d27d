//! A circle's own `"redis"` in circles.json, through the built binary: its
//! keys (tasks, counters, owner, heartbeats) and its reply listener live on
//! that Redis only, the other circles' on `--redis-url` only, and circles
//! that share a URL share its task client; a reload that gives a circle its
//! own Redis moves it there. A bad URL, there or in `--redis-url`
//! (`redis+sentinel://` included), exits 2 naming what is wrong.

mod common;

use std::time::Duration;

use common::{Orchestrator, Sandbox, connect, play, port, run_to_end};
use serde_json::json;
use testkit::{RedisServer, Reply, command};

/// Every key of the Redis on `port`.
fn keys(port: u16) -> Vec<String> {
    let reply = command(port, &["KEYS", "*"]).expect("KEYS");
    reply
        .items()
        .iter()
        .filter_map(Reply::text)
        .map(str::to_string)
        .collect()
}

/// The reply channels subscribed on the Redis on `port`: one per task client.
fn reply_channels(port: u16) -> usize {
    command(port, &["PUBSUB", "CHANNELS", "rhai_task_replies:*"])
        .expect("PUBSUB CHANNELS")
        .items()
        .len()
}

/// The task ids of three plays on the circle at `ws_port`.
async fn play_three(ws_port: u16, name: &str) -> Vec<String> {
    let mut ws = connect(ws_port).await;
    let mut ids = Vec::new();
    for i in 1..=3 {
        let reply = play(&mut ws, i, &format!("\"{name}\" + {i}")).await;
        assert_eq!(
            reply["result"]["output"],
            json!(format!("{name}{i}")),
            "{reply}"
        );
        ids.push(
            reply["result"]["task_id"]
                .as_str()
                .expect("task id")
                .to_string(),
        );
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circle_with_its_own_redis_keeps_all_its_keys_there_and_none_on_the_default() {
    let main = RedisServer::start();
    let own = RedisServer::start();
    let sandbox = Sandbox::new();
    let (a, b, c) = (port(), port(), port());
    let circles = json!([
        {"id": 1, "name": "Alpha", "port": a},
        {"id": 2, "name": "Beta", "port": b, "redis": own.url()},
        {"id": 3, "name": "Gamma", "port": c, "redis": own.url()},
    ]);
    let config = sandbox.write("circles.json", &circles.to_string());
    let mut o = Orchestrator::start(&sandbox, &config, &main.url(), &[]);
    o.wait_table();

    let alpha = play_three(a, "alpha").await;
    let beta = play_three(b, "beta").await;
    let gamma = play_three(c, "gamma").await;

    let (on_main, on_own) = (keys(main.port()), keys(own.port()));
    let task_key = |id: &String| format!("rhai_task_details:{id}");
    for id in &alpha {
        assert!(
            on_main.contains(&task_key(id)),
            "{id} not on main: {on_main:?}"
        );
        assert!(!on_own.contains(&task_key(id)), "{id} on own: {on_own:?}");
    }
    for id in beta.iter().chain(&gamma) {
        assert!(
            on_own.contains(&task_key(id)),
            "{id} not on own: {on_own:?}"
        );
        assert!(
            !on_main.contains(&task_key(id)),
            "{id} on main: {on_main:?}"
        );
    }
    for queue in ["beta", "gamma"] {
        for key in [
            format!("rhai_stats:{queue}"),
            format!("rhai_queue_owner:{queue}"),
        ] {
            assert!(on_own.contains(&key), "{key} not on own: {on_own:?}");
        }
        assert!(
            !on_main.iter().any(|k| k.contains(queue)),
            "a key of {queue} on main: {on_main:?}"
        );
    }
    assert!(
        on_main.contains(&"rhai_stats:alpha".to_string()),
        "{on_main:?}"
    );
    assert!(
        !on_own.iter().any(|k| k.contains("alpha")),
        "a key of alpha on own: {on_own:?}"
    );
    // Beta and Gamma share one task client on their Redis; Alpha's is on
    // the default. Each has one reply listener, plus one for its twin on the
    // actix thread once that thread has submitted through it: two per
    // Redis at most, however many circles use it (four here if Beta and
    // Gamma each had their own).
    for (redis, port) in [("own", own.port()), ("main", main.port())] {
        let listeners = reply_channels(port);
        assert!(
            (1..=2).contains(&listeners),
            "{listeners} reply listeners on {redis}"
        );
    }
    let status = o.stop();
    assert!(status.success(), "{status}\n{}", o.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_gives_a_circle_its_own_redis_moves_its_tasks_there() {
    let main = RedisServer::start();
    let own = RedisServer::start();
    let sandbox = Sandbox::new();
    let a = port();
    let config = sandbox.write(
        "circles.json",
        &json!([{"id": 1, "name": "Alpha", "port": a}]).to_string(),
    );
    let mut o = Orchestrator::start(&sandbox, &config, &main.url(), &[]);
    o.wait_table();
    let before = play_three(a, "alpha").await;
    sandbox.write(
        "circles.json",
        &json!([{"id": 1, "name": "Alpha", "port": a, "redis": own.url()}]).to_string(),
    );
    o.signal("HUP");
    o.wait_stdout("reload applied", Duration::from_secs(30));
    let after = play_three(a, "alpha").await;
    let (on_main, on_own) = (keys(main.port()), keys(own.port()));
    let task_key = |id: &String| format!("rhai_task_details:{id}");
    for id in &before {
        assert!(
            on_main.contains(&task_key(id)),
            "{id} not on main: {on_main:?}"
        );
    }
    for id in &after {
        assert!(
            on_own.contains(&task_key(id)),
            "{id} not on own: {on_own:?}"
        );
        assert!(
            !on_main.contains(&task_key(id)),
            "{id} on main: {on_main:?}"
        );
    }
    let status = o.stop();
    assert!(status.success(), "{status}\n{}", o.stderr());
}

/// Runs the binary on `circles` (text) with `--redis-url redis_url`;
/// returns (exit code, stderr).
fn run(circles: &str, redis_url: &str) -> (i32, String) {
    let sandbox = Sandbox::new();
    let path = sandbox.write("circles.json", circles);
    let mut cmd = sandbox.command();
    cmd.arg(&path)
        .args(["--output", "plain", "--no-managed-redis"])
        .args(["--redis-url", redis_url]);
    let (status, _out, err) = run_to_end(cmd, Duration::from_secs(20));
    (status.code().expect("exit code"), err)
}

#[test]
fn a_bad_redis_url_of_a_circle_exits_2_naming_the_circle_and_hiding_the_password() {
    let circles = r#"[{"id": 1, "name": "Alpha", "port": 1},
        {"id": 2, "name": "Beta", "port": 2,
         "redis": "redis+sentinel://u:hunter2@127.0.0.1:26379,127.0.0.1:0/mymaster"}]"#;
    let (code, err) = run(circles, "redis://127.0.0.1:1");
    assert_eq!(code, 2, "{err}");
    for needle in [
        "circles.json",
        "name \"Beta\"",
        "\"redis\"",
        "sentinel 2",
        "port \"0\"",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from: {err}");
    }
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn a_bad_sentinel_redis_url_exits_2_saying_what_is_wrong() {
    let circles = r#"[{"id": 1, "name": "Alpha", "port": 1}]"#;
    for (url, says) in [
        (
            "redis+sentinel://:hunter2@127.0.0.1:26379",
            "no service name",
        ),
        (
            "redis+sentinel://127.0.0.1:26379/mymaster/zero",
            "database \"zero\"",
        ),
        ("rediss+sentinel://127.0.0.1:26379/mymaster", "TLS"),
    ] {
        let (code, err) = run(circles, url);
        assert_eq!(code, 2, "{url}: {err}");
        assert!(err.contains("--redis-url"), "{err}");
        assert!(err.contains(says), "{url}: {says:?} missing from: {err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}

/// A reload that moves the last circle off its own Redis closes this
/// process's task client there: no reply channel stays subscribed, so
/// nothing keeps reconnecting to a Redis that may be gone for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_moves_the_last_circle_off_a_redis_closes_its_client_there() {
    let main = RedisServer::start();
    let own = RedisServer::start();
    let sandbox = Sandbox::new();
    let a = port();
    sandbox.write(
        "circles.json",
        &json!([{"id": 1, "name": "Alpha", "port": a, "redis": own.url()}]).to_string(),
    );
    let config = sandbox.path().join("circles.json");
    let mut o = Orchestrator::start(&sandbox, &config, &main.url(), &[]);
    o.wait_table();
    play_three(a, "alpha").await;
    assert!(
        reply_channels(own.port()) >= 1,
        "a task client on its redis"
    );
    sandbox.write(
        "circles.json",
        &json!([{"id": 1, "name": "Alpha", "port": a}]).to_string(),
    );
    o.signal("HUP");
    o.wait_stdout("reload applied", Duration::from_secs(30));
    play_three(a, "alpha").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while reply_channels(own.port()) > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        reply_channels(own.port()),
        0,
        "a task client stays subscribed on a redis no circle uses:\n{}",
        o.stderr()
    );
    let status = o.stop();
    assert!(status.success(), "{status}\n{}", o.stderr());
}

/// A password with a `#` or `?` in it, written without percent-encoding
/// (README: "The URL is shown with its user and password removed,
/// everywhere"): whatever the URL is then taken to mean, no message prints
/// the password or a part of it.
#[test]
fn a_password_with_a_hash_or_question_mark_is_never_printed() {
    let circles = r#"[{"id": 1, "name": "Alpha", "port": 1}]"#;
    for url in [
        // A sentinel URL: refused (a '#' is no fragment there; '?' starts the query).
        "redis+sentinel://app:hunter2#x@127.0.0.1:26379/mymaster",
        "redis+sentinel://app:hunter2?x@127.0.0.1:26379/mymaster",
        // A redis:// URL whose password starts with digits: the URL parses
        // with host "admin", port 2024 and a fragment holding the rest.
        "redis://admin:2024#hunter2@127.0.0.1:6379",
    ] {
        let (code, err) = run(circles, url);
        assert_ne!(code, 0, "{url}: {err}");
        for secret in ["hunter2", "2024#"] {
            assert!(
                !err.contains(secret),
                "{url}: the password ({secret:?}) was printed: {err}"
            );
        }
    }
}
