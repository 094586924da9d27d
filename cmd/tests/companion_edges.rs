//! The companion commands against servers that misbehave: an admin
//! endpoint that closes its connection partway through its answer, or
//! that is no orchestrator at all. A program that scripts against
//! `status --json` must never get a cut or foreign body with exit 0.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::{Sandbox, run_to_end};

/// Serves one HTTP connection on a free port with `answer` (bytes as
/// given), then closes it; returns the address.
fn answer_once(answer: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().expect("accept");
        let mut request = [0u8; 4096];
        let _ = socket.read(&mut request);
        let _ = socket.write_all(answer);
        // Dropped: FIN after what was written.
    });
    addr
}

/// The body promised 4000 bytes; 13 came before the orchestrator went away.
const CUT_SHORT: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n{\"redis_url\":";

#[test]
fn status_json_from_an_answer_cut_short_fails_instead_of_printing_half_a_snapshot() {
    let sandbox = Sandbox::new();
    let addr = answer_once(CUT_SHORT);
    let mut cmd = sandbox.command();
    cmd.args(["status", "--admin", &addr, "--json"]);
    let (code, stdout, stderr) = run_to_end(cmd, Duration::from_secs(30));
    assert!(
        !code.success(),
        "exit {code:?} with a cut answer; stdout {stdout:?}, stderr {stderr:?}"
    );
    assert!(stdout.is_empty(), "printed a cut snapshot: {stdout:?}");
}

#[test]
fn status_json_from_something_that_is_not_an_orchestrator_fails_as_the_table_does() {
    let sandbox = Sandbox::new();
    let answer: &'static [u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 15\r\n\r\n<html>hi</html>";
    for json in [false, true] {
        let addr = answer_once(answer);
        let mut cmd = sandbox.command();
        cmd.args(["status", "--admin", &addr]);
        if json {
            cmd.arg("--json");
        }
        let (code, stdout, stderr) = run_to_end(cmd, Duration::from_secs(30));
        assert_eq!(code.code(), Some(1), "--json {json}: {stdout:?} {stderr:?}");
        assert!(stdout.is_empty(), "--json {json}: printed {stdout:?}");
        assert!(
            stderr.contains("is it an orchestrator?"),
            "--json {json}: {stderr}"
        );
    }
}
