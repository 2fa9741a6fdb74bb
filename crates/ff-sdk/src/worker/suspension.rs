//! Suspension from a handler. A handler that must wait for the outside world (a person's
//! approval, a webhook) mints a waitpoint, hands its token out, and returns
//! [`HandlerError::suspend_on`]: the runtime suspends the execution and releases its lease. A
//! signal delivered with the token (`Client::signal`, or an operator's `Client::approve`)
//! resumes it: the same attempt is claimed again and the handler runs again from the start,
//! where [`TaskContext::signals`] returns the signals that woke it.
//!
//! ```no_run
//! # use std::time::Duration;
//! # use ff_sdk::{HandlerError, TaskContext};
//! async fn review(ctx: TaskContext<()>, doc: String) -> Result<String, HandlerError> {
//!     if let Some(decision) = ctx.signals().await?.pop() {
//!         return Ok(format!("{doc}: {}", decision.signal_name));
//!     }
//!     let wp = ctx.create_waitpoint("review", Duration::from_secs(3600)).await?;
//!     println!("approve {} with token {}", wp.waitpoint_id, wp.hmac_token);
//!     Err(HandlerError::suspend_on(&wp, "approved"))
//! }
//! ```
//!
//! Suspending ends the handler's run, so it is a return value (as waiting for children is),
//! never a call in the middle of one.

use std::time::Duration;

use ff_core::{PendingWaitpoint, ResumeSignal, SuspendArgs, SuspensionReasonCode, TimeoutBehavior, WaitpointBinding};

use super::{EndAction, HandlerError, TaskContext};
use crate::error::SdkError;

impl HandlerError {
    /// Suspends on the pending waitpoint `waitpoint` (from [`TaskContext::create_waitpoint`])
    /// until a signal named `signal_name` is delivered to it; signals delivered to it before
    /// (buffered) count. The wait times out when the waitpoint would have expired
    /// (`waitpoint.expires_at`, on the engine's clock), failing the execution unless
    /// [`on_timeout`](Self::on_timeout) says otherwise.
    pub fn suspend_on(waitpoint: &PendingWaitpoint, signal_name: &str) -> Self {
        let mut args = SuspendArgs::for_signal(waitpoint.waitpoint_key.clone(), signal_name);
        args.waitpoints = vec![WaitpointBinding::UsePending { waitpoint_id: waitpoint.waitpoint_id }];
        args.timeout_at = Some(waitpoint.expires_at);
        Self::suspend(args)
    }

    /// Suspends as `args` say: any waitpoints, condition, resume policy and timeout. Without an
    /// idempotency key it gets the suspension's id, so a suspend the runtime retries after a
    /// transport error is not suspended twice.
    pub fn suspend(mut args: SuspendArgs) -> Self {
        if args.idempotency_key.is_none() {
            args.idempotency_key = Some(args.suspension_id.to_string());
        }
        Self { action: EndAction::Suspend(Box::new(args)) }
    }

    /// What the suspension's timeout does (fail by default): e.g.
    /// [`TimeoutBehavior::AutoResumeWithTimeoutSignal`] runs the handler again with a signal
    /// named `timeout`. No effect on other outcomes.
    pub fn on_timeout(mut self, behavior: TimeoutBehavior) -> Self {
        if let EndAction::Suspend(args) = &mut self.action {
            args.timeout_behavior = behavior;
        }
        self
    }

    /// Records why the execution waits (shown as its blocking reason), e.g.
    /// [`SuspensionReasonCode::WaitingForApproval`]. No effect on other outcomes.
    pub fn because(mut self, reason: SuspensionReasonCode) -> Self {
        if let EndAction::Suspend(args) = &mut self.action {
            args.reason_code = reason;
        }
        self
    }
}

impl<S> TaskContext<S> {
    /// Mints a pending waitpoint named `key` that closes after `expires_in` unless the handler
    /// suspends on it. Its id and token (`hmac_token`) are what a signaller needs: hand them
    /// out, then return [`HandlerError::suspend_on`]. Signals delivered before the suspension
    /// are kept and count.
    pub async fn create_waitpoint(&self, key: &str, expires_in: Duration) -> Result<PendingWaitpoint, SdkError> {
        self.inner.transport.create_waitpoint(&self.inner.task, key, expires_in).await
    }

    /// The signals that woke this attempt (its latest suspension's), in delivery order; before
    /// it ever suspended, those delivered to its pending waitpoints; empty on a first run.
    pub async fn signals(&self) -> Result<Vec<ResumeSignal>, SdkError> {
        self.inner.transport.observe_signals(&self.inner.task).await
    }

    /// The simple wait, for signallers that find the waitpoint themselves (an operator's
    /// `Client::approve` after listing the execution's waitpoints, or a trusted caller reading
    /// its token): mints a waitpoint keyed `signal_name` that lives `timeout`, and returns the
    /// suspension on it for a signal of that name. Return it as the handler's error:
    /// `return Err(ctx.wait_for_signal("approved", ttl).await)`. A waitpoint that cannot be
    /// minted is a transient failure.
    pub async fn wait_for_signal(&self, signal_name: &str, timeout: Duration) -> HandlerError {
        match self.create_waitpoint(signal_name, timeout).await {
            Ok(wp) => HandlerError::suspend_on(&wp, signal_name),
            Err(e) => HandlerError::transient(format!("could not create the waitpoint {signal_name:?}: {e}")),
        }
    }
}
