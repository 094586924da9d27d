//! Several "hosts" on one machine for the scale-out tests: each host is a
//! network namespace with a veth pair onto a bridge that also carries the
//! test's Redis (`ip netns`, which needs root), or, where namespaces cannot be
//! made, a loopback address of its own (127.0.0.2, 127.0.0.3, ...). Each test
//! prints which one it used. Only namespaces can cut one host's link
//! ([`Hosts::cut`]).

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Distinct subnets for the tests of one run (tests run in parallel).
static NEXT: AtomicU32 = AtomicU32::new(0);

/// How the hosts are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One network namespace per host, on a bridge.
    Namespaces,
    /// One loopback address per host, in this namespace.
    Loopback,
}

/// The hosts of one test, removed on drop.
pub struct Hosts {
    pub kind: Kind,
    /// Prefix of every name this test made (namespaces, bridge, veths).
    tag: String,
    /// The first three octets of the subnet (`10.a.b`).
    net: String,
    count: usize,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Hosts {
    /// `count` hosts (at most 200): namespaces when this process may make
    /// them, else loopback addresses. `CIRCLES_TEST_HOSTS=loopback` forces
    /// the loopback kind.
    pub fn new(count: usize) -> Hosts {
        assert!(count <= 200);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("c{}x{n}", pid % 100_000);
        let net = format!("10.{}.{}", 100 + (pid % 100), (pid / 100 % 50) * 5 + n % 5);
        let mut hosts = Hosts {
            kind: Kind::Loopback,
            tag,
            net,
            count,
        };
        let forced = std::env::var("CIRCLES_TEST_HOSTS").is_ok_and(|v| v == "loopback");
        if !forced {
            match hosts.make_namespaces() {
                Ok(()) => hosts.kind = Kind::Namespaces,
                Err(why) => {
                    hosts.remove();
                    eprintln!("network namespaces unavailable ({why}); using loopback addresses");
                }
            }
        }
        eprintln!("hosts: {:?}, {} of them", hosts.kind, count);
        hosts
    }

    fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }

    fn namespace(&self, host: usize) -> String {
        format!("{}h{host}", self.tag)
    }

    fn make_namespaces(&self) -> Result<(), String> {
        let br = self.bridge();
        ip(&["link", "add", &br, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{}.1/24", self.net), "dev", &br])?;
        ip(&["link", "set", &br, "up"])?;
        for host in 0..self.count {
            let ns = self.namespace(host);
            let (outside, inside) = (
                format!("{}o{host}", self.tag),
                format!("{}i{host}", self.tag),
            );
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ])?;
            ip(&["link", "set", &inside, "netns", &ns])?;
            ip(&["link", "set", &outside, "master", &br])?;
            ip(&["link", "set", &outside, "up"])?;
            let addr = format!("{}.{}/24", self.net, 10 + host);
            ip(&["-n", &ns, "addr", "add", &addr, "dev", &inside])?;
            ip(&["-n", &ns, "link", "set", &inside, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// The address by which the others reach `host`.
    pub fn addr(&self, host: usize) -> String {
        match self.kind {
            Kind::Namespaces => format!("{}.{}", self.net, 10 + host),
            Kind::Loopback => format!("127.0.0.{}", 2 + host),
        }
    }

    /// The address by which hosts reach the test's Redis (and this process).
    pub fn shared_addr(&self) -> String {
        match self.kind {
            Kind::Namespaces => format!("{}.1", self.net),
            Kind::Loopback => "127.0.0.1".to_owned(),
        }
    }

    /// Opens `redis` to the hosts: listening on the shared address too, and
    /// out of protected mode (a test Redis without a password). Loopback
    /// hosts reach it as it is.
    pub fn open_redis(&self, redis: &testkit::RedisServer) {
        if self.kind == Kind::Loopback {
            return;
        }
        let port = redis.port().to_string();
        let bind = format!("127.0.0.1 {}", self.shared_addr());
        for args in [
            ["config", "set", "protected-mode", "no"].as_slice(),
            ["config", "set", "bind", bind.as_str()].as_slice(),
        ] {
            let out = Command::new("redis-cli")
                .args(["-p", &port])
                .args(args)
                .output()
                .expect("redis-cli runs");
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("OK"),
                "redis-cli {args:?}: {out:?}"
            );
        }
    }

    /// The URL of `redis` as the hosts reach it.
    pub fn redis_url(&self, redis: &testkit::RedisServer) -> String {
        format!("redis://{}:{}/", self.shared_addr(), redis.port())
    }

    /// `cmd` as run on `host`: inside its namespace (`ip netns exec`, which
    /// execs the program, so the child's pid is the program's), or as is.
    pub fn on(&self, host: usize, cmd: Command) -> Command {
        match self.kind {
            Kind::Loopback => cmd,
            Kind::Namespaces => {
                let mut wrapped = Command::new("ip");
                wrapped
                    .args(["netns", "exec", &self.namespace(host)])
                    .arg(cmd.get_program())
                    .args(cmd.get_args());
                if let Some(dir) = cmd.get_current_dir() {
                    wrapped.current_dir(dir);
                }
                for (key, value) in cmd.get_envs() {
                    match value {
                        Some(value) => wrapped.env(key, value),
                        None => wrapped.env_remove(key),
                    };
                }
                wrapped
            }
        }
    }

    /// Cuts `host`'s link (its veth goes down): it reaches nothing and
    /// nothing reaches it. `None` on loopback hosts, which cannot be cut.
    pub fn cut(&self, host: usize) -> Option<()> {
        (self.kind == Kind::Namespaces).then(|| {
            ip(&["link", "set", &format!("{}o{host}", self.tag), "down"]).expect("link down")
        })
    }

    /// Restores a link [`Hosts::cut`] cut.
    pub fn heal(&self, host: usize) {
        if self.kind == Kind::Namespaces {
            ip(&["link", "set", &format!("{}o{host}", self.tag), "up"]).expect("link up");
        }
    }

    fn remove(&self) {
        for host in 0..self.count {
            let _ = ip(&["link", "del", &format!("{}o{host}", self.tag)]);
            let _ = ip(&["netns", "del", &self.namespace(host)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        if self.kind == Kind::Namespaces {
            self.remove();
        }
    }
}
