//! [`TestDb`]: a brand-new, migrated database per test, and the per-migration-set
//! template database it is cloned from.
//!
//! The migrations of a [`Migrator`] are applied once per server into a template
//! database `ff_tmpl_<16 hex>` named from a hash of the migrations (version and
//! checksum of each). Building it is serialised across threads and processes by
//! a PostgreSQL advisory lock taken on an admin connection; it is built under a
//! temporary name and renamed when complete, so a crash never leaves a
//! half-migrated template behind. Every test then gets
//! `CREATE DATABASE ff_test_<uuid> TEMPLATE ff_tmpl_<hash>`, which is cheap.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, Executor, PgConnection, PgPool};

use crate::pgurl::{quote_ident, with_database};
use crate::{connect_admin, is_sql_state};

/// Maximum size of the pool handed to a test.
const TEST_POOL_MAX_CONNECTIONS: u32 = 32;

/// How often to retry statements that fail because another session is still
/// connected to the database involved (SQLSTATE 55006).
const BUSY_ATTEMPTS: u32 = 8;

/// Templates known (in this process) to be complete, by name.
static READY_TEMPLATES: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// A brand-new PostgreSQL database with the migrations applied, dropped again
/// when this value is dropped.
///
/// Safe to use from tests running in parallel, in threads of one process as
/// well as in separate processes.
#[derive(Debug)]
pub struct TestDb {
    pool: PgPool,
    url: String,
    name: String,
    admin_url: String,
}

impl TestDb {
    /// Creates a fresh database named `ff_test_<uuid>` with `migrator`'s
    /// migrations applied, and a pool (up to 32 connections) to it.
    ///
    /// # Panics
    ///
    /// When no PostgreSQL server can be had (the message says how to provide
    /// one, see [`crate::NO_DATABASE_HELP`]) or the database cannot be created
    /// or migrated. Tests fail; they never skip.
    pub async fn new(migrator: &'static Migrator) -> TestDb {
        let admin_url = crate::admin_url().await.unwrap_or_else(|e| panic!("ff-test: {e}"));
        let template = ensure_template(&admin_url, migrator)
            .await
            .unwrap_or_else(|e| panic!("ff-test: preparing the template database failed: {e}"));
        let name = format!("ff_test_{}", uuid::Uuid::new_v4().simple());
        let url =
            with_database(&admin_url, &name).unwrap_or_else(|e| panic!("ff-test: bad admin URL {admin_url:?}: {e}"));
        if let Err(e) = clone_template(&admin_url, &template, &name).await {
            panic!("ff-test: creating test database {name} from template {template} failed: {e}");
        }
        match PgPoolOptions::new().max_connections(TEST_POOL_MAX_CONNECTIONS).connect(&url).await {
            Ok(pool) => TestDb { pool, url, name, admin_url },
            Err(e) => {
                drop_database_blocking(&admin_url, &name);
                panic!("ff-test: connecting to the new test database {url} failed: {e}");
            }
        }
    }

    /// Creates a fresh, empty database named `ff_test_<uuid>` (no migrations), for tests of
    /// the migration tooling itself. Panics like [`TestDb::new`].
    pub async fn empty() -> TestDb {
        let admin_url = crate::admin_url().await.unwrap_or_else(|e| panic!("ff-test: {e}"));
        let name = format!("ff_test_{}", uuid::Uuid::new_v4().simple());
        let url = crate::create_database(&admin_url, &name, true)
            .await
            .unwrap_or_else(|e| panic!("ff-test: creating empty test database {name} failed: {e}"));
        match PgPoolOptions::new().max_connections(TEST_POOL_MAX_CONNECTIONS).connect(&url).await {
            Ok(pool) => TestDb { pool, url, name, admin_url },
            Err(e) => {
                drop_database_blocking(&admin_url, &name);
                panic!("ff-test: connecting to the new test database {url} failed: {e}");
            }
        }
    }

    /// The connection pool to this test's database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// URL of this test's database (e.g. for code that opens its own pool).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Name of this test's database (`ff_test_<32 hex>`).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDb {
    /// Drops the database, best-effort, with `WITH (FORCE)` so that sessions
    /// still open (this pool's included) are terminated.
    fn drop(&mut self) {
        drop_database_blocking(&self.admin_url, &self.name);
    }
}

/// Drops database `name` from a helper thread with its own runtime, so it works
/// from `Drop` whatever runtime (if any) the caller is on. Errors are reported
/// on stderr and otherwise ignored.
fn drop_database_blocking(admin_url: &str, name: &str) {
    let admin_url = admin_url.to_owned();
    let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name));
    let spawned = std::thread::Builder::new().name("ff-test-drop-db".into()).spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("building a runtime: {e}"))?;
        runtime.block_on(async {
            let mut conn = connect_admin(&admin_url).await?;
            let result = conn.execute(sql.as_str()).await;
            let _ = conn.close().await;
            result.map(drop).map_err(|e| e.to_string())
        })
    });
    let outcome = match spawned {
        Ok(handle) => handle.join().unwrap_or_else(|_| Err("the drop thread panicked".into())),
        Err(e) => Err(format!("spawning the drop thread: {e}")),
    };
    if let Err(e) = outcome {
        eprintln!("ff-test: warning: could not drop test database {name}: {e}");
    }
}

/// 64-bit FNV-1a hash of each of `migrator`'s migrations' version and checksum
/// (stable across processes and Rust versions); names the template database.
fn migrations_hash(migrator: &Migrator) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            hash = (hash ^ u64::from(b)).wrapping_mul(PRIME);
        }
    };
    feed(b"ff-test template v1");
    for m in migrator.iter() {
        feed(&m.version.to_le_bytes());
        feed(&(m.checksum.len() as u64).to_le_bytes());
        feed(&m.checksum);
    }
    hash
}

/// Makes sure the template database for `migrator` exists on the server of
/// `admin_url` and returns its name.
async fn ensure_template(admin_url: &str, migrator: &Migrator) -> Result<String, String> {
    let hash = migrations_hash(migrator);
    let name = format!("ff_tmpl_{hash:016x}");
    if ready_templates().contains(&name) {
        return Ok(name);
    }
    let mut conn = connect_admin(admin_url).await?;
    // Same key in every process (advisory locks are scoped to the `postgres`
    // admin database all of them connect to).
    let key = i64::from_ne_bytes(hash.to_ne_bytes());
    let locked = sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(key)
        .execute(&mut conn)
        .await
        .map_err(|e| format!("taking the template advisory lock: {e}"));
    let result = match locked {
        Ok(_) => build_template_if_missing(&mut conn, admin_url, migrator, &name).await,
        Err(e) => Err(e),
    };
    // Closing the session releases the advisory lock too.
    let _ = conn.close().await;
    result?;
    ready_templates().insert(name.clone());
    Ok(name)
}

fn ready_templates() -> std::sync::MutexGuard<'static, BTreeSet<String>> {
    READY_TEMPLATES.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// With the advisory lock held: builds template `name` unless it exists.
async fn build_template_if_missing(
    conn: &mut PgConnection,
    admin_url: &str,
    migrator: &Migrator,
    name: &str,
) -> Result<(), String> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| format!("looking up template {name}: {e}"))?;
    if exists {
        return Ok(());
    }
    let build = format!("{name}_build");
    let build_q = quote_ident(&build);
    // A leftover from a run that died half-way.
    conn.execute(format!("DROP DATABASE IF EXISTS {build_q} WITH (FORCE)").as_str())
        .await
        .map_err(|e| format!("dropping stale {build}: {e}"))?;
    conn.execute(format!("CREATE DATABASE {build_q}").as_str()).await.map_err(|e| format!("creating {build}: {e}"))?;

    let build_url = with_database(admin_url, &build)?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&build_url)
        .await
        .map_err(|e| format!("connecting to {build_url}: {e}"))?;
    let migrated = match migrator.run(&pool).await {
        // Frozen rows: clones start with nothing for (auto)vacuum to do.
        Ok(()) => pool.execute("VACUUM (FREEZE)").await.map(drop).map_err(|e| format!("vacuuming {build}: {e}")),
        Err(e) => Err(format!("running migrations in {build}: {e}")),
    };
    // No session may remain on a template (CREATE DATABASE ... TEMPLATE). Closing the pool does
    // not always end its server session at once, and nothing else may use the build database
    // (it is private to this builder, under the advisory lock), so any session left is ended.
    pool.close().await;
    migrated?;
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&build)
    .execute(&mut *conn)
    .await
    .map_err(|e| format!("ending sessions left on {build}: {e}"))?;

    execute_retrying_busy(conn, &format!("ALTER DATABASE {build_q} WITH ALLOW_CONNECTIONS false"))
        .await
        .map_err(|e| format!("locking {build} against connections: {e}"))?;
    execute_retrying_busy(conn, &format!("ALTER DATABASE {build_q} RENAME TO {}", quote_ident(name)))
        .await
        .map_err(|e| format!("renaming {build} to {name}: {e}"))
}

/// `CREATE DATABASE <name> TEMPLATE <template>`.
async fn clone_template(admin_url: &str, template: &str, name: &str) -> Result<(), String> {
    let mut conn = connect_admin(admin_url).await?;
    let sql = format!("CREATE DATABASE {} TEMPLATE {}", quote_ident(name), quote_ident(template));
    let result = execute_retrying_busy(&mut conn, &sql).await;
    let _ = conn.close().await;
    result.map_err(|e| e.to_string())
}

/// Executes `sql`, retrying with a short, growing sleep while it fails with
/// SQLSTATE 55006 ("database ... is being accessed by other users"): sessions
/// that were just closed can take a moment to go away on the server.
async fn execute_retrying_busy(conn: &mut PgConnection, sql: &str) -> Result<(), sqlx::Error> {
    let mut attempt = 0;
    loop {
        match conn.execute(sql).await {
            Ok(_) => return Ok(()),
            Err(e) if is_sql_state(&e, "55006") && attempt + 1 < BUSY_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 << attempt.min(4))).await;
            }
            Err(e) => return Err(e),
        }
    }
}
