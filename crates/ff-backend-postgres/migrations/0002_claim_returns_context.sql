-- FlowFabric engine schema, version 2: claims can return the claimed executions' context.
--
-- ff_claim gains p_with_context and three result columns; the rest of its body (including the
-- claimable predicate, which must keep matching ff_execution_claim_idx's) is unchanged.

DROP FUNCTION ff_claim(text, text[], text[], bigint, text, uuid, boolean);

-- Claims up to one execution per entry of p_worker_instance_ids (slot n goes to the n-th worker
-- instance) on lane p_lane, among those whose required capabilities are a subset of
-- p_capabilities: highest priority first, then earliest eligible, then creation order; or, when
-- p_execution_id is given, reclaims that one execution if its lease was lost. One statement
-- writes each lease, opens the attempt (a new one, or the interrupted one again when resuming)
-- and logs the lease event. (The attempt a reclaim supersedes was closed when its lease expired.)
-- p_synchronous = false lets the claim commit without waiting for its WAL flush.
-- p_with_context = true also returns each claimed execution's kind, input and tags, so a worker
-- needs no second round trip before it can run the handler (NULLs otherwise).
CREATE FUNCTION ff_claim(p_lane text, p_capabilities text[], p_worker_instance_ids text[], p_ttl_ms bigint,
                         p_worker_id text, p_execution_id uuid DEFAULT NULL, p_synchronous boolean DEFAULT true,
                         p_with_context boolean DEFAULT false)
    RETURNS TABLE (slot bigint, execution_id uuid, partition_key smallint, lane_id text, attempt_index integer,
                   attempt_id uuid, lease_id uuid, lease_epoch bigint, kind text, worker_instance_id text,
                   execution_kind text, input_payload bytea, tags jsonb)
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan SET enable_sort = off SET enable_bitmapscan = off
    SET enable_seqscan = off
    AS $$
BEGIN
    -- Unless asked for a synchronous commit, a claim does not wait for its WAL flush: a claim
    -- lost in a database crash only means the execution is claimed again (ARCHITECTURE.md,
    -- "Durability").
    IF NOT p_synchronous THEN
        SET LOCAL synchronous_commit = off;
    END IF;
    RETURN QUERY
    WITH by_lane AS (
        SELECT x.execution_id AS id, x.current_attempt_index AS prev_index,
               CASE WHEN x.ownership_state <> 'unowned' THEN 'reclaimed'
                    WHEN x.attempt_state = 'attempt_interrupted' THEN 'resumed'
                    ELSE 'fresh' END AS kind
        FROM ff_execution x
        WHERE ((x.lifecycle_phase = 'runnable' AND x.eligibility_state IN ('eligible_now', 'not_eligible_until_time'))
               OR x.ownership_state IN ('lease_expired_reclaimable', 'lease_revoked'))
          AND x.lane_id = p_lane AND x.eligible_at_ms <= ff_now_ms()
          AND x.required_capabilities <@ p_capabilities AND p_execution_id IS NULL
        ORDER BY x.priority DESC, x.eligible_at_ms, x.seq
        LIMIT cardinality(p_worker_instance_ids)
        FOR UPDATE OF x SKIP LOCKED
    ),
    by_id AS (
        SELECT x.execution_id AS id, x.current_attempt_index AS prev_index, 'reclaimed' AS kind
        FROM ff_execution x
        WHERE x.execution_id = p_execution_id AND x.ownership_state IN ('lease_expired_reclaimable', 'lease_revoked')
        FOR UPDATE OF x
    ),
    cand AS (
        SELECT c.*, row_number() OVER () AS slot
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
            last_mutation_at_ms = ff_now_ms()
        FROM cand c
        WHERE e.execution_id = c.id
        RETURNING c.slot, e.execution_id, e.partition_key, e.namespace, e.lane_id, e.current_attempt_index,
                  e.attempt_id, e.lease_id, e.lease_epoch, c.kind, e.worker_instance_id, e.execution_kind,
                  e.input_payload, e.tags
    ),
    attempt AS (
        INSERT INTO ff_attempt AS a (execution_id, attempt_index, attempt_id, attempt_type, state, lease_id,
                                     lease_epoch, worker_id, worker_instance_id, started_at_ms)
        SELECT u.execution_id, u.current_attempt_index, u.attempt_id,
               (CASE WHEN u.kind = 'reclaimed' THEN 'reclaim' WHEN u.current_attempt_index = 0 THEN 'initial'
                     ELSE 'retry' END)::ff_attempt_type,
               'started', u.lease_id, u.lease_epoch, p_worker_id, u.worker_instance_id, ff_now_ms()
        FROM upd u
        ON CONFLICT ON CONSTRAINT ff_attempt_pkey DO UPDATE SET
            state = 'started', lease_id = EXCLUDED.lease_id, lease_epoch = EXCLUDED.lease_epoch,
            worker_id = EXCLUDED.worker_id, worker_instance_id = EXCLUDED.worker_instance_id
    ),
    ev AS (
        INSERT INTO ff_event (kind, execution_id, partition_key, namespace, lane_id, attempt_index, lease_epoch,
                              worker_instance_id)
        SELECT (CASE WHEN u.kind = 'reclaimed' THEN 'lease_reclaimed' ELSE 'lease_acquired' END)::ff_event_kind,
               u.execution_id, u.partition_key, u.namespace, u.lane_id, u.current_attempt_index, u.lease_epoch,
               u.worker_instance_id
        FROM upd u
    )
    SELECT u.slot, u.execution_id, u.partition_key, u.lane_id, u.current_attempt_index, u.attempt_id, u.lease_id,
           u.lease_epoch, u.kind, u.worker_instance_id,
           CASE WHEN p_with_context THEN u.execution_kind END,
           CASE WHEN p_with_context THEN u.input_payload END,
           CASE WHEN p_with_context THEN u.tags END
    FROM upd u;
END
$$;

UPDATE ff_schema SET version = 2;
