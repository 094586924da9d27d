//! A crash right after a reported success loses nothing (Sync durability):
//! a child process runs scripts, reports each success on stdout, and is
//! SIGKILLed mid-stream; the parent reopens the database and finds every
//! reported write.
//!
//! The same test function plays both roles: with `ENGINE_CRASH_CHILD_DIR` set
//! it is the child (runs until killed), otherwise the parent.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use engine::{CircleEngine, Limits, RunControl};
use ourdb::Durability;

/// Prefix of the child's "committed" reports.
const MARK: &str = "@@committed ";
const CHILD_ENV: &str = "ENGINE_CRASH_CHILD_DIR";
const TEST_NAME: &str = "success_reported_before_a_kill_survives_in_sync_mode";

fn child(dir: &str) -> ! {
    let engine = CircleEngine::new(
        common::open(std::path::Path::new(dir), Durability::Sync),
        Limits::default(),
    );
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        let script = format!(
            "let id = db::insert(#{{ n: {i} }}); db::update(id, #{{ n: {i}, done: true }}); id"
        );
        let o = common::run_with(&engine, &script, &RunControl::default()).expect("child script");
        // Reported only after run returned: the commit is durable by now.
        writeln!(out, "{MARK}{i} {}", o.output).expect("write to parent");
        out.flush().expect("flush to parent");
    }
    unreachable!("the parent kills the child")
}

#[test]
fn success_reported_before_a_kill_survives_in_sync_mode() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut proc = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let mut lines = BufReader::new(proc.stdout.take().expect("child stdout")).lines();
    let mut reported: Vec<(u64, u32)> = Vec::new();
    while reported.len() < 25 {
        let line = lines
            .next()
            .expect("child ended before reporting enough")
            .expect("read child");
        // libtest prints its own text too, possibly on the same line.
        let Some(at) = line.find(MARK) else { continue };
        let rest = &line[at + MARK.len()..];
        let mut parts = rest.split(' ');
        let i: u64 = parts.next().and_then(|s| s.parse().ok()).expect("index");
        let id: u32 = parts.next().and_then(|s| s.parse().ok()).expect("id");
        reported.push((i, id));
    }
    proc.kill().expect("SIGKILL the child");
    proc.wait().expect("reap the child");

    let db = common::open(dir.path(), Durability::Sync);
    let engine = CircleEngine::new(db, Limits::default());
    for (i, id) in &reported {
        let o = common::run_with(
            &engine,
            &format!("let v = db::get({id}); [v.n, v.done]"),
            &RunControl::default(),
        )
        .expect("read back");
        assert_eq!(
            o.output,
            format!("[{i}, true]"),
            "record {id} of script {i}"
        );
    }
    // Ids were handed out densely, in order.
    let ids: Vec<u32> = reported.iter().map(|(_, id)| *id).collect();
    assert_eq!(ids, (1..=25).collect::<Vec<u32>>());
}
