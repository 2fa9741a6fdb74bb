//! Connection and reconciler configuration.

use std::time::Duration;

use ff_core::{EngineError, PartitionConfig};

/// How to reach Postgres.
#[derive(Clone, Debug)]
pub struct BackendConfig {
    /// `postgres://user@host:port/db` URL.
    pub url: String,
    /// Pool ceiling.
    pub max_connections: u32,
    /// Connections kept open when idle.
    pub min_connections: u32,
    /// How long an operation waits for a free connection before `ResourceExhausted`.
    pub acquire_timeout: Duration,
    /// Partition layout.
    pub partition_config: PartitionConfig,
}

impl BackendConfig {
    /// Defaults for `url`: 16 connections, none kept idle, 30 s acquire timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 16,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(30),
            partition_config: PartitionConfig::default(),
        }
    }

    /// Validates bounds.
    pub fn validate(&self) -> Result<(), EngineError> {
        if !(self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")) {
            return Err(EngineError::invalid("database url must start with postgres:// or postgresql://"));
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
            batch_size: 500,
        }
    }
}
