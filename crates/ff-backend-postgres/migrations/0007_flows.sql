-- FlowFabric engine schema, version 7: flows, dependency edges and edge groups, resolved in the
-- transaction that ends an upstream.
--
-- A flow is a header row (ff_flow); its members are the executions whose flow_id points at it.
-- An edge (ff_edge) is staged on the flow's graph, then applied: counted into its downstream's
-- edge group (ff_edge_group, one per downstream), which holds the group's policy, counters and
-- decision. Every terminal transition of a flow member, whichever function makes it, is noted
-- by the ff_flow_member_ended trigger, and the statement's members are resolved in the same
-- transaction (ff_resolve_edges, from the statement trigger ff_flow_members_ended): counters move, a group decided now makes its downstream claimable (and
-- wakes its lane) or skips it, and a skip or a sibling cancellation resolves further hops in
-- the same loop. Lock order, everywhere: the ending upstream, then its edges, then groups in
-- downstream id order, then downstream executions; siblings to cancel are taken only if free
-- (SKIP LOCKED), and the rest wait in a flag the flow-cancel reconciler drains.

ALTER TYPE ff_event_kind ADD VALUE 'skipped' AFTER 'expired';

CREATE TABLE ff_flow (
    flow_id uuid PRIMARY KEY,
    partition_key smallint NOT NULL,
    namespace text NOT NULL DEFAULT '',
    flow_kind text NOT NULL,
    creator_identity text,
    -- Bumped by every change to the membership or the graph: staging checks it.
    graph_revision bigint NOT NULL DEFAULT 0,
    node_count integer NOT NULL DEFAULT 0,
    edge_count integer NOT NULL DEFAULT 0,
    tags jsonb NOT NULL DEFAULT '{}',
    cancelled_at_ms bigint,
    cancel_reason text,
    cancellation_policy text CHECK (cancellation_policy IN ('flow_only', 'cancel_all', 'cancel_pending')),
    -- The dashboard projection written by project_flow_summary (reads derive the state live).
    summary jsonb,
    summary_at_ms bigint,
    created_at_ms bigint NOT NULL DEFAULT ff_now_ms(),
    last_mutation_at_ms bigint NOT NULL DEFAULT ff_now_ms(),
    CONSTRAINT cancelled_with_policy CHECK ((cancelled_at_ms IS NULL) = (cancellation_policy IS NULL))
);
CREATE INDEX ff_flow_partition_idx ON ff_flow (partition_key, flow_id);
CREATE INDEX ff_execution_flow_idx ON ff_execution (flow_id, execution_id) WHERE flow_id IS NOT NULL;

CREATE TYPE ff_edge_resolution AS ENUM ('success', 'failed', 'skipped');

CREATE TABLE ff_edge (
    flow_id uuid NOT NULL,
    edge_id uuid NOT NULL,
    upstream_id uuid NOT NULL,
    downstream_id uuid NOT NULL,
    dependency_kind text NOT NULL DEFAULT 'success_only' CHECK (dependency_kind = 'success_only'),
    data_passing_ref text,
    created_by text NOT NULL,
    created_at_ms bigint NOT NULL DEFAULT ff_now_ms(),
    applied_at_ms bigint,
    resolution ff_edge_resolution,
    resolved_at_ms bigint,
    PRIMARY KEY (flow_id, edge_id),
    CONSTRAINT no_self_edge CHECK (upstream_id <> downstream_id),
    CONSTRAINT resolved_once_applied CHECK ((resolution IS NULL OR applied_at_ms IS NOT NULL)
                                            AND (resolution IS NULL) = (resolved_at_ms IS NULL))
);
-- An execution is in one flow, so a pair of members identifies an edge. The index also serves
-- the walk along outgoing edges (cycle checks, resolution).
CREATE UNIQUE INDEX ff_edge_pair_idx ON ff_edge (upstream_id, downstream_id);
CREATE INDEX ff_edge_downstream_idx ON ff_edge (downstream_id);
-- Applied edges waiting on their upstream: what resolution and the dependency reconciler read.
CREATE INDEX ff_edge_unresolved_idx ON ff_edge (upstream_id) WHERE applied_at_ms IS NOT NULL AND resolution IS NULL;

CREATE TABLE ff_edge_group (
    downstream_id uuid PRIMARY KEY,
    flow_id uuid NOT NULL,
    policy_kind text NOT NULL DEFAULT 'all_of' CHECK (policy_kind IN ('all_of', 'any_of', 'quorum')),
    k integer CHECK (k >= 1),
    on_satisfied text NOT NULL DEFAULT 'let_run' CHECK (on_satisfied IN ('cancel_remaining', 'let_run')),
    total integer NOT NULL DEFAULT 0,
    success_count integer NOT NULL DEFAULT 0,
    failed_count integer NOT NULL DEFAULT 0,
    skipped_count integer NOT NULL DEFAULT 0,
    group_state text NOT NULL DEFAULT 'pending'
        CHECK (group_state IN ('pending', 'satisfied', 'impossible', 'cancelled')),
    decided_at_ms bigint,
    -- Set while upstreams a decided cancel_remaining group must cancel are still running.
    cancel_siblings_pending boolean NOT NULL DEFAULT false,
    CONSTRAINT counts_fit CHECK (success_count + failed_count + skipped_count <= total
                                 AND least(success_count, failed_count, skipped_count) >= 0),
    CONSTRAINT quorum_has_k CHECK ((policy_kind = 'quorum') = (k IS NOT NULL))
);
CREATE INDEX ff_edge_group_flow_idx ON ff_edge_group (flow_id, downstream_id);
CREATE INDEX ff_edge_group_sibling_cancel_idx ON ff_edge_group (downstream_id) WHERE cancel_siblings_pending;

-- Members a flow cancellation still has to cancel (presence = not yet done).
CREATE TABLE ff_flow_cancel_member (
    flow_id uuid NOT NULL,
    execution_id uuid NOT NULL,
    enqueued_at_ms bigint NOT NULL DEFAULT ff_now_ms(),
    PRIMARY KEY (flow_id, execution_id)
);
CREATE INDEX ff_flow_cancel_member_age_idx ON ff_flow_cancel_member (enqueued_at_ms);

-- The verdict of an edge group: the SQL twin of ff_core::flow::edge_group::evaluate (a test
-- holds the two equal over every counter combination).
CREATE FUNCTION ff_edge_group_verdict(p_kind text, p_k integer, p_total integer, p_success integer,
                                      p_failed integer, p_skipped integer)
    RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT CASE
        WHEN p_kind = 'all_of' THEN
            CASE WHEN p_failed + p_skipped > 0 THEN 'impossible'
                 WHEN p_total > 0 AND p_success >= p_total THEN 'satisfied'
                 ELSE 'pending' END
        ELSE
            CASE WHEN p_success >= coalesce(p_k, 1) THEN 'satisfied'
                 WHEN p_total > 0
                      AND p_success + greatest(p_total - p_success - p_failed - p_skipped, 0) < coalesce(p_k, 1)
                      THEN 'impossible'
                 ELSE 'pending' END
    END
$$;

-- Cancels the still-running upstreams of decided group p_down whose policy cancels them, those
-- no other transaction holds; flags the group while any are left (and wakes the flow-cancel
-- reconciler), clears the flag when none is. The caller holds the group row. Returns the ids
-- cancelled; their own edges are the caller's to resolve.
CREATE FUNCTION ff_cancel_siblings(p_down uuid, p_reason text) RETURNS uuid[]
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan
    AS $$
DECLARE
    v_free uuid[];
    v_id uuid;
    v_part smallint;
    v_left integer;
BEGIN
    SELECT array_agg(s.execution_id ORDER BY s.execution_id) INTO v_free FROM (
        SELECT x.execution_id FROM ff_edge e JOIN ff_execution x ON x.execution_id = e.upstream_id
        WHERE e.downstream_id = p_down AND e.applied_at_ms IS NOT NULL AND x.lifecycle_phase <> 'terminal'
        ORDER BY x.execution_id
        FOR UPDATE OF x SKIP LOCKED
    ) s;
    FOREACH v_id IN ARRAY coalesce(v_free, '{}') LOOP
        SELECT x.partition_key INTO v_part FROM ff_execution x WHERE x.execution_id = v_id;
        PERFORM ff_cancel_execution(v_id, v_part, p_reason, 'flow_cascade', false, NULL, NULL, NULL);
    END LOOP;
    SELECT count(*) INTO v_left FROM ff_edge e JOIN ff_execution x ON x.execution_id = e.upstream_id
    WHERE e.downstream_id = p_down AND e.applied_at_ms IS NOT NULL AND x.lifecycle_phase <> 'terminal';
    UPDATE ff_edge_group SET cancel_siblings_pending = (v_left > 0)
    WHERE downstream_id = p_down AND cancel_siblings_pending <> (v_left > 0);
    IF v_left > 0 THEN
        PERFORM pg_notify('ff_flow_cancel', p_down::text);
    END IF;
    RETURN coalesce(v_free, '{}');
END
$$;

-- Resolves the applied, unresolved edges of the ended executions p_upstreams, and every hop that
-- follows in this transaction: each edge records how its upstream ended (success; failed for
-- failed, cancelled or expired; skipped), its group's counters move (groups locked in
-- downstream id order), and a group decided now acts on its downstream: satisfied makes a
-- held-back downstream claimable (or delayed until its own eligible time) and wakes its lane;
-- impossible skips a downstream that is not running; a cancel_remaining any-of or quorum group
-- cancels its still-running upstreams. Skipped and cancelled executions are resolved by the
-- next round. Returns the edges resolved and the downstreams decided.
CREATE FUNCTION ff_resolve_edges(p_upstreams uuid[], OUT resolved integer, OUT decided integer)
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off
    AS $$
DECLARE
    v_frontier uuid[] := p_upstreams;
    v_down uuid[];
    v_s integer[];
    v_f integer[];
    v_k integer[];
    v_pending uuid[];
    v_next uuid[];
    v_lane text;
    v_lanes text[] := '{}';
    v_due bigint;
    v_n integer;
    v_part smallint;
    v_phase ff_lifecycle_phase;
    r record;
BEGIN
    resolved := 0;
    decided := 0;
    WHILE cardinality(v_frontier) > 0 LOOP
        v_next := '{}';
        -- A member that ended before its own group was decided closes that group: it will never
        -- be decided. (A group another transaction holds is left: it acts on a terminal
        -- downstream as on none.)
        UPDATE ff_edge_group g SET group_state = 'cancelled', decided_at_ms = ff_now_ms()
        WHERE g.downstream_id IN (SELECT d.downstream_id FROM ff_edge_group d
                                  WHERE d.downstream_id = ANY(v_frontier) AND d.group_state = 'pending'
                                  FOR UPDATE SKIP LOCKED);
        WITH ended AS (
            SELECT x.execution_id, x.terminal_outcome FROM ff_execution x
            WHERE x.execution_id = ANY(v_frontier) AND x.lifecycle_phase = 'terminal'
        ),
        res AS (
            UPDATE ff_edge e SET
                resolution = (CASE x.terminal_outcome WHEN 'success' THEN 'success' WHEN 'skipped' THEN 'skipped'
                                                      ELSE 'failed' END)::ff_edge_resolution,
                resolved_at_ms = ff_now_ms()
            FROM ended x
            WHERE e.upstream_id = x.execution_id AND e.applied_at_ms IS NOT NULL AND e.resolution IS NULL
            RETURNING e.downstream_id, e.resolution
        )
        SELECT array_agg(a.downstream_id ORDER BY a.downstream_id), array_agg(a.s ORDER BY a.downstream_id),
               array_agg(a.f ORDER BY a.downstream_id), array_agg(a.k ORDER BY a.downstream_id), sum(a.n)
        INTO v_down, v_s, v_f, v_k, v_n
        FROM (SELECT downstream_id, count(*) FILTER (WHERE resolution = 'success')::int AS s,
                     count(*) FILTER (WHERE resolution = 'failed')::int AS f,
                     count(*) FILTER (WHERE resolution = 'skipped')::int AS k, count(*)::int AS n
              FROM res GROUP BY downstream_id) a;
        EXIT WHEN v_down IS NULL;
        resolved := resolved + v_n;
        -- Lock the groups in one order, remembering which were undecided.
        SELECT array_agg(g.downstream_id) FILTER (WHERE g.group_state = 'pending') INTO v_pending FROM (
            SELECT downstream_id, group_state FROM ff_edge_group WHERE downstream_id = ANY(v_down)
            ORDER BY downstream_id FOR UPDATE
        ) g;
        FOR r IN
            WITH upd AS (
                UPDATE ff_edge_group g SET
                    success_count = g.success_count + d.s, failed_count = g.failed_count + d.f,
                    skipped_count = g.skipped_count + d.k,
                    group_state = CASE WHEN g.group_state = 'pending'
                                       THEN ff_edge_group_verdict(g.policy_kind, g.k, g.total, g.success_count + d.s,
                                                                  g.failed_count + d.f, g.skipped_count + d.k)
                                       ELSE g.group_state END
                FROM unnest(v_down, v_s, v_f, v_k) AS d(id, s, f, k)
                WHERE g.downstream_id = d.id
                RETURNING g.downstream_id, g.flow_id, g.group_state, g.policy_kind, g.on_satisfied
            )
            SELECT * FROM upd WHERE upd.group_state <> 'pending' AND upd.downstream_id = ANY(coalesce(v_pending, '{}'))
            ORDER BY upd.downstream_id
        LOOP
            decided := decided + 1;
            UPDATE ff_edge_group SET decided_at_ms = ff_now_ms() WHERE downstream_id = r.downstream_id;
            IF r.group_state = 'satisfied' THEN
                UPDATE ff_execution e SET
                    eligibility_state = CASE WHEN e.eligible_at_ms > ff_now_ms() THEN 'not_eligible_until_time'
                                             ELSE 'eligible_now' END::ff_eligibility_state,
                    blocking_reason = CASE WHEN e.eligible_at_ms > ff_now_ms() THEN 'waiting_for_delay'
                                           ELSE 'waiting_for_worker' END::ff_blocking_reason,
                    last_mutation_at_ms = ff_now_ms()
                WHERE e.execution_id = r.downstream_id AND e.lifecycle_phase = 'runnable'
                  AND e.eligibility_state = 'blocked_by_dependencies'
                RETURNING e.lane_id, CASE WHEN e.eligible_at_ms > ff_now_ms() THEN e.eligible_at_ms END
                INTO v_lane, v_due;
                IF FOUND THEN
                    IF v_due IS NOT NULL THEN
                        PERFORM pg_notify('ff_timer', v_due::text);
                    ELSIF NOT v_lane = ANY(v_lanes) THEN
                        v_lanes := v_lanes || v_lane;
                    END IF;
                END IF;
            ELSIF EXISTS (SELECT 1 FROM ff_flow_cancel_member m
                          WHERE m.flow_id = r.flow_id AND m.execution_id = r.downstream_id) THEN
                -- Impossible, and its flow's cancellation targets it: it is cancelled, as the
                -- cancellation asked, rather than skipped.
                SELECT x.partition_key, x.lifecycle_phase INTO v_part, v_phase FROM ff_execution x
                WHERE x.execution_id = r.downstream_id;
                IF v_phase <> 'terminal' THEN
                    PERFORM ff_cancel_execution(r.downstream_id, v_part,
                        (SELECT coalesce(f.cancel_reason, 'flow cancelled') FROM ff_flow f WHERE f.flow_id = r.flow_id),
                        'flow_cascade', false, NULL, NULL, NULL);
                    v_next := v_next || r.downstream_id;
                END IF;
            ELSE
                -- Impossible: a downstream that is not running is skipped (a running one, which
                -- will wait for its children, is skipped when it does).
                UPDATE ff_execution e SET
                    lifecycle_phase = 'terminal', ownership_state = 'unowned', eligibility_state = 'not_applicable',
                    blocking_reason = 'none', terminal_outcome = 'skipped', attempt_state = 'attempt_terminal',
                    blocking_detail = 'dependency_impossible', completed_at_ms = ff_now_ms(),
                    lease_expires_at_ms = NULL, attempt_deadline_at_ms = NULL, last_mutation_at_ms = ff_now_ms()
                WHERE e.execution_id = r.downstream_id AND e.lifecycle_phase IN ('runnable', 'suspended');
                IF FOUND THEN
                    UPDATE ff_attempt a SET state = 'ended_cancelled', ended_at_ms = ff_now_ms(),
                                            failure_message = 'dependency_impossible'
                    FROM ff_execution e
                    WHERE e.execution_id = r.downstream_id AND a.execution_id = e.execution_id
                      AND a.attempt_index = e.current_attempt_index AND a.state IN ('started', 'suspended');
                    PERFORM ff_log_events(ARRAY['skipped'::ff_event_kind], ARRAY[r.downstream_id]);
                    v_next := v_next || r.downstream_id;
                END IF;
            END IF;
            IF r.policy_kind <> 'all_of' AND r.on_satisfied = 'cancel_remaining' THEN
                v_next := v_next || ff_cancel_siblings(r.downstream_id,
                    CASE WHEN r.group_state = 'satisfied' THEN 'sibling_quorum_satisfied'
                         ELSE 'sibling_quorum_impossible' END);
            END IF;
        END LOOP;
        v_frontier := v_next;
    END LOOP;
    -- Released work may sort before claimers' positions: once per lane, not per downstream.
    IF cardinality(v_lanes) > 0 THEN
        PERFORM ff_bump_claim_generation(v_lanes);
        PERFORM pg_notify('ff_lane_ready', l) FROM unnest(v_lanes) l;
    END IF;
END
$$;

-- Every terminal transition of a flow member resolves its edges in its own transaction, once
-- per statement, so that one call locks the groups of every member the statement ended in one
-- order (two batches ending members of the same flows in opposite orders cannot deadlock on
-- the groups). A statement trigger's WHEN clause is evaluated before any row trigger has run,
-- so the members are noted while the rows are written: the row trigger's WHEN clause calls
-- ff_note_member_ended, which adds the member to the transaction-local setting
-- ff.ended_members and answers false, so no row event is ever queued. The statement trigger
-- then fires only for statements that ended a flow member (its WHEN reads the setting) and
-- resolves them all. Statements run by the resolution itself (its skips and cancellations,
-- inside a trigger) note nothing: the resolution loop handles what they end.
CREATE FUNCTION ff_note_member_ended(p_id uuid) RETURNS boolean
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF pg_trigger_depth() = 0 THEN
        PERFORM set_config('ff.ended_members',
                           coalesce(current_setting('ff.ended_members', true), '') || p_id::text || ',', true);
    END IF;
    RETURN false;
END
$$;

CREATE FUNCTION ff_flow_members_ended() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_ids uuid[] := string_to_array(rtrim(current_setting('ff.ended_members', true), ','), ',')::uuid[];
BEGIN
    PERFORM set_config('ff.ended_members', '', true);
    PERFORM ff_resolve_edges(v_ids);
    RETURN NULL;
END
$$;

CREATE TRIGGER ff_flow_member_ended AFTER UPDATE OF lifecycle_phase ON ff_execution
    FOR EACH ROW
    WHEN (NEW.flow_id IS NOT NULL AND NEW.lifecycle_phase = 'terminal' AND OLD.lifecycle_phase <> 'terminal'
          AND ff_note_member_ended(NEW.execution_id))
    EXECUTE FUNCTION ff_flow_members_ended();

CREATE TRIGGER ff_flow_members_ended AFTER UPDATE ON ff_execution
    FOR EACH STATEMENT
    WHEN (coalesce(current_setting('ff.ended_members', true), '') <> '')
    EXECUTE FUNCTION ff_flow_members_ended();

-- A replayed flow member waits again for the upstreams that run again: its inbound edges that
-- did not succeed and whose upstream is no longer terminal (replayed before it) are re-opened,
-- its group's counters and decision are recomputed, and while the group is undecided the
-- member is held back, to be released when those upstreams end. Edges from upstreams still
-- terminal keep their resolution: replaying only the member runs it whatever they did.
CREATE FUNCTION ff_flow_member_replayed() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_state text;
BEGIN
    UPDATE ff_edge e SET resolution = NULL, resolved_at_ms = NULL
    FROM ff_execution x
    WHERE e.downstream_id = NEW.execution_id AND e.resolution IN ('failed', 'skipped')
      AND x.execution_id = e.upstream_id AND x.lifecycle_phase <> 'terminal';
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE ff_edge_group g SET
        success_count = c.s, failed_count = c.f, skipped_count = c.k,
        group_state = ff_edge_group_verdict(g.policy_kind, g.k, g.total, c.s, c.f, c.k), decided_at_ms = NULL
    FROM (SELECT count(*) FILTER (WHERE e.resolution = 'success')::int AS s,
                 count(*) FILTER (WHERE e.resolution = 'failed')::int AS f,
                 count(*) FILTER (WHERE e.resolution = 'skipped')::int AS k
          FROM ff_edge e WHERE e.downstream_id = NEW.execution_id AND e.applied_at_ms IS NOT NULL) c
    WHERE g.downstream_id = NEW.execution_id
    RETURNING g.group_state INTO v_state;
    IF v_state = 'pending' THEN
        UPDATE ff_execution x SET eligibility_state = 'blocked_by_dependencies', blocking_reason = 'waiting_for_children'
        WHERE x.execution_id = NEW.execution_id AND x.lifecycle_phase = 'runnable';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER ff_flow_member_replayed AFTER UPDATE OF lifecycle_phase ON ff_execution
    FOR EACH ROW
    WHEN (NEW.flow_id IS NOT NULL AND OLD.lifecycle_phase = 'terminal' AND NEW.lifecycle_phase <> 'terminal')
    EXECUTE FUNCTION ff_flow_member_replayed();

-- Adds execution p_id to flow p_flow. Returns (outcome, node_count): 'added', 'already_member',
-- or why nothing was written: 'flow_not_found', 'flow_terminal', 'not_found', 'other_flow',
-- 'namespace_mismatch', 'partition_mismatch'.
CREATE FUNCTION ff_add_flow_member(p_flow uuid, p_id uuid, OUT outcome text, OUT node_count integer)
    LANGUAGE plpgsql
    AS $$
DECLARE
    f ff_flow%ROWTYPE;
    v_flow uuid;
    v_namespace text;
    v_partition smallint;
BEGIN
    SELECT * INTO f FROM ff_flow WHERE flow_id = p_flow FOR UPDATE;
    IF NOT FOUND THEN
        outcome := 'flow_not_found';
        RETURN;
    END IF;
    node_count := f.node_count;
    IF f.cancelled_at_ms IS NOT NULL THEN
        outcome := 'flow_terminal';
        RETURN;
    END IF;
    SELECT x.flow_id, x.namespace, x.partition_key INTO v_flow, v_namespace, v_partition
    FROM ff_execution x WHERE x.execution_id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        outcome := 'not_found';
    ELSIF v_flow = p_flow THEN
        outcome := 'already_member';
    ELSIF v_flow IS NOT NULL THEN
        outcome := 'other_flow';
    ELSIF v_namespace <> f.namespace THEN
        outcome := 'namespace_mismatch';
    ELSIF v_partition <> f.partition_key THEN
        outcome := 'partition_mismatch';
    ELSE
        UPDATE ff_execution SET flow_id = p_flow, last_mutation_at_ms = ff_now_ms() WHERE execution_id = p_id;
        UPDATE ff_flow SET node_count = ff_flow.node_count + 1, graph_revision = graph_revision + 1,
                           last_mutation_at_ms = ff_now_ms()
        WHERE flow_id = p_flow;
        outcome := 'added';
        node_count := f.node_count + 1;
    END IF;
END
$$;

-- Stages edge p_edge (p_up -> p_down) on flow p_flow at graph revision p_expected. Returns
-- (outcome, graph_revision): 'staged' (also when this very edge was staged before), or why
-- nothing was written: 'flow_not_found', 'flow_terminal', 'exists' (the id or the pair is
-- taken by another edge), 'stale_revision', 'not_member', 'cycle'.
CREATE FUNCTION ff_stage_edge(p_flow uuid, p_edge uuid, p_up uuid, p_down uuid, p_ref text, p_expected bigint,
                              OUT outcome text, OUT graph_revision bigint)
    LANGUAGE plpgsql
    AS $$
DECLARE
    f ff_flow%ROWTYPE;
    e ff_edge%ROWTYPE;
    v_members integer;
BEGIN
    SELECT * INTO f FROM ff_flow WHERE flow_id = p_flow FOR UPDATE;
    IF NOT FOUND THEN
        outcome := 'flow_not_found';
        RETURN;
    END IF;
    graph_revision := f.graph_revision;
    SELECT * INTO e FROM ff_edge WHERE flow_id = p_flow AND edge_id = p_edge;
    IF FOUND THEN
        outcome := CASE WHEN (e.upstream_id, e.downstream_id, e.data_passing_ref) IS NOT DISTINCT FROM (p_up, p_down, p_ref)
                        THEN 'staged' ELSE 'exists' END;
        RETURN;
    END IF;
    IF f.cancelled_at_ms IS NOT NULL THEN
        outcome := 'flow_terminal';
    ELSIF f.graph_revision <> p_expected THEN
        outcome := 'stale_revision';
    ELSE
        SELECT count(*) INTO v_members FROM ff_execution x
        WHERE x.execution_id IN (p_up, p_down) AND x.flow_id = p_flow;
        IF v_members < 2 THEN
            outcome := 'not_member';
        ELSIF EXISTS (SELECT 1 FROM ff_edge x WHERE x.upstream_id = p_up AND x.downstream_id = p_down) THEN
            outcome := 'exists';
        ELSIF EXISTS (
            WITH RECURSIVE reach(id) AS (
                SELECT p_down
                UNION
                SELECT x.downstream_id FROM ff_edge x JOIN reach r ON x.upstream_id = r.id
            )
            SELECT 1 FROM reach WHERE id = p_up
        ) THEN
            outcome := 'cycle';
        ELSE
            INSERT INTO ff_edge (flow_id, edge_id, upstream_id, downstream_id, data_passing_ref, created_by)
            VALUES (p_flow, p_edge, p_up, p_down, p_ref, coalesce(f.creator_identity, 'engine'));
            UPDATE ff_flow SET edge_count = edge_count + 1, graph_revision = ff_flow.graph_revision + 1,
                               last_mutation_at_ms = ff_now_ms()
            WHERE flow_id = p_flow;
            outcome := 'staged';
            graph_revision := f.graph_revision + 1;
        END IF;
    END IF;
END
$$;

-- Applies staged edge p_edge of flow p_flow (expected p_up -> p_down): counts it into the
-- downstream's group (created all-of when absent) and holds a runnable downstream back while
-- the group is undecided. An upstream that has already ended resolves the edge at once. The
-- upstream is locked first, so it cannot end unseen while the edge is applied. Returns
-- (outcome, unresolved, group_state): 'applied', 'already_applied', or why nothing was written:
-- 'flow_not_found', 'flow_terminal', 'edge_not_found', 'edge_mismatch', 'downstream_terminal'.
CREATE FUNCTION ff_apply_edge(p_flow uuid, p_edge uuid, p_up uuid, p_down uuid,
                              OUT outcome text, OUT unresolved integer, OUT group_state text)
    LANGUAGE plpgsql
    AS $$
DECLARE
    e ff_edge%ROWTYPE;
    v_cancelled bigint;
    v_up_terminal boolean;
    v_down_phase ff_lifecycle_phase;
BEGIN
    SELECT x.lifecycle_phase = 'terminal' INTO v_up_terminal FROM ff_execution x WHERE x.execution_id = p_up
    FOR SHARE;
    SELECT f.cancelled_at_ms INTO v_cancelled FROM ff_flow f WHERE f.flow_id = p_flow;
    IF NOT FOUND THEN
        outcome := 'flow_not_found';
        RETURN;
    END IF;
    SELECT * INTO e FROM ff_edge WHERE flow_id = p_flow AND edge_id = p_edge FOR UPDATE;
    IF NOT FOUND THEN
        outcome := 'edge_not_found';
        RETURN;
    END IF;
    IF (e.upstream_id, e.downstream_id) <> (p_up, p_down) THEN
        outcome := 'edge_mismatch';
        RETURN;
    END IF;
    IF e.applied_at_ms IS NOT NULL THEN
        outcome := 'already_applied';
        RETURN;
    END IF;
    IF v_cancelled IS NOT NULL THEN
        outcome := 'flow_terminal';
        RETURN;
    END IF;
    SELECT x.lifecycle_phase INTO v_down_phase FROM ff_execution x WHERE x.execution_id = p_down;
    IF v_down_phase = 'terminal' THEN
        outcome := 'downstream_terminal';
        RETURN;
    END IF;
    INSERT INTO ff_edge_group AS g (downstream_id, flow_id, total) VALUES (p_down, p_flow, 1)
    ON CONFLICT (downstream_id) DO UPDATE SET total = g.total + 1
    RETURNING g.group_state INTO group_state;
    UPDATE ff_edge SET applied_at_ms = ff_now_ms() WHERE flow_id = p_flow AND edge_id = p_edge;
    IF group_state = 'pending' THEN
        UPDATE ff_execution x SET eligibility_state = 'blocked_by_dependencies', blocking_reason = 'waiting_for_children',
                                  last_mutation_at_ms = ff_now_ms()
        WHERE x.execution_id = p_down AND x.lifecycle_phase = 'runnable'
          AND x.eligibility_state <> 'blocked_by_dependencies';
    END IF;
    IF v_up_terminal THEN
        PERFORM ff_resolve_edges(ARRAY[p_up]);
    END IF;
    SELECT g.total - g.success_count - g.failed_count - g.skipped_count, g.group_state INTO unresolved, group_state
    FROM ff_edge_group g WHERE g.downstream_id = p_down;
    outcome := 'applied';
END
$$;

-- Sets the group policy of downstream p_down in flow p_flow. Returns 'set', 'already_set', or
-- why nothing was written: 'flow_not_found', 'flow_terminal', 'not_member', 'fixed' (an
-- inbound edge was resolved), 'k_too_large' (more than the flow's other members).
CREATE FUNCTION ff_set_edge_group_policy(p_flow uuid, p_down uuid, p_kind text, p_k integer, p_on_satisfied text)
    RETURNS text
    LANGUAGE plpgsql
    AS $$
DECLARE
    f ff_flow%ROWTYPE;
    g ff_edge_group%ROWTYPE;
BEGIN
    SELECT * INTO f FROM ff_flow WHERE flow_id = p_flow FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'flow_not_found';
    ELSIF f.cancelled_at_ms IS NOT NULL THEN
        RETURN 'flow_terminal';
    ELSIF NOT EXISTS (SELECT 1 FROM ff_execution x WHERE x.execution_id = p_down AND x.flow_id = p_flow) THEN
        RETURN 'not_member';
    ELSIF p_k IS NOT NULL AND p_k > f.node_count - 1 THEN
        RETURN 'k_too_large';
    END IF;
    SELECT * INTO g FROM ff_edge_group WHERE downstream_id = p_down FOR UPDATE;
    IF FOUND THEN
        IF (g.policy_kind, g.k, g.on_satisfied) IS NOT DISTINCT FROM (p_kind, p_k, p_on_satisfied) THEN
            RETURN 'already_set';
        ELSIF g.success_count + g.failed_count + g.skipped_count > 0 OR g.group_state <> 'pending' THEN
            RETURN 'fixed';
        END IF;
        UPDATE ff_edge_group SET policy_kind = p_kind, k = p_k, on_satisfied = p_on_satisfied
        WHERE downstream_id = p_down;
    ELSE
        INSERT INTO ff_edge_group (downstream_id, flow_id, policy_kind, k, on_satisfied)
        VALUES (p_down, p_flow, p_kind, p_k, p_on_satisfied);
    END IF;
    UPDATE ff_flow SET last_mutation_at_ms = ff_now_ms() WHERE flow_id = p_flow;
    RETURN 'set';
END
$$;

-- Builds the graph of a flow created in this transaction with its members p_members: joins
-- them, inserts the edges (applied), the groups with their counts and policies, and holds back
-- every member with an inbound edge. One statement per table.
CREATE FUNCTION ff_build_flow_graph(p_flow uuid, p_members uuid[], p_edge_ids uuid[], p_ups uuid[], p_downs uuid[],
                                    p_refs text[], p_policy_downs uuid[], p_kinds text[], p_ks integer[],
                                    p_on_satisfied text[])
    RETURNS bigint
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_creator text;
    v_revision bigint := cardinality(p_members) + cardinality(p_edge_ids);
BEGIN
    SELECT coalesce(creator_identity, 'engine') INTO v_creator FROM ff_flow WHERE flow_id = p_flow;
    UPDATE ff_execution SET flow_id = p_flow WHERE execution_id = ANY(p_members);
    INSERT INTO ff_edge (flow_id, edge_id, upstream_id, downstream_id, data_passing_ref, created_by, applied_at_ms)
    SELECT p_flow, t.edge_id, t.up, t.down, t.ref, v_creator, ff_now_ms()
    FROM unnest(p_edge_ids, p_ups, p_downs, p_refs) AS t(edge_id, up, down, ref);
    INSERT INTO ff_edge_group (downstream_id, flow_id, policy_kind, k, on_satisfied, total)
    SELECT d.down, p_flow, coalesce(p.kind, 'all_of'), p.k, coalesce(p.on_satisfied, 'let_run'), d.n
    FROM (SELECT down, count(*)::int AS n FROM unnest(p_downs) AS t(down) GROUP BY down) d
    LEFT JOIN unnest(p_policy_downs, p_kinds, p_ks, p_on_satisfied) AS p(down, kind, k, on_satisfied)
        ON p.down = d.down;
    UPDATE ff_execution x SET eligibility_state = 'blocked_by_dependencies', blocking_reason = 'waiting_for_children'
    WHERE x.execution_id IN (SELECT DISTINCT t.down FROM unnest(p_downs) AS t(down)) AND x.lifecycle_phase = 'runnable';
    UPDATE ff_flow SET node_count = cardinality(p_members), edge_count = cardinality(p_edge_ids),
                       graph_revision = v_revision, last_mutation_at_ms = ff_now_ms()
    WHERE flow_id = p_flow;
    RETURN v_revision;
END
$$;

-- The lease holder of p_id waits for its children, the upstreams of its own edge group (see
-- ff_end_attempt for the fence). The group is locked before the execution, the order the
-- resolution takes, so a child ending now is either seen here or sees this wait. Pending group:
-- held back, the attempt parked for the next claim to resume. Satisfied or no group: eligible
-- again at once. Impossible: skipped. Returns the group state acted on ('none' without a
-- group); no row when the fence failed.
CREATE FUNCTION ff_wait_children(p_id uuid, p_lease_id uuid, p_epoch bigint, p_attempt integer)
    RETURNS TABLE (group_state text)
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
    AS $$
DECLARE
    v_state text;
    v_lane text;
    v_index integer;
BEGIN
    SELECT g.group_state INTO v_state FROM ff_edge_group g WHERE g.downstream_id = p_id FOR UPDATE;
    v_state := coalesce(v_state, 'none');
    UPDATE ff_execution e SET
        lifecycle_phase = CASE WHEN v_state = 'impossible' THEN 'terminal' ELSE 'runnable' END::ff_lifecycle_phase,
        ownership_state = 'unowned',
        eligibility_state = CASE v_state WHEN 'impossible' THEN 'not_applicable' WHEN 'pending' THEN 'blocked_by_dependencies'
                                         ELSE 'eligible_now' END::ff_eligibility_state,
        blocking_reason = CASE v_state WHEN 'impossible' THEN 'none' WHEN 'pending' THEN 'waiting_for_children'
                                       ELSE 'waiting_for_worker' END::ff_blocking_reason,
        terminal_outcome = CASE WHEN v_state = 'impossible' THEN 'skipped' ELSE 'none' END::ff_terminal_outcome,
        attempt_state = CASE WHEN v_state = 'impossible' THEN 'attempt_terminal'
                             ELSE 'attempt_interrupted' END::ff_attempt_state,
        blocking_detail = CASE WHEN v_state = 'impossible' THEN 'dependency_impossible' END,
        completed_at_ms = CASE WHEN v_state = 'impossible' THEN ff_now_ms() END,
        lease_expires_at_ms = NULL, attempt_deadline_at_ms = NULL, last_mutation_at_ms = ff_now_ms()
    WHERE e.execution_id = p_id AND e.lease_id = p_lease_id AND e.lease_epoch = p_epoch
      AND e.current_attempt_index = p_attempt AND e.ownership_state = 'leased'
      AND e.lease_expires_at_ms > ff_now_ms()
    RETURNING e.lane_id, e.current_attempt_index INTO v_lane, v_index;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    UPDATE ff_attempt a SET
        state = CASE WHEN v_state = 'impossible' THEN 'ended_cancelled' ELSE 'suspended' END::ff_attempt_lifecycle,
        ended_at_ms = CASE WHEN v_state = 'impossible' THEN ff_now_ms() END,
        failure_message = CASE WHEN v_state = 'impossible' THEN 'dependency_impossible' END
    WHERE a.execution_id = p_id AND a.attempt_index = v_index;
    IF v_state NOT IN ('pending', 'impossible') THEN
        PERFORM ff_bump_claim_generation(ARRAY[v_lane]);
        PERFORM pg_notify('ff_lane_ready', v_lane);
    END IF;
    PERFORM ff_log_events(ARRAY[(CASE WHEN v_state = 'impossible' THEN 'skipped' ELSE 'lease_released' END)::ff_event_kind],
                          ARRAY[p_id]);
    group_state := v_state;
    RETURN NEXT;
END
$$;

-- Cancels flow p_flow with policy p_policy: closes it, enqueues its targeted members (cancel_all:
-- every member that has not ended; cancel_pending: those not started, i.e. runnable) in the
-- cancel backlog and, when p_cancel_now, cancels those no other transaction holds, removing them
-- from the backlog. Returns (outcome, policy, reason, targeted, remaining): 'cancelled', or
-- 'already' with the stored policy, reason and backlog (at most 1000), or 'not_found'.
CREATE FUNCTION ff_cancel_flow(p_flow uuid, p_reason text, p_policy text, p_cancel_now boolean,
                               OUT outcome text, OUT policy text, OUT reason text, OUT targeted uuid[],
                               OUT remaining uuid[])
    LANGUAGE plpgsql
    AS $$
DECLARE
    f ff_flow%ROWTYPE;
BEGIN
    SELECT * INTO f FROM ff_flow WHERE flow_id = p_flow FOR UPDATE;
    IF NOT FOUND THEN
        outcome := 'not_found';
        RETURN;
    END IF;
    IF f.cancelled_at_ms IS NOT NULL THEN
        outcome := 'already';
        policy := f.cancellation_policy;
        reason := f.cancel_reason;
        SELECT coalesce(array_agg(m.execution_id ORDER BY m.execution_id), '{}') INTO remaining
        FROM (SELECT execution_id FROM ff_flow_cancel_member WHERE flow_id = p_flow ORDER BY execution_id LIMIT 1000) m;
        targeted := remaining;
        RETURN;
    END IF;
    UPDATE ff_flow SET cancelled_at_ms = ff_now_ms(), cancel_reason = p_reason, cancellation_policy = p_policy,
                       last_mutation_at_ms = ff_now_ms()
    WHERE flow_id = p_flow;
    SELECT coalesce(array_agg(x.execution_id ORDER BY x.execution_id), '{}') INTO targeted FROM ff_execution x
    WHERE x.flow_id = p_flow AND x.lifecycle_phase <> 'terminal'
      AND (p_policy = 'cancel_all' OR (p_policy = 'cancel_pending' AND x.lifecycle_phase = 'runnable'));
    INSERT INTO ff_flow_cancel_member (flow_id, execution_id) SELECT p_flow, t FROM unnest(targeted) t;
    IF p_cancel_now THEN
        PERFORM ff_drain_flow_cancel(cardinality(targeted), p_flow);
    END IF;
    SELECT coalesce(array_agg(m.execution_id ORDER BY m.execution_id), '{}') INTO remaining
    FROM ff_flow_cancel_member m WHERE m.flow_id = p_flow;
    IF cardinality(remaining) > 0 THEN
        PERFORM pg_notify('ff_flow_cancel', p_flow::text);
    END IF;
    outcome := 'cancelled';
    policy := p_policy;
    reason := p_reason;
END
$$;

-- Works through the cancel backlog (of flow p_flow only, when given), oldest first, up to
-- p_limit members: a member no other transaction holds is cancelled (source flow_cascade, the
-- flow's cancel reason) and leaves the backlog; one that has ended leaves it too. Returns how
-- many left the backlog.
CREATE FUNCTION ff_drain_flow_cancel(p_limit integer, p_flow uuid DEFAULT NULL) RETURNS integer
    LANGUAGE plpgsql
    AS $$
DECLARE
    r record;
    v_done integer := 0;
BEGIN
    FOR r IN
        SELECT m.flow_id, m.execution_id, x.partition_key, x.lifecycle_phase, f.cancel_reason
        FROM ff_flow_cancel_member m
        JOIN ff_flow f ON f.flow_id = m.flow_id
        LEFT JOIN ff_execution x ON x.execution_id = m.execution_id
        WHERE p_flow IS NULL OR m.flow_id = p_flow
        ORDER BY m.enqueued_at_ms, m.execution_id
        LIMIT p_limit
        FOR UPDATE OF m SKIP LOCKED
    LOOP
        IF r.lifecycle_phase IS NULL OR r.lifecycle_phase = 'terminal' THEN
            DELETE FROM ff_flow_cancel_member WHERE flow_id = r.flow_id AND execution_id = r.execution_id;
            v_done := v_done + 1;
        ELSIF EXISTS (SELECT 1 FROM ff_execution x WHERE x.execution_id = r.execution_id
                      FOR UPDATE SKIP LOCKED) THEN
            PERFORM ff_cancel_execution(r.execution_id, r.partition_key, coalesce(r.cancel_reason, 'flow cancelled'),
                                        'flow_cascade', false, NULL, NULL, NULL);
            DELETE FROM ff_flow_cancel_member WHERE flow_id = r.flow_id AND execution_id = r.execution_id;
            v_done := v_done + 1;
        END IF;
    END LOOP;
    RETURN v_done;
END
$$;

UPDATE ff_schema SET version = 7;
