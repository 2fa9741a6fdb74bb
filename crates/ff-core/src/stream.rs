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
    /// How the stream keeps this frame (durable by default).
    #[serde(default)]
    pub mode: StreamMode,
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
        self.mode.validate()?;
        if matches!(self.mode, StreamMode::DurableSummary { .. }) {
            match serde_json::from_slice::<serde_json::Value>(&self.bytes) {
                Ok(serde_json::Value::Object(_)) => {}
                _ => {
                    return Err(EngineError::invalid(
                        "a durable-summary frame's payload must be a JSON object (an RFC 7396 merge patch)",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Default number of best-effort frames a live stream keeps at least.
pub const BEST_EFFORT_MAXLEN_FLOOR: u32 = 64;
/// Default number of best-effort frames a live stream keeps at most.
pub const BEST_EFFORT_MAXLEN_CEILING: u32 = 16_384;
/// Default weight of the newest interval in the append-rate average.
pub const BEST_EFFORT_EMA_ALPHA: f64 = 0.2;
/// The string a summary patch writes to store a JSON `null` (a bare `null` deletes the key).
pub const SUMMARY_NULL_SENTINEL: &str = "__ff_null__";

/// How a stream keeps a frame.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamMode {
    /// Kept until the execution is trimmed by retention.
    #[default]
    Durable,
    /// Kept, and its payload (a JSON object) is merged into the attempt's summary document as an
    /// RFC 7396 merge patch: a `null` member deletes the key, the string
    /// [`SUMMARY_NULL_SENTINEL`] stores a JSON `null`.
    DurableSummary {
        /// The patch format.
        #[serde(default)]
        patch_kind: PatchKind,
    },
    /// A live frame for watchers: the stream keeps only the newest best-effort frames, about
    /// twice as many as arrive in `ttl_ms` at the recent append rate, clamped to
    /// `maxlen_floor..=maxlen_ceiling`. Trimming never touches durable frames.
    BestEffortLive {
        /// How long a watcher should be able to catch up, in ms (1..=86,400,000).
        ttl_ms: u64,
        /// Fewest best-effort frames kept.
        #[serde(default = "default_maxlen_floor")]
        maxlen_floor: u32,
        /// Most best-effort frames kept.
        #[serde(default = "default_maxlen_ceiling")]
        maxlen_ceiling: u32,
        /// Weight of the newest interval in the moving average of the append rate (0 < α ≤ 1).
        #[serde(default = "default_ema_alpha")]
        ema_alpha: f64,
    },
}

fn default_maxlen_floor() -> u32 {
    BEST_EFFORT_MAXLEN_FLOOR
}
fn default_maxlen_ceiling() -> u32 {
    BEST_EFFORT_MAXLEN_CEILING
}
fn default_ema_alpha() -> f64 {
    BEST_EFFORT_EMA_ALPHA
}

// Validation rejects a NaN alpha, so equality is total on every mode a backend accepts.
impl Eq for StreamMode {}

impl StreamMode {
    /// A live mode with the default floor, ceiling and alpha.
    pub fn best_effort_live(ttl_ms: u64) -> Self {
        Self::BestEffortLive {
            ttl_ms,
            maxlen_floor: BEST_EFFORT_MAXLEN_FLOOR,
            maxlen_ceiling: BEST_EFFORT_MAXLEN_CEILING,
            ema_alpha: BEST_EFFORT_EMA_ALPHA,
        }
    }

    /// A summary mode with the merge-patch format.
    pub fn durable_summary() -> Self {
        Self::DurableSummary { patch_kind: PatchKind::JsonMergePatch }
    }

    /// The stored label: `durable`, `summary` or `best_effort`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Durable => "durable",
            Self::DurableSummary { .. } => "summary",
            Self::BestEffortLive { .. } => "best_effort",
        }
    }

    /// Checks the live mode's numbers.
    pub fn validate(&self) -> Result<(), EngineError> {
        if let Self::BestEffortLive { ttl_ms, maxlen_floor, maxlen_ceiling, ema_alpha } = self {
            if !(1..=86_400_000).contains(ttl_ms) {
                return Err(EngineError::invalid(format!("ttl_ms {ttl_ms} outside 1..=86400000")));
            }
            if *maxlen_floor == 0 || maxlen_floor > maxlen_ceiling || *maxlen_ceiling > 1_000_000 {
                return Err(EngineError::invalid(format!(
                    "maxlen_floor {maxlen_floor} and maxlen_ceiling {maxlen_ceiling} must satisfy 1 <= floor <= ceiling <= 1000000"
                )));
            }
            if !(*ema_alpha > 0.0 && *ema_alpha <= 1.0) {
                return Err(EngineError::invalid(format!("ema_alpha {ema_alpha} outside (0, 1]")));
            }
        }
        Ok(())
    }
}

/// Format of a summary frame's patch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PatchKind {
    /// RFC 7396 JSON merge patch.
    #[default]
    JsonMergePatch,
}

impl PatchKind {
    /// Stored label.
    pub fn as_str(&self) -> &'static str {
        "json-merge-patch"
    }
}

/// Which frames a tail returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TailVisibility {
    /// Every frame.
    #[default]
    All,
    /// Durable and summary frames only.
    ExcludeBestEffort,
}

/// An attempt's summary document: every summary frame's patch applied in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SummaryDocument {
    /// The document.
    pub document_json: serde_json::Value,
    /// Patches applied.
    pub version: u64,
    /// Patch format.
    pub patch_kind: PatchKind,
    /// When the latest patch was applied.
    pub last_updated_ms: TimestampMs,
    /// When the first patch was applied.
    pub first_applied_ms: TimestampMs,
}

/// Longest a tail may block, in ms.
pub const MAX_TAIL_BLOCK_MS: u64 = 30_000;

/// Result of an append.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AppendFrameOutcome {
    /// Entry id, `"<appended_at_ms>-<seq>"`.
    pub stream_id: String,
    /// Frames appended to this attempt's stream so far, this one included (best-effort frames
    /// trimmed since count too).
    pub frame_count: u64,
    /// The summary document's version after a summary frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary_version: Option<u64>,
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
    /// How the stream keeps it: `durable`, `summary` or `best_effort`.
    #[serde(default = "durable_label")]
    pub mode: String,
}

fn durable_label() -> String {
    "durable".to_owned()
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
    /// Sequence number of the newest frame appended to the attempt so far (0: none yet), so a
    /// reader can start "from now" with `StreamCursor::At { ms: 0, seq: last_seq }`.
    #[serde(default)]
    pub last_seq: u64,
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
        let ok = Frame {
            bytes: vec![0, 255],
            kind: FrameKind::Blob,
            frame_type: "chunk.v1".into(),
            correlation_id: None,
            mode: StreamMode::Durable,
        };
        assert!(ok.validate().is_ok());
        let big = Frame { bytes: vec![0; MAX_FRAME_BYTES + 1], ..ok.clone() };
        assert_eq!(big.validate().unwrap_err().code(), "retention_limit_exceeded");
        let bad_type = Frame { frame_type: "Bad Type".into(), ..ok };
        assert_eq!(bad_type.validate().unwrap_err().code(), "invalid_frame_type");
    }

    #[test]
    fn stream_mode_validation() {
        let frame = |mode: StreamMode, bytes: &[u8]| Frame {
            bytes: bytes.to_vec(),
            kind: FrameKind::Event,
            frame_type: "state".into(),
            correlation_id: None,
            mode,
        };
        assert!(frame(StreamMode::durable_summary(), br#"{"a":1}"#).validate().is_ok());
        for bad in [&b"not json"[..], b"[1,2]", b"3", b""] {
            assert_eq!(frame(StreamMode::durable_summary(), bad).validate().unwrap_err().code(), "invalid_input");
        }
        assert!(frame(StreamMode::best_effort_live(5_000), b"x").validate().is_ok());
        let live = |ttl_ms, maxlen_floor, maxlen_ceiling, ema_alpha| StreamMode::BestEffortLive {
            ttl_ms,
            maxlen_floor,
            maxlen_ceiling,
            ema_alpha,
        };
        for bad in [
            live(0, 64, 128, 0.2),
            live(1_000, 0, 128, 0.2),
            live(1_000, 200, 128, 0.2),
            live(1_000, 64, 128, 0.0),
            live(1_000, 64, 128, 1.5),
            live(1_000, 64, 128, f64::NAN),
        ] {
            assert_eq!(frame(bad.clone(), b"x").validate().unwrap_err().code(), "invalid_input", "{bad:?}");
        }
    }

    #[test]
    fn stream_mode_wire_form() {
        let json = serde_json::to_value(StreamMode::best_effort_live(2_000)).unwrap();
        assert_eq!(json["type"], "best_effort_live");
        let parsed: StreamMode = serde_json::from_str(r#"{"type":"best_effort_live","ttl_ms":2000}"#).unwrap();
        assert_eq!(parsed, StreamMode::best_effort_live(2_000));
        let parsed: StreamMode = serde_json::from_str(r#"{"type":"durable_summary"}"#).unwrap();
        assert_eq!(parsed, StreamMode::durable_summary());
        let frame: Frame = serde_json::from_str(r#"{"bytes":[1],"kind":"stdout","frame_type":"t"}"#).unwrap();
        assert_eq!(frame.mode, StreamMode::Durable);
    }
}
