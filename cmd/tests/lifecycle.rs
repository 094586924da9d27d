//! Start-up failures, restarts and shutdown of the built binary: data and ids
//! survive a restart, SIGTERM under load loses nothing acknowledged, a port in
//! use or a locked database stops the start with a clear message, and Redis is
//! found, started (managed) and stopped as DESIGN §1 says.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Orchestrator, Sandbox, connect, output, port, run_to_end};
use serde_json::json;

fn redis_answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_a_restart_and_ids_keep_counting() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let p = port();
    let config = sandbox.circles(&[(7, "Keeper", p)]);

    let mut first = Orchestrator::start(&sandbox, &config, &redis.url(), &[]);
    first.wait_table();
    let mut ws = connect(p).await;
    assert_eq!(
        output(&mut ws, "db::insert(#{ name: \"Ada\", age: 36 })").await,
        "1"
    );
    assert_eq!(output(&mut ws, "db::insert(\"second\")").await, "2");
    assert_eq!(
        output(&mut ws, "db::update(1, #{ name: \"Ada\", age: 37 })").await,
        ""
    );
    drop(ws);
    assert_eq!(first.stop().code(), Some(0), "stderr:\n{}", first.stderr());
    assert!(
        sandbox.data_dir().join("7").is_dir(),
        "circle 7 lives in <data-dir>/7/"
    );

    let mut second = Orchestrator::start(&sandbox, &config, &redis.url(), &[]);
    second.wait_table();
    let mut ws = connect(p).await;
    assert_eq!(output(&mut ws, "db::get(1).age").await, "37");
    assert_eq!(output(&mut ws, "db::get(2)").await, "second");
    assert_eq!(output(&mut ws, "db::history(1, 5).len()").await, "2");
    assert_eq!(
        output(&mut ws, "db::insert(3)").await,
        "3",
        "ids keep counting after a restart"
    );
    drop(ws);
    assert_eq!(second.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_0_within_the_grace_period_and_keeps_every_acknowledged_write() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (pa, pb) = (port(), port());
    let config = sandbox.circles(&[(1, "Load A", pa), (2, "Load B", pb)]);
    let grace = Duration::from_secs(5);
    let mut orchestrator =
        Orchestrator::start(&sandbox, &config, &redis.url(), &["--shutdown-grace", "5s"]);
    orchestrator.wait_table();

    // (port, id, value) of every insert the server acknowledged.
    let acked: Arc<Mutex<Vec<(u16, u64, i64)>>> = Arc::default();
    let mut clients = Vec::new();
    for (n, p) in [pa, pb, pa, pb].into_iter().enumerate() {
        let acked = acked.clone();
        let mut ws = connect(p).await;
        clients.push(tokio::spawn(async move {
            for i in 0.. {
                let value = (n as i64) * 1_000_000 + i;
                // A script that takes a little while, so some are running at SIGTERM.
                let script =
                    format!("let s = 0; for x in 0..2000 {{ s += x; }} db::insert({value})");
                let request =
                    json!({"jsonrpc":"2.0","id":i,"method":"play","params":{"script": script}});
                use futures_util::{SinkExt, StreamExt};
                if ws
                    .send(tokio_tungstenite::tungstenite::Message::text(
                        request.to_string(),
                    ))
                    .await
                    .is_err()
                {
                    return;
                }
                let reply = loop {
                    match ws.next().await {
                        Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                            break serde_json::from_str::<serde_json::Value>(&t).expect("json");
                        }
                        Some(Ok(_)) => continue,
                        _ => return,
                    }
                };
                match reply["result"]["output"]
                    .as_str()
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    Some(id) => acked.lock().expect("lock").push((p, id, value)),
                    None => return,
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().expect("lock").len() < 40 {
        assert!(Instant::now() < deadline, "load did not get going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    orchestrator.signal("TERM");
    let status = orchestrator.wait_exit(grace + Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "stderr:\n{}", orchestrator.stderr());
    for c in clients {
        let _ = c.await;
    }
    let acked = acked.lock().expect("lock").clone();

    let mut again = Orchestrator::start(&sandbox, &config, &redis.url(), &[]);
    again.wait_table();
    let mut a = connect(pa).await;
    let mut b = connect(pb).await;
    for (p, id, value) in &acked {
        let ws = if *p == pa { &mut a } else { &mut b };
        assert_eq!(
            output(ws, &format!("db::get({id})")).await,
            value.to_string(),
            "acknowledged insert {id} on port {p} lost"
        );
    }
    // Nothing ran that was not answered: the servers drained their requests
    // while the workers still ran them, so no submitted task was left in a
    // queue to run unanswered at the next start.
    for (p, ws) in [(pa, &mut a), (pb, &mut b)] {
        let acked_here = acked.iter().filter(|(q, _, _)| *q == p).count();
        assert_eq!(
            output(ws, "db::next_id() - 1").await,
            acked_here.to_string(),
            "inserts on port {p} beyond the {acked_here} acknowledged ones"
        );
    }
    drop((a, b));
    assert_eq!(again.stop().code(), Some(0));
}

/// Redis stalled (SIGSTOP: not dead, not answering) at a SIGTERM: a
/// worker's blocked pop cannot be woken, so the workers do not stop within
/// their bound; the exit comes all the same, exit 1, saying how long after
/// the signal.
#[test]
fn a_sigterm_while_redis_is_stalled_exits_1_saying_how_long_after_the_signal() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let config = sandbox.circles(&[(1, "Stalled", port())]);
    let mut o = Orchestrator::start(&sandbox, &config, &redis.url(), &["--shutdown-grace", "1s"]);
    o.wait_table();
    let redis_pid = redis.pid().expect("redis runs").to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &redis_pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {name}");
    };
    signal("-STOP");
    o.signal("TERM");
    let status = o.wait_exit(Duration::from_secs(90));
    signal("-CONT");
    assert_eq!(status.code(), Some(1), "{}", o.stderr());
    let err = o.stderr();
    let said = err
        .lines()
        .find(|l| l.contains("did not stop within"))
        .unwrap_or_else(|| panic!("no word of the workers: {err}"));
    assert!(
        said.contains("the workers did not stop within 6s of the servers' drain (")
            && said.contains(" after SIGTERM); stopped anyway"),
        "{said}"
    );
}

#[test]
fn a_port_in_use_stops_the_start_naming_the_circle_and_port() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy = taken.local_addr().expect("addr").port();
    let config = sandbox.circles(&[(1, "Free", port()), (2, "Busy", busy)]);
    let cmd = sandbox.serve_command(&config, &redis.url(), &sandbox.data_dir());
    let (status, _, err) = run_to_end(cmd, Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("circle \"Busy\" (id 2)"), "{err}");
    assert!(
        err.contains(&format!("port {busy}")) && err.contains("already in use"),
        "{err}"
    );
    assert!(err.contains("none was started"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_locked_by_another_orchestrator_stops_the_start_naming_the_circle() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let first_port = port();
    let config = sandbox.circles(&[(1, "Shared", first_port)]);
    let mut first = Orchestrator::start(&sandbox, &config, &redis.url(), &[]);
    first.wait_table();

    let other = Sandbox::new();
    let other_config = other.circles(&[(1, "Shared", port())]);
    // Its own config, but the first orchestrator's (locked) data dir.
    let cmd = other.serve_command(&other_config, &redis.url(), &sandbox.data_dir());
    let (status, _, err) = run_to_end(cmd, Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("circle \"Shared\" (id 1)") && err.contains("locked"),
        "{err}"
    );

    let mut ws = connect(first_port).await;
    assert_eq!(
        output(&mut ws, "40 + 2").await,
        "42",
        "the first orchestrator is unaffected"
    );
    drop(ws);
    assert_eq!(first.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_orchestrator_with_a_circle_of_the_same_queue_on_one_redis_is_refused() {
    // Two users, one Redis (the default URL), each with their own data dir
    // and a circle called "Alpha Circle": they would run each other's tasks.
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let first_port = port();
    let config = sandbox.circles(&[(1, "Alpha Circle", first_port)]);
    let mut first = Orchestrator::start(&sandbox, &config, &redis.url(), &[]);
    first.wait_table();
    let mut ws = connect(first_port).await;
    assert_eq!(output(&mut ws, "db::insert(1); db::insert(2)").await, "2");

    let other = Sandbox::new();
    let other_config = other.circles(&[(7, "alpha-circle", port())]);
    let cmd = other.serve_command(&other_config, &redis.url(), &other.data_dir());
    let (status, _, err) = run_to_end(cmd, Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("circle \"alpha-circle\" (id 7)")
            && err.contains("queue alpha_circle is held by the worker of another orchestrator")
            && err.contains(&sandbox.data_dir().join("1").display().to_string()),
        "names the circle, the queue and the other database: {err}"
    );
    // Every task of the queue still runs against the first circle's database.
    for _ in 0..10 {
        assert_eq!(output(&mut ws, "db::next_id()").await, "3");
    }
    drop(ws);
    assert_eq!(first.stop().code(), Some(0));
    // Stopped cleanly, it gave the queue up: the other starts now.
    let mut second = Orchestrator::start(&other, &other_config, &redis.url(), &[]);
    second.wait_table();
    assert_eq!(second.stop().code(), Some(0), "{}", second.stderr());
}

/// Starts the binary on a one-circle config with `args` and `env`, expecting
/// it to stop before serving; returns its exit code and stderr.
fn start_fails(env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
    let sandbox = Sandbox::new();
    let config = sandbox.circles(&[(1, "A", port())]);
    let mut cmd = sandbox.command();
    cmd.envs(env.iter().copied())
        .arg(&config)
        .args(args)
        .args(["--output", "plain"]);
    let (status, _, err) = run_to_end(cmd, Duration::from_secs(30));
    (status.code(), err)
}

/// A loopback Redis URL nothing answers on.
fn dead_redis_url() -> String {
    format!("redis://127.0.0.1:{}", port())
}

#[test]
fn unreachable_redis_with_managed_mode_off_exits_1_saying_what_was_tried() {
    let url = dead_redis_url();
    let (code, err) = start_fails(&[], &["--redis-url", &url, "--no-managed-redis"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("tried {url}")), "{err}");
    assert!(
        err.contains("--no-managed-redis") && err.contains("Fix:"),
        "{err}"
    );
}

#[test]
fn a_port_held_by_something_that_is_not_redis_fails_the_managed_start_with_a_fix() {
    // Accepts connections (the kernel does, into the backlog) but never
    // answers: not a Redis, and redis-server cannot bind the port.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = squatter.local_addr().expect("addr").port();
    let url = format!("redis://127.0.0.1:{taken}");
    let (code, err) = start_fails(&[], &["--redis-url", &url]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("tried {url} (connected but got no reply")),
        "{err}"
    );
    assert!(
        err.contains("starting a managed redis-server")
            && err.contains("Fix:")
            && err.contains(&format!("port {taken}")),
        "{err}"
    );
    assert!(
        err.contains("Address already in use"),
        "redis-server's own reason is shown: {err}"
    );
    drop(squatter);
}

#[test]
fn another_program_at_the_redis_url_fails_the_start_saying_to_check_what_listens_there() {
    // An HTTP server where Redis should be: it answers the PING, so it looks
    // like a Redis until the client speaks to it.
    let http = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let at = http.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in http.incoming().flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 512];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let (code, err) = start_fails(&[], &["--redis-url", &format!("redis://127.0.0.1:{at}")]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("Fix:") && err.contains("not another program"),
        "{err}"
    );
}

#[test]
fn a_redis_that_wants_a_password_fails_the_start_with_a_fix() {
    let redis = testkit::RedisServer::start();
    let mut c = TcpStream::connect(("127.0.0.1", redis.port())).expect("connect");
    c.write_all(b"CONFIG SET requirepass hunter2\r\n")
        .expect("write");
    let mut ok = [0u8; 5];
    c.read_exact(&mut ok).expect("read");
    assert_eq!(&ok, b"+OK\r\n");
    let (code, err) = start_fails(&[], &["--redis-url", &redis.url()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("cannot connect the task client") && err.contains("Fix:"),
        "{err}"
    );
    assert!(
        err.contains("redis://:PASSWORD@HOST:PORT"),
        "names where the password goes: {err}"
    );
    assert!(
        err.contains("NOAUTH") || err.contains("uthentication"),
        "Redis' own answer is shown: {err}"
    );
}

#[test]
fn a_dead_loopback_url_with_a_password_starts_no_managed_redis_it_cannot_log_in_to() {
    // A managed redis-server has no password: one started for this URL
    // refuses the URL's own AUTH, and the start then blames "a Redis that
    // wants a password" when it is the one the orchestrator just started.
    for creds in [":secret@", "bob:secret@"] {
        let url = format!("redis://{creds}127.0.0.1:{}", port());
        let (code, err) = start_fails(&[], &["--redis-url", &url]);
        assert_eq!(code, Some(1), "{url}: {err}");
        assert!(
            !err.contains("started a managed redis-server"),
            "{url}: a managed redis-server without the URL's password was started: {err}"
        );
        assert!(
            err.contains("tried redis://127.0.0.1:")
                && err.contains("password")
                && err.contains("Fix:"),
            "{url}: says what was tried and why no managed redis-server: {err}"
        );
        assert!(!err.contains("secret"), "{url}: the password leaked: {err}");
    }
}

#[test]
fn managed_mode_is_turned_off_by_the_environment_with_1_as_well_as_true() {
    for value in ["1", "true", "yes"] {
        let url = dead_redis_url();
        let (code, err) = start_fails(
            &[("CIRCLES_NO_MANAGED_REDIS", value)],
            &["--redis-url", &url],
        );
        assert_eq!(code, Some(1), "CIRCLES_NO_MANAGED_REDIS={value}: {err}");
        assert!(
            err.contains("managed redis-server is turned off"),
            "CIRCLES_NO_MANAGED_REDIS={value} did not turn managed mode off: {err}"
        );
    }
}

#[test]
fn a_malformed_redis_url_is_a_usage_error_exiting_2() {
    for url in ["http://127.0.0.1:6379", "127.0.0.1:6379"] {
        let (code, err) = start_fails(&[], &["--redis-url", url]);
        assert_eq!(code, Some(2), "--redis-url {url}: {err}");
        assert!(err.contains("is not a redis:// URL"), "{err}");
    }
}

#[test]
fn an_unresolvable_host_is_a_usage_error_before_redis_is_looked_for() {
    // A dead Redis URL with managed mode on: were the host checked only
    // when circles bind, a managed redis-server would be started first.
    let url = dead_redis_url();
    let (code, err) = start_fails(&[], &["--host", "no such host!", "--redis-url", &url]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--host no such host!"), "{err}");
    assert!(!err.contains("redis"), "nothing about Redis yet: {err}");
}

#[test]
fn without_redis_server_on_path_the_error_says_how_to_install_it() {
    let empty_bin = tempfile::tempdir().expect("tempdir");
    let path = empty_bin.path().to_str().expect("utf-8 temp path");
    let url = dead_redis_url();
    let (code, err) = start_fails(&[("PATH", path)], &["--redis-url", &url]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("redis-server on PATH") && err.contains("apt-get install"),
        "{err}"
    );
}

/// One circle `name` on a free port, with a Redis URL nothing answers on, so
/// the orchestrator starts a managed redis-server there; returns once the
/// table is up: the sandbox, the Redis port, the circle's port and the process.
fn with_managed_redis(name: &str) -> (Sandbox, u16, u16, Orchestrator) {
    let sandbox = Sandbox::new();
    let redis_port = port();
    let p = port();
    let config = sandbox.circles(&[(1, name, p)]);
    let mut cmd = sandbox.command();
    cmd.arg(&config).args([
        "--redis-url",
        &format!("redis://127.0.0.1:{redis_port}"),
        "--output",
        "plain",
    ]);
    let mut orchestrator = Orchestrator::spawn(cmd);
    orchestrator.wait_table();
    (sandbox, redis_port, p, orchestrator)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_redis_is_started_when_none_answers_and_stopped_at_exit() {
    let (sandbox, redis_port, p, mut orchestrator) = with_managed_redis("Solo");
    assert!(
        orchestrator.stdout().contains("(managed"),
        "{}",
        orchestrator.stdout()
    );
    assert!(
        redis_answers(redis_port),
        "managed redis-server is not answering"
    );
    let data = sandbox.path().join(".hero").join("circles");
    assert!(
        data.join("redis").join("redis.log").is_file(),
        "redis data lives under the data dir"
    );
    let mut ws = connect(p).await;
    assert_eq!(output(&mut ws, "40 + 2").await, "42");
    drop(ws);
    assert_eq!(
        orchestrator.stop().code(),
        Some(0),
        "{}",
        orchestrator.stderr()
    );
    assert!(
        !redis_answers(redis_port),
        "managed redis-server still running after exit"
    );
    assert!(
        data.join("redis").join("appendonlydir").is_dir(),
        "append-only file is on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_data_dir_holds_the_managed_redis_too() {
    // redis-server enters its --dir before it opens its --logfile: a relative
    // path given for both would name a log file under the dir itself.
    let sandbox = Sandbox::new();
    let redis_port = port();
    let p = port();
    let config = sandbox.circles(&[(1, "Relative", p)]);
    let mut cmd = sandbox.command();
    cmd.arg(&config).args([
        "--redis-url",
        &format!("redis://127.0.0.1:{redis_port}"),
        "--data-dir",
        "rel-data",
        "--output",
        "plain",
    ]);
    let mut orchestrator = Orchestrator::spawn(cmd);
    orchestrator.wait_table();
    assert!(
        redis_answers(redis_port),
        "managed redis-server is not answering"
    );
    let data = sandbox.path().join("rel-data");
    assert!(
        data.join("redis").join("redis.log").is_file(),
        "the managed redis-server logs under the relative data dir"
    );
    let mut ws = connect(p).await;
    assert_eq!(output(&mut ws, "db::insert(1)").await, "1");
    drop(ws);
    assert_eq!(
        orchestrator.stop().code(),
        Some(0),
        "{}",
        orchestrator.stderr()
    );
    assert!(data.join("1").is_dir(), "circle 1 lives in <data-dir>/1/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_redis_still_loading_its_data_is_waited_for_at_start() {
    // A restarted Redis answers LOADING while it reads its append-only file;
    // with a few MB of it the start may see it (not asserted here: how long
    // loading lasts is up to the machine; the next test makes it slow on
    // purpose and asserts the wait).
    let (sandbox, redis_port, p, mut orchestrator) = with_managed_redis("Loader");
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{redis_port}"))
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    for chunk in 0..20 {
        let mut pipe = redis::pipe();
        for i in 0..10_000 {
            pipe.cmd("SET")
                .arg(format!("ballast:{chunk}:{i}"))
                .arg("x".repeat(100))
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await.expect("ballast");
    }
    drop(conn);
    let mut ws = connect(p).await;
    assert_eq!(output(&mut ws, "db::insert(1)").await, "1");
    drop(ws);
    assert_eq!(orchestrator.stop().code(), Some(0));

    for round in 0..3 {
        let mut again = Orchestrator::spawn({
            let mut cmd = sandbox.command();
            cmd.arg(sandbox.path().join("circles.json")).args([
                "--redis-url",
                &format!("redis://127.0.0.1:{redis_port}"),
                "--output",
                "plain",
            ]);
            cmd
        });
        again.wait_table();
        let mut ws = connect(p).await;
        assert_eq!(
            output(&mut ws, "db::next_id()").await,
            (2 + round).to_string()
        );
        assert_eq!(
            output(&mut ws, "db::insert(1)").await,
            (2 + round).to_string()
        );
        drop(ws);
        assert_eq!(again.stop().code(), Some(0), "{}", again.stderr());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_still_loading_its_data_is_waited_for_and_the_wait_is_said() {
    let sandbox = Sandbox::new();
    let (_loading, redis_port) = common::loading::loading_redis(&sandbox).await;
    let url = format!("redis://127.0.0.1:{redis_port}");
    let p = port();
    let config = sandbox.circles(&[(1, "Patient", p)]);
    let mut orchestrator = Orchestrator::start(&sandbox, &config, &url, &[]);
    orchestrator.wait_table();
    orchestrator.wait_stderr(
        &format!("redis at 127.0.0.1:{redis_port} is loading its data; waiting for it"),
        Duration::from_secs(10),
    );
    let mut ws = connect(p).await;
    assert_eq!(output(&mut ws, "40 + 2").await, "42");
    assert_eq!(
        orchestrator.stop().code(),
        Some(0),
        "{}",
        orchestrator.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_redis_that_dies_is_restarted_and_circles_serve_again() {
    let (_sandbox, redis_port, p, mut orchestrator) = with_managed_redis("Phoenix");
    let mut ws = connect(p).await;
    assert_eq!(output(&mut ws, "db::insert(1)").await, "1");
    common::managed::kill_redis(redis_port);
    orchestrator.wait_stdout(
        "redis-server died and was restarted (1 times",
        Duration::from_secs(30),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = common::play(&mut ws, 2, "db::insert(2)").await;
        if reply["result"]["output"] == "2" {
            break;
        }
        assert_eq!(
            reply["error"]["code"], -32002,
            "only broker errors while it restarts: {reply}"
        );
        assert!(
            Instant::now() < deadline,
            "circle never served again: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The restart ran on tokio's blocking pool, whose idle threads end after
    // 10 s; the new server dies with the thread that forked it, so it must
    // not have been that one.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(
        redis_answers(redis_port),
        "the restarted redis-server died with the thread that asked for it"
    );
    assert_eq!(output(&mut ws, "db::get(2)").await, "2");
    drop(ws);
    assert_eq!(
        orchestrator.stop().code(),
        Some(0),
        "{}",
        orchestrator.stderr()
    );
    assert!(
        !redis_answers(redis_port),
        "managed redis-server still running after exit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_orchestrators_starting_at_once_on_one_silent_url_share_one_managed_redis() {
    // A worker and a gateway of one circle on one machine, started together
    // against a loopback URL nothing answers on: both look, find nothing and
    // start a managed redis-server; the one that binds the port second sees
    // the first one's answer and uses it, managing none. The race is not
    // forced (a second process that finds the first one's Redis at its first
    // PING starts none); the unit tests of redis_setup/managed.rs prove the
    // two outcomes deterministically, and this shows the whole of it.
    let sandbox = Sandbox::new();
    let redis_port = port();
    let p = port();
    let config = sandbox.circles(&[(1, "Twin", p)]);
    let url = format!("redis://127.0.0.1:{redis_port}");
    let mut both: Vec<Orchestrator> = ["worker", "gateway"]
        .into_iter()
        .map(|role| {
            let mut cmd = sandbox.command();
            cmd.arg(&config)
                .args(["--redis-url", &url, "--role", role, "--output", "plain"])
                .arg("--data-dir")
                .arg(sandbox.path().join(role));
            Orchestrator::spawn(cmd)
        })
        .collect();
    for o in &mut both {
        o.wait_table();
    }
    let mut ws = connect(p).await;
    assert_eq!(output(&mut ws, "40 + 2").await, "42");
    drop(ws);
    // The monitor looks every 0.5 s: a managed server that lost the port
    // would have been found dead and restarted by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let said = |o: &Orchestrator| o.stdout() + &o.stderr();
    for o in &both {
        assert!(!said(o).contains("restarted"), "{}", said(o));
    }
    let managing: Vec<usize> = (0..2)
        .filter(|&i| both[i].stdout().contains("(managed"))
        .collect();
    assert_eq!(
        managing.len(),
        1,
        "one manages it: {}{}",
        said(&both[0]),
        said(&both[1])
    );
    let (owner, other) = (managing[0], 1 - managing[0]);
    assert_eq!(
        both[other].stop().code(),
        Some(0),
        "{}",
        both[other].stderr()
    );
    assert!(
        redis_answers(redis_port),
        "the other's exit leaves Redis up"
    );
    assert_eq!(
        both[owner].stop().code(),
        Some(0),
        "{}",
        both[owner].stderr()
    );
    assert!(
        redis_gone_within(redis_port, Duration::from_secs(10)),
        "its manager stops it at exit"
    );
}

/// Polls until nothing answers PING on `port`; false if something still does
/// after `timeout`.
fn redis_gone_within(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while redis_answers(port) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_orchestrator_takes_its_managed_redis_down_with_it() {
    let (sandbox, redis_port, p, mut orchestrator) = with_managed_redis("Orphan");
    let mut ws = connect(p).await;
    assert_eq!(output(&mut ws, "db::insert(7)").await, "1");
    drop(ws);
    assert!(
        redis_answers(redis_port),
        "managed redis-server is not answering"
    );
    orchestrator.signal("KILL");
    let status = orchestrator.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), None, "SIGKILL ends it without an exit code");
    assert!(
        redis_gone_within(redis_port, Duration::from_secs(15)),
        "the managed redis-server outlived its SIGKILLed orchestrator"
    );
    let log = std::fs::read_to_string(sandbox.path().join(".hero/circles/redis/redis.log"))
        .expect("read redis.log");
    assert!(
        log.contains("Received SIGTERM") && log.contains("ready to exit"),
        "redis-server was not shut down gracefully (SIGTERM, AOF flushed):\n{log}"
    );
}

#[test]
fn sigint_also_shuts_down_cleanly_and_sighup_reloads_instead() {
    let redis = testkit::RedisServer::start();
    // SIGHUP re-reads circles.json (DESIGN §7): the orchestrator serves on.
    {
        let sandbox = Sandbox::new();
        let config = sandbox.circles(&[(1, "Calm", port())]);
        let mut o = Orchestrator::start(&sandbox, &config, &redis.url(), &[]);
        o.wait_table();
        o.signal("HUP");
        o.wait_stdout("reload applied: nothing changed", Duration::from_secs(30));
        assert!(
            o.child.try_wait().expect("try_wait").is_none(),
            "{}",
            o.stderr()
        );
        assert!(o.stop().success(), "{}", o.stderr());
    }
    {
        let signal = "INT";
        let sandbox = Sandbox::new();
        let config = sandbox.circles(&[(1, "Calm", port())]);
        let mut o = Orchestrator::start(&sandbox, &config, &redis.url(), &[]);
        o.wait_table();
        o.signal(signal);
        let status = o.wait_exit(Duration::from_secs(30));
        assert_eq!(status.code(), Some(0), "SIG{signal}: {}", o.stderr());
        assert!(
            o.stderr().contains(&format!("SIG{signal} received")),
            "{}",
            o.stderr()
        );
        assert!(o.stdout().trim_end().ends_with("stopped"), "{}", o.stdout());
    }
}

/// Whether a task of the Redis on `port` is `processing` (a script runs).
fn a_script_runs(port: u16) -> bool {
    let keys = testkit::command(port, &["KEYS", "rhai_task_details:*"]).expect("keys");
    keys.items().iter().filter_map(|k| k.text()).any(|key| {
        testkit::command(port, &["HGET", key, "status"])
            .ok()
            .is_some_and(|s| s.text() == Some("processing"))
    })
}

/// An orchestrator of one circle whose worker runs an endless script (sent
/// by a `play` process, returned too), with a shutdown grace of 1 s.
fn running_a_script(
    sandbox: &Sandbox,
    redis: &testkit::RedisServer,
) -> (Orchestrator, std::process::Child) {
    let circle = port();
    let config = sandbox.circles(&[(1, "Busy", circle)]);
    let long = [
        "--shutdown-grace",
        "1s",
        "--script-timeout",
        "120s",
        "--max-operations",
        "100000000000",
    ];
    let mut o = Orchestrator::start(sandbox, &config, &redis.url(), &long);
    o.wait_table();
    let mut play = sandbox.command();
    play.args(["play", "--url", &common::ws(circle), "loop { }"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let play = play.spawn().expect("spawn play");
    testkit::wait_for("the script to run", Duration::from_secs(30), || {
        a_script_runs(redis.port()).then_some(())
    });
    (o, play)
}

#[test]
fn a_stop_signal_sent_twice_at_once_is_one_request_and_a_later_one_stops_at_once() {
    let redis = testkit::RedisServer::start();
    // As `timeout(1)` sends it: to the process, then to its process group.
    // The shutdown waits for the servers' drain (5 s) and the grace (1 s).
    {
        let sandbox = Sandbox::new();
        let (mut o, mut play) = running_a_script(&sandbox, &redis);
        // Both from one shell (its `kill` a builtin), 50 ms apart: far
        // enough not to arrive as one, well within 250 ms.
        let pid = o.pid();
        let sent = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("kill -s INT {pid}; sleep 0.05; kill -s INT {pid}"))
            .status()
            .expect("sh");
        assert!(sent.success());
        let status = o.wait_exit(Duration::from_secs(30));
        assert_eq!(status.code(), Some(0), "{}", o.stderr());
        assert!(!o.stderr().contains("received again"), "{}", o.stderr());
        let _ = play.kill();
        let _ = play.wait();
    }
    // A second one a while later: it stops at once, saying so.
    {
        let sandbox = Sandbox::new();
        let (mut o, mut play) = running_a_script(&sandbox, &redis);
        o.signal("INT");
        std::thread::sleep(Duration::from_millis(1000));
        o.signal("INT");
        // Sooner than the drain (5 s) the first signal started.
        let status = o.wait_exit(Duration::from_millis(4_500));
        assert_eq!(status.code(), Some(1), "{}", o.stderr());
        assert!(
            o.stderr().contains("SIGINT received again"),
            "{}",
            o.stderr()
        );
        let _ = play.kill();
        let _ = play.wait();
    }
}

/// A SIGHUP during start-up (here while the first PING to Redis waits on a
/// frozen link) asks for a reload once started: it neither stops the start
/// nor reads as a Redis failure.
#[test]
fn a_sighup_during_start_up_is_a_reload_once_started_not_a_stop() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let proxy = testkit::Proxy::start(redis.port());
    proxy.freeze();
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    let mut o = Orchestrator::start(&sandbox, &config, &proxy.redis_url(), &[]);
    std::thread::sleep(Duration::from_millis(300));
    o.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    proxy.thaw();
    o.wait_table();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !o.stderr().contains("reload applied") && !o.stdout().contains("reload applied") {
        assert!(
            Instant::now() < deadline,
            "no reload after the start:\n{}\n{}",
            o.stdout(),
            o.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Logged before the reload, yet written by the log's own thread: it
    // may follow the reload's line on stdout.
    o.wait_stderr("SIGHUP during start-up", Duration::from_secs(10));
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}

/// A SIGTERM during start-up (here while the first PING to Redis waits on a
/// frozen link) stops the start as asked: a clean stop (exit 0) that says
/// so, with nothing started, not a failure.
#[test]
fn a_sigterm_during_start_up_stops_cleanly_with_nothing_started() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let proxy = testkit::Proxy::start(redis.port());
    proxy.freeze();
    let circle_port = port();
    let config = sandbox.circles(&[(1, "Alpha", circle_port)]);
    let mut o = Orchestrator::start(&sandbox, &config, &proxy.redis_url(), &[]);
    std::thread::sleep(Duration::from_millis(300));
    o.signal("TERM");
    let status = o.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{}", o.stderr());
    assert!(
        o.stderr()
            .contains("SIGTERM during start-up: stopped; nothing was started"),
        "{}",
        o.stderr()
    );
    assert!(!o.stderr().contains("error"), "{}", o.stderr());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", circle_port)).is_err(),
        "the circle's port was never served"
    );
}

/// The allocator gives memory freed after a burst back to the system on its
/// own threads (jemalloc's background threads), so an idle orchestrator
/// does not keep the peak of its busiest moment.
#[test]
fn the_allocator_returns_freed_memory_on_background_threads() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    let mut orch = Orchestrator::start(&sandbox, &config, &redis.url(), &[]);
    orch.wait_table();
    let tasks =
        std::fs::read_dir(format!("/proc/{}/task", orch.pid())).expect("the process's threads");
    let names: Vec<String> = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    assert!(
        names.iter().any(|n| n == "jemalloc_bg_thd"),
        "no jemalloc background thread among {names:?}"
    );
    assert_eq!(orch.stop().code(), Some(0), "stderr:\n{}", orch.stderr());
}

/// A stop or reload signal that comes before the orchestrator has hooked
/// its signals in tokio (here while it reads circles.json from a FIFO no
/// one has written yet) is kept, not left to its default action, which
/// kills the process: a SIGHUP asks for a reload once started, and a
/// SIGTERM (twice at once, too) stops the start as cleanly as a later one
/// does.
#[test]
fn a_signal_before_the_config_is_read_is_kept_not_fatal() {
    for (signal, said) in [
        ("HUP", "SIGHUP during start-up"),
        (
            "TERM",
            "SIGTERM during start-up: stopped; nothing was started",
        ),
    ] {
        let sandbox = Sandbox::new();
        let redis = testkit::RedisServer::start();
        let fifo = fifo_config(&sandbox);
        let mut o =
            Orchestrator::spawn(sandbox.serve_command(&fifo, &redis.url(), &sandbox.data_dir()));
        // Caught (SigCgt holds SIGTERM's bit) while still blocked on the
        // FIFO: the signal comes before the config is read.
        until_hooked_early(o.pid());
        o.signal(signal);
        // Sent twice at once, as `timeout` does (to the process, then its
        // group): the same request.
        o.signal(signal);
        let config = format!(r#"[{{"id": 1, "name": "Alpha", "port": {}}}]"#, port());
        std::fs::write(&fifo, &config).expect("write the config into the FIFO");
        o.wait_stderr(said, Duration::from_secs(15));
        if signal == "HUP" {
            // The reload reads the FIFO again.
            std::fs::write(&fifo, &config).expect("write the config again");
            o.wait_stdout("reload applied", Duration::from_secs(15));
            assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
        } else {
            let status = o.wait_exit(Duration::from_secs(15));
            assert_eq!(status.code(), Some(0), "{}", o.stderr());
        }
    }
}

/// A start stuck before it hooks its signals in tokio (circles.json a FIFO
/// no one writes, as on a hung file system) still ends on a second Ctrl-C
/// (SIGINT), as a process that keeps the default action would on the first.
#[test]
fn a_second_sigint_ends_a_start_stuck_before_its_signals_are_hooked() {
    use std::os::unix::process::ExitStatusExt;
    let sandbox = Sandbox::new();
    let fifo = fifo_config(&sandbox);
    let mut o = Orchestrator::spawn(sandbox.serve_command(
        &fifo,
        "redis://127.0.0.1:1",
        &sandbox.data_dir(),
    ));
    until_hooked_early(o.pid());
    o.signal("INT");
    o.signal("INT");
    let status = o.wait_exit(Duration::from_secs(15));
    assert_eq!(status.signal(), Some(2), "{status:?}: {}", o.stderr());
}

/// Waits until process `pid` catches SIGHUP, SIGINT and SIGTERM (bits 0, 1
/// and 14 of its `SigCgt` mask): the early hooks are all in place.
fn until_hooked_early(pid: u32) {
    testkit::wait_for("the signals caught", Duration::from_secs(10), || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let caught = status.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
        let mask = u64::from_str_radix(caught.trim(), 16).ok()?;
        let all = (1 << 0) | (1 << 1) | (1 << 14);
        (mask & all == all).then_some(())
    });
}

/// A FIFO as the sandbox's circles.json: the orchestrator blocks reading it
/// until the test writes the config into it.
fn fifo_config(sandbox: &Sandbox) -> std::path::PathBuf {
    let fifo = sandbox.path().join("circles.json");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo");
    fifo
}
