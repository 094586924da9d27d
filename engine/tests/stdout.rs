//! `print` and `debug` are captured, never written to the process's stdout
//! (which the orchestrator's status table owns). The test binary re-runs this
//! test as a child that prints from scripts; the parent reads the child's
//! stdout and finds none of it.

mod common;

use std::process::Command;

const CHILD_ENV: &str = "ENGINE_STDOUT_CHILD";
const TEST_NAME: &str = "script_print_and_debug_never_reach_the_process_stdout";
const MARK: &str = "script-output-marker";

#[test]
fn script_print_and_debug_never_reach_the_process_stdout() {
    if std::env::var(CHILD_ENV).is_ok() {
        let c = common::Circle::new();
        let o = c.ok(&format!(
            "print(\"{MARK} print\"); debug(\"{MARK} debug\"); 1"
        ));
        // Captured where it belongs.
        assert!(o.printed.contains(&format!("{MARK} print")));
        assert!(o.printed.contains(&format!("{MARK} debug")));
        println!("child done");
        return;
    }
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("child done"),
        "the child ran the scripts:\n{stdout}"
    );
    assert!(
        !stdout.contains(MARK),
        "script output leaked to stdout:\n{stdout}"
    );
    assert!(
        !stderr.contains(MARK),
        "script output leaked to stderr:\n{stderr}"
    );
}
