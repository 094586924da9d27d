//! SIGHUP re-reads circles.json while clients stay connected: added circles
//! serve, removed ones close their sockets with 1001 and free their port,
//! changed ones restart with their new settings, untouched ones keep their
//! connections and answer every request (one in flight during the reload
//! included); an invalid file changes nothing and says why. The same through
//! the admin endpoint: `circles_orchestrator reload` (its output and exit
//! codes, with and without the admin token) and `POST /api/reload` (POST
//! only, same origin only, the token when one is set).

mod common;

use std::net::SocketAddr;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use common::http::{self, start_with_admin};
use common::tasks::queue_slow_tasks;
use common::{Orchestrator, Sandbox, Ws, connect, listens, output, play, port, run_to_end, send};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const RELOAD_DEADLINE: Duration = Duration::from_secs(60);

/// The close code the server sent, reading past anything else.
async fn close_code(ws: &mut Ws) -> Option<CloseCode> {
    let next = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), next)
        .await
        .expect("the server closes within 30 s")
}

fn write_circles(sandbox: &Sandbox, circles: &[(u32, &str, u16)]) {
    let list: Vec<Value> = circles
        .iter()
        .map(|(id, name, port)| json!({"id": id, "name": name, "port": port}))
        .collect();
    // Written whole and renamed, as an editor or a deploy tool does.
    let tmp = sandbox.write("circles.json.new", &Value::Array(list).to_string());
    std::fs::rename(tmp, sandbox.path().join("circles.json")).expect("rename");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_removes_and_changes_circles_while_an_untouched_circles_client_keeps_its_connection()
 {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, b, c, c2, d) = (port(), port(), port(), port(), port());
    let config = sandbox.circles(&[(1, "Alpha", a), (2, "Beta", b), (3, "Gamma", c)]);
    let mut o = Orchestrator::start(
        &sandbox,
        &config,
        &redis.url(),
        &["--max-operations", "100000000"],
    );
    o.wait_table();

    let mut alpha = connect(a).await;
    let mut beta = connect(b).await;
    assert_eq!(output(&mut alpha, "db::insert(#{ n: 1 })").await, "1");
    assert_eq!(output(&mut beta, "40 + 2").await, "42");
    let gamma_id = {
        let mut gamma = connect(c).await;
        output(&mut gamma, "db::insert(#{ g: 7 })").await
    };

    // A request in flight on the untouched circle while the reload runs.
    // About a second of work, so it runs while the reload drains Beta.
    let slow = "let x = 0; for i in 0..1500000 { x += 1; } x";
    send(
        &mut alpha,
        &json!({"jsonrpc": "2.0", "id": 7, "method": "play", "params": {"script": slow}})
            .to_string(),
    )
    .await;
    // Tasks queued on the circle about to be removed, as a third party
    // pushes them (hash first, then the id): the drain works them off.
    let mut redis_conn = redis::Client::open(redis.url())
        .expect("redis url")
        .get_connection()
        .expect("redis connection");
    let queued: Vec<String> = (0..3).map(|i| format!("reload-test-{i}")).collect();
    for id in &queued {
        let () = redis::pipe()
            .atomic()
            .hset_multiple(
                client::keys::task_details(id),
                &[
                    ("script", "let x = 0; for i in 0..300000 { x += 1; } x"),
                    ("status", "pending"),
                ],
            )
            .lpush(client::keys::tasks("beta"), id)
            .query(&mut redis_conn)
            .expect("queue a task");
    }
    write_circles(
        &sandbox,
        &[(1, "Alpha", a), (3, "Gamma Two", c2), (4, "Delta", d)],
    );
    o.signal("HUP");

    // Beta's client is told the server is going away.
    assert_eq!(close_code(&mut beta).await, Some(CloseCode::Away));
    o.wait_stdout("reload applied", RELOAD_DEADLINE);
    let out = o.stdout();
    assert!(
        out.contains("added \"Delta\"")
            && out.contains("removed \"Beta\"")
            && out.contains("changed \"Gamma Two\""),
        "{out}"
    );

    for id in &queued {
        let (status, output): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(client::keys::task_details(id))
            .arg("status")
            .arg("output")
            .query(&mut redis_conn)
            .expect("read a task");
        assert_eq!(
            (status.as_deref(), output.as_deref()),
            (Some("completed"), Some("300000")),
            "task {id} queued on the removed circle"
        );
    }

    // The untouched circle's connection carries on: the reply to the request
    // in flight, then more requests on the same socket.
    let reply = common::recv(&mut alpha).await;
    assert_eq!(reply["id"], json!(7), "{reply}");
    assert_eq!(reply["result"]["output"], "1500000", "{reply}");
    let reply = play(&mut alpha, 8, "db::get(1).n").await;
    assert_eq!(reply["result"]["output"], "1", "{reply}");

    // Removed: the orchestrator no longer listens on its port. Changed: the
    // new port serves the same database (same id), the old one is closed.
    // Added: serves. (Asked of the process, so a parallel test that binds
    // the freed port cannot fail this.)
    assert!(
        !listens(o.pid(), b),
        "the removed circle's port still accepts"
    );
    assert!(
        !listens(o.pid(), c),
        "the changed circle's old port still accepts"
    );
    let mut gamma = connect(c2).await;
    assert_eq!(
        output(&mut gamma, &format!("db::get({gamma_id}).g")).await,
        "7"
    );
    let mut delta = connect(d).await;
    assert_eq!(output(&mut delta, "db::next_id()").await, "1");
    // A new client of the untouched circle connects as before.
    let mut alpha2 = connect(a).await;
    assert_eq!(output(&mut alpha2, "db::get(1).n").await, "1");
    assert!(
        o.stdout().contains("Delta (id 4)"),
        "the added circle gets a line: {}",
        o.stdout()
    );

    drop((alpha, alpha2, gamma, delta));
    assert!(o.stop().success(), "{}", o.stderr());
    assert!(!o.stderr().contains("error accepting"), "{}", o.stderr());
}

/// The last JSON snapshot on stdout.
fn last_snapshot(stdout: &str) -> Value {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .expect("a JSON snapshot");
    serde_json::from_str(line).expect("snapshot is JSON")
}

fn wait_snapshot(o: &mut Orchestrator, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + RELOAD_DEADLINE;
    loop {
        let out = o.stdout();
        if out.lines().any(|l| l.starts_with('{')) {
            let snap = last_snapshot(&out);
            if ok(&snap) {
                return snap;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot with {what}:\n{out}\n{}",
            o.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_changes_nothing_and_says_why_then_a_good_one_applies() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, b) = (port(), port());
    let config = sandbox.circles(&[(1, "Alpha", a), (2, "Beta", b)]);
    let mut o = Orchestrator::start(&sandbox, &config, &redis.url(), &["--output", "json"]);
    let mut alpha = connect(a).await;
    let mut beta = connect(b).await;
    assert_eq!(output(&mut alpha, "1").await, "1");

    // A duplicate port: invalid, so nothing changes.
    sandbox.write(
        "circles.json",
        &json!([
            {"id": 1, "name": "Alpha", "port": a},
            {"id": 2, "name": "Beta", "port": a}
        ])
        .to_string(),
    );
    o.signal("HUP");
    let snap = wait_snapshot(&mut o, "a failed reload", |s| s["reload"]["seq"] == 1);
    assert_eq!(snap["reload"]["applied"], false, "{snap}");
    assert_eq!(snap["reload"]["error"]["kind"], "invalid_config", "{snap}");
    let message = snap["reload"]["error"]["message"]
        .as_str()
        .expect("message");
    assert!(
        message.contains("circles.json") && message.contains(&a.to_string()),
        "the message names the file and the duplicate port: {message}"
    );
    // Logged before the snapshot, read from its own pipe.
    o.wait_stderr("failed: ", Duration::from_secs(10));
    assert!(o.stderr().contains("reload of"), "{}", o.stderr());
    let names: Vec<&str> = snap["circles"]
        .as_array()
        .expect("circles")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["Alpha", "Beta"]);
    assert_eq!(output(&mut alpha, "2").await, "2");
    assert_eq!(output(&mut beta, "3").await, "3");

    // A good file: Beta renamed on the same port (its socket is closed and
    // bound again), Alpha untouched (its uptime goes on: 3 s and more).
    std::thread::sleep(Duration::from_secs(3));
    sandbox.circles(&[(1, "Alpha", a), (2, "Beta Renamed", b)]);
    o.signal("HUP");
    let snap = wait_snapshot(&mut o, "an applied reload", |s| {
        s["reload"]["seq"] == 2
            && s["circles"].as_array().is_some_and(|c| {
                c.iter()
                    .all(|c| c["server"] == "running" && c["worker"] == "running")
            })
    });
    assert_eq!(snap["reload"]["applied"], true, "{snap}");
    assert_eq!(
        snap["reload"]["summary"]["changed"],
        json!(["Beta Renamed"]),
        "{snap}"
    );
    assert_eq!(snap["reload"]["error"], Value::Null, "{snap}");
    assert_eq!(snap["circles"][1]["name"], "Beta Renamed", "{snap}");
    assert!(
        snap["circles"][0]["uptime_secs"].as_u64() >= Some(3),
        "the untouched circle kept serving, its uptime with it: {snap}"
    );
    assert_eq!(close_code(&mut beta).await, Some(CloseCode::Away));
    let mut beta = connect(b).await;
    assert_eq!(output(&mut beta, "4").await, "4");
    assert_eq!(output(&mut alpha, "5").await, "5");

    drop((alpha, beta));
    assert!(o.stop().success(), "{}", o.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_a_removed_circle_cannot_finish_in_time_end_cancelled_naming_the_reload() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, b) = (port(), port());
    let config = sandbox.circles(&[(1, "Alpha", a), (2, "Beta", b)]);
    // No grace: the drain of a removed circle waits 5 s for its queue.
    let (mut o, addr) = start_with_admin(
        &sandbox,
        &config,
        &redis,
        &["--shutdown-grace", "0s", "--max-operations", "100000000"],
    );
    let mut conn = redis::Client::open(redis.url())
        .expect("redis url")
        .get_connection()
        .expect("redis connection");
    let ids: Vec<String> = (0..40).map(|i| format!("backlog-{i}")).collect();
    for id in &ids {
        let () = redis::pipe()
            .atomic()
            .hset_multiple(
                client::keys::task_details(id),
                &[
                    ("script", "let x = 0; for i in 0..1000000 { x += 1; } x"),
                    ("status", "pending"),
                ],
            )
            .lpush(client::keys::tasks("beta"), id)
            .query(&mut conn)
            .expect("queue a task");
    }
    sandbox.circles(&[(1, "Alpha", a)]);
    o.signal("HUP");
    // While Beta drains (5 s), the process stays ready: Beta goes as asked.
    let mut looked = 0;
    let deadline = Instant::now() + RELOAD_DEADLINE;
    while !o.stdout().contains("reload applied") {
        assert!(Instant::now() < deadline, "{}", o.stdout());
        let ready = http::get(addr, "/readyz", &[]);
        assert_eq!(ready.code, 200, "{}", ready.body);
        looked += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(looked >= 10, "the drain took {looked} looks of 100 ms");

    let mut cancelled_by_reload = 0;
    for id in &ids {
        let (status, kind, error): (Option<String>, Option<String>, Option<String>) =
            redis::cmd("HMGET")
                .arg(client::keys::task_details(id))
                .arg("status")
                .arg("errorKind")
                .arg("error")
                .query(&mut conn)
                .expect("read a task");
        match status.as_deref() {
            Some("completed") => {}
            Some("error") => {
                assert_eq!(kind.as_deref(), Some("cancelled"), "{id}: {error:?}");
                if error
                    .as_deref()
                    .is_some_and(|e| e.contains("reload of circles.json"))
                {
                    cancelled_by_reload += 1;
                }
            }
            other => panic!("task {id} of the removed circle did not end: {other:?}"),
        }
    }
    assert!(
        cancelled_by_reload > 0,
        "40 tasks of about a second each cannot all run in 5 s"
    );
    let queued: i64 = redis::cmd("LLEN")
        .arg(client::keys::tasks("beta"))
        .query(&mut conn)
        .expect("LLEN");
    assert_eq!(queued, 0);
    let mut alpha = connect(a).await;
    assert_eq!(output(&mut alpha, "1").await, "1");
    drop(alpha);
    assert!(o.stop().success(), "{}", o.stderr());
}

/// Runs `circles_orchestrator reload --admin ADDR` with `args` and `env`;
/// its exit status, stdout and stderr.
fn reload_command(
    sandbox: &Sandbox,
    addr: SocketAddr,
    args: &[&str],
    env: &[(&str, &str)],
) -> (ExitStatus, String, String) {
    let mut cmd = sandbox.command();
    cmd.args(["reload", "--admin", &addr.to_string()])
        .args(args);
    for (name, value) in env {
        cmd.env(name, value);
    }
    run_to_end(cmd, RELOAD_DEADLINE)
}

/// `GET /api/status` (with `headers`) as JSON.
fn status(addr: SocketAddr, headers: &[&str]) -> Value {
    let answer = http::get(addr, "/api/status", headers);
    assert_eq!(answer.code, 200, "{}", answer.body);
    serde_json::from_str(&answer.body).expect("a JSON snapshot")
}

fn names(snap: &Value) -> Vec<String> {
    snap["circles"]
        .as_array()
        .expect("circles")
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reload_command_adds_a_circle_that_serves_and_prints_what_changed() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, d) = (port(), port());
    let config = sandbox.circles(&[(1, "Alpha", a)]);
    let (mut o, addr) = start_with_admin(&sandbox, &config, &redis, &[]);
    let mut alpha = connect(a).await;
    assert_eq!(output(&mut alpha, "1").await, "1");

    write_circles(&sandbox, &[(1, "Alpha", a), (4, "Delta", d)]);
    let (code, stdout, stderr) = reload_command(&sandbox, addr, &[], &[]);
    assert_eq!(code.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(
        stdout.trim(),
        r#"reload applied: added "Delta""#,
        "{stderr}"
    );

    let mut delta = connect(d).await;
    assert_eq!(output(&mut delta, "40 + 2").await, "42");
    assert_eq!(output(&mut alpha, "2").await, "2", "untouched");
    assert_eq!(names(&status(addr, &[])), ["Alpha", "Delta"]);

    let (code, stdout, stderr) = reload_command(&sandbox, addr, &[], &[]);
    assert_eq!(code.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), "reload applied: nothing changed");

    drop((alpha, delta));
    assert!(o.stop().success(), "{}", o.stderr());
}

/// The sockets the process at `pid` holds open.
fn sockets_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the orchestrator's fds")
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circle_added_and_removed_again_and_again_leaves_no_socket_open() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, d) = (port(), port());
    let config = sandbox.circles(&[(1, "Alpha", a)]);
    let (mut o, addr) = start_with_admin(&sandbox, &config, &redis, &[]);
    let cycle = || {
        write_circles(&sandbox, &[(1, "Alpha", a), (4, "Delta", d)]);
        let (code, out, err) = reload_command(&sandbox, addr, &[], &[]);
        assert_eq!(code.code(), Some(0), "{out}{err}");
        write_circles(&sandbox, &[(1, "Alpha", a)]);
        let (code, out, err) = reload_command(&sandbox, addr, &[], &[]);
        assert_eq!(out.trim(), r#"reload applied: removed "Delta""#, "{err}");
        assert_eq!(code.code(), Some(0), "{out}{err}");
    };
    // The first cycle moves Alpha to a host of its own; from then on the
    // process holds the same sockets after each cycle.
    cycle();
    let before = sockets_of(o.pid());
    for _ in 0..10 {
        cycle();
    }
    // A paused host's actix server lets its sockets go once it finds itself
    // idle, within a second. A leak of Delta's listening socket adds one per
    // cycle for good; a Redis connection being made again may add one for a
    // moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut after = sockets_of(o.pid());
    while after > before + 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        after = sockets_of(o.pid());
    }
    assert!(
        after <= before + 2,
        "{before} sockets before ten more cycles, {after} ten seconds after"
    );
    let mut alpha = connect(a).await;
    assert_eq!(output(&mut alpha, "40 + 2").await, "42");
    drop(alpha);
    assert!(o.stop().success(), "{}", o.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reload_command_on_an_invalid_file_exits_2_naming_the_file_and_element_and_changes_nothing()
 {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, b, d) = (port(), port(), port());
    let config = sandbox.circles(&[(1, "Alpha", a), (2, "Beta", b)]);
    let (mut o, addr) = start_with_admin(&sandbox, &config, &redis, &[]);
    let mut alpha = connect(a).await;
    let mut beta = connect(b).await;

    // Beta takes Alpha's port: invalid, so Delta does not start either.
    write_circles(
        &sandbox,
        &[(1, "Alpha", a), (2, "Beta", a), (4, "Delta", d)],
    );
    let (code, stdout, stderr) = reload_command(&sandbox, addr, &[], &[]);
    assert_eq!(code.code(), Some(2), "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("invalid"), "{stderr}");
    assert!(
        stderr.contains("circles.json") && stderr.contains(&a.to_string()),
        "the message names the file and the duplicate port: {stderr}"
    );

    // Nothing changed: the same circles, their clients served, no Delta.
    assert!(
        !listens(o.pid(), d),
        "the invalid file's new circle started"
    );
    assert_eq!(output(&mut alpha, "2").await, "2");
    assert_eq!(output(&mut beta, "3").await, "3");
    let snap = status(addr, &[]);
    assert_eq!(names(&snap), ["Alpha", "Beta"]);
    assert_eq!(snap["reload"]["applied"], false, "{snap}");
    assert_eq!(snap["reload"]["error"]["kind"], "invalid_config", "{snap}");

    // The endpoint itself: 422 and the error as JSON.
    let answer = http::request(addr, "POST", "/api/reload", &[]);
    assert_eq!(answer.code, 422, "{}", answer.body);
    let body: Value = serde_json::from_str(&answer.body).expect("JSON");
    assert_eq!(body["error"]["kind"], "invalid_config", "{body}");
    let message = body["error"]["message"].as_str().expect("a message");
    assert!(
        message.contains("circles.json") && message.contains(&a.to_string()),
        "{message}"
    );
    assert!(stderr.contains(message), "the command prints it: {stderr}");

    drop((alpha, beta));
    assert!(o.stop().success(), "{}", o.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_whose_new_circle_cannot_start_answers_500_and_the_command_exits_1_naming_it() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let a = port();
    let config = sandbox.circles(&[(1, "Alpha", a)]);
    let (mut o, addr) = start_with_admin(&sandbox, &config, &redis, &[]);
    let mut alpha = connect(a).await;

    // Another program holds Delta's port.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let d = taken.local_addr().expect("address").port();
    write_circles(&sandbox, &[(1, "Alpha", a), (4, "Delta", d)]);
    let (code, stdout, stderr) = reload_command(&sandbox, addr, &[], &[]);
    assert_eq!(code.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains(&d.to_string()), "names the port: {stderr}");
    assert!(stdout.is_empty(), "{stdout}");

    let answer = http::request(addr, "POST", "/api/reload", &[]);
    assert_eq!(answer.code, 500, "{}", answer.body);
    let body: Value = serde_json::from_str(&answer.body).expect("JSON");
    assert_eq!(body["error"]["kind"], "cannot_start", "{body}");
    assert_eq!(output(&mut alpha, "2").await, "2", "untouched");
    let snap = status(addr, &[]);
    assert_eq!(names(&snap), ["Alpha", "Delta"]);
    assert_eq!(snap["circles"][1]["server"], "failed", "{snap}");
    assert!(!listens(o.pid(), d), "the port stays the other program's");

    drop((alpha, taken));
    assert!(o.stop().success(), "{}", o.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_of_api_reload_is_405_and_a_cross_origin_post_is_403_and_neither_reloads() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, d) = (port(), port());
    let config = sandbox.circles(&[(1, "Alpha", a)]);
    let (mut o, addr) = start_with_admin(&sandbox, &config, &redis, &[]);
    write_circles(&sandbox, &[(1, "Alpha", a), (4, "Delta", d)]);

    let answer = http::get(addr, "/api/reload", &[]);
    assert_eq!(answer.code, 405, "{}", answer.body);
    let answer = http::get(addr, "/api/reload", &["Origin: http://evil.example"]);
    assert!(
        matches!(answer.code, 403 | 405),
        "a cross-site GET: {}",
        answer.code
    );
    let answer = http::request(
        addr,
        "POST",
        "/api/reload",
        &["Origin: http://evil.example"],
    );
    assert_eq!(answer.code, 403, "{}", answer.body);
    assert!(!listens(o.pid(), d), "Delta started");
    let snap = status(addr, &[]);
    assert_eq!(snap["reload"], Value::Null, "nothing reloaded: {snap}");
    assert_eq!(names(&snap), ["Alpha"]);

    // The endpoint's own page may ask; the answer is the summary.
    let own = format!("Origin: http://{addr}");
    let answer = http::request(addr, "POST", "/api/reload", &[&own]);
    assert_eq!(answer.code, 200, "{}", answer.body);
    let body: Value = serde_json::from_str(&answer.body).expect("JSON");
    assert_eq!(
        body,
        json!({"added": ["Delta"], "removed": [], "changed": []})
    );
    let mut delta = connect(d).await;
    assert_eq!(output(&mut delta, "1").await, "1");

    drop(delta);
    assert!(o.stop().success(), "{}", o.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_admin_token_a_reload_without_it_is_401_and_changes_nothing_and_with_it_applies() {
    let sandbox = Sandbox::new();
    let mut cmd = sandbox.command();
    cmd.args(["token", "admin"]);
    let (code, made, stderr) = run_to_end(cmd, Duration::from_secs(30));
    assert!(code.success(), "{stderr}");
    let mut lines = made.lines();
    let token = lines.next().expect("the token").to_string();
    let hash = lines
        .next()
        .and_then(|l| l.strip_prefix("--admin-token-sha256 "))
        .expect("the option")
        .to_string();

    let redis = testkit::RedisServer::start();
    let (a, d) = (port(), port());
    let config = sandbox.circles(&[(1, "Alpha", a)]);
    let (mut o, addr) =
        start_with_admin(&sandbox, &config, &redis, &["--admin-token-sha256", &hash]);
    write_circles(&sandbox, &[(1, "Alpha", a), (4, "Delta", d)]);

    let answer = http::request(addr, "POST", "/api/reload", &[]);
    assert_eq!(answer.code, 401, "{}", answer.body);
    let answer = http::request(addr, "POST", "/api/reload", &["Authorization: Bearer nope"]);
    assert_eq!(answer.code, 401, "{}", answer.body);
    let (code, stdout, stderr) = reload_command(&sandbox, addr, &[], &[]);
    assert_eq!(code.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("--token"), "{stderr}");
    let (code, _, stderr) = reload_command(&sandbox, addr, &["--token", "nope"], &[]);
    assert_eq!(code.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not the one"), "{stderr}");
    // A token may start with `-` (URL-safe base64): it is a value, not a flag.
    let (code, _, stderr) = reload_command(&sandbox, addr, &["--token", "-3nope"], &[]);
    assert_eq!(code.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not the one"), "{stderr}");
    assert!(!listens(o.pid(), d), "a refused reload started Delta");
    let bearer = format!("Authorization: Bearer {token}");
    let snap = status(addr, &[&bearer]);
    assert_eq!(snap["reload"], Value::Null, "nothing reloaded: {snap}");

    let (code, stdout, stderr) =
        reload_command(&sandbox, addr, &[], &[("CIRCLES_ADMIN_TOKEN", &token)]);
    assert_eq!(code.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), r#"reload applied: added "Delta""#);
    assert!(!stderr.contains(&token), "{stderr}");
    let mut delta = connect(d).await;
    assert_eq!(output(&mut delta, "1").await, "1");

    // The flag works as the variable does.
    let (code, stdout, stderr) = reload_command(&sandbox, addr, &["--token", &token], &[]);
    assert_eq!(code.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), "reload applied: nothing changed");

    drop(delta);
    assert!(o.stop().success(), "{}", o.stderr());
}

#[test]
fn the_reload_command_with_nothing_listening_fails_saying_so() {
    let sandbox = Sandbox::new();
    let addr: SocketAddr = format!("127.0.0.1:{}", port()).parse().expect("address");
    let (code, stdout, stderr) = reload_command(&sandbox, addr, &[], &[]);
    assert_eq!(code.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("nothing answers at http://{addr}")),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_asked_while_shutting_down_is_refused_at_once_with_503_and_the_command_says_so() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, d) = (port(), port());
    let config = sandbox.circles(&[(1, "Alpha", a)]);
    let (mut o, addr) = start_with_admin(
        &sandbox,
        &config,
        &redis,
        &[
            "--max-operations",
            "1000000000000",
            "--script-timeout",
            "120s",
            "--shutdown-grace",
            "5s",
        ],
    );
    // A request in flight whose script runs on: the servers wait up to their
    // 5 s drain for its reply, so the shutdown lasts seconds.
    let mut alpha = connect(a).await;
    send(
        &mut alpha,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "play",
                "params": {"script": "let x = 0; loop { x += 1; }"}})
        .to_string(),
    )
    .await;
    let mut conn = redis::Client::open(redis.url())
        .expect("redis url")
        .get_connection()
        .expect("redis connection");
    // Running once the worker holds it in its processing list.
    let deadline = Instant::now() + RELOAD_DEADLINE;
    loop {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(client::keys::processing("alpha", "*"))
            .query(&mut conn)
            .expect("KEYS");
        let mut held = 0;
        for key in &keys {
            held += redis::cmd("LLEN")
                .arg(key)
                .query::<i64>(&mut conn)
                .expect("LLEN");
        }
        if held > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the script never started");
        std::thread::sleep(Duration::from_millis(20));
    }

    write_circles(&sandbox, &[(1, "Alpha", a), (4, "Delta", d)]);
    o.signal("TERM");
    let deadline = Instant::now() + RELOAD_DEADLINE;
    while !http::get(addr, "/readyz", &[])
        .body
        .contains("shutting down")
    {
        assert!(
            Instant::now() < deadline,
            "/readyz never said shutting down"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let answer = http::request(addr, "POST", "/api/reload", &[]);
    assert_eq!(answer.code, 503, "{}", answer.body);
    let body: Value = serde_json::from_str(&answer.body).expect("JSON");
    assert_eq!(body["error"]["kind"], "shutting_down", "{body}");
    let (code, stdout, stderr) = reload_command(&sandbox, addr, &[], &[]);
    assert_eq!(code.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("the reload was refused") && stderr.contains("shutting down"),
        "{stderr}"
    );
    // Both answers came while the drain still ran, not at its end.
    assert!(
        o.child.try_wait().expect("try_wait").is_none(),
        "answered only once the orchestrator had exited"
    );
    assert!(!listens(o.pid(), d), "Delta started during the shutdown");
    o.wait_exit(RELOAD_DEADLINE);
    assert!(
        o.stderr().contains("refused: shutting down"),
        "{}",
        o.stderr()
    );
    drop(alpha);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_the_file_gone_says_so_and_changes_nothing_and_a_removed_circle_leaves_metrics()
 {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, d) = (port(), port());
    let config = sandbox.circles(&[(1, "Alpha", a), (4, "Delta", d)]);
    let (mut o, addr) = start_with_admin(&sandbox, &config, &redis, &[]);
    let mut delta = connect(d).await;
    assert_eq!(output(&mut delta, "1").await, "1");
    drop(delta);
    let scrape = || http::get(addr, "/metrics", &[]).body;
    assert!(scrape().contains(r#"circle="Delta""#), "{}", scrape());

    // The file gone: exit 2 naming it, without the start's hint; nothing changes.
    std::fs::remove_file(&config).expect("remove circles.json");
    let (code, out, err) = reload_command(&sandbox, addr, &[], &[]);
    assert_eq!(code.code(), Some(2), "{out}{err}");
    assert!(
        err.contains(&format!(
            "{}: the circles file this orchestrator was started with is gone",
            config.display()
        )) && !err.contains("CONFIG argument"),
        "{err}"
    );
    assert!(
        err.contains("the circles file cannot be read or is invalid"),
        "a file that is gone is not called invalid alone: {err}"
    );
    assert_eq!(names(&status(addr, &[])), ["Alpha", "Delta"]);

    // Back without Delta: it goes, and so do its series; Alpha's stay.
    write_circles(&sandbox, &[(1, "Alpha", a)]);
    let (code, out, err) = reload_command(&sandbox, addr, &[], &[]);
    assert_eq!(code.code(), Some(0), "{out}{err}");
    let metrics = scrape();
    assert!(!metrics.contains(r#"circle="Delta""#), "{metrics}");
    assert!(metrics.contains(r#"circle="Alpha""#), "{metrics}");
    assert!(o.stop().success(), "{}", o.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applied_in_part_says_what_changed_and_what_stopped() {
    // Gamma moves to a port another program holds, Delta is added on a free
    // one: Delta starts, Gamma stops and cannot start again.
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, g, d) = (port(), port(), port());
    let config = sandbox.circles(&[(1, "Alpha", a), (3, "Gamma", g)]);
    let (mut o, addr) = start_with_admin(&sandbox, &config, &redis, &[]);
    let mut gamma = connect(g).await;
    assert_eq!(output(&mut gamma, "1").await, "1");
    drop(gamma);
    let scrape = || http::get(addr, "/metrics", &[]).body;
    assert!(scrape().contains(r#"circle="Gamma""#), "{}", scrape());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy = taken.local_addr().expect("address").port();
    write_circles(
        &sandbox,
        &[(1, "Alpha", a), (3, "Gamma", busy), (4, "Delta", d)],
    );
    let (code, out, err) = reload_command(&sandbox, addr, &[], &[]);
    assert_eq!(code.code(), Some(1), "{out}{err}");
    let said = r#"added "Delta", but "Gamma" (changed) could not start again and stopped"#;
    assert!(
        err.contains(said) && err.contains(&format!("port {busy}")),
        "{err}"
    );

    let snap = status(addr, &[]);
    // Gamma keeps its row, in file order, failed with why.
    assert_eq!(names(&snap), ["Alpha", "Gamma", "Delta"]);
    let gamma = &snap["circles"][1];
    for component in ["worker", "server"] {
        assert_eq!(gamma[component], "failed", "{snap}");
        let detail = gamma[format!("{component}_detail")]
            .as_str()
            .unwrap_or_default();
        assert!(
            detail.starts_with("did not start: ") && detail.contains(&format!("port {busy}")),
            "{snap}"
        );
    }
    assert_eq!(snap["reload"]["applied"], false, "{snap}");
    assert_eq!(
        snap["reload"]["summary"],
        json!({"added": ["Delta"], "removed": ["Gamma"], "changed": []}),
        "what runs now, against what ran: {snap}"
    );
    o.wait_stdout(
        &format!("reload partly applied: {said}"),
        Duration::from_secs(10),
    );
    o.wait_stdout(
        "Gamma (id 3): worker Failed: did not start: ",
        Duration::from_secs(10),
    );
    let mut delta = connect(d).await;
    assert_eq!(output(&mut delta, "40 + 2").await, "42");
    // The stopped circle's series went with it, as a removed circle's do,
    // but for the one that says it is down.
    let metrics = scrape();
    let gamma: Vec<&str> = (metrics.lines())
        .filter(|l| l.contains(r#"circle="Gamma""#))
        .collect();
    assert_eq!(
        gamma,
        [r#"circles_circle_up{circle="Gamma"} 0"#],
        "{metrics}"
    );
    assert!(metrics.contains(r#"circle="Delta""#), "{metrics}");
    // Not ready while a circle of the file is stopped, ready once a reload
    // starts it.
    let ready = http::get(addr, "/readyz", &[]);
    assert_eq!(ready.code, 503, "{}", ready.body);
    assert!(
        ready.body.contains(r#""component":"reload""#)
            && serde_json::from_str::<Value>(&ready.body).expect("JSON")["not_ready"]
                .as_array()
                .expect("not_ready")
                .iter()
                .any(|n| n["circle"] == "Gamma"
                    && n["state"] == "failed"
                    && n["reason"]
                        .as_str()
                        .is_some_and(|r| r.starts_with("did not start: "))),
        "{}",
        ready.body
    );
    // A refused reload (an invalid file) starts nothing: still not ready.
    sandbox.write("circles.json", r#"[{"id": 1, "name": "Alpha""#);
    let (code, out, err) = reload_command(&sandbox, addr, &[], &[]);
    assert_eq!(code.code(), Some(2), "{out}{err}");
    assert_eq!(names(&status(addr, &[])), ["Alpha", "Gamma", "Delta"]);
    let ready = http::get(addr, "/readyz", &[]);
    assert_eq!(ready.code, 503, "{}", ready.body);
    assert!(
        ready.body.contains(r#""component":"reload""#) && ready.body.contains("Gamma"),
        "{}",
        ready.body
    );
    write_circles(
        &sandbox,
        &[(1, "Alpha", a), (3, "Gamma", busy), (4, "Delta", d)],
    );
    drop(taken);
    let (code, out, err) = reload_command(&sandbox, addr, &[], &[]);
    assert_eq!(code.code(), Some(0), "{out}{err}");
    assert_eq!(out.trim(), r#"reload applied: added "Gamma""#, "{err}");
    // Ready once Gamma's worker, started by the reload, runs (it connects
    // and takes its lease first: `starting` meanwhile).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ready = http::get(addr, "/readyz", &[]);
        if ready.code == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline && ready.body.contains(r#""state":"starting""#),
            "{}",
            ready.body
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(delta);
    assert!(o.stop().success(), "{}", o.stderr());
}

/// One bad port does not hold back the rest of a reload: a changed circle
/// moved to a port another program holds stops, an added one on such a
/// port does not start, and every other change of the same file applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_circle_of_a_reload_that_cannot_start_stays_out_alone_and_the_others_are_applied() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, b, e) = (port(), port(), port());
    let config = sandbox.circles(&[(1, "Alpha", a), (2, "Beta", b)]);
    let (mut o, addr) = start_with_admin(&sandbox, &config, &redis, &[]);
    let taken = [
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind"),
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind"),
    ];
    let busy: Vec<u16> = taken
        .iter()
        .map(|t| t.local_addr().expect("address").port())
        .collect();
    write_circles(
        &sandbox,
        &[
            (1, "Alpha", busy[0]),
            (2, "Beta Two", b),
            (4, "Delta", busy[1]),
            (5, "Echo", e),
        ],
    );
    let (code, out, err) = reload_command(&sandbox, addr, &[], &[]);
    assert_eq!(code.code(), Some(1), "{out}{err}");
    let said = r#"added "Echo"; changed "Beta Two", but "Alpha" (changed) could not start again and stopped; "Delta" (added) did not start"#;
    assert!(err.contains(said), "{err}");
    for port in &busy {
        assert!(err.contains(&format!("port {port}")), "{err}");
    }
    let snap = status(addr, &[]);
    assert_eq!(names(&snap), ["Alpha", "Beta Two", "Delta", "Echo"]);
    let failed: Vec<&str> = (snap["circles"].as_array().expect("rows").iter())
        .filter(|r| r["worker"] == "failed" && r["server"] == "failed")
        .map(|r| r["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(failed, ["Alpha", "Delta"], "{snap}");
    assert_eq!(
        snap["reload"]["summary"],
        json!({"added": ["Echo"], "removed": ["Alpha"], "changed": ["Beta Two"]}),
        "{snap}"
    );
    let mut beta = connect(b).await;
    assert_eq!(output(&mut beta, "40 + 2").await, "42");
    let mut echo = connect(e).await;
    assert_eq!(output(&mut echo, "1 + 1").await, "2");
    // A file without the two that did not start changes nothing that runs,
    // and their rows go.
    write_circles(&sandbox, &[(2, "Beta Two", b), (5, "Echo", e)]);
    let (code, out, err) = reload_command(&sandbox, addr, &[], &[]);
    assert_eq!(code.code(), Some(0), "{out}{err}");
    assert_eq!(out.trim(), "reload applied: nothing changed", "{err}");
    assert_eq!(names(&status(addr, &[])), ["Beta Two", "Echo"]);
    assert_eq!(http::get(addr, "/readyz", &[]).code, 200);
    for gone in ["Alpha (id 1)", "Delta (id 4)"] {
        o.wait_stdout(&format!("{gone}: no longer shown"), Duration::from_secs(10));
    }
    drop((beta, echo, taken));
    assert!(o.stop().success(), "{}", o.stderr());
}

/// Two circles of a reload on one Redis that cannot be reached stay out,
/// the second told so without a second try of its own, and the rest
/// applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circles_of_a_reload_on_one_unreachable_redis_stay_out_and_the_rest_applies() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, g, d, e) = (port(), port(), port(), port());
    let config = sandbox.circles(&[(1, "Alpha", a)]);
    let (mut o, addr) = start_with_admin(&sandbox, &config, &redis, &[]);
    let away = format!("redis://127.0.0.1:{}", port());
    let list = json!([
        {"id": 1, "name": "Alpha", "port": a},
        {"id": 3, "name": "Gamma", "port": g, "redis": away},
        {"id": 4, "name": "Delta", "port": d, "redis": away},
        {"id": 5, "name": "Echo", "port": e},
    ]);
    let tmp = sandbox.write("circles.json.new", &list.to_string());
    std::fs::rename(tmp, sandbox.path().join("circles.json")).expect("rename");
    let (code, out, err) = reload_command(&sandbox, addr, &[], &[]);
    assert_eq!(code.code(), Some(1), "{out}{err}");
    assert!(
        err.contains(r#"added "Echo", but "Gamma", "Delta" (added) did not start"#),
        "{err}"
    );
    assert!(
        err.contains(&format!(r#"circle "Gamma" (id 3): cannot connect the task client to its redis at {away}"#))
            && err.contains(&format!(
                r#"circle "Delta" (id 4): its redis at {away} cannot be reached either (circle "Gamma")"#
            )),
        "{err}"
    );
    let snap = status(addr, &[]);
    assert_eq!(names(&snap), ["Alpha", "Gamma", "Delta", "Echo"]);
    let detail = |i: usize| {
        snap["circles"][i]["worker_detail"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        detail(1).starts_with(&format!(
            "did not start: cannot connect the task client to its redis at {away}"
        )) && detail(2)
            == format!(
                r#"did not start: its redis at {away} cannot be reached either (circle "Gamma")"#
            ),
        "{snap}"
    );
    let mut echo = connect(e).await;
    assert_eq!(output(&mut echo, "1 + 1").await, "2");
    drop(echo);
    assert!(o.stop().success(), "{}", o.stderr());
}

/// A reload refuses, as the start does, a circle whose queue the worker of
/// another orchestrator's database holds: its requests would run against
/// that database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_never_starts_a_circle_whose_queue_another_database_holds() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, s, x) = (port(), port(), port());
    let theirs = sandbox.write(
        "theirs.json",
        &json!([{"id": 1, "name": "Shared", "port": s}]).to_string(),
    );
    let mut other = Orchestrator::spawn(sandbox.serve_command(
        &theirs,
        &redis.url(),
        &sandbox.path().join("their-data"),
    ));
    other.wait_table();
    let mut shared = connect(s).await;
    assert_eq!(output(&mut shared, "db::insert(\"theirs\")").await, "1");

    let config = sandbox.circles(&[(1, "Alpha", a)]);
    let (mut o, addr) = start_with_admin(&sandbox, &config, &redis, &[]);
    write_circles(&sandbox, &[(1, "Alpha", a), (3, "Shared", x)]);
    let (code, out, err) = reload_command(&sandbox, addr, &[], &[]);
    assert_eq!(code.code(), Some(1), "{out}{err}");
    assert!(
        err.contains(r#""Shared" (added) did not start"#)
            && err.contains("queue shared is held by the worker of another orchestrator"),
        "{err}"
    );
    let snap = status(addr, &[]);
    assert_eq!(names(&snap), ["Alpha", "Shared"]);
    let detail = snap["circles"][1]["worker_detail"]
        .as_str()
        .unwrap_or_default();
    assert!(
        detail.starts_with("did not start: ")
            && detail.contains("queue shared is held by the worker of another orchestrator"),
        "{snap}"
    );
    assert!(!listens(o.pid(), x), "no endpoint for the refused circle");
    assert_eq!(
        output(&mut shared, "db::next_id()").await,
        "2",
        "their database holds their one record"
    );
    drop(shared);
    assert!(o.stop().success(), "{}", o.stderr());
    assert!(other.stop().success(), "{}", other.stderr());
}

/// A circle given a new id and a new port under the same name is its queue
/// moving to a new database: the added circle waits for the removed one to
/// give up the queue's lease, and then serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_moved_to_a_new_id_and_port_in_one_reload_is_served_by_the_new_circle() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, moved) = (port(), port());
    let config = sandbox.circles(&[(1, "Alpha", a)]);
    let (mut o, addr) = start_with_admin(&sandbox, &config, &redis, &[]);
    // A record in the database of id 1, which the moved circle must not see.
    let mut before = connect(a).await;
    assert_eq!(output(&mut before, "db::insert(#{ x: 1 })").await, "1");
    assert_eq!(output(&mut before, "db::next_id()").await, "2");
    drop(before);
    write_circles(&sandbox, &[(2, "Alpha", moved)]);
    let (code, out, err) = reload_command(&sandbox, addr, &[], &[]);
    assert_eq!(code.code(), Some(0), "{out}{err}");
    assert_eq!(
        out.trim(),
        r#"reload applied: added "Alpha"; removed "Alpha"; "Alpha" has another id, and with it that id's database"#,
        "{err}"
    );
    let mut alpha = connect(moved).await;
    assert_eq!(
        output(&mut alpha, "db::next_id()").await,
        "1",
        "a new database"
    );
    drop(alpha);
    assert!(o.stop().success(), "{}", o.stderr());
}

/// A SIGTERM while a reload drains a removed circle is heard at once: the
/// status says shutting down, a reload asked then is refused with 503 and
/// never runs, and the shutdown follows as soon as the running reload is
/// applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_during_a_reload_shows_at_once_and_no_later_reload_runs() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, b, g) = (port(), port(), port());
    let config = sandbox.circles(&[(1, "Alpha", a), (2, "Beta", b)]);
    let (mut o, addr) = start_with_admin(
        &sandbox,
        &config,
        &redis,
        &["--shutdown-grace", "3s", "--max-operations", "100000000"],
    );
    // Beta's backlog keeps its drain busy for the whole grace and more.
    let mut conn = redis::Client::open(redis.url())
        .expect("redis url")
        .get_connection()
        .expect("redis connection");
    for i in 0..40 {
        let id = format!("slow-{i}");
        let () = redis::pipe()
            .atomic()
            .hset_multiple(
                client::keys::task_details(&id),
                &[
                    ("script", "let x = 0; for i in 0..1000000 { x += 1; } x"),
                    ("status", "pending"),
                ],
            )
            .lpush(client::keys::tasks("beta"), &id)
            .query(&mut conn)
            .expect("queue a task");
    }
    write_circles(&sandbox, &[(1, "Alpha", a)]);
    let removing = std::thread::spawn(move || http::request(addr, "POST", "/api/reload", &[]));
    let deadline = Instant::now() + RELOAD_DEADLINE;
    while !o.stderr().contains("reloading") {
        assert!(Instant::now() < deadline, "no reload began: {}", o.stderr());
        std::thread::sleep(Duration::from_millis(10));
    }
    o.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(2);
    while status(addr, &[])["phase"] != "shutting down" {
        assert!(
            Instant::now() < deadline,
            "the status never said shutting down during the reload: {}",
            status(addr, &[])
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    write_circles(&sandbox, &[(1, "Alpha", a), (3, "Gamma", g)]);
    let refused = http::request(addr, "POST", "/api/reload", &[]);
    assert_eq!(refused.code, 503, "{}", refused.body);
    let removed = removing.join().expect("the first reload's answer");
    assert_eq!(removed.code, 200, "{}", removed.body);
    assert!(removed.body.contains("Beta"), "{}", removed.body);
    let status = o.wait_exit(RELOAD_DEADLINE);
    assert_eq!(status.code(), Some(0), "{}", o.stderr());
    assert!(!o.stderr().contains("added \"Gamma\""), "{}", o.stderr());
}

/// A reload that only reorders circles.json changes nothing, and the rows
/// follow the file's new order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_only_reorders_the_file_shows_the_rows_in_its_order() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, b) = (port(), port());
    let config = sandbox.circles(&[(1, "Alpha", a), (2, "Beta", b)]);
    let (mut o, addr) = start_with_admin(&sandbox, &config, &redis, &[]);
    assert_eq!(names(&status(addr, &[])), ["Alpha", "Beta"]);
    write_circles(&sandbox, &[(2, "Beta", b), (1, "Alpha", a)]);
    let (code, out, err) = reload_command(&sandbox, addr, &[], &[]);
    assert_eq!(code.code(), Some(0), "{out}{err}");
    assert_eq!(out.trim(), "reload applied: nothing changed", "{err}");
    assert_eq!(names(&status(addr, &[])), ["Beta", "Alpha"]);
    assert!(o.stop().success(), "{}", o.stderr());
}

/// A second SIGTERM (a while after the first) stops at once, exit 1, also
/// when the first came while a reload drained a removed circle: it does not
/// wait for that drain (`--shutdown-grace` + 5 s and more) to end first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_during_a_reloads_drain_stops_at_once() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, b) = (port(), port());
    let config = sandbox.circles(&[(1, "Alpha", a), (2, "Beta", b)]);
    let (mut o, _addr) = start_with_admin(
        &sandbox,
        &config,
        &redis,
        &["--shutdown-grace", "5s", "--max-operations", "100000000"],
    );
    // Beta's backlog keeps its drain busy for the whole bound (10 s).
    queue_slow_tasks(&redis, "beta", 60);
    write_circles(&sandbox, &[(1, "Alpha", a)]);
    o.signal("HUP");
    let deadline = Instant::now() + RELOAD_DEADLINE;
    while !o.stderr().contains("reloading") {
        assert!(Instant::now() < deadline, "no reload began: {}", o.stderr());
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    o.signal("TERM");
    std::thread::sleep(Duration::from_millis(1000));
    o.signal("TERM");
    let second = Instant::now();
    let status = o.wait_exit(RELOAD_DEADLINE);
    let took = second.elapsed();
    assert_eq!(status.code(), Some(1), "{}", o.stderr());
    assert!(
        took < Duration::from_secs(4),
        "the second SIGTERM took {took:?} to stop the process: {}",
        o.stderr()
    );
}

/// Writes `step` as circles.json and reloads it through the admin endpoint
/// at `addr`: applied in full (200), every circle of it answers on its
/// port, and /readyz says ready.
async fn reload_to(
    sandbox: &Sandbox,
    o: &Orchestrator,
    addr: std::net::SocketAddr,
    step: &[(u32, &str, u16)],
) {
    write_circles(sandbox, step);
    let answer = http::request(addr, "POST", "/api/reload", &[]);
    assert_eq!(
        answer.code,
        200,
        "{step:?}: {}\n{}",
        answer.body,
        o.stderr()
    );
    for (_, name, p) in step {
        let mut ws = connect(*p).await;
        assert_eq!(output(&mut ws, "40 + 2").await, "42", "{name} on {p}");
    }
    let ready = http::get(addr, "/readyz", &[]);
    assert_eq!(ready.code, 200, "{step:?}: {}", ready.body);
}

/// Two circles that swap their names in one reload (and so their queues),
/// then their ports in the next, then both back: each reload is applied in
/// full and both circles serve after each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_circles_swapping_names_then_ports_in_one_reload_each_serve_after_each() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, b) = (port(), port());
    let config = sandbox.circles(&[(1, "Alpha", a), (2, "Beta", b)]);
    let (mut o, addr) = start_with_admin(&sandbox, &config, &redis, &["--shutdown-grace", "1s"]);
    let steps: [&[(u32, &str, u16)]; 4] = [
        &[(1, "Beta", a), (2, "Alpha", b)],
        &[(1, "Beta", b), (2, "Alpha", a)],
        &[(1, "Alpha", b), (2, "Beta", a)],
        &[(1, "Alpha", a), (2, "Beta", b)],
    ];
    for step in steps {
        reload_to(&sandbox, &o, addr, step).await;
    }
    assert!(o.stop().success(), "{}", o.stderr());
}

/// A sequence of reloads that hand ports and names from circle to circle:
/// a removed circle's port taken by a changed one, then by an added one,
/// two circles swapping ports while one is renamed, and renamed back. Each
/// is applied in full, every circle serves on its new port, and /readyz
/// says ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_and_names_handed_between_circles_over_reloads_serve_after_each() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, b) = (port(), port());
    let config = sandbox.circles(&[(1, "Alpha", a), (2, "Beta", b)]);
    let (mut o, addr) = start_with_admin(&sandbox, &config, &redis, &["--shutdown-grace", "1s"]);
    let steps: [&[(u32, &str, u16)]; 5] = [
        &[(1, "Alpha", b)],
        &[(1, "Alpha", b), (3, "Gamma", a)],
        &[(1, "Alpha2", a), (3, "Gamma", b)],
        &[(1, "Alpha", a), (3, "Gamma", b)],
        &[(1, "Alpha2", a), (3, "Alpha", b)],
    ];
    for step in steps {
        reload_to(&sandbox, &o, addr, step).await;
        let shown = names(&status(addr, &[]));
        let want: Vec<String> = step.iter().map(|(_, n, _)| n.to_string()).collect();
        assert_eq!(shown, want, "{step:?}");
    }
    assert!(o.stop().success(), "{}", o.stderr());
}

/// SIGHUPs sent in a burst while a reload drains a removed circle make one
/// more reload after it, not one each, and the process serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_sighups_during_a_drain_is_one_more_reload() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, b, g) = (port(), port(), port());
    let config = sandbox.circles(&[(1, "Alpha", a), (2, "Beta", b)]);
    let (mut o, addr) = start_with_admin(
        &sandbox,
        &config,
        &redis,
        &["--shutdown-grace", "0s", "--max-operations", "100000000"],
    );
    queue_slow_tasks(&redis, "beta", 20);
    write_circles(&sandbox, &[(1, "Alpha", a)]);
    o.signal("HUP");
    let deadline = Instant::now() + RELOAD_DEADLINE;
    while !o.stderr().contains("reloading") {
        assert!(Instant::now() < deadline, "no reload began: {}", o.stderr());
        std::thread::sleep(Duration::from_millis(10));
    }
    write_circles(&sandbox, &[(1, "Alpha", a), (3, "Gamma", g)]);
    for _ in 0..30 {
        o.signal("HUP");
        std::thread::sleep(Duration::from_millis(5));
    }
    let deadline = Instant::now() + RELOAD_DEADLINE;
    while status(addr, &[])["reload"]["seq"] != 2 {
        assert!(Instant::now() < deadline, "{}", status(addr, &[]));
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    let snap = status(addr, &[]);
    assert_eq!(snap["reload"]["seq"], 2, "{snap}");
    assert_eq!(names(&snap), ["Alpha", "Gamma"]);
    let mut gamma = connect(g).await;
    assert_eq!(output(&mut gamma, "1").await, "1");
    drop(gamma);
    assert!(o.stop().success(), "{}", o.stderr());
}

/// A `--standby` orchestrator whose circles.json drops a circle that another
/// orchestrator's worker holds (and works) never touches that circle's
/// queue: its reload does not wait for the other's backlog, and cancels none
/// of its tasks (the queue is not the standby's to work off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_that_drops_a_circle_leaves_the_active_workers_queue_alone() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, b) = (port(), port());
    let p_file = sandbox.write(
        "p.json",
        &json!([{"id": 1, "name": "Alpha", "port": a}, {"id": 2, "name": "Beta", "port": b}])
            .to_string(),
    );
    let s_file = sandbox.write(
        "s.json",
        &json!([{"id": 1, "name": "Alpha", "port": a}, {"id": 2, "name": "Beta", "port": b}])
            .to_string(),
    );
    let (pd, sd) = (sandbox.path().join("p"), sandbox.path().join("s"));
    let mut p = common::spawn_fast_worker(
        &sandbox,
        &p_file,
        &redis.url(),
        &pd,
        &["--max-operations", "100000000"],
    );
    p.wait_table();
    p.wait_stdout("Running", Duration::from_secs(30));
    let mut s = common::spawn_fast_worker(
        &sandbox,
        &s_file,
        &redis.url(),
        &sd,
        &[
            "--standby",
            "--shutdown-grace",
            "0s",
            "--output",
            "json",
            "--refresh",
            "100ms",
        ],
    );
    s.wait_stdout("\"worker\":\"standby\"", Duration::from_secs(30));
    s.wait_stdout(
        &format!("held by pid {} on host", p.pid()),
        Duration::from_secs(30),
    );
    // P works Alpha's backlog, one task of about a second at a time.
    queue_slow_tasks(&redis, "alpha", 30);
    sandbox.write(
        "s.json",
        &json!([{"id": 2, "name": "Beta", "port": b}]).to_string(),
    );
    let asked = Instant::now();
    s.signal("HUP");
    let deadline = Instant::now() + RELOAD_DEADLINE;
    while !s.stdout().contains("\"seq\":1") {
        assert!(Instant::now() < deadline, "{}", s.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = asked.elapsed();
    let mut conn = redis::Client::open(redis.url())
        .expect("redis url")
        .get_connection()
        .expect("redis connection");
    let mut cancelled = Vec::new();
    for i in 0..30 {
        let id = format!("alpha-slow-{i}");
        let error: Option<String> = redis::cmd("HGET")
            .arg(client::keys::task_details(&id))
            .arg("error")
            .query(&mut conn)
            .expect("read a task");
        if error.is_some_and(|e| e.contains("reload")) {
            cancelled.push(id);
        }
    }
    assert!(
        cancelled.is_empty(),
        "the standby's reload cancelled the active worker's tasks {cancelled:?} (after \
         {took:?})\n{}",
        s.stderr()
    );
    assert!(
        took < Duration::from_secs(3),
        "the standby's reload waited {took:?} for another process's queue"
    );
    assert!(s.stop().success(), "{}", s.stderr());
    assert!(p.stop().success(), "{}", p.stderr());
}

/// A removed circle whose worker runs one long script, nothing queued: the
/// drain ends after `--shutdown-grace` + 5 s, then the worker stops (the
/// script cancelled after the grace), as README says; it does not wait 10 s
/// more for a queue that has nothing left to cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_circle_running_one_long_script_stops_after_the_grace_and_5_s() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, b) = (port(), port());
    let config = sandbox.circles(&[(1, "Alpha", a), (2, "Beta", b)]);
    let (mut o, addr) = start_with_admin(
        &sandbox,
        &config,
        &redis,
        &[
            "--shutdown-grace",
            "0s",
            "--max-operations",
            "100000000000",
            "--script-timeout",
            "120s",
        ],
    );
    let mut conn = redis::Client::open(redis.url())
        .expect("redis url")
        .get_connection()
        .expect("redis connection");
    let () = redis::pipe()
        .atomic()
        .hset_multiple(
            client::keys::task_details("long"),
            &[
                ("script", "let x = 0; loop { x += 1; } x"),
                ("status", "pending"),
            ],
        )
        .lpush(client::keys::tasks("beta"), "long")
        .query(&mut conn)
        .expect("queue a task");
    let deadline = Instant::now() + RELOAD_DEADLINE;
    loop {
        let status: Option<String> = redis::cmd("HGET")
            .arg(client::keys::task_details("long"))
            .arg("status")
            .query(&mut conn)
            .expect("read");
        if status.as_deref() == Some("processing") {
            break;
        }
        assert!(Instant::now() < deadline, "never ran: {status:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    write_circles(&sandbox, &[(1, "Alpha", a)]);
    let asked = Instant::now();
    let answer = http::request(addr, "POST", "/api/reload", &[]);
    let took = asked.elapsed();
    assert_eq!(answer.code, 200, "{}", answer.body);
    assert!(
        took < Duration::from_secs(9),
        "the reload took {took:?} for a drain bounded by 5 s\n{}",
        o.stderr()
    );
    assert!(o.stop().success(), "{}", o.stderr());
}

/// A circle added by a reload on a port and queue of its own serves while a
/// circle the same reload removes still drains (lifecycle.md: only the
/// changed circles and the added ones that take over an outgoing port or
/// queue wait for the drain).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_circle_serves_while_a_removed_one_drains() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, b, g) = (port(), port(), port());
    let config = sandbox.circles(&[(1, "Alpha", a), (2, "Beta", b)]);
    let (mut o, _addr) = start_with_admin(
        &sandbox,
        &config,
        &redis,
        &["--shutdown-grace", "2s", "--max-operations", "100000000"],
    );
    queue_slow_tasks(&redis, "beta", 30);
    write_circles(&sandbox, &[(1, "Alpha", a), (3, "Gamma", g)]);
    o.signal("HUP");
    let deadline = Instant::now() + RELOAD_DEADLINE;
    while !o.stderr().contains("reloading") {
        assert!(Instant::now() < deadline, "no reload began: {}", o.stderr());
        std::thread::sleep(Duration::from_millis(10));
    }
    // The drain takes 7 s; Gamma answers well before.
    let asked = Instant::now();
    let answered = tokio::time::timeout(Duration::from_secs(4), async {
        loop {
            if let Ok(Ok((mut ws, _))) = tokio::time::timeout(
                Duration::from_millis(500),
                tokio_tungstenite::connect_async(common::ws(g)),
            )
            .await
            {
                return output(&mut ws, "1").await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(
        answered.as_deref(),
        Ok("1"),
        "Gamma did not answer within {:?} of the reload, while Beta drained:\n{}",
        asked.elapsed(),
        o.stderr()
    );
    assert!(
        !o.stdout().contains("reload applied"),
        "the drain ended first: {}",
        o.stdout()
    );
    assert!(o.stop().success(), "{}", o.stderr());
}

/// The row of a circle a reload could not start stays shown, failed, while
/// the next reload drains another circle (here Beta, whose backlog keeps
/// its drain 5 s long), and after it when it still cannot start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_did_not_start_stays_shown_while_the_next_reload_drains() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, b) = (port(), port());
    let config = sandbox.circles(&[(1, "Alpha", a), (2, "Beta", b)]);
    let (mut o, addr) = start_with_admin(
        &sandbox,
        &config,
        &redis,
        &["--shutdown-grace", "0s", "--max-operations", "100000000"],
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy = taken.local_addr().expect("address").port();
    write_circles(
        &sandbox,
        &[(1, "Alpha", a), (2, "Beta", b), (3, "Gamma", busy)],
    );
    let (code, out, err) = reload_command(&sandbox, addr, &[], &[]);
    assert_eq!(code.code(), Some(1), "{out}{err}");
    let failed = |snap: &Value| {
        (snap["circles"].as_array().expect("rows").iter())
            .any(|r| r["name"] == "Gamma" && r["worker"] == "failed")
    };
    assert!(failed(&status(addr, &[])));
    queue_slow_tasks(&redis, "beta", 40);
    write_circles(&sandbox, &[(1, "Alpha", a), (3, "Gamma", busy)]);
    o.signal("HUP");
    let mut looked = 0;
    let deadline = Instant::now() + RELOAD_DEADLINE;
    while !o
        .stdout()
        .contains("reload partly applied: removed \"Beta\"")
    {
        assert!(Instant::now() < deadline, "{}", o.stdout());
        let snap = status(addr, &[]);
        assert!(failed(&snap), "{snap}");
        looked += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(looked >= 10, "the drain took {looked} looks of 100 ms");
    assert!(
        !o.stdout().contains("Gamma (id 3): no longer shown"),
        "{}",
        o.stdout()
    );
    let snap = status(addr, &[]);
    assert_eq!(names(&snap), ["Alpha", "Gamma"]);
    assert!(failed(&snap), "{snap}");
    drop(taken);
    assert!(o.stop().success(), "{}", o.stderr());
}
