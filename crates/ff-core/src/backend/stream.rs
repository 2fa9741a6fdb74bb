//! Streams: frames appended by the lease holder to its attempt, read back by anyone.

use async_trait::async_trait;

use crate::error::EngineError;
use crate::handle::Handle;
use crate::id::{AttemptIndex, ExecutionId};
use crate::stream::{AppendFrameOutcome, Frame, StreamCursor, StreamFrames, SummaryDocument, TailVisibility};

/// Appending to and reading attempt streams.
#[async_trait]
pub trait StreamBackend: Send + Sync {
    /// Appends a frame to the current attempt's stream (lease holder only).
    async fn append_frame(&self, handle: &Handle, frame: Frame) -> Result<AppendFrameOutcome, EngineError>;

    /// Reads frames `from..=to` of an attempt's stream, at most `count_limit`
    /// (1..=[`MAX_STREAM_READ`](crate::stream::MAX_STREAM_READ)).
    async fn read_stream(
        &self,
        execution_id: &ExecutionId,
        attempt_index: AttemptIndex,
        from: StreamCursor,
        to: StreamCursor,
        count_limit: u64,
    ) -> Result<StreamFrames, EngineError>;

    /// Frames after `after` (exclusive; `Start` = from the beginning, `End` = only frames
    /// appended from now on), at most `count_limit`. With `block_ms` > 0 (at most
    /// [`MAX_TAIL_BLOCK_MS`](crate::stream::MAX_TAIL_BLOCK_MS)) and nothing to return yet, waits
    /// up to that long for a frame or for the attempt to end, without holding a database
    /// connection; an empty, open result means the time ran out.
    #[allow(clippy::too_many_arguments)]
    async fn tail_stream(
        &self,
        execution_id: &ExecutionId,
        attempt_index: AttemptIndex,
        after: StreamCursor,
        block_ms: u64,
        count_limit: u64,
        visibility: TailVisibility,
    ) -> Result<StreamFrames, EngineError>;

    /// The attempt's summary document, if a summary frame was ever appended.
    async fn read_summary(
        &self,
        execution_id: &ExecutionId,
        attempt_index: AttemptIndex,
    ) -> Result<Option<SummaryDocument>, EngineError>;
}
