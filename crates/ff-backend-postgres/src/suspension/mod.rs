//! Suspension on Postgres: the [`SuspensionBackend`] impl delegates to [`suspend`] (suspending),
//! [`signal`] (deliveries), [`resume`] (operator resume, timeouts, observed signals, listings),
//! [`waitpoint`] (pending waitpoints, tokens, expiry), [`delivery`] (following deliveries) and
//! [`keystore`] (signing keys).
//!
//! Each write is one transaction holding the execution row. The resume condition is evaluated
//! by ff-core; the schema (`0008_suspension.sql`) holds the transitions that need no
//! evaluation: resuming (`ff_resume_suspended`), timeouts (`ff_expire_suspensions`), waitpoint
//! expiry (`ff_expire_waitpoints`), and the trigger that ends a suspension whose execution ends
//! by any other path.

pub(crate) mod delivery;
pub(crate) mod keystore;
pub(crate) mod resume;
pub(crate) mod signal;
pub(crate) mod suspend;
pub(crate) mod waitpoint;

use std::time::Duration;

use async_trait::async_trait;
use ff_core::backend::SuspensionBackend;
use ff_core::*;

use crate::backend::PostgresBackend;
use crate::error::map_sqlx;
use crate::lease::claim::ById;
use resume::CURRENT_ATTEMPT_SQL;

#[async_trait]
impl SuspensionBackend for PostgresBackend {
    async fn suspend(&self, handle: &Handle, args: SuspendArgs) -> Result<SuspendOutcome, EngineError> {
        let p = self.decode(handle)?;
        match suspend::suspend(&self.pool, &p, &args).await? {
            Some(outcome) => self.announced(Ok(outcome)),
            None => Err(self.rejected(&p).await),
        }
    }

    async fn suspend_by_triple(
        &self,
        execution_id: ExecutionId,
        attempt_index: AttemptIndex,
        fence: LeaseFence,
        args: SuspendArgs,
    ) -> Result<SuspendOutcome, EngineError> {
        let p = self.resolve_fence(&execution_id, attempt_index, Some(&fence)).await?;
        match suspend::suspend(&self.pool, &p, &args).await? {
            Some(outcome) => self.announced(Ok(outcome)),
            None => Err(self.rejected(&p).await),
        }
    }

    async fn create_waitpoint(
        &self,
        handle: &Handle,
        waitpoint_key: &str,
        expires_in: Duration,
    ) -> Result<PendingWaitpoint, EngineError> {
        let p = self.decode(handle)?;
        match waitpoint::create(&self.pool, &p, waitpoint_key, expires_in).await? {
            Some(w) => Ok(w),
            None => Err(self.rejected(&p).await),
        }
    }

    async fn read_waitpoint_token(&self, waitpoint_id: &WaitpointId) -> Result<Option<String>, EngineError> {
        let mut tx = self.pool.begin().await.map_err(map_sqlx)?;
        let token = waitpoint::read_token(&mut tx, waitpoint_id).await?;
        tx.commit().await.map_err(map_sqlx)?;
        Ok(token)
    }

    async fn list_pending_waitpoints(
        &self,
        args: ListPendingWaitpointsArgs,
    ) -> Result<ListPendingWaitpointsResult, EngineError> {
        waitpoint::list(&self.pool, &self.partitions, &args).await
    }

    async fn deliver_signal(&self, args: DeliverSignalArgs) -> Result<DeliverSignalResult, EngineError> {
        self.announced(signal::deliver(&self.pool, &self.partitions, &args).await)
    }

    async fn deliver_approval_signal(
        &self,
        args: DeliverApprovalSignalArgs,
    ) -> Result<DeliverSignalResult, EngineError> {
        self.announced(signal::approve(&self.pool, &self.partitions, &args).await)
    }

    async fn observe_signals(&self, handle: &Handle) -> Result<Vec<ResumeSignal>, EngineError> {
        let p = self.decode(handle)?;
        resume::observe(&self.pool, &p).await
    }

    async fn claim_resumed_execution(
        &self,
        args: ClaimResumedExecutionArgs,
    ) -> Result<ClaimResumedExecutionResult, EngineError> {
        args.policy.validate()?;
        crate::fence::check_id(&args.execution_id, &self.partitions)?;
        match crate::lease::claim::claim_one(&self.pool, &args.execution_id, &args.policy, ById::Resumed).await? {
            Some(handle) => self.announced(Ok(ClaimResumedExecutionResult::Claimed { handle })),
            None => Err(EngineError::Contention(ContentionKind::NotAResumedExecution)),
        }
    }

    async fn claim_from_resume_grant(&self, token: ResumeToken) -> Result<Option<Handle>, EngineError> {
        token.policy.validate()?;
        crate::fence::check_id(&token.execution_id, &self.partitions)?;
        let mut tx = self.pool.begin().await.map_err(map_sqlx)?;
        let current: Option<i32> = sqlx::query_scalar(CURRENT_ATTEMPT_SQL)
            .bind(token.execution_id.uuid())
            .bind(token.execution_id.partition_index() as i16)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        if current != Some(token.attempt_index.0 as i32) {
            return tx.abandon(Ok(None)).await;
        }
        let handle =
            crate::lease::claim::claim_one(&mut *tx, &token.execution_id, &token.policy, ById::Resumed).await?;
        tx.commit().await.map_err(map_sqlx)?;
        self.announced(Ok(handle))
    }

    async fn resume_execution(&self, args: ResumeExecutionArgs) -> Result<ResumeExecutionResult, EngineError> {
        self.announced(resume::resume(&self.pool, &self.partitions, &args).await)
    }

    async fn expire_suspension(&self, partition: Partition, execution_id: &ExecutionId) -> Result<(), EngineError> {
        self.announced(resume::expire(&self.pool, partition, execution_id).await)
    }

    async fn close_waitpoint(&self, execution_id: &ExecutionId, waitpoint_id: &WaitpointId) -> Result<(), EngineError> {
        waitpoint::close_if_due(&self.pool, execution_id, waitpoint_id).await
    }

    async fn list_suspended(
        &self,
        partition: Option<u16>,
        cursor: Option<ExecutionId>,
        limit: usize,
    ) -> Result<ListSuspendedPage, EngineError> {
        resume::list(&self.pool, &self.partitions, partition, cursor, limit).await
    }

    async fn subscribe_signal_delivery(
        &self,
        cursor: ff_core::event::EventCursor,
        filter: &ff_core::event::ScannerFilter,
    ) -> Result<SignalDeliveryStream, EngineError> {
        Ok(delivery::stream(self, cursor, filter.clone()))
    }

    async fn seed_waitpoint_hmac_secret(&self, args: SeedWaitpointHmacSecretArgs) -> Result<SeedOutcome, EngineError> {
        keystore::seed(&self.pool, &args).await
    }

    async fn rotate_waitpoint_hmac_secret_all(
        &self,
        args: RotateWaitpointHmacSecretAllArgs,
    ) -> Result<RotateWaitpointHmacSecretAllResult, EngineError> {
        keystore::rotate(&self.pool, &args).await
    }
}
