//! The backend conformance suite (`ff_test::conformance`) against PostgreSQL: each case gets a
//! fresh migrated database. Timers move into the past by rewriting their `*_at_ms` column; the
//! fingerprint is an md5 over the execution's rows.
//!
//! The suite runs twice: with the backend connected directly (the cases at the root), and with
//! the backend in transaction-pooling mode behind a real PgBouncer in `pool_mode = transaction`
//! that gives each database fewer server connections than the backend's pool has clients
//! (`behind_pgbouncer::*`). The harness's own reads and timer moves go directly.

use std::sync::Arc;

use async_trait::async_trait;
use ff_backend_postgres::reconciler::{Reconciler, WorkerLivenessReconciler};
use ff_backend_postgres::{BackendConfig, MIGRATOR, Metrics, PostgresBackend, check_schema_version};
use ff_core::{CompletionBackend, EngineBackend, ExecutionId, PartitionConfig, WorkerInstanceId};
use ff_test::TestDb;
use ff_test::conformance::{AGED_BY_MS, ConformanceHarness, Timer};

/// A fresh database and a backend over it, without background reconcilers; `BOUNCED`: the
/// backend reaches it through PgBouncer in transaction-pooling mode.
struct PgHarness<const BOUNCED: bool> {
    db: TestDb,
    backend: Arc<PostgresBackend>,
}

#[async_trait]
impl<const BOUNCED: bool> ConformanceHarness for PgHarness<BOUNCED> {
    async fn new() -> Self {
        let db = TestDb::new(&MIGRATOR).await;
        check_schema_version(db.pool()).await.expect("schema version");
        let backend = if BOUNCED {
            let bouncer = ff_test::pgbouncer::pgbouncer().await.expect("PgBouncer");
            let config = BackendConfig {
                transaction_pooling: true,
                max_connections: 8,
                ..BackendConfig::new(bouncer.url_for(db.url()).expect("URL through PgBouncer"))
            };
            PostgresBackend::connect_with_metrics(config, PartitionConfig::default(), Arc::new(Metrics::default()))
                .await
                .expect("backend behind PgBouncer")
        } else {
            PostgresBackend::from_pool(db.pool().clone(), PartitionConfig::default())
        };
        Self { db, backend }
    }

    fn backend(&self) -> Arc<dyn EngineBackend> {
        self.backend.clone()
    }

    fn completions(&self) -> Arc<dyn CompletionBackend> {
        self.backend.clone()
    }

    async fn make_past(&self, id: &ExecutionId, timer: Timer) {
        let (table, column, open) = match timer {
            Timer::LeaseExpiry => ("ff_execution", "lease_expires_at_ms", "true"),
            Timer::Eligible => ("ff_execution", "eligible_at_ms", "true"),
            Timer::AttemptTimeout => ("ff_execution", "attempt_deadline_at_ms", "true"),
            Timer::Deadline => ("ff_execution", "deadline_at_ms", "true"),
            Timer::SuspensionTimeout => ("ff_suspension", "timeout_at_ms", "open"),
            Timer::WaitpointExpiry => ("ff_waitpoint", "expires_at_ms", "state = 'pending'"),
            Timer::ClaimGrant => ("ff_claim_grant", "expires_at_ms", "true"),
            Timer::QuotaWindow => ("ff_quota_window", "admitted_at_ms", "true"),
            Timer::Completion => return self.age(id).await,
        };
        // A window entry ages out a whole window later; move it far enough.
        let past = if timer == Timer::QuotaWindow { "0" } else { "ff_now_ms() - 1" };
        let moved = sqlx::query(&format!(
            "UPDATE {table} SET {column} = {past} WHERE execution_id = $1 AND {column} IS NOT NULL AND {open}"
        ))
        .bind(id.uuid())
        .execute(self.db.pool())
        .await
        .expect("move timer into the past")
        .rows_affected();
        assert!(moved >= 1, "{id} has no {timer:?} timer to move");
        if timer == Timer::ClaimGrant {
            sqlx::query("UPDATE ff_execution SET grant_expires_at_ms = ff_now_ms() - 1 WHERE execution_id = $1")
                .bind(id.uuid())
                .execute(self.db.pool())
                .await
                .expect("lapse the reservation");
        }
    }

    async fn fingerprint(&self, id: &ExecutionId) -> String {
        sqlx::query_scalar(
            "SELECT md5(coalesce((SELECT row_to_json(e)::text FROM ff_execution e WHERE execution_id = $1), '') || \
                        coalesce((SELECT string_agg(row_to_json(a)::text, ',' ORDER BY attempt_index) FROM ff_attempt a WHERE execution_id = $1), '') || \
                        coalesce((SELECT string_agg(row_to_json(f)::text, ',' ORDER BY attempt_index, seq) FROM ff_frame f WHERE execution_id = $1), '') || \
                        coalesce((SELECT count(*)::text FROM ff_event v WHERE execution_id = $1), '') || \
                        coalesce((SELECT string_agg(row_to_json(w)::text, ',' ORDER BY waitpoint_id) FROM ff_waitpoint w WHERE execution_id = $1), '') || \
                        coalesce((SELECT string_agg(row_to_json(s)::text, ',' ORDER BY seq) FROM ff_signal s WHERE execution_id = $1), '') || \
                        coalesce((SELECT row_to_json(u)::text FROM ff_suspension u WHERE execution_id = $1), '') || \
                        coalesce((SELECT string_agg(row_to_json(g)::text, ',') FROM ff_claim_grant g WHERE execution_id = $1), '') || \
                        coalesce((SELECT string_agg(row_to_json(b)::text, ',' ORDER BY budget_id, dimension) FROM ff_budget_spend b WHERE execution_id = $1), ''))",
        )
        .bind(id.uuid())
        .fetch_one(self.db.pool())
        .await
        .expect("fingerprint")
    }

    async fn lapse_worker(&self, id: &WorkerInstanceId) {
        let moved = sqlx::query("UPDATE ff_worker SET expires_at_ms = ff_now_ms() - 1 WHERE worker_instance_id = $1")
            .bind(id.as_str())
            .execute(self.db.pool())
            .await
            .expect("lapse worker")
            .rows_affected();
        assert_eq!(moved, 1, "worker {id} is not registered");
        let pass = WorkerLivenessReconciler::new(self.backend.db().clone(), 100, self.backend.metrics().clone());
        let report = pass.run_once().await.expect("worker liveness pass");
        assert_eq!(report.processed, 1, "the lapsed worker is retired");
    }
}

impl<const BOUNCED: bool> PgHarness<BOUNCED> {
    /// Moves a terminal execution's end, and its events, [`AGED_BY_MS`] into the past.
    async fn age(&self, id: &ExecutionId) {
        let moved = sqlx::query(
            "WITH events AS (UPDATE ff_event SET occurred_at_ms = occurred_at_ms - $2 WHERE execution_id = $1) \
             UPDATE ff_execution SET completed_at_ms = completed_at_ms - $2 \
             WHERE execution_id = $1 AND lifecycle_phase = 'terminal'",
        )
        .bind(id.uuid())
        .bind(AGED_BY_MS)
        .execute(self.db.pool())
        .await
        .expect("move the end into the past")
        .rows_affected();
        assert_eq!(moved, 1, "{id} is not terminal");
    }
}

ff_test::conformance_suite!(PgHarness<false>);

mod behind_pgbouncer {
    use super::*;

    ff_test::conformance_suite!(PgHarness<true>);
}
