//! Attempt ends: the lease holder completes, fails (retried per the stored policy), cancels,
//! or parks the execution until a time.

use async_trait::async_trait;

use crate::error::EngineError;
use crate::execution::{
    CompleteExecutionArgs, CompleteExecutionResult, FailExecutionArgs, FailExecutionResult, FailOutcome, FailureClass,
    FailureReason,
};
use crate::handle::Handle;
use crate::id::TimestampMs;

/// Ending or parking the current attempt, as the lease holder.
#[async_trait]
pub trait AttemptEndBackend: Send + Sync {
    /// Completes the execution with an optional result payload.
    async fn complete(&self, handle: &Handle, payload: Option<Vec<u8>>) -> Result<(), EngineError>;

    /// Completes many executions in one round trip; one result per item, in order. Every item
    /// is fenced on its own: a stale item fails without affecting the others.
    async fn complete_batch(
        &self,
        items: Vec<(Handle, Option<Vec<u8>>)>,
    ) -> Result<Vec<Result<(), EngineError>>, EngineError>;

    /// Completes by the fence triple instead of a handle (for service layers). With source
    /// `operator_override` and no fence it completes whatever live lease the execution holds.
    async fn complete_execution(&self, args: CompleteExecutionArgs) -> Result<CompleteExecutionResult, EngineError>;

    /// Fails by the fence triple instead of a handle (for service layers), retried per the
    /// stored policy like `fail`. With source `operator_override` and no fence it fails
    /// whatever live lease the execution holds.
    async fn fail_execution(&self, args: FailExecutionArgs) -> Result<FailExecutionResult, EngineError>;

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
}
