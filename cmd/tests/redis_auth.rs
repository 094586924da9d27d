//! Redis with a password and with an ACL user, end to end through the binary:
//! `play` gets its result, the password never appears in any output (the
//! header shows the redacted URL), and a wrong password exits non-zero
//! saying authentication failed, naming the redacted URL.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Orchestrator, Sandbox, port, run_to_end, ws};

const PASSWORD: &str = "pw-R3d1s-9f4e7a-never-printed";

/// Sends inline commands to the Redis at `port` on one connection; each
/// must answer `+OK`.
fn configure(port: u16, commands: &[&str]) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    for command in commands {
        stream
            .write_all(format!("{command}\r\n").as_bytes())
            .expect("send to redis");
        let mut line = String::new();
        reader.read_line(&mut line).expect("redis reply");
        assert_eq!(line, "+OK\r\n", "redis answered {command:?} with {line:?}");
    }
}

/// Starts the orchestrator on one circle against `redis_url`, plays a script
/// through the WebSocket, and checks that `secret` appears in no output.
fn play_through(redis_url: &str, redis_port: u16, secret: &str) {
    let sandbox = Sandbox::new();
    let circle = port();
    let config = sandbox.circles(&[(1, "Alpha", circle)]);
    let mut o = Orchestrator::start(&sandbox, &config, redis_url, &[]);
    o.wait_table();
    let mut play = sandbox.command();
    play.args(["play", "--url", &ws(circle), "db::insert(7); 40 + 2"]);
    let (status, out, err) = run_to_end(play, Duration::from_secs(30));
    assert_eq!((status.code(), out.as_str()), (Some(0), "42\n"), "{err}");
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
    let (stdout, stderr) = (o.stdout(), o.stderr());
    assert!(
        stdout.contains(&format!("redis://127.0.0.1:{redis_port}")),
        "the header shows the redacted URL: {stdout}"
    );
    for output in [&stdout, &stderr, &out, &err] {
        assert!(!output.contains(secret), "the secret was printed: {output}");
    }
}

#[test]
fn a_redis_with_a_password_serves_and_the_password_is_never_printed() {
    let redis = testkit::RedisServer::start();
    configure(
        redis.port(),
        &[&format!("CONFIG SET requirepass {PASSWORD}")],
    );
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}", redis.port());
    play_through(&url, redis.port(), PASSWORD);
}

#[test]
fn a_redis_acl_user_serves_and_its_password_is_never_printed() {
    let redis = testkit::RedisServer::start();
    configure(
        redis.port(),
        &[
            &format!("ACL SETUSER alice on >{PASSWORD} ~* &* +@all"),
            "ACL SETUSER default off",
        ],
    );
    let url = format!("redis://alice:{PASSWORD}@127.0.0.1:{}", redis.port());
    play_through(&url, redis.port(), PASSWORD);
}

#[test]
fn a_wrong_redis_password_exits_non_zero_naming_the_redacted_url() {
    let redis = testkit::RedisServer::start();
    configure(
        redis.port(),
        &[&format!("CONFIG SET requirepass {PASSWORD}")],
    );
    let wrong = format!("{PASSWORD}-wrong");
    let url = format!("redis://:{wrong}@127.0.0.1:{}", redis.port());
    let sandbox = Sandbox::new();
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    let cmd = sandbox.serve_command(&config, &url, &sandbox.data_dir());
    let (status, out, err) = run_to_end(cmd, Duration::from_secs(30));
    assert!(!status.success(), "{out}\n{err}");
    assert!(
        err.contains(&format!("redis://127.0.0.1:{}", redis.port())),
        "{err}"
    );
    assert!(
        err.to_lowercase().contains("authentication failed"),
        "{err}"
    );
    for output in [&out, &err] {
        assert!(
            !output.contains(PASSWORD),
            "the password was printed: {output}"
        );
    }
}
