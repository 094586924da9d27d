//! Shared fixtures of the server_ws integration tests: a real Redis, a server
//! on port 0, a raw WebSocket client, and a small stand-in worker that speaks
//! the real Redis task protocol (via `client::broker`) and "runs" a tiny
//! script language so each reply shape can be produced on demand.
#![allow(dead_code)]

pub mod host;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use client::broker::{BlockingPopper, BrokerOptions, Claim, WorkerBroker};
use client::{Outcome, TaskFailure, TaskOutput};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use server_ws::{ServerConfig, ServerStatus, ServerTiming};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a test waits for something that should happen promptly.
pub const PROMPTLY: Duration = Duration::from_secs(10);

pub const QUEUE: &str = "test_circle";

/// A running server with its Redis and (optionally) a stand-in worker.
pub struct Fixture {
    pub redis: testkit::RedisServer,
    pub addr: std::net::SocketAddr,
    pub status: Arc<ServerStatus>,
    pub token: CancellationToken,
    pub server: tokio::task::JoinHandle<server_ws::Result<()>>,
    pub worker_token: CancellationToken,
}

impl Fixture {
    /// Tasks finished on the fixture's queue so far (Redis' own counter).
    pub async fn processed(&self) -> u64 {
        let client = client::Client::connect(&self.redis.url())
            .await
            .expect("connect");
        client
            .stats_many(&[QUEUE])
            .await
            .expect("stats")
            .remove(0)
            .processed
    }

    /// Redis, a stand-in worker, and a server with `tweak` applied to the default config.
    pub async fn start(tweak: impl FnOnce(&mut ServerConfig)) -> Fixture {
        Fixture::start_with(tweak, ServerTiming::default(), true).await
    }

    pub async fn start_with(
        tweak: impl FnOnce(&mut ServerConfig),
        timing: ServerTiming,
        with_worker: bool,
    ) -> Fixture {
        Fixture::start_on(testkit::RedisServer::start(), tweak, timing, with_worker).await
    }

    /// [`Fixture::start_with`] on `redis` (one with persistence, say).
    pub async fn start_on(
        redis: testkit::RedisServer,
        tweak: impl FnOnce(&mut ServerConfig),
        timing: ServerTiming,
        with_worker: bool,
    ) -> Fixture {
        let client = client::Client::connect(&redis.url())
            .await
            .expect("connect the client to the test redis");
        let mut config = ServerConfig::new("Test Circle", QUEUE);
        tweak(&mut config);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        // As the orchestrator does: right after the bind, before the kernel
        // accepts a connection.
        server_ws::prepare_listener(&listener, &timing).expect("listener options");
        let addr = listener.local_addr().expect("local addr");
        let status = Arc::new(ServerStatus::default());
        let token = CancellationToken::new();
        let server = tokio::spawn(server_ws::run_with(
            config,
            timing,
            listener,
            client,
            Arc::clone(&status),
            token.clone(),
        ));
        let worker_token = CancellationToken::new();
        if with_worker {
            tokio::spawn(stand_in_worker(redis.url(), worker_token.clone()));
        }
        Fixture {
            redis,
            addr,
            status,
            token,
            server,
            worker_token,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub async fn connect(&self) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(self.url())
            .await
            .expect("websocket upgrade");
        ws
    }

    /// Cancels the server and waits for `run` to return.
    pub async fn shut_down(&mut self) -> server_ws::Result<()> {
        self.token.cancel();
        let ended = tokio::time::timeout(PROMPTLY, &mut self.server)
            .await
            .expect("run returns promptly after cancellation")
            .expect("server task did not panic");
        self.worker_token.cancel();
        ended
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.token.cancel();
        self.worker_token.cancel();
    }
}

/// Sends a text frame.
pub async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text))
        .await
        .expect("send a text frame");
}

/// The next text frame as JSON (pings are answered by tungstenite on read).
pub async fn recv(ws: &mut Ws) -> Value {
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a reply within the deadline")
            .expect("the connection is still open")
            .expect("a valid frame");
        match msg {
            Message::Text(text) => {
                return serde_json::from_str(text.as_str()).expect("the reply is JSON");
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// The next text frame, waiting as long as it takes (the caller bounds
/// the wait).
pub async fn recv_any(ws: &mut Ws) -> Value {
    loop {
        if let Some(Ok(Message::Text(t))) = ws.next().await {
            return serde_json::from_str(t.as_str()).expect("json");
        }
    }
}

/// Whether task `id`'s hash holds a cancel within 10 s (a cancel that
/// comes back with Redis: a reconnect and a retry take a few seconds).
pub async fn cancel_written(port: u16, id: &str) -> bool {
    let details = client::keys::task_details(id);
    for _ in 0..200 {
        if testkit::command(port, &["HEXISTS", &details, "cancel"]).ok()
            == Some(testkit::Reply::Int(1))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// What a worker that comes now is handed from `queue`: it beats first,
/// so its clock is Redis' as it is now.
pub async fn late_claim(url: &str, queue: &str) -> Option<Claim> {
    let broker = WorkerBroker::new(
        url,
        queue,
        "late",
        &BrokerOptions::new(Duration::from_secs(60)),
    )
    .expect("broker");
    broker
        .beat(Duration::from_secs(5), false)
        .await
        .expect("beat");
    broker.pop_and_claim().await.expect("claim")
}

/// Sends `text` and returns the reply.
pub async fn call(ws: &mut Ws, text: &str) -> Value {
    send(ws, text).await;
    recv(ws).await
}

/// A `play` request text.
pub fn play(id: impl Into<Value>, script: &str) -> String {
    serde_json::json!({"jsonrpc":"2.0","id":id.into(),"method":"play","params":{"script":script}})
        .to_string()
}

/// The error code of a reply (panics on a success).
pub fn code(reply: &Value) -> i64 {
    reply["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("expected an error reply, got {reply}"))
}

/// [`eventually`] for a check that has to await.
pub async fn eventually_async<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    testkit::until(what, PROMPTLY, || {
        let holds = f();
        async move { holds.await.then_some(()) }
    })
    .await;
}

/// Polls `f` until it holds, or panics naming `what` after [`PROMPTLY`].
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    testkit::until(what, PROMPTLY, || std::future::ready(f().then_some(()))).await;
}

/// Takes tasks from the real queue and finishes them through the real worker
/// side of the protocol. Scripts:
/// - `echo:X` completes with output X; `print:X` prints X and outputs "";
/// - `fail:M` fails (kind runtime, line 1, column 5) with message M;
/// - `expire` fails with kind timeout;
/// - `gate:N` completes once N other tasks have completed and their results
///   are written;
/// - `big:N` completes with an output of N bytes;
/// - `sleep:MS` completes with output "slept" after MS milliseconds;
/// - `hang` is claimed and never finished;
/// - `garble` gets a status no protocol version knows, so the waiter fails;
/// - anything else completes with the script as output.
pub async fn stand_in_worker(url: String, token: CancellationToken) {
    stand_in_worker_on(url, QUEUE, token).await;
}

/// [`stand_in_worker`] on another queue.
pub async fn stand_in_worker_on(url: String, queue: &str, token: CancellationToken) {
    let options = BrokerOptions::new(Duration::from_secs(60));
    let popper = BlockingPopper::new(
        &url,
        queue,
        "stand-in",
        Duration::from_millis(100),
        &options,
    )
    .expect("popper");
    let broker = Arc::new(WorkerBroker::new(&url, queue, "stand-in", &options).expect("broker"));
    let completed = Arc::new(AtomicU64::new(0));
    while !token.is_cancelled() {
        let Ok(Some(Claim::Run(task))) = popper.pop_and_claim(Duration::from_millis(100)).await
        else {
            continue;
        };
        if task.script == "garble" {
            garble(&url, queue, &task.task_id).await;
            continue;
        }
        let broker = Arc::clone(&broker);
        let completed = Arc::clone(&completed);
        tokio::spawn(async move {
            let outcome = match run_stand_in(&task.task_id, &task.script, &completed).await {
                Some(outcome) => outcome,
                None => return,
            };
            // Counted once its result is written, so that a `gate` opened by
            // this count finishes after it.
            let finished = broker.finish(&outcome).await.is_ok();
            if finished && matches!(outcome, Outcome::Completed(_)) {
                completed.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
}

/// Breaks the task's hash: a third party wrote a status the protocol does
/// not know. The stand-in then forgets the task (drops it from its
/// processing list), so its next claim does not find it there.
async fn garble(url: &str, queue: &str, task_id: &str) {
    let redis = redis::Client::open(url).expect("redis url");
    let mut conn = redis
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");
    let _: () = redis::cmd("HSET")
        .arg(client::keys::task_details(task_id))
        .arg("status")
        .arg("bogus")
        .query_async(&mut conn)
        .await
        .expect("HSET");
    let _: () = redis::cmd("LREM")
        .arg(client::keys::processing(queue, "stand-in"))
        .arg(1)
        .arg(task_id)
        .query_async(&mut conn)
        .await
        .expect("LREM");
}

async fn run_stand_in(task_id: &str, script: &str, completed: &AtomicU64) -> Option<Outcome> {
    let done = |output: &str, printed: &str| {
        Outcome::Completed(TaskOutput {
            task_id: task_id.to_string(),
            output: output.to_string(),
            printed: printed.to_string(),
            run_time: Some(Duration::from_micros(250)),
        })
    };
    let failed = |kind: &str, message: &str| {
        Outcome::Failed(TaskFailure {
            task_id: task_id.to_string(),
            kind: client::FailureKind::from_wire(kind),
            message: message.to_string(),
            line: Some(1),
            column: Some(5),
        })
    };
    Some(if let Some(x) = script.strip_prefix("echo:") {
        done(x, "")
    } else if let Some(x) = script.strip_prefix("print:") {
        done("", &format!("{x}\n"))
    } else if let Some(m) = script.strip_prefix("fail:") {
        failed("runtime", m)
    } else if script == "expire" {
        failed("timeout", "the script ran out of time")
    } else if let Some(n) = script.strip_prefix("gate:") {
        let n: u64 = n.parse().expect("gate:N");
        while completed.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        done("gate", "")
    } else if let Some(n) = script.strip_prefix("big:") {
        done(&"b".repeat(n.parse().expect("big:N")), "")
    } else if let Some(ms) = script.strip_prefix("sleep:") {
        let ms: u64 = ms.parse().expect("sleep:MS");
        tokio::time::sleep(Duration::from_millis(ms)).await;
        done("slept", "")
    } else if script == "hang" {
        return None;
    } else {
        done(script, "")
    })
}

/// Starts the real worker for the fixture's queue; returns its stop token.
pub fn start_worker(fx: &Fixture, dir: &std::path::Path) -> CancellationToken {
    start_worker_with(fx, dir, engine::Limits::default())
}

/// [`start_worker`] with the engine's limits.
pub fn start_worker_with(
    fx: &Fixture,
    dir: &std::path::Path,
    limits: engine::Limits,
) -> CancellationToken {
    let db = ourdb::OurDb::open(dir, ourdb::Config::default()).expect("open ourdb");
    let engine = Arc::new(engine::CircleEngine::new(Arc::new(db), limits));
    let token = CancellationToken::new();
    tokio::spawn(worker::run(
        worker::WorkerConfig::new(&fx.redis.url(), QUEUE),
        engine,
        Arc::new(worker::WorkerStatus::default()),
        token.clone(),
    ));
    token
}

/// The close code the server sent, within [`PROMPTLY`]; `None` when the
/// connection ended without a close frame. Pings and pongs are skipped; any
/// other message fails the test.
pub async fn close_code(ws: &mut Ws) -> Option<CloseCode> {
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        match tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("the server closes within the deadline")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(other)) => panic!("expected a close frame, got {other:?}"),
            Some(Err(_)) | None => return None,
        }
    }
}

/// A plain connection to the fixture's Redis, for looking at keys directly.
pub async fn redis_conn(fx: &Fixture) -> redis::aio::MultiplexedConnection {
    redis::Client::open(fx.redis.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis")
}

/// The fields of every task hash in the fixture's Redis.
pub async fn task_hashes(fx: &Fixture) -> Vec<std::collections::HashMap<String, String>> {
    let mut conn = redis_conn(fx).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", client::keys::TASK_DETAILS_PREFIX))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    let mut hashes = Vec::with_capacity(keys.len());
    for key in keys {
        let fields = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("HGETALL");
        hashes.push(fields);
    }
    hashes
}

/// The fields of the task whose script is `script`, once there is one.
pub async fn task_of_script(
    fx: &Fixture,
    script: &str,
) -> Option<std::collections::HashMap<String, String>> {
    task_hashes(fx)
        .await
        .into_iter()
        .find(|h| h.get("script").map(String::as_str) == Some(script))
}

/// Redis holds every write for `ms` milliseconds (`CLIENT PAUSE … WRITE`).
pub async fn pause_writes(fx: &Fixture, ms: u64) {
    let mut admin = redis_conn(fx).await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(ms)
        .arg("WRITE")
        .query_async(&mut admin)
        .await
        .expect("CLIENT PAUSE");
}
