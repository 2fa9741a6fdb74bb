-- FlowFabric engine schema, version 5: operator controls.
--
-- An operator acts on executions without holding their lease: cancels one in any non-terminal
-- state, revokes a lease, changes a priority, replays a terminal execution. Each control is one
-- function that locks the execution row, checks what the operator expected against it, writes
-- the transition and logs its event in the same transaction, or writes nothing and returns why
-- it refused (the caller maps that to a typed error). A replay is capped per execution by the
-- max_replay_count of the policy frozen at its creation.

ALTER TYPE ff_event_kind ADD VALUE 'priority_changed';
ALTER TYPE ff_event_kind ADD VALUE 'replayed';

ALTER TABLE ff_execution ADD COLUMN replay_count integer NOT NULL DEFAULT 0,
                         -- Who cancelled a cancelled execution (operator_override, lease_holder...).
                         ADD COLUMN cancel_source text;

-- Leases whose expiry was recorded and whose execution awaits reclaim, by expiry: the listing
-- of expired leases reads them in order (the lease-expiry index holds only live leases).
CREATE INDEX ff_execution_expired_lease_idx ON ff_execution (lease_expires_at_ms, execution_id)
    WHERE ownership_state = 'lease_expired_reclaimable';

-- Cancels execution p_id (in partition p_partition) whatever its non-terminal state. Returns
-- 'cancelled', or why nothing was written: 'not_found', 'terminal', or, when p_fenced (a source
-- other than an operator override): 'fence_required' (no fence given while the execution is
-- active), 'stale_lease' (a fence given that is not the execution's current or last lease, in
-- any state), 'lease_expired' or 'lease_revoked' (the fenced lease was lost). A lease the execution holds ends with it: the holder's next call finds the execution
-- terminal. Its open attempt closes as ended_cancelled, and the 'cancelled' completion event is
-- logged, exactly as when the lease holder cancels.
CREATE FUNCTION ff_cancel_execution(p_id uuid, p_partition smallint, p_reason text, p_source text, p_fenced boolean,
                                    p_lease_id uuid, p_epoch bigint, p_attempt_id uuid)
    RETURNS text
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
    AS $$
DECLARE
    v_phase ff_lifecycle_phase;
    v_ownership ff_ownership_state;
    v_lease uuid;
    v_epoch bigint;
    v_attempt_id uuid;
    v_index integer;
BEGIN
    SELECT x.lifecycle_phase, x.ownership_state, x.lease_id, x.lease_epoch, x.attempt_id, x.current_attempt_index
    INTO v_phase, v_ownership, v_lease, v_epoch, v_attempt_id, v_index
    FROM ff_execution x WHERE x.execution_id = p_id AND x.partition_key = p_partition
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'not_found';
    END IF;
    IF v_phase = 'terminal' THEN
        RETURN 'terminal';
    END IF;
    IF p_fenced THEN
        IF p_lease_id IS NULL THEN
            IF v_phase = 'active' THEN
                RETURN 'fence_required';
            END IF;
        ELSIF (v_lease, v_epoch, v_attempt_id) IS DISTINCT FROM (p_lease_id, p_epoch, p_attempt_id) THEN
            RETURN 'stale_lease';
        ELSIF v_ownership = 'lease_expired_reclaimable' THEN
            RETURN 'lease_expired';
        ELSIF v_ownership = 'lease_revoked' THEN
            RETURN 'lease_revoked';
        END IF;
    END IF;
    UPDATE ff_execution e SET
        lifecycle_phase = 'terminal', ownership_state = 'unowned', eligibility_state = 'not_applicable',
        blocking_reason = 'none', terminal_outcome = 'cancelled', attempt_state = 'attempt_terminal',
        blocking_detail = p_reason, cancel_source = p_source, completed_at_ms = ff_now_ms(),
        lease_expires_at_ms = NULL, attempt_deadline_at_ms = NULL, last_mutation_at_ms = ff_now_ms()
    WHERE e.execution_id = p_id;
    -- The attempt still open (running, or parked by a delay) ends; one closed when its lease
    -- was lost keeps its record.
    UPDATE ff_attempt a SET state = 'ended_cancelled', ended_at_ms = ff_now_ms(), failure_message = p_reason
    WHERE a.execution_id = p_id AND a.attempt_index = v_index AND a.state IN ('started', 'suspended');
    DELETE FROM ff_reclaim_grant g WHERE g.execution_id = p_id;
    PERFORM ff_log_events(ARRAY['cancelled'::ff_event_kind], ARRAY[p_id]);
    RETURN 'cancelled';
END
$$;

-- Revokes the live lease of execution p_id (in partition p_partition) through ff_lose_leases,
-- the transition a dead worker's leases take: the execution becomes reclaimable at once, keeping
-- its place in line, or fails at its reclaim cap. Only the lease p_expected_lease and only one
-- held by worker instance p_instance, when given. Returns ('revoked', lease, epoch), or why
-- nothing was written: 'not_found', 'terminal', 'stale_lease' (not the lease or holder
-- expected), 'no_active_lease', 'already_revoked', 'already_expired'.
CREATE FUNCTION ff_revoke_lease(p_id uuid, p_partition smallint, p_expected_lease uuid, p_instance text,
                                p_reason text)
    RETURNS TABLE (outcome text, revoked_lease uuid, revoked_epoch bigint)
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
    AS $$
DECLARE
    v_phase ff_lifecycle_phase;
    v_ownership ff_ownership_state;
    v_lease uuid;
    v_epoch bigint;
    v_instance text;
BEGIN
    SELECT x.lifecycle_phase, x.ownership_state, x.lease_id, x.lease_epoch, x.worker_instance_id
    INTO v_phase, v_ownership, v_lease, v_epoch, v_instance
    FROM ff_execution x WHERE x.execution_id = p_id AND x.partition_key = p_partition
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'not_found', NULL::uuid, NULL::bigint;
    ELSIF v_phase = 'terminal' THEN
        RETURN QUERY SELECT 'terminal', NULL::uuid, NULL::bigint;
    ELSIF v_ownership = 'unowned' THEN
        RETURN QUERY SELECT 'no_active_lease', NULL::uuid, NULL::bigint;
    ELSIF v_ownership = 'lease_revoked' THEN
        RETURN QUERY SELECT 'already_revoked', NULL::uuid, NULL::bigint;
    ELSIF v_ownership = 'lease_expired_reclaimable' THEN
        RETURN QUERY SELECT 'already_expired', NULL::uuid, NULL::bigint;
    ELSIF (p_expected_lease IS NOT NULL AND p_expected_lease <> v_lease)
       OR (p_instance IS NOT NULL AND p_instance <> v_instance) THEN
        RETURN QUERY SELECT 'stale_lease', NULL::uuid, NULL::bigint;
    ELSE
        PERFORM ff_lose_leases(ARRAY[p_id], 'lease_revoked', p_reason);
        RETURN QUERY SELECT 'revoked', v_lease, v_epoch;
    END IF;
END
$$;

-- Sets the priority of execution p_id (in partition p_partition, on lane p_lane when given).
-- Returns ('changed', old priority), or why nothing was written: 'not_found', 'lane_mismatch',
-- 'terminal'. Raised claimable work may now sort before claimers' remembered positions, so the
-- lane's claim generation is bumped and long-polling claims are woken.
CREATE FUNCTION ff_change_priority(p_id uuid, p_partition smallint, p_priority integer, p_lane text)
    RETURNS TABLE (outcome text, old_priority integer)
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
    AS $$
DECLARE
    v_phase ff_lifecycle_phase;
    v_claimable boolean;
    v_old integer;
    v_lane text;
BEGIN
    SELECT x.lifecycle_phase, x.priority, x.lane_id,
           (x.lifecycle_phase = 'runnable' AND x.eligibility_state = 'eligible_now')
               OR x.ownership_state IN ('lease_expired_reclaimable', 'lease_revoked')
    INTO v_phase, v_old, v_lane, v_claimable
    FROM ff_execution x WHERE x.execution_id = p_id AND x.partition_key = p_partition
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'not_found', NULL::integer;
    ELSIF p_lane IS NOT NULL AND p_lane <> v_lane THEN
        RETURN QUERY SELECT 'lane_mismatch', NULL::integer;
    ELSIF v_phase = 'terminal' THEN
        RETURN QUERY SELECT 'terminal', NULL::integer;
    ELSE
        UPDATE ff_execution e SET priority = p_priority, last_mutation_at_ms = ff_now_ms()
        WHERE e.execution_id = p_id;
        IF v_claimable AND p_priority > v_old THEN
            PERFORM ff_bump_claim_generation(ARRAY[v_lane]);
            PERFORM pg_notify('ff_lane_ready', v_lane);
        END IF;
        PERFORM ff_log_events(ARRAY['priority_changed'::ff_event_kind], ARRAY[p_id]);
        RETURN QUERY SELECT 'changed', v_old;
    END IF;
END
$$;

-- Makes terminal execution p_id (in partition p_partition) runnable again: a pending replay
-- attempt, eligible now (or parked when no live worker can run it), with its retry and reclaim
-- counts reset and its result, terminal fields, progress and execution deadline cleared; its
-- next claim starts a new attempt. The cap is the policy's max_replay_count, p_default_cap when
-- the policy names none. Returns ('replayed', replay count, parked), or why nothing was
-- written: 'not_found', 'not_terminal', 'max_replays'.
CREATE FUNCTION ff_replay_execution(p_id uuid, p_partition smallint, p_default_cap integer)
    RETURNS TABLE (outcome text, replays integer, parked boolean)
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
    AS $$
DECLARE
    v_phase ff_lifecycle_phase;
    v_replays integer;
    v_cap integer;
    v_lane text;
    v_required text[];
    v_covered boolean;
BEGIN
    SELECT x.lifecycle_phase, x.replay_count, coalesce((x.policy ->> 'max_replay_count')::integer, p_default_cap),
           x.lane_id, x.required_capabilities
    INTO v_phase, v_replays, v_cap, v_lane, v_required
    FROM ff_execution x WHERE x.execution_id = p_id AND x.partition_key = p_partition
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'not_found', NULL::integer, NULL::boolean;
        RETURN;
    ELSIF v_phase <> 'terminal' THEN
        RETURN QUERY SELECT 'not_terminal', v_replays, NULL::boolean;
        RETURN;
    ELSIF v_replays >= v_cap THEN
        RETURN QUERY SELECT 'max_replays', v_replays, NULL::boolean;
        RETURN;
    END IF;
    v_covered := ff_route_covered(v_lane, v_required);
    UPDATE ff_execution e SET
        lifecycle_phase = 'runnable', ownership_state = 'unowned',
        eligibility_state = CASE WHEN v_covered THEN 'eligible_now' ELSE 'blocked_by_route' END::ff_eligibility_state,
        blocking_reason = CASE WHEN v_covered THEN 'waiting_for_worker'
                               ELSE 'waiting_for_capable_worker' END::ff_blocking_reason,
        terminal_outcome = 'none', attempt_state = 'pending_replay_attempt',
        replay_count = e.replay_count + 1, retry_count = 0, lease_reclaim_count = 0,
        result = NULL, completed_at_ms = NULL, blocking_detail = NULL, cancel_source = NULL,
        progress_pct = NULL, progress_message = NULL, eligible_at_ms = ff_now_ms(), deadline_at_ms = NULL,
        lease_expires_at_ms = NULL, attempt_deadline_at_ms = NULL, last_mutation_at_ms = ff_now_ms()
    WHERE e.execution_id = p_id;
    IF v_covered THEN
        PERFORM ff_bump_claim_generation(ARRAY[v_lane]);
        PERFORM pg_notify('ff_lane_ready', v_lane);
    END IF;
    PERFORM ff_log_events(ARRAY['replayed'::ff_event_kind], ARRAY[p_id]);
    RETURN QUERY SELECT 'replayed', v_replays + 1, NOT v_covered;
END
$$;

UPDATE ff_schema SET version = 5;
