//! logrotate's move-and-signal: the live mode's log file is opened again
//! at the signal, also while a reload runs, not once it is over.

mod common;

use std::time::{Duration, Instant};

use common::tmux::Live;
use common::{Sandbox, connect, output, port, send};
use serde_json::json;

/// The file at `path` once it holds `words`, within 30 s.
fn wait_for(path: &std::path::Path, words: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(words) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no {words:?} in {} within 30 s:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

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
