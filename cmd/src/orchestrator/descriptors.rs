//! The process's file descriptors, shared out between its connections and
//! everything else: every circle's databases and Redis connections, the
//! listeners, the log, the runtimes' own. Connections are what a client
//! can multiply, so they get a budget ([`server_ws::Budget`]) sized from
//! the open files limit (after it was raised to the hard one):
//!
//! - the circles' hosts together: the limit less [`RESERVED_BASE`],
//!   [`RESERVED_PER_CIRCLE`] for each circle running, the admin endpoint's
//!   share, and [`server_ws::UNCOUNTED`] twice (connections each server's
//!   accept thread took before its worker counted them);
//! - the admin endpoint: [`ADMIN_CONNECTIONS`] of its own, so that probes
//!   are answered while the circles' ports are full, and the other way round.
//!
//! A connection past its budget is closed at once, unanswered (its address
//! may be well below its own bound): many addresses together then take no
//! descriptor that a database, a Redis reconnect or the other server
//! needs.

use std::sync::Arc;

use server_ws::Budget;

/// Descriptors kept whatever the circles: standard streams and the log,
/// the runtimes' and actix servers' polls and wake-ups, the admin listener,
/// the task client's Redis connections and their reconnects, a managed
/// redis-server's pipes. About 26 are open in a process with one circle;
/// the rest is room for what comes and goes (a host started by a reload,
/// a reconnect that overlaps the connection it replaces).
pub const RESERVED_BASE: usize = 64;

/// Descriptors kept for each circle running: its database's files (a
/// compaction opens a second data file), its worker's and broker's Redis
/// connections (a circle on its own Redis has a client of its own), its
/// listener, its threads' polls. About 13 are open per circle. Close to
/// the measure, not a multiple of it: a limit that runs the circles at
/// all must leave their ports connections (see [`HOSTS_AT_LEAST`]).
pub const RESERVED_PER_CIRCLE: usize = 16;

/// The fewest connections the circles' ports get together, however little
/// the limit leaves them by the reserves above: circles that cannot be
/// reached are worse than a limit met now and then (which fails an accept
/// and is logged, as without a budget).
pub const HOSTS_AT_LEAST: usize = 64;

/// Connections the admin endpoint holds at most, whatever their addresses:
/// every event stream it allows and one address's worth more.
pub const ADMIN_CONNECTIONS: usize = crate::admin::events::MAX_STREAMS + crate::admin::PER_ADDRESS;

/// The budgets of the circles' hosts and of the admin endpoint.
pub struct Budgets {
    /// Shared by every host (a reload's new host beside the paused one).
    pub hosts: Arc<Budget>,
    /// The admin endpoint's own.
    pub admin: Arc<Budget>,
    /// The open files limit they were cut from.
    limit: usize,
}

impl Budgets {
    /// Cut from the soft open files limit as it is now. The hosts' budget
    /// is unbounded until [`Budgets::fit`] is given the circles.
    pub fn from_limit() -> Budgets {
        let limit = match rlimit::getrlimit(rlimit::Resource::NOFILE) {
            Ok((soft, _)) => usize::try_from(soft).unwrap_or(usize::MAX),
            Err(e) => {
                log::warn!("cannot read the open files limit ({e}); taking 1024");
                1024
            }
        };
        Budgets {
            hosts: Budget::new("the circles' ports", usize::MAX),
            admin: Budget::new("the admin endpoint", ADMIN_CONNECTIONS),
            limit,
        }
    }

    /// Sizes the hosts' budget for `circles` running, whose
    /// `--max-connections` add up to `take`; says so when it changes, and
    /// warns when it is below `take`.
    pub fn fit(&self, circles: usize, take: usize) {
        let max = hosts_max(self.limit, circles);
        if max == self.hosts.max() {
            return;
        }
        self.hosts.set_max(max);
        let limit = self.limit;
        if max < take {
            log::warn!(
                "the open files limit ({limit}) leaves room for {max} connections at the \
                 circles' ports, fewer than their --max-connections add up to ({take}); past \
                 {max} a connection is closed at once. Fix: raise the hard limit of open files \
                 (`ulimit -Hn`, systemd's LimitNOFILE=)"
            );
        } else {
            log::info!(
                "at most {max} connections at the circles' ports together and \
                 {ADMIN_CONNECTIONS} at the admin endpoint (open files limit {limit})"
            );
        }
    }
}

/// Why `circles` do not fit in the open files limit (after it was raised
/// to the hard one) at all, or `None` when they do: [`RESERVED_BASE`] and
/// [`RESERVED_PER_CIRCLE`] for each. Past it some circles' runtimes, Redis
/// connections or listeners cannot be made, and the supervisors would
/// restart them (the shared host among them) forever, serving none: the
/// start refuses them all, and a reload that would run them changes nothing.
pub fn shortfall(circles: usize) -> Option<String> {
    let (limit, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).ok()?;
    let needed = RESERVED_PER_CIRCLE
        .saturating_mul(circles)
        .saturating_add(RESERVED_BASE);
    (usize::try_from(limit).unwrap_or(usize::MAX) < needed).then(|| {
        format!(
            "the open files limit ({limit}) is too low for {circles} circles: they need about \
             {needed} descriptors ({RESERVED_PER_CIRCLE} per circle and {RESERVED_BASE} more)"
        )
    })
}

/// How to get out of a [`shortfall`].
pub const SHORTFALL_FIX: &str = "raise the hard limit of open files (`ulimit -Hn`, systemd's \
                                 LimitNOFILE=), or run fewer circles in this process (--circles)";

/// What the hosts may hold out of `limit` descriptors with `circles` running.
fn hosts_max(limit: usize, circles: usize) -> usize {
    let reserved = RESERVED_PER_CIRCLE
        .saturating_mul(circles)
        .saturating_add(RESERVED_BASE + 2 * server_ws::UNCOUNTED + ADMIN_CONNECTIONS);
    limit.saturating_sub(reserved).max(HOSTS_AT_LEAST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_get_the_limit_less_what_the_rest_keeps() {
        // 1024 - 64 - 16 - 2 * 64 - 96.
        assert_eq!(hosts_max(1024, 1), 720);
        // 200 circles under a hard limit of 4096: 4096 - 64 - 3200 - 128 - 96.
        assert_eq!(hosts_max(4096, 200), 608);
        assert_eq!(hosts_max(1024, 60), HOSTS_AT_LEAST, "never below its floor");
        assert_eq!(hosts_max(usize::MAX, 1000), usize::MAX - 16_288);
    }
}
