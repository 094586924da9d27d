//! The managed redis-server: started, found taken, stopped.

use super::*;

#[test]
fn a_failed_start_shows_the_log_of_that_start_only() {
    let data = tempfile::tempdir().expect("tempdir");
    let dir = data.path().join("redis");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(log_path(&dir), "an old line of an earlier run\n").expect("old log");
    // A file where the append-only directory must be: redis-server
    // logs why and exits.
    std::fs::write(dir.join("appendonlydir"), "not a directory").expect("in the way");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let e = ManagedRedis::start(addr, data.path(), &AtomicBool::new(false))
        .expect_err("no start with its append-only dir in the way")
        .to_string();
    assert!(e.contains("redis-server exited with"), "{e}");
    assert!(e.contains("append-only dir"), "this start's lines: {e}");
    assert!(!e.contains("an old line"), "no line of an earlier run: {e}");
}

/// The process id INFO reports at `port`, read by the test's own client.
fn info_pid(port: u16) -> u32 {
    let info = testkit::command(port, &["INFO", "server"]).expect("INFO");
    let text = info.text().expect("a bulk reply").to_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse().ok())
        .expect("a process_id line")
}

#[test]
fn a_start_on_a_port_another_redis_took_first_is_taken_and_leaves_that_redis_alone() {
    for other in [
        testkit::RedisServer::start(),
        // One that answers INFO with NOAUTH: whose it is stays untold
        // until the managed one exits for want of the port.
        testkit::RedisServer::start_with_args(&["--requirepass", "secret"]),
    ] {
        let data = tempfile::tempdir().expect("tempdir");
        let addr = SocketAddr::from(([127, 0, 0, 1], other.port()));
        let e = ManagedRedis::start(addr, data.path(), &AtomicBool::new(false))
            .expect_err("the port is held by another redis-server");
        let taken = e.downcast_ref::<Taken>().unwrap_or_else(|| panic!("{e:#}"));
        assert_eq!((taken.addr, taken.answer), (addr, Answer::There));
        let protected =
            testkit::command(other.port(), &["INFO", "server"]).is_ok_and(|r| r.text().is_none());
        if protected {
            assert_eq!(taken.pid, None, "{taken}");
        } else {
            assert_eq!(taken.pid, other.pid(), "{taken}");
            assert!(taken.to_string().contains("took the port first"), "{taken}");
        }
        // Not shut down by the failed start: it still answers.
        assert!(
            matches!(ping(&addr), Ok(Answer::There)),
            "the other redis-server is still up"
        );
    }
}

#[test]
fn a_respawn_finds_the_port_taken_while_another_redis_holds_it_and_gets_it_back_after() {
    let data = tempfile::tempdir().expect("tempdir");
    let port = testkit::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut managed =
        ManagedRedis::start(addr, data.path(), &AtomicBool::new(false)).expect("start");
    assert_eq!(info_pid(port), managed.pid());
    managed.child.kill().expect("kill the managed server");
    managed.child.wait().expect("reap it");
    let other = testkit::RedisServer::start_on(port);
    let e = managed
        .respawn(&AtomicBool::new(false))
        .expect_err("the port is the other's");
    let taken = e.downcast_ref::<Taken>().unwrap_or_else(|| panic!("{e:#}"));
    assert_eq!(taken.pid, other.pid());
    assert!(managed.exit_status().is_some(), "the respawned one is gone");
    drop(other);
    managed
        .respawn(&AtomicBool::new(false))
        .expect("the port is free again");
    assert_eq!(info_pid(port), managed.pid());
}

#[test]
fn a_tail_reads_from_its_offset_or_all_of_a_shorter_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log");
    let lines: Vec<String> = (0..30).map(|i| format!("line {i}")).collect();
    std::fs::write(&path, lines.join("\n")).expect("write");
    let all = tail(&path, 0);
    assert_eq!(all.lines().count(), 20);
    assert!(
        all.starts_with("line 10\n") && all.ends_with("line 29"),
        "{all}"
    );
    let from = std::fs::read_to_string(&path)
        .expect("read")
        .find("line 27")
        .expect("at");
    assert_eq!(tail(&path, from as u64), "line 27\nline 28\nline 29");
    // Past its end: the file was rotated since, and all of it is new.
    assert_eq!(tail(&path, 1 << 20), all);
    assert_eq!(tail(&dir.path().join("absent"), 0), "");
}

/// A `SHUTDOWN` that never reaches the server (sent while it was still
/// starting, say) does not leave the stop to the kill: the server is asked
/// again by SIGTERM, which it obeys as it does `SHUTDOWN`.
#[test]
fn a_stop_whose_shutdown_is_not_read_asks_again_by_sigterm() {
    let data = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut redis = ManagedRedis::start(addr, data.path(), &AtomicBool::new(false)).expect("start");
    let log = log_path(&redis.dir);
    // Its SHUTDOWN goes where nothing listens.
    let nowhere = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    redis.addr = nowhere.local_addr().expect("address");
    drop(nowhere);
    redis.stop();
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("Received SIGTERM"), "{text}");
    assert!(
        text.contains("ready to exit"),
        "it stopped as asked: {text}"
    );
}
