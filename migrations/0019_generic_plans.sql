-- 0019_generic_plans: the per-item queue operations plan each of their
-- statements once per connection (plan_cache_mode = force_generic_plan),
-- instead of letting the plan cache decide, statement by statement, whether
-- to plan again on every call; and commit_lease_asynchronously, a SQL
-- function whose body was planned at every call, becomes plpgsql (at the
-- end of this file).
--
-- Why: plpgsql caches one plan per statement and, by default, plans the
-- first five executions for their actual arguments, then plans again at
-- every call whose generic plan looks dearer than those custom plans. An
-- empty array argument makes the custom plan look free: touch_sessions'
-- UPDATE (no sessions to touch, the common case) was planned at every call
-- for the life of each connection. pg_stat_statements on config P counted
-- 3,377 plans for 3,367 calls of it, 0.093 ms of planning each, and its
-- self time fell from 0.101 to 0.019 ms a call with this migration
-- (BENCHMARKS.md, "Generic plans"). Which statements end up replanned
-- depends on what each connection's first calls happened to see; with one
-- rule for the whole hot path, none do.
--
-- Why it is safe: every statement of these functions finds its rows through
-- a key or an index whose use does not depend on the argument values (the
-- plans were already written to stay index-bound once generic), and plans
-- made on an empty store still use the indexes once the queues grow
-- (tests/plan_stability.rs); autovacuum's ANALYZE of a grown table makes
-- them again, as before.
-- Functions that run a statement only now and then (admin, dashboard,
-- retention) keep the default: their filters gain from custom plans.
--
-- Helpers called by these functions (lease_instance, instance_compatible,
-- live_lease_token, touch_session(s), apply_kv_operations, merge_kv_delta)
-- run under their caller's setting, so they are not altered. A later
-- migration that replaces one of the functions below with CREATE OR REPLACE
-- must repeat the SET (a replaced function keeps only the SETs it is given;
-- tests/plan_stability.rs fails otherwise).

ALTER FUNCTION fetch_orchestration_item(bigint, bigint, bigint[], bigint[])
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION ack_orchestration_item(text, bigint, bigint, bigint[], text[], text[], text[],
    bigint[], bigint[], text[], text[], text[], text[], text[], bigint[], text, text, text, text,
    text, bigint[], smallint, text, smallint[], text[], text[], bigint[], text[], bigint[],
    bigint[])
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION abandon_orchestration_item(text, bigint, bigint, boolean)
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION renew_orchestration_item_lock(text, bigint, bigint)
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION enqueue_orchestrator_item(text, text, text, bigint, bigint)
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION enqueue_worker_item(text, bigint, text, bigint, bigint, text, text)
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION fetch_work_item(bigint, bigint, text, bigint, smallint, text[])
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION ack_work_item(text, bigint, text, text, text)
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION ack_work_item_and_fetch(text, bigint, text, text, text, bigint, text, bigint,
    smallint, text[])
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION ack_work_items_and_fetch(text[], bigint, text[], text[], text[], bigint[], text[],
    bigint[], smallint[], text[])
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION abandon_work_item(text, bigint, bigint, boolean)
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION renew_work_item_lock(text, bigint, bigint)
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION renew_session_lock(text[], bigint, bigint, bigint)
    SET plan_cache_mode = force_generic_plan;

-- commit_lease_asynchronously: plpgsql instead of SQL, same contract. A SQL
-- function that is not inlined plans its body again at every call:
-- pg_stat_statements counted 4,150 plans for 4,150 calls of its set_config,
-- 0.03 ms of every fetch that leases; plpgsql plans it once per connection.
CREATE OR REPLACE FUNCTION commit_lease_asynchronously() RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
END;
$$;
COMMENT ON FUNCTION commit_lease_asynchronously() IS $c$Lets the calling transaction commit without waiting for its WAL to be flushed (and replicated): synchronous_commit = off until the transaction ends.
Locks: none.
Rows: none.
Errors: none.
Called by: fetch_orchestration_item, after it leased an instance; never by a transaction that acknowledges work (an ack's Ok means durable). Internal helper without SET: a SET clause would end the setting with the function.
Notes: why a lease may: a lease lost in a crash only makes its work run again, which a crash does to work in flight anyway; and WAL is flushed in order, so the synchronous commit of any ack that used the lease (it checks the lease's token) also makes the lease durable. What a fetch returns is visible to every other transaction at once either way. plpgsql, not SQL: a SQL function called this way is planned again at every call.$c$;
