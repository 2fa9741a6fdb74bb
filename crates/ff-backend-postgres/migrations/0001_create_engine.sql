-- FlowFabric engine schema, version 1.
--
-- One authoritative row per execution (ff_execution) holds its state vector and its current (or
-- last) lease. Attempts are history rows, one per attempt, never reused by a later attempt. Frames
-- belong to an attempt. ff_event is the append-only event log, written in the same transaction as
-- the state change it records. All times are milliseconds since the epoch in database time.
-- partition_key is an ordinary column: nothing is physically partitioned.

CREATE FUNCTION ff_now_ms() RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT (extract(epoch FROM statement_timestamp()) * 1000)::bigint $$;

CREATE TABLE ff_schema (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version integer NOT NULL
);
INSERT INTO ff_schema (version) VALUES (1);

CREATE TABLE ff_lane (
    lane_id text PRIMARY KEY CHECK (octet_length(lane_id) BETWEEN 1 AND 64),
    registered_at_ms bigint NOT NULL DEFAULT ff_now_ms()
);

CREATE TABLE ff_execution (
    execution_id uuid PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    partition_key smallint NOT NULL CHECK (partition_key >= 0),
    namespace text NOT NULL DEFAULT '',
    lane_id text NOT NULL,
    execution_kind text NOT NULL CHECK (execution_kind <> ''),
    flow_id uuid,
    priority integer NOT NULL CHECK (priority BETWEEN 0 AND 9000),
    creator_identity text,
    idempotency_key text,
    payload_encoding text,
    input_payload bytea NOT NULL,
    tags jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(tags) = 'object'),
    required_capabilities text[] NOT NULL DEFAULT '{}',
    policy jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(policy) = 'object'),
    max_retries integer NOT NULL CHECK (max_retries >= 0),
    max_reclaim_count integer NOT NULL CHECK (max_reclaim_count >= 0),
    attempt_timeout_ms bigint CHECK (attempt_timeout_ms > 0),

    lifecycle_phase text NOT NULL CHECK (lifecycle_phase IN
        ('submitted', 'runnable', 'active', 'suspended', 'terminal')),
    ownership_state text NOT NULL CHECK (ownership_state IN
        ('unowned', 'leased', 'lease_expired_reclaimable', 'lease_revoked')),
    eligibility_state text NOT NULL CHECK (eligibility_state IN
        ('eligible_now', 'not_eligible_until_time', 'blocked_by_dependencies', 'blocked_by_budget',
         'blocked_by_quota', 'blocked_by_route', 'blocked_by_lane_state', 'blocked_by_operator',
         'not_applicable')),
    blocking_reason text NOT NULL CHECK (blocking_reason IN
        ('none', 'waiting_for_worker', 'waiting_for_retry_backoff', 'waiting_for_resume_delay',
         'waiting_for_delay', 'waiting_for_signal', 'waiting_for_children',
         'waiting_for_capable_worker', 'paused_by_operator')),
    terminal_outcome text NOT NULL CHECK (terminal_outcome IN
        ('none', 'success', 'failed', 'cancelled', 'expired', 'skipped')),
    attempt_state text NOT NULL CHECK (attempt_state IN
        ('none', 'pending_first_attempt', 'running_attempt', 'attempt_interrupted',
         'pending_retry_attempt', 'pending_replay_attempt', 'attempt_terminal')),
    blocking_detail text,
    -- Claimable now or later: a runnable execution whose only wait is time, or an active one
    -- whose lease was lost and awaits a new attempt.
    claimable boolean GENERATED ALWAYS AS (
        (lifecycle_phase = 'runnable' AND eligibility_state IN ('eligible_now', 'not_eligible_until_time'))
        OR ownership_state IN ('lease_expired_reclaimable', 'lease_revoked')) STORED,
    -- Earliest claim time while claimable (creation, delay end, backoff end, lease loss).
    eligible_at_ms bigint NOT NULL,
    deadline_at_ms bigint,

    current_attempt_index integer NOT NULL DEFAULT 0 CHECK (current_attempt_index >= 0),
    total_attempt_count integer NOT NULL DEFAULT 0 CHECK (total_attempt_count >= 0),
    retry_count integer NOT NULL DEFAULT 0 CHECK (retry_count >= 0),
    lease_reclaim_count integer NOT NULL DEFAULT 0 CHECK (lease_reclaim_count >= 0),

    -- The current lease while leased; the last lease afterwards (so that a replayed call can be
    -- told apart from a stale one).
    lease_id uuid,
    lease_epoch bigint NOT NULL DEFAULT 0 CHECK (lease_epoch >= 0),
    lease_expires_at_ms bigint,
    lease_ttl_ms bigint,
    last_heartbeat_at_ms bigint,
    worker_id text,
    worker_instance_id text,
    attempt_id uuid,
    attempt_deadline_at_ms bigint,

    progress_pct smallint CHECK (progress_pct BETWEEN 0 AND 100),
    progress_message text,
    result bytea,
    created_at_ms bigint NOT NULL DEFAULT ff_now_ms(),
    started_at_ms bigint,
    completed_at_ms bigint,
    last_mutation_at_ms bigint NOT NULL DEFAULT ff_now_ms(),

    CONSTRAINT terminal_iff_outcome CHECK ((lifecycle_phase = 'terminal') = (terminal_outcome <> 'none')),
    CONSTRAINT owned_iff_active CHECK ((ownership_state <> 'unowned') = (lifecycle_phase = 'active')),
    CONSTRAINT eligibility_iff_runnable CHECK ((eligibility_state <> 'not_applicable') = (lifecycle_phase = 'runnable')),
    CONSTRAINT running_attempt_iff_active CHECK ((attempt_state = 'running_attempt') = (lifecycle_phase = 'active')),
    CONSTRAINT terminal_attempt_ended CHECK (lifecycle_phase <> 'terminal' OR attempt_state = 'attempt_terminal'),
    CONSTRAINT leased_has_lease CHECK (ownership_state = 'unowned' OR
        (lease_id IS NOT NULL AND lease_expires_at_ms IS NOT NULL AND worker_instance_id IS NOT NULL AND attempt_id IS NOT NULL)),
    CONSTRAINT terminal_iff_completed_at CHECK ((lifecycle_phase = 'terminal') = (completed_at_ms IS NOT NULL)),
    CONSTRAINT result_only_on_success CHECK (result IS NULL OR terminal_outcome = 'success'),
    CONSTRAINT attempts_counted CHECK (current_attempt_index <= total_attempt_count)
);

-- The claim path: best (priority, eligible time, creation order) claimable execution of a lane.
CREATE INDEX ff_execution_claim_idx ON ff_execution (lane_id, priority DESC, eligible_at_ms, seq) WHERE claimable;
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

CREATE TABLE ff_attempt (
    execution_id uuid NOT NULL REFERENCES ff_execution (execution_id) ON DELETE CASCADE,
    attempt_index integer NOT NULL CHECK (attempt_index >= 0),
    attempt_id uuid NOT NULL UNIQUE,
    attempt_type text NOT NULL CHECK (attempt_type IN ('initial', 'retry', 'reclaim')),
    state text NOT NULL CHECK (state IN ('started', 'suspended', 'ended_success', 'ended_failure',
        'ended_cancelled', 'ended_expired', 'interrupted_reclaimed')),
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
    CONSTRAINT ended_iff_end_time CHECK ((state IN ('started', 'suspended')) = (ended_at_ms IS NULL))
);

CREATE TABLE ff_frame (
    execution_id uuid NOT NULL,
    attempt_index integer NOT NULL,
    seq bigint NOT NULL CHECK (seq >= 1),
    kind text NOT NULL CHECK (kind IN ('stdout', 'stderr', 'event', 'blob')),
    frame_type text NOT NULL,
    correlation_id text,
    bytes bytea NOT NULL CHECK (octet_length(bytes) <= 65536),
    appended_at_ms bigint NOT NULL,
    PRIMARY KEY (execution_id, attempt_index, seq),
    FOREIGN KEY (execution_id, attempt_index) REFERENCES ff_attempt (execution_id, attempt_index) ON DELETE CASCADE
);

CREATE TABLE ff_reclaim_grant (
    grant_key uuid PRIMARY KEY,
    execution_id uuid NOT NULL REFERENCES ff_execution (execution_id) ON DELETE CASCADE,
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
    kind text NOT NULL CHECK (kind IN ('lease_acquired', 'lease_reclaimed', 'lease_expired',
        'lease_released', 'retry_scheduled', 'completed', 'failed', 'cancelled', 'expired')),
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
CREATE INDEX ff_event_execution_idx ON ff_event (execution_id);
