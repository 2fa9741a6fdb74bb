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

/// A frame of `mode` carrying `bytes`.
fn moded(bytes: &[u8], mode: StreamMode) -> Frame {
    Frame { mode, ..frame(bytes, FrameKind::Event) }
}

/// A tail returns what is there at once; with nothing there it waits and wakes for the next
/// frame, and for the attempt's end; `+` starts after the newest frame; bad input is refused.
pub async fn a_tail_waits_for_the_next_frame_and_for_the_end<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("tail").await;
    let h = fx.claim("tail", "w").await;
    let a0 = AttemptIndex(0);
    let peek = fx.backend.tail_stream(&id, a0, StreamCursor::Start, 0, 10, TailVisibility::All).await.unwrap();
    assert!(peek.frames.is_empty() && peek.closed_at.is_none() && peek.last_seq == 0);

    let backend = fx.backend.clone();
    let waiting = tokio::spawn(async move {
        backend.tail_stream(&id, a0, StreamCursor::Start, 20_000, 10, TailVisibility::All).await
    });
    tokio::task::yield_now().await;
    fx.backend.append_frame(&h, frame(b"first", FrameKind::Stdout)).await.unwrap();
    let woke = waiting.await.unwrap().unwrap();
    assert_eq!(woke.frames.iter().map(|f| f.bytes.clone()).collect::<Vec<_>>(), vec![b"first".to_vec()]);
    assert_eq!(woke.frames[0].mode, "durable");

    fx.backend.append_frame(&h, frame(b"second", FrameKind::Stdout)).await.unwrap();
    let from_now = fx.backend.tail_stream(&id, a0, StreamCursor::End, 0, 10, TailVisibility::All).await.unwrap();
    assert!(from_now.frames.is_empty());
    assert_eq!(from_now.last_seq, 2);
    let after_first = StreamCursor::parse(&woke.frames[0].id).unwrap();
    let next = fx.backend.tail_stream(&id, a0, after_first, 5_000, 10, TailVisibility::All).await.unwrap();
    assert_eq!(next.frames.iter().map(|f| f.seq).collect::<Vec<_>>(), vec![2]);

    let backend = fx.backend.clone();
    let waiting = tokio::spawn({
        async move {
            let after = StreamCursor::At { ms: 0, seq: 2 };
            backend.tail_stream(&id, a0, after, 20_000, 10, TailVisibility::All).await
        }
    });
    tokio::task::yield_now().await;
    fx.backend.complete(&h, None).await.unwrap();
    let ended = waiting.await.unwrap().unwrap();
    assert!(ended.frames.is_empty());
    assert!(ended.closed_at.is_some());
    assert_eq!(ended.closed_reason.as_deref(), Some("success"));

    let bad = |after, block, limit| fx.backend.tail_stream(&id, a0, after, block, limit, TailVisibility::All);
    assert_eq!(bad(StreamCursor::Start, 30_001, 10).await.unwrap_err().code(), "invalid_input");
    assert_eq!(bad(StreamCursor::Start, 0, 0).await.unwrap_err().code(), "invalid_input");
    assert_eq!(bad(StreamCursor::Start, 0, MAX_STREAM_READ + 1).await.unwrap_err().code(), "invalid_input");
    let absent = fx.backend.tail_stream(&id, AttemptIndex(7), StreamCursor::Start, 0, 10, TailVisibility::All);
    assert!(matches!(absent.await.unwrap_err(), EngineError::NotFound { .. }));
}

/// Summary frames merge into the attempt's summary document as RFC 7396 merge patches (a null
/// member deletes, the sentinel stores a null); the frames themselves stay in the stream. A
/// summary frame that is not a JSON object is refused and writes nothing.
pub async fn summary_frames_merge_into_the_summary_document<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("summary").await;
    let h = fx.claim("summary", "w").await;
    let a0 = AttemptIndex(0);
    assert_eq!(fx.backend.read_summary(&id, a0).await.unwrap(), None);
    let summary = StreamMode::durable_summary();
    let patches: [&[u8]; 3] =
        [br#"{"a":1,"b":{"c":2,"keep":true}}"#, br#"{"b":{"c":null,"d":3}}"#, br#"{"e":"__ff_null__","a":[1,2]}"#];
    let mut versions = Vec::new();
    for p in patches {
        versions.push(fx.backend.append_frame(&h, moded(p, summary.clone())).await.unwrap().summary_version);
    }
    assert_eq!(versions, vec![Some(1), Some(2), Some(3)]);
    let doc = fx.backend.read_summary(&id, a0).await.unwrap().expect("a summary");
    assert_eq!(doc.document_json, serde_json::json!({"a": [1, 2], "b": {"keep": true, "d": 3}, "e": null}));
    assert_eq!(doc.version, 3);
    assert_eq!(doc.patch_kind, PatchKind::JsonMergePatch);
    assert!(doc.first_applied_ms.0 <= doc.last_updated_ms.0);
    let plain = fx.backend.append_frame(&h, frame(b"log", FrameKind::Stdout)).await.unwrap();
    assert_eq!(plain.summary_version, None);
    let frames = fx.backend.read_stream(&id, a0, StreamCursor::Start, StreamCursor::End, 100).await.unwrap().frames;
    assert_eq!(
        frames.iter().map(|f| f.mode.as_str()).collect::<Vec<_>>(),
        ["summary", "summary", "summary", "durable"]
    );

    let before = fx.fingerprint(&id).await;
    for bad in [&b"not json"[..], b"[1]", b"\"s\""] {
        let e = fx.backend.append_frame(&h, moded(bad, summary.clone())).await.unwrap_err();
        assert_eq!(e.code(), "invalid_input", "{bad:?}");
    }
    assert_eq!(fx.fingerprint(&id).await, before);
    assert_eq!(fx.backend.read_summary(&id, a0).await.unwrap().unwrap().version, 3);
    let absent = fx.backend.read_summary(&id, AttemptIndex(5)).await.unwrap_err();
    assert!(matches!(absent, EngineError::NotFound { .. }), "{absent:?}");
}

/// Best-effort live frames are trimmed to about their bound while durable frames between them
/// are all kept; a tail that excludes best-effort frames sees only the durable ones.
pub async fn best_effort_frames_are_trimmed_and_durable_ones_kept<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("live").await;
    let h = fx.claim("live", "w").await;
    let a0 = AttemptIndex(0);
    let live = StreamMode::BestEffortLive { ttl_ms: 1, maxlen_floor: 16, maxlen_ceiling: 32, ema_alpha: 0.2 };
    for i in 0..200 {
        if i % 20 == 0 {
            fx.backend.append_frame(&h, frame(format!("durable {i}").as_bytes(), FrameKind::Stdout)).await.unwrap();
        }
        fx.backend.append_frame(&h, moded(format!("live {i}").as_bytes(), live.clone())).await.unwrap();
    }
    let all = fx.backend.read_stream(&id, a0, StreamCursor::Start, StreamCursor::End, 10_000).await.unwrap();
    let durable: Vec<_> = all.frames.iter().filter(|f| f.mode == "durable").collect();
    let kept_live: Vec<_> = all.frames.iter().filter(|f| f.mode == "best_effort").collect();
    assert_eq!(durable.len(), 10, "every durable frame is kept");
    assert!((16..=40).contains(&kept_live.len()), "{} live frames kept", kept_live.len());
    assert_eq!(kept_live.last().unwrap().bytes, b"live 199", "the newest live frames are the ones kept");
    assert_eq!(all.last_seq, 210);
    let only_durable = fx
        .backend
        .tail_stream(&id, a0, StreamCursor::Start, 0, 1_000, TailVisibility::ExcludeBestEffort)
        .await
        .unwrap();
    assert_eq!(only_durable.frames.len(), 10);
    assert!(only_durable.frames.iter().all(|f| f.mode == "durable"));

    let before = fx.fingerprint(&id).await;
    let bad = StreamMode::BestEffortLive { ttl_ms: 0, maxlen_floor: 16, maxlen_ceiling: 32, ema_alpha: 0.2 };
    let e = fx.backend.append_frame(&h, moded(b"x", bad)).await.unwrap_err();
    assert_eq!(e.code(), "invalid_input");
    assert_eq!(fx.fingerprint(&id).await, before);
}
