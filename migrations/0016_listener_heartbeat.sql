-- 0016_listener_heartbeat: a notification a provider sends itself to prove
-- that its LISTEN connection still receives.
--
-- A LISTEN connection that a network silently dropped (a partition, a NAT
-- or load balancer that forgot it) receives nothing and reports nothing:
-- wake-up hints stop and every waiting fetch falls back to its poll. When
-- its listener has heard nothing for a while, the provider calls this
-- through its call pool; a listener that does not hear the heartbeat soon
-- after is replaced.

CREATE OR REPLACE FUNCTION listener_heartbeat() RETURNS void
LANGUAGE sql VOLATILE
BEGIN ATOMIC
    SELECT pg_notify(notify_channel(), 'h');
END;
COMMENT ON FUNCTION listener_heartbeat() IS $c$Heartbeat of this schema's wake-up listeners: NOTIFY on notify_channel() with payload 'h', which every listening provider of the schema receives and ignores except as proof that its listener is alive.
Locks: none.
Rows: none.
Errors: none.
Called by: the Rust provider, when its LISTEN connection has heard nothing for a quarter of the fallback poll interval.
Notes: delivered at commit of the calling statement; listeners of other providers on the schema hear it too (a wake-up costs them nothing: the payload names no queue). SQL-standard body, no SET.$c$;
