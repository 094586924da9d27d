//! What clients that never read their replies cost the orchestrator: the
//! real binary with one circle and its own Redis; `UNREAD_CONNS` (default 4)
//! connections each send `--max-in-flight` (32) requests whose reply holds
//! 1 MB of output and 1 MB of printed text, then read nothing. Prints the
//! process's resident memory before, while they wait (sampled for
//! `UNREAD_HOLD_SECS`, default 10), per connection against the bound README
//! gives (the in-flight replies plus the 1 MiB outbox), and after the
//! connections closed.
//!
//! `cargo bench -p cmd --bench unread_replies`. Prints figures; asserts only
//! that the circle served.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_circles_orchestrator");
/// Requests per connection: the default `--max-in-flight`.
const IN_FLIGHT: usize = 32;
/// A script whose reply carries 1,000,000 bytes of output and as many printed.
const SCRIPT: &str =
    r#"let s = "x"; for i in 0..20 { s += s; } s = s.sub_string(0, 1000000); print(s); s"#;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_mib(pid: u32) -> f64 {
    testkit::proc_status(pid, "VmRSS:") as f64 / 1024.0
}

/// A masked client text frame.
fn frame(text: &str) -> Vec<u8> {
    let data = text.as_bytes();
    let mask = [0x5a, 0x13, 0xc7, 0x2e];
    let mut out = vec![0x81];
    match data.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n < 65_536 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(data.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// A WebSocket connection that, once upgraded, only ever writes.
fn open(port: u16) -> Option<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(request.as_bytes()).ok()?;
    // The 101 answer, byte by byte up to its blank line: nothing after it
    // is read.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).ok()?;
        head.push(byte[0]);
    }
    head.starts_with(b"HTTP/1.1 101").then_some(s)
}

fn main() {
    let conns = env_num("UNREAD_CONNS", 4) as usize;
    let hold = Duration::from_secs(env_num("UNREAD_HOLD_SECS", 10));
    let dir = tempfile::Builder::new()
        .prefix("circles-unread-")
        .tempdir()
        .expect("temp dir");
    let redis = testkit::RedisServer::start();
    let port = testkit::free_port();
    let config = dir.path().join("circles.json");
    let circles = format!(r#"[{{"id": 1, "name": "Unread", "port": {port}}}]"#);
    std::fs::write(&config, circles).expect("write config");
    let mut child = Command::new(BIN)
        .arg(&config)
        .args(["--redis-url", &redis.url(), "--no-managed-redis"])
        .args(["--output", "plain", "--admin", "off"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn orchestrator");
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    let probe = loop {
        if let Some(s) = open(port) {
            break s;
        }
        assert!(Instant::now() < deadline, "the circle never served");
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(probe);
    std::thread::sleep(Duration::from_secs(1));
    let before = rss_mib(pid);

    let request = |id: usize| {
        serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "play", "params": {"script": SCRIPT}})
            .to_string()
    };
    let mut held = Vec::new();
    for _ in 0..conns {
        let mut s = open(port).expect("a connection");
        for id in 0..IN_FLIGHT {
            s.write_all(&frame(&request(id))).expect("send a request");
        }
        held.push(s);
    }
    let started = Instant::now();
    let mut peak: f64 = 0.0;
    while started.elapsed() < hold {
        std::thread::sleep(Duration::from_millis(500));
        peak = peak.max(rss_mib(pid));
    }
    let holding = rss_mib(pid);
    drop(held);
    std::thread::sleep(Duration::from_secs(3));
    let after = rss_mib(pid);

    // Each reply as JSON: the two megabytes of text and a little framing.
    let reply_mib = 2_000_000.0 / (1024.0 * 1024.0);
    let bound = IN_FLIGHT as f64 * reply_mib + 1.0;
    let per = (holding - before) / conns as f64;
    println!(
        "unread replies: {conns} connections x {IN_FLIGHT} requests of 1 MB output + 1 MB printed, never read"
    );
    println!(
        "rss before {before:.1} MiB; while held {holding:.1} MiB (peak {peak:.1}); \
         {per:.1} MiB per connection against README's bound of {bound:.1} MiB ({:.2}x); \
         3 s after they closed {after:.1} MiB",
        per / bound
    );
    let _ = child.kill();
    let _ = child.wait();
}
