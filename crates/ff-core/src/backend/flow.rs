//! Flows: building DAGs of executions, resolving their edges, reading them, cancelling them.

use async_trait::async_trait;

use crate::error::EngineError;
use crate::flow::*;
use crate::handle::Handle;
use crate::id::{EdgeId, ExecutionId, FlowId};

/// Flows, their members, dependency edges and edge groups.
#[async_trait]
pub trait FlowBackend: Send + Sync {
    // ----- building ----------------------------------------------------------------------------

    /// Creates a flow header. The same id again is `AlreadySatisfied`.
    async fn create_flow(&self, args: CreateFlowArgs) -> Result<CreateFlowResult, EngineError>;

    /// Creates a flow with its members, edges and group policies in one transaction: no member
    /// is claimable before the edges that hold it back exist. The whole graph is validated
    /// first (cycles, unknown ends, duplicates, quorum sizes); a refusal writes nothing.
    async fn create_flow_graph(&self, args: CreateFlowGraphArgs) -> Result<CreateFlowGraphResult, EngineError>;

    /// Adds an existing execution to a flow (same partition and namespace, in no other flow,
    /// the flow not cancelled).
    async fn add_execution_to_flow(
        &self,
        args: AddExecutionToFlowArgs,
    ) -> Result<AddExecutionToFlowResult, EngineError>;

    /// Stages an edge on the flow's graph, checked against the caller's graph revision; a
    /// self-edge, a cycle, an edge to a non-member and a duplicate are refused and write nothing.
    async fn stage_dependency_edge(
        &self,
        args: StageDependencyEdgeArgs,
    ) -> Result<StageDependencyEdgeResult, EngineError>;

    /// Counts a staged edge into its downstream's group and, while the downstream has not
    /// started, holds it back until the group is decided. An upstream that has already ended
    /// resolves the edge at once.
    async fn apply_dependency_to_child(
        &self,
        args: ApplyDependencyToChildArgs,
    ) -> Result<ApplyDependencyToChildResult, EngineError>;

    /// Sets how a downstream's inbound edges combine; allowed until its first inbound edge is
    /// resolved (`edge_group_policy_already_fixed` after).
    async fn set_edge_group_policy(
        &self,
        args: SetEdgeGroupPolicyArgs,
    ) -> Result<SetEdgeGroupPolicyResult, EngineError>;

    // ----- resolution --------------------------------------------------------------------------

    /// Resolves one applied edge whose upstream has ended (idempotent: `AlreadyResolved`).
    /// Terminal transitions do this themselves; this is the per-edge entry point for repairs.
    async fn resolve_dependency(&self, args: ResolveDependencyArgs) -> Result<ResolveDependencyResult, EngineError>;

    /// Resolves whatever an ended execution's outgoing edges still need, cascading through
    /// further hops; normally nothing, as its terminal transaction did it.
    async fn cascade_completion(&self, args: CascadeCompletionArgs) -> Result<CascadeOutcome, EngineError>;

    /// Whether an execution may run as far as its dependencies are concerned (read-only).
    async fn evaluate_flow_eligibility(
        &self,
        args: EvaluateFlowEligibilityArgs,
    ) -> Result<EvaluateFlowEligibilityResult, EngineError>;

    /// The lease holder waits for its children, the upstreams of its own edge group: the lease
    /// is released and the same attempt resumes when the group is satisfied (at once when it
    /// already is). An impossible group skips the execution.
    async fn wait_children(&self, handle: &Handle) -> Result<(), EngineError>;

    // ----- reads -------------------------------------------------------------------------------

    /// A flow with its derived state, member counts and edge groups; `None` when absent.
    async fn describe_flow(&self, id: &FlowId) -> Result<Option<FlowSnapshot>, EngineError>;

    /// Flows in id order, after a cursor.
    async fn list_flows(&self, args: ListFlowsArgs) -> Result<ListFlowsPage, EngineError>;

    /// Edges leaving or entering one member, in edge id order.
    async fn list_edges(&self, flow_id: &FlowId, direction: EdgeDirection) -> Result<Vec<EdgeSnapshot>, EngineError>;

    /// One edge; `None` when absent.
    async fn describe_edge(&self, flow_id: &FlowId, edge_id: &EdgeId) -> Result<Option<EdgeSnapshot>, EngineError>;

    /// The flow an execution belongs to, if any.
    async fn resolve_execution_flow_id(&self, id: &ExecutionId) -> Result<Option<FlowId>, EngineError>;

    /// Stores the flow's derived state and member counts as its summary for dashboards;
    /// `false` when the flow has no members (or does not exist).
    async fn project_flow_summary(&self, flow_id: &FlowId) -> Result<bool, EngineError>;

    /// Sets one namespaced tag (`<caller>.<field>`) on a flow.
    async fn set_flow_tag(&self, flow_id: &FlowId, key: &str, value: &str) -> Result<(), EngineError>;

    /// Reads one flow tag; `None` when the tag or the flow is absent.
    async fn get_flow_tag(&self, flow_id: &FlowId, key: &str) -> Result<Option<String>, EngineError>;

    // ----- cancellation ------------------------------------------------------------------------

    /// Cancels a flow and, by policy, its members, waiting as `wait` says for members another
    /// transaction held. Cancelling a cancelled flow reports the stored policy.
    async fn cancel_flow(&self, args: CancelFlowArgs, wait: CancelFlowWait) -> Result<CancelFlowResult, EngineError>;

    /// Closes the flow and records the members to cancel in its backlog, cancelling none: the
    /// caller cancels each (`cancel_execution`) and acknowledges it (`ack_cancel_member`); the
    /// backlog's reconciler cancels any it does not.
    async fn cancel_flow_header(&self, args: CancelFlowArgs) -> Result<CancelFlowHeader, EngineError>;

    /// Removes a member from its flow's cancel backlog. Idempotent.
    async fn ack_cancel_member(&self, flow_id: &FlowId, execution_id: &ExecutionId) -> Result<(), EngineError>;

    /// Cancels the still-running upstreams of a decided any-of or quorum group whose policy
    /// cancels them, and clears its flag once none is left.
    async fn drain_sibling_cancel_group(
        &self,
        flow_id: &FlowId,
        downstream_execution_id: &ExecutionId,
    ) -> Result<SiblingCancelDrainResult, EngineError>;

    /// Repairs a group flagged for sibling cancellation: drops a stale flag, clears a finished
    /// one, leaves a live one to the drain.
    async fn reconcile_sibling_cancel_group(
        &self,
        flow_id: &FlowId,
        downstream_execution_id: &ExecutionId,
    ) -> Result<SiblingCancelReconcileAction, EngineError>;
}
