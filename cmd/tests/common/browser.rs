//! A real browser for the end-to-end tests: Debian's headless Chromium driven
//! by Playwright for Python, both installed by `scripts/install-deps.sh`.
//!
//! A browser script lives in `cmd/tests/browser/` and uses `browserkit.py`
//! there; [`Browser::run`] starts it with the Playwright venv's python, hands
//! it a JSON job on stdin and returns the JSON it prints. A missing Chromium,
//! a missing Playwright, a failing or hanging script each fail the test with
//! a message that says what to do; nothing is skipped.

use std::io::{Read, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Overrides the Chromium binary (default `/usr/bin/chromium`).
pub const CHROMIUM_ENV: &str = "CIRCLES_CHROMIUM";
/// Overrides the python that has Playwright (default: the venv
/// `browser-venv` that install-deps.sh makes in the target dir).
pub const PYTHON_ENV: &str = "CIRCLES_BROWSER_PYTHON";
/// The venv's folder name in the target dir.
pub const VENV: &str = "browser-venv";

const INSTALL_HINT: &str = "run scripts/install-deps.sh (make test runs it first)";

/// The folder of the browser scripts.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// How to start the browser scripts: the python, Chromium and its extra
/// switches.
#[derive(Debug, Clone)]
pub struct Browser {
    python: PathBuf,
    chromium: PathBuf,
    chromium_args: Vec<String>,
    timeout: Duration,
}

impl Browser {
    /// Finds Chromium and the Playwright python; panics saying how to
    /// install them when either is missing.
    pub fn find() -> Browser {
        let chromium = std::env::var_os(CHROMIUM_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
        assert!(
            chromium.is_file(),
            "no Chromium at {} (Debian package `chromium`; or set {CHROMIUM_ENV}): {INSTALL_HINT}",
            chromium.display()
        );
        let python = match std::env::var_os(PYTHON_ENV) {
            Some(python) => PathBuf::from(python),
            None => venv_python().unwrap_or_else(|| {
                panic!(
                    "no Playwright venv: looked for {VENV}/bin/python in the folders above {} \
                     (or set {PYTHON_ENV}): {INSTALL_HINT}",
                    std::env::current_exe()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                )
            }),
        };
        Browser {
            python,
            chromium,
            chromium_args: Vec::new(),
            timeout: Duration::from_secs(30),
        }
    }

    /// Adds a Chromium switch, for example
    /// `--ignore-certificate-errors-spki-list=<hash>`.
    pub fn chromium_arg(mut self, arg: impl Into<String>) -> Browser {
        self.chromium_args.push(arg.into());
        self
    }

    /// The whole script's deadline (default 30 s); the script gets the same
    /// one and the process is killed a few seconds after it.
    pub fn timeout(mut self, timeout: Duration) -> Browser {
        self.timeout = timeout;
        self
    }

    /// Runs `script` (a file of [`scripts_dir`]) with `job` (a JSON object;
    /// `chromium_args` and `timeout_s` are filled in) and returns what it
    /// printed last; panics with its stderr when it fails.
    pub fn run(&self, script: &str, job: Value) -> Value {
        let mut job = job;
        let object = job.as_object_mut().expect("the job is a JSON object");
        object.insert("chromium_args".into(), json!(self.chromium_args));
        object.insert("timeout_s".into(), json!(self.timeout.as_secs().max(1)));
        let path = scripts_dir().join(script);
        // Its own process group, so Playwright's driver and Chromium go with it.
        let mut child = Command::new(&self.python)
            .arg(&path)
            .process_group(0)
            .env(CHROMIUM_ENV, &self.chromium)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} {}: {e}; {INSTALL_HINT}",
                    self.python.display(),
                    path.display()
                )
            });
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(job.to_string().as_bytes())
            .expect("write the job to the browser script");
        let stdout = drain(child.stdout.take().expect("stdout is piped"));
        let stderr = drain(child.stderr.take().expect("stderr is piped"));
        // The script has its own deadline; this one catches a script that
        // cannot even enforce it.
        let deadline = Instant::now() + self.timeout + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for the browser script") {
                break status;
            }
            if Instant::now() > deadline {
                kill_group(child.id());
                let _ = child.wait();
                panic!(
                    "{script} did not finish within {:?}\nstderr:\n{}",
                    self.timeout,
                    stderr.join().expect("stderr reader")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Whatever the script left behind would hold the pipes open.
        kill_group(child.id());
        let stdout = stdout.join().expect("stdout reader");
        let stderr = stderr.join().expect("stderr reader");
        assert!(
            status.success(),
            "{script} failed ({status})\nstderr:\n{stderr}\nstdout:\n{stdout}"
        );
        let last = stdout.lines().last().unwrap_or("");
        serde_json::from_str(last).unwrap_or_else(|e| {
            panic!("{script} printed no JSON result ({e})\nstdout:\n{stdout}\nstderr:\n{stderr}")
        })
    }
}

/// SIGKILL to the process group `pgid` (gone already: nothing to do).
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

/// Reads `stream` to its end on a thread (so a chatty script cannot fill a
/// pipe and stall).
fn drain(mut stream: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// `browser-venv/bin/python` in the nearest folder above this test binary
/// that has one (the target dir, wherever CARGO_TARGET_DIR puts it).
fn venv_python() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .map(|dir| dir.join(VENV).join("bin/python"))
        .find(|python| python.is_file())
}
