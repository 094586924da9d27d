//! The admin endpoint of the built binary against a real Redis: probes that
//! follow Redis down and back, a Prometheus scrape that promtool accepts and
//! whose counters move by exactly the tasks sent, a circle name's quote and
//! backslash escaped in the label values of both formats, the host check (a
//! DNS-rebound page's `Host`), the origin check, the token (the `Bearer`
//! scheme in any case; the console's page open without it, every data route
//! closed), 405 with `Allow` for a method a path does not take, `--admin
//! off`, a busy port, and the `status` command.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::http::{self, Answer, admin_addr, get, start_with_admin};
use common::{Orchestrator, Sandbox, connect, play, port, run_to_end};
use serde_json::Value;

/// A running orchestrator with one circle and its admin endpoint on a free port.
struct Admin {
    sandbox: Sandbox,
    orchestrator: Orchestrator,
    redis: testkit::RedisServer,
    circle: u16,
    addr: SocketAddr,
}

fn start(extra: &[&str]) -> Admin {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start_persistent();
    let circle = port();
    let config = sandbox.circles(&[(1, "Alpha Circle", circle)]);
    let mut args = vec!["--admin", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut orchestrator = Orchestrator::start(&sandbox, &config, &redis.url(), &args);
    orchestrator.wait_table();
    let addr = admin_addr(&orchestrator.stdout());
    Admin {
        sandbox,
        orchestrator,
        redis,
        circle,
        addr,
    }
}

/// Polls `GET path` until its code is `code`; the last answer.
fn wait_code(addr: SocketAddr, path: &str, code: u16) -> Answer {
    wait_answer(addr, path, code, "")
}

/// Polls `GET path` until its code is `code` and its body holds `needle`.
fn wait_answer(addr: SocketAddr, path: &str, code: u16, needle: &str) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = get(addr, path, &[]);
        if answer.code == code && answer.body.contains(needle) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "{path} stayed {} (wanted {code} with {needle:?}): {}",
            answer.code,
            answer.body
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn readiness_follows_redis_down_and_back_while_health_stays_ok() {
    let mut admin = start(&[]);
    assert_eq!(get(admin.addr, "/healthz", &[]).code, 200);
    let ready = wait_code(admin.addr, "/readyz", 200);
    let body: Value = serde_json::from_str(&ready.body).expect("JSON body");
    assert_eq!(body["ready"], true, "{body}");

    admin.redis.kill();
    // The workers may notice first; the probe names Redis within a second.
    let down = wait_answer(admin.addr, "/readyz", 503, r#""component":"redis""#);
    let body: Value = serde_json::from_str(&down.body).expect("JSON body");
    assert_eq!(body["ready"], false, "{body}");
    let not_ready = body["not_ready"].as_array().expect("a list");
    assert!(
        not_ready.iter().any(|n| n["component"] == "redis"),
        "the body names redis: {body}"
    );
    assert_eq!(
        get(admin.addr, "/healthz", &[]).code,
        200,
        "alive all along"
    );

    admin.redis.restart();
    wait_code(admin.addr, "/readyz", 200);
    assert!(admin.orchestrator.stop().success());
}

/// The value of the series whose line starts with `series ` (name and labels
/// as written), or 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}

fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "promtool must be installed for this test (Debian package prometheus; \
             scripts/install-deps.sh installs it)",
        );
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- the scrape:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scrape_passes_promtool_and_counters_move_by_exactly_the_tasks_sent() {
    let mut admin = start(&[]);
    let addr = admin.addr;
    let scrape = move || get(addr, "/metrics", &[]).body;
    let before = tokio::task::spawn_blocking(scrape).await.expect("scrape");
    promtool_check(&before);

    const C: &str = r#"circle="Alpha Circle""#;
    let completed =
        format!(r#"circles_tasks_finished_total{{{C},outcome="completed",kind="none"}}"#);
    let runtime = format!(r#"circles_tasks_finished_total{{{C},outcome="failed",kind="runtime"}}"#);
    let syntax = format!(r#"circles_tasks_finished_total{{{C},outcome="failed",kind="syntax"}}"#);
    let commits = format!("circles_ourdb_commits_total{{{C}}}");
    let runs = format!("circles_task_run_seconds_count{{{C}}}");
    let waits = format!("circles_task_queue_wait_seconds_count{{{C}}}");
    let received = format!("circles_ws_received_bytes_total{{{C}}}");

    let (ok, thrown, broken) = (5u64, 3u64, 2u64);
    let mut ws = connect(admin.circle).await;
    let mut id = 0;
    for _ in 0..ok {
        id += 1;
        let reply = play(&mut ws, id, "db::insert(#{ n: 1 })").await;
        assert!(reply["result"].is_object(), "{reply}");
    }
    for _ in 0..thrown {
        id += 1;
        let reply = play(&mut ws, id, r#"throw "no""#).await;
        assert_eq!(reply["error"]["data"]["kind"], "runtime", "{reply}");
    }
    for _ in 0..broken {
        id += 1;
        let reply = play(&mut ws, id, "let = ;").await;
        assert_eq!(reply["error"]["data"]["kind"], "syntax", "{reply}");
    }

    // The worker counts a task right after writing its result, which the
    // reply may overtake: wait for the counts, then check they are exact.
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let text = tokio::task::spawn_blocking(scrape).await.expect("scrape");
        let delta = |series: &str| sample(&text, series) - sample(&before, series);
        if delta(&completed) >= ok as f64
            && delta(&runtime) + delta(&syntax) >= (thrown + broken) as f64
            || Instant::now() > deadline
        {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let delta = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(delta(&completed), ok as f64, "completed");
    assert_eq!(delta(&runtime), thrown as f64, "runtime failures");
    assert_eq!(delta(&syntax), broken as f64, "syntax failures");
    assert_eq!(
        delta(&commits),
        ok as f64,
        "one commit per successful insert"
    );
    assert_eq!(delta(&runs), (ok + thrown + broken) as f64, "run times");
    assert_eq!(delta(&waits), (ok + thrown + broken) as f64, "queue waits");
    assert!(delta(&received) > 0.0, "bytes received");
    for series in [
        "circles_redis_up 1",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
        r#"circles_circle_up{circle="Alpha Circle"} 1"#,
        r#"circles_ws_connections{circle="Alpha Circle"} 1"#,
    ] {
        assert!(after.contains(series), "{series:?} in\n{after}");
    }
    promtool_check(&after);
    drop(ws);
    assert!(admin.orchestrator.stop().success());
}

/// In plain mode (as under a service manager) the admin endpoint's
/// counters are read from Redis every `--refresh`, not only now and then.
#[tokio::test(flavor = "multi_thread")]
async fn the_counters_of_api_status_follow_refresh_in_plain_mode() {
    let mut admin = start(&["--refresh", "200ms"]);
    let mut ws = connect(admin.circle).await;
    for id in 1..=3 {
        let reply = play(&mut ws, id, "40 + 2").await;
        assert!(reply["result"].is_object(), "{reply}");
    }
    until_processed(admin.addr, 3).await;
    // Each play counted within half of the 10 s a counter read waits when
    // nobody follows it: a read every 10 s meets at most one of three such
    // windows in a row (each opens right after the one before closed).
    for id in 4..=6 {
        let reply = play(&mut ws, id, "40 + 2").await;
        assert!(reply["result"].is_object(), "{reply}");
        until_processed(admin.addr, id).await;
    }
    drop(ws);
    assert!(admin.orchestrator.stop().success());
}

/// Polls `/api/status` until the circle's `processed` is `n`, for at most
/// 5 s: 25 times `--refresh` (200 ms), half the 10 s a counter read waits
/// when nobody follows it.
async fn until_processed(addr: SocketAddr, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let body = tokio::task::spawn_blocking(move || get(addr, "/api/status", &[]).body)
            .await
            .expect("GET /api/status");
        let snap: Value = serde_json::from_str(&body).expect("a JSON snapshot");
        if snap["circles"][0]["processed"] == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processed stayed stale (wanted {n}) for 5 s: {snap}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cross_origin_request_is_refused_and_own_or_loopback_origins_pass() {
    let mut admin = start(&[]);
    for path in ["/metrics", "/api/status", "/healthz", "/readyz", "/"] {
        let foreign = get(admin.addr, path, &["Origin: http://evil.example"]);
        assert_eq!(foreign.code, 403, "{path}: {}", foreign.body);
    }
    let own = format!("Origin: http://{}", admin.addr);
    for origin in [own.as_str(), "Origin: http://localhost:3000"] {
        assert_eq!(
            get(admin.addr, "/api/status", &[origin]).code,
            200,
            "{origin}"
        );
    }
    // Several `Origin`s, in either order: refused, whichever would pass alone.
    for origins in [
        [own.as_str(), "Origin: http://evil.example"],
        ["Origin: http://evil.example", own.as_str()],
    ] {
        let got = get(admin.addr, "/api/status", &origins);
        assert_eq!(got.code, 403, "{origins:?}: {}", got.body);
    }
    assert!(admin.orchestrator.stop().success());
}

#[test]
fn status_prints_the_running_table_once_and_json_on_request() {
    let mut admin = start(&[]);
    let addr = admin.addr.to_string();
    let mut cmd = admin.sandbox.command();
    cmd.args(["status", "--admin", &addr]);
    let (code, stdout, stderr) = run_to_end(cmd, Duration::from_secs(30));
    assert!(code.success(), "{stderr}");
    assert!(stdout.contains("Circle Name"), "{stdout}");
    assert!(stdout.contains("Alpha Circle"), "{stdout}");
    assert!(stdout.contains("rhai_tasks:alpha_circle"), "{stdout}");
    assert!(stdout.contains(&format!("admin http://{addr}")), "{stdout}");

    let mut cmd = admin.sandbox.command();
    cmd.args(["status", "--admin", &addr, "--json"]);
    let (code, stdout, stderr) = run_to_end(cmd, Duration::from_secs(30));
    assert!(code.success(), "{stderr}");
    let snap: Value = serde_json::from_str(stdout.trim()).expect("one JSON snapshot");
    assert_eq!(snap["circles"][0]["name"], "Alpha Circle", "{snap}");
    assert_eq!(snap["circles"][0]["worker"], "running", "{snap}");
    assert_eq!(snap["admin"], format!("http://{addr}"), "{snap}");
    assert!(admin.orchestrator.stop().success());
}

#[test]
fn status_with_nothing_listening_fails_saying_so() {
    let sandbox = Sandbox::new();
    let addr = format!("127.0.0.1:{}", port());
    let mut cmd = sandbox.command();
    cmd.args(["status", "--admin", &addr]);
    let (code, stdout, stderr) = run_to_end(cmd, Duration::from_secs(30));
    assert!(!code.success(), "{stdout}");
    assert!(
        stderr.contains(&format!("nothing answers at http://{addr}")),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "{stdout}");
}

#[test]
fn admin_off_serves_nothing_and_the_header_says_so() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    // The environment names an address; the flag turns it off.
    let would_be = format!("127.0.0.1:{}", port());
    let mut cmd = sandbox.serve_command(&config, &redis.url(), &sandbox.data_dir());
    cmd.env("CIRCLES_ADMIN", &would_be).args(["--admin", "off"]);
    let mut orchestrator = Orchestrator::spawn(cmd);
    orchestrator.wait_table();
    assert!(
        orchestrator.stdout().contains("| admin off"),
        "{}",
        orchestrator.stdout()
    );
    let addr: SocketAddr = would_be.parse().expect("address");
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "nothing listens at {addr}"
    );
    assert!(orchestrator.stop().success());
}

#[test]
fn a_busy_admin_port_stops_the_start_with_exit_1_naming_it() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address").to_string();
    let mut cmd = sandbox.serve_command(&config, &redis.url(), &sandbox.data_dir());
    cmd.args(["--admin", &addr]);
    let (code, _stdout, stderr) = run_to_end(cmd, Duration::from_secs(30));
    // In use is a runtime failure, as for a circle's port.
    assert_eq!(code.code(), Some(1), "{stderr}");
    assert!(stderr.contains("admin endpoint"), "{stderr}");
    assert!(stderr.contains(&addr), "{stderr}");
    assert!(stderr.contains("in use"), "{stderr}");
}

/// A token and its `--admin-token-sha256` hash, as `token admin` prints them.
fn token_admin() -> (String, String) {
    let made = Sandbox::new();
    let mut cmd = made.command();
    cmd.args(["token", "admin"]);
    let (code, stdout, stderr) = run_to_end(cmd, Duration::from_secs(30));
    assert!(code.success(), "{stderr}");
    let mut lines = stdout.lines();
    let token = lines.next().expect("the token").to_string();
    let option = lines.next().expect("the option");
    let hash = option
        .strip_prefix("--admin-token-sha256 ")
        .unwrap_or_else(|| panic!("line 2 is the option: {option}"))
        .to_string();
    assert_eq!(hash.len(), 64, "{hash}");
    (token, hash)
}

#[test]
fn with_a_token_from_token_admin_only_it_opens_status_and_metrics_and_probes_and_the_console_page_stay_open()
 {
    let (token, hash) = token_admin();
    let token = token.as_str();
    let mut admin = start(&["--admin-token-sha256", &hash]);
    let bearer = format!("Authorization: Bearer {token}");
    for path in ["/metrics", "/api/status"] {
        assert_eq!(
            get(admin.addr, path, &[]).code,
            401,
            "{path} without a token"
        );
        let wrong = get(admin.addr, path, &["Authorization: Bearer nope"]);
        assert_eq!(wrong.code, 401, "{path} with a wrong token");
        assert_eq!(
            get(admin.addr, path, &[&bearer]).code,
            200,
            "{path} with it"
        );
        // One token a request: beside another Bearer header, in either
        // order, it opens nothing; beside another scheme's, it does.
        let other = "Authorization: Bearer nope";
        for pair in [[bearer.as_str(), other], [other, bearer.as_str()]] {
            assert_eq!(get(admin.addr, path, &pair).code, 401, "{path} {pair:?}");
        }
        let basic = "Authorization: Basic YWJj";
        assert_eq!(get(admin.addr, path, &[basic, &bearer]).code, 200, "{path}");
    }
    // The event stream is data too (with the token it streams for ever).
    assert_eq!(get(admin.addr, "/api/events", &[]).code, 401);
    let wrong = get(admin.addr, "/api/events", &["Authorization: Bearer nope"]);
    assert_eq!(wrong.code, 401, "/api/events with a wrong token");
    // The console's page holds no data and a browser's navigation cannot
    // send the header: it is served without the token (it asks for it), a
    // foreign origin still gets 403.
    let page = get(admin.addr, "/", &[]);
    assert_eq!(page.code, 200, "{}", page.body);
    assert!(page.body.contains("assets/console.js"), "the console page");
    let script = get(admin.addr, "/assets/console.js", &[]);
    assert_eq!(script.code, 200, "{}", script.body);
    assert!(script.body.contains("api/events"), "the console's script");
    for (what, body) in [("page", &page.body), ("script", &script.body)] {
        assert!(
            !body.contains("Alpha Circle"),
            "the {what} holds no data: {body}"
        );
    }
    for path in ["/", "/assets/console.js"] {
        assert_eq!(
            get(admin.addr, path, &["Origin: http://evil.example"]).code,
            403,
            "{path}"
        );
    }
    assert_eq!(get(admin.addr, "/healthz", &[]).code, 200);
    wait_code(admin.addr, "/readyz", 200);

    let addr = admin.addr.to_string();
    let mut cmd = admin.sandbox.command();
    cmd.args(["status", "--admin", &addr]);
    let (code, _, stderr) = run_to_end(cmd, Duration::from_secs(30));
    assert!(!code.success());
    assert!(stderr.contains("--token"), "{stderr}");
    assert!(!stderr.contains(token), "{stderr}");
    let mut cmd = admin.sandbox.command();
    cmd.args(["status", "--admin", &addr])
        .env("CIRCLES_ADMIN_TOKEN", token);
    let (code, stdout, stderr) = run_to_end(cmd, Duration::from_secs(30));
    assert!(code.success(), "{stderr}");
    assert!(stdout.contains("Alpha Circle"), "{stdout}");
    assert!(admin.orchestrator.stop().success());
}

#[test]
fn a_non_loopback_host_or_admin_address_without_an_admin_token_refuses_to_start_unless_allow_open()
{
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    // A protected circle may face the network; the admin endpoint needs a
    // token of its own.
    let hash = "ab".repeat(32);
    let config = sandbox.write(
        "circles.json",
        &format!(
            r#"[{{"id": 1, "name": "Alpha", "port": {}, "principals":
                [{{"name": "ada", "token_sha256": "{hash}", "role": "write"}}]}}]"#,
            port()
        ),
    );
    let mut cmd = sandbox.serve_command(&config, &redis.url(), &sandbox.data_dir());
    cmd.args(["--host", "0.0.0.0", "--admin", "127.0.0.1:0"]);
    let (code, _, stderr) = run_to_end(cmd, Duration::from_secs(30));
    assert_eq!(code.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--admin-token-sha256"), "{stderr}");

    // Circles on loopback, but the admin endpoint itself on every interface.
    let mut cmd = sandbox.serve_command(&config, &redis.url(), &sandbox.data_dir());
    cmd.args(["--host", "127.0.0.1", "--admin", "0.0.0.0:0"]);
    let (code, _, stderr) = run_to_end(cmd, Duration::from_secs(30));
    assert_eq!(code.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the admin endpoint (0.0.0.0:0)"),
        "names the admin address: {stderr}"
    );
    assert!(stderr.contains("--admin-token-sha256"), "{stderr}");

    // --allow-open serves it open anyway.
    let mut orchestrator = Orchestrator::start(
        &sandbox,
        &config,
        &redis.url(),
        &[
            "--host",
            "127.0.0.1",
            "--admin",
            "0.0.0.0:0",
            "--allow-open",
        ],
    );
    orchestrator.wait_table();
    let open = admin_addr(&orchestrator.stdout());
    assert!(open.ip().is_unspecified(), "{open}");
    let loopback = SocketAddr::from(([127, 0, 0, 1], open.port()));
    let status = get(loopback, "/api/status", &[]);
    assert_eq!(status.code, 200, "served open: {}", status.body);
    assert!(orchestrator.stop().success());
}

/// `method path` at `addr` with no body: the status code and the lower-cased
/// header lines.
fn head(addr: SocketAddr, method: &str, path: &str) -> (u16, Vec<String>) {
    let mut stream = TcpStream::connect(addr).expect("connect to the admin endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = String::new();
    std::io::Read::read_to_string(&mut stream, &mut raw).expect("read the answer");
    let (head, _body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    let mut lines = head.lines();
    let code = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (code, lines.map(str::to_ascii_lowercase).collect())
}

#[test]
fn a_method_a_path_does_not_take_gets_405_with_allow_naming_the_one_it_does() {
    let mut admin = start(&[]);
    for (method, path, allow) in [
        ("POST", "/healthz", "get, head"),
        ("DELETE", "/healthz", "get, head"),
        ("POST", "/readyz", "get, head"),
        ("PUT", "/api/status", "get"),
        ("POST", "/api/events", "get"),
        ("POST", "/metrics", "get"),
        ("POST", "/", "get"),
        ("POST", "/assets/app.js", "get"),
        ("GET", "/api/reload", "post"),
    ] {
        let (code, headers) = head(admin.addr, method, path);
        assert_eq!(code, 405, "{method} {path}: {headers:?}");
        assert!(
            headers.contains(&format!("allow: {allow}")),
            "{method} {path} names {allow}: {headers:?}"
        );
    }
    // A path the endpoint does not serve is still 404, and the probes still
    // answer their own method.
    assert_eq!(head(admin.addr, "POST", "/nowhere").0, 404);
    assert_eq!(head(admin.addr, "GET", "/healthz").0, 200);
    // The probes answer HEAD as GET, without a body.
    for path in ["/healthz", "/readyz"] {
        let answer = common::http::request(admin.addr, "HEAD", path, &[]);
        assert_eq!(answer.code, 200, "HEAD {path}");
        assert!(answer.body.is_empty(), "HEAD {path}: {}", answer.body);
    }
    assert!(admin.orchestrator.stop().success());
}

#[test]
fn the_bearer_scheme_is_taken_in_any_case_and_another_scheme_is_not() {
    let (token, hash) = token_admin();
    let mut admin = start(&["--admin-token-sha256", &hash]);
    for path in ["/metrics", "/api/status"] {
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            let header = format!("Authorization: {scheme} {token}");
            let answer = get(admin.addr, path, &[&header]);
            assert_eq!(answer.code, 200, "{path} with {scheme}: {}", answer.body);
        }
        for header in [
            format!("Authorization: Basic {token}"),
            format!("Authorization: Bearer{token}"),
            format!("Authorization: {token}"),
            "Authorization: bearer nope".to_string(),
        ] {
            let answer = get(admin.addr, path, &[&header]);
            assert_eq!(answer.code, 401, "{path} with {header:?}: {}", answer.body);
        }
        // Behind the token any Host passes (a scraper may reach the endpoint
        // by any name; a DNS-rebound page holds no token).
        let named = get_with_host_and(
            admin.addr,
            path,
            Some("circles.internal:9480"),
            &format!("Authorization: Bearer {token}\r\n"),
        );
        assert_eq!(named.code, 200, "{path} by name: {}", named.body);
    }
    // The probes, which need no token, still check it.
    let probe = get_with_host(admin.addr, "/healthz", Some("evil.example"));
    assert_eq!(probe.code, 421, "{}", probe.body);
    assert!(admin.orchestrator.stop().success());
}

/// `GET path` at `addr` with exactly `host` as its `Host` header (`None`:
/// none, as HTTP/1.0), and `Connection: close`: the status code and body.
fn get_with_host(addr: SocketAddr, path: &str, host: Option<&str>) -> Answer {
    get_with_host_and(addr, path, host, "")
}

/// [`get_with_host`] with `extra` header lines (each ending in `\r\n`).
fn get_with_host_and(addr: SocketAddr, path: &str, host: Option<&str>, extra: &str) -> Answer {
    let request = match host {
        Some(host) => {
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
        }
        None => format!("GET {path} HTTP/1.0\r\n{extra}\r\n"),
    };
    http::send(addr, &request)
}

/// A page on a name the attacker's DNS rebinds to 127.0.0.1 reads the
/// endpoint same-origin, without an `Origin` header: its `Host` names the
/// attacker's site, which the endpoint refuses.
#[test]
fn a_host_header_naming_another_site_is_refused_and_ip_literals_and_localhost_pass() {
    let mut admin = start(&[]);
    let port = admin.addr.port();
    let foreign = [
        format!("evil.example:{port}"),
        "evil.example".to_string(),
        format!("localhost.evil.example:{port}"),
        format!("127.0.0.1.evil.example:{port}"),
        format!("localhost:{port}@evil.example"),
        "localhost:notaport".to_string(),
        format!("[::1]evil.example:{port}"),
    ];
    for path in [
        "/api/status",
        "/metrics",
        "/api/events",
        "/",
        "/assets/app.js",
        "/healthz",
        "/readyz",
    ] {
        for host in &foreign {
            let refused = get_with_host(admin.addr, path, Some(host));
            assert_eq!(
                refused.code, 421,
                "{path} with Host {host}: {}",
                refused.body
            );
            assert!(
                refused.body.contains("Host") && refused.body.ends_with('\n'),
                "the refusal says why: {:?}",
                refused.body
            );
        }
    }
    for host in [
        admin.addr.to_string(),
        "127.0.0.1".to_string(),
        format!("localhost:{port}"),
        format!("LocalHost:{port}"),
        "localhost".to_string(),
        format!("[::1]:{port}"),
        "[::1]".to_string(),
        // Any IP literal: no DNS answer stands behind it to rebind.
        format!("10.1.2.3:{port}"),
        "[2001:db8::1]:80".to_string(),
    ] {
        for path in ["/api/status", "/metrics"] {
            let answer = get_with_host(admin.addr, path, Some(&host));
            assert_eq!(answer.code, 200, "{path} with Host {host}: {}", answer.body);
        }
    }
    let answer = get_with_host(admin.addr, "/api/status", None);
    assert_eq!(answer.code, 200, "HTTP/1.0 without Host: {}", answer.body);
    assert!(admin.orchestrator.stop().success());
}

/// A circle's name is free text: a quote and a backslash in it reach
/// `/metrics` escaped, in the Prometheus text and in OpenMetrics, in the
/// recorded series as in the sampled ones, and the scrape stays parseable.
#[test]
fn a_circle_named_with_a_quote_and_a_backslash_gets_escaped_label_values_in_both_formats() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let config = sandbox.circles(&[(1, r#"The "A" Team C:\temp"#, port())]);
    let (mut orchestrator, addr) = start_with_admin(&sandbox, &config, &redis, &[]);
    const C: &str = r#"circle="The \"A\" Team C:\\temp""#;
    let up = format!("circles_circle_up{{{C}}} 1\n");
    let series = [
        up.clone(),
        format!("circles_ws_connections{{{C}}} 0\n"),
        format!("circles_tasks_finished_total{{{C},outcome=\"completed\",kind=\"none\"}} 0\n"),
        format!("circles_ws_upgrades_rejected_total{{{C},reason=\"origin\"}} 0\n"),
        format!("circles_task_run_seconds_count{{{C}}} 0\n"),
    ];
    let text = wait_answer(addr, "/metrics", 200, &up).body;
    for line in &series {
        assert!(text.contains(line.as_str()), "{line:?} in\n{text}");
    }
    promtool_check(&text);

    let open = get(addr, "/metrics", &["Accept: application/openmetrics-text"]);
    assert_eq!(open.code, 200, "{}", open.body);
    assert!(open.body.ends_with("# EOF\n"), "OpenMetrics: {}", open.body);
    for line in &series {
        assert!(
            open.body.contains(line.as_str()),
            "{line:?} in\n{}",
            open.body
        );
    }
    assert!(orchestrator.stop().success());
}

/// The console page can run any script on any circle (its playground), and
/// a frame carries no `Origin`: a page of another site that frames it could
/// drive it by clickjacking (drag a script into the editor, trick a click on
/// Run), past the Origin check that keeps other sites away. The page must
/// forbid being framed by another site.
#[test]
fn the_console_page_forbids_framing_by_other_sites() {
    let mut admin = start(&[]);
    let (code, headers) = head(admin.addr, "GET", "/");
    assert_eq!(code, 200, "{headers:?}");
    let refuses_framing = headers.iter().any(|h| {
        h.starts_with("x-frame-options:") && (h.contains("deny") || h.contains("sameorigin"))
    }) || headers
        .iter()
        .any(|h| h.starts_with("content-security-policy:") && h.contains("frame-ancestors"));
    assert!(
        refuses_framing,
        "the console page may be framed by any site (no X-Frame-Options, no CSP \
         frame-ancestors): {headers:?}"
    );
    assert!(admin.orchestrator.stop().success());
}

/// `circles_task_queue_wait_seconds` is the time (README's metric table,
/// and its HELP line) "from the task's `createdAt` to its
/// claim". Under a backlog a worker claims several tasks in one round trip
/// (`--claim-batch`, 24 by default) and each then waits in the worker for
/// those claimed ahead of it to run: that wait is after the claim, and must
/// not be counted as queue wait. The claim's own time is in the hash
/// (`startedAt`, next to `createdAt`), so the true figure is known.
#[test]
fn queue_wait_ends_at_the_claim_not_when_the_script_starts() {
    let mut admin = start(&[]);
    let addr = admin.addr;
    const SUM: &str = r#"circles_task_queue_wait_seconds_sum{circle="Alpha Circle"}"#;
    const COUNT: &str = r#"circles_task_queue_wait_seconds_count{circle="Alpha Circle"}"#;
    let before = get(addr, "/metrics", &[]).body;

    // Four slow tasks at once, as a submitter writes them (createdAt
    // included): one claim takes the backlog.
    const N: usize = 4;
    let mut conn = common::tasks::conn(&admin.redis);
    let ids: Vec<String> = (0..N).map(|i| format!("alpha-slow-{i}")).collect();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        .to_string();
    let mut submit = redis::pipe();
    submit.atomic();
    for id in &ids {
        submit
            .hset_multiple(
                client::keys::task_details(id),
                &[
                    ("script", "let x = 0; for i in 0..1000000 { x += 1; } x"),
                    ("status", "pending"),
                    ("createdAt", now_ms.as_str()),
                ],
            )
            .lpush(client::keys::tasks("alpha_circle"), id);
    }
    let () = submit.query(&mut conn).expect("submit the tasks");
    let deadline = Instant::now() + Duration::from_secs(120);
    for id in &ids {
        while common::tasks::field(&mut conn, id, "status").as_deref() != Some("completed") {
            assert!(Instant::now() < deadline, "task {id} did not complete");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // createdAt to the claim (startedAt), as Redis recorded them.
    let mut ms = |id: &str, f: &str| -> f64 {
        common::tasks::field(&mut conn, id, f)
            .unwrap_or_else(|| panic!("{id} has no {f}"))
            .parse()
            .expect("ms")
    };
    let (mut truth, mut run) = (0.0, 0.0);
    for id in &ids {
        truth += (ms(id, "startedAt") - ms(id, "createdAt")) / 1000.0;
        run += ms(id, "runTimeUs") / 1_000_000.0;
    }

    let after = wait_count(addr, COUNT, sample(&before, COUNT) + N as f64);
    let measured = sample(&after, SUM) - sample(&before, SUM);
    assert!(
        (measured - truth).abs() < 0.5,
        "queue wait recorded {measured:.3} s for {N} tasks, but createdAt to the claim \
         (startedAt) adds up to {truth:.3} s (their scripts ran {run:.3} s in all)"
    );
    assert!(admin.orchestrator.stop().success());
}

/// Polls `/metrics` until `series` reaches `at_least`; the scrape.
fn wait_count(addr: std::net::SocketAddr, series: &str, at_least: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = get(addr, "/metrics", &[]).body;
        if sample(&text, series) >= at_least {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {at_least}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
