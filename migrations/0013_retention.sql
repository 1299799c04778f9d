-- 0013_retention: finished work is deleted by policy (the provider's
-- background sweeper and `duroxide-pg retention run`), in bounded batches,
-- one sweeper per schema at a time.
--
-- What a sweep deletes:
-- - trees of instances: a root (no parent) whose current execution is
--   Completed or Failed and finished before that status's cutoff, together
--   with every descendant, only when every member of the tree is Completed or
--   Failed. A tree with a running (or not yet started) member is left whole.
--   A current execution that is ContinuedAsNew is not finished: its next
--   execution is about to start.
-- - old executions of continue-as-new chains: all but the newest N of every
--   instance (running chains included), never the current one or a running
--   one.
-- Each kind has a `*_candidates` function that only reads, which the dry run
-- calls and the deleting function calls too: a dry run lists exactly what
-- the run would delete.
--
-- One sweeper at a time: a lease in the one row of retention_state, taken
-- with an advisory try-lock (never waits) and renewed by every batch; a
-- batch whose caller no longer holds the lease raises DXR01 and changes
-- nothing. A lease, not a session-level advisory lock held for the whole
-- sweep: it needs no connection kept for the sweep and works behind a
-- transaction pooler, and a sweeper that died lets it expire.

-- The sweeper's lease, the policy a background sweeper runs, and the last
-- sweep. Exactly one row.
CREATE TABLE IF NOT EXISTS retention_state (
    singleton        BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    -- The sweeper holding the lease, NULL when none does.
    owner            TEXT,
    lease_until      BIGINT NOT NULL DEFAULT 0,
    -- The policy of the last background sweeper that took the lease (JSON).
    policy           TEXT,
    policy_by        TEXT,
    policy_at        BIGINT,
    -- The last sweep that finished, background or command line.
    last_by          TEXT,
    last_policy      TEXT,
    last_started_at  BIGINT,
    last_finished_at BIGINT,
    last_instances   BIGINT,
    last_executions  BIGINT,
    last_events      BIGINT,
    last_error       TEXT
);
INSERT INTO retention_state DEFAULT VALUES ON CONFLICT DO NOTHING;

-- Finished executions by status and completion time: the sweep's scan order
-- and `retention status`'s oldest finished instance. Only Completed and
-- Failed rows (a chain's earlier executions are ContinuedAsNew, running ones
-- have no completion time), so the hot path pays one index entry per
-- finished execution.
CREATE INDEX IF NOT EXISTS executions_finished_idx
    ON executions (status, completed_at, instance_id)
    WHERE status IN ('Completed', 'Failed');

-- Instances that continued as new at least once: what pruning chains scans.
CREATE INDEX IF NOT EXISTS instances_chain_idx
    ON instances (instance_id)
    WHERE current_execution_id > 1;

CREATE OR REPLACE FUNCTION retention_tree_finished(p_root TEXT) RETURNS BOOLEAN
LANGUAGE sql STABLE
RETURN NOT EXISTS (
    SELECT 1
      FROM get_instance_tree(p_root) t
      LEFT JOIN instances i ON i.instance_id = t.o_instance_id
      LEFT JOIN executions e
        ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
     WHERE e.status IS NULL OR e.status NOT IN ('Completed', 'Failed'));
COMMENT ON FUNCTION retention_tree_finished(text) IS $c$Whether p_root and every descendant have a current execution that is Completed or Failed (an instance without an execution row, not yet started, is not finished).
Locks: none (reads only).
Rows: reads the tree (get_instance_tree), each member's instances row and current executions row.
Errors: none.
Called by: retention_candidates and retention_delete (the check again under the locks). Internal helper.$c$;

CREATE OR REPLACE FUNCTION retention_candidates(
    p_status    TEXT,
    p_before    BIGINT,
    p_after_at  BIGINT,
    p_after_id  TEXT,
    p_limit     INTEGER,
    p_counts    BOOLEAN
) RETURNS TABLE (
    o_root_id      TEXT,
    o_completed_at BIGINT,
    o_eligible     BOOLEAN,
    o_tree_ids     TEXT[],
    o_executions   BIGINT,
    o_events       BIGINT
)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT r.instance_id,
           r.completed_at,
           retention_tree_finished(r.instance_id),
           ARRAY(SELECT t.o_instance_id FROM get_instance_tree(r.instance_id) t),
           CASE WHEN p_counts THEN (SELECT count(*) FROM get_instance_tree(r.instance_id) t
                                      JOIN executions x ON x.instance_id = t.o_instance_id) END,
           CASE WHEN p_counts THEN (SELECT count(*) FROM get_instance_tree(r.instance_id) t
                                      JOIN history h ON h.instance_id = t.o_instance_id) END
      FROM (SELECT e.instance_id, e.completed_at
              FROM executions e
              JOIN instances i
                ON i.instance_id = e.instance_id AND i.current_execution_id = e.execution_id
             WHERE e.status = p_status
               AND e.status IN ('Completed', 'Failed')
               AND e.completed_at < p_before
               AND (e.completed_at, e.instance_id) > (COALESCE(p_after_at, -9223372036854775808), COALESCE(p_after_id, ''))
               AND i.parent_instance_id IS NULL
             ORDER BY e.completed_at, e.instance_id
             LIMIT p_limit) r
     ORDER BY r.completed_at, r.instance_id;
END;
COMMENT ON FUNCTION retention_candidates(text, bigint, bigint, text, integer, boolean) IS $c$The next p_limit root instances a sweep looks at for status p_status: current execution p_status (Completed or Failed), completed before p_before, after the cursor (p_after_at, p_after_id) in (completed_at, instance_id) order; each with whether its whole tree is finished (o_eligible) and the tree's ids, root first.
Locks: none (reads only).
Rows: reads executions (executions_finished_idx), instances and each root's tree; with p_counts, o_executions and o_events count the tree's executions and history rows (else NULL).
Errors: none; another status than Completed or Failed gives no rows.
Called by: the Rust provider (the dry run of a sweep) and retention_delete, so the dry run and the sweep select the same trees.
Notes: the caller moves its cursor to the last row returned, eligible or not; fewer than p_limit rows means the status is done. Times are ms since the Unix epoch.$c$;

CREATE OR REPLACE FUNCTION retention_keep_lease(p_owner TEXT, p_now_ms BIGINT, p_lease_ms BIGINT) RETURNS VOID
LANGUAGE plpgsql
AS $$
BEGIN
    UPDATE retention_state s
       SET lease_until = p_now_ms + p_lease_ms
     WHERE s.owner = p_owner AND s.lease_until >= p_now_ms;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'retention sweeper % does not hold the sweep lease (expired or taken by another sweeper)', p_owner
            USING ERRCODE = 'DXR01';
    END IF;
END;
$$;
COMMENT ON FUNCTION retention_keep_lease(text, bigint, bigint) IS $c$Renews the sweep lease of p_owner to p_now_ms + p_lease_ms, or fails if p_owner does not hold it.
Locks: the retention_state row (UPDATE; held to the caller's commit).
Rows: retention_state: lease_until.
Errors: DXR01 when p_owner does not hold a live lease (nothing changed).
Called by: retention_delete and retention_prune, before they change anything. Internal helper.$c$;

CREATE OR REPLACE FUNCTION retention_acquire(
    p_owner    TEXT,
    p_now_ms   BIGINT,
    p_lease_ms BIGINT,
    p_policy   TEXT
) RETURNS BOOLEAN
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    -- Two sweepers starting at once: the second returns at once.
    IF NOT pg_try_advisory_xact_lock(lock_key('retention', 'sweep')) THEN
        RETURN FALSE;
    END IF;
    -- The holder renewing its lease at this moment is alive: do not wait for it.
    PERFORM 1 FROM retention_state s
      WHERE s.owner IS NULL OR s.owner = p_owner OR s.lease_until < p_now_ms
      FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN FALSE;
    END IF;
    UPDATE retention_state s
       SET owner = p_owner,
           lease_until = p_now_ms + p_lease_ms,
           policy = COALESCE(p_policy, s.policy),
           policy_by = CASE WHEN p_policy IS NULL THEN s.policy_by ELSE p_owner END,
           policy_at = CASE WHEN p_policy IS NULL THEN s.policy_at ELSE p_now_ms END;
    RETURN TRUE;
END;
$$;
COMMENT ON FUNCTION retention_acquire(text, bigint, bigint, text) IS $c$Takes the sweep lease for p_owner until p_now_ms + p_lease_ms when no other sweeper holds a live one; TRUE when taken. Never waits.
Locks: pg_try_advisory_xact_lock(lock_key('retention', 'sweep')), then the retention_state row FOR UPDATE SKIP LOCKED (FALSE when either is held by another transaction).
Rows: retention_state: owner, lease_until; with p_policy (a background sweeper's policy, JSON) also policy, policy_by, policy_at.
Errors: none.
Called by: the Rust provider (a sweep's start, background or `retention run`).
Notes: times are ms since the Unix epoch, passed in as p_now_ms.$c$;

CREATE OR REPLACE FUNCTION retention_finish(
    p_owner      TEXT,
    p_now_ms     BIGINT,
    p_started_at BIGINT,
    p_policy     TEXT,
    p_instances  BIGINT,
    p_executions BIGINT,
    p_events     BIGINT,
    p_error      TEXT
) RETURNS BOOLEAN
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    UPDATE retention_state s
       SET owner = NULL,
           lease_until = 0,
           last_by = p_owner,
           last_policy = p_policy,
           last_started_at = p_started_at,
           last_finished_at = p_now_ms,
           last_instances = p_instances,
           last_executions = p_executions,
           last_events = p_events,
           last_error = p_error
     WHERE s.owner = p_owner;
    RETURN FOUND;
END;
$$;
COMMENT ON FUNCTION retention_finish(text, bigint, bigint, text, bigint, bigint, bigint, text) IS $c$Ends p_owner's sweep: records it as the last sweep (policy, times, counts deleted, error or NULL) and releases the lease; TRUE when p_owner still held it (else nothing changes: a sweeper that lost its lease records nothing).
Locks: the retention_state row (UPDATE).
Rows: retention_state: owner NULL, lease_until 0, the last_* columns.
Errors: none.
Called by: the Rust provider (the end of every sweep that took the lease, failed ones included).$c$;

CREATE OR REPLACE FUNCTION retention_delete(
    p_owner    TEXT,
    p_now_ms   BIGINT,
    p_lease_ms BIGINT,
    p_status   TEXT,
    p_before   BIGINT,
    p_after_at BIGINT,
    p_after_id TEXT,
    p_limit    INTEGER
) RETURNS TABLE (
    o_roots_scanned       BIGINT,
    o_instances_deleted   BIGINT,
    o_executions_deleted  BIGINT,
    o_events_deleted      BIGINT,
    o_last_at             BIGINT,
    o_last_id             TEXT
)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_roots TEXT[] := ARRAY[]::TEXT[];
    v_ids   TEXT[] := ARRAY[]::TEXT[];
    r       RECORD;
BEGIN
    PERFORM retention_keep_lease(p_owner, p_now_ms, p_lease_ms);
    o_roots_scanned := 0;
    o_instances_deleted := 0;
    o_executions_deleted := 0;
    o_events_deleted := 0;
    FOR r IN SELECT * FROM retention_candidates(p_status, p_before, p_after_at, p_after_id, p_limit, FALSE) LOOP
        o_roots_scanned := o_roots_scanned + 1;
        o_last_at := r.o_completed_at;
        o_last_id := r.o_root_id;
        IF r.o_eligible THEN
            v_roots := v_roots || r.o_root_id;
            v_ids := v_ids || r.o_tree_ids;
        END IF;
    END LOOP;
    IF cardinality(v_roots) > 0 THEN
        -- The lock order of acks and delete_instances_atomic: lease rows, then
        -- instance rows, by instance_id.
        PERFORM 1 FROM instance_locks l WHERE l.instance_id = ANY (v_ids) ORDER BY l.instance_id FOR UPDATE;
        PERFORM 1 FROM instances i WHERE i.instance_id = ANY (v_ids) ORDER BY i.instance_id FOR UPDATE;
        -- Again under the locks: a tree that changed meanwhile stays.
        v_ids := ARRAY(SELECT t.o_instance_id FROM unnest(v_roots) AS x(root),
                       LATERAL get_instance_tree(x.root) t
                        WHERE retention_tree_finished(x.root));
        SELECT d.o_instances_deleted, d.o_executions_deleted, d.o_events_deleted
          INTO o_instances_deleted, o_executions_deleted, o_events_deleted
          FROM delete_instances_atomic(v_ids, FALSE) d;
    END IF;
    RETURN NEXT;
END;
$$;
COMMENT ON FUNCTION retention_delete(text, bigint, bigint, text, bigint, bigint, text, integer) IS $c$One batch of a sweep for status p_status: deletes the eligible trees among the next p_limit roots retention_candidates returns after the cursor (p_after_at, p_after_id), and returns the counts and the new cursor (o_last_at, o_last_id: the last root looked at, NULL when none).
Locks: the retention_state row (retention_keep_lease); instance_locks rows, then instances rows of the trees, FOR UPDATE in instance_id order (the order acks use); then those of delete_instances_atomic (the same rows).
Rows: retention_state.lease_until renewed; the history, executions, instance_locks, queue, KV and instances rows of every eligible tree, through delete_instances_atomic without force. A tree is checked again under the locks and left whole if a member is no longer finished.
Errors: DXR01 when p_owner does not hold the lease (nothing deleted); a statement timeout (57014) rolls the batch back whole.
Called by: the Rust provider (each batch of a sweep).
Notes: o_roots_scanned < p_limit means the status is done; times are ms since the Unix epoch, passed in as p_now_ms.$c$;

CREATE OR REPLACE FUNCTION retention_prune_candidates(
    p_keep     BIGINT,
    p_after_id TEXT,
    p_limit    INTEGER
) RETURNS TABLE (
    o_instance_id TEXT,
    o_executions  BIGINT,
    o_events      BIGINT
)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT i.instance_id,
           (SELECT count(*) FROM executions e
             WHERE e.instance_id = i.instance_id
               AND e.execution_id <= i.current_execution_id - p_keep
               AND e.status <> 'Running'),
           (SELECT count(*) FROM history h
              JOIN executions e ON e.instance_id = h.instance_id AND e.execution_id = h.execution_id
             WHERE h.instance_id = i.instance_id
               AND h.execution_id <= i.current_execution_id - p_keep
               AND e.status <> 'Running')
      FROM instances i
     WHERE i.current_execution_id > 1
       AND i.current_execution_id > p_keep
       AND i.instance_id > COALESCE(p_after_id, '')
     ORDER BY i.instance_id
     LIMIT p_limit;
END;
COMMENT ON FUNCTION retention_prune_candidates(bigint, text, integer) IS $c$The next p_limit instances (by instance_id after p_after_id) with more than p_keep executions, each with how many executions and history rows pruning to the newest p_keep would delete (0 when none).
Locks: none (reads only).
Rows: reads instances (instances_chain_idx), their executions and history.
Errors: none.
Called by: the Rust provider (the dry run of a sweep) and retention_prune.
Notes: fewer than p_limit rows means the scan is done; the current execution and running ones are never counted (p_keep >= 1).$c$;

CREATE OR REPLACE FUNCTION retention_prune(
    p_owner    TEXT,
    p_now_ms   BIGINT,
    p_lease_ms BIGINT,
    p_keep     BIGINT,
    p_after_id TEXT,
    p_limit    INTEGER
) RETURNS TABLE (
    o_scanned            BIGINT,
    o_instances_pruned   BIGINT,
    o_executions_deleted BIGINT,
    o_events_deleted     BIGINT,
    o_last_id            TEXT
)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    r RECORD;
    p RECORD;
BEGIN
    PERFORM retention_keep_lease(p_owner, p_now_ms, p_lease_ms);
    o_scanned := 0;
    o_instances_pruned := 0;
    o_executions_deleted := 0;
    o_events_deleted := 0;
    FOR r IN SELECT * FROM retention_prune_candidates(p_keep, p_after_id, p_limit) c
              ORDER BY c.o_instance_id LOOP
        o_scanned := o_scanned + 1;
        o_last_id := r.o_instance_id;
        IF r.o_executions > 0 THEN
            BEGIN
                SELECT * INTO p FROM prune_executions(r.o_instance_id, p_keep, NULL);
                o_instances_pruned := o_instances_pruned + 1;
                o_executions_deleted := o_executions_deleted + p.o_executions_deleted;
                o_events_deleted := o_events_deleted + p.o_events_deleted;
            EXCEPTION WHEN SQLSTATE 'DXN01' THEN
                NULL; -- deleted since it was read: nothing to prune
            END;
        END IF;
    END LOOP;
    RETURN NEXT;
END;
$$;
COMMENT ON FUNCTION retention_prune(text, bigint, bigint, bigint, text, integer) IS $c$One batch of pruning continue-as-new chains: for each of the next p_limit instances retention_prune_candidates returns after p_after_id, deletes all but the newest p_keep executions (prune_executions), and returns the counts and the new cursor (o_last_id, NULL when none).
Locks: the retention_state row (retention_keep_lease); each pruned instance row FOR UPDATE (prune_executions; waits for an ack holding it).
Rows: retention_state.lease_until renewed; executions and their history rows of the pruned instances (never the current or a running execution); instances, KV and queues untouched.
Errors: DXR01 when p_owner does not hold the lease (nothing deleted); an instance deleted meanwhile is skipped.
Called by: the Rust provider (each pruning batch of a sweep).
Notes: o_scanned < p_limit means the scan is done; times are ms since the Unix epoch, passed in as p_now_ms.$c$;

CREATE OR REPLACE FUNCTION retention_status(p_now_ms BIGINT) RETURNS TABLE (
    o_policy             TEXT,
    o_policy_by          TEXT,
    o_policy_at          BIGINT,
    o_owner              TEXT,
    o_lease_until        BIGINT,
    o_last_by            TEXT,
    o_last_policy        TEXT,
    o_last_started_at    BIGINT,
    o_last_finished_at   BIGINT,
    o_last_instances     BIGINT,
    o_last_executions    BIGINT,
    o_last_events        BIGINT,
    o_last_error         TEXT,
    o_oldest_completed_id TEXT,
    o_oldest_completed_at BIGINT,
    o_oldest_failed_id   TEXT,
    o_oldest_failed_at   BIGINT
)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT s.policy, s.policy_by, s.policy_at,
           CASE WHEN s.lease_until >= p_now_ms THEN s.owner END,
           CASE WHEN s.lease_until >= p_now_ms THEN s.lease_until END,
           s.last_by, s.last_policy, s.last_started_at, s.last_finished_at,
           s.last_instances, s.last_executions, s.last_events, s.last_error,
           c.instance_id, c.completed_at, f.instance_id, f.completed_at
      FROM retention_state s
      LEFT JOIN LATERAL (SELECT r.o_root_id AS instance_id, r.o_completed_at AS completed_at
                           FROM retention_candidates('Completed', 9223372036854775807, NULL, NULL, 1, FALSE) r) c ON TRUE
      LEFT JOIN LATERAL (SELECT r.o_root_id AS instance_id, r.o_completed_at AS completed_at
                           FROM retention_candidates('Failed', 9223372036854775807, NULL, NULL, 1, FALSE) r) f ON TRUE;
END;
COMMENT ON FUNCTION retention_status(bigint) IS $c$What `retention status` shows: the policy a background sweeper stored, who holds a live sweep lease (NULL when none at p_now_ms), the last sweep, and the oldest finished root instance per status (Completed, Failed).
Locks: none (reads only).
Rows: reads the retention_state row and the first root of retention_candidates for each status.
Errors: none.
Called by: the Rust provider (PostgresProvider::retention_status; the CLI).
Notes: times are ms since the Unix epoch.$c$;
