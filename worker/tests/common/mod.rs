//! Shared fixtures of the worker tests: an in-process worker on a real OurDB
//! in a temp dir, against a real Redis.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use worker::{WorkerConfig, WorkerOptions, WorkerStatus};

/// Options that make dead workers visible quickly in tests.
pub fn fast_options() -> WorkerOptions {
    let mut options = WorkerOptions::default();
    options.pop_timeout = Duration::from_millis(200);
    options.heartbeat_interval = Duration::from_millis(100);
    options.heartbeat_ttl = Duration::from_millis(600);
    options.reap_interval = Duration::from_millis(200);
    options.max_backoff = Duration::from_millis(200);
    options
}

/// Limits generous enough for the deliberately slow scripts of the tests.
pub fn slow_limits() -> engine::Limits {
    timing_out_after(Duration::from_secs(120))
}

/// Limits under which a script stops at `timeout`, however many operations
/// it runs.
pub fn timing_out_after(timeout: Duration) -> engine::Limits {
    engine::Limits {
        timeout,
        max_operations: 0,
        ..engine::Limits::default()
    }
}

/// A script that inserts `marker` and then burns CPU until cancelled or
/// killed (about a minute at most).
pub fn slow_script(marker: &str) -> String {
    format!("db::insert(\"{marker}\"); let x = 0; while x < 2_000_000_000 {{ x += 1; }} x")
}

pub fn open_engine(dir: &std::path::Path, limits: engine::Limits) -> Arc<engine::CircleEngine> {
    let db = ourdb::OurDb::open(dir, ourdb::Config::default()).expect("open ourdb");
    Arc::new(engine::CircleEngine::new(Arc::new(db), limits))
}

/// A worker running in this process.
pub struct TestWorker {
    pub token: CancellationToken,
    pub status: Arc<WorkerStatus>,
    pub engine: Arc<engine::CircleEngine>,
    pub handle: JoinHandle<worker::Result<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestWorker {
    /// Starts a worker on `queue` with a fresh database.
    pub fn start(url: &str, queue: &str) -> TestWorker {
        TestWorker::start_fresh(
            WorkerConfig::new(url, queue),
            fast_options(),
            engine::Limits::default(),
        )
    }

    /// Starts a worker with a fresh database whose scripts run under
    /// `limits`; the database goes with the worker.
    pub fn start_fresh(
        config: WorkerConfig,
        options: WorkerOptions,
        limits: engine::Limits,
    ) -> TestWorker {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = open_engine(dir.path(), limits);
        let mut worker = TestWorker::start_with(config, options, engine);
        worker._dir = Some(dir);
        worker
    }

    pub fn start_with(
        config: WorkerConfig,
        options: WorkerOptions,
        engine: Arc<engine::CircleEngine>,
    ) -> TestWorker {
        let token = CancellationToken::new();
        let status = Arc::new(WorkerStatus::default());
        let handle = tokio::spawn(worker::run_with(
            config,
            options,
            Arc::clone(&engine),
            Arc::clone(&status),
            token.clone(),
        ));
        TestWorker {
            token,
            status,
            engine,
            handle,
            _dir: None,
        }
    }

    /// Cancels and waits for the drain.
    pub async fn stop(self) {
        self.token.cancel();
        self.handle.await.expect("join").expect("worker result");
    }
}

pub use testkit::until;

/// Waits until `status` counts `processed` and `failed`, or panics saying
/// what it counts. The worker counts a task once Redis answered its finish,
/// and the notification a waiter gets leaves Redis before that answer, so a
/// waiter that has its outcome polls for the count.
pub async fn until_counts(status: &WorkerStatus, processed: u64, failed: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while status.counts() != (processed, failed) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker counts {:?}, not ({processed}, {failed})",
            status.counts()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A raw connection, for inspecting Redis like a third party would.
pub async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

pub async fn hget(
    conn: &mut redis::aio::MultiplexedConnection,
    task_id: &str,
    field: &str,
) -> Option<String> {
    redis::cmd("HGET")
        .arg(client::keys::task_details(task_id))
        .arg(field)
        .query_async(conn)
        .await
        .expect("hget")
}

/// Waits (up to `timeout`) until task `id`'s hash has `status`.
pub async fn until_status(
    conn: &redis::aio::MultiplexedConnection,
    id: &str,
    status: &str,
    timeout: Duration,
) {
    until_status_in(conn, id, &[status], timeout).await;
}

/// Waits (up to `timeout`) until task `id`'s hash has one of `statuses`.
pub async fn until_status_in(
    conn: &redis::aio::MultiplexedConnection,
    id: &str,
    statuses: &[&str],
    timeout: Duration,
) {
    let what = format!("task {id} to be {}", statuses.join(" or "));
    until(&what, timeout, || {
        let mut conn = conn.clone();
        async move {
            let status = hget(&mut conn, id, "status").await;
            status
                .is_some_and(|s| statuses.contains(&s.as_str()))
                .then_some(())
        }
    })
    .await;
}

/// Waits (up to `timeout`) until task `id` has ended, `completed` or `error`.
pub async fn until_ended(conn: &redis::aio::MultiplexedConnection, id: &str, timeout: Duration) {
    until_status_in(conn, id, &["completed", "error"], timeout).await;
}

/// Where a pushed-again `job` stands when the worker's finish fails (the
/// finish that claims the next batch stops at `t2`, whose cancel it ends and
/// whose notification the ACL refuses): still pending in the processing
/// list, or claimed (`processing` by this worker) with the claim's reply
/// lost.
#[derive(Clone, Copy)]
pub enum Reuse {
    Pending,
    Claimed,
}

/// `job` ran here once ("first"); its old hash is deleted (expired, or
/// deleted by its owner) or kept (a "retry" tool overwrites `status` and
/// `script` only, so the old `createdAt` and output stay). A third party
/// pushes `job` again with another script; it lands in the worker's
/// processing list behind a finish that fails, so the worker finds it in
/// its look at that list after the failure (the `check_own` path, as in
/// `finish_failures.rs`). The new `job` runs and answers "second": it is
/// not the task whose result the worker kept.
pub async fn a_pushed_again_id_behind_a_failed_finish_runs(
    queue: &str,
    reuse: Reuse,
    keep_old_hash: bool,
) {
    let redis = testkit::RedisServer::start();
    let url = acl_user(redis.port(), Some("rhai_*"));
    let worker = TestWorker::start_fresh(
        WorkerConfig::new(&url, queue),
        fast_options(),
        slow_limits(),
    );
    let wait = Duration::from_secs(30);
    let mut conn = raw(&redis.url()).await;
    push_task(&mut conn, queue, "job", &[], "\"first\"").await;
    until_status(&conn, "job", "completed", wait).await;
    assert_eq!(
        hget(&mut conn, "job", "output").await.as_deref(),
        Some("first")
    );
    if !keep_old_hash {
        let _: () = redis::cmd("DEL")
            .arg(client::keys::task_details("job"))
            .query_async(&mut conn)
            .await
            .expect("del");
    }
    push_task(
        &mut conn,
        queue,
        "t0",
        &[],
        "let t = timestamp(); while t.elapsed < 1.0 { } \"t0\"",
    )
    .await;
    until_status(&conn, "t0", "processing", wait).await;
    push_task(&mut conn, queue, "t1", &[], "\"t1\"").await;
    if let Reuse::Claimed = reuse {
        push_task(&mut conn, queue, "job", &[], "\"second\"").await;
    }
    push_task(
        &mut conn,
        queue,
        "t2",
        &[("cancel", "gone"), ("replyTo", "refused_channel")],
        "\"t2\"",
    )
    .await;
    if let Reuse::Pending = reuse {
        push_task(&mut conn, queue, "job", &[], "\"second\"").await;
    }
    for id in ["t0", "t1"] {
        until_status(&conn, id, "completed", wait).await;
    }
    until_status(&conn, "t2", "error", wait).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    until_ended(&conn, "job", wait).await;
    let job = hgetall(&mut conn, "job").await;
    assert_eq!(
        (
            job.get("status").map(String::as_str),
            job.get("output").map(String::as_str)
        ),
        (Some("completed"), Some("second")),
        "the new task `job` did not run; it got the old one's result: {job:?}"
    );
    worker.stop().await;
}

/// Milliseconds since the Unix epoch, as a submitter writes `createdAt`.
pub fn now_ms() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        .to_string()
}

/// On `queue`: a `blocker` that runs 1 s, and behind it task `once`
/// (`db::insert(1)`, with its `createdAt` as this client writes it),
/// still queued when Redis takes the snapshot (`SAVE`) a restart restores.
pub async fn queued_behind_a_blocker_then_saved(
    conn: &mut redis::aio::MultiplexedConnection,
    queue: &str,
    timeout: Duration,
) {
    push_task(
        conn,
        queue,
        "blocker",
        &[],
        "let t = timestamp(); while t.elapsed < 1.0 { } \"blocker\"",
    )
    .await;
    until_status(conn, "blocker", "processing", timeout).await;
    let created = now_ms();
    push_task(
        conn,
        queue,
        "once",
        &[("createdAt", &created), ("updatedAt", &created)],
        "db::insert(1); \"once\"",
    )
    .await;
    assert_eq!(
        hget(conn, "once", "status").await.as_deref(),
        Some("pending"),
        "`once` waits behind the blocker"
    );
    let () = redis::cmd("SAVE").query_async(conn).await.expect("save");
}

/// The PTTL of task `id`'s hash: -1 without an expiry.
pub async fn pttl(conn: &mut redis::aio::MultiplexedConnection, id: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(client::keys::task_details(id))
        .query_async(conn)
        .await
        .expect("pttl")
}

/// All fields of task `id`'s hash.
pub async fn hgetall(
    conn: &mut redis::aio::MultiplexedConnection,
    id: &str,
) -> std::collections::BTreeMap<String, String> {
    redis::cmd("HGETALL")
        .arg(client::keys::task_details(id))
        .query_async(conn)
        .await
        .expect("hgetall")
}

/// Keys matching `pattern` (tests only; KEYS is fine on a test server).
pub async fn keys(conn: &mut redis::aio::MultiplexedConnection, pattern: &str) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(pattern)
        .query_async(conn)
        .await
        .expect("keys")
}

/// Writes a task hash with `fields` as a third party would (raw bytes: any
/// of them may be something no client of ours writes).
pub async fn hset_raw(
    conn: &mut redis::aio::MultiplexedConnection,
    task_id: &[u8],
    fields: &[(&[u8], &[u8])],
) {
    let mut cmd = redis::cmd("HSET");
    cmd.arg([client::keys::TASK_DETAILS_PREFIX.as_bytes(), task_id].concat());
    for (field, value) in fields {
        cmd.arg(*field).arg(*value);
    }
    let _: () = cmd.query_async(conn).await.expect("hset");
}

/// `LPUSH`es `ids` onto `list`, in order.
pub async fn lpush_raw(conn: &mut redis::aio::MultiplexedConnection, list: &str, ids: &[&[u8]]) {
    let _: () = redis::cmd("LPUSH")
        .arg(list)
        .arg(ids)
        .query_async(conn)
        .await
        .expect("lpush");
}

/// Asserts that `queue` has settled: its counters and `worker`'s own say
/// `processed` and `failed`, nothing is queued or in flight, and no
/// processing list is left.
pub async fn assert_settled(
    url: &str,
    queue: &str,
    worker: &TestWorker,
    processed: u64,
    failed: u64,
) {
    let client = client::Client::connect(url).await.expect("connect");
    let stats = client.stats_many(&[queue]).await.expect("stats").remove(0);
    assert_eq!(
        (
            stats.processed,
            stats.failed,
            stats.queue_len,
            stats.in_flight
        ),
        (processed, failed, 0, 0)
    );
    until_counts(&worker.status, processed, failed).await;
    let mut conn = raw(url).await;
    assert!(
        keys(&mut conn, &client::keys::processing(queue, "*"))
            .await
            .is_empty(),
        "nothing is left claimed"
    );
}

/// Keeps every record at debug level and above, as `level message`.
pub struct Capture(std::sync::Mutex<Vec<(log::Level, String)>>);

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Debug
    }
    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            self.0
                .lock()
                .expect("log lock")
                .push((record.level(), record.args().to_string()));
        }
    }
    fn flush(&self) {}
}

/// What [`capture_log`] keeps.
pub static LOG: Capture = Capture(std::sync::Mutex::new(Vec::new()));

/// Makes [`LOG`] the logger of this test binary, at debug level. Tests of
/// one binary run in one process under `cargo test`: a second call finds
/// [`LOG`] set already (nothing else sets a logger here), and shares it.
pub fn capture_log() {
    let _already_set = log::set_logger(&LOG);
    log::set_max_level(log::LevelFilter::Debug);
}

/// The captured records at `level` whose message contains `containing`.
pub fn lines(level: log::Level, containing: &str) -> Vec<String> {
    LOG.0
        .lock()
        .expect("log lock")
        .iter()
        .filter(|(l, m)| *l == level && m.contains(containing))
        .map(|(_, m)| m.clone())
        .collect()
}

/// Pushes task `id` onto `queue` as a third party would: its hash (`script`,
/// `status=pending` and `extra`), then its id.
pub async fn push_task(
    conn: &mut redis::aio::MultiplexedConnection,
    queue: &str,
    id: &str,
    extra: &[(&str, &str)],
    script: &str,
) {
    let mut fields: Vec<(&[u8], &[u8])> =
        vec![(b"script", script.as_bytes()), (b"status", b"pending")];
    for (k, v) in extra {
        fields.push((k.as_bytes(), v.as_bytes()));
    }
    hset_raw(conn, id.as_bytes(), &fields).await;
    lpush_raw(conn, &client::keys::tasks(queue), &[id.as_bytes()]).await;
}

/// Makes ACL user `w` (password `pw`) on the Redis at `port`: every key
/// and command, and only the channels `channels` matches (`None`: none, a
/// new user's default in Redis 7). Its URL.
pub fn acl_user(port: u16, channels: Option<&str>) -> String {
    let mut rules = vec!["ACL", "SETUSER", "w", "on", ">pw", "~*", "resetchannels"];
    let pattern = channels.map(|c| format!("&{c}"));
    if let Some(pattern) = &pattern {
        rules.push(pattern);
    }
    rules.push("+@all");
    testkit::command(port, &rules).expect("acl user");
    format!("redis://w:pw@127.0.0.1:{port}/")
}

/// The ids in `worker`'s processing list of `queue`, head first.
pub async fn processing_list(
    conn: &mut redis::aio::MultiplexedConnection,
    queue: &str,
    worker: &str,
) -> Vec<String> {
    redis::cmd("LRANGE")
        .arg(client::keys::processing(queue, worker))
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await
        .expect("lrange")
}
