//! Finding Redis, or starting a managed `redis-server` (DESIGN §1): when
//! nothing answers at the URL, the URL is on loopback and `redis-server` is on
//! PATH (and the managed mode is not turned off), the orchestrator starts its
//! own ([`managed`]). Whether something answers is asked with a RESP PING
//! ([`probe`]); a `rediss://` or `redis+sentinel://` URL is neither probed
//! nor managed, and neither is a circle's own `redis` (only `--redis-url`). The URL itself is parsed and redacted by [`client::url`].

mod dir_lock;
pub mod managed;
pub mod probe;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use client::RedisUrl;

pub use managed::ManagedRedis;
use probe::{Answer, answers_plain_resp, ping, wait_loaded};

/// The search for Redis gave up because `stop` was set (a stop signal came
/// during start-up): see [`ensure`].
#[derive(Debug)]
pub struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped while looking for redis")
    }
}

impl std::error::Error for Stopped {}

/// [`Stopped`] once `stop` is set.
fn check(stop: &AtomicBool) -> Result<(), Stopped> {
    if stop.load(Ordering::Acquire) {
        Err(Stopped)
    } else {
        Ok(())
    }
}

fn redis_server_on_path() -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join("redis-server").is_file()))
        .unwrap_or(false)
}

/// For a `rediss://` URL that could not be connected: a sentence saying so
/// when the server there speaks plain RESP (a TLS handshake with it only
/// waits until it times out, which names no cause). A PING probe per
/// address of the host, off the async threads.
pub async fn plain_at_tls_url(url: &RedisUrl) -> Option<String> {
    let (host, port) = url.host_port().filter(|_| url.is_tls())?;
    let (host, port) = (host.to_owned(), port);
    tokio::task::spawn_blocking(move || {
        let mut addrs = (host.as_str(), port).to_socket_addrs().ok()?;
        addrs.any(|addr| answers_plain_resp(&addr)).then(|| {
            format!(
                "the server at {host}:{port} answers plain RESP, not TLS: a rediss:// URL \
                 needs Redis's tls-port. Fix: pass the port Redis serves TLS on, or redis:// \
                 to connect without TLS"
            )
        })
    })
    .await
    .ok()
    .flatten()
}

/// A Redis that gave `answer` to a PING, once it is ready: one still reading
/// its data is waited for.
fn loaded(addr: &SocketAddr, answer: Answer, stop: &AtomicBool) -> anyhow::Result<()> {
    match answer {
        Answer::Loading => wait_loaded(addr, stop),
        Answer::There => Ok(()),
    }
}

/// Finds a Redis at `url` or starts a managed one; the error lists what was
/// tried. Once `stop` is set it gives up with [`Stopped`] between two PINGs
/// (each waits 2.5 s at most), also while a Redis loads its data.
pub fn ensure(
    url: &RedisUrl,
    data_dir: &Path,
    allow_managed: bool,
    stop: &AtomicBool,
) -> anyhow::Result<Option<ManagedRedis>> {
    let Some((host, port)) = url.host_port() else {
        // A unix socket or a redis+sentinel:// URL: nothing to probe or
        // start; the client tries it as is (and asks the sentinels).
        return Ok(None);
    };
    if url.is_tls() {
        // The PING probe speaks plain RESP and a managed redis-server is
        // plain too: for `rediss://` the task client connects and its error
        // says what went wrong.
        return Ok(None);
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve the Redis host `{host}` of {url}"))?
        .collect();
    let mut last = String::from("no address");
    for addr in &addrs {
        check(stop)?;
        match ping(addr) {
            Ok(answer) => {
                loaded(addr, answer, stop)?;
                return Ok(None);
            }
            Err(e) => last = e,
        }
    }
    check(stop)?;
    let tried = format!("tried {url} ({last})");
    if !allow_managed {
        bail!(
            "redis is unreachable: {tried}; the managed redis-server is turned off \
             (--no-managed-redis). Fix: start Redis (e.g. `redis-server --port {port}`), \
             pass --redis-url to one that runs, or drop --no-managed-redis to let the \
             orchestrator start its own"
        );
    }
    if !url.is_loopback() {
        bail!(
            "redis is unreachable: {tried}; a managed redis-server is only started for a \
             loopback URL, and {host} is not one. Fix: start Redis on {host}:{port}, or pass \
             --redis-url redis://127.0.0.1:{port} to let the orchestrator start its own"
        );
    }
    // A managed redis-server has no password and no ACL user: it would
    // refuse the URL's own AUTH, and the start would then blame a Redis
    // "that wants a password" it started itself.
    let credentials = redis::parse_redis_url(url.as_str())
        .is_some_and(|u| !u.username().is_empty() || u.password().is_some());
    if credentials {
        bail!(
            "redis is unreachable: {tried}; a managed redis-server has no password or ACL \
             user, so none is started for a URL that gives one. Fix: start Redis yourself \
             with that password (e.g. `redis-server --port {port} --requirepass PASSWORD`), \
             or drop the user and password from --redis-url to let the orchestrator start \
             its own"
        );
    }
    if !redis_server_on_path() {
        bail!(
            "redis is unreachable: {tried}; then looked for redis-server on PATH to start a \
             managed one, and found none. Fix: install it (Debian/Ubuntu: \
             `sudo apt-get install -y redis-server`), or start Redis yourself and pass --redis-url"
        );
    }
    // `localhost` means 127.0.0.1 for the managed server (it binds the address
    // chosen here), even where `localhost` resolves to ::1 first.
    let addr = if host == "localhost" {
        SocketAddr::from(([127, 0, 0, 1], port))
    } else {
        addrs
            .first()
            .copied()
            .context("the Redis host resolved to no address")?
    };
    let managed = match ManagedRedis::start(addr, data_dir, stop) {
        Ok(managed) => managed,
        Err(e) => match e.downcast::<managed::Taken>() {
            // Another orchestrator on the same URL started its own at the
            // same moment (or someone started one by hand): it is the Redis
            // at the URL now, as if it had answered the first PING.
            Ok(taken) => {
                log::info!(
                    "{taken}; using it as the Redis at {url} (not managed: this orchestrator \
                     neither restarts nor stops it)"
                );
                loaded(&taken.addr, taken.answer, stop)?;
                return Ok(None);
            }
            // Not a failure of redis-server: its own message says it all.
            Err(e) if e.is::<dir_lock::DirInUse>() => return Err(e),
            Err(e) => {
                return Err(e.context(format!(
                    "redis is unreachable: {tried}; then starting a managed redis-server on \
                     port {port} failed. Fix: redis-server says why below (often another \
                     program holds port {port}: free it, or name another port in \
                     --redis-url), or start Redis yourself and pass --redis-url"
                )));
            }
        },
    };
    log::info!(
        "started a managed redis-server (pid {}) on {addr} (data in {})",
        managed.pid(),
        managed.dir.display()
    );
    Ok(Some(managed))
}

/// The server another orchestrator starts at `addr`, once it answers
/// (within [`managed::START_DEADLINE`]), as [`managed::Taken`].
fn wait_other(addr: SocketAddr, stop: &AtomicBool) -> anyhow::Result<managed::Taken> {
    let deadline = std::time::Instant::now() + managed::START_DEADLINE;
    loop {
        check(stop)?;
        if let Ok(answer) = ping(&addr) {
            return Ok(managed::Taken {
                addr,
                pid: probe::server_pid(&addr),
                answer,
            });
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "another circles_orchestrator with the same data dir starts a managed \
                 redis-server on {addr}, and it did not answer PING within {:?}",
                managed::START_DEADLINE
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
