-- 0015_dashboard: the bounded reads behind the operator dashboard
-- (duroxide-pg-ui) and any other tool that pages through a large store.
--
-- Every function here returns at most a page (p_limit rows) or a few
-- aggregate rows, and walks an index in the order it returns, so a page
-- deep in a list of a million instances costs what the first page costs
-- (keyset pagination: the caller passes the last row it showed, never an
-- offset). They take no locks and change nothing. Callers bound each call
-- with a statement timeout as well (PostgresProvider's dashboard methods
-- do), because a filter that matches few rows can still walk many.
--
-- SQL-standard bodies: names are bound when the function is created and
-- the planner inlines the body into the calling statement, so a filter
-- left NULL costs nothing and the keyset bound becomes an index condition.

-- Instances matching a filter, newest first; the filter NULLs match all.
CREATE OR REPLACE FUNCTION dashboard_instances(
    p_status TEXT, p_name TEXT, p_id_prefix TEXT,
    p_created_from BIGINT, p_created_to BIGINT,
    p_completed_from BIGINT, p_completed_to BIGINT,
    p_finished_roots_only BOOLEAN,
    p_after_created BIGINT, p_after_id TEXT,
    p_limit INTEGER)
RETURNS TABLE (o_instance_id TEXT, o_orchestration_name TEXT, o_orchestration_version TEXT,
               o_status TEXT, o_execution_id BIGINT, o_created_at BIGINT, o_updated_at BIGINT,
               o_completed_at BIGINT, o_parent_instance_id TEXT)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT i.instance_id, i.orchestration_name, i.orchestration_version,
           COALESCE(e.status, 'Running'), i.current_execution_id, i.created_at, i.updated_at,
           e.completed_at, i.parent_instance_id
      FROM instances i
      LEFT JOIN executions e
        ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
     WHERE i.created_at <= COALESCE(p_after_created, 9223372036854775807)
       AND (p_after_id IS NULL OR i.created_at < p_after_created OR i.instance_id > p_after_id)
       AND i.created_at >= COALESCE(p_created_from, -9223372036854775808)
       AND i.created_at < COALESCE(p_created_to, 9223372036854775807)
       AND (p_status IS NULL OR COALESCE(e.status, 'Running') = p_status)
       AND (p_name IS NULL OR i.orchestration_name = p_name)
       AND (p_id_prefix IS NULL OR starts_with(i.instance_id, p_id_prefix))
       AND (p_completed_from IS NULL OR e.completed_at >= p_completed_from)
       AND (p_completed_to IS NULL OR e.completed_at < p_completed_to)
       AND (NOT p_finished_roots_only
            OR (i.parent_instance_id IS NULL AND e.status IN ('Completed', 'Failed')
                -- Most roots have no child: one probe of instances_parent_idx
                -- spares them the walk of their tree.
                AND (NOT EXISTS (SELECT 1 FROM instances c WHERE c.parent_instance_id = i.instance_id)
                     OR retention_tree_finished(i.instance_id))))
     ORDER BY i.created_at DESC, i.instance_id
     LIMIT p_limit;
END;
COMMENT ON FUNCTION dashboard_instances(text, text, text, bigint, bigint, bigint, bigint, boolean, bigint, text, integer) IS $c$Operator listing (PostgresProvider::dashboard_instances): at most p_limit instances matching every non-NULL filter, newest first (created_at DESC, instance_id), with their current execution's status ('Running' when it has no row yet) and completion time.
Locks: none (reads only).
Rows: walks instances_created_idx from p_after_created (the last row of the previous page, with p_after_id; both NULL for the first page) and reads each instance's current execution. Filters: p_status (current status), p_name (orchestration name, exact), p_id_prefix (instance id starts with it, taken literally: no wildcards), created in [p_created_from, p_created_to), current execution completed in [p_completed_from, p_completed_to), and p_finished_roots_only (roots whose whole tree has finished, retention_tree_finished: a finished root with a running sub-orchestration is left out, since delete_instance_bulk would delete that child too).
Errors: none; p_limit NULL means no limit (callers always pass one).
Called by: the Rust provider (PostgresProvider::dashboard_instances, used by duroxide-pg-ui's list and purge), and dashboard_count.
Notes: times are ms since the Unix epoch. A filter that matches few of many rows walks the index until the page fills: callers bound the call with a statement timeout.$c$;

-- How many instances a filter matches, up to a cap.
CREATE OR REPLACE FUNCTION dashboard_count(
    p_status TEXT, p_name TEXT, p_id_prefix TEXT,
    p_created_from BIGINT, p_created_to BIGINT,
    p_completed_from BIGINT, p_completed_to BIGINT,
    p_finished_roots_only BOOLEAN, p_cap INTEGER)
RETURNS BIGINT
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT count(*)
      FROM dashboard_instances(p_status, p_name, p_id_prefix, p_created_from, p_created_to,
                               p_completed_from, p_completed_to, p_finished_roots_only,
                               NULL, NULL, p_cap);
END;
COMMENT ON FUNCTION dashboard_count(text, text, text, bigint, bigint, bigint, bigint, boolean, integer) IS $c$Operator count (PostgresProvider::dashboard_count): how many instances dashboard_instances would list for the same filters, at most p_cap (a result equal to p_cap means "p_cap or more").
Locks: none (reads only).
Rows: those dashboard_instances reads, up to p_cap matches.
Errors: none.
Called by: the Rust provider (PostgresProvider::dashboard_count, used by duroxide-pg-ui before a purge).$c$;

-- Instance counts by current status.
CREATE OR REPLACE FUNCTION dashboard_status_counts()
RETURNS TABLE (o_status TEXT, o_count BIGINT)
LANGUAGE sql STABLE
BEGIN ATOMIC
    -- MATERIALIZED: each count once (inlined, the four rows below would
    -- each run the counts they name).
    WITH t AS MATERIALIZED (
        SELECT (SELECT count(*) FROM instances) AS total,
               (SELECT count(*) FROM executions WHERE status = 'Completed') AS completed,
               (SELECT count(*) FROM executions WHERE status = 'Failed') AS failed,
               (SELECT count(*)
                  FROM instances i
                  JOIN executions e
                    ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
                 WHERE i.current_execution_id > 1 AND e.status = 'ContinuedAsNew') AS between
    )
    SELECT s.status, s.n
      FROM t, LATERAL (VALUES (1, 'Running', t.total - t.completed - t.failed - t.between),
                              (2, 'Completed', t.completed),
                              (3, 'Failed', t.failed),
                              (4, 'ContinuedAsNew', t.between)) AS s(ord, status, n)
     ORDER BY s.ord;
END;
COMMENT ON FUNCTION dashboard_status_counts() IS $c$Operator overview (PostgresProvider::dashboard_status_counts): one row per status (Running, Completed, Failed, ContinuedAsNew) with how many instances have a current execution in it; Running includes instances not yet started. ContinuedAsNew counts chains between two executions from their second execution on (instances_chain_idx); an instance between its first and second execution counts as Running for that moment (finding those would read every execution). Otherwise the same numbers as counting every instance's current execution (get_system_metrics), without joining the two tables.
Locks: none (reads only).
Rows: counts instances (index-only on instances_pkey), the Completed and Failed executions (index-only on executions_finished_idx: only an instance's current execution can be Completed or Failed, an older one is ContinuedAsNew), and the current executions of chains (instances_chain_idx) that are between two executions.
Errors: none.
Called by: the Rust provider (PostgresProvider::dashboard_status_counts, the dashboard's overview).
Notes: one statement, one snapshot: the counts add up to the instances counted.$c$;

-- Completions and failures per bucket since a moment.
CREATE OR REPLACE FUNCTION dashboard_activity(p_since_ms BIGINT, p_bucket_ms BIGINT)
RETURNS TABLE (o_bucket_ms BIGINT, o_completed BIGINT, o_failed BIGINT)
LANGUAGE sql STABLE
BEGIN ATOMIC
    -- One range of executions_finished_idx per status: with "status IN
    -- (...)", which the index's predicate implies, the planner would drop
    -- the status from the index condition and read the whole index.
    SELECT p_since_ms + (f.completed_at - p_since_ms) / p_bucket_ms * p_bucket_ms,
           count(*) FILTER (WHERE f.failed = false),
           count(*) FILTER (WHERE f.failed)
      FROM (SELECT e.completed_at, false AS failed
              FROM executions e
             WHERE e.status = 'Completed' AND e.completed_at >= p_since_ms
            UNION ALL
            SELECT e.completed_at, true
              FROM executions e
             WHERE e.status = 'Failed' AND e.completed_at >= p_since_ms) f
     GROUP BY 1
     ORDER BY 1;
END;
COMMENT ON FUNCTION dashboard_activity(bigint, bigint) IS $c$Operator chart (PostgresProvider::dashboard_activity): executions that completed or failed at or after p_since_ms, counted per bucket of p_bucket_ms; a row per bucket that has any (o_bucket_ms: the bucket's start), oldest first. Sub-orchestrations count like roots.
Locks: none (reads only).
Rows: two ranges of executions_finished_idx (status, completed_at), one per status.
Errors: 22012 division_by_zero when p_bucket_ms is 0 (callers pass a positive bucket).
Called by: the Rust provider (PostgresProvider::dashboard_activity, the dashboard's overview chart).$c$;

-- One page of an execution's history.
CREATE OR REPLACE FUNCTION dashboard_history(
    p_instance_id TEXT, p_execution_id BIGINT, p_after_event_id BIGINT, p_limit INTEGER)
RETURNS TABLE (o_event_data TEXT)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT h.event_data
      FROM history h
     WHERE h.instance_id = p_instance_id AND h.execution_id = p_execution_id
       AND h.event_id > COALESCE(p_after_event_id, 0)
     ORDER BY h.event_id
     LIMIT p_limit;
END;
COMMENT ON FUNCTION dashboard_history(text, bigint, bigint, integer) IS $c$Operator history page (PostgresProvider::dashboard_history): at most p_limit events of one execution after event p_after_event_id (NULL: from the first), in event order, as stored JSON text.
Locks: none (reads only).
Rows: a range of history_pkey.
Errors: none; an unknown instance or execution gives no rows.
Called by: the Rust provider (PostgresProvider::dashboard_history, the dashboard's instance page).$c$;

-- An instance's descendants with their status, a bounded number.
CREATE OR REPLACE FUNCTION dashboard_tree(p_instance_id TEXT, p_limit INTEGER)
RETURNS TABLE (o_instance_id TEXT, o_parent_instance_id TEXT, o_depth INTEGER,
               o_orchestration_name TEXT, o_status TEXT)
LANGUAGE sql STABLE
BEGIN ATOMIC
    WITH RECURSIVE tree(instance_id, parent, depth) AS (
        SELECT i.instance_id, i.parent_instance_id, 0
          FROM instances i WHERE i.instance_id = p_instance_id
        UNION ALL
        SELECT c.instance_id, c.parent_instance_id, t.depth + 1
          FROM tree t JOIN instances c ON c.parent_instance_id = t.instance_id
         WHERE t.depth < 100
    )
    SELECT t.instance_id, t.parent, t.depth, i.orchestration_name, COALESCE(e.status, 'Running')
      FROM (SELECT * FROM tree LIMIT p_limit) t
      JOIN instances i ON i.instance_id = t.instance_id
      LEFT JOIN executions e
        ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
     ORDER BY t.depth, t.instance_id;
END;
COMMENT ON FUNCTION dashboard_tree(text, integer) IS $c$Operator tree (PostgresProvider::dashboard_tree): p_instance_id and its descendants (at most p_limit of them in all, at most 100 levels deep) with parent, depth, orchestration name and current status, by depth then id.
Locks: none (reads only).
Rows: reads instances (instances_parent_idx) recursively, and each member's current execution.
Errors: none; an unknown instance gives no rows.
Called by: the Rust provider (PostgresProvider::dashboard_tree, the dashboard's instance page).$c$;
