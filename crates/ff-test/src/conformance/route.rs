//! Capability routing: an execution requiring capabilities that no live worker offers is
//! parked outside the claimable set (claims never walk past it), and unparked, keeping its
//! place in line, when a worker offering them registers for its lane or claims on it.

use std::collections::BTreeSet;

use ff_core::state::{Transition, apply};
use ff_core::*;

use super::fixture::*;
use super::harness::ConformanceHarness;

fn requiring(caps: &[&str]) -> impl FnOnce(&mut CreateExecutionArgs) {
    let required: BTreeSet<String> = caps.iter().map(|c| (*c).to_owned()).collect();
    move |a| {
        a.policy = Some(ExecutionPolicy {
            routing_requirements: Some(RoutingRequirements { required_capabilities: required }),
            ..Default::default()
        })
    }
}

fn worker(instance: &str, lanes: &[&str], caps: &[&str]) -> RegisterWorkerArgs {
    RegisterWorkerArgs {
        worker_id: WorkerId::new("pool"),
        worker_instance_id: WorkerInstanceId::new(instance),
        lanes: lanes.iter().map(|l| lane_id(l)).collect(),
        capabilities: CapabilitySet::from_iter(caps.iter().copied()),
        liveness_ttl_ms: 30_000,
        namespace: Namespace::default(),
    }
}

fn created() -> StateVector {
    apply(Transition::Create { delayed: false }, None).unwrap()
}

/// Work no live worker can run is parked, ready work behind it is claimed, and a worker that
/// registers for the lane with the capabilities unparks it.
pub async fn unroutable_work_is_parked_until_a_capable_worker_registers<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let parked = fx.create_with("route", requiring(&["gpu"])).await;
    let parked_vector = apply(Transition::ParkForRoute, Some(&created())).unwrap();
    assert_eq!(fx.vector(&parked).await, parked_vector);
    let ready = fx.create("route").await;
    assert_eq!(payload(&fx.claim("route", "plain").await).execution_id, ready);
    assert!(fx.try_claim("route", "plain").await.is_none());

    // A worker on another lane, or without every capability, unparks nothing.
    fx.backend.register_worker(worker("elsewhere", &["other"], &["gpu"])).await.unwrap();
    fx.backend.register_worker(worker("half", &["route"], &["cpu"])).await.unwrap();
    assert_eq!(fx.vector(&parked).await, parked_vector);

    fx.backend.register_worker(worker("gpu-1", &["route"], &["gpu", "cuda"])).await.unwrap();
    assert_eq!(fx.vector(&parked).await, apply(Transition::UnparkRoute, Some(&parked_vector)).unwrap());
    let gpu = CapabilitySet::from_iter(["gpu", "cuda"]);
    let h = fx.backend.claim(&lane_id("route"), &gpu, policy("gpu-1")).await.unwrap().unwrap();
    assert_eq!(payload(&h).execution_id, parked);
}

/// A worker that claims without registering unparks what it can run with that same claim.
pub async fn a_claim_with_the_capabilities_unparks_and_takes_parked_work<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let parked = fx.create_with("route", requiring(&["gpu"])).await;
    assert_eq!(fx.vector(&parked).await.eligibility_state, EligibilityState::BlockedByRoute);
    let lane = lane_id("route");
    let cpu = CapabilitySet::from_iter(["cpu"]);
    assert!(fx.backend.claim(&lane, &cpu, policy("cpu")).await.unwrap().is_none());
    let gpu = CapabilitySet::from_iter(["gpu"]);
    let h = fx.backend.claim(&lane, &gpu, policy("gpu")).await.unwrap().expect("unparked and claimed");
    assert_eq!(payload(&h).execution_id, parked);
    // That worker now counts as live on the lane: its kind of work is no longer parked.
    let next = fx.create_with("route", requiring(&["gpu"])).await;
    assert_eq!(fx.vector(&next).await, created());
}

/// Work a registered live worker can run is never parked; work requiring nothing never is.
pub async fn routable_work_is_not_parked<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    fx.backend.register_worker(worker("gpu-1", &[], &["gpu", "cuda"])).await.unwrap();
    let id = fx.create_with("route", requiring(&["gpu"])).await;
    assert_eq!(fx.vector(&id).await, created());
    let plain = fx.create("route").await;
    assert_eq!(fx.vector(&plain).await, created());
}
