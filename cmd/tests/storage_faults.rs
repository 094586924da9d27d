//! A circle's database that starts refusing writes, through the built
//! binary: a data file made immutable under it (`chattr +i`, as root), so a
//! write fails with EPERM and so does cutting the file back. The failing
//! request gets a `database` error; the circle goes on serving reads, its
//! worker shows `degraded` with the failure (also in the `status` command's
//! table) and `/readyz` answers 503; the
//! exit is no clean shutdown (exit 1, naming the database it could not
//! sync); a restart reopens the database with every acknowledged write. A
//! circle's directory removed while it serves refuses writes the same way.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::http::{get, start_with_admin};
use common::{Orchestrator, Sandbox, connect, output, play, port, run_to_end};
use serde_json::Value;

/// A file made immutable for as long as this lives.
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path) -> Immutable {
        chattr("+i", path);
        Immutable(path.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        chattr("-i", &self.0);
    }
}

fn chattr(flag: &str, path: &Path) {
    let status = Command::new("chattr")
        .arg(flag)
        .arg(path)
        .status()
        .expect("run chattr (Debian package e2fsprogs; scripts/install-deps.sh installs it)");
    assert!(
        status.success(),
        "chattr {flag} {}: needs root and a filesystem with the immutable flag",
        path.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_refuses_writes_degrades_its_worker_and_readiness_and_fails_the_exit() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let circle = port();
    let config = sandbox.circles(&[(1, "Alpha", circle)]);
    let (mut o, admin) = start_with_admin(&sandbox, &config, &redis, &[]);
    let mut ws = connect(circle).await;
    assert_eq!(output(&mut ws, r#"db::insert("kept")"#).await, "1");

    let data = sandbox.data_dir().join("1").join("data-00000000.odb");
    let immutable = Immutable::set(&data);
    let refused = play(&mut ws, 2, r#"db::insert("refused")"#).await;
    assert_eq!(refused["error"]["code"], -32000, "{refused}");
    assert_eq!(refused["error"]["data"]["kind"], "database", "{refused}");
    let again = play(&mut ws, 3, r#"db::insert("refused again")"#).await;
    let message = again["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("refuses writes") && message.contains("restart the program"),
        "{again}"
    );
    // Reads go on.
    assert_eq!(output(&mut ws, "db::get(1)").await, "kept");

    // The worker's row and readiness say so.
    let deadline = Instant::now() + Duration::from_secs(30);
    let not_ready = loop {
        let answer = get(admin, "/readyz", &[]);
        if answer.code == 503 {
            break answer.body;
        }
        assert!(Instant::now() < deadline, "still ready: {}", answer.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let body: Value = serde_json::from_str(&not_ready).expect("JSON");
    let worker = &body["not_ready"][0];
    assert_eq!(worker["component"], "worker", "{body}");
    assert_eq!(worker["state"], "degraded", "{body}");
    let why = worker["reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("refuses writes") && why.contains("Operation not permitted"),
        "{body}"
    );
    // So does the `status` command's table, read back from the snapshot.
    let mut cmd = sandbox.command();
    cmd.args(["status", "--admin", &admin.to_string()]);
    let (code, table, err) = run_to_end(cmd, Duration::from_secs(30));
    assert_eq!(code.code(), Some(0), "{table}{err}");
    assert!(
        table.contains("Degraded: its database refuses writes") && !table.contains("Unknown"),
        "{table}"
    );

    drop(immutable);
    let status = o.stop();
    assert_eq!(status.code(), Some(1), "{}", o.stderr());
    let said = o.stderr();
    assert!(said.contains("could not be synced at exit"), "{said}");
    assert!(!said.contains("clean shutdown"), "{said}");

    // Reopened by a restart: every acknowledged write, nothing refused.
    let mut o = Orchestrator::start(&sandbox, &config, &redis.url(), &[]);
    o.wait_table();
    let mut ws = connect(circle).await;
    assert_eq!(output(&mut ws, "db::get(1)").await, "kept");
    assert_eq!(output(&mut ws, r#"db::insert("after")"#).await, "2");
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}

/// A circle's database directory removed while it serves (a cleanup run on
/// the wrong path): a write is refused with a `database` error naming the
/// deleted data file, never acknowledged into a file that no open finds
/// again; reads go on from the open files, the other circle takes writes
/// as before, and the exit is no clean shutdown (exit 1, naming the
/// database it could not sync).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_whose_directory_is_removed_refuses_writes_saying_so_and_others_go_on() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, b) = (port(), port());
    let config = sandbox.circles(&[(1, "Alpha", a), (2, "Beta", b)]);
    let mut o = Orchestrator::start(&sandbox, &config, &redis.url(), &[]);
    o.wait_table();
    let mut alpha = connect(a).await;
    assert_eq!(output(&mut alpha, r#"db::insert("kept")"#).await, "1");

    std::fs::remove_dir_all(sandbox.data_dir().join("1")).expect("remove Alpha's directory");
    let refused = play(&mut alpha, 2, r#"db::insert("lost")"#).await;
    assert_eq!(refused["error"]["data"]["kind"], "database", "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("data-00000000.odb") && message.contains("deleted"),
        "{refused}"
    );
    assert_eq!(output(&mut alpha, "db::get(1)").await, "kept");
    let mut beta = connect(b).await;
    assert_eq!(output(&mut beta, r#"db::insert("beta")"#).await, "1");
    let status = o.stop();
    assert_eq!(status.code(), Some(1), "{}", o.stderr());
    let said = o.stderr();
    assert!(said.contains("could not be synced at exit"), "{said}");
}

/// A circle whose database directory was removed, then changed by a
/// reload: it starts again on the database it has open (reads go on, writes
/// are refused, and its deleted files stay open for a copy before the
/// restart, as README says), not on a new empty database in a directory
/// made again, which would give ids from 1 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circle_whose_directory_is_removed_keeps_its_open_database_through_a_reload() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, a2) = (port(), port());
    let config = sandbox.circles(&[(1, "Alpha", a)]);
    let (mut o, admin) = start_with_admin(&sandbox, &config, &redis, &[]);
    let mut alpha = connect(a).await;
    assert_eq!(output(&mut alpha, r#"db::insert("kept")"#).await, "1");
    std::fs::remove_dir_all(sandbox.data_dir().join("1")).expect("remove Alpha's directory");
    let refused = play(&mut alpha, 2, r#"db::insert("lost")"#).await;
    assert_eq!(refused["error"]["data"]["kind"], "database", "{refused}");
    drop(alpha);

    sandbox.circles(&[(1, "Alpha", a2)]);
    let answer = common::http::request(admin, "POST", "/api/reload", &[]);
    assert_eq!(answer.code, 200, "{}\n{}", answer.body, o.stderr());
    let mut alpha = connect(a2).await;
    assert_eq!(output(&mut alpha, "db::get(1)").await, "kept");
    let refused = play(&mut alpha, 3, r#"db::insert("new")"#).await;
    assert_eq!(refused["error"]["data"]["kind"], "database", "{refused}");
    let fds = std::fs::read_dir(format!("/proc/{}/fd", o.child.id())).expect("its fds");
    let open_deleted = fds
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|file| file.to_string_lossy().ends_with(".odb (deleted)"))
        .count();
    assert!(open_deleted > 0, "its deleted data file is open no more");
    drop(alpha);
    o.stop();
}
