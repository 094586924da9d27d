//! More circles than the open files limit can hold: the orchestrator ends
//! with a clear error naming the limit (start-up is all or nothing) rather
//! than start and then restart every circle forever, serving none of them;
//! a reload that would run too many changes nothing and says why.

mod common;

use std::time::{Duration, Instant};

use common::{Orchestrator, Sandbox, port};
use serde_json::json;

#[test]
fn two_hundred_circles_under_1024_open_files_end_with_a_clear_error() {
    let redis = testkit::RedisServer::start();
    let sandbox = Sandbox::new();
    let circles: Vec<_> = (1..=200u32)
        .map(|id| json!({"id": id, "name": format!("C{id}"), "port": port()}))
        .collect();
    let config = sandbox.write("circles.json", &json!(circles).to_string());
    let serve = sandbox.serve_command(&config, &redis.url(), &sandbox.data_dir());
    let mut o = Orchestrator::spawn(common::limited(&serve, "1024:1024"));
    // 200 circles take about 2,600 descriptors; 1024 cannot hold them.
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if o.child.try_wait().expect("try_wait").is_some() {
            // Its last lines, still in the pipe, are read first.
            break Some(o.wait_exit(Duration::from_secs(5)));
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = o.stderr();
    let restarts = stderr
        .lines()
        .filter(|l| l.contains("Too many open files"))
        .count();
    let Some(status) = status else {
        panic!(
            "200 circles under a limit of 1024 open files: still running after 40 s \
             ({restarts} log lines say Too many open files; the last table lines:\n{})",
            o.stdout()
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
    };
    assert_ne!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("open files") && stderr.contains("1024"),
        "the error names the limit: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_to_more_circles_than_the_open_files_limit_holds_changes_nothing() {
    let redis = testkit::RedisServer::start();
    let sandbox = Sandbox::new();
    let circles = |n: u32, ports: &[u16]| {
        let all: Vec<_> = (1..=n)
            .map(|id| json!({"id": id, "name": format!("C{id}"), "port": ports[id as usize - 1]}))
            .collect();
        json!(all).to_string()
    };
    let ports: Vec<u16> = (0..80).map(|_| port()).collect();
    // 20 circles need about 64 + 16 × 20 = 384 descriptors; 80 about 1344.
    let config = sandbox.write("circles.json", &circles(20, &ports));
    let serve = sandbox.serve_command(&config, &redis.url(), &sandbox.data_dir());
    let mut o = Orchestrator::spawn(common::limited(&serve, "1024:1024"));
    o.wait_table();
    sandbox.write("circles.json", &circles(80, &ports));
    o.signal("HUP");
    o.wait_stdout("reload failed", Duration::from_secs(30));
    let stdout = o.stdout();
    assert!(
        stdout.contains("open files limit (1024)") && stdout.contains("nothing was reloaded"),
        "{stdout}"
    );
    let mut ws = common::connect(ports[19]).await;
    let reply = common::play(&mut ws, 1, "40 + 2").await;
    assert_eq!(reply["result"]["output"], json!("42"), "{reply}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", ports[20])).is_err(),
        "a circle the refused reload would add serves"
    );
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}
