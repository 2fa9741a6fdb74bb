//! [`ConformanceHarness`]: what a backend's test crate provides so the suite can run against it.

use std::sync::Arc;

use async_trait::async_trait;
use ff_core::{CompletionBackend, EngineBackend, ExecutionId, WorkerInstanceId};

/// A stored timer of one execution that the suite needs to have fired without waiting for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    /// The current lease's expiry: afterwards the lease is expired (fenced writes answer
    /// `LeaseExpired`) and `mark_lease_expired_if_due` acts.
    LeaseExpiry,
    /// The time a delayed execution, or one waiting for its retry backoff, becomes claimable:
    /// afterwards a claim takes it and `promote_delayed` acts.
    Eligible,
    /// The running attempt's timeout: afterwards `expire_execution(.., AttemptTimeout)` acts.
    AttemptTimeout,
    /// The execution's deadline: afterwards `expire_execution(.., ExecutionDeadline)` acts.
    Deadline,
    /// The open suspension's timeout: afterwards `expire_suspension` acts.
    SuspensionTimeout,
    /// The lifetime of the execution's pending waitpoints: afterwards `close_waitpoint` acts.
    WaitpointExpiry,
    /// The expiry of the claim grant reserving the execution: afterwards the grant is lapsed
    /// and the execution claimable by anyone.
    ClaimGrant,
    /// The execution's admissions into its quota policy's rate window: afterwards they no
    /// longer count against the window (the next `reconcile_quota_counters` admits waiters).
    QuotaWindow,
    /// When the terminal execution ended, and when each of its events was logged: moved
    /// [`AGED_BY_MS`] into the past, so every retention window shorter than that has passed.
    Completion,
}

/// How far [`Timer::Completion`] moves an execution's end into the past: one day.
pub const AGED_BY_MS: i64 = 86_400_000;

/// One backend under test. A backend's test crate implements this once and runs the whole
/// suite with [`conformance_suite!`](crate::conformance_suite).
///
/// The backend it hands out must use `PartitionConfig::default()`, mint handles with the
/// `ff_core::HandlePayload` codec (as every client decodes them), and must not run background
/// reconcilers: the suite fires every timer itself, through [`make_past`](Self::make_past) and
/// the `MaintenanceBackend` hooks, so no case depends on when a background pass runs.
#[async_trait]
pub trait ConformanceHarness: Send + Sync + Sized + 'static {
    /// A fresh backend whose stored state is isolated from every other harness value (cases run
    /// in parallel). Panics, saying why, when the backend cannot be had: a case fails, it never
    /// passes by skipping.
    async fn new() -> Self;

    /// The backend under test.
    fn backend(&self) -> Arc<dyn EngineBackend>;

    /// The same backend's completion subscriptions.
    fn completions(&self) -> Arc<dyn CompletionBackend>;

    /// Moves `timer` of execution `id` just into the past of the backend's clock, as if its time
    /// had come. Only that timer moves; nothing else about the execution changes. The timer is
    /// one the execution has (a claimed lease, a delay or backoff, an attempt timeout, a
    /// deadline).
    async fn make_past(&self, id: &ExecutionId, timer: Timer);

    /// A value summarising everything stored about execution `id` (its record, attempts, stream
    /// frames, events). The suite only compares two fingerprints of one execution for equality,
    /// to prove that a rejected call wrote nothing; any change to stored state must change it.
    async fn fingerprint(&self, id: &ExecutionId) -> String;

    /// Moves the liveness expiry of registered worker instance `id` into the past and runs the
    /// backend's worker-liveness pass once, as its reconciler would: the worker is retired and
    /// its leases are revoked.
    async fn lapse_worker(&self, id: &WorkerInstanceId);
}
