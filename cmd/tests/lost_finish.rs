//! A Redis that comes back without a finish it had acknowledged (a
//! restart from a snapshot taken while the task ran; a Sentinel failover
//! to a replica the finish had not reached yet, which README admits can
//! happen): the worker finds the task in its own processing list, still
//! `processing` by itself, and must not run it a second time.

mod common;

use std::time::{Duration, Instant};

use common::tasks::{conn, field, submit};
use common::{Orchestrator, Sandbox, port};

const WAIT: Duration = Duration::from_secs(60);

fn wait_field(redis: &testkit::RedisServer, id: &str, name: &str, value: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(mut c) = redis::Client::open(redis.url())
            .expect("url")
            .get_connection()
            && field(&mut c, id, name).as_deref() == Some(value)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "task {id}: {name} never became {value:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_task_whose_acknowledged_finish_redis_lost_is_not_run_a_second_time() {
    let sandbox = Sandbox::new();
    let mut redis = testkit::RedisServer::start();
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    let mut cmd = sandbox.serve_command(&config, &redis.url(), &sandbox.data_dir());
    cmd.args(["--role", "worker", "--claim-batch", "1"]);
    let mut orchestrator = Orchestrator::spawn(cmd);
    orchestrator.wait_table();
    orchestrator.wait_stdout("Running", WAIT);

    let mut c = conn(&redis);
    // About a second of work, then one insert.
    submit(
        &mut c,
        "once",
        "let x = 0; while x < 1_500_000 { x += 1; } db::insert(#{ n: 1 })",
    );
    wait_field(&redis, "once", "status", "processing");
    // Redis persists the state in which the task runs...
    let _: () = redis::cmd("SAVE").query(&mut c).expect("save");
    // ...the task ends and its outcome is acknowledged (a waiter would have
    // been answered now)...
    wait_field(&redis, "once", "status", "completed");
    assert_eq!(field(&mut c, "once", "output").as_deref(), Some("1"));
    drop(c);
    // ...and Redis comes back without that finish.
    redis.kill();
    redis.restart();
    let mut c = conn(&redis);
    assert_eq!(
        field(&mut c, "once", "status").as_deref(),
        Some("processing"),
        "the snapshot holds the task as running"
    );

    // Whatever the worker does with it now, the circle's database must hold
    // the task's one insert: the next id is 2.
    submit(&mut c, "probe", "db::next_id()");
    wait_field(&redis, "probe", "status", "completed");
    let next = field(&mut c, "probe", "output");
    let once = (
        field(&mut c, "once", "status"),
        field(&mut c, "once", "output"),
    );
    orchestrator.stop();
    assert_eq!(
        next.as_deref(),
        Some("2"),
        "task `once` ran a second time after Redis lost its finish (its hash now: {once:?}); \
         log:\n{}",
        orchestrator.stderr()
    );
    assert_eq!(
        once,
        (Some("completed".into()), Some("1".into())),
        "its result written again"
    );
}
