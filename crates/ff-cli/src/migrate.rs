//! `ff migrate`: apply the embedded schema migrations, or report the schema version.

use std::process::ExitCode;

use anyhow::Context;
use ff_backend_postgres::connection::connect_pool;
use ff_backend_postgres::migrate::read_schema_version;
use ff_backend_postgres::{BackendConfig, RootCert, SCHEMA_VERSION, SslMode, apply_migrations};

/// Arguments of `ff migrate`.
#[derive(clap::Args)]
pub(crate) struct MigrateArgs {
    /// PostgreSQL URL; may carry `sslmode` and `sslrootcert`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// TLS to PostgreSQL, as for `ff serve`: disable, prefer, require, verify-ca or verify-full.
    #[arg(long, env = "FF_PG_SSLMODE")]
    pg_sslmode: Option<SslMode>,
    /// CA certificates (PEM file) the server's certificate must chain to, or `system`.
    #[arg(long, env = "FF_PG_SSLROOTCERT")]
    pg_sslrootcert: Option<RootCert>,
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Apply pending migrations (idempotent; safe to run concurrently).
    Apply,
    /// Print the database's schema version and this binary's; exit 1 when they differ.
    Status,
}

pub(crate) async fn run(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    // The same connection settings as the server's (TLS, timeouts), on a one-connection pool.
    let config = BackendConfig {
        ssl_mode: args.pg_sslmode,
        ssl_root_cert: args.pg_sslrootcert.clone(),
        max_connections: 1,
        ..BackendConfig::new(args.database_url.clone())
    };
    let pool = connect_pool(&config).await.context("connecting to the database")?;
    let code = match args.action {
        Action::Apply => {
            apply_migrations(&pool).await.context("applying migrations")?;
            println!("schema is at version {SCHEMA_VERSION}");
            ExitCode::SUCCESS
        }
        Action::Status => {
            let current = read_schema_version(&pool).await.context("reading the schema version")?;
            let shown = current.map_or_else(|| "none (not migrated)".to_owned(), |v| v.to_string());
            println!("database schema version: {shown}\nbinary schema version:   {SCHEMA_VERSION}");
            if current == Some(SCHEMA_VERSION) { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
    };
    pool.close().await;
    Ok(code)
}
