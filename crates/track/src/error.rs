//! The one error type of the run store.

use std::path::PathBuf;

/// Everything that can go wrong in the run store. Every variant names the file or
/// identifier involved, so that a message printed to a user says what to look at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store path exists but is not a directory.
    #[error("run store {0} is not a directory (it is a file); pass --store DIR or set DITBENCH_STORE to a directory")]
    StoreNotADirectory(PathBuf),

    /// A read-only open found no store at the path.
    #[error("no run store at {0} (no such directory); pass --store DIR or set DITBENCH_STORE")]
    StoreMissing(PathBuf),

    /// A store made by an older ditbench that could not be upgraded in place.
    #[error("run store {store} was made by an older ditbench (it has registry.sqlite) and could not be upgraded \
             in place: {reason}. Open it once with write access (any `ditbench` command on a writable copy) to upgrade it")]
    LegacyStore {
        /// The store directory.
        store: PathBuf,
        /// Why the upgrade failed.
        reason: String,
    },

    /// An SQLite failure of the index (or of an old registry being upgraded).
    #[error("index: {0}")]
    Sqlite(#[from] rusqlite::Error),

    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },

    /// An Arrow encode/decode failure.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    /// A Parquet encode/decode failure on a given file.
    #[error("parquet file {path}: {source}")]
    Parquet {
        /// The Parquet file.
        path: PathBuf,
        /// What the parquet crate said.
        source: parquet::errors::ParquetError,
    },

    /// An identifier (run id, sweep name, metric name) was rejected.
    #[error("invalid {kind} {id:?}: {reason}")]
    InvalidId {
        /// "run id", "sweep name", ...
        kind: &'static str,
        /// The rejected identifier.
        id: String,
        /// Why.
        reason: &'static str,
    },

    /// No run with that id in the store.
    #[error("unknown run {0:?} (no run folder with that id in the store)")]
    UnknownRun(String),

    /// No sweep with that name in the store.
    #[error("unknown sweep {0:?} (register it first)")]
    UnknownSweep(String),

    /// The run id is already registered under another sweep.
    #[error("run {id:?} is already registered in sweep {existing:?}, not {requested:?}")]
    RunInOtherSweep {
        /// The run id.
        id: String,
        /// The sweep it belongs to.
        existing: String,
        /// The sweep it was registered for now.
        requested: String,
    },

    /// Another live process holds the run's lease.
    #[error("run {run:?} is being written by another process ({holder}); it was left alone")]
    RunLocked {
        /// The run id.
        run: String,
        /// Who holds its lease.
        holder: String,
    },

    /// An environment setting of the store with a value it cannot use.
    #[error("{var}={value:?} is not valid: expected {expected}")]
    InvalidSetting {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What would be valid.
        expected: &'static str,
    },

    /// A status string that is not one of the six.
    #[error(
        "unknown status {0:?}; expected queued, running, finished, failed, preempted or cancelled"
    )]
    InvalidStatus(String),

    /// A segment or table file whose content could not be decoded.
    #[error("corrupt file {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Result with the store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        })
    }
}
