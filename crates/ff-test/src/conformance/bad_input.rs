//! Bad input: every main validation answers a typed error with its specific `code()`, and
//! nothing is written.

use std::collections::BTreeMap;
use std::time::Duration;

use ff_core::*;

use super::fixture::*;
use super::harness::ConformanceHarness;

/// Creates with `f` applied and checks the error code and that the execution was not stored.
async fn rejects<H: ConformanceHarness>(fx: &Fixture<H>, code: &str, f: impl FnOnce(&mut CreateExecutionArgs)) {
    let mut a = args("bad");
    f(&mut a);
    let id = a.execution_id;
    let e = fx.backend.create_execution(a).await.unwrap_err();
    assert_eq!(e.code(), code, "{e}");
    if id.partition_index() < PartitionConfig::default().num_flow_partitions {
        assert!(fx.backend.describe_execution(&id).await.unwrap().is_none(), "nothing written for {code}: {e}");
    }
}

/// Asserts that no execution is stored in any partition and no lane is registered.
async fn assert_nothing_stored<H: ConformanceHarness>(fx: &Fixture<H>) {
    for p in 0..PartitionConfig::default().num_flow_partitions {
        let page = fx.backend.list_executions(Partition::execution(p).key(), None, MAX_LIST_LIMIT).await.unwrap();
        assert!(page.executions.is_empty(), "partition {p} holds {:?}", page.executions);
    }
    let lanes = fx.backend.list_lanes(None, MAX_LIST_LIMIT).await.unwrap();
    assert!(lanes.lanes.is_empty(), "no lane registered by rejected creates: {:?}", lanes.lanes);
}

fn timeout(attempt_timeout_ms: u64) -> Option<ExecutionPolicy> {
    Some(ExecutionPolicy {
        timeout_policy: Some(TimeoutPolicy {
            attempt_timeout_ms: Some(attempt_timeout_ms),
            execution_deadline_ms: None,
        }),
        ..Default::default()
    })
}

/// Each invalid creation field gets its own code; no execution and no lane is stored.
pub async fn bad_create_input_is_rejected_and_writes_nothing<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    rejects(&fx, "payload_too_large", |a| a.input_payload = vec![0; MAX_PAYLOAD_BYTES + 1]).await;
    rejects(&fx, "priority_out_of_range", |a| a.priority = -1).await;
    rejects(&fx, "priority_out_of_range", |a| a.priority = 9001).await;
    rejects(&fx, "invalid_input", |a| a.execution_kind = String::new()).await;
    rejects(&fx, "invalid_input", |a| a.namespace = Namespace::new("x".repeat(300))).await;
    rejects(&fx, "invalid_tag_key", |a| a.tags = BTreeMap::from([("NoDot".into(), "v".into())])).await;
    rejects(&fx, "invalid_input", |a| a.delay_until = Some(TimestampMs(-5))).await;
    rejects(&fx, "invalid_input", |a| a.execution_deadline_at = Some(TimestampMs(i64::MAX))).await;
    rejects(&fx, "invalid_input", |a| a.execution_id = ExecutionId::in_partition(4000)).await;
    rejects(&fx, "invalid_policy", |a| a.policy = timeout(0)).await;
    rejects(&fx, "invalid_policy", |a| a.policy = timeout(u64::MAX)).await;
    rejects(&fx, "invalid_policy", |a| a.policy = Some(retry_policy(1_000_000, 1))).await;
    rejects(&fx, "invalid_capabilities", |a| {
        a.policy = Some(ExecutionPolicy {
            routing_requirements: Some(RoutingRequirements { required_capabilities: ["has space".to_owned()].into() }),
            ..Default::default()
        })
    })
    .await;
    assert_nothing_stored(&fx).await;
}

/// One invalid item rejects the whole batch, naming the item, and nothing is created.
pub async fn one_bad_item_rejects_the_whole_batch<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let good = args("batch");
    let mut bad = args("batch");
    bad.priority = 10_000;
    let e = fx.backend.create_executions(vec![good.clone(), bad]).await.unwrap_err();
    assert_eq!(e.code(), "priority_out_of_range");
    assert!(e.to_string().contains("item 1"), "{e}");
    assert!(fx.backend.describe_execution(&good.execution_id).await.unwrap().is_none());
    assert_nothing_stored(&fx).await;
}

/// Malformed ids and lanes are rejected by the core types, before any backend call.
pub async fn malformed_ids_and_lanes_are_rejected_before_any_call<H: ConformanceHarness>() {
    assert_eq!(ExecutionId::parse("not-an-id").unwrap_err().code(), "invalid_input");
    assert_eq!(LaneId::try_new("").unwrap_err().code(), "invalid_input");
    assert_eq!(LaneId::try_new("x".repeat(65)).unwrap_err().code(), "invalid_input");
}

/// Bad claims (lease TTL, worker id, wait, batch size) are `invalid_input` and claim nothing.
pub async fn bad_claim_input_is_rejected_and_claims_nothing<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("bad").await;
    let before = fx.fingerprint(&id).await;
    let lane = lane_id("bad");
    let caps = CapabilitySet::empty();
    let mut long_wait = policy("w");
    long_wait.max_wait = Some(Duration::from_secs(3600));
    for p in [
        ClaimPolicy::new("p", "w", 0),
        ClaimPolicy::new("p", "w", LEASE_TTL_MAX_MS + 1),
        ClaimPolicy::new("", "w", 1000),
        long_wait,
    ] {
        let e = fx.backend.claim(&lane, &caps, p.clone()).await.unwrap_err();
        assert_eq!(e.code(), "invalid_input", "{p:?}");
    }
    for max in [0, 100_000] {
        let e = fx.backend.claim_batch(&lane, &caps, policy("w"), max).await.unwrap_err();
        assert_eq!(e.code(), "invalid_input", "max {max}");
    }
    assert_eq!(fx.state(&id).await, PublicState::Waiting, "rejected claims claim nothing");
    assert_eq!(fx.fingerprint(&id).await, before);
}

/// Bad lease-holder calls (progress over 100, negative delay, oversized result, overlong
/// failure or cancel message) get their codes and write nothing.
pub async fn bad_attempt_input_is_rejected_and_writes_nothing<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("bad").await;
    let h = fx.claim("bad", "w").await;
    let before = fx.fingerprint(&id).await;
    assert_eq!(fx.backend.progress(&h, Some(101), None).await.unwrap_err().code(), "invalid_input");
    assert_eq!(fx.backend.delay(&h, TimestampMs(-1)).await.unwrap_err().code(), "invalid_input");
    let huge = vec![0u8; MAX_PAYLOAD_BYTES + 1];
    assert_eq!(fx.backend.complete(&h, Some(huge)).await.unwrap_err().code(), "payload_too_large");
    let long = "x".repeat(MAX_MESSAGE_BYTES + 1);
    let e = fx.backend.fail(&h, FailureReason::new(long.clone()), FailureClass::Transient).await.unwrap_err();
    assert_eq!(e.code(), "invalid_input");
    assert_eq!(fx.backend.cancel(&h, &long).await.unwrap_err().code(), "invalid_input");
    assert_eq!(fx.fingerprint(&id).await, before);
    assert_eq!(fx.state(&id).await, PublicState::Active);
}
