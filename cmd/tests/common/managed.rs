//! The managed redis-server of an orchestrator under test, found by its
//! command line (`redis-server 127.0.0.1:<port>`) and signalled by pid.

use std::process::Command;

/// The pid of the one `redis-server` serving `port`.
pub fn redis_pid(port: u16) -> Option<String> {
    let found = Command::new("pgrep")
        .args(["-f", &format!("^redis-server 127.0.0.1:{port}$")])
        .output()
        .expect("run pgrep");
    let pid = String::from_utf8_lossy(&found.stdout).trim().to_string();
    (!pid.is_empty() && !pid.contains('\n')).then_some(pid)
}

/// Sends `signal` (`KILL`, `STOP`, …) to `pid`.
pub fn kill(signal: &str, pid: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), pid])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Kills the one managed redis-server serving `port` (SIGKILL: it dies).
pub fn kill_redis(port: u16) {
    let pid = redis_pid(port).expect("one managed redis-server");
    kill("KILL", &pid);
}
