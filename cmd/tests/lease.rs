//! The queue's lease through the built binary: `--standby` waits for a
//! circle another orchestrator holds, without opening its database, shows
//! the holder in its row, and takes over once that one is killed; a worker cut off from Redis (a
//! frozen TCP proxy in between) stops before its lease can expire and takes
//! nothing once another holds it; a second worker on a data dir named apart
//! only by a byte that is not UTF-8 refuses; a restart after kill -9 on the
//! same data dir ends the dead run's task once it stayed silent for a beat
//! and a half; a standby on the same data dir takes nothing over while the
//! other process reloads the circle.

mod common;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::tasks::{conn, field, lease, submit, wait_field};
use common::{Orchestrator, Sandbox, epoch_ms, port};

const WAIT: Duration = Duration::from_secs(30);

fn spawn(sandbox: &Sandbox, config: &Path, url: &str, dir: &Path, extra: &[&str]) -> Orchestrator {
    common::spawn_fast_worker(sandbox, config, url, dir, extra)
}

/// [`spawn`], once its worker runs.
fn spawn_running(sandbox: &Sandbox, config: &Path, url: &str, dir: &Path) -> Orchestrator {
    let mut o = spawn(sandbox, config, url, dir, &[]);
    o.wait_table();
    o.wait_stdout("Running", WAIT);
    o
}

const SLOW: &str = "let x = 0; while x < 2_000_000_000 { x += 1; } x";

#[test]
fn a_standby_waits_without_opening_its_database_and_takes_over_from_a_killed_worker() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    let (wk1, wk2) = (sandbox.path().join("wk1"), sandbox.path().join("wk2"));
    let mut first = spawn_running(&sandbox, &config, &redis.url(), &wk1);
    let mut standby = spawn(
        &sandbox,
        &config,
        &redis.url(),
        &wk2,
        &["--standby", "--output", "json", "--refresh", "100ms"],
    );
    standby.wait_stdout("\"worker\":\"standby\"", WAIT);
    standby.wait_stdout(&format!("held by pid {} on host", first.pid()), WAIT);
    // Its row names the holder from the lease.
    standby.wait_stdout(&format!("\"pid\":{}", first.pid()), WAIT);
    let standby_db = wk2.join("1");
    assert_eq!(
        std::fs::read_dir(&standby_db)
            .expect("its directory")
            .count(),
        0,
        "the standby opened no database while another holds the lease"
    );

    let mut conn = conn(&redis);
    submit(&mut conn, "slow", SLOW);
    wait_field(&mut conn, "slow", "status", "processing");
    let before = lease(&mut conn).expect("held");
    first.child.kill().expect("kill -9 the first orchestrator");
    let _ = first.child.wait();
    for id in ["q1", "q2", "q3"] {
        submit(&mut conn, id, &format!("\"{id}\""));
    }
    for id in ["q1", "q2", "q3"] {
        wait_field(&mut conn, id, "status", "completed");
        assert_eq!(field(&mut conn, id, "output").as_deref(), Some(id));
    }
    wait_field(&mut conn, "slow", "status", "error");
    assert_eq!(
        field(&mut conn, "slow", "errorKind").as_deref(),
        Some("worker_lost")
    );
    let after = lease(&mut conn).expect("held");
    assert_eq!(after.pid, standby.pid());
    standby.wait_stdout(&format!("\"pid\":{}", standby.pid()), WAIT);
    assert!(after.token > before.token, "{after:?} after {before:?}");
    assert!(
        std::fs::read_dir(&standby_db)
            .expect("its directory")
            .count()
            > 0,
        "its database opened once the lease was held"
    );
    standby.stop();
}

#[test]
fn a_standby_on_the_same_data_dir_waits_for_the_database_and_leaves_the_lease_alone() {
    // The lease's holder names the same host and directory as the standby
    // (a restart after a crash takes such a lease at once); while the first
    // process has the database open, the standby must not take it.
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    let dir = sandbox.path().join("shared");
    let mut first = spawn_running(&sandbox, &config, &redis.url(), &dir);
    let mut conn = conn(&redis);
    submit(&mut conn, "w1", "db::insert(\"from the first\")");
    wait_field(&mut conn, "w1", "status", "completed");
    let before = lease(&mut conn).expect("held");
    let mut standby = spawn(
        &sandbox,
        &config,
        &redis.url(),
        &dir,
        &["--standby", "--output", "json", "--refresh", "100ms"],
    );
    standby.wait_stdout("\"worker\":\"standby\"", WAIT);
    standby.wait_stdout("is open in another process on this host", WAIT);
    // Ten beats: the lease stays the first's, token and all, and it serves.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        lease(&mut conn),
        Some(before.clone()),
        "the lease left alone"
    );
    submit(&mut conn, "w2", "db::insert(\"still the first\")");
    wait_field(&mut conn, "w2", "status", "completed");
    assert_eq!(
        field(&mut conn, "w2", "workerId").map(|w| w.starts_with(&format!("{}-", first.pid()))),
        Some(true)
    );

    first.child.kill().expect("kill -9 the first orchestrator");
    let _ = first.child.wait();
    submit(&mut conn, "w3", "db::get(1)");
    wait_field(&mut conn, "w3", "status", "completed");
    assert_eq!(
        field(&mut conn, "w3", "output").as_deref(),
        Some("from the first"),
        "the standby took over the same database"
    );
    let after = lease(&mut conn).expect("held");
    assert_eq!(after.pid, standby.pid());
    assert!(after.token > before.token, "{after:?} after {before:?}");
    standby.stop();
}

/// A reload that changes a circle starts it again on its database, open all
/// along: a standby on the same data dir (which takes its own database's
/// lease at once, and looks every 10 ms here) never finds it free, so the
/// lease and every task stay with the process that runs the circle.
#[test]
fn a_standby_on_the_same_data_dir_takes_nothing_over_while_the_other_reloads_the_circle() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (p1, p2) = (port(), port());
    let config = sandbox.circles(&[(1, "Alpha", p1)]);
    let dir = sandbox.path().join("shared");
    let mut first = spawn(
        &sandbox,
        &config,
        &redis.url(),
        &dir,
        &["--admin", "127.0.0.1:0"],
    );
    first.wait_table();
    first.wait_stdout("Running", WAIT);
    let admin = common::http::admin_addr(&first.stdout());
    let mut standby = spawn(
        &sandbox,
        &config,
        &redis.url(),
        &dir,
        &["--standby", "--worker-heartbeat", "10ms"],
    );
    standby.wait_stdout("is open in another process on this host", WAIT);
    let mut conn = conn(&redis);
    for round in 0..20 {
        // Only its port changes: the same queue, carried over.
        sandbox.circles(&[(1, "Alpha", if round % 2 == 0 { p2 } else { p1 })]);
        let mut reload = sandbox.command();
        reload.args(["reload", "--admin", &admin.to_string()]);
        let (code, out, err) = common::run_to_end(reload, WAIT);
        assert_eq!(
            code.code(),
            Some(0),
            "round {round}: {out}{err}\nstandby: {}",
            standby.stderr()
        );
        let id = format!("r{round}");
        submit(&mut conn, &id, "db::insert(1)");
        wait_field(&mut conn, &id, "status", "completed");
        assert_eq!(
            field(&mut conn, &id, "workerId").map(|w| w.starts_with(&format!("{}-", first.pid()))),
            Some(true),
            "round {round}: ran in the standby: {}",
            standby.stderr()
        );
        assert_eq!(
            lease(&mut conn).map(|l| l.pid),
            Some(first.pid()),
            "round {round}"
        );
    }
    assert!(standby.stop().success(), "{}", standby.stderr());
    assert!(first.stop().success(), "{}", first.stderr());
}

/// kill -9 with a task in hand and a restart at once on the same data dir
/// (a supervisor's restart): the new process holds the database the dead
/// one held, so it takes the lease over as that database's and, once the
/// dead run's worker stayed silent for a beat and a half (6 s here:
/// heartbeats of 4 s), ends its task as `worker_lost`, not at the first
/// reap after the dead worker's heartbeat expired (reaps a minute apart
/// here); and a clean stop then frees the lease, no registration of the
/// dead run holding it back.
#[test]
fn a_restart_after_kill_9_ends_the_dead_runs_task_once_it_stays_silent_and_a_clean_stop_frees_the_lease()
 {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    let dir = sandbox.path().join("data");
    let start = || {
        let mut cmd = sandbox.serve_command(&config, &redis.url(), &dir);
        cmd.args([
            "--role",
            "worker",
            "--worker-heartbeat",
            "4s",
            "--worker-reap-interval",
            "60s",
            "--worker-pop-timeout",
            "1s",
        ]);
        let mut orchestrator = Orchestrator::spawn(cmd);
        orchestrator.wait_table();
        orchestrator.wait_stdout("Running", WAIT);
        orchestrator
    };
    let mut first = start();
    let mut conn = conn(&redis);
    submit(&mut conn, "slow", SLOW);
    wait_field(&mut conn, "slow", "status", "processing");
    first.child.kill().expect("kill -9 the first orchestrator");
    let _ = first.child.wait();

    let mut second = start();
    wait_field(&mut conn, "slow", "status", "error");
    assert_eq!(
        field(&mut conn, "slow", "errorKind").as_deref(),
        Some("worker_lost")
    );
    submit(&mut conn, "after", "40 + 2");
    wait_field(&mut conn, "after", "status", "completed");
    assert_eq!(lease(&mut conn).map(|l| l.pid), Some(second.pid()));
    second.stop();
    assert_eq!(lease(&mut conn), None, "released at a clean stop");
}

/// A restart after kill -9 stopped cleanly before the dead run's workers
/// were found silent (their heartbeats still live in Redis) frees the lease
/// all the same: only a worker of the stopping process holds it back, so a
/// standby, or a start on another data dir, takes over at once.
#[test]
fn a_restart_after_kill_9_stopped_at_once_frees_the_lease() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    // Heartbeats of 20 s: a dead worker's stays live for a minute, and the
    // restart finds it silent only after 30 s.
    let start = |dir: &Path| {
        let mut cmd = sandbox.serve_command(&config, &redis.url(), dir);
        cmd.args(["--role", "worker", "--worker-heartbeat", "20s"]);
        let mut orchestrator = Orchestrator::spawn(cmd);
        orchestrator.wait_table();
        orchestrator.wait_stdout("Running", WAIT);
        orchestrator
    };
    let dir = sandbox.path().join("data");
    let mut first = start(&dir);
    first.child.kill().expect("kill -9 the first orchestrator");
    let _ = first.child.wait();
    let mut conn = conn(&redis);
    let mut second = start(&dir);
    assert_eq!(lease(&mut conn).map(|l| l.pid), Some(second.pid()));
    let dead_beats: Vec<String> = redis::cmd("KEYS")
        .arg(client::keys::heartbeat(
            "alpha",
            &format!("{}*", client::keys::worker_id_prefix(first.pid())),
        ))
        .query(&mut conn)
        .expect("keys");
    assert!(
        !dead_beats.is_empty(),
        "the dead run's heartbeat is still live"
    );
    second.stop();
    assert_eq!(lease(&mut conn), None, "released at a clean stop");
    let mut third = start(&sandbox.path().join("other"));
    assert_eq!(lease(&mut conn).map(|l| l.pid), Some(third.pid()));
    third.stop();
}

/// Two data dirs whose names differ only in a byte that is not UTF-8 are
/// two databases: the second worker refuses, as for any other data dir,
/// instead of taking the lease as a restart of the first.
#[test]
fn a_second_worker_on_a_data_dir_named_apart_only_by_a_non_utf8_byte_refuses() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt as _;

    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    let named = |byte: u8| {
        let mut name = b"data-".to_vec();
        name.push(byte);
        sandbox.path().join(OsStr::from_bytes(&name))
    };
    let mut first = spawn_running(&sandbox, &config, &redis.url(), &named(0xff));
    let held = lease(&mut conn(&redis)).expect("held");
    let mut second = spawn(&sandbox, &config, &redis.url(), &named(0xfe), &[]);
    let status = second.wait_exit(WAIT);
    assert_eq!(status.code(), Some(1), "{}", second.stderr());
    let said = second.stderr();
    assert!(
        said.contains(&held.dir),
        "names the holder's {}: {said}",
        held.dir
    );
    assert!(held.dir.contains(r"\xFF"), "{held:?}");
    assert_eq!(lease(&mut conn(&redis)), Some(held), "the lease left alone");
    first.stop();
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

#[test]
fn a_partitioned_worker_stops_before_its_lease_expires_and_takes_nothing_after() {
    assert_eq!(epoch_ms("1970-01-02T00:00:01.005Z"), 86_401_005);
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let proxy = testkit::Proxy::start(redis.port());
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    let mut o = spawn(
        &sandbox,
        &config,
        &proxy.redis_url(),
        &sandbox.path().join("wk"),
        &["--log-format", "json"],
    );
    o.wait_table();
    o.wait_stdout("Running", WAIT);
    let mut conn = conn(&redis);
    submit(&mut conn, "slow", SLOW);
    wait_field(&mut conn, "slow", "status", "processing");

    proxy.freeze();
    // When the lease expires, read from Redis itself: the last `now + PTTL`
    // before the key is gone (no renewal gets through any more).
    let deadline = Instant::now() + WAIT;
    let mut expires_ms = None;
    loop {
        let pttl: i64 = redis::cmd("PTTL")
            .arg(client::keys::queue_owner("alpha"))
            .query(&mut conn)
            .expect("pttl");
        if pttl < 0 {
            break;
        }
        expires_ms = Some(now_ms() + pttl as u64);
        assert!(Instant::now() < deadline, "the lease never expired");
        std::thread::sleep(Duration::from_millis(2));
    }
    let expires_ms = expires_ms.expect("the lease was held at the cut");
    o.wait_stdout("Lease lost", WAIT);
    let row = o
        .stdout()
        .lines()
        .find(|l| l.contains("Lease lost"))
        .map(str::to_owned)
        .expect("a row line");
    assert!(
        row.contains("Alpha") && row.contains("not renewed"),
        "{row}"
    );
    // The log's own thread writes the line a moment after the row shows.
    o.wait_stderr("lease of queue alpha lost", WAIT);
    let logged = o
        .stderr()
        .lines()
        .find(|l| l.contains("lease of queue alpha lost"))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON log line"))
        .expect("the stop is logged");
    let stopped_ms = epoch_ms(logged["timestamp"].as_str().expect("a timestamp"));
    assert!(
        stopped_ms < expires_ms,
        "stopped at {stopped_ms}, the lease expired at {expires_ms}"
    );

    // Another host takes the circle over meanwhile; once the cut heals the
    // worker sees it and takes nothing.
    let _: () = redis::cmd("SET")
        .arg(client::keys::queue_owner("alpha"))
        .arg("999999|4242|other-host|/elsewhere/1")
        .query(&mut conn)
        .expect("set");
    submit(&mut conn, "later", "1");
    proxy.thaw();
    o.wait_stdout("lease of queue alpha lost to", WAIT);
    o.wait_stderr("pid 4242 on host other-host", WAIT);
    assert_eq!(
        field(&mut conn, "later", "status").as_deref(),
        Some("pending")
    );
    // The script it was running was cut: it ended as cancelled, saying why.
    wait_field(&mut conn, "slow", "status", "error");
    let error = field(&mut conn, "slow", "error").unwrap_or_default();
    assert!(error.contains("lease of queue alpha lost"), "{error}");
    o.stop();
}

/// A standby that took over reports its database in /metrics, as a worker
/// that opened it at start does, and counts its uptime from the take-over,
/// not from when it began to wait.
#[test]
fn a_standby_that_took_over_reports_its_database_and_its_uptime_from_then() {
    use common::http::{admin_addr, get};
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    let (wk1, wk2) = (sandbox.path().join("wk1"), sandbox.path().join("wk2"));
    let mut first = spawn_running(&sandbox, &config, &redis.url(), &wk1);
    let mut standby = spawn(
        &sandbox,
        &config,
        &redis.url(),
        &wk2,
        &["--standby", "--admin", "127.0.0.1:0", "--refresh", "100ms"],
    );
    standby.wait_table();
    standby.wait_stdout("Standby", WAIT);
    let admin = admin_addr(&standby.stdout());
    let row = || -> serde_json::Value {
        let snap: serde_json::Value =
            serde_json::from_str(&get(admin, "/api/status", &[]).body).expect("JSON");
        snap["circles"][0].clone()
    };
    // It waits a while: not up, so no uptime.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(row()["worker"], "standby");
    assert_eq!(row()["uptime_secs"], 0);

    first.child.kill().expect("kill -9 the first orchestrator");
    let _ = first.child.wait();
    let killed = Instant::now();
    let mut conn = conn(&redis);
    for id in ["w1", "w2"] {
        submit(&mut conn, id, "db::insert(#{ n: 1 })");
    }
    for id in ["w1", "w2"] {
        wait_field(&mut conn, id, "status", "completed");
    }
    let running = row();
    assert_eq!(running["worker"], "running", "{running}");
    let uptime = running["uptime_secs"].as_u64().expect("uptime_secs");
    assert!(
        uptime <= killed.elapsed().as_secs() + 1,
        "up {uptime} s, {:?} after the take-over: {running}",
        killed.elapsed()
    );
    let scrape = get(admin, "/metrics", &[]).body;
    let sample = |series: &str| -> Option<f64> {
        scrape
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.trim().parse().expect("a number"))
    };
    assert!(
        sample(r#"circles_ourdb_records{circle="Alpha"}"#).is_some_and(|r| r >= 2.0)
            && sample(r#"circles_ourdb_commits_total{circle="Alpha"}"#).is_some_and(|c| c >= 2.0),
        "{scrape}"
    );
    assert!(standby.stop().success());
}
