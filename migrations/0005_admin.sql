-- 0005_admin: the management (ProviderAdmin) operations: listings, info,
-- metrics, deletion and pruning. Each is one call and one transaction.
-- Conventions (clock, error codes, search_path): migrations/README.md. The current text
-- and contract of every function: schema/functions/<name>.sql.

-- list_instances / list_instances_by_status: instance ids, newest first.
-- p_status filters on the current execution's status; NULL lists all.
CREATE OR REPLACE FUNCTION list_instances(p_status TEXT)
RETURNS TABLE (o_instance_id TEXT)
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    SELECT i.instance_id
      FROM instances i
      LEFT JOIN executions e
        ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
     WHERE p_status IS NULL OR COALESCE(e.status, 'Running') = p_status
     ORDER BY i.created_at DESC, i.instance_id
$$;

-- list_executions: execution ids of one instance, ascending.
CREATE OR REPLACE FUNCTION list_executions(p_instance_id TEXT)
RETURNS TABLE (o_execution_id BIGINT)
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    SELECT e.execution_id FROM executions e
     WHERE e.instance_id = p_instance_id ORDER BY e.execution_id
$$;

-- latest_execution_id: the highest execution id, 1 when there is none.
CREATE OR REPLACE FUNCTION latest_execution_id(p_instance_id TEXT)
RETURNS BIGINT
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    SELECT COALESCE(max(e.execution_id), 1) FROM executions e WHERE e.instance_id = p_instance_id
$$;

-- get_instance_info: the instance row joined with its current execution.
-- Unknown instance: DXN01.
CREATE OR REPLACE FUNCTION get_instance_info(p_instance_id TEXT)
RETURNS TABLE (
    o_instance_id           TEXT,
    o_orchestration_name    TEXT,
    o_orchestration_version TEXT,
    o_current_execution_id  BIGINT,
    o_status                TEXT,
    o_output                TEXT,
    o_created_at            BIGINT,
    o_updated_at            BIGINT,
    o_parent_instance_id    TEXT
)
LANGUAGE plpgsql STABLE
SET search_path FROM CURRENT
AS $$
BEGIN
    RETURN QUERY
    SELECT i.instance_id, i.orchestration_name, COALESCE(i.orchestration_version, 'unknown'),
           i.current_execution_id, COALESCE(e.status, 'Running'), e.output,
           i.created_at, i.updated_at, i.parent_instance_id
      FROM instances i
      LEFT JOIN executions e
        ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
     WHERE i.instance_id = p_instance_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Instance % not found', p_instance_id USING ERRCODE = 'DXN01';
    END IF;
END;
$$;

-- get_execution_info: one execution with its event count. Unknown: DXN01.
CREATE OR REPLACE FUNCTION get_execution_info(p_instance_id TEXT, p_execution_id BIGINT)
RETURNS TABLE (
    o_execution_id BIGINT,
    o_status       TEXT,
    o_output       TEXT,
    o_started_at   BIGINT,
    o_completed_at BIGINT,
    o_event_count  BIGINT
)
LANGUAGE plpgsql STABLE
SET search_path FROM CURRENT
AS $$
BEGIN
    RETURN QUERY
    SELECT e.execution_id, e.status, e.output, e.started_at, e.completed_at,
           (SELECT count(*) FROM history h
             WHERE h.instance_id = e.instance_id AND h.execution_id = e.execution_id)
      FROM executions e
     WHERE e.instance_id = p_instance_id AND e.execution_id = p_execution_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Execution % not found for instance %', p_execution_id, p_instance_id
            USING ERRCODE = 'DXN01';
    END IF;
END;
$$;

-- get_system_metrics: instance counts by current status, executions, events.
CREATE OR REPLACE FUNCTION get_system_metrics()
RETURNS TABLE (
    o_total_instances     BIGINT,
    o_total_executions    BIGINT,
    o_running_instances   BIGINT,
    o_completed_instances BIGINT,
    o_failed_instances    BIGINT,
    o_total_events        BIGINT
)
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    SELECT count(*),
           (SELECT count(*) FROM executions),
           count(*) FILTER (WHERE COALESCE(e.status, 'Running') = 'Running'),
           count(*) FILTER (WHERE e.status = 'Completed'),
           count(*) FILTER (WHERE e.status = 'Failed'),
           (SELECT count(*) FROM history)
      FROM instances i
      LEFT JOIN executions e
        ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
$$;

-- get_queue_depths: messages not held by a fetch, per queue.
CREATE OR REPLACE FUNCTION get_queue_depths(p_now_ms BIGINT)
RETURNS TABLE (o_orchestrator_queue BIGINT, o_worker_queue BIGINT)
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    SELECT (SELECT count(*) FROM orchestrator_queue q
             WHERE q.lock_token IS NULL
                OR NOT EXISTS (SELECT 1 FROM instance_locks l
                                WHERE l.lock_token = q.lock_token AND l.locked_until > p_now_ms)),
           (SELECT count(*) FROM worker_queue w
             WHERE w.lock_token IS NULL OR w.locked_until <= p_now_ms)
$$;

-- list_children: direct sub-orchestrations of an instance.
CREATE OR REPLACE FUNCTION list_children(p_instance_id TEXT)
RETURNS TABLE (o_instance_id TEXT)
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    SELECT i.instance_id FROM instances i
     WHERE i.parent_instance_id = p_instance_id ORDER BY i.created_at, i.instance_id
$$;

-- get_parent_id: the parent of an instance (NULL for a root). Unknown: DXN01.
CREATE OR REPLACE FUNCTION get_parent_id(p_instance_id TEXT)
RETURNS TEXT
LANGUAGE plpgsql STABLE
SET search_path FROM CURRENT
AS $$
DECLARE
    v_parent TEXT;
BEGIN
    SELECT i.parent_instance_id INTO v_parent FROM instances i WHERE i.instance_id = p_instance_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Instance % not found', p_instance_id USING ERRCODE = 'DXN01';
    END IF;
    RETURN v_parent;
END;
$$;

-- get_instance_tree: an instance and all its descendants, root first
-- (breadth-first).
CREATE OR REPLACE FUNCTION get_instance_tree(p_instance_id TEXT)
RETURNS TABLE (o_instance_id TEXT)
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    WITH RECURSIVE tree(instance_id, depth) AS (
        SELECT p_instance_id, 0
        UNION
        SELECT i.instance_id, t.depth + 1
          FROM instances i JOIN tree t ON i.parent_instance_id = t.instance_id
    )
    SELECT instance_id FROM tree ORDER BY depth, instance_id
$$;

-- delete_instances_atomic: removes the given instances and everything they own
-- (history, executions, both queues, leases, KV) in one transaction.
-- Locks: the lease rows, then the instance rows (FOR UPDATE; the order acks
-- use), so a concurrent ack of one of them finishes first or finds its lease gone. Without p_force a Running instance
-- aborts the call (DXP01); a child not in p_ids aborts it too (DXP01: the tree
-- changed since it was read). Returns the counts removed.
CREATE OR REPLACE FUNCTION delete_instances_atomic(p_ids TEXT[], p_force BOOLEAN)
RETURNS TABLE (
    o_instances_deleted      BIGINT,
    o_executions_deleted     BIGINT,
    o_events_deleted         BIGINT,
    o_queue_messages_deleted BIGINT
)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_id     TEXT;
    v_parent TEXT;
    v_orch   BIGINT;
    v_work   BIGINT;
BEGIN
    -- Same lock order as ack_orchestration_item (lease row, then instance row),
    -- so a delete racing an ack waits for it instead of deadlocking with it.
    PERFORM 1 FROM instance_locks l WHERE l.instance_id = ANY (p_ids) ORDER BY l.instance_id FOR UPDATE;
    PERFORM 1 FROM instances i WHERE i.instance_id = ANY (p_ids) ORDER BY i.instance_id FOR UPDATE;

    IF NOT p_force THEN
        SELECT i.instance_id INTO v_id
          FROM instances i
          JOIN executions e
            ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
         WHERE i.instance_id = ANY (p_ids) AND e.status = 'Running'
         LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'Instance % is still running. Use force=true to delete anyway, or cancel first.', v_id
                USING ERRCODE = 'DXP01';
        END IF;
    END IF;

    SELECT i.instance_id, i.parent_instance_id INTO v_id, v_parent
      FROM instances i
     WHERE i.parent_instance_id = ANY (p_ids) AND NOT (i.instance_id = ANY (p_ids))
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'Cannot delete: instance % has child % that is not in the delete set. Re-read the tree and retry.',
            v_parent, v_id USING ERRCODE = 'DXP01';
    END IF;

    DELETE FROM history h WHERE h.instance_id = ANY (p_ids);
    GET DIAGNOSTICS o_events_deleted = ROW_COUNT;
    DELETE FROM executions e WHERE e.instance_id = ANY (p_ids);
    GET DIAGNOSTICS o_executions_deleted = ROW_COUNT;
    DELETE FROM orchestrator_queue q WHERE q.instance_id = ANY (p_ids);
    GET DIAGNOSTICS v_orch = ROW_COUNT;
    DELETE FROM worker_queue w WHERE w.instance_id = ANY (p_ids);
    GET DIAGNOSTICS v_work = ROW_COUNT;
    o_queue_messages_deleted := v_orch + v_work;
    DELETE FROM instance_locks l WHERE l.instance_id = ANY (p_ids);
    DELETE FROM kv_store s WHERE s.instance_id = ANY (p_ids);
    DELETE FROM kv_delta d WHERE d.instance_id = ANY (p_ids);
    DELETE FROM instances i WHERE i.instance_id = ANY (p_ids);
    SELECT count(DISTINCT x) INTO o_instances_deleted FROM unnest(p_ids) AS x;
    RETURN NEXT;
END;
$$;

-- delete_instance: deletes a root instance with its whole sub-orchestration
-- tree. Unknown instance: DXN01 ("not found"); a sub-orchestration: DXP01
-- (delete its root instead). Otherwise as delete_instances_atomic.
CREATE OR REPLACE FUNCTION delete_instance(p_instance_id TEXT, p_force BOOLEAN)
RETURNS TABLE (
    o_instances_deleted      BIGINT,
    o_executions_deleted     BIGINT,
    o_events_deleted         BIGINT,
    o_queue_messages_deleted BIGINT
)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    IF get_parent_id(p_instance_id) IS NOT NULL THEN
        RAISE EXCEPTION 'Cannot delete sub-orchestration % directly. Delete root instance instead.',
            p_instance_id USING ERRCODE = 'DXP01';
    END IF;
    RETURN QUERY
    SELECT * FROM delete_instances_atomic(
        ARRAY(SELECT t.o_instance_id FROM get_instance_tree(p_instance_id) t), p_force);
END;
$$;

-- delete_instance_bulk: deletes terminal (Completed, Failed, ContinuedAsNew)
-- root instances matching every given filter (ids, completed before, at most
-- p_limit roots), each with its whole tree. Running instances are skipped.
CREATE OR REPLACE FUNCTION delete_instance_bulk(
    p_ids              TEXT[],   -- NULL: no id filter
    p_completed_before BIGINT,   -- NULL: no time filter
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
DECLARE
    v_all TEXT[];
BEGIN
    SELECT ARRAY(
        SELECT t.o_instance_id
          FROM (SELECT i.instance_id
                  FROM instances i
                  JOIN executions e
                    ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
                 WHERE i.parent_instance_id IS NULL
                   AND e.status IN ('Completed', 'Failed', 'ContinuedAsNew')
                   AND (p_ids IS NULL OR i.instance_id = ANY (p_ids))
                   AND (p_completed_before IS NULL OR e.completed_at < p_completed_before)
                 ORDER BY e.completed_at, i.instance_id
                 LIMIT p_limit) roots,
               LATERAL get_instance_tree(roots.instance_id) t)
      INTO v_all;
    RETURN QUERY SELECT * FROM delete_instances_atomic(v_all, TRUE);
END;
$$;

-- prune_executions: deletes old executions (and their history) of one
-- instance. Never the current execution, never a Running one; keeps the
-- p_keep_last newest when given (0 and 1 both keep only the current one);
-- with p_completed_before only executions completed before it. Unknown
-- instance: DXN01. Returns (1, executions deleted, events deleted).
CREATE OR REPLACE FUNCTION prune_executions(
    p_instance_id      TEXT,
    p_keep_last        BIGINT,
    p_completed_before BIGINT
) RETURNS TABLE (o_instances_processed BIGINT, o_executions_deleted BIGINT, o_events_deleted BIGINT)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_current BIGINT;
    v_doomed  BIGINT[];
BEGIN
    SELECT i.current_execution_id INTO v_current
      FROM instances i WHERE i.instance_id = p_instance_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Instance % not found', p_instance_id USING ERRCODE = 'DXN01';
    END IF;
    SELECT ARRAY(
        SELECT e.execution_id FROM executions e
         WHERE e.instance_id = p_instance_id
           AND e.execution_id <> v_current
           AND e.status <> 'Running'
           AND (p_completed_before IS NULL OR e.completed_at < p_completed_before)
           AND (p_keep_last IS NULL OR e.execution_id NOT IN (
                   SELECT k.execution_id FROM executions k
                    WHERE k.instance_id = p_instance_id
                    ORDER BY k.execution_id DESC LIMIT p_keep_last)))
      INTO v_doomed;
    o_instances_processed := 1;
    DELETE FROM history h WHERE h.instance_id = p_instance_id AND h.execution_id = ANY (v_doomed);
    GET DIAGNOSTICS o_events_deleted = ROW_COUNT;
    DELETE FROM executions e WHERE e.instance_id = p_instance_id AND e.execution_id = ANY (v_doomed);
    GET DIAGNOSTICS o_executions_deleted = ROW_COUNT;
    RETURN NEXT;
END;
$$;

-- prune_executions_bulk: prune_executions over every instance (Running ones
-- included: only their old executions go) matching the filters (ids, current
-- execution completed before, at most p_limit instances). Sums the results.
CREATE OR REPLACE FUNCTION prune_executions_bulk(
    p_ids                     TEXT[],
    p_filter_completed_before BIGINT,
    p_limit                   BIGINT,
    p_keep_last               BIGINT,
    p_completed_before        BIGINT
) RETURNS TABLE (o_instances_processed BIGINT, o_executions_deleted BIGINT, o_events_deleted BIGINT)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    RETURN QUERY
    SELECT COALESCE(sum(r.o_instances_processed), 0)::BIGINT,
           COALESCE(sum(r.o_executions_deleted), 0)::BIGINT,
           COALESCE(sum(r.o_events_deleted), 0)::BIGINT
      FROM (SELECT i.instance_id
              FROM instances i
              LEFT JOIN executions e
                ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
             WHERE (p_ids IS NULL OR i.instance_id = ANY (p_ids))
               AND (p_filter_completed_before IS NULL OR e.completed_at < p_filter_completed_before)
             ORDER BY i.instance_id
             LIMIT p_limit) targets,
           LATERAL prune_executions(targets.instance_id, p_keep_last, p_completed_before) r;
END;
$$;
