//! Following a commit-ordered log from a cursor: the one loop behind every subscription
//! (completions, lease history, instance tags, signal deliveries).
//!
//! A follower reads a batch after its cursor, hands the entries out one by one, and when it has
//! caught up waits for the event feed (see `pulse`) or a slow re-check. Right after a wake-up
//! that found nothing it re-reads a few times at short intervals: an announced event becomes
//! visible to readers only once every older transaction has finished (the log's commit-safe
//! order), which can lag its announcement by a moment.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ff_core::EngineError;
use ff_core::event::EventCursor;
use futures::Stream;
use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::pulse::{Feeds, Following};

/// How long a caught-up follower waits without a wake-up before reading again.
pub(crate) const IDLE_RECHECK: Duration = Duration::from_secs(1);

/// Re-reads after a wake-up that found nothing.
const AFTER_WAKE: [Duration; 3] = [Duration::from_millis(2), Duration::from_millis(10), Duration::from_millis(50)];

/// One read: the entries after the cursor, and (when the read saw everything visible) the
/// position it looked up to, which may be past the last entry.
pub(crate) struct Batch<T> {
    /// Entries in order.
    pub(crate) entries: Vec<T>,
    /// Resume after this, when later than the last entry.
    pub(crate) scanned_to: Option<EventCursor>,
}

/// Reads up to one batch of entries after a cursor.
pub(crate) type ReadBatch<T> = Box<dyn FnMut(EventCursor) -> BoxFuture<'static, Result<Batch<T>, EngineError>> + Send>;

/// A boxed stream of entries.
pub(crate) type Follower<T> = Pin<Box<dyn Stream<Item = Result<T, EngineError>> + Send>>;

/// Follows the log after `cursor`: `read` fetches a batch, `position` names an entry's cursor;
/// the follower is counted in `feeds` (so writers announce) and woken by its event feed.
pub(crate) fn follow<T: Send + 'static>(
    cursor: EventCursor,
    feeds: &Arc<Feeds>,
    read: ReadBatch<T>,
    position: fn(&T) -> EventCursor,
) -> Follower<T> {
    struct State<T> {
        _following: Following,
        cursor: EventCursor,
        woken: watch::Receiver<u64>,
        read: ReadBatch<T>,
        position: fn(&T) -> EventCursor,
        buffer: VecDeque<T>,
        empty_reads: usize,
    }
    let state = State {
        _following: feeds.following(),
        cursor,
        woken: feeds.events(),
        read,
        position,
        buffer: VecDeque::new(),
        empty_reads: AFTER_WAKE.len(),
    };
    Box::pin(futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(entry) = s.buffer.pop_front() {
                return Some((Ok(entry), s));
            }
            s.woken.borrow_and_update();
            match (s.read)(s.cursor).await {
                Err(e) => return Some((Err(e), s)),
                Ok(Batch { entries, scanned_to }) if entries.is_empty() => {
                    if let Some(to) = scanned_to {
                        s.cursor = s.cursor.max(to);
                    }
                    if let Some(pause) = AFTER_WAKE.get(s.empty_reads) {
                        s.empty_reads += 1;
                        tokio::time::sleep(*pause).await;
                        continue;
                    }
                    tokio::select! {
                        changed = s.woken.changed() => {
                            if changed.is_err() {
                                tokio::time::sleep(IDLE_RECHECK).await;
                            }
                            s.empty_reads = 0;
                        }
                        _ = tokio::time::sleep(IDLE_RECHECK) => {}
                    }
                }
                Ok(Batch { entries, scanned_to }) => {
                    if let Some(last) = entries.last() {
                        s.cursor = (s.position)(last);
                    }
                    if let Some(to) = scanned_to {
                        s.cursor = s.cursor.max(to);
                    }
                    s.buffer.extend(entries);
                    s.empty_reads = AFTER_WAKE.len();
                }
            }
        }
    }))
}
