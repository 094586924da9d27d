//! The `play` companion: sends a script to a running circle and prints the
//! result, or the error with a nonzero exit code.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Orchestrator, Sandbox, port, run_to_end, ws};

fn play_cmd(sandbox: &Sandbox, args: &[&str]) -> Command {
    let mut cmd = sandbox.command();
    cmd.arg("play").args(args);
    cmd
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
    let mut child = play_cmd(&sandbox, &["-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn play");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"db::exists(1)")
        .expect("write stdin");
    let done = child.wait_with_output().expect("play output");
    assert_eq!(String::from_utf8_lossy(&done.stdout), "false\n", "{done:?}");

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

    sandbox.circles(&[(1, "Alpha", dead)]);
    let (status, _, err) = run_to_end(
        play_cmd(&sandbox, &["--circle", "Gamma", "1"]),
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("no circle named or numbered \"Gamma\"") && err.contains("Alpha (id 1)"),
        "{err}"
    );
}
