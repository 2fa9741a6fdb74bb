//! Group commit for single-item calls: concurrent `claim` calls, and concurrent `complete` calls,
//! of one process share a round trip and a transaction.
//!
//! Each call enqueues its item and waits. A flusher takes everything queued at that moment (up
//! to [`MAX_GROUP`]) and runs it (claims: one `ff_claim` per lane, capabilities, TTL and worker
//! pool, side by side, with one slot per waiting worker; completions: one fenced `ff_complete`);
//! while a group is in flight, new items queue up for the next one. Nothing waits on a timer: a
//! lone caller is sent at once, and groups form only when callers overlap. Every completion is
//! still fenced on its own, every claimed lease names its own worker, and a call returns only
//! after the transaction holding its item has committed, so the guarantees of a single-item
//! call are unchanged. (River's batch completer and graphile-worker's local queue and batched
//! job release are the same idea.)
//!
//! One group of each kind is in flight at a time, so groups are as large as the callers' overlap
//! makes them and each statement's start-up, commit and WAL flush are shared by the most items.
//! Measured on two cores, 16 workers at batch 1 (S1, interleaved runs): 4,040-4,280
//! executions/s with one group in flight per kind against 3,560-3,840 with two, and less with
//! three or four (each group waits behind fewer statements but carries fewer items, and claims
//! of one lane contend for its head); capability routing (S5) and flow chains (S4) were faster
//! with one as well.

use std::future::Future;
use std::sync::Arc;

use crate::db::Db;
use ff_core::{EngineError, HandlePayload, WorkerInstanceId};
use tokio::sync::{mpsc, oneshot};

use crate::attempt_end;
use crate::lease::claim::{self, ClaimKey, Claimed};
use crate::lease::position::ClaimPositions;

/// Most items in one group.
pub(crate) const MAX_GROUP: usize = 256;
/// A queue whose flusher hands everything queued at once to `flush` as one group.
struct Groups<T> {
    tx: mpsc::UnboundedSender<T>,
}

impl<T: Send + 'static> Groups<T> {
    /// Starts the flusher on the current runtime; it stops when the queue is dropped.
    fn start<F, Fut>(pool: Db, flush: F) -> Self
    where
        F: Fn(Db, Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<T>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // Everything that queued while the previous group ran joins this one.
                let mut group = vec![first];
                while group.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(item) => group.push(item),
                        Err(_) => break,
                    }
                }
                // The group runs as a task of its own: a panic in it drops its callers' replies
                // (they get an error) without stopping the queue.
                let _ = tokio::spawn(flush(pool.clone(), group)).await;
            }
        });
        Self { tx }
    }

    /// Queues an item built around a reply channel and waits for the reply.
    async fn call<R>(&self, item: impl FnOnce(oneshot::Sender<Result<R, EngineError>>) -> T) -> Result<R, EngineError> {
        let (reply, wait) = oneshot::channel();
        self.tx.send(item(reply)).map_err(|_| EngineError::Internal("group flusher stopped".into()))?;
        wait.await.map_err(|_| EngineError::Internal("group flusher dropped an item".into()))?
    }
}

struct CompleteItem {
    payload: HandlePayload,
    result: Option<Vec<u8>>,
    reply: oneshot::Sender<Result<bool, EngineError>>,
}

/// Group committer of single completions.
pub(crate) struct CompletionGroups(Groups<CompleteItem>);

impl CompletionGroups {
    /// Starts the flusher on the current runtime.
    pub(crate) fn start(pool: Db) -> Self {
        Self(Groups::start(pool, flush_completions))
    }

    /// Completes one item as part of the next group; `Ok(false)` when its fence failed.
    pub(crate) async fn complete(&self, payload: HandlePayload, result: Option<Vec<u8>>) -> Result<bool, EngineError> {
        self.0.call(|reply| CompleteItem { payload, result, reply }).await
    }
}

async fn flush_completions(pool: Db, group: Vec<CompleteItem>) {
    let mut items = Vec::with_capacity(group.len());
    let mut replies = Vec::with_capacity(group.len());
    for CompleteItem { payload, result, reply } in group {
        items.push((payload, result));
        replies.push(reply);
    }
    match attempt_end::complete(&pool, &items).await {
        Ok(done) => {
            for (done, reply) in done.into_iter().zip(replies) {
                let _ = reply.send(Ok(done));
            }
        }
        Err(e) => {
            // The group's transaction rolled back as a whole: every caller gets the error and
            // nothing of any item was written.
            for reply in replies {
                let _ = reply.send(Err(crate::error::duplicate(&e)));
            }
        }
    }
}

struct ClaimItem {
    key: ClaimKey,
    instance: WorkerInstanceId,
    reply: oneshot::Sender<Result<Option<Claimed>, EngineError>>,
}

/// Group committer of single claims.
pub(crate) struct ClaimGroups(Groups<ClaimItem>);

impl ClaimGroups {
    /// Starts the flusher on the current runtime.
    pub(crate) fn start(pool: Db, positions: Arc<ClaimPositions>) -> Self {
        Self(Groups::start(pool, move |pool, group| flush_claims(pool, group, positions.clone())))
    }

    /// Claims at most one execution for `instance` as part of the next group.
    pub(crate) async fn claim(
        &self,
        key: ClaimKey,
        instance: WorkerInstanceId,
    ) -> Result<Option<Claimed>, EngineError> {
        self.0.call(|reply| ClaimItem { key, instance, reply }).await
    }
}

/// One statement per distinct claim key, run concurrently; slot n of a statement is the n-th
/// waiting worker of that key.
async fn flush_claims(pool: Db, group: Vec<ClaimItem>, positions: Arc<ClaimPositions>) {
    let mut by_key: Vec<(ClaimKey, Vec<ClaimItem>)> = Vec::new();
    for item in group {
        match by_key.iter_mut().find(|(k, _)| *k == item.key) {
            Some((_, items)) => items.push(item),
            None => by_key.push((item.key.clone(), vec![item])),
        }
    }
    // Each key's statement claims from its own lane (or its own capability routes), so they
    // run side by side, each on its own connection.
    let (pool, positions) = (&pool, &positions);
    let statements = by_key.into_iter().map(|(key, items)| async move {
        let instances: Vec<&str> = items.iter().map(|i| i.instance.as_str()).collect();
        match claim::claim_slots(pool, &key, &instances, positions).await {
            Ok(claimed) => {
                let mut handles: Vec<Option<Claimed>> = vec![None; items.len()];
                for (slot, one) in claimed {
                    if let Some(h) = slot.checked_sub(1).and_then(|i| handles.get_mut(i)) {
                        *h = Some(one);
                    }
                }
                for (item, handle) in items.into_iter().zip(handles) {
                    let _ = item.reply.send(Ok(handle));
                }
            }
            Err(e) => {
                for item in items {
                    let _ = item.reply.send(Err(crate::error::duplicate(&e)));
                }
            }
        }
    });
    futures::future::join_all(statements).await;
}
