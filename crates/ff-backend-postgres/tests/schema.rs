//! The schema version is checked at connect: a database at another version (or without the
//! schema) is refused with an error naming both versions.

use ff_backend_postgres::{BackendConfig, MIGRATOR, PostgresBackend, SCHEMA_VERSION, apply_migrations};
use ff_core::EngineError;
use ff_test::TestDb;

fn message(e: EngineError) -> String {
    e.to_string()
}

#[tokio::test]
async fn connect_refuses_a_database_without_the_schema() {
    let admin = ff_test::admin_url().await.expect("a database server");
    let name = format!("ff_empty_{}", uuid::Uuid::new_v4().simple());
    let url = ff_test::create_database(&admin, &name, true).await.expect("create empty database");
    let err = PostgresBackend::connect(BackendConfig::new(&url)).await.err().expect("refused");
    let msg = message(err);
    assert!(msg.contains("version 0") && msg.contains(&format!("version {SCHEMA_VERSION}")), "{msg}");
    // Applying the migrations through the shared API makes it usable, and is idempotent.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    apply_migrations(&pool).await.unwrap();
    apply_migrations(&pool).await.unwrap();
    pool.close().await;
    let backend = PostgresBackend::connect(BackendConfig::new(&url)).await.unwrap();
    backend.ping().await.unwrap();
    backend.shutdown_prepare(std::time::Duration::from_secs(1)).await.unwrap();
    let mut admin_conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await.unwrap();
    sqlx::query(&format!("DROP DATABASE \"{name}\" WITH (FORCE)")).execute(&mut admin_conn).await.unwrap();
}

#[tokio::test]
async fn connect_refuses_a_database_at_another_version() {
    let db = TestDb::new(&MIGRATOR).await;
    sqlx::query("UPDATE ff_schema SET version = 99").execute(db.pool()).await.unwrap();
    let err = PostgresBackend::connect(BackendConfig::new(db.url())).await.err().expect("refused");
    let msg = message(err);
    assert!(msg.contains("version 99") && msg.contains(&format!("version {SCHEMA_VERSION}")), "{msg}");
}

#[tokio::test]
async fn bad_connection_config_is_rejected() {
    let err = PostgresBackend::connect(BackendConfig::new("mysql://x")).await.err().expect("refused");
    assert_eq!(err.code(), "invalid_input");
    let mut cfg = BackendConfig::new("postgres://127.0.0.1:1/none");
    cfg.max_connections = 0;
    assert_eq!(PostgresBackend::connect(cfg).await.err().expect("refused").code(), "invalid_input");
}
