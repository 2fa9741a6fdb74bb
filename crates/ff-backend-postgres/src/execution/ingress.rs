//! Ingress: creating executions, one or many per statement.
//!
//! A batch is validated as a whole before anything is written, then inserted by one statement
//! over arrays (`unnest`). `ON CONFLICT DO NOTHING` makes both the id and the
//! `(namespace, idempotency_key)` pair idempotent: a conflicting item reports the original id as
//! `Duplicate`. The initial state comes from the create transition of the state machine; lanes
//! are registered in the same statement. An execution whose required capabilities no live
//! worker offers on its lane is parked (`blocked_by_route`, see `route`) rather than left for
//! every claim to walk past; a delayed one tells the promoter when it is due.

use std::collections::HashMap;

use ff_core::{
    CreateExecutionArgs, CreateExecutionResult, EligibilityState, EngineError, ExecutionId, MAX_CREATE_BATCH,
    PartitionConfig, PublicState, ValidationKind,
};
use uuid::Uuid;

use crate::error::map_sqlx;
use crate::row::col;

pub(crate) const CREATE_SQL: &str = r#"
WITH raw_input AS (
    SELECT * FROM unnest($1::uuid[], $2::smallint[], $3::text[], $4::text[], $5::text[], $6::int[], $7::text[],
                         $8::text[], $9::text[], $10::bytea[], $11::jsonb[], $12::text[], $13::jsonb[], $14::int[],
                         $15::int[], $16::bigint[], $17::bigint[], $18::bigint[], $19::bigint[], $20::uuid[],
                         $21::text[], $22::text[], $23::jsonb[])
        WITH ORDINALITY AS i(execution_id, partition_key, namespace, lane_id, execution_kind, priority, creator_identity,
                             idempotency_key, payload_encoding, input_payload, tags, capabilities, policy, max_retries,
                             max_reclaim_count, attempt_timeout_ms, delay_until, deadline_at, deadline_rel_ms,
                             own_quota_policy_id, concurrency_key, budgets, trace_context, ord)
),
-- An execution without a quota policy of its own takes its lane's.
input AS (
    SELECT r.*, coalesce(r.own_quota_policy_id, l.quota_policy_id) AS quota_policy_id
    FROM raw_input r LEFT JOIN ff_lane l ON l.lane_id = r.lane_id
),
-- Quota policies and budgets the batch names that do not exist: then nothing is written.
refs AS (
    SELECT (SELECT array_agg(DISTINCT q.id) FROM input i, LATERAL (SELECT i.quota_policy_id AS id) q
            WHERE q.id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM ff_quota_policy p WHERE p.quota_policy_id = q.id))
               AS missing_policies,
           (SELECT array_agg(DISTINCT b.id) FROM input i,
                   LATERAL unnest(string_to_array(nullif(i.budgets, ''), ',')::uuid[]) AS b(id)
            WHERE NOT EXISTS (SELECT 1 FROM ff_budget x WHERE x.budget_id = b.id)) AS missing_budgets,
           EXISTS (SELECT 1 FROM input i WHERE i.concurrency_key IS NOT NULL AND i.quota_policy_id IS NULL)
               AS keys_without_policy
),
ins AS (
    INSERT INTO ff_execution (execution_id, partition_key, namespace, lane_id, execution_kind, priority, creator_identity,
        idempotency_key, payload_encoding, input_payload, tags, required_capabilities, policy, max_retries,
        max_reclaim_count, attempt_timeout_ms, lifecycle_phase, ownership_state, eligibility_state, blocking_reason,
        terminal_outcome, attempt_state, eligible_at_ms, deadline_at_ms, quota_policy_id, concurrency_key, budget_ids,
        trace_context)
    SELECT execution_id, partition_key, namespace, lane_id, execution_kind, priority, creator_identity,
        idempotency_key, payload_encoding, input_payload, tags, r.required, policy, max_retries,
        max_reclaim_count, attempt_timeout_ms, 'runnable', 'unowned',
        (CASE WHEN delay_until > ff_now_ms() THEN 'not_eligible_until_time'
              WHEN NOT r.covered THEN 'blocked_by_route'
              ELSE 'eligible_now' END)::ff_eligibility_state,
        (CASE WHEN delay_until > ff_now_ms() THEN 'waiting_for_delay'
              WHEN NOT r.covered THEN 'waiting_for_capable_worker'
              ELSE 'waiting_for_worker' END)::ff_blocking_reason,
        'none', 'pending_first_attempt', greatest(coalesce(delay_until, 0), ff_now_ms()),
        coalesce(deadline_at, ff_now_ms() + deadline_rel_ms), quota_policy_id, concurrency_key,
        string_to_array(nullif(budgets, ''), ',')::uuid[], trace_context
    FROM input CROSS JOIN refs,
         -- The coverage check runs a query per call: only for executions that require capabilities.
         LATERAL (SELECT c.required, cardinality(c.required) = 0 OR ff_route_covered(lane_id, c.required) AS covered
                  FROM (SELECT coalesce(string_to_array(nullif(capabilities, ''), ','), '{}') AS required) c) r
    WHERE refs.missing_policies IS NULL AND refs.missing_budgets IS NULL AND NOT refs.keys_without_policy
    ORDER BY ord
    ON CONFLICT DO NOTHING
    RETURNING execution_id, lane_id, eligibility_state::text AS eligibility_state, eligible_at_ms, priority
),
-- Work created above the lowest priority a claimer has reached may land behind its position.
behind AS (
    SELECT ff_bump_claim_generation(array_agg(n.lane_id))
    FROM (SELECT lane_id, max(priority) AS priority FROM ins WHERE eligibility_state = 'eligible_now'
          GROUP BY lane_id) n
    JOIN ff_lane l ON l.lane_id = n.lane_id
    WHERE n.priority > l.claim_floor_priority
    HAVING count(*) > 0
),
-- Wake claims long-polling the lanes that just received claimable work (delivered on commit).
ready AS (
    SELECT pg_notify('ff_lane_ready', l.lane_id)
    FROM (SELECT DISTINCT lane_id FROM ins WHERE eligibility_state = 'eligible_now') l
),
-- Tell the promoter when the earliest delayed execution of this batch is due.
timers AS (
    SELECT pg_notify('ff_timer', min(eligible_at_ms)::text) FROM ins
    WHERE eligibility_state = 'not_eligible_until_time' HAVING count(*) > 0
),
lanes AS (
    INSERT INTO ff_lane (lane_id) SELECT DISTINCT lane_id FROM input, refs
    WHERE refs.missing_policies IS NULL AND refs.missing_budgets IS NULL AND NOT refs.keys_without_policy
    ON CONFLICT DO NOTHING
)
SELECT i.ord, ins.eligibility_state, refs.missing_policies::text[] AS missing_policies,
       refs.missing_budgets::text[] AS missing_budgets, refs.keys_without_policy,
       CASE WHEN ins.execution_id IS NULL THEN
           coalesce((SELECT x.partition_key::text || ':' || x.execution_id::text FROM ff_execution x
                     WHERE x.execution_id = i.execution_id),
                    (SELECT x.partition_key::text || ':' || x.execution_id::text FROM ff_execution x
                     WHERE x.namespace = i.namespace AND x.idempotency_key = i.idempotency_key))
       END AS original
FROM input i LEFT JOIN ins ON ins.execution_id = i.execution_id
CROSS JOIN refs
CROSS JOIN (SELECT count(*) FROM ready) notified
CROSS JOIN (SELECT count(*) FROM timers) timed
CROSS JOIN (SELECT count(*) FROM behind) bumped
ORDER BY i.ord
"#;

/// Validates and creates a batch of executions, on `exec` (the pool, or a transaction that
/// creates more with them).
pub(crate) async fn create<'e>(
    exec: impl sqlx::PgExecutor<'e>,
    partitions: &PartitionConfig,
    batch: &[CreateExecutionArgs],
) -> Result<Vec<CreateExecutionResult>, EngineError> {
    if batch.len() > MAX_CREATE_BATCH {
        return Err(EngineError::invalid(format!("batch of {} exceeds {MAX_CREATE_BATCH} executions", batch.len())));
    }
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let n = batch.len();
    let mut ids = Vec::with_capacity(n);
    let mut parts = Vec::with_capacity(n);
    let mut namespaces = Vec::with_capacity(n);
    let mut lanes = Vec::with_capacity(n);
    let mut kinds = Vec::with_capacity(n);
    let mut priorities = Vec::with_capacity(n);
    let mut creators = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    let mut encodings = Vec::with_capacity(n);
    let mut payloads = Vec::with_capacity(n);
    let mut tags = Vec::with_capacity(n);
    let mut caps = Vec::with_capacity(n);
    let mut policies = Vec::with_capacity(n);
    let mut max_retries = Vec::with_capacity(n);
    let mut max_reclaims = Vec::with_capacity(n);
    let mut attempt_timeouts = Vec::with_capacity(n);
    let mut delays = Vec::with_capacity(n);
    let mut deadlines = Vec::with_capacity(n);
    let mut deadline_rels = Vec::with_capacity(n);
    let mut quota_policies = Vec::with_capacity(n);
    let mut concurrency_keys = Vec::with_capacity(n);
    let mut budgets = Vec::with_capacity(n);
    let mut traces = Vec::with_capacity(n);
    for (i, a) in batch.iter().enumerate() {
        a.validate().map_err(|e| prefix(e, i, n))?;
        partitions.check_execution_partition(a.execution_id.partition_index()).map_err(|e| prefix(e, i, n))?;
        let policy = a.policy.clone().unwrap_or_default();
        ids.push(a.execution_id.uuid());
        parts.push(a.execution_id.partition_index() as i16);
        namespaces.push(a.namespace.as_str());
        lanes.push(a.lane_id.as_str());
        kinds.push(a.execution_kind.as_str());
        priorities.push(a.priority);
        creators.push(a.creator_identity.as_deref());
        keys.push(a.idempotency_key.as_deref());
        encodings.push(a.payload_encoding.as_deref());
        payloads.push(a.input_payload.as_slice());
        tags.push(serde_json::to_value(&a.tags).map_err(|e| EngineError::Internal(e.to_string()))?);
        caps.push(policy.required_capabilities().join(","));
        max_retries.push(policy.max_retries() as i32);
        max_reclaims.push(policy.reclaim_cap() as i32);
        let timeouts = policy.timeout_policy.clone().unwrap_or_default();
        attempt_timeouts.push(timeouts.attempt_timeout_ms.map(|t| t as i64));
        delays.push(a.delay_until.map(|t| t.0));
        // An absolute deadline wins; a relative one counts from creation in database time.
        deadlines.push(a.execution_deadline_at.map(|t| t.0));
        deadline_rels.push(timeouts.execution_deadline_ms.map(|ms| ms as i64));
        quota_policies.push(policy.quota_policy_id.map(|q| q.0));
        concurrency_keys.push(policy.concurrency_key.clone());
        budgets.push(policy.budget_ids.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(","));
        traces.push(
            a.trace_context
                .as_ref()
                .map(serde_json::to_value)
                .transpose()
                .map_err(|e| EngineError::Internal(e.to_string()))?,
        );
        policies.push(serde_json::to_value(&policy).map_err(|e| EngineError::Internal(e.to_string()))?);
    }
    let rows = sqlx::query(CREATE_SQL)
        .bind(&ids)
        .bind(&parts)
        .bind(&namespaces)
        .bind(&lanes)
        .bind(&kinds)
        .bind(&priorities)
        .bind(&creators)
        .bind(&keys)
        .bind(&encodings)
        .bind(&payloads)
        .bind(&tags)
        .bind(&caps)
        .bind(&policies)
        .bind(&max_retries)
        .bind(&max_reclaims)
        .bind(&attempt_timeouts)
        .bind(&delays)
        .bind(&deadlines)
        .bind(&deadline_rels)
        .bind(&quota_policies)
        .bind(&concurrency_keys)
        .bind(&budgets)
        .bind(&traces)
        .fetch_all(exec)
        .await
        .map_err(map_sqlx)?;
    if let Some(row) = rows.first() {
        if let Some(missing) = col::<Option<Vec<String>>>(row, "missing_policies")? {
            return Err(EngineError::NotFound { entity: "quota_policy" }).inspect_err(|_| {
                tracing::debug!(?missing, "creation names quota policies that do not exist");
            });
        }
        if col::<bool>(row, "keys_without_policy")? {
            return Err(EngineError::validation(
                ValidationKind::InvalidPolicyJson,
                "a concurrency_key needs a quota policy, on the execution or on its lane",
            ));
        }
        if let Some(missing) = col::<Option<Vec<String>>>(row, "missing_budgets")? {
            return Err(EngineError::NotFound { entity: "budget" }).inspect_err(|_| {
                tracing::debug!(?missing, "creation names budgets that do not exist");
            });
        }
    }
    let mut out = Vec::with_capacity(n);
    // Items that lost to an earlier item of the same batch (same key) find their original here.
    let mut created_by_key: HashMap<(&str, &str), ExecutionId> = HashMap::new();
    for (row, a) in rows.iter().zip(batch) {
        let eligibility: Option<String> = col(row, "eligibility_state")?;
        let result = match eligibility {
            Some(e) => {
                if let Some(k) = &a.idempotency_key {
                    created_by_key.insert((a.namespace.as_str(), k.as_str()), a.execution_id);
                }
                let public_state = match EligibilityState::parse(&e)? {
                    EligibilityState::NotEligibleUntilTime => PublicState::Delayed,
                    EligibilityState::BlockedByBudget | EligibilityState::BlockedByQuota => PublicState::RateLimited,
                    _ => PublicState::Waiting,
                };
                CreateExecutionResult::Created { execution_id: a.execution_id, public_state }
            }
            None => {
                let original: Option<String> = col(row, "original")?;
                let execution_id = match original {
                    Some(s) => parse_original(&s)?,
                    None => a
                        .idempotency_key
                        .as_deref()
                        .and_then(|k| created_by_key.get(&(a.namespace.as_str(), k)).copied())
                        .unwrap_or(a.execution_id),
                };
                CreateExecutionResult::Duplicate { execution_id }
            }
        };
        out.push(result);
    }
    Ok(out)
}

fn parse_original(s: &str) -> Result<ExecutionId, EngineError> {
    let corrupt = || EngineError::Internal(format!("unexpected original id {s:?}"));
    let (p, u) = s.split_once(':').ok_or_else(corrupt)?;
    Ok(ExecutionId::from_parts(p.parse().map_err(|_| corrupt())?, Uuid::parse_str(u).map_err(|_| corrupt())?))
}

fn prefix(e: EngineError, i: usize, n: usize) -> EngineError {
    if n == 1 {
        return e;
    }
    match e {
        EngineError::Validation { kind, detail } => {
            EngineError::Validation { kind, detail: format!("item {i}: {detail}") }
        }
        other => other,
    }
}
