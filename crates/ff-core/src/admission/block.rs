//! The scheduler's primitives: listing eligible work, and moving one execution out of the
//! claimable set (blocked for a route, a budget or its quota) and back.
//!
//! Blocking applies only to an eligible execution; unblocking names the reason the caller
//! expects, so a stale unblock (the execution moved on, or is blocked for something else) is
//! refused with `not_blocked`. An unblocked execution passes admission again: an exhausted
//! budget or a full quota policy holds it back again, for that reason.

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, ValidationKind};
use crate::id::{ExecutionId, LaneId};
use crate::state::{AdmissionBlock, BlockingReason, EligibilityState};

/// Most ids one scan returns.
pub const MAX_SCAN_LIMIT: u32 = 1000;

/// Arguments of `scan_eligible_executions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanEligibleArgs {
    /// Lane.
    pub lane_id: LaneId,
    /// Only executions of this execution partition.
    #[serde(default)]
    pub partition: Option<u16>,
    /// Most ids to return (1..=1000).
    pub limit: u32,
}

impl ScanEligibleArgs {
    /// Checks the limit.
    pub fn validate(&self) -> Result<(), EngineError> {
        if self.limit == 0 || self.limit > MAX_SCAN_LIMIT {
            return Err(EngineError::invalid(format!("limit {} outside 1..={MAX_SCAN_LIMIT}", self.limit)));
        }
        Ok(())
    }
}

/// Arguments of `block_route`: no worker can run this execution; park it until a capable one
/// appears.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockRouteArgs {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Its lane.
    pub lane_id: LaneId,
    /// A short code for why.
    pub reason_code: String,
    /// Detail.
    #[serde(default)]
    pub reason_detail: Option<String>,
}

impl BlockRouteArgs {
    /// Checks the code and the detail.
    pub fn validate(&self) -> Result<(), EngineError> {
        crate::execution::validate_name("reason_code", &self.reason_code, false)?;
        if let Some(d) = &self.reason_detail {
            crate::execution::validate_message("reason_detail", d)?;
        }
        Ok(())
    }
}

/// Outcome of `block_route` and `block_execution_for_admission`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum BlockOutcome {
    /// Blocked; it waits with this blocking reason.
    Blocked {
        /// The execution.
        execution_id: ExecutionId,
        /// Why it waits.
        reason: BlockingReason,
    },
    /// It was not eligible (claimed, delayed, blocked already, ended...): nothing changed.
    NotEligible {
        /// The execution.
        execution_id: ExecutionId,
        /// Its eligibility now.
        eligibility: EligibilityState,
    },
}

/// Arguments of `block_execution_for_admission`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockExecutionForAdmissionArgs {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Its lane.
    pub lane_id: LaneId,
    /// `waiting_for_budget`, `waiting_for_quota` or `waiting_for_capable_worker`.
    pub reason: BlockingReason,
    /// Detail.
    #[serde(default)]
    pub reason_detail: Option<String>,
}

impl BlockExecutionForAdmissionArgs {
    /// Checks the reason and the detail; returns the block.
    pub fn validate(&self) -> Result<AdmissionBlock, EngineError> {
        if let Some(d) = &self.reason_detail {
            crate::execution::validate_message("reason_detail", d)?;
        }
        admission_block(self.reason)
    }
}

fn admission_block(reason: BlockingReason) -> Result<AdmissionBlock, EngineError> {
    AdmissionBlock::from_blocking_reason(reason).ok_or_else(|| {
        EngineError::validation(
            ValidationKind::InvalidBlockingReason,
            format!(
                "{reason} is not an admission block (waiting_for_budget, waiting_for_quota, waiting_for_capable_worker)"
            ),
        )
    })
}

/// Arguments of `unblock_execution`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnblockExecutionArgs {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Its lane.
    pub lane_id: LaneId,
    /// The reason it is expected to be blocked for.
    pub expected_blocking_reason: BlockingReason,
}

impl UnblockExecutionArgs {
    /// Checks the reason; returns the block.
    pub fn validate(&self) -> Result<AdmissionBlock, EngineError> {
        admission_block(self.expected_blocking_reason)
    }
}

/// Outcome of `unblock_execution`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UnblockOutcome {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Its eligibility after admission ran again (`eligible_now`, or blocked again).
    pub eligibility: EligibilityState,
    /// Its blocking reason after admission ran again.
    pub blocking_reason: BlockingReason,
}
