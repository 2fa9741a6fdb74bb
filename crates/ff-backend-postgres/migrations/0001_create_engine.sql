-- FlowFabric engine schema, version 1.
--
-- One authoritative row per execution (ff_execution) holds its state vector and its current (or
-- last) lease. Attempts are history rows, one per attempt, never reused by a later attempt.
-- Frames belong to an attempt. ff_event is the append-only event log, written in the same
-- transaction as the state change it records. There are no foreign keys: every attempt, frame,
-- grant and event row is written by a statement that has just locked or updated its execution
-- row, and the hot path does not pay for a second lookup per insert. All times are milliseconds since the epoch in database time.
-- partition_key is an ordinary column: nothing is physically partitioned.

CREATE FUNCTION ff_now_ms() RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT (date_part('epoch', statement_timestamp()) * 1000)::bigint $$;

CREATE TABLE ff_schema (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version integer NOT NULL
);
INSERT INTO ff_schema (version) VALUES (1);

-- State literals are enum types: the database rejects any other value without evaluating a CHECK
-- expression on every write (the hot path writes these rows several times per execution).
CREATE TYPE ff_lifecycle_phase AS ENUM ('submitted', 'runnable', 'active', 'suspended', 'terminal');
CREATE TYPE ff_ownership_state AS ENUM ('unowned', 'leased', 'lease_expired_reclaimable', 'lease_revoked');
CREATE TYPE ff_eligibility_state AS ENUM ('eligible_now', 'not_eligible_until_time', 'blocked_by_dependencies',
    'blocked_by_budget', 'blocked_by_quota', 'blocked_by_route', 'blocked_by_lane_state', 'blocked_by_operator',
    'not_applicable');
CREATE TYPE ff_blocking_reason AS ENUM ('none', 'waiting_for_worker', 'waiting_for_retry_backoff',
    'waiting_for_resume_delay', 'waiting_for_delay', 'waiting_for_signal', 'waiting_for_children',
    'waiting_for_capable_worker', 'paused_by_operator');
CREATE TYPE ff_terminal_outcome AS ENUM ('none', 'success', 'failed', 'cancelled', 'expired', 'skipped');
CREATE TYPE ff_attempt_state AS ENUM ('none', 'pending_first_attempt', 'running_attempt', 'attempt_interrupted',
    'pending_retry_attempt', 'pending_replay_attempt', 'attempt_terminal');
CREATE TYPE ff_attempt_type AS ENUM ('initial', 'retry', 'reclaim');
CREATE TYPE ff_attempt_lifecycle AS ENUM ('started', 'suspended', 'ended_success', 'ended_failure', 'ended_cancelled',
    'ended_expired', 'interrupted_reclaimed');
CREATE TYPE ff_frame_kind AS ENUM ('stdout', 'stderr', 'event', 'blob');
CREATE TYPE ff_event_kind AS ENUM ('lease_acquired', 'lease_reclaimed', 'lease_expired', 'lease_released',
    'retry_scheduled', 'completed', 'failed', 'cancelled', 'expired');

CREATE TABLE ff_lane (
    lane_id text PRIMARY KEY CHECK (octet_length(lane_id) BETWEEN 1 AND 64),
    registered_at_ms bigint NOT NULL DEFAULT ff_now_ms()
);

-- The invariants of an execution row (the same ones StateVector::check states in ff-core):
-- terminal <=> outcome set <=> completed_at set; a lease-bearing ownership exactly while active,
-- with the lease recorded; eligibility exactly while runnable; a running attempt exactly while
-- active; terminal => attempt ended; a result only on success; counters and ranges sane.
CREATE FUNCTION ff_execution_state_is_consistent(
    phase ff_lifecycle_phase, ownership ff_ownership_state, eligibility ff_eligibility_state,
    attempt ff_attempt_state, outcome ff_terminal_outcome, completed_at_ms bigint, lease_id uuid,
    lease_expires_at_ms bigint, worker_instance_id text, attempt_id uuid, no_result boolean,
    current_attempt_index integer, total_attempt_count integer, retry_count integer, lease_reclaim_count integer,
    priority integer, progress_pct smallint)
    RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE
    AS $$
BEGIN
    RETURN (phase = 'terminal') = (outcome <> 'none')
       AND (phase = 'terminal') = (completed_at_ms IS NOT NULL)
       AND (ownership <> 'unowned') = (phase = 'active')
       AND (eligibility <> 'not_applicable') = (phase = 'runnable')
       AND (attempt = 'running_attempt') = (phase = 'active')
       AND (phase <> 'terminal' OR attempt = 'attempt_terminal')
       AND (ownership = 'unowned' OR (lease_id IS NOT NULL AND lease_expires_at_ms IS NOT NULL
                                      AND worker_instance_id IS NOT NULL AND attempt_id IS NOT NULL))
       AND (no_result OR outcome = 'success')
       AND current_attempt_index BETWEEN 0 AND total_attempt_count
       AND retry_count >= 0 AND lease_reclaim_count >= 0
       AND priority BETWEEN 0 AND 9000
       AND coalesce(progress_pct BETWEEN 0 AND 100, true);
END
$$;

CREATE TABLE ff_execution (
    execution_id uuid PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    partition_key smallint NOT NULL,
    namespace text NOT NULL DEFAULT '',
    lane_id text NOT NULL,
    execution_kind text NOT NULL,
    flow_id uuid,
    priority integer NOT NULL,
    creator_identity text,
    idempotency_key text,
    payload_encoding text,
    input_payload bytea NOT NULL,
    tags jsonb NOT NULL DEFAULT '{}',
    required_capabilities text[] NOT NULL DEFAULT '{}',
    policy jsonb NOT NULL DEFAULT '{}',
    max_retries integer NOT NULL,
    max_reclaim_count integer NOT NULL,
    attempt_timeout_ms bigint,

    lifecycle_phase ff_lifecycle_phase NOT NULL,
    ownership_state ff_ownership_state NOT NULL,
    eligibility_state ff_eligibility_state NOT NULL,
    blocking_reason ff_blocking_reason NOT NULL,
    terminal_outcome ff_terminal_outcome NOT NULL,
    attempt_state ff_attempt_state NOT NULL,
    blocking_detail text,
    -- Earliest claim time while claimable (creation, delay end, backoff end, lease loss).
    eligible_at_ms bigint NOT NULL,
    deadline_at_ms bigint,

    current_attempt_index integer NOT NULL DEFAULT 0,
    total_attempt_count integer NOT NULL DEFAULT 0,
    retry_count integer NOT NULL DEFAULT 0,
    lease_reclaim_count integer NOT NULL DEFAULT 0,

    -- The current lease while leased; the last lease afterwards (so that a replayed call can be
    -- told apart from a stale one).
    lease_id uuid,
    lease_epoch bigint NOT NULL DEFAULT 0,
    lease_expires_at_ms bigint,
    lease_ttl_ms bigint,
    last_heartbeat_at_ms bigint,
    worker_id text,
    worker_instance_id text,
    attempt_id uuid,
    attempt_deadline_at_ms bigint,

    progress_pct smallint,
    progress_message text,
    result bytea,
    created_at_ms bigint NOT NULL DEFAULT ff_now_ms(),
    started_at_ms bigint,
    completed_at_ms bigint,
    last_mutation_at_ms bigint NOT NULL DEFAULT ff_now_ms(),

    -- The state invariants, as one function call: a CHECK expression is re-read from the catalog
    -- on every write, and one call is far cheaper to re-read than a dozen expressions.
    CONSTRAINT state_is_consistent CHECK (ff_execution_state_is_consistent(lifecycle_phase, ownership_state,
        eligibility_state, attempt_state, terminal_outcome, completed_at_ms, lease_id, lease_expires_at_ms,
        worker_instance_id, attempt_id, result IS NULL, current_attempt_index, total_attempt_count, retry_count,
        lease_reclaim_count, priority, progress_pct))
);

-- The claim path: best (priority, eligible time, creation order) claimable execution of a lane.
-- Claimable now or later: a runnable execution whose only wait is time, or an active one whose
-- lease was lost and awaits a new attempt. ff_claim repeats this predicate verbatim.
CREATE INDEX ff_execution_claim_idx ON ff_execution (lane_id, priority DESC, eligible_at_ms, seq)
    WHERE ((lifecycle_phase = 'runnable' AND eligibility_state IN ('eligible_now', 'not_eligible_until_time'))
       OR ownership_state IN ('lease_expired_reclaimable', 'lease_revoked'));
-- Reconcilers: lease expiry, delayed promotion, deadlines, attempt timeouts.
CREATE INDEX ff_execution_lease_expiry_idx ON ff_execution (lease_expires_at_ms) WHERE ownership_state = 'leased';
CREATE INDEX ff_execution_delayed_idx ON ff_execution (eligible_at_ms) WHERE eligibility_state = 'not_eligible_until_time';
CREATE INDEX ff_execution_deadline_idx ON ff_execution (deadline_at_ms)
    WHERE deadline_at_ms IS NOT NULL AND lifecycle_phase <> 'terminal';
CREATE INDEX ff_execution_attempt_deadline_idx ON ff_execution (attempt_deadline_at_ms)
    WHERE attempt_deadline_at_ms IS NOT NULL AND lifecycle_phase = 'active';
-- Listings and idempotency.
CREATE INDEX ff_execution_partition_idx ON ff_execution (partition_key, execution_id);
CREATE UNIQUE INDEX ff_execution_idempotency_idx ON ff_execution (namespace, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Queue tables churn: vacuum and analyze them early so dead claim-index entries and stale
-- statistics do not build up.
ALTER TABLE ff_execution SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02,
                              autovacuum_vacuum_threshold = 1000, autovacuum_analyze_threshold = 1000);

CREATE TABLE ff_attempt (
    execution_id uuid NOT NULL,
    attempt_index integer NOT NULL,
    attempt_id uuid NOT NULL,
    attempt_type ff_attempt_type NOT NULL,
    state ff_attempt_lifecycle NOT NULL,
    lease_id uuid NOT NULL,
    lease_epoch bigint NOT NULL,
    worker_id text NOT NULL,
    worker_instance_id text NOT NULL,
    started_at_ms bigint NOT NULL,
    ended_at_ms bigint,
    failure_class text,
    failure_message text,
    failure_detail text,
    frame_count bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (execution_id, attempt_index),
    -- started and suspended sort before every ended state.
    CONSTRAINT ended_iff_end_time CHECK ((state < 'ended_success') = (ended_at_ms IS NULL))
);

CREATE TABLE ff_frame (
    execution_id uuid NOT NULL,
    attempt_index integer NOT NULL,
    seq bigint NOT NULL CHECK (seq >= 1),
    kind ff_frame_kind NOT NULL,
    frame_type text NOT NULL,
    correlation_id text,
    bytes bytea NOT NULL CHECK (octet_length(bytes) <= 65536),
    appended_at_ms bigint NOT NULL,
    PRIMARY KEY (execution_id, attempt_index, seq)
);

CREATE TABLE ff_reclaim_grant (
    grant_key uuid PRIMARY KEY,
    execution_id uuid NOT NULL,
    worker_id text NOT NULL,
    worker_instance_id text NOT NULL,
    lane_id text NOT NULL,
    issued_at_ms bigint NOT NULL,
    expires_at_ms bigint NOT NULL CHECK (expires_at_ms > issued_at_ms)
);
CREATE INDEX ff_reclaim_grant_execution_idx ON ff_reclaim_grant (execution_id);

-- The event log. A reader resumes after a cursor (tx_id, event_id) and only reads events whose
-- transaction is older than every transaction still in flight (pg_snapshot_xmin), so an event
-- that commits late can never be skipped: identity values alone are not commit-ordered.
CREATE TABLE ff_event (
    tx_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
    event_id bigint GENERATED ALWAYS AS IDENTITY,
    kind ff_event_kind NOT NULL,
    execution_id uuid NOT NULL,
    partition_key smallint NOT NULL,
    namespace text NOT NULL,
    lane_id text NOT NULL,
    attempt_index integer,
    lease_epoch bigint,
    worker_instance_id text,
    occurred_at_ms bigint NOT NULL DEFAULT ff_now_ms(),
    PRIMARY KEY (tx_id, event_id)
);

-- The hot path as functions: PL/pgSQL keeps each statement's plan cached per session, so a
-- claim or a completion costs no planning. The planner settings pin every statement to index
-- paths: the candidate scan walks ff_execution_claim_idx in order (never sorts the lane), and a
-- plan cached while a table was still empty never degrades into a sequential scan.

-- Claims up to one execution per entry of p_worker_instance_ids (slot n goes to the n-th worker
-- instance) on lane p_lane, among those whose required capabilities are a subset of
-- p_capabilities: highest priority first, then earliest eligible, then creation order; or, when
-- p_execution_id is given, reclaims that one execution if its lease was lost. One statement
-- writes each lease, opens the attempt (a new one, or the interrupted one again when resuming)
-- and logs the lease event. (The attempt a reclaim supersedes was closed when its lease expired.)
-- p_synchronous = false lets the claim commit without waiting for its WAL flush.
CREATE FUNCTION ff_claim(p_lane text, p_capabilities text[], p_worker_instance_ids text[], p_ttl_ms bigint,
                         p_worker_id text, p_execution_id uuid DEFAULT NULL, p_synchronous boolean DEFAULT true)
    RETURNS TABLE (slot bigint, execution_id uuid, partition_key smallint, lane_id text, attempt_index integer,
                   attempt_id uuid, lease_id uuid, lease_epoch bigint, kind text, worker_instance_id text)
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
                  e.attempt_id, e.lease_id, e.lease_epoch, c.kind, e.worker_instance_id
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
           u.lease_epoch, u.kind, u.worker_instance_id
    FROM upd u;
END
$$;

-- Completes every item whose lease fence holds; returns the completed execution ids. One
-- statement for the whole batch.
CREATE FUNCTION ff_complete(p_ids uuid[], p_lease_ids uuid[], p_epochs bigint[], p_attempts integer[],
                            p_results bytea[])
    RETURNS SETOF uuid
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
        RETURNING e.execution_id, e.partition_key, e.namespace, e.lane_id, e.current_attempt_index, e.lease_epoch,
                  e.worker_instance_id
    ),
    att AS (
        UPDATE ff_attempt a SET state = 'ended_success', ended_at_ms = ff_now_ms()
        FROM upd u WHERE a.execution_id = u.execution_id AND a.attempt_index = u.current_attempt_index
    ),
    ev AS (
        INSERT INTO ff_event (kind, execution_id, partition_key, namespace, lane_id, attempt_index, lease_epoch,
                              worker_instance_id)
        SELECT 'completed', u.execution_id, u.partition_key, u.namespace, u.lane_id, u.current_attempt_index,
               u.lease_epoch, u.worker_instance_id
        FROM upd u
    )
    SELECT u.execution_id FROM upd u;
END
$$;
