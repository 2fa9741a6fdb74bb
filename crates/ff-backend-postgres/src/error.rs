//! The one place database errors become [`EngineError`]s.
//!
//! SQLSTATE classes: connection and pool failures are transport errors; serialization failures
//! and deadlocks are contention (retryable); lock timeouts are contention; check and
//! foreign-key violations mean a caller slipped past validation and surface as invalid input
//! (a NUL character in text as `nul_in_text`);
//! everything else is transport.

use ff_core::{ContentionKind, EngineError, ValidationKind};

/// No pool connection within the acquire timeout.
///
/// sqlx reports the same `PoolTimedOut` whether every connection stayed busy or no new
/// connection could be opened, and this mapping sees neither the pool nor the attempts. With an
/// acquire timeout of about a second, a timeout almost always means the database did not
/// accept a connection (down, restarting, unreachable), so it is a transport error: retryable,
/// and it reads as a database problem. Pool saturation shows in the pool metrics.
#[derive(Debug, thiserror::Error)]
#[error(
    "no database connection within the acquire timeout (the database is unreachable, or every pooled connection stayed busy)"
)]
pub struct NoConnection;

/// Maps a sqlx error.
pub fn map_sqlx(e: sqlx::Error) -> EngineError {
    match &e {
        sqlx::Error::PoolTimedOut => {
            return EngineError::Transport { backend: "postgres", source: Box::new(NoConnection) };
        }
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            match code.as_str() {
                "40001" | "40P01" | "55P03" => return EngineError::Contention(ContentionKind::LeaseConflict),
                // A NUL character in text or JSON: validation refuses these first; this is the
                // backstop that keeps such input a caller's error rather than a storage failure.
                "22021" | "22P05" => {
                    return EngineError::validation(ValidationKind::NulInText, "text contains a NUL character");
                }
                "23514" | "23503" | "22001" | "22003" | "22P02" => {
                    return EngineError::invalid(format!("rejected by the database: {}", db.message()));
                }
                _ => {}
            }
        }
        _ => {}
    }
    EngineError::Transport { backend: "postgres", source: Box::new(e) }
}

/// A copy of `e` for another caller that shared the failed statement. Transport errors keep
/// their message; everything else is reproduced exactly.
pub(crate) fn duplicate(e: &EngineError) -> EngineError {
    match e {
        EngineError::NotFound { entity } => EngineError::NotFound { entity },
        EngineError::Validation { kind, detail } => EngineError::Validation { kind: *kind, detail: detail.clone() },
        EngineError::Contention(k) => EngineError::Contention(*k),
        EngineError::Conflict(k) => EngineError::Conflict(*k),
        EngineError::State(k) => EngineError::State(k.clone()),
        EngineError::ResourceExhausted { pool, max } => EngineError::ResourceExhausted { pool, max: *max },
        EngineError::Transport { backend, source } => {
            EngineError::Transport { backend, source: source.to_string().into() }
        }
        other => EngineError::Internal(other.to_string()),
    }
}
