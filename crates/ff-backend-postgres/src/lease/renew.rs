//! Renewal and progress: fenced single-row updates by the lease holder. Renewals write no
//! event (heartbeats would otherwise dominate the log).

use std::sync::LazyLock;

use crate::db::Db;
use ff_core::{EngineError, HandlePayload, LeaseEpoch, LeaseRenewal, TimestampMs};

use crate::error::map_sqlx;
use crate::fence::{FENCE, bind_fence};
use crate::row::{col, non_negative};

/// Extends a fenced lease by the TTL stored with it.
pub(crate) static RENEW_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE ff_execution e SET lease_expires_at_ms = ff_now_ms() + e.lease_ttl_ms, last_heartbeat_at_ms = ff_now_ms() \
         WHERE {FENCE} RETURNING e.lease_expires_at_ms, e.lease_epoch"
    )
});

/// Records progress under the fence.
pub(crate) static PROGRESS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE ff_execution e SET progress_pct = coalesce($5, e.progress_pct), \
         progress_message = coalesce($6, e.progress_message), last_heartbeat_at_ms = ff_now_ms() \
         WHERE {FENCE} RETURNING 1"
    )
});

/// Renews by the TTL stored with the lease (the handle's copy is never trusted); `None` when
/// the fence failed.
pub(crate) async fn renew(pool: &Db, p: &HandlePayload) -> Result<Option<LeaseRenewal>, EngineError> {
    let row = bind_fence(sqlx::query(&RENEW_SQL), p).fetch_optional(pool).await.map_err(map_sqlx)?;
    row.map(|r| {
        Ok(LeaseRenewal {
            expires_at_ms: TimestampMs(col(&r, "lease_expires_at_ms")?),
            lease_epoch: LeaseEpoch(non_negative("lease_epoch", col::<i64>(&r, "lease_epoch")?)?),
        })
    })
    .transpose()
}

/// Records progress; `None` when the fence failed.
pub(crate) async fn progress(
    pool: &Db,
    p: &HandlePayload,
    percent: Option<u8>,
    message: Option<&str>,
) -> Result<Option<()>, EngineError> {
    let row = bind_fence(sqlx::query(&PROGRESS_SQL), p)
        .bind(percent.map(i16::from))
        .bind(message)
        .fetch_optional(pool)
        .await
        .map_err(map_sqlx)?;
    Ok(row.map(|_| ()))
}
