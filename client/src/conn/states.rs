//! What a Redis error's text says of the server's state: the connection is
//! gone, the server is no longer a primary, it passes through a state of its
//! own (loading, a failover), or it refuses commands until its operator acts
//! ([`Refusal`]).

use redis::RedisError;

pub(crate) fn is_connection_error(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
        || err.is_unrecoverable_error()
}

/// Whether an error's text says the server is no longer a primary: a write
/// refused by a replica, or a blocking command ended because the server
/// became one. The connection is then dropped, so the next one asks the
/// sentinels (of a `redis+sentinel://` URL) for the current primary.
pub(crate) fn names_a_demoted_primary(text: &str) -> bool {
    // redis-rs writes a known code by its kind's name ("ReadOnly: …"), an
    // unknown one as sent ("UNBLOCKED …"), also nested in a transaction's.
    let text = text.to_ascii_lowercase();
    ["readonly", "unblocked"]
        .iter()
        .any(|state| text.contains(state))
}

/// Whether an error's text names a state Redis passes through on its own
/// (loading its data, a failover): a transaction aborted by one reports it
/// only nested in its message ("Transaction aborted: [… BusyLoading …]"),
/// and its retry method says not to retry.
pub(crate) fn names_a_passing_state(text: &str) -> bool {
    ["BusyLoading", "LOADING", "TryAgain", "MasterDown"]
        .iter()
        .any(|state| text.contains(state))
}

/// A state in which Redis refuses commands until its operator acts
/// ([`Error::refusal`](crate::Error::refusal) names it); Redis is then
/// unavailable for what it says, not answering outside the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// Out of memory under `maxmemory` with `noeviction` (`OOM`).
    Memory,
    /// A failed write of its RDB or AOF file with
    /// `stop-writes-on-bgsave-error` (`MISCONF`).
    Persistence,
    /// An ACL that does not let this user run a command or touch a key or
    /// channel (`NOPERM`; within a script "The user executing the script
    /// can't run this command").
    Permission,
    /// A key the protocol keeps a queue's list in holds another type
    /// (another program wrote it there): every push to that queue is
    /// refused until it is deleted or renamed.
    KeyType,
}

/// What a refused push says of a queue key of another type, after the
/// key's name: the mark by which [`refusing_state`] tells
/// [`Refusal::KeyType`] (Redis' own `WRONGTYPE` is no refusal of its own:
/// it says nothing of which key, nor that the key is a queue's).
pub(crate) const KEY_TYPE_REFUSAL: &str = "holds another type than the list the protocol keeps \
     a queue in (another program wrote it: delete or rename the key)";

impl Refusal {
    /// What it means, in words an operator acts on (a status row, a
    /// reply's `data.reason`).
    pub fn describe(self) -> &'static str {
        match self {
            Refusal::Memory => "redis is out of memory (maxmemory)",
            Refusal::Persistence => "redis cannot write its RDB or AOF file",
            Refusal::Permission => "redis refuses this user a command (ACL; see the log)",
            Refusal::KeyType => {
                "the circle's queue key in redis holds another type than a list (another \
                 program wrote it; see the log)"
            }
        }
    }
}

/// The refusing state an error's text names, if any.
pub(crate) fn refusing_state(text: &str) -> Option<Refusal> {
    // redis-rs quotes a code it has no kind for (`"OOM": command not…`) and
    // names one it knows by its kind (`NoPerm: …`).
    let has = |marks: &[&str]| marks.iter().any(|m| text.contains(m));
    if has(&["\"OOM\"", "OOM command"]) {
        Some(Refusal::Memory)
    } else if has(&["\"MISCONF\"", "MISCONF "]) {
        Some(Refusal::Persistence)
    } else if has(&["NoPerm", "NOPERM", "user executing the script can't"]) {
        // In a script: "can't run this command", "can't publish to the
        // channel", "can't access at least one of the keys".
        Some(Refusal::Permission)
    } else if has(&[KEY_TYPE_REFUSAL]) {
        Some(Refusal::KeyType)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::{Refusal, names_a_demoted_primary, names_a_passing_state, refusing_state};

    #[test]
    fn a_write_refused_for_memory_or_a_failed_persistence_names_a_refusing_state() {
        assert_eq!(
            refusing_state(
                "Transaction aborted: [(Index 0, error: \"OOM\": command not allowed when used \
                 memory > 'maxmemory'.)]"
            ),
            Some(Refusal::Memory)
        );
        assert_eq!(
            refusing_state("OOM command not allowed when used memory > 'maxmemory'."),
            Some(Refusal::Memory)
        );
        assert_eq!(
            refusing_state("\"MISCONF\": Errors writing to the AOF file: No space left on device"),
            Some(Refusal::Persistence)
        );
        assert_eq!(
            refusing_state("NoPerm: this user has no permissions to run the 'evalsha' command"),
            Some(Refusal::Permission)
        );
        assert_eq!(
            refusing_state(
                "ERR The user executing the script can't run this command or subcommand script: \
                 b72a3d2c, on @user_script:48."
            ),
            Some(Refusal::Permission)
        );
        for refused in [
            "ERR The user executing the script can't publish to the channel mentioned in the \
             command script: b72a3d2c, on @user_script:48.",
            "ERR The user executing the script can't access at least one of the keys mentioned \
             in the command script: b72a3d2c, on @user_script:48.",
        ] {
            assert_eq!(
                refusing_state(refused),
                Some(Refusal::Permission),
                "{refused}"
            );
        }
        assert_eq!(
            refusing_state("WRONGTYPE Operation against a key holding the wrong kind of value"),
            None
        );
        assert_eq!(refusing_state("ERR unknown command 'ROOMS'"), None);
    }

    #[test]
    fn a_write_refused_by_a_replica_or_an_unblocked_pop_means_a_demoted_primary() {
        assert!(names_a_demoted_primary(
            "READONLY You can't write against a read only replica."
        ));
        assert!(names_a_demoted_primary(
            "Transaction aborted: [(Index 0, error: ReadOnly: You can't write against a read \
             only replica.)]"
        ));
        assert!(names_a_demoted_primary(
            "UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)"
        ));
        assert!(!names_a_demoted_primary("LOADING Redis is loading"));
    }

    #[test]
    fn a_transaction_aborted_by_a_loading_redis_is_a_passing_state() {
        assert!(names_a_passing_state(
            "Transaction aborted: [(Index 0, error: BusyLoading: Redis is loading the dataset in memory)]"
        ));
        assert!(names_a_passing_state(
            "LOADING Redis is loading the dataset in memory"
        ));
        assert!(!names_a_passing_state(
            "WRONGTYPE Operation against a key holding the wrong kind of value"
        ));
    }
}
