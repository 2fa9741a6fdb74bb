//! Capability routing: executions that require capabilities no live worker offers are parked
//! as `blocked_by_route`, outside the claim index, and unparked when a worker that offers them
//! registers for their lane or claims on it (schema functions `ff_route_covered`,
//! `ff_unpark_routable`, `ff_note_claimer`).
//!
//! A worker that claims without registering is known by the capability sets it claims with:
//! each backend tells the database about a (lane, capabilities) pair on its first claim and
//! then about every [`NOTE_EVERY`], and the database counts such a claimer as live for a minute.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use ff_core::{CapabilitySet, EngineError, LaneId};
use tokio::time::Instant;

use crate::backend::PostgresBackend;
use crate::error::map_sqlx;

/// How often one backend refreshes the record of a (lane, capabilities) pair it claims with;
/// well inside the minute the database counts it.
pub(crate) const NOTE_EVERY: Duration = Duration::from_secs(20);

/// Records a claimer on `$1` with capabilities `$2`, unparking what it can run if it was not
/// known. Returns how many executions were unparked.
pub(crate) const NOTE_CLAIMER_SQL: &str = "SELECT ff_note_claimer($1, $2)";

/// When this backend last told the database about each (lane, capabilities) pair.
#[derive(Default)]
pub(crate) struct Claimers(Mutex<HashMap<(String, Vec<String>), Instant>>);

impl PostgresBackend {
    /// Makes sure the database knows a worker claims on `lane` with `capabilities`, so work it
    /// can run is not parked (and parked work it can run is unparked). Claims with no
    /// capabilities never need it: only work that requires capabilities is parked.
    pub(crate) async fn note_claimer(&self, lane: &LaneId, capabilities: &CapabilitySet) -> Result<(), EngineError> {
        if capabilities.0.is_empty() {
            return Ok(());
        }
        let key = (lane.as_str().to_owned(), capabilities.0.iter().cloned().collect::<Vec<_>>());
        let now = Instant::now();
        {
            let mut seen = self.claimers.0.lock().unwrap_or_else(|p| p.into_inner());
            if seen.get(&key).is_some_and(|at| now.duration_since(*at) < NOTE_EVERY) {
                return Ok(());
            }
            seen.insert(key.clone(), now);
        }
        let noted =
            sqlx::query_scalar::<_, i64>(NOTE_CLAIMER_SQL).bind(&key.0).bind(&key.1).fetch_one(&self.pool).await;
        if let Err(e) = noted {
            // Try again on the next claim rather than in twenty seconds.
            self.claimers.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
            return Err(map_sqlx(e));
        }
        Ok(())
    }
}
