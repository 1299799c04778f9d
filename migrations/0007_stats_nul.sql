-- 0007_stats_nul: get_instance_stats no longer fails for an instance whose
-- OrchestrationStarted event holds a NUL character.
--
-- serde writes a NUL inside a JSON string as the escape \u0000, which TEXT
-- stores fine but jsonb refuses (SQLSTATE 22P05). The statistics only need the
-- length of the carry_forward_events array, so the escape is dropped before
-- the cast: a \u0000 escape is a backslash run of odd length followed by
-- u0000; the pattern keeps the even part of the run (escaped backslashes) and
-- removes the escape, leaving valid JSON with the same structure.

-- get_instance_stats: sizes of one instance's current execution and KV view.
-- No row for an unknown instance. The carry-forward count is read from the
-- execution's OrchestrationStarted event (event_id 1). Reads only, no locks.
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
                            CASE WHEN jsonb_typeof(s.started -> 'carry_forward_events') = 'array'
                                 THEN s.started -> 'carry_forward_events' END)::BIGINT
                    FROM history h,
                         LATERAL (SELECT regexp_replace(h.event_data,
                                                        '(?<!\\)((?:\\\\)*)\\u0000', '\1',
                                                        'g')::jsonb AS started) s
                   WHERE h.instance_id = i.instance_id AND h.execution_id = i.current_execution_id
                     AND h.event_id = 1), 0),
        (SELECT count(*) FROM get_kv_values(i.instance_id, NULL)),
        (SELECT COALESCE(sum(octet_length(kv.o_value)), 0)::BIGINT
           FROM get_kv_values(i.instance_id, NULL) kv)
      FROM instances i
     WHERE i.instance_id = p_instance_id
$$;
