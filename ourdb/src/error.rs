//! The crate's error type.
//!
//! Layering: the bottom of the crate; every module that can fail uses it.

use std::path::PathBuf;

/// Errors from OurDB. Messages are lowercase and name the thing that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The id is not live (never written, or deleted).
    #[error("record {id} not found")]
    NotFound {
        /// The id asked for.
        id: u32,
    },
    /// Another process (or another handle) holds the directory's lock.
    #[error("database directory {dir} is locked by another process")]
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// The value exceeds `Config::max_value_size`.
    #[error("value of {size} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge {
        /// Size of the value.
        size: usize,
        /// Configured limit.
        max: usize,
    },
    /// All `u32` ids have been handed out.
    #[error("id space exhausted")]
    IdSpaceExhausted,
    /// The operation does not exist in this mode (e.g. `insert` in key-value mode).
    #[error("{op} is not available in {mode} mode")]
    WrongMode {
        /// The operation.
        op: &'static str,
        /// The database's mode.
        mode: &'static str,
    },
    /// A batch's `expect_next_id` precondition did not hold.
    #[error("batch expected next id {expected} but the database is at {actual}")]
    Conflict {
        /// Expected next id.
        expected: u32,
        /// Actual next id.
        actual: u32,
    },
    /// Real corruption found in the middle of a file.
    #[error("corrupt data in {file} at offset {offset}: {reason}")]
    Corrupt {
        /// The file.
        file: PathBuf,
        /// Byte offset.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the file.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The directory holds a database created in the other id mode.
    #[error("database directory {dir} was created in {stored} mode, not {requested} mode")]
    ModeMismatch {
        /// The directory.
        dir: PathBuf,
        /// The mode recorded in the data files.
        stored: &'static str,
        /// The mode asked for in `Config`.
        requested: &'static str,
    },
    /// A batch's encoded size exceeds what one frame can hold (4 GiB).
    #[error("batch of {size} bytes exceeds the 4 GiB frame limit")]
    BatchTooLarge {
        /// Encoded size of the batch.
        size: usize,
    },
    /// The configuration is unusable (e.g. a zero file size).
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What was wrong.
        reason: String,
    },
    /// An earlier write or fsync failed, so what is on disk is unknown; the
    /// handle refuses further writes until the database is reopened (by a
    /// new handle, once this one is dropped: in practice a restart of the
    /// program that holds it).
    #[error(
        "database {dir} refuses writes after an earlier write failure ({failure}); \
         restart the program that holds it to reopen it"
    )]
    Poisoned {
        /// The directory.
        dir: PathBuf,
        /// The first failure, naming the file and what was being done.
        failure: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] saying what was being done.
    pub(crate) fn io(context: String, source: std::io::Error) -> Error {
        Error::Io { context, source }
    }

    /// An [`Error::Corrupt`] for `file` at `offset`.
    pub(crate) fn corrupt(file: &std::path::Path, offset: u64, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            file: file.to_path_buf(),
            offset,
            reason: reason.into(),
        }
    }
}
