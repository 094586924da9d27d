//! A circle moved to another Redis by a reload, through the built binary,
//! while a `--standby` orchestrator configured with its old Redis waits: the
//! moved circle's process keeps its lease on the old Redis, so the standby
//! goes on waiting (its row saying who holds it) and runs nothing there,
//! while the tasks on the new Redis run; a move back to the old Redis takes
//! the kept lease over and the standby still waits. Once the circle stops in
//! that process (SIGTERM, or a reload that removes it) the kept lease is
//! given up and the standby takes over. A circle changed in place keeps
//! its lease the same way while the reload drains the other circles.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::tasks::{conn, field, lease, submit, wait_field};
use common::{Orchestrator, Sandbox, port};
use serde_json::json;
use testkit::RedisServer;

const WAIT: Duration = Duration::from_secs(30);

/// Well past the lease's TTL (600 ms): a standby that could take the
/// lease over would have within this.
const PAST_TTL: Duration = Duration::from_secs(4);

fn spawn(sandbox: &Sandbox, config: &Path, url: &str, dir: &Path, extra: &[&str]) -> Orchestrator {
    common::spawn_fast_worker(sandbox, config, url, dir, extra)
}

/// The ports of Alpha and Beta.
type Ports = (u16, u16);

/// Writes `name` with circle Beta and circle Alpha (queue `alpha`): on its
/// own `redis` (`Some(Some)`), on the `--redis-url` (`Some(None)`), or not
/// at all (`None`).
fn circles(sandbox: &Sandbox, name: &str, ports: Ports, alpha: Option<Option<&str>>) -> Box<Path> {
    let mut list = vec![json!({"id": 2, "name": "Beta", "port": ports.1})];
    match alpha {
        Some(Some(redis)) => list.insert(
            0,
            json!({"id": 1, "name": "Alpha", "port": ports.0, "redis": redis}),
        ),
        Some(None) => list.insert(0, json!({"id": 1, "name": "Alpha", "port": ports.0})),
        None => {}
    }
    sandbox
        .write(name, &serde_json::Value::Array(list).to_string())
        .into_boxed_path()
}

/// The pid of the worker that ran task `id` (its worker id is `<pid>-…`).
fn ran_by(conn: &mut redis::Connection, id: &str) -> u32 {
    let worker = field(conn, id, "workerId").expect("a worker id");
    worker
        .split('-')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("worker id {worker:?}"))
}

/// For [`PAST_TTL`]: task `id` on the old Redis stays queued and the
/// standby never holds the lease there; then the lease there is `holder`'s.
fn standby_keeps_waiting(
    old: &mut redis::Connection,
    id: &str,
    holder: u32,
    standby: &Orchestrator,
) {
    let until = Instant::now() + PAST_TTL;
    while Instant::now() < until {
        assert_eq!(
            field(old, id, "status").as_deref(),
            Some("pending"),
            "a task on the old redis was taken while the circle runs elsewhere (worker {:?}, \
             the standby is pid {})\nstandby stderr:\n{}",
            field(old, id, "workerId"),
            standby.pid(),
            standby.stderr()
        );
        let held = lease(old);
        assert!(
            held.as_ref().is_none_or(|l| l.pid != standby.pid()),
            "the standby took the lease on the old redis: {held:?}\nstandby stderr:\n{}",
            standby.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        lease(old).map(|l| l.pid),
        Some(holder),
        "the lease on the old redis is not the moved circle's process's"
    );
}

/// P serves Alpha on `r1` and S waits for it there; P's file moves Alpha to
/// `r2` and P reloads. Returns (P, S, the circles' ports).
fn moved_away(
    sandbox: &Sandbox,
    r1: &RedisServer,
    r2: &RedisServer,
) -> (Orchestrator, Orchestrator, Ports) {
    let ports = (port(), port());
    let p_file = circles(sandbox, "p.json", ports, Some(None));
    let s_file = circles(sandbox, "s.json", ports, Some(None));
    let (wk1, wk2) = (sandbox.path().join("wk1"), sandbox.path().join("wk2"));
    let mut p = spawn(sandbox, &p_file, &r1.url(), &wk1, &[]);
    p.wait_table();
    p.wait_stdout("Running", WAIT);
    let mut s = spawn(
        sandbox,
        &s_file,
        &r1.url(),
        &wk2,
        &["--standby", "--output", "json", "--refresh", "100ms"],
    );
    s.wait_stdout("\"worker\":\"standby\"", WAIT);
    s.wait_stdout(&format!("held by pid {} on host", p.pid()), WAIT);
    let mut old = conn(r1);
    submit(&mut old, "before", "\"before\"");
    wait_field(&mut old, "before", "status", "completed");
    assert_eq!(ran_by(&mut old, "before"), p.pid());

    circles(sandbox, "p.json", ports, Some(Some(&r2.url())));
    p.reload(1, WAIT);
    let mut new = conn(r2);
    submit(&mut new, "on_r2", "\"on_r2\"");
    wait_field(&mut new, "on_r2", "status", "completed");
    assert_eq!(ran_by(&mut new, "on_r2"), p.pid());
    assert_eq!(lease(&mut new).map(|l| l.pid), Some(p.pid()));
    (p, s, ports)
}

#[test]
fn a_standby_on_the_old_redis_of_a_moved_circle_waits_until_its_process_stops() {
    let sandbox = Sandbox::new();
    let (r1, r2) = (RedisServer::start(), RedisServer::start());
    let (mut p, mut s, _) = moved_away(&sandbox, &r1, &r2);
    let mut old = conn(&r1);
    submit(&mut old, "on_r1", "\"on_r1\"");
    standby_keeps_waiting(&mut old, "on_r1", p.pid(), &s);
    assert!(
        !s.stdout().contains("\"worker\":\"running\""),
        "the standby ran the circle:\n{}",
        s.stdout()
    );

    // The kept lease goes with the process: the standby takes over.
    let stopped = Instant::now();
    assert!(p.stop().success(), "{}", p.stderr());
    wait_field(&mut old, "on_r1", "status", "completed");
    assert_eq!(ran_by(&mut old, "on_r1"), s.pid());
    assert_eq!(lease(&mut old).map(|l| l.pid), Some(s.pid()));
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "took over {:?} after the stop",
        stopped.elapsed()
    );
    for said in [
        "keeps its lease of queue alpha",
        "gave up its kept lease of queue alpha",
    ] {
        assert!(
            p.stderr().contains(said),
            "{said:?} not logged:\n{}",
            p.stderr()
        );
    }
    assert!(s.stop().success(), "{}", s.stderr());
}

#[test]
fn a_move_back_keeps_the_standby_waiting_and_a_reload_that_removes_the_circle_frees_it() {
    let sandbox = Sandbox::new();
    let (r1, r2) = (RedisServer::start(), RedisServer::start());
    let (mut p, mut s, ports) = moved_away(&sandbox, &r1, &r2);
    let mut old = conn(&r1);
    submit(&mut old, "held", "\"held\"");
    standby_keeps_waiting(&mut old, "held", p.pid(), &s);

    // Back to the first Redis: its worker takes the kept lease over there
    // and runs what was queued meanwhile.
    circles(&sandbox, "p.json", ports, Some(None));
    p.reload(2, WAIT);
    wait_field(&mut old, "held", "status", "completed");
    assert_eq!(ran_by(&mut old, "held"), p.pid());
    submit(&mut old, "back", "\"back\"");
    wait_field(&mut old, "back", "status", "completed");
    assert_eq!(ran_by(&mut old, "back"), p.pid());
    let mut new = conn(&r2);
    submit(&mut new, "left_r2", "\"left_r2\"");
    std::thread::sleep(PAST_TTL);
    assert_eq!(
        field(&mut new, "left_r2", "status").as_deref(),
        Some("pending"),
        "a task on the Redis the circle left ran"
    );
    assert_eq!(lease(&mut old).map(|l| l.pid), Some(p.pid()));
    assert!(!s.stdout().contains("\"worker\":\"running\""));

    // Moved away again, then removed: the kept lease is given up and the
    // standby takes over while P runs on.
    circles(&sandbox, "p.json", ports, Some(Some(&r2.url())));
    p.reload(3, WAIT);
    submit(&mut old, "on_r1", "\"on_r1\"");
    standby_keeps_waiting(&mut old, "on_r1", p.pid(), &s);
    circles(&sandbox, "p.json", ports, None);
    let removed = Instant::now();
    p.reload(4, WAIT);
    wait_field(&mut old, "on_r1", "status", "completed");
    assert_eq!(ran_by(&mut old, "on_r1"), s.pid());
    assert!(
        removed.elapsed() < Duration::from_secs(10),
        "took over {:?} after the removal",
        removed.elapsed()
    );
    assert!(p.stop().success(), "{}", p.stderr());
    assert!(s.stop().success(), "{}", s.stderr());
}

/// A reload that changes Alpha in place (its port: same Redis, same queue)
/// while it drains Beta, which runs one long script: Alpha's worker stops
/// at once, its new one starts once Beta's drain ends (5 s here). The
/// process keeps Alpha's lease meanwhile, so the standby waits and a task
/// sent to Alpha then runs in the changed circle, not in the standby.
#[test]
fn a_circle_changed_in_place_keeps_its_lease_while_the_reload_drains_another() {
    let sandbox = Sandbox::new();
    let r = RedisServer::start();
    let ports = (port(), port());
    let p_file = circles(&sandbox, "p.json", ports, Some(None));
    let s_file = sandbox.write(
        "s.json",
        &json!([{"id": 1, "name": "Alpha", "port": ports.0}]).to_string(),
    );
    let (wk1, wk2) = (sandbox.path().join("wk1"), sandbox.path().join("wk2"));
    let long = [
        "--shutdown-grace",
        "0s",
        "--max-operations",
        "100000000000",
        "--script-timeout",
        "120s",
    ];
    let mut p = spawn(&sandbox, &p_file, &r.url(), &wk1, &long);
    p.wait_table();
    p.wait_stdout("Running", WAIT);
    let mut s = spawn(
        &sandbox,
        &s_file,
        &r.url(),
        &wk2,
        &["--standby", "--output", "json", "--refresh", "100ms"],
    );
    s.wait_stdout(&format!("held by pid {} on host", p.pid()), WAIT);
    let mut c = conn(&r);
    let () = redis::pipe()
        .atomic()
        .hset_multiple(
            client::keys::task_details("long"),
            &[
                ("script", "let x = 0; loop { x += 1; } x"),
                ("status", "pending"),
            ],
        )
        .lpush(client::keys::tasks("beta"), "long")
        .query(&mut c)
        .expect("queue the long task");
    wait_field(&mut c, "long", "status", "processing");

    let changed = json!([{"id": 1, "name": "Alpha", "port": port()}]);
    sandbox.write("p.json", &changed.to_string());
    p.signal("HUP");
    p.wait_stderr("reloading", WAIT);
    // Alpha's old worker is gone within this; Beta's drain goes on.
    std::thread::sleep(Duration::from_secs(1));
    submit(&mut c, "during", "\"during\"");
    let deadline = Instant::now() + WAIT;
    while !p.stdout().contains("reload applied") {
        assert!(
            Instant::now() < deadline,
            "reload not applied\n{}",
            p.stderr()
        );
        let held = lease(&mut c);
        assert!(
            held.as_ref().is_none_or(|l| l.pid != s.pid()),
            "the standby took the lease of the changed circle during the reload: {held:?}\n\
             standby stderr:\n{}",
            s.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_field(&mut c, "during", "status", "completed");
    assert_eq!(ran_by(&mut c, "during"), p.pid(), "{}", s.stderr());
    submit(&mut c, "after", "\"after\"");
    wait_field(&mut c, "after", "status", "completed");
    assert_eq!(ran_by(&mut c, "after"), p.pid(), "{}", s.stderr());
    assert_eq!(lease(&mut c).map(|l| l.pid), Some(p.pid()));
    assert!(p.stop().success(), "{}", p.stderr());
    assert!(s.stop().success(), "{}", s.stderr());
}
