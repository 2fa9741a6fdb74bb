//! Per-attempt output streams: frames appended by the lease holder, read by anyone.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, ValidationKind};
use crate::id::TimestampMs;

/// Largest frame payload in bytes (64 KiB).
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Most frames one read returns.
pub const MAX_STREAM_READ: u64 = 10_000;
/// Longest frame type in bytes.
pub const MAX_FRAME_TYPE_BYTES: usize = 64;
/// JSON Schema pattern of a frame type (at most [`MAX_FRAME_TYPE_BYTES`]).
pub const FRAME_TYPE_PATTERN: &str = r"^[a-z0-9_.-]+$";
/// JSON Schema pattern of a stream cursor: `-`, `+` or `<ms>-<seq>`.
pub const STREAM_CURSOR_PATTERN: &str = r"^(?:-|\+|[0-9]{1,18}-[0-9]{1,19})$";

/// Channel of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FrameKind {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// A structured event.
    Event,
    /// An opaque binary blob.
    Blob,
}

impl FrameKind {
    /// Every kind, in declaration order.
    pub const ALL: &'static [Self] = &[Self::Stdout, Self::Stderr, Self::Event, Self::Blob];

    /// Snake_case label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::Event => "event",
            Self::Blob => "blob",
        }
    }

    /// Parses a stored label.
    pub fn parse(s: &str) -> Result<Self, EngineError> {
        match s {
            "stdout" => Ok(Self::Stdout),
            "stderr" => Ok(Self::Stderr),
            "event" => Ok(Self::Event),
            "blob" => Ok(Self::Blob),
            other => Err(EngineError::validation(ValidationKind::Corruption, format!("unknown frame kind {other:?}"))),
        }
    }
}

/// One frame to append. Bytes are stored verbatim (binary safe).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Frame {
    /// Payload (at most [`MAX_FRAME_BYTES`]).
    pub bytes: Vec<u8>,
    /// Channel.
    pub kind: FrameKind,
    /// Application type label: 1..=64 bytes of `[a-z0-9_.-]`.
    pub frame_type: String,
    /// Optional correlation id.
    #[serde(default)]
    pub correlation_id: Option<String>,
}

impl Frame {
    /// Validates size and type.
    pub fn validate(&self) -> Result<(), EngineError> {
        if self.bytes.len() > MAX_FRAME_BYTES {
            return Err(EngineError::validation(
                ValidationKind::RetentionLimitExceeded,
                format!("frame is {} bytes; the limit is {MAX_FRAME_BYTES}", self.bytes.len()),
            ));
        }
        let t = &self.frame_type;
        let ok = !t.is_empty()
            && t.len() <= MAX_FRAME_TYPE_BYTES
            && t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'));
        if !ok {
            return Err(EngineError::validation(
                ValidationKind::InvalidFrameType,
                format!("frame type {t:?} must be 1..={MAX_FRAME_TYPE_BYTES} bytes of [a-z0-9_.-]"),
            ));
        }
        if let Some(c) = &self.correlation_id {
            crate::execution::validate_name("correlation_id", c, false)?;
        }
        Ok(())
    }
}

/// Result of an append.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AppendFrameOutcome {
    /// Entry id, `"<appended_at_ms>-<seq>"`.
    pub stream_id: String,
    /// Frames in this attempt's stream after the append.
    pub frame_count: u64,
}

/// Position in a stream. Entry ids are `"<ms>-<seq>"`; `seq` is 1-based and strictly increasing
/// within an attempt, and orders entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum StreamCursor {
    /// Before the first entry.
    Start,
    /// After the last entry.
    End,
    /// A concrete entry.
    At {
        /// Append time.
        ms: i64,
        /// Sequence number.
        seq: u64,
    },
}

impl StreamCursor {
    /// Parses `"-"` (start), `"+"` (end) or `"<ms>-<seq>"`.
    pub fn parse(s: &str) -> Result<Self, EngineError> {
        let bad = || EngineError::validation(ValidationKind::InvalidOffset, format!("malformed stream cursor {s:?}"));
        match s {
            "-" => Ok(Self::Start),
            "+" => Ok(Self::End),
            _ => {
                let (ms, seq) = s.split_once('-').ok_or_else(bad)?;
                Ok(Self::At { ms: ms.parse().map_err(|_| bad())?, seq: seq.parse().map_err(|_| bad())? })
            }
        }
    }

    /// Sequence bound this cursor denotes (0 for start, `u64::MAX` for end).
    pub fn seq_bound(&self) -> u64 {
        match self {
            Self::Start => 0,
            Self::End => u64::MAX,
            Self::At { seq, .. } => *seq,
        }
    }
}

impl fmt::Display for StreamCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Start => f.write_str("-"),
            Self::End => f.write_str("+"),
            Self::At { ms, seq } => write!(f, "{ms}-{seq}"),
        }
    }
}

/// One stored frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StreamFrame {
    /// Entry id `"<ms>-<seq>"`.
    pub id: String,
    /// Sequence number.
    pub seq: u64,
    /// Channel.
    pub kind: FrameKind,
    /// Type label.
    pub frame_type: String,
    /// Payload.
    pub bytes: Vec<u8>,
    /// Correlation id.
    pub correlation_id: Option<String>,
    /// Append time.
    pub appended_at: TimestampMs,
}

/// A range of frames plus the stream's closure status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StreamFrames {
    /// Frames in order.
    pub frames: Vec<StreamFrame>,
    /// When the attempt ended (no more frames will arrive).
    pub closed_at: Option<TimestampMs>,
    /// How the attempt ended.
    pub closed_reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_parsing() {
        assert_eq!(StreamCursor::parse("-").unwrap(), StreamCursor::Start);
        assert_eq!(StreamCursor::parse("+").unwrap(), StreamCursor::End);
        assert_eq!(StreamCursor::parse("17-3").unwrap(), StreamCursor::At { ms: 17, seq: 3 });
        for bad in ["", "x", "1-", "-1-2", "1-x"] {
            assert_eq!(StreamCursor::parse(bad).unwrap_err().code(), "invalid_offset", "{bad}");
        }
    }

    #[test]
    fn frame_validation() {
        let ok =
            Frame { bytes: vec![0, 255], kind: FrameKind::Blob, frame_type: "chunk.v1".into(), correlation_id: None };
        assert!(ok.validate().is_ok());
        let big = Frame { bytes: vec![0; MAX_FRAME_BYTES + 1], ..ok.clone() };
        assert_eq!(big.validate().unwrap_err().code(), "retention_limit_exceeded");
        let bad_type = Frame { frame_type: "Bad Type".into(), ..ok };
        assert_eq!(bad_type.validate().unwrap_err().code(), "invalid_frame_type");
    }
}
