//! [`FailureKind`]: why a task ended in `error`, as its `errorKind` field
//! names it. The wire names are written here and nowhere else in the crate
//! (the Lua scripts take theirs from [`FailureKind::as_str`] too); other
//! programs read them, so a name never changes once it is on the wire.

use std::fmt;

/// Why a task ended in `error` (the task hash's `errorKind`).
///
/// Adding a kind: a variant, its arm in [`FailureKind::as_str`] and its
/// entry in `KNOWN`, all in this file. A kind this version does not know
/// (a newer worker's, a third party's) reads as [`FailureKind::Other`] with
/// its name as written, so nothing is lost on the way to the user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// `syntax`: the script does not parse.
    Syntax,
    /// `runtime`: the script raised an error or misused a value.
    Runtime,
    /// `database`: the circle's database refused or failed an operation.
    Database,
    /// `value`: a value cannot be stored (does not round-trip through JSON).
    Value,
    /// `limit`: a sandbox bound was exceeded.
    Limit,
    /// `timeout`: the script ran past its deadline and was stopped.
    Timeout,
    /// `cancelled`: cancelled before or while it ran (its `cancel` field, or
    /// the worker's shutdown).
    Cancelled,
    /// `internal`: a fault of the worker's, not the script's.
    Internal,
    /// `expired`: the deadline passed before a worker took the task.
    Expired,
    /// `worker_lost`: the worker died while running the task.
    WorkerLost,
    /// `invalid`: the task could not be run as written (no hash, no script,
    /// an unknown status, bytes that are not UTF-8).
    Invalid,
    /// `unknown`: ended in `error` without an `errorKind` (a third party's
    /// worker may write only `status` and `error`).
    Unknown,
    /// A name this version does not know, exactly as written. Never holds
    /// one of the names above ([`FailureKind::from_wire`] gives their
    /// variants).
    Other(String),
}

/// Every named kind, for [`FailureKind::from_wire`].
const KNOWN: [FailureKind; 12] = [
    FailureKind::Syntax,
    FailureKind::Runtime,
    FailureKind::Database,
    FailureKind::Value,
    FailureKind::Limit,
    FailureKind::Timeout,
    FailureKind::Cancelled,
    FailureKind::Internal,
    FailureKind::Expired,
    FailureKind::WorkerLost,
    FailureKind::Invalid,
    FailureKind::Unknown,
];

impl FailureKind {
    /// The wire name, as `errorKind` holds it and JSON-RPC clients see it.
    pub fn as_str(&self) -> &str {
        match self {
            FailureKind::Syntax => "syntax",
            FailureKind::Runtime => "runtime",
            FailureKind::Database => "database",
            FailureKind::Value => "value",
            FailureKind::Limit => "limit",
            FailureKind::Timeout => "timeout",
            FailureKind::Cancelled => "cancelled",
            FailureKind::Internal => "internal",
            FailureKind::Expired => "expired",
            FailureKind::WorkerLost => "worker_lost",
            FailureKind::Invalid => "invalid",
            FailureKind::Unknown => "unknown",
            FailureKind::Other(name) => name,
        }
    }

    /// The kind a wire name names; [`FailureKind::Other`] for a name this
    /// version does not know.
    pub fn from_wire(name: &str) -> FailureKind {
        KNOWN
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .unwrap_or_else(|| FailureKind::Other(name.to_owned()))
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for FailureKind {
    fn from(name: &str) -> FailureKind {
        FailureKind::from_wire(name)
    }
}

impl PartialEq<str> for FailureKind {
    fn eq(&self, name: &str) -> bool {
        self.as_str() == name
    }
}

impl PartialEq<&str> for FailureKind {
    fn eq(&self, name: &&str) -> bool {
        self.as_str() == *name
    }
}

#[cfg(test)]
mod tests {
    use super::{FailureKind, KNOWN};

    #[test]
    fn every_named_kind_reads_back_as_itself() {
        for kind in KNOWN {
            assert_eq!(FailureKind::from_wire(kind.as_str()), kind);
        }
        let names: std::collections::HashSet<&str> = KNOWN.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), KNOWN.len(), "wire names are distinct");
    }

    #[test]
    fn an_unknown_name_is_kept_as_written() {
        let kind = FailureKind::from_wire("forbidden");
        assert_eq!(kind, FailureKind::Other("forbidden".into()));
        assert_eq!(kind.as_str(), "forbidden");
        assert_eq!(kind.to_string(), "forbidden");
    }

    #[test]
    fn wire_names_stay_as_other_programs_read_them() {
        assert_eq!(FailureKind::WorkerLost, "worker_lost");
        assert_eq!(FailureKind::Expired.as_str(), "expired");
        assert_eq!(FailureKind::from("timeout"), FailureKind::Timeout);
    }
}
