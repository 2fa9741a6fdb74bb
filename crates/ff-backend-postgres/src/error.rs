//! The one place database errors become [`EngineError`]s.
//!
//! SQLSTATE classes: connection and pool failures are transport errors; serialization failures
//! and deadlocks are contention (retryable); lock timeouts are contention; check and
//! foreign-key violations mean a caller slipped past validation and surface as invalid input;
//! everything else is transport.

use ff_core::{ContentionKind, EngineError};

/// Maps a sqlx error.
pub fn map_sqlx(e: sqlx::Error) -> EngineError {
    match &e {
        sqlx::Error::PoolTimedOut => return EngineError::ResourceExhausted { pool: "postgres connections", max: 0 },
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            match code.as_str() {
                "40001" | "40P01" | "55P03" => return EngineError::Contention(ContentionKind::LeaseConflict),
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
