//! PostgreSQL implementation of the FlowFabric [`EngineBackend`](ff_core::EngineBackend).
//!
//! Design: one authoritative `ff_execution` row per execution holds its state vector and current
//! lease; every operation is one transaction, and on the hot path (claim, renew, complete) one
//! statement: the lease fence `(lease_id, lease_epoch, lease expiry, ownership)` is checked in
//! the WHERE clause of the statement that writes, so a stale worker can never overwrite a newer
//! attempt. Times are database time (`ff_now_ms()`). Lease changes and terminal transitions
//! append to `ff_event` in the same statement.

#![warn(missing_docs)]

mod admission;
mod attempt_end;
mod backend;
mod coalesce;
mod config;
pub mod connection;
pub mod dashboard;
mod db;
pub mod error;
mod event;
mod execution;
mod fence;
mod flow;
mod leader;
mod lease;
mod maintenance;
pub mod metrics;
pub mod migrate;
mod operator;
mod pulse;
pub mod reconciler;
mod retention;
mod route;
mod row;
#[cfg(test)]
mod schema_check;
mod stream;
mod subscription;
mod suspension;
mod wakeup;
mod worker;

pub use backend::PostgresBackend;
pub use config::{BackendConfig, PostgresScannerConfig};
pub use connection::{ConnectConfigError, RootCert, SslMode};
pub use db::{Db, Tx, TxConn};
pub use event::EventLogEntry;
pub use metrics::Metrics;
pub use migrate::{MIGRATOR, SCHEMA_VERSION, apply_migrations, check_schema_version};
