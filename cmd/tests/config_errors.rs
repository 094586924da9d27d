//! Every circles.json rejection of DESIGN §2 exits 2 with a message naming the
//! file and the problem, before anything starts (no Redis needed).

mod common;

use std::time::Duration;

use common::{Sandbox, run_to_end};

/// Runs the orchestrator on a circles file with `text`; returns (code, stderr).
fn reject(text: &str) -> (i32, String) {
    let sandbox = Sandbox::new();
    let path = sandbox.write("circles.json", text);
    let mut cmd = sandbox.command();
    cmd.arg(&path)
        .args(["--output", "plain", "--no-managed-redis"]);
    // A Redis URL nobody answers: validation must fail before Redis matters.
    cmd.args(["--redis-url", "redis://127.0.0.1:1"]);
    let (status, _out, err) = run_to_end(cmd, Duration::from_secs(20));
    assert!(
        err.contains("circles.json"),
        "message does not name the file: {err}"
    );
    (status.code().expect("exit code"), err)
}

fn assert_rejected(text: &str, needles: &[&str]) {
    let (code, err) = reject(text);
    assert_eq!(code, 2, "wrong exit code for {text}: {err}");
    for needle in needles {
        assert!(err.contains(needle), "{needle:?} missing from: {err}");
    }
}

#[test]
fn invalid_json_exits_2_with_line_and_column() {
    assert_rejected(
        "[\n  {\"id\": 1, \"name\": \"A\", \"port\": 8081},\n  {\"id\": 2,,}\n]",
        &["invalid JSON", "line 3", "column"],
    );
}

/// A file seen while it is written (truncated, then written: an editor
/// saving in place, `>` in a shell): empty, or cut short. The message says
/// it ends early, not only where the parser stopped.
#[test]
fn an_empty_or_cut_short_file_exits_2_saying_it_ends_early() {
    for text in ["", "[{\"id\": 1, \"name\": \"Al"] {
        assert_rejected(text, &["invalid JSON", "the file ends early"]);
    }
}

#[test]
fn missing_field_exits_2_naming_the_circle_and_field() {
    assert_rejected(
        r#"[{"id": 1, "name": "A", "port": 8081}, {"id": 2, "name": "B"}]"#,
        &["index 1", "id 2", "missing field `port`"],
    );
}

#[test]
fn mistyped_field_exits_2_naming_the_circle() {
    assert_rejected(
        r#"[{"id": "one", "name": "A", "port": 8081}]"#,
        &["index 0", "invalid type"],
    );
    assert_rejected(
        r#"[{"id": 1, "name": "A", "port": 99999}]"#,
        &["index 0", "99999"],
    );
}

#[test]
fn unknown_field_exits_2_so_a_typo_cannot_pass() {
    assert_rejected(
        r#"[{"id": 1, "name": "A", "prot": 8081}]"#,
        &["index 0", "unknown field `prot`"],
    );
}

#[test]
fn a_field_written_twice_in_one_circle_exits_2_with_its_place_in_the_file() {
    // A JSON object keeps the last of two equal keys; the second port must
    // not silently win.
    assert_rejected(
        "[\n  {\"id\": 1, \"name\": \"A\", \"port\": 8081},\n  {\"id\": 2, \"name\": \"B\", \"port\": 8082, \"port\": 8083}\n]",
        &["index 1", "duplicate field `port`", "line 3 column"],
    );
}

#[test]
fn duplicate_id_port_name_and_queue_exit_2_naming_both_circles() {
    assert_rejected(
        r#"[{"id": 1, "name": "A", "port": 8081}, {"id": 1, "name": "B", "port": 8082}]"#,
        &["duplicate id 1", "\"A\"", "\"B\""],
    );
    assert_rejected(
        r#"[{"id": 1, "name": "A", "port": 8081}, {"id": 2, "name": "B", "port": 8081}]"#,
        &["duplicate port 8081", "index 1"],
    );
    assert_rejected(
        r#"[{"id": 1, "name": "A", "port": 8081}, {"id": 2, "name": "A", "port": 8082}]"#,
        &["duplicate name \"A\"", "index 1"],
    );
    assert_rejected(
        r#"[{"id": 1, "name": "Alpha Circle", "port": 8081}, {"id": 2, "name": "alpha-circle", "port": 8082}]"#,
        &["duplicate queue name \"alpha_circle\"", "index 1"],
    );
}

#[test]
fn empty_name_port_zero_and_empty_array_exit_2() {
    assert_rejected(
        r#"[{"id": 1, "name": "", "port": 8081}]"#,
        &["index 0", "name is empty"],
    );
    assert_rejected(
        r#"[{"id": 1, "name": "A", "port": 0}]"#,
        &["index 0", "port 0"],
    );
    assert_rejected("[]", &["empty"]);
    assert_rejected(r#"{"id": 1}"#, &["expected a JSON array"]);
}

#[test]
fn missing_file_exits_2_naming_it() {
    let sandbox = Sandbox::new();
    let mut cmd = sandbox.command();
    cmd.arg(sandbox.path().join("nope").join("circles.json"))
        .args(["--no-managed-redis", "--output", "plain"]);
    let (status, _, err) = run_to_end(cmd, Duration::from_secs(20));
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("nope/circles.json") && err.contains("No such file"),
        "{err}"
    );
}

#[test]
fn default_config_is_circles_json_in_the_current_directory() {
    let sandbox = Sandbox::new();
    let mut cmd = sandbox.command();
    cmd.args(["--no-managed-redis", "--output", "plain"]);
    let (status, _, err) = run_to_end(cmd, Duration::from_secs(20));
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("circles.json: cannot read"), "{err}");
    // Where a relative path was looked for (under systemd without
    // WorkingDirectory= that is /).
    let cwd = sandbox.path().display().to_string();
    assert!(
        err.contains(&format!("in the working directory {cwd}")),
        "{err}"
    );
}

#[test]
fn help_and_version_exit_0_and_bad_options_exit_2() {
    let sandbox = Sandbox::new();
    let mut cmd = sandbox.command();
    cmd.arg("--help");
    let (status, out, _) = run_to_end(cmd, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0));
    for option in [
        "--redis-url",
        "--data-dir",
        "--host",
        "--output",
        "--no-managed-redis",
    ] {
        assert!(out.contains(option), "{option} missing from --help:\n{out}");
    }
    // Environment variables are named, never shown with a value, set or not
    // (an unset one read `[env: NAME=]`, as if set to empty).
    assert!(
        out.contains("[env: CIRCLES_DATA_DIR]") && !out.contains("=]"),
        "{out}"
    );
    let mut cmd = sandbox.command();
    cmd.arg("-V");
    let (status, out, _) = run_to_end(cmd, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0));
    assert!(out.contains(env!("CARGO_PKG_VERSION")), "{out}");
    let mut cmd = sandbox.command();
    cmd.args(["--output", "fancy"]);
    let (status, _, err) = run_to_end(cmd, Duration::from_secs(20));
    assert_eq!(status.code(), Some(2), "{err}");
    // A duration past what any option takes: a usage error, no panic.
    let mut cmd = sandbox.command();
    cmd.args(["--worker-heartbeat", "10000000000000000000"]);
    let (status, _, err) = run_to_end(cmd, Duration::from_secs(20));
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("--worker-heartbeat") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn an_empty_environment_variable_of_an_option_exits_2_naming_the_variable() {
    let sandbox = Sandbox::new();
    let config = sandbox.circles(&[(1, "Alpha", 1)]);
    for (var, option) in [
        ("REDIS_URL", "--redis-url"),
        ("CIRCLES_DATA_DIR", "--data-dir"),
        ("CIRCLES_NO_MANAGED_REDIS", "--no-managed-redis"),
    ] {
        let mut cmd = sandbox.command();
        cmd.arg(&config).env(var, "");
        let (status, _, err) = run_to_end(cmd, Duration::from_secs(20));
        assert_eq!(status.code(), Some(2), "{var}: {err}");
        assert!(
            err.contains(&format!(
                "the environment variable {var} (for {option}) is set but empty"
            )),
            "{err}"
        );
    }
    // Only the options of the command being run count: `play` takes no
    // --redis-url, and an empty CIRCLES_TOKEN is its own.
    let mut cmd = sandbox.command();
    cmd.env("REDIS_URL", "").env("CIRCLES_TOKEN", "").args([
        "play",
        "--url",
        "ws://127.0.0.1:1/ws",
        "1",
    ]);
    let (status, _, err) = run_to_end(cmd, Duration::from_secs(20));
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("the environment variable CIRCLES_TOKEN (for --token) is set but empty")
            && !err.contains("REDIS_URL")
            && !err.contains("Usage: circles_orchestrator [OPTIONS] [CONFIG]"),
        "{err}"
    );
    let mut cmd = sandbox.command();
    cmd.env("REDIS_URL", "").arg("--help");
    let (status, out, _) = run_to_end(cmd, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "--help still answers");
    assert!(out.contains("--redis-url"), "{out}");
}

/// A circle with `principals` written as given (a JSON array text).
fn with_principals(principals: &str) -> String {
    format!(
        r#"[{{"id": 1, "name": "A", "port": 8081}}, {{"id": 2, "name": "B", "port": 8082, "principals": {principals}}}]"#
    )
}

const HASH_A: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const HASH_B: &str = "60303AE22B998861BCE3B28F33EEC1BE758A213C86C93C076DBE9F558C11C752";

#[test]
fn an_unknown_field_in_a_principal_exits_2_naming_the_circle_and_principal() {
    assert_rejected(
        &with_principals(&format!(
            r#"[{{"name": "ann", "token_sha256": "{HASH_A}", "role": "read", "token": "x"}}]"#
        )),
        &[
            "index 1",
            "id 2",
            "principal at index 0",
            "\"ann\"",
            "unknown field `token`",
        ],
    );
}

#[test]
fn a_bad_token_hash_exits_2_naming_the_principal_without_echoing_it() {
    let bad = "not-a-hash-but-maybe-a-token-pasted-by-mistake";
    let (code, err) = reject(&with_principals(&format!(
        r#"[{{"name": "ann", "token_sha256": "{HASH_A}", "role": "read"}}, {{"name": "bob", "token_sha256": "{bad}", "role": "write"}}]"#
    )));
    assert_eq!(code, 2, "{err}");
    for needle in [
        "index 1",
        "principal at index 1",
        "\"bob\"",
        "token_sha256",
        "64 hex",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from: {err}");
    }
    assert!(!err.contains(bad), "the bad value is echoed: {err}");
    assert!(!err.contains(HASH_A), "a hash is echoed: {err}");
    // One digit short is as wrong as text.
    assert_rejected(
        &with_principals(&format!(
            r#"[{{"name": "ann", "token_sha256": "{}", "role": "read"}}]"#,
            &HASH_A[..63]
        )),
        &["principal at index 0", "64 hex"],
    );
}

#[test]
fn a_duplicate_principal_name_in_a_circle_exits_2_naming_both() {
    assert_rejected(
        &with_principals(&format!(
            r#"[{{"name": "ann", "token_sha256": "{HASH_A}", "role": "read"}}, {{"name": "ann", "token_sha256": "{HASH_B}", "role": "write"}}]"#
        )),
        &[
            "index 1",
            "principal at index 1",
            "duplicate principal name",
            "principal at index 0",
        ],
    );
}

#[test]
fn an_unknown_role_exits_2_naming_the_principal_and_the_roles() {
    assert_rejected(
        &with_principals(&format!(
            r#"[{{"name": "ann", "token_sha256": "{HASH_A}", "role": "admin"}}]"#
        )),
        &[
            "principal at index 0",
            "\"ann\"",
            "unknown role \"admin\"",
            "\"read\" or \"write\"",
        ],
    );
}

#[test]
fn an_empty_principal_name_or_list_and_a_shared_token_exit_2() {
    assert_rejected(
        &with_principals(&format!(
            r#"[{{"name": " ", "token_sha256": "{HASH_A}", "role": "read"}}]"#
        )),
        &["principal at index 0", "name is empty"],
    );
    assert_rejected(&with_principals("[]"), &["index 1", "empty `principals`"]);
    // `null` is not "left out": it may be a template's hole.
    assert_rejected(
        &with_principals("null"),
        &[
            "index 1",
            "\"principals\" is null; leave the field out for an open circle",
        ],
    );
    assert_rejected(
        r#"[{"id": 1, "name": "A", "port": 8081, "redis": null}]"#,
        &[
            "index 0",
            "\"redis\" is null; leave the field out to use --redis-url",
        ],
    );
    let (code, err) = reject(&with_principals(&format!(
        r#"[{{"name": "ann", "token_sha256": "{HASH_B}", "role": "read"}}, {{"name": "bob", "token_sha256": "{}", "role": "write"}}]"#,
        HASH_B.to_lowercase()
    )));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("same token_sha256 as principal at index 0"),
        "{err}"
    );
    assert!(
        !err.to_lowercase().contains(&HASH_B.to_lowercase()),
        "{err}"
    );
}

#[test]
fn a_zero_delivered_ttl_or_one_longer_than_the_result_ttl_exits_2_naming_the_options() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "circles.json",
        r#"[{"id": 1, "name": "Alpha", "port": 8081}]"#,
    );
    for (args, needles) in [
        (&["--delivered-ttl", "0s"][..], &["--delivered-ttl"][..]),
        (
            &["--delivered-ttl", "2h"][..],
            &["--delivered-ttl", "--result-ttl"][..],
        ),
        (
            &["--result-ttl", "30s", "--delivered-ttl", "1m"][..],
            &["--delivered-ttl", "--result-ttl"][..],
        ),
    ] {
        let mut cmd = sandbox.command();
        cmd.arg(&path)
            .args(["--output", "plain", "--no-managed-redis"])
            .args(["--redis-url", "redis://127.0.0.1:1"])
            .args(args);
        let (status, _, err) = run_to_end(cmd, Duration::from_secs(20));
        assert_eq!(status.code(), Some(2), "{args:?}: {err}");
        for needle in needles {
            assert!(
                err.contains(needle),
                "{args:?}: {needle} missing from: {err}"
            );
        }
    }
}

#[test]
fn a_file_where_a_data_directory_must_be_exits_2_naming_it() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "circles.json",
        r#"[{"id": 1, "name": "Alpha", "port": 8081}]"#,
    );
    // The data dir itself, then a circle's directory in it, is a file.
    // A Redis that answers: a circle's directory is made after it is found.
    let redis = testkit::RedisServer::start();
    let data = sandbox.path().join("data");
    std::fs::write(&data, "not a directory").expect("write");
    for (dir, in_the_way, what) in [
        (data.clone(), data.clone(), "the data dir"),
        (
            sandbox.path().join("data2"),
            sandbox.path().join("data2/1"),
            "the data directory of circle \"Alpha\" (id 1)",
        ),
    ] {
        if in_the_way != dir {
            std::fs::create_dir_all(&dir).expect("mkdir");
            std::fs::write(&in_the_way, "not a directory").expect("write");
        }
        let mut cmd = sandbox.command();
        cmd.arg(&path)
            .args(["--output", "plain", "--no-managed-redis"])
            .args(["--redis-url", &redis.url()])
            .arg("--data-dir")
            .arg(&dir);
        let (status, _, err) = run_to_end(cmd, Duration::from_secs(20));
        assert_eq!(status.code(), Some(2), "{err}");
        let says = format!(
            "cannot create {what} {}: {} is a file, where a directory must be",
            in_the_way.display(),
            in_the_way.display()
        );
        assert!(err.contains(&says), "{says:?} missing from: {err}");
    }
}

/// An option's environment variable counts where the option is not given
/// (README "The orchestrator"): where it is given, an empty variable of it
/// does not refuse the command.
#[test]
fn an_empty_environment_variable_does_not_refuse_an_option_given_on_the_command_line() {
    let sandbox = Sandbox::new();
    // play: --token given, CIRCLES_TOKEN exported empty. Nothing listens on
    // port 1, so play gets past its options and exits 1 (cannot connect).
    let mut cmd = sandbox.command();
    cmd.env("CIRCLES_TOKEN", "").args([
        "play",
        "--token",
        "abc",
        "--url",
        "ws://127.0.0.1:1/ws",
        "1",
    ]);
    let (status, _, err) = run_to_end(cmd, Duration::from_secs(20));
    assert!(
        !err.contains("is set but empty"),
        "--token was given, yet the empty CIRCLES_TOKEN refused it: {err}"
    );
    assert_eq!(status.code(), Some(1), "{err}");

    // The orchestrator: --redis-url given, REDIS_URL exported empty. A URL
    // nothing answers and no managed Redis: exit 1 naming what was tried.
    let config = sandbox.circles(&[(1, "Alpha", 1)]);
    let mut cmd = sandbox.command();
    cmd.arg(&config)
        .env("REDIS_URL", "")
        .args(["--redis-url", "redis://127.0.0.1:1", "--no-managed-redis"])
        .args(["--output", "plain"]);
    let (status, _, err) = run_to_end(cmd, Duration::from_secs(20));
    assert!(
        !err.contains("is set but empty"),
        "--redis-url was given, yet the empty REDIS_URL refused it: {err}"
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("redis is unreachable"), "{err}");
}

/// DESIGN §1: exit 2 for bad configuration or usage. A `--log-file` that is
/// a directory, or under a file, is a bad option the user typed, as a data
/// dir with a file in its way is (exit 2, `a_file_where_a_data_directory_must_be_exits_2_naming_it`);
/// it is found before Redis is looked for, and named.
#[test]
fn a_log_file_that_is_a_directory_or_under_a_file_exits_2_naming_it() {
    let sandbox = Sandbox::new();
    let config = sandbox.circles(&[(1, "Alpha", 1)]);
    let dir = sandbox.path().join("logs");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let file = sandbox.write("plainfile", "x");
    for log_file in [dir.clone(), file.join("x.log")] {
        let mut cmd = sandbox.command();
        cmd.arg(&config)
            .args(["--output", "live", "--no-managed-redis"])
            .args(["--redis-url", "redis://127.0.0.1:1"])
            .arg("--data-dir")
            .arg(sandbox.path().join("data"))
            .arg("--log-file")
            .arg(&log_file);
        let (status, _, err) = run_to_end(cmd, Duration::from_secs(20));
        assert!(
            err.contains(&log_file.display().to_string())
                || err.contains(&file.display().to_string()),
            "the message does not name the log file: {err}"
        );
        assert_eq!(
            status.code(),
            Some(2),
            "--log-file {}: {err}",
            log_file.display()
        );
    }
}

/// A circles file that never ends (`/dev/zero`, a pipe that keeps writing,
/// a huge file given by mistake) is refused once 128 MiB are read, not read
/// into memory to its end, by the orchestrator and by `token new`. Run under
/// a 1 GiB address-space limit, so that a read without a bound fails with
/// "out of memory" instead of taking the machine's memory.
#[test]
fn a_circles_file_that_never_ends_is_refused_without_reading_it_all() {
    use std::os::unix::process::ExitStatusExt as _;
    let sandbox = Sandbox::new();
    for args in [
        vec!["/dev/zero", "--output", "plain", "--no-managed-redis"],
        vec![
            "token",
            "new",
            "--circle",
            "1",
            "--name",
            "x",
            "--role",
            "read",
            "/dev/zero",
        ],
    ] {
        // The binary under `ulimit -v` (1 GiB), with the sandbox's environment.
        let bin = sandbox.command();
        let mut cmd = std::process::Command::new("sh");
        cmd.current_dir(sandbox.path())
            .stdin(std::process::Stdio::null())
            .arg("-c")
            .arg("ulimit -v 1048576 && exec \"$0\" \"$@\"")
            .arg(bin.get_program())
            .args(&args);
        for (key, value) in bin.get_envs() {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        let (status, _, err) = run_to_end(cmd, Duration::from_secs(30));
        assert_eq!(
            status.code(),
            Some(2),
            "{args:?}: {status:?} (signal {:?}): {}",
            status.signal(),
            &err[..err.len().min(600)]
        );
        assert!(err.contains("/dev/zero"), "{err}");
        // Read until the allocation failed: under the limit it says "out of
        // memory"; without one it takes all the machine has.
        assert!(
            !err.contains("out of memory"),
            "{args:?}: the file was read until memory ran out: {err}"
        );
    }
}

/// A dangling symbolic link where the data dir (or a circle's directory in
/// it) must be is in the way as a file is: exit 2, naming the link and
/// where it points, not the OS's bare "File exists" (exit 1).
#[test]
fn a_dangling_symlink_where_a_data_directory_must_be_exits_2_naming_it() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "circles.json",
        r#"[{"id": 1, "name": "Alpha", "port": 8081}]"#,
    );
    let redis = testkit::RedisServer::start();
    let nowhere = sandbox.path().join("gone");
    let data2 = sandbox.path().join("data2");
    std::fs::create_dir_all(&data2).expect("mkdir");
    for (dir, link) in [
        (sandbox.path().join("data"), sandbox.path().join("data")),
        (data2.clone(), data2.join("1")),
    ] {
        std::os::unix::fs::symlink(&nowhere, &link).expect("symlink");
        let mut cmd = sandbox.command();
        cmd.arg(&path)
            .args(["--output", "plain", "--no-managed-redis"])
            .args(["--redis-url", &redis.url()])
            .arg("--data-dir")
            .arg(&dir);
        let (status, _, err) = run_to_end(cmd, Duration::from_secs(20));
        assert_eq!(status.code(), Some(2), "{err}");
        let link = link.display().to_string();
        assert!(
            err.contains(&format!(
                "{link} is a symbolic link to {}",
                nowhere.display()
            )),
            "the link and its target are not named: {err}"
        );
    }
}

/// A circle on the port of a loopback `--redis-url` can never bind it (the
/// managed redis-server, started first, holds it): a usage error naming
/// the circle and the option, as a circle on the admin port is, not a
/// managed server started and stopped again and then "already in use (by
/// another program, or another circles_orchestrator)", exit 1.
#[test]
fn a_circle_on_the_port_of_the_redis_url_exits_2_naming_both() {
    let sandbox = Sandbox::new();
    let redis_port = common::port();
    let path = sandbox.write(
        "circles.json",
        &format!(r#"[{{"id": 1, "name": "Alpha", "port": {redis_port}}}]"#),
    );
    let mut cmd = sandbox.command();
    cmd.arg(&path)
        .args(["--output", "plain"])
        .args(["--redis-url", &format!("redis://127.0.0.1:{redis_port}")])
        .arg("--data-dir")
        .arg(sandbox.data_dir());
    let (status, _, err) = run_to_end(cmd, Duration::from_secs(30));
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("circle \"Alpha\" (id 1)")
            && err.contains(&format!("port {redis_port}"))
            && err.contains("--redis-url"),
        "{err}"
    );
    assert!(
        !err.contains("started a managed redis-server"),
        "a managed redis-server was started for nothing: {err}"
    );
}

/// No `HOME` and no home directory for the user: the default data dir
/// cannot be found, and the message asks for `--data-dir`: a usage error
/// (DESIGN §1: exit 2 for bad configuration or usage), not a runtime
/// failure. Needs root, to run as a user the system does not know.
#[test]
fn no_home_for_the_default_data_dir_exits_2_asking_for_data_dir() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    use std::os::unix::process::CommandExt as _;
    let sandbox = Sandbox::new();
    // Made by this process: owned by its user.
    if std::fs::metadata(sandbox.path()).expect("stat").uid() != 0 {
        eprintln!("skipped: needs root to run as an unknown user");
        return;
    }
    std::fs::set_permissions(sandbox.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let path = sandbox.write(
        "circles.json",
        r#"[{"id": 1, "name": "Alpha", "port": 8081}]"#,
    );
    let mut cmd = sandbox.command();
    cmd.env_remove("HOME")
        .uid(54_321)
        .gid(54_321)
        .arg(&path)
        .args(["--output", "plain", "--no-managed-redis"])
        .args(["--redis-url", "redis://127.0.0.1:1"]);
    let (status, _, err) = run_to_end(cmd, Duration::from_secs(20));
    assert!(err.contains("pass --data-dir"), "{err}");
    assert_eq!(status.code(), Some(2), "{err}");
}

/// Port 0 is no port a Redis can be reached on (a redis-server given it
/// listens nowhere): a `--redis-url`, or a circle's `redis`, with it is a
/// bad URL, exit 2 naming it (README: "A bad URL exits 2 naming the
/// circle"), not a managed redis-server started on port 0 and "another
/// program holds port 0: free it".
#[test]
fn a_redis_url_on_port_0_exits_2_naming_it() {
    let sandbox = Sandbox::new();
    let config = sandbox.circles(&[(1, "Alpha", common::port())]);
    let mut cmd = sandbox.command();
    cmd.arg(&config)
        .args(["--output", "plain", "--redis-url", "redis://127.0.0.1:0"])
        .arg("--data-dir")
        .arg(sandbox.data_dir());
    let (status, _, err) = run_to_end(cmd, Duration::from_secs(30));
    assert!(err.contains("--redis-url redis://127.0.0.1:0"), "{err}");
    assert!(!err.contains("free it"), "{err}");
    assert_eq!(status.code(), Some(2), "{err}");

    let config = sandbox.write(
        "own.json",
        &format!(
            r#"[{{"id": 1, "name": "Alpha", "port": {}, "redis": "redis://127.0.0.1:0"}}]"#,
            common::port()
        ),
    );
    let redis = testkit::RedisServer::start();
    let mut cmd = sandbox.command();
    cmd.arg(&config)
        .args(["--output", "plain", "--no-managed-redis"])
        .args(["--redis-url", &redis.url()])
        .arg("--data-dir")
        .arg(sandbox.data_dir());
    let (status, _, err) = run_to_end(cmd, Duration::from_secs(30));
    assert!(
        err.contains("index 0") && err.contains("\"redis\""),
        "{err}"
    );
    assert_eq!(status.code(), Some(2), "{err}");
}
