//! [`Fixture`]: one harness value plus the small builders every case uses.

use std::sync::Arc;

use ff_core::*;

use super::harness::{ConformanceHarness, Timer};

/// A fresh backend under test and shorthand for the calls cases repeat.
pub struct Fixture<H: ConformanceHarness> {
    /// The harness (time travel and fingerprints).
    pub harness: H,
    /// The backend under test.
    pub backend: Arc<dyn EngineBackend>,
}

impl<H: ConformanceHarness> Fixture<H> {
    /// A fresh, isolated backend.
    pub async fn new() -> Self {
        let harness = H::new().await;
        let backend = harness.backend();
        Self { harness, backend }
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

    /// Creates an execution after letting `f` adjust the arguments, returning the backend's
    /// answer as it is.
    pub async fn create_with_result(
        &self,
        lane: &str,
        f: impl FnOnce(&mut CreateExecutionArgs),
    ) -> Result<CreateExecutionResult, EngineError> {
        let mut args = args(lane);
        f(&mut args);
        self.backend.create_execution(args).await
    }

    /// Claims one execution on `lane` as `worker`, panicking when none is available.
    pub async fn claim(&self, lane: &str, worker: &str) -> Handle {
        self.try_claim(lane, worker).await.expect("an execution to claim")
    }

    /// Claims one execution on `lane` as `worker`, if there is one.
    pub async fn try_claim(&self, lane: &str, worker: &str) -> Option<Handle> {
        self.backend.claim(&lane_id(lane), &CapabilitySet::empty(), policy(worker)).await.expect("claim")
    }

    /// The public state of an existing execution.
    pub async fn state(&self, id: &ExecutionId) -> PublicState {
        self.backend.read_execution_state(id).await.expect("read state").expect("execution exists")
    }

    /// The stored state vector of an existing execution.
    pub async fn vector(&self, id: &ExecutionId) -> StateVector {
        self.snapshot(id).await.state
    }

    /// `describe_execution` of an existing execution.
    pub async fn snapshot(&self, id: &ExecutionId) -> ExecutionSnapshot {
        self.backend.describe_execution(id).await.expect("describe").expect("execution exists")
    }

    /// The backend's clock, as a timestamp.
    pub async fn now(&self) -> i64 {
        self.backend.server_time_ms().await.expect("server time") as i64
    }

    /// Moves one timer of `id` into the past (see [`ConformanceHarness::make_past`]).
    pub async fn make_past(&self, id: &ExecutionId, timer: Timer) {
        self.harness.make_past(id, timer).await;
    }

    /// Makes the delayed execution `id` due and runs the promotion hook, as the promoter would at
    /// its time.
    pub async fn make_due(&self, id: &ExecutionId) {
        self.make_past(id, Timer::Eligible).await;
        let lane = self.backend.read_execution_info(id).await.expect("info").expect("exists").lane_id;
        self.backend.promote_delayed(partition(id), &lane, id).await.expect("promote delayed");
    }

    /// Expires the current lease of `id` and runs the lease-expiry hook, as the reconciler would.
    pub async fn lose_lease(&self, id: &ExecutionId) {
        self.make_past(id, Timer::LeaseExpiry).await;
        self.backend.mark_lease_expired_if_due(partition(id), id).await.expect("mark lease expired");
    }

    /// A fingerprint of everything stored about `id`.
    pub async fn fingerprint(&self, id: &ExecutionId) -> String {
        self.harness.fingerprint(id).await
    }
}

/// A lane id that is known to be valid.
pub fn lane_id(s: &str) -> LaneId {
    LaneId::try_new(s).expect("valid lane")
}

/// Plain creation arguments on `lane`: kind `test.kind`, input `input`.
pub fn args(lane: &str) -> CreateExecutionArgs {
    let lane = lane_id(lane);
    CreateExecutionArgs::new(
        ExecutionId::solo(&lane, &PartitionConfig::default()),
        lane,
        "test.kind",
        b"input".to_vec(),
    )
}

/// A claim policy for `worker` with a 30 s lease.
pub fn policy(worker: &str) -> ClaimPolicy {
    ClaimPolicy::new("pool", worker, 30_000)
}

/// The decoded contents of a handle minted by any backend.
pub fn payload(h: &Handle) -> HandlePayload {
    HandlePayload::from_handle(h, h.backend).expect("a well-formed handle")
}

/// The execution partition `id` lives in.
pub fn partition(id: &ExecutionId) -> Partition {
    Partition::execution(id.partition_index())
}

/// A retry policy of `max_retries` with a fixed backoff.
pub fn retry_policy(max_retries: u32, delay_ms: u64) -> ExecutionPolicy {
    ExecutionPolicy {
        retry_policy: Some(RetryPolicy { max_retries, backoff: BackoffPolicy::Fixed { delay_ms } }),
        ..Default::default()
    }
}

/// A frame of `kind` carrying `bytes`.
pub fn frame(bytes: &[u8], kind: FrameKind) -> Frame {
    Frame {
        bytes: bytes.to_vec(),
        kind,
        frame_type: "chunk".into(),
        correlation_id: Some("c-1".into()),
        mode: StreamMode::Durable,
    }
}

/// A backend tag other than `tag`, for handles "from another backend".
pub fn other_backend(tag: BackendTag) -> BackendTag {
    if tag == BackendTag::Valkey { BackendTag::Sqlite } else { BackendTag::Valkey }
}

/// The vector of a leased, running execution.
pub const ACTIVE: StateVector = state::vector(
    LifecyclePhase::Active,
    OwnershipState::Leased,
    EligibilityState::NotApplicable,
    BlockingReason::None,
    TerminalOutcome::None,
    AttemptState::RunningAttempt,
);
