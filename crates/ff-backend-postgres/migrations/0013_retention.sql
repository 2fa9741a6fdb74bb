-- Retention: terminal executions older than their retention window are deleted with every row
-- of theirs, and the event log is pruned from its oldest end, so storage stays bounded under
-- steady load.
--
-- An execution's window is its lane's override, else its namespace's override, else the default
-- the caller passes (the reconciler's configured default). A flow member is deleted only with its
-- whole flow, once every member is terminal and past its own window. The event log is pruned in
-- cursor order only, and the newest pruned cursor is recorded as the horizon: a reader whose
-- cursor lies before it has missed events and is told so instead of reading on past a gap.

CREATE TABLE ff_retention_policy (
    scope_kind text NOT NULL CHECK (scope_kind IN ('lane', 'namespace')),
    scope_id text NOT NULL CHECK (octet_length(scope_id) <= 256),
    retention_ms bigint NOT NULL CHECK (retention_ms > 0),
    updated_at_ms bigint NOT NULL DEFAULT ff_now_ms(),
    PRIMARY KEY (scope_kind, scope_id)
);

-- The newest cursor the event log was pruned up to (the zero cursor while nothing was pruned).
CREATE TABLE ff_event_horizon (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    tx_id xid8 NOT NULL,
    event_id bigint NOT NULL,
    pruned_at_ms bigint
);
INSERT INTO ff_event_horizon (tx_id, event_id) VALUES ('0'::xid8, 0);

-- Terminal executions of a lane, oldest first: what the trimmer walks.
CREATE INDEX ff_execution_retention_idx ON ff_execution (lane_id, completed_at_ms) WHERE lifecycle_phase = 'terminal';
-- Usage attributed to an execution is found by the execution when it is deleted.
CREATE INDEX ff_budget_spend_execution_idx ON ff_budget_spend (execution_id);

-- The retention window of an execution of p_lane in p_namespace.
CREATE FUNCTION ff_retention_window(p_lane text, p_namespace text, p_default_ms bigint) RETURNS bigint
    LANGUAGE sql STABLE
    AS $$
    SELECT coalesce((SELECT r.retention_ms FROM ff_retention_policy r WHERE r.scope_kind = 'lane' AND r.scope_id = p_lane),
                    (SELECT r.retention_ms FROM ff_retention_policy r
                     WHERE r.scope_kind = 'namespace' AND r.scope_id = p_namespace),
                    p_default_ms)
$$;

-- Deletes up to p_batch terminal executions of lane p_lane whose window has passed (oldest
-- first), with their attempts, frames, grants, waitpoints and signals, suspension rows, budget
-- attribution; a flow member only together with its whole flow (members, edges, groups, cancel
-- backlog, the flow row), and only when no member is live or within its window. Rows another
-- transaction holds are skipped, so the trimmer never waits on live work. Events stay: the event
-- log is pruned on its own, in cursor order (ff_prune_events). Explicit quota admissions and rate
-- window entries stay too: they are the quota policy's accounting and age out with it.
CREATE FUNCTION ff_trim_retention(p_lane text, p_default_ms bigint, p_batch integer,
                                  OUT executions integer, OUT flows integer)
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_now bigint := ff_now_ms();
    v_min bigint;
    v_solo uuid[];
    v_flows uuid[];
    v_gone_flows uuid[] := '{}';
    v_ids uuid[];
    v_flow uuid;
    v_members uuid[];
    v_all_old boolean;
    v_total integer;
BEGIN
    executions := 0;
    flows := 0;
    -- The shortest window any execution of the lane can have bounds the index range.
    SELECT r.retention_ms INTO v_min FROM ff_retention_policy r WHERE r.scope_kind = 'lane' AND r.scope_id = p_lane;
    IF NOT FOUND THEN
        SELECT least(p_default_ms, min(r.retention_ms)) INTO v_min FROM ff_retention_policy r
        WHERE r.scope_kind = 'namespace';
    END IF;

    WITH due AS (
        SELECT x.execution_id, x.flow_id FROM ff_execution x
        WHERE x.lane_id = p_lane AND x.lifecycle_phase = 'terminal' AND x.completed_at_ms <= v_now - v_min
          AND x.completed_at_ms <= v_now - ff_retention_window(x.lane_id, x.namespace, p_default_ms)
          AND (x.flow_id IS NULL OR NOT EXISTS (
                SELECT 1 FROM ff_execution m
                WHERE m.flow_id = x.flow_id
                  AND (m.lifecycle_phase <> 'terminal'
                       OR m.completed_at_ms > v_now - ff_retention_window(m.lane_id, m.namespace, p_default_ms))))
        ORDER BY x.completed_at_ms
        LIMIT p_batch
        FOR UPDATE OF x SKIP LOCKED)
    SELECT array_agg(d.execution_id) FILTER (WHERE d.flow_id IS NULL),
           array_agg(DISTINCT d.flow_id) FILTER (WHERE d.flow_id IS NOT NULL)
    INTO v_solo, v_flows FROM due d;
    v_ids := coalesce(v_solo, '{}');

    -- A flow goes whole or not at all: its row and every member locked (or skipped when busy),
    -- then checked again under the locks.
    FOR v_flow IN SELECT f.flow_id FROM ff_flow f WHERE f.flow_id = ANY (coalesce(v_flows, '{}'))
                  ORDER BY f.flow_id FOR UPDATE SKIP LOCKED LOOP
        SELECT array_agg(m.execution_id),
               bool_and(m.lifecycle_phase = 'terminal'
                        AND m.completed_at_ms <= v_now - ff_retention_window(m.lane_id, m.namespace, p_default_ms))
        INTO v_members, v_all_old
        FROM (SELECT x.execution_id, x.lifecycle_phase, x.completed_at_ms, x.lane_id, x.namespace FROM ff_execution x
              WHERE x.flow_id = v_flow ORDER BY x.execution_id FOR UPDATE SKIP LOCKED) m;
        SELECT count(*) INTO v_total FROM ff_execution x WHERE x.flow_id = v_flow;
        IF coalesce(v_all_old, false) AND cardinality(v_members) = v_total THEN
            v_ids := v_ids || v_members;
            v_gone_flows := v_gone_flows || v_flow;
        END IF;
    END LOOP;

    IF cardinality(v_ids) = 0 THEN
        RETURN;
    END IF;
    DELETE FROM ff_frame f WHERE f.execution_id = ANY (v_ids);
    DELETE FROM ff_stream_summary s WHERE s.execution_id = ANY (v_ids);
    DELETE FROM ff_stream_live s WHERE s.execution_id = ANY (v_ids);
    DELETE FROM ff_attempt a WHERE a.execution_id = ANY (v_ids);
    DELETE FROM ff_reclaim_grant g WHERE g.execution_id = ANY (v_ids);
    DELETE FROM ff_claim_grant g WHERE g.execution_id = ANY (v_ids);
    DELETE FROM ff_signal s USING ff_waitpoint w
    WHERE w.execution_id = ANY (v_ids) AND s.waitpoint_id = w.waitpoint_id;
    DELETE FROM ff_waitpoint w WHERE w.execution_id = ANY (v_ids);
    DELETE FROM ff_suspension s WHERE s.execution_id = ANY (v_ids);
    DELETE FROM ff_suspend_dedup d WHERE d.execution_id = ANY (v_ids);
    DELETE FROM ff_budget_spend s WHERE s.execution_id = ANY (v_ids);
    DELETE FROM ff_budget_member m USING ff_execution x
    WHERE x.execution_id = ANY (v_ids) AND m.budget_id = ANY (x.budget_ids) AND m.execution_id = x.execution_id;
    IF cardinality(v_gone_flows) > 0 THEN
        DELETE FROM ff_flow_cancel_member c WHERE c.flow_id = ANY (v_gone_flows);
        DELETE FROM ff_edge e WHERE e.flow_id = ANY (v_gone_flows);
        DELETE FROM ff_edge_group g WHERE g.flow_id = ANY (v_gone_flows);
    END IF;
    DELETE FROM ff_execution x WHERE x.execution_id = ANY (v_ids);
    GET DIAGNOSTICS executions = ROW_COUNT;
    DELETE FROM ff_flow f WHERE f.flow_id = ANY (v_gone_flows);
    GET DIAGNOSTICS flows = ROW_COUNT;
END
$$;

-- Prunes up to p_batch events from the oldest end of the log, stopping at the first event younger
-- than p_retention_ms, among events no reader can still see appear behind (older than every
-- transaction in flight). Moves the horizon to the newest pruned cursor in the same transaction.
CREATE FUNCTION ff_prune_events(p_retention_ms bigint, p_batch integer,
                                OUT pruned integer, OUT horizon_tx text, OUT horizon_id bigint)
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_cutoff bigint := ff_now_ms() - p_retention_ms;
    v_xmin xid8 := pg_snapshot_xmin(pg_current_snapshot());
    v_tx xid8;
    v_id bigint;
BEGIN
    -- One pruner at a time: the horizon row is the lock.
    SELECT h.tx_id, h.event_id INTO v_tx, v_id FROM ff_event_horizon h FOR UPDATE;
    WITH head AS MATERIALIZED (
        SELECT e.tx_id, e.event_id, e.occurred_at_ms FROM ff_event e
        WHERE e.tx_id < v_xmin ORDER BY e.tx_id, e.event_id LIMIT p_batch),
    young AS (
        SELECT h.tx_id, h.event_id FROM head h WHERE h.occurred_at_ms > v_cutoff ORDER BY h.tx_id, h.event_id LIMIT 1),
    gone AS (
        DELETE FROM ff_event e USING head h
        WHERE e.tx_id = h.tx_id AND e.event_id = h.event_id
          AND NOT EXISTS (SELECT 1 FROM young y WHERE (h.tx_id, h.event_id) >= (y.tx_id, y.event_id))
        RETURNING e.tx_id, e.event_id)
    SELECT (SELECT count(*) FROM gone),
           (SELECT g.tx_id::text FROM gone g ORDER BY g.tx_id DESC, g.event_id DESC LIMIT 1),
           (SELECT g.event_id FROM gone g ORDER BY g.tx_id DESC, g.event_id DESC LIMIT 1)
    INTO pruned, horizon_tx, horizon_id;
    IF pruned > 0 THEN
        UPDATE ff_event_horizon SET tx_id = horizon_tx::xid8, event_id = horizon_id, pruned_at_ms = ff_now_ms();
    ELSE
        horizon_tx := v_tx::text;
        horizon_id := v_id;
    END IF;
END
$$;

UPDATE ff_schema SET version = 13;
