//! Operator controls on Postgres: each logs its event in the transaction that writes it, and a
//! refused control logs nothing. (Their behaviour is in the conformance suite,
//! `ff_test::conformance::operator`.) The event log's reader holds back events behind any open
//! transaction of the cluster, so this file keeps apart from the tests that hold one open.

mod common;

use common::*;
use ff_core::event::EventCursor;
use ff_core::*;

#[tokio::test]
async fn operator_controls_log_their_events_with_the_transition() {
    let fx = Fixture::new().await;
    let id = fx.create("ops").await;
    let h = fx.claim("ops", "w").await;
    let start = fx.backend.read_events(EventCursor::BEGINNING, 100).await.unwrap().last().unwrap().cursor;
    fx.backend.revoke_lease(RevokeLeaseArgs::new(id, "hung")).await.unwrap();
    fx.backend.change_priority(ChangePriorityArgs { execution_id: id, new_priority: 7, lane_id: None }).await.unwrap();
    fx.backend.cancel_execution(CancelExecutionArgs::new(id, "stop")).await.unwrap();
    fx.backend.replay_execution(ReplayExecutionArgs { execution_id: id }).await.unwrap();
    // A refused control logs nothing.
    fx.backend.replay_execution(ReplayExecutionArgs { execution_id: id }).await.unwrap_err();
    let kinds: Vec<String> = fx.backend.read_events(start, 100).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["lease_revoked", "priority_changed", "cancelled", "replayed"]);
    drop(h);
}
