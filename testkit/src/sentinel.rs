//! [`SentinelGroup`]: a primary, one replica and three sentinels monitoring
//! them under one service name, all on free loopback ports, all killed on
//! drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::resp::{Reply, command};
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
        let primary = RedisServer::start();
        let replica = RedisServer::start_replica_of(primary.port());
        let sentinels = (0..3).map(|_| Sentinel::start(primary.port())).collect();
        let group = SentinelGroup {
            servers: vec![primary, replica],
            sentinels,
        };
        group.wait_ready();
        group
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + READY_DEADLINE;
        let ready = || {
            let linked = self.servers.iter().any(|s| {
                command(s.port(), &["INFO", "replication"])
                    .ok()
                    .and_then(|r| r.text().map(|t| t.contains("master_link_status:up")))
                    .unwrap_or(false)
            });
            linked
                && self.sentinels.iter().all(|s| {
                    command(s.port, &["SENTINEL", "MASTER", SERVICE]).is_ok_and(|r| {
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
        let reply = command(
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
        let reply = command(self.sentinels[0].port, &["SENTINEL", "FAILOVER", SERVICE])
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
                    command(s.port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE])
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
            let role = command(new, &["ROLE"]).ok()?;
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
    fn start(primary_port: u16) -> Sentinel {
        let dir = tempfile::Builder::new()
            .prefix("circles-sentinel-")
            .tempdir()
            .expect("create a temp dir for a sentinel");
        let port = free_port();
        let log = dir.path().join("sentinel.log");
        let conf = dir.path().join("sentinel.conf");
        let text = format!(
            "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {log}\n\
             sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n\
             sentinel down-after-milliseconds {SERVICE} 1000\n\
             sentinel failover-timeout {SERVICE} 5000\n\
             sentinel parallel-syncs {SERVICE} 1\n",
            dir = dir.path().display(),
            log = log.display(),
        );
        std::fs::write(&conf, text).expect("write sentinel.conf");
        let child = spawn_sentinel(&conf);
        let sentinel = Sentinel {
            child,
            port,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + READY_DEADLINE;
        while command(port, &["PING"]).map(|r| r.text() == Some("PONG")) != Ok(true) {
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
}
