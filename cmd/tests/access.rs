//! Access through the built binary: open circles only on loopback unless
//! `--allow-open`, a protected circle through the binary (401 for a missing,
//! wrong or other circle's token; the header and the echoed subprotocol
//! accepted), the Access column, and no token or hash in any output.

mod common;

use std::time::Duration;

use common::{Orchestrator, Sandbox, port, run_to_end, sha256_hex};
use serde_json::json;

const HASH: &str = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

/// A circles.json with an open circle "Open One" and a protected "Guarded".
fn mixed(sandbox: &Sandbox, open_port: u16, guarded_port: u16) -> std::path::PathBuf {
    sandbox.write(
        "circles.json",
        &mixed_circles(open_port, guarded_port).to_string(),
    )
}

/// The circles of [`mixed`].
fn mixed_circles(open_port: u16, guarded_port: u16) -> serde_json::Value {
    json!([
        {"id": 1, "name": "Open One", "port": open_port},
        {"id": 2, "name": "Guarded", "port": guarded_port, "principals": [
            {"name": "ann", "token_sha256": HASH, "role": "read"},
            {"name": "bob", "token_sha256": HASH.replace('5', "6"), "role": "write"},
        ]},
    ])
}

#[test]
fn a_non_loopback_host_with_an_open_circle_refuses_to_start_naming_it() {
    let sandbox = Sandbox::new();
    let config = mixed(&sandbox, port(), port());
    let mut cmd = sandbox.command();
    cmd.arg(&config).args([
        "--host",
        "0.0.0.0",
        "--output",
        "plain",
        "--no-managed-redis",
        "--redis-url",
        "redis://127.0.0.1:1",
    ]);
    let (status, out, err) = run_to_end(cmd, Duration::from_secs(20));
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("\"Open One\" (id 1)"), "{err}");
    assert!(
        !err.contains("Guarded"),
        "only open circles are named: {err}"
    );
    assert!(
        err.contains("--allow-open") && err.contains("principals"),
        "{err}"
    );
    assert!(!err.contains(HASH) && !out.contains(HASH), "{err}");
}

#[test]
fn allow_open_or_principals_everywhere_let_a_non_loopback_host_start() {
    let redis = testkit::RedisServer::start();
    // --allow-open: both circles serve on 0.0.0.0.
    let sandbox = Sandbox::new();
    let (open, guarded) = (port(), port());
    let config = mixed(&sandbox, open, guarded);
    let mut o = Orchestrator::start(
        &sandbox,
        &config,
        &redis.url(),
        &["--host", "0.0.0.0", "--allow-open"],
    );
    o.wait_table();
    // A reload that adds another open circle keeps to --allow-open.
    let added = port();
    let mut circles = mixed_circles(open, guarded);
    circles
        .as_array_mut()
        .expect("an array")
        .push(json!({"id": 3, "name": "Open Too", "port": added}));
    sandbox.write("circles.json", &circles.to_string());
    o.signal("HUP");
    o.wait_stdout("reload applied", Duration::from_secs(30));
    assert!(common::listens(o.pid(), added), "{}", o.stdout());
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
    // Every circle protected: no flag needed.
    let sandbox = Sandbox::new();
    let circles = json!([{"id": 2, "name": "Guarded", "port": port(), "principals": [
        {"name": "ann", "token_sha256": HASH, "role": "read"}]}]);
    let config = sandbox.write("circles.json", &circles.to_string());
    let mut o = Orchestrator::start(&sandbox, &config, &redis.url(), &["--host", "0.0.0.0"]);
    o.wait_table();
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}

/// ann's token in [`protected_pair`]; its hash is computed, never written.
const ANN_TOKEN: &str = "tok-ann-XYZZY-5f3c1a9e-not-in-any-output";

/// A circles.json: "Open One" open, "Guarded" with ann (read, [`ANN_TOKEN`]) and bob.
fn protected_pair(sandbox: &Sandbox, open_port: u16, guarded_port: u16) -> std::path::PathBuf {
    let circles = json!([
        {"id": 1, "name": "Open One", "port": open_port},
        {"id": 2, "name": "Guarded", "port": guarded_port, "principals": [
            {"name": "ann", "token_sha256": sha256_hex(ANN_TOKEN), "role": "read"},
            {"name": "bob", "token_sha256": HASH, "role": "write"},
        ]},
    ]);
    sandbox.write("circles.json", &circles.to_string())
}

/// Connects to `port` with `Authorization: Bearer <token>`; the HTTP status
/// when the upgrade is refused.
async fn connect_bearer(port: u16, token: &str) -> Result<common::Ws, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = common::ws(port).into_client_request().expect("request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header value"),
    );
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("upgrade failed without an HTTP answer: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_shows_access_and_no_token_or_hash_appears_in_any_output() {
    let redis = testkit::RedisServer::start();
    let sandbox = Sandbox::new();
    let (open_port, guarded_port) = (port(), port());
    let config = protected_pair(&sandbox, open_port, guarded_port);
    let mut cmd = sandbox.serve_command(&config, &redis.url(), &sandbox.data_dir());
    cmd.env("RUST_LOG", "debug");
    let mut o = Orchestrator::spawn(cmd);
    o.wait_table();
    let table = o.stdout();
    let cell = |name: &str| -> String {
        let line = table
            .lines()
            .find(|l| l.contains(name) && l.contains("ws://"))
            .unwrap_or_else(|| panic!("no row for {name}:\n{table}"));
        line.split('|')
            .map(str::trim)
            .nth(6)
            .expect("Access cell")
            .to_string()
    };
    assert!(table.contains("Access"), "{table}");
    assert_eq!(cell("Open One"), "open", "{table}");
    assert_eq!(cell("Guarded"), "2 principals", "{table}");

    // A refused and an accepted upgrade, so the server has something to log.
    common::connect(open_port).await;
    assert_eq!(connect_bearer(guarded_port, "wrong").await.err(), Some(401));
    let mut ws = connect_bearer(guarded_port, ANN_TOKEN)
        .await
        .expect("ann connects");
    assert_eq!(common::output(&mut ws, "40 + 2").await, "42");
    drop(ws);
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
    let (out, err) = (o.stdout(), o.stderr());
    assert!(
        err.contains("connects as \"ann\""),
        "debug logs are on:\n{err}"
    );
    for secret in [
        ANN_TOKEN.to_string(),
        sha256_hex(ANN_TOKEN),
        HASH.to_string(),
    ] {
        assert!(!out.contains(&secret), "{secret} on stdout:\n{out}");
        assert!(!err.contains(&secret), "{secret} on stderr:\n{err}");
        assert!(
            !err.to_lowercase().contains(&secret.to_lowercase()),
            "{secret} in stderr, in another case"
        );
    }

    // JSON snapshots carry the count.
    let mut cmd = sandbox.serve_command(&config, &redis.url(), &sandbox.data_dir());
    cmd.args(["--output", "json"]);
    let mut o = Orchestrator::spawn(cmd);
    o.wait_stdout("\"principals\":2", common::START_DEADLINE);
    assert!(o.stdout().contains("\"principals\":0"), "{}", o.stdout());
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
    assert!(!o.stdout().contains(HASH) && !o.stderr().contains(HASH));
}

const READER: &str = "reader-token-6d1f0e3a8b7c4d2e9f01";
const OTHER: &str = "other-circle-token-11223344556677";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_circle_takes_only_its_own_tokens_by_header_or_subprotocol() {
    let redis = testkit::RedisServer::start();
    let sandbox = Sandbox::new();
    let (open, guarded, other) = (port(), port(), port());
    let circles = json!([
        {"id": 1, "name": "Open", "port": open},
        {"id": 2, "name": "Guarded", "port": guarded, "principals": [
            {"name": "rita", "token_sha256": sha256_hex(READER), "role": "read"},
        ]},
        {"id": 3, "name": "Other", "port": other, "principals": [
            {"name": "olga", "token_sha256": sha256_hex(OTHER), "role": "write"},
        ]},
    ]);
    let config = sandbox.write("circles.json", &circles.to_string());
    let mut o = Orchestrator::start(&sandbox, &config, &redis.url(), &[]);
    o.wait_table();
    for refused in [
        None,
        Some(("authorization", "Bearer wrong".to_string())),
        Some(("authorization", format!("Bearer {OTHER}"))),
        Some(("sec-websocket-protocol", format!("bearer.{OTHER}"))),
    ] {
        let what = format!("{refused:?}");
        assert_eq!(
            common::connect_with(guarded, refused).await.err(),
            Some(401),
            "{what}"
        );
    }
    let (mut ws, protocol) =
        common::connect_with(guarded, Some(("authorization", format!("Bearer {READER}"))))
            .await
            .expect("the header upgrades");
    assert_eq!(protocol, None);
    assert_eq!(common::output(&mut ws, "40 + 2").await, "42");
    let offered = format!("bearer.{READER}");
    let (mut ws, protocol) =
        common::connect_with(guarded, Some(("sec-websocket-protocol", offered.clone())))
            .await
            .expect("the subprotocol upgrades");
    assert_eq!(
        protocol.as_deref(),
        Some(offered.as_str()),
        "echoed for browsers"
    );
    assert_eq!(common::output(&mut ws, "1 + 1").await, "2");
    // The other circle's own token works there; the open circle needs none.
    let (mut ws, _) =
        common::connect_with(other, Some(("authorization", format!("Bearer {OTHER}"))))
            .await
            .expect("olga connects to Other");
    assert_eq!(common::output(&mut ws, "3").await, "3");
    let mut ws = common::connect(open).await;
    assert_eq!(common::output(&mut ws, "4").await, "4");
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}

/// Revoking a principal needs no restart: a reload of a circles.json
/// without it closes the circle's connections (1001) and refuses its token
/// from then on (401), while the others' tokens connect again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_without_a_principal_revokes_its_token_and_closes_its_connection() {
    use futures_util::StreamExt;
    let redis = testkit::RedisServer::start();
    let sandbox = Sandbox::new();
    let (open_port, guarded_port) = (port(), port());
    let config = protected_pair(&sandbox, open_port, guarded_port);
    let mut o = Orchestrator::start(&sandbox, &config, &redis.url(), &[]);
    o.wait_table();
    let mut ann = connect_bearer(guarded_port, ANN_TOKEN)
        .await
        .expect("ann connects");
    // ann removed; bob (HASH is sha256("password")) stays.
    let circles = json!([
        {"id": 1, "name": "Open One", "port": open_port},
        {"id": 2, "name": "Guarded", "port": guarded_port, "principals": [
            {"name": "bob", "token_sha256": HASH, "role": "write"},
        ]},
    ]);
    sandbox.write("circles.json", &circles.to_string());
    o.signal("HUP");
    o.wait_stdout("reload applied", Duration::from_secs(30));
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ann.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
                    return frame.map(|f| u16::from(f.code));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("ann's connection ends");
    assert_eq!(closed, Some(1001));
    assert_eq!(
        connect_bearer(guarded_port, ANN_TOKEN).await.err(),
        Some(401)
    );
    assert!(
        connect_bearer(guarded_port, "password").await.is_ok(),
        "bob connects"
    );
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}

/// A circle on the admin endpoint's own port is refused as such, at start
/// (exit 2) and at a reload (nothing changed), not blamed on another program.
#[test]
fn a_circle_on_the_admin_endpoints_port_is_refused_naming_both() {
    let redis = testkit::RedisServer::start();
    let sandbox = Sandbox::new();
    let admin = port();
    let config = sandbox.circles(&[(1, "Clash", admin)]);
    let mut cmd = sandbox.serve_command(&config, &redis.url(), &sandbox.data_dir());
    cmd.args(["--admin", &format!("127.0.0.1:{admin}")]);
    let (status, _, err) = run_to_end(cmd, Duration::from_secs(30));
    assert_eq!(status.code(), Some(2), "{err}");
    let said = format!(
        "circle \"Clash\" (id 1): port {admin} is this orchestrator's admin endpoint (--admin \
         127.0.0.1:{admin})"
    );
    assert!(err.contains(&said), "{err}");

    let p = port();
    let config = sandbox.circles(&[(1, "Fine", p)]);
    let mut o = Orchestrator::start(
        &sandbox,
        &config,
        &redis.url(),
        &["--admin", &format!("127.0.0.1:{admin}")],
    );
    o.wait_table();
    sandbox.circles(&[(1, "Fine", p), (2, "Clash", admin)]);
    o.signal("HUP");
    o.wait_stdout("admin endpoint (--admin", Duration::from_secs(30));
    assert!(o.stdout().contains("reload failed"), "{}", o.stdout());
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}

/// With `--admin 127.0.0.1:0` the port the endpoint got is the one a
/// reload's circle may not take, refused as the admin endpoint's.
#[test]
fn a_reload_refuses_the_port_an_admin_endpoint_on_port_0_got() {
    let redis = testkit::RedisServer::start();
    let sandbox = Sandbox::new();
    let p = port();
    let config = sandbox.circles(&[(1, "Fine", p)]);
    let mut o = Orchestrator::start(&sandbox, &config, &redis.url(), &["--admin", "127.0.0.1:0"]);
    o.wait_table();
    let admin = common::http::admin_addr(&o.stdout()).port();
    sandbox.circles(&[(1, "Fine", p), (2, "Clash", admin)]);
    o.signal("HUP");
    let said = format!(
        "circle \"Clash\" (id 2): port {admin} is this orchestrator's admin endpoint (--admin \
         127.0.0.1:{admin})"
    );
    o.wait_stdout(&said, Duration::from_secs(30));
    assert!(o.stdout().contains("reload failed"), "{}", o.stdout());
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}
