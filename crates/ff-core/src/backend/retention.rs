//! Retention overrides: the per-lane and per-namespace windows the retention passes honour
//! (a lane's wins over its executions' namespace's; neither set, the configured default
//! applies).

use async_trait::async_trait;

use crate::error::EngineError;
use crate::retention::{RetentionPolicy, RetentionScope, SetRetentionPolicyArgs};

/// Retention overrides.
#[async_trait]
pub trait RetentionBackend: Send + Sync {
    /// Sets (or replaces) the window of a lane or a namespace.
    async fn set_retention_policy(&self, args: SetRetentionPolicyArgs) -> Result<RetentionPolicy, EngineError>;

    /// The override of a lane or a namespace, if one is set.
    async fn read_retention_policy(&self, scope: &RetentionScope) -> Result<Option<RetentionPolicy>, EngineError>;

    /// Every override, lanes first, each kind by name.
    async fn list_retention_policies(&self) -> Result<Vec<RetentionPolicy>, EngineError>;

    /// Removes an override; `false` when there was none.
    async fn clear_retention_policy(&self, scope: &RetentionScope) -> Result<bool, EngineError>;
}
