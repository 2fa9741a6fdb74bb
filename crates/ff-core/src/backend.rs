//! The backend seam: [`EngineBackend`] (everything a worker, operator or server does) and
//! [`CompletionBackend`] (completion subscriptions).
//!
//! Every method here works on every backend that implements the trait: there are no default
//! bodies that answer "unavailable". The trait grows as capabilities are built; what a backend
//! supports is also reported truthfully by [`EngineBackend::capabilities`]. Methods are grouped
//! by entity: backend, ingress, claims and leases, attempt ends, streams, reads, tags, listings,
//! reconciler hooks.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;

use crate::capability::{Capabilities, CapabilitySet};
use crate::error::EngineError;
use crate::event::{CompletionStream, EventCursor, ScannerFilter};
use crate::execution::*;
use crate::handle::Handle;
use crate::id::{AttemptIndex, ExecutionId, LaneId, TimestampMs};
use crate::lease::*;
use crate::partition::{Partition, PartitionKey};
use crate::state::PublicState;
use crate::stream::{AppendFrameOutcome, Frame, StreamCursor, StreamFrames};

/// Which timer expired an execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpirePhase {
    /// The running attempt exceeded its attempt timeout.
    AttemptTimeout,
    /// The execution passed its deadline.
    ExecutionDeadline,
}

/// What `prepare` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrepareOutcome {
    /// Nothing to do: the schema is current.
    NoOp,
}

/// The engine's storage and coordination backend.
#[async_trait]
pub trait EngineBackend: Send + Sync + 'static {
    // ----- backend -------------------------------------------------------------------------

    /// Static label of the backend family (`postgres`).
    fn backend_label(&self) -> &'static str;

    /// What this backend supports, truthfully.
    fn capabilities(&self) -> Capabilities;

    /// Verifies the backend is ready (schema current). Idempotent.
    async fn prepare(&self) -> Result<PrepareOutcome, EngineError>;

    /// Round-trips to the backend.
    async fn ping(&self) -> Result<(), EngineError>;

    /// The backend's clock, in ms since the epoch.
    async fn server_time_ms(&self) -> Result<u64, EngineError>;

    /// Stops reconcilers (waiting up to `grace`) and closes connections. Never fails.
    async fn shutdown_prepare(&self, grace: Duration) -> Result<(), EngineError>;

    // ----- ingress -------------------------------------------------------------------------

    /// Creates one execution (or returns the original as `Duplicate`).
    async fn create_execution(&self, args: CreateExecutionArgs) -> Result<CreateExecutionResult, EngineError>;

    /// Creates many executions in one round trip. Results are in input order. The whole batch
    /// is validated first: one invalid item rejects the batch and writes nothing.
    async fn create_executions(
        &self,
        args: Vec<CreateExecutionArgs>,
    ) -> Result<Vec<CreateExecutionResult>, EngineError>;

    // ----- claims and leases ---------------------------------------------------------------

    /// Claims the best execution on `lane` whose required capabilities are a subset of
    /// `capabilities`: highest priority first, then earliest eligible. `Ok(None)` = no work.
    async fn claim(
        &self,
        lane: &LaneId,
        capabilities: &CapabilitySet,
        policy: ClaimPolicy,
    ) -> Result<Option<Handle>, EngineError>;

    /// Claims up to `max` executions in one round trip, same ordering and routing as `claim`.
    async fn claim_batch(
        &self,
        lane: &LaneId,
        capabilities: &CapabilitySet,
        policy: ClaimPolicy,
        max: usize,
    ) -> Result<Vec<Handle>, EngineError>;

    /// Claims like `claim_batch` and returns each lease with its execution's context (kind,
    /// input, tags) from the same round trip, so a worker can run its handler at once. With
    /// `max == 1`, concurrent callers may share one statement, as with `claim`.
    async fn claim_with_context(
        &self,
        lane: &LaneId,
        capabilities: &CapabilitySet,
        policy: ClaimPolicy,
        max: usize,
    ) -> Result<Vec<LeasedExecution>, EngineError>;

    /// Extends the handle's lease by its TTL.
    async fn renew(&self, handle: &Handle) -> Result<LeaseRenewal, EngineError>;

    /// Records progress (percent 0..=100 and/or a message).
    async fn progress(&self, handle: &Handle, percent: Option<u8>, message: Option<String>) -> Result<(), EngineError>;

    /// Marks the execution's lease expired if it is due: it becomes reclaimable, or fails when
    /// its reclaim cap is reached. A no-op when not due.
    async fn mark_lease_expired_if_due(
        &self,
        partition: Partition,
        execution_id: &ExecutionId,
    ) -> Result<(), EngineError>;

    /// Admits a worker to reclaim an execution whose lease expired or was revoked.
    async fn issue_reclaim_grant(&self, args: IssueReclaimGrantArgs) -> Result<IssueReclaimGrantOutcome, EngineError>;

    /// Consumes a reclaim grant: a new attempt takes over the execution.
    async fn reclaim_execution(&self, args: ReclaimExecutionArgs) -> Result<ReclaimExecutionOutcome, EngineError>;

    // ----- attempt ends ----------------------------------------------------------------------

    /// Completes the execution with an optional result payload.
    async fn complete(&self, handle: &Handle, payload: Option<Vec<u8>>) -> Result<(), EngineError>;

    /// Completes many executions in one round trip; one result per item, in order. Every item
    /// is fenced on its own: a stale item fails without affecting the others.
    async fn complete_batch(
        &self,
        items: Vec<(Handle, Option<Vec<u8>>)>,
    ) -> Result<Vec<Result<(), EngineError>>, EngineError>;

    /// Fails the current attempt. Retryable classes are retried per the stored retry policy.
    async fn fail(
        &self,
        handle: &Handle,
        reason: FailureReason,
        classification: FailureClass,
    ) -> Result<FailOutcome, EngineError>;

    /// Cancels the execution from inside (the lease holder).
    async fn cancel(&self, handle: &Handle, reason: &str) -> Result<(), EngineError>;

    /// Releases the lease and parks the execution until `delay_until`; the next claim resumes
    /// the same attempt.
    async fn delay(&self, handle: &Handle, delay_until: TimestampMs) -> Result<(), EngineError>;

    // ----- streams ---------------------------------------------------------------------------

    /// Appends a frame to the current attempt's stream (lease holder only).
    async fn append_frame(&self, handle: &Handle, frame: Frame) -> Result<AppendFrameOutcome, EngineError>;

    /// Reads frames `from..=to` of an attempt's stream, at most `count_limit` (<= 10 000).
    async fn read_stream(
        &self,
        execution_id: &ExecutionId,
        attempt_index: AttemptIndex,
        from: StreamCursor,
        to: StreamCursor,
        count_limit: u64,
    ) -> Result<StreamFrames, EngineError>;

    // ----- reads -----------------------------------------------------------------------------

    /// Snapshot; `Ok(None)` when absent.
    async fn describe_execution(&self, id: &ExecutionId) -> Result<Option<ExecutionSnapshot>, EngineError>;

    /// Full read; `Ok(None)` when absent.
    async fn read_execution_info(&self, id: &ExecutionId) -> Result<Option<ExecutionInfo>, EngineError>;

    /// Public state only; `Ok(None)` when absent.
    async fn read_execution_state(&self, id: &ExecutionId) -> Result<Option<PublicState>, EngineError>;

    /// Payload, kind and tags; `NotFound` when absent.
    async fn read_execution_context(&self, id: &ExecutionId) -> Result<ExecutionContext, EngineError>;

    /// Index of the current attempt; `NotFound` when absent.
    async fn read_current_attempt_index(&self, id: &ExecutionId) -> Result<AttemptIndex, EngineError>;

    /// Number of attempts ever started; `NotFound` when absent.
    async fn read_total_attempt_count(&self, id: &ExecutionId) -> Result<AttemptIndex, EngineError>;

    /// Result payload of a completed execution; `Ok(None)` when absent, not completed, or
    /// completed without a payload.
    async fn get_execution_result(&self, id: &ExecutionId) -> Result<Option<Vec<u8>>, EngineError>;

    /// Named fields of the execution row, as strings. Unknown names map to `None`. The partition
    /// must be the id's.
    async fn read_exec_core_fields(
        &self,
        partition: Partition,
        execution_id: &ExecutionId,
        fields: &[&str],
    ) -> Result<HashMap<String, Option<String>>, EngineError>;

    /// Namespace; `Ok(None)` when absent.
    async fn get_execution_namespace(&self, id: &ExecutionId) -> Result<Option<String>, EngineError>;

    // ----- tags ------------------------------------------------------------------------------

    /// Sets one tag; `NotFound` when the execution is absent.
    async fn set_execution_tag(&self, id: &ExecutionId, key: &str, value: &str) -> Result<(), EngineError>;

    /// Reads one tag; `Ok(None)` when the tag or the execution is absent.
    async fn get_execution_tag(&self, id: &ExecutionId, key: &str) -> Result<Option<String>, EngineError>;

    // ----- listings --------------------------------------------------------------------------

    /// Executions of one partition in id order, after `cursor`, at most `limit` (<= 1000).
    async fn list_executions(
        &self,
        partition: PartitionKey,
        cursor: Option<ExecutionId>,
        limit: usize,
    ) -> Result<ListExecutionsPage, EngineError>;

    /// Registered lanes in name order, after `cursor`, at most `limit` (<= 1000).
    async fn list_lanes(&self, cursor: Option<LaneId>, limit: usize) -> Result<ListLanesPage, EngineError>;

    // ----- reconciler hooks ------------------------------------------------------------------

    /// Makes a delayed execution eligible if its time has come (database time). No-op otherwise.
    async fn promote_delayed(
        &self,
        partition: Partition,
        lane: &LaneId,
        execution_id: &ExecutionId,
    ) -> Result<(), EngineError>;

    /// Expires an execution whose attempt timeout or deadline has passed (database time).
    /// No-op when not due.
    async fn expire_execution(
        &self,
        partition: Partition,
        execution_id: &ExecutionId,
        phase: ExpirePhase,
    ) -> Result<(), EngineError>;
}

/// Completion subscriptions over the event log.
#[async_trait]
pub trait CompletionBackend: Send + Sync + 'static {
    /// Every completion committed from now on.
    async fn subscribe_completions(&self) -> Result<CompletionStream, EngineError>;

    /// Completions matching `filter`, from now on.
    async fn subscribe_completions_filtered(&self, filter: &ScannerFilter) -> Result<CompletionStream, EngineError>;

    /// Completions matching `filter` after `cursor` (resumable; `EventCursor::BEGINNING` replays
    /// the whole retained log).
    async fn subscribe_completions_from(
        &self,
        cursor: EventCursor,
        filter: &ScannerFilter,
    ) -> Result<CompletionStream, EngineError>;
}
