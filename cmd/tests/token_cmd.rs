//! `circles_orchestrator token new`: a fresh token printed once, and the
//! circles.json element holding its SHA-256, which the orchestrator accepts.

mod common;

use std::time::Duration;

use common::{Sandbox, exit_with_stderr, exit_with_stdout, run_to_end};
use sha2::Digest as _;

/// Runs `token new` with `args` on the sandbox's circles.json; (code, stdout, stderr).
fn token_new(sandbox: &Sandbox, args: &[&str]) -> (i32, String, String) {
    let mut cmd = sandbox.command();
    cmd.args(["token", "new"]).args(args);
    let (status, out, err) = run_to_end(cmd, Duration::from_secs(20));
    (status.code().expect("exit code"), out, err)
}

/// Runs `token new` with `args` and asserts a refusal: exit code 2, each
/// of `needles` in stderr, no token on stdout. Its stderr.
fn refused(sandbox: &Sandbox, args: &[&str], needles: &[&str]) -> String {
    let (code, out, err) = token_new(sandbox, args);
    assert_eq!(code, 2, "{args:?}: {err}");
    for needle in needles {
        assert!(err.contains(needle), "{args:?}: {needle:?} not in {err}");
    }
    assert!(out.is_empty(), "no token for a refusal: {out}");
    err
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn token_new_prints_a_token_and_the_element_with_its_sha256_which_the_config_accepts() {
    let sandbox = Sandbox::new();
    sandbox.circles(&[(1, "Alpha", 8081), (2, "Beta Circle", 8082)]);
    let (code, out, err) = token_new(
        &sandbox,
        &["--circle", "2", "--name", "ann", "--role", "read"],
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "token and element: {out}");
    let token = lines[0];
    assert!(token.len() >= 22, "at least 128 bits: {token}");
    assert!(
        token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "URL-safe: {token}"
    );
    let element: serde_json::Value = serde_json::from_str(lines[1]).expect("the element is JSON");
    assert_eq!(element["name"], "ann");
    assert_eq!(element["role"], "read");
    assert_eq!(
        element["token_sha256"],
        hex(&sha2::Sha256::digest(token.as_bytes()))
    );
    assert!(
        err.contains("Beta Circle") && err.contains("shown once"),
        "{err}"
    );

    // The element parses back: put it into the circle, and a second
    // principal (by name this time) can be made beside it.
    let config = format!(
        r#"[{{"id": 1, "name": "Alpha", "port": 8081}}, {{"id": 2, "name": "Beta Circle", "port": 8082, "principals": [{}]}}]"#,
        lines[1]
    );
    sandbox.write("circles.json", &config);
    let (code, out2, err) = token_new(
        &sandbox,
        &[
            "--circle",
            "beta circle",
            "--name",
            "bob",
            "--role",
            "write",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_ne!(out2.lines().next(), Some(token), "every token is fresh");
    assert!(out2.contains(r#""role": "write""#), "{out2}");
}

#[test]
fn token_new_refuses_an_unknown_circle_a_taken_name_and_an_unknown_role_with_exit_2() {
    let sandbox = Sandbox::new();
    let hash = "ab".repeat(32);
    sandbox.write(
        "circles.json",
        &format!(
            r#"[{{"id": 1, "name": "Alpha", "port": 8081, "principals": [{{"name": "ann", "token_sha256": "{hash}", "role": "read"}}]}}]"#
        ),
    );
    refused(
        &sandbox,
        &["--circle", "Gamma", "--name", "x", "--role", "read"],
        &["no circle named or numbered \"Gamma\"", "Alpha"],
    );
    let err = refused(
        &sandbox,
        &["--circle", "1", "--name", "ann", "--role", "write"],
        &["already has a principal named \"ann\""],
    );
    assert!(!err.contains(&hash), "{err}");
    refused(
        &sandbox,
        &["--circle", "1", "--name", "bob", "--role", "admin"],
        &["admin"],
    );
    // "2" is one circle's id and the other's name: neither gets a token.
    sandbox.write(
        "circles.json",
        r#"[{"id": 1, "name": "2", "port": 8081}, {"id": 2, "name": "Beta", "port": 8082}]"#,
    );
    refused(
        &sandbox,
        &["--circle", "2", "--name", "x", "--role", "read"],
        &["\"2\" could mean", "\"Beta\" (id 2)"],
    );
    // A broken circles file is the usual circles.json error.
    sandbox.write("circles.json", "[");
    let (code, _, err) = token_new(
        &sandbox,
        &["--circle", "1", "--name", "bob", "--role", "read"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("circles.json") && err.contains("invalid JSON"),
        "{err}"
    );
}

/// `token admin`, and `token new` for circle 1.
const BOTH_COMMANDS: [&[&str]; 2] = [
    &["token", "admin"],
    &[
        "token", "new", "--circle", "1", "--name", "ann", "--role", "read",
    ],
];

/// A token that cannot be written (a full device) fails the command with
/// exit 1 and a line saying why, after the note on stderr; never a panic.
#[test]
fn a_token_written_to_a_full_device_exits_1_saying_so_without_a_panic() {
    let sandbox = Sandbox::new();
    sandbox.circles(&[(1, "Alpha", 8081)]);
    for args in BOTH_COMMANDS {
        let mut cmd = sandbox.command();
        cmd.args(args);
        let (code, err) = exit_with_stdout(cmd, common::dev_full());
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            err.starts_with("The token below is shown once")
                && err.ends_with(
                    "\ncircles_orchestrator: error: cannot write the token to stdout: \
                     No space left on device (os error 28)\n"
                ),
            "{args:?}: {err}"
        );
    }
}

/// A stderr that cannot be written (a full device) loses the note there,
/// not the token: it still reaches stdout and the command exits 0.
#[test]
fn a_token_is_printed_even_when_stderr_is_a_full_device() {
    let sandbox = Sandbox::new();
    sandbox.circles(&[(1, "Alpha", 8081)]);
    for args in BOTH_COMMANDS {
        let mut cmd = sandbox.command();
        cmd.args(args);
        let (code, out) = exit_with_stderr(cmd, common::dev_full());
        assert_eq!(code, Some(0), "{args:?}: {out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{args:?}: {out}");
        assert!(
            lines[0].len() >= 40
                && lines[0]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{args:?}: {out}"
        );
    }
}
