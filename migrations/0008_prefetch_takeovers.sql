-- 0008_prefetch_takeovers: the ack of an activity can lease the next one in
-- the same round trip, and the worker fetch says when it took a lease over
-- from a holder that let it expire (the lease-takeover metric).
--
-- The runtime's worker slot always fetches again right after it acks, so the
-- provider asks the ack to lease the slot's next item at once; the fetch that
-- follows is then answered from the provider's memory without a round trip
-- (over a 20 ms network that is a third of an activity's database time).
-- Orchestration turns are not leased ahead: a held instance carries a history
-- snapshot that must not go stale, and measured at 20 ms it was slower.

-- fetch_work_item (current text and contract: schema/functions/), plus a last column
-- o_taken_over: whether the lease just taken had expired in the hands of
-- another holder rather than being free. A new result type, so it is dropped
-- and created again (in this transaction: callers never see it missing).
-- (fetch_orchestration_item gains the same column too.)
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
