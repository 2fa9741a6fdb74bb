//! The worker registry: workers register with a liveness TTL, heartbeat, and are listed while
//! alive. A worker marked dead, or whose TTL lapsed, leaves the registry and its leases are
//! revoked in the same step: its executions are claimable at once, and its own next call with
//! such a lease is refused with `lease_revoked`.

use ff_core::*;

use super::fixture::*;
use super::harness::ConformanceHarness;

fn registration(worker: &str, instance: &str) -> RegisterWorkerArgs {
    RegisterWorkerArgs {
        worker_id: WorkerId::new(worker),
        worker_instance_id: WorkerInstanceId::new(instance),
        lanes: vec![lane_id("jobs")],
        capabilities: CapabilitySet::from_iter(["gpu"]),
        liveness_ttl_ms: 30_000,
        namespace: Namespace::new("team-a"),
    }
}

fn listing(namespace: Option<&str>, after: Option<&str>, limit: Option<usize>) -> ListWorkersArgs {
    ListWorkersArgs { namespace: namespace.map(Namespace::new), after: after.map(WorkerInstanceId::new), limit }
}

fn instances(page: &ListWorkersResult) -> Vec<&str> {
    page.entries.iter().map(|w| w.worker_instance_id.as_str()).collect()
}

/// Registering twice refreshes; heartbeats extend; the listing shows what was registered,
/// filters by namespace and pages by instance id.
pub async fn register_refresh_heartbeat_and_list<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let before = fx.now().await;
    let first = fx.backend.register_worker(registration("pool", "i-1")).await.unwrap();
    let RegisterWorkerOutcome::Registered { expires_at_ms } = first else { panic!("expected Registered: {first:?}") };
    assert!(expires_at_ms.0 >= before + 30_000, "expiry {expires_at_ms:?} is the TTL after now");
    let again = fx.backend.register_worker(registration("pool", "i-1")).await.unwrap();
    assert!(matches!(again, RegisterWorkerOutcome::Refreshed { .. }), "{again:?}");
    let beat = fx
        .backend
        .heartbeat_worker(HeartbeatWorkerArgs {
            worker_instance_id: WorkerInstanceId::new("i-1"),
            namespace: Namespace::new("team-a"),
        })
        .await
        .unwrap();
    let HeartbeatWorkerOutcome::Refreshed { next_expiry_ms } = beat else { panic!("expected Refreshed: {beat:?}") };
    assert!(next_expiry_ms >= expires_at_ms);

    for (worker, instance, ns) in [("pool", "i-2", "team-a"), ("pool", "i-3", "team-a"), ("other", "j-1", "team-b")] {
        let mut args = registration(worker, instance);
        args.namespace = Namespace::new(ns);
        fx.backend.register_worker(args).await.unwrap();
    }
    let all = fx.backend.list_workers(listing(None, None, None)).await.unwrap();
    assert_eq!(instances(&all), ["i-1", "i-2", "i-3", "j-1"]);
    assert_eq!(all.cursor, None);
    let one = &all.entries[0];
    assert_eq!(one.worker_id, WorkerId::new("pool"));
    assert_eq!(one.lanes, vec![lane_id("jobs")]);
    assert_eq!(one.capabilities, CapabilitySet::from_iter(["gpu"]));
    assert_eq!(one.namespace, Namespace::new("team-a"));
    assert_eq!(one.liveness_ttl_ms, 30_000);
    assert_eq!(one.expires_at_ms, next_expiry_ms);
    assert!(one.registered_at_ms <= one.last_heartbeat_at_ms);

    let team_b = fx.backend.list_workers(listing(Some("team-b"), None, None)).await.unwrap();
    assert_eq!(instances(&team_b), ["j-1"]);
    let page = fx.backend.list_workers(listing(Some("team-a"), None, Some(2))).await.unwrap();
    assert_eq!(instances(&page), ["i-1", "i-2"]);
    let cursor = page.cursor.clone().expect("more pages");
    let rest = fx.backend.list_workers(listing(Some("team-a"), Some(cursor.as_str()), Some(2))).await.unwrap();
    assert_eq!(instances(&rest), ["i-3"]);
    assert_eq!(rest.cursor, None);
}

/// An instance id registered to one live worker id cannot be taken by another; nothing changes.
pub async fn an_instance_bound_to_another_worker_is_refused<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    fx.backend.register_worker(registration("pool-a", "shared")).await.unwrap();
    let listed = fx.backend.list_workers(listing(None, None, None)).await.unwrap();
    let err = fx.backend.register_worker(registration("pool-b", "shared")).await.unwrap_err();
    assert_eq!(err.code(), "worker_instance_reassigned", "{err}");
    assert_eq!(fx.backend.list_workers(listing(None, None, None)).await.unwrap(), listed, "nothing written");
}

/// Marking a worker dead revokes its lease at once: the execution is reclaimable, the dead
/// worker's next call is refused with `lease_revoked` and writes nothing, and another worker
/// takes the execution over as a reclaim.
pub async fn marking_a_worker_dead_revokes_its_leases_at_once<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    fx.backend.register_worker(registration("pool", "doomed")).await.unwrap();
    let id = fx.create("jobs").await;
    let untouched = fx.create("jobs").await;
    let h = fx.claim("jobs", "doomed").await;
    let before = fx.vector(&id).await;

    let marked = fx
        .backend
        .mark_worker_dead(MarkWorkerDeadArgs {
            worker_instance_id: WorkerInstanceId::new("doomed"),
            namespace: Namespace::new("team-a"),
            reason: "host lost".into(),
        })
        .await
        .unwrap();
    assert_eq!(marked, MarkWorkerDeadOutcome::Marked { revoked_leases: 1 });
    let after = fx.vector(&id).await;
    assert_eq!(after, state::apply(state::Transition::RevokeLease, Some(&before)).unwrap());
    assert_eq!(after.ownership_state, OwnershipState::LeaseRevoked);
    assert_eq!(fx.state(&untouched).await, PublicState::Waiting, "other work is untouched");

    let revoked = fx.fingerprint(&id).await;
    let err = fx.backend.complete(&h, None).await.unwrap_err();
    assert_eq!(err.code(), "lease_revoked", "{err}");
    assert_eq!(fx.fingerprint(&id).await, revoked, "a refused call wrote");

    let r = fx.claim("jobs", "survivor").await;
    assert_eq!(payload(&r).execution_id, id, "the revoked execution keeps its place in line");
    assert_eq!(r.kind, HandleKind::Reclaimed);
    assert_eq!(fx.snapshot(&id).await.lease_reclaim_count, 1);
    fx.backend.complete(&r, None).await.unwrap();
    assert_eq!(fx.state(&id).await, PublicState::Completed);

    let listed = fx.backend.list_workers(listing(None, None, None)).await.unwrap();
    assert!(listed.entries.is_empty(), "a dead worker is not listed: {listed:?}");
    let beat = fx
        .backend
        .heartbeat_worker(HeartbeatWorkerArgs {
            worker_instance_id: WorkerInstanceId::new("doomed"),
            namespace: Namespace::new("team-a"),
        })
        .await
        .unwrap();
    assert_eq!(beat, HeartbeatWorkerOutcome::NotRegistered);
}

/// A worker whose TTL lapses without a heartbeat is retired by the liveness pass, and its
/// leases are revoked as if it had been marked dead.
pub async fn a_lapsed_worker_is_retired_and_its_leases_revoked<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    fx.backend.register_worker(registration("pool", "silent")).await.unwrap();
    fx.backend.register_worker(registration("pool", "alive")).await.unwrap();
    let id = fx.create("jobs").await;
    let h = fx.claim("jobs", "silent").await;

    fx.harness.lapse_worker(&WorkerInstanceId::new("silent")).await;
    assert_eq!(fx.vector(&id).await.ownership_state, OwnershipState::LeaseRevoked);
    assert_eq!(fx.backend.renew(&h).await.unwrap_err().code(), "lease_revoked");
    let listed = fx.backend.list_workers(listing(None, None, None)).await.unwrap();
    assert_eq!(instances(&listed), ["alive"]);
    let beat = fx
        .backend
        .heartbeat_worker(HeartbeatWorkerArgs {
            worker_instance_id: WorkerInstanceId::new("silent"),
            namespace: Namespace::new("team-a"),
        })
        .await
        .unwrap();
    assert_eq!(beat, HeartbeatWorkerOutcome::NotRegistered, "a lapsed worker must register again");
    let again = fx.backend.register_worker(registration("pool", "silent")).await.unwrap();
    assert!(matches!(again, RegisterWorkerOutcome::Registered { .. }), "{again:?}");
    assert_eq!(fx.claim("jobs", "alive").await.kind, HandleKind::Reclaimed);
}

/// Heartbeats and deaths of instances that are not registered (or registered in another
/// namespace) report `NotRegistered` and change nothing.
pub async fn unknown_workers_are_not_registered<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    fx.backend.register_worker(registration("pool", "known")).await.unwrap();
    for (instance, ns) in [("nobody", "team-a"), ("known", "team-b")] {
        let beat = fx
            .backend
            .heartbeat_worker(HeartbeatWorkerArgs {
                worker_instance_id: WorkerInstanceId::new(instance),
                namespace: Namespace::new(ns),
            })
            .await
            .unwrap();
        assert_eq!(beat, HeartbeatWorkerOutcome::NotRegistered, "{instance} in {ns}");
        let dead = fx
            .backend
            .mark_worker_dead(MarkWorkerDeadArgs {
                worker_instance_id: WorkerInstanceId::new(instance),
                namespace: Namespace::new(ns),
                reason: "gone".into(),
            })
            .await
            .unwrap();
        assert_eq!(dead, MarkWorkerDeadOutcome::NotRegistered, "{instance} in {ns}");
    }
    assert_eq!(instances(&fx.backend.list_workers(listing(None, None, None)).await.unwrap()), ["known"]);
}

/// Every invalid registry argument gets its specific code, and nothing is registered.
pub async fn bad_registry_input_is_rejected_and_writes_nothing<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    type Edit = fn(&mut RegisterWorkerArgs);
    let cases: [(&str, Edit, &str); 8] = [
        ("ttl 0", |a| a.liveness_ttl_ms = 0, "invalid_input"),
        ("ttl under the minimum", |a| a.liveness_ttl_ms = WORKER_TTL_MIN_MS - 1, "invalid_input"),
        ("ttl over the maximum", |a| a.liveness_ttl_ms = WORKER_TTL_MAX_MS + 1, "invalid_input"),
        ("empty worker id", |a| a.worker_id = WorkerId::new(""), "invalid_input"),
        ("empty instance id", |a| a.worker_instance_id = WorkerInstanceId::new(""), "invalid_input"),
        ("NUL in instance id", |a| a.worker_instance_id = WorkerInstanceId::new("a\0b"), "nul_in_text"),
        ("bad capability token", |a| a.capabilities = CapabilitySet::from_iter(["has space"]), "invalid_capabilities"),
        ("too many lanes", |a| a.lanes = vec![lane_id("jobs"); MAX_WORKER_LANES + 1], "invalid_input"),
    ];
    for (what, edit, code) in cases {
        let mut args = registration("pool", "w");
        edit(&mut args);
        let err = fx.backend.register_worker(args).await.unwrap_err();
        assert_eq!(err.code(), code, "{what}: {err}");
    }
    for limit in [0, MAX_WORKER_PAGE + 1] {
        let err = fx.backend.list_workers(listing(None, None, Some(limit))).await.unwrap_err();
        assert_eq!(err.code(), "invalid_input", "limit {limit}");
    }
    fx.backend.register_worker(registration("pool", "w")).await.unwrap();
    for reason in ["", "line\nbreak", &"x".repeat(MAX_DEATH_REASON_BYTES + 1)] {
        let err = fx
            .backend
            .mark_worker_dead(MarkWorkerDeadArgs {
                worker_instance_id: WorkerInstanceId::new("w"),
                namespace: Namespace::new("team-a"),
                reason: reason.to_owned(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), "invalid_input", "reason {reason:?}");
    }
    let listed = fx.backend.list_workers(listing(None, None, None)).await.unwrap();
    assert_eq!(instances(&listed), ["w"], "only the valid registration was written, and it is alive");
}
