//! Leader election for the reconcilers. Several servers (or worker processes running
//! reconcilers) may share one database; one at a time, the holder of the leader lease
//! `reconcilers` (`ff_leader_lease`), runs them, so maintenance load does not multiply with the
//! number of servers.
//!
//! A lease lives `ttl` in database time and is renewed every quarter of it. The holder stops
//! counting itself leader as soon as it cannot renew in time (measured on its own monotonic clock
//! from the start of its last successful renewal, less a margin), so it stops before another
//! server can take the lease over: when the holder dies or loses its database, another server
//! takes over within `ttl` plus one renewal period. Graceful shutdown gives the lease up at once.
//! Reconciler passes are idempotent (each handles only what is still due, under row locks), so a
//! pass that a former leader had already started when the lease changed hands fires nothing
//! twice. A lease row works through any connection pooler (no session state), unlike an
//! advisory lock.

use std::time::Duration;

use crate::db::Db;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::map_sqlx;

/// The name of the reconcilers' lease.
pub(crate) const RECONCILERS: &str = "reconcilers";

/// Takes lease `$1` for holder `$2` for `$3` ms, or renews it, unless another holder's lease is
/// still live; returns the epoch when held.
pub(crate) const ACQUIRE_LEADER_SQL: &str = "INSERT INTO ff_leader_lease AS l (name, holder, epoch, acquired_at_ms, expires_at_ms) \
     VALUES ($1, $2, 1, ff_now_ms(), ff_now_ms() + $3) \
     ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, \
       epoch = CASE WHEN l.holder = EXCLUDED.holder THEN l.epoch ELSE l.epoch + 1 END, \
       acquired_at_ms = CASE WHEN l.holder = EXCLUDED.holder THEN l.acquired_at_ms ELSE EXCLUDED.acquired_at_ms END, \
       expires_at_ms = EXCLUDED.expires_at_ms \
     WHERE l.holder = EXCLUDED.holder OR l.expires_at_ms <= ff_now_ms() \
     RETURNING epoch";

/// Gives lease `$1` up if holder `$2` holds it.
pub(crate) const RELEASE_LEADER_SQL: &str =
    "UPDATE ff_leader_lease SET expires_at_ms = ff_now_ms() WHERE name = $1 AND holder = $2";

/// Keeps (or waits for) the lease `name` for `holder` until `cancel` fires, publishing whether
/// this process is the leader now; gives the lease up on the way out.
pub(crate) async fn run(
    pool: Db,
    name: &'static str,
    holder: String,
    ttl: Duration,
    leader: watch::Sender<bool>,
    cancel: CancellationToken,
) {
    let period = ttl / 4;
    // Leadership is believed for half the lease after a renewal started, and a failed renewal is
    // noticed within one period: so a process stops leading well before its lease can expire
    // and be taken over, whatever the delays between it and the database.
    let margin = ttl / 2;
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let mut valid_until: Option<Instant> = None;
    loop {
        let started = Instant::now();
        let attempt = tokio::select! {
            _ = cancel.cancelled() => break,
            r = tokio::time::timeout(period, sqlx::query_scalar::<_, i64>(ACQUIRE_LEADER_SQL)
                .bind(name).bind(&holder).bind(ttl_ms).fetch_optional(&pool)) => r,
        };
        match attempt {
            Ok(Ok(Some(epoch))) => {
                valid_until = Some(started + ttl - margin);
                if !*leader.borrow() {
                    tracing::info!(lease = name, %holder, epoch, "leading: this process runs the reconcilers");
                }
                leader.send_replace(true);
            }
            Ok(Ok(None)) => {
                valid_until = None;
                if *leader.borrow() {
                    tracing::warn!(lease = name, %holder, "another process took the lease over; reconcilers stop here");
                }
                leader.send_replace(false);
            }
            Ok(Err(e)) => tracing::debug!(lease = name, error = %map_sqlx(e), "could not renew the leader lease"),
            Err(_) => tracing::debug!(lease = name, "renewing the leader lease timed out"),
        }
        // Whatever happened, leadership ends when the last renewal's lease is about to.
        let until = valid_until.unwrap_or(started);
        if Instant::now() >= until && *leader.borrow() {
            tracing::warn!(lease = name, %holder, "could not renew the leader lease in time; reconcilers stop here");
            leader.send_replace(false);
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep_until(started + period) => {}
        }
    }
    leader.send_replace(false);
    if valid_until.is_some() {
        let _ = sqlx::query(RELEASE_LEADER_SQL).bind(name).bind(&holder).execute(&pool).await;
    }
}

/// Waits until this process leads (`true` right away if it does); `false` when `cancel` fired.
pub(crate) async fn wait_to_lead(leader: &mut watch::Receiver<bool>, cancel: &CancellationToken) -> bool {
    loop {
        if *leader.borrow_and_update() {
            return true;
        }
        tokio::select! {
            _ = cancel.cancelled() => return false,
            changed = leader.changed() => if changed.is_err() { return false },
        }
    }
}
