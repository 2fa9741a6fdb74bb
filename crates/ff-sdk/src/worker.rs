//! The worker runtime: register a handler per execution kind, start, and the runtime registers
//! the worker instance, claims, renews, runs and ends executions.
//!
//! Invariants:
//! - A started worker is in the worker registry: `start` registers it (and fails if that
//!   fails), a heartbeat every third of the liveness TTL keeps it there, and a heartbeat that
//!   finds the registration gone registers again. Graceful shutdown leaves the registry only
//!   after every execution has ended or been released, so leaving revokes nothing it released;
//!   `kill` leaves it registered until its TTL lapses, as a crash would.
//! - At most `concurrency` handlers run at once: a claim only asks for as many executions as
//!   there are free permits, and each running task holds one. When every permit is taken, a
//!   handler that completes asks for its successor in the same call
//!   ([`WorkerTransport::complete_and_claim`]: one round trip over HTTP) and hands its permit on.
//! - Every claimed execution ends in exactly one end call (complete / fail / cancel / delay /
//!   wait for children / suspend), unless the lease is lost first or the worker is killed; a panic is a
//!   failed attempt.
//! - A lease is renewed every third of its TTL while its handler runs; a renewal that finds the
//!   lease gone stops renewing and marks the task unhealthy ([`TaskContext::lease_healthy`]).
//! - A handler suspends by returning [`HandlerError::suspend_on`] (or [`HandlerError::suspend`]):
//!   the lease is released until a signal meets the condition, then the same attempt runs the
//!   handler again, which reads the signals with [`TaskContext::signals`] (`worker/suspension.rs`).
//! - A handler charges what it used to a budget its execution draws on with
//!   [`TaskContext::report_usage`] (`worker/budget.rs`).
//! - Shutdown stops claiming, lets running handlers finish for the grace period, then releases
//!   the stragglers (their executions become claimable again at once, same attempt).

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ff_core::{
    FailOutcome, FailureClass, FailureReason, HeartbeatWorkerArgs, HeartbeatWorkerOutcome, LaneId, MarkWorkerDeadArgs,
    MarkWorkerDeadOutcome, Namespace, TimestampMs, WorkerId, WorkerInstanceId,
};
use futures::FutureExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::SdkError;
use crate::transport::{ClaimArgs, ClaimedTask, WorkerTransport};

mod budget;
mod config;
mod context;
mod handler_error;
mod successor;
mod suspension;

pub use config::WorkerConfig;
pub use context::TaskContext;
use context::{TaskShared, renew_loop};
use handler_error::EndAction;
pub use handler_error::HandlerError;
use successor::Successor;

type HandlerFuture = Pin<Box<dyn Future<Output = Result<Option<Vec<u8>>, HandlerError>> + Send>>;
type ErasedHandler<S> = Arc<dyn Fn(TaskContext<S>, Vec<u8>) -> HandlerFuture + Send + Sync>;

/// A worker under construction: transport, configuration, state, handlers.
pub struct Worker<S = ()> {
    transport: Arc<dyn WorkerTransport>,
    config: WorkerConfig,
    state: Arc<S>,
    handlers: HashMap<String, ErasedHandler<S>>,
}

impl<S: Send + Sync + 'static> Worker<S> {
    /// A worker over `transport` whose handlers share `state`.
    pub fn new(transport: impl WorkerTransport, config: WorkerConfig, state: S) -> Self {
        Self { transport: Arc::new(transport), config, state: Arc::new(state), handlers: HashMap::new() }
    }

    /// Registers `handler` for executions of `kind`. The input is decoded from JSON into `P`
    /// (an empty input decodes as `null`); an input that does not decode fails the execution
    /// permanently. The returned value is stored as the JSON result.
    pub fn handle<P, R, F, Fut>(mut self, kind: &str, handler: F) -> Self
    where
        P: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(TaskContext<S>, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, HandlerError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let kind_name = kind.to_owned();
        let erased: ErasedHandler<S> = Arc::new(move |ctx, input| {
            let handler = handler.clone();
            let kind_name = kind_name.clone();
            Box::pin(async move {
                let bytes: &[u8] = if input.is_empty() { b"null" } else { &input };
                let payload: P = serde_json::from_slice(bytes).map_err(|e| {
                    HandlerError::permanent(format!("input of a {kind_name:?} execution does not decode: {e}"))
                })?;
                let out = handler(ctx, payload).await?;
                let bytes = serde_json::to_vec(&out)
                    .map_err(|e| HandlerError::permanent(format!("result does not encode as JSON: {e}")))?;
                Ok(Some(bytes))
            })
        });
        self.handlers.insert(kind.to_owned(), erased);
        self
    }

    /// Registers a handler over raw bytes in and out.
    pub fn handle_bytes<F, Fut>(mut self, kind: &str, handler: F) -> Self
    where
        F: Fn(TaskContext<S>, Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<Vec<u8>>, HandlerError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.handlers.insert(kind.to_owned(), Arc::new(move |ctx, input| Box::pin(handler(ctx, input))));
        self
    }

    /// Registers the worker instance, then claims and runs in the background. A refused
    /// registration (for instance `worker_instance_reassigned`: the instance id is live under
    /// another worker id) is the transport's error, and nothing is started.
    pub async fn start(self) -> Result<RunningWorker, SdkError> {
        self.config.validate()?;
        if self.handlers.is_empty() {
            return Err(SdkError::Config("register at least one handler before starting".into()));
        }
        self.transport.register(&self.config.registration()).await?;
        let stop = CancellationToken::new();
        let counters = Arc::new(Counters::default());
        let worker_instance_id = self.config.worker_instance_id.clone();
        let runtime = Arc::new(Runtime {
            transport: self.transport,
            config: self.config,
            state: self.state,
            handlers: self.handlers,
            counters: counters.clone(),
        });
        let supervisor = tokio::spawn(runtime.supervise(stop.clone()));
        Ok(RunningWorker { stop, supervisor, counters, worker_instance_id })
    }

    /// Runs until `signal` resolves, then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<WorkerReport, SdkError> {
        let running = self.start().await?;
        signal.await;
        Ok(running.shutdown().await)
    }
}

/// What a worker did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WorkerReport {
    /// Executions leased.
    pub claimed: u64,
    /// Of those, executions leased by the call that completed the previous one.
    pub claimed_on_completion: u64,
    /// Executions completed.
    pub completed: u64,
    /// Attempts failed with a retry scheduled.
    pub retries_scheduled: u64,
    /// Attempts failed for good.
    pub failed: u64,
    /// Executions cancelled by their handler.
    pub cancelled: u64,
    /// Executions parked by their handler.
    pub delayed: u64,
    /// Executions released by their handler until their children end.
    pub waiting_children: u64,
    /// Executions their handler suspended (counting those whose condition was met already,
    /// released to run again at once).
    pub suspended: u64,
    /// Handlers that panicked.
    pub panicked: u64,
    /// Executions released at shutdown.
    pub released: u64,
    /// End calls refused because the lease was gone.
    pub lease_lost: u64,
    /// Claim calls that failed.
    pub claim_errors: u64,
    /// Registrations made again after a heartbeat found the registration gone.
    pub reregistered: u64,
}

#[derive(Default)]
struct Counters {
    claimed: AtomicU64,
    claimed_on_completion: AtomicU64,
    completed: AtomicU64,
    retries_scheduled: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    delayed: AtomicU64,
    waiting_children: AtomicU64,
    suspended: AtomicU64,
    panicked: AtomicU64,
    released: AtomicU64,
    lease_lost: AtomicU64,
    claim_errors: AtomicU64,
    reregistered: AtomicU64,
}

impl Counters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn report(&self) -> WorkerReport {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WorkerReport {
            claimed: g(&self.claimed),
            claimed_on_completion: g(&self.claimed_on_completion),
            completed: g(&self.completed),
            retries_scheduled: g(&self.retries_scheduled),
            failed: g(&self.failed),
            cancelled: g(&self.cancelled),
            delayed: g(&self.delayed),
            waiting_children: g(&self.waiting_children),
            suspended: g(&self.suspended),
            panicked: g(&self.panicked),
            released: g(&self.released),
            lease_lost: g(&self.lease_lost),
            claim_errors: g(&self.claim_errors),
            reregistered: g(&self.reregistered),
        }
    }
}

/// A started worker.
pub struct RunningWorker {
    stop: CancellationToken,
    supervisor: JoinHandle<()>,
    counters: Arc<Counters>,
    worker_instance_id: String,
}

impl RunningWorker {
    /// The instance id this worker registered and claims under.
    pub fn worker_instance_id(&self) -> &str {
        &self.worker_instance_id
    }

    /// Counts so far.
    pub fn report(&self) -> WorkerReport {
        self.counters.report()
    }

    /// Stops claiming, waits for running handlers (up to the grace period, then releases
    /// them), leaves the worker registry, and returns the final counts.
    pub async fn shutdown(self) -> WorkerReport {
        self.stop.cancel();
        let _ = self.supervisor.await;
        self.counters.report()
    }

    /// Stops at once without ending, releasing or deregistering anything, as a crash would: the
    /// worker stays registered until its liveness TTL lapses (which revokes its leases), and
    /// its leases stay held until then or until they expire.
    pub fn kill(self) -> WorkerReport {
        self.supervisor.abort();
        self.counters.report()
    }
}

struct Runtime<S> {
    transport: Arc<dyn WorkerTransport>,
    config: WorkerConfig,
    state: Arc<S>,
    handlers: HashMap<String, ErasedHandler<S>>,
    counters: Arc<Counters>,
}

type Claimed = (ClaimedTask, OwnedSemaphorePermit);

impl<S: Send + Sync + 'static> Runtime<S> {
    /// Owns every task of the worker, so aborting it aborts them all.
    async fn supervise(self: Arc<Self>, stop: CancellationToken) {
        let beat_stop = CancellationToken::new();
        let mut heartbeats = JoinSet::new();
        heartbeats.spawn(self.clone().heartbeat_loop(beat_stop.clone()));
        let permits = Arc::new(Semaphore::new(self.config.concurrency));
        let (tx, mut rx) = mpsc::channel::<Claimed>(self.config.concurrency);
        let mut claimers = JoinSet::new();
        let per_lane = self.config.claim_batch.div_ceil(self.config.lanes.len()).max(1);
        for lane in &self.config.lanes {
            claimers.spawn(self.clone().claim_loop(lane.clone(), per_lane, permits.clone(), tx.clone(), stop.clone()));
        }
        let successor = Successor::new(&tx, &permits, &stop);
        drop(tx);
        let release = CancellationToken::new();
        let mut running = JoinSet::new();
        // Until the claimers stop (on shutdown), start every claimed task; then drain.
        loop {
            tokio::select! {
                next = rx.recv() => match next {
                    Some((task, permit)) => {
                        let span = crate::telemetry::handler_span(&task);
                        let run = self.clone().run_task(task, permit, release.clone(), successor.clone());
                        running.spawn(run.instrument(span));
                    }
                    None => break,
                },
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
        }
        while claimers.join_next().await.is_some() {}
        let drained =
            tokio::time::timeout(self.config.shutdown_grace, async { while running.join_next().await.is_some() {} })
                .await;
        if drained.is_err() {
            tracing::warn!(count = running.len(), "handlers still running after the grace period: releasing them");
            release.cancel();
            let released =
                tokio::time::timeout(Duration::from_secs(10), async { while running.join_next().await.is_some() {} })
                    .await;
            if released.is_err() {
                running.abort_all();
            }
        }
        // Heartbeats stop (an in-flight one finishes) before the worker leaves the registry, so
        // no late heartbeat registers it again.
        beat_stop.cancel();
        while heartbeats.join_next().await.is_some() {}
        self.deregister().await;
    }

    /// Heartbeats every third of the liveness TTL until `stop`; a heartbeat that finds the
    /// registration gone (its TTL lapsed, or it was marked dead) registers again.
    async fn heartbeat_loop(self: Arc<Self>, stop: CancellationToken) {
        let registration = self.config.registration();
        let worker_id = registration.worker_id.clone();
        let args = HeartbeatWorkerArgs {
            worker_instance_id: registration.worker_instance_id.clone(),
            namespace: registration.namespace.clone(),
        };
        let period = (self.config.liveness_ttl / 3).max(Duration::from_millis(10));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = stop.cancelled() => return,
            }
            match self.transport.heartbeat(&worker_id, &args).await {
                Ok(HeartbeatWorkerOutcome::Refreshed { .. }) => {}
                Ok(HeartbeatWorkerOutcome::NotRegistered) => {
                    tracing::warn!(instance = %args.worker_instance_id, "registration lapsed; registering again");
                    match self.transport.register(&registration).await {
                        Ok(_) => Counters::bump(&self.counters.reregistered),
                        Err(e) => tracing::warn!(error = %e, "registering again failed"),
                    }
                }
                Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
            }
        }
    }

    /// Leaves the registry at the end of a graceful shutdown, retrying calls that failed in
    /// transit; anything else is logged (the registration then lapses with its TTL).
    async fn deregister(&self) {
        let worker_id = WorkerId::new(&self.config.worker_id);
        let args = MarkWorkerDeadArgs {
            worker_instance_id: WorkerInstanceId::new(&self.config.worker_instance_id),
            namespace: Namespace::new(&self.config.namespace),
            reason: "shutdown".into(),
        };
        let mut pause = Duration::from_millis(50);
        for attempt in 0..5 {
            match self.transport.deregister(&worker_id, &args).await {
                Ok(MarkWorkerDeadOutcome::Marked { revoked_leases }) => {
                    if revoked_leases > 0 {
                        tracing::warn!(revoked_leases, "left the registry holding leases that could not be released");
                    }
                    return;
                }
                Ok(MarkWorkerDeadOutcome::NotRegistered) => return,
                Err(e) if e.is_retryable() && attempt < 4 => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not leave the registry; the registration will lapse");
                    return;
                }
            }
        }
    }

    async fn claim_loop(
        self: Arc<Self>,
        lane: LaneId,
        batch: usize,
        permits: Arc<Semaphore>,
        tx: mpsc::Sender<Claimed>,
        stop: CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let first = tokio::select! {
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = stop.cancelled() => return,
            };
            let mut held = vec![first];
            while held.len() < batch {
                match permits.clone().try_acquire_owned() {
                    Ok(p) => held.push(p),
                    Err(_) => break,
                }
            }
            let args = self.claim_args(&lane, held.len(), self.config.claim_max_wait);
            match self.transport.claim(&args).await {
                Ok(tasks) => {
                    backoff = Duration::from_millis(50);
                    for task in tasks {
                        Counters::bump(&self.counters.claimed);
                        // A claim never returns more than it asked for.
                        let Some(permit) = held.pop() else { break };
                        if tx.send((task, permit)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    Counters::bump(&self.counters.claim_errors);
                    tracing::warn!(lane = %lane.as_str(), error = %e, "claim failed; backing off");
                    drop(held);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn run_task(
        self: Arc<Self>,
        task: ClaimedTask,
        permit: OwnedSemaphorePermit,
        release: CancellationToken,
        successor: Successor,
    ) {
        let handler = self.handlers.get(&task.execution_kind).cloned();
        let input = task.input.clone();
        let ctx = TaskContext {
            inner: Arc::new(TaskShared {
                task,
                transport: self.transport.clone(),
                state: self.state.clone(),
                worker_instance_id: self.config.worker_instance_id.clone(),
                healthy: AtomicBool::new(true),
            }),
        };
        let outcome = match handler {
            None => Some(Err(HandlerError::permanent(format!(
                "no handler is registered for execution kind {:?}",
                ctx.execution_kind()
            )))),
            Some(handler) => {
                let work = AssertUnwindSafe(handler(ctx.clone(), input)).catch_unwind();
                let renew = renew_loop(ctx.clone());
                tokio::pin!(work, renew);
                tokio::select! {
                    r = &mut work => Some(r.unwrap_or_else(|panic| {
                        Counters::bump(&self.counters.panicked);
                        Err(HandlerError::transient(format!("handler panicked: {}", panic_message(&panic))))
                    })),
                    _ = &mut renew => None,
                    _ = release.cancelled() => None,
                }
            }
        };
        tracing::Span::current().record(
            "ff.outcome",
            match &outcome {
                None => "released",
                Some(Ok(_)) => "completed",
                Some(Err(_)) => "error",
            },
        );
        let permit = match &outcome {
            Some(Ok(result)) => match self.complete_and_hand_on(&ctx, result, permit, &successor).await {
                Some(permit) => permit,
                None => return,
            },
            _ => permit,
        };
        self.end(&ctx, outcome).await;
        drop(permit);
    }

    /// A claim of up to `max` executions of `lane` as this worker.
    fn claim_args(&self, lane: &LaneId, max: usize, max_wait: Duration) -> ClaimArgs {
        ClaimArgs {
            worker_id: self.config.worker_id.clone(),
            worker_instance_id: self.config.worker_instance_id.clone(),
            lane: lane.clone(),
            capabilities: self.config.capabilities.clone(),
            lease_ttl_ms: self.config.lease_ttl.as_millis() as u64,
            max,
            max_wait,
        }
    }

    /// Ends the execution per the handler's outcome (`None` = release it), retrying calls that
    /// failed in transit.
    async fn end<T>(&self, ctx: &TaskContext<T>, outcome: Option<Result<Option<Vec<u8>>, HandlerError>>) {
        let task = &ctx.inner.task;
        let t = &self.transport;
        let mut pause = Duration::from_millis(50);
        for attempt in 0..5 {
            let result = match &outcome {
                Some(Ok(result)) => t.complete(task, result.clone()).await.map(|_| &self.counters.completed),
                Some(Err(HandlerError { action: EndAction::Fail { class, message, detail } })) => t
                    .fail(task, FailureReason { message: message.clone(), detail: detail.clone() }, *class)
                    .await
                    .map(|o| match o {
                        FailOutcome::RetryScheduled { .. } => &self.counters.retries_scheduled,
                        FailOutcome::TerminalFailed => &self.counters.failed,
                    }),
                Some(Err(HandlerError { action: EndAction::Cancel { reason } })) => {
                    t.cancel(task, reason).await.map(|_| &self.counters.cancelled)
                }
                Some(Err(HandlerError { action: EndAction::Delay { until } })) => {
                    t.delay(task, *until).await.map(|_| &self.counters.delayed)
                }
                Some(Err(HandlerError { action: EndAction::WaitChildren })) => {
                    t.wait_children(task).await.map(|_| &self.counters.waiting_children)
                }
                Some(Err(HandlerError { action: EndAction::Suspend(args) })) => self.suspend(task, args).await,
                None => t.delay(task, RELEASE_AT).await.map(|_| &self.counters.released),
            };
            match result {
                Ok(counter) => return Counters::bump(counter),
                Err(e) if e.is_lease_lost() => {
                    Counters::bump(&self.counters.lease_lost);
                    tracing::warn!(execution = %ctx.execution_id(), code = ?e.code(), "lease lost before the end call");
                    return;
                }
                Err(e) if e.is_retryable() && attempt < 4 => {
                    tracing::debug!(error = %e, "end call failed in transit; retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(e) => {
                    tracing::error!(execution = %ctx.execution_id(), error = %e, "could not end the execution; its lease will expire and it will be reclaimed");
                    return;
                }
            }
        }
    }
}

impl<S> Runtime<S> {
    /// Suspends as the handler asked. Signals already buffered may meet the condition, keeping
    /// the lease: the execution is then released so that the same attempt runs again at once
    /// and reads them. A suspension the engine refuses as invalid fails the attempt for good
    /// (a retry would ask the same).
    async fn suspend(&self, task: &ClaimedTask, args: &ff_core::SuspendArgs) -> Result<&AtomicU64, SdkError> {
        let t = &self.transport;
        match t.suspend(task, args.clone()).await {
            Ok(ff_core::SuspendOutcome::Suspended { .. }) => Ok(&self.counters.suspended),
            Ok(ff_core::SuspendOutcome::AlreadySatisfied { .. }) => {
                t.delay(task, RELEASE_AT).await.map(|_| &self.counters.suspended)
            }
            Err(e) if !e.is_retryable() && !e.is_lease_lost() => {
                let reason = FailureReason { message: format!("the suspension was refused: {e}"), detail: None };
                t.fail(task, reason, FailureClass::Permanent).await.map(|_| &self.counters.failed)
            }
            Err(e) => Err(e),
        }
    }
}

/// When a released execution becomes claimable again: the epoch, which is always due, so the
/// next claim of its lane resumes the same attempt. No host clock is read.
const RELEASE_AT: TimestampMs = TimestampMs(0);

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}
