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

/// An orchestrator in live mode in the `live` session of a tmux server of
/// its own, killed when the value is dropped, however the test ends.
pub struct Live {
    pub tmux: Tmux,
    pub pid: i32,
}

impl Live {
    /// Runs `circles_orchestrator config` on `redis_url` in the sandbox's
    /// data dir with `--refresh 100ms` and `args`, and waits until the
    /// table shows the circle `running` Running.
    pub fn start(
        sandbox: &super::Sandbox,
        config: &std::path::Path,
        redis_url: &str,
        args: &str,
        running: &str,
    ) -> Live {
        Live::start_env(sandbox, config, redis_url, "", args, running)
    }

    /// [`Live::start`] with `env` (shell assignments such as
    /// `RUST_LOG=debug`) in the orchestrator's environment.
    pub fn start_env(
        sandbox: &super::Sandbox,
        config: &std::path::Path,
        redis_url: &str,
        env: &str,
        args: &str,
        running: &str,
    ) -> Live {
        let pid_file = sandbox.path().join("pid");
        let command = format!(
            "cd {dir} && echo $$ > {pid} && HOME={dir} CIRCLES_ADMIN=off {env} exec {bin} {config} \
             --redis-url {redis_url} --data-dir {data} --no-managed-redis --refresh 100ms {args}",
            dir = sandbox.path().display(),
            pid = pid_file.display(),
            bin = super::BIN,
            config = config.display(),
            data = sandbox.data_dir().display(),
        );
        let tmux = Tmux::new("circles-test");
        tmux.start_live(&command, 200, 30);
        tmux.wait_screen("the circle running", |s| {
            s.lines()
                .any(|l| l.contains(running) && l.contains("Running"))
        });
        let pid = std::fs::read_to_string(&pid_file)
            .expect("pid file")
            .trim()
            .parse()
            .expect("a pid");
        Live { tmux, pid }
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name}");
    }

    /// SIGTERM, then the wait for the process to end.
    pub fn stop(&self) {
        self.signal("TERM");
        self.wait_end();
    }

    /// Waits for the process to end, within 30 s.
    pub fn wait_end(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::path::Path::new(&format!("/proc/{}", self.pid)).exists() {
            assert!(
                Instant::now() < deadline,
                "still running 30 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .status();
    }
}
