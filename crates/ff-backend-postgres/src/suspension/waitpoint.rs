//! Waitpoints: minting a pending one while holding the lease, reading a token back (recomputed,
//! never stored), listing an execution's open waitpoints, closing expired pending ones.

use std::sync::LazyLock;
use std::time::Duration;

use crate::db::{Db, TxConn};
use ff_core::suspension::token::{TokenBinding, fingerprint, mint};
use ff_core::*;

use super::keystore;
use super::suspend::token_for;
use crate::error::map_sqlx;
use crate::fence::{FENCE, bind_fence};
use crate::row::col;

/// Locks the fenced execution row: `$1..$4` the fence.
pub(crate) static WAITPOINT_LOCK_SQL: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT e.partition_key, ff_now_ms() AS now_ms FROM ff_execution e WHERE {FENCE} FOR UPDATE")
});

/// Creates a pending waitpoint (a row back when created; none when its key is taken) and tells
/// the suspension reconciler when it expires.
pub(crate) const INSERT_PENDING_SQL: &str = "WITH w AS (INSERT INTO ff_waitpoint (waitpoint_id, execution_id, \
     partition_key, waitpoint_key, state, attempt_index, token_kid, token_fingerprint, created_at_ms, expires_at_ms) \
     VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING RETURNING expires_at_ms) \
     SELECT pg_notify('ff_suspension_timer', expires_at_ms::text) FROM w";

/// What a waitpoint's token is bound to: `$1` waitpoint.
pub(crate) const WAITPOINT_SQL: &str = "SELECT w.execution_id, w.partition_key, w.waitpoint_key, w.state, \
     w.suspension_id, w.token_kid, w.created_at_ms FROM ff_waitpoint w WHERE w.waitpoint_id = $1";

/// Open waitpoints of execution `$1` after `$2`, at most `$3`.
pub(crate) const LIST_WAITPOINTS_SQL: &str = "SELECT waitpoint_id, waitpoint_key, state, required_signal_names, \
     created_at_ms, activated_at_ms, expires_at_ms, token_kid, token_fingerprint FROM ff_waitpoint \
     WHERE execution_id = $1 AND state <> 'closed' AND ($2::uuid IS NULL OR waitpoint_id > $2) \
     ORDER BY waitpoint_id LIMIT $3";

/// Whether execution `$1` exists.
pub(crate) const EXECUTION_EXISTS_SQL: &str =
    "SELECT 1 FROM ff_execution WHERE execution_id = $1 AND partition_key = $2";

/// Closes one due pending waitpoint (`$2` of execution `$3`), or up to `$1` of them.
pub(crate) const EXPIRE_WAITPOINTS_SQL: &str = "SELECT ff_expire_waitpoints($1, $2, $3)";

/// `create_waitpoint`; `Ok(None)` when the fence failed.
pub(crate) async fn create(
    pool: &Db,
    p: &HandlePayload,
    waitpoint_key: &str,
    expires_in: Duration,
) -> Result<Option<PendingWaitpoint>, EngineError> {
    ff_core::execution::validate_name("waitpoint_key", waitpoint_key, false)?;
    let ms = u64::try_from(expires_in.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 || ms > MAX_SUSPENSION_DELAY_MS {
        return Err(EngineError::invalid(format!("expires_in must be within 1 ms..={MAX_SUSPENSION_DELAY_MS} ms")));
    }
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    let Some(row) = bind_fence(sqlx::query(&WAITPOINT_LOCK_SQL), p).fetch_optional(&mut *tx).await.map_err(map_sqlx)?
    else {
        return tx.abandon(Ok(None)).await;
    };
    let partition: i16 = col(&row, "partition_key")?;
    let now: i64 = col(&row, "now_ms")?;
    let key = keystore::signing_key(&mut tx).await?;
    let id = WaitpointId::new();
    let binding =
        TokenBinding { execution_id: p.execution_id, waitpoint_id: id.0, waitpoint_key, created_at: TimestampMs(now) };
    let token = mint(&key, &binding);
    let expires_at = now + ms as i64;
    let inserted = sqlx::query(INSERT_PENDING_SQL)
        .bind(id.0)
        .bind(p.execution_id.uuid())
        .bind(partition)
        .bind(waitpoint_key)
        .bind(p.attempt_index.0 as i32)
        .bind(&key.kid)
        .bind(fingerprint(&token))
        .bind(now)
        .bind(expires_at)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    if inserted.is_none() {
        return Err(tx.abandon(EngineError::Conflict(ConflictKind::WaitpointAlreadyExists)).await);
    }
    tx.commit().await.map_err(map_sqlx)?;
    Ok(Some(PendingWaitpoint {
        waitpoint_id: id,
        waitpoint_key: waitpoint_key.to_owned(),
        hmac_token: token.to_string(),
        expires_at: TimestampMs(expires_at),
    }))
}

/// The token of open waitpoint `id`, recomputed; `None` when it is missing, closed or its key
/// is gone.
pub(crate) async fn read_token(conn: &mut TxConn, id: &WaitpointId) -> Result<Option<String>, EngineError> {
    let Some(row) = sqlx::query(WAITPOINT_SQL).bind(id.0).fetch_optional(&mut *conn).await.map_err(map_sqlx)? else {
        return Ok(None);
    };
    if col::<String>(&row, "state")? == "closed" {
        return Ok(None);
    }
    let kid: String = col(&row, "token_kid")?;
    let Some(key) = keystore::key_by_id(conn, &kid).await? else {
        return Ok(None);
    };
    let partition: i16 = col(&row, "partition_key")?;
    let execution_id = ExecutionId::from_parts(partition.max(0) as u16, col(&row, "execution_id")?);
    let wp_key: String = col(&row, "waitpoint_key")?;
    Ok(Some(token_for(&key, execution_id, id.0, &wp_key, col(&row, "created_at_ms")?)))
}

/// `list_pending_waitpoints`.
pub(crate) async fn list(
    pool: &Db,
    cfg: &PartitionConfig,
    args: &ListPendingWaitpointsArgs,
) -> Result<ListPendingWaitpointsResult, EngineError> {
    cfg.check_execution_partition(args.execution_id.partition_index())?;
    let limit = match args.limit {
        None => 100,
        Some(n) if (1..=1000).contains(&n) => n,
        Some(n) => return Err(EngineError::invalid(format!("limit {n} outside 1..=1000"))),
    };
    let exists: Option<i32> = sqlx::query_scalar(EXECUTION_EXISTS_SQL)
        .bind(args.execution_id.uuid())
        .bind(args.execution_id.partition_index() as i16)
        .fetch_optional(pool)
        .await
        .map_err(map_sqlx)?;
    if exists.is_none() {
        return Err(EngineError::NotFound { entity: "execution" });
    }
    let rows = sqlx::query(LIST_WAITPOINTS_SQL)
        .bind(args.execution_id.uuid())
        .bind(args.after.map(|a| a.0))
        .bind(i64::from(limit) + 1)
        .fetch_all(pool)
        .await
        .map_err(map_sqlx)?;
    let more = rows.len() > limit as usize;
    let mut entries = Vec::with_capacity(rows.len().min(limit as usize));
    for r in rows.iter().take(limit as usize) {
        entries.push(PendingWaitpointInfo {
            waitpoint_id: WaitpointId(col(r, "waitpoint_id")?),
            waitpoint_key: col(r, "waitpoint_key")?,
            state: WaitpointState::parse(&col::<String>(r, "state")?)?,
            required_signal_names: col(r, "required_signal_names")?,
            created_at: TimestampMs(col(r, "created_at_ms")?),
            activated_at: col::<Option<i64>>(r, "activated_at_ms")?.map(TimestampMs),
            expires_at: col::<Option<i64>>(r, "expires_at_ms")?.map(TimestampMs),
            execution_id: args.execution_id,
            token_kid: col(r, "token_kid")?,
            token_fingerprint: col(r, "token_fingerprint")?,
        });
    }
    let next_cursor = if more { entries.last().map(|e| e.waitpoint_id) } else { None };
    Ok(ListPendingWaitpointsResult { entries, next_cursor })
}

/// `close_waitpoint`: closes the pending waitpoint if its lifetime has passed.
pub(crate) async fn close_if_due(pool: &Db, execution_id: &ExecutionId, id: &WaitpointId) -> Result<(), EngineError> {
    let _: i32 = sqlx::query_scalar(EXPIRE_WAITPOINTS_SQL)
        .bind(1_i32)
        .bind(id.0)
        .bind(execution_id.uuid())
        .fetch_one(pool)
        .await
        .map_err(map_sqlx)?;
    Ok(())
}
