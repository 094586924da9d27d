//! Redis over TLS, faults while serving, end to end through the binary:
//! Redis killed and back while a script runs and while plays are
//! submitted, back with a certificate not trusted, cut off by the network,
//! and its password changed under it.

mod common;

use std::path::Path;
use std::time::Duration;

use common::redis_tls::{
    LOCAL, Validity, as_admin, certificate, command, path, persistent_tls_redis,
};
use common::{Orchestrator, Sandbox, connect, output, output_once_served, port, recv, send};
use serde_json::json;

const PASSWORD: &str = "pw-TLS-0utag3-never-printed";

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
    assert_eq!(
        output_once_served(&mut ws, "40 + 2", Duration::from_secs(15)).await,
        "42"
    );
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
    assert_eq!(
        output_once_served(&mut ws, "db::get(1)", Duration::from_secs(30)).await,
        "kept"
    );
    assert_eq!(output(&mut ws, "db::next_id()").await, "2");
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
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
    assert_eq!(
        output_once_served(&mut ws, "40 + 2", Duration::from_secs(15)).await,
        "42"
    );
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
    for output in [o.stdout(), o.stderr()] {
        assert!(
            !output.contains(PASSWORD),
            "the password was printed: {output}"
        );
    }
}

/// Four clients insert one record per play, one play after another, while
/// the `rediss://` Redis is killed with SIGKILL and started again with its
/// append-only file: each acknowledged insert is stored exactly once, and
/// one answered -32002 "try again later" (nothing queued) not at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_tls_plays_through_a_redis_kill_are_stored_once_if_acknowledged_and_never_twice() {
    let sandbox = Sandbox::new();
    let (cert, key) = certificate(&sandbox, "redis-", LOCAL, Validity::Now);
    let (mut redis, tls_port) = persistent_tls_redis(&cert, &key);
    let alpha = port();
    let mut o = serve_over_tls(&sandbox, tls_port, &cert, alpha);
    let (started_tx, started_rx) = tokio::sync::mpsc::channel::<()>(4);
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let started = started_tx.clone();
            tokio::spawn(async move {
                let mut ws = connect(alpha).await;
                let mut replies = Vec::new();
                for i in 0..60u64 {
                    let key = format!("k-{c}-{i}");
                    let script = format!("db::insert(\"{key}\"); 0");
                    replies.push((key, common::play(&mut ws, i + 1, &script).await));
                    if i == 5 {
                        let _ = started.send(()).await;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                replies
            })
        })
        .collect();
    drop(started_tx);
    let mut started_rx = started_rx;
    for _ in 0..4 {
        started_rx.recv().await.expect("a client started");
    }
    redis.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart();
    let mut replies = Vec::new();
    for client in clients {
        replies.extend(client.await.expect("client"));
    }
    let mut ws = connect(alpha).await;
    let dump = "let s = \"\"; for i in 1..db::next_id() { if db::exists(i) { s += db::get(i) + \",\"; } } s";
    let stored = output_once_served(&mut ws, dump, Duration::from_secs(30)).await;
    let stored: Vec<&str> = stored.split(',').filter(|s| !s.is_empty()).collect();
    let mut acknowledged = 0;
    for (key, reply) in &replies {
        let times = stored.iter().filter(|s| *s == key).count();
        if reply["result"]["output"] == "0" {
            acknowledged += 1;
            assert_eq!(
                times, 1,
                "{key} acknowledged, stored {times} times: {reply}"
            );
        } else if reply["error"]["message"]
            == "the task broker (redis) is unavailable; try again later"
        {
            assert_eq!(
                times, 0,
                "{key} answered that nothing was queued, stored: {reply}"
            );
        } else {
            assert!(times <= 1, "{key} stored {times} times: {reply}");
        }
    }
    assert!(
        acknowledged >= 24,
        "only {acknowledged} of {} acknowledged",
        replies.len()
    );
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}
