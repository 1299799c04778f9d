-- 0008_prefetch_takeovers: the ack of an activity can lease the next one in
-- the same round trip, and both fetches say when they took a lease over from
-- a holder that let it expire (the lease-takeover metric).
--
-- The runtime's worker slot always fetches again right after it acks, so the
-- provider asks the ack to lease the slot's next item at once; the fetch that
-- follows is then answered from the provider's memory without a round trip
-- (over a 20 ms network that is a third of an activity's database time).
-- Orchestration turns are not leased ahead: a held instance carries a history
-- snapshot that must not go stale, and measured at 20 ms it was slower.

-- Both fetch functions as in 0002/0003 (their header comments hold), plus a
-- last column o_taken_over: whether the lease just taken had expired in the
-- hands of another holder rather than being free. A new result type, so each
-- is dropped and created again (in this transaction: callers never see it
-- missing).
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
    v_token     TEXT;
    v_name      TEXT;
    v_version   TEXT;
    v_exec      BIGINT;
    v_messages  TEXT[];
    v_attempts  INTEGER;
    v_taken     BOOLEAN;
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

        -- Ack and abandon delete the lease row; one still here has expired
        -- (re-checked above) with its holder gone: this fetch takes it over.
        v_taken := EXISTS (SELECT 1 FROM instance_locks l WHERE l.instance_id = v_candidate);
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
               NULL::BIGINT,
               v_taken
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

DROP FUNCTION fetch_work_item(BIGINT, BIGINT, TEXT, BIGINT, SMALLINT, TEXT[]);
CREATE OR REPLACE FUNCTION fetch_work_item(
    p_now_ms          BIGINT,
    p_lock_timeout_ms BIGINT,
    p_owner_id        TEXT,
    p_session_lock_ms BIGINT,
    p_tag_mode        SMALLINT,
    p_tags            TEXT[]
) RETURNS TABLE (o_work_item TEXT, o_lock_token TEXT, o_attempt_count INTEGER, o_wake_at BIGINT,
               o_taken_over BOOLEAN)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_id      BIGINT;
    v_session TEXT;
    v_held    BOOLEAN;
    v_skipped BIGINT[] := '{}';
BEGIN
    -- Each pass either claims a row or skips one lost to a concurrent session
    -- claim; the bound keeps a pathological race from looping for long.
    FOR v_pass IN 1..16 LOOP
        SELECT q.id, q.session_id, q.lock_token IS NOT NULL INTO v_id, v_session, v_held
          FROM worker_queue q
         WHERE q.visible_at <= p_now_ms
           AND (q.lock_token IS NULL OR q.locked_until <= p_now_ms)
           AND CASE p_tag_mode
                   WHEN 0 THEN q.tag IS NULL
                   WHEN 1 THEN q.tag = ANY (p_tags)
                   WHEN 2 THEN q.tag IS NULL OR q.tag = ANY (p_tags)
                   ELSE TRUE
               END
           AND CASE WHEN p_owner_id IS NULL THEN q.session_id IS NULL
                    ELSE q.session_id IS NULL OR NOT EXISTS (
                            SELECT 1 FROM sessions s
                             WHERE s.session_id = q.session_id
                               AND s.locked_until > p_now_ms
                               AND s.worker_id <> p_owner_id)
               END
           AND q.id <> ALL (v_skipped)
         ORDER BY q.visible_at, q.id
         LIMIT 1
           FOR UPDATE OF q SKIP LOCKED;
        IF NOT FOUND THEN
            EXIT;
        END IF;

        IF v_session IS NOT NULL THEN
            IF NOT pg_try_advisory_xact_lock(lock_key('session', v_session)) THEN
                v_skipped := v_skipped || v_id;
                CONTINUE;
            END IF;
            INSERT INTO sessions AS s (session_id, worker_id, locked_until, last_activity_at)
            VALUES (v_session, p_owner_id, p_now_ms + p_session_lock_ms, p_now_ms)
            ON CONFLICT (session_id) DO UPDATE
                SET worker_id = EXCLUDED.worker_id,
                    locked_until = EXCLUDED.locked_until,
                    last_activity_at = EXCLUDED.last_activity_at
                WHERE s.locked_until <= p_now_ms OR s.worker_id = p_owner_id;
            IF NOT FOUND THEN
                v_skipped := v_skipped || v_id;
                CONTINUE;
            END IF;
        END IF;

        -- Ack deletes the row and abandon clears its token: a token still set
        -- is an expired lease whose holder is gone, taken over here.
        o_taken_over := v_held;
        o_lock_token := gen_random_uuid()::text;
        UPDATE worker_queue q
           SET lock_token = o_lock_token,
               locked_until = p_now_ms + p_lock_timeout_ms,
               attempt_count = q.attempt_count + 1
         WHERE q.id = v_id
        RETURNING q.work_item, q.attempt_count INTO o_work_item, o_attempt_count;
        RETURN NEXT;
        RETURN;
    END LOOP;

    o_lock_token := NULL;
    o_taken_over := NULL;
    o_wake_at := LEAST(
        (SELECT min(q.visible_at) FROM worker_queue q WHERE q.visible_at > p_now_ms),
        (SELECT min(q.locked_until) FROM worker_queue q
          WHERE q.lock_token IS NOT NULL AND q.locked_until > p_now_ms));
    RETURN NEXT;
END;
$$;

-- ack_work_item_and_fetch: ack_work_item, then fetch_work_item with the
-- arguments of the worker's previous fetch, in one transaction: the same item,
-- in the same FIFO order, that the next fetch would lease (including its
-- session claim). Returns the leased item (lock_token, locked_until = p_now_ms
-- + p_lock_timeout_ms, attempt_count + 1) or one row of NULLs when nothing is
-- ready. Fails like ack_work_item (DXT02, nothing changed, nothing leased)
-- when the acked lease is gone.
-- Locks and rows touched: those of ack_work_item plus those of fetch_work_item.
CREATE OR REPLACE FUNCTION ack_work_item_and_fetch(
    p_lock_token          TEXT,
    p_now_ms              BIGINT,
    p_completion_instance TEXT,
    p_completion_kind     TEXT,
    p_completion          TEXT,
    p_lock_timeout_ms     BIGINT,
    p_owner_id            TEXT,
    p_session_lock_ms     BIGINT,
    p_tag_mode            SMALLINT,
    p_tags                TEXT[]
) RETURNS TABLE (o_work_item TEXT, o_lock_token TEXT, o_attempt_count INTEGER,
                 o_taken_over BOOLEAN)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM ack_work_item(p_lock_token, p_now_ms, p_completion_instance,
                          p_completion_kind, p_completion);
    RETURN QUERY
        SELECT f.o_work_item, f.o_lock_token, f.o_attempt_count, f.o_taken_over
          FROM fetch_work_item(p_now_ms, p_lock_timeout_ms, p_owner_id,
                               p_session_lock_ms, p_tag_mode, p_tags) f;
END;
$$;
