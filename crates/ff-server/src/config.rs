//! The server's one typed configuration, read from flags and environment variables (clap), and
//! validated once before boot.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ff_backend_postgres::reconciler::RetentionConfig;
use ff_backend_postgres::{BackendConfig, PostgresScannerConfig, RootCert, SslMode};
use ff_core::suspension::token::{parse_secret_hex, validate_kid};
use ff_core::{EngineError, PartitionConfig, SeedWaitpointHmacSecretArgs};

/// Defaults shared by the flags and [`ServerConfig::new`].
const DEFAULT_LISTEN: &str = "127.0.0.1:9090";
const DEFAULT_POOL_SIZE: u32 = 16;
const DEFAULT_POOL_ACQUIRE_TIMEOUT_MS: u64 = 1000;
const DEFAULT_PG_CONNECT_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_LEASE_EXPIRY_INTERVAL_MS: u64 = 500;
const DEFAULT_DELAYED_PROMOTER_INTERVAL_MS: u64 = 1000;
const DEFAULT_TIMEOUT_INTERVAL_MS: u64 = 1000;
const DEFAULT_LEADER_LEASE_TTL_MS: u64 = 5000;
const DEFAULT_RETENTION_MS: u64 = ff_core::DEFAULT_RETENTION_MS as u64;
const DEFAULT_RETENTION_INTERVAL_MS: u64 = 60_000;
const DEFAULT_RETENTION_BATCH: u32 = 500;
const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 15_000;
const DEFAULT_FLOW_PARTITIONS: u16 = 256;
const DEFAULT_WAITPOINT_KID: &str = "k1";
const DEFAULT_POLL_INTERVAL_MS: u64 = BackendConfig::DEFAULT_POLL_INTERVAL.as_millis() as u64;
const DEFAULT_MAX_INFLIGHT_BODY_BYTES: usize = crate::http::DEFAULT_INFLIGHT_BODY_BYTES;
const DEFAULT_INFLIGHT_WAIT_MS: u64 = crate::http::DEFAULT_INFLIGHT_WAIT.as_millis() as u64;

/// What to do about the schema at boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MigratePolicy {
    /// Apply pending migrations (idempotent, serialised by an advisory lock).
    Apply,
    /// Refuse to start unless the schema is already current.
    Check,
}

/// Everything `ff serve` needs.
#[derive(Clone, Debug, clap::Args)]
pub struct ServerConfig {
    /// PostgreSQL URL (`postgres://user@host:port/db`); may carry `sslmode` and `sslrootcert`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// TLS to PostgreSQL: disable, prefer, require, verify-ca or verify-full (as in libpq;
    /// default: the URL's `sslmode`, else prefer).
    #[arg(long, env = "FF_PG_SSLMODE")]
    pub pg_sslmode: Option<SslMode>,

    /// CA certificates (PEM file) the database server's certificate must chain to, or `system`
    /// for the bundled public roots (verify-full only).
    #[arg(long, env = "FF_PG_SSLROOTCERT")]
    pub pg_sslrootcert: Option<RootCert>,

    /// How long a request waits for a database connection before failing with `503 transport`
    /// (ms); also bounds each connection attempt made meanwhile.
    #[arg(long, env = "FF_POOL_ACQUIRE_TIMEOUT_MS", default_value_t = DEFAULT_POOL_ACQUIRE_TIMEOUT_MS)]
    pub pool_acquire_timeout_ms: u64,

    /// How long boot waits for the database to accept a first connection (ms).
    #[arg(long, env = "FF_PG_CONNECT_TIMEOUT_MS", default_value_t = DEFAULT_PG_CONNECT_TIMEOUT_MS)]
    pub pg_connect_timeout_ms: u64,

    /// Certificate chain (PEM) to serve HTTPS with; needs `--tls-key`. Unset: plain HTTP.
    #[arg(long, env = "FF_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of `--tls-cert`.
    #[arg(long, env = "FF_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// Address the HTTP API listens on (port 0 picks a free one).
    #[arg(long, env = "FF_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Bearer token required on every `/v1/` route and on `/metrics`; unset or empty = open
    /// (a warning is logged). `/healthz` is always open.
    #[arg(long, env = "FF_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    /// Comma-separated origins allowed by CORS, or `*` for any; empty = no CORS headers.
    #[arg(long, env = "FF_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// The server-wide budget of request-body bytes in flight: a request reserves its body's
    /// declared length (its route's limit when undeclared) before the body is read, and gives
    /// it back once answered. At least the largest route body limit (64 MiB, or
    /// `--max-body-bytes`).
    #[arg(long, env = "FF_MAX_INFLIGHT_BODY_BYTES", default_value_t = DEFAULT_MAX_INFLIGHT_BODY_BYTES)]
    pub max_inflight_body_bytes: usize,

    /// How long a request waits for its share of `--max-inflight-body-bytes` before it is
    /// answered `503 server_busy` with `Retry-After` (ms; 0 = refuse at once).
    #[arg(long, env = "FF_INFLIGHT_WAIT_MS", default_value_t = DEFAULT_INFLIGHT_WAIT_MS)]
    pub inflight_wait_ms: u64,

    /// Lowers every route's body limit to at most this many bytes (unset: each route's own
    /// limit, 12 MiB for a submission or completion, 64 MiB for a batch).
    #[arg(long, env = "FF_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,

    /// Maximum database connections.
    #[arg(long, env = "FF_POOL_SIZE", default_value_t = DEFAULT_POOL_SIZE)]
    pub pool_size: u32,

    /// Apply pending migrations at boot, or only check that the schema is current.
    #[arg(long, env = "FF_MIGRATE", value_enum, default_value = "apply")]
    pub migrate: MigratePolicy,

    /// DATABASE_URL goes through a pooler in transaction mode (PgBouncer `pool_mode =
    /// transaction`): no statement outlives its transaction, nothing is prepared under a name,
    /// no LISTEN (wakeups by polling every FF_POLL_INTERVAL_MS). Migrations at boot then go
    /// through FF_MIGRATION_DATABASE_URL.
    #[arg(long, env = "FF_TRANSACTION_POOLING", default_value_t = false)]
    pub transaction_pooling: bool,

    /// With FF_TRANSACTION_POOLING: how often waiting claims, timers and followers poll (ms).
    #[arg(long, env = "FF_POLL_INTERVAL_MS", default_value_t = DEFAULT_POLL_INTERVAL_MS)]
    pub poll_interval_ms: u64,

    /// A direct connection (not through a transaction pooler) for applying migrations at boot;
    /// default DATABASE_URL. Required with FF_TRANSACTION_POOLING when FF_MIGRATE=apply.
    #[arg(long, env = "FF_MIGRATION_DATABASE_URL", hide_env_values = true)]
    pub migration_database_url: Option<String>,

    /// How often expired leases are made reclaimable (ms).
    #[arg(long, env = "FF_LEASE_EXPIRY_INTERVAL_MS", default_value_t = DEFAULT_LEASE_EXPIRY_INTERVAL_MS)]
    pub lease_expiry_interval_ms: u64,

    /// How often due delayed executions are relabelled (ms).
    #[arg(long, env = "FF_DELAYED_PROMOTER_INTERVAL_MS", default_value_t = DEFAULT_DELAYED_PROMOTER_INTERVAL_MS)]
    pub delayed_promoter_interval_ms: u64,

    /// How often attempt timeouts and execution deadlines are enforced (ms).
    #[arg(long, env = "FF_TIMEOUT_INTERVAL_MS", default_value_t = DEFAULT_TIMEOUT_INTERVAL_MS)]
    pub timeout_interval_ms: u64,

    /// Lifetime of the reconcilers' leader lease (ms): of the servers sharing a database, the
    /// lease's holder runs the reconcilers; another takes over about this long after it dies.
    #[arg(long, env = "FF_LEADER_LEASE_TTL_MS", default_value_t = DEFAULT_LEADER_LEASE_TTL_MS)]
    pub leader_lease_ttl_ms: u64,

    /// How long a terminal execution is kept after it ended (ms; default 7 days), unless its
    /// lane or namespace has an override (`PUT /v1/retention`).
    #[arg(long, env = "FF_RETENTION_MS", default_value_t = DEFAULT_RETENTION_MS)]
    pub retention_ms: u64,

    /// How long an event is kept in the event log (ms; default 7 days). A reader whose cursor
    /// falls further behind gets `cursor_expired`.
    #[arg(long, env = "FF_EVENT_RETENTION_MS", default_value_t = DEFAULT_RETENTION_MS)]
    pub event_retention_ms: u64,

    /// How often the retention reconciler deletes what has aged out (ms).
    #[arg(long, env = "FF_RETENTION_INTERVAL_MS", default_value_t = DEFAULT_RETENTION_INTERVAL_MS)]
    pub retention_interval_ms: u64,

    /// Executions per lane, and events, the retention reconciler deletes per transaction.
    #[arg(long, env = "FF_RETENTION_BATCH", default_value_t = DEFAULT_RETENTION_BATCH)]
    pub retention_batch: u32,

    /// How long shutdown waits for in-flight requests and reconcilers (ms).
    #[arg(long, env = "FF_SHUTDOWN_GRACE_MS", default_value_t = DEFAULT_SHUTDOWN_GRACE_MS)]
    pub shutdown_grace_ms: u64,

    /// Execution partitions; must match every other process using the database.
    #[arg(long, env = "FF_FLOW_PARTITIONS", default_value_t = DEFAULT_FLOW_PARTITIONS)]
    pub flow_partitions: u16,

    /// The waitpoint signing key installed at boot when the database has none (64 hex digits).
    /// Unset: the first waitpoint minted installs a random key. A database that has a different
    /// key keeps it (a warning is logged; rotate to replace it).
    #[arg(long, env = "FF_WAITPOINT_SECRET", hide_env_values = true)]
    pub waitpoint_secret: Option<String>,

    /// The key id of `--waitpoint-secret`, the prefix of the tokens it signs.
    #[arg(long, env = "FF_WAITPOINT_KID", default_value = DEFAULT_WAITPOINT_KID)]
    pub waitpoint_kid: String,
}

impl ServerConfig {
    /// A configuration for `database_url` with every other setting at its default.
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            database_url: Some(database_url.into()),
            pg_sslmode: None,
            pg_sslrootcert: None,
            pool_acquire_timeout_ms: DEFAULT_POOL_ACQUIRE_TIMEOUT_MS,
            pg_connect_timeout_ms: DEFAULT_PG_CONNECT_TIMEOUT_MS,
            tls_cert: None,
            tls_key: None,
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            api_token: None,
            cors_origins: Vec::new(),
            max_inflight_body_bytes: DEFAULT_MAX_INFLIGHT_BODY_BYTES,
            inflight_wait_ms: DEFAULT_INFLIGHT_WAIT_MS,
            max_body_bytes: None,
            pool_size: DEFAULT_POOL_SIZE,
            migrate: MigratePolicy::Apply,
            transaction_pooling: false,
            poll_interval_ms: DEFAULT_POLL_INTERVAL_MS,
            migration_database_url: None,
            lease_expiry_interval_ms: DEFAULT_LEASE_EXPIRY_INTERVAL_MS,
            delayed_promoter_interval_ms: DEFAULT_DELAYED_PROMOTER_INTERVAL_MS,
            timeout_interval_ms: DEFAULT_TIMEOUT_INTERVAL_MS,
            leader_lease_ttl_ms: DEFAULT_LEADER_LEASE_TTL_MS,
            retention_ms: DEFAULT_RETENTION_MS,
            event_retention_ms: DEFAULT_RETENTION_MS,
            retention_interval_ms: DEFAULT_RETENTION_INTERVAL_MS,
            retention_batch: DEFAULT_RETENTION_BATCH,
            shutdown_grace_ms: DEFAULT_SHUTDOWN_GRACE_MS,
            flow_partitions: DEFAULT_FLOW_PARTITIONS,
            waitpoint_secret: None,
            waitpoint_kid: DEFAULT_WAITPOINT_KID.to_owned(),
        }
    }

    /// The bearer token, if auth is on (an empty string counts as unset).
    pub fn token(&self) -> Option<&str> {
        self.api_token.as_deref().filter(|t| !t.is_empty())
    }

    /// The waitpoint signing key to seed at boot, if one is configured (an empty secret counts
    /// as unset).
    pub fn waitpoint_key(&self) -> Option<SeedWaitpointHmacSecretArgs> {
        let secret = self.waitpoint_secret.as_deref().map(str::trim).filter(|s| !s.is_empty())?;
        Some(SeedWaitpointHmacSecretArgs { kid: self.waitpoint_kid.clone(), secret_hex: secret.to_owned() })
    }

    /// Partition layout.
    pub fn partitions(&self) -> PartitionConfig {
        PartitionConfig { num_flow_partitions: self.flow_partitions, ..PartitionConfig::default() }
    }

    /// How the backend connects: URL, TLS, pool size and timeouts.
    pub fn backend_config(&self) -> BackendConfig {
        BackendConfig {
            ssl_mode: self.pg_sslmode,
            ssl_root_cert: self.pg_sslrootcert.clone(),
            max_connections: self.pool_size,
            acquire_timeout: Duration::from_millis(self.pool_acquire_timeout_ms),
            connect_timeout: Duration::from_millis(self.pg_connect_timeout_ms),
            partition_config: self.partitions(),
            transaction_pooling: self.transaction_pooling,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            ..BackendConfig::new(self.database_url.clone().unwrap_or_default())
        }
    }

    /// Where migrations at boot are applied: [`Self::migration_database_url`], else the
    /// backend's own settings.
    pub fn migration_backend_config(&self) -> BackendConfig {
        let backend = self.backend_config();
        match self.migration_database_url.as_deref().filter(|u| !u.is_empty()) {
            Some(url) => BackendConfig { url: url.to_owned(), transaction_pooling: false, ..backend },
            None => backend,
        }
    }

    /// The longest wait of a request for its share of the body budget.
    pub fn inflight_wait(&self) -> Duration {
        Duration::from_millis(self.inflight_wait_ms)
    }

    /// Reconciler settings.
    pub fn scanners(&self) -> PostgresScannerConfig {
        PostgresScannerConfig {
            lease_expiry_interval: Duration::from_millis(self.lease_expiry_interval_ms),
            delayed_promoter_interval: Duration::from_millis(self.delayed_promoter_interval_ms),
            timeout_interval: Duration::from_millis(self.timeout_interval_ms),
            leader_lease_ttl: Duration::from_millis(self.leader_lease_ttl_ms),
            retention_interval: Duration::from_millis(self.retention_interval_ms),
            retention: RetentionConfig {
                default_retention: Duration::from_millis(self.retention_ms),
                event_retention: Duration::from_millis(self.event_retention_ms),
                batch_size: self.retention_batch,
            },
            ..PostgresScannerConfig::default()
        }
    }

    /// Checks every field; the error names the offending setting.
    pub fn validate(&self) -> Result<(), EngineError> {
        match self.database_url.as_deref() {
            None | Some("") => return Err(EngineError::invalid("DATABASE_URL (--database-url) is required")),
            Some(_) => {}
        }
        if self.transaction_pooling
            && self.migrate == MigratePolicy::Apply
            && self.migration_database_url.as_deref().is_none_or(str::is_empty)
        {
            return Err(EngineError::invalid(
                "FF_TRANSACTION_POOLING needs FF_MIGRATION_DATABASE_URL (--migration-database-url), a direct \
                 connection, to apply migrations at boot (they hold a session lock); or set FF_MIGRATE=check",
            ));
        }
        if !(1..=60_000).contains(&self.poll_interval_ms) {
            return Err(EngineError::invalid(format!(
                "FF_POLL_INTERVAL_MS (--poll-interval-ms) must be within 1..=60000 ms, got {}",
                self.poll_interval_ms
            )));
        }
        if self.pool_size == 0 {
            return Err(EngineError::invalid("FF_POOL_SIZE (--pool-size) must be at least 1"));
        }
        if self.flow_partitions == 0 {
            return Err(EngineError::invalid("FF_FLOW_PARTITIONS (--flow-partitions) must be at least 1"));
        }
        for (name, ms) in [
            ("FF_LEASE_EXPIRY_INTERVAL_MS", self.lease_expiry_interval_ms),
            ("FF_DELAYED_PROMOTER_INTERVAL_MS", self.delayed_promoter_interval_ms),
            ("FF_TIMEOUT_INTERVAL_MS", self.timeout_interval_ms),
            ("FF_LEADER_LEASE_TTL_MS", self.leader_lease_ttl_ms.max(10)),
            ("FF_RETENTION_INTERVAL_MS", self.retention_interval_ms),
        ] {
            if !(10..=3_600_000).contains(&ms) {
                return Err(EngineError::invalid(format!("{name} must be within 10..=3600000 ms, got {ms}")));
            }
        }
        for (name, ms) in [("FF_RETENTION_MS", self.retention_ms), ("FF_EVENT_RETENTION_MS", self.event_retention_ms)] {
            if !(1..=ff_core::MAX_RETENTION_MS as u64).contains(&ms) {
                return Err(EngineError::invalid(format!(
                    "{name} must be within 1..={} ms, got {ms}",
                    ff_core::MAX_RETENTION_MS
                )));
            }
        }
        if !(1..=ff_core::MAX_RETENTION_BATCH).contains(&self.retention_batch) {
            return Err(EngineError::invalid(format!(
                "FF_RETENTION_BATCH (--retention-batch) must be within 1..={}, got {}",
                ff_core::MAX_RETENTION_BATCH,
                self.retention_batch
            )));
        }
        if self.leader_lease_ttl_ms < 400 {
            return Err(EngineError::invalid(format!(
                "FF_LEADER_LEASE_TTL_MS must be at least 400 ms, got {}",
                self.leader_lease_ttl_ms
            )));
        }
        for (name, ms) in [
            ("FF_POOL_ACQUIRE_TIMEOUT_MS", self.pool_acquire_timeout_ms),
            ("FF_PG_CONNECT_TIMEOUT_MS", self.pg_connect_timeout_ms),
        ] {
            if !(10..=600_000).contains(&ms) {
                return Err(EngineError::invalid(format!("{name} must be within 10..=600000 ms, got {ms}")));
            }
        }
        // The database settings (TLS mode, CA file) are checked by the backend's own rules.
        self.backend_config().validate()?;
        validate_kid(&self.waitpoint_kid)
            .map_err(|e| EngineError::invalid(format!("FF_WAITPOINT_KID (--waitpoint-kid): {e}")))?;
        if let Some(key) = self.waitpoint_key() {
            // The message names the setting, never the secret.
            parse_secret_hex(&key.secret_hex).map_err(|_| {
                EngineError::invalid("FF_WAITPOINT_SECRET (--waitpoint-secret) must be 64 hex digits (32 bytes)")
            })?;
        }
        if let Some(cap) = self.max_body_bytes
            && cap < crate::http::MIN_BODY_LIMIT
        {
            return Err(EngineError::invalid(format!(
                "FF_MAX_BODY_BYTES (--max-body-bytes) must be at least {} bytes, got {cap}",
                crate::http::MIN_BODY_LIMIT
            )));
        }
        let largest = crate::http::largest_body_limit(self.max_body_bytes);
        if self.max_inflight_body_bytes < largest {
            return Err(EngineError::invalid(format!(
                "FF_MAX_INFLIGHT_BODY_BYTES (--max-inflight-body-bytes) must be at least the largest route body \
                 limit, {largest} bytes, got {}",
                self.max_inflight_body_bytes
            )));
        }
        if self.inflight_wait_ms > 60_000 {
            return Err(EngineError::invalid(format!(
                "FF_INFLIGHT_WAIT_MS (--inflight-wait-ms) must be within 0..=60000 ms, got {}",
                self.inflight_wait_ms
            )));
        }
        if self.cors_origins.iter().any(|o| o.trim().is_empty()) {
            return Err(EngineError::invalid("FF_CORS_ORIGINS (--cors-origins) contains an empty origin"));
        }
        Ok(())
    }
}
