//! The worker registry: registration, heartbeats, death (which revokes the worker's leases at
//! once) and listings.

use async_trait::async_trait;

use crate::error::EngineError;
use crate::worker::*;

/// Keeping track of live worker instances.
#[async_trait]
pub trait WorkerRegistryBackend: Send + Sync {
    /// Registers a worker instance, or refreshes a live registration. An instance id bound to
    /// another live worker id is refused (`worker_instance_reassigned`) and nothing is written.
    async fn register_worker(&self, args: RegisterWorkerArgs) -> Result<RegisterWorkerOutcome, EngineError>;

    /// Extends a live registration by its TTL; a lapsed or unknown one is `NotRegistered`.
    async fn heartbeat_worker(&self, args: HeartbeatWorkerArgs) -> Result<HeartbeatWorkerOutcome, EngineError>;

    /// Removes a worker instance and revokes every lease it holds, in one transaction: its
    /// executions are claimable again at once, and its next call with such a lease is refused
    /// with `lease_revoked`.
    async fn mark_worker_dead(&self, args: MarkWorkerDeadArgs) -> Result<MarkWorkerDeadOutcome, EngineError>;

    /// Live workers in instance-id order, optionally of one namespace.
    async fn list_workers(&self, args: ListWorkersArgs) -> Result<ListWorkersResult, EngineError>;
}
