-- FlowFabric engine schema, version 8: suspension, waitpoints, signals and the waitpoint keystore.
--
-- An execution suspends on waitpoints (ff_waitpoint) under a resume condition kept on its
-- suspension row (ff_suspension, one per execution: the current or the last one, so the resumed
-- attempt can read the signals that woke it). Signals are rows (ff_signal), recorded with the
-- effect they had; a signal for a pending waitpoint is recorded too (buffered) and counts once a
-- suspension activates the waitpoint. Signals carry the event log's commit-safe cursor
-- (tx_id, seq), so signal deliveries can be followed from a cursor.
--
-- No token is stored: a waitpoint keeps what its token is bound to (execution, id, key,
-- creation time) and the id of the key that signed it, and verification recomputes the HMAC;
-- listings show a fingerprint. The keystore (ff_waitpoint_hmac_key) holds the current key
-- (expires_at_ms NULL) and rotated-out keys until their grace ends.
--
-- The resume condition is evaluated in ff-core (one definition); the backend reads the signals
-- and writes the outcome in one transaction that holds the execution row.

ALTER TYPE ff_blocking_reason ADD VALUE 'waiting_for_approval';
ALTER TYPE ff_blocking_reason ADD VALUE 'waiting_for_callback';
ALTER TYPE ff_blocking_reason ADD VALUE 'waiting_for_tool_result';
ALTER TYPE ff_blocking_reason ADD VALUE 'paused_by_policy';
ALTER TYPE ff_event_kind ADD VALUE 'suspended';
ALTER TYPE ff_event_kind ADD VALUE 'resumed';
ALTER TYPE ff_event_kind ADD VALUE 'escalated';

ALTER TABLE ff_execution ADD COLUMN signal_count integer NOT NULL DEFAULT 0;

CREATE TABLE ff_waitpoint_hmac_key (
    kid text PRIMARY KEY CHECK (kid ~ '^[A-Za-z0-9_-]{1,64}$'),
    secret bytea NOT NULL CHECK (octet_length(secret) = 32),
    created_at_ms bigint NOT NULL DEFAULT ff_now_ms(),
    -- NULL for the current key; a rotated-out key's tokens verify until then.
    expires_at_ms bigint
);
CREATE UNIQUE INDEX ff_waitpoint_hmac_key_current_idx ON ff_waitpoint_hmac_key ((true)) WHERE expires_at_ms IS NULL;

CREATE TABLE ff_waitpoint (
    waitpoint_id uuid PRIMARY KEY,
    execution_id uuid NOT NULL,
    partition_key smallint NOT NULL,
    waitpoint_key text NOT NULL,
    state text NOT NULL CHECK (state IN ('pending', 'active', 'closed')),
    suspension_id uuid,
    attempt_index integer NOT NULL,
    token_kid text NOT NULL,
    token_fingerprint text NOT NULL,
    required_signal_names text[] NOT NULL DEFAULT '{}',
    created_at_ms bigint NOT NULL,
    activated_at_ms bigint,
    expires_at_ms bigint,
    closed_at_ms bigint,
    close_reason text,
    -- Its place among its suspension's bindings (the primary one is 0).
    binding_order integer,
    CONSTRAINT closed_when_closed CHECK ((state = 'closed') = (closed_at_ms IS NOT NULL)),
    CONSTRAINT active_in_a_suspension CHECK (state <> 'active' OR suspension_id IS NOT NULL)
);
-- One open waitpoint per key and execution.
CREATE UNIQUE INDEX ff_waitpoint_open_key_idx ON ff_waitpoint (execution_id, waitpoint_key) WHERE state <> 'closed';
CREATE INDEX ff_waitpoint_execution_idx ON ff_waitpoint (execution_id, waitpoint_id);
CREATE INDEX ff_waitpoint_pending_expiry_idx ON ff_waitpoint (expires_at_ms) WHERE state = 'pending';

CREATE TABLE ff_suspension (
    execution_id uuid PRIMARY KEY,
    suspension_id uuid NOT NULL,
    partition_key smallint NOT NULL,
    attempt_index integer NOT NULL,
    open boolean NOT NULL,
    reason_code text NOT NULL,
    condition jsonb NOT NULL,
    resume_delay_ms bigint NOT NULL DEFAULT 0,
    close_waitpoint_on_resume boolean NOT NULL DEFAULT true,
    timeout_at_ms bigint,
    timeout_behavior text NOT NULL
        CHECK (timeout_behavior IN ('fail', 'cancel', 'expire', 'auto_resume_with_timeout_signal', 'escalate')),
    suspended_at_ms bigint NOT NULL,
    ended_at_ms bigint,
    end_reason text,
    CONSTRAINT ended_when_closed CHECK (open = (ended_at_ms IS NULL))
);
CREATE INDEX ff_suspension_timeout_idx ON ff_suspension (timeout_at_ms) WHERE open AND timeout_at_ms IS NOT NULL;
CREATE INDEX ff_suspension_listing_idx ON ff_suspension (partition_key, suspended_at_ms, execution_id) WHERE open;

-- The first outcome of a suspend with an idempotency key: which suspension it made (its
-- tokens are recomputed, never stored).
CREATE TABLE ff_suspend_dedup (
    execution_id uuid NOT NULL,
    idempotency_key text NOT NULL,
    suspension_id uuid NOT NULL,
    already_satisfied boolean NOT NULL,
    created_at_ms bigint NOT NULL DEFAULT ff_now_ms(),
    PRIMARY KEY (execution_id, idempotency_key)
);

CREATE TABLE ff_signal (
    signal_id uuid PRIMARY KEY,
    tx_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
    seq bigint GENERATED ALWAYS AS IDENTITY,
    execution_id uuid NOT NULL,
    partition_key smallint NOT NULL,
    namespace text NOT NULL,
    waitpoint_id uuid NOT NULL,
    waitpoint_key text NOT NULL,
    -- The suspension it was delivered under; NULL while buffered on a pending waitpoint.
    suspension_id uuid,
    signal_name text NOT NULL,
    signal_category text NOT NULL,
    source_type text NOT NULL,
    source_identity text NOT NULL,
    correlation_id text,
    idempotency_key text,
    dedup_until_ms bigint,
    payload bytea CHECK (octet_length(payload) <= 65536),
    payload_encoding text,
    effect text NOT NULL,
    accepted_at_ms bigint NOT NULL DEFAULT ff_now_ms()
);
CREATE INDEX ff_signal_waitpoint_idx ON ff_signal (waitpoint_id, seq);
CREATE INDEX ff_signal_suspension_idx ON ff_signal (suspension_id, seq) WHERE suspension_id IS NOT NULL;
CREATE INDEX ff_signal_dedup_idx ON ff_signal (execution_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX ff_signal_cursor_idx ON ff_signal (tx_id, seq);

-- Resumes suspended execution p_id: runnable again on the same attempt, at once (its lane
-- woken) or after p_delay_ms (the promoter told when); its suspension ends with p_reason and its
-- waitpoints close when the suspension says so. Returns 'waiting' or 'delayed', or NULL when it
-- is not suspended. The caller holds the execution row.
CREATE FUNCTION ff_resume_suspended(p_id uuid, p_delay_ms bigint, p_reason text) RETURNS text
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_lane text;
    v_due bigint;
    v_close boolean;
BEGIN
    UPDATE ff_execution e SET
        lifecycle_phase = 'runnable', ownership_state = 'unowned',
        eligibility_state = CASE WHEN p_delay_ms > 0 THEN 'not_eligible_until_time' ELSE 'eligible_now' END::ff_eligibility_state,
        blocking_reason = CASE WHEN p_delay_ms > 0 THEN 'waiting_for_resume_delay' ELSE 'waiting_for_worker' END::ff_blocking_reason,
        attempt_state = 'attempt_interrupted',
        eligible_at_ms = CASE WHEN p_delay_ms > 0 THEN ff_now_ms() + p_delay_ms ELSE e.eligible_at_ms END,
        blocking_detail = NULL, last_mutation_at_ms = ff_now_ms()
    WHERE e.execution_id = p_id AND e.lifecycle_phase = 'suspended'
    RETURNING e.lane_id, CASE WHEN p_delay_ms > 0 THEN e.eligible_at_ms END INTO v_lane, v_due;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE ff_suspension SET open = false, ended_at_ms = ff_now_ms(), end_reason = p_reason
    WHERE execution_id = p_id AND open
    RETURNING close_waitpoint_on_resume INTO v_close;
    IF coalesce(v_close, true) THEN
        UPDATE ff_waitpoint SET state = 'closed', closed_at_ms = ff_now_ms(), close_reason = 'resumed'
        WHERE execution_id = p_id AND state = 'active';
    END IF;
    IF v_due IS NOT NULL THEN
        PERFORM pg_notify('ff_timer', v_due::text);
    ELSE
        PERFORM ff_bump_claim_generation(ARRAY[v_lane]);
        PERFORM pg_notify('ff_lane_ready', v_lane);
    END IF;
    PERFORM ff_log_events(ARRAY['resumed'::ff_event_kind], ARRAY[p_id]);
    RETURN CASE WHEN v_due IS NOT NULL THEN 'delayed' ELSE 'waiting' END;
END
$$;

-- Writes a suspension the caller decided on (holding the fenced execution row): creates the
-- fresh waitpoints, activates the pending ones (still pending: false is returned when one was
-- closed meanwhile, and the caller rolls back), moves their buffered signals under the
-- suspension, records it, suspends the execution (attempt parked, event logged) and remembers
-- an idempotency key's outcome.
CREATE FUNCTION ff_suspend_write(p_id uuid, p_partition smallint, p_attempt integer, p_suspension uuid, p_kid text,
                                 p_now bigint, p_timeout bigint, p_fresh_ids uuid[], p_fresh_keys text[],
                                 p_fresh_fps text[], p_fresh_names jsonb[], p_fresh_orders integer[],
                                 p_pending_ids uuid[], p_pending_names jsonb[], p_pending_orders integer[],
                                 p_reason text, p_condition jsonb, p_delay_ms bigint, p_close boolean,
                                 p_behavior text, p_blocking text, p_idempotency text)
    RETURNS boolean
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_activated integer;
BEGIN
    INSERT INTO ff_waitpoint (waitpoint_id, execution_id, partition_key, waitpoint_key, state, suspension_id,
                              attempt_index, token_kid, token_fingerprint, required_signal_names, created_at_ms,
                              activated_at_ms, expires_at_ms, binding_order)
    SELECT t.id, p_id, p_partition, t.key, 'active', p_suspension, p_attempt, p_kid, t.fp,
           ARRAY(SELECT jsonb_array_elements_text(t.names)), p_now, p_now, p_timeout, t.ord
    FROM unnest(p_fresh_ids, p_fresh_keys, p_fresh_fps, p_fresh_names, p_fresh_orders) AS t(id, key, fp, names, ord);
    UPDATE ff_waitpoint w SET state = 'active', suspension_id = p_suspension,
           required_signal_names = ARRAY(SELECT jsonb_array_elements_text(t.names)), activated_at_ms = ff_now_ms(),
           expires_at_ms = p_timeout, binding_order = t.ord
    FROM unnest(p_pending_ids, p_pending_names, p_pending_orders) AS t(id, names, ord)
    WHERE w.waitpoint_id = t.id AND w.state = 'pending';
    GET DIAGNOSTICS v_activated = ROW_COUNT;
    IF v_activated <> cardinality(p_pending_ids) THEN
        RETURN false;
    END IF;
    IF cardinality(p_pending_ids) > 0 THEN
        UPDATE ff_signal SET suspension_id = p_suspension WHERE waitpoint_id = ANY(p_pending_ids) AND suspension_id IS NULL;
    END IF;
    INSERT INTO ff_suspension (execution_id, suspension_id, partition_key, attempt_index, open, reason_code, condition,
                               resume_delay_ms, close_waitpoint_on_resume, timeout_at_ms, timeout_behavior, suspended_at_ms)
    VALUES (p_id, p_suspension, p_partition, p_attempt, true, p_reason, p_condition, p_delay_ms, p_close, p_timeout,
            p_behavior, ff_now_ms())
    ON CONFLICT (execution_id) DO UPDATE SET suspension_id = EXCLUDED.suspension_id,
        partition_key = EXCLUDED.partition_key, attempt_index = EXCLUDED.attempt_index, open = true,
        reason_code = EXCLUDED.reason_code, condition = EXCLUDED.condition, resume_delay_ms = EXCLUDED.resume_delay_ms,
        close_waitpoint_on_resume = EXCLUDED.close_waitpoint_on_resume, timeout_at_ms = EXCLUDED.timeout_at_ms,
        timeout_behavior = EXCLUDED.timeout_behavior, suspended_at_ms = EXCLUDED.suspended_at_ms, ended_at_ms = NULL,
        end_reason = NULL;
    UPDATE ff_execution SET lifecycle_phase = 'suspended', ownership_state = 'unowned',
           eligibility_state = 'not_applicable', blocking_reason = p_blocking::ff_blocking_reason,
           attempt_state = 'attempt_interrupted', lease_expires_at_ms = NULL, attempt_deadline_at_ms = NULL,
           last_mutation_at_ms = ff_now_ms()
    WHERE execution_id = p_id;
    UPDATE ff_attempt SET state = 'suspended' WHERE execution_id = p_id AND attempt_index = p_attempt;
    PERFORM ff_log_events(ARRAY['suspended'::ff_event_kind], ARRAY[p_id]);
    IF p_idempotency IS NOT NULL THEN
        INSERT INTO ff_suspend_dedup (execution_id, idempotency_key, suspension_id, already_satisfied)
        VALUES (p_id, p_idempotency, p_suspension, false) ON CONFLICT DO NOTHING;
    END IF;
    IF p_timeout IS NOT NULL THEN
        PERFORM pg_notify('ff_suspension_timer', p_timeout::text);
    END IF;
    RETURN true;
END
$$;

-- Records a delivered signal with its effect, counts it on its execution and, when it
-- satisfied the resume condition (p_resume), resumes the execution after p_resume_delay_ms. The
-- caller holds the execution row and has evaluated the condition.
CREATE FUNCTION ff_record_signal(p_signal uuid, p_execution uuid, p_partition smallint, p_namespace text,
                                 p_waitpoint uuid, p_key text, p_suspension uuid, p_name text, p_category text,
                                 p_source_type text, p_source_identity text, p_correlation text, p_idempotency text,
                                 p_dedup_ttl_ms bigint, p_payload bytea, p_encoding text, p_effect text,
                                 p_resume boolean, p_resume_delay_ms bigint)
    RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    INSERT INTO ff_signal (signal_id, execution_id, partition_key, namespace, waitpoint_id, waitpoint_key,
                           suspension_id, signal_name, signal_category, source_type, source_identity, correlation_id,
                           idempotency_key, dedup_until_ms, payload, payload_encoding, effect)
    VALUES (p_signal, p_execution, p_partition, p_namespace, p_waitpoint, p_key, p_suspension, p_name, p_category,
            p_source_type, p_source_identity, p_correlation, p_idempotency,
            CASE WHEN p_idempotency IS NULL THEN NULL ELSE ff_now_ms() + p_dedup_ttl_ms END, p_payload, p_encoding,
            p_effect);
    UPDATE ff_execution SET signal_count = signal_count + 1 WHERE execution_id = p_execution;
    IF p_resume THEN
        PERFORM ff_resume_suspended(p_execution, p_resume_delay_ms, 'signal');
    END IF;
END
$$;

-- Applies the due timeout of execution p_id's open suspension (only that one, in partition
-- p_partition, when given; else up to p_limit due ones, oldest first): fail, cancel or expire
-- end it (its attempt closes, its event is logged); auto_resume_with_timeout_signal records a
-- `timeout` signal and resumes it; escalate leaves it suspended, paused for an operator, and
-- clears the timeout. Returns how many it handled.
CREATE FUNCTION ff_expire_suspensions(p_limit integer, p_id uuid DEFAULT NULL, p_partition smallint DEFAULT NULL)
    RETURNS integer
    LANGUAGE plpgsql
    AS $$
DECLARE
    r record;
    v_done integer := 0;
    v_outcome ff_terminal_outcome;
BEGIN
    FOR r IN
        SELECT s.execution_id, s.suspension_id, s.timeout_behavior, s.attempt_index, x.namespace, x.partition_key
        FROM ff_suspension s JOIN ff_execution x ON x.execution_id = s.execution_id
        WHERE s.open AND s.timeout_at_ms <= ff_now_ms() AND x.lifecycle_phase = 'suspended'
          AND (p_id IS NULL OR (s.execution_id = p_id AND s.partition_key = p_partition))
        ORDER BY s.timeout_at_ms
        LIMIT p_limit
        FOR UPDATE OF x SKIP LOCKED
    LOOP
        v_done := v_done + 1;
        IF r.timeout_behavior = 'escalate' THEN
            UPDATE ff_execution SET blocking_reason = 'paused_by_operator', blocking_detail = 'suspension_timeout',
                                    last_mutation_at_ms = ff_now_ms()
            WHERE execution_id = r.execution_id;
            UPDATE ff_suspension SET timeout_at_ms = NULL WHERE execution_id = r.execution_id;
            PERFORM ff_log_events(ARRAY['escalated'::ff_event_kind], ARRAY[r.execution_id]);
        ELSIF r.timeout_behavior = 'auto_resume_with_timeout_signal' THEN
            INSERT INTO ff_signal (signal_id, execution_id, partition_key, namespace, waitpoint_id, waitpoint_key,
                                   suspension_id, signal_name, signal_category, source_type, source_identity, effect)
            SELECT gen_random_uuid(), r.execution_id, r.partition_key, r.namespace,
                   coalesce(w.waitpoint_id, '00000000-0000-0000-0000-000000000000'::uuid), coalesce(w.waitpoint_key, ''),
                   r.suspension_id, 'timeout', 'timeout', 'system', 'suspension_timeout', 'resume_condition_satisfied'
            FROM (SELECT 1) one
            LEFT JOIN LATERAL (SELECT waitpoint_id, waitpoint_key FROM ff_waitpoint
                               WHERE suspension_id = r.suspension_id ORDER BY binding_order LIMIT 1) w ON true;
            PERFORM ff_resume_suspended(r.execution_id, 0, 'timeout');
        ELSE
            v_outcome := CASE r.timeout_behavior WHEN 'cancel' THEN 'cancelled' WHEN 'expire' THEN 'expired'
                                                  ELSE 'failed' END::ff_terminal_outcome;
            UPDATE ff_execution SET
                lifecycle_phase = 'terminal', ownership_state = 'unowned', eligibility_state = 'not_applicable',
                blocking_reason = 'none', terminal_outcome = v_outcome, attempt_state = 'attempt_terminal',
                blocking_detail = 'suspension_timeout', completed_at_ms = ff_now_ms(), lease_expires_at_ms = NULL,
                attempt_deadline_at_ms = NULL, last_mutation_at_ms = ff_now_ms()
            WHERE execution_id = r.execution_id;
            UPDATE ff_attempt SET
                state = (CASE v_outcome WHEN 'cancelled' THEN 'ended_cancelled' WHEN 'expired' THEN 'ended_expired'
                                        ELSE 'ended_failure' END)::ff_attempt_lifecycle,
                ended_at_ms = ff_now_ms(), failure_message = 'suspension_timeout'
            WHERE execution_id = r.execution_id AND attempt_index = r.attempt_index AND state = 'suspended';
            PERFORM ff_log_events(ARRAY[(CASE v_outcome WHEN 'cancelled' THEN 'cancelled' WHEN 'expired' THEN 'expired'
                                                        ELSE 'failed' END)::ff_event_kind],
                                  ARRAY[r.execution_id]);
        END IF;
    END LOOP;
    RETURN v_done;
END
$$;

-- A suspended execution that ends by any other path (an operator's cancel, a flow's
-- cancellation, its deadline, its suspension timeout) ends its suspension and closes its
-- waitpoints: later signals are refused as closed.
CREATE FUNCTION ff_suspended_execution_ended() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    UPDATE ff_suspension SET open = false, ended_at_ms = ff_now_ms(), end_reason = NEW.terminal_outcome::text
    WHERE execution_id = NEW.execution_id AND open;
    UPDATE ff_waitpoint SET state = 'closed', closed_at_ms = ff_now_ms(), close_reason = NEW.terminal_outcome::text
    WHERE execution_id = NEW.execution_id AND state <> 'closed';
    RETURN NULL;
END
$$;

CREATE TRIGGER ff_suspended_execution_ended AFTER UPDATE OF lifecycle_phase ON ff_execution
    FOR EACH ROW
    WHEN (OLD.lifecycle_phase = 'suspended' AND NEW.lifecycle_phase = 'terminal')
    EXECUTE FUNCTION ff_suspended_execution_ended();

-- Closes pending waitpoints past their lifetime (only p_id of execution p_execution, when
-- given; else up to p_limit, oldest first). Signals buffered on them stay recorded. Returns how
-- many it closed.
CREATE FUNCTION ff_expire_waitpoints(p_limit integer, p_id uuid DEFAULT NULL, p_execution uuid DEFAULT NULL)
    RETURNS integer
    LANGUAGE sql
    AS $$
    WITH due AS (
        SELECT w.waitpoint_id FROM ff_waitpoint w
        WHERE w.state = 'pending' AND w.expires_at_ms <= ff_now_ms()
          AND (p_id IS NULL OR (w.waitpoint_id = p_id AND w.execution_id = p_execution))
        ORDER BY w.expires_at_ms LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ),
    closed AS (
        UPDATE ff_waitpoint w SET state = 'closed', closed_at_ms = ff_now_ms(), close_reason = 'expired'
        FROM due WHERE w.waitpoint_id = due.waitpoint_id
        RETURNING 1
    )
    SELECT count(*)::integer FROM closed
$$;

-- A lane's claim generation is striped: each bump increments one of up to 16 counter rows of
-- the lane, chosen by the bumping session, and the generation is their sum. Every committed bump
-- still changes the sum (whatever the commit order), but concurrent bumps of one lane (resumes,
-- flow releases, retries, promotions) no longer queue on one row lock held until commit.
CREATE TABLE ff_lane_generation (
    lane_id text NOT NULL,
    stripe smallint NOT NULL,
    generation bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (lane_id, stripe)
);
INSERT INTO ff_lane_generation (lane_id, stripe, generation) SELECT lane_id, 0, claim_generation FROM ff_lane;
ALTER TABLE ff_lane DROP COLUMN claim_generation;

-- PL/pgSQL, so the statement's plan is cached per session (an SQL function that is not inlined
-- is planned on every call).
CREATE OR REPLACE FUNCTION ff_bump_claim_generation(p_lanes text[]) RETURNS void
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan
    AS $$
BEGIN
    INSERT INTO ff_lane_generation AS g (lane_id, stripe, generation)
    SELECT DISTINCT l, (pg_backend_pid() % 16)::smallint, 1 FROM unnest(p_lanes) l WHERE l IS NOT NULL ORDER BY 1
    ON CONFLICT (lane_id, stripe) DO UPDATE SET generation = g.generation + 1;
END
$$;

-- ff_claim gains the claim of one resumed attempt by id (claim_resumed_execution and resume
-- grants); the rest is unchanged.
DROP FUNCTION ff_claim(text, text[], text[], bigint, text, uuid, boolean, boolean, integer, bigint, bigint, bigint);

CREATE FUNCTION ff_claim(p_lane text, p_capabilities text[], p_worker_instance_ids text[], p_ttl_ms bigint,
                         p_worker_id text, p_execution_id uuid DEFAULT NULL, p_synchronous boolean DEFAULT true,
                         p_with_context boolean DEFAULT false, p_after_neg_priority integer DEFAULT NULL,
                         p_after_eligible_at_ms bigint DEFAULT NULL, p_after_seq bigint DEFAULT NULL,
                         p_after_generation bigint DEFAULT NULL, p_resumed boolean DEFAULT false)
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
        ORDER BY -x.priority, x.eligible_at_ms, x.seq
        LIMIT cardinality(p_worker_instance_ids) - v_taken
        FOR UPDATE OF x SKIP LOCKED
    ),
    -- Runs only for a claim by id: a reclaim (p_resumed false), or the claim of a resumed
    -- attempt (p_resumed true: runnable, eligible, its attempt interrupted). Its predicate says
    -- "active and not leased" (which the state invariants make the same as a lost lease) rather
    -- than naming the lost-lease states, so that no partial index covers it and the primary key
    -- is the only way to it.
    by_id AS (
        SELECT x.execution_id AS id, CASE WHEN p_resumed THEN 'resumed' ELSE 'reclaimed' END AS kind, false AS replay
        FROM ff_execution x
        WHERE p_execution_id IS NOT NULL AND x.execution_id = p_execution_id
          AND ((NOT p_resumed AND x.lifecycle_phase = 'active' AND x.ownership_state <> 'leased')
            OR (p_resumed AND x.lifecycle_phase = 'runnable' AND x.eligibility_state = 'eligible_now'
                AND x.attempt_state = 'attempt_interrupted'))
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
                  e.lease_id, e.lease_epoch, c.kind, c.replay, e.worker_instance_id,
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

UPDATE ff_schema SET version = 8;
