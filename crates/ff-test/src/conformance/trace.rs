//! Trace context: what a submitter gives an execution travels, unchanged, with every claim of
//! it and with its context read.

use ff_core::*;

use super::fixture::*;
use super::harness::ConformanceHarness;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A claim with context returns each execution's trace context (none when it was given none),
/// and so does the claim of its retry; `read_execution_context` returns it too.
pub async fn the_trace_context_travels_with_every_claim<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let trace = TraceContext::new(TRACEPARENT, Some("vendor=opaque".into())).unwrap();
    let traced = fx
        .create_with("trace", |a| {
            a.trace_context = Some(trace.clone());
            a.policy = Some(retry_policy(1, 60_000));
        })
        .await;
    let plain = fx.create("trace").await;
    let lane = lane_id("trace");
    let caps = CapabilitySet::default();
    let claimed = fx.backend.claim_with_context(&lane, &caps, policy("w1"), 2).await.unwrap();
    assert_eq!(claimed.len(), 2);
    for leased in &claimed {
        let id = payload(&leased.handle).execution_id;
        let want = (id == traced).then(|| trace.clone());
        assert_eq!(leased.context.trace_context, want, "{id}");
        assert_eq!(fx.backend.read_execution_context(&id).await.unwrap().trace_context, want);
    }
    let first = claimed.iter().find(|l| payload(&l.handle).execution_id == traced).unwrap();
    let out = fx.backend.fail(&first.handle, FailureReason::new("again"), FailureClass::Transient).await.unwrap();
    assert!(matches!(out, FailOutcome::RetryScheduled { .. }), "{out:?}");
    fx.make_due(&traced).await;
    let retry = fx.backend.claim_with_context(&lane, &caps, policy("w2"), 1).await.unwrap();
    assert_eq!(retry.len(), 1);
    assert_eq!(payload(&retry[0].handle).attempt_index, AttemptIndex(1));
    assert_eq!(retry[0].context.trace_context, Some(trace), "the retry carries the same context");
    assert_eq!(fx.backend.read_execution_context(&plain).await.unwrap().trace_context, None);
}
