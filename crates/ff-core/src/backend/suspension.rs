//! Suspension: waiting on waitpoints for signals without holding a lease; signals, waitpoints,
//! their tokens and the keystore that signs them.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::EngineError;
use crate::event::{EventCursor, ScannerFilter};
use crate::handle::{Handle, LeaseFence};
use crate::id::{AttemptIndex, ExecutionId, WaitpointId};
use crate::partition::Partition;
use crate::suspension::*;

/// Suspending, signalling and resuming executions.
#[async_trait]
pub trait SuspensionBackend: Send + Sync {
    /// The lease holder suspends on its waitpoints: fresh ones are created, pending ones (from
    /// `create_waitpoint`) activated, the lease released and the attempt interrupted. When
    /// signals already buffered on pending waitpoints satisfy the condition, nothing changes
    /// and the outcome is `AlreadySatisfied` (the lease is kept). A second suspend with the same
    /// idempotency key returns the first outcome; a second one without is `already_suspended`.
    async fn suspend(&self, handle: &Handle, args: SuspendArgs) -> Result<SuspendOutcome, EngineError>;

    /// `suspend` by the execution's id, attempt and lease fence instead of a handle.
    async fn suspend_by_triple(
        &self,
        execution_id: ExecutionId,
        attempt_index: AttemptIndex,
        fence: LeaseFence,
        args: SuspendArgs,
    ) -> Result<SuspendOutcome, EngineError>;

    /// Mints a pending waitpoint while holding the lease, to hand its token out before
    /// suspending; signals delivered to it are buffered. It closes at `expires_in` unless a
    /// suspension activates it. A second open waitpoint with the same key is
    /// `waitpoint_already_exists`.
    async fn create_waitpoint(
        &self,
        handle: &Handle,
        waitpoint_key: &str,
        expires_in: Duration,
    ) -> Result<PendingWaitpoint, EngineError>;

    /// The token of an open waitpoint, recomputed from its binding (for trusted callers: a
    /// signal bridge). `None` when the waitpoint does not exist or is closed, or its key is gone.
    async fn read_waitpoint_token(&self, waitpoint_id: &WaitpointId) -> Result<Option<String>, EngineError>;

    /// An execution's open (pending or active) waitpoints, by id; tokens are never listed.
    async fn list_pending_waitpoints(
        &self,
        args: ListPendingWaitpointsArgs,
    ) -> Result<ListPendingWaitpointsResult, EngineError>;

    /// Delivers a signal to a waitpoint: verified by its token (unless the caller is trusted and
    /// gives none), deduplicated by idempotency key, bounded per execution. On an active
    /// waitpoint it may satisfy the resume condition, making the execution claimable in the same
    /// transaction; on a pending one it is buffered.
    async fn deliver_signal(&self, args: DeliverSignalArgs) -> Result<DeliverSignalResult, EngineError>;

    /// An operator approves or rejects through a waitpoint without its token.
    async fn deliver_approval_signal(
        &self,
        args: DeliverApprovalSignalArgs,
    ) -> Result<DeliverSignalResult, EngineError>;

    /// The signals of the handle's attempt's latest suspension (or, before it suspends, those
    /// buffered on its pending waitpoints), in delivery order.
    async fn observe_signals(&self, handle: &Handle) -> Result<Vec<ResumeSignal>, EngineError>;

    /// Claims the resumed attempt of one execution by id (the same attempt, a new lease);
    /// `not_a_resumed_execution` when it is not a resumed execution waiting for a worker.
    async fn claim_resumed_execution(
        &self,
        args: ClaimResumedExecutionArgs,
    ) -> Result<ClaimResumedExecutionResult, EngineError>;

    /// Claims the resumed attempt a grant names; `None` when the execution is no longer that
    /// attempt waiting for a worker (claimed by someone else, ended, or another attempt).
    async fn claim_from_resume_grant(&self, token: ResumeToken) -> Result<Option<Handle>, EngineError>;

    /// Resumes a suspended execution whatever its condition (operator or automation).
    async fn resume_execution(&self, args: ResumeExecutionArgs) -> Result<ResumeExecutionResult, EngineError>;

    /// Applies a due suspension timeout by its behaviour (fail, cancel, expire, resume with a
    /// `timeout` signal, escalate). A no-op when not due.
    async fn expire_suspension(&self, partition: Partition, execution_id: &ExecutionId) -> Result<(), EngineError>;

    /// Closes a pending waitpoint whose lifetime has passed. A no-op when not due.
    async fn close_waitpoint(&self, execution_id: &ExecutionId, waitpoint_id: &WaitpointId) -> Result<(), EngineError>;

    /// Suspended executions of one partition (all when `None`), by suspension time then id.
    async fn list_suspended(
        &self,
        partition: Option<u16>,
        cursor: Option<ExecutionId>,
        limit: usize,
    ) -> Result<ListSuspendedPage, EngineError>;

    /// Signal deliveries recorded after `cursor` (`EventCursor::BEGINNING`: all retained), in
    /// commit order, matching `filter`'s namespace; duplicates are not deliveries. Resumable:
    /// a delivery that commits late is never skipped.
    async fn subscribe_signal_delivery(
        &self,
        cursor: EventCursor,
        filter: &ScannerFilter,
    ) -> Result<SignalDeliveryStream, EngineError>;

    /// Installs the first signing key; safe to call on every boot.
    async fn seed_waitpoint_hmac_secret(&self, args: SeedWaitpointHmacSecretArgs) -> Result<SeedOutcome, EngineError>;

    /// Makes a new key current; the keys it replaces keep verifying for `grace_ms`, and keys
    /// whose grace has ended are removed.
    async fn rotate_waitpoint_hmac_secret_all(
        &self,
        args: RotateWaitpointHmacSecretAllArgs,
    ) -> Result<RotateWaitpointHmacSecretAllResult, EngineError>;
}
