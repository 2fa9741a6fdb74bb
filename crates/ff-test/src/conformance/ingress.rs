//! Creation: initial states, idempotency, and batches.

use ff_core::*;

use super::fixture::*;
use super::harness::ConformanceHarness;

/// A create stores the state machine's initial vector; a delay in the past means now.
pub async fn create_sets_the_initial_state_from_the_state_machine<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("ingress").await;
    assert_eq!(fx.vector(&id).await, state::apply(state::Transition::Create { delayed: false }, None).unwrap());
    let now = fx.now().await;
    let later = fx.create_with("ingress", |a| a.delay_until = Some(TimestampMs(now + 60_000))).await;
    assert_eq!(fx.vector(&later).await, state::apply(state::Transition::Create { delayed: true }, None).unwrap());
    let past = fx.create_with("ingress", |a| a.delay_until = Some(TimestampMs(now - 60_000))).await;
    assert_eq!(fx.state(&past).await, PublicState::Waiting);
}

/// An idempotency key returns the original as `Duplicate` (per namespace, across calls and
/// inside one batch); the same id again is a duplicate too.
pub async fn idempotency_key_returns_the_original_as_duplicate<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let keyed = |key: &str| {
        let mut a = args("idem");
        a.idempotency_key = Some(key.into());
        a
    };
    let a = keyed("order-42");
    let first = fx.backend.create_execution(a.clone()).await.unwrap();
    let CreateExecutionResult::Created { execution_id: original, .. } = first else { panic!("{first:?}") };
    let b = keyed("order-42");
    let second = fx.backend.create_execution(b.clone()).await.unwrap();
    assert_eq!(second, CreateExecutionResult::Duplicate { execution_id: original });
    assert!(fx.backend.describe_execution(&b.execution_id).await.unwrap().is_none());
    assert_eq!(
        fx.backend.create_execution(a).await.unwrap(),
        CreateExecutionResult::Duplicate { execution_id: original }
    );
    let mut c = keyed("order-42");
    c.namespace = Namespace::new("other");
    assert!(matches!(fx.backend.create_execution(c).await.unwrap(), CreateExecutionResult::Created { .. }));
    let d = keyed("batch-key");
    let out = fx.backend.create_executions(vec![d.clone(), keyed("batch-key")]).await.unwrap();
    assert!(matches!(out[0], CreateExecutionResult::Created { .. }));
    assert_eq!(out[1], CreateExecutionResult::Duplicate { execution_id: d.execution_id });
}

/// A batch create returns one result per item, in order, and creates each.
pub async fn batch_create_returns_results_in_input_order<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let batch: Vec<_> = (0..5).map(|_| args("batch")).collect();
    let ids: Vec<_> = batch.iter().map(|a| a.execution_id).collect();
    let out = fx.backend.create_executions(batch).await.unwrap();
    assert_eq!(out.iter().map(CreateExecutionResult::execution_id).collect::<Vec<_>>(), ids);
    for id in &ids {
        assert_eq!(fx.state(id).await, PublicState::Waiting);
    }
}
