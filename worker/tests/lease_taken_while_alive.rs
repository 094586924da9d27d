//! A standby that takes the lease over from a worker that is still alive
//! (it beats) but lost the lease: what that worker's processing list holds
//! must still end. Here Redis is restored from an older snapshot that shows
//! a task `processing` by the old holder (it ran and finished after the
//! snapshot); the snapshot's lease had expired by the time Redis loaded it,
//! the old holder's beat reached the restored Redis before the standby took
//! the lease, and its own lease request after that.
//!
//! README ("Running on several machines", Redis Sentinel): "A task whose
//! finish was lost while the new primary still shows it running, or still
//! queued (also a Redis restarted from an older snapshot), is not run again:
//! its worker writes the result it kept … or ends it `worker_lost`."

mod common;

use std::time::Duration;

use client::{Lease, keys};
use common::*;
use worker::{WorkerConfig, WorkerState};

const WAIT: Duration = Duration::from_secs(30);
const QUEUE: &str = "stuck";

fn holder(pid: u32, host: &str, dir: &str) -> Lease {
    Lease {
        token: 0,
        pid,
        host: host.into(),
        dir: dir.into(),
    }
}

/// ACL user `name` (password `pw`) with the key patterns `keys`, every
/// command and channel. Its URL.
fn user(port: u16, name: &str, keys: &[&str]) -> String {
    let mut rules = vec!["ACL", "SETUSER", name, "on", ">pw", "allchannels", "+@all"];
    rules.extend_from_slice(keys);
    testkit::command(port, &rules).expect("acl user");
    format!("redis://{name}:pw@127.0.0.1:{port}/")
}

fn options() -> worker::WorkerOptions {
    let mut options = fast_options();
    options.heartbeat_interval = Duration::from_millis(300);
    options.heartbeat_ttl = Duration::from_millis(900);
    options
}

async fn lease_of(conn: &mut redis::aio::MultiplexedConnection) -> Option<Lease> {
    let value: Option<String> = redis::cmd("GET")
        .arg(keys::queue_owner(QUEUE))
        .query_async(conn)
        .await
        .expect("get");
    value.map(|v| Lease::parse(&v).expect("a lease"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_restored_as_running_on_a_live_worker_that_lost_its_lease_to_a_standby_ends() {
    let mut redis = testkit::RedisServer::start();
    let port = redis.port();
    let url_a = user(port, "a", &["~*"]);
    let url_b = user(port, "b", &["~*"]);
    let mut config_a = WorkerConfig::new(&url_a, QUEUE);
    config_a.lease = Some(holder(11, "host-a", "/data/a"));
    config_a.shutdown_grace = Duration::from_millis(200);
    let a = TestWorker::start_fresh(config_a, options(), slow_limits());
    let mut conn = raw(&redis.url()).await;
    until("a to hold the lease", WAIT, || {
        let mut conn = conn.clone();
        async move { lease_of(&mut conn).await.filter(|l| l.pid == 11) }
    })
    .await;
    let mut config_b = WorkerConfig::new(&url_b, QUEUE);
    config_b.lease = Some(holder(22, "host-b", "/data/b"));
    config_b.standby = true;
    config_b.shutdown_grace = Duration::from_millis(200);
    let b = TestWorker::start_fresh(config_b, options(), slow_limits());
    until("b to stand by", WAIT, || async {
        matches!(b.status.state(), WorkerState::Standby(_)).then_some(())
    })
    .await;

    // `job` runs on a for a second; the snapshot shows it processing by a.
    push_task(
        &mut conn,
        QUEUE,
        "job",
        &[],
        "db::insert(1); let t = timestamp(); while t.elapsed < 1.0 { } \"job\"",
    )
    .await;
    until_status(&conn, "job", "processing", WAIT).await;
    let () = redis::cmd("SAVE")
        .query_async(&mut conn)
        .await
        .expect("save");
    until_status(&conn, "job", "completed", WAIT).await;

    // Redis goes down for longer than the lease lives, and comes back from
    // that snapshot: its lease and heartbeats had expired by then.
    redis.kill();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    redis.restart();
    let mut conn = raw(&redis.url()).await;
    assert_eq!(
        hget(&mut conn, "job", "status").await.as_deref(),
        Some("processing"),
        "the snapshot shows job running"
    );
    assert_eq!(
        lease_of(&mut conn).await,
        None,
        "the snapshot's lease expired"
    );
    // a's beat reaches Redis first (its lease request does not yet) ...
    user(
        port,
        "a",
        &[
            "~rhai_task*",
            "~rhai_processing:*",
            "~rhai_worker*",
            "~rhai_stats:*",
            "~rhai_gateway*",
        ],
    );
    let a_beats = until("a to beat again", WAIT, || {
        let mut conn = conn.clone();
        async move {
            let beats = keys(&mut conn, &keys::heartbeat(QUEUE, "*")).await;
            (!beats.is_empty()).then_some(beats)
        }
    })
    .await;
    // ... then b takes the free lease over, then a asks for it.
    user(port, "b", &["~*"]);
    until("b to take the lease", WAIT, || {
        let mut conn = conn.clone();
        async move { lease_of(&mut conn).await.filter(|l| l.pid == 22) }
    })
    .await;
    user(port, "a", &["~*"]);
    until("a to see b holds the lease", WAIT, || async {
        match a.status.state() {
            WorkerState::LeaseLost(why) if why.contains("host-b") => Some(()),
            _ => None,
        }
    })
    .await;

    // Both are alive and connected: `job` must end, with a's kept result
    // or as worker_lost, not stay `processing` for as long as b holds the
    // lease.
    let mut ended = false;
    for _ in 0..100 {
        if matches!(
            hget(&mut conn, "job", "status").await.as_deref(),
            Some("completed" | "error")
        ) {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let job = hgetall(&mut conn, "job").await;
    let beats_now = keys(&mut conn, &keys::heartbeat(QUEUE, "*")).await;
    assert!(
        ended,
        "job never ended: {job:?}; a beats ({a_beats:?}, now {beats_now:?}), b holds the \
         lease, a waits for it (state {:?}), b runs (state {:?})",
        a.status.state(),
        b.status.state()
    );
    assert_eq!(
        (
            job.get("status").map(String::as_str),
            job.get("output").map(String::as_str)
        ),
        (Some("completed"), Some("job")),
        "a's kept result, not a second run"
    );
    assert_eq!(
        (a.engine.db().next_id(), b.engine.db().next_id()),
        (2, 1),
        "job ran once, on a"
    );
    a.stop().await;
    b.stop().await;
}
