//! Reads, tags, listings and the backend's own metadata.

use std::collections::BTreeMap;

use ff_core::*;

use super::fixture::*;
use super::harness::ConformanceHarness;

/// Every read reflects what was created, claimed and completed.
pub async fn describe_info_context_and_result<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx
        .create_with("reads", |a| {
            a.namespace = Namespace::new("tenant-a");
            a.priority = 7;
            a.tags = BTreeMap::from([("app.user".to_owned(), "u1".to_owned())]);
            a.input_payload = b"{\"n\":1}".to_vec();
            a.execution_kind = "email.send".into();
        })
        .await;
    let info = fx.backend.read_execution_info(&id).await.unwrap().unwrap();
    assert_eq!(info.priority, 7);
    assert_eq!(info.public_state, PublicState::Waiting);
    assert_eq!(info.execution_kind, "email.send");
    assert!(info.started_at.is_none());
    let ctx = fx.backend.read_execution_context(&id).await.unwrap();
    assert_eq!(ctx.input_payload, b"{\"n\":1}");
    assert_eq!(ctx.tags.get("app.user").map(String::as_str), Some("u1"));
    assert_eq!(fx.backend.get_execution_namespace(&id).await.unwrap().as_deref(), Some("tenant-a"));
    assert_eq!(fx.backend.read_current_attempt_index(&id).await.unwrap(), AttemptIndex(0));
    assert_eq!(fx.backend.read_total_attempt_count(&id).await.unwrap(), AttemptIndex(0));
    assert_eq!(fx.backend.get_execution_result(&id).await.unwrap(), None);
    let h = fx.claim("reads", "w").await;
    let snap = fx.snapshot(&id).await;
    assert_eq!(snap.public_state, PublicState::Active);
    assert_eq!(snap.current_attempt.unwrap().attempt_id, payload(&h).attempt_id);
    assert_eq!(snap.current_lease.unwrap().lease_epoch, payload(&h).lease_epoch);
    fx.backend.complete(&h, Some(vec![1, 2, 3])).await.unwrap();
    assert_eq!(fx.backend.get_execution_result(&id).await.unwrap(), Some(vec![1, 2, 3]));
    let info = fx.backend.read_execution_info(&id).await.unwrap().unwrap();
    assert!(info.completed_at.is_some() && info.started_at.is_some());
    assert_eq!(info.public_state, PublicState::Completed);
    assert_eq!(fx.backend.read_execution_state(&id).await.unwrap(), Some(PublicState::Completed));

    let fields =
        fx.backend.read_exec_core_fields(partition(&id), &id, &["priority", "lifecycle_phase", "nope"]).await.unwrap();
    assert_eq!(fields["priority"].as_deref(), Some("7"));
    assert_eq!(fields["lifecycle_phase"].as_deref(), Some("terminal"));
    assert_eq!(fields["nope"], None);
}

/// The stored policy and deadline read back.
pub async fn policy_and_deadline_are_stored<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
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
    let fields =
        fx.backend.read_exec_core_fields(partition(&id), &id, &["max_retries", "attempt_timeout_ms"]).await.unwrap();
    assert_eq!(fields["max_retries"].as_deref(), Some("3"));
    assert_eq!(fields["attempt_timeout_ms"].as_deref(), Some("5000"));
    let info = fx.backend.read_execution_info(&id).await.unwrap().unwrap();
    let deadline = info.execution_deadline_at.unwrap().0;
    assert!((deadline - info.created_at.0 - 60_000).abs() < 1_000);
}

/// A missing execution reads as `None`, or `NotFound` for the reads that promise it, including a
/// real id presented with the wrong partition.
pub async fn missing_executions_read_as_none_or_not_found<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let ghost = ExecutionId::in_partition(3);
    assert!(fx.backend.describe_execution(&ghost).await.unwrap().is_none());
    assert!(fx.backend.read_execution_info(&ghost).await.unwrap().is_none());
    assert!(fx.backend.read_execution_state(&ghost).await.unwrap().is_none());
    assert!(fx.backend.get_execution_result(&ghost).await.unwrap().is_none());
    assert!(fx.backend.get_execution_namespace(&ghost).await.unwrap().is_none());
    assert!(fx.backend.get_execution_tag(&ghost, "a.b").await.unwrap().is_none());
    for e in [
        fx.backend.read_execution_context(&ghost).await.unwrap_err(),
        fx.backend.read_current_attempt_index(&ghost).await.unwrap_err(),
        fx.backend.read_total_attempt_count(&ghost).await.unwrap_err(),
        fx.backend.set_execution_tag(&ghost, "a.b", "v").await.unwrap_err(),
    ] {
        assert!(matches!(e, EngineError::NotFound { entity: "execution" }), "{e:?}");
        assert_eq!(e.code(), "not_found");
    }
    let id = fx.create("reads").await;
    let wrong = ExecutionId::from_parts((id.partition_index() + 1) % 256, id.uuid());
    assert!(fx.backend.describe_execution(&wrong).await.unwrap().is_none());
}

/// Tags overwrite, read back, and invalid keys or values are rejected with nothing written.
pub async fn tags_set_get_and_validate<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("tags").await;
    fx.backend.set_execution_tag(&id, "cairn.session_id", "s-1").await.unwrap();
    fx.backend.set_execution_tag(&id, "cairn.session_id", "s-2").await.unwrap();
    assert_eq!(fx.backend.get_execution_tag(&id, "cairn.session_id").await.unwrap().as_deref(), Some("s-2"));
    assert_eq!(fx.backend.get_execution_tag(&id, "cairn.other").await.unwrap(), None);
    assert_eq!(fx.snapshot(&id).await.tags.get("cairn.session_id").map(String::as_str), Some("s-2"));
    let before = fx.fingerprint(&id).await;
    for bad in ["Cairn.x", "nodot", "a.B", ""] {
        let e = fx.backend.set_execution_tag(&id, bad, "v").await.unwrap_err();
        assert!(matches!(e, EngineError::Validation { kind: ValidationKind::InvalidTagKey, .. }), "{bad}: {e:?}");
    }
    let e = fx.backend.set_execution_tag(&id, "a.b", &"x".repeat(tag::TAG_VALUE_MAX_BYTES + 1)).await.unwrap_err();
    assert_eq!(e.code(), "invalid_input");
    assert_eq!(fx.fingerprint(&id).await, before);
}

/// `list_executions` pages through one partition in id order; bad limits and partition keys are
/// `invalid_input`.
pub async fn list_executions_pages_through_a_partition<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let batch: Vec<_> = (0..25).map(|_| args("list")).collect();
    let key = partition(&batch[0].execution_id).key();
    let mut want: Vec<_> = batch.iter().map(|a| a.execution_id).collect();
    want.sort();
    fx.backend.create_executions(batch).await.unwrap();
    let mut got = Vec::new();
    let mut cursor = None;
    loop {
        let page = fx.backend.list_executions(key.clone(), cursor, 10).await.unwrap();
        assert!(page.executions.len() <= 10);
        got.extend(page.executions);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(got, want);
    assert!(fx.backend.list_executions(key.clone(), None, 0).await.unwrap().executions.is_empty());
    let code = |r: Result<ListExecutionsPage, EngineError>| r.unwrap_err().code();
    assert_eq!(code(fx.backend.list_executions(key.clone(), None, MAX_LIST_LIMIT + 1).await), "invalid_input");
    assert_eq!(code(fx.backend.list_executions(PartitionKey("{fp:999}".into()), None, 10).await), "invalid_input");
    assert_eq!(code(fx.backend.list_executions(PartitionKey("garbage".into()), None, 10).await), "invalid_input");
}

/// Lanes are registered by creation, once each, and listed in name order.
pub async fn lanes_are_registered_on_create_and_listed_in_order<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    for lane in ["b-lane", "a-lane", "c-lane", "a-lane"] {
        fx.create(lane).await;
    }
    let page = fx.backend.list_lanes(None, 2).await.unwrap();
    assert_eq!(page.lanes, vec![lane_id("a-lane"), lane_id("b-lane")]);
    let rest = fx.backend.list_lanes(page.next_cursor, 2).await.unwrap();
    assert_eq!(rest.lanes, vec![lane_id("c-lane")]);
    assert!(rest.next_cursor.is_none());
}

/// The lifecycle calls answer, and the reported identity matches the backend's label.
pub async fn backend_metadata_is_consistent<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    fx.backend.ping().await.unwrap();
    assert_eq!(fx.backend.prepare().await.unwrap(), ff_core::backend::PrepareOutcome::NoOp);
    assert_eq!(fx.backend.capabilities().identity.family, fx.backend.backend_label());
    let caps = fx.backend.capabilities();
    assert!(caps.supports.claim && caps.supports.lease_reclaim && caps.supports.timeouts);
    assert!(fx.backend.server_time_ms().await.unwrap() > 1_700_000_000_000);
}
