//! Dev-only test fixtures for the circles workspace.
//!
//! [`RedisServer`] starts a real `redis-server` on a free loopback port with its
//! own temporary directory, waits until it answers `PING`, and kills it when
//! dropped. Tests never mock Redis; they use this. When the binary is missing the
//! fixture panics with an explanation instead of skipping the test, so a missing
//! install can never pass as green. [`Proxy`] is a TCP proxy a test can freeze,
//! to cut a client off from Redis as a network partition does.
//!
//! [`SentinelGroup`] starts a primary, a replica and three sentinels
//! monitoring them, for tests of `redis+sentinel://` URLs and failovers.
//!
//! ```no_run
//! let redis = testkit::RedisServer::start();
//! let url = redis.url(); // "redis://127.0.0.1:<port>/"
//! # drop(url);
//! ```

mod proxy;
pub use proxy::Proxy;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod resp;
mod sentinel;
mod wait;

pub use resp::{Reply, command, command_as};
pub use sentinel::SentinelGroup;
pub use wait::{until, wait_for};

/// How long a fresh `redis-server` may take to answer `PING`.
const STARTUP_DEADLINE: Duration = Duration::from_secs(10);

/// A `redis-server` process owned by a test. Killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    append_only: bool,
    tls: Option<Tls>,
    /// Further `redis-server` arguments (for example `--replicaof`).
    extra: Vec<String>,
    /// Seconds the server's wall clock runs ahead of this machine's
    /// (negative: behind); see [`RedisServer::restart_with_clock`].
    clock_ahead_secs: i64,
}

/// The TLS side of a [`RedisServer::start_tls`] server.
struct Tls {
    cert: PathBuf,
    key: PathBuf,
    port: u16,
}

impl RedisServer {
    /// Starts a server on a free port with persistence off.
    ///
    /// # Panics
    /// When `redis-server` is not on `PATH` or does not come up; the panic
    /// message carries the server log.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Starts a server with the append-only file on (`appendfsync always`), so a
    /// [`RedisServer::kill`] followed by [`RedisServer::restart`] keeps every
    /// acknowledged write, like a production Redis with AOF.
    pub fn start_persistent() -> Self {
        Self::start_with(true)
    }

    /// Starts a server that also speaks TLS, on [`RedisServer::tls_port`]
    /// ([`RedisServer::tls_url`]), with the certificate `cert` and its key
    /// `key` (PEM files the test made); clients show no certificate. The
    /// plain port stays open for the fixture's own PING and for tests that
    /// configure the server.
    pub fn start_tls(cert: &Path, key: &Path) -> Self {
        Self::start_inner(
            false,
            Some(Tls {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                port: 0,
            }),
        )
    }

    fn start_with(append_only: bool) -> Self {
        Self::start_inner(append_only, None)
    }

    /// Starts a server with further `redis-server` arguments (for example
    /// `--replicaof 127.0.0.1 <port>`, `--requirepass <password>`),
    /// persistence off. A server that wants a password counts as up when it
    /// asks for it.
    pub fn start_with_args(args: &[&str]) -> Self {
        Self::start_full(false, None, args.iter().map(|a| a.to_string()).collect())
    }

    /// Starts a server on `port` (a test that needs a Redis at an address
    /// decided before it starts), persistence off.
    ///
    /// # Panics
    /// When it does not come up there (the port is taken, say).
    pub fn start_on(port: u16) -> Self {
        let mut server = Self::unstarted(false, None, Vec::new());
        server.port = port;
        if let Err(log) = server.spawn_and_wait() {
            panic!("redis-server did not start on port {port}: {log}");
        }
        server
    }

    fn start_inner(append_only: bool, tls: Option<Tls>) -> Self {
        Self::start_full(append_only, tls, Vec::new())
    }

    /// A server not started yet (port 0), with its own temp dir.
    fn unstarted(append_only: bool, tls: Option<Tls>, extra: Vec<String>) -> Self {
        RedisServer {
            child: None,
            port: 0,
            dir: tempfile::Builder::new()
                .prefix("circles-redis-")
                .tempdir()
                .expect("create a temp dir for redis-server"),
            append_only,
            tls,
            extra,
            clock_ahead_secs: 0,
        }
    }

    fn start_full(append_only: bool, tls: Option<Tls>, extra: Vec<String>) -> Self {
        let mut server = Self::unstarted(append_only, tls, extra);
        // Another process can take the port between our probe and redis' bind;
        // retry on a new port a few times before giving up.
        let mut last_log = String::new();
        for _ in 0..5 {
            server.port = free_port();
            if let Some(tls) = server.tls.as_mut() {
                tls.port = free_port();
            }
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(log) => last_log = log,
            }
        }
        panic!("redis-server did not start after 5 attempts; last log:\n{last_log}");
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log_path = self.log_path();
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log_path)
            .arg("--save")
            .arg("")
            .arg("--daemonize")
            .arg("no");
        if let Some(tls) = &self.tls {
            cmd.arg("--tls-port")
                .arg(tls.port.to_string())
                .arg("--tls-cert-file")
                .arg(&tls.cert)
                .arg("--tls-key-file")
                .arg(&tls.key)
                .arg("--tls-ca-cert-file")
                .arg(&tls.cert)
                .args(["--tls-auth-clients", "no"]);
        }
        if self.append_only {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        if self.clock_ahead_secs != 0 {
            // datefudge's library, not libfaketime's: libfaketime hangs a
            // redis-server built with the system's jemalloc in its first
            // clock_gettime. DATEFUDGE is what it takes off the clock.
            cmd.env("LD_PRELOAD", datefudge())
                .env("DATEFUDGE", (-self.clock_ahead_secs).to_string());
        }
        cmd.args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not on PATH: the tests need a real Redis \
                 (Debian/Ubuntu: `apt-get install -y redis-server`, or run `make test`)"
            ),
            Err(e) => panic!("failed to spawn redis-server: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            if ping(self.port) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("exited with {status}:\n{}", self.log()));
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "no PING reply within {STARTUP_DEADLINE:?}:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A `redis://` URL for this server.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The TLS port of a [`RedisServer::start_tls`] server.
    ///
    /// # Panics
    /// When the server was started without TLS.
    pub fn tls_port(&self) -> u16 {
        self.tls
            .as_ref()
            .expect("tls_port of a server started with start_tls")
            .port
    }

    /// A `rediss://` URL for the TLS port of a [`RedisServer::start_tls`] server.
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}/", self.tls_port())
    }

    /// The server's working directory (AOF and log live here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills the server with SIGKILL, as a crash would, and waits for it to go.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory after
    /// [`RedisServer::kill`]. With [`RedisServer::start_persistent`] the data
    /// written before the kill is back.
    ///
    /// # Panics
    /// When the server does not come back (for example the port was taken).
    pub fn restart(&mut self) {
        self.kill();
        if let Err(log) = self.spawn_and_wait() {
            panic!("redis-server did not restart on port {}: {log}", self.port);
        }
    }

    /// Starts the server again on the same port and directory, as
    /// [`RedisServer::restart`] does, with its wall clock (`TIME`, and
    /// the expiry of keys) `ahead_secs` ahead of this machine's (negative:
    /// behind), as a Redis restored on a host without NTP or a replica on
    /// another machine: keys whose expiry passed by the shifted clock are
    /// gone, and expiries ahead of it last longer by as much. Through
    /// datefudge's preload library (`apt-get install datefudge`).
    ///
    /// # Panics
    /// When datefudge is not installed or the server does not come back.
    pub fn restart_with_clock(&mut self, ahead_secs: i64) {
        self.clock_ahead_secs = ahead_secs;
        self.restart();
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            // It died under the test: show why, the test's own failure may
            // otherwise only say "connection refused".
            eprintln!(
                "testkit: redis-server on port {} had exited ({status}); its log:\n{}",
                self.port,
                self.log()
            );
        }
        self.kill();
    }
}

/// A number field of process `pid`'s `/proc/<pid>/status` (`VmRSS:` in
/// KiB, `Threads:`), 0 when the process or the field is gone.
pub fn proc_status(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The CPU seconds (user + system) process `pid` (a number, or `self`) has
/// used so far, from `/proc/<pid>/stat`; an error names what could not be
/// read.
pub fn process_cpu(pid: &str) -> Result<f64, String> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    // Fields after the command name, which ends at the last ')' (it may
    // hold spaces); utime and stime are fields 14 and 15 of the whole line,
    // 12 and 13 after it.
    let rest = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 2..))
        .ok_or_else(|| format!("{path}: a stat line without ')'"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64, String> {
        let field = fields
            .get(i)
            .ok_or_else(|| format!("{path} has no field {}", i + 3))?;
        field
            .parse::<f64>()
            .map_err(|e| format!("{path} field {}: {e}", i + 3))
    };
    // Linux reports these in USER_HZ, 100 on every architecture it runs on.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// A loopback port that was free a moment ago, and that this process has
/// not been given before: the kernel may hand a port let go of at once out
/// again, and two circles of one circles.json must not share one.
///
/// Picked at random below the kernel's ephemeral range
/// (`ip_local_port_range`), where no `connect` or bind of port 0 lands:
/// tests run side by side make many connections, and one of them taking the
/// port between this look and the test's bind failed the test. (A machine
/// whose range leaves too little room below gets a port the kernel picks.)
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    const LOWEST: u16 = 10_000;
    let below = ephemeral_start();
    loop {
        let port = if below > LOWEST + 1_000 {
            // Randomly keyed per process, a new key each time.
            let random = std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish();
            LOWEST + (random % u64::from(below - LOWEST)) as u16
        } else {
            TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("bind 127.0.0.1:0 to find a free port")
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && GIVEN.lock().unwrap_or_else(|e| e.into_inner()).insert(port)
        {
            return port;
        }
    }
}

/// The first port of the kernel's ephemeral range (32768 when unknown).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// datefudge's preload library, wherever Debian's multiarch put it.
fn datefudge() -> PathBuf {
    std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|dir| dir.path().join("datefudge/datefudge.so"))
        .find(|lib| lib.exists())
        .expect("a Redis with a shifted clock needs datefudge: apt-get install datefudge (scripts/install-deps.sh)")
}

/// Whether the server on `port` answers `PING` (or asks for a password).
fn ping(port: u16) -> bool {
    match command(port, &["PING"]) {
        Ok(Reply::Status(pong)) => pong == "PONG",
        Ok(Reply::Error(e)) => e.starts_with("NOAUTH"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use super::*;

    #[test]
    fn free_ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let below = ephemeral_start();
        let ports: std::collections::BTreeSet<u16> = (0..200).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 200);
        for port in ports {
            assert!(
                port < below,
                "{port} is in the ephemeral range from {below}"
            );
            TcpListener::bind(("127.0.0.1", port)).expect("a free port binds");
        }
    }

    #[test]
    fn server_answers_ping_and_dies_on_drop() {
        let port;
        {
            let redis = RedisServer::start();
            port = redis.port();
            assert!(ping(port), "fresh server must answer PING");
        }
        assert!(!ping(port), "server must be gone after drop");
    }

    #[test]
    fn persistent_server_keeps_data_across_kill_and_restart() {
        let mut redis = RedisServer::start_persistent();
        let mut s = TcpStream::connect(("127.0.0.1", redis.port())).unwrap();
        s.write_all(b"SET k v\r\n").unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"+OK\r\n");
        redis.kill();
        assert!(!redis.is_running());
        redis.restart();
        let mut s = TcpStream::connect(("127.0.0.1", redis.port())).unwrap();
        s.write_all(b"GET k\r\n").unwrap();
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"$1\r\nv\r\n");
    }
}
