-- 0004_history_and_state: reading and appending history, custom status, the
-- per-instance KV store and instance statistics.
-- Conventions (clock, error codes, search_path): migrations/README.md. The current text
-- and contract of every function: schema/functions/<name>.sql.

-- read / read_with_execution: the events of one execution ordered by event_id,
-- as stored JSON text. p_execution_id NULL means the latest execution
-- (highest executions row, 1 when there is none). An unknown instance gives no
-- rows. Locks: none.
CREATE OR REPLACE FUNCTION read_history(p_instance_id TEXT, p_execution_id BIGINT)
RETURNS TABLE (o_event_data TEXT)
LANGUAGE plpgsql STABLE
SET search_path FROM CURRENT
AS $$
DECLARE
    v_exec BIGINT := p_execution_id;
BEGIN
    IF v_exec IS NULL THEN
        v_exec := COALESCE(
            (SELECT max(e.execution_id) FROM executions e WHERE e.instance_id = p_instance_id), 1);
    END IF;
    RETURN QUERY
    SELECT h.event_data FROM history h
     WHERE h.instance_id = p_instance_id AND h.execution_id = v_exec
     ORDER BY h.event_id;
END;
$$;

-- append_with_execution: appends events as given. A duplicate
-- (instance, execution, event_id) aborts the whole call with a unique
-- violation; nothing is ever overwritten. Touches: the new history rows only.
CREATE OR REPLACE FUNCTION append_history(
    p_instance_id  TEXT,
    p_execution_id BIGINT,
    p_event_ids    BIGINT[],
    p_event_data   TEXT[]
) RETURNS VOID
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    INSERT INTO history (instance_id, execution_id, event_id, event_data)
    SELECT p_instance_id, p_execution_id, d.event_id, d.event_data
      FROM unnest(p_event_ids, p_event_data) AS d(event_id, event_data);
END;
$$;

-- get_custom_status: the custom status and its version, only when the version
-- is newer than p_last_seen_version. No row: unknown instance or nothing new.
CREATE OR REPLACE FUNCTION get_custom_status(p_instance_id TEXT, p_last_seen_version BIGINT)
RETURNS TABLE (o_custom_status TEXT, o_version BIGINT)
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    SELECT i.custom_status, i.custom_status_version
      FROM instances i
     WHERE i.instance_id = p_instance_id AND i.custom_status_version > p_last_seen_version
$$;

-- Internal to ack_orchestration_item: applies the turn's KV events to kv_delta
-- in history order (set, clear one key, clear all). A clear writes tombstones
-- (NULL values) so the clear also hides values already merged into kv_store.
CREATE OR REPLACE FUNCTION apply_kv_operations(
    p_instance_id TEXT,
    p_now_ms      BIGINT,
    p_ops         SMALLINT[],
    p_keys        TEXT[],
    p_values      TEXT[],
    p_updated_at  BIGINT[]
) RETURNS VOID
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    FOR i IN 1 .. cardinality(p_ops) LOOP
        CASE p_ops[i]
        WHEN 1 THEN
            INSERT INTO kv_delta AS d (instance_id, key, value, last_updated_at_ms)
            VALUES (p_instance_id, p_keys[i], p_values[i], p_updated_at[i])
            ON CONFLICT (instance_id, key) DO UPDATE
                SET value = EXCLUDED.value, last_updated_at_ms = EXCLUDED.last_updated_at_ms;
        WHEN 2 THEN
            INSERT INTO kv_delta AS d (instance_id, key, value, last_updated_at_ms)
            VALUES (p_instance_id, p_keys[i], NULL, p_now_ms)
            ON CONFLICT (instance_id, key) DO UPDATE
                SET value = NULL, last_updated_at_ms = EXCLUDED.last_updated_at_ms;
        WHEN 3 THEN
            UPDATE kv_delta d SET value = NULL, last_updated_at_ms = p_now_ms
             WHERE d.instance_id = p_instance_id;
            INSERT INTO kv_delta (instance_id, key, value, last_updated_at_ms)
            SELECT s.instance_id, s.key, NULL, p_now_ms FROM kv_store s
             WHERE s.instance_id = p_instance_id
            ON CONFLICT (instance_id, key) DO NOTHING;
        ELSE
            RAISE EXCEPTION 'unknown KV operation code %', p_ops[i] USING ERRCODE = 'DXI01';
        END CASE;
    END LOOP;
END;
$$;

-- Internal to ack_orchestration_item: at the end of an execution, folds
-- kv_delta into kv_store (tombstones delete) and empties the delta.
CREATE OR REPLACE FUNCTION merge_kv_delta(p_instance_id TEXT)
RETURNS VOID
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    INSERT INTO kv_store AS s (instance_id, key, value, last_updated_at_ms)
    SELECT d.instance_id, d.key, d.value, d.last_updated_at_ms
      FROM kv_delta d
     WHERE d.instance_id = p_instance_id AND d.value IS NOT NULL
    ON CONFLICT (instance_id, key) DO UPDATE
        SET value = EXCLUDED.value, last_updated_at_ms = EXCLUDED.last_updated_at_ms;
    DELETE FROM kv_store s
     USING kv_delta d
     WHERE s.instance_id = p_instance_id AND d.instance_id = p_instance_id
       AND d.key = s.key AND d.value IS NULL;
    DELETE FROM kv_delta d WHERE d.instance_id = p_instance_id;
END;
$$;

-- get_kv_values: the merged KV view (current-execution delta over the stored
-- values, tombstones hidden). p_key NULL: every key; otherwise just that key.
CREATE OR REPLACE FUNCTION get_kv_values(p_instance_id TEXT, p_key TEXT)
RETURNS TABLE (o_key TEXT, o_value TEXT)
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    SELECT COALESCE(d.key, s.key), CASE WHEN d.key IS NOT NULL THEN d.value ELSE s.value END
      FROM (SELECT * FROM kv_store
             WHERE instance_id = p_instance_id AND (p_key IS NULL OR key = p_key)) s
      FULL JOIN (SELECT * FROM kv_delta
                  WHERE instance_id = p_instance_id AND (p_key IS NULL OR key = p_key)) d
        ON d.key = s.key
     WHERE CASE WHEN d.key IS NOT NULL THEN d.value ELSE s.value END IS NOT NULL
$$;

-- get_instance_stats: sizes of one instance's current execution and KV view.
-- No row for an unknown instance. The carry-forward count is read from the
-- execution's OrchestrationStarted event (event_id 1).
CREATE OR REPLACE FUNCTION get_instance_stats(p_instance_id TEXT)
RETURNS TABLE (
    o_history_event_count  BIGINT,
    o_history_size_bytes   BIGINT,
    o_queue_pending_count  BIGINT,
    o_kv_user_key_count    BIGINT,
    o_kv_total_value_bytes BIGINT
)
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    SELECT
        (SELECT count(*) FROM history h
          WHERE h.instance_id = i.instance_id AND h.execution_id = i.current_execution_id),
        (SELECT COALESCE(sum(octet_length(h.event_data)), 0)::BIGINT FROM history h
          WHERE h.instance_id = i.instance_id AND h.execution_id = i.current_execution_id),
        COALESCE((SELECT jsonb_array_length(
                            CASE WHEN jsonb_typeof(h.event_data::jsonb -> 'carry_forward_events') = 'array'
                                 THEN h.event_data::jsonb -> 'carry_forward_events' END)::BIGINT
                    FROM history h
                   WHERE h.instance_id = i.instance_id AND h.execution_id = i.current_execution_id
                     AND h.event_id = 1), 0),
        (SELECT count(*) FROM get_kv_values(i.instance_id, NULL)),
        (SELECT COALESCE(sum(octet_length(kv.o_value)), 0)::BIGINT
           FROM get_kv_values(i.instance_id, NULL) kv)
      FROM instances i
     WHERE i.instance_id = p_instance_id
$$;
