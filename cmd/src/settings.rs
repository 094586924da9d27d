//! Phase two of the command line: [`Settings::resolve`] turns the parsed
//! [`RunArgs`] into the one value everything else reads, with every default
//! filled in and every check made before anything starts (as ripgrep's
//! `LowArgs` → `HiArgs`). A bad option or circles.json is a usage error (exit
//! 2) found here; nothing after this point reads [`RunArgs`].
//! Long: every option's check and default sit together in `resolve`, and
//! its tests beside them.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use client::RedisUrl;

use crate::UsageError;
use crate::cli::{Output, RunArgs};
use crate::config::{self, CircleConfig};

/// In plain mode without an admin endpoint counters are only context (the
/// table shows them once), read this often.
const PLAIN_STATS_EVERY: Duration = Duration::from_secs(10);

/// How the status is shown, `auto` resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The table redrawn in place on the terminal; logs go to a file.
    Live,
    /// The table once, then one line per change.
    Plain,
    /// One JSON snapshot per line.
    Json,
}

/// The limits every circle's WebSocket server gets.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// How long a `play` request waits for its result.
    pub task_timeout: Duration,
    /// Largest WebSocket message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Requests in flight per connection.
    pub max_in_flight: usize,
    /// Connections per circle.
    pub max_connections: usize,
    /// Extra accepted `Origin`s.
    pub allowed_origins: Vec<String>,
}

/// Everything the orchestrator needs, resolved and checked once.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The circles file (for messages).
    pub config_path: PathBuf,
    /// The circles this process runs (`--circles` of the file), validated
    /// (DESIGN §2), in file order.
    pub circles: Vec<CircleConfig>,
    /// `--circles`: the ids or names chosen (a reload chooses them again).
    pub only: Option<Vec<String>>,
    /// What this process runs of each circle.
    pub role: crate::role::Role,
    /// `--standby`: wait for a circle's lease instead of refusing.
    pub standby: bool,
    /// The Redis of the task broker (`--redis-url`): a TCP URL redis-rs
    /// accepts, or a `redis+sentinel://` URL. Circles with their own
    /// `redis` use that instead ([`Settings::redis_of`]).
    pub redis: RedisUrl,
    /// With a `rediss://` URL, the CA trusted for Redis (`--redis-ca`).
    pub redis_ca: Option<client::RedisCa>,
    /// `Some`: every circle is served as `wss://` with this certificate.
    pub tls: Option<server_ws::TlsConfig>,
    /// Whether a managed redis-server may be started when none answers.
    pub managed_redis: bool,
    /// Where circle N keeps its database (`<data_dir>/N/`).
    pub data_dir: PathBuf,
    /// Bind address of every WebSocket server (resolves on this machine).
    pub host: String,
    /// `--allow-open`: circles without principals may serve on a
    /// non-loopback `host` (checked at start and at each reload).
    pub allow_open: bool,
    /// How the status is shown.
    pub mode: Mode,
    /// The log file: `Some` in live mode only (logs go to stderr otherwise).
    pub log_file: Option<PathBuf>,
    /// How log lines are written.
    pub log_format: crate::logging::LogFormat,
    /// How often the live table and JSON snapshots are refreshed.
    pub refresh: Duration,
    /// How often the per-circle counters are read from Redis.
    pub stats_every: Duration,
    /// On shutdown, how long running scripts may go on.
    pub shutdown_grace: Duration,
    /// How long finished task results stay in Redis.
    pub result_ttl: Duration,
    /// How long a result a WebSocket server got for its client stays in
    /// Redis; at most `result_ttl`.
    pub delivered_ttl: Duration,
    /// OurDB commit durability of every circle.
    pub durability: ourdb::Durability,
    /// The engine limits of every circle.
    pub engine: engine::Limits,
    /// The timing knobs of every worker.
    pub worker: worker::WorkerOptions,
    /// The limits of every circle's WebSocket server.
    pub server: ServerLimits,
    /// The admin endpoint.
    pub admin: crate::admin::AdminSettings,
}

impl Settings {
    /// Checks the options and what they point at, in the order a user fixes
    /// them: circles.json, `--redis-url`, `--host`, then the data dir default.
    pub fn resolve(args: RunArgs) -> anyhow::Result<Settings> {
        let only: Option<Vec<String>> = args
            .circles
            .map(|keys| keys.iter().map(|k| k.trim().to_string()).collect());
        let circles = crate::role::select(config::load(&args.config)?, only.as_deref())
            .map_err(UsageError)?;
        let redis = redis_url(&args.redis_url)?;
        let redis_ca = match &args.redis_ca {
            Some(path) => Some(redis_ca(&redis, &circles, path)?),
            None => None,
        };
        check_host(&args.host)?;
        let delivered_ttl = delivered_ttl(args.delivered_ttl, args.result_ttl)?;
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(tls_config(cert, key)?),
            (None, None) => None,
            // clap's `requires` makes them come together; said again for a caller that skips clap.
            (Some(_), None) => return Err(UsageError("--tls-cert needs --tls-key".into()).into()),
            (None, Some(_)) => return Err(UsageError("--tls-key needs --tls-cert".into()).into()),
        };
        if args.standby && !args.role.works() {
            return Err(UsageError(
                "--standby waits for a worker's lease, and a --role gateway process runs no worker"
                    .into(),
            )
            .into());
        }
        let local_host = !args.role.serves() || is_loopback(&args.host);
        let admin = crate::admin::args::resolve(&args.admin, local_host, args.allow_open)?;
        // A worker binds no port, so its --host opens nothing.
        if args.role.serves() {
            let managed = (!args.no_managed_redis).then_some(&redis);
            check_served(&circles, &args.host, args.allow_open, &admin, managed)?;
        }
        let data_dir = match args.data_dir {
            Some(d) => d,
            None => default_data_dir()?,
        };
        let mode = match args.output {
            // A dumb terminal cannot move its cursor: each frame would land
            // below the last one.
            Output::Auto if std::io::stdout().is_terminal() && !crate::logging::dumb_terminal() => {
                Mode::Live
            }
            Output::Auto | Output::Plain => Mode::Plain,
            Output::Live => Mode::Live,
            Output::Json => Mode::Json,
        };
        let log_file = (mode == Mode::Live).then(|| {
            args.log_file
                .unwrap_or_else(|| data_dir.join("orchestrator.log"))
        });
        // With an admin endpoint someone may follow the counters there
        // (`status`, `/api/*`, `/metrics`): as fresh as `--refresh` says.
        let stats_every = if mode == Mode::Plain && admin.addr.is_none() {
            PLAIN_STATS_EVERY
        } else {
            args.refresh
        };
        let mut worker = worker::WorkerOptions::default();
        worker.pop_timeout = args.worker_pop_timeout;
        worker.heartbeat_interval = args.worker_heartbeat;
        worker.heartbeat_ttl = args.worker_heartbeat * 3;
        worker.reap_interval = args.worker_reap_interval;
        worker.claim_batch = args.claim_batch;
        Ok(Settings {
            config_path: args.config,
            circles,
            only,
            role: args.role,
            standby: args.standby,
            redis,
            redis_ca,
            tls,
            managed_redis: !args.no_managed_redis,
            data_dir,
            host: args.host,
            allow_open: args.allow_open,
            mode,
            log_file,
            log_format: args.log_format,
            refresh: args.refresh,
            stats_every,
            shutdown_grace: args.shutdown_grace,
            result_ttl: args.result_ttl,
            delivered_ttl,
            durability: match args.durability {
                crate::cli::Durability::Sync => ourdb::Durability::Sync,
                crate::cli::Durability::Flush => ourdb::Durability::Flush,
            },
            engine: engine::Limits {
                timeout: args.script_timeout,
                max_operations: args.max_operations,
                max_memory_bytes: usize::try_from(args.max_script_memory).unwrap_or(usize::MAX),
                ..engine::Limits::default()
            },
            worker,
            server: ServerLimits {
                task_timeout: args.task_timeout,
                max_message_bytes: args.max_message_bytes,
                max_in_flight: args.max_in_flight,
                max_connections: args.max_connections,
                allowed_origins: args.allowed_origins,
            },
            admin,
        })
    }

    /// The server configuration of one circle; its script size limit is
    /// the engines' own, so the server refuses exactly what they would.
    pub fn server_config(&self, circle: &CircleConfig, queue: &str) -> server_ws::ServerConfig {
        server_ws::ServerConfig {
            circle_name: circle.name.clone(),
            queue: queue.to_string(),
            task_timeout: self.server.task_timeout,
            delivered_ttl: Some(self.delivered_ttl),
            max_message_bytes: self.server.max_message_bytes,
            max_in_flight: self.server.max_in_flight,
            max_connections: self.server.max_connections,
            max_script_bytes: self.engine.max_script_bytes,
            allowed_origins: self.server.allowed_origins.clone(),
            principals: circle.principals.clone(),
            tls: self.tls.clone(),
            workers: None,
        }
    }

    /// How the circles are prepared (see [`crate::circles::prepare_all`]).
    pub fn plan(&self) -> crate::circles::Plan<'_> {
        crate::circles::Plan {
            role: self.role,
            host: &self.host,
            data_dir: &self.data_dir,
            limits: &self.engine,
            durability: self.durability,
            standby: self.standby,
        }
    }

    /// The URL scheme of every circle: `wss` with `--tls-cert`, else `ws`.
    pub fn ws_scheme(&self) -> &'static str {
        if self.tls.is_some() { "wss" } else { "ws" }
    }

    /// The Redis of `circle`: its own `redis`, else `--redis-url`.
    pub fn redis_of<'a>(&'a self, circle: &'a CircleConfig) -> &'a RedisUrl {
        circle.redis.as_ref().unwrap_or(&self.redis)
    }

    /// The worker configuration of one circle, on its Redis, taking its
    /// queue's lease as `lease` (its token is ignored) and waiting for it
    /// with `--standby`.
    pub fn worker_config(
        &self,
        circle: &CircleConfig,
        queue: &str,
        lease: &client::Lease,
    ) -> worker::WorkerConfig {
        let mut config = worker::WorkerConfig::new(self.redis_of(circle).as_str(), queue);
        config.circle = circle.name.clone();
        config.redis_ca = self.redis_ca.clone();
        config.result_ttl = self.result_ttl;
        config.shutdown_grace = self.shutdown_grace;
        config.lease = Some(lease.clone());
        config.standby = self.standby;
        config
    }
}

/// The default data directory: `$HOME/.hero/circles`, else the platform home.
pub fn default_data_dir() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(dirs::home_dir)
        .ok_or_else(|| {
            UsageError(
                "cannot find the home directory for the default data dir ($HOME is not set, \
                 and the user has none); pass --data-dir"
                    .into(),
            )
        })?;
    Ok(home.join(".hero").join("circles"))
}

/// `--delivered-ttl`, given or defaulted: never longer than `--result-ttl`
/// (a result someone read must not outlive one nobody read); unset, a
/// minute or the result TTL when that is shorter.
fn delivered_ttl(given: Option<Duration>, result_ttl: Duration) -> anyhow::Result<Duration> {
    match given {
        None => Ok(server_ws::DEFAULT_DELIVERED_TTL.min(result_ttl)),
        Some(ttl) if ttl > result_ttl => Err(UsageError(format!(
            "--delivered-ttl {ttl:?} is longer than --result-ttl {result_ttl:?}: a delivered \
             result is never kept longer than one nobody read (lower --delivered-ttl or raise \
             --result-ttl)"
        ))
        .into()),
        Some(ttl) => Ok(ttl),
    }
}

/// A `--redis-url` that is malformed or names no host and port (nor
/// sentinels) is a usage error.
fn redis_url(url: &str) -> anyhow::Result<RedisUrl> {
    config::redis_url(url).map_err(|problem| {
        UsageError(format!(
            "--redis-url {} {problem}",
            client::url::redact(url)
        ))
        .into()
    })
}

/// `--redis-ca`: only with a `rediss://` URL (`--redis-url`, or a circle's
/// own `redis`), and a file of certificates.
fn redis_ca(
    redis: &RedisUrl,
    circles: &[config::CircleConfig],
    path: &std::path::Path,
) -> anyhow::Result<client::RedisCa> {
    let own_tls = circles
        .iter()
        .any(|circle| circle.redis.as_ref().is_some_and(RedisUrl::is_tls));
    if !redis.is_tls() && !own_tls {
        return Err(UsageError(format!(
            "--redis-ca is for a rediss:// --redis-url (Redis over TLS), and {redis} is not one, \
             nor is any circle's own \"redis\""
        ))
        .into());
    }
    Ok(client::RedisCa::from_pem(
        crate::tls::read_ca("--redis-ca", path)?.pem,
    ))
}

/// `--tls-cert` and `--tls-key`, read and checked before anything starts:
/// a bad file is a usage error naming the option and the file.
fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<server_ws::TlsConfig> {
    server_ws::TlsConfig::from_pem_files(cert, key).map_err(|e| {
        // The cert is named first: one file may hold both.
        let flag = match &e {
            server_ws::Error::Tls { file, .. } if file != cert && file == key => "--tls-key",
            _ => "--tls-cert",
        };
        UsageError(format!("{flag} {e}")).into()
    })
}

/// A `--host` that does not resolve is a usage error, found before Redis is
/// looked for or started. Whether the address can be bound is only known
/// when each circle binds it (exit 1, naming the circle).
fn check_host(host: &str) -> anyhow::Result<()> {
    use std::net::ToSocketAddrs;
    match (host, 0).to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(UsageError(format!("--host {host} resolves to no address")).into()),
        Err(e) => Err(UsageError(format!(
            "--host {host} is not an address or a name this machine resolves ({e}); for \
             example 127.0.0.1, 0.0.0.0 or ::1"
        ))
        .into()),
    }
}

/// What circles served on `host` must pass, at start and at each reload:
/// none open on a non-loopback host unless `allow_open`
/// ([`check_open_circles`]), none on the admin endpoint's port
/// ([`check_admin_port`]), and, with `managed_redis` (the Redis URL, when
/// a managed redis-server may be started: Redis holds that port for sure),
/// none on Redis' port ([`check_redis_port`]).
pub fn check_served(
    circles: &[CircleConfig],
    host: &str,
    allow_open: bool,
    admin: &crate::admin::AdminSettings,
    managed_redis: Option<&RedisUrl>,
) -> anyhow::Result<()> {
    if !allow_open {
        check_open_circles(circles, host)?;
    }
    check_admin_port(circles, host, admin)?;
    match managed_redis {
        Some(redis) => check_redis_port(circles, host, redis),
        None => Ok(()),
    }
}

/// Circles without principals are served only on loopback unless
/// `--allow-open` says otherwise: anyone who reaches an open circle's port
/// can read and rewrite its data.
pub fn check_open_circles(circles: &[CircleConfig], host: &str) -> anyhow::Result<()> {
    if is_loopback(host) {
        return Ok(());
    }
    let open: Vec<String> = circles
        .iter()
        .filter(|c| c.principals.is_empty())
        .map(|c| format!("{:?} (id {})", c.name, c.id))
        .collect();
    if open.is_empty() {
        return Ok(());
    }
    Err(UsageError(format!(
        "--host {host} is not a loopback address, and these circles have no principals, so \
         anyone who reaches their ports could read and change their data: {}. Add \
         principals to them in circles.json (circles_orchestrator token new --circle <id> \
         --name <who> --role read|write), or pass --allow-open to serve them open anyway",
        open.join(", ")
    ))
    .into())
}

/// Refuses a circle whose port is the admin endpoint's on an address the
/// two share (the circle could never bind it: this very process holds it).
pub fn check_admin_port(
    circles: &[CircleConfig],
    host: &str,
    admin: &crate::admin::AdminSettings,
) -> anyhow::Result<()> {
    use std::net::ToSocketAddrs;
    let Some(addr) = admin.addr.filter(|a| a.port() != 0) else {
        return Ok(());
    };
    let Some(circle) = circles.iter().find(|c| c.port == addr.port()) else {
        return Ok(());
    };
    let shared = (host, 0).to_socket_addrs().is_ok_and(|mut ips| {
        ips.any(|ip| ip.ip() == addr.ip() || ip.ip().is_unspecified() || addr.ip().is_unspecified())
    });
    if !shared {
        return Ok(());
    }
    Err(UsageError(format!(
        "{}: port {} is this orchestrator's admin endpoint (--admin {addr}); give the circle \
         another port in circles.json, or the endpoint another --admin address",
        circle.who(),
        addr.port()
    ))
    .into())
}

/// Refuses a circle whose port is a loopback `--redis-url`'s on an address
/// the two share: Redis (a managed one is started before the circles bind)
/// holds it, so the circle could never bind it; said up front instead of
/// "already in use (by another program …)" after the managed one started.
fn check_redis_port(circles: &[CircleConfig], host: &str, redis: &RedisUrl) -> anyhow::Result<()> {
    use std::net::ToSocketAddrs;
    let Some((redis_host, port)) = redis.host_port().filter(|_| redis.is_loopback()) else {
        return Ok(());
    };
    let Some(circle) = circles.iter().find(|c| c.port == port) else {
        return Ok(());
    };
    let redis_ips: Vec<std::net::IpAddr> = (redis_host, port)
        .to_socket_addrs()
        .map(|a| a.map(|a| a.ip()).collect())
        .unwrap_or_default();
    let shared = (host, 0).to_socket_addrs().is_ok_and(|mut ips| {
        ips.any(|ip| ip.ip().is_unspecified() || redis_ips.contains(&ip.ip()))
    });
    if !shared {
        return Ok(());
    }
    Err(UsageError(format!(
        "{}: port {port} is the port of Redis (--redis-url {redis}); give the circle another \
         port in circles.json, or Redis another port in --redis-url",
        circle.who()
    ))
    .into())
}

/// Whether every address `host` resolves to is a loopback address.
fn is_loopback(host: &str) -> bool {
    use std::net::ToSocketAddrs;
    match (host, 0).to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn resolve(args: &[&str]) -> anyhow::Result<Settings> {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("circles.json");
        std::fs::write(&config, r#"[{"id": 1, "name": "Alpha", "port": 8081}]"#)
            .expect("write config");
        let mut argv = vec!["c", config.to_str().expect("utf-8 path")];
        argv.extend_from_slice(args);
        let cli = crate::cli::Cli::try_parse_from(argv).expect("parses");
        Settings::resolve(cli.run)
    }

    fn is_usage(e: &anyhow::Error) -> bool {
        e.chain().any(|c| c.is::<UsageError>())
    }

    #[test]
    fn defaults_are_filled_in_once() {
        let s = resolve(&["--data-dir", "/tmp/d", "--output", "json"]).expect("valid");
        assert_eq!(s.redis.as_str(), "redis://127.0.0.1:6379");
        assert!(s.managed_redis);
        assert_eq!(s.mode, Mode::Json);
        assert_eq!(s.log_file, None, "logs go to stderr outside live mode");
        assert_eq!(s.stats_every, s.refresh);
        assert_eq!(s.worker.heartbeat_ttl, s.worker.heartbeat_interval * 3);
        assert_eq!(s.durability, ourdb::Durability::Sync);
        let flush = resolve(&["--data-dir", "/tmp/d", "--durability", "flush"]).expect("valid");
        assert_eq!(flush.durability, ourdb::Durability::Flush);
        let server = s.server_config(&s.circles[0], "alpha");
        assert_eq!(server.max_script_bytes, s.engine.max_script_bytes);
        let lease = client::Lease {
            token: 0,
            pid: 7,
            host: "here".into(),
            dir: "/tmp/d/1".into(),
        };
        let worker = s.worker_config(&s.circles[0], "alpha", &lease);
        assert_eq!(worker.lease, Some(lease.clone()));
        assert!(!worker.standby);
        let standby = resolve(&["--data-dir", "/tmp/d", "--standby"]).expect("valid");
        assert!(
            standby
                .worker_config(&standby.circles[0], "alpha", &lease)
                .standby
        );
    }

    #[test]
    fn live_mode_logs_to_a_file_in_the_data_dir_and_plain_mode_reads_counters_slowly_without_admin()
    {
        let s = resolve(&["--data-dir", "/tmp/d", "--output", "live"]).expect("valid");
        assert_eq!(s.log_file, Some(PathBuf::from("/tmp/d/orchestrator.log")));
        let plain = [
            "--data-dir",
            "/tmp/d",
            "--output",
            "plain",
            "--refresh",
            "2s",
        ];
        let s = resolve(&[&plain[..], &["--admin", "off"]].concat()).expect("valid");
        assert_eq!(s.stats_every, PLAIN_STATS_EVERY);
        // The admin endpoint serves the counters: they stay fresh.
        let s = resolve(&plain).expect("valid");
        assert_eq!(s.stats_every, Duration::from_secs(2));
    }

    #[test]
    fn a_redis_url_without_host_and_port_is_a_usage_error_and_keeps_its_password_hidden() {
        for url in ["unix:///tmp/r.sock?pass=hunter2", "http://u:hunter2@h:1"] {
            let e = resolve(&["--redis-url", url]).expect_err(url);
            assert!(is_usage(&e), "{url}: {e}");
            assert!(e.to_string().contains("is not a redis:// URL"), "{e}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn loopback_hosts_are_told_apart_from_the_others() {
        for host in ["127.0.0.1", "::1", "localhost", "127.0.0.2"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["0.0.0.0", "::", "192.0.2.1"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn a_worker_binds_no_port_so_its_host_opens_no_circle() {
        let s = resolve(&["--host", "0.0.0.0", "--role", "worker"]).expect("valid");
        assert_eq!(s.role, crate::role::Role::Worker);
        for role in ["gateway", "all"] {
            let e = resolve(&["--host", "0.0.0.0", "--role", role]).expect_err(role);
            assert!(is_usage(&e), "{role}: {e}");
        }
    }

    #[test]
    fn standby_is_refused_where_no_worker_runs() {
        let e = resolve(&["--role", "gateway", "--standby"]).expect_err("gateway");
        assert!(is_usage(&e), "{e}");
        assert!(e.to_string().contains("--standby"), "{e}");
        for role in ["worker", "all"] {
            let s = resolve(&["--role", role, "--standby"]).expect(role);
            assert!(s.standby, "{role}");
        }
    }

    #[test]
    fn circles_chooses_by_id_or_name_and_an_unknown_one_is_a_usage_error() {
        let s = resolve(&["--circles", " alpha "]).expect("valid");
        assert_eq!(s.circles.len(), 1);
        assert_eq!(s.only, Some(vec!["alpha".to_string()]));
        let e = resolve(&["--circles", "1,Beta"]).expect_err("unknown");
        assert!(is_usage(&e), "{e}");
        assert!(e.to_string().contains("\"Beta\""), "{e}");
    }

    #[test]
    fn the_delivered_ttl_defaults_to_a_minute_and_never_exceeds_the_result_ttl() {
        let s = resolve(&[]).expect("valid");
        assert_eq!(s.delivered_ttl, Duration::from_secs(60));
        let server = s.server_config(&s.circles[0], "alpha");
        assert_eq!(server.delivered_ttl, Some(Duration::from_secs(60)));
        let s = resolve(&["--result-ttl", "20s"]).expect("valid");
        assert_eq!(
            s.delivered_ttl,
            Duration::from_secs(20),
            "capped by a shorter result TTL"
        );
        let s = resolve(&["--delivered-ttl", "1h"]).expect("equal to the result TTL");
        assert_eq!(s.delivered_ttl, s.result_ttl);
        let s = resolve(&["--delivered-ttl", "5s"]).expect("valid");
        assert_eq!(s.delivered_ttl, Duration::from_secs(5));
        let e = resolve(&["--delivered-ttl", "2h"]).expect_err("longer than the result TTL");
        assert!(is_usage(&e), "{e}");
        assert!(e.to_string().contains("--delivered-ttl"), "{e}");
        assert!(e.to_string().contains("--result-ttl"), "{e}");
    }

    #[test]
    fn an_unresolvable_host_is_a_usage_error() {
        let e = resolve(&["--host", "no such host!"]).expect_err("bad host");
        assert!(is_usage(&e), "{e}");
    }
}
