//! Several orchestrator processes as several hosts (a network namespace
//! each, on a bridge with the test's Redis, or a loopback address each where
//! namespaces cannot be made; see `common::hosts`), through the built
//! binary: two gateways and two workers serve four circles, and a client
//! of either gateway gets every circle's results; a worker host killed with
//! kill -9 ends its running task as `worker_lost`, its queued tasks wait and
//! run when it comes back; a second worker for an owned circle refuses; a
//! worker host whose link is cut stops before its lease expires, a standby
//! host takes the circle over, and the cut host takes nothing once healed.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::hosts::Hosts;
use common::{Orchestrator, Sandbox, Ws, epoch_ms, port, recv, send};
use serde_json::{Value, json};

/// Hosts 0 and 1 run gateways, 2 and 3 workers.
const GATEWAYS: [usize; 2] = [0, 1];

/// Short beats, so a dead worker is known dead (3 beats) within seconds.
const FAST: [&str; 6] = [
    "--worker-heartbeat",
    "1s",
    "--worker-reap-interval",
    "1s",
    "--task-timeout",
    "60s",
];

struct Cluster {
    sandbox: Sandbox,
    hosts: Hosts,
    redis: testkit::RedisServer,
    config: std::path::PathBuf,
    ports: Vec<u16>,
}

impl Cluster {
    fn new() -> Cluster {
        let sandbox = Sandbox::new();
        let hosts = Hosts::new(4);
        let redis = testkit::RedisServer::start();
        hosts.open_redis(&redis);
        let ports: Vec<u16> = (0..4).map(|_| port()).collect();
        let names = ["North", "East", "South", "West"];
        let circles: Vec<(u32, &str, u16)> =
            (0..4).map(|i| (i as u32 + 1, names[i], ports[i])).collect();
        let config = sandbox.circles(&circles);
        Cluster {
            sandbox,
            hosts,
            redis,
            config,
            ports,
        }
    }

    /// The binary on `host` with `extra` options, its data in `data`.
    fn command(&self, host: usize, data: &Path, extra: &[&str]) -> Command {
        let url = self.hosts.redis_url(&self.redis);
        let mut cmd = self.sandbox.serve_command(&self.config, &url, data);
        cmd.args(FAST).args(extra);
        self.hosts.on(host, cmd)
    }

    fn gateway(&self, host: usize) -> Orchestrator {
        let addr = self.hosts.addr(host);
        let data = self.sandbox.path().join(format!("gateway{host}"));
        let cmd = self.command(
            host,
            &data,
            &["--role", "gateway", "--host", &addr, "--allow-open"],
        );
        let mut o = Orchestrator::spawn(cmd);
        o.wait_table();
        o
    }

    fn worker_data(&self, host: usize) -> std::path::PathBuf {
        self.sandbox.path().join(format!("worker{host}"))
    }

    fn worker(&self, host: usize, circles: &str) -> Orchestrator {
        let cmd = self.command(
            host,
            &self.worker_data(host),
            &["--role", "worker", "--circles", circles],
        );
        let mut o = Orchestrator::spawn(cmd);
        o.wait_table();
        o
    }

    /// A connection to circle `circle` (0-based) through the gateway on `host`.
    async fn connect(&self, host: usize, circle: usize) -> Ws {
        let url = format!("ws://{}:{}/ws", self.hosts.addr(host), self.ports[circle]);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match tokio_tungstenite::connect_async(&url).await {
                Ok((ws, _)) => return ws,
                Err(e) if Instant::now() > deadline => panic!("cannot connect to {url}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

fn request(id: u64, script: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "play", "params": {"script": script}}).to_string()
}

/// Replies on `ws` until every id of `ids` has one, by id.
async fn replies(ws: &mut Ws, ids: &[u64]) -> Vec<(u64, Value)> {
    let mut got = Vec::new();
    while got.len() < ids.len() {
        let reply = recv(ws).await;
        let id = reply["id"].as_u64().expect("a reply with an id");
        assert!(ids.contains(&id), "a reply to an unknown id: {reply}");
        got.push((id, reply));
    }
    got.sort_by_key(|(id, _)| *id);
    got
}

async fn output(ws: &mut Ws, id: u64, script: &str) -> String {
    send(ws, &request(id, script)).await;
    let (_, reply) = replies(ws, &[id]).await.remove(0);
    reply["result"]["output"]
        .as_str()
        .unwrap_or_else(|| panic!("play {script:?} failed: {reply}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_and_two_workers_on_four_hosts_serve_four_circles() {
    let cluster = Cluster::new();
    let _workers = [cluster.worker(2, "1,2"), cluster.worker(3, "3,4")];
    let _gateways = GATEWAYS.map(|host| cluster.gateway(host));

    // Each circle gets one record through gateway 0, then both gateways read
    // every circle's record: one database per circle, reached from either.
    for circle in 0..4 {
        let mut ws = cluster.connect(0, circle).await;
        let script = format!("db::insert(#{{ circle: {circle} }})");
        assert_eq!(output(&mut ws, 1, &script).await, "1");
    }
    for host in GATEWAYS {
        for circle in 0..4 {
            let mut ws = cluster.connect(host, circle).await;
            let got = output(&mut ws, 2, "db::get(1).circle").await;
            assert_eq!(
                got,
                circle.to_string(),
                "circle {circle} via gateway {host}"
            );
        }
    }
    // Each worker opened only its own circles' databases.
    let opened = |host| {
        let mut names: Vec<String> = std::fs::read_dir(cluster.worker_data(host))
            .expect("a worker's data dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<u32>().is_ok())
            .collect();
        names.sort();
        names
    };
    assert_eq!(opened(2), ["1", "2"]);
    assert_eq!(opened(3), ["3", "4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_host_loses_its_running_task_and_runs_its_queued_ones_when_back() {
    let cluster = Cluster::new();
    let mut worker = cluster.worker(2, "1");
    let _gateway = cluster.gateway(0);
    let mut ws = cluster.connect(0, 0).await;
    assert_eq!(output(&mut ws, 1, "db::insert(#{ n: 1 })").await, "1");

    // A script that runs until its limits, then three queued behind it.
    send(&mut ws, &request(10, "let x = 0; loop { x += 1; }")).await;
    for id in 11..14 {
        send(&mut ws, &request(id, "db::insert(#{ n: 2 })")).await;
    }
    let mut redis = redis::Client::open(cluster.redis.url())
        .expect("url")
        .get_connection()
        .expect("connect to redis");
    let queued = || -> i64 {
        redis::cmd("LLEN")
            .arg("rhai_tasks:north")
            .query(&mut redis)
            .expect("LLEN")
    };
    let mut queued = queued;
    testkit::wait_for("three tasks queued", Duration::from_secs(20), || {
        (queued() == 3).then_some(())
    });

    worker.signal("KILL");
    worker.wait_exit(Duration::from_secs(10));
    // Nobody runs circle 1 now: the queued tasks stay queued.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(queued(), 3, "the queued tasks wait for a worker");

    // The host comes back (same data dir): the running task ends
    // worker_lost, the queued ones run, in order, and nothing is lost.
    let _back = cluster.worker(2, "1");
    let got = replies(&mut ws, &[10, 11, 12, 13]).await;
    assert_eq!(
        got[0].1["error"]["data"]["kind"], "worker_lost",
        "{:?}",
        got[0]
    );
    let ids: Vec<&str> = got[1..]
        .iter()
        .map(|(_, r)| {
            r["result"]["output"]
                .as_str()
                .unwrap_or_else(|| panic!("a queued task failed: {r}"))
        })
        .collect();
    assert_eq!(ids, ["2", "3", "4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_worker_host_for_an_owned_circle_refuses() {
    let cluster = Cluster::new();
    let _owner = cluster.worker(2, "1");
    let cmd = cluster.command(
        3,
        &cluster.worker_data(3),
        &["--role", "worker", "--circles", "1"],
    );
    let mut second = Orchestrator::spawn(cmd);
    let status = second.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "the second worker must not run circle 1");
    let said = format!("{}{}", second.stdout(), second.stderr());
    let holder = cluster.worker_data(2).join("1");
    assert!(
        said.contains(&holder.display().to_string()),
        "the refusal names the holder's data dir {}:\n{said}",
        holder.display()
    );
}

/// Submits `script` as task `id` to circle North's queue, as a third party would.
fn submit(redis: &mut redis::Connection, id: &str, script: &str) {
    let _: () = redis::pipe()
        .atomic()
        .hset_multiple(
            format!("rhai_task_details:{id}"),
            &[("script", script), ("status", "pending")],
        )
        .lpush("rhai_tasks:north", id)
        .query(redis)
        .expect("submit");
}

fn status(redis: &mut redis::Connection, id: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(format!("rhai_task_details:{id}"))
        .arg("status")
        .query(redis)
        .expect("HGET")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_host_cut_off_stops_before_its_lease_expires_and_a_standby_takes_over() {
    let cluster = Cluster::new();
    let mut redis = redis::Client::open(cluster.redis.url())
        .expect("url")
        .get_connection()
        .expect("connect to redis");
    // Loopback hosts cannot lose a link: the worker reaches Redis through a
    // proxy that stops forwarding instead.
    let proxy = testkit::Proxy::start(cluster.redis.port());
    let url = match cluster.hosts.kind {
        common::hosts::Kind::Namespaces => cluster.hosts.redis_url(&cluster.redis),
        common::hosts::Kind::Loopback => proxy.redis_url(),
    };
    let mut cmd = cluster
        .sandbox
        .serve_command(&cluster.config, &url, &cluster.worker_data(2));
    cmd.args(FAST)
        .args(["--role", "worker", "--circles", "1", "--log-format", "json"]);
    let mut worker = Orchestrator::spawn(cluster.hosts.on(2, cmd));
    worker.wait_table();
    let mut standby = Orchestrator::spawn(cluster.command(
        3,
        &cluster.worker_data(3),
        &["--role", "worker", "--circles", "1", "--standby"],
    ));
    standby.wait_table();
    submit(
        &mut redis,
        "slow",
        "let x = 0; while x < 2_000_000_000 { x += 1; } x",
    );
    testkit::wait_for("the slow task runs", Duration::from_secs(20), || {
        (status(&mut redis, "slow").as_deref() == Some("processing")).then_some(())
    });

    match cluster.hosts.cut(2) {
        Some(()) => eprintln!("cut: host 2's link is down"),
        None => {
            proxy.freeze();
            eprintln!("cut: host 2's proxy to Redis is frozen");
        }
    }
    // When the lease expires, from Redis itself: the last `now + PTTL`
    // before the key is gone (no renewal gets through any more).
    let mut expires_ms = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pttl: i64 = redis::cmd("PTTL")
            .arg("rhai_queue_owner:north")
            .query(&mut redis)
            .expect("PTTL");
        if pttl < 0 {
            break;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after the epoch")
            .as_millis() as u64;
        expires_ms = Some(now + pttl as u64);
        assert!(Instant::now() < deadline, "the lease never expired");
        std::thread::sleep(Duration::from_millis(2));
    }
    let expires_ms = expires_ms.expect("the lease was held at the cut");
    worker.wait_stdout("Lease lost", Duration::from_secs(30));
    // The log's own thread writes the line a moment after the row shows.
    worker.wait_stderr("lease of queue north lost", Duration::from_secs(30));
    let logged = worker
        .stderr()
        .lines()
        .find(|l| l.contains("lease of queue north lost"))
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON log line"))
        .expect("the stop is logged");
    let stopped_ms = epoch_ms(logged["timestamp"].as_str().expect("a timestamp"));
    assert!(
        stopped_ms < expires_ms,
        "stopped at {stopped_ms}, the lease expired at {expires_ms}"
    );

    // The standby takes over: the cut task ends, a new one runs there.
    submit(&mut redis, "after", "40 + 2");
    testkit::wait_for(
        "the standby runs the new task",
        Duration::from_secs(30),
        || (status(&mut redis, "after").as_deref() == Some("completed")).then_some(()),
    );
    let slow = status(&mut redis, "slow");
    assert_eq!(slow.as_deref(), Some("error"), "the cut script ended");
    let lease: String = redis::cmd("GET")
        .arg("rhai_queue_owner:north")
        .query(&mut redis)
        .expect("GET");
    let lease = client::Lease::parse(&lease).expect("a lease");
    assert_eq!(lease.pid, standby.pid(), "the standby holds the lease");

    // Healed, the cut host sees the holder, takes nothing more and waits
    // to take the lease back.
    cluster.hosts.heal(2);
    proxy.thaw();
    worker.wait_stdout("lease of queue north lost to", Duration::from_secs(30));
    let said = format!("{}{}", worker.stdout(), worker.stderr());
    assert!(
        said.contains(&format!("pid {}", standby.pid())),
        "the cut host names the standby as the holder:\n{said}"
    );
    submit(&mut redis, "last", "db::insert(#{ n: 3 })");
    testkit::wait_for(
        "the standby runs the last task",
        Duration::from_secs(30),
        || (status(&mut redis, "last").as_deref() == Some("completed")).then_some(()),
    );
    let ran_on: String = redis::cmd("HGET")
        .arg("rhai_task_details:last")
        .arg("workerId")
        .query(&mut redis)
        .expect("HGET");
    let after_on: String = redis::cmd("HGET")
        .arg("rhai_task_details:after")
        .arg("workerId")
        .query(&mut redis)
        .expect("HGET");
    assert_eq!(ran_on, after_on, "both ran on the standby's worker");
}
