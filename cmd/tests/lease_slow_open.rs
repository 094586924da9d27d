//! A standby takes the lease, then opens the circle's database: the lease
//! must stay its own while it opens (README: "it opens the circle's
//! database only once the lease is free (so shared storage is never opened
//! twice), then takes over"). A database whose open takes longer than the
//! lease lives (one with much data and no checkpoint, read in full) must
//! not let a second standby take the circle over meanwhile, leaving both
//! with the database open.

mod common;

use std::time::{Duration, Instant};

use common::tasks::{conn, lease, submit, wait_field};
use common::{Sandbox, port};

const WAIT: Duration = Duration::from_secs(60);

/// A database at `dir` with about `mb` MB of records and no checkpoint.
fn big_database(dir: &std::path::Path, mb: usize) {
    let db = ourdb::OurDb::open(dir, ourdb::Config::default()).expect("open");
    let value = vec![b'x'; 1000];
    for _ in 0..mb {
        let mut batch = ourdb::Batch::new();
        for _ in 0..1000 {
            batch.insert(value.clone());
        }
        db.commit_unsynced(batch).expect("commit");
    }
    db.sync().expect("sync");
    drop(db);
    let _ = std::fs::remove_file(dir.join("checkpoint"));
}

#[test]
fn a_standby_keeps_the_lease_it_took_while_it_opens_a_slow_database() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    let (wk1, wk2, wk3) = (
        sandbox.path().join("wk1"),
        sandbox.path().join("wk2"),
        sandbox.path().join("wk3"),
    );
    big_database(&wk2.join("1"), 300);
    let mut first = common::spawn_fast_worker(&sandbox, &config, &redis.url(), &wk1, &[]);
    first.wait_table();
    first.wait_stdout("Running", WAIT);
    let mut second =
        common::spawn_fast_worker(&sandbox, &config, &redis.url(), &wk2, &["--standby"]);
    second.wait_stdout("tandby", WAIT);
    let mut conn = conn(&redis);
    first.child.kill().expect("kill -9 the first");
    let _ = first.child.wait();
    let deadline = Instant::now() + WAIT;
    while lease(&mut conn).map(|l| l.pid) != Some(second.pid()) {
        assert!(Instant::now() < deadline, "the second never took over");
        std::thread::sleep(Duration::from_millis(2));
    }
    let took = Instant::now();
    // A third standby, started once the second holds the lease.
    let mut third =
        common::spawn_fast_worker(&sandbox, &config, &redis.url(), &wk3, &["--standby"]);
    submit(&mut conn, "t", "\"t\"");
    wait_field(&mut conn, "t", "status", "completed");
    let ran_after = took.elapsed();
    let holders_now = lease(&mut conn);
    let second_open = ourdb::OurDb::is_open_elsewhere(wk2.join("1")).expect("probe");
    let third_open = ourdb::OurDb::is_open_elsewhere(wk3.join("1")).expect("probe");
    second.stop();
    third.stop();
    assert!(
        !(second_open && third_open),
        "both standbys have the circle's database open: the second took the lease, let it \
         expire while it opened its database, and the third took the circle over (lease now \
         {holders_now:?}, second pid {}, third pid {}; t ran {ran_after:?} after the take-over)",
        second.pid(),
        third.pid()
    );
    assert_eq!(holders_now.map(|l| l.pid), Some(second.pid()));
}
