//! The benchmark database: every scenario runs in a freshly created database named `ff_bench`
//! (dropped first if it exists) on `DATABASE_URL`'s server, or on the test kit's private
//! throwaway cluster when that is unset, with the engine's migrations applied. Each run prints
//! the server's durability settings beside its figures, and says plainly when they are not the
//! production defaults.

use anyhow::{Context, Result};
use ff_backend_postgres::apply_migrations;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// The benchmark database, migrated.
pub struct BenchDatabase {
    /// Its URL (with the password, if any).
    pub url: String,
    /// A pool of up to the connections asked for.
    pub pool: PgPool,
    /// The server's durability settings, one `name=value` each, with a verdict on whether they
    /// are the production defaults.
    pub settings: String,
}

impl BenchDatabase {
    /// Drops and recreates `ff_bench`, connects `max_connections` (at least one) and migrates.
    pub async fn create(max_connections: u32) -> Result<Self> {
        Self::create_named("ff_bench", max_connections).await
    }

    /// [`Self::create`] for a database named `name`.
    pub async fn create_named(name: &str, max_connections: u32) -> Result<Self> {
        let admin = ff_test::admin_url().await.map_err(anyhow::Error::msg)?;
        let url = ff_test::create_database(&admin, name, true).await.map_err(anyhow::Error::msg)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .connect(&url)
            .await
            .context("connect to the benchmark database")?;
        apply_migrations(&pool).await?;
        let settings = describe_settings(&pool).await?;
        Ok(Self { url, pool, settings })
    }

    /// The line every scenario prints before its figures: where it ran and with what settings.
    pub fn banner(&self, synchronous_claims: bool) -> String {
        format!("database: {} ({}; synchronous claims: {synchronous_claims})", redact(&self.url), self.settings)
    }

    /// Flushes dirty buffers, so that no checkpoint's writes left over from set-up land in the
    /// measurement.
    pub async fn checkpoint(&self) -> Result<()> {
        sqlx::query("CHECKPOINT").execute(&self.pool).await?;
        Ok(())
    }
}

/// The settings that decide what a commit costs, and whether they are all production defaults.
async fn describe_settings(pool: &PgPool) -> Result<String> {
    let settings: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, setting FROM pg_settings WHERE name IN ('synchronous_commit', 'fsync', 'autovacuum', 'full_page_writes', 'shared_buffers', 'server_version') ORDER BY name",
    )
    .fetch_all(pool)
    .await?;
    let on = |name: &str| settings.iter().any(|(k, v)| k == name && v == "on");
    let production = on("fsync") && on("autovacuum") && on("synchronous_commit") && on("full_page_writes");
    let listed = settings.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
    Ok(if production {
        format!("production settings: {listed}")
    } else {
        format!(
            "NOT production settings (fsync, autovacuum, synchronous_commit, full_page_writes must be on): {listed}"
        )
    })
}

/// `url` without its password.
pub fn redact(url: &str) -> String {
    match url.split_once('@') {
        Some((scheme_user, rest)) => match scheme_user.split_once("://") {
            Some((scheme, user)) => format!("{scheme}://{}@{rest}", user.split(':').next().unwrap_or("")),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}
