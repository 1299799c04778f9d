-- 0006_operator: read-only views for operators (the duroxide-pg CLI).
--
-- Adds queue_overview (per-queue ready / delayed / locked counts and the age
-- of the oldest ready message) and bulk_delete_roots (which root instances a
-- bulk delete would take), and makes delete_instance_bulk use the latter so a
-- dry run and the real purge select exactly the same instances.

-- queue_overview: one row per queue: 'orchestrator' (messages other than
-- timers), 'timer' (TimerFired messages) and 'worker'. A message is locked
-- while a live lease keeps fetches from it: for the orchestrator and timer
-- queues, a live lease on its instance (messages that arrive during a turn
-- wait for it too); for the worker queue, its own lease. Otherwise it is
-- delayed while its visible time is in the future, ready after that.
-- o_oldest_ready_ms is how long the oldest ready message has been visible
-- (NULL when none is ready). Reads only, no locks.
CREATE OR REPLACE FUNCTION queue_overview(p_now_ms BIGINT)
RETURNS TABLE (
    o_queue           TEXT,
    o_ready           BIGINT,
    o_delayed         BIGINT,
    o_locked          BIGINT,
    o_oldest_ready_ms BIGINT
)
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    WITH orch AS (
        SELECT CASE WHEN q.kind = 'TimerFired' THEN 'timer' ELSE 'orchestrator' END AS queue,
               q.visible_at,
               EXISTS (SELECT 1 FROM instance_locks l
                        WHERE l.instance_id = q.instance_id AND l.locked_until > p_now_ms) AS locked
          FROM orchestrator_queue q
    ), work AS (
        SELECT 'worker'::TEXT AS queue, w.visible_at,
               (w.lock_token IS NOT NULL AND w.locked_until > p_now_ms) AS locked
          FROM worker_queue w
    ), all_rows AS (
        SELECT * FROM orch UNION ALL SELECT * FROM work
    )
    SELECT n.queue,
           count(a.queue) FILTER (WHERE NOT a.locked AND a.visible_at <= p_now_ms),
           count(a.queue) FILTER (WHERE NOT a.locked AND a.visible_at > p_now_ms),
           count(a.queue) FILTER (WHERE a.locked),
           p_now_ms - min(a.visible_at) FILTER (WHERE NOT a.locked AND a.visible_at <= p_now_ms)
      FROM (VALUES (1, 'orchestrator'), (2, 'timer'), (3, 'worker')) AS n(ord, queue)
      LEFT JOIN all_rows a ON a.queue = n.queue
     GROUP BY n.ord, n.queue
     ORDER BY n.ord
$$;

-- bulk_delete_roots: the terminal (Completed, Failed, ContinuedAsNew) root
-- instances matching every given filter, oldest completion first, at most
-- p_limit. Running instances and sub-orchestrations are never selected.
-- Reads only, no locks.
CREATE OR REPLACE FUNCTION bulk_delete_roots(
    p_ids              TEXT[],   -- NULL: no id filter
    p_completed_before BIGINT,   -- NULL: no time filter
    p_limit            BIGINT
) RETURNS TABLE (o_instance_id TEXT)
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    SELECT i.instance_id
      FROM instances i
      JOIN executions e
        ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
     WHERE i.parent_instance_id IS NULL
       AND e.status IN ('Completed', 'Failed', 'ContinuedAsNew')
       AND (p_ids IS NULL OR i.instance_id = ANY (p_ids))
       AND (p_completed_before IS NULL OR e.completed_at < p_completed_before)
     ORDER BY e.completed_at, i.instance_id
     LIMIT p_limit
$$;

-- delete_instance_bulk: deletes the roots bulk_delete_roots selects, each with
-- its whole tree, in one delete_instances_atomic call (its locks: instance
-- leases first, then instance rows). Running instances are skipped.
CREATE OR REPLACE FUNCTION delete_instance_bulk(
    p_ids              TEXT[],
    p_completed_before BIGINT,
    p_limit            BIGINT
) RETURNS TABLE (
    o_instances_deleted      BIGINT,
    o_executions_deleted     BIGINT,
    o_events_deleted         BIGINT,
    o_queue_messages_deleted BIGINT
)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    RETURN QUERY
    SELECT * FROM delete_instances_atomic(
        ARRAY(SELECT t.o_instance_id
                FROM bulk_delete_roots(p_ids, p_completed_before, p_limit) r,
                     LATERAL get_instance_tree(r.o_instance_id) t),
        TRUE);
END;
$$;
