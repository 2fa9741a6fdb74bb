//! Attempt streams: binary-safe fenced appends, ordered range reads, closure when the attempt ends.

mod common;

use common::*;
use ff_core::*;

fn frame(bytes: &[u8], kind: FrameKind) -> Frame {
    Frame { bytes: bytes.to_vec(), kind, frame_type: "chunk".into(), correlation_id: Some("c-1".into()) }
}

#[tokio::test]
async fn frames_append_in_order_and_read_back_verbatim() {
    let fx = Fixture::new().await;
    let id = fx.create("stream").await;
    let h = fx.claim("stream", "w").await;
    let binary = [0u8, 159, 146, 150, 255];
    let a = fx.backend.append_frame(&h, frame(b"hello", FrameKind::Stdout)).await.unwrap();
    let b = fx.backend.append_frame(&h, frame(&binary, FrameKind::Blob)).await.unwrap();
    let c = fx.backend.append_frame(&h, frame(b"{}", FrameKind::Event)).await.unwrap();
    assert_eq!((a.frame_count, b.frame_count, c.frame_count), (1, 2, 3));
    let all = fx.backend.read_stream(&id, AttemptIndex(0), StreamCursor::Start, StreamCursor::End, 100).await.unwrap();
    assert_eq!(all.frames.len(), 3);
    assert_eq!(all.frames[1].bytes, binary);
    assert_eq!(all.frames[1].kind, FrameKind::Blob);
    assert_eq!(all.frames[0].correlation_id.as_deref(), Some("c-1"));
    assert_eq!(all.frames[2].id, c.stream_id);
    assert!(all.closed_at.is_none());
    // Inclusive ranges and limits.
    let from = StreamCursor::parse(&b.stream_id).unwrap();
    let tail = fx.backend.read_stream(&id, AttemptIndex(0), from, StreamCursor::End, 100).await.unwrap();
    assert_eq!(tail.frames.iter().map(|f| f.seq).collect::<Vec<_>>(), vec![2, 3]);
    let one = fx.backend.read_stream(&id, AttemptIndex(0), StreamCursor::Start, StreamCursor::End, 1).await.unwrap();
    assert_eq!(one.frames.len(), 1);
    fx.backend.complete(&h, None).await.unwrap();
    let closed =
        fx.backend.read_stream(&id, AttemptIndex(0), StreamCursor::Start, StreamCursor::End, 100).await.unwrap();
    assert!(closed.closed_at.is_some());
    assert_eq!(closed.closed_reason.as_deref(), Some("success"));
    // After the attempt ended nobody can append.
    let e = fx.backend.append_frame(&h, frame(b"late", FrameKind::Stdout)).await.unwrap_err();
    assert!(matches!(e, EngineError::State(StateKind::ExecutionNotActive(_))), "{e:?}");
}

#[tokio::test]
async fn stream_bad_input_is_rejected() {
    let fx = Fixture::new().await;
    let id = fx.create("stream").await;
    let h = fx.claim("stream", "w").await;
    let before = fx.fingerprint(&id).await;
    let big = Frame { bytes: vec![0; MAX_FRAME_BYTES + 1], ..frame(b"", FrameKind::Blob) };
    assert_eq!(fx.backend.append_frame(&h, big).await.unwrap_err().code(), "retention_limit_exceeded");
    let bad_type = Frame { frame_type: "No Spaces".into(), ..frame(b"x", FrameKind::Stdout) };
    assert_eq!(fx.backend.append_frame(&h, bad_type).await.unwrap_err().code(), "invalid_frame_type");
    assert_eq!(fx.fingerprint(&id).await, before);
    let e = fx.backend.read_stream(&id, AttemptIndex(7), StreamCursor::Start, StreamCursor::End, 10).await.unwrap_err();
    assert!(matches!(e, EngineError::NotFound { entity: "attempt" }), "{e:?}");
    let e = fx.backend.read_stream(&id, AttemptIndex(0), StreamCursor::Start, StreamCursor::End, 0).await.unwrap_err();
    assert_eq!(e.code(), "invalid_input");
    let e =
        fx.backend.read_stream(&id, AttemptIndex(0), StreamCursor::Start, StreamCursor::End, 10_001).await.unwrap_err();
    assert_eq!(e.code(), "invalid_input");
}
