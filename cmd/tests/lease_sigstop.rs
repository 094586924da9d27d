//! An orchestrator stopped (SIGSTOP) for longer than its lease while its
//! blocking pop waited: a task queued meanwhile is moved and claimed for it
//! inside Redis (the claim is pipelined behind the pop, and the lease is
//! still its own then). A standby takes over; on SIGCONT the stopped one
//! must not run that task: it lost the lease, by its own clock too.

mod common;

use std::time::{Duration, Instant};

use common::tasks::{conn, field, lease, submit, wait_field};
use common::{Orchestrator, Sandbox, port};

const WAIT: Duration = Duration::from_secs(30);

fn blocked_pops(conn: &mut redis::Connection) -> usize {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(conn)
        .expect("client list");
    list.lines()
        .filter(|l| l.contains("cmd=blmove") && l.contains("flags=b "))
        .count()
}

#[test]
fn a_worker_stopped_past_its_lease_does_not_run_the_task_claimed_for_it_meanwhile() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    let (wk1, wk2) = (sandbox.path().join("wk1"), sandbox.path().join("wk2"));
    let mut cmd = sandbox.serve_command(&config, &redis.url(), &wk1);
    cmd.args([
        "--role",
        "worker",
        "--worker-heartbeat",
        "200ms",
        "--worker-reap-interval",
        "200ms",
        "--worker-pop-timeout",
        "30s",
    ])
    .env("RUST_LOG", "info,worker=debug");
    let mut first = Orchestrator::spawn(cmd);
    first.wait_table();
    first.wait_stdout("Running", WAIT);
    let mut standby =
        common::spawn_fast_worker(&sandbox, &config, &redis.url(), &wk2, &["--standby"]);
    standby.wait_stdout("tandby", WAIT);
    let mut conn = conn(&redis);
    // A first task through the pop, so Redis has the claim script cached
    // (as on any worker that ran a task before).
    std::thread::sleep(Duration::from_millis(500));
    submit(&mut conn, "w", "1");
    wait_field(&mut conn, "w", "status", "completed");
    std::thread::sleep(Duration::from_millis(200));
    let deadline = Instant::now() + WAIT;
    while blocked_pops(&mut conn) == 0 {
        assert!(
            Instant::now() < deadline,
            "the first never blocked in its pop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    first.signal("STOP");
    submit(&mut conn, "t", "db::insert(\"t\"); \"t\"");
    // Moved and claimed for the stopped worker, inside Redis.
    wait_field(&mut conn, "t", "status", "processing");
    let first_worker = field(&mut conn, "t", "workerId").expect("claimed by the first");
    let deadline = Instant::now() + WAIT;
    while lease(&mut conn).map(|l| l.pid) != Some(standby.pid()) {
        assert!(Instant::now() < deadline, "the standby never took over");
        std::thread::sleep(Duration::from_millis(5));
    }
    let status_at_takeover = field(&mut conn, "t", "status");
    first.signal("CONT");
    std::thread::sleep(Duration::from_secs(2));
    let t: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(client::keys::task_details("t"))
        .query(&mut conn)
        .expect("hgetall");
    first.stop();
    // Read once it exited: its log's thread has written every line.
    let ran_on_first = first.stderr().contains("task t running");
    standby.stop();
    assert!(
        !ran_on_first,
        "the stopped worker ran task t after the standby took its lease over (t at takeover: \
         {status_at_takeover:?}, now {t:?})\nfirst's stderr:\n{}",
        first.stderr()
    );
    // Put back and run by the standby, once.
    assert_eq!(
        (
            t.get("status").map(String::as_str),
            t.get("output").map(String::as_str)
        ),
        (Some("completed"), Some("t")),
        "{t:?}"
    );
    assert_ne!(t.get("workerId"), Some(&first_worker), "{t:?}");
}
