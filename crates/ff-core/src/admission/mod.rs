//! Admission: what decides whether eligible work may be claimed, and by whom.
//!
//! - [`quota`] — quota policies: a rate per window, a concurrency cap, and a cap per
//!   concurrency key (one customer, one tenant). An execution attached to a policy becomes
//!   claimable only within them; one that does not fit waits outside the claimable set
//!   (`blocked_by_quota`) until a slot is released or its rate window moves on.
//! - [`budget`] — budgets: hard and soft limits per dimension (tokens, dollars...), usage
//!   reports that apply all-or-nothing and at most once per key, and, in strict mode, no claims
//!   of the executions drawing on an exhausted budget until it is reset or raised.
//! - [`grant`] — claim grants: a scheduler reserves one execution for one worker for a while,
//!   signed with the waitpoint keystore, and the worker claims with the grant.
//! - [`block`] — the scheduler's primitives: scanning eligible work, and blocking or unblocking
//!   one execution for a route, a budget or a quota.

pub mod block;
pub mod budget;
pub mod grant;
pub mod quota;

use serde::{Deserialize, Serialize};

/// What a reconciliation pass over counters examined and repaired.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReconcileCounts {
    /// Records examined (policies or budgets).
    pub examined: u64,
    /// Counters or executions whose stored state was corrected.
    pub repaired: u64,
}
