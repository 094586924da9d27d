//! Reloads racing each other, the shutdown and a backlog: every reload
//! asked gets exactly one answer, one asked while shutting down 503 at
//! once; a changed circle that keeps its name and Redis carries its queue
//! over, cancelling nothing, and serves again within the drain's bound; a
//! reload while Redis is down ends and says so.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::http::admin_addr;
use common::tasks::queue_slow_tasks;
use common::{Orchestrator, Sandbox};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(60);

fn write_circles(sandbox: &Sandbox, circles: &[(u32, &str, u16)]) {
    let list: Vec<Value> = circles
        .iter()
        .map(|(id, name, port)| json!({"id": id, "name": name, "port": port}))
        .collect();
    let tmp = sandbox.write("circles.json.new", &Value::Array(list).to_string());
    std::fs::rename(tmp, sandbox.path().join("circles.json")).expect("rename");
}

/// Waits for the `n` tasks of [`queue_slow_tasks`] on `alpha` to end; the
/// ones a reload ended (its error names it), each with its error.
fn ended_by_a_reload(redis: &testkit::RedisServer, n: usize) -> Vec<String> {
    let mut conn = common::tasks::conn(redis);
    let deadline = Instant::now() + DEADLINE;
    let mut by_reload = Vec::new();
    for i in 0..n {
        let id = format!("alpha-slow-{i}");
        loop {
            match common::tasks::field(&mut conn, &id, "status").as_deref() {
                Some("completed") => break,
                Some("error") => {
                    let error = common::tasks::field(&mut conn, &id, "error");
                    if error.as_deref().is_some_and(|e| e.contains("reload")) {
                        by_reload.push(format!("{id}: {error:?}"));
                    }
                    break;
                }
                _ => {
                    assert!(Instant::now() < deadline, "task {id} never ended");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
    by_reload
}

/// `POST /api/reload`: the status code, or why no answer came.
fn post_reload(addr: SocketAddr) -> Result<u16, String> {
    let request = format!(
        "POST /api/reload HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    common::http::try_send(addr, &request).map(|answer| answer.code)
}

/// More reloads asked through the admin endpoint than its request channel
/// holds (16) while one reload drains, then SIGTERM: every reload "asked or
/// still waiting" gets 503 at once and never runs (README), also those still
/// waiting to get into the channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reload_waiting_when_the_shutdown_starts_gets_503_at_once_however_many_wait() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, b) = (common::port(), common::port());
    let config = sandbox.circles(&[(1, "Alpha", a), (2, "Beta", b)]);
    let mut o = Orchestrator::start(
        &sandbox,
        &config,
        &redis.url(),
        &[
            "--admin",
            "127.0.0.1:0",
            "--shutdown-grace",
            "3s",
            "--max-operations",
            "100000000",
        ],
    );
    o.wait_table();
    let addr = admin_addr(&o.stdout());
    // Beta's backlog makes the first reload's drain last ~8 s.
    queue_slow_tasks(&redis, "beta", 40);
    write_circles(&sandbox, &[(1, "Alpha", a)]);
    let first = std::thread::spawn(move || post_reload(addr));
    let deadline = Instant::now() + DEADLINE;
    while !o.stderr().contains("reloading") {
        assert!(Instant::now() < deadline, "no reload began: {}", o.stderr());
        std::thread::sleep(Duration::from_millis(10));
    }
    // 24 more: 16 fill the channel, the rest wait to get in.
    let waiting: Vec<_> = (0..24)
        .map(|_| std::thread::spawn(move || (post_reload(addr), Instant::now())))
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    o.signal("TERM");
    let termed = Instant::now();
    let mut late = Vec::new();
    for (i, w) in waiting.into_iter().enumerate() {
        let (answer, at) = w.join().expect("no panic");
        let after = at.saturating_duration_since(termed);
        if answer != Ok(503) || after > Duration::from_secs(3) {
            late.push(format!("#{i}: {answer:?} {after:?} after SIGTERM"));
        }
    }
    let first = first.join().expect("no panic");
    o.wait_exit(DEADLINE);
    assert!(
        late.is_empty(),
        "reloads waiting at the SIGTERM not answered 503 at once (the first: {first:?}):\n{}",
        late.join("\n")
    );
}

/// A circle whose element changes only by naming `--redis-url` as its own
/// `"redis"` keeps its name and its Redis (the Redis each resolves to is
/// compared, not the fields): its queue "is not worked off or cancelled:
/// the new worker runs what is queued" (README).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn naming_the_same_redis_explicitly_carries_the_queue_over_and_cancels_nothing() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let a = common::port();
    let config = sandbox.circles(&[(1, "Alpha", a)]);
    let mut o = Orchestrator::start(
        &sandbox,
        &config,
        &redis.url(),
        &["--shutdown-grace", "2s", "--max-operations", "100000000"],
    );
    o.wait_table();
    queue_slow_tasks(&redis, "alpha", 30);
    let list = json!([{"id": 1, "name": "Alpha", "port": a, "redis": redis.url()}]);
    let tmp = sandbox.write("circles.json.new", &list.to_string());
    std::fs::rename(tmp, sandbox.path().join("circles.json")).expect("rename");
    let asked = Instant::now();
    o.reload(1, DEADLINE);
    let took = asked.elapsed();
    assert!(
        o.stdout().contains("reload applied: changed \"Alpha\""),
        "{}",
        o.stdout()
    );
    let cancelled = ended_by_a_reload(&redis, 30);
    assert!(
        cancelled.is_empty(),
        "the reload took {took:?} and ended {} of 30 queued tasks of a circle that kept its \
         name and Redis:\n{}",
        cancelled.len(),
        cancelled.join("\n")
    );
    assert!(o.stop().success(), "{}", o.stderr());
}

/// A circle that only moves to another port keeps its name and Redis: its
/// queue is carried over to its new worker (README), nothing is cancelled,
/// and its old worker stops at the drain's bound (grace + 5 s) even with a
/// backlog it would go on claiming from, its held tasks back in the queue:
/// the circle serves again after about 7 s here, not after the 10 s more
/// the drain gives a worker to end cancelled tasks (17 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circle_moved_to_another_port_with_a_backlog_serves_again_within_the_grace_and_5_s() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, a2) = (common::port(), common::port());
    let config = sandbox.circles(&[(1, "Alpha", a)]);
    let mut o = Orchestrator::start(
        &sandbox,
        &config,
        &redis.url(),
        &["--shutdown-grace", "1s", "--max-operations", "100000000"],
    );
    o.wait_table();
    queue_slow_tasks(&redis, "alpha", 30);
    write_circles(&sandbox, &[(1, "Alpha", a2)]);
    let asked = Instant::now();
    o.reload(1, DEADLINE);
    let took = asked.elapsed();
    // The drain's bound is grace + 5 s, then the running script gets the
    // grace: 7 s; 12.5 s tells it apart from the 17 s of waiting for
    // cancelled tasks too, on a slow machine.
    assert!(
        took < Duration::from_millis(12_500),
        "a port change with a backlog took {took:?} to apply (its port closed all along):\n{}",
        o.stderr()
    );
    // Every queued task ends, none cancelled by the reload: the held ones
    // went back for the new worker. (A held task the old worker started in
    // its grace may be cut at the grace's end, as at any worker stop.)
    let cancelled = ended_by_a_reload(&redis, 30);
    assert!(cancelled.is_empty(), "{}", cancelled.join("\n"));
    assert!(o.stop().success(), "{}", o.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_while_redis_is_down_ends_and_says_so_and_one_after_it_is_back_applies() {
    let sandbox = Sandbox::new();
    let mut redis = testkit::RedisServer::start_persistent();
    let (a, b) = (common::port(), common::port());
    let config = sandbox.circles(&[(1, "Alpha", a)]);
    let mut o = Orchestrator::start(&sandbox, &config, &redis.url(), &["--shutdown-grace", "1s"]);
    o.wait_table();
    redis.kill();
    write_circles(&sandbox, &[(1, "Alpha", a), (2, "Beta", b)]);
    o.signal("HUP");
    let asked = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    let outcome = loop {
        if let Some(line) = o
            .stdout()
            .lines()
            .find(|l| l.contains("reload "))
            .map(str::to_string)
        {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "no reload outcome within 30 s with Redis down: {}",
            o.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("outcome after {:?}: {outcome}", asked.elapsed());
    assert!(!outcome.contains("reload applied"), "{outcome}");
    redis.restart();
    o.reload(1, DEADLINE);
    let mut ws = common::connect(b).await;
    assert_eq!(common::output(&mut ws, "1").await, "1");
    let mut ws = common::connect(a).await;
    assert_eq!(common::output(&mut ws, "2").await, "2");
    assert!(o.stop().success(), "{}", o.stderr());
}
