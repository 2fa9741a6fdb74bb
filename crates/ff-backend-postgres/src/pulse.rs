//! Wake-ups for readers that follow the event log and attempt streams.
//!
//! A writer's transaction never sends `NOTIFY` itself: PostgreSQL serialises the commits of
//! notifying transactions (each holds a cluster-wide lock through its WAL flush), which would
//! cap the hot path at one commit per flush. Instead, after a write that added events or
//! frames has committed, the writing process records it in its [`Pulse`], and one task per
//! process announces what it gathered in one out-of-band statement on its own connection
//! (`NOTIFY ff_event` / `NOTIFY ff_frame, '<execution uuid>:<attempt>'`), at most once per
//! [`COALESCE_WINDOW`]. That statement writes no WAL, so it holds the lock for microseconds.
//!
//! Readers wait on [`Feeds`]: a version counter for the event log and one per followed attempt
//! stream. The feeds are bumped by the listener connection (from any process's announcements)
//! and, without a round trip, by this process's own pulse. A wake-up is only a hint: followers
//! also re-read on a slow timer, so a lost announcement costs latency, never correctness.
//!
//! Announcements cost the database a statement each, so they are sent only while somebody
//! follows: a process with followers keeps a live row in `ff_follower` ([`run_presence`]), and
//! the announcer, while it has something to announce, checks for live rows at most every
//! [`ABSENCE_RECHECK`] while it knows of none and every [`PRESENCE_RECHECK`] while it knows of
//! some. A follower that appears is announced to within the first; until then its own re-reads
//! find what was written.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::postgres::PgConnection;

use crate::db::Db;
use tokio::sync::{Notify, watch};
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

/// The channel announcing new events in the log (no payload).
pub(crate) const EVENT_CHANNEL: &str = "ff_event";
/// The channel announcing new frames; the payload is `<execution uuid>:<attempt index>`.
pub(crate) const FRAME_CHANNEL: &str = "ff_frame";
/// Shortest time between two announcements of one process.
pub(crate) const COALESCE_WINDOW: Duration = Duration::from_millis(1);

/// How often the announcer looks again for followers while it knows of some.
pub(crate) const PRESENCE_RECHECK: Duration = Duration::from_secs(1);
/// How often it looks while it knows of none (so a new follower is served soon).
pub(crate) const ABSENCE_RECHECK: Duration = Duration::from_millis(100);
/// How often a process with followers renews its presence row.
const PRESENCE_RENEW: Duration = Duration::from_secs(5);
/// How long a presence row lives without renewal, in ms.
const PRESENCE_TTL_MS: i64 = 15_000;

pub(crate) const ANNOUNCE_SQL: &str = "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS n(c, p)";
pub(crate) const ANYONE_FOLLOWS_SQL: &str =
    "SELECT EXISTS (SELECT 1 FROM ff_follower WHERE expires_at_ms > ff_now_ms())";
pub(crate) const PRESENT_SQL: &str = "INSERT INTO ff_follower (process_id, expires_at_ms) VALUES ($1, ff_now_ms() + $2) \
     ON CONFLICT (process_id) DO UPDATE SET expires_at_ms = EXCLUDED.expires_at_ms";
pub(crate) const ABSENT_SQL: &str = "DELETE FROM ff_follower WHERE process_id = $1";

/// An attempt stream's key.
pub(crate) type StreamKey = (Uuid, i32);

type StreamFeeds = Mutex<HashMap<StreamKey, Weak<watch::Sender<u64>>>>;

/// Version counters readers wait on, and how many readers this process has.
pub(crate) struct Feeds {
    events: watch::Sender<u64>,
    streams: StreamFeeds,
    followers: AtomicUsize,
    presence_changed: Notify,
}

impl Default for Feeds {
    fn default() -> Self {
        Self {
            events: watch::channel(0).0,
            streams: Mutex::default(),
            followers: AtomicUsize::new(0),
            presence_changed: Notify::new(),
        }
    }
}

/// One follower of this process, counted while it lives.
pub(crate) struct Following(Arc<Feeds>);

impl Drop for Following {
    fn drop(&mut self) {
        if self.0.followers.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.presence_changed.notify_one();
        }
    }
}

impl Feeds {
    /// Counts a follower until the returned guard drops.
    pub(crate) fn following(self: &Arc<Self>) -> Following {
        if self.followers.fetch_add(1, Ordering::Relaxed) == 0 {
            self.presence_changed.notify_one();
        }
        Following(self.clone())
    }

    /// A receiver that changes whenever events may have been added to the log.
    pub(crate) fn events(&self) -> watch::Receiver<u64> {
        self.events.subscribe()
    }

    /// The feed of one attempt stream; kept while the returned sender lives.
    pub(crate) fn stream(&self, key: StreamKey) -> Arc<watch::Sender<u64>> {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = streams.get(&key).and_then(Weak::upgrade) {
            return s;
        }
        streams.retain(|_, w| w.strong_count() > 0);
        let s = Arc::new(watch::channel(0).0);
        streams.insert(key, Arc::downgrade(&s));
        s
    }

    /// Events may have been added.
    pub(crate) fn event_arrived(&self) {
        self.events.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// A frame may have been appended to `key`'s stream.
    pub(crate) fn frame_arrived(&self, key: StreamKey) {
        let feed = self.streams.lock().unwrap_or_else(|p| p.into_inner()).get(&key).and_then(Weak::upgrade);
        if let Some(f) = feed {
            f.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// Parses a frame announcement's payload and bumps its stream.
    pub(crate) fn frame_announced(&self, payload: &str) {
        if let Some(key) = parse_stream_key(payload) {
            self.frame_arrived(key);
        }
    }

    /// Anything may have happened (the listener was away): wake every reader.
    pub(crate) fn everything_arrived(&self) {
        self.event_arrived();
        let feeds: Vec<_> =
            self.streams.lock().unwrap_or_else(|p| p.into_inner()).values().filter_map(Weak::upgrade).collect();
        for f in feeds {
            f.send_modify(|v| *v = v.wrapping_add(1));
        }
    }
}

/// Keeps this process's presence row live while it has followers (see the module docs); stops
/// when `stop` fires, deleting the row.
pub(crate) async fn run_presence(pool: Db, feeds: Arc<Feeds>, process_id: String, stop: CancellationToken) {
    let mut present = false;
    loop {
        let wanted = feeds.followers.load(Ordering::Relaxed) > 0;
        let written = if wanted {
            sqlx::query(PRESENT_SQL).bind(&process_id).bind(PRESENCE_TTL_MS).execute(&pool).await.map(|_| true)
        } else if present {
            sqlx::query(ABSENT_SQL).bind(&process_id).execute(&pool).await.map(|_| false)
        } else {
            Ok(false)
        };
        match written {
            Ok(p) => present = p,
            Err(e) => tracing::debug!(error = %e, "could not record this process's followers; retrying"),
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = feeds.presence_changed.notified() => {}
            _ = tokio::time::sleep(PRESENCE_RENEW) => {}
        }
    }
    if present && !pool.pool().is_closed() {
        let _ = sqlx::query(ABSENT_SQL).bind(&process_id).execute(&pool).await;
    }
}

fn parse_stream_key(payload: &str) -> Option<StreamKey> {
    let (id, attempt) = payload.split_once(':')?;
    Some((id.parse().ok()?, attempt.parse().ok()?))
}

#[derive(Default)]
struct Pending {
    events: bool,
    frames: HashSet<StreamKey>,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Notify,
    feeds: Arc<Feeds>,
}

/// This process's announcer; its task stops when this is dropped.
pub(crate) struct Pulse {
    shared: Arc<Shared>,
    _stop: DropGuard,
}

impl Pulse {
    /// Starts the announcer on the current runtime.
    pub(crate) fn start(pool: Db, feeds: Arc<Feeds>) -> Self {
        let shared = Arc::new(Shared { pending: Mutex::default(), wake: Notify::new(), feeds });
        let stop = CancellationToken::new();
        tokio::spawn(announce(pool, shared.clone(), stop.clone()));
        Self { shared, _stop: stop.drop_guard() }
    }

    /// A write that added events has committed.
    pub(crate) fn events(&self) {
        self.shared.events();
    }

    /// A frame was appended to `key`'s stream (and committed).
    pub(crate) fn frame(&self, key: StreamKey) {
        self.shared.feeds.frame_arrived(key);
        self.shared.pending.lock().unwrap_or_else(|p| p.into_inner()).frames.insert(key);
        self.shared.wake.notify_one();
    }

    /// A handle that announces events for as long as this pulse runs.
    pub(crate) fn announcer(&self) -> Announcer {
        Announcer(self.shared.clone())
    }
}

/// Announces events on behalf of a [`Pulse`] (for tasks that outlive a borrow of it).
pub(crate) struct Announcer(Arc<Shared>);

impl Announcer {
    /// A write that added events has committed.
    pub(crate) fn events(&self) {
        self.0.events();
    }
}

impl Shared {
    fn events(&self) {
        self.feeds.event_arrived();
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).events = true;
        self.wake.notify_one();
    }
}

async fn announce(pool: Db, shared: Arc<Shared>, stop: CancellationToken) {
    let mut conn: Option<PgConnection> = None;
    let mut anyone_follows = false;
    let mut checked_at: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = shared.wake.notified() => {}
        }
        let pending = std::mem::take(&mut *shared.pending.lock().unwrap_or_else(|p| p.into_inner()));
        let mut channels = Vec::with_capacity(pending.frames.len() + 1);
        let mut payloads = Vec::with_capacity(pending.frames.len() + 1);
        if pending.events {
            channels.push(EVENT_CHANNEL.to_owned());
            payloads.push(String::new());
        }
        for (id, attempt) in pending.frames {
            channels.push(FRAME_CHANNEL.to_owned());
            payloads.push(format!("{id}:{attempt}"));
        }
        if channels.is_empty() || pool.pool().is_closed() {
            continue;
        }
        // Whether anyone follows is asked through the pool (a few times a second at most), so a
        // process nobody follows holds no announcing connection.
        let recheck = if anyone_follows { PRESENCE_RECHECK } else { ABSENCE_RECHECK };
        if checked_at.is_none_or(|at| at.elapsed() >= recheck) {
            match sqlx::query_scalar::<_, bool>(ANYONE_FOLLOWS_SQL).fetch_one(&pool).await {
                Ok(any) => {
                    anyone_follows = any;
                    checked_at = Some(Instant::now());
                }
                Err(e) => tracing::debug!(error = %e, "announcer could not look for followers"),
            }
        }
        if !anyone_follows {
            conn = None;
        } else if pool.transaction_pooling() {
            // Behind a transaction pooler a connection of its own would be one more pooled
            // client; the statement goes through the pool like any other.
            if let Err(e) = sqlx::query(ANNOUNCE_SQL).bind(&channels).bind(&payloads).execute(&pool).await {
                tracing::debug!(error = %e, "announcer could not announce; readers fall back to their timers");
            }
        } else {
            if conn.is_none() {
                match PgConnection::connect_with(&pool.pool().connect_options()).await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        tracing::debug!(error = %e, "announcer could not connect; readers fall back to their timers")
                    }
                }
            }
            if let Some(c) = conn.as_mut() {
                let sent = sqlx::query(ANNOUNCE_SQL).bind(&channels).bind(&payloads).execute(&mut *c).await;
                if let Err(e) = sent {
                    tracing::debug!(error = %e, "announcer lost its connection; reconnecting");
                    conn = None;
                }
            }
        }
        tokio::time::sleep(COALESCE_WINDOW).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_keys_round_trip() {
        let id = Uuid::new_v4();
        assert_eq!(parse_stream_key(&format!("{id}:3")), Some((id, 3)));
        for bad in ["", "x:1", &format!("{id}"), &format!("{id}:x")] {
            assert_eq!(parse_stream_key(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn feeds_wake_their_readers() {
        let feeds = Feeds::default();
        let mut events = feeds.events();
        feeds.event_arrived();
        assert!(events.has_changed().unwrap());
        events.borrow_and_update();
        let key = (Uuid::new_v4(), 1);
        let stream = feeds.stream(key);
        let mut rx = stream.subscribe();
        feeds.frame_arrived((Uuid::new_v4(), 1));
        assert!(!rx.has_changed().unwrap());
        feeds.frame_announced(&format!("{}:1", key.0));
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        feeds.everything_arrived();
        assert!(rx.has_changed().unwrap() && events.has_changed().unwrap());
    }
}
