//! Completion subscriptions: terminal outcomes are delivered in commit order, resumable from a
//! cursor, and filtered by namespace.

use std::time::Duration;

use ff_core::event::{CompletionEvent, CompletionOutcome, CompletionStream, EventCursor, ScannerFilter};
use ff_core::*;
use futures::StreamExt;

use super::fixture::*;
use super::harness::ConformanceHarness;

/// The next event of `stream`. The bound only turns a missing event into a failure instead of a
/// hang; no assertion depends on it.
async fn next(stream: &mut CompletionStream) -> CompletionEvent {
    tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("a completion event")
        .expect("the stream is open")
        .expect("an event, not an error")
}

/// Success and failure are delivered in order; resuming after the first delivers the second;
/// a namespace filter skips other namespaces.
pub async fn completions_are_delivered_resumable_and_filtered<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let completions = fx.harness.completions();
    let mut sub = completions.subscribe_completions().await.unwrap();
    let ok = fx.create("sub").await;
    let h = fx.claim("sub", "w").await;
    fx.backend.complete(&h, None).await.unwrap();
    let bad = fx.create("sub").await;
    let h = fx.claim("sub", "w").await;
    fx.backend.fail(&h, FailureReason::new("x"), FailureClass::Permanent).await.unwrap();
    let first = next(&mut sub).await;
    assert_eq!((first.execution_id, first.outcome.clone()), (ok, CompletionOutcome::Success));
    let second = next(&mut sub).await;
    assert_eq!((second.execution_id, second.outcome.clone()), (bad, CompletionOutcome::Failure));

    let mut resumed = completions.subscribe_completions_from(first.cursor, &ScannerFilter::default()).await.unwrap();
    assert_eq!(next(&mut resumed).await.execution_id, bad);

    let tenant = fx.create_with("sub", |a| a.namespace = Namespace::new("tenant-b")).await;
    let h = fx.claim("sub", "w").await;
    assert_eq!(payload(&h).execution_id, tenant);
    fx.backend.cancel(&h, "stop").await.unwrap();
    let filter = ScannerFilter { namespace: Some(Namespace::new("tenant-b")), instance_tag: None };
    let mut filtered = completions.subscribe_completions_from(EventCursor::BEGINNING, &filter).await.unwrap();
    let only = next(&mut filtered).await;
    assert_eq!((only.execution_id, only.namespace.clone()), (tenant, Namespace::new("tenant-b")));
    assert_eq!(only.outcome, CompletionOutcome::Cancelled);
}
