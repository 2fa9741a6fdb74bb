//! Engine counters shared by the backend and whoever exports them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Monotonic counters of engine activity in this process.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Executions created.
    pub created: AtomicU64,
    /// Leases granted by claims (fresh, resumed, reclaimed).
    pub claims: AtomicU64,
    /// Executions completed.
    pub completions: AtomicU64,
    /// Attempts failed (retried or terminal).
    pub failures: AtomicU64,
    /// Retries scheduled.
    pub retries: AtomicU64,
    /// Executions cancelled.
    pub cancellations: AtomicU64,
    /// Leases marked expired by the reconciler or the hook.
    pub lease_expiries: AtomicU64,
    /// Leases revoked because their worker died or was marked dead.
    pub lease_revocations: AtomicU64,
    /// Executions expired by timeout or deadline.
    pub expirations: AtomicU64,
    /// Fenced writes rejected (stale, expired or foreign leases).
    pub fence_rejections: AtomicU64,
}

impl Metrics {
    /// Adds `n` to a counter.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
