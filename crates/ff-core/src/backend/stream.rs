//! Streams: frames appended by the lease holder to its attempt, read back by anyone.

use async_trait::async_trait;

use crate::error::EngineError;
use crate::handle::Handle;
use crate::id::{AttemptIndex, ExecutionId};
use crate::stream::{AppendFrameOutcome, Frame, StreamCursor, StreamFrames};

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
}
