//! [`PostgresBackend`]: constructors, reconciler supervision, and the trait implementations,
//! which validate input and delegate to the module that owns each entity.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use ff_core::backend::{ExpirePhase, PrepareOutcome};
use ff_core::event::{CompletionStream, EventCursor, ScannerFilter};
use ff_core::*;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::coalesce::{ClaimGroups, CompletionGroups};
use crate::config::{BackendConfig, PostgresScannerConfig};
use crate::error::map_sqlx;
use crate::fence::{self, check_id, check_partition};
use crate::metrics::Metrics;
use crate::reconciler::{self, DelayedPromoter, LeaseExpiryReconciler, Reconciler, TimeoutReconciler};
use crate::wakeup::LaneWakeups;
use crate::{attempt_end, claim, event, ingress, lease, migrate, read, stream};

/// The PostgreSQL engine backend.
pub struct PostgresBackend {
    pool: PgPool,
    partitions: PartitionConfig,
    metrics: Arc<Metrics>,
    scanners: Mutex<Option<Scanners>>,
    completions: OnceLock<CompletionGroups>,
    claims: OnceLock<ClaimGroups>,
    wakeups: OnceLock<LaneWakeups>,
    synchronous_claims: AtomicBool,
}

struct Scanners {
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

impl PostgresBackend {
    /// Connects, checks the schema version, and returns the backend as a trait object.
    pub async fn connect(config: BackendConfig) -> Result<Arc<dyn EngineBackend>, EngineError> {
        let partitions = config.partition_config;
        Ok(Self::connect_with_metrics(config, partitions, Arc::new(Metrics::default())).await?)
    }

    /// Connects with explicit partitions and a shared metrics registry; checks the schema version.
    pub async fn connect_with_metrics(
        config: BackendConfig,
        partition_config: PartitionConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, EngineError> {
        config.validate()?;
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .min_connections(config.min_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect(&config.url)
            .await
            .map_err(map_sqlx)?;
        migrate::check_schema_version(&pool).await?;
        Ok(Arc::new(Self::build(pool, partition_config, metrics)))
    }

    /// Wraps an existing pool. No I/O: call [`migrate::check_schema_version`] or `prepare` to verify
    /// the schema.
    pub fn from_pool(pool: PgPool, partition_config: PartitionConfig) -> Arc<Self> {
        Arc::new(Self::build(pool, partition_config, Arc::new(Metrics::default())))
    }

    fn build(pool: PgPool, partitions: PartitionConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            pool,
            partitions,
            metrics,
            scanners: Mutex::new(None),
            completions: OnceLock::new(),
            claims: OnceLock::new(),
            wakeups: OnceLock::new(),
            synchronous_claims: AtomicBool::new(false),
        }
    }

    /// Makes claims wait for their WAL flush before returning (off by default). A claim that is
    /// not yet flushed when the database crashes is lost, and the execution is simply claimed
    /// again; completions, failures and creations are always flushed before they return.
    pub fn set_synchronous_claims(&self, on: bool) {
        self.synchronous_claims.store(on, Ordering::Relaxed);
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The metrics this backend updates.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Starts the reconcilers (lease expiry, delayed promotion, timeouts) as background tasks.
    /// Returns `false` (and starts nothing) when the `Arc` is shared or reconcilers already run.
    pub fn with_scanners(self: &mut Arc<Self>, cfg: PostgresScannerConfig) -> bool {
        let Some(this) = Arc::get_mut(self) else { return false };
        let slot = this.scanners.get_mut().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return false;
        }
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let batch = cfg.batch_size;
        let jobs: [(Arc<dyn Reconciler>, Duration); 3] = [
            (
                Arc::new(LeaseExpiryReconciler::new(this.pool.clone(), batch, this.metrics.clone())),
                cfg.lease_expiry_interval,
            ),
            (Arc::new(DelayedPromoter::new(this.pool.clone(), batch)), cfg.delayed_promoter_interval),
            (Arc::new(TimeoutReconciler::new(this.pool.clone(), batch, this.metrics.clone())), cfg.timeout_interval),
        ];
        for (r, interval) in jobs {
            tasks.spawn(reconciler::drive(r, interval, cancel.clone()));
        }
        *slot = Some(Scanners { cancel, tasks });
        true
    }

    /// One claim through the group committer (concurrent single claims share a statement),
    /// long-polling per the policy.
    async fn claim_one(
        &self,
        lane: &LaneId,
        capabilities: &CapabilitySet,
        policy: ClaimPolicy,
        with_context: bool,
    ) -> Result<Option<claim::Claimed>, EngineError> {
        let key =
            claim::key(lane, capabilities, &policy, self.synchronous_claims.load(Ordering::Relaxed), with_context)?;
        let groups = self.claims.get_or_init(|| ClaimGroups::start(self.pool.clone()));
        let mut poll = claim::Poll::new(policy.max_wait, self.lane_wakeup(lane, policy.max_wait));
        loop {
            let armed = poll.arm();
            if let Some(c) = groups.claim(key.clone(), policy.worker_instance_id.clone()).await? {
                Metrics::add(&self.metrics.claims, 1);
                return Ok(Some(c));
            }
            if !poll.wait(armed).await {
                return Ok(None);
            }
        }
    }

    /// Up to `max` claims in one statement for one worker, long-polling per the policy.
    async fn claim_many(
        &self,
        lane: &LaneId,
        capabilities: &CapabilitySet,
        policy: ClaimPolicy,
        max: usize,
        with_context: bool,
    ) -> Result<Vec<claim::Claimed>, EngineError> {
        claim::validate_batch(max)?;
        let key =
            claim::key(lane, capabilities, &policy, self.synchronous_claims.load(Ordering::Relaxed), with_context)?;
        let wake = self.lane_wakeup(lane, policy.max_wait);
        let claimed = claim::claim_lane(&self.pool, &key, &policy, max, wake).await?;
        Metrics::add(&self.metrics.claims, claimed.len() as u64);
        Ok(claimed)
    }

    /// Reads the event log after `after` (see [`event::read_events`]).
    pub async fn read_events(&self, after: EventCursor, limit: u32) -> Result<Vec<event::EventLogEntry>, EngineError> {
        event::read_events(&self.pool, after, limit, None, &ScannerFilter::default()).await
    }

    /// The lane's wakeup when `max_wait` asks for a long-poll (starts the listener on first use).
    fn lane_wakeup(&self, lane: &LaneId, max_wait: Option<Duration>) -> Option<Arc<tokio::sync::Notify>> {
        max_wait?;
        Some(self.wakeups.get_or_init(|| LaneWakeups::start(self.pool.clone())).lane(lane.as_str()))
    }

    fn decode(&self, handle: &Handle) -> Result<HandlePayload, EngineError> {
        fence::decode(handle, &self.partitions)
    }

    /// Decodes a completion's handle and checks its result payload.
    fn decode_completion(&self, handle: &Handle, payload: &Option<Vec<u8>>) -> Result<HandlePayload, EngineError> {
        let p = self.decode(handle)?;
        if let Some(bytes) = payload {
            validate_payload("result payload", bytes)?;
        }
        Ok(p)
    }

    async fn rejected(&self, p: &HandlePayload) -> EngineError {
        Metrics::add(&self.metrics.fence_rejections, 1);
        fence::diagnose(&self.pool, p).await
    }
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        if let Some(s) = self.scanners.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            s.cancel.cancel();
        }
    }
}

fn supports() -> Supports {
    Supports {
        create_execution: true,
        claim: true,
        renew: true,
        attempt_end: true,
        streams_durable: true,
        lease_reclaim: true,
        timeouts: true,
        reads: true,
        subscribe_completions: true,
        flows: false,
        suspension: false,
        budgets: false,
        worker_registry: false,
    }
}

#[async_trait]
impl EngineBackend for PostgresBackend {
    fn backend_label(&self) -> &'static str {
        "postgres"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            identity: BackendIdentity {
                family: "postgres",
                version: env!("CARGO_PKG_VERSION"),
                schema_version: i64::from(migrate::SCHEMA_VERSION),
            },
            supports: supports(),
        }
    }

    async fn prepare(&self) -> Result<PrepareOutcome, EngineError> {
        migrate::check_schema_version(&self.pool).await?;
        Ok(PrepareOutcome::NoOp)
    }

    async fn ping(&self) -> Result<(), EngineError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(map_sqlx)?;
        Ok(())
    }

    async fn server_time_ms(&self) -> Result<u64, EngineError> {
        let ms: i64 = sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
            .fetch_one(&self.pool)
            .await
            .map_err(map_sqlx)?;
        Ok(ms.max(0) as u64)
    }

    async fn shutdown_prepare(&self, grace: Duration) -> Result<(), EngineError> {
        let scanners = self.scanners.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut s) = scanners {
            s.cancel.cancel();
            let drained = tokio::time::timeout(grace, async { while s.tasks.join_next().await.is_some() {} }).await;
            if drained.is_err() {
                s.tasks.abort_all();
            }
        }
        self.pool.close().await;
        Ok(())
    }

    async fn create_execution(&self, args: CreateExecutionArgs) -> Result<CreateExecutionResult, EngineError> {
        let mut out = ingress::create(&self.pool, &self.partitions, std::slice::from_ref(&args)).await?;
        let r = out.pop().ok_or_else(|| EngineError::Internal("create returned no row".into()))?;
        if matches!(r, CreateExecutionResult::Created { .. }) {
            Metrics::add(&self.metrics.created, 1);
        }
        Ok(r)
    }

    async fn create_executions(
        &self,
        args: Vec<CreateExecutionArgs>,
    ) -> Result<Vec<CreateExecutionResult>, EngineError> {
        let out = ingress::create(&self.pool, &self.partitions, &args).await?;
        let created = out.iter().filter(|r| matches!(r, CreateExecutionResult::Created { .. })).count();
        Metrics::add(&self.metrics.created, created as u64);
        Ok(out)
    }

    async fn claim(
        &self,
        lane: &LaneId,
        capabilities: &CapabilitySet,
        policy: ClaimPolicy,
    ) -> Result<Option<Handle>, EngineError> {
        Ok(self.claim_one(lane, capabilities, policy, false).await?.map(|(h, _)| h))
    }

    async fn claim_batch(
        &self,
        lane: &LaneId,
        capabilities: &CapabilitySet,
        policy: ClaimPolicy,
        max: usize,
    ) -> Result<Vec<Handle>, EngineError> {
        Ok(self.claim_many(lane, capabilities, policy, max, false).await?.into_iter().map(|(h, _)| h).collect())
    }

    async fn claim_with_context(
        &self,
        lane: &LaneId,
        capabilities: &CapabilitySet,
        policy: ClaimPolicy,
        max: usize,
    ) -> Result<Vec<LeasedExecution>, EngineError> {
        let claimed = if max == 1 {
            self.claim_one(lane, capabilities, policy, true).await?.into_iter().collect()
        } else {
            self.claim_many(lane, capabilities, policy, max, true).await?
        };
        claimed
            .into_iter()
            .map(|(handle, context)| {
                let context = context.ok_or_else(|| EngineError::Internal("claim returned no context".into()))?;
                Ok(LeasedExecution { handle, context })
            })
            .collect()
    }

    async fn renew(&self, handle: &Handle) -> Result<LeaseRenewal, EngineError> {
        let p = self.decode(handle)?;
        match lease::renew(&self.pool, &p).await? {
            Some(r) => Ok(r),
            None => Err(self.rejected(&p).await),
        }
    }

    async fn progress(&self, handle: &Handle, percent: Option<u8>, message: Option<String>) -> Result<(), EngineError> {
        let p = self.decode(handle)?;
        if let Some(pct) = percent
            && pct > 100
        {
            return Err(EngineError::invalid(format!("progress percent {pct} exceeds 100")));
        }
        if let Some(m) = &message {
            ff_core::execution::validate_message("progress message", m)?;
        }
        match lease::progress(&self.pool, &p, percent, message.as_deref()).await? {
            Some(()) => Ok(()),
            None => Err(self.rejected(&p).await),
        }
    }

    async fn mark_lease_expired_if_due(
        &self,
        partition: Partition,
        execution_id: &ExecutionId,
    ) -> Result<(), EngineError> {
        check_partition(partition, execution_id, &self.partitions)?;
        let c = lease::expire_one(&self.pool, execution_id).await?;
        Metrics::add(&self.metrics.lease_expiries, c.reclaimable + c.failed);
        Ok(())
    }

    async fn issue_reclaim_grant(&self, args: IssueReclaimGrantArgs) -> Result<IssueReclaimGrantOutcome, EngineError> {
        check_id(&args.execution_id, &self.partitions)?;
        lease::issue_reclaim_grant(&self.pool, &args).await
    }

    async fn reclaim_execution(&self, args: ReclaimExecutionArgs) -> Result<ReclaimExecutionOutcome, EngineError> {
        check_id(&args.execution_id, &self.partitions)?;
        let out = lease::reclaim_execution(&self.pool, &args).await?;
        if matches!(out, ReclaimExecutionOutcome::Claimed { .. }) {
            Metrics::add(&self.metrics.claims, 1);
        }
        Ok(out)
    }

    async fn complete(&self, handle: &Handle, payload: Option<Vec<u8>>) -> Result<(), EngineError> {
        let p = self.decode_completion(handle, &payload)?;
        // Concurrent single completions share a round trip (see `coalesce`).
        let groups = self.completions.get_or_init(|| CompletionGroups::start(self.pool.clone()));
        if groups.complete(p.clone(), payload).await? {
            Metrics::add(&self.metrics.completions, 1);
            Ok(())
        } else {
            Err(self.rejected(&p).await)
        }
    }

    async fn complete_batch(
        &self,
        items: Vec<(Handle, Option<Vec<u8>>)>,
    ) -> Result<Vec<Result<(), EngineError>>, EngineError> {
        if items.len() > MAX_CLAIM_BATCH {
            return Err(EngineError::invalid(format!("batch of {} exceeds {MAX_CLAIM_BATCH}", items.len())));
        }
        // Decode and validate every item first; invalid items get their error without a write.
        let mut results: Vec<Option<Result<(), EngineError>>> = Vec::with_capacity(items.len());
        let mut valid = Vec::with_capacity(items.len());
        for (handle, payload) in items {
            match self.decode_completion(&handle, &payload) {
                Ok(p) => {
                    results.push(None);
                    valid.push((p, payload));
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let done = if valid.is_empty() { Vec::new() } else { attempt_end::complete(&self.pool, &valid).await? };
        Metrics::add(&self.metrics.completions, done.iter().filter(|d| **d).count() as u64);
        let mut valid = valid.into_iter().zip(done);
        let mut out = Vec::with_capacity(results.len());
        for r in results {
            match r {
                Some(e) => out.push(e),
                None => match valid.next() {
                    Some((_, true)) => out.push(Ok(())),
                    Some(((p, _), false)) => out.push(Err(self.rejected(&p).await)),
                    None => return Err(EngineError::Internal("batch bookkeeping".into())),
                },
            }
        }
        Ok(out)
    }

    async fn fail(
        &self,
        handle: &Handle,
        reason: FailureReason,
        classification: FailureClass,
    ) -> Result<FailOutcome, EngineError> {
        let p = self.decode(handle)?;
        ff_core::execution::validate_message("failure message", &reason.message)?;
        if let Some(d) = &reason.detail {
            ff_core::execution::validate_message("failure detail", d)?;
        }
        match attempt_end::fail(&self.pool, &p, &reason, classification).await? {
            Some(outcome) => {
                Metrics::add(&self.metrics.failures, 1);
                if matches!(outcome, FailOutcome::RetryScheduled { .. }) {
                    Metrics::add(&self.metrics.retries, 1);
                }
                Ok(outcome)
            }
            None => Err(self.rejected(&p).await),
        }
    }

    async fn cancel(&self, handle: &Handle, reason: &str) -> Result<(), EngineError> {
        let p = self.decode(handle)?;
        ff_core::execution::validate_message("cancel reason", reason)?;
        match attempt_end::cancel(&self.pool, &p, reason).await? {
            Some(()) => {
                Metrics::add(&self.metrics.cancellations, 1);
                Ok(())
            }
            None => Err(self.rejected(&p).await),
        }
    }

    async fn delay(&self, handle: &Handle, delay_until: TimestampMs) -> Result<(), EngineError> {
        let p = self.decode(handle)?;
        delay_until.validate("delay_until")?;
        match attempt_end::delay(&self.pool, &p, delay_until).await? {
            Some(()) => Ok(()),
            None => Err(self.rejected(&p).await),
        }
    }

    async fn append_frame(&self, handle: &Handle, frame: Frame) -> Result<AppendFrameOutcome, EngineError> {
        let p = self.decode(handle)?;
        frame.validate()?;
        match stream::append(&self.pool, &p, &frame).await? {
            Some(o) => Ok(o),
            None => Err(self.rejected(&p).await),
        }
    }

    async fn read_stream(
        &self,
        execution_id: &ExecutionId,
        attempt_index: AttemptIndex,
        from: StreamCursor,
        to: StreamCursor,
        count_limit: u64,
    ) -> Result<StreamFrames, EngineError> {
        check_id(execution_id, &self.partitions)?;
        stream::read(&self.pool, execution_id, attempt_index, from, to, count_limit).await
    }

    async fn describe_execution(&self, id: &ExecutionId) -> Result<Option<ExecutionSnapshot>, EngineError> {
        read::describe(&self.pool, &self.partitions, id).await
    }

    async fn read_execution_info(&self, id: &ExecutionId) -> Result<Option<ExecutionInfo>, EngineError> {
        read::info(&self.pool, &self.partitions, id).await
    }

    async fn read_execution_state(&self, id: &ExecutionId) -> Result<Option<PublicState>, EngineError> {
        read::state(&self.pool, &self.partitions, id).await
    }

    async fn read_execution_context(&self, id: &ExecutionId) -> Result<ExecutionContext, EngineError> {
        read::context(&self.pool, &self.partitions, id).await
    }

    async fn read_current_attempt_index(&self, id: &ExecutionId) -> Result<AttemptIndex, EngineError> {
        read::attempt_counter(&self.pool, &self.partitions, id, "current_attempt_index").await
    }

    async fn read_total_attempt_count(&self, id: &ExecutionId) -> Result<AttemptIndex, EngineError> {
        read::attempt_counter(&self.pool, &self.partitions, id, "total_attempt_count").await
    }

    async fn get_execution_result(&self, id: &ExecutionId) -> Result<Option<Vec<u8>>, EngineError> {
        read::result(&self.pool, &self.partitions, id).await
    }

    async fn read_exec_core_fields(
        &self,
        partition: Partition,
        execution_id: &ExecutionId,
        fields: &[&str],
    ) -> Result<HashMap<String, Option<String>>, EngineError> {
        read::core_fields(&self.pool, &self.partitions, partition, execution_id, fields).await
    }

    async fn get_execution_namespace(&self, id: &ExecutionId) -> Result<Option<String>, EngineError> {
        read::namespace(&self.pool, &self.partitions, id).await
    }

    async fn set_execution_tag(&self, id: &ExecutionId, key: &str, value: &str) -> Result<(), EngineError> {
        read::set_tag(&self.pool, &self.partitions, id, key, value).await
    }

    async fn get_execution_tag(&self, id: &ExecutionId, key: &str) -> Result<Option<String>, EngineError> {
        read::get_tag(&self.pool, &self.partitions, id, key).await
    }

    async fn list_executions(
        &self,
        partition: PartitionKey,
        cursor: Option<ExecutionId>,
        limit: usize,
    ) -> Result<ListExecutionsPage, EngineError> {
        read::list_executions(&self.pool, &self.partitions, &partition, cursor, limit).await
    }

    async fn list_lanes(&self, cursor: Option<LaneId>, limit: usize) -> Result<ListLanesPage, EngineError> {
        read::list_lanes(&self.pool, cursor, limit).await
    }

    async fn promote_delayed(
        &self,
        partition: Partition,
        lane: &LaneId,
        execution_id: &ExecutionId,
    ) -> Result<(), EngineError> {
        check_partition(partition, execution_id, &self.partitions)?;
        reconciler::delayed::promote_one(&self.pool, lane, execution_id).await
    }

    async fn expire_execution(
        &self,
        partition: Partition,
        execution_id: &ExecutionId,
        phase: ExpirePhase,
    ) -> Result<(), EngineError> {
        check_partition(partition, execution_id, &self.partitions)?;
        if reconciler::timeout::expire_one(&self.pool, execution_id, phase).await? {
            Metrics::add(&self.metrics.expirations, 1);
        }
        Ok(())
    }
}

#[async_trait]
impl CompletionBackend for PostgresBackend {
    async fn subscribe_completions(&self) -> Result<CompletionStream, EngineError> {
        self.subscribe_completions_filtered(&ScannerFilter::default()).await
    }

    async fn subscribe_completions_filtered(&self, filter: &ScannerFilter) -> Result<CompletionStream, EngineError> {
        let head = event::head_cursor(&self.pool).await?;
        Ok(event::completion_stream(self.pool.clone(), head, filter.clone()))
    }

    async fn subscribe_completions_from(
        &self,
        cursor: EventCursor,
        filter: &ScannerFilter,
    ) -> Result<CompletionStream, EngineError> {
        Ok(event::completion_stream(self.pool.clone(), cursor, filter.clone()))
    }
}
