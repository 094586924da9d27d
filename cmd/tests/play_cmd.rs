//! The `play` companion: sends a script to a running circle and prints the
//! result, or the error with a nonzero exit code.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    Orchestrator, Sandbox, exit_with_stderr, exit_with_stdout, port, run_to_end, sha256_hex, ws,
};

fn play_cmd(sandbox: &Sandbox, args: &[&str]) -> Command {
    let mut cmd = sandbox.command();
    cmd.arg("play").args(args);
    cmd
}

/// Runs `cmd` with `input` on its stdin; what it printed and how it ended.
fn with_stdin(mut cmd: Command, input: &[u8]) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn play");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("play output")
}

#[test]
fn play_prints_the_output_of_a_script_and_errors_with_their_position() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (a, b) = (port(), port());
    let config = sandbox.circles(&[(1, "Alpha", a), (2, "Beta Circle", b)]);
    let mut o = Orchestrator::start(&sandbox, &config, &redis.url(), &[]);
    o.wait_table();

    // By URL.
    let (status, out, err) = run_to_end(
        play_cmd(&sandbox, &["--url", &ws(a), "40 + 2"]),
        Duration::from_secs(30),
    );
    assert_eq!((status.code(), out.as_str()), (Some(0), "42\n"), "{err}");

    // By circle name from ./circles.json, printed lines first.
    let (status, out, err) = run_to_end(
        play_cmd(
            &sandbox,
            &["--circle", "Beta Circle", "print(\"hi\"); db::insert(5)"],
        ),
        Duration::from_secs(30),
    );
    assert_eq!((status.code(), out.as_str()), (Some(0), "hi\n1\n"), "{err}");

    // By id, from a file; the data is that circle's.
    let script = sandbox.write("get.rhai", "db::get(1)");
    let (status, out, err) = run_to_end(
        play_cmd(
            &sandbox,
            &["--circle", "2", "-f", &script.display().to_string()],
        ),
        Duration::from_secs(30),
    );
    assert_eq!((status.code(), out.as_str()), (Some(0), "5\n"), "{err}");

    // From stdin; the default circle is the first one.
    let done = with_stdin(play_cmd(&sandbox, &["-"]), b"db::exists(1)");
    assert_eq!(String::from_utf8_lossy(&done.stdout), "false\n", "{done:?}");

    // A URL with the wrong path: the server's 404, and where the endpoint is.
    let (status, _, err) = run_to_end(
        play_cmd(&sandbox, &["--url", &format!("ws://127.0.0.1:{a}/"), "1"]),
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("HTTP 404") && err.contains("the path /ws"),
        "{err}"
    );

    // A script error: exit 1, kind and position on stderr.
    let (status, out, err) =
        run_to_end(play_cmd(&sandbox, &["let x = ;"]), Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        err.contains("error -32000 (syntax) at line 1, column"),
        "{err}"
    );

    assert_eq!(o.stop().code(), Some(0));
}

#[test]
fn play_without_a_server_or_a_script_says_what_is_wrong() {
    let sandbox = Sandbox::new();
    let dead = port();
    let (status, _, err) = run_to_end(
        play_cmd(&sandbox, &["--url", &ws(dead), "1"]),
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot connect") && err.contains(&ws(dead)),
        "{err}"
    );
    // A CA for a ws:// URL would be ignored: a usage error instead.
    let (status, _, err) = run_to_end(
        play_cmd(&sandbox, &["--url", &ws(dead), "--ca", "ca.pem", "1"]),
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("--ca trusts a CA for wss:// only") && err.contains(&ws(dead)),
        "{err}"
    );

    for (url, says) in [
        ("notaurl", "does not start with ws:// or wss://"),
        (
            "http://127.0.0.1:1/ws",
            "does not start with ws:// or wss://",
        ),
        ("ws://", "not a WebSocket URL"),
        ("ws:///ws", "names no host"),
        ("ws://\t/ws", "contains a control character"),
        ("wss:////127.0.0.1:1/ws", "names no host"),
        // The WebSocket client would connect to port 80 with these.
        ("ws://127.0.0.1:8o81/ws", "invalid port number"),
        ("ws://127.0.0.1:99999/ws", "invalid port number"),
    ] {
        let (status, _, err) = run_to_end(
            play_cmd(&sandbox, &["--url", url, "1"]),
            Duration::from_secs(30),
        );
        assert_eq!(status.code(), Some(2), "{url}: {err}");
        assert!(err.contains(says) && err.contains(url), "{url}: {err}");
    }
    // A user or password in the URL is refused, and not printed.
    let (status, _, err) = run_to_end(
        play_cmd(&sandbox, &["--url", "ws://ann:hunter2@127.0.0.1:1/ws", "1"]),
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains(
            "--url ws://***@127.0.0.1:1/ws is not a WebSocket URL: it carries a user \
             or password"
        ) && !err.contains("hunter2"),
        "{err}"
    );
    // A scheme in capitals is a scheme.
    let loud = ws(dead).replacen("ws://", "WS://", 1);
    let (status, _, err) = run_to_end(
        play_cmd(&sandbox, &["--url", &loud, "1"]),
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot connect to {}", ws(dead))),
        "{err}"
    );

    // A script that is not UTF-8 is bad input, from a file or from stdin.
    let bad = sandbox.path().join("bad.rhai");
    std::fs::write(&bad, b"\xff\xfe1").expect("write bad.rhai");
    let (status, _, err) = run_to_end(
        play_cmd(
            &sandbox,
            &["--url", &ws(dead), "-f", &bad.display().to_string()],
        ),
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("a script is UTF-8 text"), "{err}");
    let done = with_stdin(play_cmd(&sandbox, &["--url", &ws(dead), "-"]), b"\xff\xfe1");
    let err = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot read the script from stdin") && err.contains("a script is UTF-8 text"),
        "{err}"
    );

    sandbox.circles(&[(1, "Alpha", dead)]);
    let (status, _, err) = run_to_end(
        play_cmd(&sandbox, &["--circle", "Gamma", "1"]),
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("no circle named or numbered \"Gamma\"") && err.contains("\"Alpha\" (id 1)"),
        "{err}"
    );
}

/// A token no output may contain; its SHA-256 is in circles.json.
const TOKEN: &str = "play-tok-QX7f2c9e41b8a-never-printed";

#[test]
fn play_sends_the_token_of_a_protected_circle_and_never_prints_it() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let guarded = port();
    let circles = serde_json::json!([{"id": 1, "name": "Guarded", "port": guarded,
        "principals": [{"name": "ann", "token_sha256": sha256_hex(TOKEN), "role": "write"}]}]);
    let config = sandbox.write("circles.json", &circles.to_string());
    let mut o = Orchestrator::start(&sandbox, &config, &redis.url(), &[]);
    o.wait_table();
    let mut outputs = Vec::new();
    let run = |cmd: Command, outputs: &mut Vec<String>| {
        let (status, out, err) = run_to_end(cmd, Duration::from_secs(30));
        outputs.push(format!("{out}{err}"));
        (status.code(), out, err)
    };

    // No token: 401, naming both ways to give one.
    let mut cmd = play_cmd(&sandbox, &["--circle", "Guarded", "40 + 2"]);
    cmd.env_remove("CIRCLES_TOKEN");
    let (code, out, err) = run(cmd, &mut outputs);
    assert_eq!((code, out.as_str()), (Some(1), ""), "{err}");
    assert!(
        err.contains("HTTP 401") && err.contains("--token") && err.contains("CIRCLES_TOKEN"),
        "{err}"
    );

    // --token: the result.
    let mut cmd = play_cmd(
        &sandbox,
        &["--token", TOKEN, "--url", &ws(guarded), "caller()"],
    );
    cmd.env_remove("CIRCLES_TOKEN");
    let (code, out, err) = run(cmd, &mut outputs);
    assert_eq!((code, out.as_str()), (Some(0), "ann\n"), "{err}");

    // CIRCLES_TOKEN: the result.
    let mut cmd = play_cmd(&sandbox, &["--circle", "Guarded", "40 + 2"]);
    cmd.env("CIRCLES_TOKEN", TOKEN);
    let (code, out, err) = run(cmd, &mut outputs);
    assert_eq!((code, out.as_str()), (Some(0), "42\n"), "{err}");

    // --help with CIRCLES_TOKEN set does not show it.
    let mut cmd = play_cmd(&sandbox, &["--help"]);
    cmd.env("CIRCLES_TOKEN", TOKEN);
    let (code, out, err) = run(cmd, &mut outputs);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("CIRCLES_TOKEN"), "{out}");

    // A wrong token: 401 saying the token is not valid; repeated, 429 saying to wait.
    let wrong = format!("{TOKEN}-wrong");
    let mut last = String::new();
    for _ in 0..12 {
        let cmd = play_cmd(&sandbox, &["--token", &wrong, "--url", &ws(guarded), "1"]);
        let (code, _, err) = run(cmd, &mut outputs);
        assert_eq!(code, Some(1), "{err}");
        assert!(!err.contains(&wrong), "{err}");
        last = err;
    }
    assert!(
        outputs
            .iter()
            .any(|o| o.contains("HTTP 401") && o.contains("not valid")),
        "{outputs:?}"
    );
    assert!(last.contains("HTTP 429") && last.contains("wait"), "{last}");

    assert_eq!(o.stop().code(), Some(0));
    outputs.push(o.stdout());
    outputs.push(o.stderr());
    for output in &outputs {
        assert!(!output.contains(TOKEN), "the token was printed: {output}");
    }
}

#[test]
fn a_refused_token_and_a_redis_password_are_never_printed() {
    let sandbox = Sandbox::new();
    // A token read from a file with its line end, and one with a space.
    let mut cmd = play_cmd(&sandbox, &["--url", "ws://127.0.0.1:1/ws", "1"]);
    cmd.env("CIRCLES_TOKEN", format!("{TOKEN}\n"));
    let (status, out, err) = run_to_end(cmd, Duration::from_secs(30));
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("--token (or CIRCLES_TOKEN): the token has characters"),
        "{err}"
    );
    let mut cmd = sandbox.command();
    cmd.args([
        "status",
        "--admin",
        "127.0.0.1:1",
        "--token",
        &format!("{TOKEN} x"),
    ]);
    let (status, out2, err2) = run_to_end(cmd, Duration::from_secs(30));
    assert_eq!(status.code(), Some(2), "{err2}");
    // `--help` names the variable, not its value.
    let mut help = Vec::new();
    for args in [&["--help"][..], &["play", "--help"][..]] {
        let mut cmd = sandbox.command();
        cmd.args(args)
            .env("REDIS_URL", "redis://:REDISPASS@127.0.0.1:1");
        let (status, out, err) = run_to_end(cmd, Duration::from_secs(30));
        assert_eq!(status.code(), Some(0), "{err}");
        help.push(out);
    }
    for output in [&out, &err, &out2, &err2, &help[0], &help[1]] {
        assert!(!output.contains(TOKEN), "the token was printed: {output}");
        assert!(
            !output.contains("REDISPASS"),
            "the password was printed: {output}"
        );
    }
}

/// A running circle and a `play` command for it with more arguments.
struct Circle {
    sandbox: Sandbox,
    orchestrator: Orchestrator,
    url: String,
    _redis: testkit::RedisServer,
}

impl Circle {
    fn start() -> Circle {
        let sandbox = Sandbox::new();
        let redis = testkit::RedisServer::start();
        let port = port();
        let config = sandbox.circles(&[(1, "Alpha", port)]);
        let mut orchestrator = Orchestrator::start(&sandbox, &config, &redis.url(), &[]);
        orchestrator.wait_table();
        Circle {
            sandbox,
            orchestrator,
            url: ws(port),
            _redis: redis,
        }
    }

    fn play(&self, args: &[&str]) -> Command {
        let mut cmd = play_cmd(&self.sandbox, &["--timeout", "20s", "--url", &self.url]);
        cmd.args(args);
        cmd
    }
}

/// A result that cannot be written (a full device) fails play with exit 1
/// and one line saying why, never a panic.
#[test]
fn play_into_a_full_device_exits_1_saying_so_without_a_panic() {
    let mut circle = Circle::start();
    for (args, what) in [
        (&["40 + 2"][..], "result"),
        (&["--json", "40 + 2"], "reply"),
    ] {
        let (code, err) = exit_with_stdout(circle.play(args), common::dev_full());
        assert_eq!(code, Some(1), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(
            err,
            format!(
                "circles_orchestrator: error: cannot write the {what} to stdout: \
                 No space left on device (os error 28)\n"
            )
        );
    }
    assert_eq!(circle.orchestrator.stop().code(), Some(0));
}

/// A stderr that cannot be written (a full device) costs play its messages
/// there, never its exit code: 1 for an error reply and for a failed
/// connection, as with a working stderr, and no panic's 101.
#[test]
fn play_with_stderr_on_a_full_device_keeps_its_exit_code() {
    let mut circle = Circle::start();
    let (code, out) = exit_with_stderr(circle.play(&["throw \"boom\""]), common::dev_full());
    assert_eq!((code, out.as_str()), (Some(1), ""));
    // The same error reply with a working stderr, for comparison.
    let (status, out, err) = run_to_end(circle.play(&["throw \"boom\""]), Duration::from_secs(30));
    assert_eq!((status.code(), out.as_str()), (Some(1), ""), "{err}");
    assert!(err.contains("boom"), "{err}");
    // A result still reaches stdout.
    let (code, out) = exit_with_stderr(circle.play(&["40 + 2"]), common::dev_full());
    assert_eq!((code, out.as_str()), (Some(0), "42\n"));
    // An error of the command itself (nothing listens there), which main
    // writes to stderr.
    let closed = ws(port());
    let mut cmd = play_cmd(&circle.sandbox, &["--timeout", "5s", "--url", &closed]);
    cmd.arg("1");
    let (code, out) = exit_with_stderr(cmd, common::dev_full());
    let mut cmd = play_cmd(&circle.sandbox, &["--timeout", "5s", "--url", &closed]);
    cmd.arg("1");
    let (status, _, err) = run_to_end(cmd, Duration::from_secs(30));
    assert!(err.starts_with("circles_orchestrator: error: "), "{err}");
    assert_eq!((code, out.as_str()), (status.code(), ""));
    assert_ne!(code, Some(101));
    assert_eq!(circle.orchestrator.stop().code(), Some(0));
}

/// A reader that went away (`play … | head -c 10`) ends play quietly with
/// the exit code of its reply (0 for a result), never a panic.
#[test]
fn play_into_a_pipe_closed_early_exits_0_quietly_without_a_panic() {
    let mut circle = Circle::start();
    // 256 KiB: more than a pipe holds, so the write cannot end before the
    // read end is closed, whichever comes first.
    let big = r#"let s = "x"; for i in 0..18 { s += s; } s"#;
    let (status, out, err) = run_to_end(circle.play(&[big]), Duration::from_secs(30));
    assert_eq!(
        (status.code(), out.len()),
        (Some(0), (1 << 18) + 1),
        "{err}"
    );
    let (code, err) = exit_with_stdout(circle.play(&[big]), Stdio::piped());
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(code, Some(0), "the reply was a result: {err}");
    assert!(err.is_empty(), "quietly: {err}");
    assert_eq!(circle.orchestrator.stop().code(), Some(0));
}

/// `--host` makes the URL `play` connects to with `--circle`, so it is
/// checked as `--url` is: a host with a `/`, `?` or `#` would move the
/// circle's port into the URL's path or query and connect to port 80
/// instead, bearer token and all; a host that makes no URL is a usage
/// mistake (exit 2), not a failed connection (exit 1).
#[test]
fn play_refuses_a_host_that_makes_no_url_of_the_circle_with_exit_2() {
    let sandbox = Sandbox::new();
    let dead = port();
    sandbox.circles(&[(1, "Alpha", dead)]);
    for host in [
        "",
        "a b",
        "localhost/x",
        "localhost?x",
        "localhost#x",
        "ann:hunter2@127.0.0.1",
        "ann@127.0.0.1",
        "[::1",
    ] {
        let mut cmd = play_cmd(
            &sandbox,
            &["--host", host, "--circle", "Alpha", "--token", TOKEN, "1"],
        );
        cmd.env_remove("CIRCLES_TOKEN");
        let (status, out, err) = run_to_end(cmd, Duration::from_secs(30));
        assert_eq!(status.code(), Some(2), "--host {host:?}: {out}{err}");
        assert!(
            err.contains("--host") && !err.contains("cannot connect"),
            "--host {host:?}: {err}"
        );
        assert!(!err.contains("hunter2") && !err.contains(TOKEN), "{err}");
    }
    // An IPv6 address and a name still make the circle's URL.
    for host in ["::1", "[::1]", "localhost"] {
        let (status, _, err) = run_to_end(
            play_cmd(&sandbox, &["--host", host, "--circle", "Alpha", "1"]),
            Duration::from_secs(30),
        );
        assert_eq!(status.code(), Some(1), "--host {host:?}: {err}");
        assert!(
            err.contains("cannot connect") && err.contains(&format!(":{dead}/ws")),
            "--host {host:?}: {err}"
        );
    }
}

/// `play`, its address space bounded to 1 GiB, so that a read without end
/// fails fast instead of taking the machine's memory.
fn bounded_play(sandbox: &Sandbox, args: &[&str]) -> Command {
    let inner = play_cmd(sandbox, args);
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -v 1048576 && exec \"$@\"")
        .arg("sh")
        .arg(inner.get_program())
        .args(inner.get_args())
        .current_dir(sandbox.path());
    for (key, value) in inner.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    cmd
}

/// A circle runs no script over 256 KiB, so `play` reads no more than that
/// of a file or stdin: `-f /dev/zero` (or a log file given by mistake) and
/// an endless stdin are refused at once with exit 2, not read into memory
/// until it runs out.
#[test]
fn play_reads_no_script_without_end_into_memory() {
    let sandbox = Sandbox::new();
    let dead = port();
    let (status, _, err) = run_to_end(
        bounded_play(&sandbox, &["--url", &ws(dead), "-f", "/dev/zero"]),
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(2), "{status:?}: {err}");
    assert!(
        err.contains("/dev/zero") && err.contains("at most 262144 bytes"),
        "{err}"
    );
    let mut cmd = bounded_play(&sandbox, &["--url", &ws(dead), "-"]);
    cmd.stdin(std::fs::File::open("/dev/zero").expect("open /dev/zero"));
    let (status, _, err) = run_to_end(cmd, Duration::from_secs(30));
    assert_eq!(status.code(), Some(2), "{status:?}: {err}");
    assert!(
        err.contains("stdin") && err.contains("at most 262144 bytes"),
        "{err}"
    );
    // A long script of characters of three bytes each, cut by the bound
    // inside one: too long, not "not UTF-8".
    let long = sandbox.write("long.rhai", &"€".repeat((256 << 10) / 3 + 1));
    let (status, _, err) = run_to_end(
        bounded_play(
            &sandbox,
            &["--url", &ws(dead), "-f", &long.display().to_string()],
        ),
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(2), "{status:?}: {err}");
    assert!(
        err.contains("at most 262144 bytes") && !err.contains("UTF-8"),
        "{err}"
    );
    // A script at the limit still goes to the circle (and is refused by
    // nothing here: the connection fails, exit 1).
    let full = sandbox.write("full.rhai", &format!("{}1", " ".repeat((256 << 10) - 1)));
    let (status, _, err) = run_to_end(
        bounded_play(
            &sandbox,
            &["--url", &ws(dead), "-f", &full.display().to_string()],
        ),
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("cannot connect"), "{err}");
}

/// README: "Stopping `play` (Ctrl-C, or its `--timeout` passing) closes its
/// connection, which cancels the script on the server: unless it finished
/// first, nothing it wrote is kept." The circle's own limits would let the
/// loop run for minutes: the next `play`, which waits for the circle's
/// script to end, is answered within its own 20 s only because the cancel
/// stopped it.
#[test]
fn play_whose_timeout_passes_cancels_its_script_and_nothing_it_wrote_is_kept() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let a = port();
    let config = sandbox.circles(&[(1, "Alpha", a)]);
    let mut o = Orchestrator::start(
        &sandbox,
        &config,
        &redis.url(),
        &[
            "--script-timeout",
            "300s",
            "--max-operations",
            "100000000000",
        ],
    );
    o.wait_table();
    let (status, _, err) = run_to_end(
        play_cmd(
            &sandbox,
            &[
                "--url",
                &ws(a),
                "--timeout",
                "2s",
                "db::insert(7); let i = 0; loop { i += 1; }",
            ],
        ),
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(1), "{err}");
    let (status, out, err) = run_to_end(
        play_cmd(
            &sandbox,
            &[
                "--url",
                &ws(a),
                "--timeout",
                "20s",
                "[db::exists(1), db::next_id()]",
            ],
        ),
        Duration::from_secs(60),
    );
    assert_eq!(
        (status.code(), out.as_str()),
        (Some(0), "[false, 1]\n"),
        "{err}"
    );
    assert_eq!(o.stop().code(), Some(0));
}
