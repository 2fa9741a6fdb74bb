-- Admission: quota policies (a rate per window, a concurrency cap, a cap per concurrency key),
-- budgets (hard and soft limits per dimension), and claim grants.
--
-- Quota admission happens when an execution becomes claimable, not when it is claimed: claims
-- stay as they were, and what does not fit waits outside the claim index (blocked_by_quota).
-- An execution attached to a policy holds a slot while it is claimable or active (a lost lease
-- keeps its slot for the reclaim); a waiter of a full concurrency key holds nothing
-- (admission_wait 'key'); a waiter whose key had room but whose policy had none holds its key
-- slot and queues in the policy's order (admission_wait 'policy'). Each queue is an index, so
-- nothing walks waiters it cannot admit, and one key's backlog never holds back another key.
--
-- Every change of what a row holds is noted by a row trigger (its WHEN clause records the
-- change in a transaction-local setting and answers false, so no row event is queued) and
-- settled once per statement by ff_quota_settle, policy by policy in id order, so two statements
-- touching the same policies take their locks in the same order. Settling a policy locks its
-- row, gives back released slots, admits what entered (or parks it), and hands freed slots to
-- the heads of the queues. The policy row lock serializes everything that counts its slots,
-- which is what makes a cap of N never admit N+1.
--
-- Budgets are checked where work enters the claimable set (ff_budget_gate) and, because a
-- breach can race with that, again by the claim itself; a budget that becomes exhausted parks
-- its waiting executions in the breaching transaction, and a reset or a raise lets them go.

ALTER TYPE ff_blocking_reason ADD VALUE 'waiting_for_budget';
ALTER TYPE ff_blocking_reason ADD VALUE 'waiting_for_quota';

ALTER TABLE ff_execution
    ADD COLUMN quota_policy_id uuid,
    ADD COLUMN concurrency_key text,
    ADD COLUMN budget_ids uuid[],
    -- While blocked_by_quota: 'key' (its key is full; holds nothing), 'policy' (holds its key
    -- slot, queued for a policy slot or the rate window), NULL (blocked by a scheduler).
    ADD COLUMN admission_wait text CHECK (admission_wait IN ('key', 'policy')),
    -- While reserved for a worker by a claim grant: when the reservation lapses.
    ADD COLUMN grant_expires_at_ms bigint;

-- A lane's quota policy: executions created on the lane without a policy of their own take it
-- (so a lane can say "at most N running per key").
ALTER TABLE ff_lane ADD COLUMN quota_policy_id uuid;

CREATE TABLE ff_quota_policy (
    quota_policy_id uuid PRIMARY KEY,
    partition_key smallint NOT NULL,
    window_ms bigint,
    max_requests_per_window integer,
    max_concurrent integer,
    max_concurrent_per_key integer,
    jitter_ms bigint NOT NULL DEFAULT 0,
    -- Slots held: executions claimable or active, plus unexpired explicit admissions.
    active integer NOT NULL DEFAULT 0 CHECK (active >= 0),
    -- Admissions in ff_quota_window (those within the window once pruned).
    window_count integer NOT NULL DEFAULT 0 CHECK (window_count >= 0),
    -- When the rate window next has room for a waiter (set only while waiters wait for it).
    next_admit_at_ms bigint,
    created_at_ms bigint NOT NULL DEFAULT ff_now_ms(),
    updated_at_ms bigint NOT NULL DEFAULT ff_now_ms(),
    CHECK ((window_ms IS NULL) = (max_requests_per_window IS NULL))
);
CREATE INDEX ff_quota_policy_partition_idx ON ff_quota_policy (partition_key, quota_policy_id);
CREATE INDEX ff_quota_policy_due_idx ON ff_quota_policy (next_admit_at_ms) WHERE next_admit_at_ms IS NOT NULL;

-- A concurrency key's lock: admissions into a key (and hand-offs of its freed slots) hold its
-- row. What a key holds is counted from the executions holding it (ff_execution_quota_holder_idx),
-- so giving a slot back writes nothing here.
CREATE TABLE ff_quota_key (
    quota_policy_id uuid NOT NULL,
    concurrency_key text NOT NULL,
    PRIMARY KEY (quota_policy_id, concurrency_key)
);

-- The sliding window: one row per admission of a rate-limited policy, pruned as it ages out.
CREATE TABLE ff_quota_window (
    quota_policy_id uuid NOT NULL,
    admitted_at_ms bigint NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    execution_id uuid NOT NULL,
    PRIMARY KEY (quota_policy_id, admitted_at_ms, seq)
);

-- Admissions made by check_admission (outside the claim path), held until released or expired.
CREATE TABLE ff_quota_admission (
    quota_policy_id uuid NOT NULL,
    execution_id uuid NOT NULL,
    admitted_at_ms bigint NOT NULL,
    expires_at_ms bigint,
    PRIMARY KEY (quota_policy_id, execution_id)
);

-- Waiters of a full key, per key in claim order; waiters queued for the policy, in claim order.
CREATE INDEX ff_execution_quota_key_wait_idx
    ON ff_execution (quota_policy_id, concurrency_key, (-priority), eligible_at_ms, seq)
    WHERE eligibility_state = 'blocked_by_quota' AND admission_wait = 'key';
CREATE INDEX ff_execution_quota_wait_idx ON ff_execution (quota_policy_id, (-priority), eligible_at_ms, seq)
    WHERE eligibility_state = 'blocked_by_quota' AND admission_wait = 'policy';
-- The executions holding a slot of their policy: claimable or active (a policy slot and their key
-- slot), or queued for the policy (their key slot). Counting a key's holders is a range of it.
CREATE INDEX ff_execution_quota_holder_idx ON ff_execution (quota_policy_id, concurrency_key)
    WHERE quota_policy_id IS NOT NULL
      AND (lifecycle_phase = 'active' OR (lifecycle_phase = 'runnable' AND eligibility_state = 'eligible_now')
           OR (eligibility_state = 'blocked_by_quota' AND admission_wait = 'policy'));
-- Reservations, for the grant reaper.
CREATE INDEX ff_execution_grant_idx ON ff_execution (grant_expires_at_ms) WHERE grant_expires_at_ms IS NOT NULL;

CREATE TABLE ff_budget (
    budget_id uuid PRIMARY KEY,
    partition_key smallint NOT NULL,
    scope_type text NOT NULL,
    scope_id text NOT NULL,
    enforcement_mode text NOT NULL CHECK (enforcement_mode IN ('strict', 'warn')),
    on_hard_limit text,
    on_soft_limit text,
    reset_interval_ms bigint NOT NULL DEFAULT 0,
    next_reset_at_ms bigint,
    -- Strict and out of room (a refused report, or usage at a hard limit): its executions are
    -- not claimed until a reset, a raise or a release brings every dimension under its limit.
    exhausted boolean NOT NULL DEFAULT false,
    breach_count bigint NOT NULL DEFAULT 0,
    soft_breach_count bigint NOT NULL DEFAULT 0,
    last_breach_at_ms bigint,
    last_breach_dim text,
    last_reset_at_ms bigint,
    created_at_ms bigint NOT NULL DEFAULT ff_now_ms(),
    updated_at_ms bigint NOT NULL DEFAULT ff_now_ms()
);
CREATE INDEX ff_budget_partition_idx ON ff_budget (partition_key, budget_id);
CREATE INDEX ff_budget_reset_idx ON ff_budget (next_reset_at_ms) WHERE next_reset_at_ms IS NOT NULL;

CREATE TABLE ff_budget_dimension (
    budget_id uuid NOT NULL,
    dimension text NOT NULL,
    hard_limit bigint,
    soft_limit bigint,
    usage bigint NOT NULL DEFAULT 0 CHECK (usage >= 0),
    updated_at_ms bigint NOT NULL DEFAULT ff_now_ms(),
    PRIMARY KEY (budget_id, dimension)
);

-- Reports with a dedup key: the outcome a replay gets, for a day.
CREATE TABLE ff_budget_report (
    budget_id uuid NOT NULL,
    dedup_key text NOT NULL,
    outcome jsonb NOT NULL,
    applied_at_ms bigint NOT NULL,
    expires_at_ms bigint NOT NULL,
    PRIMARY KEY (budget_id, dedup_key)
);
CREATE INDEX ff_budget_report_expiry_idx ON ff_budget_report (expires_at_ms);

-- Usage attributed to an execution, so release_budget can give it back.
CREATE TABLE ff_budget_spend (
    budget_id uuid NOT NULL,
    execution_id uuid NOT NULL,
    dimension text NOT NULL,
    amount bigint NOT NULL CHECK (amount >= 0),
    PRIMARY KEY (budget_id, execution_id, dimension)
);

-- Which executions draw on a budget (written with the execution).
CREATE TABLE ff_budget_member (
    budget_id uuid NOT NULL,
    execution_id uuid NOT NULL,
    PRIMARY KEY (budget_id, execution_id)
);

CREATE TABLE ff_claim_grant (
    grant_id uuid PRIMARY KEY,
    execution_id uuid NOT NULL,
    worker_id text NOT NULL,
    worker_instance_id text NOT NULL,
    lane_id text NOT NULL,
    kid text NOT NULL,
    issued_at_ms bigint NOT NULL,
    expires_at_ms bigint NOT NULL
);
-- One outstanding grant per execution.
CREATE UNIQUE INDEX ff_claim_grant_execution_idx ON ff_claim_grant (execution_id);
CREATE INDEX ff_claim_grant_expiry_idx ON ff_claim_grant (expires_at_ms);

-- What a row holds of its quota policy: 2 = a policy slot and its key slot (claimable or
-- active), 1 = its key slot only (queued for the policy), 0 = nothing.
CREATE FUNCTION ff_quota_hold(p_phase ff_lifecycle_phase, p_eligibility ff_eligibility_state, p_wait text)
    RETURNS integer
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT CASE WHEN p_phase = 'active' OR (p_phase = 'runnable' AND p_eligibility = 'eligible_now') THEN 2
                WHEN p_phase = 'runnable' AND p_eligibility = 'blocked_by_quota' AND p_wait = 'policy' THEN 1
                ELSE 0 END
$$;

-- Records a change of what an execution holds, for ff_quota_settle; answers false so the row
-- trigger whose WHEN calls it never queues an event. Changes made while settling are the
-- settlement's own and already counted.
CREATE FUNCTION ff_note_quota_change(p_policy uuid, p_key text, p_id uuid, p_from integer, p_to integer)
    RETURNS boolean
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF coalesce(current_setting('ff.quota_settling', true), '') <> 'on' THEN
        PERFORM set_config('ff.quota_notes',
                           coalesce(current_setting('ff.quota_notes', true), '')
                               || jsonb_build_array(p_policy, p_key, p_id, p_from, p_to)::text || ',',
                           true);
    END IF;
    RETURN false;
END
$$;

-- Settling a policy takes, in this order: the policy row (only to admit within the policy's own
-- limits), its keys' rows by key, its stripes.
--
-- A policy's slots held = ff_quota_policy.active + the sum of its stripes. A statement that
-- only gives slots back while nothing waits for them (completions under caps that do not bind)
-- adds to the stripe of its session (backend pid mod 64), so concurrent transactions do not
-- queue on one row; whoever admits within the policy's limits holds the policy row and folds
-- the stripes no transaction is changing into it (a change in flight is a release not yet
-- seen: the count is only ever too high, never too low).
CREATE TABLE ff_quota_stripe (
    quota_policy_id uuid NOT NULL,
    stripe smallint NOT NULL,
    delta integer NOT NULL DEFAULT 0,
    PRIMARY KEY (quota_policy_id, stripe)
);

CREATE FUNCTION ff_quota_policy_stripes() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    INSERT INTO ff_quota_stripe (quota_policy_id, stripe) SELECT NEW.quota_policy_id, g FROM generate_series(0, 63) g;
    RETURN NULL;
END
$$;

CREATE TRIGGER ff_quota_policy_stripes AFTER INSERT ON ff_quota_policy
    FOR EACH ROW EXECUTE FUNCTION ff_quota_policy_stripes();

-- An admission that parks executions (the policy or a key looked full) asks for the policy to be
-- settled again once it has committed: a release that committed meanwhile, unseen by it and not
-- seeing its waiters, may have made room. The admission reconciler (woken on ff_quota_timer)
-- takes the requests.
CREATE TABLE ff_quota_settle_request (
    quota_policy_id uuid NOT NULL,
    requested_at_ms bigint NOT NULL DEFAULT ff_now_ms()
);
CREATE INDEX ff_quota_settle_request_idx ON ff_quota_settle_request (quota_policy_id);

-- Folds the policy's idle stripes into its row; the caller holds the row (with p_wait, it waits
-- for stripes in use, so the fold is complete). Returns the slots held.
CREATE FUNCTION ff_quota_fold(p_policy uuid, p_wait boolean DEFAULT false) RETURNS integer
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan
    AS $$
DECLARE
    v_sum integer;
    v_active integer;
BEGIN
    IF p_wait THEN
        WITH f AS (
            SELECT x.stripe, x.delta FROM ff_quota_stripe x WHERE x.quota_policy_id = p_policy
            ORDER BY x.stripe FOR UPDATE
        ),
        z AS (
            UPDATE ff_quota_stripe s SET delta = 0 FROM f
            WHERE s.quota_policy_id = p_policy AND s.stripe = f.stripe AND f.delta <> 0
        )
        SELECT coalesce(sum(f.delta), 0) INTO v_sum FROM f;
    ELSE
        WITH f AS (
            SELECT x.stripe, x.delta FROM ff_quota_stripe x WHERE x.quota_policy_id = p_policy AND x.delta <> 0
            FOR UPDATE SKIP LOCKED
        ),
        z AS (
            UPDATE ff_quota_stripe s SET delta = 0 FROM f WHERE s.quota_policy_id = p_policy AND s.stripe = f.stripe
        )
        SELECT coalesce(sum(f.delta), 0) INTO v_sum FROM f;
    END IF;
    UPDATE ff_quota_policy SET active = greatest(active + v_sum, 0) WHERE quota_policy_id = p_policy
    RETURNING active INTO v_active;
    RETURN v_active;
END
$$;

-- Whether executions wait for the policy (behind a key, or in its queue).
CREATE FUNCTION ff_quota_has_waiters(p_policy uuid) RETURNS boolean
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off
    AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM ff_execution x WHERE x.quota_policy_id = p_policy
                   AND x.eligibility_state = 'blocked_by_quota' AND x.admission_wait = 'key')
        OR EXISTS (SELECT 1 FROM ff_execution x WHERE x.quota_policy_id = p_policy
                   AND x.eligibility_state = 'blocked_by_quota' AND x.admission_wait = 'policy');
END
$$;

-- The slots each of p_keys holds: its executions that are claimable, active, or queued for the
-- policy (those of this transaction included).
CREATE FUNCTION ff_quota_key_holders(p_policy uuid, p_keys text[]) RETURNS TABLE (concurrency_key text, holders integer)
    LANGUAGE sql STABLE
    AS $$
    SELECT k.k, (SELECT count(*)::integer FROM ff_execution x
                 WHERE x.quota_policy_id = p_policy AND x.concurrency_key = k.k
                   AND (x.lifecycle_phase = 'active' OR (x.lifecycle_phase = 'runnable' AND x.eligibility_state = 'eligible_now')
                        OR (x.eligibility_state = 'blocked_by_quota' AND x.admission_wait = 'policy')))
    FROM unnest(p_keys) AS k(k)
$$;

-- Settles one policy: gives back the slots p_notes released, admits or parks what entered, and
-- hands free slots to waiting executions (every key's waiters when p_all_keys, else those of
-- the keys that gave slots back). Nothing is noted while this runs.
CREATE FUNCTION ff_quota_apply(p_policy uuid, p_notes jsonb, p_all_keys boolean DEFAULT false) RETURNS void
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off
    AS $$
DECLARE
    v_pol ff_quota_policy%ROWTYPE;
    v_now bigint := ff_now_ms();
    v_bounded boolean;
    v_entering boolean;
    v_released integer;
    v_waiters boolean;
    v_delta integer := 0;
    v_keys text[];
    v_freed text[];
    v_key text;
    v_held integer;
    v_room bigint;
    v_n bigint;
    v_lanes text[] := '{}';
    v_more text[];
    v_next bigint;
    v_admit uuid[] := '{}';
    v_queue uuid[] := '{}';
    v_keywait uuid[] := '{}';
    v_detail text;
BEGIN
    -- What the statement did, and whether anything may wait for a slot it frees (one probe of
    -- the waiters' indexes when it only gave slots back).
    SELECT p.max_concurrent IS NOT NULL OR p.window_ms IS NOT NULL, s.entering, s.released,
           p_all_keys OR s.entering
               OR EXISTS (SELECT 1 FROM ff_execution x WHERE x.quota_policy_id = p_policy
                          AND x.eligibility_state = 'blocked_by_quota' AND x.admission_wait = 'key')
               OR EXISTS (SELECT 1 FROM ff_execution x WHERE x.quota_policy_id = p_policy
                          AND x.eligibility_state = 'blocked_by_quota' AND x.admission_wait = 'policy')
    INTO v_bounded, v_entering, v_released, v_waiters
    FROM ff_quota_policy p,
         LATERAL (SELECT coalesce(bool_or((e->>3)::int < 2 AND (e->>4)::int = 2), false) AS entering,
                         count(*) FILTER (WHERE (e->>3)::int = 2 AND (e->>4)::int < 2)::integer AS released
                  FROM jsonb_array_elements(p_notes) e) s
    WHERE p.quota_policy_id = p_policy;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF NOT v_waiters THEN
        -- Only slots given back, and nothing waits for them: the session's stripe, and done.
        IF v_released > 0 THEN
            UPDATE ff_quota_stripe SET delta = delta - v_released
            WHERE quota_policy_id = p_policy AND stripe = (pg_backend_pid() % 64)::smallint;
        END IF;
        RETURN;
    END IF;

    PERFORM set_config('ff.quota_settling', 'on', true);
    IF v_bounded THEN
        -- Admission within the policy's own limits: its row serializes it.
        SELECT * INTO v_pol FROM ff_quota_policy WHERE quota_policy_id = p_policy FOR UPDATE;
        v_pol.active := greatest(ff_quota_fold(p_policy) - v_released, 0);
        IF v_pol.window_ms IS NOT NULL THEN
            WITH d AS (
                DELETE FROM ff_quota_window w
                WHERE w.quota_policy_id = p_policy AND w.admitted_at_ms <= v_now - v_pol.window_ms
                RETURNING 1
            )
            SELECT greatest(v_pol.window_count - count(*), 0) INTO v_pol.window_count FROM d;
        END IF;
        v_room := least(coalesce(v_pol.max_concurrent - v_pol.active, 2147483647),
                        coalesce(v_pol.max_requests_per_window - v_pol.window_count, 2147483647));
    ELSE
        SELECT * INTO v_pol FROM ff_quota_policy WHERE quota_policy_id = p_policy;
        v_delta := -v_released;
        v_room := 2147483647;
    END IF;

    -- The keys this settlement admits into or frees, their rows created if new and locked in
    -- key order.
    IF v_pol.max_concurrent_per_key IS NOT NULL THEN
        SELECT array_agg(DISTINCT s.k ORDER BY s.k) INTO v_keys FROM (
            SELECT e->>1 AS k FROM jsonb_array_elements(p_notes) e
            WHERE e->>1 IS NOT NULL AND (((e->>3)::int >= 1 AND (e->>4)::int = 0)
                                        OR ((e->>3)::int = 0 AND (e->>4)::int = 2))
            UNION ALL
            SELECT x.concurrency_key FROM ff_execution x
            WHERE p_all_keys AND x.quota_policy_id = p_policy AND x.eligibility_state = 'blocked_by_quota'
              AND x.admission_wait = 'key'
        ) s;
        IF v_keys IS NOT NULL THEN
            INSERT INTO ff_quota_key (quota_policy_id, concurrency_key)
            SELECT p_policy, k FROM unnest(v_keys) k ORDER BY k ON CONFLICT DO NOTHING;
            PERFORM 1 FROM ff_quota_key q WHERE q.quota_policy_id = p_policy AND q.concurrency_key = ANY (v_keys)
            ORDER BY q.concurrency_key FOR UPDATE;
            IF p_all_keys THEN
                v_freed := v_keys;
            ELSE
                SELECT array_agg(DISTINCT e->>1) INTO v_freed FROM jsonb_array_elements(p_notes) e
                WHERE e->>1 IS NOT NULL AND (e->>3)::int >= 1 AND (e->>4)::int = 0;
            END IF;
        END IF;
    END IF;

    -- What entered the claimable set in the statement, best first, set-based: per key, those
    -- beyond the key's room wait behind their key (holding nothing); of the rest, those beyond
    -- the policy's room (concurrency and rate) queue for the policy holding their key slot;
    -- the others stay claimable. (The entering executions already count among their key's
    -- holders; one that was queued for the policy keeps its key slot and only needs a policy
    -- slot.)
    IF v_entering THEN
        WITH ent AS (
            SELECT x.execution_id AS id, x.concurrency_key AS k, n.from_hold, -x.priority AS np,
                   x.eligible_at_ms AS at, x.seq
            FROM (SELECT (e->>2)::uuid AS id, min((e->>3)::int) AS from_hold FROM jsonb_array_elements(p_notes) e
                  WHERE (e->>3)::int < 2 AND (e->>4)::int = 2 GROUP BY 1) n
            JOIN ff_execution x ON x.execution_id = n.id
            -- (Written so that no index matches these conditions: the rows are found by id, never
            -- by scanning the policy's or the lane's executions.)
            WHERE (x.lifecycle_phase = 'runnable' AND x.eligibility_state = 'eligible_now') IS TRUE
        ),
        keyed AS (
            SELECT e.*,
                   (v_pol.max_concurrent_per_key IS NULL OR e.k IS NULL OR e.from_hold = 1
                    OR row_number() OVER (PARTITION BY e.k, e.from_hold ORDER BY e.np, e.at, e.seq)
                       <= v_pol.max_concurrent_per_key
                          - (h.holders - count(*) OVER (PARTITION BY e.k, e.from_hold))) AS key_ok
            FROM ent e
            LEFT JOIN ff_quota_key_holders(p_policy, (SELECT array_agg(DISTINCT k) FROM ent WHERE k IS NOT NULL)) h
                   ON h.concurrency_key = e.k
        ),
        ranked AS (
            SELECT d.*, row_number() OVER (PARTITION BY d.key_ok ORDER BY d.np, d.at, d.seq) AS prank FROM keyed d
        )
        SELECT coalesce(array_agg(r.id) FILTER (WHERE r.key_ok AND r.prank <= v_room), '{}'),
               coalesce(array_agg(r.id) FILTER (WHERE r.key_ok AND r.prank > v_room), '{}'),
               coalesce(array_agg(r.id) FILTER (WHERE NOT r.key_ok), '{}')
        INTO v_admit, v_queue, v_keywait
        FROM ranked r;
        IF v_bounded THEN
            v_pol.active := v_pol.active + cardinality(v_admit);
            IF v_pol.window_ms IS NOT NULL AND cardinality(v_admit) > 0 THEN
                INSERT INTO ff_quota_window (quota_policy_id, admitted_at_ms, execution_id)
                SELECT p_policy, v_now, a FROM unnest(v_admit) a;
                v_pol.window_count := v_pol.window_count + cardinality(v_admit);
            END IF;
        ELSE
            v_delta := v_delta + cardinality(v_admit);
        END IF;
        IF cardinality(v_keywait) > 0 THEN
            UPDATE ff_execution x SET eligibility_state = 'blocked_by_quota', blocking_reason = 'waiting_for_quota',
                   admission_wait = 'key', last_mutation_at_ms = v_now,
                   blocking_detail = format('concurrency key %s is at its limit of %s', x.concurrency_key,
                                            v_pol.max_concurrent_per_key)
            WHERE x.execution_id = ANY (v_keywait);
        END IF;
        IF cardinality(v_queue) > 0 THEN
            IF v_pol.max_concurrent IS NOT NULL AND v_pol.active >= v_pol.max_concurrent THEN
                v_detail := format('quota policy is at its limit of %s concurrent', v_pol.max_concurrent);
            ELSE
                SELECT min(w.admitted_at_ms) + v_pol.window_ms + v_pol.jitter_ms INTO v_next
                FROM ff_quota_window w WHERE w.quota_policy_id = p_policy;
                v_detail := format('rate limit of %s per %s ms reached; retry after %s',
                                   v_pol.max_requests_per_window, v_pol.window_ms, v_next);
            END IF;
            UPDATE ff_execution x SET eligibility_state = 'blocked_by_quota', blocking_reason = 'waiting_for_quota',
                   admission_wait = 'policy', blocking_detail = v_detail, last_mutation_at_ms = v_now
            WHERE x.execution_id = ANY (v_queue);
        END IF;
    END IF;

    -- Keys with room hand it to their waiters, best first: straight into the claimable set
    -- when the policy has no limit of its own, else into the policy's queue.
    FOR v_key, v_held IN SELECT h.concurrency_key, h.holders FROM ff_quota_key_holders(p_policy, v_freed) h
                         ORDER BY h.concurrency_key LOOP
        v_room := v_pol.max_concurrent_per_key - v_held;
        CONTINUE WHEN v_room <= 0;
        WITH w AS (
            SELECT x.execution_id FROM ff_execution x
            WHERE x.quota_policy_id = p_policy AND x.concurrency_key = v_key
              AND x.eligibility_state = 'blocked_by_quota' AND x.admission_wait = 'key'
            ORDER BY -x.priority, x.eligible_at_ms, x.seq
            LIMIT v_room
            FOR UPDATE OF x SKIP LOCKED
        ),
        upd AS (
            UPDATE ff_execution e SET
                eligibility_state = CASE WHEN v_bounded THEN e.eligibility_state ELSE 'eligible_now' END,
                blocking_reason = CASE WHEN v_bounded THEN e.blocking_reason ELSE 'waiting_for_worker' END,
                admission_wait = CASE WHEN v_bounded THEN 'policy' END,
                blocking_detail = CASE WHEN v_bounded THEN 'waiting for a slot of its quota policy' END,
                last_mutation_at_ms = v_now
            FROM w WHERE e.execution_id = w.execution_id
            RETURNING e.lane_id
        )
        SELECT count(*), array_agg(DISTINCT u.lane_id) INTO v_n, v_more FROM upd u;
        IF v_n > 0 AND NOT v_bounded THEN
            v_delta := v_delta + v_n;
            v_lanes := v_lanes || v_more;
        END IF;
    END LOOP;

    IF v_bounded THEN
        -- The policy's queue takes the room there is (at most 1000 per settlement; the
        -- reconciler admits the rest).
        v_room := least(coalesce(v_pol.max_concurrent - v_pol.active, 1000),
                        coalesce(v_pol.max_requests_per_window - v_pol.window_count, 1000), 1000);
        IF v_room > 0 THEN
            WITH w AS (
                SELECT x.execution_id FROM ff_execution x
                WHERE x.quota_policy_id = p_policy AND x.eligibility_state = 'blocked_by_quota'
                  AND x.admission_wait = 'policy'
                ORDER BY -x.priority, x.eligible_at_ms, x.seq
                LIMIT v_room
                FOR UPDATE OF x SKIP LOCKED
            ),
            upd AS (
                UPDATE ff_execution e SET eligibility_state = 'eligible_now', blocking_reason = 'waiting_for_worker',
                       admission_wait = NULL, blocking_detail = NULL, last_mutation_at_ms = v_now
                FROM w WHERE e.execution_id = w.execution_id
                RETURNING e.execution_id, e.lane_id
            ),
            win AS (
                INSERT INTO ff_quota_window (quota_policy_id, admitted_at_ms, execution_id)
                SELECT p_policy, v_now, u.execution_id FROM upd u WHERE v_pol.window_ms IS NOT NULL
            )
            SELECT count(*), array_agg(DISTINCT u.lane_id) INTO v_n, v_more FROM upd u;
            IF v_n > 0 THEN
                v_pol.active := v_pol.active + v_n;
                IF v_pol.window_ms IS NOT NULL THEN
                    v_pol.window_count := v_pol.window_count + v_n;
                END IF;
                v_lanes := v_lanes || v_more;
            END IF;
        END IF;

        -- Waiters held back only by the rate window are admitted when its oldest entry ages out.
        v_next := NULL;
        IF v_pol.window_ms IS NOT NULL AND v_pol.window_count >= v_pol.max_requests_per_window
           AND (v_pol.max_concurrent IS NULL OR v_pol.active < v_pol.max_concurrent)
           AND EXISTS (SELECT 1 FROM ff_execution x WHERE x.quota_policy_id = p_policy
                       AND x.eligibility_state = 'blocked_by_quota' AND x.admission_wait = 'policy') THEN
            SELECT min(w.admitted_at_ms) + v_pol.window_ms + v_pol.jitter_ms INTO v_next
            FROM ff_quota_window w WHERE w.quota_policy_id = p_policy;
            IF v_next IS DISTINCT FROM v_pol.next_admit_at_ms THEN
                PERFORM pg_notify('ff_quota_timer', v_next::text);
            END IF;
        END IF;
        UPDATE ff_quota_policy SET active = v_pol.active, window_count = v_pol.window_count,
               next_admit_at_ms = v_next, updated_at_ms = v_now
        WHERE quota_policy_id = p_policy;
    ELSIF v_delta <> 0 THEN
        UPDATE ff_quota_stripe SET delta = delta + v_delta
        WHERE quota_policy_id = p_policy AND stripe = (pg_backend_pid() % 64)::smallint;
    END IF;

    -- Parked executions: settle again after commit, for a release this settlement did not see.
    IF cardinality(v_keywait) > 0 OR cardinality(v_queue) > 0 THEN
        INSERT INTO ff_quota_settle_request (quota_policy_id) VALUES (p_policy);
        PERFORM pg_notify('ff_quota_timer', v_now::text);
    END IF;
    IF cardinality(v_lanes) > 0 THEN
        SELECT array_agg(DISTINCT l) INTO v_lanes FROM unnest(v_lanes) l;
        PERFORM ff_bump_claim_generation(v_lanes);
        PERFORM pg_notify('ff_lane_ready', l) FROM unnest(v_lanes) l;
    END IF;
    PERFORM set_config('ff.quota_settling', 'off', true);
END
$$;

-- Statement trigger: settles every policy the statement's rows noted, in policy id order.
CREATE FUNCTION ff_quota_settle() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_notes jsonb := ('[' || rtrim(current_setting('ff.quota_notes', true), ',') || ']')::jsonb;
    v_policy uuid;
    v_policies uuid[];
BEGIN
    PERFORM set_config('ff.quota_notes', '', true);
    SELECT array_agg(DISTINCT (n->>0)::uuid ORDER BY (n->>0)::uuid) INTO v_policies FROM jsonb_array_elements(v_notes) n;
    IF cardinality(v_policies) = 1 THEN
        PERFORM ff_quota_apply(v_policies[1], v_notes);
        RETURN NULL;
    END IF;
    FOREACH v_policy IN ARRAY v_policies LOOP
        PERFORM ff_quota_apply(v_policy,
                               (SELECT jsonb_agg(n) FROM jsonb_array_elements(v_notes) n WHERE (n->>0)::uuid = v_policy));
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER ff_quota_hold_taken AFTER INSERT ON ff_execution
    FOR EACH ROW
    WHEN (NEW.quota_policy_id IS NOT NULL
          AND ff_quota_hold(NEW.lifecycle_phase, NEW.eligibility_state, NEW.admission_wait) <> 0
          AND ff_note_quota_change(NEW.quota_policy_id, NEW.concurrency_key, NEW.execution_id, 0,
                                   ff_quota_hold(NEW.lifecycle_phase, NEW.eligibility_state, NEW.admission_wait)))
    EXECUTE FUNCTION ff_quota_settle();

CREATE TRIGGER ff_quota_hold_changed AFTER UPDATE ON ff_execution
    FOR EACH ROW
    WHEN (NEW.quota_policy_id IS NOT NULL
          AND ff_quota_hold(OLD.lifecycle_phase, OLD.eligibility_state, OLD.admission_wait)
              <> ff_quota_hold(NEW.lifecycle_phase, NEW.eligibility_state, NEW.admission_wait)
          AND ff_note_quota_change(NEW.quota_policy_id, NEW.concurrency_key, NEW.execution_id,
                                   ff_quota_hold(OLD.lifecycle_phase, OLD.eligibility_state, OLD.admission_wait),
                                   ff_quota_hold(NEW.lifecycle_phase, NEW.eligibility_state, NEW.admission_wait)))
    EXECUTE FUNCTION ff_quota_settle();

CREATE TRIGGER ff_quota_settle_insert AFTER INSERT ON ff_execution
    FOR EACH STATEMENT
    WHEN (coalesce(current_setting('ff.quota_notes', true), '') <> '')
    EXECUTE FUNCTION ff_quota_settle();

CREATE TRIGGER ff_quota_settle_update AFTER UPDATE ON ff_execution
    FOR EACH STATEMENT
    WHEN (coalesce(current_setting('ff.quota_notes', true), '') <> '')
    EXECUTE FUNCTION ff_quota_settle();

-- Recounts a policy's slots from what holds them (waiting for stripes in use, so no release is
-- counted twice or missed), drops lapsed admissions, and admits waiters into any room. Returns
-- whether the count was wrong.
CREATE FUNCTION ff_quota_recount(p_policy uuid) RETURNS integer
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_stored integer;
    v_active integer;
BEGIN
    PERFORM 1 FROM ff_quota_policy WHERE quota_policy_id = p_policy FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    v_stored := ff_quota_fold(p_policy, true);
    DELETE FROM ff_quota_admission a WHERE a.quota_policy_id = p_policy AND a.expires_at_ms <= ff_now_ms();
    SELECT (SELECT count(*) FROM ff_execution x
            WHERE x.quota_policy_id = p_policy
              AND (x.lifecycle_phase = 'active' OR (x.lifecycle_phase = 'runnable' AND x.eligibility_state = 'eligible_now')
                   OR (x.eligibility_state = 'blocked_by_quota' AND x.admission_wait = 'policy'))
              AND ff_quota_hold(x.lifecycle_phase, x.eligibility_state, x.admission_wait) = 2)
         + (SELECT count(*) FROM ff_quota_admission a WHERE a.quota_policy_id = p_policy)
    INTO v_active;
    IF v_active <> v_stored THEN
        UPDATE ff_quota_policy SET active = v_active WHERE quota_policy_id = p_policy;
    END IF;
    PERFORM ff_quota_apply(p_policy, '[]'::jsonb, true);
    RETURN (v_active <> v_stored)::integer;
END
$$;

-- Admission outside the claim path. The stored limits apply; given ones only tighten them.
-- Returns admitted | already_admitted | rate_exceeded | concurrency_exceeded | not_found, and
-- for rate_exceeded the milliseconds until the window has room.
CREATE FUNCTION ff_check_admission(p_policy uuid, p_execution uuid, p_window_ms bigint, p_rate integer,
                                   p_cap integer, p_jitter_ms bigint, OUT status text, OUT retry_after_ms bigint)
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_pol ff_quota_policy%ROWTYPE;
    v_now bigint := ff_now_ms();
    v_window bigint;
    v_rate integer;
    v_cap integer;
    v_count integer;
BEGIN
    SELECT * INTO v_pol FROM ff_quota_policy WHERE quota_policy_id = p_policy FOR UPDATE;
    IF NOT FOUND THEN
        status := 'not_found';
        RETURN;
    END IF;
    v_pol.active := ff_quota_fold(p_policy);
    IF EXISTS (SELECT 1 FROM ff_quota_admission a WHERE a.quota_policy_id = p_policy AND a.execution_id = p_execution
               AND (a.expires_at_ms IS NULL OR a.expires_at_ms > v_now)) THEN
        status := 'already_admitted';
        RETURN;
    END IF;
    DELETE FROM ff_quota_admission a WHERE a.quota_policy_id = p_policy AND a.execution_id = p_execution;
    v_window := greatest(v_pol.window_ms, p_window_ms);
    v_rate := least(v_pol.max_requests_per_window, p_rate);
    v_cap := least(v_pol.max_concurrent, p_cap);
    IF v_window IS NOT NULL AND v_rate IS NOT NULL THEN
        SELECT count(*) INTO v_count FROM ff_quota_window w
        WHERE w.quota_policy_id = p_policy AND w.admitted_at_ms > v_now - v_window;
        IF v_count >= v_rate THEN
            status := 'rate_exceeded';
            SELECT greatest(min(w.admitted_at_ms) + v_window - v_now, 1) + coalesce(p_jitter_ms, v_pol.jitter_ms)
            INTO retry_after_ms FROM ff_quota_window w
            WHERE w.quota_policy_id = p_policy AND w.admitted_at_ms > v_now - v_window;
            RETURN;
        END IF;
    END IF;
    IF v_cap IS NOT NULL AND v_pol.active >= v_cap THEN
        status := 'concurrency_exceeded';
        RETURN;
    END IF;
    INSERT INTO ff_quota_admission (quota_policy_id, execution_id, admitted_at_ms, expires_at_ms)
    VALUES (p_policy, p_execution, v_now, v_now + v_window);
    IF v_window IS NOT NULL THEN
        INSERT INTO ff_quota_window (quota_policy_id, admitted_at_ms, execution_id) VALUES (p_policy, v_now, p_execution);
    END IF;
    UPDATE ff_quota_policy SET active = active + 1,
           window_count = window_count + (v_pol.window_ms IS NOT NULL)::int, updated_at_ms = v_now
    WHERE quota_policy_id = p_policy;
    status := 'admitted';
END
$$;

-- Gives back an admission of ff_check_admission and admits waiters into its slot.
CREATE FUNCTION ff_release_admission(p_policy uuid, p_execution uuid) RETURNS text
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_live boolean;
BEGIN
    PERFORM 1 FROM ff_quota_policy WHERE quota_policy_id = p_policy FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'not_found';
    END IF;
    DELETE FROM ff_quota_admission a WHERE a.quota_policy_id = p_policy AND a.execution_id = p_execution
    RETURNING a.expires_at_ms IS NULL OR a.expires_at_ms > ff_now_ms() INTO v_live;
    IF NOT coalesce(v_live, false) THEN
        RETURN 'not_held';
    END IF;
    UPDATE ff_quota_policy SET active = greatest(active - 1, 0) WHERE quota_policy_id = p_policy;
    PERFORM ff_quota_apply(p_policy, '[]'::jsonb);
    RETURN 'released';
END
$$;

-- Budgets --------------------------------------------------------------------------------

-- Where work enters the claimable set: an execution drawing on an exhausted budget waits for
-- it instead. (Not while a quota settlement admits: that execution was checked when it
-- entered, and the claim checks again.)
CREATE FUNCTION ff_budget_gate() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_budget uuid;
BEGIN
    IF (TG_OP = 'UPDATE' AND OLD.eligibility_state = 'eligible_now')
       OR coalesce(current_setting('ff.quota_settling', true), '') = 'on' THEN
        RETURN NEW;
    END IF;
    SELECT b.budget_id INTO v_budget FROM ff_budget b
    WHERE b.budget_id = ANY (NEW.budget_ids) AND b.exhausted ORDER BY b.budget_id LIMIT 1;
    IF FOUND THEN
        NEW.eligibility_state := 'blocked_by_budget';
        NEW.blocking_reason := 'waiting_for_budget';
        NEW.admission_wait := NULL;
        NEW.blocking_detail := format('budget %s is exhausted', v_budget);
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER ff_budget_gate BEFORE INSERT OR UPDATE ON ff_execution
    FOR EACH ROW
    WHEN (NEW.budget_ids IS NOT NULL AND NEW.eligibility_state = 'eligible_now')
    EXECUTE FUNCTION ff_budget_gate();

CREATE FUNCTION ff_budget_member_added() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    INSERT INTO ff_budget_member (budget_id, execution_id)
    SELECT b, NEW.execution_id FROM unnest(NEW.budget_ids) b ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

CREATE TRIGGER ff_budget_member_added AFTER INSERT ON ff_execution
    FOR EACH ROW
    WHEN (NEW.budget_ids IS NOT NULL)
    EXECUTE FUNCTION ff_budget_member_added();

-- Parks the budget's executions that are waiting to be claimed (eligible, or queued by their
-- quota policy). Returns how many.
CREATE FUNCTION ff_budget_block_members(p_budget uuid) RETURNS bigint
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_n bigint;
BEGIN
    WITH upd AS (
        UPDATE ff_execution e SET eligibility_state = 'blocked_by_budget', blocking_reason = 'waiting_for_budget',
               admission_wait = NULL, blocking_detail = format('budget %s is exhausted', p_budget),
               last_mutation_at_ms = ff_now_ms()
        FROM ff_budget_member m
        WHERE m.budget_id = p_budget AND e.execution_id = m.execution_id AND e.lifecycle_phase = 'runnable'
          AND e.eligibility_state IN ('eligible_now', 'blocked_by_quota')
        RETURNING 1
    )
    SELECT count(*) INTO v_n FROM upd;
    RETURN v_n;
END
$$;

-- Lets the budget's parked executions go (ff_budget_gate parks again those drawing on another
-- exhausted budget; their quota policies admit them or queue them). Returns how many became
-- claimable or queued.
CREATE FUNCTION ff_budget_unblock_members(p_budget uuid) RETURNS bigint
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_n bigint;
    v_lanes text[];
BEGIN
    WITH upd AS (
        UPDATE ff_execution e SET eligibility_state = 'eligible_now', blocking_reason = 'waiting_for_worker',
               blocking_detail = NULL, last_mutation_at_ms = ff_now_ms()
        FROM ff_budget_member m
        WHERE m.budget_id = p_budget AND e.execution_id = m.execution_id AND e.lifecycle_phase = 'runnable'
          AND e.eligibility_state = 'blocked_by_budget'
        RETURNING e.lane_id, e.eligibility_state
    )
    SELECT count(*) FILTER (WHERE u.eligibility_state <> 'blocked_by_budget'), array_agg(DISTINCT u.lane_id)
    INTO v_n, v_lanes FROM upd u;
    IF v_n > 0 THEN
        PERFORM ff_bump_claim_generation(v_lanes);
        PERFORM pg_notify('ff_lane_ready', l) FROM unnest(v_lanes) l;
    END IF;
    RETURN v_n;
END
$$;

-- Re-derives exhaustion after usage fell or limits changed: a strict budget stays exhausted
-- while some dimension is at or past its hard limit; one that stops being exhausted lets its
-- executions go, one that becomes exhausted parks them. Returns how many were let go.
CREATE FUNCTION ff_budget_rederive(p_budget uuid) RETURNS bigint
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_was boolean;
    v_now_exhausted boolean;
BEGIN
    SELECT b.exhausted, b.enforcement_mode = 'strict' AND EXISTS (
               SELECT 1 FROM ff_budget_dimension d
               WHERE d.budget_id = p_budget AND d.hard_limit IS NOT NULL AND d.usage >= d.hard_limit)
    INTO v_was, v_now_exhausted FROM ff_budget b WHERE b.budget_id = p_budget;
    IF v_was = v_now_exhausted THEN
        RETURN 0;
    END IF;
    UPDATE ff_budget SET exhausted = v_now_exhausted, updated_at_ms = ff_now_ms() WHERE budget_id = p_budget;
    IF v_now_exhausted THEN
        PERFORM ff_budget_block_members(p_budget);
        RETURN 0;
    END IF;
    RETURN ff_budget_unblock_members(p_budget);
END
$$;

-- A usage report, all or nothing: refused with nothing applied when a delta would pass its
-- dimension's hard limit. With a dedup key it applies once; a replay returns the first outcome
-- ('already_applied' for an execution's spend). p_execution attributes the usage to an
-- execution. Returns the outcome as ReportUsageResult's JSON, or {"status": "not_found"}.
CREATE FUNCTION ff_report_usage(p_budget uuid, p_dims text[], p_deltas bigint[], p_dedup text, p_execution uuid,
                                p_spend boolean) RETURNS jsonb
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_b ff_budget%ROWTYPE;
    v_now bigint := ff_now_ms();
    v_cached jsonb;
    v_out jsonb;
    v_dim text;
    v_usage bigint;
    v_limit bigint;
BEGIN
    SELECT * INTO v_b FROM ff_budget WHERE budget_id = p_budget FOR UPDATE;
    IF NOT FOUND THEN
        RETURN '{"status": "not_found"}'::jsonb;
    END IF;
    IF p_dedup IS NOT NULL THEN
        SELECT r.outcome INTO v_cached FROM ff_budget_report r
        WHERE r.budget_id = p_budget AND r.dedup_key = p_dedup AND r.expires_at_ms > v_now;
        IF FOUND THEN
            RETURN CASE WHEN p_spend THEN '{"status": "already_applied"}'::jsonb ELSE v_cached END;
        END IF;
    END IF;
    INSERT INTO ff_budget_dimension (budget_id, dimension)
    SELECT p_budget, d FROM unnest(p_dims) d ORDER BY d ON CONFLICT DO NOTHING;

    SELECT u.d, x.usage, x.hard_limit INTO v_dim, v_usage, v_limit
    FROM unnest(p_dims, p_deltas) WITH ORDINALITY u(d, delta, ord)
    JOIN ff_budget_dimension x ON x.budget_id = p_budget AND x.dimension = u.d
    WHERE x.hard_limit IS NOT NULL AND x.usage + u.delta > x.hard_limit
    ORDER BY u.ord LIMIT 1;
    IF FOUND THEN
        v_out := jsonb_build_object('status', 'hard_breach', 'dimension', v_dim, 'current_usage', v_usage,
                                    'hard_limit', v_limit);
        UPDATE ff_budget SET breach_count = breach_count + 1, last_breach_at_ms = v_now, last_breach_dim = v_dim,
               exhausted = exhausted OR enforcement_mode = 'strict', updated_at_ms = v_now
        WHERE budget_id = p_budget;
        IF v_b.enforcement_mode = 'strict' AND NOT v_b.exhausted THEN
            PERFORM ff_budget_block_members(p_budget);
        END IF;
    ELSE
        UPDATE ff_budget_dimension x SET usage = x.usage + u.delta, updated_at_ms = v_now
        FROM unnest(p_dims, p_deltas) u(d, delta)
        WHERE x.budget_id = p_budget AND x.dimension = u.d;
        IF p_execution IS NOT NULL THEN
            INSERT INTO ff_budget_spend AS s (budget_id, execution_id, dimension, amount)
            SELECT p_budget, p_execution, u.d, u.delta FROM unnest(p_dims, p_deltas) u(d, delta) ORDER BY u.d
            ON CONFLICT (budget_id, execution_id, dimension) DO UPDATE SET amount = s.amount + EXCLUDED.amount;
        END IF;
        SELECT u.d, x.usage, x.soft_limit INTO v_dim, v_usage, v_limit
        FROM unnest(p_dims) WITH ORDINALITY u(d, ord)
        JOIN ff_budget_dimension x ON x.budget_id = p_budget AND x.dimension = u.d
        WHERE x.soft_limit IS NOT NULL AND x.usage > x.soft_limit
        ORDER BY u.ord LIMIT 1;
        IF FOUND THEN
            v_out := jsonb_build_object('status', 'soft_breach', 'dimension', v_dim, 'current_usage', v_usage,
                                        'soft_limit', v_limit);
            UPDATE ff_budget SET soft_breach_count = soft_breach_count + 1, updated_at_ms = v_now
            WHERE budget_id = p_budget;
        ELSE
            v_out := '{"status": "ok"}'::jsonb;
        END IF;
        -- Usage at a hard limit leaves no room: a strict budget is exhausted by it.
        PERFORM ff_budget_rederive(p_budget);
    END IF;
    IF p_dedup IS NOT NULL THEN
        INSERT INTO ff_budget_report AS r (budget_id, dedup_key, outcome, applied_at_ms, expires_at_ms)
        VALUES (p_budget, p_dedup, v_out, v_now, v_now + 86400000)
        ON CONFLICT (budget_id, dedup_key) DO UPDATE SET outcome = EXCLUDED.outcome,
            applied_at_ms = EXCLUDED.applied_at_ms, expires_at_ms = EXCLUDED.expires_at_ms;
    END IF;
    RETURN v_out;
END
$$;

-- Zeroes a budget's usage and its attributions, schedules its next reset, and lets its
-- executions go. Returns how many were let go, or -1 when no such budget exists.
CREATE FUNCTION ff_reset_budget(p_budget uuid) RETURNS bigint
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_n bigint := 0;
BEGIN
    UPDATE ff_budget SET exhausted = false, last_breach_at_ms = NULL, last_breach_dim = NULL,
           last_reset_at_ms = ff_now_ms(), updated_at_ms = ff_now_ms(),
           next_reset_at_ms = CASE WHEN reset_interval_ms > 0 THEN ff_now_ms() + reset_interval_ms END
    WHERE budget_id = p_budget;
    IF NOT FOUND THEN
        RETURN -1;
    END IF;
    UPDATE ff_budget_dimension SET usage = 0, updated_at_ms = ff_now_ms() WHERE budget_id = p_budget;
    DELETE FROM ff_budget_spend WHERE budget_id = p_budget;
    v_n := ff_budget_unblock_members(p_budget);
    RETURN v_n;
END
$$;

-- Claims ---------------------------------------------------------------------------------

-- ff_claim skips executions reserved for a worker by a live grant and those drawing on an
-- exhausted budget (parked by the breach, unless a race let one through), and claims by id in
-- three ways: a reclaim after a lost lease, a resumed attempt, or with a grant (whatever kind
-- of claim the execution admits). Otherwise unchanged.
DROP FUNCTION ff_claim(text, text[], text[], bigint, text, uuid, boolean, boolean, integer, bigint, bigint, bigint,
                       boolean);

CREATE FUNCTION ff_claim(p_lane text, p_capabilities text[], p_worker_instance_ids text[], p_ttl_ms bigint,
                         p_worker_id text, p_execution_id uuid DEFAULT NULL, p_synchronous boolean DEFAULT true,
                         p_with_context boolean DEFAULT false, p_after_neg_priority integer DEFAULT NULL,
                         p_after_eligible_at_ms bigint DEFAULT NULL, p_after_seq bigint DEFAULT NULL,
                         p_after_generation bigint DEFAULT NULL, p_by_id text DEFAULT NULL)
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

-- Lapsed claim grants: the grant rows go and the reserved executions are claimable by anyone
-- (the claim already ignores a lapsed reservation; this wakes the lanes' claimers). Returns
-- how many grants were reaped.
CREATE FUNCTION ff_reap_claim_grants(p_limit integer) RETURNS bigint
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_n bigint;
    v_lanes text[];
BEGIN
    WITH gone AS (
        DELETE FROM ff_claim_grant g
        WHERE g.grant_id IN (SELECT g2.grant_id FROM ff_claim_grant g2 WHERE g2.expires_at_ms <= ff_now_ms()
                             ORDER BY g2.expires_at_ms LIMIT p_limit FOR UPDATE SKIP LOCKED)
        RETURNING g.execution_id
    ),
    freed AS (
        UPDATE ff_execution e SET grant_expires_at_ms = NULL
        FROM gone WHERE e.execution_id = gone.execution_id AND e.grant_expires_at_ms <= ff_now_ms()
        RETURNING e.lane_id
    )
    SELECT (SELECT count(*) FROM gone), (SELECT array_agg(DISTINCT f.lane_id) FROM freed f) INTO v_n, v_lanes;
    IF cardinality(v_lanes) > 0 THEN
        PERFORM ff_bump_claim_generation(v_lanes);
        PERFORM pg_notify('ff_lane_ready', l) FROM unnest(v_lanes) l;
    END IF;
    RETURN v_n;
END
$$;

-- A function that turns sequential scans off makes the planner price any unavoidable one (a
-- tiny table, a set-returning function) at an enormous cost, and that cost triggers JIT
-- compilation, hundreds of milliseconds on every execution. The engine's functions run short
-- statements that never gain from JIT: those that already set planner options turn it off too.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = current_schema() AND p.proname LIKE 'ff\_%' AND p.proconfig IS NOT NULL
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET jit = off', f);
    END LOOP;
END
$$;

UPDATE ff_schema SET version = 9;
