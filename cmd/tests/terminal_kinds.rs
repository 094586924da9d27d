//! The default output (`--output auto`) on terminals other than a plain
//! xterm-like window: a pseudo-terminal whose size nobody set (0 × 0, as
//! `script`, `docker run -t`, CI runners and `ssh -t` from a pipe give),
//! and a `TERM=dumb` terminal (Emacs `M-x shell`, `M-x compile`), which
//! cannot move its cursor. The orchestrator runs under `script(1)`, so its
//! stdout is a real pty, and the bytes it wrote are checked as written.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::tmux::Tmux;
use common::{BIN, Sandbox, port};

/// Runs the orchestrator on `config` in a fresh pty (size `stty` says, or
/// none) with `TERM=term` (which may name more variables after the
/// terminal's name), stops it with SIGINT after `secs` seconds and
/// returns every byte it wrote to the terminal.
fn run_in_pty(
    sandbox: &Sandbox,
    config: &std::path::Path,
    redis_url: &str,
    stty: Option<&str>,
    term: &str,
    secs: u32,
) -> String {
    let size = stty.map(|s| format!("stty {s}; ")).unwrap_or_default();
    let command = format!(
        "{size}cd {dir} && HOME={dir} TERM={term} CIRCLES_ADMIN=off timeout --preserve-status -s INT {secs} {BIN} \
         {config} --redis-url {redis_url} --data-dir {data} --no-managed-redis --refresh 200ms; \
         echo EXIT=$?",
        dir = sandbox.path().display(),
        config = config.display(),
        data = sandbox.data_dir().display(),
    );
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .stdin(Stdio::null())
        .env_remove("REDIS_URL")
        .env_remove("CIRCLES_DATA_DIR")
        .output()
        .expect("script(1) from util-linux must be installed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The last 1500 bytes of `out` (a char boundary), for a failure message.
fn tail(out: &str) -> &str {
    let mut at = out.len().saturating_sub(1500);
    while !out.is_char_boundary(at) {
        at += 1;
    }
    &out[at..]
}

/// A pty whose size was never set reports 0 columns and 0 rows. The live
/// table must still show the circles (the size is unknown, not zero): as it
/// is, every frame is cut to 0 lines of 0 columns and the final table to
/// empty lines, so the user sees nothing at all, ever.
#[test]
fn a_terminal_of_unknown_size_still_shows_the_table() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    let out = run_in_pty(&sandbox, &config, &redis.url(), None, "xterm", 6);
    assert!(out.contains("EXIT=0"), "a clean stop:\n{:?}", tail(&out));
    assert!(
        out.contains("circles_orchestrator ") && out.contains("Circle Name"),
        "neither the frames nor the final table show anything on a 0x0 pty:\n{:?}",
        tail(&out)
    );
    assert!(out.contains("Alpha"), "the circle's row:\n{:?}", tail(&out));
}

/// `TERM=dumb` says the terminal cannot move its cursor nor switch screens:
/// the live table's escape sequences are garbage there and each redraw
/// lands below the last one (DESIGN §6: "no scrolling garbage"). `auto`
/// must print the plain output on such a terminal.
#[test]
fn a_dumb_terminal_gets_the_plain_output_without_escape_sequences() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    // `CI` set: env_logger colours a terminal's log lines then, a dumb
    // one too, unless told not to.
    let out = run_in_pty(
        &sandbox,
        &config,
        &redis.url(),
        Some("rows 40 cols 200"),
        "dumb CI=true",
        6,
    );
    assert!(out.contains("EXIT=0"), "a clean stop:\n{:?}", tail(&out));
    assert!(
        !out.contains('\u{1b}'),
        "escape sequences written to a TERM=dumb terminal:\n{:?}",
        tail(&out)
    );
    assert!(
        out.contains("| Alpha "),
        "the plain table on a dumb terminal:\n{:?}",
        tail(&out)
    );
}

/// A terminal made smaller (a window resized, a tmux pane split) keeps the
/// bottom of the last frame: the header and the column names scroll out of
/// sight. The table must be drawn again for the new size at once (on
/// SIGWINCH), not at the next refresh, which `--refresh` may put far off.
#[test]
fn a_resized_terminal_is_redrawn_at_once_not_at_the_next_refresh() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let circles: Vec<(u32, String, u16)> = (1..=12)
        .map(|i| (i, format!("Circle {i}"), port()))
        .collect();
    let list: Vec<(u32, &str, u16)> = circles
        .iter()
        .map(|(i, n, p)| (*i, n.as_str(), *p))
        .collect();
    let config = sandbox.circles(&list);
    let command = format!(
        "cd {dir} && HOME={dir} CIRCLES_ADMIN=off {BIN} {config} --redis-url {url} --data-dir \
         {data} --no-managed-redis --refresh 20s; sleep 600",
        dir = sandbox.path().display(),
        config = config.display(),
        url = redis.url(),
        data = sandbox.data_dir().display(),
    );
    let tmux = Tmux::new("circles-kinds");
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "live",
        "-x",
        "120",
        "-y",
        "30",
        &command,
    ]);
    let deadline = Instant::now() + common::START_DEADLINE;
    loop {
        let screen = tmux.screen();
        if screen.matches("Running").count() >= 24 {
            break;
        }
        assert!(Instant::now() < deadline, "never all running:\n{screen}");
        std::thread::sleep(Duration::from_millis(100));
    }
    tmux.run(&["resize-window", "-t", "live", "-x", "100", "-y", "12"]);
    std::thread::sleep(Duration::from_secs(2));
    let screen = tmux.screen();
    assert!(
        screen.starts_with("circles_orchestrator ") && screen.contains("Circle Name"),
        "2 s after the terminal shrank, the header and column names are still \
         scrolled out (no redraw until the next 20 s refresh):\n{screen}"
    );
    assert!(
        screen.contains("more circles not shown"),
        "the rows that no longer fit are summarised:\n{screen}"
    );
}

/// Ctrl-Z (SIGTSTP) stops the orchestrator and gives the terminal back to
/// the shell: as after Ctrl-C, the cursor must be visible and the alternate
/// screen left, or the shell's prompt lands on top of the table with no
/// cursor. `fg` then brings the table back, and Ctrl-C still stops cleanly.
#[test]
fn ctrl_z_gives_the_terminal_back_to_the_shell_and_fg_brings_the_table_back() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    let tmux = Tmux::new("circles-kinds");
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "live",
        "-x",
        "160",
        "-y",
        "20",
        "bash --norc --noprofile",
    ]);
    let command = format!(
        "cd {dir} && HOME={dir} CIRCLES_ADMIN=off {BIN} {config} --redis-url {url} --data-dir \
         {data} --no-managed-redis --refresh 200ms",
        dir = sandbox.path().display(),
        config = config.display(),
        url = redis.url(),
        data = sandbox.data_dir().display(),
    );
    tmux.run(&["send-keys", "-t", "live", &command, "Enter"]);
    let flags = || {
        tmux.run(&[
            "display",
            "-p",
            "-t",
            "live",
            "#{cursor_flag} #{alternate_on}",
        ])
    };
    let wait = |what: &str, check: &dyn Fn(&str, &str) -> bool| {
        let deadline = Instant::now() + common::START_DEADLINE;
        loop {
            let (screen, flags) = (tmux.screen(), flags());
            if check(&screen, flags.trim()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "never {what} (cursor visible, alternate screen: {flags}):\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait("the table", &|s, _| {
        s.lines()
            .any(|l| l.contains("Alpha") && l.matches("Running").count() == 2)
    });
    tmux.run(&["send-keys", "-t", "live", "C-z"]);
    wait("the shell back after Ctrl-Z", &|s, _| s.contains("Stopped"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        flags().trim(),
        "1 0",
        "after Ctrl-Z the cursor stays hidden and the shell is on the table's alternate \
         screen (cursor visible, alternate screen):\n{}",
        tmux.screen()
    );
    tmux.run(&["send-keys", "-t", "live", "fg", "Enter"]);
    wait("the table again after fg", &|s, f| {
        f == "0 1" && s.starts_with("circles_orchestrator ")
    });
    tmux.run(&["send-keys", "-t", "live", "C-c"]);
    wait("the final table after Ctrl-C", &|s, f| {
        f == "1 0" && s.lines().any(|l| l == "stopped")
    });
}
