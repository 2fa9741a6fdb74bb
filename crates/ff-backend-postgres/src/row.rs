//! Decoding helpers for rows: column reads whose failures become `Validation(Corruption)`, and
//! the state vector of an `ff_execution` row.

use ff_core::{
    AttemptState, BlockingReason, EligibilityState, EngineError, LifecyclePhase, OwnershipState, StateVector,
    TerminalOutcome, ValidationKind,
};
use sqlx::postgres::PgRow;
use sqlx::{Decode, Postgres, Row, Type};

/// Reads a column, mapping decode failures to `Validation(Corruption)`.
pub(crate) fn col<'r, T>(row: &'r PgRow, name: &str) -> Result<T, EngineError>
where
    T: Decode<'r, Postgres> + Type<Postgres>,
{
    row.try_get(name).map_err(|e| EngineError::validation(ValidationKind::Corruption, format!("column {name}: {e}")))
}

/// Columns holding the state vector, for SELECT lists.
pub(crate) const STATE_COLUMNS: &str = "lifecycle_phase::text AS lifecycle_phase, ownership_state::text AS ownership_state, \
     eligibility_state::text AS eligibility_state, blocking_reason::text AS blocking_reason, \
     terminal_outcome::text AS terminal_outcome, attempt_state::text AS attempt_state";

/// Decodes the state vector of an execution row selected with [`STATE_COLUMNS`].
pub(crate) fn state_vector(row: &PgRow) -> Result<StateVector, EngineError> {
    Ok(StateVector {
        lifecycle_phase: LifecyclePhase::parse(&col::<String>(row, "lifecycle_phase")?)?,
        ownership_state: OwnershipState::parse(&col::<String>(row, "ownership_state")?)?,
        eligibility_state: EligibilityState::parse(&col::<String>(row, "eligibility_state")?)?,
        blocking_reason: BlockingReason::parse(&col::<String>(row, "blocking_reason")?)?,
        terminal_outcome: TerminalOutcome::parse(&col::<String>(row, "terminal_outcome")?)?,
        attempt_state: AttemptState::parse(&col::<String>(row, "attempt_state")?)?,
    })
}

/// Reads an `integer` column that holds a non-negative count or index.
pub(crate) fn u32_col(row: &PgRow, name: &str) -> Result<u32, EngineError> {
    non_negative(name, i64::from(col::<i32>(row, name)?))
}

/// Converts a stored non-negative integer, flagging negative values as corruption.
pub(crate) fn non_negative<T: TryFrom<i64>>(name: &str, v: i64) -> Result<T, EngineError> {
    T::try_from(v)
        .map_err(|_| EngineError::validation(ValidationKind::Corruption, format!("{name} = {v} out of range")))
}
