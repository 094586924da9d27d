//! Two orchestrators on one data dir (README: "another orchestrator uses the
//! same data dir; stop it or pass `--data-dir`"): a managed redis-server
//! keeps its append-only file in `<data-dir>/redis` (DESIGN §1), so a second
//! orchestrator that manages its own redis-server there must not run a
//! second server on the same append-only file.

mod common;

use std::time::{Duration, Instant};

use common::{Orchestrator, Sandbox, port};

fn managed(sandbox: &Sandbox, config: &std::path::Path, redis_port: u16) -> Orchestrator {
    let mut cmd = sandbox.command();
    cmd.arg(config)
        .arg("--data-dir")
        .arg(sandbox.data_dir())
        .args([
            "--redis-url",
            &format!("redis://127.0.0.1:{redis_port}"),
            "--output",
            "plain",
            "--shutdown-grace",
            "1s",
        ]);
    Orchestrator::spawn(cmd)
}

/// Waits until `o` printed its table (`true`) or exited (`false`).
fn serves_or_exits(o: &mut Orchestrator) -> bool {
    let deadline = Instant::now() + common::START_DEADLINE;
    loop {
        if o.stdout().contains("circles serving;") {
            return true;
        }
        if let Ok(Some(_)) = o.child.try_wait() {
            // Its last lines, still in the pipes, are read first.
            o.wait_exit(Duration::from_secs(5));
            return false;
        }
        assert!(Instant::now() < deadline, "neither served nor exited");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_orchestrator_on_the_same_data_dir_never_shares_the_managed_redis_files() {
    let sandbox = Sandbox::new();
    let (redis_a, redis_b) = (port(), port());
    // Different circles (ids 1 and 2): no database is opened twice.
    let config_a = sandbox.write(
        "a.json",
        &format!(r#"[{{"id": 1, "name": "Alpha", "port": {}}}]"#, port()),
    );
    let config_b = sandbox.write(
        "b.json",
        &format!(r#"[{{"id": 2, "name": "Beta", "port": {}}}]"#, port()),
    );
    let mut a = managed(&sandbox, &config_a, redis_a);
    a.wait_table();
    let mut b = managed(&sandbox, &config_b, redis_b);
    if !serves_or_exits(&mut b) {
        // Refused: fine, as long as it says why.
        let err = b.stderr();
        assert!(
            err.contains("redis") && err.contains(&sandbox.data_dir().display().to_string()),
            "refused without naming the shared redis dir: {err}"
        );
        return;
    }
    // Both run, each with a managed redis-server whose --dir is
    // <data-dir>/redis. A key written on A's Redis only...
    let set = testkit::command(redis_a, &["SET", "only_on_a", "1"]).expect("SET on A");
    assert_eq!(set.text(), Some("OK"));
    assert!(b.stop().success(), "{}", b.stderr());
    assert!(a.stop().success(), "{}", a.stderr());
    // ...must not be on B's Redis when B starts again alone.
    let mut b = managed(&sandbox, &config_b, redis_b);
    b.wait_table();
    let got = testkit::command(redis_b, &["GET", "only_on_a"]).expect("GET on B");
    let leaked = got.text().map(str::to_owned);
    b.stop();
    assert_eq!(
        leaked,
        None,
        "B's managed redis-server (port {redis_b}) loaded a key written only on A's (port \
         {redis_a}): both servers appended to one append-only file in {}/redis",
        sandbox.data_dir().display()
    );
}

/// README "Troubleshooting": two orchestrators started together on one
/// loopback URL (a worker and a gateway of one machine, one data dir)
/// share one managed redis-server; neither refuses.
#[test]
fn a_gateway_and_a_worker_started_together_on_one_url_and_data_dir_share_one_managed_redis() {
    for _ in 0..3 {
        let sandbox = Sandbox::new();
        let redis = port();
        let config = sandbox.circles(&[(1, "Alpha", port())]);
        let mut both: Vec<Orchestrator> = ["gateway", "worker"]
            .into_iter()
            .map(|role| {
                let mut cmd = sandbox.command();
                cmd.arg(&config)
                    .arg("--data-dir")
                    .arg(sandbox.data_dir())
                    .args([
                        "--redis-url",
                        &format!("redis://127.0.0.1:{redis}"),
                        "--output",
                        "plain",
                        "--role",
                        role,
                        "--shutdown-grace",
                        "1s",
                    ]);
                Orchestrator::spawn(cmd)
            })
            .collect();
        for o in &mut both {
            o.wait_table();
        }
        // The worker runs what the gateway submits.
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let out = rt.block_on(async {
            let mut ws = common::connect(sandbox_port(&config)).await;
            common::output(&mut ws, "40 + 2").await
        });
        assert_eq!(out, "42");
        for o in both.iter_mut().rev() {
            o.stop();
        }
    }
}

fn sandbox_port(config: &std::path::Path) -> u16 {
    let text = std::fs::read_to_string(config).expect("config");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    u16::try_from(v[0]["port"].as_u64().expect("port")).expect("u16")
}
