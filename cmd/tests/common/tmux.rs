//! A tmux server of a test's own (`tmux -L`), for tests that drive the live
//! table in a real terminal. Dropped, it stops what runs in its panes
//! (SIGTERM to each pane's process and its children) and then the server:
//! killing the server alone hangs the panes up, and the orchestrator takes a
//! SIGHUP for a reload and serves on.

use std::process::Command;
use std::time::{Duration, Instant};

pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// A server on a socket named after `prefix`, this process and a free port.
    pub fn new(prefix: &str) -> Tmux {
        Tmux {
            socket: format!("{prefix}-{}-{}", std::process::id(), super::port()),
        }
    }

    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux must be installed (apt-get install -y tmux)");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `command` in a detached `cols` × `rows` session named `live`.
    pub fn start_live(&self, command: &str, cols: u16, rows: u16) {
        self.run(&[
            "new-session",
            "-d",
            "-s",
            "live",
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
            command,
        ]);
    }

    /// What the `live` session's pane shows.
    pub fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "live"])
    }

    /// The screen once `check` accepts it, within the start deadline.
    pub fn wait_screen(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + super::START_DEADLINE;
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "screen never showed {what}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let panes = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(["list-panes", "-a", "-F", "#{pane_pid}"])
            .output();
        let pids: Vec<String> = panes
            .map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        for pid in &pids {
            // Children first (a shell's job), then the pane's own process.
            let _ = Command::new("pkill").args(["-TERM", "-P", pid]).status();
            let _ = Command::new("kill").args(["-TERM", pid]).status();
            // One stopped by Ctrl-Z takes the SIGTERM once continued.
            let _ = Command::new("pkill").args(["-CONT", "-P", pid]).status();
        }
        let _ = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .arg("kill-server")
            .status();
    }
}
