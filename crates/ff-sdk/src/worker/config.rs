//! [`WorkerConfig`]: how a worker claims and runs, checked before it starts.

use std::time::Duration;

use ff_core::{LaneId, Namespace, RegisterWorkerArgs, WorkerId, WorkerInstanceId};

use crate::error::SdkError;

/// How a worker claims and runs.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Worker pool name (shared by the processes of one deployment).
    pub worker_id: String,
    /// This process (unique; defaults to `<worker_id>-<random>`).
    pub worker_instance_id: String,
    /// Lanes to claim from (at least one).
    pub lanes: Vec<LaneId>,
    /// Capabilities offered; executions requiring others are left for other workers.
    pub capabilities: Vec<String>,
    /// Lease TTL; renewed every third of it.
    pub lease_ttl: Duration,
    /// Handlers running at once.
    pub concurrency: usize,
    /// Most executions one claim asks for (split across lanes). Each lane has its own claim
    /// loop, which holds the permits it is long-polling with, so keep `concurrency` at least
    /// the number of lanes; an idle lane then ties up at most its share for `claim_max_wait`.
    pub claim_batch: usize,
    /// How long one claim long-polls for work; also bounds how fast shutdown stops claiming.
    pub claim_max_wait: Duration,
    /// How long shutdown lets running handlers finish before releasing them.
    pub shutdown_grace: Duration,
    /// How long the worker counts as alive in the registry after each heartbeat (1 s..=24 h);
    /// it heartbeats every third of it. When it lapses the worker's leases are revoked.
    pub liveness_ttl: Duration,
    /// Namespace the worker registers in (may be empty).
    pub namespace: String,
}

impl WorkerConfig {
    /// Defaults: 30 s leases, 8 handlers, claims of up to 8, 2 s long-polls, 30 s grace, 30 s
    /// liveness TTL, the empty namespace.
    pub fn new<'a>(worker_id: impl Into<String>, lanes: impl IntoIterator<Item = &'a str>) -> Result<Self, SdkError> {
        let worker_id = worker_id.into();
        let lanes = lanes.into_iter().map(LaneId::try_new).collect::<Result<Vec<_>, _>>()?;
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        Ok(Self {
            worker_instance_id: format!("{worker_id}-{}", &suffix[..8]),
            worker_id,
            lanes,
            capabilities: Vec::new(),
            lease_ttl: Duration::from_secs(30),
            concurrency: 8,
            claim_batch: 8,
            claim_max_wait: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(30),
            liveness_ttl: Duration::from_secs(30),
            namespace: String::new(),
        })
    }

    /// The registration of this worker instance.
    pub fn registration(&self) -> RegisterWorkerArgs {
        RegisterWorkerArgs {
            worker_id: WorkerId::new(&self.worker_id),
            worker_instance_id: WorkerInstanceId::new(&self.worker_instance_id),
            lanes: self.lanes.clone(),
            capabilities: self.capabilities.iter().cloned().collect(),
            liveness_ttl_ms: u64::try_from(self.liveness_ttl.as_millis()).unwrap_or(u64::MAX),
            namespace: Namespace::new(&self.namespace),
        }
    }

    pub(super) fn validate(&self) -> Result<(), SdkError> {
        let bad = |m: String| Err(SdkError::Config(m));
        if self.lanes.is_empty() {
            return bad("a worker needs at least one lane".into());
        }
        if self.worker_id.is_empty() || self.worker_instance_id.is_empty() {
            return bad("worker_id and worker_instance_id must not be empty".into());
        }
        if self.concurrency == 0 || self.claim_batch == 0 {
            return bad("concurrency and claim_batch must be at least 1".into());
        }
        if self.lease_ttl < Duration::from_millis(30) {
            return bad(format!("lease_ttl {:?} is too short to renew", self.lease_ttl));
        }
        self.registration().validate().or_else(|e| bad(e.to_string()))
    }
}
