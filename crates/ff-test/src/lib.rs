//! Test kit for the workspace: hands every test a brand-new, fully migrated
//! PostgreSQL database ([`TestDb`]).
//!
//! This crate root owns *where the server comes from* ([`admin_url`]) and
//! plain database creation ([`create_database`]). The server is the one named
//! by `DATABASE_URL` when that is set; otherwise a private throwaway cluster
//! started from the system's PostgreSQL binaries (see [`cluster`]). When
//! neither is possible, tests fail with [`NO_DATABASE_HELP`]; they never skip.
//!
//! [`tls`] makes throwaway certificates for TLS tests.
//!
//! [`conformance`] is the backend conformance suite: behaviour cases written against the
//! `ff-core` backend traits, run by every backend through [`conformance_suite!`].

#![warn(missing_docs)]

pub mod cluster;
pub mod conformance;
pub mod pgbouncer;
mod pgurl;
mod testdb;
pub mod tls;

use std::time::Duration;

use sqlx::{Connection, Executor, PgConnection};
use tokio::sync::OnceCell;

pub use testdb::TestDb;

/// What to do when no PostgreSQL server can be had; part of every such error.
pub const NO_DATABASE_HELP: &str = "No PostgreSQL server is available for the tests. Either\n  \
     * set DATABASE_URL to a reachable PostgreSQL server whose user may CREATE DATABASE, \
     e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres, or\n  \
     * install the Debian package `postgresql` (apt-get install postgresql), which provides \
     initdb/postgres under /usr/lib/postgresql/<version>/bin; the test kit then starts a \
     private throwaway cluster by itself.";

/// How long to wait for a single admin connection before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The admin URL, resolved once per process.
static ADMIN_URL: OnceCell<Result<String, String>> = OnceCell::const_new();

/// Returns a URL to the admin database (`postgres`) of the server the tests use.
///
/// * `DATABASE_URL` set (non-empty): that server, with the database swapped for
///   `postgres` (user, password, host, port and query parameters kept). It is
///   checked to be reachable.
/// * Otherwise: the private throwaway cluster in [`cluster::default_dir`],
///   started if needed (see [`cluster::ensure_private_cluster`]).
///
/// The result (including an error) is computed once per process. Errors
/// include [`NO_DATABASE_HELP`].
pub async fn admin_url() -> Result<String, String> {
    ADMIN_URL.get_or_init(resolve_admin_url).await.clone()
}

async fn resolve_admin_url() -> Result<String, String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => {
            let admin = pgurl::with_database(url.trim(), "postgres")
                .map_err(|e| format!("DATABASE_URL is not usable: {e}\n{NO_DATABASE_HELP}"))?;
            let conn = connect_admin(&admin)
                .await
                .map_err(|e| format!("DATABASE_URL is set but its server is not usable: {e}\n{NO_DATABASE_HELP}"))?;
            let _ = conn.close().await;
            Ok(admin)
        }
        _ => {
            let dir = cluster::default_dir();
            cluster::ensure_private_cluster(&dir).await.map_err(|e| {
                format!(
                    "DATABASE_URL is not set and the private throwaway cluster in {} \
                     could not be started: {e}\n{NO_DATABASE_HELP}",
                    dir.display()
                )
            })
        }
    }
}

/// Creates database `name` (quoted as an identifier) on the server of
/// `admin_url` and returns a URL to it (same user/host/port/query).
///
/// With `drop_existing`, an existing database of that name is dropped first
/// (`WITH (FORCE)`, terminating its sessions). Without it, an existing
/// database is kept as is and its URL returned.
pub async fn create_database(admin_url: &str, name: &str, drop_existing: bool) -> Result<String, String> {
    let url = pgurl::with_database(admin_url, name)?;
    let quoted = pgurl::quote_ident(name);
    let mut conn = connect_admin(admin_url).await?;
    if drop_existing {
        conn.execute(format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)").as_str())
            .await
            .map_err(|e| format!("dropping database {quoted}: {e}"))?;
    } else {
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await
            .map_err(|e| format!("looking up database {quoted}: {e}"))?;
        if exists {
            let _ = conn.close().await;
            return Ok(url);
        }
    }
    let result = conn.execute(format!("CREATE DATABASE {quoted}").as_str()).await;
    let _ = conn.close().await;
    match result {
        Ok(_) => Ok(url),
        // 42P04 duplicate_database: keep the existing one.
        Err(e) if !drop_existing && is_sql_state(&e, "42P04") => Ok(url),
        Err(e) => Err(format!("creating database {quoted}: {e}")),
    }
}

/// Opens one connection to `url`, failing after [`CONNECT_TIMEOUT`].
pub(crate) async fn connect_admin(url: &str) -> Result<PgConnection, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(url)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(format!("connecting to {url}: {e}")),
        Err(_) => Err(format!("connecting to {url}: timed out after {CONNECT_TIMEOUT:?}")),
    }
}

/// Whether `e` is a database error with SQLSTATE `code`.
pub(crate) fn is_sql_state(e: &sqlx::Error, code: &str) -> bool {
    match e {
        sqlx::Error::Database(db) => db.code().as_deref() == Some(code),
        _ => false,
    }
}
