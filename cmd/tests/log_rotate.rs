//! logrotate and the live mode's log file: moved and signalled, the file
//! is opened again at the signal (also while a reload or the shutdown
//! runs); copied and truncated, the file opened for appending takes the
//! next lines from its start. The real logrotate rotates in most of them.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::logs::{
    FIRST, Immutable, PLAY_LINES, Player, logrotate, play_lengths, played, read_log, wait_for,
    wait_played, wait_running,
};
use common::tmux::Live;
use common::{Sandbox, connect, output, port, send};
use serde_json::json;

/// A reload that drains a removed circle's running play (up to the
/// shutdown grace and more) is under way when logrotate moves the log file and
/// signals: the lines from then on, the reload's end among them, go to the
/// new file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_during_a_reload_opens_the_log_file_again_at_once() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (kept, circle) = (port(), port());
    let config = sandbox.circles(&[(1, "Alpha", kept), (2, "Beta", circle)]);
    let live = Live::start(
        &sandbox,
        &config,
        &redis.url(),
        "--shutdown-grace 5s --max-operations 10000000000",
        "Beta",
    );

    // A play that runs until its timeout keeps the reload's drain waiting.
    let mut ws = connect(circle).await;
    let request = json!({"jsonrpc": "2.0", "id": 1, "method": "play",
        "params": {"script": "loop { }"}});
    send(&mut ws, &request.to_string()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while testkit::command(redis.port(), &["KEYS", "rhai_task_details:*"])
        .map(|keys| keys.items().is_empty())
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "the play's task was not queued");
        std::thread::sleep(Duration::from_millis(50));
    }
    sandbox.circles(&[(1, "Alpha", kept)]);
    live.signal("HUP");
    let path = sandbox.data_dir().join("orchestrator.log");
    wait_for(&path, "reloading");

    let moved = sandbox.data_dir().join("orchestrator.log.1");
    std::fs::rename(&path, &moved).expect("move the log file");
    live.signal("HUP");
    wait_for(&path, "opened again");
    let old = std::fs::read_to_string(&moved).expect("the moved file");
    assert!(
        !old.contains("reloaded"),
        "the log file was opened again only once the reload was over: {old}"
    );
    wait_for(&path, "reloaded");
    live.stop();
}

/// logrotate's default: the live-mode log file is moved away and the
/// process gets SIGHUP; from the signal on, lines go to a new file at the
/// path, and none to the moved one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_opens_the_log_file_again_after_it_was_moved() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let circle = port();
    let config = sandbox.circles(&[(1, "Alpha", circle)]);
    let live = Live::start(&sandbox, &config, &redis.url(), "", "Alpha");
    let path = sandbox.data_dir().join("orchestrator.log");
    let moved = sandbox.data_dir().join("orchestrator.log.1");
    std::fs::rename(&path, &moved).expect("move the log file");
    live.signal("HUP");
    let log = wait_for(&path, "reloaded");
    assert!(log.contains("reloading"), "{log}");
    let old = std::fs::read_to_string(&moved).expect("the moved file");
    assert!(
        old.contains("starting"),
        "the start went to the first file: {old}"
    );
    assert!(
        !old.contains("reload"),
        "a line after the SIGHUP went to the moved file: {old}"
    );
    let mut ws = connect(circle).await;
    assert_eq!(output(&mut ws, "40 + 2").await, "42", "it serves on");
    live.stop();
    let log = std::fs::read_to_string(&path).expect("the log file");
    assert!(log.contains("clean shutdown"), "{log}");
    let after = std::fs::read_to_string(&moved).expect("the moved file");
    assert_eq!(after, old, "lines went to the moved file after the SIGHUP");
}

/// logrotate's default, `create` and `postrotate kill -HUP`, with
/// `compress` and `delaycompress`, twice while plays are served: the log
/// holds every play's line once, in order, across the three files
/// (`.2.gz`, `.1`, the new one), each holding its part; with `json` every
/// line of each is one JSON object.
async fn create_and_signal_keeps_every_line(format: &str) {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let circle = port();
    let config = sandbox.circles(&[(1, "Alpha", circle)]);
    let args = format!("--log-format {format}");
    let live = Live::start_env(&sandbox, &config, &redis.url(), PLAY_LINES, &args, "Alpha");
    let path = sandbox.data_dir().join("orchestrator.log");
    let rotate = format!(
        "{} {{\n  rotate 5\n  create 0640\n  compress\n  delaycompress\n  postrotate\n    \
         kill -HUP {}\n  endscript\n}}\n",
        path.display(),
        live.pid
    );
    let player = Player::start(circle).await;
    player.wait_more(5);
    for _ in 0..2 {
        logrotate(sandbox.path(), &rotate);
        wait_for(&path, "opened again");
        player.wait_more(5);
    }
    let lens = player.finish().await;
    live.stop();

    let dir = sandbox.data_dir();
    assert!(!dir.join("orchestrator.log.2").exists(), "not compressed");
    let files = [
        "orchestrator.log.2.gz",
        "orchestrator.log.1",
        "orchestrator.log",
    ];
    let texts: Vec<String> = files.iter().map(|f| read_log(&dir.join(f))).collect();
    let parts: Vec<Vec<usize>> = texts.iter().map(|t| played(t)).collect();
    for (file, part) in files.iter().zip(&parts) {
        assert!(!part.is_empty(), "no play's line in {file}");
    }
    assert_eq!(
        parts.concat(),
        lens,
        "the plays' lines across the rotations"
    );
    assert!(texts[0].contains("starting"), "{}", texts[0]);
    assert!(texts[2].contains("clean shutdown"), "{}", texts[2]);
    if format == "json" {
        for (file, text) in files.iter().zip(&texts) {
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{file}: not one JSON object ({e}): {line:?}"));
                assert!(v["message"].is_string(), "{file}: {line}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logrotate_create_and_sighup_keeps_every_line_in_order() {
    create_and_signal_keeps_every_line("text").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logrotate_create_and_sighup_keeps_json_lines_one_object_each() {
    create_and_signal_keeps_every_line("json").await;
}

/// logrotate's `copytruncate` (no signal): the copy holds the lines so
/// far, and the truncated file takes the next ones from its start, with no
/// hole of NUL bytes before them (the file is opened for appending), also
/// when the plays go on during the copy (where logrotate may lose the
/// lines written between its copy and its truncation, and only there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logrotate_copytruncate_leaves_no_hole_and_loses_no_line_before_or_after() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let circle = port();
    let config = sandbox.circles(&[(1, "Alpha", circle)]);
    let live = Live::start_env(&sandbox, &config, &redis.url(), PLAY_LINES, "", "Alpha");
    let path = sandbox.data_dir().join("orchestrator.log");
    let rotate = format!(
        "{} {{\n  rotate 5\n  copytruncate\n  compress\n  delaycompress\n}}\n",
        path.display()
    );
    let mut ws = connect(circle).await;
    play_lengths(&mut ws, 10..20).await;
    wait_played(&path, 19);
    logrotate(sandbox.path(), &rotate);
    play_lengths(&mut ws, 20..30).await;
    wait_played(&path, 29);
    let text = read_log(&path);
    assert!(text.starts_with('['), "{text:?}");
    assert_eq!(played(&text), (20..30).collect::<Vec<_>>(), "{text}");

    // Again while plays are served: the copy's lines and the truncated
    // file's lines follow each other, none twice, and the last ones after
    // the truncation are all there.
    let player = Player::start(circle).await;
    player.wait_more(5);
    // The copy holds the first five plays' lines: copytruncate sends no
    // signal, so nothing writes the queued lines before it copies.
    wait_played(&path, FIRST + 4);
    logrotate(sandbox.path(), &rotate);
    player.wait_more(5);
    let lens = player.finish().await;
    live.stop();

    let dir = sandbox.data_dir();
    let first = read_log(&dir.join("orchestrator.log.2.gz"));
    assert!(first.contains("starting"), "{first}");
    assert_eq!(played(&first), (10..20).collect::<Vec<_>>(), "{first}");
    let copied = played(&read_log(&dir.join("orchestrator.log.1")));
    let last = played(&read_log(&path));
    assert_eq!(copied[..10], (20..30).collect::<Vec<_>>()[..], "{copied:?}");
    let before = &copied[10..];
    assert!(
        before.len() >= 5 && lens.starts_with(before),
        "the lines before the copy: {before:?} of {lens:?}"
    );
    assert!(
        last.len() >= 5 && lens.ends_with(&last),
        "the lines after the truncation: {last:?} of {lens:?}"
    );
    assert!(
        before.len() + last.len() <= lens.len(),
        "a line in both files: {before:?} {last:?}"
    );
}

/// An orchestrator in live mode logging to `logs/orchestrator.log` in its
/// sandbox: the sandbox, its Redis, the orchestrator, the log directory, the
/// log file and the circle's port.
fn live_in_log_dir() -> (Sandbox, testkit::RedisServer, Live, PathBuf, PathBuf, u16) {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let circle = port();
    let config = sandbox.circles(&[(1, "Alpha", circle)]);
    let logs = sandbox.path().join("logs");
    let path = logs.join("orchestrator.log");
    let args = format!("--log-file {}", path.display());
    let live = Live::start_env(&sandbox, &config, &redis.url(), PLAY_LINES, &args, "Alpha");
    (sandbox, redis, live, logs, path, circle)
}

/// `delete` (given the log directory and file) and then SIGHUP: the lines
/// from then on go to a new file at the path.
async fn deleted_then_sighup_makes_a_new_file(delete: impl FnOnce(&Path, &Path)) {
    let (_sandbox, _redis, live, logs, path, circle) = live_in_log_dir();
    delete(&logs, &path);
    live.signal("HUP");
    wait_for(&path, "opened again");
    let mut ws = connect(circle).await;
    play_lengths(&mut ws, 10..13).await;
    live.stop();
    let text = read_log(&path);
    assert_eq!(played(&text), [10, 11, 12], "{text}");
    assert!(text.contains("clean shutdown"), "{text}");
}

/// A log file deleted (not moved) and then SIGHUP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_after_the_log_file_was_deleted_makes_a_new_one() {
    deleted_then_sighup_makes_a_new_file(|_, file| {
        std::fs::remove_file(file).expect("delete the log file");
    })
    .await;
}

/// The log file's directory deleted with it (`rm -r`) and then SIGHUP: the
/// directory is made again, as at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_after_the_log_directory_was_deleted_makes_it_again() {
    deleted_then_sighup_makes_a_new_file(|dir, _| {
        std::fs::remove_dir_all(dir).expect("delete the log directory");
    })
    .await;
}

/// The log file was moved away and its directory takes no new file when
/// the SIGHUP comes: the old file goes on taking the lines and says why;
/// once the directory takes files again, the next SIGHUP makes one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_whose_log_directory_takes_no_file_keeps_the_old_file() {
    let (_sandbox, _redis, live, logs, path, circle) = live_in_log_dir();
    let moved = logs.join("orchestrator.log.1");
    std::fs::rename(&path, &moved).expect("move the log file");
    let mut ws = connect(circle).await;
    {
        let _locked = Immutable::set(&logs);
        live.signal("HUP");
        let old = wait_for(&moved, "logs go on to the file it had");
        assert!(
            old.contains(&format!(
                "cannot open the log file {} again",
                path.display()
            )),
            "{old}"
        );
        play_lengths(&mut ws, 10..13).await;
        assert!(!path.exists(), "a file was made in an immutable directory");
    }
    live.signal("HUP");
    wait_for(&path, "opened again");
    play_lengths(&mut ws, 13..16).await;
    live.stop();
    assert_eq!(played(&read_log(&moved)), [10, 11, 12]);
    assert_eq!(played(&read_log(&path)), [13, 14, 15]);
}

/// logrotate (`create`, `postrotate kill -HUP`, `compress` at once) while
/// a shutdown drains a running script: the lines from the signal on, the
/// shutdown's end among them, go to the new file, not to the moved one
/// that logrotate compresses and deletes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_during_the_shutdown_opens_the_log_file_again() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let circle = port();
    let config = sandbox.circles(&[(1, "Alpha", circle)]);
    let live = Live::start(
        &sandbox,
        &config,
        &redis.url(),
        "--shutdown-grace 3s",
        "Alpha",
    );
    let path = sandbox.data_dir().join("orchestrator.log");
    let rotate = format!(
        "{} {{\n  rotate 5\n  create 0640\n  compress\n  postrotate\n    kill -HUP {}\n  \
         endscript\n}}\n",
        path.display(),
        live.pid
    );
    // A notification (no reply waited for) whose script runs until the
    // grace is over keeps the shutdown draining.
    let mut ws = connect(circle).await;
    let request = json!({"jsonrpc": "2.0", "method": "play", "params": {"script": "loop { }"}});
    send(&mut ws, &request.to_string()).await;
    wait_running(redis.port());
    live.signal("TERM");
    wait_for(&path, "shutting down (grace");
    logrotate(sandbox.path(), &rotate);
    live.wait_end();
    let new = read_log(&path);
    let old = read_log(&sandbox.data_dir().join("orchestrator.log.1.gz"));
    assert!(
        new.contains("SIGHUP ignored: shutting down") && new.contains("clean shutdown"),
        "the new file:\n{new}\nthe moved one:\n{old}"
    );
    assert!(old.contains("shutting down (grace"), "{old}");
    assert!(!old.contains("clean shutdown"), "{old}");
}

/// logrotate (`create`, `postrotate kill -HUP`, `compress` at once) while
/// the start waits for a Redis that loads its data: the lines from the
/// signal on go to the new file, not to the moved one that logrotate
/// compresses and deletes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_during_the_start_opens_the_log_file_again() {
    let sandbox = Sandbox::new();
    let (_loading, redis_port) = common::loading::loading_redis(&sandbox).await;
    let circle = port();
    let config = sandbox.circles(&[(1, "Alpha", circle)]);
    let path = sandbox.data_dir().join("orchestrator.log");
    let rotating = std::thread::spawn({
        let (path, dir) = (path.clone(), sandbox.path().to_owned());
        move || {
            wait_for(&path, "is loading its data; waiting for it");
            let pid = std::fs::read_to_string(dir.join("pid")).expect("pid file");
            let rotate = format!(
                "{} {{\n  rotate 5\n  create 0640\n  compress\n  postrotate\n    kill -HUP {}\n  \
                 endscript\n}}\n",
                path.display(),
                pid.trim()
            );
            logrotate(&dir, &rotate);
        }
    });
    let url = format!("redis://127.0.0.1:{redis_port}");
    let live = Live::start(&sandbox, &config, &url, "", "Alpha");
    rotating.join().expect("logrotate");
    live.stop();
    let new = read_log(&path);
    let old = read_log(&sandbox.data_dir().join("orchestrator.log.1.gz"));
    assert!(
        new.contains("SIGHUP during start-up") && new.contains("websocket server listening"),
        "the new file:\n{new}\nthe moved one:\n{old}"
    );
    assert!(old.contains("is loading its data"), "{old}");
    assert!(!old.contains("websocket server listening"), "{old}");
}
