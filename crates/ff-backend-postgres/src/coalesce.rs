//! Group commit for single-item calls: concurrent `claim` calls, and concurrent `complete` calls,
//! of one process share a round trip and a transaction.
//!
//! Each call enqueues its item and waits. A flusher takes everything queued at that moment (up
//! to [`MAX_GROUP`]) and runs one statement for the group (`ff_claim` with one slot per waiting
//! worker, grouped by lane, capabilities, TTL and worker pool; or one fenced `ff_complete`);
//! while a group is in flight, new items queue up for the next one. Nothing waits on a timer: a
//! lone caller is sent at once, and groups form only when callers overlap. Every completion is
//! still fenced on its own, every claimed lease names its own worker, and a call returns only
//! after the transaction holding its item has committed, so the guarantees of a single-item
//! call are unchanged. (River's batch completer and graphile-worker's local queue and batched
//! job release are the same idea.)

use std::sync::Arc;

use ff_core::{EngineError, Handle, HandlePayload, WorkerInstanceId};
use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::attempt_end;
use crate::claim::{self, ClaimKey};

/// Most items in one group.
pub(crate) const MAX_GROUP: usize = 256;
/// Groups in flight at once.
const MAX_IN_FLIGHT: usize = 2;

/// Did the item's fence hold?
pub(crate) type Completed = Result<bool, EngineError>;

struct Item {
    payload: HandlePayload,
    result: Option<Vec<u8>>,
    reply: oneshot::Sender<Completed>,
}

/// Sender side of the completion group committer.
pub(crate) struct CompletionGroups {
    tx: mpsc::UnboundedSender<Item>,
}

impl CompletionGroups {
    /// Starts the flusher on the current runtime.
    pub(crate) fn start(pool: PgPool) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(flusher(pool, rx));
        Self { tx }
    }

    /// Completes one item as part of the next group.
    pub(crate) async fn complete(&self, payload: HandlePayload, result: Option<Vec<u8>>) -> Completed {
        let (reply, wait) = oneshot::channel();
        self.tx
            .send(Item { payload, result, reply })
            .map_err(|_| EngineError::Internal("completion flusher stopped".into()))?;
        wait.await.map_err(|_| EngineError::Internal("completion flusher dropped an item".into()))?
    }
}

async fn flusher(pool: PgPool, mut rx: mpsc::UnboundedReceiver<Item>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        // Everything that queued while we waited for a slot joins this group.
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(item) => group.push(item),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            flush(&pool, group).await;
            drop(permit);
        });
    }
}

async fn flush(pool: &PgPool, group: Vec<Item>) {
    let mut items = Vec::with_capacity(group.len());
    let mut replies = Vec::with_capacity(group.len());
    for Item { payload, result, reply } in group {
        items.push((payload, result));
        replies.push(reply);
    }
    match attempt_end::complete(pool, &items).await {
        Ok(done) => {
            let done: std::collections::HashSet<uuid::Uuid> = done.into_iter().collect();
            for ((p, _), reply) in items.iter().zip(replies) {
                let _ = reply.send(Ok(done.contains(&p.execution_id.uuid())));
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
    reply: oneshot::Sender<Result<Option<Handle>, EngineError>>,
}

/// Sender side of the claim group committer.
pub(crate) struct ClaimGroups {
    tx: mpsc::UnboundedSender<ClaimItem>,
}

impl ClaimGroups {
    /// Starts the flusher on the current runtime.
    pub(crate) fn start(pool: PgPool) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(claim_flusher(pool, rx));
        Self { tx }
    }

    /// Claims at most one execution for `instance` as part of the next group.
    pub(crate) async fn claim(&self, key: ClaimKey, instance: WorkerInstanceId) -> Result<Option<Handle>, EngineError> {
        let (reply, wait) = oneshot::channel();
        self.tx
            .send(ClaimItem { key, instance, reply })
            .map_err(|_| EngineError::Internal("claim flusher stopped".into()))?;
        wait.await.map_err(|_| EngineError::Internal("claim flusher dropped an item".into()))?
    }
}

async fn claim_flusher(pool: PgPool, mut rx: mpsc::UnboundedReceiver<ClaimItem>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let mut drained = vec![first];
        while drained.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(item) => drained.push(item),
                Err(_) => break,
            }
        }
        // One statement per distinct claim key, in arrival order.
        let mut groups: Vec<(ClaimKey, Vec<ClaimItem>)> = Vec::new();
        for item in drained {
            match groups.iter_mut().find(|(k, _)| *k == item.key) {
                Some((_, items)) => items.push(item),
                None => groups.push((item.key.clone(), vec![item])),
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            for (key, items) in groups {
                flush_claims(&pool, &key, items).await;
            }
            drop(permit);
        });
    }
}

async fn flush_claims(pool: &PgPool, key: &ClaimKey, items: Vec<ClaimItem>) {
    let instances: Vec<&str> = items.iter().map(|i| i.instance.as_str()).collect();
    match claim::claim_slots(pool, key, &instances).await {
        Ok(claimed) => {
            let mut handles: Vec<Option<Handle>> = vec![None; items.len()];
            for (slot, handle) in claimed {
                if let Some(h) = slot.checked_sub(1).and_then(|i| handles.get_mut(i)) {
                    *h = Some(handle);
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
}
