//! The status output of the built binary: plain on a pipe, JSON lines, and the
//! live table in a real terminal (tmux), which must show the table without
//! garbage and restore the screen at exit.

mod common;

use std::time::{Duration, Instant};

use common::tmux::{Live, Tmux};
use common::{BIN, Orchestrator, Sandbox, connect, output, port};

#[test]
fn plain_output_has_the_header_and_one_row_per_circle_with_queue_key_and_url() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, b) = (port(), port());
    let config = sandbox.circles(&[(1, "Alpha", a), (2, "Beta Circle", b)]);
    let mut o = Orchestrator::start(&sandbox, &config, &redis.url(), &[]);
    o.wait_table();
    let out = o.stdout();
    let first = out.lines().next().expect("a header line");
    assert!(first.starts_with("circles_orchestrator "), "{out}");
    assert!(
        first.contains(&redis.url()) && first.contains("2 circles"),
        "{out}"
    );
    assert!(
        first.contains(&sandbox.data_dir().display().to_string()),
        "{out}"
    );
    let header = out
        .lines()
        .find(|l| l.contains("Circle Name"))
        .expect("table header");
    let columns: Vec<&str> = header
        .split('|')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(
        columns[..5],
        [
            "Circle Name",
            "ID",
            "Worker Status",
            "Worker Queues",
            "WS Server URL"
        ]
    );
    for (name, queue, p) in [("Alpha", "alpha", a), ("Beta Circle", "beta_circle", b)] {
        let rows: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with(&format!("| {name} ")))
            .collect();
        assert_eq!(rows.len(), 1, "one row for {name}:\n{out}");
        let cells: Vec<&str> = rows[0].split('|').map(str::trim).collect();
        assert_eq!(cells[3], "Running", "{out}");
        assert_eq!(
            cells[4],
            client::keys::tasks(queue),
            "Worker Queues shows the queue's Redis key:\n{out}"
        );
        assert_eq!(cells[5], format!("ws://127.0.0.1:{p}/ws"), "{out}");
        // Printed once, the table counts this very process as a gateway
        // of each circle it serves.
        let gateways = columns
            .iter()
            .position(|&c| c == "Gateways")
            .expect("a Gateways column");
        assert_eq!(cells[gateways + 1], "1", "Gateways of {name}:\n{out}");
    }
    assert_eq!(o.stop().code(), Some(0));
    let out = o.stdout();
    assert!(
        out.contains("Alpha (id 1): worker Stopped"),
        "a line per change:\n{out}"
    );
    assert!(out.trim_end().ends_with("stopped"), "{out}");
}

#[test]
fn json_output_is_one_parseable_snapshot_per_line() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let config = sandbox.circles(&[(3, "Gamma", port())]);
    let mut o = Orchestrator::start(&sandbox, &config, &redis.url(), &["--output", "json"]);
    o.wait_stdout("\"worker\":\"running\"", common::START_DEADLINE);
    assert_eq!(o.stop().code(), Some(0));
    let out = o.stdout();
    let snapshots: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("line is not JSON ({e}): {l}")))
        .collect();
    let running = snapshots
        .iter()
        .find(|s| s["circles"][0]["worker"] == "running")
        .expect("a snapshot with the worker running");
    assert_eq!(running["redis_url"], redis.url());
    assert_eq!(running["redis_managed"], false);
    let circle = &running["circles"][0];
    assert_eq!(circle["name"], "Gamma");
    assert_eq!(circle["id"], 3);
    assert_eq!(circle["queue"], "gamma");
    assert_eq!(circle["queue_key"], client::keys::tasks("gamma"));
    assert_eq!(circle["server"], "running");
    let last = snapshots.last().expect("a final snapshot");
    assert_eq!(last["phase"], "stopped");
    assert_eq!(last["circles"][0]["worker"], "stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_mode_in_a_real_terminal_redraws_the_table_in_place_without_garbage() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, b) = (port(), port());
    let config = sandbox.circles(&[(1, "Alpha", a), (2, "Beta Circle", b)]);
    let data = sandbox.data_dir();
    // The shell records the exit code: tmux's own pane status can lag behind.
    // Then it stays alive: tmux discards the output of a pane whose process
    // exited before tmux read it all, the final table included.
    let exit_file = sandbox.path().join("exit-code");
    let command = format!(
        "cd {dir} && HOME={dir} CIRCLES_ADMIN=off RUST_LOG=debug {BIN} {config} --redis-url {url} \
         --data-dir {data} --no-managed-redis --refresh 200ms; echo $? > {exit}; sleep 600",
        dir = sandbox.path().display(),
        config = config.display(),
        url = redis.url(),
        data = data.display(),
        exit = exit_file.display(),
    );
    let tmux = Tmux::new("circles-test");
    tmux.start_live(&command, 200, 30);
    tmux.run(&["set-option", "-t", "live", "remain-on-exit", "on"]);
    let both_running = |s: &str| {
        s.lines()
            .filter(|l| (l.contains("Alpha") || l.contains("Beta Circle")) && l.contains("Running"))
            .count()
            == 2
    };
    let screen = tmux.wait_screen("both circles running", both_running);
    let check = |screen: &str| {
        assert!(
            screen.starts_with("circles_orchestrator "),
            "header not on top:\n{screen}"
        );
        assert_eq!(
            screen.matches("Circle Name").count(),
            1,
            "table drawn twice:\n{screen}"
        );
        assert!(
            !screen.contains('\u{1b}'),
            "raw escape codes on screen:\n{screen}"
        );
        for noise in ["INFO", "DEBUG", "WARN", "ERROR"] {
            assert!(
                !screen.contains(noise),
                "log line {noise} on the table screen:\n{screen}"
            );
        }
    };
    check(&screen);
    assert!(
        screen.contains("alpha") && screen.contains(&format!("ws://127.0.0.1:{b}/ws")),
        "{screen}"
    );
    for (name, queue) in [("Alpha", "alpha"), ("Beta Circle", "beta_circle")] {
        let key = client::keys::tasks(queue);
        assert!(
            screen.lines().any(|l| l.contains(name) && l.contains(&key)),
            "the row of {name} shows its queue's Redis key {key}:\n{screen}"
        );
    }

    // A change is redrawn in place: run scripts and wait for the counter.
    let mut ws = connect(a).await;
    for _ in 0..3 {
        assert_eq!(output(&mut ws, "40 + 2").await, "42");
    }
    drop(ws);
    let screen = tmux.wait_screen("processed count 3", |s| {
        s.lines()
            .any(|l| l.contains("Alpha") && l.split(['│', '┆']).map(str::trim).any(|c| c == "3"))
    });
    check(&screen);

    // A narrow window: the frames, and the final table after Ctrl-C, are
    // cut to its width, never wrapped.
    tmux.run(&["resize-window", "-t", "live", "-x", "60"]);
    tmux.run(&["send-keys", "-t", "live", "C-c"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let code = std::fs::read_to_string(&exit_file).unwrap_or_default();
        if !code.trim().is_empty() {
            let log = std::fs::read_to_string(data.join("orchestrator.log")).unwrap_or_default();
            assert_eq!(code.trim(), "0", "exit code after Ctrl-C; log:\n{log}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "live orchestrator did not exit on Ctrl-C; screen:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let screen = tmux.wait_screen("the final table after exit", |s| {
        s.contains("Stopped") && s.contains("stopped")
    });
    assert!(
        screen.contains("Stopped") && screen.contains("stopped"),
        "final table after exit:\n{screen}"
    );
    for line in screen.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.starts_with("circles_orchestrator ")
                || line.starts_with("stopped")
                || line.starts_with(['┌', '│', '╞', '├', '└']),
            "a line of the final table wrapped in a 60-column window:\n{screen}"
        );
    }
    let log =
        std::fs::read_to_string(data.join("orchestrator.log")).expect("log file in the data dir");
    assert!(
        log.contains("clean shutdown"),
        "logs went to the file:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_names_redis_and_the_data_dir_and_a_pipe_gets_plain_output() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let p = port();
    let config = sandbox.circles(&[(1, "Env", p)]);
    let data = sandbox.path().join("from-env");
    let mut cmd = sandbox.command();
    // No --redis-url, --data-dir or --output: the environment and the pipe decide.
    cmd.arg(&config)
        .env("REDIS_URL", redis.url())
        .env("CIRCLES_DATA_DIR", &data)
        .env("CIRCLES_NO_MANAGED_REDIS", "1")
        .args(["--result-ttl", "90s"]);
    let mut o = Orchestrator::spawn(cmd);
    o.wait_table();
    let out = o.stdout();
    let first = out.lines().next().expect("a header line");
    assert!(first.contains(&redis.url()), "{out}");
    assert!(first.contains(&data.display().to_string()), "{out}");
    assert!(out.contains("| Env "), "the plain table:\n{out}");
    assert!(
        !out.contains('\u{1b}'),
        "no terminal escapes on a pipe:\n{out}"
    );

    let mut ws = connect(p).await;
    let reply = common::play(&mut ws, 1, "db::insert(1)").await;
    assert_eq!(reply["result"]["output"], "1", "{reply}");
    let task_id = reply["result"]["task_id"]
        .as_str()
        .expect("task id")
        .to_string();
    drop(ws);
    // --result-ttl reaches the worker: the finished hash expires within 90 s.
    let mut conn = redis::Client::open(redis.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("rhai_task_details:{task_id}"))
        .query_async(&mut conn)
        .await
        .expect("pttl");
    assert!(ttl > 0 && ttl <= 90_000, "pttl {ttl}");
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
    assert!(
        data.join("1").is_dir(),
        "circle 1's database is under CIRCLES_DATA_DIR"
    );
}

/// The `"reload"` of every JSON snapshot printed so far that has one.
fn reloads(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|s| s["reload"].clone())
        .filter(|r| !r.is_null())
        .collect()
}

#[test]
fn json_output_prints_a_snapshot_for_each_reload_applied_unchanged_or_failed() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let circle = port();
    let config = sandbox.circles(&[(1, "Alpha", circle)]);
    let mut o = Orchestrator::start(
        &sandbox,
        &config,
        &redis.url(),
        &["--output", "json", "--admin", "127.0.0.1:0"],
    );
    o.wait_stdout("\"worker\":\"running\"", common::START_DEADLINE);
    let first: serde_json::Value =
        serde_json::from_str(o.stdout().lines().next().expect("a line")).expect("JSON");
    let addr: std::net::SocketAddr = first["admin"]
        .as_str()
        .and_then(|u| u.strip_prefix("http://"))
        .expect("the admin URL")
        .parse()
        .expect("an address");
    let valid = std::fs::read_to_string(&config).expect("circles.json");

    // Nothing changed, then an invalid file, then the valid one again: no
    // row changes, so each line comes from the reload alone.
    let invalid = format!(r#"[{{"id": 1, "name": "Alpha", "port": {circle}, "colour": 1}}]"#);
    for (seq, text, code) in [(1, &valid, 200), (2, &invalid, 422), (3, &valid, 200)] {
        std::fs::write(&config, text).expect("write circles.json");
        let answer = common::http::request(addr, "POST", "/api/reload", &[]);
        assert_eq!(answer.code, code, "reload {seq}: {}", answer.body);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !reloads(&o.stdout()).iter().any(|r| r["seq"] == seq) {
            assert!(
                Instant::now() < deadline,
                "no snapshot line for reload {seq}:\n{}",
                o.stdout()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert_eq!(o.stop().code(), Some(0));
    let seen = reloads(&o.stdout());
    let line = |seq: u64| {
        seen.iter()
            .find(|r| r["seq"] == seq)
            .unwrap_or_else(|| panic!("reload {seq}: {seen:?}"))
    };
    assert_eq!(line(1)["applied"], true);
    assert_eq!(
        line(1)["summary"],
        serde_json::json!({"added": [], "removed": [], "changed": []})
    );
    assert_eq!(line(2)["applied"], false);
    assert_eq!(line(2)["error"]["kind"], "invalid_config");
    assert!(
        line(2)["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("colour")),
        "{:?}",
        line(2)
    );
    assert_eq!(line(3)["applied"], true);
    assert_eq!(line(3)["error"], serde_json::Value::Null);
}

/// A live table whose terminal goes away (its tmux session killed: the
/// process gets SIGHUP, which reloads, and its stdout fails from then on)
/// goes on serving and says once that it cannot draw, not at every frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_table_whose_terminal_is_gone_serves_on_and_says_so_once() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let circle = port();
    let config = sandbox.circles(&[(1, "Alpha", circle)]);
    let live = Live::start(&sandbox, &config, &redis.url(), "", "Alpha");
    live.tmux.run(&["kill-session", "-t", "live"]);
    // Thirty frames' time without a terminal.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut ws = connect(circle).await;
    assert_eq!(output(&mut ws, "40 + 2").await, "42", "it serves on");
    let log = common::logs::wait_for(
        &sandbox.data_dir().join("orchestrator.log"),
        "cannot draw the status table",
    );
    let failures = log.matches("cannot draw the status table").count();
    assert_eq!(failures, 1, "{log}");
    live.stop();
}
