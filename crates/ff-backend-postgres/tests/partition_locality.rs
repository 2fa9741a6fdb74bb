//! The partition-key layout of ARCHITECTURE.md ("On a distributed Postgres"), checked on the
//! rows themselves: a row trigger on every table that would be distributed by `partition_key`
//! records, per transaction, the partition key of each row written (its own column, else its
//! execution's or its flow's). Every transaction of the hot path (creating one execution,
//! claiming, renewing, reporting progress, appending frames, completing, failing into a retry,
//! a flow member's completion releasing its downstream) writes rows of one partition key only,
//! so on a sharded cluster each would stay on one shard. A batch creation over two lanes of
//! different partitions is caught writing two: the check can fail.

mod common;

use common::*;
use ff_core::*;

/// Tables distributed by partition key in the documented layout.
const DISTRIBUTED: [&str; 17] = [
    "ff_execution",
    "ff_attempt",
    "ff_frame",
    "ff_event",
    "ff_flow",
    "ff_edge",
    "ff_edge_group",
    "ff_flow_cancel_member",
    "ff_suspension",
    "ff_waitpoint",
    "ff_signal",
    "ff_suspend_dedup",
    "ff_claim_grant",
    "ff_reclaim_grant",
    "ff_budget_member",
    "ff_stream_summary",
    "ff_stream_live",
];

async fn install_audit(fx: &Fixture) {
    sqlx::raw_sql(
        "CREATE TABLE ff_test_touch (txid bigint NOT NULL, tbl text NOT NULL, pk smallint);
         CREATE FUNCTION ff_test_touch() RETURNS trigger LANGUAGE plpgsql AS $$
         DECLARE r jsonb; k smallint;
         BEGIN
             IF TG_OP = 'DELETE' THEN r := to_jsonb(OLD); ELSE r := to_jsonb(NEW); END IF;
             IF r ? 'partition_key' THEN
                 k := (r->>'partition_key')::smallint;
             ELSIF r ? 'execution_id' THEN
                 SELECT partition_key INTO k FROM ff_execution WHERE execution_id = (r->>'execution_id')::uuid;
             ELSIF r ? 'downstream_execution_id' THEN
                 SELECT partition_key INTO k FROM ff_execution
                  WHERE execution_id = (r->>'downstream_execution_id')::uuid;
             ELSIF r ? 'flow_id' THEN
                 SELECT partition_key INTO k FROM ff_flow WHERE flow_id = (r->>'flow_id')::uuid;
             END IF;
             INSERT INTO ff_test_touch VALUES (txid_current(), TG_TABLE_NAME, k);
             RETURN NULL;
         END $$;",
    )
    .execute(fx.pool())
    .await
    .unwrap();
    for table in DISTRIBUTED {
        sqlx::raw_sql(&format!(
            "CREATE TRIGGER ff_test_touch AFTER INSERT OR UPDATE OR DELETE ON {table} \
             FOR EACH ROW EXECUTE FUNCTION ff_test_touch()"
        ))
        .execute(fx.pool())
        .await
        .unwrap();
    }
}

/// Transactions recorded since the last call: (partition keys, tables) of each.
async fn transactions(fx: &Fixture) -> Vec<(Vec<Option<i16>>, Vec<String>)> {
    let rows: Vec<(Vec<Option<i16>>, Vec<String>)> = sqlx::query_as(
        "WITH t AS (DELETE FROM ff_test_touch RETURNING *) \
         SELECT array_agg(DISTINCT pk), array_agg(DISTINCT tbl) FROM t GROUP BY txid ORDER BY min(txid)",
    )
    .fetch_all(fx.pool())
    .await
    .unwrap();
    rows
}

/// Checks that each transaction since the last check wrote rows of one partition key.
async fn one_partition_each(fx: &Fixture, what: &str, expected_transactions: usize) {
    let txs = transactions(fx).await;
    assert!(txs.len() >= expected_transactions, "{what}: {} transaction(s) recorded: {txs:?}", txs.len());
    for (keys, tables) in &txs {
        assert!(
            keys.len() == 1 && keys[0].is_some(),
            "{what}: one transaction wrote partition keys {keys:?} in {tables:?}"
        );
    }
}

#[tokio::test]
async fn each_hot_path_transaction_writes_one_partition_key() {
    let fx = Fixture::new().await;
    install_audit(&fx).await;

    let id = fx.create("hot").await;
    one_partition_each(&fx, "create", 1).await;
    let h = fx.claim("hot", "w").await;
    one_partition_each(&fx, "claim", 1).await;
    fx.backend.renew(&h).await.unwrap();
    fx.backend.progress(&h, Some(40), Some("warming".into())).await.unwrap();
    let frame = Frame {
        bytes: b"line".to_vec(),
        kind: FrameKind::Stdout,
        frame_type: "log".into(),
        correlation_id: None,
        mode: StreamMode::default(),
    };
    fx.backend.append_frame(&h, frame.clone()).await.unwrap();
    fx.backend
        .append_frame(&h, Frame { mode: StreamMode::durable_summary(), bytes: br#"{"a":1}"#.to_vec(), ..frame })
        .await
        .unwrap();
    one_partition_each(&fx, "renew, progress, frames", 4).await;
    fx.backend.complete(&h, Some(b"done".to_vec())).await.unwrap();
    one_partition_each(&fx, "complete", 1).await;
    assert_eq!(fx.state(&id).await, PublicState::Completed);

    let retried = fx.create_with("hot", |a| a.policy = Some(retry_policy(1, 0))).await;
    let h = fx.claim("hot", "w").await;
    fx.backend.fail(&h, FailureReason::new("flaky"), FailureClass::Transient).await.unwrap();
    let h = fx.claim("hot", "w").await;
    assert_eq!(payload(&h).execution_id, retried);
    fx.backend.complete(&h, None).await.unwrap();
    one_partition_each(&fx, "fail into a retry, claim again, complete", 5).await;

    // A flow: completing the upstream releases the downstream in the same transaction.
    let flow = CreateFlowArgs::new("partition.flow");
    let flow_id = flow.flow_id;
    let members: Vec<CreateExecutionArgs> = (0..2)
        .map(|_| {
            let mut m = args("flowlane");
            m.execution_id = ExecutionId::for_flow(&flow_id, &PartitionConfig::default());
            m
        })
        .collect();
    let ids: Vec<ExecutionId> = members.iter().map(|m| m.execution_id).collect();
    let edge = FlowGraphEdge {
        edge_id: None,
        upstream_execution_id: ids[0],
        downstream_execution_id: ids[1],
        data_passing_ref: None,
    };
    let graph = CreateFlowGraphArgs { flow, members, edges: vec![edge], policies: vec![] };
    fx.backend.create_flow_graph(graph).await.unwrap();
    one_partition_each(&fx, "create a flow graph", 1).await;
    for want in &ids {
        let h = fx.claim("flowlane", "w").await;
        assert_eq!(payload(&h).execution_id, *want, "the downstream runs after its upstream");
        fx.backend.complete(&h, None).await.unwrap();
    }
    one_partition_each(&fx, "flow members claimed and completed, the downstream released", 4).await;
}

#[tokio::test]
async fn a_transaction_over_two_partitions_is_caught() {
    let fx = Fixture::new().await;
    install_audit(&fx).await;
    let (a, b) = (args("left"), args("right"));
    assert_ne!(a.execution_id.partition_index(), b.execution_id.partition_index(), "lanes in different partitions");
    fx.backend.create_executions(vec![a, b]).await.unwrap();
    let txs = transactions(&fx).await;
    assert_eq!(txs.len(), 1);
    assert_eq!(txs[0].0.len(), 2, "one transaction wrote two partition keys: {txs:?}");
}
