//! logrotate's move-and-signal while a reload runs: the live mode's log
//! file is opened again at the signal, not once the reload is over.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::tmux::Tmux;
use common::{BIN, Sandbox, connect, port, send};
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
    let pid_file = sandbox.path().join("pid");
    let command = format!(
        "cd {dir} && echo $$ > {pid} && HOME={dir} CIRCLES_ADMIN=off exec {BIN} {config} \
         --redis-url {url} --data-dir {data} --no-managed-redis --refresh 100ms \
         --shutdown-grace 5s --max-operations 10000000000",
        dir = sandbox.path().display(),
        pid = pid_file.display(),
        config = config.display(),
        url = redis.url(),
        data = sandbox.data_dir().display(),
    );
    let tmux = Tmux::new("circles-test");
    tmux.start_live(&command, 200, 30);
    tmux.wait_screen("the circle running", |s| {
        s.lines()
            .any(|l| l.contains("Beta") && l.contains("Running"))
    });
    let pid = std::fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .to_owned();
    let signal = |name: &str| {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name}");
    };

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
    signal("HUP");
    let path = sandbox.data_dir().join("orchestrator.log");
    wait_for(&path, "reloading");

    let moved = sandbox.data_dir().join("orchestrator.log.1");
    std::fs::rename(&path, &moved).expect("move the log file");
    signal("HUP");
    wait_for(&path, "opened again");
    let old = std::fs::read_to_string(&moved).expect("the moved file");
    assert!(
        !old.contains("reloaded"),
        "the log file was opened again only once the reload was over: {old}"
    );
    wait_for(&path, "reloaded");
    signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "still running after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}
