-- 0008_worker_prefetch: the ack of an activity can lease the next one in the
-- same round trip.
--
-- The runtime's worker slot always fetches again right after it acks, so the
-- provider asks the ack to lease the slot's next item at once; the fetch that
-- follows is then answered from the provider's memory without a round trip
-- (over a 20 ms network that is a third of an activity's database time).

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
) RETURNS TABLE (o_work_item TEXT, o_lock_token TEXT, o_attempt_count INTEGER)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM ack_work_item(p_lock_token, p_now_ms, p_completion_instance,
                          p_completion_kind, p_completion);
    RETURN QUERY
        SELECT f.o_work_item, f.o_lock_token, f.o_attempt_count
          FROM fetch_work_item(p_now_ms, p_lock_timeout_ms, p_owner_id,
                               p_session_lock_ms, p_tag_mode, p_tags) f;
END;
$$;
