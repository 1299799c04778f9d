-- 0003_worker_queue: one function per worker-queue and session provider operation.
-- Conventions (clock, error codes, search_path): migrations/README.md. The current text
-- and contract of every function: schema/functions/<name>.sql.

-- enqueue_for_worker: inserts one unlocked, immediately visible activity row.
-- Touches: one worker_queue row. Locks: none. Notifies waiting fetchers.
CREATE OR REPLACE FUNCTION enqueue_worker_item(
    p_work_item    TEXT,
    p_now_ms       BIGINT,
    p_instance_id  TEXT,
    p_execution_id BIGINT,
    p_activity_id  BIGINT,
    p_session_id   TEXT,
    p_tag          TEXT
) RETURNS VOID
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    INSERT INTO worker_queue (work_item, visible_at, instance_id, execution_id, activity_id,
                              session_id, tag)
    VALUES (p_work_item, p_now_ms, p_instance_id, p_execution_id, p_activity_id, p_session_id, p_tag);
    PERFORM notify_work('w', 1);
END;
$$;

-- fetch_work_item: peek-locks the oldest eligible activity row.
--
-- Eligible: visible, unlocked or lease expired, tag accepted by the filter
-- (p_tag_mode 0 untagged only, 1 tag in p_tags, 2 untagged or in p_tags,
-- 3 any), and by session: with p_owner_id NULL only session-less rows; with an
-- owner, session-less rows plus rows whose session is unowned, expired or
-- already owned by p_owner_id. Row locks use SKIP LOCKED and session claims an
-- advisory try-lock, so a fetch never waits for another fetch. Claiming a
-- session row upserts sessions (owner, lease p_now_ms + p_session_lock_ms).
-- Touches: one worker_queue row (lock_token, locked_until, attempt_count + 1),
-- at most one sessions row. When nothing is eligible it returns one row with a
-- NULL item and o_wake_at: the earliest future time at which a row becomes
-- visible or a lease expires (NULL: nothing pending).
CREATE OR REPLACE FUNCTION fetch_work_item(
    p_now_ms          BIGINT,
    p_lock_timeout_ms BIGINT,
    p_owner_id        TEXT,
    p_session_lock_ms BIGINT,
    p_tag_mode        SMALLINT,
    p_tags            TEXT[]
) RETURNS TABLE (o_work_item TEXT, o_lock_token TEXT, o_attempt_count INTEGER, o_wake_at BIGINT)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_id      BIGINT;
    v_session TEXT;
    v_skipped BIGINT[] := '{}';
BEGIN
    -- Each pass either claims a row or skips one lost to a concurrent session
    -- claim; the bound keeps a pathological race from looping for long.
    FOR v_pass IN 1..16 LOOP
        SELECT q.id, q.session_id INTO v_id, v_session
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
    o_wake_at := LEAST(
        (SELECT min(q.visible_at) FROM worker_queue q WHERE q.visible_at > p_now_ms),
        (SELECT min(q.locked_until) FROM worker_queue q
          WHERE q.lock_token IS NOT NULL AND q.locked_until > p_now_ms));
    RETURN NEXT;
END;
$$;

-- Records activity on a session that is still held (no-op for NULL or an
-- expired session): keeps an active session from being treated as idle.
CREATE OR REPLACE FUNCTION touch_session(p_session_id TEXT, p_now_ms BIGINT)
RETURNS VOID
LANGUAGE sql
SET search_path FROM CURRENT
AS $$
    UPDATE sessions s SET last_activity_at = p_now_ms
     WHERE s.session_id = p_session_id AND s.locked_until > p_now_ms
$$;

-- ack_work_item: deletes the locked row and, when given, enqueues the
-- completion for the orchestrator, atomically. Fails with DXT02 (nothing
-- changed) when the row is gone (cancelled, deleted) or its lease expired.
-- A session row's last_activity_at is bumped while the session is held.
-- Touches: one worker_queue row, at most one sessions row, one orchestrator_queue row.
-- Notifies waiting orchestration fetchers of the completion unless the
-- instance is leased (its holder's ack notifies; see instance_is_leased).
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
        INSERT INTO orchestrator_queue (instance_id, kind, work_item, visible_at)
        VALUES (p_completion_instance, p_completion_kind, p_completion, p_now_ms);
        IF NOT instance_is_leased(p_completion_instance, p_now_ms) THEN
            PERFORM notify_work('o', 1);
        END IF;
    END IF;
END;
$$;

-- renew_work_item_lock: extends a live lease to p_now_ms + p_extend_ms. Fails
-- with DXT02 when the row is gone or the lease expired; the runtime reads that
-- as "this activity was cancelled". Bumps the session's last_activity_at.
-- Touches: one worker_queue row, at most one sessions row.
CREATE OR REPLACE FUNCTION renew_work_item_lock(
    p_lock_token TEXT,
    p_now_ms     BIGINT,
    p_extend_ms  BIGINT
) RETURNS VOID
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_session TEXT;
BEGIN
    UPDATE worker_queue q
       SET locked_until = p_now_ms + p_extend_ms
     WHERE q.lock_token = p_lock_token AND q.locked_until > p_now_ms
    RETURNING q.session_id INTO v_session;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Lock renewal failed: activity was cancelled or its lock expired (lock_token not held)'
            USING ERRCODE = 'DXT02';
    END IF;
    PERFORM touch_session(v_session, p_now_ms);
END;
$$;

-- abandon_work_item: unlocks the row; with p_delay_ms it becomes visible at
-- p_now_ms + p_delay_ms (otherwise at once, keeping its place in the queue);
-- with p_ignore_attempt its attempt_count goes down by one (never below zero).
-- Unknown token: DXT01. Touches: one worker_queue row. Notifies waiting
-- fetchers now, or for the delayed visible time.
CREATE OR REPLACE FUNCTION abandon_work_item(
    p_lock_token     TEXT,
    p_now_ms         BIGINT,
    p_delay_ms       BIGINT,
    p_ignore_attempt BOOLEAN
) RETURNS VOID
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    UPDATE worker_queue q
       SET lock_token = NULL,
           locked_until = NULL,
           visible_at = CASE WHEN p_delay_ms IS NULL THEN LEAST(q.visible_at, p_now_ms)
                             ELSE p_now_ms + GREATEST(p_delay_ms, 0) END,
           attempt_count = CASE WHEN p_ignore_attempt THEN GREATEST(q.attempt_count - 1, 0)
                                ELSE q.attempt_count END
     WHERE q.lock_token = p_lock_token;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Invalid lock token or work item already acked (lock_token unknown)'
            USING ERRCODE = 'DXT01';
    END IF;
    IF p_delay_ms IS NULL OR p_delay_ms <= 0 THEN
        PERFORM notify_work('w', 1);
    ELSE
        PERFORM notify_later('w', p_now_ms + p_delay_ms);
    END IF;
END;
$$;

-- renew_session_lock: one heartbeat for every session owned by p_owner_ids
-- that is still held and was active within p_idle_timeout_ms. Returns how many
-- were extended (to p_now_ms + p_extend_ms). Touches: those sessions rows.
CREATE OR REPLACE FUNCTION renew_session_lock(
    p_owner_ids       TEXT[],
    p_now_ms          BIGINT,
    p_extend_ms       BIGINT,
    p_idle_timeout_ms BIGINT
) RETURNS BIGINT
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_count BIGINT;
BEGIN
    UPDATE sessions s
       SET locked_until = p_now_ms + p_extend_ms
     WHERE s.worker_id = ANY (p_owner_ids)
       AND s.locked_until > p_now_ms
       AND s.last_activity_at + p_idle_timeout_ms > p_now_ms;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END;
$$;

-- cleanup_orphaned_sessions: deletes sessions whose lease has expired and
-- that no worker_queue row references. Returns the count.
CREATE OR REPLACE FUNCTION cleanup_orphaned_sessions(p_now_ms BIGINT)
RETURNS BIGINT
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_count BIGINT;
BEGIN
    DELETE FROM sessions s
     WHERE s.locked_until < p_now_ms
       AND NOT EXISTS (SELECT 1 FROM worker_queue q WHERE q.session_id = s.session_id);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END;
$$;
