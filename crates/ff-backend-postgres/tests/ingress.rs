//! Creating executions: initial states, idempotency, batches, and every kind of bad input, each
//! rejected with a specific typed error and nothing written.

mod common;

use std::collections::BTreeMap;

use common::*;
use ff_core::*;

#[tokio::test]
async fn create_sets_the_initial_state_from_the_state_machine() {
    let fx = Fixture::new().await;
    let id = fx.create("ingress").await;
    assert_eq!(fx.vector(&id).await, state::apply(state::Transition::Create { delayed: false }, None).unwrap());
    let now = fx.backend.server_time_ms().await.unwrap() as i64;
    let later = fx.create_with("ingress", |a| a.delay_until = Some(TimestampMs(now + 60_000))).await;
    assert_eq!(fx.vector(&later).await, state::apply(state::Transition::Create { delayed: true }, None).unwrap());
    // A delay in the past means now.
    let past = fx.create_with("ingress", |a| a.delay_until = Some(TimestampMs(now - 60_000))).await;
    assert_eq!(fx.state(&past).await, PublicState::Waiting);
}

#[tokio::test]
async fn idempotency_key_returns_the_original_as_duplicate() {
    let fx = Fixture::new().await;
    let mut a = args("idem");
    a.idempotency_key = Some("order-42".into());
    let first = fx.backend.create_execution(a.clone()).await.unwrap();
    let CreateExecutionResult::Created { execution_id: original, .. } = first else { panic!("{first:?}") };
    let mut b = args("idem");
    b.idempotency_key = Some("order-42".into());
    let second = fx.backend.create_execution(b.clone()).await.unwrap();
    assert_eq!(second, CreateExecutionResult::Duplicate { execution_id: original });
    assert!(fx.backend.describe_execution(&b.execution_id).await.unwrap().is_none());
    // Same id again is a duplicate too.
    assert_eq!(
        fx.backend.create_execution(a).await.unwrap(),
        CreateExecutionResult::Duplicate { execution_id: original }
    );
    // Keys are scoped by namespace.
    let mut c = args("idem");
    c.idempotency_key = Some("order-42".into());
    c.namespace = Namespace::new("other");
    assert!(matches!(fx.backend.create_execution(c).await.unwrap(), CreateExecutionResult::Created { .. }));
    // Inside one batch, the second item with a key duplicates the first.
    let mut d = args("idem");
    d.idempotency_key = Some("batch-key".into());
    let mut e = args("idem");
    e.idempotency_key = Some("batch-key".into());
    let out = fx.backend.create_executions(vec![d.clone(), e]).await.unwrap();
    assert!(matches!(out[0], CreateExecutionResult::Created { .. }));
    assert_eq!(out[1], CreateExecutionResult::Duplicate { execution_id: d.execution_id });
}

#[tokio::test]
async fn policy_and_deadline_are_stored() {
    let fx = Fixture::new().await;
    let id = fx
        .create_with("pol", |a| {
            a.policy = Some(ExecutionPolicy {
                timeout_policy: Some(TimeoutPolicy {
                    attempt_timeout_ms: Some(5_000),
                    execution_deadline_ms: Some(60_000),
                }),
                ..retry_policy(3, 100)
            })
        })
        .await;
    let fields = fx
        .backend
        .read_exec_core_fields(Partition::execution(id.partition_index()), &id, &["max_retries", "attempt_timeout_ms"])
        .await
        .unwrap();
    assert_eq!(fields["max_retries"].as_deref(), Some("3"));
    assert_eq!(fields["attempt_timeout_ms"].as_deref(), Some("5000"));
    let info = fx.backend.read_execution_info(&id).await.unwrap().unwrap();
    let deadline = info.execution_deadline_at.unwrap().0;
    assert!((deadline - info.created_at.0 - 60_000).abs() < 1_000);
}

async fn rejects(fx: &Fixture, code: &str, f: impl FnOnce(&mut CreateExecutionArgs)) {
    let mut a = args("bad");
    f(&mut a);
    let id = a.execution_id;
    let e = fx.backend.create_execution(a).await.unwrap_err();
    assert_eq!(e.code(), code, "{e}");
    assert_eq!(fx.count("ff_execution", &id).await, 0, "nothing written");
}

#[tokio::test]
async fn bad_create_input_is_rejected_with_a_specific_error_and_writes_nothing() {
    let fx = Fixture::new().await;
    rejects(&fx, "payload_too_large", |a| a.input_payload = vec![0; MAX_PAYLOAD_BYTES + 1]).await;
    rejects(&fx, "invalid_input", |a| a.priority = -1).await;
    rejects(&fx, "invalid_input", |a| a.priority = 9001).await;
    rejects(&fx, "invalid_input", |a| a.execution_kind = String::new()).await;
    rejects(&fx, "invalid_input", |a| a.namespace = Namespace::new("x".repeat(300))).await;
    rejects(&fx, "invalid_tag_key", |a| a.tags = BTreeMap::from([("NoDot".into(), "v".into())])).await;
    rejects(&fx, "invalid_input", |a| a.delay_until = Some(TimestampMs(-5))).await;
    rejects(&fx, "invalid_input", |a| a.execution_deadline_at = Some(TimestampMs(i64::MAX))).await;
    rejects(&fx, "invalid_input", |a| a.execution_id = ExecutionId::in_partition(4000)).await;
    rejects(&fx, "invalid_policy", |a| {
        a.policy = Some(ExecutionPolicy {
            timeout_policy: Some(TimeoutPolicy { attempt_timeout_ms: Some(0), execution_deadline_ms: None }),
            ..Default::default()
        })
    })
    .await;
    rejects(&fx, "invalid_policy", |a| {
        a.policy = Some(ExecutionPolicy {
            timeout_policy: Some(TimeoutPolicy { attempt_timeout_ms: Some(u64::MAX), execution_deadline_ms: None }),
            ..Default::default()
        })
    })
    .await;
    rejects(&fx, "invalid_policy", |a| a.policy = Some(retry_policy(1_000_000, 1))).await;
    rejects(&fx, "invalid_capabilities", |a| {
        a.policy = Some(ExecutionPolicy {
            routing_requirements: Some(RoutingRequirements { required_capabilities: ["has space".to_owned()].into() }),
            ..Default::default()
        })
    })
    .await;
    let lanes: i64 = sqlx::query_scalar("SELECT count(*) FROM ff_lane").fetch_one(fx.pool()).await.unwrap();
    assert_eq!(lanes, 0, "no lane registered by rejected creates");
}

#[tokio::test]
async fn one_bad_item_rejects_the_whole_batch() {
    let fx = Fixture::new().await;
    let good = args("batch");
    let mut bad = args("batch");
    bad.priority = 10_000;
    let e = fx.backend.create_executions(vec![good.clone(), bad]).await.unwrap_err();
    assert!(e.to_string().contains("item 1"), "{e}");
    assert!(fx.backend.describe_execution(&good.execution_id).await.unwrap().is_none());
}

#[test]
fn malformed_ids_and_lanes_are_rejected_before_any_call() {
    assert_eq!(ExecutionId::parse("not-an-id").unwrap_err().code(), "invalid_input");
    assert_eq!(LaneId::try_new("").unwrap_err().code(), "invalid_input");
    assert_eq!(LaneId::try_new("x".repeat(65)).unwrap_err().code(), "invalid_input");
}

#[tokio::test]
async fn bad_claim_and_attempt_input_is_rejected() {
    let fx = Fixture::new().await;
    let id = fx.create("bad").await;
    let lane = lane_id("bad");
    let caps = CapabilitySet::empty();
    for ttl in [0, LEASE_TTL_MAX_MS + 1] {
        let e = fx.backend.claim(&lane, &caps, ClaimPolicy::new("p", "w", ttl)).await.unwrap_err();
        assert_eq!(e.code(), "invalid_input");
    }
    let e = fx.backend.claim(&lane, &caps, ClaimPolicy::new("", "w", 1000)).await.unwrap_err();
    assert_eq!(e.code(), "invalid_input");
    let mut p = policy("w");
    p.max_wait = Some(std::time::Duration::from_secs(3600));
    assert_eq!(fx.backend.claim(&lane, &caps, p).await.unwrap_err().code(), "invalid_input");
    assert_eq!(fx.backend.claim_batch(&lane, &caps, policy("w"), 0).await.unwrap_err().code(), "invalid_input");
    assert_eq!(fx.backend.claim_batch(&lane, &caps, policy("w"), 100_000).await.unwrap_err().code(), "invalid_input");
    assert_eq!(fx.state(&id).await, PublicState::Waiting, "rejected claims claim nothing");

    let h = fx.claim("bad", "w").await;
    let before = fx.fingerprint(&id).await;
    assert_eq!(fx.backend.progress(&h, Some(101), None).await.unwrap_err().code(), "invalid_input");
    assert_eq!(fx.backend.delay(&h, TimestampMs(-1)).await.unwrap_err().code(), "invalid_input");
    let huge = vec![0u8; MAX_PAYLOAD_BYTES + 1];
    assert_eq!(fx.backend.complete(&h, Some(huge)).await.unwrap_err().code(), "payload_too_large");
    let long = "x".repeat(MAX_MESSAGE_BYTES + 1);
    assert_eq!(
        fx.backend.fail(&h, FailureReason::new(long.clone()), FailureClass::Transient).await.unwrap_err().code(),
        "invalid_input"
    );
    assert_eq!(fx.backend.cancel(&h, &long).await.unwrap_err().code(), "invalid_input");
    assert_eq!(fx.fingerprint(&id).await, before);
}
