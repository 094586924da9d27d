//! Redis over TLS under faults, end to end through the binary. At start:
//! a handshake nobody answers, a wrong password, certificates that are
//! trusted but expired, not valid yet or made out for another name, and a
//! Redis that asks for a client certificate or is at maxclients each stop
//! the start (exit 1) saying what is wrong. While serving: Redis killed and back while a
//! script runs, back with a certificate not trusted, cut off by the
//! network, and its password changed under it.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Orchestrator, Sandbox, connect, output, port, recv, run_to_end, send};
use serde_json::json;

const PASSWORD: &str = "pw-TLS-f4u1t5-never-printed";

/// When a certificate is valid.
#[derive(Clone, Copy)]
enum Validity {
    Now,
    Expired,
    NotYet,
}

/// A self-signed certificate for `names`, valid `when`, written to
/// `<prefix>cert.pem` and `<prefix>key.pem` in the sandbox.
fn certificate(
    sandbox: &Sandbox,
    prefix: &str,
    names: &[&str],
    when: Validity,
) -> (PathBuf, PathBuf) {
    let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let mut params = rcgen::CertificateParams::new(names).expect("params");
    match when {
        Validity::Now => {}
        Validity::Expired => {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        Validity::NotYet => {
            params.not_before = rcgen::date_time_ymd(2090, 1, 1);
            params.not_after = rcgen::date_time_ymd(2091, 1, 1);
        }
    }
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed");
    (
        sandbox.write(&format!("{prefix}cert.pem"), &cert.pem()),
        sandbox.write(&format!("{prefix}key.pem"), &key.serialize_pem()),
    )
}

const LOCAL: &[&str] = &["localhost", "127.0.0.1"];

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Sends one inline command to the plain port of the test Redis; its reply line.
fn command(port: u16, command: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .write_all(format!("{command}\r\n").as_bytes())
        .expect("send");
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).expect("reply");
    line
}

#[test]
fn a_tls_handshake_nobody_answers_stops_the_start_with_exit_1_naming_the_url() {
    // A listener that accepts and never says a word: the handshake waits
    // for the server's hello. The start stops (run_to_end's deadline
    // bounds it) instead of waiting for ever.
    let sandbox = Sandbox::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let at = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let url = format!("rediss://127.0.0.1:{at}");
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    let cmd = sandbox.serve_command(&config, &url, &sandbox.data_dir());
    let (status, out, err) = run_to_end(cmd, Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{out}\n{err}");
    assert!(
        err.contains(&format!(
            "cannot connect the task client to redis at {url}. Fix: check that a Redis server"
        )) && err.contains("timed out"),
        "{err}"
    );
}

#[test]
fn a_wrong_password_over_tls_exits_1_saying_authentication_failed() {
    let sandbox = Sandbox::new();
    let (cert, key) = certificate(&sandbox, "redis-", LOCAL, Validity::Now);
    let redis = testkit::RedisServer::start_tls(&cert, &key);
    assert_eq!(
        command(redis.port(), &format!("CONFIG SET requirepass {PASSWORD}")),
        "+OK\r\n"
    );
    let url = format!("rediss://:{PASSWORD}-wrong@127.0.0.1:{}", redis.tls_port());
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    let mut cmd = sandbox.serve_command(&config, &url, &sandbox.data_dir());
    cmd.args(["--redis-ca", path(&cert)]);
    let (status, out, err) = run_to_end(cmd, Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{out}\n{err}");
    assert!(
        err.contains(&format!(
            "cannot connect the task client to redis at rediss://127.0.0.1:{}",
            redis.tls_port()
        )) && err.to_lowercase().contains("authentication failed"),
        "{err}"
    );
    for output in [&out, &err] {
        assert!(
            !output.contains(PASSWORD),
            "the password was printed: {output}"
        );
    }
}

/// Starts the orchestrator at a `rediss://` Redis whose certificate is
/// `cert`, trusting it with `--redis-ca`; the start's error, which must
/// end it with exit 1.
fn start_refused(sandbox: &Sandbox, cert: &Path, key: &Path) -> String {
    let redis = testkit::RedisServer::start_tls(cert, key);
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    let data = tempfile::tempdir_in(sandbox.path()).expect("data dir");
    let mut cmd = sandbox.serve_command(&config, &redis.tls_url(), data.path());
    cmd.args(["--redis-ca", path(cert)]);
    let (status, out, err) = run_to_end(cmd, Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{out}\n{err}");
    let first = err
        .lines()
        .find(|l| l.starts_with("circles_orchestrator: error:"))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(
        first.contains(&format!(
            "cannot connect the task client to redis at {}: the certificate of Redis is not \
             trusted",
            redis.tls_url()
        )),
        "the error says first what is wrong: {err}"
    );
    err
}

#[test]
fn a_redis_certificate_trusted_but_expired_or_for_another_name_is_named_so() {
    // Each is signed by the CA given (itself): passing the CA, as a
    // certificate no trusted CA signed needs, would change nothing.
    let sandbox = Sandbox::new();
    let (cert, key) = certificate(&sandbox, "expired-", LOCAL, Validity::Expired);
    let err = start_refused(&sandbox, &cert, &key);
    assert!(
        err.contains("it has expired") && !err.contains("pass the CA"),
        "{err}"
    );
    let (cert, key) = certificate(&sandbox, "early-", LOCAL, Validity::NotYet);
    let err = start_refused(&sandbox, &cert, &key);
    assert!(
        err.contains("it is not valid yet") && !err.contains("pass the CA"),
        "{err}"
    );
    let (cert, key) = certificate(&sandbox, "other-", &["redis.example"], Validity::Now);
    let err = start_refused(&sandbox, &cert, &key);
    assert!(
        err.contains("it is not made out for the URL's host name") && !err.contains("pass the CA"),
        "{err}"
    );
}

/// A Redis with the append-only file on (as `start_persistent`) that also
/// serves TLS with `cert` and `key` (read again at each restart), and the
/// port it serves TLS on.
fn persistent_tls_redis(cert: &Path, key: &Path) -> (testkit::RedisServer, u16) {
    let tls_port = port().to_string();
    let redis = testkit::RedisServer::start_with_args(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        path(cert),
        "--tls-key-file",
        path(key),
        "--tls-ca-cert-file",
        path(cert),
        "--tls-auth-clients",
        "no",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ]);
    (redis, tls_port.parse().expect("port"))
}

/// Starts the orchestrator on circle Alpha at `alpha` against the
/// `rediss://` Redis on `tls_port`, trusting `cert`, with room for a busy
/// script; waits for its table.
fn serve_over_tls(sandbox: &Sandbox, tls_port: u16, cert: &Path, alpha: u16) -> Orchestrator {
    let config = sandbox.circles(&[(1, "Alpha", alpha)]);
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let mut o = Orchestrator::start(
        sandbox,
        &config,
        &url,
        &[
            "--redis-ca",
            path(cert),
            "--max-operations",
            "1000000000",
            "--script-timeout",
            "20s",
        ],
    );
    o.wait_table();
    o
}

/// Redis killed with SIGKILL while a request's script runs, and back with
/// its append-only file before the task's deadline: over TLS, too, the
/// request gets the script's result and its write is in the database once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_request_whose_redis_is_killed_and_comes_back_gets_its_result_once() {
    let sandbox = Sandbox::new();
    let (cert, key) = certificate(&sandbox, "redis-", LOCAL, Validity::Now);
    let (mut redis, tls_port) = persistent_tls_redis(&cert, &key);
    let alpha = port();
    let mut o = serve_over_tls(&sandbox, tls_port, &cert, alpha);
    let mut ws = connect(alpha).await;
    assert_eq!(output(&mut ws, "1").await, "1");
    let busy = "let t = timestamp(); while t.elapsed < 1.5 { } db::insert(\"kept\")";
    let request = json!({"jsonrpc": "2.0", "id": 2, "method": "play", "params": {"script": busy}});
    send(&mut ws, &request.to_string()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.kill();
    o.wait_stdout("Alpha (id 1): worker Reconnecting", Duration::from_secs(10));
    redis.restart();
    let reply = recv(&mut ws).await;
    assert_eq!(reply["id"], 2, "{reply}");
    assert_eq!(reply["result"]["output"], "1", "{reply}");
    assert_eq!(output(&mut ws, "db::get(1)").await, "kept");
    assert_eq!(output(&mut ws, "db::next_id()").await, "2");
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}

/// Redis back from a restart with a certificate the `--redis-ca` does not
/// trust: the worker row says so (Redis answers; it is not unreachable),
/// and once Redis serves the trusted certificate again the circle serves
/// by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_back_with_a_certificate_the_ca_does_not_trust_is_named_in_the_worker_row() {
    let sandbox = Sandbox::new();
    let (cert, key) = certificate(&sandbox, "redis-", LOCAL, Validity::Now);
    let (trusted_cert, trusted_key) = (
        std::fs::read(&cert).expect("cert"),
        std::fs::read(&key).expect("key"),
    );
    let (mut redis, tls_port) = persistent_tls_redis(&cert, &key);
    let alpha = port();
    let mut o = serve_over_tls(&sandbox, tls_port, &cert, alpha);
    let mut ws = connect(alpha).await;
    assert_eq!(output(&mut ws, "1").await, "1");

    let (other_cert, other_key) = certificate(&sandbox, "other-", LOCAL, Validity::Now);
    std::fs::copy(&other_cert, &cert).expect("swap the certificate");
    std::fs::copy(&other_key, &key).expect("swap the key");
    redis.restart();
    o.wait_stdout(
        "Alpha (id 1): worker Reconnecting: the certificate of redis is not trusted",
        Duration::from_secs(15),
    );

    std::fs::write(&cert, trusted_cert).expect("restore the certificate");
    std::fs::write(&key, trusted_key).expect("restore the key");
    redis.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let reply = common::play(&mut ws, 3, "40 + 2").await;
        if reply["result"]["output"] == "42" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{reply}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}

/// A network cut between the orchestrator and a `rediss://` Redis, long
/// enough that the worker gives up its lease: every connection, and every
/// TLS handshake of a new one, waits on a proxy that forwards nothing. The
/// worker stops taking tasks (`Lease lost`), and once the cut heals the
/// circle serves again by itself, the write made before it kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circle_cut_off_from_its_tls_redis_serves_again_once_the_cut_heals() {
    let sandbox = Sandbox::new();
    let (cert, key) = certificate(&sandbox, "redis-", LOCAL, Validity::Now);
    let (_redis, tls_port) = persistent_tls_redis(&cert, &key);
    let proxy = testkit::Proxy::start(tls_port);
    let alpha = port();
    let mut o = serve_over_tls(&sandbox, proxy.port(), &cert, alpha);
    let mut ws = connect(alpha).await;
    assert_eq!(output(&mut ws, "db::insert(\"kept\")").await, "1");
    proxy.freeze();
    o.wait_stdout("Alpha (id 1): worker Lease lost", Duration::from_secs(30));
    proxy.thaw();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let reply = common::play(&mut ws, 3, "db::get(1)").await;
        if reply["result"]["output"] == "kept" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{reply}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(output(&mut ws, "db::next_id()").await, "2");
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}

/// Sends inline `commands` on one connection to the plain port of the
/// test Redis, authenticated with `password`; each must answer `+OK` or a
/// count.
fn as_admin(port: u16, password: &str, commands: &[&str]) {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    for command in
        std::iter::once(format!("AUTH {password}").as_str()).chain(commands.iter().copied())
    {
        stream
            .write_all(format!("{command}\r\n").as_bytes())
            .expect("send");
        let mut line = String::new();
        reader.read_line(&mut line).expect("reply");
        assert!(
            line.starts_with('+') || line.starts_with(':'),
            "{command}: {line}"
        );
    }
}

/// Redis's password changed under a serving orchestrator (its connections
/// cut, so each must log in again): the worker row says Redis refuses the
/// password (it answers; it is not unreachable), and once the password is
/// the URL's again the circle serves by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_changed_under_a_serving_orchestrator_is_named_in_the_worker_row() {
    let sandbox = Sandbox::new();
    let (cert, key) = certificate(&sandbox, "redis-", LOCAL, Validity::Now);
    let (redis, tls_port) = persistent_tls_redis(&cert, &key);
    let other = "another-pw-9c2d";
    let set = format!("CONFIG SET requirepass {PASSWORD}");
    assert_eq!(command(redis.port(), &set), "+OK\r\n");
    let alpha = port();
    let config = sandbox.circles(&[(1, "Alpha", alpha)]);
    let url = format!("rediss://:{PASSWORD}@127.0.0.1:{tls_port}");
    let mut o = Orchestrator::start(&sandbox, &config, &url, &["--redis-ca", path(&cert)]);
    o.wait_table();
    let mut ws = connect(alpha).await;
    assert_eq!(output(&mut ws, "1").await, "1");
    let cut = [
        "CLIENT KILL TYPE normal SKIPME yes",
        "CLIENT KILL TYPE pubsub",
    ];
    let change = format!("CONFIG SET requirepass {other}");
    as_admin(redis.port(), PASSWORD, &[&change, cut[0], cut[1]]);
    o.wait_stdout(
        "Alpha (id 1): worker Reconnecting: redis refuses the password",
        Duration::from_secs(15),
    );
    as_admin(redis.port(), other, &[&set]);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let reply = common::play(&mut ws, 3, "40 + 2").await;
        if reply["result"]["output"] == "42" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{reply}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
    for output in [o.stdout(), o.stderr()] {
        assert!(
            !output.contains(PASSWORD),
            "the password was printed: {output}"
        );
    }
}

#[test]
fn a_redis_that_wants_a_client_certificate_stops_the_start_saying_so() {
    // Redis's own default is `tls-auth-clients yes`; this program sends
    // no client certificate (README: mutual TLS is not supported).
    let sandbox = Sandbox::new();
    let (cert, key) = certificate(&sandbox, "redis-", LOCAL, Validity::Now);
    let tls_port = port().to_string();
    let _redis = testkit::RedisServer::start_with_args(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        path(&cert),
        "--tls-key-file",
        path(&key),
        "--tls-ca-cert-file",
        path(&cert),
        "--tls-auth-clients",
        "yes",
    ]);
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let mut cmd = sandbox.serve_command(&config, &url, &sandbox.data_dir());
    cmd.args(["--redis-ca", path(&cert)]);
    let (status, out, err) = run_to_end(cmd, Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{out}\n{err}");
    assert!(
        err.contains(&format!(
            "cannot connect the task client to redis at {url}: Redis asks for a client \
             certificate"
        )) && err.contains("tls-auth-clients no"),
        "{err}"
    );
}

#[test]
fn a_tls_redis_at_maxclients_at_start_is_said_to_be_a_likely_cause() {
    // At maxclients Redis closes a TLS connection before the handshake
    // without a word, and this process has no other connection to ask on.
    let sandbox = Sandbox::new();
    let (cert, key) = certificate(&sandbox, "redis-", LOCAL, Validity::Now);
    let (redis, tls_port) = persistent_tls_redis(&cert, &key);
    let _held = std::net::TcpStream::connect(("127.0.0.1", redis.port())).expect("connect");
    assert_eq!(command(redis.port(), "CONFIG SET maxclients 1"), "+OK\r\n");
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let mut cmd = sandbox.serve_command(&config, &url, &sandbox.data_dir());
    cmd.args(["--redis-ca", path(&cert)]);
    let (status, out, err) = run_to_end(cmd, Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{out}\n{err}");
    assert!(
        err.contains(&format!(
            "cannot connect the task client to redis at {url}: Redis closed the connection \
             before the TLS handshake"
        )) && err.contains("maxclients"),
        "{err}"
    );
}
