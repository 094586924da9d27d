//! Finding Redis, or starting a managed `redis-server` (DESIGN §1).
//!
//! When nothing answers at the URL, the URL is on loopback and `redis-server`
//! is on PATH (and the managed mode is not turned off), we start
//! `redis-server --port <port> --bind <host> --dir <data-dir>/redis
//! --appendonly yes` in its own process group (so a Ctrl-C on the terminal
//! reaches only us, and Redis outlives the drain), and stop it with `SHUTDOWN`
//! (which flushes the append-only file) when the orchestrator exits.
//!
//! An orchestrator that cannot run its shutdown (SIGKILL, a crash) must not
//! leave the server behind: on Linux each server is started with a
//! parent-death signal (`PR_SET_PDEATHSIG`, SIGTERM, on which Redis shuts
//! down cleanly as on `SHUTDOWN`). The kernel sends it when the *thread* that
//! forked the server ends, so every server is forked from one thread of our
//! own ([`Spawner`]) that lives until the server was stopped.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a managed `redis-server` may take to answer PING.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long a managed `redis-server` may take to exit after SHUTDOWN.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// The Redis the orchestrator uses.
#[derive(Debug)]
pub struct RedisHandle {
    /// The URL to connect to.
    pub url: String,
    /// The server we started, if we started one.
    pub managed: Option<ManagedRedis>,
}

/// A `redis-server` child we own.
#[derive(Debug)]
pub struct ManagedRedis {
    child: Child,
    addr: SocketAddr,
    bind: String,
    /// Its working directory (AOF, log).
    pub dir: PathBuf,
    /// Declared last: dropped after [`Drop`] stopped the server, so its
    /// thread never ends under a running server.
    spawner: Spawner,
}

/// A request to the spawner thread: the command, and where to send the child.
type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// The thread every managed `redis-server` is forked from, so that the
/// parent-death signal fires when the orchestrator dies, and not when some
/// short-lived thread that happened to start the server ends (a restart runs
/// on tokio's blocking pool, whose idle threads exit after ten seconds). The
/// thread ends when the `Spawner` is dropped.
#[derive(Debug)]
struct Spawner {
    requests: mpsc::Sender<SpawnRequest>,
}

impl Spawner {
    fn new() -> io::Result<Spawner> {
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("redis-spawner".into())
            .spawn(move || {
                for (mut command, reply) in incoming {
                    let _ = reply.send(command.spawn());
                }
            })?;
        Ok(Spawner { requests })
    }

    /// Runs `command` from the spawner thread.
    fn spawn(&self, command: Command) -> io::Result<Child> {
        let gone = || io::Error::other("the thread that starts redis-server is gone");
        let (reply, child) = mpsc::channel();
        self.requests.send((command, reply)).map_err(|_| gone())?;
        child.recv().map_err(|_| gone())?
    }
}

/// Asks the kernel to send the server SIGTERM when the thread that forks it
/// ends (see the module docs); a server whose parent already died between the
/// fork and this call is not started.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before `exec`. It makes
    // only async-signal-safe system calls (`prctl`, `getppid`) and allocates
    // nothing (both errors are raw OS errors), as `pre_exec` requires.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() as u32 != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Without Linux's parent-death signal a SIGKILLed orchestrator leaves its
/// server running (the next start finds and uses it).
#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}

/// Host and port of a `redis://` URL.
pub fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let hostport = authority.rsplit('@').next()?;
    if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => 6379,
        };
        return Some((host.to_string(), port));
    }
    match hostport.rsplit_once(':') {
        Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
        None => Some((hostport.to_string(), 6379)),
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// What answered a PING.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// A Redis that can be used (PONG, or NOAUTH from a password-protected
    /// one: any answer but LOADING means a Redis is there; the client then
    /// says whether it can use it).
    There,
    /// A Redis that is still reading its data (`-LOADING`): there, not ready.
    Loading,
}

/// What answers a PING at `addr`, or why nothing did.
fn ping(addr: &SocketAddr) -> Result<Answer, String> {
    let mut stream =
        TcpStream::connect_timeout(addr, Duration::from_millis(500)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    stream.write_all(b"PING\r\n").map_err(|e| e.to_string())?;
    // Enough of the reply to tell `-LOADING` from anything else, however
    // the bytes arrive.
    let mut buf = [0u8; 8];
    let mut n = 0;
    while n < buf.len() && !buf[..n].contains(&b'\n') {
        match stream.read(&mut buf[n..]) {
            Ok(0) if n == 0 => {
                return Err("connected but the connection was closed without a reply".to_string());
            }
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if n == 0 => return Err(format!("connected but got no reply: {e}")),
            Err(_) => break,
        }
    }
    Ok(if buf[..n].starts_with(b"-LOADING") {
        Answer::Loading
    } else {
        Answer::There
    })
}

/// How long a Redis may go on loading its data before the start gives up
/// (a big append-only file takes a while; a start cannot be interrupted
/// during this wait, so it is bounded).
const LOAD_DEADLINE: Duration = Duration::from_secs(300);

/// Waits while the Redis at `addr` answers LOADING; an error if it still
/// does after [`LOAD_DEADLINE`] or stops answering.
fn wait_loaded(addr: &SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + LOAD_DEADLINE;
    let mut said = false;
    loop {
        match ping(addr) {
            Ok(Answer::There) => return Ok(()),
            Ok(Answer::Loading) if Instant::now() < deadline => {
                if !said {
                    log::info!("redis at {addr} is loading its data; waiting for it");
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(Answer::Loading) => bail!(
                "redis at {addr} was still loading its data after {LOAD_DEADLINE:?}. Fix: \
                 start it yourself, wait until it has loaded, then start again"
            ),
            Err(e) => bail!("redis at {addr} stopped answering while it loaded its data: {e}"),
        }
    }
}

fn redis_server_on_path() -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join("redis-server").is_file()))
        .unwrap_or(false)
}

/// Finds a Redis at `url` or starts a managed one; the error lists what was tried.
pub fn ensure(url: &str, data_dir: &Path, allow_managed: bool) -> anyhow::Result<RedisHandle> {
    let Some((host, port)) = host_port(url) else {
        // Not a TCP URL we understand (unix socket, …): let the client try it as is.
        return Ok(RedisHandle {
            url: url.to_string(),
            managed: None,
        });
    };
    let addrs: Vec<SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve the Redis host `{host}` of {url}"))?
        .collect();
    let mut last = String::from("no address");
    for addr in &addrs {
        match ping(addr) {
            Ok(answer) => {
                if answer == Answer::Loading {
                    wait_loaded(addr)?;
                }
                return Ok(RedisHandle {
                    url: url.to_string(),
                    managed: None,
                });
            }
            Err(e) => last = e,
        }
    }
    let tried = format!("tried {url} ({last})");
    if !allow_managed {
        bail!(
            "redis is unreachable: {tried}; the managed redis-server is turned off \
             (--no-managed-redis). Fix: start Redis (e.g. `redis-server --port {port}`), \
             pass --redis-url to one that runs, or drop --no-managed-redis to let the \
             orchestrator start its own"
        );
    }
    if !is_loopback(&host) {
        bail!(
            "redis is unreachable: {tried}; a managed redis-server is only started for a \
             loopback URL, and {host} is not one. Fix: start Redis on {host}:{port}, or pass \
             --redis-url redis://127.0.0.1:{port} to let the orchestrator start its own"
        );
    }
    if !redis_server_on_path() {
        bail!(
            "redis is unreachable: {tried}; then looked for redis-server on PATH to start a \
             managed one, and found none. Fix: install it (Debian/Ubuntu: \
             `sudo apt-get install -y redis-server`), or start Redis yourself and pass --redis-url"
        );
    }
    // The managed server binds 127.0.0.1 for `localhost` (see `start`), so it
    // is waited for there, even where `localhost` resolves to ::1 first.
    let addr = if host == "localhost" {
        SocketAddr::from(([127, 0, 0, 1], port))
    } else {
        addrs
            .first()
            .copied()
            .context("the Redis host resolved to no address")?
    };
    let managed = ManagedRedis::start(addr, &host, data_dir).with_context(|| {
        format!(
            "redis is unreachable: {tried}; then starting a managed redis-server on port \
                 {port} failed. Fix: redis-server says why below (often another program holds \
                 port {port}: free it, or name another port in --redis-url), or start Redis \
                 yourself and pass --redis-url"
        )
    })?;
    log::info!(
        "started a managed redis-server (pid {}) on {addr} (data in {})",
        managed.pid(),
        managed.dir.display()
    );
    Ok(RedisHandle {
        url: url.to_string(),
        managed: Some(managed),
    })
}

impl ManagedRedis {
    fn start(addr: SocketAddr, host: &str, data_dir: &Path) -> anyhow::Result<ManagedRedis> {
        let dir = data_dir.join("redis");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let bind = if host == "localhost" {
            "127.0.0.1".to_string()
        } else {
            host.to_string()
        };
        let spawner = Spawner::new().context("cannot start the thread that runs redis-server")?;
        let child = spawn_server(&spawner, addr, &bind, &dir)?;
        let mut managed = ManagedRedis {
            child,
            addr,
            dir,
            bind,
            spawner,
        };
        managed.wait_ready()?;
        Ok(managed)
    }

    /// Whether the server has exited (it should not, until we stop it).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Starts the server again after it died, with the same port and data
    /// (the append-only file brings queued tasks back).
    pub fn respawn(&mut self) -> anyhow::Result<()> {
        self.child = spawn_server(&self.spawner, self.addr, &self.bind, &self.dir)?;
        self.wait_ready()
    }

    /// The tail of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        tail(&self.dir.join("redis.log"))
    }

    /// Waits until the server answers PING with something other than
    /// LOADING (a restarted server reads its append-only file first; the
    /// start would otherwise fail on its first command), within
    /// [`START_DEADLINE`] for a first answer and [`LOAD_DEADLINE`] for the
    /// loading.
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let log_path = self.dir.join("redis.log");
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            match ping(&self.addr) {
                Ok(Answer::There) => return Ok(()),
                Ok(Answer::Loading) => return wait_loaded(&self.addr),
                Err(_) => {}
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!(
                    "redis-server exited with {status}; its log ({}):\n{}",
                    log_path.display(),
                    tail(&log_path)
                );
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "redis-server did not answer PING within {START_DEADLINE:?}; its log ({}):\n{}",
                    log_path.display(),
                    tail(&log_path)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The process id of the server.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SHUTDOWN (flushing the AOF) and waits; kills it if it does not go.
    /// Dropping a [`ManagedRedis`] does the same.
    pub fn stop(self) {
        drop(self);
    }

    fn shutdown(&mut self) {
        if let Ok(mut stream) = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)) {
            let _ = stream.write_all(b"SHUTDOWN\r\n");
        }
        let deadline = Instant::now() + STOP_DEADLINE;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => {
                    log::info!("managed redis-server stopped");
                    return;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => {
                    log::warn!("managed redis-server did not stop after SHUTDOWN; killing it");
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
            }
        }
    }
}

impl Drop for ManagedRedis {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.shutdown();
        }
    }
}

fn spawn_server(
    spawner: &Spawner,
    addr: SocketAddr,
    bind: &str,
    dir: &Path,
) -> anyhow::Result<Child> {
    let mut command = Command::new("redis-server");
    command
        .arg("--port")
        .arg(addr.port().to_string())
        .arg("--bind")
        .arg(bind)
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .args(["--appendonly", "yes", "--save", "", "--daemonize", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a terminal's Ctrl-C must not kill it before we drain.
        .process_group(0);
    die_with_parent(&mut command);
    spawner.spawn(command).context("cannot run redis-server")
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_and_port_with_6379_by_default() {
        assert_eq!(
            host_port("redis://127.0.0.1:6390/"),
            Some(("127.0.0.1".into(), 6390))
        );
        assert_eq!(
            host_port("redis://localhost"),
            Some(("localhost".into(), 6379))
        );
        assert_eq!(host_port("redis://:pw@h:1/0"), Some(("h".into(), 1)));
        assert_eq!(host_port("redis://[::1]:7000"), Some(("::1".into(), 7000)));
        assert_eq!(host_port("unix:///tmp/r.sock"), None);
    }

    #[test]
    fn only_loopback_hosts_get_a_managed_server() {
        assert!(is_loopback("127.0.0.1"));
        assert!(is_loopback("localhost"));
        assert!(is_loopback("::1"));
        assert!(!is_loopback("10.0.0.1"));
        assert!(!is_loopback("redis.example.com"));
    }
}
