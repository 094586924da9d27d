//! Split roles whose machines' clocks disagree: a gateway process and a
//! worker process of one circle on one Redis, the worker's wall clock
//! shifted a minute with libfaketime (`apt-get install faketime`), as on two
//! hosts without NTP or a VM restored from a snapshot. A task's deadline is
//! kept by Redis' clock on both sides (`client`'s `RedisClock`): a worker
//! ahead runs the plays it is handed, and one behind does not start a play
//! its gateway already answered as timed out. `CLOCK_SKEW_AHEAD` and
//! `CLOCK_SKEW_BEHIND` set other offsets (`+0s` checks the tests on clocks
//! that agree).

mod common;

use std::time::{Duration, Instant};

use common::{Orchestrator, Sandbox, connect, play, port};
use serde_json::json;

/// libfaketime's preload library, wherever Debian's multiarch put it.
fn libfaketime() -> std::path::PathBuf {
    std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|dir| dir.path().join("faketime/libfaketime.so.1"))
        .find(|lib| lib.exists())
        .expect("this test needs libfaketime: apt-get install faketime (scripts/install-deps.sh)")
}

/// One circle, Alpha, served by a `--role worker` process whose clock is
/// `worker_clock` (a FAKETIME offset) and a `--role gateway` process on
/// this machine's clock, on one Redis.
struct Split {
    redis: testkit::RedisServer,
    alpha: u16,
    _worker: Orchestrator,
    _gateway: Orchestrator,
    _sandbox: Sandbox,
}

impl Split {
    fn start(worker_clock: &str, worker_extra: &[&str], gateway_extra: &[&str]) -> Split {
        let sandbox = Sandbox::new();
        let redis = testkit::RedisServer::start();
        let alpha = port();
        let config = sandbox.circles(&[(1, "Alpha", alpha)]);
        let process = |role: &str, dir: &str, extra: &[&str], faketime: Option<&str>| {
            let mut cmd = sandbox.serve_command(&config, &redis.url(), &sandbox.path().join(dir));
            cmd.args(["--worker-heartbeat", "200ms", "--role", role])
                .args(extra);
            if let Some(offset) = faketime {
                cmd.env("LD_PRELOAD", libfaketime())
                    .env("FAKETIME", offset)
                    .env("FAKETIME_DONT_RESET", "1");
            }
            let mut o = Orchestrator::spawn(cmd);
            o.wait_table();
            o
        };
        let worker = process("worker", "wk", worker_extra, Some(worker_clock));
        let gateway = process("gateway", "gw", gateway_extra, None);
        Split {
            redis,
            alpha,
            _worker: worker,
            _gateway: gateway,
            _sandbox: sandbox,
        }
    }
}

/// The worker's clock offset: `default`, or `var` (`+0s` checks the test
/// itself on agreeing clocks).
fn skew(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

fn redis_conn(redis: &testkit::RedisServer) -> redis::Connection {
    redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("redis connection")
}

/// A worker host whose clock runs a minute ahead of its gateway's (more
/// than `--task-timeout`, 30 s) runs the play it is handed on an idle
/// queue, rather than expiring it unrun.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_clock_runs_ahead_of_the_gateway_still_runs_the_plays() {
    let split = Split::start(&skew("CLOCK_SKEW_AHEAD", "+60s"), &[], &[]);
    let mut ws = connect(split.alpha).await;
    let reply = play(&mut ws, 1, "40 + 2").await;
    assert_eq!(
        reply["result"]["output"],
        json!("42"),
        "an idle circle whose worker's clock is 60 s ahead of its gateway's must run the play: {reply}"
    );
}

/// A worker host whose clock runs a minute behind its gateway's does not
/// start a task after the gateway answered it -32001 ("did not finish
/// within"): a timed-out play is not cancelled, its deadline ends it
/// (README: it "may still run until `--task-timeout` after it was sent"),
/// so the deadline must hold on the worker's side too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_play_answered_timed_out_does_not_run_later_on_a_worker_whose_clock_is_behind() {
    let split = Split::start(
        &skew("CLOCK_SKEW_BEHIND", "-60s"),
        &["--max-operations", "4000000000"],
        &["--task-timeout", "2s"],
    );
    let redis = &split.redis;
    // Keep the worker busy for 4 s with a task another program pushed (no
    // deadline), so the play below waits in the queue past its 2 s.
    let mut conn = redis_conn(redis);
    let _: () = redis::pipe()
        .atomic()
        .cmd("HSET")
        .arg("rhai_task_details:busy")
        .arg("script")
        .arg("let t = timestamp(); while t.elapsed < 4.0 {} 0")
        .arg("status")
        .arg("pending")
        .ignore()
        .cmd("LPUSH")
        .arg("rhai_tasks:alpha")
        .arg("busy")
        .ignore()
        .query(&mut conn)
        .expect("push the busy task");
    testkit::wait_for("the busy task to start", Duration::from_secs(10), || {
        let status: Option<String> = redis::cmd("HGET")
            .arg("rhai_task_details:busy")
            .arg("status")
            .query(&mut conn)
            .ok()?;
        (status.as_deref() == Some("processing")).then_some(())
    });

    let mut ws = connect(split.alpha).await;
    let sent = Instant::now();
    let reply = play(&mut ws, 1, "db::insert(#{ late: true })").await;
    assert_eq!(reply["error"]["code"], json!(-32001), "{reply}");
    assert!(sent.elapsed() < Duration::from_secs(4), "{reply}");
    let task_id = reply["error"]["data"]["task_id"]
        .as_str()
        .expect("task id")
        .to_owned();

    let status = testkit::wait_for("the timed-out task to end", Duration::from_secs(20), || {
        let h: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(format!("rhai_task_details:{task_id}"))
            .query(&mut conn)
            .ok()?;
        match h.get("status").map(String::as_str) {
            Some("completed") | Some("error") => Some(h),
            _ => None,
        }
    });
    assert_eq!(
        status.get("status").map(String::as_str),
        Some("error"),
        "a play answered -32001 at its deadline ran {:.1} s after it was sent and committed \
         its write: {status:?}",
        sent.elapsed().as_secs_f64()
    );
}
