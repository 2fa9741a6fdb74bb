//! A NUL character in any text field is the caller's error: a typed validation error with the
//! code `nul_in_text` (or the field's own charset code), never a storage failure, and nothing
//! is written.

mod common;

use std::collections::BTreeSet;

use common::*;
use ff_core::*;

const NUL: &str = "bad\0text";

fn assert_refused(result: Result<impl std::fmt::Debug, EngineError>, code: &str, what: &str) {
    match result {
        Err(e) => assert_eq!(e.code(), code, "{what}: {e}"),
        Ok(v) => panic!("{what}: accepted ({v:?})"),
    }
}

#[tokio::test]
async fn nul_in_creation_fields_is_refused_and_nothing_is_written() {
    let f = Fixture::new().await;
    type Edit = fn(&mut CreateExecutionArgs);
    let cases: [(&str, Edit, &str); 7] = [
        ("namespace", |a| a.namespace = Namespace::new(NUL), "nul_in_text"),
        ("execution_kind", |a| a.execution_kind = NUL.into(), "nul_in_text"),
        ("payload_encoding", |a| a.payload_encoding = Some(NUL.into()), "nul_in_text"),
        ("creator_identity", |a| a.creator_identity = Some(NUL.into()), "nul_in_text"),
        ("idempotency_key", |a| a.idempotency_key = Some(NUL.into()), "nul_in_text"),
        ("tag value", |a| _ = a.tags.insert("app.k".into(), NUL.into()), "nul_in_text"),
        ("tag key", |a| _ = a.tags.insert("app.\0".into(), "v".into()), "invalid_tag_key"),
    ];
    for (what, edit, code) in cases {
        let mut a = args("texts");
        edit(&mut a);
        let id = a.execution_id;
        assert_refused(f.backend.create_execution(a.clone()).await, code, what);
        assert_refused(f.backend.create_executions(vec![a]).await, code, what);
        assert!(f.backend.describe_execution(&id).await.expect("read").is_none(), "{what}: written");
    }
}

#[tokio::test]
async fn nul_in_lease_holder_text_is_refused_and_nothing_is_written() {
    let f = Fixture::new().await;
    let id = f.create("texts").await;
    let h = f.claim("texts", "w1").await;
    let before = f.fingerprint(&id).await;

    assert_refused(f.backend.set_execution_tag(&id, "app.k", NUL).await, "nul_in_text", "tag value");
    assert_refused(f.backend.progress(&h, Some(5), Some(NUL.into())).await, "nul_in_text", "progress message");
    let reason =
        |message: &str, detail: Option<&str>| FailureReason { message: message.into(), detail: detail.map(Into::into) };
    assert_refused(
        f.backend.fail(&h, reason(NUL, None), FailureClass::Transient).await,
        "nul_in_text",
        "failure message",
    );
    assert_refused(
        f.backend.fail(&h, reason("ok", Some(NUL)), FailureClass::Transient).await,
        "nul_in_text",
        "failure detail",
    );
    assert_refused(f.backend.cancel(&h, NUL).await, "nul_in_text", "cancel reason");
    let frame = |frame_type: &str, correlation_id: Option<&str>| Frame {
        bytes: b"x".to_vec(),
        kind: FrameKind::Stdout,
        frame_type: frame_type.into(),
        correlation_id: correlation_id.map(Into::into),
        mode: StreamMode::Durable,
    };
    assert_refused(f.backend.append_frame(&h, frame("log", Some(NUL))).await, "nul_in_text", "correlation id");
    assert_refused(f.backend.append_frame(&h, frame(NUL, None)).await, "invalid_frame_type", "frame type");

    assert_eq!(f.fingerprint(&id).await, before, "a refused call wrote");
}

#[tokio::test]
async fn nul_in_worker_identities_is_refused() {
    let f = Fixture::new().await;
    let id = f.create("texts").await;
    let before = f.fingerprint(&id).await;
    let lane = lane_id("texts");
    let none = CapabilitySet::empty();
    assert_refused(
        f.backend.claim(&lane, &none, ClaimPolicy::new(NUL, "i", 30_000)).await,
        "nul_in_text",
        "claim worker_id",
    );
    assert_refused(
        f.backend.claim_batch(&lane, &none, ClaimPolicy::new("w", NUL, 30_000), 5).await,
        "nul_in_text",
        "claim worker_instance_id",
    );
    let caps = CapabilitySet(BTreeSet::from([NUL.to_owned()]));
    assert_refused(
        f.backend.claim(&lane, &caps, ClaimPolicy::new("w", "i", 30_000)).await,
        "invalid_capabilities",
        "capability",
    );
    let grant = IssueReclaimGrantArgs {
        execution_id: id,
        worker_id: WorkerId::new("w"),
        worker_instance_id: WorkerInstanceId::new(NUL),
        lane_id: lane.clone(),
        worker_capabilities: CapabilitySet::empty(),
        grant_ttl_ms: 1_000,
    };
    assert_refused(f.backend.issue_reclaim_grant(grant).await, "nul_in_text", "grant worker_instance_id");
    let reclaim = ReclaimExecutionArgs {
        execution_id: id,
        worker_id: WorkerId::new("w"),
        worker_instance_id: WorkerInstanceId::new("i"),
        lane_id: lane,
        grant_key: NUL.into(),
        lease_ttl_ms: 1_000,
    };
    assert_refused(f.backend.reclaim_execution(reclaim).await, "nul_in_text", "grant key");
    assert_eq!(f.fingerprint(&id).await, before, "a refused call wrote");
}
