//! A busy worker's hand-off: while every permit is taken, the claim loop waits for a permit that
//! a running task holds. So a task that completes asks for its successor in the same call
//! ([`WorkerTransport::complete_and_claim`](crate::WorkerTransport::complete_and_claim): one
//! round trip over HTTP) and hands its permit to it through the supervisor's channel.
//!
//! Invariants: the hand-off never runs once the worker is stopping; running tasks hold the
//! channel's sender weakly (upgraded only for the hand-off), so they never keep the supervisor
//! from draining at shutdown; a task handed on carries the permit of the one that completed, so
//! at most `concurrency` handlers still run at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::{Claimed, Counters, Runtime, TaskContext};
use crate::transport::{ClaimArgs, ClaimedTask};

/// What a running task needs to claim its successor.
#[derive(Clone)]
pub(super) struct Successor {
    tx: mpsc::WeakSender<Claimed>,
    permits: Arc<Semaphore>,
    stop: CancellationToken,
}

impl Successor {
    /// The hand-off into `tx`, while the worker runs and `permits` are all taken.
    pub(super) fn new(tx: &mpsc::Sender<Claimed>, permits: &Arc<Semaphore>, stop: &CancellationToken) -> Self {
        Self { tx: tx.downgrade(), permits: permits.clone(), stop: stop.clone() }
    }
}

impl<S: Send + Sync + 'static> Runtime<S> {
    /// Completes `ctx`'s execution and, when the worker is saturated, claims its successor in
    /// the same call and hands it `permit`. `None` when the execution's end is settled (completed,
    /// or its lease found lost); otherwise the permit comes back and the ordinary end call runs
    /// (the worker is not saturated, or the combined call failed: a completion that did land
    /// then answers "lease lost" there).
    pub(super) async fn complete_and_hand_on<T>(
        &self,
        ctx: &TaskContext<T>,
        result: &Option<Vec<u8>>,
        permit: OwnedSemaphorePermit,
        successor: &Successor,
    ) -> Option<OwnedSemaphorePermit> {
        let task = &ctx.inner.task;
        let Some((next, tx)) = self.successor_claim(task, successor) else { return Some(permit) };
        match self.transport.complete_and_claim(task, result.clone(), &next).await {
            Ok(tasks) => {
                Counters::bump(&self.counters.completed);
                // At most one: the claim asked for one.
                if let Some(task) = tasks.into_iter().next() {
                    Counters::bump(&self.counters.claimed);
                    Counters::bump(&self.counters.claimed_on_completion);
                    if let Err(mpsc::error::SendError((task, _))) = tx.send((task, permit)).await {
                        // The supervisor is gone (the worker was killed): the lease lapses.
                        tracing::warn!(execution = %task.execution_id, "claimed after the worker stopped");
                    }
                }
                None
            }
            Err(e) if e.is_lease_lost() => {
                Counters::bump(&self.counters.lease_lost);
                tracing::warn!(execution = %ctx.execution_id(), code = ?e.code(), "lease lost before the end call");
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, "complete-and-claim failed; completing alone");
                Some(permit)
            }
        }
    }

    /// One execution of the task's lane, answered at once, with the sender to hand it over;
    /// `None` while the worker is stopping or has a free permit (its claim loop is not waiting).
    fn successor_claim(&self, task: &ClaimedTask, successor: &Successor) -> Option<(ClaimArgs, mpsc::Sender<Claimed>)> {
        if successor.stop.is_cancelled() || successor.permits.available_permits() > 0 {
            return None;
        }
        let lane = self.config.lanes.iter().find(|l| l.as_str() == task.lane_id.as_str())?;
        let tx = successor.tx.upgrade()?;
        Some((self.claim_args(lane, 1, Duration::ZERO), tx))
    }
}
