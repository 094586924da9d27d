//! Access through the built binary: open circles only on loopback unless
//! `--allow-open`, the Access column, and no token hash in any output.

mod common;

use std::time::Duration;

use common::{Orchestrator, Sandbox, port, run_to_end};
use serde_json::json;

const HASH: &str = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

/// A circles.json with an open circle "Open One" and a protected "Guarded".
fn mixed(sandbox: &Sandbox, open_port: u16, guarded_port: u16) -> std::path::PathBuf {
    let circles = json!([
        {"id": 1, "name": "Open One", "port": open_port},
        {"id": 2, "name": "Guarded", "port": guarded_port, "principals": [
            {"name": "ann", "token_sha256": HASH, "role": "read"},
            {"name": "bob", "token_sha256": HASH.replace('5', "6"), "role": "write"},
        ]},
    ]);
    sandbox.write("circles.json", &circles.to_string())
}

#[test]
fn a_non_loopback_host_with_an_open_circle_refuses_to_start_naming_it() {
    let sandbox = Sandbox::new();
    let config = mixed(&sandbox, port(), port());
    let mut cmd = sandbox.command();
    cmd.arg(&config).args([
        "--host",
        "0.0.0.0",
        "--output",
        "plain",
        "--no-managed-redis",
        "--redis-url",
        "redis://127.0.0.1:1",
    ]);
    let (status, out, err) = run_to_end(cmd, Duration::from_secs(20));
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("\"Open One\" (id 1)"), "{err}");
    assert!(
        !err.contains("Guarded"),
        "only open circles are named: {err}"
    );
    assert!(
        err.contains("--allow-open") && err.contains("principals"),
        "{err}"
    );
    assert!(!err.contains(HASH) && !out.contains(HASH), "{err}");
}

#[test]
fn allow_open_or_principals_everywhere_let_a_non_loopback_host_start() {
    let redis = testkit::RedisServer::start();
    // --allow-open: both circles serve on 0.0.0.0.
    let sandbox = Sandbox::new();
    let config = mixed(&sandbox, port(), port());
    let mut o = Orchestrator::start(
        &sandbox,
        &config,
        &redis.url(),
        &["--host", "0.0.0.0", "--allow-open"],
    );
    o.wait_table();
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
    // Every circle protected: no flag needed.
    let sandbox = Sandbox::new();
    let circles = json!([{"id": 2, "name": "Guarded", "port": port(), "principals": [
        {"name": "ann", "token_sha256": HASH, "role": "read"}]}]);
    let config = sandbox.write("circles.json", &circles.to_string());
    let mut o = Orchestrator::start(&sandbox, &config, &redis.url(), &["--host", "0.0.0.0"]);
    o.wait_table();
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}
