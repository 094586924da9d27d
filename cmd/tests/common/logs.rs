//! The log-file tests' helpers: plays whose log lines tell them apart, the
//! real logrotate, rotated files read back (checked for holes and cut
//! lines), and a directory made immutable for a while.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{connect, output};

/// The file at `path` once it holds `words`, within 30 s.
pub fn wait_for(path: &Path, words: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(words) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no {words:?} in {} within 30 s:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The environment of an orchestrator whose log gets one line per play:
/// `play (N bytes) as task …` for a play of an `N`-byte script.
pub const PLAY_LINES: &str = "RUST_LOG=info,server_ws=debug";

/// `40 + 2` padded with spaces to `len` bytes: its play's log line names
/// `len`, which tells the lines of a test's plays apart.
pub fn script(len: usize) -> String {
    format!("{:<len$}", "40 + 2")
}

/// Waits until the log at `path` holds the play line of `len` bytes (the
/// log is written by a thread of its own, a moment after the reply).
pub fn wait_played(path: &Path, len: usize) -> String {
    wait_for(path, &format!("play ({len} bytes)"))
}

/// Plays the scripts of lengths `lens`, one after another.
pub async fn play_lengths(ws: &mut super::Ws, lens: std::ops::Range<usize>) {
    for len in lens {
        assert_eq!(output(ws, &script(len)).await, "42", "play of {len} bytes");
    }
}

/// The lengths the play lines of `text` name, in the order written.
pub fn played(text: &str) -> Vec<usize> {
    text.lines()
        .filter_map(|line| {
            let rest = &line[line.find("play (")? + "play (".len()..];
            rest[..rest.find(" bytes)")?].parse().ok()
        })
        .collect()
}

/// Plays scripts of 1000, 1001, … bytes one after another until `stop`
/// is set (a connection of its own); how many it played so far is in `done`.
pub struct Player {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<usize>,
}

pub const FIRST: usize = 1000;

impl Player {
    pub async fn start(circle: u16) -> Player {
        let (stop, done) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let mut ws = connect(circle).await;
        let task = tokio::spawn({
            let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
            async move {
                let mut n = 0;
                // Bounded: the test stops it within seconds.
                while !stop.load(Ordering::Acquire) && n < 20_000 {
                    play_lengths(&mut ws, FIRST + n..FIRST + n + 1).await;
                    n += 1;
                    done.store(n, Ordering::Release);
                }
                n
            }
        });
        Player { stop, done, task }
    }

    /// Waits until `more` plays past those done at the call have ended.
    pub fn wait_more(&self, more: usize) {
        let target = self.done.load(Ordering::Acquire) + more;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.done.load(Ordering::Acquire) < target {
            assert!(Instant::now() < deadline, "the plays stalled");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it; the lengths it played.
    pub async fn finish(self) -> Vec<usize> {
        self.stop.store(true, Ordering::Release);
        let n = self.task.await.expect("the player");
        (FIRST..FIRST + n).collect()
    }
}

/// Runs Debian's logrotate, forced, on `config`; its config and state
/// files go into `dir`.
pub fn logrotate(dir: &Path, config: &str) {
    let conf = dir.join("logrotate.conf");
    std::fs::write(&conf, config).expect("write logrotate.conf");
    // Debian puts it in /usr/sbin, which a user's PATH may leave out.
    let bin = if Path::new("/usr/sbin/logrotate").exists() {
        "/usr/sbin/logrotate"
    } else {
        "logrotate"
    };
    let out = Command::new(bin)
        .arg("-f")
        .arg("-s")
        .arg(dir.join("logrotate.state"))
        .arg(&conf)
        .output()
        .expect("logrotate must be installed (scripts/install-deps.sh installs it)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "logrotate {config}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A rotated file's text, `.gz` ones uncompressed (gzip -dc).
pub fn read_log(path: &Path) -> String {
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let out = Command::new("gzip")
            .arg("-dc")
            .arg(path)
            .output()
            .expect("gzip");
        assert!(out.status.success(), "gzip -dc {}", path.display());
        out.stdout
    } else {
        std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    };
    assert!(
        !bytes.contains(&0),
        "{} holds NUL bytes (written into a hole): {:?}",
        path.display(),
        String::from_utf8_lossy(&bytes)
    );
    let text = String::from_utf8(bytes).expect("the log is UTF-8");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends inside a line",
        path.display()
    );
    text
}

/// The immutable flag (`chattr +i`, which binds root too) on a directory,
/// taken off again when dropped.
pub struct Immutable(PathBuf);

impl Immutable {
    pub fn set(path: &Path) -> Immutable {
        chattr("+i", path);
        Immutable(path.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        chattr("-i", &self.0);
    }
}

pub fn chattr(flag: &str, path: &Path) {
    let status = Command::new("chattr")
        .arg(flag)
        .arg(path)
        .status()
        .expect("run chattr (Debian package e2fsprogs; scripts/install-deps.sh installs it)");
    assert!(
        status.success(),
        "chattr {flag} {}: needs root and a filesystem with the immutable flag",
        path.display()
    );
}

/// Waits until a worker runs a task.
pub fn wait_running(redis_port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let keys = testkit::command(redis_port, &["KEYS", "rhai_task_details:*"])
            .map(|r| r.items().to_vec())
            .unwrap_or_default();
        let running = keys.iter().filter_map(|k| k.text()).any(|key| {
            testkit::command(redis_port, &["HGET", key, "status"])
                .is_ok_and(|s| s.text() == Some("processing"))
        });
        if running {
            return;
        }
        assert!(Instant::now() < deadline, "no task ran");
        std::thread::sleep(Duration::from_millis(20));
    }
}
