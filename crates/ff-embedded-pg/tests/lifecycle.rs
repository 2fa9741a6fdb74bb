//! Starting and stopping real private clusters from the system's PostgreSQL
//! binaries: temporary ones vanish with their server, persistent ones keep
//! their data across restarts, and dropping a cluster stops it.

use std::net::TcpStream;
use std::path::{Path, PathBuf};

use ff_embedded_pg::{EmbeddedError, EmbeddedOptions, EmbeddedPostgres};
use sqlx::{Connection, PgConnection};

/// A fresh path under the temp directory for this test (not created).
fn scratch_path(test: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("ff-embedded-pg-test-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    path
}

async fn connect(pg: &EmbeddedPostgres) -> PgConnection {
    PgConnection::connect(pg.url()).await.unwrap_or_else(|e| panic!("connecting to {}: {e}", pg.url()))
}

fn accepts_connections(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn assert_stopped(port: u16, data_dir: &Path) {
    assert!(!accepts_connections(port), "port {port} still accepts connections");
    assert!(!data_dir.join("postmaster.pid").exists(), "{} still has a postmaster.pid", data_dir.display());
}

#[tokio::test]
async fn temporary_cluster_is_gone_after_stop() {
    let pg = EmbeddedPostgres::start(EmbeddedOptions::default()).await.unwrap_or_else(|e| panic!("start: {e}"));
    let (port, data_dir) = (pg.port(), pg.data_dir().to_path_buf());
    assert_eq!(pg.url(), format!("postgres://postgres@127.0.0.1:{port}/ff"));
    assert!(data_dir.join("PG_VERSION").exists(), "{} holds no cluster", data_dir.display());

    let mut conn = connect(&pg).await;
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await.expect("SELECT 1");
    assert_eq!(one, 1);
    let database: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&mut conn).await.expect("db");
    assert_eq!(database, "ff");
    let fsync: String = sqlx::query_scalar("SHOW fsync").fetch_one(&mut conn).await.expect("SHOW fsync");
    assert_eq!(fsync, "off", "a temporary cluster trades durability for speed");
    let sockets: String =
        sqlx::query_scalar("SHOW unix_socket_directories").fetch_one(&mut conn).await.expect("SHOW sockets");
    assert_eq!(sockets, "");
    conn.close().await.expect("close");

    pg.stop().await.expect("stop");
    assert!(!data_dir.exists(), "{} still exists", data_dir.display());
    assert!(!accepts_connections(port), "port {port} still accepts connections");
}

#[tokio::test]
async fn persistent_cluster_keeps_its_data_across_restarts() {
    let dir = scratch_path("persistent").join("data");
    let opts = EmbeddedOptions { data_dir: Some(dir.clone()), database: "app data".to_owned(), ..Default::default() };

    let pg = EmbeddedPostgres::start(opts.clone()).await.unwrap_or_else(|e| panic!("first start: {e}"));
    assert_eq!(pg.data_dir(), std::fs::canonicalize(&dir).expect("resolve data dir"));
    assert!(pg.url().ends_with("/app%20data"), "{}", pg.url());
    let mut conn = connect(&pg).await;
    let fsync: String = sqlx::query_scalar("SHOW fsync").fetch_one(&mut conn).await.expect("SHOW fsync");
    assert_eq!(fsync, "on", "a persistent cluster is durable");
    sqlx::query("CREATE TABLE kept (note text)").execute(&mut conn).await.expect("create table");
    sqlx::query("INSERT INTO kept VALUES ('survives a restart')").execute(&mut conn).await.expect("insert");
    conn.close().await.expect("close");
    let first_port = pg.port();
    pg.stop().await.expect("first stop");
    assert_stopped(first_port, &dir);
    assert!(dir.join("PG_VERSION").exists(), "the data directory was removed");

    // The database exists now: starting again must not fail creating it.
    let pg = EmbeddedPostgres::start(opts).await.unwrap_or_else(|e| panic!("second start: {e}"));
    let mut conn = connect(&pg).await;
    let notes: Vec<String> = sqlx::query_scalar("SELECT note FROM kept").fetch_all(&mut conn).await.expect("select");
    assert_eq!(notes, vec!["survives a restart".to_owned()]);
    conn.close().await.expect("close");
    let second_port = pg.port();
    pg.stop().await.expect("second stop");
    assert_stopped(second_port, &dir);

    std::fs::remove_dir_all(dir.parent().expect("parent")).expect("clean up");
}

#[tokio::test]
async fn dropping_a_cluster_stops_it() {
    let pg = EmbeddedPostgres::start(EmbeddedOptions::default()).await.unwrap_or_else(|e| panic!("start: {e}"));
    let (port, data_dir) = (pg.port(), pg.data_dir().to_path_buf());
    assert!(accepts_connections(port));

    drop(pg);
    assert!(!data_dir.exists(), "{} still exists", data_dir.display());
    assert!(!accepts_connections(port), "port {port} still accepts connections");
}

#[tokio::test]
async fn refuses_a_directory_holding_something_else() {
    let dir = scratch_path("not-a-cluster");
    std::fs::create_dir_all(&dir).expect("create dir");
    std::fs::write(dir.join("notes.txt"), "mine").expect("write file");

    let opts = EmbeddedOptions { data_dir: Some(dir.clone()), ..Default::default() };
    let err = EmbeddedPostgres::start(opts).await.expect_err("a directory with other files is not a data directory");
    assert!(matches!(err, EmbeddedError::NotADataDir { .. }), "{err}");
    assert_eq!(std::fs::read_to_string(dir.join("notes.txt")).expect("file kept"), "mine");

    std::fs::remove_dir_all(&dir).expect("clean up");
}
