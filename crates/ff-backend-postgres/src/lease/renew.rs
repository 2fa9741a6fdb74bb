//! Renewal and progress: fenced single-row updates by the lease holder. Renewals write no
//! event (heartbeats would otherwise dominate the log).

use std::sync::LazyLock;

use ff_core::{EngineError, HandlePayload, LeaseEpoch, LeaseRenewal, TimestampMs};
use sqlx::PgPool;

use crate::error::map_sqlx;
use crate::fence::{FENCE, bind_fence};
use crate::row::{col, non_negative};

/// Renews; `None` when the fence failed.
pub(crate) async fn renew(pool: &PgPool, p: &HandlePayload) -> Result<Option<LeaseRenewal>, EngineError> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "UPDATE ff_execution e SET lease_expires_at_ms = ff_now_ms() + $5, last_heartbeat_at_ms = ff_now_ms() \
             WHERE {FENCE} RETURNING e.lease_expires_at_ms, e.lease_epoch"
        )
    });
    let row =
        bind_fence(sqlx::query(&SQL), p).bind(p.lease_ttl_ms as i64).fetch_optional(pool).await.map_err(map_sqlx)?;
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
    pool: &PgPool,
    p: &HandlePayload,
    percent: Option<u8>,
    message: Option<&str>,
) -> Result<Option<()>, EngineError> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "UPDATE ff_execution e SET progress_pct = coalesce($5, e.progress_pct), \
             progress_message = coalesce($6, e.progress_message), last_heartbeat_at_ms = ff_now_ms() \
             WHERE {FENCE} RETURNING 1"
        )
    });
    let row = bind_fence(sqlx::query(&SQL), p)
        .bind(percent.map(i16::from))
        .bind(message)
        .fetch_optional(pool)
        .await
        .map_err(map_sqlx)?;
    Ok(row.map(|_| ()))
}
