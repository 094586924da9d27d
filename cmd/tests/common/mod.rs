//! Shared helpers of the end-to-end tests: run the built `circles_orchestrator`
//! against a testkit Redis with a temp data dir, talk to circles over a raw
//! WebSocket, poll with deadlines.
#![allow(dead_code)]

pub mod browser;
pub mod hosts;
pub mod http;
pub mod loading;
pub mod logs;
pub mod managed;
pub mod redis_tls;
pub mod tasks;
pub mod tmux;

/// Options for worker-only processes whose leases expire in 600 ms:
/// heartbeat 200 ms, TTL three beats; dead workers are looked for every beat.
pub const FAST_LEASES: &[&str] = &[
    "--role",
    "worker",
    "--worker-heartbeat",
    "200ms",
    "--worker-reap-interval",
    "200ms",
    "--worker-pop-timeout",
    "1s",
];

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// The lowercase hex SHA-256 of `text`: a token's `token_sha256`.
pub fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_circles_orchestrator");

/// How long the orchestrator may take to serve every circle in a test.
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// A temp dir holding HOME, the data dir and circles.json.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::Builder::new()
                .prefix("circles-e2e-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Writes `text` as a file of the sandbox and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write file");
        path
    }

    /// Writes a circles.json for `(id, name, port)` triples.
    pub fn circles(&self, circles: &[(u32, &str, u16)]) -> PathBuf {
        let list: Vec<Value> = circles
            .iter()
            .map(|(id, name, port)| json!({"id": id, "name": name, "port": port}))
            .collect();
        self.write("circles.json", &Value::Array(list).to_string())
    }

    /// The command [`Orchestrator::start`] runs: `config` against the test
    /// Redis at `redis_url`, managed Redis off, plain output, data in `data_dir`.
    pub fn serve_command(&self, config: &Path, redis_url: &str, data_dir: &Path) -> Command {
        let mut cmd = self.command();
        cmd.arg(config)
            .arg("--redis-url")
            .arg(redis_url)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--no-managed-redis")
            .args(["--output", "plain"]);
        cmd
    }

    /// A command for the binary with HOME pointed into the sandbox.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(self.path())
            .env("HOME", self.path())
            .env_remove("REDIS_URL")
            .env_remove("CIRCLES_DATA_DIR")
            .env_remove("CIRCLES_NO_MANAGED_REDIS")
            // Tests run in parallel: none takes the default admin port. The
            // admin tests pass --admin themselves.
            .env("CIRCLES_ADMIN", "off")
            .env_remove("CIRCLES_ADMIN_TOKEN_SHA256")
            .env_remove("CIRCLES_ADMIN_TOKEN")
            .env_remove("_RJEM_MALLOC_CONF")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null());
        cmd
    }
}

/// A running orchestrator; killed on drop.
pub struct Orchestrator {
    pub child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    /// The threads that copy stdout and stderr; they end at the pipes' EOF.
    pumps: Vec<std::thread::JoinHandle<()>>,
}

/// How long [`Orchestrator::wait_exit`] waits, after the exit, for the
/// pumps to read what is left in the pipes (a grandchild that holds them
/// open, such as a managed redis-server, keeps them from ever ending).
const DRAIN_PIPES: Duration = Duration::from_secs(5);

fn pump(
    stream: impl Read + Send + 'static,
    into: Arc<Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            into.lock().expect("pump lock").push_str(&line);
            line.clear();
        }
    })
}

impl Orchestrator {
    /// Starts the binary with `args` (plain output unless `args` says otherwise).
    pub fn spawn(mut cmd: Command) -> Orchestrator {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn circles_orchestrator");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let pumps = vec![
            pump(child.stdout.take().expect("stdout"), stdout.clone()),
            pump(child.stderr.take().expect("stderr"), stderr.clone()),
        ];
        Orchestrator {
            child,
            stdout,
            stderr,
            pumps,
        }
    }

    /// Starts the orchestrator on `config` with a test Redis, plain output.
    pub fn start(
        sandbox: &Sandbox,
        config: &Path,
        redis_url: &str,
        extra: &[&str],
    ) -> Orchestrator {
        let mut cmd = sandbox.serve_command(config, redis_url, &sandbox.data_dir());
        cmd.args(extra);
        Orchestrator::spawn(cmd)
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().expect("stdout lock").clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until stdout contains `needle`; panics with both streams otherwise.
    pub fn wait_stdout(&mut self, needle: &str, timeout: Duration) {
        self.wait_for("stdout", Orchestrator::stdout, needle, timeout);
    }

    /// Waits until stderr contains `needle`: stderr is read on a thread of
    /// its own, so a line logged before something printed on stdout may
    /// still be on its way. Panics with both streams otherwise.
    pub fn wait_stderr(&mut self, needle: &str, timeout: Duration) {
        self.wait_for("stderr", Orchestrator::stderr, needle, timeout);
    }

    fn wait_for(
        &mut self,
        stream: &str,
        read: fn(&Orchestrator) -> String,
        needle: &str,
        timeout: Duration,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            if read(self).contains(needle) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "orchestrator exited ({status}) before printing {needle:?}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "no {needle:?} on {stream} within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGHUP and waits for the `nth` "reload applied" line on stdout.
    pub fn reload(&mut self, nth: usize, timeout: Duration) {
        self.signal("HUP");
        let deadline = Instant::now() + timeout;
        while self.stdout().matches("reload applied").count() < nth {
            assert!(
                Instant::now() < deadline,
                "reload {nth} not applied\nstdout:\n{}\nstderr:\n{}",
                self.stdout(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the plain table, i.e. every circle settled.
    pub fn wait_table(&mut self) {
        self.wait_stdout("circles serving;", START_DEADLINE);
    }

    /// Sends a signal by name (TERM, INT) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Let the pump threads drain the pipes, up to their EOF.
                let drained = Instant::now() + DRAIN_PIPES;
                while !self.pumps.iter().all(|p| p.is_finished()) && Instant::now() < drained {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "orchestrator did not exit within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(30))
    }
}

impl Drop for Orchestrator {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `serve` run by `prlimit` with `nofile` (`soft:hard`) open files.
pub fn limited(serve: &Command, nofile: &str) -> Command {
    launched(&["prlimit", &format!("--nofile={nofile}")], serve)
}

/// `serve` run by the program `launcher` names (with its arguments), which
/// runs it in the same process, with the same directory and environment.
pub fn launched(launcher: &[&str], serve: &Command) -> Command {
    let mut cmd = Command::new(launcher[0]);
    cmd.args(&launcher[1..])
        .arg(serve.get_program())
        .args(serve.get_args())
        .stdin(Stdio::null());
    if let Some(dir) = serve.get_current_dir() {
        cmd.current_dir(dir);
    }
    for (key, value) in serve.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    cmd
}

/// Runs the binary to completion with a deadline; returns (status, stdout, stderr).
pub fn run_to_end(cmd: Command, timeout: Duration) -> (ExitStatus, String, String) {
    let mut o = Orchestrator::spawn(cmd);
    let status = o.wait_exit(timeout);
    (status, o.stdout(), o.stderr())
}

/// Runs `cmd` to its end with `stdout` as its stdout; a piped one has its
/// read end closed at once, as by a reader that went away. Its exit code
/// and stderr.
pub fn exit_with_stdout(mut cmd: Command, stdout: Stdio) -> (Option<i32>, String) {
    let mut child = cmd
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the command");
    drop(child.stdout.take());
    let done = output_within(child);
    (
        done.status.code(),
        String::from_utf8_lossy(&done.stderr).into_owned(),
    )
}

/// Runs `cmd` to its end with `stderr` as its stderr; its exit code and stdout.
pub fn exit_with_stderr(mut cmd: Command, stderr: Stdio) -> (Option<i32>, String) {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn the command");
    let done = output_within(child);
    (
        done.status.code(),
        String::from_utf8_lossy(&done.stdout).into_owned(),
    )
}

/// `child`'s exit status and piped output; a command still running after
/// [`START_DEADLINE`] is killed and fails the test, so a hang is a failure,
/// not a stuck run.
fn output_within(child: std::process::Child) -> std::process::Output {
    let pid = child.id();
    let (done, ended) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    match ended.recv_timeout(START_DEADLINE) {
        Ok(output) => output.expect("the command ends"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("the command did not end within {START_DEADLINE:?}");
        }
    }
}

/// A WebSocket URL of a local circle.
pub fn ws(port: u16) -> String {
    format!("ws://127.0.0.1:{port}/ws")
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects, retrying until the server accepts the upgrade.
pub async fn connect(port: u16) -> Ws {
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        match tokio_tungstenite::connect_async(ws(port)).await {
            Ok((ws, _)) => return ws,
            Err(e) if Instant::now() > deadline => panic!("cannot connect to {}: {e}", ws(port)),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Sends a text frame.
pub async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.to_string()))
        .await
        .expect("send");
}

/// The next text frame as JSON, within 30 s.
pub async fn recv(ws: &mut Ws) -> Value {
    let next = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str::<Value>(&text).expect("reply is JSON");
                }
                Some(Ok(Message::Close(frame))) => panic!("server closed: {frame:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("websocket error: {e}"),
                None => panic!("connection ended"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), next)
        .await
        .expect("a reply within 30 s")
}

/// One `play` round trip; returns the whole reply.
pub async fn play(ws: &mut Ws, id: u64, script: &str) -> Value {
    let request =
        json!({"jsonrpc": "2.0", "id": id, "method": "play", "params": {"script": script}});
    send(ws, &request.to_string()).await;
    let reply = recv(ws).await;
    assert_eq!(reply["id"], json!(id), "reply to another request: {reply}");
    reply
}

/// The `output` of a successful play; panics with the reply otherwise.
pub async fn output(ws: &mut Ws, script: &str) -> String {
    let reply = play(ws, 1, script).await;
    reply["result"]["output"]
        .as_str()
        .unwrap_or_else(|| panic!("play {script:?} failed: {reply}"))
        .to_string()
}

/// The `output` of the first successful play of `script` within `timeout`,
/// one try every 100 ms (a circle serving again after an outage); panics
/// with the last reply otherwise.
pub async fn output_once_served(ws: &mut Ws, script: &str, timeout: Duration) -> String {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let reply = play(ws, 1, script).await;
        if let Some(out) = reply["result"]["output"].as_str() {
            return out.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "play {script:?} failed for {timeout:?}: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A fresh free loopback port.
pub fn port() -> u16 {
    testkit::free_port()
}

/// Connects with one extra header; the HTTP status if refused, else the
/// socket and the subprotocol the server chose.
pub async fn connect_with(
    port: u16,
    header: Option<(&'static str, String)>,
) -> Result<(Ws, Option<String>), u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = ws(port).into_client_request().expect("request");
    if let Some((name, value)) = header {
        request
            .headers_mut()
            .insert(name, value.parse().expect("header value"));
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, response)) => {
            let protocol = response
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().expect("ascii").to_string());
            Ok((ws, protocol))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("upgrade failed without an HTTP answer: {e}"),
    }
}

/// Milliseconds since the epoch of an RFC 3339 UTC timestamp with
/// milliseconds, as the JSON log lines write it (`2026-12-04T12:37:05.123Z`).
pub fn epoch_ms(ts: &str) -> u64 {
    let n = |range: std::ops::Range<usize>| -> i64 { ts[range].parse().expect("a timestamp") };
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19);
    (secs * 1000 + n(20..23)) as u64
}

/// Whether the process `pid` listens on TCP `port` (IPv4 or IPv6): one of
/// its descriptors is a listening socket of `/proc/net/tcp{,6}` on that
/// port. Asked of the process, not of the port, so a parallel test that
/// happens to bind the same free port cannot make it true.
pub fn listens(pid: u32, port: u16) -> bool {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address is ADDR:PORT in hex; state 0A is LISTEN.
            let local_port = cols
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && cols.get(3) == Some(&"0A") {
                inodes.extend(cols.get(9).map(|i| format!("socket:[{i}]")));
            }
        }
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("the process's descriptors");
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .any(|target| inodes.iter().any(|i| target.to_str() == Some(i.as_str())))
}

/// `/dev/full` as a child's stdout: every write to it fails with ENOSPC.
pub fn dev_full() -> Stdio {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("open /dev/full");
    Stdio::from(full)
}

/// A worker-only orchestrator ([`FAST_LEASES`]) on `config` and `url`, its
/// data in `dir`, `extra` options appended.
pub fn spawn_fast_worker(
    sandbox: &Sandbox,
    config: &Path,
    url: &str,
    dir: &Path,
    extra: &[&str],
) -> Orchestrator {
    let mut cmd = sandbox.serve_command(config, url, dir);
    cmd.args(FAST_LEASES).args(extra);
    Orchestrator::spawn(cmd)
}

/// One connection at a time from `from` to `port`, sending nothing (the
/// server closes it after 5 s without a request), connecting again half a
/// second after each close, until `stop`: one client that holds a place
/// and sends nothing (not even a TLS ClientHello).
pub async fn hold_quietly(from: [u8; 4], port: u16, stop: Arc<std::sync::atomic::AtomicBool>) {
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let connect = async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind((from, 0).into())?;
            socket.connect(([127, 0, 0, 1], port).into()).await
        };
        if let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_secs(1), connect).await {
            let mut buf = [0u8; 256];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let read = tokio::time::timeout(
                    Duration::from_secs(1),
                    tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
                );
                if let Ok(Ok(0) | Err(_)) = read.await {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The first line Redis answers to PING on `port`, once something answers (within
/// 20 s; each reply within 3 s).
pub fn ping_reply(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
            let mut reply = [0u8; 64];
            if std::io::Write::write_all(&mut stream, b"PING\r\n").is_ok()
                && let Ok(n) = std::io::Read::read(&mut stream, &mut reply)
                && n > 0
            {
                return String::from_utf8_lossy(&reply[..n]).trim().to_owned();
            }
        }
        assert!(Instant::now() < deadline, "redis on {port} never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
}
