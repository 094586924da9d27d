//! A real browser against the built binary: Debian's headless Chromium,
//! driven by Playwright (`cmd/tests/browser/`), on a page served from a
//! loopback origin. A protected circle accepts the browser's WebSocket with
//! the subprotocol `bearer.<token>` and echoes it (`ws.protocol`), runs its
//! scripts as that principal (`caller()`), answers a `read` token's writes
//! with -32004, and refuses a wrong or missing token with 401 (as the
//! browser's network log and the same request sent raw both show). An open
//! circle serves a page that types a script, clicks and reads the answer,
//! and echoes a `bearer.` subprotocol a page offers it.
//! A circle served as `wss://` with a self-signed certificate answers a
//! browser that trusts that certificate (Chromium's
//! `--ignore-certificate-errors-spki-list` with the certificate's key hash)
//! and stays closed to the same browser without it.

mod common;

use std::io::Write as _;
use std::net::TcpStream;
use std::time::Duration;

use base64::Engine as _;
use common::browser::Browser;
use common::{Orchestrator, Sandbox, port, sha256_hex};
use rcgen::PublicKeyData as _;
use serde_json::{Value, json};

const READER: &str = "browser-reader-token-4e2a9c7b1d0f";
const WRITER: &str = "browser-writer-token-8b3f6a1e5c2d";

struct Running {
    sandbox: Sandbox,
    _redis: testkit::RedisServer,
    orchestrator: Orchestrator,
    open: u16,
    guarded: u16,
}

/// "Open" (no principals) and "Guarded" (rita: read, walt: write), served by
/// the binary.
fn serve() -> Running {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (open, guarded) = (port(), port());
    let circles = json!([
        {"id": 1, "name": "Open", "port": open},
        {"id": 2, "name": "Guarded", "port": guarded, "principals": [
            {"name": "rita", "token_sha256": sha256_hex(READER), "role": "read"},
            {"name": "walt", "token_sha256": sha256_hex(WRITER), "role": "write"},
        ]},
    ]);
    let config = sandbox.write("circles.json", &circles.to_string());
    let mut orchestrator = Orchestrator::start(&sandbox, &config, &redis.url(), &[]);
    orchestrator.wait_table();
    Running {
        sandbox,
        _redis: redis,
        orchestrator,
        open,
        guarded,
    }
}

/// A probe of `ws_probe.py`: `scripts` sent as `play` over a socket opened
/// with `protocols`.
fn probe(port: u16, protocols: &[String], scripts: &[&str]) -> Value {
    json!({"url": common::ws(port), "protocols": protocols, "scripts": scripts})
}

/// The `output` of the `n`th reply of a probe; panics with the probe otherwise.
fn output(seen: &Value, n: usize) -> &str {
    seen["replies"][n]["result"]["output"]
        .as_str()
        .unwrap_or_else(|| panic!("reply {n} is no result: {seen:#}"))
}

/// The status line and headers the server answers to a WebSocket upgrade
/// sent raw, with the headers a browser on `origin` sends.
fn raw_upgrade(port: u16, origin: &str, protocol: Option<&str>) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let protocol = protocol
        .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: {origin}\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{protocol}\r\n"
    );
    stream.write_all(request.as_bytes()).expect("send upgrade");
    common::http::read_head(&mut stream)
}

#[test]
fn a_browser_connects_to_a_protected_circle_only_with_a_valid_bearer_subprotocol() {
    let mut run = serve();
    let walt = vec![format!("bearer.{WRITER}")];
    let rita = vec![format!("bearer.{READER}")];
    let wrong = vec!["bearer.not-a-token-of-this-circle".to_string()];
    let seen = Browser::find().run(
        "ws_probe.py",
        json!({"probes": [
            probe(run.guarded, &walt, &["caller()", r#"db::insert(#{ name: "Ada" })"#]),
            probe(run.guarded, &rita, &[
                "caller()",
                "db::get(1).name",
                r#"db::insert(#{ name: "Eve" })"#,
                r#"db::update(1, #{ name: "Eve" })"#,
                "db::delete(1)",
            ]),
            probe(run.guarded, &wrong, &["caller()"]),
            probe(run.guarded, &[], &["caller()"]),
            probe(run.guarded, &walt, &["db::get(1).name", "db::history(1, 10).len()", "db::next_id()"]),
        ]}),
    );
    let probes = seen["probes"].as_array().expect("probes");
    let origin = seen["origin"].as_str().expect("page origin");
    assert!(origin.starts_with("http://127.0.0.1:"), "{seen:#}");

    // The right token: the socket opens with the echoed subprotocol and the
    // scripts run as walt.
    let w = &probes[0];
    assert_eq!(w["opened"], true, "{w:#}");
    assert_eq!(w["protocol"], json!(walt[0]), "ws.protocol: {w:#}");
    assert_eq!(w["handshake_status"], 101, "{w:#}");
    assert_eq!(w["handshake_error"], Value::Null, "{w:#}");
    assert_eq!(output(w, 0), "walt");
    assert_eq!(output(w, 1), "1", "walt's insert: {w:#}");

    // A read token reads and gets -32004 on each write.
    let r = &probes[1];
    assert_eq!(r["opened"], true, "{r:#}");
    assert_eq!(r["protocol"], json!(rita[0]), "{r:#}");
    assert_eq!(output(r, 0), "rita");
    assert_eq!(output(r, 1), "Ada");
    for n in 2..5 {
        let reply = &r["replies"][n];
        assert_eq!(reply["error"]["code"], -32004, "write {n}: {r:#}");
        assert_eq!(reply["error"]["data"]["kind"], "forbidden", "{r:#}");
    }

    // A wrong and a missing token: the page never gets an open socket, only
    // an error and an abnormal close; Chromium's network log names the 401
    // (its wording for that status).
    for (what, p) in [("wrong token", &probes[2]), ("no token", &probes[3])] {
        assert_eq!(p["opened"], false, "{what}: {p:#}");
        assert_eq!(p["error"], true, "{what}: {p:#}");
        assert_eq!(p["close"]["code"], 1006, "{what}: {p:#}");
        assert_eq!(p["replies"], json!([]), "{what}: {p:#}");
        assert_eq!(p["handshake_status"], Value::Null, "{what}: {p:#}");
        let why = p["handshake_error"].as_str().unwrap_or_default();
        assert!(why.contains("HTTP Authentication failed"), "{what}: {p:#}");
    }

    // rita's writes changed nothing.
    let after = &probes[4];
    assert_eq!(output(after, 0), "Ada", "{after:#}");
    assert_eq!(output(after, 1), "1", "one version only: {after:#}");
    assert_eq!(output(after, 2), "2", "no id was taken: {after:#}");

    // The request the browser made, sent raw: 401 without a valid token,
    // 101 with the subprotocol echoed otherwise.
    for protocol in [Some(wrong[0].as_str()), None] {
        let head = raw_upgrade(run.guarded, origin, protocol);
        assert!(head.starts_with("HTTP/1.1 401"), "{protocol:?}: {head}");
    }
    let head = raw_upgrade(run.guarded, origin, Some(&walt[0]));
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("sec-websocket-protocol: {}", walt[0]).to_ascii_lowercase()),
        "{head}"
    );
    assert_eq!(run.orchestrator.stop().code(), Some(0));
}

#[test]
fn a_browser_page_types_a_script_clicks_run_and_reads_the_answer_of_an_open_circle() {
    let mut run = serve();
    let shot = run.sandbox.path().join("console.png");
    let seen = Browser::find().run(
        "console_page.py",
        json!({
            "url": common::ws(run.open),
            "script": "let x = 40; x + 2",
            "screenshot": shot,
        }),
    );
    assert_eq!(seen["answer"], "42", "{seen:#}");
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert_eq!(run.orchestrator.stop().code(), Some(0));
}

/// A browser application that offers its `bearer.` subprotocol to every
/// circle (it does not know which are open) gets it back from an open
/// circle too: a browser drops a socket whose upgrade answer names none of
/// the subprotocols it offered.
#[test]
fn an_open_circle_echoes_a_bearer_subprotocol_a_browser_offers() {
    let mut run = serve();
    let offered = vec![format!("bearer.{WRITER}")];
    let seen = Browser::find().run(
        "ws_probe.py",
        json!({"probes": [
            probe(run.open, &offered, &["40 + 2", "caller()"]),
            probe(run.open, &[], &["40 + 2"]),
        ]}),
    );
    let probes = seen["probes"].as_array().expect("probes");
    let with = &probes[0];
    assert_eq!(with["opened"], true, "{with:#}");
    assert_eq!(with["protocol"], json!(offered[0]), "ws.protocol: {with:#}");
    assert_eq!(output(with, 0), "42", "{with:#}");
    // The token names no principal of an open circle: it runs as no one.
    assert_eq!(output(with, 1), "", "{with:#}");
    let without = &probes[1];
    assert_eq!(without["opened"], true, "{without:#}");
    assert_eq!(without["protocol"], "", "{without:#}");
    assert_eq!(output(without, 0), "42", "{without:#}");
    assert_eq!(run.orchestrator.stop().code(), Some(0));
}

#[test]
fn wss_serves_a_browser_that_trusts_the_self_signed_certificate_and_not_one_that_does_not() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let pair = rcgen::generate_simple_self_signed(names).expect("rcgen");
    let cert = sandbox.write("cert.pem", &pair.cert.pem());
    let key = sandbox.write("key.pem", &pair.signing_key.serialize_pem());
    // What Chromium pins: base64 of the SHA-256 of the SubjectPublicKeyInfo.
    let spki = {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(pair.signing_key.subject_public_key_info());
        base64::engine::general_purpose::STANDARD.encode(digest)
    };
    let guarded = port();
    let circles = json!([
        {"id": 1, "name": "Guarded", "port": guarded, "principals": [
            {"name": "walt", "token_sha256": sha256_hex(WRITER), "role": "write"},
        ]},
    ]);
    let config = sandbox.write("circles.json", &circles.to_string());
    let tls_args = [
        "--tls-cert",
        cert.to_str().expect("utf-8 path"),
        "--tls-key",
        key.to_str().expect("utf-8 path"),
    ];
    let mut orchestrator = Orchestrator::start(&sandbox, &config, &redis.url(), &tls_args);
    orchestrator.wait_table();
    let url = format!("wss://127.0.0.1:{guarded}/ws");
    let walt = vec![format!("bearer.{WRITER}")];
    let probes = json!({"probes": [
        {"url": url, "protocols": walt, "scripts": ["caller()", "40 + 2"]},
        {"url": url, "protocols": [], "scripts": ["caller()"]},
    ]});

    // Trusting the certificate: the socket opens over TLS, the token is
    // checked as on ws://, the scripts run as walt.
    let trusting = Browser::find()
        .chromium_arg(format!("--ignore-certificate-errors-spki-list={spki}"))
        .timeout(Duration::from_secs(20))
        .run("ws_probe.py", probes.clone());
    assert!(
        trusting["origin"]
            .as_str()
            .is_some_and(|o| o.starts_with("http://127.0.0.1:")),
        "{trusting:#}"
    );
    let w = &trusting["probes"][0];
    assert_eq!(w["opened"], true, "{w:#}");
    assert_eq!(w["protocol"], json!(walt[0]), "{w:#}");
    assert_eq!(w["handshake_status"], 101, "{w:#}");
    assert_eq!(output(w, 0), "walt");
    assert_eq!(output(w, 1), "42");
    let none = &trusting["probes"][1];
    assert_eq!(none["opened"], false, "{none:#}");
    let why = none["handshake_error"].as_str().unwrap_or_default();
    assert!(why.contains("HTTP Authentication failed"), "{none:#}");

    // The same browser without the switch: the certificate is not trusted,
    // no socket opens and no script runs.
    let untrusting = Browser::find()
        .timeout(Duration::from_secs(20))
        .run("ws_probe.py", probes);
    for p in untrusting["probes"].as_array().expect("probes") {
        assert_eq!(p["opened"], false, "{p:#}");
        assert_eq!(p["error"], true, "{p:#}");
        assert_eq!(p["close"]["code"], 1006, "{p:#}");
        assert_eq!(p["replies"], json!([]), "{p:#}");
        assert_eq!(p["handshake_status"], Value::Null, "{p:#}");
        let why = p["handshake_error"].as_str().unwrap_or_default();
        assert!(why.contains("ERR_CERT_AUTHORITY_INVALID"), "{p:#}");
    }
    assert_eq!(
        orchestrator.stop().code(),
        Some(0),
        "{}",
        orchestrator.stderr()
    );
}
