-- FlowFabric engine schema, version 5: a claim never walks work that cannot be claimed yet.
--
-- Delayed executions (a delay, a retry backoff, a delayed create) are out of the claim index
-- until they are due: the promoter makes them eligible at their time, woken by 'ff_timer'
-- notifications carrying the due time of every newly delayed execution and sleeping exactly
-- until the next one otherwise. Before, every claim walked past the delayed executions at the
-- head of its lane, so a lane holding many of them at a higher priority slowed every claim in
-- proportion. A retry or delay whose time has already passed is eligible at once.
-- ff_complete reports which lease completed each execution. Fenced writes can no longer be
-- planned through the lease-expiry index.

-- The lease-expiry index serves the reconcilers only. Its predicate names the lifecycle phase,
-- which fenced writes never state, so the planner cannot pick it for a fenced write (it would
-- read every lease taken within the last TTL, live or ended, instead of one row by key).
DROP INDEX ff_execution_lease_expiry_idx;
CREATE INDEX ff_execution_lease_expiry_idx ON ff_execution (lease_expires_at_ms)
    WHERE ownership_state = 'leased' AND lifecycle_phase = 'active';

DROP INDEX ff_execution_claim_idx;
-- The claim path: best (priority, eligible time, creation order) claimable execution of a lane.
-- Claimable: a runnable execution that is eligible now, or an active one whose lease was lost
-- and awaits a new attempt. ff_claim repeats this predicate verbatim.
CREATE INDEX ff_execution_claim_idx ON ff_execution (lane_id, priority DESC, eligible_at_ms, seq)
    WHERE ((lifecycle_phase = 'runnable' AND eligibility_state = 'eligible_now')
       OR ownership_state IN ('lease_expired_reclaimable', 'lease_revoked'));

CREATE OR REPLACE FUNCTION ff_claim(p_lane text, p_capabilities text[], p_worker_instance_ids text[], p_ttl_ms bigint,
                         p_worker_id text, p_execution_id uuid DEFAULT NULL, p_synchronous boolean DEFAULT true,
                         p_with_context boolean DEFAULT false)
    RETURNS SETOF ff_claimed
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan SET enable_sort = off SET enable_bitmapscan = off
    SET enable_seqscan = off
    AS $$
DECLARE
    v_claimed ff_claimed[];
BEGIN
    -- Unless asked for a synchronous commit, a claim does not wait for its WAL flush: a claim
    -- lost in a database crash only means the execution is claimed again (ARCHITECTURE.md,
    -- "Durability").
    IF NOT p_synchronous THEN
        SET LOCAL synchronous_commit = off;
    END IF;
    WITH by_lane AS (
        SELECT x.execution_id AS id,
               CASE WHEN x.ownership_state <> 'unowned' THEN 'reclaimed'
                    WHEN x.attempt_state = 'attempt_interrupted' THEN 'resumed'
                    ELSE 'fresh' END AS kind
        FROM ff_execution x
        WHERE ((x.lifecycle_phase = 'runnable' AND x.eligibility_state = 'eligible_now')
               OR x.ownership_state IN ('lease_expired_reclaimable', 'lease_revoked'))
          AND x.lane_id = p_lane
          AND x.required_capabilities <@ p_capabilities AND p_execution_id IS NULL
        ORDER BY x.priority DESC, x.eligible_at_ms, x.seq
        LIMIT cardinality(p_worker_instance_ids)
        FOR UPDATE OF x SKIP LOCKED
    ),
    by_id AS (
        SELECT x.execution_id AS id, 'reclaimed' AS kind
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
        RETURNING c.slot, e.execution_id, e.partition_key, e.lane_id, e.current_attempt_index, e.attempt_id,
                  e.lease_id, e.lease_epoch, c.kind, e.worker_instance_id,
                  CASE WHEN p_with_context THEN e.execution_kind END AS execution_kind,
                  CASE WHEN p_with_context THEN e.input_payload END AS input_payload,
                  CASE WHEN p_with_context THEN e.tags END AS tags
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
    )
    SELECT array_agg(u::ff_claimed ORDER BY u.slot) INTO v_claimed FROM upd u;
    IF v_claimed IS NULL THEN
        RETURN;
    END IF;
    PERFORM ff_log_events(
        ARRAY(SELECT (CASE WHEN c.kind = 'reclaimed' THEN 'lease_reclaimed' ELSE 'lease_acquired' END)::ff_event_kind
              FROM unnest(v_claimed) c),
        ARRAY(SELECT c.execution_id FROM unnest(v_claimed) c));
    RETURN QUERY SELECT * FROM unnest(v_claimed);
END
$$;

CREATE OR REPLACE FUNCTION ff_end_attempt(p_ending ff_attempt_ending, p_id uuid, p_lease_id uuid, p_epoch bigint,
                               p_attempt integer, p_class text, p_message text, p_detail text, p_ms bigint)
    RETURNS TABLE (eligible_at_ms bigint, total_attempt_count integer)
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
    AS $$
DECLARE
    v_terminal boolean := p_ending IN ('fail', 'cancel');
    -- A retry or delay whose time has already come is eligible at once (a delay then an
    -- immediate promotion); a later one waits for the promoter, which is told when.
    v_due_at bigint := CASE p_ending WHEN 'retry' THEN ff_now_ms() + p_ms WHEN 'delay' THEN p_ms END;
    v_waits boolean := v_due_at > ff_now_ms();
    v_lane text;
    v_eligible bigint;
    v_total integer;
BEGIN
    WITH upd AS (
        UPDATE ff_execution e SET
            lifecycle_phase = CASE WHEN v_terminal THEN 'terminal' ELSE 'runnable' END::ff_lifecycle_phase,
            ownership_state = 'unowned',
            eligibility_state = CASE WHEN v_terminal THEN 'not_applicable'
                                     WHEN v_waits THEN 'not_eligible_until_time'
                                     ELSE 'eligible_now' END::ff_eligibility_state,
            blocking_reason = CASE WHEN v_terminal THEN 'none'
                                   WHEN NOT v_waits THEN 'waiting_for_worker'
                                   WHEN p_ending = 'retry' THEN 'waiting_for_retry_backoff'
                                   ELSE 'waiting_for_delay' END::ff_blocking_reason,
            terminal_outcome = CASE p_ending WHEN 'fail' THEN 'failed' WHEN 'cancel' THEN 'cancelled'
                                             ELSE 'none' END::ff_terminal_outcome,
            attempt_state = CASE p_ending WHEN 'retry' THEN 'pending_retry_attempt'
                                          WHEN 'delay' THEN 'attempt_interrupted'
                                          ELSE 'attempt_terminal' END::ff_attempt_state,
            retry_count = e.retry_count + (p_ending = 'retry')::int,
            eligible_at_ms = coalesce(v_due_at, e.eligible_at_ms),
            blocking_detail = CASE WHEN p_ending = 'delay' THEN NULL ELSE p_message END,
            completed_at_ms = CASE WHEN v_terminal THEN ff_now_ms() END,
            lease_expires_at_ms = NULL, attempt_deadline_at_ms = NULL, last_mutation_at_ms = ff_now_ms()
        WHERE e.execution_id = p_id AND e.lease_id = p_lease_id AND e.lease_epoch = p_epoch
          AND e.current_attempt_index = p_attempt AND e.ownership_state = 'leased'
          AND e.lease_expires_at_ms > ff_now_ms()
        RETURNING e.execution_id, e.lane_id, e.current_attempt_index, e.eligible_at_ms, e.total_attempt_count
    ),
    att AS (
        UPDATE ff_attempt a SET
            state = CASE p_ending WHEN 'cancel' THEN 'ended_cancelled' WHEN 'delay' THEN 'suspended'
                                  ELSE 'ended_failure' END::ff_attempt_lifecycle,
            ended_at_ms = CASE WHEN p_ending = 'delay' THEN NULL ELSE ff_now_ms() END,
            failure_class = p_class, failure_message = p_message, failure_detail = p_detail
        FROM upd WHERE a.execution_id = upd.execution_id AND a.attempt_index = upd.current_attempt_index
    )
    SELECT u.lane_id, u.eligible_at_ms, u.total_attempt_count INTO v_lane, v_eligible, v_total FROM upd u;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF v_waits THEN
        PERFORM pg_notify('ff_timer', v_due_at::text);
    ELSIF NOT v_terminal THEN
        PERFORM pg_notify('ff_lane_ready', v_lane);
    END IF;
    PERFORM ff_log_events(
        ARRAY[(CASE p_ending WHEN 'fail' THEN 'failed' WHEN 'retry' THEN 'retry_scheduled'
                             WHEN 'cancel' THEN 'cancelled' ELSE 'lease_released' END)::ff_event_kind],
        ARRAY[p_id]);
    eligible_at_ms := v_eligible;
    total_attempt_count := v_total;
    RETURN NEXT;
END
$$;

DROP FUNCTION ff_complete(uuid[], uuid[], bigint[], integer[], bytea[]);

-- Completes every item whose lease fence holds; returns each completed execution with the
-- lease that completed it, so a batch holding a stale and a live handle of one execution
-- credits the live one. One statement for the whole batch, then one for its events.
CREATE FUNCTION ff_complete(p_ids uuid[], p_lease_ids uuid[], p_epochs bigint[], p_attempts integer[],
                            p_results bytea[])
    RETURNS TABLE (execution_id uuid, lease_id uuid)
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
    AS $$
DECLARE
    v_done uuid[];
    v_leases uuid[];
BEGIN
    WITH input AS (
        SELECT * FROM unnest(p_ids, p_lease_ids, p_epochs, p_attempts, p_results)
            AS i(id, lease_id, lease_epoch, attempt_index, result)
    ),
    upd AS (
        UPDATE ff_execution e SET
            lifecycle_phase = 'terminal', ownership_state = 'unowned', eligibility_state = 'not_applicable',
            blocking_reason = 'none', terminal_outcome = 'success', attempt_state = 'attempt_terminal',
            blocking_detail = NULL, result = i.result, lease_expires_at_ms = NULL, attempt_deadline_at_ms = NULL,
            completed_at_ms = ff_now_ms(), last_mutation_at_ms = ff_now_ms()
        FROM input i
        WHERE e.execution_id = i.id AND e.lease_id = i.lease_id AND e.lease_epoch = i.lease_epoch
          AND e.current_attempt_index = i.attempt_index AND e.ownership_state = 'leased'
          AND e.lease_expires_at_ms > ff_now_ms()
        RETURNING e.execution_id, e.lease_id, e.current_attempt_index
    ),
    att AS (
        UPDATE ff_attempt a SET state = 'ended_success', ended_at_ms = ff_now_ms()
        FROM upd u WHERE a.execution_id = u.execution_id AND a.attempt_index = u.current_attempt_index
    )
    SELECT array_agg(u.execution_id), array_agg(u.lease_id) INTO v_done, v_leases FROM upd u;
    IF v_done IS NULL THEN
        RETURN;
    END IF;
    PERFORM ff_log_events(array_fill('completed'::ff_event_kind, ARRAY[cardinality(v_done)]), v_done);
    RETURN QUERY SELECT * FROM unnest(v_done, v_leases);
END
$$;

DROP FUNCTION ff_promote_delayed(integer, uuid, smallint, text);

-- Makes delayed executions whose time has come claimable: up to p_limit of them, or only
-- execution p_id (in partition p_partition, on lane p_lane) when given, and wakes claims
-- long-polling their lanes. Returns how many were promoted, when the next delayed execution is
-- due (NULL when none is) and the database time, so the promoter can sleep exactly that long.
CREATE FUNCTION ff_promote_delayed(p_limit integer, p_id uuid DEFAULT NULL, p_partition smallint DEFAULT NULL,
                                   p_lane text DEFAULT NULL)
    RETURNS TABLE (promoted bigint, next_due_at_ms bigint, now_ms bigint)
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
    AS $$
DECLARE
    v_lanes text[];
    v_count bigint;
BEGIN
    WITH due AS (
        SELECT x.execution_id FROM ff_execution x
        WHERE x.eligibility_state = 'not_eligible_until_time' AND x.eligible_at_ms <= ff_now_ms() AND p_id IS NULL
        ORDER BY x.eligible_at_ms LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ),
    one AS (
        SELECT x.execution_id FROM ff_execution x
        WHERE x.execution_id = p_id AND x.partition_key = p_partition AND x.lane_id = p_lane
          AND x.eligibility_state = 'not_eligible_until_time' AND x.eligible_at_ms <= ff_now_ms()
        FOR UPDATE
    ),
    upd AS (
        UPDATE ff_execution e SET eligibility_state = 'eligible_now', blocking_reason = 'waiting_for_worker',
               last_mutation_at_ms = ff_now_ms()
        FROM (SELECT * FROM due UNION ALL SELECT * FROM one) d
        WHERE e.execution_id = d.execution_id
        RETURNING e.lane_id
    )
    SELECT count(*), array_agg(DISTINCT u.lane_id) INTO v_count, v_lanes FROM upd u;
    PERFORM pg_notify('ff_lane_ready', l) FROM unnest(v_lanes) l;
    promoted := v_count;
    now_ms := ff_now_ms();
    SELECT min(x.eligible_at_ms) INTO next_due_at_ms FROM ff_execution x
    WHERE x.eligibility_state = 'not_eligible_until_time';
    RETURN NEXT;
END
$$;

UPDATE ff_schema SET version = 5;
