//! Self-tests of the test kit: fresh, distinct, migrated databases per test,
//! dropped again afterwards. Run against `DATABASE_URL` when set, else against
//! the private throwaway cluster.

use sqlx::{Connection, PgConnection};

use ff_test::TestDb;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./tests/migrations");

/// Whether database `name` exists, asked through the admin database.
async fn database_exists(name: &str) -> bool {
    let admin = ff_test::admin_url().await.expect("admin URL (see message)");
    let mut conn = PgConnection::connect(&admin).await.expect("connect to the admin database");
    let exists = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .expect("query pg_database");
    conn.close().await.expect("close admin connection");
    exists
}

#[tokio::test]
async fn concurrent_databases_are_distinct_and_migrated() {
    let (a, b) = tokio::join!(TestDb::new(&MIGRATOR), TestDb::new(&MIGRATOR));
    assert_ne!(a.name(), b.name());
    assert!(a.name().starts_with("ff_test_"), "{}", a.name());

    for db in [&a, &b] {
        let current: String =
            sqlx::query_scalar("SELECT current_database()").fetch_one(db.pool()).await.expect("current_database()");
        assert_eq!(current, db.name());
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations")
            .fetch_all(db.pool())
            .await
            .expect("migrations table");
        assert_eq!(applied, vec![1]);
        let seeded: Vec<String> =
            sqlx::query_scalar("SELECT name FROM demo_item").fetch_all(db.pool()).await.expect("demo_item table");
        assert_eq!(seeded, vec!["seed".to_owned()]);
    }

    // Writes to one are invisible in the other.
    sqlx::query("INSERT INTO demo_item (name) VALUES ('only-a')").execute(a.pool()).await.expect("insert into a");
    let count = |db: &TestDb| {
        let pool = db.pool().clone();
        async move { sqlx::query_scalar::<_, i64>("SELECT count(*) FROM demo_item").fetch_one(&pool).await.expect("count") }
    };
    assert_eq!(count(&a).await, 2);
    assert_eq!(count(&b).await, 1);

    // The URL leads to the same database.
    let mut conn = PgConnection::connect(b.url()).await.expect("connect by url");
    let current: String =
        sqlx::query_scalar("SELECT current_database()").fetch_one(&mut conn).await.expect("current_database() by url");
    assert_eq!(current, b.name());
    conn.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_removes_the_database() {
    let db = TestDb::new(&MIGRATOR).await;
    let name = db.name().to_owned();
    // A checked-out connection must not keep the database alive.
    let _held = db.pool().acquire().await.expect("acquire");
    assert!(database_exists(&name).await);
    drop(db);
    assert!(!database_exists(&name).await, "{name} still exists");
}

#[tokio::test]
async fn create_database_keeps_or_replaces() {
    let admin = ff_test::admin_url().await.expect("admin URL (see message)");
    let name = format!("ff_kit_{}", uuid::Uuid::new_v4().simple());
    let url = ff_test::create_database(&admin, &name, false).await.expect("create");
    let mut conn = PgConnection::connect(&url).await.expect("connect");
    sqlx::query("CREATE TABLE marker (x int)").execute(&mut conn).await.expect("create marker");
    conn.close().await.expect("close");

    // Kept without drop_existing ...
    ff_test::create_database(&admin, &name, false).await.expect("create again");
    let mut conn = PgConnection::connect(&url).await.expect("connect");
    let marker: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('marker')::text").fetch_one(&mut conn).await.expect("regclass");
    assert_eq!(marker.as_deref(), Some("marker"));

    // ... replaced with it, even while a session is open.
    ff_test::create_database(&admin, &name, true).await.expect("recreate");
    let mut conn = PgConnection::connect(&url).await.expect("connect");
    let marker: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('marker')::text").fetch_one(&mut conn).await.expect("regclass");
    assert_eq!(marker, None);
    conn.close().await.expect("close");

    let mut admin_conn = PgConnection::connect(&admin).await.expect("connect admin");
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(&mut admin_conn).await.expect("clean up");
}
