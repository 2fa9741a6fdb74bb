//! Private PostgreSQL clusters run from the system's server binaries, for
//! `ff demo`, `ff serve --embedded` and the test kit.
//!
//! [`EmbeddedPostgres::start`] initialises a cluster (in a temporary directory
//! or a given one), starts its server on 127.0.0.1, waits until it accepts
//! connections and creates a database; [`EmbeddedPostgres::stop`] (or dropping
//! the value) stops it again. The lower-level pieces it is built from —
//! locating and running the binaries ([`binaries`]) and `initdb` / start /
//! stop of one cluster ([`server`]) — are public for callers that manage a
//! cluster's lifetime themselves, like the test kit's shared cluster.
//!
//! The binaries are the first `initdb` and `postgres` on `PATH`, else the
//! newest `/usr/lib/postgresql/<version>/bin`. PostgreSQL refuses to run as
//! root, so when this process is root the server-side programs run as the
//! `postgres` user (via `runuser`, else `su`), and the directories they use are
//! handed over to that user first.
//!
//! Invariant: this crate depends on no other crate of the workspace and on no
//! database driver; it talks to the server only through PostgreSQL's own
//! programs.

#![warn(missing_docs)]

pub mod binaries;
mod embedded;
mod error;
pub mod server;

pub use binaries::{PgBinaries, find_pg_bin_dir};
pub use embedded::{ClusterFile, EmbeddedOptions, EmbeddedPostgres};
pub use error::EmbeddedError;
