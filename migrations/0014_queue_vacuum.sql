-- 0014_queue_vacuum: which queue tables a provider's queue vacuum
-- (PostgresConfig::with_queue_vacuum) should vacuum now.
--
-- The queue tables churn: every row is inserted, updated and deleted within
-- seconds. Autovacuum visits a database once per autovacuum_naptime (1 min by
-- default) whatever a table's thresholds say, and between two visits the dead
-- tuples of a busy queue reach tens of thousands; the tables grow to hold a
-- minute of churn and the claims slow down (measured in BENCHMARKS.md,
-- "Bloat"). Storage parameters cannot visit a table more often than the
-- naptime; a provider can vacuum its own queue tables itself. This function
-- says which need it; the provider runs VACUUM (a statement that cannot run
-- inside a function or a transaction).

CREATE OR REPLACE FUNCTION queue_tables_to_vacuum(p_min_dead BIGINT) RETURNS TABLE (o_table TEXT)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT c.relname::text
      FROM pg_class c
     WHERE c.oid IN ('orchestrator_queue'::regclass, 'worker_queue'::regclass,
                     'instance_locks'::regclass, 'sessions'::regclass)
       AND pg_stat_get_dead_tuples(c.oid) >= p_min_dead
       AND pg_has_role(c.relowner, 'USAGE')
     ORDER BY c.relname;
END;
COMMENT ON FUNCTION queue_tables_to_vacuum(bigint) IS $c$The queue tables of this schema (orchestrator_queue, worker_queue, instance_locks, sessions) with at least p_min_dead dead tuples (the statistics system's count) that the current role may vacuum (it has its owner's privileges).
Locks: none (reads the catalog and the statistics).
Rows: none of the schema's tables are read.
Errors: none.
Called by: the Rust provider (the queue vacuum task, which then runs VACUUM (SKIP_LOCKED) on the tables returned).
Notes: the tables are bound by OID when the function is created (regclass constants), so the function names this schema's tables whatever the caller's search_path.$c$;
