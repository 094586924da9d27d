//! The circles file and the data dir given relative to the working
//! directory (systemd's `WorkingDirectory=`), whose path is renamed while
//! the orchestrator serves (a deploy that moves its release directory
//! aside): a reload and a restart of the managed redis-server find their
//! files where they are. One deleted and made again at its path is another
//! directory, which a reload says.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::http::{self, admin_addr};
use common::logs::Immutable;
use common::{Orchestrator, Sandbox, connect, output, play, port};
use serde_json::json;

/// circles.json with the one circle Alpha (id 1) on `port`, in `dir`.
fn write_alpha(dir: &Path, port: u16) {
    let text = json!([{"id": 1, "name": "Alpha", "port": port}]).to_string();
    std::fs::write(dir.join("circles.json"), text).expect("write circles.json");
}

/// The working directory `release` made in the sandbox, holding
/// circles.json with Alpha on `port`.
fn release(sandbox: &Sandbox, port: u16) -> PathBuf {
    let release = sandbox.path().join("release");
    std::fs::create_dir(&release).expect("create the working directory");
    write_alpha(&release, port);
    release
}

/// The orchestrator run in `release` on `circles.json` with `--data-dir
/// data`, plain output, against `redis_url` (and `extra`).
fn in_release(sandbox: &Sandbox, release: &Path, redis_url: &str, extra: &[&str]) -> Command {
    let mut cmd = sandbox.command();
    cmd.current_dir(release)
        .args([
            "circles.json",
            "--data-dir",
            "data",
            "--redis-url",
            redis_url,
        ])
        .args(["--output", "plain"])
        .args(extra);
    cmd
}

/// The orchestrator run in `release` (see [`in_release`]) without a
/// managed Redis, serving, and its admin endpoint's address.
fn serving(sandbox: &Sandbox, release: &Path, redis_url: &str) -> (Orchestrator, SocketAddr) {
    let mut o = Orchestrator::spawn(in_release(
        sandbox,
        release,
        redis_url,
        &["--no-managed-redis", "--admin", "127.0.0.1:0"],
    ));
    o.wait_table();
    let addr = admin_addr(&o.stdout());
    (o, addr)
}

/// `release` renamed to `release.old`, whose circles.json then puts Alpha
/// on `port`, and the reload `o` answers at `addr` for it (200).
fn renamed_and_reloaded(
    sandbox: &Sandbox,
    release: &Path,
    port: u16,
    addr: SocketAddr,
    o: &Orchestrator,
) {
    let moved = sandbox.path().join("release.old");
    std::fs::rename(release, &moved).expect("rename the working directory");
    write_alpha(&moved, port);
    let answer = http::request(addr, "POST", "/api/reload", &[]);
    assert_eq!(answer.code, 200, "{}\n{}", answer.body, o.stderr());
}

/// The working directory renamed: the relative paths still name the same
/// files, and a reload that changes a circle starts it again on its
/// database, which holds its queue's lease as before, with every record it
/// had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circle_a_reload_changes_after_the_working_directory_was_renamed_serves_again() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, a2) = (port(), port());
    let release = release(&sandbox, a);
    let (mut o, addr) = serving(&sandbox, &release, &redis.url());
    let mut ws = connect(a).await;
    assert_eq!(output(&mut ws, r#"db::insert("kept")"#).await, "1");
    drop(ws);

    renamed_and_reloaded(&sandbox, &release, a2, addr, &o);
    let mut ws = connect(a2).await;
    assert_eq!(output(&mut ws, "db::get(1)").await, "kept");
    assert!(o.stop().success(), "{}", o.stderr());
}

/// The working directory renamed after the circle's database refused a
/// write (its data file made immutable): a reload that changes the circle
/// opens that database again, in the same directory, and its lease names
/// it as before, so the circle starts again on it with every record it had
/// (not refused as another database's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circle_whose_database_refused_writes_starts_again_on_it_after_the_directory_was_renamed()
{
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, a2) = (port(), port());
    let release = release(&sandbox, a);
    let (mut o, addr) = serving(&sandbox, &release, &redis.url());
    let mut ws = connect(a).await;
    assert_eq!(output(&mut ws, r#"db::insert("kept")"#).await, "1");
    let immutable = Immutable::set(&release.join("data/1/data-00000000.odb"));
    let refused = play(&mut ws, 2, r#"db::insert("refused")"#).await;
    assert_eq!(refused["error"]["data"]["kind"], "database", "{refused}");
    drop(immutable);
    drop(ws);

    renamed_and_reloaded(&sandbox, &release, a2, addr, &o);
    let mut ws = connect(a2).await;
    assert_eq!(output(&mut ws, "db::get(1)").await, "kept");
    assert_eq!(output(&mut ws, r#"db::insert("after")"#).await, "2");
    drop(ws);
    assert!(o.stop().success(), "{}", o.stderr());
}

/// The working directory renamed, then the managed redis-server (its data
/// under the relative data dir) dies: it is started again in its directory
/// where that is now, and the circle serves again with what it stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_redis_that_dies_after_the_working_directory_was_renamed_is_restarted() {
    let sandbox = Sandbox::new();
    let (redis_port, a) = (port(), port());
    let release = release(&sandbox, a);
    let url = format!("redis://127.0.0.1:{redis_port}");
    let mut o = Orchestrator::spawn(in_release(&sandbox, &release, &url, &[]));
    o.wait_table();
    let mut ws = connect(a).await;
    assert_eq!(output(&mut ws, "db::insert(1)").await, "1");

    let moved = sandbox.path().join("release.old");
    std::fs::rename(&release, &moved).expect("rename the working directory");
    common::managed::kill_redis(redis_port);
    o.wait_stdout(
        "redis-server died and was restarted (1 times",
        Duration::from_secs(30),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = play(&mut ws, 2, "db::insert(2)").await;
        if reply["result"]["output"] == "2" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the circle never served again: {reply}\n{}",
            o.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        moved.join("data/redis/appendonlydir").is_dir(),
        "the restarted server keeps its data in the renamed directory"
    );
    drop(ws);
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}

/// The working directory deleted and made again at its path (a deploy that
/// replaces its release directory): the process still stands in the deleted
/// one, so a reload finds no circles file there, and says that the relative
/// path is read in that deleted directory, not that the file is to be put
/// back (it is back, in another directory); nothing changes. Its database
/// was in the deleted directory: the exit is 1, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_after_the_working_directory_was_replaced_says_it_reads_the_deleted_one() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let a = port();
    let release = release(&sandbox, a);
    let (mut o, addr) = serving(&sandbox, &release, &redis.url());

    std::fs::remove_dir_all(&release).expect("delete the working directory");
    std::fs::create_dir(&release).expect("make it again");
    write_alpha(&release, a);
    let answer = http::request(addr, "POST", "/api/reload", &[]);
    assert_eq!(answer.code, 422, "{}\n{}", answer.body, o.stderr());
    let shown = release.display().to_string();
    assert!(
        answer.body.contains("working directory")
            && answer.body.contains(&shown)
            && answer.body.contains("deleted")
            && !answer.body.contains("put it back"),
        "{}",
        answer.body
    );
    let mut ws = connect(a).await;
    assert_eq!(output(&mut ws, "40 + 2").await, "42");
    drop(ws);
    // Its database went with the deleted directory (`--data-dir data`): the
    // exit says so.
    let code = o.stop().code();
    let stderr = o.stderr();
    assert!(
        code == Some(1) && stderr.contains("deleted while the database was open"),
        "{code:?}\n{stderr}"
    );
}
