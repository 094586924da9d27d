//! [`SentinelGroup`]: a primary, one replica and three sentinels monitoring
//! them under one service name, all on free loopback ports, all killed on
//! drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::resp::{Reply, command_as};
use crate::{RedisServer, free_port, wait_for};

/// The service name the sentinels monitor the primary under.
pub const SERVICE: &str = "circles";

/// How long the group may take to be ready (sentinels see the replica and
/// each other: their hello messages go out every 2 s).
const READY_DEADLINE: Duration = Duration::from_secs(20);

/// A primary, a replica and three sentinels. See the module docs.
pub struct SentinelGroup {
    servers: Vec<RedisServer>,
    sentinels: Vec<Sentinel>,
    passwords: Passwords,
}

/// The passwords of a [`SentinelGroup::start_with_passwords`] group.
#[derive(Clone, Default)]
struct Passwords {
    data: Option<String>,
    sentinels: Option<String>,
}

/// One `redis-sentinel` (or `redis-server --sentinel`) process.
struct Sentinel {
    child: Child,
    port: u16,
    log: PathBuf,
    /// Holds its config file (which it rewrites) and log.
    _dir: tempfile::TempDir,
}

impl SentinelGroup {
    /// Starts the group and waits until every sentinel knows the replica and
    /// the two other sentinels, and the replica's link to the primary is up,
    /// so a `SENTINEL FAILOVER` can run at once.
    ///
    /// # Panics
    /// When a process does not start or the group is not ready in time; the
    /// message carries the logs.
    pub fn start() -> SentinelGroup {
        SentinelGroup::start_with_passwords(None, None)
    }

    /// [`SentinelGroup::start`] with `data` as the password of the primary
    /// and the replica (their `requirepass` and `masterauth`, the
    /// sentinels' `auth-pass`), and `sentinels` as the sentinels' own
    /// `requirepass`.
    pub fn start_with_passwords(data: Option<&str>, sentinels: Option<&str>) -> SentinelGroup {
        let passwords = Passwords {
            data: data.map(str::to_owned),
            sentinels: sentinels.map(str::to_owned),
        };
        let auth: Vec<&str> = match data {
            Some(pw) => vec!["--requirepass", pw, "--masterauth", pw],
            None => Vec::new(),
        };
        let primary = RedisServer::start_with_args(&auth);
        let port = primary.port().to_string();
        let mut replica_args = vec!["--replicaof", "127.0.0.1", port.as_str()];
        replica_args.extend(&auth);
        let replica = RedisServer::start_with_args(&replica_args);
        let sentinels = (0..3)
            .map(|_| Sentinel::start(primary.port(), &passwords))
            .collect();
        let group = SentinelGroup {
            servers: vec![primary, replica],
            sentinels,
            passwords,
        };
        group.wait_ready();
        group
    }

    /// One command to the sentinel on `port`, authenticated when the
    /// sentinels want a password.
    fn ask(&self, port: u16, args: &[&str]) -> Result<Reply, String> {
        command_as(port, self.passwords.sentinels.as_deref(), args)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + READY_DEADLINE;
        let ready = || {
            let linked = self.servers.iter().any(|s| {
                command_as(
                    s.port(),
                    self.passwords.data.as_deref(),
                    &["INFO", "replication"],
                )
                .ok()
                .and_then(|r| r.text().map(|t| t.contains("master_link_status:up")))
                .unwrap_or(false)
            });
            linked
                && self.sentinels.iter().all(|s| {
                    self.ask(s.port, &["SENTINEL", "MASTER", SERVICE])
                        .is_ok_and(|r| {
                            r.field("num-slaves") == Some("1")
                                && r.field("num-other-sentinels") == Some("2")
                        })
                })
        };
        while !ready() {
            if Instant::now() > deadline {
                panic!(
                    "the sentinel group was not ready within {READY_DEADLINE:?}; sentinel logs:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The `redis+sentinel://` URL of the group (its three sentinels, service
    /// `circles`, database 0).
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{SERVICE}", nodes.join(","))
    }

    /// [`SentinelGroup::url`] with the group's passwords: the primary's as
    /// the URL's password, the sentinels' as `sentinel_password`.
    pub fn url_with_passwords(&self) -> String {
        let url = self.url();
        let rest = url.strip_prefix("redis+sentinel://").unwrap_or(&url);
        let mut out = match &self.passwords.data {
            Some(pw) => format!("redis+sentinel://:{pw}@{rest}"),
            None => url.clone(),
        };
        if let Some(pw) = &self.passwords.sentinels {
            out.push_str(&format!("?sentinel_password={pw}"));
        }
        out
    }

    /// The ports of the two data servers (the primary first, as started).
    pub fn data_ports(&self) -> Vec<u16> {
        self.servers.iter().map(RedisServer::port).collect()
    }

    /// The ports of the sentinels.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|s| s.port).collect()
    }

    /// The port of the primary as the first sentinel names it.
    pub fn primary_port(&self) -> u16 {
        let reply = self
            .ask(
                self.sentinels[0].port,
                &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE],
            )
            .unwrap_or_else(|e| panic!("asking sentinel for the primary: {e}"));
        reply
            .items()
            .get(1)
            .and_then(Reply::text)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("sentinel named no primary: {reply:?}"))
    }

    /// Forces a failover (`SENTINEL FAILOVER`) and returns at once with the
    /// port of the primary it replaces.
    pub fn failover(&self) -> u16 {
        let old = self.primary_port();
        let reply = self
            .ask(self.sentinels[0].port, &["SENTINEL", "FAILOVER", SERVICE])
            .unwrap_or_else(|e| panic!("SENTINEL FAILOVER: {e}"));
        assert_eq!(reply.text(), Some("OK"), "SENTINEL FAILOVER: {reply:?}");
        old
    }

    /// Waits until every sentinel names a primary other than `old` and that
    /// server says it is a primary; returns its port.
    pub fn wait_for_new_primary(&self, old: u16, timeout: Duration) -> u16 {
        wait_for("the sentinels to name a new primary", timeout, || {
            let named: Vec<Option<u16>> = self
                .sentinels
                .iter()
                .map(|s| {
                    self.ask(s.port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE])
                        .ok()?
                        .items()
                        .get(1)?
                        .text()?
                        .parse()
                        .ok()
                })
                .collect();
            let new = named[0].filter(|p| *p != old)?;
            let all_agree = named.iter().all(|p| *p == Some(new));
            let role = command_as(new, self.passwords.data.as_deref(), &["ROLE"]).ok()?;
            let is_primary = role.items().first().and_then(Reply::text) == Some("master");
            (all_agree && is_primary).then_some(new)
        })
    }

    /// Every sentinel's log, for failure messages.
    pub fn logs(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| {
                format!(
                    "--- sentinel {}:\n{}",
                    s.port,
                    std::fs::read_to_string(&s.log).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Sentinel {
    fn start(primary_port: u16, passwords: &Passwords) -> Sentinel {
        let dir = tempfile::Builder::new()
            .prefix("circles-sentinel-")
            .tempdir()
            .expect("create a temp dir for a sentinel");
        let port = free_port();
        let log = dir.path().join("sentinel.log");
        let conf = dir.path().join("sentinel.conf");
        let mut text = format!(
            "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {log}\n\
             sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n\
             sentinel down-after-milliseconds {SERVICE} 1000\n\
             sentinel failover-timeout {SERVICE} 5000\n\
             sentinel parallel-syncs {SERVICE} 1\n",
            dir = dir.path().display(),
            log = log.display(),
        );
        if let Some(pw) = &passwords.data {
            text.push_str(&format!("sentinel auth-pass {SERVICE} {pw}\n"));
        }
        // Sentinels authenticate to each other with their own requirepass.
        if let Some(pw) = &passwords.sentinels {
            text.push_str(&format!("requirepass {pw}\n"));
        }
        std::fs::write(&conf, text).expect("write sentinel.conf");
        let child = spawn_sentinel(&conf);
        let sentinel = Sentinel {
            child,
            port,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + READY_DEADLINE;
        let pong = || command_as(port, passwords.sentinels.as_deref(), &["PING"]);
        while pong().map(|r| r.text() == Some("PONG")) != Ok(true) {
            assert!(
                Instant::now() < deadline,
                "sentinel on port {port} did not answer PING; its log:\n{}",
                std::fs::read_to_string(&sentinel.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        sentinel
    }
}

/// `redis-sentinel CONF`, or `redis-server CONF --sentinel` where there is
/// no `redis-sentinel` (the same program in sentinel mode).
fn spawn_sentinel(conf: &std::path::Path) -> Child {
    let quiet = |cmd: &mut Command| {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    };
    match quiet(Command::new("redis-sentinel").arg(conf)) {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            quiet(Command::new("redis-server").arg(conf).arg("--sentinel")).unwrap_or_else(|e| {
                panic!(
                    "neither redis-sentinel nor redis-server --sentinel could start ({e}): \
                     the tests need a real Redis Sentinel (Debian/Ubuntu: `apt-get install -y \
                     redis-server redis-sentinel`, or run scripts/install-deps.sh)"
                )
            })
        }
        Err(e) => panic!("failed to spawn redis-sentinel: {e}"),
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forced_failover_promotes_the_replica() {
        let group = SentinelGroup::start();
        let old = group.primary_port();
        assert_eq!(old, group.data_ports()[0]);
        assert_eq!(group.failover(), old);
        let new = group.wait_for_new_primary(old, Duration::from_secs(20));
        assert_eq!(new, group.data_ports()[1]);
    }

    #[test]
    fn a_group_with_passwords_refuses_commands_without_them() {
        let group = SentinelGroup::start_with_passwords(Some("data-pw"), Some("sentinel-pw"));
        let sentinel = group.sentinel_ports()[0];
        let primary = group.primary_port();
        let refused =
            |r: Result<Reply, String>| matches!(r, Ok(Reply::Error(e)) if e.starts_with("NOAUTH"));
        assert!(refused(command_as(
            sentinel,
            None,
            &["SENTINEL", "MASTERS"]
        )));
        assert!(refused(command_as(primary, None, &["GET", "k"])));
        assert_eq!(
            command_as(primary, Some("data-pw"), &["PING"]),
            Ok(Reply::Status("PONG".into()))
        );
        assert!(group.url_with_passwords().contains(":data-pw@"));
        assert!(
            group
                .url_with_passwords()
                .ends_with("?sentinel_password=sentinel-pw")
        );
    }
}
