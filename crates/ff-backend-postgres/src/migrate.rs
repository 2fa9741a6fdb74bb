//! Schema migrations and the schema-version check.
//!
//! [`MIGRATOR`] embeds `migrations/`; [`apply_migrations`] is the one entry point used by the
//! server boot, the CLI, tests and benchmarks. [`check_schema_version`] refuses a database whose
//! recorded version differs from [`SCHEMA_VERSION`], naming both.

use ff_core::EngineError;
use sqlx::PgPool;

use crate::error::map_sqlx;

pub(crate) const SCHEMA_EXISTS_SQL: &str = "SELECT to_regclass('ff_schema') IS NOT NULL";

pub(crate) const SCHEMA_VERSION_SQL: &str = "SELECT version FROM ff_schema";

/// The embedded, forward-only migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The schema version this build expects (`ff_schema.version`).
pub const SCHEMA_VERSION: i32 = 15;

/// Applies every pending migration (safe to call concurrently: sqlx serialises with an
/// advisory lock), then checks the resulting version.
pub async fn apply_migrations(pool: &PgPool) -> Result<(), EngineError> {
    MIGRATOR.run(pool).await.map_err(|e| EngineError::Transport { backend: "postgres", source: Box::new(e) })?;
    check_schema_version(pool).await
}

/// The version recorded in the database, or `None` when the engine schema is absent.
pub async fn read_schema_version<'c, E>(pool: E) -> Result<Option<i32>, EngineError>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres> + Copy,
{
    let exists: bool = sqlx::query_scalar(SCHEMA_EXISTS_SQL).fetch_one(pool).await.map_err(map_sqlx)?;
    if !exists {
        return Ok(None);
    }
    sqlx::query_scalar(SCHEMA_VERSION_SQL).fetch_optional(pool).await.map_err(map_sqlx)
}

/// Fails unless the database's schema version is exactly [`SCHEMA_VERSION`].
pub async fn check_schema_version<'c, E>(pool: E) -> Result<(), EngineError>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres> + Copy,
{
    match read_schema_version(pool).await? {
        Some(v) if v == SCHEMA_VERSION => Ok(()),
        Some(v) => Err(EngineError::invalid(format!(
            "schema version mismatch: the database is at version {v}, this build expects version {SCHEMA_VERSION}; \
             {}",
            if v < SCHEMA_VERSION {
                "apply migrations (apply_migrations / `ff migrate`)"
            } else {
                "upgrade this binary"
            }
        ))),
        None => Err(EngineError::invalid(format!(
            "schema version mismatch: the database has no FlowFabric schema (version 0), this build expects version \
             {SCHEMA_VERSION}; apply migrations first"
        ))),
    }
}
