//! How a worker reaches the engine. [`WorkerTransport`] is the small set of calls the runtime
//! makes; [`HttpTransport`] speaks to an `ff-server`, [`DirectTransport`] calls an
//! [`EngineBackend`] in-process. Handler code is the same over both.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ff_core::wire::{
    AppendFrameRequest, CancelRequest, ClaimRequest, ClaimResponse, ClaimedExecution, CompleteAndClaimRequest,
    CompleteRequest, DelayRequest, FailRequest, ProgressRequest, decode_bytes, encode_bytes, handle_token,
    parse_handle_token,
};
use ff_core::{
    AppendFrameOutcome, AttemptIndex, BudgetId, CapabilitySet, ClaimPolicy, EngineBackend, EngineError, ExecutionId,
    FailOutcome, FailureClass, FailureReason, Frame, Handle, HandleKind, HandlePayload, HeartbeatWorkerArgs,
    HeartbeatWorkerOutcome, LaneId, LeaseRenewal, LeasedExecution, MarkWorkerDeadArgs, MarkWorkerDeadOutcome,
    PendingWaitpoint, RegisterWorkerArgs, RegisterWorkerOutcome, ReportUsageResult, ResumeSignal, SuspendArgs,
    SuspendOutcome, TimestampMs, TraceContext, UsageDimensions, WorkerId,
};

use crate::client::Client;
use crate::error::SdkError;

/// One leased execution and what its handler needs.
#[derive(Clone, Debug)]
pub struct ClaimedTask {
    /// The lease handle.
    pub handle: Handle,
    /// Execution.
    pub execution_id: ExecutionId,
    /// Attempt this lease belongs to.
    pub attempt_index: AttemptIndex,
    /// Fresh, resumed or reclaimed.
    pub claim_kind: HandleKind,
    /// Lane.
    pub lane_id: LaneId,
    /// Lease TTL.
    pub lease_ttl_ms: u64,
    /// Handler routing key.
    pub execution_kind: String,
    /// Input payload.
    pub input: Vec<u8>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// The submitter's trace context: the handler's span is its child.
    pub trace_context: Option<TraceContext>,
}

impl ClaimedTask {
    /// A task from a lease the backend has just minted in this process; the lease details are
    /// read from the handle.
    pub fn from_leased(leased: LeasedExecution) -> Result<Self, EngineError> {
        let LeasedExecution { handle, context } = leased;
        let p = HandlePayload::from_handle(&handle, handle.backend)?;
        Ok(Self {
            execution_id: p.execution_id,
            attempt_index: p.attempt_index,
            claim_kind: handle.kind,
            lane_id: p.lane_id,
            lease_ttl_ms: p.lease_ttl_ms,
            execution_kind: context.execution_kind,
            input: context.input_payload,
            tags: context.tags,
            trace_context: context.trace_context,
            handle,
        })
    }
}

/// A task from a claim answered over HTTP: the lease details are the ones the server sent; the
/// handle token is only parsed back into the handle it encodes.
impl TryFrom<ClaimedExecution> for ClaimedTask {
    type Error = EngineError;

    fn try_from(c: ClaimedExecution) -> Result<Self, EngineError> {
        Ok(Self {
            handle: parse_handle_token(&c.handle)?,
            execution_id: c.execution_id,
            attempt_index: c.attempt_index,
            claim_kind: c.claim_kind,
            lane_id: c.lane_id,
            lease_ttl_ms: c.lease_ttl_ms,
            execution_kind: c.execution_kind,
            input: decode_bytes("input_base64", &c.input_base64)?,
            tags: c.tags,
            trace_context: c.trace_context,
        })
    }
}

/// What a claim asks for.
#[derive(Clone, Debug)]
pub struct ClaimArgs {
    /// Worker pool.
    pub worker_id: String,
    /// Worker process.
    pub worker_instance_id: String,
    /// Lane.
    pub lane: LaneId,
    /// Capabilities offered.
    pub capabilities: Vec<String>,
    /// Lease TTL.
    pub lease_ttl_ms: u64,
    /// At most this many.
    pub max: usize,
    /// Long-poll for up to this long (zero = answer at once).
    pub max_wait: Duration,
}

/// The calls a worker makes: its registration in the worker registry, claims, and lease-holder
/// calls (usage reports to budgets among them), which take the claimed task (it carries the
/// handle and the execution it names).
#[async_trait]
pub trait WorkerTransport: Send + Sync + 'static {
    /// Registers this worker instance, or refreshes its live registration.
    async fn register(&self, args: &RegisterWorkerArgs) -> Result<RegisterWorkerOutcome, SdkError>;
    /// Extends the registration of an instance of `worker_id`; `NotRegistered` when it lapsed,
    /// was marked dead, or was never made.
    async fn heartbeat(
        &self,
        worker_id: &WorkerId,
        args: &HeartbeatWorkerArgs,
    ) -> Result<HeartbeatWorkerOutcome, SdkError>;
    /// Leaves the registry (marks the instance dead), revoking any lease it still holds.
    async fn deregister(
        &self,
        worker_id: &WorkerId,
        args: &MarkWorkerDeadArgs,
    ) -> Result<MarkWorkerDeadOutcome, SdkError>;
    /// Leases up to `args.max` executions.
    async fn claim(&self, args: &ClaimArgs) -> Result<Vec<ClaimedTask>, SdkError>;
    /// Extends a lease.
    async fn renew(&self, task: &ClaimedTask) -> Result<LeaseRenewal, SdkError>;
    /// Reports progress.
    async fn progress(&self, task: &ClaimedTask, percent: Option<u8>, message: Option<String>) -> Result<(), SdkError>;
    /// Appends a frame.
    async fn append_frame(&self, task: &ClaimedTask, frame: Frame) -> Result<AppendFrameOutcome, SdkError>;
    /// Completes.
    async fn complete(&self, task: &ClaimedTask, result: Option<Vec<u8>>) -> Result<(), SdkError>;
    /// Completes, then leases up to `next.max` more executions. Over HTTP this is one round
    /// trip; elsewhere it is the two calls. A refused completion claims nothing.
    async fn complete_and_claim(
        &self,
        task: &ClaimedTask,
        result: Option<Vec<u8>>,
        next: &ClaimArgs,
    ) -> Result<Vec<ClaimedTask>, SdkError> {
        self.complete(task, result).await?;
        self.claim(next).await
    }
    /// Fails the attempt.
    async fn fail(
        &self,
        task: &ClaimedTask,
        reason: FailureReason,
        class: FailureClass,
    ) -> Result<FailOutcome, SdkError>;
    /// Cancels as the lease holder.
    async fn cancel(&self, task: &ClaimedTask, reason: &str) -> Result<(), SdkError>;
    /// Releases the lease and parks the execution until `until` (same attempt resumes).
    async fn delay(&self, task: &ClaimedTask, until: TimestampMs) -> Result<(), SdkError>;
    /// Releases the lease until the execution's children (the upstreams of its edge group)
    /// end (same attempt resumes).
    async fn wait_children(&self, task: &ClaimedTask) -> Result<(), SdkError>;
    /// Suspends on waitpoints (same attempt resumes once the condition is met); the lease is
    /// released unless the outcome is `AlreadySatisfied`.
    async fn suspend(&self, task: &ClaimedTask, args: SuspendArgs) -> Result<SuspendOutcome, SdkError>;
    /// Mints a pending waitpoint, to hand its token out before suspending.
    async fn create_waitpoint(
        &self,
        task: &ClaimedTask,
        waitpoint_key: &str,
        expires_in: Duration,
    ) -> Result<PendingWaitpoint, SdkError>;
    /// The signals of the attempt's latest suspension (before it suspends: those buffered on
    /// its pending waitpoints), in delivery order.
    async fn observe_signals(&self, task: &ClaimedTask) -> Result<Vec<ResumeSignal>, SdkError>;
    /// Reports usage charged to `budget` (one the execution draws on), all of its deltas or
    /// none; a report that would pass a hard limit is a `HardBreach` and applies nothing.
    async fn report_usage(
        &self,
        task: &ClaimedTask,
        budget: &BudgetId,
        usage: UsageDimensions,
    ) -> Result<ReportUsageResult, SdkError>;
}

/// A shared transport is a transport.
#[async_trait]
impl<T: WorkerTransport + ?Sized> WorkerTransport for Arc<T> {
    async fn register(&self, args: &RegisterWorkerArgs) -> Result<RegisterWorkerOutcome, SdkError> {
        (**self).register(args).await
    }
    async fn heartbeat(
        &self,
        worker_id: &WorkerId,
        args: &HeartbeatWorkerArgs,
    ) -> Result<HeartbeatWorkerOutcome, SdkError> {
        (**self).heartbeat(worker_id, args).await
    }
    async fn deregister(
        &self,
        worker_id: &WorkerId,
        args: &MarkWorkerDeadArgs,
    ) -> Result<MarkWorkerDeadOutcome, SdkError> {
        (**self).deregister(worker_id, args).await
    }
    async fn claim(&self, args: &ClaimArgs) -> Result<Vec<ClaimedTask>, SdkError> {
        (**self).claim(args).await
    }
    async fn renew(&self, task: &ClaimedTask) -> Result<LeaseRenewal, SdkError> {
        (**self).renew(task).await
    }
    async fn progress(&self, task: &ClaimedTask, percent: Option<u8>, message: Option<String>) -> Result<(), SdkError> {
        (**self).progress(task, percent, message).await
    }
    async fn append_frame(&self, task: &ClaimedTask, frame: Frame) -> Result<AppendFrameOutcome, SdkError> {
        (**self).append_frame(task, frame).await
    }
    async fn complete(&self, task: &ClaimedTask, result: Option<Vec<u8>>) -> Result<(), SdkError> {
        (**self).complete(task, result).await
    }
    async fn complete_and_claim(
        &self,
        task: &ClaimedTask,
        result: Option<Vec<u8>>,
        next: &ClaimArgs,
    ) -> Result<Vec<ClaimedTask>, SdkError> {
        (**self).complete_and_claim(task, result, next).await
    }
    async fn fail(
        &self,
        task: &ClaimedTask,
        reason: FailureReason,
        class: FailureClass,
    ) -> Result<FailOutcome, SdkError> {
        (**self).fail(task, reason, class).await
    }
    async fn cancel(&self, task: &ClaimedTask, reason: &str) -> Result<(), SdkError> {
        (**self).cancel(task, reason).await
    }
    async fn delay(&self, task: &ClaimedTask, until: TimestampMs) -> Result<(), SdkError> {
        (**self).delay(task, until).await
    }
    async fn wait_children(&self, task: &ClaimedTask) -> Result<(), SdkError> {
        (**self).wait_children(task).await
    }
    async fn suspend(&self, task: &ClaimedTask, args: SuspendArgs) -> Result<SuspendOutcome, SdkError> {
        (**self).suspend(task, args).await
    }
    async fn create_waitpoint(
        &self,
        task: &ClaimedTask,
        waitpoint_key: &str,
        expires_in: Duration,
    ) -> Result<PendingWaitpoint, SdkError> {
        (**self).create_waitpoint(task, waitpoint_key, expires_in).await
    }
    async fn observe_signals(&self, task: &ClaimedTask) -> Result<Vec<ResumeSignal>, SdkError> {
        (**self).observe_signals(task).await
    }
    async fn report_usage(
        &self,
        task: &ClaimedTask,
        budget: &BudgetId,
        usage: UsageDimensions,
    ) -> Result<ReportUsageResult, SdkError> {
        (**self).report_usage(task, budget, usage).await
    }
}

/// Over HTTP, through an `ff-server`.
#[derive(Clone, Debug)]
pub struct HttpTransport {
    client: Client,
}

impl HttpTransport {
    /// A transport over `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl WorkerTransport for HttpTransport {
    async fn register(&self, args: &RegisterWorkerArgs) -> Result<RegisterWorkerOutcome, SdkError> {
        self.client.register_worker(args).await
    }

    async fn heartbeat(
        &self,
        worker_id: &WorkerId,
        args: &HeartbeatWorkerArgs,
    ) -> Result<HeartbeatWorkerOutcome, SdkError> {
        self.client.heartbeat_worker(worker_id, args).await
    }

    async fn deregister(
        &self,
        worker_id: &WorkerId,
        args: &MarkWorkerDeadArgs,
    ) -> Result<MarkWorkerDeadOutcome, SdkError> {
        self.client.mark_worker_dead(worker_id, args).await
    }

    async fn claim(&self, args: &ClaimArgs) -> Result<Vec<ClaimedTask>, SdkError> {
        let resp = self.client.claim(&args.worker_id, &claim_request(args)).await?;
        claimed_tasks(resp)
    }

    async fn renew(&self, task: &ClaimedTask) -> Result<LeaseRenewal, SdkError> {
        self.client.renew(&task.execution_id, &handle_token(&task.handle)).await
    }

    async fn progress(&self, task: &ClaimedTask, percent: Option<u8>, message: Option<String>) -> Result<(), SdkError> {
        let req = ProgressRequest { handle: handle_token(&task.handle), percent, message };
        self.client.progress(&task.execution_id, &req).await
    }

    async fn append_frame(&self, task: &ClaimedTask, frame: Frame) -> Result<AppendFrameOutcome, SdkError> {
        let req = AppendFrameRequest {
            handle: handle_token(&task.handle),
            frame_type: frame.frame_type,
            kind: Some(frame.kind),
            text: None,
            bytes_base64: Some(encode_bytes(&frame.bytes)),
            correlation_id: frame.correlation_id,
            mode: Some(frame.mode),
        };
        self.client.append_frame(&task.execution_id, &req).await
    }

    async fn complete(&self, task: &ClaimedTask, result: Option<Vec<u8>>) -> Result<(), SdkError> {
        let req =
            CompleteRequest { handle: handle_token(&task.handle), result_base64: result.map(|r| encode_bytes(&r)) };
        self.client.complete(&task.execution_id, &req).await
    }

    async fn complete_and_claim(
        &self,
        task: &ClaimedTask,
        result: Option<Vec<u8>>,
        next: &ClaimArgs,
    ) -> Result<Vec<ClaimedTask>, SdkError> {
        let req = CompleteAndClaimRequest {
            complete: CompleteRequest {
                handle: handle_token(&task.handle),
                result_base64: result.map(|r| encode_bytes(&r)),
            },
            claim: claim_request(next),
        };
        claimed_tasks(self.client.complete_and_claim(&next.worker_id, &req).await?)
    }

    async fn fail(
        &self,
        task: &ClaimedTask,
        reason: FailureReason,
        class: FailureClass,
    ) -> Result<FailOutcome, SdkError> {
        let req = FailRequest {
            handle: handle_token(&task.handle),
            message: reason.message,
            detail: reason.detail,
            classification: class,
        };
        self.client.fail(&task.execution_id, &req).await
    }

    async fn cancel(&self, task: &ClaimedTask, reason: &str) -> Result<(), SdkError> {
        let req = CancelRequest { handle: handle_token(&task.handle), reason: reason.into() };
        self.client.cancel(&task.execution_id, &req).await
    }

    async fn delay(&self, task: &ClaimedTask, until: TimestampMs) -> Result<(), SdkError> {
        let req = DelayRequest { handle: handle_token(&task.handle), delay_until: until };
        self.client.delay(&task.execution_id, &req).await
    }

    async fn wait_children(&self, task: &ClaimedTask) -> Result<(), SdkError> {
        self.client.wait_children(&task.execution_id, task.attempt_index, &handle_token(&task.handle)).await
    }

    async fn suspend(&self, task: &ClaimedTask, args: SuspendArgs) -> Result<SuspendOutcome, SdkError> {
        self.client.suspend(&task.execution_id, task.attempt_index, &handle_token(&task.handle), &args).await
    }

    async fn create_waitpoint(
        &self,
        task: &ClaimedTask,
        waitpoint_key: &str,
        expires_in: Duration,
    ) -> Result<PendingWaitpoint, SdkError> {
        let handle = handle_token(&task.handle);
        self.client.create_waitpoint(&task.execution_id, task.attempt_index, &handle, waitpoint_key, expires_in).await
    }

    async fn observe_signals(&self, task: &ClaimedTask) -> Result<Vec<ResumeSignal>, SdkError> {
        self.client.observe_signals(&task.execution_id, task.attempt_index, &handle_token(&task.handle)).await
    }

    async fn report_usage(
        &self,
        task: &ClaimedTask,
        budget: &BudgetId,
        usage: UsageDimensions,
    ) -> Result<ReportUsageResult, SdkError> {
        let handle = handle_token(&task.handle);
        self.client.report_usage(&task.execution_id, task.attempt_index, &handle, budget, &usage).await
    }
}

/// In-process, straight to a backend.
#[derive(Clone)]
pub struct DirectTransport {
    backend: Arc<dyn EngineBackend>,
}

impl DirectTransport {
    /// A transport over `backend`.
    pub fn new(backend: Arc<dyn EngineBackend>) -> Self {
        Self { backend }
    }
}

#[async_trait]
impl WorkerTransport for DirectTransport {
    async fn register(&self, args: &RegisterWorkerArgs) -> Result<RegisterWorkerOutcome, SdkError> {
        Ok(self.backend.register_worker(args.clone()).await?)
    }

    /// The backend keys a registration on its instance id, which is unique across the registry.
    async fn heartbeat(
        &self,
        _worker_id: &WorkerId,
        args: &HeartbeatWorkerArgs,
    ) -> Result<HeartbeatWorkerOutcome, SdkError> {
        Ok(self.backend.heartbeat_worker(args.clone()).await?)
    }

    async fn deregister(
        &self,
        _worker_id: &WorkerId,
        args: &MarkWorkerDeadArgs,
    ) -> Result<MarkWorkerDeadOutcome, SdkError> {
        Ok(self.backend.mark_worker_dead(args.clone()).await?)
    }

    async fn claim(&self, args: &ClaimArgs) -> Result<Vec<ClaimedTask>, SdkError> {
        let caps = CapabilitySet::try_from_iter(args.capabilities.iter().cloned())?;
        let mut policy = ClaimPolicy::new(&args.worker_id, &args.worker_instance_id, args.lease_ttl_ms);
        policy.max_wait = (!args.max_wait.is_zero()).then_some(args.max_wait);
        let leased = self.backend.claim_with_context(&args.lane, &caps, policy, args.max).await?;
        leased.into_iter().map(ClaimedTask::from_leased).collect::<Result<_, EngineError>>().map_err(SdkError::from)
    }

    async fn renew(&self, task: &ClaimedTask) -> Result<LeaseRenewal, SdkError> {
        Ok(self.backend.renew(&task.handle).await?)
    }

    async fn progress(&self, task: &ClaimedTask, percent: Option<u8>, message: Option<String>) -> Result<(), SdkError> {
        Ok(self.backend.progress(&task.handle, percent, message).await?)
    }

    async fn append_frame(&self, task: &ClaimedTask, frame: Frame) -> Result<AppendFrameOutcome, SdkError> {
        Ok(self.backend.append_frame(&task.handle, frame).await?)
    }

    async fn complete(&self, task: &ClaimedTask, result: Option<Vec<u8>>) -> Result<(), SdkError> {
        Ok(self.backend.complete(&task.handle, result).await?)
    }

    async fn fail(
        &self,
        task: &ClaimedTask,
        reason: FailureReason,
        class: FailureClass,
    ) -> Result<FailOutcome, SdkError> {
        Ok(self.backend.fail(&task.handle, reason, class).await?)
    }

    async fn cancel(&self, task: &ClaimedTask, reason: &str) -> Result<(), SdkError> {
        Ok(self.backend.cancel(&task.handle, reason).await?)
    }

    async fn delay(&self, task: &ClaimedTask, until: TimestampMs) -> Result<(), SdkError> {
        Ok(self.backend.delay(&task.handle, until).await?)
    }

    async fn wait_children(&self, task: &ClaimedTask) -> Result<(), SdkError> {
        Ok(self.backend.wait_children(&task.handle).await?)
    }

    async fn suspend(&self, task: &ClaimedTask, args: SuspendArgs) -> Result<SuspendOutcome, SdkError> {
        Ok(self.backend.suspend(&task.handle, args).await?)
    }

    async fn create_waitpoint(
        &self,
        task: &ClaimedTask,
        waitpoint_key: &str,
        expires_in: Duration,
    ) -> Result<PendingWaitpoint, SdkError> {
        Ok(self.backend.create_waitpoint(&task.handle, waitpoint_key, expires_in).await?)
    }

    async fn observe_signals(&self, task: &ClaimedTask) -> Result<Vec<ResumeSignal>, SdkError> {
        Ok(self.backend.observe_signals(&task.handle).await?)
    }

    async fn report_usage(
        &self,
        task: &ClaimedTask,
        budget: &BudgetId,
        usage: UsageDimensions,
    ) -> Result<ReportUsageResult, SdkError> {
        Ok(self.backend.report_usage(&task.handle, budget, usage).await?)
    }
}

/// The wire form of a claim.
fn claim_request(args: &ClaimArgs) -> ClaimRequest {
    ClaimRequest {
        lane_id: args.lane.as_str().to_owned(),
        worker_instance_id: args.worker_instance_id.clone(),
        capabilities: args.capabilities.clone(),
        lease_ttl_ms: args.lease_ttl_ms,
        max: args.max,
        max_wait_ms: u64::try_from(args.max_wait.as_millis()).unwrap_or(u64::MAX),
    }
}

/// The tasks of a claim's answer.
fn claimed_tasks(resp: ClaimResponse) -> Result<Vec<ClaimedTask>, SdkError> {
    resp.claimed.into_iter().map(ClaimedTask::try_from).collect::<Result<_, EngineError>>().map_err(SdkError::from)
}
