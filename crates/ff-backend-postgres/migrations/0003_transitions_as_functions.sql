-- FlowFabric engine schema, version 3: every state transition is one function, every event is
-- appended by one function, and no claim walks work that cannot be claimed yet.
--
-- Each transition's SQL exists in exactly one place, here: claims (ff_claim), completions
-- (ff_complete), the other ends of an attempt (ff_end_attempt), losing a lease to expiry or
-- revocation (ff_lose_leases), attempt timeouts and deadlines (ff_expire_executions) and the
-- promotion of delayed work (ff_promote_delayed). Each writes the execution and attempt rows in
-- one statement and appends its events through ff_append_events, the one INSERT into ff_event
-- (the claim and the completion from inside that statement; the others through ff_log_events,
-- which reads what the event records from the execution row as the statement left it).
--
-- Delayed executions (a delay, a retry backoff, a delayed create) are outside the claim index
-- until they are due: the promoter makes them eligible at their time, woken by 'ff_timer'
-- notifications carrying the due time of newly delayed work and sleeping exactly until the next
-- one otherwise, so a lane holding many delayed executions at a higher priority no longer slows
-- every claim. A retry or delay whose time has already passed is eligible at once. A lost
-- lease keeps the execution's eligible time, so it keeps its place in line.

-- The lease-expiry index serves the reconcilers only. Its predicate names the lifecycle phase,
-- which fenced writes never state, so the planner cannot pick it for a fenced write (it would
-- read every lease taken within the last TTL, live or ended, instead of one row by key).
DROP INDEX ff_execution_lease_expiry_idx;
CREATE INDEX ff_execution_lease_expiry_idx ON ff_execution (lease_expires_at_ms)
    WHERE ownership_state = 'leased' AND lifecycle_phase = 'active';

DROP INDEX ff_execution_claim_idx;
-- The claim path: best (priority, eligible time, creation order) claimable execution of a lane.
-- Claimable: a runnable execution that is eligible now, or an active one whose lease was lost
-- and awaits a new attempt. ff_claim repeats this predicate verbatim. The key is
-- (-priority, eligible time, creation order), all ascending, so a claim can start its scan just
-- after a position with one row comparison (see ff_claim's p_after_*).
CREATE INDEX ff_execution_claim_idx ON ff_execution (lane_id, (-priority), eligible_at_ms, seq)
    WHERE ((lifecycle_phase = 'runnable' AND eligibility_state = 'eligible_now')
       OR ownership_state IN ('lease_expired_reclaimable', 'lease_revoked'));

-- Where claims may start in a lane. A claimer that remembers the claim key up to which it has
-- claimed a lane can start its next scan after it, instead of walking the index entries of the
-- executions it claimed (they stay until vacuum removes them, and much longer while another
-- session holds an old snapshot). That is safe while no work became claimable behind that key:
-- every transition that can put work there bumps claim_generation in its transaction (a lost
-- lease, which keeps its place in line; promoted delayed work; an immediate retry or delay;
-- unparked work; a creation at a higher priority than claim_floor_priority, the lowest
-- priority any claimer has reached). A claim whose remembered generation differs scans from
-- the head of the lane.
ALTER TABLE ff_lane ADD COLUMN claim_generation bigint NOT NULL DEFAULT 0,
                    ADD COLUMN claim_floor_priority integer NOT NULL DEFAULT 2147483647;

-- Work became claimable on lanes p_lanes, possibly behind claimers' positions (see above).
CREATE FUNCTION ff_bump_claim_generation(p_lanes text[]) RETURNS void
    LANGUAGE sql
    AS $$ UPDATE ff_lane SET claim_generation = claim_generation + 1 WHERE lane_id = ANY(p_lanes) $$;

-- One event: what ff_event records of the execution a transition changed.
CREATE TYPE ff_event_row AS (kind ff_event_kind, execution_id uuid, partition_key smallint, namespace text,
    lane_id text, attempt_index integer, lease_epoch bigint, worker_instance_id text);

-- Appends events, in order. The one INSERT into ff_event. The claim and the completion build
-- their rows inside their writing statement and call it from there (no second statement on the
-- hot path); other transitions call ff_log_events.
CREATE FUNCTION ff_append_events(p_events ff_event_row[]) RETURNS void
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan
    AS $$
BEGIN
    INSERT INTO ff_event (kind, execution_id, partition_key, namespace, lane_id, attempt_index, lease_epoch,
                          worker_instance_id)
    SELECT * FROM unnest(p_events);
END
$$;

-- Appends one event per (kind, execution) pair, in input order, recording the execution as the
-- calling transition left it (its current attempt, lease epoch and worker instance).
CREATE FUNCTION ff_log_events(p_kinds ff_event_kind[], p_ids uuid[]) RETURNS void
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
    AS $$
BEGIN
    PERFORM ff_append_events(ARRAY(
        SELECT ROW(t.kind, e.execution_id, e.partition_key, e.namespace, e.lane_id, e.current_attempt_index,
                   e.lease_epoch, e.worker_instance_id)::ff_event_row
        FROM unnest(p_kinds, p_ids) WITH ORDINALITY AS t(kind, id, ord)
        JOIN ff_execution e ON e.execution_id = t.id
        ORDER BY t.ord));
END
$$;

-- What a claim returns per claimed execution.
CREATE TYPE ff_claimed AS (slot bigint, execution_id uuid, partition_key smallint, lane_id text,
    attempt_index integer, attempt_id uuid, lease_id uuid, lease_epoch bigint, kind text, worker_instance_id text,
    execution_kind text, input_payload bytea, tags jsonb, neg_priority integer, eligible_at_ms bigint, seq bigint,
    claim_generation bigint);

DROP FUNCTION ff_claim(text, text[], text[], bigint, text, uuid, boolean, boolean);

-- Claims up to one execution per entry of p_worker_instance_ids (slot n goes to the n-th worker
-- instance) on lane p_lane, among those whose required capabilities are a subset of
-- p_capabilities: highest priority first, then earliest eligible, then creation order; or, when
-- p_execution_id is given, reclaims that one execution if its lease was lost. One statement
-- writes each lease and opens the attempt (a new one, or the interrupted one again when
-- resuming); then the lease events are logged. (The attempt a reclaim supersedes was closed when
-- its lease expired.) p_synchronous = false lets the claim commit without waiting for its WAL
-- flush. p_with_context = true also returns each claimed execution's kind, input and tags, so a
-- worker needs no second round trip before it can run the handler (NULLs otherwise).
-- The claimable predicate must keep matching ff_execution_claim_idx's.
CREATE FUNCTION ff_claim(p_lane text, p_capabilities text[], p_worker_instance_ids text[], p_ttl_ms bigint,
                         p_worker_id text, p_execution_id uuid DEFAULT NULL, p_synchronous boolean DEFAULT true,
                         p_with_context boolean DEFAULT false, p_after_neg_priority integer DEFAULT NULL,
                         p_after_eligible_at_ms bigint DEFAULT NULL, p_after_seq bigint DEFAULT NULL,
                         p_after_generation bigint DEFAULT NULL)
    RETURNS SETOF ff_claimed
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan SET enable_sort = off SET enable_bitmapscan = off
    SET enable_seqscan = off
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
    SELECT l.claim_generation, l.claim_floor_priority INTO v_generation, v_floor FROM ff_lane l
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
                    ELSE 'fresh' END AS kind
        FROM ff_execution x
        WHERE ((x.lifecycle_phase = 'runnable' AND x.eligibility_state = 'eligible_now')
               OR x.ownership_state IN ('lease_expired_reclaimable', 'lease_revoked'))
          AND x.lane_id = p_lane
          AND ROW(-x.priority, x.eligible_at_ms, x.seq) > ROW(v_after_np, v_after_at, v_after_seq)
          AND x.required_capabilities <@ p_capabilities AND p_execution_id IS NULL
        ORDER BY -x.priority, x.eligible_at_ms, x.seq
        LIMIT cardinality(p_worker_instance_ids) - v_taken
        FOR UPDATE OF x SKIP LOCKED
    ),
    by_id AS (
        SELECT x.execution_id AS id, 'reclaimed' AS kind
        FROM ff_execution x
        WHERE x.execution_id = p_execution_id AND x.ownership_state IN ('lease_expired_reclaimable', 'lease_revoked')
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
            last_mutation_at_ms = ff_now_ms()
        FROM cand c
        WHERE e.execution_id = c.id
        RETURNING c.slot, e.execution_id, e.partition_key, e.lane_id, e.current_attempt_index, e.attempt_id,
                  e.lease_id, e.lease_epoch, c.kind, e.worker_instance_id,
                  CASE WHEN p_with_context THEN e.execution_kind END AS execution_kind,
                  CASE WHEN p_with_context THEN e.input_payload END AS input_payload,
                  CASE WHEN p_with_context THEN e.tags END AS tags,
                  -e.priority AS neg_priority, e.eligible_at_ms, e.seq, v_generation AS claim_generation,
                  ROW((CASE WHEN c.kind = 'reclaimed' THEN 'lease_reclaimed' ELSE 'lease_acquired' END)::ff_event_kind,
                      e.execution_id, e.partition_key, e.namespace, e.lane_id, e.current_attempt_index, e.lease_epoch,
                      e.worker_instance_id)::ff_event_row AS event
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
           u.eligible_at_ms, u.seq, u.claim_generation
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

DROP FUNCTION ff_complete(uuid[], uuid[], bigint[], integer[], bytea[]);

-- Completes every item whose lease fence holds; returns each completed execution with the
-- lease that completed it, so a batch holding a stale and a live handle of one execution
-- credits the live one. One statement for the whole batch, its events included.
CREATE FUNCTION ff_complete(p_ids uuid[], p_lease_ids uuid[], p_epochs bigint[], p_attempts integer[],
                            p_results bytea[])
    RETURNS TABLE (execution_id uuid, lease_id uuid)
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
    AS $$
BEGIN
    RETURN QUERY
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
        RETURNING e.execution_id, e.lease_id, e.current_attempt_index,
                  ROW('completed', e.execution_id, e.partition_key, e.namespace, e.lane_id, e.current_attempt_index,
                      e.lease_epoch, e.worker_instance_id)::ff_event_row AS event
    ),
    att AS (
        UPDATE ff_attempt a SET state = 'ended_success', ended_at_ms = ff_now_ms()
        FROM upd u WHERE a.execution_id = u.execution_id AND a.attempt_index = u.current_attempt_index
    ),
    ev AS (
        SELECT ff_append_events(array_agg(u.event)) FROM upd u
    )
    SELECT u.execution_id, u.lease_id FROM upd u CROSS JOIN ev;
END
$$;

-- How a lease holder ends or parks its attempt, other than by completing it.
CREATE TYPE ff_attempt_ending AS ENUM ('fail', 'retry', 'cancel', 'delay');

-- Ends or parks the fenced attempt of one execution:
--   fail    terminal failed;                       the attempt ended_failure
--   retry   runnable after p_ms of backoff;        the attempt ended_failure, retry_count + 1
--   cancel  terminal cancelled;                    the attempt ended_cancelled
--   delay   runnable at time p_ms, same attempt;   the attempt suspended (resumed by the next claim)
-- p_class, p_message and p_detail describe a failure (p_message is also the cancel reason).
-- Returns the execution's eligible time and attempt count; no row when the fence failed.
CREATE FUNCTION ff_end_attempt(p_ending ff_attempt_ending, p_id uuid, p_lease_id uuid, p_epoch bigint,
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
        PERFORM ff_bump_claim_generation(ARRAY[v_lane]);
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

-- Revocation is logged like expiry.
ALTER TYPE ff_event_kind ADD VALUE 'lease_revoked' AFTER 'lease_expired';

-- Takes the leases of executions p_ids away from their holders, if they are still leased: each
-- execution stays active and becomes reclaimable with ownership p_ownership
-- ('lease_expired_reclaimable' or 'lease_revoked') and p_reason as its blocking detail, or fails
-- when its reclaim cap is reached. It keeps its eligible time, so it keeps its place in line
-- ahead of work that arrived after it. The attempt closes as interrupted_reclaimed (or
-- ended_failure at the cap); claims long-polling the lanes with newly reclaimable work are
-- woken on commit. Returns each execution that lost its lease and whether it hit the cap.
CREATE FUNCTION ff_lose_leases(p_ids uuid[], p_ownership ff_ownership_state, p_reason text)
    RETURNS TABLE (execution_id uuid, capped boolean)
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
    AS $$
DECLARE
    v_ids uuid[];
    v_capped boolean[];
    v_lanes text[];
BEGIN
    WITH upd AS (
        UPDATE ff_execution e SET
            lifecycle_phase = CASE WHEN c.capped THEN 'terminal' ELSE e.lifecycle_phase END,
            ownership_state = CASE WHEN c.capped THEN 'unowned' ELSE p_ownership END,
            eligibility_state = 'not_applicable',
            terminal_outcome = CASE WHEN c.capped THEN 'failed' ELSE e.terminal_outcome END,
            attempt_state = CASE WHEN c.capped THEN 'attempt_terminal' ELSE e.attempt_state END,
            completed_at_ms = CASE WHEN c.capped THEN ff_now_ms() END,
            blocking_detail = CASE WHEN c.capped THEN 'max_reclaims_exceeded' ELSE p_reason END,
            lease_expires_at_ms = CASE WHEN c.capped THEN NULL ELSE e.lease_expires_at_ms END,
            attempt_deadline_at_ms = CASE WHEN c.capped THEN NULL ELSE e.attempt_deadline_at_ms END,
            last_mutation_at_ms = ff_now_ms()
        FROM (SELECT x.execution_id, x.lease_reclaim_count >= x.max_reclaim_count AS capped
              FROM ff_execution x WHERE x.execution_id = ANY(p_ids)) c
        WHERE e.execution_id = c.execution_id AND e.ownership_state = 'leased'
        RETURNING e.execution_id, e.lane_id, e.current_attempt_index, c.capped
    ),
    att AS (
        UPDATE ff_attempt a SET
            state = (CASE WHEN upd.capped THEN 'ended_failure' ELSE 'interrupted_reclaimed' END)::ff_attempt_lifecycle,
            ended_at_ms = ff_now_ms(),
            failure_message = CASE WHEN upd.capped THEN 'max_reclaims_exceeded' ELSE p_reason END
        FROM upd WHERE a.execution_id = upd.execution_id AND a.attempt_index = upd.current_attempt_index
    )
    SELECT array_agg(u.execution_id), array_agg(u.capped), array_agg(DISTINCT u.lane_id) FILTER (WHERE NOT u.capped)
    INTO v_ids, v_capped, v_lanes
    FROM upd u;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;
    PERFORM ff_log_events(
        ARRAY(SELECT (CASE WHEN c THEN 'failed'
                           WHEN p_ownership = 'lease_revoked' THEN 'lease_revoked'
                           ELSE 'lease_expired' END)::ff_event_kind
              FROM unnest(v_capped) c),
        v_ids);
    PERFORM ff_bump_claim_generation(v_lanes);
    PERFORM pg_notify('ff_lane_ready', l) FROM unnest(v_lanes) l;
    RETURN QUERY SELECT * FROM unnest(v_ids, v_capped);
END
$$;

-- Marks due leases expired (see ff_lose_leases): up to p_limit of them, oldest first, or only
-- execution p_id (in partition p_partition) when given.
CREATE FUNCTION ff_expire_leases(p_limit integer, p_id uuid DEFAULT NULL, p_partition smallint DEFAULT NULL)
    RETURNS TABLE (execution_id uuid, capped boolean)
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
    AS $$
DECLARE
    v_due uuid[];
BEGIN
    IF p_id IS NULL THEN
        SELECT array_agg(d.execution_id) INTO v_due FROM (
            SELECT x.execution_id FROM ff_execution x
            WHERE x.ownership_state = 'leased' AND x.lifecycle_phase = 'active' AND x.lease_expires_at_ms <= ff_now_ms()
            ORDER BY x.lease_expires_at_ms LIMIT p_limit
            FOR UPDATE SKIP LOCKED
        ) d;
    ELSE
        SELECT array_agg(x.execution_id) INTO v_due FROM (
            SELECT y.execution_id FROM ff_execution y
            WHERE y.execution_id = p_id AND y.partition_key = p_partition AND y.ownership_state = 'leased'
              AND y.lease_expires_at_ms <= ff_now_ms()
            FOR UPDATE
        ) x;
    END IF;
    IF v_due IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM ff_lose_leases(v_due, 'lease_expired_reclaimable', 'lease expired');
END
$$;

-- Expires executions past their execution deadline, or whose running attempt exceeded its
-- attempt timeout: terminal expired, attempt closed as ended_expired. Up to p_limit of each
-- kind; or only execution p_id (in partition p_partition) for the timer p_phase
-- ('execution_deadline' or 'attempt_timeout') when given. Returns how many expired.
CREATE FUNCTION ff_expire_executions(p_limit integer, p_id uuid DEFAULT NULL, p_partition smallint DEFAULT NULL,
                                     p_phase text DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
    AS $$
DECLARE
    v_ids uuid[];
BEGIN
    WITH deadline AS (
        SELECT x.execution_id FROM ff_execution x
        WHERE x.deadline_at_ms <= ff_now_ms() AND x.deadline_at_ms IS NOT NULL AND x.lifecycle_phase <> 'terminal'
          AND p_id IS NULL
        ORDER BY x.deadline_at_ms LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ),
    attempt AS (
        SELECT x.execution_id FROM ff_execution x
        WHERE x.attempt_deadline_at_ms <= ff_now_ms() AND x.attempt_deadline_at_ms IS NOT NULL
          AND x.lifecycle_phase = 'active' AND p_id IS NULL
        ORDER BY x.attempt_deadline_at_ms LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ),
    one AS (
        SELECT x.execution_id, p_phase AS why FROM ff_execution x
        WHERE x.execution_id = p_id AND x.partition_key = p_partition
          AND ((p_phase = 'execution_deadline' AND x.deadline_at_ms <= ff_now_ms() AND x.lifecycle_phase <> 'terminal')
            OR (p_phase = 'attempt_timeout' AND x.attempt_deadline_at_ms <= ff_now_ms()
                AND x.lifecycle_phase = 'active'))
        FOR UPDATE
    ),
    due AS (
        SELECT execution_id, 'execution_deadline' AS why FROM deadline
        UNION ALL
        SELECT execution_id, 'attempt_timeout' AS why FROM attempt
        WHERE execution_id NOT IN (SELECT execution_id FROM deadline)
        UNION ALL
        SELECT execution_id, why FROM one
    ),
    upd AS (
        UPDATE ff_execution e SET
            lifecycle_phase = 'terminal', ownership_state = 'unowned', eligibility_state = 'not_applicable',
            blocking_reason = 'none', terminal_outcome = 'expired', attempt_state = 'attempt_terminal',
            blocking_detail = d.why, lease_expires_at_ms = NULL, attempt_deadline_at_ms = NULL,
            completed_at_ms = ff_now_ms(), last_mutation_at_ms = ff_now_ms()
        FROM due d
        WHERE e.execution_id = d.execution_id
        RETURNING e.execution_id, e.current_attempt_index, d.why
    ),
    att AS (
        UPDATE ff_attempt a SET state = 'ended_expired', ended_at_ms = ff_now_ms(), failure_message = upd.why
        FROM upd WHERE a.execution_id = upd.execution_id AND a.attempt_index = upd.current_attempt_index
          AND a.ended_at_ms IS NULL
    )
    SELECT array_agg(u.execution_id) INTO v_ids FROM upd u;
    IF v_ids IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM ff_log_events(array_fill('expired'::ff_event_kind, ARRAY[cardinality(v_ids)]), v_ids);
    RETURN cardinality(v_ids);
END
$$;

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
    PERFORM ff_bump_claim_generation(v_lanes);
    PERFORM pg_notify('ff_lane_ready', l) FROM unnest(v_lanes) l;
    promoted := v_count;
    now_ms := ff_now_ms();
    SELECT min(x.eligible_at_ms) INTO next_due_at_ms FROM ff_execution x
    WHERE x.eligibility_state = 'not_eligible_until_time';
    RETURN NEXT;
END
$$;

UPDATE ff_schema SET version = 3;
