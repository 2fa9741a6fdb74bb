-- Stream modes and tag events.
--
-- A frame is kept durably, durably with its payload merged into the attempt's summary document
-- (an RFC 7396 merge patch), or as a best-effort live frame: an attempt keeps only its newest
-- best-effort frames, about twice as many as arrive within the frame's time to live at the
-- recent append rate. Trimming deletes best-effort frames only.
--
-- Tag changes are written to the event log (with the tag in `detail`), so followers of instance
-- tags resume from a cursor like every other follower.

ALTER TYPE ff_event_kind ADD VALUE 'tag_attached';
ALTER TYPE ff_event_kind ADD VALUE 'tag_cleared';

ALTER TABLE ff_event ADD COLUMN detail jsonb;

CREATE TYPE ff_frame_mode AS ENUM ('durable', 'summary', 'best_effort');

ALTER TABLE ff_frame ADD COLUMN mode ff_frame_mode NOT NULL DEFAULT 'durable';

-- Trimming walks an attempt's best-effort frames oldest first, past its durable ones.
CREATE INDEX ff_frame_best_effort_idx ON ff_frame (execution_id, attempt_index, seq) WHERE mode = 'best_effort';

-- One per attempt that ever appended a summary frame.
CREATE TABLE ff_stream_summary (
    execution_id uuid NOT NULL,
    attempt_index integer NOT NULL,
    document jsonb NOT NULL,
    version bigint NOT NULL CHECK (version >= 1),
    patch_kind text NOT NULL DEFAULT 'json-merge-patch',
    first_applied_ms bigint NOT NULL,
    last_updated_ms bigint NOT NULL,
    PRIMARY KEY (execution_id, attempt_index)
);

-- One per attempt that ever appended a best-effort frame: the moving average of its append
-- rate and how many best-effort frames it holds.
CREATE TABLE ff_stream_live (
    execution_id uuid NOT NULL,
    attempt_index integer NOT NULL,
    ema_rate_hz double precision NOT NULL,
    last_append_ms bigint NOT NULL,
    live_frames bigint NOT NULL CHECK (live_frames >= 0),
    maxlen_applied integer NOT NULL,
    PRIMARY KEY (execution_id, attempt_index)
);

-- RFC 7396: an object patch merges member by member (a null member deletes the key); any other
-- patch replaces the target. The string '__ff_null__' stores a JSON null.
CREATE FUNCTION ff_merge_patch(p_target jsonb, p_patch jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE
    AS $$
DECLARE
    v_result jsonb;
    v_key text;
    v_value jsonb;
BEGIN
    IF p_patch IS NULL OR jsonb_typeof(p_patch) <> 'object' THEN
        IF p_patch = '"__ff_null__"'::jsonb THEN
            RETURN 'null'::jsonb;
        END IF;
        RETURN p_patch;
    END IF;
    v_result := CASE WHEN jsonb_typeof(p_target) = 'object' THEN p_target ELSE '{}'::jsonb END;
    FOR v_key, v_value IN SELECT key, value FROM jsonb_each(p_patch) LOOP
        IF jsonb_typeof(v_value) = 'null' THEN
            v_result := v_result - v_key;
        ELSE
            v_result := jsonb_set(v_result, ARRAY[v_key], ff_merge_patch(v_result -> v_key, v_value));
        END IF;
    END LOOP;
    RETURN v_result;
END
$$;

-- Applies one summary frame's patch; returns the new version.
CREATE FUNCTION ff_apply_summary(p_execution_id uuid, p_attempt_index integer, p_patch jsonb, p_now bigint)
    RETURNS bigint
    LANGUAGE sql
    AS $$
    INSERT INTO ff_stream_summary AS s (execution_id, attempt_index, document, version, first_applied_ms, last_updated_ms)
    VALUES (p_execution_id, p_attempt_index, ff_merge_patch('{}'::jsonb, p_patch), 1, p_now, p_now)
    ON CONFLICT (execution_id, attempt_index) DO UPDATE
        SET document = ff_merge_patch(s.document, p_patch), version = s.version + 1, last_updated_ms = p_now
    RETURNING version
$$;

-- Records one best-effort frame and trims the attempt's oldest ones when it holds more than
-- its bound plus a slack of a quarter (so a trim's cost is spread over many appends). The
-- caller holds the attempt's frame counter row, so appends to one attempt run one at a time.
CREATE FUNCTION ff_note_live_frame(p_execution_id uuid, p_attempt_index integer, p_now bigint, p_ttl_ms bigint,
                                   p_floor integer, p_ceiling integer, p_alpha double precision)
    RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_live ff_stream_live;
    v_rate double precision;
    v_keep integer;
    v_cutoff bigint;
    v_deleted bigint;
BEGIN
    SELECT * INTO v_live FROM ff_stream_live WHERE execution_id = p_execution_id AND attempt_index = p_attempt_index;
    IF NOT FOUND THEN
        INSERT INTO ff_stream_live (execution_id, attempt_index, ema_rate_hz, last_append_ms, live_frames, maxlen_applied)
        VALUES (p_execution_id, p_attempt_index, 0, p_now, 1, p_floor);
        RETURN;
    END IF;
    v_rate := p_alpha * (1000.0 / greatest(p_now - v_live.last_append_ms, 1)) + (1 - p_alpha) * v_live.ema_rate_hz;
    v_keep := least(greatest(ceil(v_rate * p_ttl_ms / 1000.0)::bigint * 2, p_floor), p_ceiling);
    IF v_live.live_frames + 1 > v_keep + greatest(v_keep / 4, 8) THEN
        SELECT f.seq INTO v_cutoff FROM ff_frame f
        WHERE f.execution_id = p_execution_id AND f.attempt_index = p_attempt_index AND f.mode = 'best_effort'
        ORDER BY f.seq DESC OFFSET v_keep - 1 LIMIT 1;
        DELETE FROM ff_frame f
        WHERE f.execution_id = p_execution_id AND f.attempt_index = p_attempt_index AND f.mode = 'best_effort'
          AND f.seq < v_cutoff;
        GET DIAGNOSTICS v_deleted = ROW_COUNT;
        UPDATE ff_stream_live SET ema_rate_hz = v_rate, last_append_ms = p_now,
                                  live_frames = live_frames + 1 - v_deleted,
                                  maxlen_applied = v_keep
        WHERE execution_id = p_execution_id AND attempt_index = p_attempt_index;
    ELSE
        UPDATE ff_stream_live SET ema_rate_hz = v_rate, last_append_ms = p_now, live_frames = live_frames + 1,
                                  maxlen_applied = v_keep
        WHERE execution_id = p_execution_id AND attempt_index = p_attempt_index;
    END IF;
END
$$;

-- Processes with someone following the event log or a stream: writers announce their commits
-- (out of band, see the engine's pulse) only while a row here is live, so a deployment nobody
-- watches pays nothing for the announcements. A process renews its row while it has followers
-- and deletes it when it has none; a row of a dead process lapses.
CREATE TABLE ff_follower (
    process_id text PRIMARY KEY,
    expires_at_ms bigint NOT NULL
);

UPDATE ff_schema SET version = 11;
