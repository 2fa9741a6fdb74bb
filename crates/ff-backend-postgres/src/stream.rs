//! Attempt streams: fenced appends and range reads.
//!
//! An append locks the execution row `FOR SHARE` under the lease fence (so it cannot interleave
//! with the attempt ending), bumps the attempt's frame counter (which serialises appends and
//! mints the sequence number) and inserts the frame, in one statement. Bytes are stored as
//! `bytea`, verbatim.

use std::sync::LazyLock;

use async_trait::async_trait;
use ff_core::Handle;
use ff_core::backend::StreamBackend;

use ff_core::{
    AppendFrameOutcome, AttemptIndex, EngineError, ExecutionId, Frame, FrameKind, HandlePayload, MAX_STREAM_READ,
    StreamCursor, StreamFrame, StreamFrames, TimestampMs,
};
use sqlx::PgPool;

use crate::backend::PostgresBackend;
use crate::error::map_sqlx;
use crate::fence::check_id;
use crate::fence::{FENCE, bind_fence};
use crate::row::{col, non_negative};

pub(crate) const READ_ATTEMPT_SQL: &str = "SELECT a.ended_at_ms, a.state::text, e.partition_key FROM ff_attempt a JOIN ff_execution e USING (execution_id) \
         WHERE a.execution_id = $1 AND a.attempt_index = $2";

pub(crate) const READ_FRAMES_SQL: &str = "SELECT seq, kind::text AS kind, frame_type, correlation_id, bytes, appended_at_ms FROM ff_frame \
         WHERE execution_id = $1 AND attempt_index = $2 AND seq >= $3 AND seq <= $4 ORDER BY seq LIMIT $5";

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
INSERT INTO ff_frame (execution_id, attempt_index, seq, kind, frame_type, correlation_id, bytes, appended_at_ms)
SELECT execution_id, attempt_index, frame_count, $5::ff_frame_kind, $6, $7, $8, ff_now_ms() FROM counter
RETURNING seq, appended_at_ms
"#
    )
});

/// Appends a frame; `None` when the fence failed.
pub(crate) async fn append(
    pool: &PgPool,
    p: &HandlePayload,
    frame: &Frame,
) -> Result<Option<AppendFrameOutcome>, EngineError> {
    let row = bind_fence(sqlx::query(&APPEND_SQL), p)
        .bind(frame.kind.as_str())
        .bind(frame.frame_type.as_str())
        .bind(frame.correlation_id.as_deref())
        .bind(frame.bytes.as_slice())
        .fetch_optional(pool)
        .await
        .map_err(map_sqlx)?;
    row.map(|r| {
        let (seq, ms): (i64, i64) = (col(&r, "seq")?, col(&r, "appended_at_ms")?);
        Ok(AppendFrameOutcome { stream_id: format!("{ms}-{seq}"), frame_count: seq as u64 })
    })
    .transpose()
}

/// Reads frames `from..=to`.
pub(crate) async fn read(
    pool: &PgPool,
    id: &ExecutionId,
    attempt: AttemptIndex,
    from: StreamCursor,
    to: StreamCursor,
    count_limit: u64,
) -> Result<StreamFrames, EngineError> {
    if count_limit == 0 || count_limit > MAX_STREAM_READ {
        return Err(EngineError::invalid(format!("count_limit {count_limit} outside 1..={MAX_STREAM_READ}")));
    }
    let attempt_row: Option<(Option<i64>, String, i16)> = sqlx::query_as(READ_ATTEMPT_SQL)
        .bind(id.uuid())
        .bind(attempt.0 as i32)
        .fetch_optional(pool)
        .await
        .map_err(map_sqlx)?;
    let Some((ended_at, state, partition)) = attempt_row else {
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
    let mut frames = Vec::with_capacity(rows.len());
    for r in &rows {
        let seq: u64 = non_negative("seq", col::<i64>(r, "seq")?)?;
        let ms: i64 = col(r, "appended_at_ms")?;
        frames.push(StreamFrame {
            id: format!("{ms}-{seq}"),
            seq,
            kind: FrameKind::parse(&col::<String>(r, "kind")?)?,
            frame_type: col(r, "frame_type")?,
            bytes: col(r, "bytes")?,
            correlation_id: col(r, "correlation_id")?,
            appended_at: TimestampMs(ms),
        });
    }
    Ok(StreamFrames {
        frames,
        closed_at: ended_at.map(TimestampMs),
        closed_reason: ended_at.map(|_| state.strip_prefix("ended_").unwrap_or(&state).to_owned()),
    })
}

#[async_trait]
impl StreamBackend for PostgresBackend {
    async fn append_frame(&self, handle: &Handle, frame: Frame) -> Result<AppendFrameOutcome, EngineError> {
        let p = self.decode(handle)?;
        frame.validate()?;
        match append(&self.pool, &p, &frame).await? {
            Some(o) => Ok(o),
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
}
