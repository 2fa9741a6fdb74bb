//! Concurrency: many workers claiming one lane at once claim each execution exactly once.

use std::collections::HashSet;

use ff_core::*;

use super::fixture::*;
use super::harness::ConformanceHarness;

/// Sixteen workers, mixing single and batch claims, drain 400 executions: every execution is
/// claimed, none twice, and each has exactly one attempt.
pub async fn concurrent_claimers_claim_each_execution_exactly_once<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let n = 400;
    let batch: Vec<_> = (0..n).map(|_| args("race")).collect();
    let ids: Vec<_> = batch.iter().map(|a| a.execution_id).collect();
    fx.backend.create_executions(batch).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..16 {
        let backend = fx.backend.clone();
        tasks.spawn(async move {
            let lane = lane_id("race");
            let me = format!("w{w}");
            let mut mine = Vec::new();
            loop {
                let got = if w % 2 == 0 {
                    backend.claim(&lane, &CapabilitySet::empty(), policy(&me)).await.unwrap().into_iter().collect()
                } else {
                    backend.claim_batch(&lane, &CapabilitySet::empty(), policy(&me), 7).await.unwrap()
                };
                if got.is_empty() {
                    return mine;
                }
                for h in got {
                    assert_eq!(payload(&h).worker_instance_id.as_str(), me, "the handle names its own worker");
                    mine.push(payload(&h).execution_id);
                    backend.complete(&h, None).await.unwrap();
                }
            }
        });
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r.unwrap());
    }
    let unique: HashSet<_> = all.iter().copied().collect();
    assert_eq!(all.len(), n, "every execution claimed");
    assert_eq!(unique.len(), n, "no execution claimed twice");
    for id in &ids {
        assert_eq!(fx.state(id).await, PublicState::Completed);
        assert_eq!(fx.backend.read_total_attempt_count(id).await.unwrap(), AttemptIndex(1), "{id}: one attempt");
    }
}
