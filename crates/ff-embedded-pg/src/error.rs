//! [`EmbeddedError`]: everything that can go wrong finding, initialising,
//! starting or stopping a cluster. Each message says what happened and, where
//! the user can fix it, how.

use std::path::PathBuf;
use std::time::Duration;

/// Why a cluster could not be initialised, started or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedError {
    /// No directory holds both `initdb` and `postgres`.
    #[error(
        "PostgreSQL server binaries (initdb, postgres) were not found on PATH or under \
         /usr/lib/postgresql/*/bin; install them: Debian/Ubuntu `apt-get install postgresql`, \
         Fedora `dnf install postgresql-server`, macOS `brew install postgresql@16` \
         — or set DATABASE_URL to use an existing server"
    )]
    BinariesNotFound,

    /// This process is root, and the user to run the server as does not exist.
    #[error(
        "running as root, and PostgreSQL refuses to run as root, but there is no `{user}` user \
         to run it as (the PostgreSQL server packages create it); or run as a non-root user"
    )]
    NoServerUser {
        /// The missing user.
        user: &'static str,
    },

    /// This process is root, and there is no way to switch to the server's user.
    #[error(
        "running as root, and neither `runuser` nor `su` is available to run PostgreSQL \
         as the `{user}` user; install util-linux, or run as a non-root user"
    )]
    NoUserSwitch {
        /// The user the server would run as.
        user: &'static str,
    },

    /// The server's user cannot create files in the data directory.
    #[error(
        "the PostgreSQL server runs as the `{user}` user, which cannot write to {} (it or a \
         directory above it is closed to that user); choose a data directory that user can \
         reach, e.g. under /var/tmp",
        .dir.display()
    )]
    DirNotAccessible {
        /// The user the server runs as.
        user: &'static str,
        /// The data directory.
        dir: PathBuf,
    },

    /// The data directory holds files but no cluster.
    #[error(
        "{} is neither empty nor a PostgreSQL data directory (it has no PG_VERSION); \
         choose an empty or new directory",
        .dir.display()
    )]
    NotADataDir {
        /// The data directory.
        dir: PathBuf,
    },

    /// The database name cannot be used.
    #[error("invalid database name {name:?}: {reason}")]
    InvalidDatabaseName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A file system or process operation failed.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A PostgreSQL program (or `chown`) exited unsuccessfully.
    #[error("{command} failed ({status}):\n{output}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// How it exited.
        status: String,
        /// Its standard output and standard error.
        output: String,
    },

    /// The server exited before it accepted connections.
    #[error("the PostgreSQL server exited ({status}) before accepting connections; end of {}:\n{tail}", .log.display())]
    ServerExited {
        /// How it exited.
        status: String,
        /// The server's log file.
        log: PathBuf,
        /// The end of that log.
        tail: String,
    },

    /// The server did not become ready in time.
    #[error(
        "the PostgreSQL server on port {port} did not accept connections within {timeout:?}; end of {}:\n{tail}",
        .log.display()
    )]
    StartTimedOut {
        /// The port it was started on.
        port: u16,
        /// How long it was given.
        timeout: Duration,
        /// The server's log file.
        log: PathBuf,
        /// The end of that log.
        tail: String,
    },

    /// A blocking task running PostgreSQL programs did not finish.
    #[error("a background task running PostgreSQL programs failed: {0}")]
    Task(String),
}

impl EmbeddedError {
    /// An [`EmbeddedError::Io`] for `action`.
    pub(crate) fn io(action: impl Into<String>, source: std::io::Error) -> EmbeddedError {
        EmbeddedError::Io { action: action.into(), source }
    }
}
