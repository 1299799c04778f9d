-- 0009_ready_scan: fetch_orchestration_item no longer walks the messages
-- of leased instances (100,000 messages queued for 100 busy instances made
-- every fetch read all of them: ~20 ms instead of ~0.6), and no per-instance
-- probe of the queue reads the whole queue once its plan turns generic
-- (ack_orchestration_item did: 12 ms per ack on that store).
--
-- A message that arrives for an instance whose lease is live is stored
-- "held": lock_token = 'held:' || <lease token> (a fetch's own tag is the bare
-- token). The fetch's scan reads only untagged messages, through a partial
-- index, and finds instances whose lease expired with tagged messages through
-- instance_locks (small: one row per live or abandoned lease). The ack and the
-- abandon of a lease release its held messages in the same transaction.
--
-- All of this relies on READ COMMITTED (a statement that waited for a lock
-- sees what committed meanwhile); the provider pins
-- default_transaction_isolation on its connections.
--
-- Why nothing is lost: a message is held only while its enqueue holds FOR
-- SHARE on the live lease row (live_lease_token, SKIP LOCKED: an enqueue never
-- waits, it stores the message untagged when the row is busy, and untagged is
-- always found). Ack and abandon lock that row (FOR UPDATE / DELETE) before
-- releasing, so they wait for such an enqueue to commit and then see its
-- message. Tagged messages are always visible (only visible messages are
-- tagged; abandon with a delay untags), so an expired lease with tagged
-- messages always has work for the expired-lease search.

CREATE INDEX IF NOT EXISTS orchestrator_queue_ready_idx
    ON orchestrator_queue (visible_at, id) WHERE lock_token IS NULL;

-- live_lease_token: the token of p_instance_id's live lease, or NULL when it
-- has none or its lease row is being changed right now (SKIP LOCKED: never
-- waits). Takes FOR SHARE on the row and keeps it to commit, so an ack or
-- abandon of that lease starts only after the caller has committed.
CREATE OR REPLACE FUNCTION live_lease_token(p_instance_id TEXT, p_now_ms BIGINT)
RETURNS TEXT
LANGUAGE sql
SET search_path FROM CURRENT
AS $$
    SELECT l.lock_token FROM instance_locks l
     WHERE l.instance_id = p_instance_id AND l.locked_until > p_now_ms
       FOR SHARE SKIP LOCKED
$$;

-- enqueue_orchestrator_item (current text and contract: schema/functions/), storing a message visible at once
-- as held when its instance's lease is live (see the file header).
CREATE OR REPLACE FUNCTION enqueue_orchestrator_item(
    p_instance_id TEXT,
    p_kind        TEXT,
    p_work_item   TEXT,
    p_now_ms      BIGINT,
    p_delay_ms    BIGINT
) RETURNS VOID
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_lease TEXT;
BEGIN
    IF p_delay_ms <= 0 THEN
        v_lease := live_lease_token(p_instance_id, p_now_ms);
    END IF;
    INSERT INTO orchestrator_queue (instance_id, kind, work_item, visible_at, lock_token)
    VALUES (p_instance_id, p_kind, p_work_item, p_now_ms + GREATEST(p_delay_ms, 0),
            'held:' || v_lease);
    IF p_delay_ms > 0 THEN
        PERFORM notify_later('o', p_now_ms + p_delay_ms);
    ELSIF v_lease IS NULL THEN
        PERFORM notify_work('o', 1);
    END IF;
END;
$$;

-- lease_instance: one fetch attempt on one candidate instance (the body of
-- fetch_orchestration_item's search, shared by its two candidate sources).
-- Takes the instance's advisory try-lock (never waits), re-checks that no live
-- lease exists and that the pinned version is within [p_min_version,
-- p_max_version], handles messages of never-started instances (as 0002), then
-- upserts the lease (taking over an expired one), tags every visible message
-- of the instance with the new token (attempt_count + 1) and returns the row
-- fetch_orchestration_item returns. No row: the candidate was not leased.
-- Touches: one instance_locks row, the instance's visible queue rows.
-- Per-instance probes of the queue count rows rather than ask EXISTS (see
-- ack_orchestration_item below for why).
CREATE OR REPLACE FUNCTION lease_instance(
    p_candidate       TEXT,
    p_now_ms          BIGINT,
    p_lock_timeout_ms BIGINT,
    p_min_version     BIGINT[],
    p_max_version     BIGINT[]
) RETURNS TABLE (
    o_instance_id           TEXT,
    o_lock_token            TEXT,
    o_orchestration_name    TEXT,
    o_orchestration_version TEXT,
    o_execution_id          BIGINT,
    o_attempt_count         INTEGER,
    o_messages              TEXT[],
    o_history               TEXT[],
    o_kv_keys               TEXT[],
    o_kv_values             TEXT[],
    o_kv_updated_at         BIGINT[],
    o_wake_at               BIGINT,
    o_taken_over            BOOLEAN
)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_token     TEXT;
    v_name      TEXT;
    v_version   TEXT;
    v_exec      BIGINT;
    v_messages  TEXT[];
    v_attempts  INTEGER;
    v_taken     BOOLEAN;
    v_old       TEXT;
BEGIN
    IF NOT pg_try_advisory_xact_lock(lock_key('instance', p_candidate)) THEN
        RETURN;
    END IF;
    -- The caller's snapshot may predate another fetch's commit.
    IF EXISTS (SELECT 1 FROM instance_locks l
                WHERE l.instance_id = p_candidate AND l.locked_until > p_now_ms) THEN
        RETURN;
    END IF;
    -- The version filter, before anything is locked or read.
    IF p_min_version IS NOT NULL AND EXISTS (
            SELECT 1
              FROM instances i
              JOIN executions e
                ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
             WHERE i.instance_id = p_candidate
               AND e.pinned_major IS NOT NULL
               AND ((e.pinned_major, e.pinned_minor, e.pinned_patch)
                        < (p_min_version[1], p_min_version[2], p_min_version[3])
                    OR (e.pinned_major, e.pinned_minor, e.pinned_patch)
                        > (p_max_version[1], p_max_version[2], p_max_version[3]))) THEN
        RETURN;
    END IF;

    SELECT i.orchestration_name, i.orchestration_version, i.current_execution_id
      INTO v_name, v_version, v_exec
      FROM instances i WHERE i.instance_id = p_candidate;

    IF NOT FOUND THEN
        v_name := NULL;
        v_version := NULL;
        v_exec := COALESCE(
            (SELECT max(e.execution_id) FROM executions e WHERE e.instance_id = p_candidate), 1);
        IF NOT EXISTS (SELECT 1 FROM history h
                       WHERE h.instance_id = p_candidate AND h.execution_id = v_exec)
           AND (SELECT count(*) FROM orchestrator_queue q
                 WHERE q.instance_id = p_candidate AND q.visible_at <= p_now_ms
                   AND q.kind IN ('StartOrchestration', 'ContinueAsNew')) = 0
        THEN
            -- Messages for an instance that never started. QueueMessages are
            -- dropped (events sent before a start are not delivered); any other
            -- kind is left for the runtime to resolve.
            IF (SELECT count(*) FROM orchestrator_queue q
                 WHERE q.instance_id = p_candidate AND q.visible_at <= p_now_ms
                   AND q.kind <> 'QueueMessage') = 0
            THEN
                DELETE FROM orchestrator_queue q
                WHERE q.instance_id = p_candidate AND q.visible_at <= p_now_ms;
            END IF;
            RETURN;
        END IF;
    END IF;

    -- Ack and abandon delete the lease row; one still here has expired
    -- (re-checked above) with its holder gone: this fetch takes it over.
    SELECT l.lock_token INTO v_old FROM instance_locks l WHERE l.instance_id = p_candidate;
    v_taken := FOUND;
    v_token := gen_random_uuid()::text;
    INSERT INTO instance_locks AS l (instance_id, lock_token, locked_until, locked_at)
    VALUES (p_candidate, v_token, p_now_ms + p_lock_timeout_ms, p_now_ms)
    ON CONFLICT (instance_id) DO UPDATE
        SET lock_token = EXCLUDED.lock_token,
            locked_until = EXCLUDED.locked_until,
            locked_at = EXCLUDED.locked_at
        WHERE l.locked_until <= p_now_ms;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    WITH tagged AS (
        -- Every visible message, and whatever the expired lease had fetched
        -- or held even if a clock disagreement dates it later (tagged rows
        -- are invisible to the scan: none may stay behind).
        UPDATE orchestrator_queue q
           SET lock_token = v_token, attempt_count = q.attempt_count + 1
         WHERE q.instance_id = p_candidate
           AND (q.visible_at <= p_now_ms OR q.lock_token IN (v_old, 'held:' || v_old))
        RETURNING q.id, q.work_item, q.attempt_count
    )
    SELECT array_agg(t.work_item ORDER BY t.id), max(t.attempt_count)
      INTO v_messages, v_attempts
      FROM tagged t;

    IF v_messages IS NULL THEN
        -- Another dispatcher acked the batch after our scan: nothing to do here.
        DELETE FROM instance_locks l WHERE l.lock_token = v_token;
        RETURN;
    END IF;

    RETURN QUERY
    SELECT p_candidate, v_token, v_name, v_version, v_exec, v_attempts, v_messages,
           COALESCE((SELECT array_agg(h.event_data ORDER BY h.event_id)
                       FROM history h
                      WHERE h.instance_id = p_candidate AND h.execution_id = v_exec),
                    '{}'::TEXT[]),
           COALESCE(kv.keys, '{}'::TEXT[]),
           COALESCE(kv.vals, '{}'::TEXT[]),
           COALESCE(kv.ts, '{}'::BIGINT[]),
           NULL::BIGINT,
           v_taken
      FROM (SELECT array_agg(s.key) AS keys, array_agg(s.value) AS vals,
                   array_agg(s.last_updated_at_ms) AS ts
              FROM kv_store s WHERE s.instance_id = p_candidate) kv;
END;
$$;

-- fetch_orchestration_item (current text and contract: schema/functions/; guarantees: oldest
-- visible work first, never waits for another fetcher, version filter before
-- anything is read), searching two sources: expired leases, then untagged
-- messages through orchestrator_queue_ready_idx; lease_instance does the rest.
-- A last column o_taken_over (as fetch_work_item's since 0008) says whether
-- the lease was taken over from a holder that let it expire: a new result
-- type, so the function is dropped and created again in this transaction.
DROP FUNCTION fetch_orchestration_item(BIGINT, BIGINT, BIGINT[], BIGINT[]);
CREATE OR REPLACE FUNCTION fetch_orchestration_item(
    p_now_ms          BIGINT,
    p_lock_timeout_ms BIGINT,
    p_min_version     BIGINT[],   -- {major,minor,patch} or NULL for no filter
    p_max_version     BIGINT[]
) RETURNS TABLE (
    o_instance_id           TEXT,
    o_lock_token            TEXT,
    o_orchestration_name    TEXT,    -- NULL: new instance, take it from the messages/history
    o_orchestration_version TEXT,
    o_execution_id          BIGINT,
    o_attempt_count         INTEGER,
    o_messages              TEXT[],
    o_history               TEXT[],
    o_kv_keys               TEXT[],
    o_kv_values             TEXT[],
    o_kv_updated_at         BIGINT[],
    o_wake_at               BIGINT,
    o_taken_over            BOOLEAN  -- the lease was taken from a holder that let it expire
)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_candidate TEXT;
    v_tried     TEXT[] := '{}';
BEGIN
    -- 1. Leases that expired in their holder's hands. Their messages are
    --    tagged (by that fetch, or on arrival during the lease), so the scan
    --    below does not see them.
    FOR v_candidate IN
        SELECT l.instance_id FROM instance_locks l
         WHERE l.locked_until <= p_now_ms
         ORDER BY l.locked_until
    LOOP
        v_tried := v_tried || v_candidate;
        RETURN QUERY SELECT * FROM lease_instance(v_candidate, p_now_ms, p_lock_timeout_ms,
                                                  p_min_version, p_max_version);
        IF FOUND THEN
            RETURN;
        END IF;
    END LOOP;

    -- 2. Untagged visible messages, oldest first, through the partial index
    --    orchestrator_queue_ready_idx: messages of leased instances are
    --    tagged and never walked, however many there are. (An untagged one
    --    can belong to a leased instance for a moment, or be a timer that
    --    came due during the lease: the check below skips it.)
    FOR v_candidate IN
        SELECT q.instance_id
          FROM orchestrator_queue q
         WHERE q.lock_token IS NULL
           AND q.visible_at <= p_now_ms
           AND NOT EXISTS (SELECT 1 FROM instance_locks l
                            WHERE l.instance_id = q.instance_id AND l.locked_until > p_now_ms)
         ORDER BY q.visible_at, q.id
    LOOP
        CONTINUE WHEN v_candidate = ANY (v_tried);
        v_tried := v_tried || v_candidate;
        RETURN QUERY SELECT * FROM lease_instance(v_candidate, p_now_ms, p_lock_timeout_ms,
                                                  p_min_version, p_max_version);
        IF FOUND THEN
            RETURN;
        END IF;
    END LOOP;

    o_wake_at := LEAST(
        (SELECT min(q.visible_at) FROM orchestrator_queue q WHERE q.visible_at > p_now_ms),
        (SELECT min(l.locked_until) FROM instance_locks l WHERE l.locked_until > p_now_ms));
    o_taken_over := NULL;
    RETURN NEXT;
END;
$$;

-- ack_orchestration_item (current text and contract: schema/functions/), releasing the lease's held messages, and
-- checking for messages that arrived during the turn in a way no plan turns
-- into a scan of the whole queue.
CREATE OR REPLACE FUNCTION ack_orchestration_item(
    p_lock_token      TEXT,
    p_now_ms          BIGINT,
    p_execution_id    BIGINT,
    -- history delta
    p_event_ids       BIGINT[],
    p_event_data      TEXT[],
    -- worker items
    p_w_work_items    TEXT[],
    p_w_instance_ids  TEXT[],
    p_w_execution_ids BIGINT[],
    p_w_activity_ids  BIGINT[],
    p_w_session_ids   TEXT[],
    p_w_tags          TEXT[],
    -- orchestrator items
    p_o_instance_ids  TEXT[],
    p_o_kinds         TEXT[],
    p_o_work_items    TEXT[],
    p_o_visible_at    BIGINT[],
    -- execution metadata
    p_status          TEXT,
    p_output          TEXT,
    p_orch_name       TEXT,
    p_orch_version    TEXT,
    p_parent_instance TEXT,
    p_pinned_version  BIGINT[],   -- {major,minor,patch} or NULL
    -- custom status: 0 unchanged, 1 set to p_custom_status, 2 cleared
    p_custom_status_action SMALLINT,
    p_custom_status   TEXT,
    -- KV operations in history order: 1 set, 2 clear key, 3 clear all
    p_kv_ops          SMALLINT[],
    p_kv_keys         TEXT[],
    p_kv_values       TEXT[],
    p_kv_updated_at   BIGINT[],
    -- cancelled activities
    p_c_instance_ids  TEXT[],
    p_c_execution_ids BIGINT[],
    p_c_activity_ids  BIGINT[]
) RETURNS VOID
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_instance     TEXT;
    v_locked_until BIGINT;
BEGIN
    SELECT l.instance_id, l.locked_until INTO v_instance, v_locked_until
      FROM instance_locks l WHERE l.lock_token = p_lock_token
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Invalid lock token: no orchestration lease holds this lock_token'
            USING ERRCODE = 'DXT01';
    END IF;
    IF v_locked_until <= p_now_ms THEN
        RAISE EXCEPTION 'Instance lock expired for instance %', v_instance USING ERRCODE = 'DXT02';
    END IF;

    IF p_orch_name IS NOT NULL AND p_orch_version IS NOT NULL THEN
        INSERT INTO instances AS i (instance_id, orchestration_name, orchestration_version,
                                    current_execution_id, parent_instance_id, created_at, updated_at)
        VALUES (v_instance, p_orch_name, p_orch_version, p_execution_id, p_parent_instance,
                p_now_ms, p_now_ms)
        ON CONFLICT (instance_id) DO UPDATE
            SET orchestration_name = EXCLUDED.orchestration_name,
                orchestration_version = EXCLUDED.orchestration_version;
    END IF;

    INSERT INTO executions (instance_id, execution_id, status, started_at)
    VALUES (v_instance, p_execution_id, 'Running', p_now_ms)
    ON CONFLICT (instance_id, execution_id) DO NOTHING;

    IF p_pinned_version IS NOT NULL THEN
        UPDATE executions e
           SET pinned_major = p_pinned_version[1],
               pinned_minor = p_pinned_version[2],
               pinned_patch = p_pinned_version[3]
         WHERE e.instance_id = v_instance AND e.execution_id = p_execution_id;
    END IF;

    UPDATE instances i
       SET current_execution_id = GREATEST(i.current_execution_id, p_execution_id),
           updated_at = p_now_ms
     WHERE i.instance_id = v_instance;

    INSERT INTO history (instance_id, execution_id, event_id, event_data)
    SELECT v_instance, p_execution_id, d.event_id, d.event_data
      FROM unnest(p_event_ids, p_event_data) AS d(event_id, event_data);

    IF p_status IS NOT NULL THEN
        UPDATE executions e
           SET status = p_status, output = p_output, completed_at = p_now_ms
         WHERE e.instance_id = v_instance AND e.execution_id = p_execution_id;
    END IF;

    IF p_custom_status_action <> 0 THEN
        UPDATE instances i
           SET custom_status = CASE WHEN p_custom_status_action = 1 THEN p_custom_status END,
               custom_status_version = i.custom_status_version + 1
         WHERE i.instance_id = v_instance;
    END IF;

    IF cardinality(p_kv_ops) > 0 THEN
        PERFORM apply_kv_operations(v_instance, p_now_ms, p_kv_ops, p_kv_keys, p_kv_values,
                                    p_kv_updated_at);
    END IF;

    IF p_status IN ('Completed', 'Failed', 'ContinuedAsNew') THEN
        PERFORM merge_kv_delta(v_instance);
    END IF;

    INSERT INTO worker_queue (work_item, visible_at, instance_id, execution_id, activity_id,
                              session_id, tag)
    SELECT w.work_item, p_now_ms, w.instance_id, w.execution_id, w.activity_id, w.session_id, w.tag
      FROM unnest(p_w_work_items, p_w_instance_ids, p_w_execution_ids, p_w_activity_ids,
                  p_w_session_ids, p_w_tags)
           AS w(work_item, instance_id, execution_id, activity_id, session_id, tag);

    IF cardinality(p_c_instance_ids) > 0 THEN
        DELETE FROM worker_queue w
         USING unnest(p_c_instance_ids, p_c_execution_ids, p_c_activity_ids)
               AS c(instance_id, execution_id, activity_id)
         WHERE w.instance_id = c.instance_id
           AND w.execution_id = c.execution_id
           AND w.activity_id = c.activity_id;
    END IF;

    INSERT INTO orchestrator_queue (instance_id, kind, work_item, visible_at)
    SELECT o.instance_id, o.kind, o.work_item, o.visible_at
      FROM unnest(p_o_instance_ids, p_o_kinds, p_o_work_items, p_o_visible_at)
           AS o(instance_id, kind, work_item, visible_at);

    DELETE FROM orchestrator_queue q WHERE q.lock_token = p_lock_token;
    DELETE FROM instance_locks l WHERE l.lock_token = p_lock_token;
    -- Messages that arrived during the lease were held for it: release them
    -- (the lease row was locked FOR UPDATE above, so every enqueue that held a
    -- message for this lease has committed and is seen here).
    UPDATE orchestrator_queue q SET lock_token = NULL
     WHERE q.lock_token = 'held:' || p_lock_token;

    PERFORM notify_work('w', cardinality(p_w_work_items));
    PERFORM notify_later('o', (SELECT min(v.at) FROM unnest(p_o_visible_at) AS v(at) WHERE v.at > p_now_ms));
    -- Whether messages for this instance wait (they arrived during the turn).
    -- count(*), not LIMIT 1 / EXISTS / min(id): once plpgsql's plan turns
    -- generic, the planner may expect an early hit and walk the whole queue
    -- (or its primary key) for an instance with nothing waiting; a count can
    -- only be served by the instance's own index entries.
    PERFORM notify_work('o',
        (SELECT count(*) FROM unnest(p_o_visible_at) AS v(at) WHERE v.at <= p_now_ms)
        + (SELECT LEAST(count(*), 1) FROM orchestrator_queue q
            WHERE q.instance_id = v_instance AND q.visible_at <= p_now_ms));
END;
$$;

-- abandon_orchestration_item (current text and contract: schema/functions/), releasing the lease's held messages
-- too (only the fetched ones get the delay and the attempt change).
CREATE OR REPLACE FUNCTION abandon_orchestration_item(
    p_lock_token     TEXT,
    p_now_ms         BIGINT,
    p_delay_ms       BIGINT,     -- NULL: visible again at once
    p_ignore_attempt BOOLEAN
) RETURNS VOID
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_instance TEXT;
BEGIN
    DELETE FROM instance_locks l WHERE l.lock_token = p_lock_token
    RETURNING l.instance_id INTO v_instance;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Invalid lock token: no orchestration lease holds this lock_token'
            USING ERRCODE = 'DXT01';
    END IF;
    UPDATE orchestrator_queue q
       SET lock_token = NULL,
           visible_at = CASE WHEN p_delay_ms IS NULL THEN q.visible_at
                             ELSE p_now_ms + GREATEST(p_delay_ms, 0) END,
           attempt_count = CASE WHEN p_ignore_attempt THEN GREATEST(q.attempt_count - 1, 0)
                                ELSE q.attempt_count END
     WHERE q.lock_token = p_lock_token;
    -- Messages that arrived during the lease were held for it: release them.
    UPDATE orchestrator_queue q SET lock_token = NULL
     WHERE q.lock_token = 'held:' || p_lock_token;
    -- The released instance may have messages visible now: this batch (no
    -- delay) or ones that arrived during the lease. (A count, not EXISTS; see
    -- ack_orchestration_item.)
    IF (SELECT count(*) FROM orchestrator_queue q
         WHERE q.instance_id = v_instance AND q.visible_at <= p_now_ms) > 0 THEN
        PERFORM notify_work('o', 1);
    END IF;
    IF p_delay_ms > 0 THEN
        PERFORM notify_later('o', p_now_ms + p_delay_ms);
    END IF;
END;
$$;

-- ack_work_item (current text and contract: schema/functions/), storing the completion as held when its
-- instance's lease is live (see the file header).
CREATE OR REPLACE FUNCTION ack_work_item(
    p_lock_token          TEXT,
    p_now_ms              BIGINT,
    p_completion_instance TEXT,   -- NULL: delete without notifying the orchestrator
    p_completion_kind     TEXT,
    p_completion          TEXT
) RETURNS VOID
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_session TEXT;
    v_lease   TEXT;
BEGIN
    DELETE FROM worker_queue q
     WHERE q.lock_token = p_lock_token AND q.locked_until > p_now_ms
    RETURNING q.session_id INTO v_session;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Activity was cancelled or its lock expired (lock_token not held)'
            USING ERRCODE = 'DXT02';
    END IF;
    PERFORM touch_session(v_session, p_now_ms);
    IF p_completion IS NOT NULL THEN
        v_lease := live_lease_token(p_completion_instance, p_now_ms);
        INSERT INTO orchestrator_queue (instance_id, kind, work_item, visible_at, lock_token)
        VALUES (p_completion_instance, p_completion_kind, p_completion, p_now_ms,
                'held:' || v_lease);
        IF v_lease IS NULL THEN
            PERFORM notify_work('o', 1);
        END IF;
    END IF;
END;
$$;

-- delete_instances_atomic (current text and contract: schema/functions/), deleting the
-- lease rows before the queue rows (see the comment in its body).
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
    -- Leases first: deleting a lease row waits for any enqueue holding a
    -- message for it (FOR SHARE), so the queue delete below sees that
    -- message; later enqueues find no lease and store untagged. (Queue first
    -- could leave a message held for a lease deleted afterwards: unreachable.)
    DELETE FROM instance_locks l WHERE l.instance_id = ANY (p_ids);
    DELETE FROM orchestrator_queue q WHERE q.instance_id = ANY (p_ids);
    GET DIAGNOSTICS v_orch = ROW_COUNT;
    DELETE FROM worker_queue w WHERE w.instance_id = ANY (p_ids);
    GET DIAGNOSTICS v_work = ROW_COUNT;
    o_queue_messages_deleted := v_orch + v_work;
    DELETE FROM kv_store s WHERE s.instance_id = ANY (p_ids);
    DELETE FROM kv_delta d WHERE d.instance_id = ANY (p_ids);
    DELETE FROM instances i WHERE i.instance_id = ANY (p_ids);
    SELECT count(DISTINCT x) INTO o_instances_deleted FROM unnest(p_ids) AS x;
    RETURN NEXT;
END;
$$;
