//! A stop signal while the managed redis-server, restarted after it died,
//! still loads its append-only file: README says the shutdown is bounded
//! ("at most 5 s + `--shutdown-grace` after the signal") and that a second
//! SIGTERM "stops at once (exit 1)".

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::managed::{kill, redis_pid};
use common::{Orchestrator, Sandbox, ping_reply, port};

/// The incremental append-only file the managed redis-server writes.
fn incr_aof(redis_dir: &Path) -> PathBuf {
    let dir = redis_dir.join("appendonlydir");
    std::fs::read_dir(&dir)
        .expect("appendonlydir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.to_string_lossy().ends_with(".incr.aof"))
        .expect("an incr AOF file")
}

/// Kills the managed redis-server on drop (the test's own, by pid), so a
/// failing test leaves no server loading for a minute.
struct KillOnDrop(u16);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = redis_pid(self.0) {
            kill("KILL", &pid);
        }
    }
}

/// Starts one circle with a managed redis-server, makes that server's
/// append-only file slow to load (about 40 s of `DEBUG SLEEP`s, with
/// LOADING answered in between), kills the server, and returns once the
/// orchestrator's restarted server answers LOADING.
fn a_managed_redis_restarted_and_loading() -> (Sandbox, u16, Orchestrator, KillOnDrop) {
    let sandbox = Sandbox::new();
    let redis_port = port();
    let p = port();
    let config = sandbox.circles(&[(1, "Slowpoke", p)]);
    let mut cmd = sandbox.command();
    cmd.arg(&config).args([
        "--redis-url",
        &format!("redis://127.0.0.1:{redis_port}"),
        "--output",
        "plain",
        "--shutdown-grace",
        "1s",
    ]);
    let mut orchestrator = Orchestrator::spawn(cmd);
    orchestrator.wait_table();
    let guard = KillOnDrop(redis_port);
    let pid = redis_pid(redis_port).expect("one managed redis-server");
    let redis_dir = sandbox.path().join(".hero").join("circles").join("redis");
    // Frozen, so nothing it writes interleaves with the appended commands.
    kill("STOP", &pid);
    let slow: Vec<u8> = b"*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n$6\r\n0.0005\r\n".repeat(60_000);
    std::fs::OpenOptions::new()
        .append(true)
        .open(incr_aof(&redis_dir))
        .and_then(|mut f| f.write_all(&slow))
        .expect("append to the AOF");
    kill("KILL", &pid);
    // The watcher looks every 0.5 s and starts it again; it then loads.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = ping_reply(redis_port);
        if reply.starts_with("-LOADING") && redis_pid(redis_port).is_some_and(|p| p != pid) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted redis-server never answered LOADING: {reply}\n{}",
            orchestrator.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (sandbox, redis_port, orchestrator, guard)
}

#[test]
fn a_sigterm_while_the_restarted_managed_redis_loads_stops_within_the_bound() {
    let (_sandbox, redis_port, mut orchestrator, _guard) = a_managed_redis_restarted_and_loading();
    let signalled = Instant::now();
    orchestrator.signal("TERM");
    // README: at most 5 s + --shutdown-grace (1 s) after the signal; 15 s
    // leaves room for a slow machine.
    let status = orchestrator.wait_exit(Duration::from_secs(150));
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "the shutdown took {took:?} (the restarted redis on {redis_port} was loading); \
         status {status}\nstderr:\n{}",
        orchestrator.stderr()
    );
    assert_eq!(
        redis_pid(redis_port),
        None,
        "the managed redis-server, still loading, is stopped at exit"
    );
}

#[test]
fn a_second_sigterm_while_the_restarted_managed_redis_loads_stops_at_once() {
    let (_sandbox, redis_port, mut orchestrator, _guard) = a_managed_redis_restarted_and_loading();
    orchestrator.signal("TERM");
    std::thread::sleep(Duration::from_secs(1));
    let again = Instant::now();
    orchestrator.signal("TERM");
    let status = orchestrator.wait_exit(Duration::from_secs(150));
    let took = again.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "a second SIGTERM took {took:?} to stop it (the restarted redis on {redis_port} was \
         loading); status {status}\nstderr:\n{}",
        orchestrator.stderr()
    );
    assert_eq!(status.code(), Some(1), "{}", orchestrator.stderr());
}
