//! [`TaskContext`]: what a handler sees of the execution it runs (ids, kind, lane, tags, the
//! worker's shared state), the lease-holder calls it may make (progress, frames, summaries), and
//! the renewals that keep its lease while it runs. Signals and budgets add their calls in
//! `suspension.rs` and `budget.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ff_core::{
    AppendFrameOutcome, AttemptIndex, EngineError, ExecutionId, Frame, FrameKind, Handle, HandleKind, LaneId,
    StreamMode,
};

use crate::error::SdkError;
use crate::transport::{ClaimedTask, WorkerTransport};

/// What a handler sees: the execution, shared state, and lease-holder calls.
pub struct TaskContext<S> {
    pub(super) inner: Arc<TaskShared<S>>,
}

impl<S> Clone for TaskContext<S> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

/// One running task's execution, transport and lease health, shared by its handler and its
/// renewals.
pub(super) struct TaskShared<S> {
    pub(super) task: ClaimedTask,
    pub(super) transport: Arc<dyn WorkerTransport>,
    pub(super) state: Arc<S>,
    pub(super) worker_instance_id: String,
    pub(super) healthy: AtomicBool,
}

impl<S> TaskContext<S> {
    /// Execution.
    pub fn execution_id(&self) -> ExecutionId {
        self.inner.task.execution_id
    }

    /// Attempt index (0 on the first try).
    pub fn attempt_index(&self) -> AttemptIndex {
        self.inner.task.attempt_index
    }

    /// Fresh attempt, resumed attempt, or reclaim of a lost lease.
    pub fn claim_kind(&self) -> HandleKind {
        self.inner.task.claim_kind
    }

    /// Execution kind.
    pub fn execution_kind(&self) -> &str {
        &self.inner.task.execution_kind
    }

    /// Lane.
    pub fn lane(&self) -> &LaneId {
        &self.inner.task.lane_id
    }

    /// Tags.
    pub fn tags(&self) -> &std::collections::BTreeMap<String, String> {
        &self.inner.task.tags
    }

    /// The worker process running this task.
    pub fn worker_instance_id(&self) -> &str {
        &self.inner.worker_instance_id
    }

    /// Shared state given to the worker.
    pub fn state(&self) -> &S {
        &self.inner.state
    }

    /// The lease handle (for calls the context does not wrap).
    pub fn handle(&self) -> &Handle {
        &self.inner.task.handle
    }

    /// False once renewals fail repeatedly or find the lease gone: check before irreversible
    /// side effects.
    pub fn lease_healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Relaxed)
    }

    /// Reports progress (0..=100) and/or a message.
    pub async fn progress(&self, percent: Option<u8>, message: Option<&str>) -> Result<(), SdkError> {
        self.inner.transport.progress(&self.inner.task, percent, message.map(str::to_owned)).await
    }

    /// Appends a UTF-8 frame of `frame_type` on the `event` channel.
    pub async fn append_frame(&self, frame_type: &str, text: &str) -> Result<AppendFrameOutcome, SdkError> {
        self.append_frame_bytes(FrameKind::Event, frame_type, text.as_bytes().to_vec()).await
    }

    /// Appends a frame with explicit channel and bytes.
    pub async fn append_frame_bytes(
        &self,
        kind: FrameKind,
        frame_type: &str,
        bytes: Vec<u8>,
    ) -> Result<AppendFrameOutcome, SdkError> {
        self.append(Frame {
            bytes,
            kind,
            frame_type: frame_type.to_owned(),
            correlation_id: None,
            mode: StreamMode::Durable,
        })
        .await
    }

    /// Merges `patch` (a JSON object, RFC 7396; `null` deletes a key) into this attempt's
    /// summary document, keeping the patch as a durable frame of `frame_type`.
    pub async fn update_summary(
        &self,
        frame_type: &str,
        patch: &serde_json::Value,
    ) -> Result<AppendFrameOutcome, SdkError> {
        let bytes = serde_json::to_vec(patch).map_err(|e| SdkError::from(EngineError::invalid(e.to_string())))?;
        self.append(Frame {
            bytes,
            kind: FrameKind::Event,
            frame_type: frame_type.to_owned(),
            correlation_id: None,
            mode: StreamMode::durable_summary(),
        })
        .await
    }

    /// Appends a best-effort live frame: watchers see it, but the stream keeps only about the
    /// frames of the last `ttl` (never trimming durable frames).
    pub async fn append_live_frame(
        &self,
        frame_type: &str,
        text: &str,
        ttl: std::time::Duration,
    ) -> Result<AppendFrameOutcome, SdkError> {
        self.append(Frame {
            bytes: text.as_bytes().to_vec(),
            kind: FrameKind::Event,
            frame_type: frame_type.to_owned(),
            correlation_id: None,
            mode: StreamMode::best_effort_live(ttl.as_millis().clamp(1, 86_400_000) as u64),
        })
        .await
    }

    /// Appends any frame.
    pub async fn append(&self, frame: Frame) -> Result<AppendFrameOutcome, SdkError> {
        self.inner.transport.append_frame(&self.inner.task, frame).await
    }
}

/// Renews every third of the TTL; never returns (a lost lease just stops the renewals).
pub(super) async fn renew_loop<S>(ctx: TaskContext<S>) {
    let period = Duration::from_millis(ctx.inner.task.lease_ttl_ms / 3).max(Duration::from_millis(10));
    let mut failures = 0u32;
    loop {
        tokio::time::sleep(period).await;
        match ctx.inner.transport.renew(&ctx.inner.task).await {
            Ok(_) => {
                failures = 0;
                ctx.inner.healthy.store(true, Ordering::Relaxed);
            }
            Err(e) if e.is_lease_lost() => {
                ctx.inner.healthy.store(false, Ordering::Relaxed);
                tracing::warn!(execution = %ctx.execution_id(), code = ?e.code(), "lease lost; renewals stop");
                break;
            }
            Err(e) => {
                failures += 1;
                if failures >= 3 {
                    ctx.inner.healthy.store(false, Ordering::Relaxed);
                }
                tracing::debug!(error = %e, failures, "renewal failed");
            }
        }
    }
    std::future::pending::<()>().await;
}
