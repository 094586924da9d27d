//! The managed `redis-server` (DESIGN §1): started when nothing answers at a
//! loopback Redis URL, `redis-server --port <port> --bind <host> --dir
//! <data-dir>/redis --appendonly yes` in its own process group (so a Ctrl-C on
//! the terminal reaches only us, and Redis outlives the drain), restarted by
//! the monitor if it dies, and stopped with `SHUTDOWN` (which flushes the
//! append-only file) when the orchestrator exits. The orchestrator holds an
//! exclusive lock on `<data-dir>/redis/orchestrator.lock` meanwhile: a second
//! orchestrator on the same data dir starts no second server on the same
//! append-only file (`dir_lock`; on the same address it uses the first's).
//!
//! An orchestrator that cannot run its shutdown (SIGKILL, a crash) must not
//! leave the server behind: on Linux each server is started with a
//! parent-death signal (`PR_SET_PDEATHSIG`, SIGTERM, on which Redis shuts
//! down cleanly as on `SHUTDOWN`). The kernel sends it when the *thread* that
//! forked the server ends, so every server is forked from one thread of our
//! own ([`Spawner`]) that lives until the server was stopped. This file holds
//! one of the workspace's two `unsafe` blocks ([`die_with_parent`]; the other
//! reads a socket's `TCP_INFO` in `server_ws`).

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::probe::{Answer, ping, server_pid};

/// How long a managed `redis-server` may take to answer PING.
pub(super) const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long a managed `redis-server` may take to exit after SHUTDOWN.
const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// How long a stop waits on its `SHUTDOWN` before it also sends SIGTERM.
const SIGTERM_AFTER: Duration = Duration::from_millis(500);

/// Another Redis answers at the address a managed server was started on:
/// it took the port first (another orchestrator on the same URL starting
/// its own at the same moment, or a Redis started by hand), and the
/// managed one cannot bind it.
#[derive(Debug)]
pub struct Taken {
    /// The address.
    pub addr: SocketAddr,
    /// The other server's process id, when it tells (`INFO server`).
    pub pid: Option<u32>,
    /// How it answered the PING (still loading its data, or ready).
    pub answer: Answer,
}

impl std::fmt::Display for Taken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("another redis-server")?;
        if let Some(pid) = self.pid {
            write!(f, " (pid {pid})")?;
        }
        write!(f, " answers at {}: it took the port first", self.addr)
    }
}

impl std::error::Error for Taken {}

/// A `redis-server` child we own.
#[derive(Debug)]
pub struct ManagedRedis {
    child: Child,
    addr: SocketAddr,
    bind: String,
    /// Its working directory (AOF, log).
    pub dir: PathBuf,
    /// The length of its log before its latest start: the tail an error
    /// shows begins there, so it holds no lines of earlier runs.
    log_from: u64,
    /// The exclusive lock of `dir` (`dir_lock`), held while this
    /// orchestrator manages the server: a second orchestrator on the same
    /// data dir (another `--redis-url` port) must not run a second server
    /// on the same append-only file.
    dir_lock: std::fs::File,
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

impl ManagedRedis {
    /// Starts a server bound to `addr` (its IP and port), with its data in
    /// `<data_dir>/redis`, and waits until it answers; once `stop` is set it
    /// stops the server and gives up ([`Stopped`](super::Stopped)).
    pub fn start(
        addr: SocketAddr,
        data_dir: &Path,
        stop: &AtomicBool,
    ) -> anyhow::Result<ManagedRedis> {
        let dir = data_dir.join("redis");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        // Absolute: redis-server enters its --dir before it opens its
        // --logfile, so a relative log path would be looked up under the dir.
        let dir = std::fs::canonicalize(&dir)
            .with_context(|| format!("cannot resolve {}", dir.display()))?;
        let dir_lock = match super::dir_lock::lock_dir(&dir, addr) {
            Ok(lock) => lock,
            Err(e) => match e.downcast::<super::dir_lock::DirInUse>() {
                // Another orchestrator with this data dir starts its own on
                // this very address: once it answers, it is as if it had
                // taken the port first.
                Ok(in_use) if in_use.addr == addr.to_string() => {
                    return Err(super::wait_other(addr, stop)?.into());
                }
                Ok(in_use) => return Err(in_use.into()),
                Err(e) => return Err(e),
            },
        };
        let bind = addr.ip().to_string();
        let spawner = Spawner::new().context("cannot start the thread that runs redis-server")?;
        let log_from = log_length(&dir);
        let child = spawn_server(&spawner, addr, &bind, &dir)?;
        let mut managed = ManagedRedis {
            child,
            addr,
            dir,
            log_from,
            bind,
            dir_lock,
            spawner,
        };
        managed.wait_ready(stop)?;
        Ok(managed)
    }

    /// Whether the server has exited (it should not, until we stop it).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Starts the server again after it died, with the same port and data
    /// (the append-only file brings queued tasks back), and waits until it
    /// answers; once `stop` is set it gives up ([`Stopped`](super::Stopped))
    /// and leaves the server to be stopped with `self`: a shutdown does not
    /// wait for a big append-only file to load.
    pub fn respawn(&mut self, stop: &AtomicBool) -> anyhow::Result<()> {
        self.dir = super::dir_lock::dir_now(&self.dir_lock, &self.dir);
        self.log_from = log_length(&self.dir);
        self.child = spawn_server(&self.spawner, self.addr, &self.bind, &self.dir)?;
        self.wait_ready(stop)
    }

    /// The tail of what the server logged since its latest start, for
    /// error messages.
    pub fn log_tail(&self) -> String {
        let dir = super::dir_lock::dir_now(&self.dir_lock, &self.dir);
        tail(&log_path(&dir), self.log_from)
    }

    /// Waits until the server answers PING with something other than
    /// LOADING (a restarted server reads its append-only file first; the
    /// start would otherwise fail on its first command), within
    /// [`START_DEADLINE`] for a first answer and [`LOAD_DEADLINE`](super::probe::LOAD_DEADLINE) for the
    /// loading. An answer from another Redis at the address is [`Taken`]:
    /// this one then cannot bind the port, and it is made to exit.
    fn wait_ready(&mut self, stop: &AtomicBool) -> anyhow::Result<()> {
        let log_path = log_path(&self.dir);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            // Dropped, `self` stops the server.
            super::check(stop)?;
            let answer = ping(&self.addr).ok();
            if let Some(answer) = answer {
                match server_pid(&self.addr) {
                    Some(pid) if pid == self.child.id() => {
                        return super::loaded(&self.addr, answer, stop);
                    }
                    Some(pid) => return Err(self.lost_port(Some(pid), answer).into()),
                    // Whose it is untold (a password-protected Redis
                    // answers INFO with NOAUTH): if another holds the port,
                    // this one exits, as checked next.
                    None => {}
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                if let Some(answer) = answer {
                    return Err(self.lost_port(None, answer).into());
                }
                bail!(
                    "redis-server exited with {status}; its log ({}):\n{}",
                    log_path.display(),
                    self.log_tail()
                );
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "redis-server did not answer PING within {START_DEADLINE:?}; its log ({}):\n{}",
                    log_path.display(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Another server (`pid`) answers at the address: this one, which could
    /// not bind, is stopped (it would exit by itself) and reaped.
    fn lost_port(&mut self, pid: Option<u32>, answer: Answer) -> Taken {
        let _ = self.child.kill();
        let _ = self.child.wait();
        Taken {
            addr: self.addr,
            pid,
            answer,
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
        // A SHUTDOWN sent while the server was still starting may never be
        // read: SIGTERM asks the same (redis-server flushes the AOF and
        // exits), sent once a second until it goes, before the kill.
        let mut ask_at = Instant::now() + SIGTERM_AFTER;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => {
                    log::info!("managed redis-server stopped");
                    return;
                }
                Ok(None) if Instant::now() < deadline => {
                    if Instant::now() >= ask_at {
                        self.terminate();
                        ask_at = Instant::now() + Duration::from_secs(1);
                    }
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

impl ManagedRedis {
    /// Sends the server SIGTERM.
    fn terminate(&self) {
        use rustix::process::{Pid, Signal, kill_process};
        let pid = i32::try_from(self.child.id()).ok().and_then(Pid::from_raw);
        if let Some(pid) = pid
            && let Err(e) = kill_process(pid, Signal::TERM)
        {
            log::debug!("SIGTERM to the managed redis-server: {e}");
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
        .arg(log_path(dir))
        .args(["--appendonly", "yes", "--save", "", "--daemonize", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a terminal's Ctrl-C must not kill it before we drain.
        .process_group(0);
    // systemd's notify socket and watchdog are this process's: a
    // redis-server that saw them would say READY=1 for it.
    for variable in crate::systemd::VARIABLES {
        command.env_remove(variable);
    }
    die_with_parent(&mut command);
    spawner.spawn(command).context("cannot run redis-server")
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("redis.log")
}

fn log_length(dir: &Path) -> u64 {
    std::fs::metadata(log_path(dir)).map_or(0, |m| m.len())
}

/// The last 20 lines of the log at `path` from byte `from` on (all of it
/// when it is shorter: it was rotated), reading at most its last 64 KiB.
fn tail(path: &Path, from: u64) -> String {
    const MOST: u64 = 64 << 10;
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let from = if from > len { 0 } else { from };
    let mut bytes = Vec::new();
    if file
        .seek(SeekFrom::Start(from.max(len.saturating_sub(MOST))))
        .and_then(|_| file.take(MOST).read_to_end(&mut bytes))
        .is_err()
    {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests;
