//! [`PostgresBackend`]: the struct, its constructors, reconciler supervision, and the backend's
//! own lifecycle (`EngineBackend`). Each entity's operations are implemented in the module
//! named for it: `execution`, `lease`, `attempt_end`, `stream`, `maintenance`, `event`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::db::Db;
use async_trait::async_trait;
use ff_core::backend::PrepareOutcome;
use ff_core::event::{EventCursor, ScannerFilter};
use ff_core::*;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::coalesce::{ClaimGroups, CompletionGroups};
use crate::config::{BackendConfig, PostgresScannerConfig};
use crate::error::map_sqlx;
use crate::fence;
use crate::lease::position::ClaimPositions;
use crate::metrics::Metrics;
use crate::reconciler::{
    self, AdmissionReconciler, AdmissionRecountReconciler, DelayedPromoter, DependencyReconciler, FlowCancelReconciler,
    LeaseExpiryReconciler, Reconciler, RetentionReconciler, SuspensionReconciler, TimeoutReconciler,
    WorkerLivenessReconciler,
};
use crate::route::Claimers;
use crate::wakeup::LaneWakeups;
use crate::{connection, event, migrate};

pub(crate) const PING_SQL: &str = "SELECT 1";

pub(crate) const SERVER_TIME_SQL: &str = "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// The PostgreSQL engine backend.
pub struct PostgresBackend {
    pub(crate) pool: Db,
    pub(crate) partitions: PartitionConfig,
    pub(crate) metrics: Arc<Metrics>,
    scanners: Mutex<Option<Scanners>>,
    pub(crate) completions: OnceLock<CompletionGroups>,
    pub(crate) claims: OnceLock<ClaimGroups>,
    pub(crate) wakeups: OnceLock<LaneWakeups>,
    pub(crate) feeds: Arc<crate::pulse::Feeds>,
    pulse: OnceLock<crate::pulse::Pulse>,
    presence: OnceLock<tokio_util::sync::DropGuard>,
    pub(crate) synchronous_claims: AtomicBool,
    pub(crate) claimers: Claimers,
    pub(crate) positions: Arc<ClaimPositions>,
    leader: Option<tokio::sync::watch::Receiver<bool>>,
}

/// A leader id naming this process: host-independent, unique per backend.
fn default_leader_id() -> String {
    format!("pid{}-{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8])
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
        let pool = connection::connect_pool(&config).await?;
        let db =
            if config.transaction_pooling { Db::transaction_pooled(pool, config.poll_interval) } else { Db::new(pool) };
        migrate::check_schema_version(&db).await?;
        Ok(Arc::new(Self::build(db, partition_config, metrics)))
    }

    /// Wraps an existing pool of direct connections. No I/O: call
    /// [`migrate::check_schema_version`] or `prepare` to verify the schema.
    pub fn from_pool(pool: PgPool, partition_config: PartitionConfig) -> Arc<Self> {
        Self::from_db(Db::new(pool), partition_config)
    }

    /// Wraps an existing pool used as `db` says (directly, or through a transaction-pooling
    /// pooler). No I/O.
    pub fn from_db(db: Db, partition_config: PartitionConfig) -> Arc<Self> {
        Arc::new(Self::build(db, partition_config, Arc::new(Metrics::default())))
    }

    fn build(pool: Db, partitions: PartitionConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            pool,
            partitions,
            metrics,
            scanners: Mutex::new(None),
            completions: OnceLock::new(),
            claims: OnceLock::new(),
            wakeups: OnceLock::new(),
            feeds: Arc::default(),
            pulse: OnceLock::new(),
            presence: OnceLock::new(),
            synchronous_claims: AtomicBool::new(false),
            claimers: Claimers::default(),
            positions: Arc::default(),
            leader: None,
        }
    }

    /// Whether this backend's reconcilers run now: it started them (`with_scanners`) and holds
    /// the reconcilers' leader lease.
    pub fn leads_reconcilers(&self) -> bool {
        self.leader.as_ref().is_some_and(|l| *l.borrow())
    }

    /// Makes claims wait for their WAL flush before returning (off by default). A claim that is
    /// not yet flushed when the database crashes is lost, and the execution is simply claimed
    /// again; completions, failures and creations are always flushed before they return.
    pub fn set_synchronous_claims(&self, on: bool) {
        self.synchronous_claims.store(on, Ordering::Relaxed);
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        self.pool.pool()
    }

    /// The pool and how statements use it: run a statement through `&backend.db()` to have it
    /// work behind a transaction-pooling pooler too.
    pub fn db(&self) -> &Db {
        &self.pool
    }

    /// The metrics this backend updates.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Starts the reconcilers (lease expiry, delayed promotion, timeouts, worker liveness, flow
    /// cancellation, dependency repair, suspension timeouts and waitpoint expiry, admission's
    /// timers and recounts, retention) as background tasks.
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
        let mut jobs: Vec<(Arc<dyn Reconciler>, Duration)> = vec![
            (
                Arc::new(LeaseExpiryReconciler::new(this.pool.clone(), batch, this.metrics.clone())),
                cfg.lease_expiry_interval,
            ),
            (
                Arc::new(DelayedPromoter::with_timer(
                    this.pool.clone(),
                    batch,
                    cfg.delayed_promoter_interval,
                    this.wakeups.get_or_init(|| LaneWakeups::start(this.pool.clone(), this.feeds.clone())).timer(),
                )),
                cfg.delayed_promoter_interval,
            ),
            (Arc::new(TimeoutReconciler::new(this.pool.clone(), batch, this.metrics.clone())), cfg.timeout_interval),
            (
                Arc::new(WorkerLivenessReconciler::new(this.pool.clone(), batch, this.metrics.clone())),
                cfg.worker_liveness_interval,
            ),
            (Arc::new(FlowCancelReconciler::new(this.pool.clone(), batch)), cfg.flow_cancel_interval),
            (Arc::new(DependencyReconciler::new(this.pool.clone(), batch)), cfg.dependency_interval),
            (
                Arc::new(SuspensionReconciler::with_timer(
                    this.pool.clone(),
                    batch,
                    cfg.suspension_interval,
                    this.wakeups
                        .get_or_init(|| LaneWakeups::start(this.pool.clone(), this.feeds.clone()))
                        .suspension_timer(),
                )),
                cfg.suspension_interval,
            ),
            (
                Arc::new(AdmissionReconciler::with_timer(
                    this.pool.clone(),
                    batch,
                    cfg.admission_interval,
                    this.wakeups
                        .get_or_init(|| LaneWakeups::start(this.pool.clone(), this.feeds.clone()))
                        .quota_timer(),
                )),
                cfg.admission_interval,
            ),
            (
                Arc::new(AdmissionRecountReconciler::new(this.pool.clone(), this.partitions)),
                cfg.admission_recount_interval,
            ),
        ];
        match RetentionReconciler::new(this.pool.clone(), cfg.retention.clone()) {
            Ok(r) => jobs.push((Arc::new(r), cfg.retention_interval)),
            Err(e) => tracing::error!(error = %e, "retention reconciler not started: invalid configuration"),
        }
        let (leading, leader) = tokio::sync::watch::channel(false);
        tasks.spawn(crate::leader::run(
            this.pool.clone(),
            crate::leader::RECONCILERS,
            cfg.leader_id.clone().unwrap_or_else(default_leader_id),
            cfg.leader_lease_ttl,
            leading,
            cancel.clone(),
        ));
        this.leader = Some(leader.clone());
        let announcer =
            this.pulse.get_or_init(|| crate::pulse::Pulse::start(this.pool.clone(), this.feeds.clone())).announcer();
        let after_changes: reconciler::AfterChanges = Arc::new(move || announcer.events());
        for (r, interval) in jobs {
            tasks.spawn(reconciler::drive_while_leading(
                r,
                interval,
                cancel.clone(),
                leader.clone(),
                Some(after_changes.clone()),
            ));
        }
        *slot = Some(Scanners { cancel, tasks });
        true
    }

    /// Reads the event log after `after` (see [`event::read_events`]).
    pub async fn read_events(&self, after: EventCursor, limit: u32) -> Result<Vec<event::EventLogEntry>, EngineError> {
        event::read_events(&self.pool, after, limit, None, &ScannerFilter::default()).await
    }

    /// This process's announcer of committed events and frames (started on first use).
    pub(crate) fn pulse(&self) -> &crate::pulse::Pulse {
        self.pulse.get_or_init(|| crate::pulse::Pulse::start(self.pool.clone(), self.feeds.clone()))
    }

    /// Tells followers that a committed write added events to the log.
    pub(crate) fn announce_events(&self) {
        self.pulse().events();
    }

    /// Passes `r` through, announcing events when it succeeded (for writes that may have added
    /// events to the log).
    pub(crate) fn announced<T>(&self, r: Result<T, EngineError>) -> Result<T, EngineError> {
        if r.is_ok() {
            self.announce_events();
        }
        r
    }

    /// The feeds followers wait on, with the listener that fills them running.
    /// Starts the listener that fills them and the task that records this process's followers
    /// (see `pulse`) on first use.
    pub(crate) fn follow(&self) -> &Arc<crate::pulse::Feeds> {
        self.wakeups.get_or_init(|| LaneWakeups::start(self.pool.clone(), self.feeds.clone()));
        if self.pool.transaction_pooling() {
            // Followers here are woken by polling: no process needs to announce to them.
            return &self.feeds;
        }
        self.presence.get_or_init(|| {
            let stop = CancellationToken::new();
            tokio::spawn(crate::pulse::run_presence(
                self.pool.clone(),
                self.feeds.clone(),
                default_leader_id(),
                stop.clone(),
            ));
            stop.drop_guard()
        });
        &self.feeds
    }

    pub(crate) fn decode(&self, handle: &Handle) -> Result<HandlePayload, EngineError> {
        fence::decode(handle, &self.partitions)
    }

    /// The payload a fence triple names (see `fence::resolve`), for the fence-triple peers of
    /// the handle-based calls.
    pub(crate) async fn resolve_fence(
        &self,
        execution_id: &ExecutionId,
        attempt_index: AttemptIndex,
        fence: Option<&LeaseFence>,
    ) -> Result<HandlePayload, EngineError> {
        fence::resolve(&self.pool, &self.partitions, execution_id, attempt_index, fence).await
    }

    /// Decodes a completion's handle and checks its result payload.
    pub(crate) fn decode_completion(
        &self,
        handle: &Handle,
        payload: &Option<Vec<u8>>,
    ) -> Result<HandlePayload, EngineError> {
        let p = self.decode(handle)?;
        if let Some(bytes) = payload {
            validate_payload("result payload", bytes)?;
        }
        Ok(p)
    }

    pub(crate) async fn rejected(&self, p: &HandlePayload) -> EngineError {
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
        flows: true,
        suspension: true,
        budgets: true,
        worker_registry: true,
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
        sqlx::query(PING_SQL).execute(&self.pool).await.map_err(map_sqlx)?;
        Ok(())
    }

    async fn server_time_ms(&self) -> Result<u64, EngineError> {
        let ms: i64 = sqlx::query_scalar(SERVER_TIME_SQL).fetch_one(&self.pool).await.map_err(map_sqlx)?;
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
        self.pool.pool().close().await;
        Ok(())
    }
}
