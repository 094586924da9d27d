//! [`Lease`]: who holds a queue (see [`crate::keys::queue_owner`]), with the
//! fencing token it was granted (see [`crate::keys::queue_fence`]).
//!
//! Wire format of the owner key's value, fixed: `<token>|<pid>|<host>|<data
//! dir>`. The token is a decimal `u64`; the data dir comes last and may
//! itself contain `|`, so a reader splits at the first three `|` only.

use std::fmt;

/// A queue's lease: the fencing token it was granted with and the
/// orchestrator (pid, host, database directory) holding it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    /// The fencing token: `INCR rhai_queue_fence:<queue>` at the moment the
    /// lease changed hands (never 0). A claim carrying an older token is
    /// refused by Redis.
    pub token: u64,
    /// Process id of the orchestrator holding it.
    pub pid: u32,
    /// The host it runs on.
    pub host: String,
    /// The circle's database directory on that host.
    pub dir: String,
}

impl Lease {
    /// Reads the owner key's value. Errors name what was wrong.
    pub fn parse(value: &str) -> Result<Lease, String> {
        let mut parts = value.splitn(4, '|');
        let (Some(token), Some(pid), Some(host), Some(dir)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!(
                "queue lease {value:?} is not <token>|<pid>|<host>|<data dir>"
            ));
        };
        let token = token
            .parse::<u64>()
            .ok()
            .filter(|t| *t > 0)
            .ok_or_else(|| {
                format!("queue lease {value:?}: token {token:?} is not a positive integer")
            })?;
        let pid = pid
            .parse::<u32>()
            .map_err(|_| format!("queue lease {value:?}: pid {pid:?} is not a process id"))?;
        Ok(Lease {
            token,
            pid,
            host: host.to_owned(),
            dir: dir.to_owned(),
        })
    }

    /// The holder part of the value, `<pid>|<host>|<data dir>` (what the
    /// acquire script prefixes with the token).
    pub fn holder(&self) -> String {
        format!("{}|{}|{}", self.pid, self.host, self.dir)
    }

    /// Whether `other` is the same database (same host and directory),
    /// whatever its token and pid.
    pub fn same_database(&self, other: &Lease) -> bool {
        self.host == other.host && self.dir == other.dir
    }

    /// Whether this lease, the one the owner key held when `holder` took
    /// it, names an earlier run of `holder`'s database in another process
    /// (same host and directory, another pid): a process that most likely
    /// died (OurDB's lock keeps a directory to one process), whose workers a
    /// holder with the database open watches for a beat and a half and, if
    /// they stayed silent, resolves at once (`WorkerBroker::heartbeats_of`,
    /// `WorkerBroker::forget_unchanged`). The name alone does not prove
    /// death: two mount namespaces may show two directories under one path
    /// on one host. Within one process (a circle restarted by a reload) the
    /// pid is the same, and this is false.
    pub fn predecessor_of(&self, holder: &Lease) -> bool {
        self.same_database(holder) && self.pid != holder.pid
    }
}

impl fmt::Display for Lease {
    /// The owner key's value, `<token>|<pid>|<host>|<data dir>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}|{}|{}|{}", self.token, self.pid, self.host, self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::Lease;

    #[test]
    fn a_lease_round_trips_and_a_dir_may_hold_the_separator() {
        let lease = Lease {
            token: 7,
            pid: 4242,
            host: "box/abc".into(),
            dir: "/data/a|b/1".into(),
        };
        let text = lease.to_string();
        assert_eq!(text, "7|4242|box/abc|/data/a|b/1");
        assert_eq!(Lease::parse(&text), Ok(lease.clone()));
        assert_eq!(lease.holder(), "4242|box/abc|/data/a|b/1");
    }

    #[test]
    fn a_malformed_lease_names_what_is_wrong() {
        assert!(
            Lease::parse("host:/dir")
                .unwrap_err()
                .contains("is not <token>")
        );
        assert!(Lease::parse("x|1|h|d").unwrap_err().contains("token \"x\""));
        assert!(Lease::parse("0|1|h|d").unwrap_err().contains("token \"0\""));
        assert!(Lease::parse("3|p|h|d").unwrap_err().contains("pid \"p\""));
    }
}
