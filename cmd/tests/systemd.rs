//! systemd's notify protocol through the built binary, the test standing in
//! for systemd: a datagram socket named by `NOTIFY_SOCKET`. `READY=1` comes
//! once the circles serve, `RELOADING=1` (with `MONOTONIC_USEC`) and
//! `READY=1` again around each reload, applied or refused, `STOPPING=1` at
//! a stop signal; `WATCHDOG=1` every half of `WATCHDOG_USEC`, only when it
//! is meant for this process.

mod common;

use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use common::{Orchestrator, Sandbox, connect, output, port};

const WAIT: Duration = Duration::from_secs(30);

/// The next notification on `socket`, within `within`.
fn next(socket: &UnixDatagram, within: Duration) -> Option<String> {
    socket.set_read_timeout(Some(within)).expect("timeout");
    // Larger than what systemd reads (4096 bytes), so a longer one shows.
    let mut buf = vec![0u8; 1 << 16];
    let n = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8(buf[..n].to_vec()).expect("UTF-8"))
}

/// The next notification that is not `WATCHDOG=1`.
fn next_state(socket: &UnixDatagram, o: &Orchestrator) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = next(socket, left.max(Duration::from_millis(1)))
            .unwrap_or_else(|| panic!("no notification within {WAIT:?}\n{}", o.stderr()));
        if got != "WATCHDOG=1" {
            return got;
        }
    }
}

/// CLOCK_MONOTONIC now, in microseconds (Linux: `Instant` reads it too, but
/// keeps its value to itself; /proc/uptime counts suspended time as well).
fn monotonic_usec() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (now.tv_sec as u64) * 1_000_000 + (now.tv_nsec as u64) / 1_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_reloading_and_stopping_follow_the_circles_serving_reloading_and_stopping() {
    let redis = testkit::RedisServer::start();
    let sandbox = Sandbox::new();
    let (a, b) = (port(), port());
    let config = sandbox.circles(&[(1, "Alpha", a)]);
    let path = sandbox.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    let mut cmd = sandbox.serve_command(&config, &redis.url(), &sandbox.data_dir());
    cmd.env("NOTIFY_SOCKET", &path);
    let mut o = Orchestrator::spawn(cmd);

    let ready = next_state(&socket, &o);
    assert_eq!(ready, "READY=1\nSTATUS=serving 1 circles");
    // Ready means serving: a play answers at once.
    let mut ws = connect(a).await;
    assert_eq!(output(&mut ws, "40 + 2").await, "42");

    sandbox.circles(&[(1, "Alpha", a), (2, "Beta", b)]);
    let asked = monotonic_usec();
    o.signal("HUP");
    let reloading = next_state(&socket, &o);
    let mut lines = reloading.lines();
    assert_eq!(lines.next(), Some("RELOADING=1"), "{reloading}");
    let at: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC: {reloading:?}"));
    assert!(
        at >= asked && at < monotonic_usec(),
        "MONOTONIC_USEC={at} is not between the SIGHUP ({asked}) and now"
    );
    let ready = next_state(&socket, &o);
    assert!(
        ready.starts_with("READY=1\nSTATUS=serving 2 circles; reload applied"),
        "{ready:?}"
    );
    let mut ws = connect(b).await;
    assert_eq!(output(&mut ws, "1 + 1").await, "2");

    // A refused reload: ready again, saying so, serving what it served.
    sandbox.write("circles.json", "[{\"id\": 1,");
    o.signal("HUP");
    assert!(next_state(&socket, &o).starts_with("RELOADING=1\n"));
    let ready = next_state(&socket, &o);
    assert!(
        ready.starts_with("READY=1\nSTATUS=serving 2 circles; reload failed"),
        "{ready:?}"
    );
    assert_eq!(
        ready.lines().count(),
        2,
        "the status is one line: {ready:?}"
    );
    assert!(
        ready.contains("reload failed, nothing changed: "),
        "{ready:?}"
    );

    // One applied in part: Gamma added, Delta's port another program's.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy = taken.local_addr().expect("address").port();
    sandbox.circles(&[
        (1, "Alpha", a),
        (2, "Beta", b),
        (3, "Gamma", port()),
        (4, "Delta", busy),
    ]);
    o.signal("HUP");
    assert!(next_state(&socket, &o).starts_with("RELOADING=1\n"));
    let ready = next_state(&socket, &o);
    assert!(
        ready.starts_with(
            "READY=1\nSTATUS=serving 3 circles; reload partly applied: added \"Gamma\", but \"Delta\" (added) did not start"
        ),
        "{ready:?}"
    );
    drop(taken);

    o.signal("TERM");
    assert_eq!(
        next_state(&socket, &o),
        "STOPPING=1\nSTATUS=SIGTERM received: shutting down"
    );
    assert_eq!(o.wait_exit(WAIT).code(), Some(0), "{}", o.stderr());
}

/// systemd reads a notification into a buffer of PIPE_BUF (4096) bytes and
/// ignores a longer one whole ("Received notify message exceeded maximum
/// size. Ignoring.", src/core/manager.c), its `READY=1` with it: under
/// `Type=notify-reload` the reload would never end for systemd. The status
/// after a reload names every circle it touched, so it is cut to fit.
#[test]
fn the_ready_after_a_reload_of_many_long_names_fits_in_what_systemd_reads() {
    let redis = testkit::RedisServer::start();
    let sandbox = Sandbox::new();
    let first = port();
    let config = sandbox.circles(&[(1, "Alpha", first)]);
    let path = sandbox.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    let mut cmd = sandbox.serve_command(&config, &redis.url(), &sandbox.data_dir());
    cmd.env("NOTIFY_SOCKET", &path);
    let mut o = Orchestrator::spawn(cmd);
    assert!(next_state(&socket, &o).starts_with("READY=1\n"));
    // 40 more circles with names of 100 characters (the most allowed).
    let mut circles = vec![serde_json::json!({"id": 1, "name": "Alpha", "port": first})];
    for id in 2..=41 {
        let name = format!("{id:03}{}", "x".repeat(97));
        circles.push(serde_json::json!({"id": id, "name": name, "port": port()}));
    }
    sandbox.write(
        "circles.json",
        &serde_json::Value::Array(circles).to_string(),
    );
    o.signal("HUP");
    assert!(next_state(&socket, &o).starts_with("RELOADING=1\n"));
    let ready = next_state(&socket, &o);
    assert!(
        ready.starts_with("READY=1\nSTATUS=serving 41 circles; reload applied"),
        "{ready:.200}"
    );
    assert!(
        ready.len() <= 4096 && ready.ends_with('…'),
        "the READY=1 after the reload is {} bytes: systemd ignores more than 4096 whole",
        ready.len()
    );
    o.signal("TERM");
    assert_eq!(o.wait_exit(WAIT).code(), Some(0), "{}", o.stderr());
}

#[test]
fn the_watchdog_is_fed_every_half_of_its_time_on_an_abstract_socket_and_only_for_this_process() {
    let redis = testkit::RedisServer::start();
    for (pid_meant, fed) in [(None, true), (Some("1"), false)] {
        let sandbox = Sandbox::new();
        let config = sandbox.circles(&[(1, "Alpha", port())]);
        let name = format!("circles-test-{}-{}", std::process::id(), port());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
        let socket = UnixDatagram::bind_addr(&addr).expect("bind the notify socket");
        let mut cmd = sandbox.serve_command(&config, &redis.url(), &sandbox.data_dir());
        cmd.env("NOTIFY_SOCKET", format!("@{name}"))
            .env("WATCHDOG_USEC", "200000");
        if let Some(pid) = pid_meant {
            cmd.env("WATCHDOG_PID", pid);
        }
        let mut o = Orchestrator::spawn(cmd);
        let ready = next_state(&socket, &o);
        assert!(ready.starts_with("READY=1\n"), "{ready:?}");
        // Every 100 ms: a dozen within 1.5 s on a quiet machine, at least
        // three on a busy one.
        let until = Instant::now() + Duration::from_millis(1500);
        let mut fed_times = 0;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match next(&socket, left.max(Duration::from_millis(1))) {
                Some(m) if m == "WATCHDOG=1" => fed_times += 1,
                Some(m) => panic!("unexpected {m:?}"),
                None => break,
            }
        }
        if fed {
            assert!(fed_times >= 3, "fed {fed_times} times in 1.5 s");
        } else {
            assert_eq!(fed_times, 0, "fed for WATCHDOG_PID=1");
        }
        assert!(o.stop().success(), "{}", o.stderr());
    }
}
