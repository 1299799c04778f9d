-- 0018_batched_worker_acks: the worker acks of several slots of one
-- provider, each with its slot's next fetch, in one statement and one
-- transaction (the provider's group commit, src/coalesce.rs); a session
-- claim that never waits for a session row another transaction holds; and
-- orchestration leases that commit without waiting for a WAL flush.

-- touch_sessions: touch_session for the sessions of a batch, without waiting.
CREATE OR REPLACE FUNCTION touch_sessions(p_session_ids TEXT[], p_now_ms BIGINT)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    UPDATE sessions s SET last_activity_at = p_now_ms
      FROM (SELECT x.session_id FROM sessions x
             WHERE x.session_id = ANY (p_session_ids) AND x.locked_until > p_now_ms
             ORDER BY x.session_id
               FOR UPDATE SKIP LOCKED) held
     WHERE s.session_id = held.session_id;
END;
$$;
COMMENT ON FUNCTION touch_sessions(text[], bigint) IS $c$Records activity on the sessions of several acked activities, as touch_session does for one, without waiting: a row another transaction holds (a heartbeat renewing several sessions, another ack) is passed over, since waiting for it while holding other rows could deadlock; a session that misses one touch only looks idle from its previous activity.
Locks: FOR UPDATE SKIP LOCKED on the sessions rows, in session_id order.
Rows: sessions: last_activity_at = p_now_ms for each of p_session_ids still held (locked_until > p_now_ms) and not locked by another transaction; NULLs and unknown ids are ignored.
Errors: none.
Called by: ack_work_items_and_fetch; internal helper without SET: runs under its caller's search_path.
Notes: times are ms since the Unix epoch, passed in as p_now_ms.$c$;

CREATE OR REPLACE FUNCTION ack_work_items_and_fetch(
    p_lock_tokens TEXT[], p_now_ms BIGINT,
    p_completion_instances TEXT[], p_completion_kinds TEXT[], p_completions TEXT[],
    p_lock_timeout_ms BIGINT[], p_owner_ids TEXT[], p_session_lock_ms BIGINT[],
    p_tag_modes SMALLINT[], p_tag_lists TEXT[])
RETURNS TABLE (o_member INTEGER, o_acked BOOLEAN, o_work_item TEXT, o_lock_token TEXT,
               o_attempt_count INTEGER, o_taken_over BOOLEAN)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_i        INTEGER;
    v_session  TEXT;
    v_sessions TEXT[] := '{}'::TEXT[];
    v_acked    INTEGER[] := '{}'::INTEGER[];
    v_lease    TEXT;
    v_unheld   BIGINT := 0::BIGINT;
BEGIN
    -- A batch holds the rows of several members at once, so it never waits
    -- for another transaction's row (that one may be waiting for a row of
    -- this batch: a cancellation or delete taking several activities of one
    -- instance, a session heartbeat). A member whose row another
    -- transaction holds is left alone like one whose lease is gone, neither
    -- raised: the caller sends it alone, where waiting is safe.
    FOR v_i IN SELECT m.i FROM generate_subscripts(p_lock_tokens, 1) AS m(i)
                ORDER BY p_lock_tokens[m.i] LOOP
        DELETE FROM worker_queue q
         WHERE q.id = (SELECT w.id FROM worker_queue w
                        WHERE w.lock_token = p_lock_tokens[v_i]
                          AND w.locked_until > p_now_ms
                          FOR UPDATE SKIP LOCKED)
        RETURNING q.session_id INTO v_session;
        CONTINUE WHEN NOT FOUND;
        v_acked := v_acked || v_i;
        IF v_session IS NOT NULL THEN
            v_sessions := v_sessions || v_session;
        END IF;
        IF p_completions[v_i] IS NOT NULL THEN
            v_lease := live_lease_token(p_completion_instances[v_i], p_now_ms);
            INSERT INTO orchestrator_queue (instance_id, kind, work_item, visible_at, lock_token)
            VALUES (p_completion_instances[v_i], p_completion_kinds[v_i], p_completions[v_i],
                    p_now_ms, 'held:' || v_lease);
            IF v_lease IS NULL THEN
                v_unheld := v_unheld + 1;
            END IF;
        END IF;
    END LOOP;
    PERFORM touch_sessions(v_sessions, p_now_ms);
    -- One hint for the batch, not one per member.
    PERFORM notify_work('o', v_unheld);
    FOR v_i IN SELECT m.i FROM generate_subscripts(p_lock_tokens, 1) AS m(i) ORDER BY m.i LOOP
        IF v_i = ANY (v_acked) THEN
            RETURN QUERY
                SELECT v_i, TRUE, f.o_work_item, f.o_lock_token, f.o_attempt_count, f.o_taken_over
                  FROM fetch_work_item(p_now_ms, p_lock_timeout_ms[v_i], p_owner_ids[v_i],
                                       p_session_lock_ms[v_i], p_tag_modes[v_i],
                                       p_tag_lists[v_i]::TEXT[]) f;
        ELSE
            RETURN QUERY SELECT v_i, FALSE, NULL::TEXT, NULL::TEXT, NULL::INTEGER, NULL::BOOLEAN;
        END IF;
    END LOOP;
END;
$$;
COMMENT ON FUNCTION ack_work_items_and_fetch(text[], bigint, text[], text[], text[], bigint[], text[], bigint[], smallint[], text[]) IS $c$Implements Provider::ack_work_item with lease-ahead for several slots of one provider at once (member i = element i of every array): each member's ack_work_item, then each acked member's fetch_work_item, in one transaction.
Locks: never waits for a row another transaction holds: FOR UPDATE SKIP LOCKED on the worker_queue row of each token (in lock-token order, then deleted); the sessions rows of the acked rows through touch_sessions (SKIP LOCKED); FOR SHARE SKIP LOCKED on each completion instance's live lease row (live_lease_token); then those of fetch_work_item per acked member (SKIP LOCKED and try-locks).
Rows: per acked member, those of ack_work_item (its worker_queue row deleted, its completion enqueued, held when the instance's lease is live; its session's last_activity_at bumped unless another transaction holds that row) and of fetch_work_item (one worker_queue row leased, at most one sessions row claimed); a member not acked changes nothing.
Errors: none of its own: a member whose lease is gone (cancelled, deleted, expired) or whose row another transaction holds returns o_acked = FALSE, and the caller sends it alone (ack_work_item_and_fetch), which fails with DXT02 or waits for that row.
Called by: the Rust provider (worker acks of one provider that coalesce while another is on the wire, src/worker_queue/batched_ack.rs).
Notes: one row per member in member order (o_member, 1-based); an acked member's row is its fetch's (NULL item when nothing was eligible); p_tag_lists[i] is member i's tags as an array literal (arrays of arrays cannot be ragged); one 'o' hint with the number of completions not held; times are ms since the Unix epoch, passed in as p_now_ms.$c$;

-- fetch_work_item (current text and contract: schema/functions/): a session
-- claim no longer waits for the sessions row. An ack holds the row of the
-- session it touched until it commits, and an ack that leases ahead fetches
-- in the same transaction; two such acks claiming each other's sessions
-- deadlocked. Same signature: replaced in place.
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
    v_skipped BIGINT[] := '{}'::BIGINT[];
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
            -- An ack that touched this session holds its row until it
            -- commits, and may itself be about to claim a session this
            -- transaction touched: waiting here could close a cycle. A row
            -- held by another transaction is passed over like a held item.
            PERFORM 1 FROM sessions s WHERE s.session_id = v_session
               FOR UPDATE SKIP LOCKED;
            IF NOT FOUND AND EXISTS (SELECT 1 FROM sessions s
                                      WHERE s.session_id = v_session) THEN
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
COMMENT ON FUNCTION fetch_work_item(bigint, bigint, text, bigint, smallint, text[]) IS $c$Implements Provider::fetch_work_item: peek-locks the oldest eligible activity row (by visible_at, id) for p_lock_timeout_ms.
Locks: FOR UPDATE SKIP LOCKED on the candidate row and, for a session row, a transaction-scoped advisory try-lock (lock_key('session', id)) and FOR UPDATE SKIP LOCKED on its sessions row (a row another transaction holds, e.g. an ack's touch_session, passes the item over); never waits for another transaction; at most 16 candidates per call.
Rows: worker_queue: one row leased (new lock_token, locked_until = p_now_ms + p_lock_timeout_ms, attempt_count + 1); sessions: for a session row, upserted to p_owner_id with locked_until = p_now_ms + p_session_lock_ms when unowned, expired or already p_owner_id's (otherwise the row is skipped).
Errors: none.
Called by: the Rust provider (Provider::fetch_work_item, repeated by its long-poll loop), ack_work_item_and_fetch and ack_work_items_and_fetch.
Notes: eligible = visible, unlocked or lease expired, tag accepted by p_tag_mode (0 untagged only, 1 tag in p_tags, 2 untagged or in p_tags, other values any), session-less when p_owner_id is NULL, else session-less or of a session no other worker holds. o_taken_over: the lease taken had expired in another holder's hands. Nothing leased: one row with NULL item and o_wake_at = the earliest future visible time or lease expiry, or p_now_ms + 1 when eligible rows were held by another transaction; times are ms since the Unix epoch, passed in as p_now_ms.$c$;

-- commit_lease_asynchronously: a transaction that only leases need not wait
-- for its commit to reach the disk (see its contract).
CREATE OR REPLACE FUNCTION commit_lease_asynchronously() RETURNS void
LANGUAGE sql
AS $$
    SELECT set_config('synchronous_commit', 'off', true);
$$;
COMMENT ON FUNCTION commit_lease_asynchronously() IS $c$Lets the calling transaction commit without waiting for its WAL to be flushed (and replicated): synchronous_commit = off until the transaction ends.
Locks: none.
Rows: none.
Errors: none.
Called by: fetch_orchestration_item, after it leased an instance; never by a transaction that acknowledges work (an ack's Ok means durable). Internal helper without SET: a SET clause would end the setting with the function.
Notes: why a lease may: a lease lost in a crash only makes its work run again, which a crash does to work in flight anyway; and WAL is flushed in order, so the synchronous commit of any ack that used the lease (it checks the lease's token) also makes the lease durable. What a fetch returns is visible to every other transaction at once either way.$c$;

-- fetch_orchestration_item (current text and contract: schema/functions/):
-- a lease commits asynchronously (commit_lease_asynchronously): on a durable
-- server the fetch no longer waits for a WAL flush. Same signature: replaced
-- in place.
CREATE OR REPLACE FUNCTION fetch_orchestration_item(
    p_now_ms          BIGINT,
    p_lock_timeout_ms BIGINT,
    p_min_version     BIGINT[],
    p_max_version     BIGINT[]
) RETURNS TABLE (o_instance_id TEXT, o_lock_token TEXT, o_orchestration_name TEXT,
                 o_orchestration_version TEXT, o_execution_id BIGINT, o_attempt_count INTEGER,
                 o_messages TEXT[], o_history TEXT[], o_kv_keys TEXT[], o_kv_values TEXT[],
                 o_kv_updated_at BIGINT[], o_wake_at BIGINT, o_taken_over BOOLEAN)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_candidate TEXT;
    v_tried     TEXT[] := '{}'::TEXT[];
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
            PERFORM commit_lease_asynchronously();
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
            PERFORM commit_lease_asynchronously();
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
COMMENT ON FUNCTION fetch_orchestration_item(bigint, bigint, bigint[], bigint[]) IS $c$Implements Provider::fetch_orchestration_item: leases one instance with visible work for p_lock_timeout_ms and returns its messages, history and KV snapshot.
Locks: per candidate, a transaction-scoped advisory try-lock (lock_key('instance', id), kept to commit; never waits: a busy candidate is skipped), taken only after the version filter passed; then those of lease_instance (the lease row, the instance's queue rows).
Rows: candidates are expired leases (oldest expiry first), then untagged visible messages of instances without a live lease (oldest visible first, through orchestrator_queue_ready_idx); lease_instance upserts instance_locks, tags the messages (attempt_count + 1) and may delete the orphaned QueueMessages of a never-started instance.
Errors: none.
Called by: the Rust provider (Provider::fetch_orchestration_item, repeated by its long-poll loop).
Notes: a lease commits without waiting for its WAL flush (commit_lease_asynchronously); p_min_version/p_max_version are {major,minor,patch} (NULL: no filter); a candidate pinned outside the range is skipped without being locked (instance_compatible). Leased: the row of lease_instance (o_taken_over: an expired lease was taken over). Nothing leased: one row with NULL o_instance_id and o_wake_at = the earliest future visible time or live-lease expiry, or p_now_ms + 1 when another transaction held a candidate's advisory lock (NULL: nothing pending); times are ms since the Unix epoch, passed in as p_now_ms.$c$;

-- The helpers ack_work_items_and_fetch calls: their contracts name it.
COMMENT ON FUNCTION live_lease_token(text, bigint) IS $c$The token of p_instance_id's live lease, or NULL when it has none or its lease row is being changed right now.
Locks: FOR SHARE SKIP LOCKED on the live lease row, kept to commit (never waits): that lease's ack or abandon then waits for the caller's commit and sees what it stored.
Rows: reads instance_locks.
Errors: none.
Called by: enqueue_orchestrator_item, ack_work_item and ack_work_items_and_fetch (to store a message held for the lease); internal helper without SET: runs under its caller's search_path.
Notes: a NULL result is always safe: the caller then stores the message untagged and notifies; times are ms since the Unix epoch, passed in as p_now_ms.$c$;
COMMENT ON FUNCTION notify_work(text, bigint) IS $c$Wake-up hint that p_count items became visible: NOTIFY on notify_channel() with payload p_queue || p_count (p_queue 'o' orchestrator, 'w' worker); nothing when p_count is 0, negative or NULL.
Locks: none.
Rows: none.
Errors: none.
Called by: enqueue_orchestrator_item, ack_orchestration_item, abandon_orchestration_item, enqueue_worker_item, ack_work_item, ack_work_items_and_fetch and abandon_work_item; internal helper without SET: runs under its caller's search_path.
Notes: delivered at commit; a hint only: fetchers always re-check the tables.$c$;
