//! Reloads under the ways operators lay out files: the circles file and the
//! data dir given relative to the working directory (systemd's
//! `WorkingDirectory=`), whose path is renamed while the orchestrator
//! serves.

mod common;

use std::path::Path;

use common::http::{self, admin_addr};
use common::{Orchestrator, Sandbox, connect, output, port};
use serde_json::json;

/// circles.json with the one circle Alpha (id 1) on `port`, in `dir`.
fn write_alpha(dir: &Path, port: u16) {
    let text = json!([{"id": 1, "name": "Alpha", "port": port}]).to_string();
    std::fs::write(dir.join("circles.json"), text).expect("write circles.json");
}

/// The working directory renamed under a running orchestrator (a deploy
/// that moves its release directory aside): the relative paths still name
/// the same files, and a reload that changes a circle starts it again on
/// its database, which holds its queue's lease as before, with every
/// record it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circle_a_reload_changes_after_the_working_directory_was_renamed_serves_again() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, a2) = (port(), port());
    let release = sandbox.path().join("release");
    std::fs::create_dir(&release).expect("create the working directory");
    write_alpha(&release, a);
    let mut cmd = sandbox.command();
    cmd.current_dir(&release)
        .args(["circles.json", "--data-dir", "data", "--redis-url"])
        .arg(redis.url())
        .args(["--no-managed-redis", "--output", "plain"])
        .args(["--admin", "127.0.0.1:0"]);
    let mut o = Orchestrator::spawn(cmd);
    o.wait_table();
    let addr = admin_addr(&o.stdout());
    let mut ws = connect(a).await;
    assert_eq!(output(&mut ws, r#"db::insert("kept")"#).await, "1");
    drop(ws);

    let moved = sandbox.path().join("release.old");
    std::fs::rename(&release, &moved).expect("rename the working directory");
    write_alpha(&moved, a2);
    let answer = http::request(addr, "POST", "/api/reload", &[]);
    assert_eq!(answer.code, 200, "{}\n{}", answer.body, o.stderr());
    let mut ws = connect(a2).await;
    assert_eq!(output(&mut ws, "db::get(1)").await, "kept");
    assert!(o.stop().success(), "{}", o.stderr());
}
