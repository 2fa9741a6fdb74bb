-- Trace context: the W3C trace context (`traceparent`, optional `tracestate`) a submitter gave
-- an execution is stored with it, as the JSON object `{"traceparent": ..., "tracestate": ...}`
-- (NULL when none was given), and a claim that returns the execution's context returns it too,
-- in the row it already returns, so a worker's handler span can join the submitter's trace
-- without another round trip.

ALTER TABLE ff_execution ADD COLUMN trace_context jsonb;

-- What a claim returns per claimed execution gains the trace context (NULL unless the claim
-- asked for the context).
ALTER TYPE ff_claimed ADD ATTRIBUTE trace_context jsonb;

-- ff_claim returns each claimed execution's trace context with its kind, input and tags; its
-- body is otherwise unchanged. Its planner settings are restated here because replacing a
-- function replaces them.
CREATE OR REPLACE FUNCTION ff_claim(p_lane text, p_capabilities text[], p_worker_instance_ids text[], p_ttl_ms bigint,
                         p_worker_id text, p_execution_id uuid DEFAULT NULL, p_synchronous boolean DEFAULT true,
                         p_with_context boolean DEFAULT false, p_after_neg_priority integer DEFAULT NULL,
                         p_after_eligible_at_ms bigint DEFAULT NULL, p_after_seq bigint DEFAULT NULL,
                         p_after_generation bigint DEFAULT NULL, p_by_id text DEFAULT NULL)
    RETURNS SETOF ff_claimed
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan SET enable_sort = off SET enable_bitmapscan = off
    SET enable_seqscan = off SET jit = off
    AS $$
DECLARE
    v_generation bigint;
    v_floor integer;
    v_after_np integer := -2147483648;
    v_after_at bigint := -9223372036854775808;
    v_after_seq bigint := -9223372036854775808;
    v_from_head boolean := true;
    v_taken integer := 0;
    v_count integer;
BEGIN
    -- Start after the caller's position when nothing became claimable behind it since (same
    -- generation); else at the head of the lane. The start is a row comparison on the index
    -- key, so the scan begins there instead of walking what was already claimed.
    SELECT (SELECT coalesce(sum(g.generation), 0) FROM ff_lane_generation g WHERE g.lane_id = p_lane),
           l.claim_floor_priority
    INTO v_generation, v_floor FROM ff_lane l
    WHERE l.lane_id = p_lane;
    IF p_after_generation IS NOT NULL AND p_after_generation = v_generation THEN
        v_after_np := p_after_neg_priority;
        v_after_at := p_after_eligible_at_ms;
        v_after_seq := p_after_seq;
        v_from_head := false;
    END IF;
    -- Unless asked for a synchronous commit, a claim does not wait for its WAL flush: a claim
    -- lost in a database crash only means the execution is claimed again (ARCHITECTURE.md,
    -- "Durability").
    IF NOT p_synchronous THEN
        SET LOCAL synchronous_commit = off;
    END IF;
    -- At most two passes: after the position, then, if that filled fewer slots than asked, from
    -- the head of the lane for the rest, so a claim never misses work that lies behind it.
    LOOP
    RETURN QUERY
    WITH by_lane AS (
        SELECT x.execution_id AS id,
               CASE WHEN x.ownership_state <> 'unowned' THEN 'reclaimed'
                    WHEN x.attempt_state = 'attempt_interrupted' THEN 'resumed'
                    ELSE 'fresh' END AS kind,
               x.attempt_state = 'pending_replay_attempt' AS replay
        FROM ff_execution x
        WHERE ((x.lifecycle_phase = 'runnable' AND x.eligibility_state = 'eligible_now')
               OR x.ownership_state IN ('lease_expired_reclaimable', 'lease_revoked'))
          AND x.lane_id = p_lane
          AND ROW(-x.priority, x.eligible_at_ms, x.seq) > ROW(v_after_np, v_after_at, v_after_seq)
          AND x.required_capabilities <@ p_capabilities AND p_execution_id IS NULL
          AND (x.grant_expires_at_ms IS NULL OR x.grant_expires_at_ms <= ff_now_ms())
          AND (x.budget_ids IS NULL
               OR NOT EXISTS (SELECT 1 FROM ff_budget b WHERE b.budget_id = ANY (x.budget_ids) AND b.exhausted))
        ORDER BY -x.priority, x.eligible_at_ms, x.seq
        LIMIT cardinality(p_worker_instance_ids) - v_taken
        FOR UPDATE OF x SKIP LOCKED
    ),
    -- Runs only for a claim by id. Its predicates say "active and not leased" (which the state
    -- invariants make the same as a lost lease) rather than naming the lost-lease states, so
    -- that no partial index covers it and the primary key is the only way to it.
    by_id AS (
        SELECT x.execution_id AS id,
               CASE WHEN x.ownership_state <> 'unowned' THEN 'reclaimed'
                    WHEN x.attempt_state = 'attempt_interrupted' THEN 'resumed'
                    ELSE 'fresh' END AS kind,
               x.attempt_state = 'pending_replay_attempt' AS replay
        FROM ff_execution x
        WHERE p_execution_id IS NOT NULL AND x.execution_id = p_execution_id
          AND ((p_by_id = 'reclaim' AND x.lifecycle_phase = 'active' AND x.ownership_state <> 'leased')
            OR (p_by_id = 'resumed' AND x.lifecycle_phase = 'runnable' AND x.eligibility_state = 'eligible_now'
                AND x.attempt_state = 'attempt_interrupted')
            OR (p_by_id = 'granted'
                AND ((x.lifecycle_phase = 'runnable' AND x.eligibility_state = 'eligible_now')
                     OR (x.lifecycle_phase = 'active' AND x.ownership_state <> 'leased'))
                AND (x.budget_ids IS NULL
                     OR NOT EXISTS (SELECT 1 FROM ff_budget b WHERE b.budget_id = ANY (x.budget_ids) AND b.exhausted))))
        FOR UPDATE OF x
    ),
    cand AS (
        SELECT c.*, row_number() OVER () + v_taken AS slot
        FROM (SELECT * FROM by_lane UNION ALL SELECT * FROM by_id) c
    ),
    upd AS (
        UPDATE ff_execution e SET
            lifecycle_phase = 'active', ownership_state = 'leased', eligibility_state = 'not_applicable',
            blocking_reason = 'none', attempt_state = 'running_attempt', blocking_detail = NULL,
            current_attempt_index = CASE WHEN c.kind = 'resumed' THEN e.current_attempt_index
                                         ELSE e.total_attempt_count END,
            total_attempt_count = CASE WHEN c.kind = 'resumed' THEN e.total_attempt_count
                                       ELSE e.total_attempt_count + 1 END,
            lease_reclaim_count = e.lease_reclaim_count + (c.kind = 'reclaimed')::int,
            lease_id = gen_random_uuid(),
            lease_epoch = e.lease_epoch + 1,
            lease_expires_at_ms = ff_now_ms() + p_ttl_ms,
            lease_ttl_ms = p_ttl_ms,
            last_heartbeat_at_ms = ff_now_ms(),
            worker_id = p_worker_id,
            worker_instance_id = p_worker_instance_ids[c.slot],
            attempt_id = CASE WHEN c.kind = 'resumed' THEN e.attempt_id ELSE gen_random_uuid() END,
            attempt_deadline_at_ms = CASE WHEN c.kind = 'resumed' THEN e.attempt_deadline_at_ms
                                          ELSE ff_now_ms() + e.attempt_timeout_ms END,
            started_at_ms = coalesce(e.started_at_ms, ff_now_ms()),
            grant_expires_at_ms = NULL,
            last_mutation_at_ms = ff_now_ms()
        FROM cand c
        WHERE e.execution_id = c.id
        RETURNING c.slot, e.execution_id, e.partition_key, e.lane_id, e.current_attempt_index, e.attempt_id,
                  e.lease_id, e.lease_epoch, c.kind, c.replay, e.worker_instance_id,
                  CASE WHEN p_with_context THEN e.execution_kind END AS execution_kind,
                  CASE WHEN p_with_context THEN e.input_payload END AS input_payload,
                  CASE WHEN p_with_context THEN e.tags END AS tags,
                  CASE WHEN p_with_context THEN e.trace_context END AS trace_context,
                  -e.priority AS neg_priority, e.eligible_at_ms, e.seq, v_generation AS claim_generation,
                  ROW((CASE WHEN c.kind = 'reclaimed' THEN 'lease_reclaimed' ELSE 'lease_acquired' END)::ff_event_kind,
                      e.execution_id, e.partition_key, e.namespace, e.lane_id, e.current_attempt_index, e.lease_epoch,
                      e.worker_instance_id)::ff_event_row AS event
    ),
    attempt AS (
        INSERT INTO ff_attempt AS a (execution_id, attempt_index, attempt_id, attempt_type, state, lease_id,
                                     lease_epoch, worker_id, worker_instance_id, started_at_ms)
        SELECT u.execution_id, u.current_attempt_index, u.attempt_id,
               (CASE WHEN u.kind = 'reclaimed' THEN 'reclaim' WHEN u.replay THEN 'replay'
                     WHEN u.current_attempt_index = 0 THEN 'initial' ELSE 'retry' END)::ff_attempt_type,
               'started', u.lease_id, u.lease_epoch, p_worker_id, u.worker_instance_id, ff_now_ms()
        FROM upd u
        ON CONFLICT ON CONSTRAINT ff_attempt_pkey DO UPDATE SET
            state = 'started', lease_id = EXCLUDED.lease_id, lease_epoch = EXCLUDED.lease_epoch,
            worker_id = EXCLUDED.worker_id, worker_instance_id = EXCLUDED.worker_instance_id
    ),
    ev AS (
        SELECT ff_append_events(array_agg(u.event ORDER BY u.slot)) FROM upd u
    ),
    -- Creations at a priority above the lowest one claimed can land behind a claimer's position.
    floor AS (
        UPDATE ff_lane l SET claim_floor_priority = m.priority
        FROM (SELECT min(-u.neg_priority) AS priority FROM upd u) m
        WHERE l.lane_id = p_lane AND p_execution_id IS NULL AND m.priority < v_floor
          AND l.claim_floor_priority > m.priority
    )
    SELECT u.slot, u.execution_id, u.partition_key, u.lane_id, u.current_attempt_index, u.attempt_id, u.lease_id,
           u.lease_epoch, u.kind, u.worker_instance_id, u.execution_kind, u.input_payload, u.tags, u.neg_priority,
           u.eligible_at_ms, u.seq, u.claim_generation, u.trace_context
    FROM upd u CROSS JOIN ev;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    v_taken := v_taken + v_count;
    EXIT WHEN v_from_head OR p_execution_id IS NOT NULL OR v_taken >= cardinality(p_worker_instance_ids);
    v_from_head := true;
    v_after_np := -2147483648;
    v_after_at := -9223372036854775808;
    v_after_seq := -9223372036854775808;
    END LOOP;
END
$$;

UPDATE ff_schema SET version = 12;
