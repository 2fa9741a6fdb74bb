//! [`HandlerError`]: why a handler did not complete its execution, and so which end call the
//! runtime makes instead (fail, cancel, delay, wait for children, suspend). Any error converts
//! into a transient failure.

use ff_core::{FailureClass, TimestampMs};

/// Why a handler did not complete its execution.
#[derive(Debug)]
pub struct HandlerError {
    pub(super) action: EndAction,
}

/// What the runtime does with the execution instead of completing it.
#[derive(Debug)]
pub(super) enum EndAction {
    Fail { class: FailureClass, message: String, detail: Option<String> },
    Cancel { reason: String },
    Delay { until: TimestampMs },
    WaitChildren,
    Suspend(Box<ff_core::SuspendArgs>),
}

impl HandlerError {
    /// A failure that may succeed on retry (the stored retry policy decides when).
    pub fn transient(message: impl Into<String>) -> Self {
        Self::failure(FailureClass::Transient, message)
    }

    /// A failure that will not succeed on retry: the execution fails now.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::failure(FailureClass::Permanent, message)
    }

    /// A failure of a given class.
    pub fn failure(class: FailureClass, message: impl Into<String>) -> Self {
        Self { action: EndAction::Fail { class, message: message.into(), detail: None } }
    }

    /// Cancels the execution instead of failing it.
    pub fn cancel(reason: impl Into<String>) -> Self {
        Self { action: EndAction::Cancel { reason: reason.into() } }
    }

    /// Parks the execution until `until`; the same attempt resumes then.
    pub fn delay_until(until: TimestampMs) -> Self {
        Self { action: EndAction::Delay { until } }
    }

    /// Releases the execution until its children end: the members of its flow it waits for
    /// (the upstreams of its edge group, e.g. spawned with `Client::add_children`). Once every
    /// child has ended the same attempt is claimed again and the handler runs again from the
    /// start, with [`TaskContext::claim_kind`](super::TaskContext::claim_kind) `Resumed` and the same
    /// [`TaskContext::attempt_index`](super::TaskContext::attempt_index). Since a release at shutdown also resumes an attempt, a
    /// handler tells its second run apart by its children: when `Client::list_edges` (`to` its
    /// own id) finds edges, they were spawned, and their results are read with
    /// `Client::result`. Children that all ended already resume it at once; a group that can no
    /// longer be satisfied (a child failed) skips the execution.
    pub fn wait_for_children() -> Self {
        Self { action: EndAction::WaitChildren }
    }

    /// Adds detail (a stack trace, a response body) to a failure.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        if let EndAction::Fail { detail: d, .. } = &mut self.action {
            *d = Some(detail.into());
        }
        self
    }
}

/// Any error converts into a transient failure whose message is the error's source chain.
impl<E: Into<Box<dyn std::error::Error + Send + Sync>>> From<E> for HandlerError {
    fn from(e: E) -> Self {
        let e: Box<dyn std::error::Error + Send + Sync> = e.into();
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        Self::transient(message)
    }
}
