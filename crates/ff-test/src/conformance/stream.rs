//! Streams: binary-safe fenced appends, ordered inclusive range reads, closure when the attempt
//! ends, and bad input.

use ff_core::*;

use super::fixture::*;
use super::harness::ConformanceHarness;

/// Frames append in order and read back verbatim; ranges are inclusive and limited; the stream
/// closes with the attempt, after which nobody can append.
pub async fn frames_append_in_order_and_read_back_verbatim<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("stream").await;
    let h = fx.claim("stream", "w").await;
    let binary = [0u8, 159, 146, 150, 255];
    let a = fx.backend.append_frame(&h, frame(b"hello", FrameKind::Stdout)).await.unwrap();
    let b = fx.backend.append_frame(&h, frame(&binary, FrameKind::Blob)).await.unwrap();
    let c = fx.backend.append_frame(&h, frame(b"{}", FrameKind::Event)).await.unwrap();
    assert_eq!((a.frame_count, b.frame_count, c.frame_count), (1, 2, 3));
    let read = |from, limit| fx.backend.read_stream(&id, AttemptIndex(0), from, StreamCursor::End, limit);
    let all = read(StreamCursor::Start, 100).await.unwrap();
    assert_eq!(all.frames.len(), 3);
    assert_eq!(all.frames[0].bytes, b"hello");
    assert_eq!(all.frames[1].bytes, binary);
    assert_eq!(all.frames[1].kind, FrameKind::Blob);
    assert_eq!(all.frames[0].correlation_id.as_deref(), Some("c-1"));
    assert_eq!(all.frames[2].id, c.stream_id);
    assert!(all.closed_at.is_none());
    let tail = read(StreamCursor::parse(&b.stream_id).unwrap(), 100).await.unwrap();
    assert_eq!(tail.frames.iter().map(|f| f.seq).collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!(read(StreamCursor::Start, 1).await.unwrap().frames.len(), 1);
    fx.backend.complete(&h, None).await.unwrap();
    let closed = read(StreamCursor::Start, 100).await.unwrap();
    assert!(closed.closed_at.is_some());
    assert_eq!(closed.closed_reason.as_deref(), Some("success"));
    let before = fx.fingerprint(&id).await;
    let e = fx.backend.append_frame(&h, frame(b"late", FrameKind::Stdout)).await.unwrap_err();
    assert!(matches!(e, EngineError::State(StateKind::ExecutionNotActive(_))), "{e:?}");
    assert_eq!(fx.fingerprint(&id).await, before);
}

/// An append with a superseded lease is fenced out and the new attempt's stream is its own.
pub async fn fenced_append_after_reclaim_is_rejected<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("stream").await;
    let old = fx.claim("stream", "w1").await;
    fx.backend.append_frame(&old, frame(b"first", FrameKind::Stdout)).await.unwrap();
    fx.lose_lease(&id).await;
    let new = fx.claim("stream", "w2").await;
    let before = fx.fingerprint(&id).await;
    let e = fx.backend.append_frame(&old, frame(b"stale", FrameKind::Stdout)).await.unwrap_err();
    assert!(matches!(e, EngineError::State(StateKind::StaleLease)), "{e:?}");
    assert_eq!(fx.fingerprint(&id).await, before);
    fx.backend.append_frame(&new, frame(b"second", FrameKind::Stdout)).await.unwrap();
    let read = |attempt| fx.backend.read_stream(&id, attempt, StreamCursor::Start, StreamCursor::End, 100);
    let old_frames = read(AttemptIndex(0)).await.unwrap().frames;
    assert_eq!(old_frames.iter().map(|f| f.bytes.clone()).collect::<Vec<_>>(), vec![b"first".to_vec()]);
    let new_frames = read(AttemptIndex(1)).await.unwrap().frames;
    assert_eq!(new_frames.iter().map(|f| f.bytes.clone()).collect::<Vec<_>>(), vec![b"second".to_vec()]);
}

/// Oversized frames, malformed frame types, unknown attempts and out-of-range limits get
/// specific errors, and nothing is written.
pub async fn stream_bad_input_is_rejected<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("stream").await;
    let h = fx.claim("stream", "w").await;
    let before = fx.fingerprint(&id).await;
    let big = Frame { bytes: vec![0; MAX_FRAME_BYTES + 1], ..frame(b"", FrameKind::Blob) };
    assert_eq!(fx.backend.append_frame(&h, big).await.unwrap_err().code(), "retention_limit_exceeded");
    let bad_type = Frame { frame_type: "No Spaces".into(), ..frame(b"x", FrameKind::Stdout) };
    assert_eq!(fx.backend.append_frame(&h, bad_type).await.unwrap_err().code(), "invalid_frame_type");
    assert_eq!(fx.fingerprint(&id).await, before);
    let read = |attempt, limit| fx.backend.read_stream(&id, attempt, StreamCursor::Start, StreamCursor::End, limit);
    let e = read(AttemptIndex(7), 10).await.unwrap_err();
    assert!(matches!(e, EngineError::NotFound { entity: "attempt" }), "{e:?}");
    assert_eq!(read(AttemptIndex(0), 0).await.unwrap_err().code(), "invalid_input");
    assert_eq!(read(AttemptIndex(0), MAX_STREAM_READ + 1).await.unwrap_err().code(), "invalid_input");
}
