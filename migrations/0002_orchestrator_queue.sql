-- 0002_orchestrator_queue: one function per orchestrator-queue provider operation.
--
-- Conventions for every function in this store:
--   * p_now_ms is the caller's clock (Rust); the database clock is never read.
--   * Errors the caller must not retry use SQLSTATE class 'DX':
--       DXT01 invalid lock token   DXT02 lock expired or lost
--       DXN01 not found            DXP01 precondition failed   DXI01 invalid input
--   * `SET search_path FROM CURRENT` pins the provider's schema into each
--     function, whatever search_path the calling connection has.

-- Advisory-lock key for one object of this schema. Including the schema keeps
-- tenants that share a database from contending on each other's keys.
CREATE OR REPLACE FUNCTION lock_key(p_kind TEXT, p_id TEXT)
RETURNS BIGINT
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    SELECT hashtextextended('duroxide-pg/' || current_schema() || '/' || p_kind || '/' || p_id, 0)
$$;

-- The LISTEN/NOTIFY channel of this schema (a hash keeps it within the 63-byte
-- identifier limit whatever the schema name's length).
CREATE OR REPLACE FUNCTION notify_channel()
RETURNS TEXT
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    SELECT 'duroxide_pg_' || left(md5(current_schema()), 24)
$$;

-- Wake-up hint for long-polling fetchers: p_queue 'o' (orchestrator) or 'w'
-- (worker), p_count items became visible. Delivered at commit; a hint only,
-- fetchers always re-check the tables.
CREATE OR REPLACE FUNCTION notify_work(p_queue TEXT, p_count BIGINT)
RETURNS VOID
LANGUAGE sql
SET search_path FROM CURRENT
AS $$
    SELECT pg_notify(notify_channel(), p_queue || p_count::TEXT) WHERE p_count > 0
$$;

-- Whether p_instance_id is leased by a dispatcher that will see new messages
-- when it acks (its ack re-checks the instance's queue and notifies). Takes a
-- FOR SHARE lock on the lease row, without waiting (SKIP LOCKED), and holds it
-- to commit: an ack that starts afterwards waits for the caller's commit and
-- then sees its message. A lease row being changed right now counts as "not
-- leased", so the caller notifies: a wake-up is never lost, only spared.
CREATE OR REPLACE FUNCTION instance_is_leased(p_instance_id TEXT, p_now_ms BIGINT)
RETURNS BOOLEAN
LANGUAGE sql
SET search_path FROM CURRENT
AS $$
    SELECT EXISTS (SELECT 1 FROM instance_locks l
                    WHERE l.instance_id = p_instance_id AND l.locked_until > p_now_ms
                      FOR SHARE SKIP LOCKED)
$$;

-- Wake-up hint for items that become visible later (timers, delays):
-- payload '<queue>@<visible_at ms>'. Waiting fetchers then also wake at that
-- time, without a query now.
CREATE OR REPLACE FUNCTION notify_later(p_queue TEXT, p_visible_at BIGINT)
RETURNS VOID
LANGUAGE sql
SET search_path FROM CURRENT
AS $$
    SELECT pg_notify(notify_channel(), p_queue || '@' || p_visible_at::TEXT) WHERE p_visible_at IS NOT NULL
$$;

-- enqueue_for_orchestrator: inserts one message, visible at p_now_ms + p_delay_ms.
-- Touches: one orchestrator_queue row. Locks: none. Never creates the instance.
-- Notifies waiting fetchers when the message is visible at once and the
-- instance is not leased (see instance_is_leased); a delayed message is
-- announced for its visible time (notify_later).
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
BEGIN
    INSERT INTO orchestrator_queue (instance_id, kind, work_item, visible_at)
    VALUES (p_instance_id, p_kind, p_work_item, p_now_ms + GREATEST(p_delay_ms, 0));
    IF p_delay_ms > 0 THEN
        PERFORM notify_later('o', p_now_ms + p_delay_ms);
    ELSIF NOT instance_is_leased(p_instance_id, p_now_ms) THEN
        PERFORM notify_work('o', 1);
    END IF;
END;
$$;

-- fetch_orchestration_item: leases one instance with visible work.
--
-- Walks visible messages oldest-visible first. For each candidate instance it
-- takes a transaction-scoped advisory try-lock (never waits for another
-- fetcher: a busy candidate is skipped), re-checks the lease table, and:
--   * skips instances whose current execution is pinned outside
--     [p_min_version, p_max_version] (before locking or reading history);
--   * for an instance with no row, no history and no start message: deletes the
--     batch if it holds only QueueMessages (orphans), otherwise leaves it and
--     moves on, so such rows never block the rest of the queue;
--   * otherwise upserts instance_locks (lease = p_now_ms + p_lock_timeout_ms),
--     tags every visible message of the instance with the new token,
--     increments their attempt_count, and returns the messages (in enqueue
--     order), the current execution's history (by event_id) and the KV
--     snapshot of prior executions.
-- When nothing is ready it returns one row with a NULL instance and o_wake_at:
-- the earliest future time at which a message becomes visible or a lease
-- expires (NULL: nothing pending), so a long-polling caller knows when to look
-- again. Touches: one instance_locks row, the instance's visible queue rows.
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
    o_wake_at               BIGINT
)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_candidate TEXT;
    v_tried     TEXT[] := '{}';
    v_token     TEXT;
    v_name      TEXT;
    v_version   TEXT;
    v_exec      BIGINT;
    v_messages  TEXT[];
    v_attempts  INTEGER;
BEGIN
    FOR v_candidate IN
        SELECT q.instance_id
        FROM orchestrator_queue q
        WHERE q.visible_at <= p_now_ms
          AND NOT EXISTS (
                SELECT 1 FROM instance_locks l
                WHERE l.instance_id = q.instance_id AND l.locked_until > p_now_ms)
          AND (p_min_version IS NULL OR NOT EXISTS (
                SELECT 1
                FROM instances i
                JOIN executions e
                  ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
                WHERE i.instance_id = q.instance_id
                  AND e.pinned_major IS NOT NULL
                  AND ((e.pinned_major, e.pinned_minor, e.pinned_patch)
                           < (p_min_version[1], p_min_version[2], p_min_version[3])
                       OR (e.pinned_major, e.pinned_minor, e.pinned_patch)
                           > (p_max_version[1], p_max_version[2], p_max_version[3]))))
        ORDER BY q.visible_at, q.id
    LOOP
        CONTINUE WHEN v_candidate = ANY (v_tried);
        v_tried := v_tried || v_candidate;

        CONTINUE WHEN NOT pg_try_advisory_xact_lock(lock_key('instance', v_candidate));
        -- The scan's snapshot may predate another fetch's commit.
        CONTINUE WHEN EXISTS (
            SELECT 1 FROM instance_locks l
            WHERE l.instance_id = v_candidate AND l.locked_until > p_now_ms);

        SELECT i.orchestration_name, i.orchestration_version, i.current_execution_id
          INTO v_name, v_version, v_exec
          FROM instances i WHERE i.instance_id = v_candidate;

        IF NOT FOUND THEN
            v_name := NULL;
            v_version := NULL;
            v_exec := COALESCE(
                (SELECT max(e.execution_id) FROM executions e WHERE e.instance_id = v_candidate), 1);
            IF NOT EXISTS (SELECT 1 FROM history h
                           WHERE h.instance_id = v_candidate AND h.execution_id = v_exec)
               AND NOT EXISTS (SELECT 1 FROM orchestrator_queue q
                               WHERE q.instance_id = v_candidate AND q.visible_at <= p_now_ms
                                 AND q.kind IN ('StartOrchestration', 'ContinueAsNew'))
            THEN
                -- Messages for an instance that never started. QueueMessages are
                -- dropped (events sent before a start are not delivered); any other
                -- kind is left for the runtime to resolve.
                IF NOT EXISTS (SELECT 1 FROM orchestrator_queue q
                               WHERE q.instance_id = v_candidate AND q.visible_at <= p_now_ms
                                 AND q.kind <> 'QueueMessage')
                THEN
                    DELETE FROM orchestrator_queue q
                    WHERE q.instance_id = v_candidate AND q.visible_at <= p_now_ms;
                END IF;
                CONTINUE;
            END IF;
        END IF;

        v_token := gen_random_uuid()::text;
        INSERT INTO instance_locks AS l (instance_id, lock_token, locked_until, locked_at)
        VALUES (v_candidate, v_token, p_now_ms + p_lock_timeout_ms, p_now_ms)
        ON CONFLICT (instance_id) DO UPDATE
            SET lock_token = EXCLUDED.lock_token,
                locked_until = EXCLUDED.locked_until,
                locked_at = EXCLUDED.locked_at
            WHERE l.locked_until <= p_now_ms;
        CONTINUE WHEN NOT FOUND;

        WITH tagged AS (
            UPDATE orchestrator_queue q
               SET lock_token = v_token, attempt_count = q.attempt_count + 1
             WHERE q.instance_id = v_candidate AND q.visible_at <= p_now_ms
            RETURNING q.id, q.work_item, q.attempt_count
        )
        SELECT array_agg(t.work_item ORDER BY t.id), max(t.attempt_count)
          INTO v_messages, v_attempts
          FROM tagged t;

        IF v_messages IS NULL THEN
            -- Another dispatcher acked the batch after our scan: nothing to do here.
            DELETE FROM instance_locks l WHERE l.lock_token = v_token;
            CONTINUE;
        END IF;

        RETURN QUERY
        SELECT v_candidate, v_token, v_name, v_version, v_exec, v_attempts, v_messages,
               COALESCE((SELECT array_agg(h.event_data ORDER BY h.event_id)
                           FROM history h
                          WHERE h.instance_id = v_candidate AND h.execution_id = v_exec),
                        '{}'::TEXT[]),
               COALESCE(kv.keys, '{}'::TEXT[]),
               COALESCE(kv.vals, '{}'::TEXT[]),
               COALESCE(kv.ts, '{}'::BIGINT[]),
               NULL::BIGINT
          FROM (SELECT array_agg(s.key) AS keys, array_agg(s.value) AS vals,
                       array_agg(s.last_updated_at_ms) AS ts
                  FROM kv_store s WHERE s.instance_id = v_candidate) kv;
        RETURN;
    END LOOP;

    o_wake_at := LEAST(
        (SELECT min(q.visible_at) FROM orchestrator_queue q WHERE q.visible_at > p_now_ms),
        (SELECT min(l.locked_until) FROM instance_locks l WHERE l.locked_until > p_now_ms));
    RETURN NEXT;
END;
$$;

-- ack_orchestration_item: commits one orchestration turn atomically.
--
-- Locks: the instance_locks row of p_lock_token (FOR UPDATE); fails with DXT01
-- when the token is unknown and DXT02 when its lease has expired, changing
-- nothing. Then, in order: creates/updates the instance row (only when the
-- metadata names the orchestration), creates the execution row, stores the
-- pinned version, raises current_execution_id, appends the history delta
-- (a duplicate event_id aborts everything), applies status/output, custom
-- status and KV changes (KV delta merged into kv_store on a terminal status),
-- enqueues worker items, then deletes cancelled activities (so an activity
-- scheduled and cancelled in one turn is gone), enqueues orchestrator items,
-- deletes the messages this fetch tagged, and releases the lease. Notifies
-- waiting fetchers of the new worker items, of orchestrator items visible at
-- once, of messages that arrived for this instance while it was leased, and of
-- the earliest future item (a timer) for its fire time.
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

    PERFORM notify_work('w', cardinality(p_w_work_items));
    PERFORM notify_later('o', (SELECT min(v.at) FROM unnest(p_o_visible_at) AS v(at) WHERE v.at > p_now_ms));
    PERFORM notify_work('o',
        (SELECT count(*) FROM unnest(p_o_visible_at) AS v(at) WHERE v.at <= p_now_ms)
        + (SELECT count(*) FROM (SELECT 1 FROM orchestrator_queue q
                                  WHERE q.instance_id = v_instance AND q.visible_at <= p_now_ms
                                  LIMIT 1) waiting));
END;
$$;

-- abandon_orchestration_item: releases a lease without committing a turn.
-- Only the messages this fetch tagged are touched: with p_delay_ms they become
-- visible at p_now_ms + p_delay_ms; with p_ignore_attempt their attempt_count
-- goes down by one (never below zero). Unknown token: DXT01, nothing changed.
-- Touches: one instance_locks row (deleted), the tagged queue rows. Notifies
-- waiting fetchers when the instance has messages visible now.
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
    -- The released instance may have messages visible now: this batch (no
    -- delay) or ones that arrived during the lease.
    IF EXISTS (SELECT 1 FROM orchestrator_queue q
                WHERE q.instance_id = v_instance AND q.visible_at <= p_now_ms) THEN
        PERFORM notify_work('o', 1);
    END IF;
    IF p_delay_ms > 0 THEN
        PERFORM notify_later('o', p_now_ms + p_delay_ms);
    END IF;
END;
$$;

-- renew_orchestration_item_lock: extends a live lease to p_now_ms + p_extend_ms.
-- Fails with DXT02 when the token is unknown or its lease has already expired.
-- Touches: one instance_locks row.
CREATE OR REPLACE FUNCTION renew_orchestration_item_lock(
    p_lock_token TEXT,
    p_now_ms     BIGINT,
    p_extend_ms  BIGINT
) RETURNS VOID
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    UPDATE instance_locks l
       SET locked_until = p_now_ms + p_extend_ms
     WHERE l.lock_token = p_lock_token AND l.locked_until > p_now_ms;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Lock token invalid, expired, or already acked (lock_token not renewable)'
            USING ERRCODE = 'DXT02';
    END IF;
END;
$$;
