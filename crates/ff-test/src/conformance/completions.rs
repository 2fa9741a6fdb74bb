//! Subscriptions to the event log: completions (terminal outcomes in commit order, resumable
//! from a cursor, filtered by namespace), lease history and tag changes.

use std::time::Duration;

use ff_core::event::{
    CompletionEvent, CompletionOutcome, CompletionStream, EventCursor, InstanceTagChange, LeaseHistoryKind,
    ScannerFilter,
};
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

/// The next item of any subscription, bounded like [`next`].
async fn next_of<T, S: futures::Stream<Item = Result<T, EngineError>> + Unpin>(stream: &mut S) -> T {
    tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("an event")
        .expect("the stream is open")
        .expect("an event, not an error")
}

/// Every lease change of an execution is followed in order: acquired, expired, taken over by
/// another worker, revoked; resuming from a cursor continues after it.
pub async fn lease_history_follows_every_lease_change<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let completions = fx.harness.completions();
    let head = completions.event_log_head().await.unwrap();
    let mut sub = completions.subscribe_lease_history(head, &ScannerFilter::default()).await.unwrap();
    let id = fx.create("lease-history").await;
    fx.claim("lease-history", "w1").await;
    fx.lose_lease(&id).await;
    fx.claim("lease-history", "w2").await;
    fx.backend.revoke_lease(RevokeLeaseArgs::new(id, "operator")).await.unwrap();

    let acquired = next_of(&mut sub).await;
    assert_eq!(acquired.execution_id, id);
    assert_eq!(acquired.kind, LeaseHistoryKind::Acquired { worker_instance_id: Some("w1".into()) });
    assert_eq!(acquired.attempt_index, Some(0));
    let expired = next_of(&mut sub).await;
    assert_eq!(expired.kind, LeaseHistoryKind::Expired { prev_owner: Some("w1".into()) });
    let taken = next_of(&mut sub).await;
    assert!(
        matches!(&taken.kind,
            LeaseHistoryKind::Reclaimed { new_owner: Some(w) } | LeaseHistoryKind::Acquired { worker_instance_id: Some(w) }
            if w == "w2"),
        "{taken:?}"
    );
    let revoked = next_of(&mut sub).await;
    assert_eq!(revoked.kind, LeaseHistoryKind::Revoked { prev_owner: Some("w2".into()) });
    assert!(revoked.lease_epoch > acquired.lease_epoch);

    let mut resumed = completions.subscribe_lease_history(expired.cursor, &ScannerFilter::default()).await.unwrap();
    assert_eq!(next_of(&mut resumed).await.cursor, taken.cursor);
    let other_ns = ScannerFilter { namespace: Some(Namespace::new("elsewhere")), instance_tag: None };
    let mut filtered = completions.subscribe_lease_history(head, &other_ns).await.unwrap();
    let nothing = tokio::time::timeout(Duration::from_millis(300), filtered.next()).await;
    assert!(nothing.is_err(), "a namespace filter lets nothing else through: {nothing:?}");
}

/// Setting and clearing tags is followed in order with the tag's key and value; clearing an
/// absent tag changes nothing and is not an event.
pub async fn instance_tags_follow_set_and_clear<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let completions = fx.harness.completions();
    let head = completions.event_log_head().await.unwrap();
    let mut sub = completions.subscribe_instance_tags(head).await.unwrap();
    let id = fx.create("tags").await;
    fx.backend.set_execution_tag(&id, "app.instance", "i-1").await.unwrap();
    fx.backend.set_execution_tag(&id, "app.instance", "i-2").await.unwrap();
    assert!(fx.backend.clear_execution_tag(&id, "app.instance").await.unwrap());
    assert!(!fx.backend.clear_execution_tag(&id, "app.instance").await.unwrap());
    assert_eq!(fx.backend.get_execution_tag(&id, "app.instance").await.unwrap(), None);
    fx.backend.set_execution_tag(&id, "app.after", "x").await.unwrap();

    let changes: Vec<_> =
        [next_of(&mut sub).await, next_of(&mut sub).await, next_of(&mut sub).await, next_of(&mut sub).await]
            .into_iter()
            .collect();
    let seen: Vec<_> = changes.iter().map(|c| (c.key.as_str(), c.change.clone())).collect();
    assert_eq!(
        seen,
        vec![
            ("app.instance", InstanceTagChange::Attached { value: "i-1".into() }),
            ("app.instance", InstanceTagChange::Attached { value: "i-2".into() }),
            ("app.instance", InstanceTagChange::Cleared),
            ("app.after", InstanceTagChange::Attached { value: "x".into() }),
        ]
    );
    assert!(changes.iter().all(|c| c.execution_id == id));
    let mut resumed = completions.subscribe_instance_tags(changes[1].cursor).await.unwrap();
    assert_eq!(next_of(&mut resumed).await.change, InstanceTagChange::Cleared);

    let missing = ExecutionId::solo(&lane_id("tags"), &PartitionConfig::default());
    assert!(matches!(
        fx.backend.clear_execution_tag(&missing, "app.instance").await,
        Err(EngineError::NotFound { .. })
    ));
}

/// A subscriber that caught up and waits receives a completion committed later (the wait is
/// bounded only to turn a lost wake-up into a failure; how fast it arrives is benchmarked).
pub async fn a_waiting_subscriber_is_woken_by_a_completion<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let completions = fx.harness.completions();
    let mut sub = completions.subscribe_completions().await.unwrap();
    let id = fx.create("wake").await;
    let h = fx.claim("wake", "w").await;
    let waiting = tokio::spawn(async move { next(&mut sub).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    fx.backend.complete(&h, None).await.unwrap();
    let got = waiting.await.unwrap();
    assert_eq!((got.execution_id, got.outcome), (id, CompletionOutcome::Success));
}
