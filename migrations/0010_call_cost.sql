-- 0010_call_cost: the same operations, with less server CPU per call.
--
-- Under load (config P: 4+4 slots, 0 ms activities) the PostgreSQL backends
-- used ~80 % of both cores, and a profile showed the SQL parser at work on
-- every call. A LANGUAGE sql function with a SET clause is never inlined: each
-- call parses, analyses and plans its body again. The hot paths called such
-- functions all the time: get_custom_status (every client status poll),
-- notify_work and notify_channel (two per notification, up to three per
-- orchestration ack), live_lease_token (every enqueue and activity ack),
-- touch_session (every activity ack), lock_key (every lease).
--
-- The convention changes (migrations/README.md):
--   * Top-level plpgsql functions keep `SET search_path FROM CURRENT`
--     (plpgsql caches its plans; the SET is a cheap push/pop per call).
--   * SQL functions use SQL-standard bodies (RETURN / BEGIN ATOMIC): their
--     names are resolved once, at CREATE time, so they need no SET whatever
--     search_path the caller has, and the planner can inline them into the
--     calling statement, whose plan is cached.
--   * Internal helpers called only from those functions run under the
--     caller's search_path (always this schema) and carry no SET.
--   * Values that depended on current_schema() at call time (the
--     notification channel, the advisory-lock key prefix) are computed once
--     here and written into the function as constants: the same values as
--     before, so processes of the previous version keep agreeing on them.
--
-- Rows touched, locks taken and results are unchanged for every function.

-- notify_channel and lock_key (current text and contract: schema/functions/), with this schema's name fixed at
-- migration time (format %L quotes it); both are constant-folded once inlined.
DO $migration$
BEGIN
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION notify_channel()
        RETURNS TEXT
        LANGUAGE sql IMMUTABLE
        RETURN 'duroxide_pg_' || left(md5(%L), 24)
    $f$, current_schema());

    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION lock_key(p_kind TEXT, p_id TEXT)
        RETURNS BIGINT
        LANGUAGE sql IMMUTABLE
        RETURN hashtextextended(%L || p_kind || '/' || p_id, 0)
    $f$, 'duroxide-pg/' || current_schema() || '/');
END;
$migration$;

-- Internal helpers (0002, 0003, 0009): same statements, now plpgsql (plans
-- cached per connection) without SET. Internal: they run under their
-- caller's search_path, which every calling entry point pins to this schema.

-- notify_work (schema/functions/notify_work.sql): one NOTIFY of p_count items on p_queue, none for 0.
-- Internal (caller's search_path).
CREATE OR REPLACE FUNCTION notify_work(p_queue TEXT, p_count BIGINT)
RETURNS VOID
LANGUAGE plpgsql
AS $$
BEGIN
    IF p_count > 0 THEN
        PERFORM pg_notify(notify_channel(), p_queue || p_count::TEXT);
    END IF;
END;
$$;

-- notify_later (schema/functions/notify_later.sql): one NOTIFY naming the time an item becomes visible.
-- Internal (caller's search_path).
CREATE OR REPLACE FUNCTION notify_later(p_queue TEXT, p_visible_at BIGINT)
RETURNS VOID
LANGUAGE plpgsql
AS $$
BEGIN
    IF p_visible_at IS NOT NULL THEN
        PERFORM pg_notify(notify_channel(), p_queue || '@' || p_visible_at::TEXT);
    END IF;
END;
$$;

-- touch_session (schema/functions/touch_session.sql): bumps a live session's last activity.
-- Internal (caller's search_path).
CREATE OR REPLACE FUNCTION touch_session(p_session_id TEXT, p_now_ms BIGINT)
RETURNS VOID
LANGUAGE plpgsql
AS $$
BEGIN
    IF p_session_id IS NOT NULL THEN
        UPDATE sessions s SET last_activity_at = p_now_ms
         WHERE s.session_id = p_session_id AND s.locked_until > p_now_ms;
    END IF;
END;
$$;

-- live_lease_token (schema/functions/live_lease_token.sql): the token of p_instance_id's live lease, or
-- NULL when it has none or its lease row is being changed right now (SKIP
-- LOCKED: never waits). Takes FOR SHARE on the row and keeps it to commit.
-- Internal (caller's search_path).
CREATE OR REPLACE FUNCTION live_lease_token(p_instance_id TEXT, p_now_ms BIGINT)
RETURNS TEXT
LANGUAGE plpgsql
AS $$
DECLARE
    v_token TEXT;
BEGIN
    SELECT l.lock_token INTO v_token
      FROM instance_locks l
     WHERE l.instance_id = p_instance_id AND l.locked_until > p_now_ms
       FOR SHARE SKIP LOCKED;
    RETURN v_token;
END;
$$;

-- Replaced by live_lease_token; nothing calls it any more.
DROP FUNCTION IF EXISTS instance_is_leased(TEXT, BIGINT);

-- read_history (schema/functions/read_history.sql): the events of one execution ordered
-- by event_id, as stored JSON text; p_execution_id NULL means the latest
-- execution (1 when there is none). An unknown instance gives no rows.
-- Locks: none. Inlined into the caller's statement.
CREATE OR REPLACE FUNCTION read_history(p_instance_id TEXT, p_execution_id BIGINT)
RETURNS TABLE (o_event_data TEXT)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT h.event_data
      FROM history h
     WHERE h.instance_id = p_instance_id
       AND h.execution_id = COALESCE(
               p_execution_id,
               (SELECT max(e.execution_id) FROM executions e
                 WHERE e.instance_id = p_instance_id),
               1)
     ORDER BY h.event_id;
END;

-- get_custom_status (schema/functions/get_custom_status.sql): the custom status and its version, only when
-- the version is newer than p_last_seen_version. No row: unknown instance or
-- nothing new. Locks: none. Inlined into the caller's statement.
CREATE OR REPLACE FUNCTION get_custom_status(p_instance_id TEXT, p_last_seen_version BIGINT)
RETURNS TABLE (o_custom_status TEXT, o_version BIGINT)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT i.custom_status, i.custom_status_version
      FROM instances i
     WHERE i.instance_id = p_instance_id
       AND i.custom_status_version > p_last_seen_version;
END;
