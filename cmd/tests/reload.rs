//! SIGHUP re-reads circles.json while clients stay connected: added circles
//! serve, removed ones close their sockets with 1001 and free their port,
//! changed ones restart with their new settings, untouched ones keep their
//! connections and answer every request (one in flight during the reload
//! included); an invalid file changes nothing and says why.

mod common;

use std::time::{Duration, Instant};

use common::{Orchestrator, Sandbox, Ws, connect, output, play, port, send};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const RELOAD_DEADLINE: Duration = Duration::from_secs(60);

/// Whether a TCP connection to the port is refused.
fn refused(port: u16) -> bool {
    matches!(
        std::net::TcpStream::connect(("127.0.0.1", port)),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

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

    // Removed: its port refuses. Changed: the new port serves the same
    // database (same id), the old port refuses. Added: serves.
    assert!(refused(b), "the removed circle's port still accepts");
    assert!(refused(c), "the changed circle's old port still accepts");
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
    assert!(
        o.stderr().contains("reload of") && o.stderr().contains("failed"),
        "{}",
        o.stderr()
    );
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
    // bound again), Alpha untouched.
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
    let mut o = Orchestrator::start(
        &sandbox,
        &config,
        &redis.url(),
        &["--shutdown-grace", "0s", "--max-operations", "100000000"],
    );
    o.wait_table();
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
    o.wait_stdout("reload applied", RELOAD_DEADLINE);

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
