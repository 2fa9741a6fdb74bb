//! Wakeups for long-polling claims, the delayed-work promoter and the suspension reconciler.
//!
//! Statements that make executions claimable right away (creation of eligible executions,
//! promotion of due ones, lease expiry or revocation, an immediate retry) send
//! `NOTIFY ff_lane_ready, '<lane>'` in their transaction, so the notification is delivered only
//! if the work committed; statements that delay work send `NOTIFY ff_timer, '<due ms>'`, and
//! those that set a suspension timeout or a pending waitpoint's expiry
//! `NOTIFY ff_suspension_timer, '<due ms>'`, and quota settlements whose rate window holds
//! executions back `NOTIFY ff_quota_timer, '<due ms>'`. One
//! listener connection per backend turns those into wakeups of the claims waiting on that lane,
//! and of the promoter when the due time is earlier than the one it plans to wake at. A
//! notification is only a hint: waiting claims also retry on a short timer and the promoter
//! runs at least every interval, so a lost notification costs latency, never correctness.
//!
//! Behind a transaction pooler there is no `LISTEN` (a listening session would need a server
//! connection of its own for as long as it listens): the same wakeups fire on every tick of the
//! configured poll interval instead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::db::Db;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, DropGuard};

/// The notification channel; the payload is the lane name.
pub(crate) const CHANNEL: &str = "ff_lane_ready";
/// The channel on which statements that delay work announce the due time (ms, database time).
pub(crate) const TIMER_CHANNEL: &str = "ff_timer";
/// The channel on which statements that set a suspension timeout or a pending waitpoint's
/// expiry announce its time (ms, database time).
pub(crate) const SUSPENSION_TIMER_CHANNEL: &str = "ff_suspension_timer";
/// The channel on which a quota settlement announces when its rate window next has room for
/// the executions waiting for it (ms, database time).
pub(crate) const QUOTA_TIMER_CHANNEL: &str = "ff_quota_timer";

/// A timer reconciler's wakeup (the promoter's, the suspension reconciler's): fired when
/// something becomes due before the time the reconciler plans to wake at.
#[derive(Default)]
pub(crate) struct TimerWakeup {
    /// Fired (with a stored permit, so a pass in progress does not miss it).
    pub(crate) notify: Arc<Notify>,
    /// When the promoter plans to run next, in database ms (`i64::MAX`: not known).
    pub(crate) planned_at_ms: AtomicI64,
}

impl TimerWakeup {
    fn announce(&self, due_at_ms: Option<i64>) {
        let planned = self.planned_at_ms.load(Ordering::Relaxed);
        if due_at_ms.is_none_or(|due| due < planned) {
            self.planned_at_ms.store(due_at_ms.unwrap_or(i64::MIN), Ordering::Relaxed);
            self.notify.notify_one();
        }
    }
}

type Lanes = Mutex<HashMap<String, Weak<Notify>>>;

/// Per-lane wakeups fed by one `LISTEN` connection; the listener stops when this is dropped.
pub(crate) struct LaneWakeups {
    lanes: Arc<Lanes>,
    timer: Arc<TimerWakeup>,
    suspension_timer: Arc<TimerWakeup>,
    quota_timer: Arc<TimerWakeup>,
    _stop: DropGuard,
}

/// What the listener feeds besides lanes and timers.
type Followers = Arc<crate::pulse::Feeds>;

impl LaneWakeups {
    /// Starts the listener on the current runtime.
    pub(crate) fn start(pool: Db, feeds: Followers) -> Self {
        let lanes: Arc<Lanes> = Arc::default();
        let timer = Arc::new(TimerWakeup { planned_at_ms: AtomicI64::new(i64::MAX), ..TimerWakeup::default() });
        let suspension_timer =
            Arc::new(TimerWakeup { planned_at_ms: AtomicI64::new(i64::MAX), ..TimerWakeup::default() });
        let quota_timer = Arc::new(TimerWakeup { planned_at_ms: AtomicI64::new(i64::MAX), ..TimerWakeup::default() });
        let stop = CancellationToken::new();
        tokio::spawn(listen(
            pool,
            lanes.clone(),
            [timer.clone(), suspension_timer.clone(), quota_timer.clone()],
            feeds,
            stop.clone(),
        ));
        Self { lanes, timer, suspension_timer, quota_timer, _stop: stop.drop_guard() }
    }

    /// The promoter's wakeup.
    pub(crate) fn timer(&self) -> Arc<TimerWakeup> {
        self.timer.clone()
    }

    /// The suspension reconciler's wakeup.
    pub(crate) fn suspension_timer(&self) -> Arc<TimerWakeup> {
        self.suspension_timer.clone()
    }

    /// The admission reconciler's wakeup.
    pub(crate) fn quota_timer(&self) -> Arc<TimerWakeup> {
        self.quota_timer.clone()
    }

    /// The wakeup of `lane`, shared by every claim waiting on it.
    pub(crate) fn lane(&self, lane: &str) -> Arc<Notify> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = lanes.get(lane).and_then(Weak::upgrade) {
            return n;
        }
        lanes.retain(|_, w| w.strong_count() > 0);
        let n = Arc::new(Notify::new());
        lanes.insert(lane.to_owned(), Arc::downgrade(&n));
        n
    }
}

async fn listen(pool: Db, lanes: Arc<Lanes>, timers: [Arc<TimerWakeup>; 3], feeds: Followers, stop: CancellationToken) {
    let [timer, suspension_timer, quota_timer] = timers;
    if let Some(every) = pool.poll_interval() {
        // No LISTEN behind a transaction pooler: everything a notification would wake is woken
        // on a timer instead.
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !pool.pool().is_closed() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let waiting: Vec<_> =
                lanes.lock().unwrap_or_else(|p| p.into_inner()).values().filter_map(Weak::upgrade).collect();
            for w in waiting {
                w.notify_waiters();
            }
            timer.announce(None);
            suspension_timer.announce(None);
            quota_timer.announce(None);
            feeds.everything_arrived();
        }
        return;
    }
    while !stop.is_cancelled() && !pool.pool().is_closed() {
        let connected = async {
            let mut listener = PgListener::connect_with(pool.pool()).await?;
            listener
                .listen_all([
                    CHANNEL,
                    TIMER_CHANNEL,
                    SUSPENSION_TIMER_CHANNEL,
                    QUOTA_TIMER_CHANNEL,
                    crate::pulse::EVENT_CHANNEL,
                    crate::pulse::FRAME_CHANNEL,
                ])
                .await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            _ = stop.cancelled() => return,
            l = connected => match l {
                // Anything announced while the listener was away is unknown: run the timers.
                Ok(l) => {
                    timer.announce(None);
                    suspension_timer.announce(None);
                    quota_timer.announce(None);
                    feeds.everything_arrived();
                    l
                }
                Err(e) => {
                    tracing::debug!(error = %e, "lane wakeup listener could not connect; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        loop {
            let received = tokio::select! {
                _ = stop.cancelled() => return,
                r = listener.recv() => r,
            };
            match received {
                Ok(n) if n.channel() == TIMER_CHANNEL => timer.announce(n.payload().parse().ok()),
                Ok(n) if n.channel() == SUSPENSION_TIMER_CHANNEL => suspension_timer.announce(n.payload().parse().ok()),
                Ok(n) if n.channel() == QUOTA_TIMER_CHANNEL => quota_timer.announce(n.payload().parse().ok()),
                Ok(n) if n.channel() == crate::pulse::EVENT_CHANNEL => feeds.event_arrived(),
                Ok(n) if n.channel() == crate::pulse::FRAME_CHANNEL => feeds.frame_announced(n.payload()),
                Ok(n) => {
                    let waiters =
                        lanes.lock().unwrap_or_else(|p| p.into_inner()).get(n.payload()).and_then(Weak::upgrade);
                    if let Some(w) = waiters {
                        w.notify_waiters();
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "lane wakeup listener lost its connection; reconnecting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            }
        }
    }
}
