//! Building flows: headers, members, edges, group policies, and whole graphs in one
//! transaction. Each edit is one call of its schema function (`ff_add_flow_member`,
//! `ff_stage_edge`, `ff_apply_edge`, `ff_set_edge_group_policy`), which locks the flow (or the
//! edge's upstream), checks, writes, and names why when it writes nothing; [`refusal`] maps
//! that name to the typed error.

use crate::db::Db;
use ff_core::*;
use uuid::Uuid;

use crate::error::map_sqlx;
use crate::execution::ingress;

/// `$1` flow, `$2` partition, `$3` namespace, `$4` kind, `$5` creator. Returns a row when created.
pub(crate) const CREATE_FLOW_SQL: &str = "INSERT INTO ff_flow (flow_id, partition_key, namespace, flow_kind, creator_identity) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (flow_id) DO NOTHING RETURNING flow_id";

/// `$1` flow, `$2` execution.
pub(crate) const ADD_MEMBER_SQL: &str = "SELECT outcome, node_count FROM ff_add_flow_member($1, $2)";

/// `$1` flow, `$2` edge, `$3` upstream, `$4` downstream, `$5` data reference, `$6` expected revision.
pub(crate) const STAGE_EDGE_SQL: &str = "SELECT outcome, graph_revision FROM ff_stage_edge($1, $2, $3, $4, $5, $6)";

/// `$1` flow, `$2` edge, `$3` upstream, `$4` downstream.
pub(crate) const APPLY_EDGE_SQL: &str = "SELECT outcome, unresolved, group_state FROM ff_apply_edge($1, $2, $3, $4)";

/// `$1` flow, `$2` downstream, `$3` kind, `$4` k, `$5` on_satisfied.
pub(crate) const SET_POLICY_SQL: &str = "SELECT ff_set_edge_group_policy($1, $2, $3, $4, $5)";

/// See `ff_build_flow_graph`.
pub(crate) const BUILD_GRAPH_SQL: &str = "SELECT ff_build_flow_graph($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

/// A refusal named by a flow function, as the typed error.
pub(crate) fn refusal(outcome: &str) -> EngineError {
    match outcome {
        "flow_not_found" => EngineError::NotFound { entity: "flow" },
        "flow_terminal" => EngineError::State(StateKind::FlowAlreadyTerminal),
        "not_found" => EngineError::NotFound { entity: "execution" },
        "not_member" => EngineError::NotFound { entity: "flow member" },
        "edge_not_found" => EngineError::NotFound { entity: "edge" },
        "other_flow" => EngineError::Conflict(ConflictKind::ExecutionAlreadyInFlow),
        "exists" => EngineError::Conflict(ConflictKind::DependencyAlreadyExists),
        "cycle" => EngineError::Conflict(ConflictKind::CycleDetected),
        "fixed" => EngineError::Conflict(ConflictKind::EdgeGroupPolicyFixed),
        "stale_revision" => EngineError::Contention(ContentionKind::StaleGraphRevision),
        "downstream_terminal" => EngineError::State(StateKind::Terminal),
        "namespace_mismatch" => EngineError::invalid("the execution's namespace differs from the flow's"),
        "partition_mismatch" => EngineError::invalid(
            "the execution is not in the flow's partition: mint flow members with ExecutionId::for_flow",
        ),
        "edge_mismatch" => EngineError::invalid("the edge's upstream or downstream differs from the one given"),
        "k_too_large" => EngineError::invalid("quorum k exceeds the flow's other members"),
        other => EngineError::Internal(format!("unexpected flow outcome {other:?}")),
    }
}

/// Checks that `id` lives in `flow`'s partition.
pub(crate) fn check_member_partition(
    cfg: &PartitionConfig,
    flow: &FlowId,
    id: &ExecutionId,
) -> Result<(), EngineError> {
    let want = flow.partition(cfg);
    if id.partition_index() != want {
        return Err(EngineError::invalid(format!(
            "execution {id} is in partition {} but flow {} lives in partition {want}: mint flow members with \
             ExecutionId::for_flow",
            id.partition_index(),
            flow.0
        )));
    }
    Ok(())
}

/// `create_flow`.
pub(crate) async fn create_flow(
    pool: &Db,
    cfg: &PartitionConfig,
    args: &CreateFlowArgs,
) -> Result<CreateFlowResult, EngineError> {
    args.validate()?;
    let created: Option<Uuid> = sqlx::query_scalar(CREATE_FLOW_SQL)
        .bind(args.flow_id.0)
        .bind(args.flow_id.partition(cfg) as i16)
        .bind(args.namespace.as_str())
        .bind(args.flow_kind.as_str())
        .bind(args.creator_identity.as_deref())
        .fetch_optional(pool)
        .await
        .map_err(map_sqlx)?;
    Ok(match created {
        Some(_) => CreateFlowResult::Created { flow_id: args.flow_id },
        None => CreateFlowResult::AlreadySatisfied { flow_id: args.flow_id },
    })
}

/// `add_execution_to_flow`.
pub(crate) async fn add_member(
    pool: &Db,
    cfg: &PartitionConfig,
    args: &AddExecutionToFlowArgs,
) -> Result<AddExecutionToFlowResult, EngineError> {
    // The schema function checks the partition too, after membership, so an execution of
    // another flow reads as such.
    cfg.check_execution_partition(args.execution_id.partition_index())?;
    let (outcome, count): (String, Option<i32>) = sqlx::query_as(ADD_MEMBER_SQL)
        .bind(args.flow_id.0)
        .bind(args.execution_id.uuid())
        .fetch_one(pool)
        .await
        .map_err(map_sqlx)?;
    let count = count.unwrap_or(0).max(0) as u32;
    match outcome.as_str() {
        "added" => Ok(AddExecutionToFlowResult::Added { execution_id: args.execution_id, new_node_count: count }),
        "already_member" => {
            Ok(AddExecutionToFlowResult::AlreadyMember { execution_id: args.execution_id, node_count: count })
        }
        other => Err(refusal(other)),
    }
}

/// `stage_dependency_edge`.
pub(crate) async fn stage_edge(
    pool: &Db,
    cfg: &PartitionConfig,
    args: &StageDependencyEdgeArgs,
) -> Result<StageDependencyEdgeResult, EngineError> {
    args.validate()?;
    for id in [&args.upstream_execution_id, &args.downstream_execution_id] {
        cfg.check_execution_partition(id.partition_index())?;
    }
    let expected = i64::try_from(args.expected_graph_revision)
        .map_err(|_| EngineError::invalid("expected_graph_revision out of range"))?;
    let (outcome, revision): (String, Option<i64>) = sqlx::query_as(STAGE_EDGE_SQL)
        .bind(args.flow_id.0)
        .bind(args.edge_id.0)
        .bind(args.upstream_execution_id.uuid())
        .bind(args.downstream_execution_id.uuid())
        .bind(args.data_passing_ref.as_deref())
        .bind(expected)
        .fetch_one(pool)
        .await
        .map_err(map_sqlx)?;
    match outcome.as_str() {
        "staged" => Ok(StageDependencyEdgeResult::Staged {
            edge_id: args.edge_id,
            new_graph_revision: revision.unwrap_or(0).max(0) as u64,
        }),
        other => Err(refusal(other)),
    }
}

/// `apply_dependency_to_child`.
pub(crate) async fn apply_edge(
    pool: &Db,
    args: &ApplyDependencyToChildArgs,
) -> Result<ApplyDependencyToChildResult, EngineError> {
    let (outcome, unresolved, state): (String, Option<i32>, Option<String>) = sqlx::query_as(APPLY_EDGE_SQL)
        .bind(args.flow_id.0)
        .bind(args.edge_id.0)
        .bind(args.upstream_execution_id.uuid())
        .bind(args.downstream_execution_id.uuid())
        .fetch_one(pool)
        .await
        .map_err(map_sqlx)?;
    match outcome.as_str() {
        "applied" => Ok(ApplyDependencyToChildResult::Applied {
            unsatisfied_count: unresolved.unwrap_or(0).max(0) as u32,
            group_state: EdgeGroupState::parse(state.as_deref().unwrap_or("pending"))?,
        }),
        "already_applied" => Ok(ApplyDependencyToChildResult::AlreadyApplied),
        other => Err(refusal(other)),
    }
}

/// `set_edge_group_policy`.
pub(crate) async fn set_policy(
    pool: &Db,
    args: &SetEdgeGroupPolicyArgs,
) -> Result<SetEdgeGroupPolicyResult, EngineError> {
    // The flow's size bounds k; the schema function checks it under the flow's lock.
    args.policy.validate(u32::MAX)?;
    let (kind, k, on) = policy_parts(&args.policy);
    let outcome: String = sqlx::query_scalar(SET_POLICY_SQL)
        .bind(args.flow_id.0)
        .bind(args.downstream_execution_id.uuid())
        .bind(kind)
        .bind(k)
        .bind(on)
        .fetch_one(pool)
        .await
        .map_err(map_sqlx)?;
    match outcome.as_str() {
        "set" => Ok(SetEdgeGroupPolicyResult::Set),
        "already_set" => Ok(SetEdgeGroupPolicyResult::AlreadySet),
        other => Err(refusal(other)),
    }
}

/// The stored columns of a policy: kind, k (quorum only), on_satisfied.
pub(crate) fn policy_parts(p: &EdgeDependencyPolicy) -> (&'static str, Option<i32>, &'static str) {
    let k = match p {
        EdgeDependencyPolicy::Quorum { k, .. } => Some(i32::try_from(*k).unwrap_or(i32::MAX)),
        _ => None,
    };
    (p.kind(), k, p.on_satisfied().as_str())
}

/// `create_flow_graph`: the flow, its members, edges and policies in one transaction.
pub(crate) async fn create_graph(
    pool: &Db,
    cfg: &PartitionConfig,
    args: &CreateFlowGraphArgs,
) -> Result<CreateFlowGraphResult, EngineError> {
    let edge_ids = args.validate()?;
    for m in &args.members {
        check_member_partition(cfg, &args.flow.flow_id, &m.execution_id)?;
    }
    let flow_id = args.flow.flow_id;
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    let created: Option<Uuid> = sqlx::query_scalar(CREATE_FLOW_SQL)
        .bind(flow_id.0)
        .bind(flow_id.partition(cfg) as i16)
        .bind(args.flow.namespace.as_str())
        .bind(args.flow.flow_kind.as_str())
        .bind(args.flow.creator_identity.as_deref())
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    if created.is_none() {
        return tx.abandon(Ok(CreateFlowGraphResult::AlreadySatisfied { flow_id })).await;
    }
    let results = ingress::create(&mut *tx, cfg, &args.members).await?;
    if let Some(i) = results.iter().position(|r| matches!(r, CreateExecutionResult::Duplicate { .. })) {
        return Err(tx
            .abandon(EngineError::invalid(format!(
                "member {} already exists (by id or idempotency key): flow graph members must be new",
                args.members[i].execution_id
            )))
            .await);
    }
    let members: Vec<Uuid> = args.members.iter().map(|m| m.execution_id.uuid()).collect();
    let ups: Vec<Uuid> = args.edges.iter().map(|e| e.upstream_execution_id.uuid()).collect();
    let downs: Vec<Uuid> = args.edges.iter().map(|e| e.downstream_execution_id.uuid()).collect();
    let refs: Vec<Option<&str>> = args.edges.iter().map(|e| e.data_passing_ref.as_deref()).collect();
    let ids: Vec<Uuid> = edge_ids.iter().map(|e| e.0).collect();
    let mut policy_downs = Vec::new();
    let mut kinds = Vec::new();
    let mut ks = Vec::new();
    let mut ons = Vec::new();
    for p in &args.policies {
        let (kind, k, on) = policy_parts(&p.policy);
        policy_downs.push(p.downstream_execution_id.uuid());
        kinds.push(kind);
        ks.push(k);
        ons.push(on);
    }
    let revision: i64 = sqlx::query_scalar(BUILD_GRAPH_SQL)
        .bind(flow_id.0)
        .bind(&members)
        .bind(&ids)
        .bind(&ups)
        .bind(&downs)
        .bind(&refs)
        .bind(&policy_downs)
        .bind(&kinds)
        .bind(&ks)
        .bind(&ons)
        .fetch_one(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    tx.commit().await.map_err(map_sqlx)?;
    Ok(CreateFlowGraphResult::Created {
        flow_id,
        graph_revision: revision.max(0) as u64,
        member_execution_ids: args.members.iter().map(|m| m.execution_id).collect(),
        edge_ids,
    })
}
