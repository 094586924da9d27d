//! Split roles under load: a gateway process and a worker process for the
//! same circle on one Redis, one of them reloaded or restarted while plays
//! flow through the gateway.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Orchestrator, Sandbox, connect, play, port};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(60);

fn start(
    sandbox: &Sandbox,
    config: &Path,
    redis: &testkit::RedisServer,
    data_dir: &Path,
    extra: &[&str],
) -> Orchestrator {
    let mut cmd = sandbox.serve_command(config, &redis.url(), data_dir);
    cmd.args(["--worker-heartbeat", "200ms"]).args(extra);
    let mut o = Orchestrator::spawn(cmd);
    o.wait_table();
    o
}

/// A script that keeps the worker busy for a while (a few ms in a debug
/// build), so that a few clients keep the queue from emptying.
const BUSY: &str = "let x = 0; for i in 0..20000 { x += i; } x";

/// `clients` connections to `port`, each sending plays one after another
/// until `stop`; every reply is collected.
fn load(
    port: u16,
    clients: usize,
    stop: Arc<AtomicBool>,
    replies: Arc<Mutex<Vec<Value>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|_| {
            let stop = stop.clone();
            let replies = replies.clone();
            tokio::spawn(async move {
                let mut ws = connect(port).await;
                let mut id = 0;
                while !stop.load(Ordering::Acquire) {
                    id += 1;
                    let reply = play(&mut ws, id, BUSY).await;
                    replies.lock().unwrap().push(reply);
                }
            })
        })
        .collect()
}

/// In the README's shape (gateways and workers in processes of their own,
/// the same circles.json everywhere) an operator changes a circle (here its
/// port: a field the worker does not even use) and reloads the worker
/// first. The circle starts again at once in the same process, on the same
/// queue: the plays the gateway keeps sending meanwhile must still run. The
/// drain of the outgoing worker cancels them instead ("its circle was
/// removed or changed by a reload"), since the gateway's plays keep its
/// queue from emptying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_only_reload_that_changes_a_circle_cancels_none_of_the_plays_a_gateway_sends() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let alpha = port();
    let circles = |p: u16| json!([{"id": 1, "name": "Alpha", "port": p}]).to_string();
    let gateway_config = sandbox.write("gateway.json", &circles(alpha));
    let worker_config = sandbox.write("worker.json", &circles(alpha));
    let mut worker = start(
        &sandbox,
        &worker_config,
        &redis,
        &sandbox.path().join("wk"),
        &["--role", "worker", "--shutdown-grace", "1s"],
    );
    let _gateway = start(
        &sandbox,
        &gateway_config,
        &redis,
        &sandbox.path().join("gw"),
        &["--role", "gateway", "--task-timeout", "60s"],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let replies = Arc::new(Mutex::new(Vec::new()));
    let clients = load(alpha, 8, stop.clone(), replies.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;

    sandbox.write("worker.json", &circles(port()));
    worker.signal("HUP");
    worker.wait_stdout("reload applied", DEADLINE);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Release);
    for c in clients {
        c.await.expect("client");
    }
    let replies = replies.lock().unwrap();
    let failed: Vec<&Value> = replies
        .iter()
        .filter(|r| r["result"]["output"].is_null())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} plays failed across the worker's reload, e.g. {}",
        failed.len(),
        replies.len(),
        failed[0]
    );
}

/// A reload on the gateway adds a circle that no worker runs yet: within
/// its first dead time a play waits and times out (-32001), after it a play
/// is refused at once (-32002, nothing queued); once the worker's reload
/// adds the circle, plays run and none of the earlier ones ran late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circle_a_gateway_reload_adds_before_any_worker_has_it_is_refused_then_served() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (alpha, beta) = (port(), port());
    let one = json!([{"id": 1, "name": "Alpha", "port": alpha}]).to_string();
    let two = json!([
        {"id": 1, "name": "Alpha", "port": alpha},
        {"id": 2, "name": "Beta", "port": beta}
    ])
    .to_string();
    let gateway_config = sandbox.write("gateway.json", &one);
    let worker_config = sandbox.write("worker.json", &one);
    let mut worker = start(
        &sandbox,
        &worker_config,
        &redis,
        &sandbox.path().join("wk"),
        &["--role", "worker"],
    );
    let mut gateway = start(
        &sandbox,
        &gateway_config,
        &redis,
        &sandbox.path().join("gw"),
        &["--role", "gateway", "--task-timeout", "300ms"],
    );
    sandbox.write("gateway.json", &two);
    gateway.signal("HUP");
    gateway.wait_stdout("reload applied", DEADLINE);
    let mut ws = connect(beta).await;
    let mut codes = Vec::new();
    let started = std::time::Instant::now();
    loop {
        let reply = play(&mut ws, 1, "db::insert(#{ early: true })").await;
        let code = reply["error"]["code"].as_i64();
        assert!(matches!(code, Some(-32001 | -32002)), "{reply}");
        codes.push(code);
        if code == Some(-32002) && reply["error"]["data"]["task_id"].is_null() {
            assert_eq!(reply["error"]["data"]["kind"], "no_worker", "{reply}");
            break;
        }
        assert!(started.elapsed() < DEADLINE, "{reply}");
    }
    sandbox.write("worker.json", &two);
    worker.signal("HUP");
    worker.wait_stdout("reload applied", DEADLINE);
    let started = std::time::Instant::now();
    let next = loop {
        let reply = play(&mut ws, 2, "db::next_id()").await;
        if let Some(out) = reply["result"]["output"].as_str() {
            break out.to_owned();
        }
        assert_eq!(reply["error"]["code"], -32002, "{reply}");
        assert!(started.elapsed() < DEADLINE, "{reply}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Let any late task run before looking again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again = play(&mut ws, 3, "db::next_id()").await;
    assert_eq!(next, "1", "no early insert ran: {codes:?}");
    assert_eq!(again["result"]["output"], "1", "{again}");
}

/// The -32002 for want of a worker says how long its workers have been
/// silent. A gateway on the default 5 s beat (15 s dead time) in front of
/// a worker beating every 200 ms (its heartbeat lives 600 ms) refuses
/// about a second after the worker was killed, and must not claim that
/// no heartbeat came for 15000 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_no_worker_refusal_does_not_claim_a_silence_longer_than_there_was() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let alpha = port();
    let config = sandbox.circles(&[(1, "Alpha", alpha)]);
    let mut worker = start(
        &sandbox,
        &config,
        &redis,
        &sandbox.path().join("wk"),
        &["--role", "worker"],
    );
    let mut cmd = sandbox.serve_command(&config, &redis.url(), &sandbox.path().join("gw"));
    cmd.args(["--role", "gateway", "--task-timeout", "500ms"]);
    let mut gateway = Orchestrator::spawn(cmd);
    gateway.wait_table();
    let mut ws = connect(alpha).await;
    let reply = play(&mut ws, 1, "40 + 2").await;
    assert_eq!(reply["result"]["output"], "42", "{reply}");
    worker.signal("KILL");
    worker.wait_exit(DEADLINE);
    let killed = std::time::Instant::now();
    let (message, after) = loop {
        let reply = play(&mut ws, 2, "1").await;
        if reply["error"]["data"]["kind"] == "no_worker" {
            break (
                reply["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                killed.elapsed(),
            );
        }
        assert!(killed.elapsed() < DEADLINE, "{reply}");
    };
    assert!(
        after < Duration::from_secs(5),
        "refused {after:?} after the kill"
    );
    assert!(
        !message.contains("for 15000 ms"),
        "refused {after:?} after the worker was killed, yet says: {message}"
    );
    drop(gateway);
}

/// A gateway announces itself "every heartbeat" on each circle's Redis. One
/// circle's own Redis that stops answering (frozen, not closed) must not
/// hold up the beats of the circles on other Redis servers: their gateway
/// heartbeat keys must not expire meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_of_one_circle_does_not_stop_the_gateway_beating_on_the_others() {
    use redis::Commands;
    let sandbox = Sandbox::new();
    let main = testkit::RedisServer::start();
    let own = testkit::RedisServer::start();
    let proxy = testkit::Proxy::start(own.port());
    let (alpha, beta) = (port(), port());
    let circles = json!([
        {"id": 1, "name": "Alpha", "port": alpha},
        {"id": 2, "name": "Beta", "port": beta, "redis": proxy.redis_url()}
    ]);
    let config = sandbox.write("circles.json", &circles.to_string());
    // Beats of 200 ms: each gateway heartbeat lives 600 ms.
    let _gateway = start(
        &sandbox,
        &config,
        &main,
        &sandbox.path().join("gw"),
        &["--role", "gateway"],
    );
    let mut conn = redis::Client::open(main.url())
        .expect("url")
        .get_connection()
        .expect("connect");
    let id: String = testkit::wait_for("the gateway on Alpha", DEADLINE, || {
        let m: Vec<String> = conn.smembers("rhai_gateways:alpha").expect("smembers");
        m.into_iter().next()
    });
    let key = format!("rhai_gateway_heartbeat:alpha:{id}");
    proxy.freeze();
    let (mut looks, mut missing) = (0, 0);
    let until = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < until {
        let exists: bool = conn.exists(&key).expect("exists");
        looks += 1;
        if !exists {
            missing += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    proxy.thaw();
    assert_eq!(
        missing, 0,
        "Alpha's gateway heartbeat (on a Redis that answers) was gone in {missing} of \
         {looks} looks while Beta's Redis stalled"
    );
}

/// The worker process restarted (SIGTERM, then started again on its data
/// dir) while plays flow through the gateway: every play gets its result
/// (short scripts finish within the grace; the queued ones wait for the
/// new worker), and each ran once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_restarted_under_load_behind_a_gateway_loses_and_repeats_no_play() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let alpha = port();
    let config = sandbox.circles(&[(1, "Alpha", alpha)]);
    let dir = sandbox.path().join("wk");
    let worker_args = ["--role", "worker"];
    let mut worker = start(&sandbox, &config, &redis, &dir, &worker_args);
    let _gateway = start(
        &sandbox,
        &config,
        &redis,
        &sandbox.path().join("gw"),
        &["--role", "gateway", "--task-timeout", "60s"],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let replies = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, replies) = (stop.clone(), replies.clone());
            tokio::spawn(async move {
                let mut ws = connect(alpha).await;
                let mut id = 0;
                while !stop.load(Ordering::Acquire) {
                    id += 1;
                    let reply = play(&mut ws, id, "db::insert(#{ n: 1 }); 1").await;
                    replies.lock().unwrap().push(reply);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(worker.stop().success(), "{}", worker.stderr());
    let _worker = start(&sandbox, &config, &redis, &dir, &worker_args);
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Release);
    for c in clients {
        c.await.expect("client");
    }
    let replies = replies.lock().unwrap().clone();
    let failed: Vec<&Value> = replies
        .iter()
        .filter(|r| r["result"]["output"].is_null())
        .collect();
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {}",
        failed.len(),
        failed[0]
    );
    let mut ws = connect(alpha).await;
    let next = play(&mut ws, 1, "db::next_id()").await;
    assert_eq!(
        next["result"]["output"],
        (replies.len() + 1).to_string(),
        "one insert per successful play"
    );
}

/// A reload that removes a circle from a gateway takes the gateway out of
/// that circle's set and deletes its heartbeat key at once, not a TTL later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circle_a_gateway_reload_removes_loses_the_gateways_keys_at_once() {
    use redis::Commands;
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (alpha, beta) = (port(), port());
    let config = sandbox.circles(&[(1, "Alpha", alpha), (2, "Beta", beta)]);
    let mut cmd = sandbox.serve_command(&config, &redis.url(), &sandbox.path().join("gw"));
    cmd.args(["--role", "gateway", "--worker-heartbeat", "10s"]);
    let mut gateway = Orchestrator::spawn(cmd);
    gateway.wait_table();
    let mut conn = redis::Client::open(redis.url())
        .expect("url")
        .get_connection()
        .expect("connect");
    let id: String = testkit::wait_for("the gateway on Beta", DEADLINE, || {
        let m: Vec<String> = conn.smembers("rhai_gateways:beta").expect("smembers");
        m.into_iter().next()
    });
    sandbox.circles(&[(1, "Alpha", alpha)]);
    gateway.signal("HUP");
    gateway.wait_stdout("reload applied", DEADLINE);
    let key = format!("rhai_gateway_heartbeat:beta:{id}");
    testkit::wait_for("Beta's gateway keys gone", Duration::from_secs(12), || {
        let exists: bool = conn.exists(&key).expect("exists");
        let members: Vec<String> = conn.smembers("rhai_gateways:beta").expect("smembers");
        (!exists && members.is_empty()).then_some(())
    });
}
