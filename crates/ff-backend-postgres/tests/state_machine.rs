//! The database itself refuses vectors that break the state invariants, whatever statement
//! writes them. (That every transition stores what `ff_core::state::apply` computes is in the
//! conformance suite, `ff_test::conformance::state_machine`.)

mod common;

use common::*;

#[tokio::test]
async fn the_database_refuses_impossible_states() {
    let fx = Fixture::new().await;
    let id = fx.create("sm").await;
    let before = fx.fingerprint(&id).await;
    for bad in [
        // terminal without an outcome
        "UPDATE ff_execution SET lifecycle_phase = 'terminal', eligibility_state = 'not_applicable', \
         attempt_state = 'attempt_terminal', completed_at_ms = 1 WHERE execution_id = $1",
        // an outcome while runnable
        "UPDATE ff_execution SET terminal_outcome = 'success' WHERE execution_id = $1",
        // leased without being active
        "UPDATE ff_execution SET ownership_state = 'leased' WHERE execution_id = $1",
        // a result without success
        "UPDATE ff_execution SET result = 'x' WHERE execution_id = $1",
        // a literal outside the alphabet
        "UPDATE ff_execution SET lifecycle_phase = 'running' WHERE execution_id = $1",
        // priority out of range
        "UPDATE ff_execution SET priority = 9001 WHERE execution_id = $1",
    ] {
        let err = sqlx::query(bad).bind(id.uuid()).execute(fx.pool()).await.expect_err(bad);
        let code = err.as_database_error().and_then(|d| d.code()).map(|c| c.into_owned());
        assert!(matches!(code.as_deref(), Some("23514") | Some("22P02")), "{bad}: {err}");
    }
    assert_eq!(fx.fingerprint(&id).await, before);
}
