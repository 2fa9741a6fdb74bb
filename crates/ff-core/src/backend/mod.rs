//! The backend seam: [`EngineBackend`], the union of one sub-trait per entity, and
//! [`CompletionBackend`] (completion subscriptions).
//!
//! Each entity's operations sit in the module named for it: [`execution`] (ingress, reads, tags,
//! listings), [`lease`] (claims, renewals, progress, reclaim grants), [`attempt_end`] (complete,
//! fail, cancel, delay), [`flow`] (flows, edges, edge groups, flow cancellation), [`suspension`] (suspension,
//! waitpoints, signals, the waitpoint keystore), [`stream`] (frames), [`maintenance`] (the hooks reconcilers call),
//! [`worker`] (the worker registry), [`operator`] (operator controls), [`quota`] (quota policies
//! and admission), [`budget`] (budgets and usage), [`scheduling`] (claim grants and admission
//! blocks), [`retention`] (per-lane and per-namespace retention windows).
//! `EngineBackend` keeps the seed's method names, so a caller holding `&dyn EngineBackend`
//! reaches every operation; import [`prelude`] (or `ff_core::*`) to bring the sub-traits into
//! scope.
//!
//! Every method works on every backend that implements the traits: there are no default bodies
//! that answer "unavailable". A method is added only once it works; what a backend supports is
//! also reported truthfully by [`EngineBackend::capabilities`]. New methods take one `…Args`
//! value and return one `…Result` or `…Outcome` (see the glossary in ARCHITECTURE.md).

pub mod attempt_end;
pub mod budget;
pub mod execution;
pub mod flow;
pub mod lease;
pub mod maintenance;
pub mod operator;
pub mod quota;
pub mod retention;
pub mod scheduling;
pub mod stream;
pub mod suspension;
pub mod worker;

use std::time::Duration;

use async_trait::async_trait;

pub use attempt_end::AttemptEndBackend;
pub use budget::BudgetBackend;
pub use execution::ExecutionBackend;
pub use flow::FlowBackend;
pub use lease::LeaseBackend;
pub use maintenance::{ExpirePhase, MaintenanceBackend};
pub use operator::OperatorBackend;
pub use quota::QuotaBackend;
pub use retention::RetentionBackend;
pub use scheduling::SchedulingBackend;
pub use stream::StreamBackend;
pub use suspension::SuspensionBackend;
pub use worker::WorkerRegistryBackend;

use crate::capability::Capabilities;
use crate::error::EngineError;
use crate::event::{CompletionStream, EventCursor, InstanceTagStream, LeaseHistoryStream, ScannerFilter};

/// Every backend trait, for `use ff_core::backend::prelude::*`.
pub mod prelude {
    pub use super::{
        AttemptEndBackend, BudgetBackend, CompletionBackend, EngineBackend, ExecutionBackend, FlowBackend,
        LeaseBackend, MaintenanceBackend, OperatorBackend, QuotaBackend, RetentionBackend, SchedulingBackend,
        StreamBackend, SuspensionBackend, WorkerRegistryBackend,
    };
}

/// What `prepare` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrepareOutcome {
    /// Nothing to do: the schema is current.
    NoOp,
}

/// The engine's storage and coordination backend: every entity's operations, plus the
/// backend's own lifecycle.
#[async_trait]
pub trait EngineBackend:
    ExecutionBackend
    + LeaseBackend
    + AttemptEndBackend
    + StreamBackend
    + MaintenanceBackend
    + OperatorBackend
    + FlowBackend
    + SuspensionBackend
    + WorkerRegistryBackend
    + QuotaBackend
    + BudgetBackend
    + SchedulingBackend
    + RetentionBackend
    + Send
    + Sync
    + 'static
{
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

    /// Lease changes (acquired, reclaimed, expired, released, revoked) matching `filter` after
    /// `cursor`, in commit order; resumable like completions.
    async fn subscribe_lease_history(
        &self,
        cursor: EventCursor,
        filter: &ScannerFilter,
    ) -> Result<LeaseHistoryStream, EngineError>;

    /// The cursor just after the newest event readers can see now (to follow from now on).
    async fn event_log_head(&self) -> Result<EventCursor, EngineError>;

    /// Tag changes of executions (set, cleared) after `cursor`, in commit order; resumable.
    async fn subscribe_instance_tags(&self, cursor: EventCursor) -> Result<InstanceTagStream, EngineError>;
}
