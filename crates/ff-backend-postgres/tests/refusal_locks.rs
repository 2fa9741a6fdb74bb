//! A call that ends without writing after it locked rows rolls back before it answers: its
//! locks are gone when the caller hears the refusal. (A dropped transaction's `ROLLBACK` goes
//! out later, from the pool's background return of its connection, so the next claim could
//! skip the execution still locked by a call that had already returned.)

mod common;

use common::*;
use ff_core::*;

/// Whether another session can lock `id`'s row at once.
async fn row_is_free(fx: &Fixture, id: &ExecutionId) -> bool {
    let mut tx = fx.pool().begin().await.unwrap();
    let locked = sqlx::query("SELECT 1 FROM ff_execution WHERE execution_id = $1 FOR UPDATE NOWAIT")
        .bind(id.uuid())
        .fetch_optional(&mut *tx)
        .await;
    tx.rollback().await.unwrap();
    match locked {
        Ok(row) => row.is_some(),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => false,
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn refused_calls_leave_no_lock_behind() {
    let fx = Fixture::new().await;
    for round in 0..20 {
        let id = fx.create("locks").await;
        let replay = fx.backend.replay_execution(ReplayExecutionArgs { execution_id: id }).await;
        assert_eq!(replay.unwrap_err().code(), "execution_not_terminal");
        assert!(row_is_free(&fx, &id).await, "round {round}: the refused replay still holds the row");

        let resume = ResumeExecutionArgs { execution_id: id, trigger_type: "operator".into(), resume_delay_ms: 0 };
        assert_eq!(fx.backend.resume_execution(resume).await.unwrap_err().code(), "execution_not_suspended");
        assert!(row_is_free(&fx, &id).await, "round {round}: the refused resume still holds the row");

        let unblock = UnblockExecutionArgs {
            execution_id: id,
            lane_id: LaneId::try_new("locks").unwrap(),
            expected_blocking_reason: BlockingReason::WaitingForBudget,
        };
        assert_eq!(fx.backend.unblock_execution(unblock).await.unwrap_err().code(), "not_blocked");
        assert!(row_is_free(&fx, &id).await, "round {round}: the refused unblock still holds the row");

        // And the next claim gets it.
        assert!(fx.try_claim("locks", "w").await.is_some(), "round {round}: the claim skipped the execution");
    }
}
