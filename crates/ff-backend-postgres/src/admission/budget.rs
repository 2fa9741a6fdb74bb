//! Budgets: definitions, usage reports (`ff_report_usage` applies them all-or-nothing and at
//! most once per dedup key), releases, resets and reads. Exhaustion and the parking of the
//! executions drawing on a budget are the schema's (`ff_budget_rederive`, `ff_budget_gate`).

use std::collections::BTreeMap;

use crate::db::{Db, Tx};
use ff_core::*;

use crate::error::map_sqlx;
use crate::fence::{FENCE, bind_fence};
use crate::row::col;

/// Creates a budget and its dimensions unless it exists; reports whether it was created.
pub(crate) const CREATE_BUDGET_SQL: &str = "WITH ins AS ( \
       INSERT INTO ff_budget (budget_id, partition_key, scope_type, scope_id, enforcement_mode, on_hard_limit, \
                              on_soft_limit, reset_interval_ms, next_reset_at_ms) \
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8::bigint, CASE WHEN $8::bigint > 0 THEN ff_now_ms() + $8::bigint END) \
       ON CONFLICT (budget_id) DO NOTHING RETURNING budget_id), \
     dims AS ( \
       INSERT INTO ff_budget_dimension (budget_id, dimension, hard_limit, soft_limit) \
       SELECT i.budget_id, d.dimension, nullif(d.hard, 0), nullif(d.soft, 0) \
       FROM ins i, unnest($9::text[], $10::bigint[], $11::bigint[]) AS d(dimension, hard, soft)) \
     SELECT count(*) > 0 AS created FROM ins";

/// A budget's header.
pub(crate) const BUDGET_SQL: &str = "SELECT scope_type, scope_id, enforcement_mode, on_hard_limit, on_soft_limit, \
       reset_interval_ms, next_reset_at_ms, exhausted, breach_count, soft_breach_count, last_breach_at_ms, \
       last_breach_dim, created_at_ms, \
       (SELECT count(*) FROM ff_budget_member m JOIN ff_execution e ON e.execution_id = m.execution_id \
        WHERE m.budget_id = b.budget_id AND e.eligibility_state = 'blocked_by_budget') AS blocked \
     FROM ff_budget b WHERE b.budget_id = $1";

/// A budget's dimensions.
pub(crate) const DIMENSIONS_SQL: &str =
    "SELECT dimension, hard_limit, soft_limit, usage FROM ff_budget_dimension WHERE budget_id = $1 ORDER BY dimension";

/// Locks a budget for a change.
pub(crate) const LOCK_BUDGET_SQL: &str = "SELECT 1 FROM ff_budget WHERE budget_id = $1 FOR UPDATE";

/// Sets the limits of the named dimensions.
pub(crate) const SET_LIMITS_SQL: &str = "INSERT INTO ff_budget_dimension AS x (budget_id, dimension, hard_limit, soft_limit) \
     SELECT $1, d.dimension, nullif(d.hard, 0), nullif(d.soft, 0) \
     FROM unnest($2::text[], $3::bigint[], $4::bigint[]) AS d(dimension, hard, soft) ORDER BY d.dimension \
     ON CONFLICT (budget_id, dimension) DO UPDATE SET hard_limit = EXCLUDED.hard_limit, \
       soft_limit = EXCLUDED.soft_limit, updated_at_ms = ff_now_ms()";

/// Re-derives exhaustion; returns how many executions were let go.
pub(crate) const REDERIVE_SQL: &str = "SELECT ff_budget_rederive($1)";

/// Where a budget stands after a change.
pub(crate) const AFTER_CHANGE_SQL: &str = "SELECT exhausted, next_reset_at_ms FROM ff_budget WHERE budget_id = $1";

/// A usage report without a lease: `$1` budget, `$2` dimensions, `$3` deltas, `$4` dedup key.
pub(crate) const REPORT_ADMIN_SQL: &str = "SELECT ff_report_usage($1, $2, $3, $4, NULL, false) AS outcome";

/// A usage report by a lease holder, attributed to its execution: fence `$1..$4`, budget `$5`,
/// dimensions `$6`, deltas `$7`, dedup key `$8`. No row when the fence fails; no outcome (and
/// nothing applied) when the execution does not draw on the budget.
pub(crate) static REPORT_HELD_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT CASE WHEN $5 = ANY (coalesce(e.budget_ids, '{{}}')) \
                THEN ff_report_usage($5, $6, $7, $8, e.execution_id, false) END AS outcome, \
                EXISTS (SELECT 1 FROM ff_budget b WHERE b.budget_id = $5) AS known \
         FROM ff_execution e WHERE {FENCE}"
    )
});

/// Spend attributed to an execution: `$1` execution, `$2` budget, `$3` dimensions, `$4` deltas,
/// `$5` idempotency key. No row when the execution does not exist.
pub(crate) const RECORD_SPEND_SQL: &str = "SELECT ff_report_usage($2, $3, $4, $5, e.execution_id, true) AS outcome FROM ff_execution e WHERE e.execution_id = $1";

/// Gives back an execution's attributed spend.
pub(crate) const RELEASE_SQL: &str = "WITH gone AS ( \
       DELETE FROM ff_budget_spend WHERE budget_id = $1 AND execution_id = $2 RETURNING dimension, amount), \
     upd AS ( \
       UPDATE ff_budget_dimension d SET usage = greatest(d.usage - g.amount, 0), updated_at_ms = ff_now_ms() \
       FROM gone g WHERE d.budget_id = $1 AND d.dimension = g.dimension) \
     SELECT dimension, amount FROM gone ORDER BY dimension";

/// `ff_reset_budget`.
pub(crate) const RESET_SQL: &str = "SELECT ff_reset_budget($1)";

/// The budgets of a budget partition.
pub(crate) const PARTITION_BUDGETS_SQL: &str = "SELECT budget_id, next_reset_at_ms <= ff_now_ms() AS due \
     FROM ff_budget WHERE partition_key = $1 ORDER BY budget_id";

/// Parks the eligible executions of an exhausted budget that slipped past the gate.
pub(crate) const BLOCK_STRAGGLERS_SQL: &str = "SELECT CASE WHEN b.exhausted THEN ff_budget_block_members(b.budget_id) ELSE 0 END FROM ff_budget b WHERE b.budget_id = $1";

/// Forgets lapsed dedup keys (at most `$1`).
pub(crate) const FORGET_REPORTS_SQL: &str = "DELETE FROM ff_budget_report WHERE (budget_id, dedup_key) IN ( \
       SELECT budget_id, dedup_key FROM ff_budget_report WHERE expires_at_ms <= ff_now_ms() LIMIT $1)";

/// Budgets whose reset time has come (at most `$1`), locked.
pub(crate) const DUE_RESETS_SQL: &str = "SELECT budget_id FROM ff_budget WHERE next_reset_at_ms <= ff_now_ms() \
     ORDER BY next_reset_at_ms LIMIT $1 FOR UPDATE SKIP LOCKED";

/// When the next automatic reset is due.
pub(crate) const NEXT_RESET_SQL: &str = "SELECT min(next_reset_at_ms) FROM ff_budget";

fn to_i64(v: &[u64]) -> Vec<i64> {
    v.iter().map(|n| *n as i64).collect()
}

/// `create_budget`.
pub(crate) async fn create(
    pool: &Db,
    partitions: &PartitionConfig,
    args: &CreateBudgetArgs,
) -> Result<CreateBudgetResult, EngineError> {
    args.validate()?;
    let (created,): (bool,) = sqlx::query_as(CREATE_BUDGET_SQL)
        .bind(args.budget_id.0)
        .bind(partitions.budget_partition(&args.budget_id).index as i16)
        .bind(&args.scope_type)
        .bind(&args.scope_id)
        .bind(args.enforcement_mode.as_str())
        .bind(args.on_hard_limit.as_deref())
        .bind(args.on_soft_limit.as_deref())
        .bind(args.reset_interval_ms as i64)
        .bind(&args.dimensions)
        .bind(to_i64(&args.hard_limits))
        .bind(to_i64(&args.soft_limits))
        .fetch_one(pool)
        .await
        .map_err(map_sqlx)?;
    if created {
        return Ok(CreateBudgetResult::Created);
    }
    let existing = status(pool, &args.budget_id).await?.ok_or(EngineError::NotFound { entity: "budget" })?;
    if same_definition(&existing, args) {
        Ok(CreateBudgetResult::AlreadySatisfied)
    } else {
        Err(EngineError::Conflict(ConflictKind::BudgetAlreadyExists))
    }
}

fn same_definition(s: &BudgetStatus, a: &CreateBudgetArgs) -> bool {
    let mut hard = BTreeMap::new();
    let mut soft = BTreeMap::new();
    for l in a.limits() {
        if let Some(h) = l.hard {
            hard.insert(l.dimension.clone(), h);
        }
        if let Some(v) = l.soft {
            soft.insert(l.dimension.clone(), v);
        }
    }
    let dims: std::collections::BTreeSet<&String> = a.dimensions.iter().collect();
    s.scope_type == a.scope_type
        && s.scope_id == a.scope_id
        && s.enforcement_mode == a.enforcement_mode
        && s.on_hard_limit == a.on_hard_limit
        && s.on_soft_limit == a.on_soft_limit
        && s.reset_interval_ms == a.reset_interval_ms
        && s.hard_limits == hard
        && s.soft_limits == soft
        && dims.iter().all(|d| s.usage.contains_key(*d))
}

/// `get_budget_status`; `None` when absent.
pub(crate) async fn status(pool: &Db, id: &BudgetId) -> Result<Option<BudgetStatus>, EngineError> {
    let Some(row) = sqlx::query(BUDGET_SQL).bind(id.0).fetch_optional(pool).await.map_err(map_sqlx)? else {
        return Ok(None);
    };
    let dims = sqlx::query(DIMENSIONS_SQL).bind(id.0).fetch_all(pool).await.map_err(map_sqlx)?;
    let mut usage = BTreeMap::new();
    let mut hard_limits = BTreeMap::new();
    let mut soft_limits = BTreeMap::new();
    for d in &dims {
        let name: String = col(d, "dimension")?;
        usage.insert(name.clone(), col::<i64>(d, "usage")?.max(0) as u64);
        if let Some(h) = col::<Option<i64>>(d, "hard_limit")? {
            hard_limits.insert(name.clone(), h.max(0) as u64);
        }
        if let Some(s) = col::<Option<i64>>(d, "soft_limit")? {
            soft_limits.insert(name, s.max(0) as u64);
        }
    }
    Ok(Some(BudgetStatus {
        budget_id: *id,
        scope_type: col(&row, "scope_type")?,
        scope_id: col(&row, "scope_id")?,
        enforcement_mode: EnforcementMode::parse(&col::<String>(&row, "enforcement_mode")?)?,
        on_hard_limit: col(&row, "on_hard_limit")?,
        on_soft_limit: col(&row, "on_soft_limit")?,
        usage,
        hard_limits,
        soft_limits,
        exhausted: col(&row, "exhausted")?,
        breach_count: col::<i64>(&row, "breach_count")?.max(0) as u64,
        soft_breach_count: col::<i64>(&row, "soft_breach_count")?.max(0) as u64,
        last_breach_at: col::<Option<i64>>(&row, "last_breach_at_ms")?.map(TimestampMs),
        last_breach_dim: col(&row, "last_breach_dim")?,
        reset_interval_ms: col::<i64>(&row, "reset_interval_ms")?.max(0) as u64,
        next_reset_at: col::<Option<i64>>(&row, "next_reset_at_ms")?.map(TimestampMs),
        blocked_executions: col::<i64>(&row, "blocked")?.max(0) as u64,
        created_at: TimestampMs(col(&row, "created_at_ms")?),
    }))
}

/// `read_budget_usage_and_limits`.
pub(crate) async fn usage_and_limits(pool: &Db, id: &BudgetId) -> Result<BudgetUsageAndLimits, EngineError> {
    let dims = sqlx::query(DIMENSIONS_SQL).bind(id.0).fetch_all(pool).await.map_err(map_sqlx)?;
    let mut out = BudgetUsageAndLimits::default();
    for d in &dims {
        let name: String = col(d, "dimension")?;
        out.usage.insert(name.clone(), col::<i64>(d, "usage")?.max(0) as u64);
        if let Some(h) = col::<Option<i64>>(d, "hard_limit")? {
            out.limits.insert(format!("hard:{name}"), h.max(0) as u64);
        }
        if let Some(s) = col::<Option<i64>>(d, "soft_limit")? {
            out.limits.insert(format!("soft:{name}"), s.max(0) as u64);
        }
    }
    Ok(out)
}

async fn lock(tx: &mut Tx, id: &BudgetId) -> Result<(), EngineError> {
    let found = sqlx::query(LOCK_BUDGET_SQL).bind(id.0).fetch_optional(&mut **tx).await.map_err(map_sqlx)?;
    if found.is_none() {
        return Err(EngineError::NotFound { entity: "budget" });
    }
    Ok(())
}

async fn after_change(tx: &mut Tx, id: &BudgetId, unblocked: i64) -> Result<BudgetChangeResult, EngineError> {
    let (exhausted, next): (bool, Option<i64>) =
        sqlx::query_as(AFTER_CHANGE_SQL).bind(id.0).fetch_one(&mut **tx).await.map_err(map_sqlx)?;
    Ok(BudgetChangeResult { exhausted, unblocked: unblocked.max(0) as u64, next_reset_at: next.map(TimestampMs) })
}

/// `set_budget_limits`.
pub(crate) async fn set_limits(pool: &Db, args: &SetBudgetLimitsArgs) -> Result<BudgetChangeResult, EngineError> {
    args.validate()?;
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    lock(&mut tx, &args.budget_id).await?;
    sqlx::query(SET_LIMITS_SQL)
        .bind(args.budget_id.0)
        .bind(&args.dimensions)
        .bind(to_i64(&args.hard_limits))
        .bind(to_i64(&args.soft_limits))
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    let (unblocked,): (i64,) =
        sqlx::query_as(REDERIVE_SQL).bind(args.budget_id.0).fetch_one(&mut *tx).await.map_err(map_sqlx)?;
    let out = after_change(&mut tx, &args.budget_id, unblocked).await?;
    tx.commit().await.map_err(map_sqlx)?;
    Ok(out)
}

fn outcome(v: serde_json::Value) -> Result<ReportUsageResult, EngineError> {
    if v.get("status").and_then(|s| s.as_str()) == Some("not_found") {
        return Err(EngineError::NotFound { entity: "budget" });
    }
    serde_json::from_value(v).map_err(|e| EngineError::Internal(format!("usage report outcome: {e}")))
}

fn split(deltas: &BTreeMap<String, i64>) -> (Vec<String>, Vec<i64>) {
    (deltas.keys().cloned().collect(), deltas.values().copied().collect())
}

/// `report_usage_admin`.
pub(crate) async fn report_admin(
    pool: &Db,
    id: &BudgetId,
    args: &ReportUsageAdminArgs,
) -> Result<ReportUsageResult, EngineError> {
    args.validate()?;
    let (v,): (serde_json::Value,) = sqlx::query_as(REPORT_ADMIN_SQL)
        .bind(id.0)
        .bind(&args.dimensions)
        .bind(&args.deltas)
        .bind(args.dedup_key.as_deref())
        .fetch_one(pool)
        .await
        .map_err(map_sqlx)?;
    outcome(v)
}

/// `report_usage` under the lease in `p`; `Ok(None)` when the fence fails.
pub(crate) async fn report_held(
    pool: &Db,
    p: &HandlePayload,
    id: &BudgetId,
    dims: &UsageDimensions,
) -> Result<Option<ReportUsageResult>, EngineError> {
    dims.validate()?;
    let (names, deltas) = split(&dims.deltas);
    let row = bind_fence(sqlx::query(REPORT_HELD_SQL.as_str()), p)
        .bind(id.0)
        .bind(&names)
        .bind(&deltas)
        .bind(dims.dedup_key.as_deref())
        .fetch_optional(pool)
        .await
        .map_err(map_sqlx)?;
    let Some(row) = row else { return Ok(None) };
    match col::<Option<serde_json::Value>>(&row, "outcome")? {
        Some(v) => outcome(v).map(Some),
        None if !col::<bool>(&row, "known")? => Err(EngineError::NotFound { entity: "budget" }),
        None => Err(EngineError::invalid(format!(
            "execution {} does not draw on budget {id}: a lease holder reports usage only to its own budgets",
            p.execution_id
        ))),
    }
}

/// `record_spend`.
pub(crate) async fn record_spend(pool: &Db, args: &RecordSpendArgs) -> Result<ReportUsageResult, EngineError> {
    args.validate()?;
    let (names, deltas) = split(&args.deltas);
    let row: Option<(serde_json::Value,)> = sqlx::query_as(RECORD_SPEND_SQL)
        .bind(args.execution_id.uuid())
        .bind(args.budget_id.0)
        .bind(&names)
        .bind(&deltas)
        .bind(&args.idempotency_key)
        .fetch_optional(pool)
        .await
        .map_err(map_sqlx)?;
    let Some((v,)) = row else {
        return Err(EngineError::NotFound { entity: "execution" });
    };
    outcome(v)
}

/// `release_budget`.
pub(crate) async fn release(pool: &Db, args: &ReleaseBudgetArgs) -> Result<ReleaseBudgetResult, EngineError> {
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    lock(&mut tx, &args.budget_id).await?;
    let rows: Vec<(String, i64)> = sqlx::query_as(RELEASE_SQL)
        .bind(args.budget_id.0)
        .bind(args.execution_id.uuid())
        .fetch_all(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    sqlx::query(REDERIVE_SQL).bind(args.budget_id.0).execute(&mut *tx).await.map_err(map_sqlx)?;
    tx.commit().await.map_err(map_sqlx)?;
    Ok(ReleaseBudgetResult { released: rows.into_iter().map(|(d, a)| (d, a.max(0) as u64)).collect() })
}

/// `reset_budget`.
pub(crate) async fn reset(pool: &Db, id: &BudgetId) -> Result<BudgetChangeResult, EngineError> {
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    lock(&mut tx, id).await?;
    let (unblocked,): (i64,) = sqlx::query_as(RESET_SQL).bind(id.0).fetch_one(&mut *tx).await.map_err(map_sqlx)?;
    let out = after_change(&mut tx, id, unblocked).await?;
    tx.commit().await.map_err(map_sqlx)?;
    Ok(out)
}

/// `reconcile_budget_counters`: per budget, a due reset, the re-derived exhaustion and the
/// stragglers; then lapsed dedup keys.
pub(crate) async fn reconcile(
    pool: &Db,
    partitions: &PartitionConfig,
    partition: Partition,
) -> Result<ReconcileCounts, EngineError> {
    partitions.check_partition(partition, PartitionFamily::Budget)?;
    let ids: Vec<(uuid::Uuid, Option<bool>)> =
        sqlx::query_as(PARTITION_BUDGETS_SQL).bind(partition.index as i16).fetch_all(pool).await.map_err(map_sqlx)?;
    let mut counts = ReconcileCounts::default();
    for (id, due) in ids {
        counts.examined += 1;
        let mut tx = pool.begin().await.map_err(map_sqlx)?;
        if sqlx::query(LOCK_BUDGET_SQL).bind(id).fetch_optional(&mut *tx).await.map_err(map_sqlx)?.is_none() {
            continue;
        }
        if due == Some(true) {
            sqlx::query(RESET_SQL).bind(id).execute(&mut *tx).await.map_err(map_sqlx)?;
            counts.repaired += 1;
        }
        let (freed,): (i64,) = sqlx::query_as(REDERIVE_SQL).bind(id).fetch_one(&mut *tx).await.map_err(map_sqlx)?;
        let (parked,): (i64,) =
            sqlx::query_as(BLOCK_STRAGGLERS_SQL).bind(id).fetch_one(&mut *tx).await.map_err(map_sqlx)?;
        counts.repaired += (freed.max(0) + parked.max(0)) as u64;
        tx.commit().await.map_err(map_sqlx)?;
    }
    sqlx::query(FORGET_REPORTS_SQL).bind(10_000_i64).execute(pool).await.map_err(map_sqlx)?;
    Ok(counts)
}

/// Resets up to `limit` budgets whose reset time has come; returns how many and when the next
/// one is due.
pub(crate) async fn reset_due(pool: &Db, limit: i64) -> Result<(usize, Option<TimestampMs>), EngineError> {
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    let ids: Vec<(uuid::Uuid,)> =
        sqlx::query_as(DUE_RESETS_SQL).bind(limit).fetch_all(&mut *tx).await.map_err(map_sqlx)?;
    for (id,) in &ids {
        sqlx::query(RESET_SQL).bind(id).execute(&mut *tx).await.map_err(map_sqlx)?;
    }
    tx.commit().await.map_err(map_sqlx)?;
    let (next,): (Option<i64>,) = sqlx::query_as(NEXT_RESET_SQL).fetch_one(pool).await.map_err(map_sqlx)?;
    Ok((ids.len(), next.map(TimestampMs)))
}
