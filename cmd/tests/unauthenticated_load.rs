//! What a client without a token can take from everyone else, through the
//! built binary: SECURITY.md says such a client, at a circle with
//! principals, can make "upgrade attempts only". Here one such client (its
//! own address, 127.0.0.2) holds HTTP/1.1 connections to a protected
//! circle's port, each sending a request for a path that does not exist
//! every 2 s so that keep-alive would never end it, and connecting again at
//! once when one is closed; meanwhile another client (127.0.0.1) must still
//! reach another circle and the admin probe. The orchestrator starts with
//! a limit of 1024 open files, soft and hard (the usual soft limit, here
//! not to be raised): the bound per address must do it alone.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Orchestrator, Sandbox, port, sha256_hex};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Connections the one client holds.
const HELD: usize = 1100;

/// The status code of one raw request to `127.0.0.1:port`, or why there is
/// none within 3 s.
async fn status_of(port: u16, request: &str) -> Result<u16, String> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut head = [0u8; 64];
        let n = stream
            .read(&mut head)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let line = String::from_utf8_lossy(&head[..n]).to_string();
        line.split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or(format!("not HTTP: {line:?}"))
    };
    tokio::time::timeout(Duration::from_secs(3), attempt)
        .await
        .unwrap_or_else(|_| Err("no answer within 3 s".to_string()))
}

/// `serve` run by `prlimit` with `nofile` (`soft:hard`) open files.
fn limited(serve: &Command, nofile: &str) -> Command {
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={nofile}"))
        .arg(serve.get_program())
        .args(serve.get_args())
        .stdin(Stdio::null());
    if let Some(dir) = serve.get_current_dir() {
        cmd.current_dir(dir);
    }
    for (key, value) in serve.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    cmd
}

fn upgrade_request(port: u16) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
}

/// One held connection: a request for a missing path every 2 s until `stop`.
async fn hold(port: u16, stop: Arc<AtomicBool>) {
    let request = format!("GET /nothing HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    while !stop.load(Ordering::Relaxed) {
        let connect = async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind("127.0.0.2:0".parse().expect("address"))?;
            socket.connect(([127, 0, 0, 1], port).into()).await
        };
        let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_secs(1), connect).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::Relaxed) {
            if stream.write_all(request.as_bytes()).await.is_err() {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                _ => {}
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn idle_connections_of_one_client_without_a_token_do_not_shut_out_other_circles() {
    let redis = testkit::RedisServer::start();
    let sandbox = Sandbox::new();
    let (guarded, other, admin) = (port(), port(), port());
    let circles = json!([
        {"id": 1, "name": "Guarded", "port": guarded, "principals": [
            {"name": "ann", "token_sha256": sha256_hex("a-token-nobody-here-has"), "role": "write"}]},
        {"id": 2, "name": "Other", "port": other},
    ]);
    let config = sandbox.write("circles.json", &circles.to_string());
    let serve = sandbox.serve_command(&config, &redis.url(), &sandbox.data_dir());
    // The same command, with at most 1024 open files.
    let mut cmd = limited(&serve, "1024:1024");
    cmd.args(["--admin", &format!("127.0.0.1:{admin}")]);
    cmd.env("CIRCLES_ADMIN", format!("127.0.0.1:{admin}"));
    let mut o = Orchestrator::spawn(cmd);
    o.wait_table();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let healthz = format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{admin}\r\n\r\n");
        assert_eq!(status_of(other, &upgrade_request(other)).await, Ok(101));
        assert_eq!(status_of(admin, &healthz).await, Ok(200));

        let stop = Arc::new(AtomicBool::new(false));
        let holders: Vec<_> = (0..HELD)
            .map(|_| tokio::spawn(hold(guarded, Arc::clone(&stop))))
            .collect();
        tokio::time::sleep(Duration::from_secs(8)).await;
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push((
                status_of(other, &upgrade_request(other)).await,
                status_of(admin, &healthz).await,
            ));
        }
        stop.store(true, Ordering::Relaxed);
        for h in holders {
            h.abort();
        }
        let refused_accepts = o
            .stderr()
            .lines()
            .filter(|l| l.contains("Too many open files"))
            .count();
        assert!(
            seen.iter().all(|s| *s == (Ok(101), Ok(200))),
            "while one client without a token held {HELD} connections to the protected \
             circle, the open circle's upgrades and /healthz from another address got \
             {seen:?} ({refused_accepts} log lines say accept failed: Too many open files)"
        );
    });
    drop(runtime);
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}

/// The orchestrator raises its soft limit of open files to the hard one:
/// every circle's connections and databases share the process's
/// descriptors, and the usual soft limit (1024) is soon reached.
#[test]
fn the_soft_limit_of_open_files_is_raised_to_the_hard_one() {
    let redis = testkit::RedisServer::start();
    let sandbox = Sandbox::new();
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    let serve = sandbox.serve_command(&config, &redis.url(), &sandbox.data_dir());
    let mut o = Orchestrator::spawn(limited(&serve, "1024:4096"));
    o.wait_table();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", o.pid())).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a line for open files");
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, ["4096", "4096"], "{line}");
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}
