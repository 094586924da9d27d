//! TLS end to end through the binary, with certificates the tests make
//! (rcgen): circles served as `wss://` with `--tls-cert`/`--tls-key`, shown
//! as `wss://` in the table and the JSON snapshots, reached by `play --ca`
//! (open and protected circles) and refused to a client that does not trust
//! the certificate or does not speak TLS; Redis reached over `rediss://` with
//! a password and `--redis-ca`; bad TLS options and files exit 2 naming them.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Orchestrator, Sandbox, port, run_to_end, sha256_hex};
use serde_json::json;

const TOKEN: &str = "tok-tls-bob-7c1e0d-not-in-any-output";
const PASSWORD: &str = "pw-TLS-r3d1s-0b9a-never-printed";

/// A self-signed certificate for `localhost` and `127.0.0.1`, written to
/// `<prefix>cert.pem` and `<prefix>key.pem` in the sandbox.
fn self_signed(sandbox: &Sandbox, prefix: &str) -> (PathBuf, PathBuf) {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let pair = rcgen::generate_simple_self_signed(names).expect("rcgen");
    (
        sandbox.write(&format!("{prefix}cert.pem"), &pair.cert.pem()),
        sandbox.write(
            &format!("{prefix}key.pem"),
            &pair.signing_key.serialize_pem(),
        ),
    )
}

fn wss(port: u16) -> String {
    format!("wss://127.0.0.1:{port}/ws")
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Runs `play` with `args`; (exit code, stdout, stderr).
fn play(sandbox: &Sandbox, args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = sandbox.command();
    cmd.env_remove("CIRCLES_TOKEN").arg("play").args(args);
    let (status, out, err) = run_to_end(cmd, Duration::from_secs(30));
    (status.code(), out, err)
}

#[test]
fn wss_serves_play_with_ca_and_refuses_untrusting_and_plain_clients() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (cert, key) = self_signed(&sandbox, "");
    let (open, guarded) = (port(), port());
    let circles = json!([
        {"id": 1, "name": "Alpha", "port": open},
        {"id": 2, "name": "Guarded", "port": guarded, "principals": [
            {"name": "bob", "token_sha256": sha256_hex(TOKEN), "role": "write"},
        ]},
    ]);
    let config = sandbox.write("circles.json", &circles.to_string());
    let tls_args = ["--tls-cert", path(&cert), "--tls-key", path(&key)];
    let mut o = Orchestrator::start(&sandbox, &config, &redis.url(), &tls_args);
    o.wait_table();
    let table = o.stdout();
    assert!(table.contains(&wss(open)), "{table}");
    assert!(table.contains(&wss(guarded)), "{table}");
    assert!(!table.contains("ws://127.0.0.1"), "{table}");

    // Trusting the self-signed certificate: the script runs.
    let (code, out, err) = play(
        &sandbox,
        &["--url", &wss(open), "--ca", path(&cert), "40 + 2"],
    );
    assert_eq!((code, out.as_str()), (Some(0), "42\n"), "{err}");
    // Found through --config: with --ca, play connects with wss://.
    let (code, out, err) = play(
        &sandbox,
        &[
            "--circle",
            "Alpha",
            "--ca",
            path(&cert),
            "db::insert(1); 6 * 7",
        ],
    );
    assert_eq!((code, out.as_str()), (Some(0), "42\n"), "{err}");
    // A protected circle over wss: the token goes in the TLS-protected upgrade.
    let (code, out, err) = play(
        &sandbox,
        &[
            "--url",
            &wss(guarded),
            "--ca",
            path(&cert),
            "--token",
            TOKEN,
            "caller()",
        ],
    );
    assert_eq!((code, out.as_str()), (Some(0), "bob\n"), "{err}");
    let (code, _, err) = play(
        &sandbox,
        &["--url", &wss(guarded), "--ca", path(&cert), "1"],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("HTTP 401"), "{err}");

    // Not trusting it: a clear refusal, not a rustls dump.
    let (code, out, err) = play(&sandbox, &["--url", &wss(open), "40 + 2"]);
    assert_eq!((code, out.as_str()), (Some(1), ""), "{err}");
    assert!(
        err.contains(&format!("the certificate of {} is not trusted", wss(open))),
        "{err}"
    );
    // rcgen makes an EC (P-256) certificate; the system's roots are
    // mostly RSA, which rustls reports as an unsupported algorithm.
    let said = "is not trusted: no CA this machine or --ca trusts signed it";
    assert!(err.contains(said) && err.contains("--ca"), "{err}");
    assert!(
        !err.contains("Certificate") && !err.contains("Context {"),
        "{err}"
    );
    // Another certificate as --ca does not make it trusted either.
    let (other, _) = self_signed(&sandbox, "other-");
    let (code, _, err) = play(&sandbox, &["--url", &wss(open), "--ca", path(&other), "1"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(said), "{err}");
    // An RSA CA named as the certificate's issuer (`tests/fixtures/rsa-ca.pem`,
    // subject "rcgen self signed cert"): its key cannot have made the EC
    // signature, which rustls reports as an unsupported signature algorithm.
    let rsa = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rsa-ca.pem");
    let (code, _, err) = play(&sandbox, &["--url", &wss(open), "--ca", rsa, "1"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(said) && !err.contains("Context {"), "{err}");

    // A plain ws:// client gets no WebSocket from a TLS port.
    let plain = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(tokio_tungstenite::connect_async(common::ws(open)));
    assert!(plain.is_err(), "a plain client was upgraded on a TLS port");
    let (code, _, err) = play(&sandbox, &["--url", &common::ws(open), "1"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("use wss://"), "{err}");

    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
    let log = o.stderr();
    assert!(
        log.contains(&format!("listening on {}", wss(open))),
        "the log names the wss:// URL: {log}"
    );
    for output in [o.stdout(), log] {
        assert!(!output.contains(TOKEN), "the token was printed: {output}");
    }
}

#[test]
fn json_snapshots_show_wss_urls() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (cert, key) = self_signed(&sandbox, "");
    let circle = port();
    let config = sandbox.circles(&[(1, "Alpha", circle)]);
    let args = [
        "--output",
        "json",
        "--tls-cert",
        path(&cert),
        "--tls-key",
        path(&key),
    ];
    let mut o = Orchestrator::start(&sandbox, &config, &redis.url(), &args);
    o.wait_stdout("\"server\":\"running\"", common::START_DEADLINE);
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
    let out = o.stdout();
    let first: serde_json::Value =
        serde_json::from_str(out.lines().next().expect("a snapshot")).expect("JSON");
    assert_eq!(first["circles"][0]["url"], wss(circle), "{out}");
}

#[test]
fn rediss_with_a_password_and_a_private_ca_serves_and_the_password_is_never_printed() {
    let sandbox = Sandbox::new();
    let (cert, key) = self_signed(&sandbox, "redis-");
    let redis = testkit::RedisServer::start_tls(&cert, &key);
    configure_password(redis.port());
    let url = format!("rediss://:{PASSWORD}@127.0.0.1:{}", redis.tls_port());
    let circle = port();
    let config = sandbox.circles(&[(1, "Alpha", circle)]);
    let mut o = Orchestrator::start(&sandbox, &config, &url, &["--redis-ca", path(&cert)]);
    o.wait_table();
    let (code, out, err) = play(
        &sandbox,
        &["--url", &common::ws(circle), "db::insert(7); 40 + 2"],
    );
    assert_eq!((code, out.as_str()), (Some(0), "42\n"), "{err}");
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
    let (stdout, stderr) = (o.stdout(), o.stderr());
    assert!(
        stdout.contains(&format!("rediss://127.0.0.1:{}", redis.tls_port())),
        "the header shows the redacted rediss URL: {stdout}"
    );
    for output in [&stdout, &stderr, &out, &err] {
        assert!(
            !output.contains(PASSWORD),
            "the password was printed: {output}"
        );
    }

    // Without the CA the certificate is not trusted: the start fails, the
    // password still unprinted.
    let cmd = sandbox.serve_command(&config, &url, &sandbox.path().join("data2"));
    let (status, out, err) = run_to_end(cmd, Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{out}\n{err}");
    assert!(
        err.contains(&format!("rediss://127.0.0.1:{}", redis.tls_port())),
        "{err}"
    );
    assert!(
        err.contains("the certificate of Redis is not trusted") && err.contains("--redis-ca"),
        "says why and how to fix it: {err}"
    );
    for output in [&out, &err] {
        assert!(
            !output.contains(PASSWORD),
            "the password was printed: {output}"
        );
    }
}

#[test]
fn a_private_ca_serves_a_rediss_redis_beside_a_plain_one_either_way_round() {
    // --redis-ca trusts the CA for every rediss:// connection, a circle's
    // own Redis's too, also when --redis-url is plain.
    let sandbox = Sandbox::new();
    let (cert, key) = self_signed(&sandbox, "redis-");
    let own = testkit::RedisServer::start_tls(&cert, &key);
    let main = testkit::RedisServer::start();
    let circle = port();
    let config = sandbox.write(
        "circles.json",
        &json!([{"id": 1, "name": "Alpha", "port": circle, "redis": own.tls_url()}]).to_string(),
    );
    let mut o = Orchestrator::start(&sandbox, &config, &main.url(), &["--redis-ca", path(&cert)]);
    o.wait_table();
    let (code, out, err) = play(&sandbox, &["--url", &common::ws(circle), "40 + 2"]);
    assert_eq!((code, out.as_str()), (Some(0), "42\n"), "{err}");
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());

    // And the other way round: a circle's own plain Redis beside a
    // rediss:// --redis-url connects without TLS.
    let config = sandbox.write(
        "plain-own.json",
        &json!([{"id": 1, "name": "Alpha", "port": circle, "redis": main.url()}]).to_string(),
    );
    let mut cmd = sandbox.serve_command(&config, &own.tls_url(), &sandbox.path().join("data2"));
    cmd.args(["--redis-ca", path(&cert)]);
    let mut o = Orchestrator::spawn(cmd);
    o.wait_table();
    let (code, out, err) = play(&sandbox, &["--url", &common::ws(circle), "40 + 2"]);
    assert_eq!((code, out.as_str()), (Some(0), "42\n"), "{err}");
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}

/// `CONFIG SET requirepass` through the plain port of the test Redis.
fn configure_password(port: u16) {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .write_all(format!("CONFIG SET requirepass {PASSWORD}\r\n").as_bytes())
        .expect("send");
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).expect("reply");
    assert_eq!(line, "+OK\r\n");
}

#[test]
fn a_rediss_url_at_a_plain_redis_says_it_answers_plain_resp_not_tls() {
    // A TLS handshake with a plain Redis only waits: without the probe the
    // start fails saying it timed out, which names no cause.
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let url = format!("rediss://127.0.0.1:{}", redis.port());
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    let cmd = sandbox.serve_command(&config, &url, &sandbox.data_dir());
    let (status, out, err) = run_to_end(cmd, Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{out}\n{err}");
    assert!(
        err.contains(&format!(
            "cannot connect the task client to redis at {url}: the server at 127.0.0.1:{} \
             answers plain RESP, not TLS",
            redis.port()
        )) && err.contains("tls-port"),
        "{err}"
    );
    // A circle's own rediss:// at the same plain Redis is named likewise.
    let own = sandbox.write(
        "own.json",
        &format!(
            r#"[{{"id": 1, "name": "Alpha", "port": {}, "redis": "{url}"}}]"#,
            port()
        ),
    );
    let main = testkit::RedisServer::start();
    let cmd = sandbox.serve_command(&own, &main.url(), &sandbox.path().join("data2"));
    let (status, out, err) = run_to_end(cmd, Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{out}\n{err}");
    assert!(
        err.contains("circle \"Alpha\" (id 1): cannot connect the task client to its redis")
            && err.contains("answers plain RESP, not TLS"),
        "{err}"
    );
}

/// Starts the orchestrator with `args` on a valid circles.json and no
/// reachable Redis; (exit code, stderr).
fn refused(sandbox: &Sandbox, args: &[&str]) -> (Option<i32>, String) {
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    let unused = format!("redis://127.0.0.1:{}", port());
    let mut cmd = sandbox.serve_command(&config, &unused, &sandbox.data_dir());
    cmd.args(args);
    let (status, _, err) = run_to_end(cmd, Duration::from_secs(30));
    (status.code(), err)
}

#[test]
fn bad_tls_options_and_files_exit_2_naming_the_option_and_the_file() {
    let sandbox = Sandbox::new();
    let (cert, key) = self_signed(&sandbox, "");
    let (_, other_key) = self_signed(&sandbox, "other-");
    let garbage = sandbox.write("garbage.pem", "not PEM at all\n");
    let absent = sandbox.path().join("absent.pem");

    let (code, err) = refused(&sandbox, &["--tls-cert", path(&cert)]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--tls-key"), "{err}");
    let (code, err) = refused(&sandbox, &["--tls-key", path(&key)]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--tls-cert"), "{err}");

    for (args, needles) in [
        (
            ["--tls-cert", path(&garbage), "--tls-key", path(&key)],
            vec!["--tls-cert", path(&garbage), "holds no certificate"],
        ),
        (
            ["--tls-cert", path(&cert), "--tls-key", path(&garbage)],
            vec!["--tls-key", path(&garbage), "holds no private key"],
        ),
        (
            ["--tls-cert", path(&absent), "--tls-key", path(&key)],
            vec!["--tls-cert", path(&absent), "cannot be read"],
        ),
        (
            ["--tls-cert", path(&cert), "--tls-key", path(&other_key)],
            vec![
                "--tls-key",
                path(&other_key),
                "is not the private key of the certificate",
            ],
        ),
    ] {
        let (code, err) = refused(&sandbox, &args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        for needle in needles {
            assert!(err.contains(needle), "{args:?}: no {needle:?} in {err}");
        }
        assert!(!err.contains("PRIVATE KEY-----"), "a key was echoed: {err}");
    }

    // --redis-ca: only for rediss://, and a file of certificates.
    let (code, err) = refused(&sandbox, &["--redis-ca", path(&cert)]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--redis-ca is for a rediss://"), "{err}");
    let rediss = format!("rediss://127.0.0.1:{}", port());
    let (code, err) = refused(
        &sandbox,
        &["--redis-url", &rediss, "--redis-ca", path(&garbage)],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "--redis-ca {} holds no certificate",
            path(&garbage)
        )),
        "{err}"
    );

    // play --ca
    let (code, _, err) = play(
        &sandbox,
        &["--url", "wss://127.0.0.1:1/ws", "--ca", path(&absent), "1"],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("--ca {} cannot be read", path(&absent))),
        "{err}"
    );
}

#[test]
fn a_ca_certificate_serving_as_the_servers_own_is_refused_saying_how_to_make_one() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let mut params = rcgen::CertificateParams::new(names).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key_pair = rcgen::KeyPair::generate().expect("key");
    let ca = params.self_signed(&key_pair).expect("self-signed CA");
    let cert = sandbox.write("ca-cert.pem", &ca.pem());
    let key = sandbox.write("ca-key.pem", &key_pair.serialize_pem());
    let circle = port();
    let config = sandbox.circles(&[(1, "Alpha", circle)]);
    let tls_args = ["--tls-cert", path(&cert), "--tls-key", path(&key)];
    let mut o = Orchestrator::start(&sandbox, &config, &redis.url(), &tls_args);
    o.wait_table();
    let (code, _, err) = play(&sandbox, &["--url", &wss(circle), "--ca", path(&cert), "1"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("is a CA certificate"), "{err}");
    assert!(err.contains("CA:FALSE"), "{err}");
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}
