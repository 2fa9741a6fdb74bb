//! Connection and reconciler configuration.

use std::time::Duration;

use ff_core::{EngineError, PartitionConfig};

use crate::connection::{RootCert, SslMode};
use crate::reconciler::RetentionConfig;

/// How to reach Postgres.
#[derive(Clone, Debug)]
pub struct BackendConfig {
    /// `postgres://user@host:port/db` URL; may carry `sslmode` and `sslrootcert`.
    pub url: String,
    /// TLS mode; `None`: the URL's `sslmode`, else `prefer`. Given in both places, they must
    /// agree.
    pub ssl_mode: Option<SslMode>,
    /// Root certificates for `verify-ca` / `verify-full`; `None`: the URL's `sslrootcert`.
    pub ssl_root_cert: Option<RootCert>,
    /// Pool ceiling.
    pub max_connections: u32,
    /// Connections kept open when idle.
    pub min_connections: u32,
    /// How long an operation waits for a connection, idle or newly opened, before it fails
    /// with a transport error; also bounds each connection attempt made for it.
    pub acquire_timeout: Duration,
    /// How long [`connect`](crate::PostgresBackend::connect) waits for the database to accept a
    /// first connection (refused connections are retried until then).
    pub connect_timeout: Duration,
    /// Partition layout.
    pub partition_config: PartitionConfig,
    /// The URL reaches Postgres through a pooler in transaction mode (PgBouncer's
    /// `pool_mode = transaction`): no statement outlives its transaction, nothing is prepared
    /// under a name, no `LISTEN` (wakeups by polling every [`Self::poll_interval`]). Migrations
    /// need a direct connection.
    pub transaction_pooling: bool,
    /// With [`Self::transaction_pooling`]: how often waiting claims, timers and stream and event
    /// followers look for work they would otherwise be woken for.
    pub poll_interval: Duration,
}

impl BackendConfig {
    /// Defaults for `url`: TLS as the URL says, 16 connections, none kept idle, 1 s acquire
    /// timeout, 10 s connect timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ssl_mode: None,
            ssl_root_cert: None,
            max_connections: 16,
            min_connections: 0,
            acquire_timeout: Self::DEFAULT_ACQUIRE_TIMEOUT,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            partition_config: PartitionConfig::default(),
            transaction_pooling: false,
            poll_interval: Self::DEFAULT_POLL_INTERVAL,
        }
    }

    /// Default of [`Self::poll_interval`].
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(100);

    /// Default of [`Self::acquire_timeout`].
    pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);
    /// Default of [`Self::connect_timeout`].
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

    /// Validates bounds and the connection settings (reading the CA file, if any).
    pub fn validate(&self) -> Result<(), EngineError> {
        if !(self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")) {
            return Err(EngineError::invalid("database url must start with postgres:// or postgresql://"));
        }
        self.connect_options().map_err(|e| EngineError::invalid(e.to_string()))?;
        if self.poll_interval.is_zero() {
            return Err(EngineError::invalid("poll interval must be positive"));
        }
        if self.acquire_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(EngineError::invalid("acquire and connect timeouts must be positive"));
        }
        if self.max_connections == 0 || self.min_connections > self.max_connections {
            return Err(EngineError::invalid(format!(
                "pool sizes invalid: min {} max {}",
                self.min_connections, self.max_connections
            )));
        }
        if self.partition_config.num_flow_partitions == 0 {
            return Err(EngineError::invalid("num_flow_partitions must be at least 1"));
        }
        Ok(())
    }
}

/// Reconciler intervals and batch sizes for [`PostgresBackend::with_scanners`](crate::PostgresBackend::with_scanners).
#[derive(Clone, Debug)]
pub struct PostgresScannerConfig {
    /// How often expired leases are marked reclaimable.
    pub lease_expiry_interval: Duration,
    /// How often due delayed executions are relabelled eligible. Claims do not wait for this:
    /// a delayed execution is claimable as soon as its time passes.
    pub delayed_promoter_interval: Duration,
    /// How often attempt timeouts and execution deadlines are enforced.
    pub timeout_interval: Duration,
    /// How often workers whose liveness TTL lapsed are retired (and their leases revoked).
    pub worker_liveness_interval: Duration,
    /// How often flow members left in a cancel backlog, and siblings a decided group could
    /// not cancel at once, are cancelled.
    pub flow_cancel_interval: Duration,
    /// How often edges left unresolved by their upstream's terminal transaction are resolved
    /// (a safety net: terminal transitions resolve their edges themselves).
    pub dependency_interval: Duration,
    /// Longest sleep between passes applying suspension timeouts and closing expired pending
    /// waitpoints (each pass sleeps only until the next one is due).
    pub suspension_interval: Duration,
    /// Longest sleep between passes admitting executions a quota's rate window held back,
    /// resetting budgets whose time has come and reaping lapsed claim grants (each pass sleeps
    /// only until the next window opens or reset is due).
    pub admission_interval: Duration,
    /// How often one quota partition's slots and one budget partition's exhaustion are
    /// recounted from the rows that hold them (a backstop).
    pub admission_recount_interval: Duration,
    /// How long the reconcilers' leader lease lives without renewal: of the processes running
    /// reconcilers on one database, only the lease's holder runs them, and another takes over
    /// within about this long after the holder dies.
    pub leader_lease_ttl: Duration,
    /// How often aged-out terminal executions are deleted and the event log pruned.
    pub retention_interval: Duration,
    /// What the retention reconciler keeps (windows) and deletes per batch.
    pub retention: RetentionConfig,
    /// This process's name in the leader lease (a random one when `None`).
    pub leader_id: Option<String>,
    /// Rows handled per statement.
    pub batch_size: u32,
}

impl Default for PostgresScannerConfig {
    fn default() -> Self {
        Self {
            lease_expiry_interval: Duration::from_millis(500),
            delayed_promoter_interval: Duration::from_secs(1),
            timeout_interval: Duration::from_secs(1),
            worker_liveness_interval: Duration::from_secs(1),
            flow_cancel_interval: Duration::from_secs(1),
            dependency_interval: Duration::from_secs(15),
            suspension_interval: Duration::from_secs(1),
            admission_interval: Duration::from_secs(1),
            admission_recount_interval: Duration::from_secs(2),
            leader_lease_ttl: Duration::from_secs(5),
            retention_interval: Duration::from_secs(60),
            retention: RetentionConfig::default(),
            leader_id: None,
            batch_size: 500,
        }
    }
}
