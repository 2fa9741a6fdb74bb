//! Reads, tags and listings.

mod common;

use std::collections::BTreeMap;

use common::*;
use ff_core::*;

#[tokio::test]
async fn describe_info_context_and_result() {
    let fx = Fixture::new().await;
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
    let snap = fx.backend.describe_execution(&id).await.unwrap().unwrap();
    assert_eq!(snap.public_state, PublicState::Active);
    assert_eq!(snap.current_attempt.unwrap().attempt_id, payload(&h).attempt_id);
    assert_eq!(snap.current_lease.unwrap().lease_epoch, payload(&h).lease_epoch);
    fx.backend.complete(&h, Some(vec![1, 2, 3])).await.unwrap();
    assert_eq!(fx.backend.get_execution_result(&id).await.unwrap(), Some(vec![1, 2, 3]));
    let info = fx.backend.read_execution_info(&id).await.unwrap().unwrap();
    assert!(info.completed_at.is_some() && info.started_at.is_some());
    assert_eq!(info.public_state, PublicState::Completed);

    let fields = fx
        .backend
        .read_exec_core_fields(
            Partition::execution(id.partition_index()),
            &id,
            &["priority", "lifecycle_phase", "nope"],
        )
        .await
        .unwrap();
    assert_eq!(fields["priority"].as_deref(), Some("7"));
    assert_eq!(fields["lifecycle_phase"].as_deref(), Some("terminal"));
    assert_eq!(fields["nope"], None);
}

#[tokio::test]
async fn missing_executions_read_as_none_or_not_found() {
    let fx = Fixture::new().await;
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
    }
    // A real id presented with the wrong partition is not found either.
    let id = fx.create("reads").await;
    let wrong = ExecutionId::from_parts((id.partition_index() + 1) % 256, id.uuid());
    assert!(fx.backend.describe_execution(&wrong).await.unwrap().is_none());
}

#[tokio::test]
async fn tags_set_get_and_validate() {
    let fx = Fixture::new().await;
    let id = fx.create("tags").await;
    fx.backend.set_execution_tag(&id, "cairn.session_id", "s-1").await.unwrap();
    fx.backend.set_execution_tag(&id, "cairn.session_id", "s-2").await.unwrap();
    assert_eq!(fx.backend.get_execution_tag(&id, "cairn.session_id").await.unwrap().as_deref(), Some("s-2"));
    assert_eq!(fx.backend.get_execution_tag(&id, "cairn.other").await.unwrap(), None);
    let before = fx.fingerprint(&id).await;
    for bad in ["Cairn.x", "nodot", "a.B", ""] {
        let e = fx.backend.set_execution_tag(&id, bad, "v").await.unwrap_err();
        assert!(matches!(e, EngineError::Validation { kind: ValidationKind::InvalidTagKey, .. }), "{bad}: {e:?}");
    }
    let e = fx.backend.set_execution_tag(&id, "a.b", &"x".repeat(tag::TAG_VALUE_MAX_BYTES + 1)).await.unwrap_err();
    assert_eq!(e.code(), "invalid_input");
    assert_eq!(fx.fingerprint(&id).await, before);
}

#[tokio::test]
async fn list_executions_pages_through_a_partition() {
    let fx = Fixture::new().await;
    let batch: Vec<_> = (0..25).map(|_| args("list")).collect();
    let partition = batch[0].execution_id.partition_index();
    let mut want: Vec<_> = batch.iter().map(|a| a.execution_id).collect();
    want.sort();
    fx.backend.create_executions(batch).await.unwrap();
    let key = Partition::execution(partition).key();
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
    assert_eq!(fx.backend.list_executions(key.clone(), None, 1001).await.unwrap_err().code(), "invalid_input");
    assert_eq!(
        fx.backend.list_executions(PartitionKey("{fp:999}".into()), None, 10).await.unwrap_err().code(),
        "invalid_input"
    );
    assert_eq!(
        fx.backend.list_executions(PartitionKey("garbage".into()), None, 10).await.unwrap_err().code(),
        "invalid_input"
    );
}

#[tokio::test]
async fn lanes_are_registered_on_create_and_listed_in_order() {
    let fx = Fixture::new().await;
    for lane in ["b-lane", "a-lane", "c-lane", "a-lane"] {
        fx.create(lane).await;
    }
    let page = fx.backend.list_lanes(None, 2).await.unwrap();
    assert_eq!(page.lanes, vec![lane_id("a-lane"), lane_id("b-lane")]);
    let rest = fx.backend.list_lanes(page.next_cursor, 2).await.unwrap();
    assert_eq!(rest.lanes, vec![lane_id("c-lane")]);
    assert!(rest.next_cursor.is_none());
}

#[tokio::test]
async fn backend_metadata_is_truthful() {
    let fx = Fixture::new().await;
    assert_eq!(fx.backend.backend_label(), "postgres");
    fx.backend.ping().await.unwrap();
    assert_eq!(fx.backend.prepare().await.unwrap(), ff_core::backend::PrepareOutcome::NoOp);
    let caps = fx.backend.capabilities();
    assert_eq!(caps.identity.family, "postgres");
    assert!(caps.supports.claim && caps.supports.lease_reclaim && caps.supports.timeouts);
    assert!(!caps.supports.flows && !caps.supports.suspension && !caps.supports.budgets);
    let t = fx.backend.server_time_ms().await.unwrap();
    assert!(t > 1_700_000_000_000);
}
