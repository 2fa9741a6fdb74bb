//! The `Client`'s operator controls and fence-triple calls against a real server and real
//! Postgres: each sends a body the server accepts and decodes the answer into the same result
//! type the backend trait returns; a refusal is an `SdkError::Api` with the server's code.

use ff_backend_postgres::MIGRATOR;
use ff_core::wire::ClaimRequest;
use ff_core::{
    AttemptIndex, CancelExecutionArgs, CancelExecutionResult, CancelSource, ChangePriorityArgs, ChangePriorityResult,
    CompleteExecutionArgs, CompleteExecutionResult, ExecutionId, ExecutionPolicy, FailExecutionArgs, FailOutcome,
    FailureClass, FailureReason, IssueReclaimGrantArgs, IssueReclaimGrantOutcome, LaneId, LeaseFence,
    ListExpiredLeasesArgs, PublicState, RenewLeaseArgs, RenewLeaseResult, ReplayExecutionArgs, ReplayExecutionResult,
    RevokeLeaseArgs, RevokeLeaseResult, RevokeNoopReason, TimestampMs, WorkerId, WorkerInstanceId,
};
use ff_sdk::{Client, SdkError, SubmitRequest};
use ff_server::{Server, ServerConfig};
use ff_test::TestDb;
use serde_json::json;

struct Env {
    _db: TestDb,
    server: Server,
    client: Client,
}

impl Env {
    async fn start() -> Self {
        let db = TestDb::new(&MIGRATOR).await;
        let mut cfg = ServerConfig::new(db.url());
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.pool_size = 4;
        cfg.shutdown_grace_ms = 5_000;
        let server = Server::start(cfg).await.expect("server starts");
        let client = Client::new(server.url()).unwrap();
        Self { _db: db, server, client }
    }

    async fn submit(&self, policy: Option<ExecutionPolicy>) -> ExecutionId {
        let mut req = SubmitRequest::json("media", "k", json!(1));
        req.policy = policy;
        self.client.submit(&req).await.unwrap().execution_id()
    }

    /// Claims the next execution of the lane as `instance`.
    async fn claim(&self, instance: &str) {
        let req = ClaimRequest {
            lane_id: "media".into(),
            worker_instance_id: instance.into(),
            capabilities: Vec::new(),
            lease_ttl_ms: 600_000,
            max: 1,
            max_wait_ms: 0,
        };
        assert_eq!(self.client.claim("pool", &req).await.unwrap().claimed.len(), 1);
    }

    /// The current lease's fence and attempt, read from the snapshot.
    async fn fence(&self, id: &ExecutionId) -> (LeaseFence, AttemptIndex) {
        let snap = self.client.describe(id).await.unwrap().unwrap();
        let lease = snap.current_lease.expect("a lease");
        let attempt = snap.current_attempt.expect("an attempt");
        (
            LeaseFence { lease_id: lease.lease_id, lease_epoch: lease.lease_epoch, attempt_id: attempt.attempt_id },
            attempt.attempt_index,
        )
    }
}

fn code(e: SdkError) -> (u16, String) {
    match e {
        SdkError::Api { status, code, .. } => (status, code),
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test]
async fn operator_controls_round_trip() {
    let env = Env::start().await;
    let c = &env.client;
    let id = env.submit(Some(ExecutionPolicy { max_replay_count: Some(1), ..Default::default() })).await;

    let changed = c
        .change_priority(&ChangePriorityArgs {
            execution_id: id,
            new_priority: 42,
            lane_id: Some(LaneId::try_new("media").unwrap()),
        })
        .await
        .unwrap();
    assert_eq!(changed, ChangePriorityResult::Changed { execution_id: id, old_priority: 0, new_priority: 42 });
    let too_high = ChangePriorityArgs { execution_id: id, new_priority: 9001, lane_id: None };
    assert_eq!(code(c.change_priority(&too_high).await.unwrap_err()), (400, "priority_out_of_range".into()));

    let revoke = RevokeLeaseArgs::new(id, "nothing held");
    let noop = c.revoke_lease(&revoke).await.unwrap();
    assert_eq!(noop, RevokeLeaseResult::AlreadySatisfied { reason: RevokeNoopReason::NoActiveLease });
    env.claim("w1").await;
    let (fence, _) = env.fence(&id).await;
    let mut wrong = RevokeLeaseArgs::new(id, "hung");
    wrong.worker_instance_id = Some(WorkerInstanceId::new("w2"));
    assert_eq!(code(c.revoke_lease(&wrong).await.unwrap_err()), (409, "stale_lease".into()));
    wrong.worker_instance_id = Some(WorkerInstanceId::new("w1"));
    wrong.expected_lease_id = Some(fence.lease_id);
    let revoked = c.revoke_lease(&wrong).await.unwrap();
    assert_eq!(revoked, RevokeLeaseResult::Revoked { lease_id: fence.lease_id, lease_epoch: fence.lease_epoch });

    let grant = IssueReclaimGrantArgs {
        execution_id: id,
        worker_id: WorkerId::new("pool"),
        worker_instance_id: WorkerInstanceId::new("w2"),
        lane_id: LaneId::try_new("media").unwrap(),
        worker_capabilities: Default::default(),
        grant_ttl_ms: 5_000,
    };
    match c.issue_reclaim_grant(&grant).await.unwrap() {
        IssueReclaimGrantOutcome::Granted(g) => assert_eq!(g.execution_id, id),
        other => panic!("expected a grant: {other:?}"),
    }

    let replay = ReplayExecutionArgs { execution_id: id };
    assert_eq!(code(c.replay_execution(&replay).await.unwrap_err()), (409, "execution_not_terminal".into()));
    let cancelled = c.cancel_execution(&CancelExecutionArgs::new(id, "done with it")).await.unwrap();
    assert_eq!(cancelled, CancelExecutionResult::Cancelled { execution_id: id, public_state: PublicState::Cancelled });
    let again = c.cancel_execution(&CancelExecutionArgs::new(id, "again")).await.unwrap_err();
    assert_eq!(code(again), (409, "terminal".into()));
    let replayed = c.replay_execution(&replay).await.unwrap();
    assert_eq!(replayed, ReplayExecutionResult::Replayed { public_state: PublicState::Waiting, replay_count: 1 });
    c.cancel_execution(&CancelExecutionArgs::new(id, "stop")).await.unwrap();
    assert_eq!(code(c.replay_execution(&replay).await.unwrap_err()), (409, "max_replays_exhausted".into()));

    let ghost = ExecutionId::from_parts(id.partition_index(), uuid::Uuid::nil());
    let unknown = c.cancel_execution(&CancelExecutionArgs::new(ghost, "r")).await.unwrap_err();
    assert_eq!(code(unknown), (404, "not_found".into()));
    env.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn fence_triple_calls_and_expired_leases_round_trip() {
    let env = Env::start().await;
    let c = &env.client;
    let id = env.submit(None).await;
    let other = env.submit(None).await;
    env.claim("w1").await;
    env.claim("w2").await;
    let (fence, attempt) = env.fence(&id).await;

    let renewed = c.renew_lease(&RenewLeaseArgs { execution_id: id, attempt_index: attempt, fence: Some(fence) }).await;
    assert!(
        matches!(renewed.unwrap(), RenewLeaseResult::Renewed { lease_epoch, .. } if lease_epoch == fence.lease_epoch)
    );
    let unfenced = RenewLeaseArgs { execution_id: id, attempt_index: attempt, fence: None };
    assert_eq!(code(c.renew_lease(&unfenced).await.unwrap_err()), (400, "fence_required".into()));

    // Both leases are live now; as of a time after both expire, both are listed, one per page.
    assert!(c.list_expired_leases(&ListExpiredLeasesArgs::default()).await.unwrap().entries.is_empty());
    let as_of = Some(TimestampMs(ff_core::id::MAX_TIMESTAMP_MS));
    let first = ListExpiredLeasesArgs { as_of, limit: Some(1), ..Default::default() };
    let page = c.list_expired_leases(&first).await.unwrap();
    assert_eq!(page.entries.len(), 1);
    let next = ListExpiredLeasesArgs { after: page.cursor.clone(), ..first.clone() };
    let rest = c.list_expired_leases(&next).await.unwrap();
    assert_eq!(rest.entries.len(), 1);
    let mut listed = [page.entries[0].execution_id, rest.entries[0].execution_id];
    listed.sort();
    let mut want = [id, other];
    want.sort();
    assert_eq!(listed, want);

    let complete = CompleteExecutionArgs {
        execution_id: id,
        attempt_index: attempt,
        fence: Some(fence),
        result_payload: Some(b"done".to_vec()),
        source: CancelSource::LeaseHolder,
    };
    let done = c.complete_execution(&complete).await.unwrap();
    assert_eq!(done, CompleteExecutionResult::Completed { execution_id: id, public_state: PublicState::Completed });
    assert_eq!(c.result(&id).await.unwrap().as_deref(), Some(&b"done"[..]));
    assert_eq!(code(c.complete_execution(&complete).await.unwrap_err()), (409, "execution_not_active".into()));

    let fail = FailExecutionArgs {
        execution_id: other,
        attempt_index: AttemptIndex(0),
        fence: None,
        failure_reason: FailureReason { message: "bad input".into(), detail: Some("row 3".into()) },
        failure_category: FailureClass::Permanent,
        source: CancelSource::OperatorOverride,
    };
    assert_eq!(c.fail_execution(&fail).await.unwrap(), FailOutcome::TerminalFailed);
    assert_eq!(c.state(&other).await.unwrap(), Some(PublicState::Failed));
    env.server.shutdown().await.unwrap();
}
