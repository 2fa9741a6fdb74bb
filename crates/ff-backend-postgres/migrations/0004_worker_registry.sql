-- FlowFabric engine schema, version 4: the worker registry, and work no live worker can run
-- parked instead of skipped.
--
-- One row per live worker instance: what it serves (lanes, capabilities), in which namespace,
-- and until when it counts as alive. A worker that is marked dead, or whose liveness TTL lapses,
-- loses its row and, in the same transaction, the leases it holds (ff_lose_leases with
-- 'lease_revoked'), so its executions are claimable at once instead of after their lease TTL.
--
-- An execution created eligible whose required capabilities no live worker offers (no
-- registered worker on its lane whose capabilities cover them, and no worker that claimed on
-- its lane with such capabilities in the last minute) is parked as blocked_by_route, out of the
-- claim index, instead of being walked past by every claim. It is unparked (eligible again,
-- keeping its place in line) when a worker offering those capabilities registers for its lane,
-- or claims on its lane with them.

CREATE TABLE ff_worker (
    worker_instance_id text PRIMARY KEY,
    worker_id text NOT NULL,
    namespace text NOT NULL DEFAULT '',
    lanes text[] NOT NULL DEFAULT '{}',
    capabilities text[] NOT NULL DEFAULT '{}',
    liveness_ttl_ms bigint NOT NULL CHECK (liveness_ttl_ms > 0),
    registered_at_ms bigint NOT NULL,
    last_heartbeat_at_ms bigint NOT NULL,
    expires_at_ms bigint NOT NULL
);
CREATE INDEX ff_worker_expiry_idx ON ff_worker (expires_at_ms);
CREATE INDEX ff_worker_namespace_idx ON ff_worker (namespace, worker_instance_id);

-- Workers that claim without registering, by the capability sets they claim with; a claim
-- refreshes its row about every 20 s and the row counts for a minute.
CREATE TABLE ff_route_claimer (
    lane_id text NOT NULL,
    capabilities text[] NOT NULL,
    expires_at_ms bigint NOT NULL,
    PRIMARY KEY (lane_id, capabilities)
);

CREATE INDEX ff_execution_parked_idx ON ff_execution (lane_id, priority DESC, eligible_at_ms, seq)
    WHERE eligibility_state = 'blocked_by_route';

-- Whether some live worker may claim work on p_lane that requires p_required.
CREATE FUNCTION ff_route_covered(p_lane text, p_required text[]) RETURNS boolean
    LANGUAGE sql STABLE
    AS $$
    SELECT cardinality(p_required) = 0
        OR EXISTS (SELECT 1 FROM ff_worker w
                   WHERE w.expires_at_ms > ff_now_ms() AND w.capabilities @> p_required
                     AND (cardinality(w.lanes) = 0 OR p_lane = ANY(w.lanes)))
        OR EXISTS (SELECT 1 FROM ff_route_claimer c
                   WHERE c.lane_id = p_lane AND c.expires_at_ms > ff_now_ms() AND c.capabilities @> p_required)
$$;

-- Unparks the parked executions on p_lane (every lane when NULL) whose required capabilities
-- p_capabilities covers, and wakes claims long-polling those lanes. Returns how many.
CREATE FUNCTION ff_unpark_routable(p_lane text, p_capabilities text[]) RETURNS bigint
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
    AS $$
DECLARE
    v_count bigint;
    v_lanes text[];
BEGIN
    WITH upd AS (
        UPDATE ff_execution e SET eligibility_state = 'eligible_now', blocking_reason = 'waiting_for_worker',
               last_mutation_at_ms = ff_now_ms()
        WHERE e.eligibility_state = 'blocked_by_route' AND (p_lane IS NULL OR e.lane_id = p_lane)
          AND e.required_capabilities <@ p_capabilities
        RETURNING e.lane_id
    )
    SELECT count(*), array_agg(DISTINCT u.lane_id) INTO v_count, v_lanes FROM upd u;
    PERFORM ff_bump_claim_generation(v_lanes);
    PERFORM pg_notify('ff_lane_ready', l) FROM unnest(v_lanes) l;
    RETURN v_count;
END
$$;

-- Records that a worker claims on p_lane with p_capabilities; when it was not known (or its
-- record had lapsed), unparks what it can run. Returns how many executions were unparked.
CREATE FUNCTION ff_note_claimer(p_lane text, p_capabilities text[]) RETURNS bigint
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_known boolean;
BEGIN
    SELECT c.expires_at_ms > ff_now_ms() INTO v_known FROM ff_route_claimer c
    WHERE c.lane_id = p_lane AND c.capabilities = p_capabilities;
    INSERT INTO ff_route_claimer AS c (lane_id, capabilities, expires_at_ms)
    VALUES (p_lane, p_capabilities, ff_now_ms() + 60000)
    ON CONFLICT (lane_id, capabilities) DO UPDATE SET expires_at_ms = EXCLUDED.expires_at_ms;
    IF coalesce(v_known, false) THEN
        RETURN 0;
    END IF;
    RETURN ff_unpark_routable(p_lane, p_capabilities);
END
$$;

-- Registers (or refreshes) a worker instance, and unparks what it can run on its lanes.
-- Returns whether it was already registered and alive, its expiry, and the worker id it is
-- bound to (a different one means the instance id belongs to another worker, and nothing was
-- written).
CREATE FUNCTION ff_register_worker(p_instance text, p_worker text, p_namespace text, p_lanes text[],
                                   p_capabilities text[], p_ttl_ms bigint)
    RETURNS TABLE (refreshed boolean, expires_at_ms bigint, bound_worker_id text)
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_existing ff_worker;
    v_live boolean;
BEGIN
    SELECT * INTO v_existing FROM ff_worker w WHERE w.worker_instance_id = p_instance FOR UPDATE;
    v_live := FOUND AND v_existing.expires_at_ms > ff_now_ms();
    IF v_live AND v_existing.worker_id <> p_worker THEN
        RETURN QUERY SELECT false, v_existing.expires_at_ms, v_existing.worker_id;
        RETURN;
    END IF;
    INSERT INTO ff_worker AS w (worker_instance_id, worker_id, namespace, lanes, capabilities, liveness_ttl_ms,
                                registered_at_ms, last_heartbeat_at_ms, expires_at_ms)
    VALUES (p_instance, p_worker, p_namespace, p_lanes, p_capabilities, p_ttl_ms, ff_now_ms(), ff_now_ms(),
            ff_now_ms() + p_ttl_ms)
    ON CONFLICT (worker_instance_id) DO UPDATE SET
        worker_id = EXCLUDED.worker_id, namespace = EXCLUDED.namespace, lanes = EXCLUDED.lanes,
        capabilities = EXCLUDED.capabilities, liveness_ttl_ms = EXCLUDED.liveness_ttl_ms,
        registered_at_ms = CASE WHEN w.expires_at_ms > ff_now_ms() THEN w.registered_at_ms
                                ELSE EXCLUDED.registered_at_ms END,
        last_heartbeat_at_ms = EXCLUDED.last_heartbeat_at_ms, expires_at_ms = EXCLUDED.expires_at_ms;
    IF cardinality(p_lanes) = 0 THEN
        PERFORM ff_unpark_routable(NULL, p_capabilities);
    ELSE
        PERFORM ff_unpark_routable(l, p_capabilities) FROM unnest(p_lanes) l;
    END IF;
    RETURN QUERY SELECT v_live, ff_now_ms() + p_ttl_ms, p_worker;
END
$$;

-- Retires worker instances and revokes every lease they hold: the instance p_instance (in
-- namespace p_namespace) when given, otherwise up to p_limit instances whose liveness TTL has
-- lapsed. Returns each retired instance with the number of leases it lost.
CREATE FUNCTION ff_retire_workers(p_limit integer, p_instance text DEFAULT NULL, p_namespace text DEFAULT NULL,
                                  p_reason text DEFAULT NULL)
    RETURNS TABLE (worker_instance_id text, revoked bigint)
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
    AS $$
DECLARE
    v_instances text[];
    v_leased uuid[];
    v_lost uuid[];
BEGIN
    IF p_instance IS NULL THEN
        WITH gone AS (
            DELETE FROM ff_worker w
            WHERE w.worker_instance_id IN (
                SELECT x.worker_instance_id FROM ff_worker x
                WHERE x.expires_at_ms <= ff_now_ms()
                ORDER BY x.expires_at_ms LIMIT p_limit
                FOR UPDATE SKIP LOCKED)
            RETURNING w.worker_instance_id
        )
        SELECT array_agg(g.worker_instance_id) INTO v_instances FROM gone g;
    ELSE
        WITH gone AS (
            DELETE FROM ff_worker w
            WHERE w.worker_instance_id = p_instance AND w.namespace = p_namespace
            RETURNING w.worker_instance_id
        )
        SELECT array_agg(g.worker_instance_id) INTO v_instances FROM gone g;
    END IF;
    IF v_instances IS NULL THEN
        RETURN;
    END IF;
    -- Leased executions are few (at most one per running handler), so the lease-expiry index,
    -- which holds exactly the leased rows, finds them without an index of their own.
    SELECT array_agg(x.execution_id) INTO v_leased FROM (
        SELECT e.execution_id FROM ff_execution e
        WHERE e.ownership_state = 'leased' AND e.lifecycle_phase = 'active' AND e.lease_expires_at_ms IS NOT NULL
          AND e.worker_instance_id = ANY(v_instances)
        ORDER BY e.execution_id
        FOR UPDATE
    ) x;
    IF v_leased IS NOT NULL THEN
        SELECT array_agg(l.execution_id) INTO v_lost
        FROM ff_lose_leases(v_leased, 'lease_revoked',
                            coalesce(p_reason, 'worker liveness lapsed')) l;
    END IF;
    RETURN QUERY
    SELECT i.id, (SELECT count(*) FROM ff_execution e
                  WHERE e.execution_id = ANY(coalesce(v_lost, '{}')) AND e.worker_instance_id = i.id)
    FROM unnest(v_instances) AS i(id);
END
$$;

UPDATE ff_schema SET version = 4;
