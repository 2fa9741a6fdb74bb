//! Attempt streams: fenced appends, range reads, live tails and summary documents.
//!
//! An append locks the execution row `FOR SHARE` under the lease fence (so it cannot interleave
//! with the attempt ending), bumps the attempt's frame counter (which serialises appends and
//! mints the sequence number) and inserts the frame, in one statement. Bytes are stored as
//! `bytea`, verbatim. A summary frame also merges its patch into the attempt's summary document,
//! and a best-effort frame updates the attempt's append-rate average and trims its oldest
//! best-effort frames, in the same transaction, after the counter (so one attempt's appends
//! apply in sequence order).
//!
//! A tail reads after its cursor and, when there is nothing yet, waits on the attempt's feed
//! (see `pulse`): this process's appends bump it directly, other processes' through their
//! announcements. It holds no connection while it waits, and re-reads on a slow timer too.

use std::sync::LazyLock;

use async_trait::async_trait;
use ff_core::Handle;
use ff_core::backend::StreamBackend;

use crate::db::Db;
use ff_core::{
    AppendFrameOutcome, AttemptIndex, EngineError, ExecutionId, Frame, FrameKind, HandlePayload, MAX_STREAM_READ,
    MAX_TAIL_BLOCK_MS, PatchKind, StreamCursor, StreamFrame, StreamFrames, StreamMode, SummaryDocument, TailVisibility,
    TimestampMs,
};
use sqlx::postgres::PgRow;

use crate::backend::PostgresBackend;
use crate::error::map_sqlx;
use crate::fence::check_id;
use crate::fence::{FENCE, bind_fence};
use crate::row::{col, non_negative};

pub(crate) const READ_ATTEMPT_SQL: &str = "SELECT a.ended_at_ms, a.state::text, e.partition_key, a.frame_count FROM ff_attempt a JOIN ff_execution e USING (execution_id) \
         WHERE a.execution_id = $1 AND a.attempt_index = $2";

pub(crate) const READ_FRAMES_SQL: &str = "SELECT seq, kind::text AS kind, frame_type, correlation_id, bytes, appended_at_ms, mode::text AS mode \
         FROM ff_frame WHERE execution_id = $1 AND attempt_index = $2 AND seq >= $3 AND seq <= $4 ORDER BY seq LIMIT $5";

/// An attempt's closure and frame count, and up to `$4` frames after seq `$3` (best-effort ones
/// only when `$5`), in one snapshot; one row without frame columns when there are none.
pub(crate) const TAIL_SQL: &str = "SELECT a.ended_at_ms, a.state::text AS state, e.partition_key, a.frame_count, \
         f.seq, f.kind::text AS kind, f.frame_type, f.correlation_id, f.bytes, f.appended_at_ms, f.mode::text AS mode \
     FROM ff_attempt a JOIN ff_execution e USING (execution_id) \
     LEFT JOIN LATERAL (SELECT * FROM ff_frame x WHERE x.execution_id = a.execution_id AND x.attempt_index = a.attempt_index \
                          AND x.seq > $3 AND ($5 OR x.mode <> 'best_effort') ORDER BY x.seq LIMIT $4) f ON true \
     WHERE a.execution_id = $1 AND a.attempt_index = $2 ORDER BY f.seq";

pub(crate) const READ_SUMMARY_SQL: &str = "SELECT document, version, patch_kind, first_applied_ms, last_updated_ms \
     FROM ff_stream_summary WHERE execution_id = $1 AND attempt_index = $2";

pub(crate) const APPLY_SUMMARY_SQL: &str = "SELECT ff_apply_summary($1, $2, $3::jsonb, $4)";

pub(crate) const NOTE_LIVE_FRAME_SQL: &str = "SELECT ff_note_live_frame($1, $2, $3, $4, $5, $6, $7)";

/// How often a parked tail re-reads even without a wake-up.
const TAIL_RECHECK: std::time::Duration = std::time::Duration::from_millis(500);

pub(crate) static APPEND_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        r#"
WITH owner AS (
    SELECT e.execution_id, e.current_attempt_index FROM ff_execution e WHERE {FENCE} FOR SHARE
),
counter AS (
    UPDATE ff_attempt a SET frame_count = a.frame_count + 1
    FROM owner o WHERE a.execution_id = o.execution_id AND a.attempt_index = o.current_attempt_index
    RETURNING a.execution_id, a.attempt_index, a.frame_count
)
INSERT INTO ff_frame (execution_id, attempt_index, seq, kind, frame_type, correlation_id, bytes, appended_at_ms, mode)
SELECT execution_id, attempt_index, frame_count, $5::ff_frame_kind, $6, $7, $8, ff_now_ms(), $9::ff_frame_mode FROM counter
RETURNING seq, appended_at_ms
"#
    )
});

/// Appends a frame; `None` when the fence failed.
pub(crate) async fn append(
    pool: &Db,
    p: &HandlePayload,
    frame: &Frame,
) -> Result<Option<AppendFrameOutcome>, EngineError> {
    let insert = bind_fence(sqlx::query(&APPEND_SQL), p)
        .bind(frame.kind.as_str())
        .bind(frame.frame_type.as_str())
        .bind(frame.correlation_id.as_deref())
        .bind(frame.bytes.as_slice())
        .bind(frame.mode.as_str());
    if frame.mode == StreamMode::Durable {
        let row = insert.fetch_optional(pool).await.map_err(map_sqlx)?;
        return row.map(|r| appended(&r, None)).transpose();
    }
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    let Some(row) = insert.fetch_optional(&mut *tx).await.map_err(map_sqlx)? else {
        return tx.abandon(Ok(None)).await;
    };
    let ms: i64 = col(&row, "appended_at_ms")?;
    let (id, attempt) = (p.execution_id.uuid(), p.attempt_index.0 as i32);
    let mut summary_version = None;
    match &frame.mode {
        StreamMode::Durable => {}
        StreamMode::DurableSummary { .. } => {
            let patch: serde_json::Value = serde_json::from_slice(&frame.bytes)
                .map_err(|e| EngineError::invalid(format!("summary patch is not JSON: {e}")))?;
            let version: i64 = sqlx::query_scalar(APPLY_SUMMARY_SQL)
                .bind(id)
                .bind(attempt)
                .bind(patch)
                .bind(ms)
                .fetch_one(&mut *tx)
                .await
                .map_err(map_sqlx)?;
            summary_version = Some(non_negative("version", version)?);
        }
        StreamMode::BestEffortLive { ttl_ms, maxlen_floor, maxlen_ceiling, ema_alpha } => {
            sqlx::query(NOTE_LIVE_FRAME_SQL)
                .bind(id)
                .bind(attempt)
                .bind(ms)
                .bind(i64::try_from(*ttl_ms).unwrap_or(i64::MAX))
                .bind(*maxlen_floor as i32)
                .bind(*maxlen_ceiling as i32)
                .bind(*ema_alpha)
                .execute(&mut *tx)
                .await
                .map_err(map_sqlx)?;
        }
    }
    tx.commit().await.map_err(map_sqlx)?;
    appended(&row, summary_version).map(Some)
}

fn appended(r: &PgRow, summary_version: Option<u64>) -> Result<AppendFrameOutcome, EngineError> {
    let (seq, ms): (i64, i64) = (col(r, "seq")?, col(r, "appended_at_ms")?);
    Ok(AppendFrameOutcome { stream_id: format!("{ms}-{seq}"), frame_count: seq as u64, summary_version })
}

fn frame_from_row(r: &PgRow) -> Result<StreamFrame, EngineError> {
    let seq: u64 = non_negative("seq", col::<i64>(r, "seq")?)?;
    let ms: i64 = col(r, "appended_at_ms")?;
    Ok(StreamFrame {
        id: format!("{ms}-{seq}"),
        seq,
        kind: FrameKind::parse(&col::<String>(r, "kind")?)?,
        frame_type: col(r, "frame_type")?,
        bytes: col(r, "bytes")?,
        correlation_id: col(r, "correlation_id")?,
        appended_at: TimestampMs(ms),
        mode: col(r, "mode")?,
    })
}

fn closure(ended_at: Option<i64>, state: &str) -> (Option<TimestampMs>, Option<String>) {
    (ended_at.map(TimestampMs), ended_at.map(|_| state.strip_prefix("ended_").unwrap_or(state).to_owned()))
}

/// Reads frames `from..=to`.
pub(crate) async fn read(
    pool: &Db,
    id: &ExecutionId,
    attempt: AttemptIndex,
    from: StreamCursor,
    to: StreamCursor,
    count_limit: u64,
) -> Result<StreamFrames, EngineError> {
    if count_limit == 0 || count_limit > MAX_STREAM_READ {
        return Err(EngineError::invalid(format!("count_limit {count_limit} outside 1..={MAX_STREAM_READ}")));
    }
    let attempt_row: Option<(Option<i64>, String, i16, i64)> = sqlx::query_as(READ_ATTEMPT_SQL)
        .bind(id.uuid())
        .bind(attempt.0 as i32)
        .fetch_optional(pool)
        .await
        .map_err(map_sqlx)?;
    let Some((ended_at, state, partition, frame_count)) = attempt_row else {
        return Err(EngineError::NotFound { entity: "attempt" });
    };
    if partition as u16 != id.partition_index() {
        return Err(EngineError::NotFound { entity: "attempt" });
    }
    let lo = i64::try_from(from.seq_bound()).unwrap_or(i64::MAX);
    let hi = i64::try_from(to.seq_bound()).unwrap_or(i64::MAX);
    let rows = sqlx::query(READ_FRAMES_SQL)
        .bind(id.uuid())
        .bind(attempt.0 as i32)
        .bind(lo)
        .bind(hi)
        .bind(count_limit as i64)
        .fetch_all(pool)
        .await
        .map_err(map_sqlx)?;
    let frames = rows.iter().map(frame_from_row).collect::<Result<Vec<_>, _>>()?;
    let (closed_at, closed_reason) = closure(ended_at, &state);
    Ok(StreamFrames { frames, closed_at, closed_reason, last_seq: non_negative("frame_count", frame_count)? })
}

/// One read of a tail: the frames after `after_seq` and the attempt's closure; `Err(NotFound)`
/// when the attempt does not exist. Also returns the attempt's frame count.
async fn read_after(
    pool: &Db,
    id: &ExecutionId,
    attempt: AttemptIndex,
    after_seq: i64,
    count_limit: u64,
    visibility: TailVisibility,
) -> Result<(StreamFrames, i64), EngineError> {
    let rows = sqlx::query(TAIL_SQL)
        .bind(id.uuid())
        .bind(attempt.0 as i32)
        .bind(after_seq)
        .bind(count_limit as i64)
        .bind(visibility == TailVisibility::All)
        .fetch_all(pool)
        .await
        .map_err(map_sqlx)?;
    let Some(first) = rows.first() else {
        return Err(EngineError::NotFound { entity: "attempt" });
    };
    if col::<i16>(first, "partition_key")? as u16 != id.partition_index() {
        return Err(EngineError::NotFound { entity: "attempt" });
    }
    let (closed_at, closed_reason) = closure(col(first, "ended_at_ms")?, &col::<String>(first, "state")?);
    let frame_count: i64 = col(first, "frame_count")?;
    let mut frames = Vec::with_capacity(rows.len());
    for r in &rows {
        if col::<Option<i64>>(r, "seq")?.is_some() {
            frames.push(frame_from_row(r)?);
        }
    }
    let last_seq = non_negative("frame_count", frame_count)?;
    Ok((StreamFrames { frames, closed_at, closed_reason, last_seq }, frame_count))
}

/// `tail_stream`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn tail(
    backend: &PostgresBackend,
    id: &ExecutionId,
    attempt: AttemptIndex,
    after: StreamCursor,
    block_ms: u64,
    count_limit: u64,
    visibility: TailVisibility,
) -> Result<StreamFrames, EngineError> {
    if count_limit == 0 || count_limit > MAX_STREAM_READ {
        return Err(EngineError::invalid(format!("count_limit {count_limit} outside 1..={MAX_STREAM_READ}")));
    }
    if block_ms > MAX_TAIL_BLOCK_MS {
        return Err(EngineError::invalid(format!("block_ms {block_ms} exceeds {MAX_TAIL_BLOCK_MS}")));
    }
    check_id(id, &backend.partitions)?;
    let pool = &backend.pool;
    // Subscribe before the first read, so a frame appended between the read and the wait
    // still wakes this tail.
    let following = (block_ms > 0).then(|| {
        let feeds = backend.follow();
        (feeds.following(), feeds.stream((id.uuid(), attempt.0 as i32)))
    });
    let mut woken = following.as_ref().map(|(_, feed)| feed.subscribe());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(block_ms);
    let after_seq = match after {
        StreamCursor::Start => 0,
        StreamCursor::At { seq, .. } => i64::try_from(seq).unwrap_or(i64::MAX),
        StreamCursor::End => read_after(pool, id, attempt, i64::MAX, 1, visibility).await?.1,
    };
    loop {
        if let Some(w) = woken.as_mut() {
            w.borrow_and_update();
        }
        let (frames, _) = read_after(pool, id, attempt, after_seq, count_limit, visibility).await?;
        let now = tokio::time::Instant::now();
        if !frames.frames.is_empty() || frames.closed_at.is_some() || block_ms == 0 || now >= deadline {
            return Ok(frames);
        }
        let Some(w) = woken.as_mut() else { return Ok(frames) };
        tokio::select! {
            _ = w.changed() => {}
            _ = tokio::time::sleep_until(deadline.min(now + TAIL_RECHECK)) => {}
        }
    }
}

/// `read_summary`.
pub(crate) async fn read_summary(
    pool: &Db,
    id: &ExecutionId,
    attempt: AttemptIndex,
) -> Result<Option<SummaryDocument>, EngineError> {
    let row = sqlx::query(READ_SUMMARY_SQL)
        .bind(id.uuid())
        .bind(attempt.0 as i32)
        .fetch_optional(pool)
        .await
        .map_err(map_sqlx)?;
    let Some(r) = row else {
        // Absent attempt and absent summary are told apart.
        read_after(pool, id, attempt, i64::MAX, 1, TailVisibility::All).await?;
        return Ok(None);
    };
    let patch_kind: String = col(&r, "patch_kind")?;
    if patch_kind != PatchKind::JsonMergePatch.as_str() {
        return Err(EngineError::validation(
            ff_core::ValidationKind::Corruption,
            format!("unknown summary patch kind {patch_kind:?}"),
        ));
    }
    Ok(Some(SummaryDocument {
        document_json: col(&r, "document")?,
        version: non_negative("version", col::<i64>(&r, "version")?)?,
        patch_kind: PatchKind::JsonMergePatch,
        first_applied_ms: TimestampMs(col(&r, "first_applied_ms")?),
        last_updated_ms: TimestampMs(col(&r, "last_updated_ms")?),
    }))
}

#[async_trait]
impl StreamBackend for PostgresBackend {
    async fn append_frame(&self, handle: &Handle, frame: Frame) -> Result<AppendFrameOutcome, EngineError> {
        let p = self.decode(handle)?;
        frame.validate()?;
        match append(&self.pool, &p, &frame).await? {
            Some(o) => {
                self.pulse().frame((p.execution_id.uuid(), p.attempt_index.0 as i32));
                Ok(o)
            }
            None => Err(self.rejected(&p).await),
        }
    }

    async fn read_stream(
        &self,
        execution_id: &ExecutionId,
        attempt_index: AttemptIndex,
        from: StreamCursor,
        to: StreamCursor,
        count_limit: u64,
    ) -> Result<StreamFrames, EngineError> {
        check_id(execution_id, &self.partitions)?;
        read(&self.pool, execution_id, attempt_index, from, to, count_limit).await
    }

    async fn tail_stream(
        &self,
        execution_id: &ExecutionId,
        attempt_index: AttemptIndex,
        after: StreamCursor,
        block_ms: u64,
        count_limit: u64,
        visibility: TailVisibility,
    ) -> Result<StreamFrames, EngineError> {
        tail(self, execution_id, attempt_index, after, block_ms, count_limit, visibility).await
    }

    async fn read_summary(
        &self,
        execution_id: &ExecutionId,
        attempt_index: AttemptIndex,
    ) -> Result<Option<SummaryDocument>, EngineError> {
        check_id(execution_id, &self.partitions)?;
        read_summary(&self.pool, execution_id, attempt_index).await
    }
}
