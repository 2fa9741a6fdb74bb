//! Suspension from the [`Client`]: signal a waitpoint (with its token, so a client without the
//! API token can, or as a trusted caller), approve and reject as an operator, list open
//! waitpoints and suspended executions, read a waitpoint's token, resume, rotate the signing
//! keys; and the lease holder's calls the worker runtime's HTTP transport makes (suspend, mint
//! a pending waitpoint, read the signals that woke it). Each method takes the same arguments as
//! the `SuspensionBackend` method it mirrors and returns the same result.

use std::time::Duration;

use ff_core::wire::{
    ApprovalRequest, CreateWaitpointRequest, DeliverSignalRequest, HandleRequest, ObservedSignal, ResumeRequest,
    SuspendRequest, WaitpointTokenResponse,
};
use ff_core::{
    AttemptIndex, DeliverApprovalSignalArgs, DeliverSignalArgs, DeliverSignalResult, ExecutionId,
    ListPendingWaitpointsArgs, ListPendingWaitpointsResult, ListSuspendedPage, PendingWaitpoint, ResumeExecutionArgs,
    ResumeExecutionResult, ResumeSignal, RotateWaitpointHmacSecretAllArgs, RotateWaitpointHmacSecretAllResult,
    SuspendArgs, SuspendOutcome, WaitpointId,
};
use reqwest::Method;

use super::{Client, enc};
use crate::error::SdkError;

impl Client {
    /// Delivers a signal to a waitpoint. With `args.waitpoint_token` the server admits the call
    /// without the API token (an approver's or a webhook's client); a client with the API
    /// token may leave it out. `Duplicate` when its idempotency key was seen.
    pub async fn signal(&self, args: &DeliverSignalArgs) -> Result<DeliverSignalResult, SdkError> {
        let path = waitpoint_path(&args.execution_id, &args.waitpoint_id, "signals");
        self.post(&path, &DeliverSignalRequest::from_args(args)).await
    }

    /// Delivers an operator's decision (`approved` or `rejected`) without the waitpoint's token.
    pub async fn deliver_approval_signal(
        &self,
        args: &DeliverApprovalSignalArgs,
    ) -> Result<DeliverSignalResult, SdkError> {
        let op = if args.signal_name == "approved" { "approve" } else { "reject" };
        let path = waitpoint_path(&args.execution_id, &args.waitpoint_id, op);
        self.post(&path, &ApprovalRequest::from_args(args)).await
    }

    /// Approves through a waitpoint as the operator `operator` (a signal named `approved`; the
    /// server checks the execution's own lane). A second decision on the same waitpoint is a
    /// `Duplicate`.
    pub async fn approve(
        &self,
        execution_id: &ExecutionId,
        waitpoint_id: &WaitpointId,
    ) -> Result<DeliverSignalResult, SdkError> {
        self.post(&waitpoint_path(execution_id, waitpoint_id, "approve"), &ApprovalRequest::default()).await
    }

    /// Rejects through a waitpoint as the operator `operator` (a signal named `rejected`).
    pub async fn reject(
        &self,
        execution_id: &ExecutionId,
        waitpoint_id: &WaitpointId,
    ) -> Result<DeliverSignalResult, SdkError> {
        self.post(&waitpoint_path(execution_id, waitpoint_id, "reject"), &ApprovalRequest::default()).await
    }

    /// One page of an execution's open (pending or active) waitpoints; tokens are never listed.
    pub async fn list_pending_waitpoints(
        &self,
        args: &ListPendingWaitpointsArgs,
    ) -> Result<ListPendingWaitpointsResult, SdkError> {
        let mut query = Vec::new();
        if let Some(after) = &args.after {
            query.push(format!("after={after}"));
        }
        if let Some(limit) = args.limit {
            query.push(format!("limit={limit}"));
        }
        let mut path = format!("/v1/executions/{}/waitpoints", enc(&args.execution_id.to_string()));
        if !query.is_empty() {
            path = format!("{path}?{}", query.join("&"));
        }
        Self::json(self.request(Method::GET, &path)).await
    }

    /// The token of an open waitpoint (needs the API token); `None` when it is closed or absent.
    pub async fn read_waitpoint_token(
        &self,
        execution_id: &ExecutionId,
        waitpoint_id: &WaitpointId,
    ) -> Result<Option<String>, SdkError> {
        let read: Option<WaitpointTokenResponse> =
            self.get_optional(&waitpoint_path(execution_id, waitpoint_id, "token")).await?;
        Ok(read.map(|r| r.waitpoint_token))
    }

    /// One page of suspended executions of one partition (all when `None`), by suspension time
    /// then id.
    pub async fn list_suspended(
        &self,
        partition: Option<u16>,
        cursor: Option<&ExecutionId>,
        limit: usize,
    ) -> Result<ListSuspendedPage, SdkError> {
        let mut path = format!("/v1/suspended?limit={limit}");
        if let Some(p) = partition {
            path.push_str(&format!("&partition={p}"));
        }
        if let Some(c) = cursor {
            path.push_str(&format!("&cursor={}", enc(&c.to_string())));
        }
        Self::json(self.request(Method::GET, &path)).await
    }

    /// Resumes a suspended execution whatever its condition.
    pub async fn resume_execution(&self, args: &ResumeExecutionArgs) -> Result<ResumeExecutionResult, SdkError> {
        let body = ResumeRequest {
            trigger_type: Some(args.trigger_type.clone()),
            resume_delay_ms: Some(args.resume_delay_ms),
        };
        self.post(&format!("/v1/executions/{}/resume", enc(&args.execution_id.to_string())), &body).await
    }

    /// Makes a new waitpoint signing key current; the replaced keys verify for `grace_ms` more.
    pub async fn rotate_waitpoint_hmac_secret_all(
        &self,
        args: &RotateWaitpointHmacSecretAllArgs,
    ) -> Result<RotateWaitpointHmacSecretAllResult, SdkError> {
        self.post("/v1/admin/waitpoint-keys/rotate", args).await
    }

    // ----- lease-holder calls ----------------------------------------------------------------

    /// Suspends the attempt holding `handle` (see `SuspensionBackend::suspend`).
    pub async fn suspend(
        &self,
        id: &ExecutionId,
        attempt: AttemptIndex,
        handle: &str,
        args: &SuspendArgs,
    ) -> Result<SuspendOutcome, SdkError> {
        let body = SuspendRequest { handle: handle.into(), suspension: args.clone() };
        self.post(&attempt_path(id, attempt, "suspend"), &body).await
    }

    /// Mints a pending waitpoint while holding the lease, to hand its token out before
    /// suspending.
    pub async fn create_waitpoint(
        &self,
        id: &ExecutionId,
        attempt: AttemptIndex,
        handle: &str,
        waitpoint_key: &str,
        expires_in: Duration,
    ) -> Result<PendingWaitpoint, SdkError> {
        let body = CreateWaitpointRequest {
            handle: handle.into(),
            waitpoint_key: waitpoint_key.into(),
            expires_in_ms: u64::try_from(expires_in.as_millis()).unwrap_or(u64::MAX),
        };
        self.post(&attempt_path(id, attempt, "waitpoints"), &body).await
    }

    /// The signals of the attempt's latest suspension (before it suspends: those buffered on
    /// its pending waitpoints), in delivery order.
    pub async fn observe_signals(
        &self,
        id: &ExecutionId,
        attempt: AttemptIndex,
        handle: &str,
    ) -> Result<Vec<ResumeSignal>, SdkError> {
        let seen: Vec<ObservedSignal> =
            self.post(&attempt_path(id, attempt, "signals"), &HandleRequest { handle: handle.into() }).await?;
        seen.into_iter().map(|s| s.into_signal().map_err(SdkError::from)).collect()
    }
}

fn waitpoint_path(id: &ExecutionId, waitpoint: &WaitpointId, op: &str) -> String {
    format!("/v1/executions/{}/waitpoints/{waitpoint}/{op}", enc(&id.to_string()))
}

fn attempt_path(id: &ExecutionId, attempt: AttemptIndex, op: &str) -> String {
    format!("/v1/executions/{}/attempts/{}/{op}", enc(&id.to_string()), attempt.0)
}
