//! `--role` and `--circles` through the built binary: a gateway process and
//! a worker process with their own data dirs serve a circle together over
//! one Redis (the gateway opens no database, the worker binds no port, and a
//! reload in each changes only what it runs); a gateway alone, before its
//! workers' dead time passed, answers `play` with the task timeout's error
//! (after it, -32002: see `gateways.rs`); `--circles` runs only the circles it names,
//! and an unknown one is a usage error.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::http::admin_addr;
use common::{Orchestrator, Sandbox, connect, listens, output, play, port, run_to_end};
use serde_json::json;

const RELOAD_DEADLINE: Duration = Duration::from_secs(30);

/// Starts the binary on `config` with `data_dir` and `extra` options.
fn start(
    sandbox: &Sandbox,
    config: &Path,
    redis: &testkit::RedisServer,
    data_dir: &Path,
    extra: &[&str],
) -> Orchestrator {
    let mut cmd = sandbox.serve_command(config, &redis.url(), data_dir);
    cmd.args(extra);
    let mut o = Orchestrator::spawn(cmd);
    o.wait_table();
    o
}

/// The names of the entries of `dir` (none when it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The status code and body of `GET /readyz` at `addr`.
fn readyz(addr: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the admin endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read the answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (code, body.to_string())
}

/// Polls `/readyz` until it answers 200; panics with the last answer.
fn wait_ready(addr: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = readyz(addr);
        if code == 200 {
            return body;
        }
        assert!(Instant::now() < deadline, "/readyz stayed {code}: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_play_through_a_gateway_runs_on_the_database_of_a_worker_in_another_process() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (alpha, beta) = (port(), port());
    let config = sandbox.circles(&[(1, "Alpha", alpha)]);
    let (gateway_dir, worker_dir) = (sandbox.path().join("gw"), sandbox.path().join("wk"));

    let mut worker = start(
        &sandbox,
        &config,
        &redis,
        &worker_dir,
        &["--role", "worker", "--admin", "127.0.0.1:0"],
    );
    assert!(
        worker.stdout().contains("Not here: role worker"),
        "the worker's table says it serves no endpoint:\n{}",
        worker.stdout()
    );
    assert!(!listens(worker.pid(), alpha), "a worker binds no port");
    let ready = wait_ready(&admin_addr(&worker.stdout()).to_string());
    assert!(ready.contains(r#""ready":true"#), "{ready}");

    let mut gateway = start(
        &sandbox,
        &config,
        &redis,
        &gateway_dir,
        &["--role", "gateway", "--admin", "127.0.0.1:0"],
    );
    assert!(
        gateway.stdout().contains("Not here: role gateway"),
        "the gateway's table says it runs no worker:\n{}",
        gateway.stdout()
    );
    let ready = wait_ready(&admin_addr(&gateway.stdout()).to_string());
    assert!(ready.contains(r#""ready":true"#), "{ready}");
    assert!(
        listens(gateway.pid(), alpha),
        "the gateway serves the circle"
    );

    let mut ws = connect(alpha).await;
    let id = output(&mut ws, "db::insert(#{ n: 41 })").await;
    let read = output(&mut ws, &format!("db::get({id}).n + 1")).await;
    assert_eq!(read, "42", "the write is read back through the gateway");
    drop(ws);

    // A reload adds an endpoint in the gateway and a worker in the worker.
    let config = sandbox.circles(&[(1, "Alpha", alpha), (2, "Beta", beta)]);
    assert_eq!(config, sandbox.path().join("circles.json"));
    worker.signal("HUP");
    worker.wait_stdout("reload applied", RELOAD_DEADLINE);
    assert!(
        !listens(worker.pid(), beta),
        "a reload in a worker binds no port"
    );
    gateway.signal("HUP");
    gateway.wait_stdout("reload applied", RELOAD_DEADLINE);
    let mut ws = connect(beta).await;
    assert_eq!(output(&mut ws, "db::insert(#{ b: 1 })").await, "1");
    drop(ws);

    assert!(gateway.stop().success(), "{}", gateway.stderr());
    assert!(worker.stop().success(), "{}", worker.stderr());
    assert_eq!(
        entries(&worker_dir),
        ["1", "2"],
        "the worker holds both databases"
    );
    assert!(
        !entries(&gateway_dir).iter().any(|e| e == "1" || e == "2"),
        "the gateway opened no database: {:?}",
        entries(&gateway_dir)
    );
}

/// Within the workers' dead time (three beats of `--worker-heartbeat`, 15 s
/// here) a gateway does not yet count them gone: the task is submitted and
/// times out as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_without_a_worker_answers_play_with_the_task_timeout_error() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let alpha = port();
    let config = sandbox.circles(&[(1, "Alpha", alpha)]);
    let _gateway = start(
        &sandbox,
        &config,
        &redis,
        &sandbox.data_dir(),
        &["--role", "gateway", "--task-timeout", "1s"],
    );
    let mut ws = connect(alpha).await;
    let asked = Instant::now();
    let reply = play(&mut ws, 1, "40 + 2").await;
    assert!(asked.elapsed() >= Duration::from_secs(1), "{reply}");
    assert_eq!(reply["error"]["code"], json!(-32001), "{reply}");
    assert_eq!(reply["error"]["data"]["kind"], json!("timeout"), "{reply}");
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("did not finish within 1000 ms"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circles_runs_only_the_named_circles_and_a_reload_keeps_the_choice() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, b, c, d) = (port(), port(), port(), port());
    let config = sandbox.circles(&[(1, "Alpha", a), (2, "Beta Circle", b), (3, "Gamma", c)]);
    let mut o = start(
        &sandbox,
        &config,
        &redis,
        &sandbox.data_dir(),
        &["--circles", "1,beta circle"],
    );
    assert!(
        o.stdout().contains("2 of 2 circles serving"),
        "{}",
        o.stdout()
    );
    assert!(!o.stdout().contains("Gamma"), "{}", o.stdout());
    assert_eq!(output(&mut connect(a).await, "40 + 2").await, "42");
    assert_eq!(output(&mut connect(b).await, "40 + 2").await, "42");
    assert!(listens(o.pid(), a), "a circle --circles names is served");
    assert!(
        !listens(o.pid(), c),
        "a circle --circles leaves out is not served"
    );

    sandbox.circles(&[
        (1, "Alpha", a),
        (2, "Beta Circle", b),
        (3, "Gamma", c),
        (4, "Delta", d),
    ]);
    o.signal("HUP");
    o.wait_stdout("reload applied", RELOAD_DEADLINE);
    assert!(
        !listens(o.pid(), c) && !listens(o.pid(), d),
        "the reload kept the choice"
    );
    assert_eq!(output(&mut connect(a).await, "40 + 2").await, "42");

    // The file no longer has a circle --circles names: the reload changes nothing.
    sandbox.circles(&[(1, "Alpha", a), (3, "Gamma", c)]);
    o.signal("HUP");
    o.wait_stdout("reload failed", RELOAD_DEADLINE);
    assert!(o.stdout().contains("\"beta circle\""), "{}", o.stdout());
    assert_eq!(output(&mut connect(b).await, "40 + 2").await, "42");
    assert!(o.stop().success(), "{}", o.stderr());
}

#[test]
fn an_unknown_circle_in_circles_exits_2_naming_it() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let config = sandbox.circles(&[(1, "Alpha", port()), (2, "Beta", port())]);
    let mut cmd = sandbox.serve_command(&config, &redis.url(), &sandbox.data_dir());
    cmd.args(["--circles", "Alpha,Delta,9"]);
    let (status, _, err) = run_to_end(cmd, Duration::from_secs(30));
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("\"Delta\", \"9\""), "{err}");
    assert!(!sandbox.data_dir().join("1").exists(), "nothing started");
}

/// `play` of `script` at `ws://host:port/ws`; the reply's output.
async fn output_at(host: &str, port: u16, script: &str) -> String {
    let url = format!("ws://{host}:{port}/ws");
    let deadline = Instant::now() + common::START_DEADLINE;
    let mut ws = loop {
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((ws, _)) => break ws,
            Err(e) if Instant::now() > deadline => panic!("cannot connect to {url}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    output(&mut ws, script).await
}

/// Two loopback addresses (127.0.0.1 and 127.0.0.2, as two hosts would have
/// two): a gateway on each serves the same circle, whose one worker runs in
/// a third process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_two_addresses_serve_one_circle_whose_worker_runs_elsewhere() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let alpha = port();
    let config = sandbox.circles(&[(1, "Alpha", alpha)]);
    let path = sandbox.path();
    let _worker = start(
        &sandbox,
        &config,
        &redis,
        &path.join("wk"),
        &["--role", "worker"],
    );
    let _one = start(
        &sandbox,
        &config,
        &redis,
        &path.join("g1"),
        &["--role", "gateway"],
    );
    let _two = start(
        &sandbox,
        &config,
        &redis,
        &path.join("g2"),
        &["--role", "gateway", "--host", "127.0.0.2"],
    );
    let id = output_at("127.0.0.1", alpha, "db::insert(#{ n: 1 })").await;
    let read = output_at("127.0.0.2", alpha, &format!("db::get({id}).n + 1")).await;
    assert_eq!(
        read, "2",
        "a write through one gateway is read through the other"
    );
    for gateway in ["g1", "g2"] {
        assert!(
            !path.join(gateway).join("1").exists(),
            "{gateway} opened no database"
        );
    }
}

/// The queue's lease (`rhai_queue_owner:<queue>`) is taken by workers
/// only: a gateway beside a worker starts (see the first test), and a second
/// worker of the same circle with another database exits 1 naming the first
/// one's pid, host and database, starting nothing.
#[test]
fn a_second_worker_for_a_circle_with_another_database_refuses_to_start() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    let first_dir = sandbox.path().join("wk1");
    let _first = start(&sandbox, &config, &redis, &first_dir, &["--role", "worker"]);
    let mut cmd = sandbox.serve_command(&config, &redis.url(), &sandbox.path().join("wk2"));
    cmd.args(["--role", "worker"]);
    let (status, _, err) = run_to_end(cmd, Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{err}");
    let first_db = std::fs::canonicalize(first_dir.join("1")).expect("the first database");
    assert!(
        err.contains("held by the worker of another orchestrator")
            && err.contains(&format!("pid {} on host ", _first.pid()))
            && err.contains(&*first_db.to_string_lossy()),
        "{err}"
    );
}
