//! Quota policies: creation, reads, admissions outside the claim path, and recounts. Admission
//! on the claim path is the schema's (`ff_quota_settle`, `0009_admission.sql`): it runs in the
//! transaction of whatever makes an execution claimable or ends its hold.

use crate::db::Db;
use ff_core::*;

use crate::error::map_sqlx;
use crate::row::col;

/// Creates a policy unless it exists; reports whether it was created and, if not, whether the
/// stored limits equal `$3..$7`.
pub(crate) const CREATE_POLICY_SQL: &str = "WITH ins AS ( \
       INSERT INTO ff_quota_policy (quota_policy_id, partition_key, window_ms, max_requests_per_window, max_concurrent, \
                                    max_concurrent_per_key, jitter_ms) \
       VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (quota_policy_id) DO NOTHING RETURNING 1) \
     SELECT (SELECT count(*) FROM ins) > 0 AS created, \
            (SELECT p.window_ms IS NOT DISTINCT FROM $3 AND p.max_requests_per_window IS NOT DISTINCT FROM $4 \
                    AND p.max_concurrent IS NOT DISTINCT FROM $5 AND p.max_concurrent_per_key IS NOT DISTINCT FROM $6 \
                    AND p.jitter_ms = $7 \
             FROM ff_quota_policy p WHERE p.quota_policy_id = $1) AS same";

/// A policy's limits and state.
pub(crate) const POLICY_STATUS_SQL: &str = "SELECT p.window_ms, p.max_requests_per_window, p.max_concurrent, \
       p.max_concurrent_per_key, p.jitter_ms, p.next_admit_at_ms, p.created_at_ms, \
       (p.active + (SELECT coalesce(sum(s.delta), 0) FROM ff_quota_stripe s \
                    WHERE s.quota_policy_id = p.quota_policy_id))::integer AS active, \
       (SELECT count(*) FROM ff_quota_window w \
        WHERE w.quota_policy_id = p.quota_policy_id AND w.admitted_at_ms > ff_now_ms() - p.window_ms) AS in_window, \
       (SELECT count(*) FROM ff_execution x \
        WHERE x.quota_policy_id = p.quota_policy_id AND x.lifecycle_phase <> 'terminal' \
          AND x.eligibility_state = 'blocked_by_quota') AS waiting, \
       (SELECT coalesce(max(m.n), 0)::integer FROM ( \
          SELECT count(*) AS n FROM ff_execution x \
          WHERE x.quota_policy_id = p.quota_policy_id AND x.concurrency_key IS NOT NULL \
            AND (x.lifecycle_phase = 'active' \
                 OR (x.lifecycle_phase = 'runnable' AND x.eligibility_state = 'eligible_now') \
                 OR (x.eligibility_state = 'blocked_by_quota' AND x.admission_wait = 'policy')) \
          GROUP BY x.concurrency_key) m) AS busiest_key \
     FROM ff_quota_policy p WHERE p.quota_policy_id = $1";

/// `ff_check_admission`.
pub(crate) const CHECK_ADMISSION_SQL: &str =
    "SELECT status, retry_after_ms FROM ff_check_admission($1, $2, $3, $4, $5, $6)";

/// `ff_release_admission`.
pub(crate) const RELEASE_ADMISSION_SQL: &str = "SELECT ff_release_admission($1, $2)";

/// The policies of a quota partition.
pub(crate) const PARTITION_POLICIES_SQL: &str =
    "SELECT quota_policy_id FROM ff_quota_policy WHERE partition_key = $1 ORDER BY quota_policy_id";

/// `ff_quota_recount` for one policy.
pub(crate) const RECOUNT_SQL: &str = "SELECT ff_quota_recount($1)";

/// Policies to settle now (at most `$1` whose rate window has room for their waiters, and every
/// one a release asked to settle; the requests are taken).
pub(crate) const DUE_POLICIES_SQL: &str = "WITH asked AS ( \
       DELETE FROM ff_quota_settle_request RETURNING quota_policy_id), \
     due AS ( \
       SELECT quota_policy_id FROM ff_quota_policy WHERE next_admit_at_ms <= ff_now_ms() \
       ORDER BY next_admit_at_ms LIMIT $1) \
     SELECT quota_policy_id FROM asked UNION SELECT quota_policy_id FROM due";

/// Admits waiters of one policy into the room its window has.
pub(crate) const ADMIT_SQL: &str = "SELECT ff_quota_apply($1, '[]'::jsonb)";

/// When the next rate-limited waiter may be admitted.
pub(crate) const NEXT_DUE_SQL: &str = "SELECT min(next_admit_at_ms) FROM ff_quota_policy";

/// Sets lane `$1`'s policy to `$2` (registering the lane); returns the previous one and whether
/// `$2` exists.
pub(crate) const SET_LANE_POLICY_SQL: &str = "WITH known AS ( \
       SELECT $2::uuid IS NULL OR EXISTS (SELECT 1 FROM ff_quota_policy WHERE quota_policy_id = $2) AS ok), \
     prev AS (SELECT quota_policy_id FROM ff_lane WHERE lane_id = $1 FOR UPDATE), \
     ins AS ( \
       INSERT INTO ff_lane AS l (lane_id, quota_policy_id) SELECT $1, $2 FROM known WHERE known.ok \
       ON CONFLICT (lane_id) DO UPDATE SET quota_policy_id = EXCLUDED.quota_policy_id RETURNING 1) \
     SELECT (SELECT ok FROM known) AS known, (SELECT quota_policy_id FROM prev) AS previous, \
            (SELECT count(*) FROM ins) AS written";

/// Lane `$1`'s policy.
pub(crate) const LANE_POLICY_SQL: &str = "SELECT quota_policy_id FROM ff_lane WHERE lane_id = $1";

/// `set_lane_quota_policy`.
pub(crate) async fn set_lane_policy(
    pool: &Db,
    args: &SetLaneQuotaPolicyArgs,
) -> Result<SetLaneQuotaPolicyResult, EngineError> {
    let (known, previous, _written): (bool, Option<uuid::Uuid>, i64) = sqlx::query_as(SET_LANE_POLICY_SQL)
        .bind(args.lane_id.as_str())
        .bind(args.quota_policy_id.map(|q| q.0))
        .fetch_one(pool)
        .await
        .map_err(map_sqlx)?;
    if !known {
        return Err(EngineError::NotFound { entity: "quota_policy" });
    }
    Ok(SetLaneQuotaPolicyResult { previous: previous.map(QuotaPolicyId) })
}

/// `read_lane_quota_policy`.
pub(crate) async fn lane_policy(pool: &Db, lane: &LaneId) -> Result<Option<QuotaPolicyId>, EngineError> {
    let row: Option<(Option<uuid::Uuid>,)> =
        sqlx::query_as(LANE_POLICY_SQL).bind(lane.as_str()).fetch_optional(pool).await.map_err(map_sqlx)?;
    Ok(row.and_then(|(q,)| q).map(QuotaPolicyId))
}

fn opt_i32(v: Option<u32>) -> Option<i32> {
    v.map(|n| n as i32)
}

/// `create_quota_policy`.
pub(crate) async fn create(
    pool: &Db,
    partitions: &PartitionConfig,
    args: &CreateQuotaPolicyArgs,
) -> Result<CreateQuotaPolicyResult, EngineError> {
    args.validate()?;
    let (created, same): (bool, Option<bool>) = sqlx::query_as(CREATE_POLICY_SQL)
        .bind(args.quota_policy_id.0)
        .bind(partitions.quota_partition(&args.quota_policy_id).index as i16)
        .bind(args.window_seconds.map(|s| i64::from(s) * 1000))
        .bind(opt_i32(args.max_requests_per_window))
        .bind(opt_i32(args.max_concurrent))
        .bind(opt_i32(args.max_concurrent_per_key))
        .bind(args.jitter_ms as i64)
        .fetch_one(pool)
        .await
        .map_err(map_sqlx)?;
    match (created, same) {
        (true, _) => Ok(CreateQuotaPolicyResult::Created),
        (false, Some(true)) => Ok(CreateQuotaPolicyResult::AlreadySatisfied),
        _ => Err(EngineError::Conflict(ConflictKind::QuotaPolicyAlreadyExists)),
    }
}

fn limits(row: &sqlx::postgres::PgRow) -> Result<QuotaPolicyLimits, EngineError> {
    let u = |v: Option<i32>| v.map_or(0, |n| n.max(0) as u32);
    Ok(QuotaPolicyLimits {
        max_requests_per_window: u(col(row, "max_requests_per_window")?),
        requests_per_window_seconds: col::<Option<i64>>(row, "window_ms")?.map_or(0, |ms| (ms / 1000) as u32),
        active_concurrency_cap: u(col(row, "max_concurrent")?),
        max_concurrent_per_key: u(col(row, "max_concurrent_per_key")?),
        jitter_ms: col::<i64>(row, "jitter_ms")?.max(0) as u64,
    })
}

/// `get_quota_policy_status`; `None` when absent.
pub(crate) async fn status(pool: &Db, id: &QuotaPolicyId) -> Result<Option<QuotaPolicyStatus>, EngineError> {
    let Some(row) = sqlx::query(POLICY_STATUS_SQL).bind(id.0).fetch_optional(pool).await.map_err(map_sqlx)? else {
        return Ok(None);
    };
    Ok(Some(QuotaPolicyStatus {
        quota_policy_id: *id,
        limits: limits(&row)?,
        active: col::<i32>(&row, "active")?.max(0) as u32,
        requests_in_window: col::<Option<i64>>(&row, "in_window")?.unwrap_or(0).max(0) as u32,
        waiting: col::<i64>(&row, "waiting")?.max(0) as u64,
        busiest_key_active: col::<i32>(&row, "busiest_key")?.max(0) as u32,
        next_admission_at: col::<Option<i64>>(&row, "next_admit_at_ms")?.map(TimestampMs),
        created_at: TimestampMs(col(&row, "created_at_ms")?),
    }))
}

/// `check_admission`.
pub(crate) async fn check(
    pool: &Db,
    policy: &QuotaPolicyId,
    args: &CheckAdmissionArgs,
) -> Result<CheckAdmissionResult, EngineError> {
    args.validate()?;
    let (status, retry): (String, Option<i64>) = sqlx::query_as(CHECK_ADMISSION_SQL)
        .bind(policy.0)
        .bind(args.execution_id.uuid())
        .bind(args.window_seconds.map(|s| i64::from(s) * 1000))
        .bind(opt_i32(args.rate_limit))
        .bind(opt_i32(args.concurrency_cap))
        .bind(args.jitter_ms.map(|j| j as i64))
        .fetch_one(pool)
        .await
        .map_err(map_sqlx)?;
    match status.as_str() {
        "admitted" => Ok(CheckAdmissionResult::Admitted),
        "already_admitted" => Ok(CheckAdmissionResult::AlreadyAdmitted),
        "rate_exceeded" => Ok(CheckAdmissionResult::RateExceeded { retry_after_ms: retry.unwrap_or(1).max(1) as u64 }),
        "concurrency_exceeded" => Ok(CheckAdmissionResult::ConcurrencyExceeded),
        "not_found" => Err(EngineError::NotFound { entity: "quota_policy" }),
        other => Err(EngineError::Internal(format!("ff_check_admission answered {other:?}"))),
    }
}

/// `release_admission`.
pub(crate) async fn release(pool: &Db, args: &ReleaseAdmissionArgs) -> Result<ReleaseAdmissionResult, EngineError> {
    let (status,): (String,) = sqlx::query_as(RELEASE_ADMISSION_SQL)
        .bind(args.quota_policy_id.0)
        .bind(args.execution_id.uuid())
        .fetch_one(pool)
        .await
        .map_err(map_sqlx)?;
    match status.as_str() {
        "released" => Ok(ReleaseAdmissionResult::Released),
        "not_held" => Ok(ReleaseAdmissionResult::NotHeld),
        "not_found" => Err(EngineError::NotFound { entity: "quota_policy" }),
        other => Err(EngineError::Internal(format!("ff_release_admission answered {other:?}"))),
    }
}

/// `reconcile_quota_counters`: one transaction per policy.
pub(crate) async fn reconcile(
    pool: &Db,
    partitions: &PartitionConfig,
    partition: Partition,
) -> Result<ReconcileCounts, EngineError> {
    partitions.check_partition(partition, PartitionFamily::Quota)?;
    let ids: Vec<(uuid::Uuid,)> =
        sqlx::query_as(PARTITION_POLICIES_SQL).bind(partition.index as i16).fetch_all(pool).await.map_err(map_sqlx)?;
    let mut counts = ReconcileCounts::default();
    for (id,) in ids {
        let (wrong,): (i32,) = sqlx::query_as(RECOUNT_SQL).bind(id).fetch_one(pool).await.map_err(map_sqlx)?;
        counts.examined += 1;
        counts.repaired += wrong.max(0) as u64;
    }
    Ok(counts)
}

/// Admits the waiters of up to `limit` policies whose rate window has room again; returns how
/// many policies were settled and when the next one is due.
pub(crate) async fn admit_due(pool: &Db, limit: i64) -> Result<(usize, Option<TimestampMs>), EngineError> {
    let ids: Vec<(uuid::Uuid,)> =
        sqlx::query_as(DUE_POLICIES_SQL).bind(limit).fetch_all(pool).await.map_err(map_sqlx)?;
    for (id,) in &ids {
        sqlx::query(ADMIT_SQL).bind(id).execute(pool).await.map_err(map_sqlx)?;
    }
    let (next,): (Option<i64>,) = sqlx::query_as(NEXT_DUE_SQL).fetch_one(pool).await.map_err(map_sqlx)?;
    Ok((ids.len(), next.map(TimestampMs)))
}
