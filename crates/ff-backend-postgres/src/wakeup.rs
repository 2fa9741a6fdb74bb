//! Wakeups for long-polling claims.
//!
//! Statements that make executions claimable right away (creation of eligible executions, lease
//! expiry) send `NOTIFY ff_lane_ready, '<lane>'` in their transaction, so the notification is
//! delivered only if the work committed. One listener connection per backend turns those into
//! wakeups of the claims waiting on that lane. A notification is only a hint: waiting claims
//! also retry on a short timer, so a lost notification (reconnect, or work that became
//! claimable by the passage of time) costs latency, never correctness.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, DropGuard};

/// The notification channel; the payload is the lane name.
pub(crate) const CHANNEL: &str = "ff_lane_ready";

type Lanes = Mutex<HashMap<String, Weak<Notify>>>;

/// Per-lane wakeups fed by one `LISTEN` connection; the listener stops when this is dropped.
pub(crate) struct LaneWakeups {
    lanes: Arc<Lanes>,
    _stop: DropGuard,
}

impl LaneWakeups {
    /// Starts the listener on the current runtime.
    pub(crate) fn start(pool: PgPool) -> Self {
        let lanes: Arc<Lanes> = Arc::default();
        let stop = CancellationToken::new();
        tokio::spawn(listen(pool, lanes.clone(), stop.clone()));
        Self { lanes, _stop: stop.drop_guard() }
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

async fn listen(pool: PgPool, lanes: Arc<Lanes>, stop: CancellationToken) {
    while !stop.is_cancelled() && !pool.is_closed() {
        let connected = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            _ = stop.cancelled() => return,
            l = connected => match l {
                Ok(l) => l,
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
