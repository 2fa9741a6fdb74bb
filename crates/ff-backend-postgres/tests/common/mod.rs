//! Shared fixtures for the backend's integration tests: a fresh migrated database per test and
//! small builders. Time travel (`shift_*`) moves stored timestamps into the past so tests never
//! sleep to wait for a timer.
#![allow(dead_code)]

use std::sync::Arc;

use ff_backend_postgres::{MIGRATOR, PostgresBackend, check_schema_version};
use ff_core::*;
use ff_test::TestDb;
use sqlx::PgPool;

pub struct Fixture {
    pub db: TestDb,
    pub backend: Arc<PostgresBackend>,
}

impl Fixture {
    pub async fn new() -> Self {
        let db = TestDb::new(&MIGRATOR).await;
        check_schema_version(db.pool()).await.expect("schema version");
        let backend = PostgresBackend::from_pool(db.pool().clone(), PartitionConfig::default());
        Self { db, backend }
    }

    pub fn pool(&self) -> &PgPool {
        self.db.pool()
    }

    /// Creates a plain execution on `lane` and returns its id.
    pub async fn create(&self, lane: &str) -> ExecutionId {
        self.create_with(lane, |_| {}).await
    }

    /// Creates an execution after letting `f` adjust the arguments.
    pub async fn create_with(&self, lane: &str, f: impl FnOnce(&mut CreateExecutionArgs)) -> ExecutionId {
        let mut args = args(lane);
        f(&mut args);
        match self.backend.create_execution(args).await.expect("create") {
            CreateExecutionResult::Created { execution_id, .. } => execution_id,
            other => panic!("expected Created, got {other:?}"),
        }
    }

    /// Claims one execution on `lane` as `worker`, panicking when none is available.
    pub async fn claim(&self, lane: &str, worker: &str) -> Handle {
        self.try_claim(lane, worker).await.expect("an execution to claim")
    }

    pub async fn try_claim(&self, lane: &str, worker: &str) -> Option<Handle> {
        self.backend.claim(&lane_id(lane), &CapabilitySet::empty(), policy(worker)).await.expect("claim")
    }

    pub async fn state(&self, id: &ExecutionId) -> PublicState {
        self.backend.read_execution_state(id).await.expect("read state").expect("execution exists")
    }

    pub async fn vector(&self, id: &ExecutionId) -> StateVector {
        self.backend.describe_execution(id).await.expect("describe").expect("exists").state
    }

    /// Moves the timer stored in `column` (a `*_at_ms` column of `ff_execution`) just into the
    /// past, as if its time had come.
    pub async fn make_past(&self, id: &ExecutionId, column: &str) {
        sqlx::query(&format!("UPDATE ff_execution SET {column} = ff_now_ms() - 1 WHERE execution_id = $1"))
            .bind(id.uuid())
            .execute(self.pool())
            .await
            .expect("move timer into the past");
    }

    /// Makes the execution's current lease expired, as if its TTL had elapsed.
    pub async fn expire_lease(&self, id: &ExecutionId) {
        self.make_past(id, "lease_expires_at_ms").await;
    }

    /// Makes a delayed execution due now, and promotes it as the promoter would at its time.
    pub async fn make_due(&self, id: &ExecutionId) {
        self.make_past(id, "eligible_at_ms").await;
        let lane = self.backend.read_execution_info(id).await.expect("info").expect("exists").lane_id;
        self.backend.promote_delayed(Partition::execution(id.partition_index()), &lane, id).await.expect("promote");
    }

    /// A fingerprint of everything stored about `id`, to prove a rejected call wrote nothing.
    pub async fn fingerprint(&self, id: &ExecutionId) -> String {
        sqlx::query_scalar(
            "SELECT md5(coalesce((SELECT row_to_json(e)::text FROM ff_execution e WHERE execution_id = $1), '') || \
                        coalesce((SELECT string_agg(row_to_json(a)::text, ',' ORDER BY attempt_index) FROM ff_attempt a WHERE execution_id = $1), '') || \
                        coalesce((SELECT string_agg(row_to_json(f)::text, ',' ORDER BY attempt_index, seq) FROM ff_frame f WHERE execution_id = $1), '') || \
                        coalesce((SELECT count(*)::text FROM ff_event v WHERE execution_id = $1), ''))",
        )
        .bind(id.uuid())
        .fetch_one(self.pool())
        .await
        .expect("fingerprint")
    }
}

pub fn lane_id(s: &str) -> LaneId {
    LaneId::try_new(s).expect("valid lane")
}

pub fn args(lane: &str) -> CreateExecutionArgs {
    let lane = lane_id(lane);
    CreateExecutionArgs::new(
        ExecutionId::solo(&lane, &PartitionConfig::default()),
        lane,
        "test.kind",
        b"input".to_vec(),
    )
}

pub fn policy(worker: &str) -> ClaimPolicy {
    ClaimPolicy::new("pool", worker, 30_000)
}

pub fn payload(h: &Handle) -> HandlePayload {
    HandlePayload::from_handle(h, BackendTag::Postgres).expect("postgres handle")
}

pub fn retry_policy(max_retries: u32, delay_ms: u64) -> ExecutionPolicy {
    ExecutionPolicy {
        retry_policy: Some(RetryPolicy { max_retries, backoff: BackoffPolicy::Fixed { delay_ms } }),
        ..Default::default()
    }
}
