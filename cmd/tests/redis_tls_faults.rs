//! Redis over TLS, faults at start, end to end through the binary: a
//! handshake nobody answers, a wrong password, certificates that are
//! trusted but expired, not valid yet or made out for another name, and a
//! Redis that asks for a client certificate or is at maxclients each stop
//! the start (exit 1) saying what is wrong. Faults while serving are in
//! `redis_tls_outages.rs`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::redis_tls::{LOCAL, Validity, certificate, command, path, persistent_tls_redis};
use common::{Sandbox, port, run_to_end};

const PASSWORD: &str = "pw-TLS-f4u1t5-never-printed";

/// Runs the orchestrator on a circle Alpha at the Redis `url`, trusting
/// `ca` (`--redis-ca`) when given, to its end, which must be exit 1;
/// returns its stdout and stderr.
fn start_fails(sandbox: &Sandbox, url: &str, ca: Option<&Path>) -> (String, String) {
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    let data = tempfile::tempdir_in(sandbox.path()).expect("data dir");
    let mut cmd = sandbox.serve_command(&config, url, data.path());
    if let Some(ca) = ca {
        cmd.args(["--redis-ca", path(ca)]);
    }
    let (status, out, err) = run_to_end(cmd, Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{out}\n{err}");
    (out, err)
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
    let (_, err) = start_fails(&sandbox, &url, None);
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
    let (out, err) = start_fails(&sandbox, &url, Some(&cert));
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
/// `cert`, trusting it with `--redis-ca`; the start's error (exit 1).
fn start_refused(sandbox: &Sandbox, cert: &Path, key: &Path) -> String {
    let redis = testkit::RedisServer::start_tls(cert, key);
    let (_, err) = start_fails(sandbox, &redis.tls_url(), Some(cert));
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
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let (_, err) = start_fails(&sandbox, &url, Some(&cert));
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
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let (_, err) = start_fails(&sandbox, &url, Some(&cert));
    assert!(
        err.contains(&format!(
            "cannot connect the task client to redis at {url}: Redis closed the connection \
             before the TLS handshake"
        )) && err.contains("maxclients"),
        "{err}"
    );
}
