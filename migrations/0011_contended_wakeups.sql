-- 0011_contended_wakeups: an empty fetch that lost a race says so, and a
-- fetch never locks an instance its version filter rejects.
--
-- A fetch skips what another transaction holds at that moment: an instance
-- whose advisory lock another fetch holds, a worker row locked by another
-- fetch (SKIP LOCKED) or a session another fetch just claimed. The holder
-- usually takes it, but not always: a fetch whose version filter rejected
-- the instance let go of it a moment later (0009 took the lock before
-- checking the filter), as does a worker fetch that loses a session claim or
-- finds the lease taken meanwhile. A caller that then slept until the next
-- wake-up hint left that work waiting for the fallback poll (found by the
-- wake-up benchmark: a 10 s stall in 2 of 100 samples when only one of three
-- waiting fetches could take the work).
--
-- So both fetches report, when they found nothing, a wake time a millisecond
-- from now (o_wake_at = p_now_ms + 1) if they passed over work for that
-- reason; the provider's waiting loop looks again then (at most once a
-- millisecond, while the other transaction holds it: a fetch holds it for a
-- few milliseconds). And the orchestrator fetch checks the version filter
-- before it takes a candidate's advisory lock. Otherwise rows touched, locks
-- taken, results and errors are those of 0008 (worker) and 0009
-- (orchestrator).

-- instance_compatible: whether the candidate's current execution may be
-- replayed by a fetch whose version filter is [p_min_version, p_max_version]
-- (NULL: no filter; an unpinned execution or a new instance always may).
-- Reads instances and executions, locks nothing. Internal helper of
-- fetch_orchestration_item (runs under its search_path, no SET).
CREATE OR REPLACE FUNCTION instance_compatible(
    p_candidate   TEXT,
    p_min_version BIGINT[],
    p_max_version BIGINT[]
) RETURNS BOOLEAN
LANGUAGE plpgsql
AS $$
BEGIN
    RETURN p_min_version IS NULL OR NOT EXISTS (
        SELECT 1
          FROM instances i
          JOIN executions e
            ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
         WHERE i.instance_id = p_candidate
           AND e.pinned_major IS NOT NULL
           AND ((e.pinned_major, e.pinned_minor, e.pinned_patch)
                    < (p_min_version[1], p_min_version[2], p_min_version[3])
                OR (e.pinned_major, e.pinned_minor, e.pinned_patch)
                    > (p_max_version[1], p_max_version[2], p_max_version[3])));
END;
$$;

-- lease_instance: one fetch attempt on one candidate instance (the body of
-- fetch_orchestration_item's search, shared by its two candidate sources).
-- The caller holds the instance's advisory lock and has checked the version
-- filter (instance_compatible). Re-checks that no live lease exists, handles
-- messages of never-started instances (as 0002), then upserts the lease
-- (taking over an expired one), tags every visible message of the instance
-- with the new token (attempt_count + 1) and returns the row
-- fetch_orchestration_item returns. No row: the candidate was not leased.
-- Touches: one instance_locks row, the instance's visible queue rows.
-- Per-instance probes of the queue count rows rather than ask EXISTS (see
-- the contract of ack_orchestration_item for why). Same signature as before:
-- replaced in place; the advisory lock and the filter moved to the caller.
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
    -- The caller's snapshot may predate another fetch's commit.
    IF EXISTS (SELECT 1 FROM instance_locks l
                WHERE l.instance_id = p_candidate AND l.locked_until > p_now_ms) THEN
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

-- fetch_orchestration_item (current text and contract: schema/functions/), checking each
-- candidate's version filter and then taking its advisory try-lock itself,
-- before lease_instance (which no longer does either): an incompatible
-- candidate is skipped without being locked, so it never blocks a fetch
-- that may take it, and a lock held by another fetch is known here. Same
-- signature: replaced in place.
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
    v_contended BOOLEAN := FALSE;
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
        -- The version filter first: a fetch never locks what it may not take.
        CONTINUE WHEN NOT instance_compatible(v_candidate, p_min_version, p_max_version);
        -- Another fetch is looking at this instance right now. It may not
        -- take it (it lost a race for the lease, say): report a wake time a
        -- millisecond away, so a waiting caller looks again instead of
        -- sleeping on it.
        IF NOT pg_try_advisory_xact_lock(lock_key('instance', v_candidate)) THEN
            v_contended := TRUE;
            CONTINUE;
        END IF;
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
        -- The version filter first: a fetch never locks what it may not take.
        CONTINUE WHEN NOT instance_compatible(v_candidate, p_min_version, p_max_version);
        -- Another fetch is looking at this instance right now. It may not
        -- take it (it lost a race for the lease, say): report a wake time a
        -- millisecond away, so a waiting caller looks again instead of
        -- sleeping on it.
        IF NOT pg_try_advisory_xact_lock(lock_key('instance', v_candidate)) THEN
            v_contended := TRUE;
            CONTINUE;
        END IF;
        RETURN QUERY SELECT * FROM lease_instance(v_candidate, p_now_ms, p_lock_timeout_ms,
                                                  p_min_version, p_max_version);
        IF FOUND THEN
            RETURN;
        END IF;
    END LOOP;

    o_wake_at := LEAST(
        (SELECT min(q.visible_at) FROM orchestrator_queue q WHERE q.visible_at > p_now_ms),
        (SELECT min(l.locked_until) FROM instance_locks l WHERE l.locked_until > p_now_ms),
        CASE WHEN v_contended THEN p_now_ms + 1 END);
    o_taken_over := NULL;
    RETURN NEXT;
END;
$$;

-- fetch_work_item (current text and contract: schema/functions/); when nothing was leased,
-- it checks whether eligible rows were passed over because another
-- transaction held them (one extra index scan, only on empty results).
-- Same signature: replaced in place.
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
          WHERE q.lock_token IS NOT NULL AND q.locked_until > p_now_ms),
        -- Rows this fetch could take but another transaction held (SKIP
        -- LOCKED passed them, or a concurrent session claim won): that one
        -- may not take them (a claim for another session, say), so a
        -- waiting caller looks again in a millisecond instead of sleeping on
        -- them.
        CASE WHEN cardinality(v_skipped) > 0 OR EXISTS (
                SELECT 1 FROM worker_queue q
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
                       END)
             THEN p_now_ms + 1 END);
    RETURN NEXT;
END;
$$;
