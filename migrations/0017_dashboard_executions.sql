-- 0017_dashboard_executions: an instance's newest executions, with their
-- details and how many there are, in one bounded read.
--
-- The dashboard's instance page and the CLI's `instance show` assembled
-- this from list_executions and one get_execution_info call per execution:
-- up to 51 round trips for the page, and no bound at all for the CLI on an
-- instance that continued-as-new thousands of times.

CREATE OR REPLACE FUNCTION dashboard_executions(p_instance_id TEXT, p_limit INTEGER)
RETURNS TABLE (o_execution_id BIGINT, o_status TEXT, o_output TEXT, o_started_at BIGINT,
               o_completed_at BIGINT, o_event_count BIGINT, o_execution_count BIGINT)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT e.execution_id, e.status, e.output, e.started_at, e.completed_at,
           (SELECT count(*) FROM history h
             WHERE h.instance_id = e.instance_id AND h.execution_id = e.execution_id),
           (SELECT count(*) FROM executions a WHERE a.instance_id = p_instance_id)
      FROM executions e
     WHERE e.instance_id = p_instance_id
     ORDER BY e.execution_id DESC
     LIMIT p_limit;
END;
COMMENT ON FUNCTION dashboard_executions(text, integer) IS $c$Operator executions page (PostgresProvider::dashboard_executions): the newest p_limit executions of one instance, newest first, each with status, output, start and completion times and its history event count, and on every row the instance's total number of executions.
Locks: none (reads only).
Rows: a backward range of executions_pkey (at most p_limit rows), history_pkey counted per execution returned, and every executions row of the instance counted once.
Errors: none; an unknown instance gives no rows.
Called by: the Rust provider (PostgresProvider::dashboard_executions, the dashboard's instance page and the CLI's instance show).$c$;
