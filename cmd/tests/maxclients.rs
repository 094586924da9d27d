//! Redis at `maxclients`: a worker whose blocking connection is cut and
//! cannot be made again (Redis accepts the TCP connection, says "max number
//! of clients reached" and closes it), while its other connection still
//! works. ARCHITECTURE.md: every Redis failure → `Reconnecting`, backoff
//! 50 ms doubling up to 2 s, logged once at warn when it starts and once at
//! info when it ends. The worker must neither log each attempt nor hammer
//! Redis at the first backoff step for as long as the outage lasts.

mod common;

use std::time::Duration;

use common::{Orchestrator, Sandbox, port};

fn info_field(conn: &mut redis::Connection, section: &str, field: &str) -> u64 {
    let text: String = redis::cmd("INFO").arg(section).query(conn).expect("INFO");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in INFO {section}: {text}"))
}

/// Sets `maxclients` of the Redis `conn` is connected to (through its
/// plain port) so that no new client gets in, then cuts the worker's
/// blocking pop, which must connect again; the id of the one cut.
fn fill_and_cut_the_blocking_pop(conn: &mut redis::Connection) -> String {
    // The worker's blocking pop: the one client waiting in BLMOVE.
    let blocked = testkit::wait_for("the worker's blocking pop", Duration::from_secs(10), || {
        let list: String = redis::cmd("CLIENT").arg("LIST").query(conn).ok()?;
        list.lines()
            .find(|l| l.contains("cmd=blmove"))
            .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
            .map(str::to_string)
    });
    // No new client from now on, also once the blocking one is gone; the
    // connections open stay.
    let open = info_field(conn, "clients", "connected_clients");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxclients")
        .arg(open - 1)
        .query(conn)
        .expect("CONFIG SET maxclients");
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&blocked)
        .query(conn)
        .expect("CLIENT KILL");
    blocked
}

#[test]
fn a_worker_whose_blocking_connection_redis_refuses_backs_off_and_logs_once() {
    let redis = testkit::RedisServer::start();
    let sandbox = Sandbox::new();
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    let mut o = Orchestrator::start(&sandbox, &config, &redis.url(), &[]);
    o.wait_table();
    let mut conn = common::tasks::conn(&redis);
    let rejected_before = info_field(&mut conn, "stats", "rejected_connections");
    let logged_before = o.stderr().len();
    fill_and_cut_the_blocking_pop(&mut conn);
    std::thread::sleep(Duration::from_secs(6));
    let rejected = info_field(&mut conn, "stats", "rejected_connections") - rejected_before;
    let log = o.stderr()[logged_before..].to_string();
    let warnings = log
        .lines()
        .filter(|l| l.contains("worker for queue alpha cannot reach redis"))
        .count();
    let again = log
        .lines()
        .filter(|l| l.contains("worker for queue alpha is connected to redis again"))
        .count();
    // 50 ms doubling up to 2 s: about 7 attempts in 6 s for each
    // connection that cannot be made.
    // The outage began with the cut connection; the row names what keeps
    // the worker from a new one.
    o.wait_stdout(
        "Alpha (id 1): worker Reconnecting: redis is at maxclients",
        Duration::from_secs(10),
    );
    assert!(
        warnings <= 1 && again == 0 && rejected <= 30,
        "in 6 s at maxclients the worker logged {warnings} warnings that it cannot reach \
         redis and {again} times that it is connected again (it is not), and redis rejected \
         {rejected} connections; the log:\n{}",
        log.lines().take(12).collect::<Vec<_>>().join("\n")
    );
    room_again_and_back(&mut o, &mut conn, logged_before);
}

#[test]
fn over_tls_the_worker_row_says_redis_is_at_maxclients() {
    // Over TLS Redis closes a connection it has no room for before the
    // handshake, without a word: the worker asks Redis on a connection it
    // still has.
    let sandbox = Sandbox::new();
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let pair = rcgen::generate_simple_self_signed(names).expect("rcgen");
    let cert = sandbox.write("redis-cert.pem", &pair.cert.pem());
    let key = sandbox.write("redis-key.pem", &pair.signing_key.serialize_pem());
    let redis = testkit::RedisServer::start_tls(&cert, &key);
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    let ca = cert.to_str().expect("utf-8 path");
    let mut o = Orchestrator::start(&sandbox, &config, &redis.tls_url(), &["--redis-ca", ca]);
    o.wait_table();
    let mut conn = common::tasks::conn(&redis);
    let logged_before = o.stderr().len();
    fill_and_cut_the_blocking_pop(&mut conn);
    o.wait_stdout(
        "Alpha (id 1): worker Reconnecting: redis is at maxclients",
        Duration::from_secs(10),
    );
    room_again_and_back(&mut o, &mut conn, logged_before);
}

/// Room again (`maxclients` back to Redis's default): the outage ends, the
/// worker says so after the log's first `logged_before` bytes, and the
/// orchestrator stops cleanly.
fn room_again_and_back(o: &mut Orchestrator, conn: &mut redis::Connection, logged_before: usize) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxclients")
        .arg(10_000)
        .query(conn)
        .expect("CONFIG SET maxclients");
    testkit::wait_for("the worker back", Duration::from_secs(10), || {
        o.stderr()[logged_before..]
            .contains("worker for queue alpha is connected to redis again")
            .then_some(())
    });
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}
