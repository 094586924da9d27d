//! Every play sent while the sentinels move the primary ends once, and as
//! its reply says: the built binary on a `redis+sentinel://` URL
//! (`testkit::SentinelGroup`), lanes of WebSocket clients each playing
//! scripts that insert a record naming their request, and a failover in the
//! middle (`SENTINEL FAILOVER`, the primary killed with SIGKILL, a failover
//! during a reload, two in a row). Then: every request got a result or a
//! precise -32001/-32002; no request's record is in the circle's database
//! twice; every request answered with a result has its record; every task
//! hash on the new primary ends `completed` or `error`; and plays succeed
//! afterwards, the table showing the worker running.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Orchestrator, Sandbox, Ws, connect, play, port};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use testkit::SentinelGroup;
use tokio_tungstenite::tungstenite::Message;

/// The task timeout given to the orchestrator.
const TASK_TIMEOUT: &str = "5s";
/// A play not answered within this hangs (the task timeout plus margin).
const HANG: Duration = Duration::from_secs(20);
/// Load lanes, each one connection playing one request at a time.
const LANES: u64 = 8;
/// The options of every orchestrator here: short beats, so a lost worker is
/// reaped well within the test.
const OPTIONS: [&str; 6] = [
    "--task-timeout",
    TASK_TIMEOUT,
    "--worker-heartbeat",
    "1s",
    "--worker-reap-interval",
    "1s",
];

/// What one request got.
#[derive(Debug, Clone)]
struct Played {
    /// The name its record carries.
    req: String,
    /// The task id of a result, or the error's code and message.
    outcome: Result<String, (i64, String)>,
    /// The `task_id` an error names (the task was queued; it may have run).
    queued: Option<String>,
}

/// A script inserting a record that names `req`.
fn inserting(req: &str) -> String {
    format!("db::insert(#{{ req: \"{req}\" }})")
}

/// The reason a circle's server gives when a reload changes the circle: the
/// connection closes, the requests in flight get no reply.
const STOPPING: &str = "the circle's server is stopping";

/// One `play` on `ws`: its reply, or the close frame's reason when the
/// server closes the connection first.
async fn play_or_close(ws: &mut Ws, id: u64, script: &str) -> Result<Value, String> {
    let request = serde_json::json!(
        {"jsonrpc": "2.0", "id": id, "method": "play", "params": {"script": script}}
    );
    ws.send(Message::text(request.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                let reply: Value = serde_json::from_str(&text).expect("reply is JSON");
                assert_eq!(reply["id"], serde_json::json!(id), "{reply}");
                return Ok(reply);
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(frame.map(|f| f.reason.to_string()).unwrap_or_default());
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("connection ended".to_string()),
        }
    }
}

/// Plays inserting scripts on a connection to `ws_port` until `stop`; a
/// connection the server closes is made again.
async fn load(ws_port: u16, lane: u64, stop: Arc<AtomicBool>, log: Arc<Mutex<Vec<Played>>>) {
    let mut ws = connect(ws_port).await;
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let req = format!("r{lane}x{n}");
        let reply = tokio::time::timeout(
            HANG,
            play_or_close(&mut ws, lane * 1_000_000 + n, &inserting(&req)),
        )
        .await
        .unwrap_or_else(|_| panic!("play {req} hung: no answer within {HANG:?}"));
        let queued = reply
            .as_ref()
            .ok()
            .and_then(|r| r["error"]["data"]["task_id"].as_str().map(str::to_owned));
        let outcome = match reply {
            Ok(reply) => match reply.get("result") {
                Some(result) => Ok(result["task_id"].as_str().expect("task id").to_string()),
                None => Err((
                    reply["error"]["code"].as_i64().unwrap_or_default(),
                    reply["error"]["message"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )),
            },
            Err(closed) => {
                assert!(closed.contains(STOPPING), "play {req}: {closed}");
                ws = connect(ws_port).await;
                Err((0, closed))
            }
        };
        log.lock().expect("log").push(Played {
            req,
            outcome,
            queued,
        });
    }
}

/// The load of [`LANES`] lanes, stopped and checked by [`Load::finish`].
struct Load {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Played>>>,
    lanes: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(ws_port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let lanes = (1..=LANES)
            .map(|lane| tokio::spawn(load(ws_port, lane, stop.clone(), log.clone())))
            .collect();
        Load { stop, log, lanes }
    }

    /// Waits until `n` more results than now came in.
    async fn wait_results(&self, n: usize, what: &str) {
        let count = || {
            self.log
                .lock()
                .expect("log")
                .iter()
                .filter(|p| p.outcome.is_ok())
                .count()
        };
        let target = count() + n;
        let deadline = Instant::now() + HANG * 3;
        while count() < target {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn finish(self) -> Vec<Played> {
        self.stop.store(true, Ordering::Relaxed);
        for lane in self.lanes {
            lane.await.expect("a load lane failed");
        }
        self.log.lock().expect("log").clone()
    }
}

/// How many records of each request the circle's database holds, read by a
/// play.
async fn records(ws: &mut Ws) -> HashMap<String, usize> {
    let script = r#"
        let out = "";
        for i in 1..db::next_id() {
            if db::exists(i) {
                let v = db::get(i);
                if type_of(v) == "map" && "req" in v { out += v.req + " "; }
            }
        }
        out
    "#;
    let reply = play(ws, 999_999_999, script).await;
    let text = reply["result"]["output"]
        .as_str()
        .unwrap_or_else(|| panic!("reading the records failed: {reply}"));
    let mut counts = HashMap::new();
    for req in text.split_whitespace() {
        *counts.entry(req.to_string()).or_insert(0) += 1;
    }
    counts
}

/// A synchronous connection to the Redis on 127.0.0.1:`port`.
fn redis_at(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|c| c.get_connection())
        .expect("connect to a data server")
}

/// The task hashes on the server at `port` whose status is not an end,
/// with their fields.
fn unended(port: u16) -> Vec<(String, HashMap<String, String>)> {
    let mut conn = redis_at(port);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("rhai_task_details:*")
        .query(&mut conn)
        .expect("KEYS");
    keys.into_iter()
        .filter_map(|key| {
            let fields: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(&key)
                .query(&mut conn)
                .expect("HGETALL");
            let ended = matches!(
                fields.get("status").map(String::as_str),
                Some("completed" | "error") | None
            );
            (!ended).then(|| {
                let mut fields = fields;
                fields.remove("script");
                (key, fields)
            })
        })
        .collect()
}

/// Checks the promise for `log` (see the module docs), then that plays
/// succeed on the new primary.
async fn check(o: &Orchestrator, ws_port: u16, new: u16, log: &[Played]) {
    let mut ws = connect(ws_port).await;
    for n in 0..5 {
        let reply = play(&mut ws, 500_000_000 + n, "1 + 1").await;
        assert_eq!(
            reply["result"]["output"],
            "2",
            "a play after the failover: {reply}\n{}",
            o.stderr()
        );
    }
    // Every hash ends: the reaper and the deadlines see to those whose
    // worker or waiter lost track of them.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = tokio::task::spawn_blocking(move || unended(new))
            .await
            .expect("scan");
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "task hashes never ended: {left:#?}\norchestrator log:\n{}",
            o.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let counts = records(&mut ws).await;
    let mut by_code: HashMap<i64, usize> = HashMap::new();
    for p in log {
        let n = counts.get(&p.req).copied().unwrap_or(0);
        assert!(
            n <= 1,
            "request {} ran {n} times ({:?}; its hash {:?})\n{}",
            p.req,
            p.outcome,
            hash(new, p.outcome.as_ref().ok()),
            o.stderr()
        );
        match &p.outcome {
            Ok(task) => assert_eq!(
                n,
                1,
                "request {} answered with a result (task {task}) left no record\n{}",
                p.req,
                o.stderr()
            ),
            Err((code, message)) => {
                *by_code.entry(*code).or_default() += 1;
                // 0: the connection closed by a reload that changed the
                // circle, with its reason.
                assert!(
                    [-32001, -32002, 0].contains(code) && !message.is_empty(),
                    "request {}: unclear error {code}: {message:?}",
                    p.req
                );
                // An error naming no task says nothing was queued (try
                // again): the script must not have run.
                assert!(
                    *code == 0 || p.queued.is_some() || n == 0,
                    "request {} answered {code} {message:?} without a task id, yet it ran\n{}",
                    p.req,
                    o.stderr()
                );
            }
        }
    }
    let ran = log.iter().filter(|p| counts.contains_key(&p.req)).count();
    eprintln!(
        "{} requests, {} results, errors by code {by_code:?}, {ran} ran; {} results written \
         again after redis lost them",
        log.len(),
        log.iter().filter(|p| p.outcome.is_ok()).count(),
        o.stderr().matches("not run again").count()
    );
}

/// The fields of task `id`'s hash on the server at `port`, its script left out.
fn hash(port: u16, id: Option<&String>) -> HashMap<String, String> {
    let Some(id) = id else {
        return HashMap::new();
    };
    let mut fields: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("rhai_task_details:{id}"))
        .query(&mut redis_at(port))
        .expect("HGETALL");
    fields.remove("script");
    fields
}

/// The process id of the Redis on `port`.
fn redis_pid(port: u16) -> u32 {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut redis_at(port))
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse().ok())
        .expect("process_id in INFO")
}

/// What the test does to the primary in the middle of the load.
#[derive(Clone, Copy)]
enum Fault {
    Failover,
    Kill,
    FailoverInReload,
    TwoFailovers,
}

async fn under_load(fault: Fault) {
    let group = Arc::new(SentinelGroup::start());
    let sandbox = Sandbox::new();
    let ws_port = port();
    let config = sandbox.circles(&[(1, "Alpha", ws_port)]);
    let mut o = Orchestrator::start(&sandbox, &config, &group.url(), &OPTIONS);
    o.wait_table();
    let load = Load::start(ws_port);
    load.wait_results(50, "results before the fault").await;

    let waiting = |old: u16| {
        let group = group.clone();
        tokio::task::spawn_blocking(move || {
            group.wait_for_new_primary(old, Duration::from_secs(60))
        })
    };
    let new = match fault {
        Fault::Failover => {
            let old = group.failover();
            waiting(old).await.expect("wait")
        }
        Fault::Kill => {
            let old = group.primary_port();
            let pid = redis_pid(old);
            let killed = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .expect("kill");
            assert!(killed.success());
            waiting(old).await.expect("wait")
        }
        Fault::FailoverInReload => {
            // A reload that changes the circle (its Redis named on its
            // own, the same) restarts its worker and server, and one that
            // adds a circle starts a worker taking its lease.
            sandbox.write(
                "circles.json",
                &format!(
                    r#"[{{"id":1,"name":"Alpha","port":{ws_port},"redis":"{}"}},
                        {{"id":2,"name":"Beta","port":{}}}]"#,
                    group.url(),
                    port()
                ),
            );
            o.signal("HUP");
            let old = group.failover();
            let new = waiting(old).await.expect("wait");
            o.wait_stdout("reload applied", HANG);
            new
        }
        Fault::TwoFailovers => {
            let old = group.failover();
            let middle = waiting(old).await.expect("wait");
            // Over a thousand plays end between the two: the old primary,
            // promoted again before the sentinels made it a replica of the
            // new one, shows those in flight at the first failover unrun.
            load.wait_results(1100, "results between the failovers")
                .await;
            // A sentinel refuses a failover while one is in progress
            // (`INPROG`); ask until one is accepted.
            let deadline = Instant::now() + Duration::from_secs(60);
            while group.primary_port() == middle
                && testkit::command(
                    group.sentinel_ports()[0],
                    &["SENTINEL", "FAILOVER", "circles"],
                )
                .ok()
                .and_then(|r| r.text().map(str::to_owned))
                .as_deref()
                    != Some("OK")
            {
                assert!(Instant::now() < deadline, "no second failover");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            waiting(middle).await.expect("wait")
        }
    };
    load.wait_results(50, "results after the fault").await;
    let log = load.finish().await;
    check(&o, ws_port, new, &log).await;
    // The table shows the worker running again (plain output: one line
    // per change after the table).
    let deadline = Instant::now() + HANG;
    loop {
        let stdout = o.stdout();
        let last = stdout
            .lines()
            .rfind(|l| l.contains("Alpha (id 1): worker"))
            .unwrap_or("worker Running");
        if last.contains("worker Running") {
            break;
        }
        assert!(Instant::now() < deadline, "the worker's row: {last}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = o.stop();
    assert!(status.success(), "{status}\n{}", o.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_failover_under_load_runs_every_play_at_most_once_and_ends_every_task() {
    under_load(Fault::Failover).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_under_load_runs_every_play_at_most_once_and_ends_every_task() {
    under_load(Fault::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_during_a_reload_runs_every_play_at_most_once_and_ends_every_task() {
    under_load(Fault::FailoverInReload).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_failovers_in_a_row_run_every_play_at_most_once_and_end_every_task() {
    under_load(Fault::TwoFailovers).await;
}
