//! The waitpoint keystore: the current signing key and the rotated-out keys still in their
//! grace period. A backend that must sign and finds no current key installs a random one (a
//! deployment that wants its own seeds it at boot, see `seed`).

use crate::db::{Db, TxConn};
use ff_core::suspension::token::{HmacKey, SECRET_BYTES, parse_secret_hex, validate_kid};
use ff_core::*;

use crate::error::map_sqlx;
use crate::row::col;

/// Keys whose tokens still verify: the current one and those within their grace.
pub(crate) const KEYS_SQL: &str = "SELECT kid, secret, expires_at_ms FROM ff_waitpoint_hmac_key \
     WHERE expires_at_ms IS NULL OR expires_at_ms > ff_now_ms() ORDER BY created_at_ms DESC";

/// Every key, current or not, by id `$1` (a token's kid may name one whose grace has ended).
pub(crate) const KEY_BY_ID_SQL: &str = "SELECT kid, secret, expires_at_ms FROM ff_waitpoint_hmac_key WHERE kid = $1";

/// Installs `$1`/`$2` as the current key unless there is one.
pub(crate) const INSTALL_KEY_SQL: &str = "INSERT INTO ff_waitpoint_hmac_key (kid, secret) SELECT $1, $2 \
     WHERE NOT EXISTS (SELECT 1 FROM ff_waitpoint_hmac_key WHERE expires_at_ms IS NULL) ON CONFLICT DO NOTHING";

/// The current key, locked for a rotation.
pub(crate) const LOCK_CURRENT_SQL: &str =
    "SELECT kid, secret, expires_at_ms FROM ff_waitpoint_hmac_key WHERE expires_at_ms IS NULL FOR UPDATE";

/// Retires the current key: its tokens verify for `$1` ms more.
pub(crate) const RETIRE_CURRENT_SQL: &str =
    "UPDATE ff_waitpoint_hmac_key SET expires_at_ms = ff_now_ms() + $1 WHERE expires_at_ms IS NULL";

/// Installs `$1`/`$2` as the current key.
pub(crate) const INSERT_KEY_SQL: &str = "INSERT INTO ff_waitpoint_hmac_key (kid, secret) VALUES ($1, $2)";

/// Removes keys whose grace has ended; returns how many.
pub(crate) const GC_KEYS_SQL: &str = "WITH gone AS (DELETE FROM ff_waitpoint_hmac_key \
     WHERE expires_at_ms IS NOT NULL AND expires_at_ms <= ff_now_ms() RETURNING 1) SELECT count(*) FROM gone";

fn key(row: &sqlx::postgres::PgRow) -> Result<HmacKey, EngineError> {
    Ok(HmacKey {
        kid: col(row, "kid")?,
        secret: col(row, "secret")?,
        expires_at: col::<Option<i64>>(row, "expires_at_ms")?.map(TimestampMs),
    })
}

/// The keys whose tokens verify now.
pub(crate) async fn verifying_keys(conn: &mut TxConn) -> Result<Vec<HmacKey>, EngineError> {
    let rows = sqlx::query(KEYS_SQL).fetch_all(&mut *conn).await.map_err(map_sqlx)?;
    rows.iter().map(key).collect()
}

/// The key `kid`, whatever its grace.
pub(crate) async fn key_by_id(conn: &mut TxConn, kid: &str) -> Result<Option<HmacKey>, EngineError> {
    let row = sqlx::query(KEY_BY_ID_SQL).bind(kid).fetch_optional(&mut *conn).await.map_err(map_sqlx)?;
    row.as_ref().map(key).transpose()
}

/// The current signing key, installing a random one when none exists.
pub(crate) async fn signing_key(conn: &mut TxConn) -> Result<HmacKey, EngineError> {
    for _ in 0..2 {
        if let Some(k) = verifying_keys(conn).await?.into_iter().find(|k| k.expires_at.is_none()) {
            return Ok(k);
        }
        let kid = format!("k{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let secret: Vec<u8> = (0..SECRET_BYTES).map(|_| rand::random::<u8>()).collect();
        sqlx::query(INSTALL_KEY_SQL).bind(&kid).bind(&secret).execute(&mut *conn).await.map_err(map_sqlx)?;
        tracing::warn!(kid, "no waitpoint signing key was installed: generated and stored a random one");
    }
    Err(EngineError::Internal("no waitpoint signing key after installing one".into()))
}

/// `seed_waitpoint_hmac_secret`.
pub(crate) async fn seed(pool: &Db, args: &SeedWaitpointHmacSecretArgs) -> Result<SeedOutcome, EngineError> {
    validate_kid(&args.kid)?;
    let secret = parse_secret_hex(&args.secret_hex)?;
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    let installed = sqlx::query(INSTALL_KEY_SQL)
        .bind(&args.kid)
        .bind(&secret)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?
        .rows_affected();
    if installed == 1 {
        tx.commit().await.map_err(map_sqlx)?;
        return Ok(SeedOutcome::Seeded { kid: args.kid.clone() });
    }
    let current = verifying_keys(&mut tx)
        .await?
        .into_iter()
        .find(|k| k.expires_at.is_none())
        .ok_or_else(|| EngineError::Internal("a key is installed but none is current".into()))?;
    tx.commit().await.map_err(map_sqlx)?;
    let same_secret = current.kid == args.kid && current.secret == secret;
    Ok(SeedOutcome::AlreadySeeded { kid: current.kid, same_secret })
}

/// `rotate_waitpoint_hmac_secret_all`.
pub(crate) async fn rotate(
    pool: &Db,
    args: &RotateWaitpointHmacSecretAllArgs,
) -> Result<RotateWaitpointHmacSecretAllResult, EngineError> {
    validate_kid(&args.new_kid)?;
    let secret = parse_secret_hex(&args.new_secret_hex)?;
    let grace = i64::try_from(args.grace_ms)
        .ok()
        .filter(|g| *g <= 365 * 24 * 3600 * 1000)
        .ok_or_else(|| EngineError::invalid("grace_ms must be at most a year"))?;
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    let current = sqlx::query(LOCK_CURRENT_SQL).fetch_optional(&mut *tx).await.map_err(map_sqlx)?;
    let current = current.as_ref().map(key).transpose()?;
    if let Some(existing) = key_by_id(&mut tx, &args.new_kid).await? {
        if existing.secret != secret {
            return Err(tx.abandon(EngineError::Conflict(ConflictKind::RotationConflict)).await);
        }
        if existing.expires_at.is_none() {
            return tx
                .abandon(Ok(RotateWaitpointHmacSecretAllResult {
                    entries: vec![RotationOutcome::Noop { kid: args.new_kid.clone() }],
                }))
                .await;
        }
        return Err(tx.abandon(EngineError::Conflict(ConflictKind::RotationConflict)).await);
    }
    // Keys whose grace ended before this rotation go; the one it retires keeps its grace (and
    // stays until a later rotation, its tokens answering token_expired once the grace is over).
    let gc: i64 = sqlx::query_scalar(GC_KEYS_SQL).fetch_one(&mut *tx).await.map_err(map_sqlx)?;
    sqlx::query(RETIRE_CURRENT_SQL).bind(grace).execute(&mut *tx).await.map_err(map_sqlx)?;
    sqlx::query(INSERT_KEY_SQL).bind(&args.new_kid).bind(&secret).execute(&mut *tx).await.map_err(map_sqlx)?;
    tx.commit().await.map_err(map_sqlx)?;
    Ok(RotateWaitpointHmacSecretAllResult {
        entries: vec![RotationOutcome::Rotated {
            previous_kid: current.map(|k| k.kid),
            new_kid: args.new_kid.clone(),
            gc_count: gc.max(0) as u32,
        }],
    })
}
