//! An orchestrator whose stdout nobody reads (a full pipe, a stalled
//! journal) still serves, also on one CPU, and stops on SIGTERM, at once
//! on a second one; one whose stderr nobody reads serves too, exits also
//! with an error to tell there, and its log lines come out once they are
//! read.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Sandbox, connect, output, port};

/// A pipe that is already full (its 64 KiB written by the test and never
/// read), as stdout of the child: its next write blocks. The read end must
/// be kept.
fn full_pipe() -> (std::os::fd::OwnedFd, std::fs::File) {
    let (r, w) = rustix::pipe::pipe().expect("pipe");
    let mut w = std::fs::File::from(w);
    // Linux's default pipe buffer: 16 pages.
    w.write_all(&[b'\n'; 65536]).expect("fill the pipe");
    (r, w)
}

/// Kills the child of this pid however the test ends.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}

/// Waits up to `timeout` for `child` to exit; kills it otherwise.
fn exit_within(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn kill(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} failed");
}

/// An orchestrator in `--output json` whose stdout is a pipe nobody reads,
/// after three reloads (each a snapshot into the full pipe), with its
/// stderr in a file.
struct Unread {
    child: Child,
    log: std::path::PathBuf,
    _pipe: std::os::fd::OwnedFd,
    _sandbox: Sandbox,
    _redis: testkit::RedisServer,
}

impl Unread {
    fn start() -> Unread {
        let redis = testkit::RedisServer::start();
        let sandbox = Sandbox::new();
        let config = sandbox.circles(&[(1, "Alpha", port())]);
        let (pipe, write) = full_pipe();
        let log = sandbox.path().join("stderr.log");
        let mut cmd = sandbox.serve_command(&config, &redis.url(), &sandbox.data_dir());
        cmd.args(["--output", "json"])
            .stdout(Stdio::from(write))
            .stderr(Stdio::from(std::fs::File::create(&log).expect("log")));
        let child = cmd.spawn().expect("spawn");
        let mut o = Unread {
            child,
            log,
            _pipe: pipe,
            _sandbox: sandbox,
            _redis: redis,
        };
        o.until(1, "takes tasks from queue");
        for n in 1..=3 {
            kill(o.child.id(), "HUP");
            o.until(n, "reloaded ");
        }
        o
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for `what` to be logged `n` times.
    fn until(&mut self, n: usize, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.stderr().matches(what).count() < n {
            assert!(
                Instant::now() < deadline,
                "no {n}× {what:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A reader that stopped reading (`… | slow-consumer`, a stalled journal)
/// blocks the display's write once the pipe is full. SIGTERM still stops
/// the orchestrator, with exit 0 (README), without the display's last frame.
#[test]
fn sigterm_stops_the_orchestrator_while_its_stdout_is_a_full_pipe_nobody_reads() {
    let mut o = Unread::start();
    kill(o.child.id(), "TERM");
    let status = exit_within(&mut o.child, Duration::from_secs(20));
    let status = status.unwrap_or_else(|| {
        panic!(
            "SIGTERM did not stop the orchestrator within 20 s (stdout is a full pipe)\n{}",
            o.stderr()
        )
    });
    assert_eq!(status.code(), Some(0), "{}", o.stderr());
}

/// The same, with a second SIGTERM: README says it "stops at once (exit 1)".
#[test]
fn a_second_sigterm_stops_at_once_while_stdout_is_a_full_pipe_nobody_reads() {
    let mut o = Unread::start();
    kill(o.child.id(), "TERM");
    // The drain is over once the worker stopped; the exit then waits (up
    // to 5 s) for the display's last frame, which never comes.
    o.until(1, "for queue alpha stopped");
    std::thread::sleep(Duration::from_secs(1));
    kill(o.child.id(), "TERM");
    let status = exit_within(&mut o.child, Duration::from_millis(2500));
    let status = status.unwrap_or_else(|| {
        panic!(
            "a second SIGTERM did not stop the orchestrator within 2.5 s\n{}",
            o.stderr()
        )
    });
    assert_eq!(status.code(), Some(1), "{}", o.stderr());
}

/// On one CPU the async runtime has one thread. A display whose write
/// blocks (stdout a full pipe from the start) holds its own task, not that
/// thread: the worker starts and the circle serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_cpu_a_stdout_nobody_reads_stops_no_circle() {
    let redis = testkit::RedisServer::start();
    let sandbox = Sandbox::new();
    let circle = port();
    let config = sandbox.circles(&[(1, "Alpha", circle)]);
    let (_pipe, write) = full_pipe();
    let log = sandbox.path().join("stderr.log");
    let serve = sandbox.serve_command(&config, &redis.url(), &sandbox.data_dir());
    let mut cmd = common::launched(&["taskset", "-c", "0"], &serve);
    cmd.stdout(Stdio::from(write))
        .stderr(Stdio::from(std::fs::File::create(&log).expect("log")));
    let mut child = cmd.spawn().expect("spawn");
    let _orphan = KillOnDrop(child.id());
    let mut ws = connect(circle).await;
    let reply = tokio::time::timeout(Duration::from_secs(20), output(&mut ws, "40 + 2")).await;
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        reply.ok().as_deref(),
        Some("42"),
        "no reply within 20 s on one CPU with stdout a full pipe:\n{stderr}"
    );
    kill(child.id(), "TERM");
    let status = exit_within(&mut child, Duration::from_secs(20)).expect("stops on SIGTERM");
    assert_eq!(status.code(), Some(0), "{stderr}");
}

/// A stderr nobody reads (`2>&1 | reader` whose reader stopped reading, a
/// terminal stopped with Ctrl-S) holds the log's writer thread alone: the
/// circle starts and serves although its first log line could not be
/// written, SIGTERM stops it with exit 0, and once the reader reads again
/// the lines logged meanwhile come out, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stderr_nobody_reads_stops_no_circle_and_its_lines_come_once_read() {
    let redis = testkit::RedisServer::start();
    let sandbox = Sandbox::new();
    let circle = port();
    let config = sandbox.circles(&[(1, "Alpha", circle)]);
    let (pipe, write) = full_pipe();
    let mut cmd = sandbox.serve_command(&config, &redis.url(), &sandbox.data_dir());
    cmd.stdout(Stdio::null()).stderr(Stdio::from(write));
    let mut child = cmd.spawn().expect("spawn");
    // The child holds the pipe's only write end from here on.
    drop(cmd);
    let _orphan = KillOnDrop(child.id());
    let mut ws = connect(circle).await;
    let reply = tokio::time::timeout(Duration::from_secs(20), output(&mut ws, "40 + 2")).await;
    assert_eq!(
        reply.ok().as_deref(),
        Some("42"),
        "no reply within 20 s with stderr a full pipe"
    );
    // The reader comes back, and reads until the orchestrator is gone.
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        std::io::Read::read_to_end(&mut std::fs::File::from(pipe), &mut all).expect("read");
        all
    });
    kill(child.id(), "TERM");
    let status = exit_within(&mut child, Duration::from_secs(20)).expect("stops on SIGTERM");
    assert_eq!(status.code(), Some(0));
    let all = reader.join().expect("the reader");
    let lines = String::from_utf8_lossy(&all[65536..]);
    let started = lines.find("takes tasks from queue alpha");
    let stopped = lines.find("for queue alpha stopped");
    assert!(
        started.is_some() && stopped.is_some() && started < stopped,
        "the start-up and shutdown lines, in order, once stderr is read:\n{lines}"
    );
}

/// A second SIGTERM "stops at once (exit 1)" (README) also while stderr is
/// a pipe nobody reads (a stalled journal): the log's lines and the error
/// that says why it stopped wait at most the exit's bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_stops_at_once_while_stderr_is_a_full_pipe_nobody_reads() {
    let redis = testkit::RedisServer::start();
    let sandbox = Sandbox::new();
    let circle = port();
    let config = sandbox.circles(&[(1, "Alpha", circle)]);
    let (_pipe, write) = full_pipe();
    let mut cmd = sandbox.serve_command(&config, &redis.url(), &sandbox.data_dir());
    cmd.args([
        "--script-timeout",
        "120s",
        "--max-operations",
        "100000000000",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::from(write));
    let mut child = cmd.spawn().expect("spawn");
    drop(cmd);
    let _orphan = KillOnDrop(child.id());
    // A notification whose script runs until its timeout keeps the drain
    // waiting.
    let mut ws = connect(circle).await;
    let request = serde_json::json!({"jsonrpc": "2.0", "method": "play",
        "params": {"script": "loop { }"}});
    common::send(&mut ws, &request.to_string()).await;
    common::logs::wait_running(redis.port());
    kill(child.id(), "TERM");
    std::thread::sleep(Duration::from_secs(1));
    kill(child.id(), "TERM");
    // Sooner than the drain (5 s + the grace) the first signal started.
    let status = exit_within(&mut child, Duration::from_millis(4_500));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "a second SIGTERM with stderr a full pipe did not stop the orchestrator at once"
    );
}

/// A configuration error (exit 2, before any log line) while stderr is a
/// pipe nobody reads: the message waits at most the exit's bound.
#[test]
fn a_config_error_exits_2_while_stderr_is_a_full_pipe_nobody_reads() {
    let sandbox = Sandbox::new();
    let config = sandbox.write("circles.json", "[{\"id\": 1,");
    let (_pipe, write) = full_pipe();
    let mut cmd = sandbox.command();
    cmd.arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::from(write));
    let mut child = cmd.spawn().expect("spawn");
    drop(cmd);
    let _orphan = KillOnDrop(child.id());
    let status = exit_within(&mut child, Duration::from_secs(20));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(2),
        "a configuration error with stderr a full pipe did not end the process"
    );
}
