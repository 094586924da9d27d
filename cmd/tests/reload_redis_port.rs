//! A reload is validated as a start is: a circle on the port of a loopback
//! `--redis-url` (with the managed Redis allowed) is refused with an error
//! naming the port and `--redis-url`, as at start
//! (`config_errors.rs::a_circle_on_the_port_of_the_redis_url_exits_2_naming_both`),
//! not applied to fail at the bind of Redis' own port ("already in use").

mod common;

use std::time::Duration;

use common::{Orchestrator, Sandbox, port};

#[test]
fn a_reload_adding_a_circle_on_the_port_of_the_redis_url_is_refused_as_at_start() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let redis_port = redis.port();
    let a = port();
    let config = sandbox.circles(&[(1, "Alpha", a)]);
    // As a start the check applies to: the managed redis-server allowed
    // (the test Redis answers, so none is started).
    let mut cmd = sandbox.command();
    cmd.arg(&config)
        .args(["--redis-url", &redis.url()])
        .arg("--data-dir")
        .arg(sandbox.data_dir())
        .args(["--output", "plain"]);
    let mut o = Orchestrator::spawn(cmd);
    o.wait_table();
    sandbox.circles(&[(1, "Alpha", a), (2, "Beta", redis_port)]);
    o.signal("HUP");
    o.wait_stdout("reload ", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    let stdout = o.stdout();
    let line = stdout
        .lines()
        .find(|l| l.contains("reload "))
        .expect("the reload line")
        .to_owned();
    assert!(o.stop().success());
    assert!(
        line.contains("reload failed") && line.contains("--redis-url"),
        "a reload put a circle on Redis' port {redis_port} (refused at start):\n{line}\n\n{stdout}"
    );
}
