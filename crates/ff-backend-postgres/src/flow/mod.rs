//! Flows on Postgres: the [`FlowBackend`] impl delegates to [`build`] (headers, members, edges,
//! policies, whole graphs), [`resolve`] (resolution entry points, eligibility, waiting for
//! children), [`read`] (describe, listings, summaries, tags) and [`cancel`] (flow and sibling
//! cancellation).
//!
//! The resolution itself lives in the schema (`0007_flows.sql`): every terminal transition of
//! a flow member resolves its edges in its own transaction through the `ff_flow_member_ended`
//! trigger, whichever function made it, so no path can end an upstream and leave its
//! downstreams waiting.

pub(crate) mod build;
pub(crate) mod cancel;
pub(crate) mod read;
pub(crate) mod resolve;

use async_trait::async_trait;
use ff_core::backend::FlowBackend;
use ff_core::*;

use crate::backend::PostgresBackend;

#[async_trait]
impl FlowBackend for PostgresBackend {
    async fn create_flow(&self, args: CreateFlowArgs) -> Result<CreateFlowResult, EngineError> {
        build::create_flow(&self.pool, &self.partitions, &args).await
    }

    async fn create_flow_graph(&self, args: CreateFlowGraphArgs) -> Result<CreateFlowGraphResult, EngineError> {
        build::create_graph(&self.pool, &self.partitions, &args).await
    }

    async fn add_execution_to_flow(
        &self,
        args: AddExecutionToFlowArgs,
    ) -> Result<AddExecutionToFlowResult, EngineError> {
        build::add_member(&self.pool, &self.partitions, &args).await
    }

    async fn stage_dependency_edge(
        &self,
        args: StageDependencyEdgeArgs,
    ) -> Result<StageDependencyEdgeResult, EngineError> {
        build::stage_edge(&self.pool, &self.partitions, &args).await
    }

    async fn apply_dependency_to_child(
        &self,
        args: ApplyDependencyToChildArgs,
    ) -> Result<ApplyDependencyToChildResult, EngineError> {
        build::apply_edge(&self.pool, &args).await
    }

    async fn set_edge_group_policy(
        &self,
        args: SetEdgeGroupPolicyArgs,
    ) -> Result<SetEdgeGroupPolicyResult, EngineError> {
        build::set_policy(&self.pool, &args).await
    }

    async fn resolve_dependency(&self, args: ResolveDependencyArgs) -> Result<ResolveDependencyResult, EngineError> {
        resolve::resolve_dependency(&self.pool, &args).await
    }

    async fn cascade_completion(&self, args: CascadeCompletionArgs) -> Result<CascadeOutcome, EngineError> {
        resolve::cascade(&self.pool, &self.partitions, &args).await
    }

    async fn evaluate_flow_eligibility(
        &self,
        args: EvaluateFlowEligibilityArgs,
    ) -> Result<EvaluateFlowEligibilityResult, EngineError> {
        resolve::eligibility(&self.pool, &self.partitions, &args).await
    }

    async fn wait_children(&self, handle: &Handle) -> Result<(), EngineError> {
        let p = self.decode(handle)?;
        match resolve::wait_children(&self.pool, &p).await? {
            Some(_) => self.announced(Ok(())),
            None => Err(self.rejected(&p).await),
        }
    }

    async fn describe_flow(&self, id: &FlowId) -> Result<Option<FlowSnapshot>, EngineError> {
        read::describe(&self.pool, &self.partitions, id).await
    }

    async fn list_flows(&self, args: ListFlowsArgs) -> Result<ListFlowsPage, EngineError> {
        read::list(&self.pool, &self.partitions, &args).await
    }

    async fn list_edges(&self, flow_id: &FlowId, direction: EdgeDirection) -> Result<Vec<EdgeSnapshot>, EngineError> {
        read::list_edges(&self.pool, flow_id, direction).await
    }

    async fn describe_edge(&self, flow_id: &FlowId, edge_id: &EdgeId) -> Result<Option<EdgeSnapshot>, EngineError> {
        read::describe_edge(&self.pool, flow_id, edge_id).await
    }

    async fn resolve_execution_flow_id(&self, id: &ExecutionId) -> Result<Option<FlowId>, EngineError> {
        read::flow_of(&self.pool, &self.partitions, id).await
    }

    async fn project_flow_summary(&self, flow_id: &FlowId) -> Result<bool, EngineError> {
        read::project_summary(&self.pool, &self.partitions, flow_id).await
    }

    async fn set_flow_tag(&self, flow_id: &FlowId, key: &str, value: &str) -> Result<(), EngineError> {
        read::set_tag(&self.pool, flow_id, key, value).await
    }

    async fn get_flow_tag(&self, flow_id: &FlowId, key: &str) -> Result<Option<String>, EngineError> {
        read::get_tag(&self.pool, flow_id, key).await
    }

    async fn cancel_flow(&self, args: CancelFlowArgs, wait: CancelFlowWait) -> Result<CancelFlowResult, EngineError> {
        self.announced(cancel::cancel_flow(&self.pool, &self.partitions, &args, wait).await)
    }

    async fn cancel_flow_header(&self, args: CancelFlowArgs) -> Result<CancelFlowHeader, EngineError> {
        cancel::cancel_header(&self.pool, &self.partitions, &args).await
    }

    async fn ack_cancel_member(&self, flow_id: &FlowId, execution_id: &ExecutionId) -> Result<(), EngineError> {
        self.announced(cancel::ack(&self.pool, flow_id, execution_id).await)
    }

    async fn drain_sibling_cancel_group(
        &self,
        flow_id: &FlowId,
        downstream_execution_id: &ExecutionId,
    ) -> Result<SiblingCancelDrainResult, EngineError> {
        cancel::drain_siblings(&self.pool, flow_id, downstream_execution_id).await
    }

    async fn reconcile_sibling_cancel_group(
        &self,
        flow_id: &FlowId,
        downstream_execution_id: &ExecutionId,
    ) -> Result<SiblingCancelReconcileAction, EngineError> {
        cancel::reconcile_siblings(&self.pool, flow_id, downstream_execution_id).await
    }
}
