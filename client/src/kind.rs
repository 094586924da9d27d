//! [`FailureKind`]: why a task ended in `error`, as its `errorKind` field
//! names it. The wire names are written here and nowhere else in the crate
//! (the Lua scripts take theirs from [`FailureKind::as_str`] too); other
//! programs read them, so a name never changes once it is on the wire.

use std::fmt;

/// Declares [`FailureKind`] from one table of `Variant => "wire_name"`
/// rows, so a kind's variant, its name and its parsing cannot drift apart:
/// adding a kind is one row here.
macro_rules! failure_kinds {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// Why a task ended in `error` (the task hash's `errorKind`).
        ///
        /// A kind this version does not know (a newer worker's, a third
        /// party's) reads as [`FailureKind::Other`] with its name as
        /// written, so nothing is lost on the way to the user.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum FailureKind {
            $($(#[$doc])* $variant,)*
            /// A name this version does not know, exactly as written. Never
            /// holds one of the names above ([`FailureKind::from_wire`]
            /// gives their variants).
            Other(String),
        }

        impl FailureKind {
            /// The wire name, as `errorKind` holds it and JSON-RPC clients
            /// see it.
            pub fn as_str(&self) -> &str {
                match self {
                    $(FailureKind::$variant => $name,)*
                    FailureKind::Other(name) => name,
                }
            }

            /// The kind a wire name names; [`FailureKind::Other`] for a name
            /// this version does not know.
            pub fn from_wire(name: &str) -> FailureKind {
                match name {
                    $($name => FailureKind::$variant,)*
                    other => FailureKind::Other(other.to_owned()),
                }
            }
        }

        impl FailureKind {
            /// Every named kind, in the table's order: the fixed set a
            /// metric may use as label values ([`FailureKind::Other`] is
            /// not in it).
            pub const KNOWN: &'static [FailureKind] = &[$(FailureKind::$variant,)*];
        }
    };
}

failure_kinds! {
    /// `syntax`: the script does not parse.
    Syntax => "syntax",
    /// `runtime`: the script raised an error or misused a value.
    Runtime => "runtime",
    /// `database`: the circle's database refused or failed an operation.
    Database => "database",
    /// `value`: a value cannot be stored (does not round-trip through JSON).
    Value => "value",
    /// `limit`: a sandbox bound was exceeded.
    Limit => "limit",
    /// `timeout`: the script ran past its deadline and was stopped.
    Timeout => "timeout",
    /// `cancelled`: cancelled before or while it ran (its `cancel` field, or
    /// the worker's shutdown).
    Cancelled => "cancelled",
    /// `forbidden`: the caller's role does not allow what the script did (a
    /// `db::insert`, `db::update` or `db::delete` with role `read`);
    /// nothing was written.
    Forbidden => "forbidden",
    /// `internal`: a fault of the worker's, not the script's.
    Internal => "internal",
    /// `expired`: the deadline passed before a worker took the task.
    Expired => "expired",
    /// `worker_lost`: the worker died while running the task.
    WorkerLost => "worker_lost",
    /// `invalid`: the task could not be run as written (no hash, no script,
    /// an unknown status, a `role` that is neither `read` nor `write`,
    /// bytes that are not UTF-8).
    Invalid => "invalid",
    /// `unknown`: ended in `error` without an `errorKind` (a third party's
    /// worker may write only `status` and `error`).
    Unknown => "unknown",
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::FailureKind;

    const KNOWN: &[FailureKind] = FailureKind::KNOWN;

    #[test]
    fn every_named_kind_reads_back_as_itself() {
        for kind in KNOWN {
            assert_eq!(&FailureKind::from_wire(kind.as_str()), kind);
        }
        let names: std::collections::HashSet<&str> = KNOWN.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), KNOWN.len(), "wire names are distinct");
    }

    #[test]
    fn an_unknown_name_is_kept_as_written() {
        let kind = FailureKind::from_wire("quota");
        assert_eq!(kind, FailureKind::Other("quota".into()));
        assert_eq!(kind.as_str(), "quota");
        assert_eq!(kind.to_string(), "quota");
    }

    #[test]
    fn wire_names_stay_as_other_programs_read_them() {
        assert_eq!(FailureKind::WorkerLost.as_str(), "worker_lost");
        assert_eq!(FailureKind::Expired.as_str(), "expired");
        assert_eq!(FailureKind::from_wire("timeout"), FailureKind::Timeout);
        assert_eq!(FailureKind::Forbidden.as_str(), "forbidden");
        assert_eq!(FailureKind::from_wire("forbidden"), FailureKind::Forbidden);
    }
}
