//! A worker PROCESS killed with SIGKILL mid-task, and mid-batch.
//!
//! This test binary has no libtest harness: run without arguments it is the
//! test; with `CIRCLES_CRASH_CHILD=1` it is a worker process (on a real OurDB
//! in the given directory) that the test kills and restarts.

mod common;

use std::process::{Child, Command};
use std::time::Duration;

use client::{Client, Outcome, SubmitOptions};
use common::*;

const CHILD: &str = "CIRCLES_CRASH_CHILD";
const QUEUE: &str = "crash_circle";
const WAIT: Duration = Duration::from_secs(60);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if std::env::var_os(CHILD).is_some() {
        runtime.block_on(child());
        return;
    }
    // Behave like a libtest harness for `--list`, `--ignored` and name
    // filters (cargo test and nextest both use them).
    const TESTS: [&str; 3] = [
        "a_killed_worker_s_task_ends_as_worker_lost_and_the_rest_run_once",
        "a_batch_cut_by_a_kill_ends_worker_lost_or_completed_and_durable_and_nothing_runs_twice",
        "a_retry_task_that_ran_before_its_worker_died_and_was_cancelled_does_not_say_it_never_ran",
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    // Positional arguments are name filters; skip the values of options.
    let mut filters: Vec<&String> = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if [
            "--format",
            "--color",
            "--test-threads",
            "--skip",
            "--logfile",
            "-Z",
        ]
        .contains(&arg.as_str())
        {
            iter.next();
        } else if !arg.starts_with('-') {
            filters.push(arg);
        }
    }
    let selected: Vec<&str> = TESTS
        .into_iter()
        .filter(|name| {
            filters.is_empty()
                || filters.iter().any(|f| {
                    if flag("--exact") {
                        f.as_str() == *name
                    } else {
                        name.contains(f.as_str())
                    }
                })
        })
        .collect();
    if flag("--list") {
        if !flag("--ignored") {
            for name in &selected {
                println!("{name}: test");
            }
        }
        return;
    }
    if flag("--ignored") {
        println!("running 0 tests");
        return;
    }
    println!("running {} tests", selected.len());
    for name in selected {
        if name == TESTS[0] {
            runtime.block_on(a_killed_worker_s_task_ends_as_worker_lost_and_the_rest_run_once());
        } else if name == TESTS[2] {
            runtime.block_on(
                a_retry_task_that_ran_before_its_worker_died_and_was_cancelled_does_not_say_it_never_ran(),
            );
        } else {
            runtime.block_on(
                a_batch_cut_by_a_kill_ends_worker_lost_or_completed_and_durable_and_nothing_runs_twice(),
            );
        }
        println!("test {name} ... ok");
    }
}

async fn child() {
    let url = std::env::var("REDIS_URL").expect("REDIS_URL");
    let dir = std::env::var("DATA_DIR").expect("DATA_DIR");
    let engine = open_engine(std::path::Path::new(&dir), slow_limits());
    let mut options = fast_options();
    if let Some(ms) = std::env::var("GROUP_WINDOW_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        options.group_window = Duration::from_millis(ms);
    }
    let worker = TestWorker::start_with(worker::WorkerConfig::new(&url, QUEUE), options, engine);
    // Runs until killed.
    let _ = worker.handle.await;
}

/// Kills the worker process when the test ends, even by a panic.
struct ChildGuard(Child);

impl ChildGuard {
    fn kill(&mut self) {
        self.0.kill().expect("SIGKILL the worker process");
        self.0.wait().expect("reap the worker process");
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_child(url: &str, dir: &std::path::Path) -> ChildGuard {
    spawn_child_with(url, dir, &[])
}

fn spawn_child_with(url: &str, dir: &std::path::Path, env: &[(&str, &str)]) -> ChildGuard {
    ChildGuard(
        Command::new(std::env::current_exe().expect("current exe"))
            .envs(env.iter().copied())
            .env(CHILD, "1")
            .env("REDIS_URL", url)
            .env("DATA_DIR", dir)
            .spawn()
            .expect("spawn the worker process"),
    )
}

async fn a_killed_worker_s_task_ends_as_worker_lost_and_the_rest_run_once() {
    let redis = testkit::RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = redis.url();
    let mut first = spawn_child(&url, dir.path());
    let client = Client::connect(&url).await.expect("connect");
    let opts = SubmitOptions::with_timeout(WAIT);

    let doomed = client
        .submit(QUEUE, &slow_script("doomed"), &opts)
        .await
        .expect("submit");
    let mut conn = raw(&url).await;
    until_status(&conn, &doomed, "processing", WAIT).await;
    let mut behind = Vec::new();
    for i in 2..=5 {
        let script = format!("db::insert(\"t{i}\"); {i}");
        behind.push(client.submit(QUEUE, &script, &opts).await.expect("submit"));
    }

    first.kill();
    let mut second = spawn_child(&url, dir.path());

    let outcome = client
        .wait(&doomed, WAIT)
        .await
        .expect("wait for the doomed task");
    let Outcome::Failed(f) = outcome else {
        panic!("the killed task must fail: {outcome:?}")
    };
    assert_eq!(f.kind.as_str(), "worker_lost");
    assert_eq!(f.message, client::broker::WORKER_LOST_MESSAGE);
    for (n, id) in behind.iter().enumerate() {
        let outcome = client.wait(id, WAIT).await.expect("wait");
        match outcome {
            Outcome::Completed(out) => assert_eq!(out.output, (n + 2).to_string()),
            other => panic!("task t{} behind the killed one: {other:?}", n + 2),
        }
    }
    let stats = client.stats_many(&[QUEUE]).await.expect("stats").remove(0);
    assert_eq!(
        (
            stats.processed,
            stats.failed,
            stats.queue_len,
            stats.in_flight
        ),
        (4, 1, 0, 0)
    );
    // The dead worker's processing list is gone.
    let lists = keys(&mut conn, &client::keys::processing(QUEUE, "*")).await;
    for list in lists {
        let len: u64 = redis::cmd("LLEN")
            .arg(&list)
            .query_async(&mut conn)
            .await
            .expect("llen");
        assert_eq!(len, 0, "{list} still holds a task");
    }

    second.kill();
    // Side effects: the killed script committed nothing; each task behind it
    // inserted exactly once.
    let db =
        ourdb::OurDb::open(dir.path(), ourdb::Config::default()).expect("reopen the circle's db");
    assert_eq!(db.next_id(), 5, "exactly four inserts were committed");
    let mut seen: Vec<String> = (1..5)
        .map(|id| String::from_utf8(db.get(id).expect("get").expect("record")).expect("utf8"))
        .collect();
    seen.sort();
    assert_eq!(seen, ["\"t2\"", "\"t3\"", "\"t4\"", "\"t5\""]);
}

/// Every value in the circle's database at `dir` (opened after the last
/// worker process is dead).
fn db_values(dir: &std::path::Path) -> Vec<String> {
    let db = ourdb::OurDb::open(dir, ourdb::Config::default()).expect("reopen the circle's db");
    (1..db.next_id())
        .filter_map(|id| db.get(id).expect("get"))
        .map(|v| String::from_utf8(v).expect("utf8"))
        .collect()
}

/// The rule of a batch cut by a kill (see the worker's `group` module):
/// every task of the batch not yet reported ends `worker_lost`, started or
/// not; a reported one stays `completed` with its writes on disk; no task
/// runs twice; every write acknowledged before the kill survives.
async fn a_batch_cut_by_a_kill_ends_worker_lost_or_completed_and_durable_and_nothing_runs_twice() {
    let redis = testkit::RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = redis.url();
    let client = Client::connect(&url).await.expect("connect");
    let opts = SubmitOptions::with_timeout(WAIT);

    // Acknowledged writes, made before any kill.
    let mut first = spawn_child(&url, dir.path());
    let mut acked = Vec::new();
    for i in 0..10 {
        let script = format!("db::insert(\"ack{i}\"); {i}");
        acked.push(client.submit(QUEUE, &script, &opts).await.expect("submit"));
    }
    for id in &acked {
        let outcome = client.wait(id, WAIT).await.expect("wait");
        assert!(matches!(outcome, Outcome::Completed(_)), "{outcome:?}");
    }
    first.kill();

    // Queued while no worker runs: the next worker claims them in one batch.
    let mut batch = Vec::new();
    for name in ["w1", "w2"] {
        let script = format!("db::insert(\"{name}\"); \"{name}\"");
        batch.push((
            name,
            client.submit(QUEUE, &script, &opts).await.expect("submit"),
        ));
    }
    let doomed = client
        .submit(QUEUE, &slow_script("doomed"), &opts)
        .await
        .expect("submit");
    batch.push(("doomed", doomed.clone()));
    for name in ["b1", "b2"] {
        let script = format!("db::insert(\"{name}\"); \"{name}\"");
        batch.push((
            name,
            client.submit(QUEUE, &script, &opts).await.expect("submit"),
        ));
    }
    let mut second = spawn_child(&url, dir.path());
    let conn = raw(&url).await;
    // Claimed, all in one batch: a short one may have completed already
    // (its group cut by the group window before the slow one ran).
    for (_, id) in &batch {
        until_status_in(&conn, id, &["processing", "completed"], WAIT).await;
    }
    // Give the slow script time to start (the kill may land anywhere: the
    // assertions below hold wherever it does).
    tokio::time::sleep(Duration::from_millis(300)).await;
    second.kill();
    let mut third = spawn_child(&url, dir.path());

    let mut completed = Vec::new();
    for (name, id) in &batch {
        match client.wait(id, WAIT).await.expect("wait") {
            Outcome::Completed(out) => {
                assert!(["w1", "w2"].contains(name), "{name} cannot have completed");
                assert_eq!(out.output, *name);
                completed.push(format!("\"{name}\""));
            }
            Outcome::Failed(f) => {
                assert_eq!(f.kind.as_str(), "worker_lost", "{name}: {f:?}");
            }
        }
    }
    let after = client
        .submit(QUEUE, "db::insert(\"after\"); 1", &opts)
        .await
        .expect("submit");
    let outcome = client.wait(&after, WAIT).await.expect("wait");
    assert!(matches!(outcome, Outcome::Completed(_)), "{outcome:?}");
    third.kill();

    let values = db_values(dir.path());
    let count = |v: &str| values.iter().filter(|x| x.as_str() == v).count();
    for i in 0..10 {
        assert_eq!(
            count(&format!("\"ack{i}\"")),
            1,
            "acknowledged write ack{i}"
        );
    }
    for v in &completed {
        assert_eq!(count(v), 1, "a completed task's write {v} is on disk");
    }
    for name in ["w1", "w2", "b1", "b2"] {
        assert!(
            count(&format!("\"{name}\"")) <= 1,
            "{name} ran at most once"
        );
    }
    for name in ["doomed", "b1", "b2"] {
        assert_eq!(count(&format!("\"{name}\"")), 0, "{name} committed nothing");
    }
    assert_eq!(count("\"after\""), 1);
}

/// Whether a data file of the database in `dir` holds `bytes` (a committed
/// value, read while its process still holds the database).
fn in_data_files(dir: &std::path::Path, bytes: &[u8]) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|entry| {
            std::fs::read(entry.path())
                .is_ok_and(|data| data.windows(bytes.len()).any(|w| w == bytes))
        })
}

/// A task that opted in to retry (`retry=1`) ran and committed its writes;
/// its worker died before reporting it (the group went on with a slow
/// script, and the process was killed). Its submitter cancelled it
/// meanwhile. The reaper puts it back on the queue (retry), and the next
/// claim ends it `cancelled`: the message must not say it never ran, since
/// it did and its write is in the database (README: `worker_lost` is "the one
/// case where an `error` does not mean that nothing is written").
async fn a_retry_task_that_ran_before_its_worker_died_and_was_cancelled_does_not_say_it_never_ran()
{
    let redis = testkit::RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = redis.url();
    let client = Client::connect(&url).await.expect("connect");
    let opts = SubmitOptions::with_timeout(WAIT);
    let mut conn = raw(&url).await;

    // Queued while no worker runs: the worker claims both in one batch and
    // runs them in one group (a window of a minute), so `ran` is not
    // reported while `doomed` runs.
    let ran = client
        .submit(QUEUE, "db::insert(\"ran\"); 1", &opts)
        .await
        .expect("submit");
    let _: () = redis::cmd("HSET")
        .arg(client::keys::task_details(&ran))
        .arg("retry")
        .arg("1")
        .query_async(&mut conn)
        .await
        .expect("hset retry");
    let doomed = client
        .submit(QUEUE, &slow_script("doomed"), &opts)
        .await
        .expect("submit");
    let mut first = spawn_child_with(&url, dir.path(), &[("GROUP_WINDOW_MS", "60000")]);
    until_status(&conn, &doomed, "processing", WAIT).await;
    // `ran` committed (its value is in a data file) before the kill.
    let deadline = std::time::Instant::now() + WAIT;
    while !in_data_files(dir.path(), b"\"ran\"") {
        assert!(
            std::time::Instant::now() < deadline,
            "`ran` never committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill();
    assert_eq!(
        hget(&mut conn, &ran, "status").await.as_deref(),
        Some("processing"),
        "`ran` was not reported before the kill"
    );
    assert!(
        client
            .cancel(&ran, "the client went away")
            .await
            .expect("cancel"),
        "cancelled while its dead worker holds it"
    );

    let mut second = spawn_child(&url, dir.path());
    let outcome = client.wait(&ran, WAIT).await.expect("wait");
    let doomed_outcome = client.wait(&doomed, WAIT).await.expect("wait");
    second.kill();
    let values = db_values(dir.path());
    assert_eq!(
        values.iter().filter(|v| v.as_str() == "\"ran\"").count(),
        1,
        "`ran` ran once and its write is committed: {values:?}"
    );
    assert!(
        matches!(&doomed_outcome, Outcome::Failed(f) if f.kind.as_str() == "worker_lost"),
        "{doomed_outcome:?}"
    );
    let Outcome::Failed(f) = outcome else {
        panic!("`ran` was cancelled: {outcome:?}")
    };
    assert!(
        !f.message.contains("before it ran"),
        "`ran` ran and committed its write, yet ends as {:?}: {:?}",
        f.kind.as_str(),
        f.message
    );
}
