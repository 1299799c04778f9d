-- 0012_function_contracts: every stored function's contract as its COMMENT.
--
-- Changes no behaviour: no table, index or function body changes. Until now
-- each function's contract (locks taken, rows touched, errors raised, who
-- calls it) lived in header comments of the migration files, and a later file
-- that replaced a function often only pointed back to an older header. This
-- migration records the current contract of every function as its COMMENT,
-- so `\df+` and the generated `schema/` folder (one file per function, made
-- by `scripts/generate_schema`) show the current contract next to the
-- current text.
--
-- From now on a migration that creates or replaces a function also sets its
-- COMMENT (COMMENT ON FUNCTION name(argument types) IS ...) in the same file.
--
-- Statements are in alphabetical order of function name. Identity lists name
-- argument types only (IN arguments; RETURNS TABLE columns are not part of
-- them); names are unqualified (the runner sets search_path to the schema).

COMMENT ON FUNCTION abandon_orchestration_item(text, bigint, bigint, boolean) IS $c$Implements Provider::abandon_orchestration_item: releases the orchestration lease p_lock_token without committing a turn.
Locks: deletes the lease row, so it waits for enqueues holding FOR SHARE on it (live_lease_token) to commit and then releases their messages too; the lease's expiry is not checked.
Rows: instance_locks: the lease row deleted. orchestrator_queue: the messages this fetch tagged are untagged, visible at p_now_ms + max(p_delay_ms, 0) when p_delay_ms is not NULL (else visible_at unchanged), attempt_count - 1 (never below 0) when p_ignore_attempt; messages held for the lease (lock_token 'held:' || token) are untagged and otherwise unchanged.
Errors: DXT01 when no lease row holds p_lock_token (nothing changed).
Called by: the Rust provider (Provider::abandon_orchestration_item).
Notes: notifies 'o' when the instance has messages visible now and, when p_delay_ms > 0, announces p_now_ms + p_delay_ms (hints delivered at commit); times are ms since the Unix epoch, passed in as p_now_ms.$c$;

COMMENT ON FUNCTION abandon_work_item(text, bigint, bigint, boolean) IS $c$Implements Provider::abandon_work_item: unlocks one leased activity row so that it can be fetched again.
Locks: the worker_queue row (UPDATE: waits for a fetch holding it FOR UPDATE); no advisory locks; the lease's expiry is not checked.
Rows: worker_queue: the row of p_lock_token gets lock_token and locked_until NULL; visible_at = least(visible_at, p_now_ms) when p_delay_ms is NULL (it keeps its place in the queue), else p_now_ms + max(p_delay_ms, 0); attempt_count - 1 (never below 0) when p_ignore_attempt. sessions untouched.
Errors: DXT01 when no row holds p_lock_token (acked, cancelled or unknown; nothing changed).
Called by: the Rust provider (Provider::abandon_work_item; the worker prefetch releasing an item leased ahead, with p_delay_ms NULL and p_ignore_attempt true).
Notes: notifies 'w' at once (p_delay_ms NULL or <= 0) or announces p_now_ms + p_delay_ms (delivered at commit); times are ms since the Unix epoch, passed in as p_now_ms.$c$;

COMMENT ON FUNCTION ack_orchestration_item(text, bigint, bigint, bigint[], text[], text[], text[], bigint[], bigint[], text[], text[], text[], text[], text[], bigint[], text, text, text, text, text, bigint[], smallint, text, smallint[], text[], text[], bigint[], text[], bigint[], bigint[]) IS $c$Implements Provider::ack_orchestration_item: commits one orchestration turn of the lease p_lock_token atomically (all or nothing).
Locks: the lease row FOR UPDATE first (waits for enqueues holding FOR SHARE on it, so the messages they held for the lease are seen), then the instance row (the order delete_instances_atomic also uses); worker_queue rows of cancelled activities (DELETE).
Rows: instances upserted (name, version; created with parent and created_at) when p_orch_name and p_orch_version are both given, current_execution_id raised to p_execution_id, updated_at set, custom status set (action 1) or cleared (action 2) with its version + 1; executions row inserted if missing, pinned version stored, status/output/completed_at set when p_status is given; history delta inserted; kv_delta changed through apply_kv_operations and folded into kv_store by merge_kv_delta when p_status is Completed, Failed or ContinuedAsNew.
Rows (queues): worker items inserted visible at p_now_ms, then cancelled activities deleted (an activity scheduled and cancelled in one turn is gone); orchestrator items inserted untagged at their visible times; the messages this fetch tagged and the lease row deleted; messages held for the lease ('held:' || token) released (lock_token NULL).
Errors: DXT01 unknown token, DXT02 lease expired (both before any change); DXI01 unknown KV op code (from apply_kv_operations); a duplicate history event_id fails with unique_violation 23505; any error rolls the whole turn back.
Called by: the Rust provider (Provider::ack_orchestration_item).
Notes: notifies 'w' with the number of worker items, 'o' with the orchestrator items visible now plus 1 when the instance has messages waiting, and announces the earliest future orchestrator item (a timer); relies on READ COMMITTED (pinned by the provider); times are ms since the Unix epoch, passed in as p_now_ms.$c$;

COMMENT ON FUNCTION ack_work_item(text, bigint, text, text, text) IS $c$Implements Provider::ack_work_item: deletes a leased activity row and, when p_completion is given, enqueues its completion for the orchestrator, atomically.
Locks: the worker_queue row (DELETE); FOR SHARE SKIP LOCKED on the completion instance's live lease row (live_lease_token, never waits), kept to commit so that lease's ack or abandon waits for this commit and then releases the held completion.
Rows: worker_queue: the row of p_lock_token deleted if its lease is live; sessions: last_activity_at of its session bumped while the session is held (touch_session); orchestrator_queue: one row (p_completion_instance, p_completion_kind, p_completion) visible at p_now_ms, stored held (lock_token 'held:' || lease token) when that instance's lease is live, else untagged.
Errors: DXT02 when no live lease holds p_lock_token (cancelled, deleted or expired; nothing changed).
Called by: the Rust provider (Provider::ack_work_item when nothing is leased ahead) and ack_work_item_and_fetch.
Notes: p_completion NULL only deletes the row; notifies 'o' only when the completion is not held (the lease holder's ack or abandon notifies); relies on READ COMMITTED; times are ms since the Unix epoch, passed in as p_now_ms.$c$;

COMMENT ON FUNCTION ack_work_item_and_fetch(text, bigint, text, text, text, bigint, text, bigint, smallint, text[]) IS $c$Implements Provider::ack_work_item with lease-ahead: ack_work_item, then fetch_work_item with the arguments of the slot's previous fetch, in one transaction.
Locks: those of ack_work_item, then those of fetch_work_item (FOR UPDATE SKIP LOCKED on worker rows, an advisory try-lock per session; it never waits for another fetch).
Rows: those of ack_work_item plus those of fetch_work_item (one worker_queue row leased: new lock_token, locked_until = p_now_ms + p_lock_timeout_ms, attempt_count + 1; at most one sessions row claimed), in the same FIFO order the next fetch would use.
Errors: DXT02 from ack_work_item when the acked lease is gone (nothing changed, nothing leased).
Called by: the Rust provider (Provider::ack_work_item when the worker prefetch leases the slot's next item, held in memory for the fetch that follows).
Notes: returns the leased row (o_work_item, o_lock_token, o_attempt_count, o_taken_over), or one row of NULLs when nothing is eligible (fetch_work_item's wake time is not returned); times are ms since the Unix epoch, passed in as p_now_ms.$c$;

COMMENT ON FUNCTION append_history(text, bigint, bigint[], text[]) IS $c$Implements Provider::append_with_execution: appends events to one execution's history exactly as given.
Locks: none beyond the inserted rows.
Rows: history: one row per (p_event_ids[i], p_event_data[i]) inserted for (p_instance_id, p_execution_id); nothing is ever overwritten; instances and executions are not touched.
Errors: none raised; a duplicate (instance, execution, event_id) fails the whole call with unique_violation 23505, an event_id <= 0 with check_violation 23514.
Called by: the Rust provider (Provider::append_with_execution).$c$;

COMMENT ON FUNCTION apply_kv_operations(text, bigint, smallint[], text[], text[], bigint[]) IS $c$Applies one turn's KV events to kv_delta in history order: op 1 sets a key, op 2 clears one key, op 3 clears every key.
Locks: none beyond the rows it writes.
Rows: kv_delta: op 1 upserts (p_keys[i], p_values[i], p_updated_at[i]); op 2 upserts a tombstone (NULL value) at p_now_ms; op 3 tombstones every delta key of the instance and inserts tombstones for its kv_store keys, at p_now_ms. kv_store is only read.
Errors: DXI01 for an op code other than 1, 2 or 3 (the whole ack rolls back).
Called by: ack_orchestration_item only (internal helper; it carries its own SET search_path).
Notes: tombstones make a clear also hide values already merged into kv_store, until merge_kv_delta folds them in; times are ms since the Unix epoch.$c$;

COMMENT ON FUNCTION bulk_delete_roots(text[], bigint, bigint) IS $c$Selects the root instances a bulk delete takes: terminal (Completed, Failed, ContinuedAsNew) roots matching every given filter, oldest completion first.
Locks: none (reads only).
Rows: reads instances and their current execution; p_ids NULL: no id filter; p_completed_before NULL: no time filter (else completed_at < p_completed_before); at most p_limit rows, ordered by completed_at, instance_id. Running instances and sub-orchestrations are never selected.
Errors: none.
Called by: the Rust provider (PostgresProvider::bulk_delete_candidates: the CLI purge and its dry run) and delete_instance_bulk, so a dry run and the real purge select the same roots.$c$;

COMMENT ON FUNCTION cleanup_orphaned_sessions(bigint) IS $c$Implements Provider::cleanup_orphaned_sessions: deletes sessions whose lease has expired and that no worker_queue row references; returns how many.
Locks: the deleted sessions rows.
Rows: sessions: rows with locked_until < p_now_ms and no worker_queue row of their session_id deleted; worker_queue only read.
Errors: none.
Called by: the Rust provider (Provider::cleanup_orphaned_sessions; its idle-timeout argument is not passed).
Notes: times are ms since the Unix epoch, passed in as p_now_ms.$c$;

COMMENT ON FUNCTION delete_instance(text, boolean) IS $c$Implements ProviderAdmin::delete_instance: deletes a root instance with its whole sub-orchestration tree in one delete_instances_atomic call.
Locks: those of delete_instances_atomic (lease rows, then instance rows, FOR UPDATE).
Rows: those of delete_instances_atomic for p_instance_id and every descendant (get_instance_tree); returns its counts.
Errors: DXN01 for an unknown instance (get_parent_id); DXP01 when it is a sub-orchestration (delete its root instead), or from delete_instances_atomic (an instance still Running without p_force, or a child not in the tree that was read).
Called by: the Rust provider (ProviderAdmin::delete_instance).$c$;

COMMENT ON FUNCTION delete_instance_bulk(text[], bigint, bigint) IS $c$Implements ProviderAdmin::delete_instance_bulk: deletes the roots bulk_delete_roots selects, each with its whole tree, in one delete_instances_atomic call with force.
Locks: those of delete_instances_atomic (lease rows, then instance rows, FOR UPDATE).
Rows: those of delete_instances_atomic; the roots are terminal (Completed, Failed, ContinuedAsNew), match p_ids and p_completed_before (NULL: no filter), at most p_limit of them; their descendants are deleted whatever their status.
Errors: none of its own; DXP01 from delete_instances_atomic if a child appeared after the trees were read.
Called by: the Rust provider (ProviderAdmin::delete_instance_bulk; the CLI purge).$c$;

COMMENT ON FUNCTION delete_instances_atomic(text[], boolean) IS $c$Implements ProviderAdmin::delete_instances_atomic: removes the given instances and everything they own in one transaction and returns the counts removed.
Locks: instance_locks rows of p_ids, then instances rows, FOR UPDATE in instance_id order (the order acks use: a racing ack finishes first or finds its lease gone, never a deadlock); deleting the lease rows waits for enqueues holding FOR SHARE on them.
Rows: deletes the history, executions, instance_locks (before the queues, so a message held for a deleted lease is seen and deleted), orchestrator_queue, worker_queue, kv_store, kv_delta and instances rows of p_ids; sessions untouched.
Errors: DXP01 when, without p_force, an instance's current execution is Running; DXP01 when an instance has a child not in p_ids (the tree changed since it was read; checked even with p_force). Nothing is deleted then.
Called by: the Rust provider (ProviderAdmin::delete_instances_atomic), delete_instance and delete_instance_bulk.
Notes: o_instances_deleted is the number of distinct ids in p_ids (unknown ids included); o_queue_messages_deleted sums both queues.$c$;

COMMENT ON FUNCTION enqueue_orchestrator_item(text, text, text, bigint, bigint) IS $c$Implements Provider::enqueue_for_orchestrator: inserts one message for p_instance_id, visible at p_now_ms + max(p_delay_ms, 0).
Locks: for a message visible at once, FOR SHARE SKIP LOCKED on the instance's live lease row (live_lease_token), kept to commit; never waits.
Rows: orchestrator_queue: one row inserted, stored held (lock_token 'held:' || lease token) when it is visible at once and the instance's lease is live, otherwise untagged. Never creates the instance.
Errors: none.
Called by: the Rust provider (Provider::enqueue_for_orchestrator).
Notes: notifies 'o' when the message is visible at once and not held (the lease's ack or abandon releases it and notifies); a delayed message is announced for its visible time; relies on READ COMMITTED; times are ms since the Unix epoch, passed in as p_now_ms.$c$;

COMMENT ON FUNCTION enqueue_worker_item(text, bigint, text, bigint, bigint, text, text) IS $c$Implements Provider::enqueue_for_worker: inserts one unlocked activity row, visible at p_now_ms.
Locks: none.
Rows: worker_queue: one row inserted, with the identity columns (instance_id, execution_id, activity_id, session_id, tag) taken from the arguments.
Errors: none.
Called by: the Rust provider (Provider::enqueue_for_worker).
Notes: notifies 'w' (delivered at commit); times are ms since the Unix epoch, passed in as p_now_ms.$c$;

COMMENT ON FUNCTION fetch_orchestration_item(bigint, bigint, bigint[], bigint[]) IS $c$Implements Provider::fetch_orchestration_item: leases one instance with visible work for p_lock_timeout_ms and returns its messages, history and KV snapshot.
Locks: per candidate, a transaction-scoped advisory try-lock (lock_key('instance', id), kept to commit; never waits: a busy candidate is skipped), taken only after the version filter passed; then those of lease_instance (the lease row, the instance's queue rows).
Rows: candidates are expired leases (oldest expiry first), then untagged visible messages of instances without a live lease (oldest visible first, through orchestrator_queue_ready_idx); lease_instance upserts instance_locks, tags the messages (attempt_count + 1) and may delete the orphaned QueueMessages of a never-started instance.
Errors: none.
Called by: the Rust provider (Provider::fetch_orchestration_item, repeated by its long-poll loop).
Notes: p_min_version/p_max_version are {major,minor,patch} (NULL: no filter); a candidate pinned outside the range is skipped without being locked (instance_compatible). Leased: the row of lease_instance (o_taken_over: an expired lease was taken over). Nothing leased: one row with NULL o_instance_id and o_wake_at = the earliest future visible time or live-lease expiry, or p_now_ms + 1 when another transaction held a candidate's advisory lock (NULL: nothing pending); times are ms since the Unix epoch, passed in as p_now_ms.$c$;

COMMENT ON FUNCTION fetch_work_item(bigint, bigint, text, bigint, smallint, text[]) IS $c$Implements Provider::fetch_work_item: peek-locks the oldest eligible activity row (by visible_at, id) for p_lock_timeout_ms.
Locks: FOR UPDATE SKIP LOCKED on the candidate row and, for a session row, a transaction-scoped advisory try-lock (lock_key('session', id)); never waits for another fetch; at most 16 candidates per call.
Rows: worker_queue: one row leased (new lock_token, locked_until = p_now_ms + p_lock_timeout_ms, attempt_count + 1); sessions: for a session row, upserted to p_owner_id with locked_until = p_now_ms + p_session_lock_ms when unowned, expired or already p_owner_id's (otherwise the row is skipped).
Errors: none.
Called by: the Rust provider (Provider::fetch_work_item, repeated by its long-poll loop) and ack_work_item_and_fetch.
Notes: eligible = visible, unlocked or lease expired, tag accepted by p_tag_mode (0 untagged only, 1 tag in p_tags, 2 untagged or in p_tags, other values any), session-less when p_owner_id is NULL, else session-less or of a session no other worker holds. o_taken_over: the lease taken had expired in another holder's hands. Nothing leased: one row with NULL item and o_wake_at = the earliest future visible time or lease expiry, or p_now_ms + 1 when eligible rows were held by another transaction; times are ms since the Unix epoch, passed in as p_now_ms.$c$;

COMMENT ON FUNCTION get_custom_status(text, bigint) IS $c$Implements Provider::get_custom_status: the instance's custom status and its version, only when the version is newer than p_last_seen_version.
Locks: none (reads only).
Rows: reads instances; no row for an unknown instance or when nothing is newer; a NULL status means cleared.
Errors: none.
Called by: the Rust provider (Provider::get_custom_status, every client status poll).
Notes: SQL-standard body (names bound at creation, no SET), inlined into the calling statement; it depends on instances.custom_status and custom_status_version: a migration that alters or drops them must drop and recreate this function.$c$;

COMMENT ON FUNCTION get_execution_info(text, bigint) IS $c$Implements ProviderAdmin::get_execution_info: one execution's status, output, start and completion times and its history event count.
Locks: none (reads only).
Rows: reads executions and history.
Errors: DXN01 when the execution (or the instance) does not exist.
Called by: the Rust provider (ProviderAdmin::get_execution_info).$c$;

COMMENT ON FUNCTION get_instance_info(text) IS $c$Implements ProviderAdmin::get_instance_info: the instance row joined with its current execution.
Locks: none (reads only).
Rows: reads instances and executions; orchestration_version is 'unknown' when not stored, status 'Running' when the current execution has no row.
Errors: DXN01 for an unknown instance.
Called by: the Rust provider (ProviderAdmin::get_instance_info).$c$;

COMMENT ON FUNCTION get_instance_stats(text) IS $c$Implements Provider::get_instance_stats: sizes of one instance's current execution and of its merged KV view.
Locks: none (reads only).
Rows: reads instances, history (event count and total octet length of the current execution) and, through get_kv_values, kv_store and kv_delta (live key count, total value bytes); no row for an unknown instance.
Errors: none raised.
Called by: the Rust provider (Provider::get_instance_stats).
Notes: o_queue_pending_count is the length of the carry_forward_events array of the current execution's event 1 (OrchestrationStarted), 0 when absent; \u0000 escapes are removed before the jsonb cast, so a NUL in that event does not fail the call.$c$;

COMMENT ON FUNCTION get_instance_tree(text) IS $c$Implements ProviderAdmin::get_instance_tree: p_instance_id and all its descendants, root first, then by depth and instance_id.
Locks: none (reads only).
Rows: reads instances (parent_instance_id), recursively.
Errors: none; an unknown p_instance_id gives just itself.
Called by: the Rust provider (ProviderAdmin::get_instance_tree), delete_instance and delete_instance_bulk.$c$;

COMMENT ON FUNCTION get_kv_values(text, text) IS $c$Implements Provider::get_kv_value (p_key given) and Provider::get_kv_all_values (p_key NULL): the merged KV view of one instance.
Locks: none (reads only).
Rows: reads kv_store and kv_delta; a kv_delta entry (a change of the current execution) overrides kv_store, and a tombstone (NULL value) hides the key.
Errors: none.
Called by: the Rust provider (Provider::get_kv_value, Provider::get_kv_all_values) and get_instance_stats.$c$;

COMMENT ON FUNCTION get_parent_id(text) IS $c$Implements ProviderAdmin::get_parent_id: the parent of an instance, NULL for a root.
Locks: none (reads only).
Rows: reads instances.
Errors: DXN01 for an unknown instance.
Called by: the Rust provider (ProviderAdmin::get_parent_id) and delete_instance.$c$;

COMMENT ON FUNCTION get_queue_depths(bigint) IS $c$Implements ProviderAdmin::get_queue_depths: per queue, the number of messages not held by a live fetch.
Locks: none (reads only).
Rows: reads orchestrator_queue (rows untagged or whose tag is not a live lease's token: messages held for a lease, tagged 'held:', are counted), instance_locks and worker_queue (rows unlocked or with an expired lease); delayed rows are counted too.
Errors: none.
Called by: the Rust provider (ProviderAdmin::get_queue_depths).
Notes: times are ms since the Unix epoch, passed in as p_now_ms.$c$;

COMMENT ON FUNCTION get_system_metrics() IS $c$Implements ProviderAdmin::get_system_metrics: instance counts by current status (running, completed, failed) and totals of instances, executions and history events.
Locks: none (reads only).
Rows: reads instances, executions and history; an instance whose current execution has no row counts as Running.
Errors: none.
Called by: the Rust provider (ProviderAdmin::get_system_metrics).$c$;

COMMENT ON FUNCTION instance_compatible(text, bigint[], bigint[]) IS $c$Whether a fetch with the version filter [p_min_version, p_max_version] may take the candidate instance.
Locks: none (reads only).
Rows: reads instances and executions; true when p_min_version is NULL (no filter), the instance has no row, or its current execution is unpinned or pinned (major, minor, patch) within the range, bounds included.
Errors: none.
Called by: fetch_orchestration_item only, before it takes the candidate's advisory lock; internal helper without SET: runs under its caller's search_path.$c$;

COMMENT ON FUNCTION latest_execution_id(text) IS $c$Implements ProviderAdmin::latest_execution_id: the highest execution id of an instance, 1 when it has none.
Locks: none (reads only).
Rows: reads executions.
Errors: none; an unknown instance gives 1.
Called by: the Rust provider (ProviderAdmin::latest_execution_id).$c$;

COMMENT ON FUNCTION lease_instance(text, bigint, bigint, bigint[], bigint[]) IS $c$One lease attempt on one candidate instance for fetch_orchestration_item: returns the fetch's result row, or no row when the candidate was not leased.
Locks: the lease row (upsert) and the instance's queue rows (update); the caller already holds the instance's advisory lock and has checked the version filter.
Rows: no live lease may exist (re-checked); an instance with no row, no history and no visible StartOrchestration/ContinueAsNew is not leased, and its visible messages are deleted when they are all QueueMessages; otherwise instance_locks upserted (new token, locked_until = p_now_ms + p_lock_timeout_ms, taking over an expired lease) and every visible message, plus any tagged by or held for the expired lease, tagged with the new token, attempt_count + 1; when none was tagged the new lease is deleted again.
Errors: none.
Called by: fetch_orchestration_item only (internal helper; it carries its own SET search_path).
Notes: p_min_version and p_max_version are not used (kept in the signature). Result: messages in enqueue order, the execution's history by event_id, the kv_store snapshot, the highest attempt_count, o_taken_over when an expired lease was replaced, o_wake_at NULL. Per-instance queue probes count rows rather than ask EXISTS, so no generic plan walks the whole queue; times are ms since the Unix epoch, passed in as p_now_ms.$c$;

COMMENT ON FUNCTION list_children(text) IS $c$Implements ProviderAdmin::list_children: the direct sub-orchestrations of an instance, by created_at, instance_id.
Locks: none (reads only).
Rows: reads instances.
Errors: none; an unknown instance gives no rows.
Called by: the Rust provider (ProviderAdmin::list_children).$c$;

COMMENT ON FUNCTION list_executions(text) IS $c$Implements ProviderAdmin::list_executions: the execution ids of one instance, ascending.
Locks: none (reads only).
Rows: reads executions.
Errors: none; an unknown instance gives no rows.
Called by: the Rust provider (ProviderAdmin::list_executions).$c$;

COMMENT ON FUNCTION list_instances(text) IS $c$Implements ProviderAdmin::list_instances (p_status NULL) and ProviderAdmin::list_instances_by_status: instance ids, newest first (created_at DESC, instance_id).
Locks: none (reads only).
Rows: reads instances and their current execution; p_status is compared with the current execution's status ('Running' when it has no row).
Errors: none.
Called by: the Rust provider (ProviderAdmin::list_instances, ProviderAdmin::list_instances_by_status).$c$;

COMMENT ON FUNCTION live_lease_token(text, bigint) IS $c$The token of p_instance_id's live lease, or NULL when it has none or its lease row is being changed right now.
Locks: FOR SHARE SKIP LOCKED on the live lease row, kept to commit (never waits): that lease's ack or abandon then waits for the caller's commit and sees what it stored.
Rows: reads instance_locks.
Errors: none.
Called by: enqueue_orchestrator_item and ack_work_item (to store a message held for the lease); internal helper without SET: runs under its caller's search_path.
Notes: a NULL result is always safe: the caller then stores the message untagged and notifies; times are ms since the Unix epoch, passed in as p_now_ms.$c$;

COMMENT ON FUNCTION lock_key(text, text) IS $c$The advisory-lock key of one object of this schema: hashtextextended('duroxide-pg/<schema>/' || p_kind || '/' || p_id, 0).
Locks: none (computes a key; IMMUTABLE).
Rows: none.
Errors: none.
Called by: fetch_orchestration_item (kind 'instance') and fetch_work_item (kind 'session').
Notes: the schema name is a constant written in when the function was created (not read from current_schema()), so tenants sharing a database never contend; the key equals what earlier releases computed, so processes of the previous version agree. SQL-standard body, no SET, inlined.$c$;

COMMENT ON FUNCTION merge_kv_delta(text) IS $c$Folds an instance's kv_delta into kv_store at the end of an execution and empties the delta.
Locks: none beyond the rows it writes.
Rows: kv_store: non-NULL delta values upserted, keys with a tombstone (NULL value) deleted; kv_delta: every row of the instance deleted.
Errors: none.
Called by: ack_orchestration_item only, when the turn's status is Completed, Failed or ContinuedAsNew (internal helper; it carries its own SET search_path).$c$;

COMMENT ON FUNCTION notify_channel() IS $c$The LISTEN/NOTIFY channel of this schema: 'duroxide_pg_' || the first 24 hex digits of md5(schema name).
Locks: none (an IMMUTABLE constant).
Rows: none.
Errors: none.
Called by: the Rust provider at construction (the channel its listener LISTENs on), notify_work and notify_later.
Notes: the schema name is a constant written in when the function was created (not read from current_schema()); the hash keeps the channel within the 63-byte identifier limit; the value equals what earlier releases computed. SQL-standard body, no SET.$c$;

COMMENT ON FUNCTION notify_later(text, bigint) IS $c$Wake-up hint for an item that becomes visible later: NOTIFY on notify_channel() with payload p_queue || '@' || p_visible_at (p_queue 'o' orchestrator, 'w' worker); nothing when p_visible_at is NULL.
Locks: none.
Rows: none.
Errors: none.
Called by: enqueue_orchestrator_item, ack_orchestration_item, abandon_orchestration_item and abandon_work_item; internal helper without SET: runs under its caller's search_path.
Notes: delivered at commit; a hint only (waiting fetchers also wake at that time and always re-check the tables); p_visible_at is ms since the Unix epoch.$c$;

COMMENT ON FUNCTION notify_work(text, bigint) IS $c$Wake-up hint that p_count items became visible: NOTIFY on notify_channel() with payload p_queue || p_count (p_queue 'o' orchestrator, 'w' worker); nothing when p_count is 0, negative or NULL.
Locks: none.
Rows: none.
Errors: none.
Called by: enqueue_orchestrator_item, ack_orchestration_item, abandon_orchestration_item, enqueue_worker_item, ack_work_item and abandon_work_item; internal helper without SET: runs under its caller's search_path.
Notes: delivered at commit; a hint only: fetchers always re-check the tables.$c$;

COMMENT ON FUNCTION prune_executions(text, bigint, bigint) IS $c$Implements ProviderAdmin::prune_executions: deletes old executions of one instance with their history; returns (1, executions deleted, events deleted).
Locks: the instance row FOR UPDATE.
Rows: executions and their history rows deleted when not the current execution, not Running, completed before p_completed_before (when given) and not among the p_keep_last highest execution ids (when given; 0 and 1 both keep only the current one); KV and queues untouched.
Errors: DXN01 for an unknown instance.
Called by: the Rust provider (ProviderAdmin::prune_executions) and prune_executions_bulk.
Notes: p_completed_before is ms since the Unix epoch.$c$;

COMMENT ON FUNCTION prune_executions_bulk(text[], bigint, bigint, bigint, bigint) IS $c$Implements ProviderAdmin::prune_executions_bulk: prune_executions over every instance matching the filters, results summed.
Locks: each target instance row FOR UPDATE (through prune_executions).
Rows: targets are instances in p_ids (NULL: all) whose current execution completed before p_filter_completed_before (NULL: no filter), at most p_limit by instance_id, Running ones included (only their old executions go); then the rows of prune_executions with p_keep_last and p_completed_before.
Errors: none of its own; DXN01 from prune_executions if a target instance is deleted before it is locked.
Called by: the Rust provider (ProviderAdmin::prune_executions_bulk).
Notes: times are ms since the Unix epoch.$c$;

COMMENT ON FUNCTION queue_overview(bigint) IS $c$Operator view (PostgresProvider::queue_overview): one row per queue, 'orchestrator' (messages other than TimerFired), 'timer' (TimerFired) and 'worker', with ready, delayed and locked counts and o_oldest_ready_ms.
Locks: none (reads only).
Rows: reads orchestrator_queue, instance_locks and worker_queue; a message is locked while a live lease keeps fetches from it (its instance's lease for the orchestrator and timer queues, its own lease for the worker queue), otherwise delayed while visible_at > p_now_ms and ready after; o_oldest_ready_ms is how long the oldest ready message has been visible (NULL: none ready).
Errors: none.
Called by: the Rust provider (PostgresProvider::queue_overview, used by the duroxide-pg CLI's inspect command).
Notes: times are ms since the Unix epoch, passed in as p_now_ms.$c$;

COMMENT ON FUNCTION read_history(text, bigint) IS $c$Implements Provider::read / read_with_execution and ProviderAdmin::read_history / read_history_with_execution_id: the events of one execution ordered by event_id, as stored JSON text.
Locks: none (reads only).
Rows: reads history and executions; p_execution_id NULL means the latest execution (highest executions row, 1 when there is none); an unknown instance gives no rows.
Errors: none.
Called by: the Rust provider (those four operations).
Notes: SQL-standard body (names bound at creation, no SET), inlined into the calling statement; it depends on the history and executions columns it uses: a migration that alters or drops them must drop and recreate this function.$c$;

COMMENT ON FUNCTION renew_orchestration_item_lock(text, bigint, bigint) IS $c$Implements Provider::renew_orchestration_item_lock: extends a live orchestration lease to p_now_ms + p_extend_ms.
Locks: the lease row (UPDATE: waits for enqueues holding FOR SHARE on it).
Rows: instance_locks: locked_until of the row of p_lock_token, only while its lease is live.
Errors: DXT02 when the token is unknown, its lease has expired, or it was already acked or abandoned (nothing changed).
Called by: the Rust provider (Provider::renew_orchestration_item_lock).
Notes: times are ms since the Unix epoch, passed in as p_now_ms.$c$;

COMMENT ON FUNCTION renew_session_lock(text[], bigint, bigint, bigint) IS $c$Implements Provider::renew_session_lock: one heartbeat for every held session owned by p_owner_ids that was active within p_idle_timeout_ms; returns how many were extended.
Locks: the updated sessions rows.
Rows: sessions: locked_until = p_now_ms + p_extend_ms where worker_id is in p_owner_ids, locked_until > p_now_ms and last_activity_at + p_idle_timeout_ms > p_now_ms.
Errors: none.
Called by: the Rust provider (Provider::renew_session_lock).
Notes: times are ms since the Unix epoch, passed in as p_now_ms.$c$;

COMMENT ON FUNCTION renew_work_item_lock(text, bigint, bigint) IS $c$Implements Provider::renew_work_item_lock: extends a live activity lease to p_now_ms + p_extend_ms and records activity on its session.
Locks: the worker_queue row (UPDATE).
Rows: worker_queue: locked_until of the row of p_lock_token, only while its lease is live; sessions: last_activity_at bumped while the session is held (touch_session).
Errors: DXT02 when the row is gone (acked, cancelled, deleted) or its lease expired; the runtime reads that as "this activity was cancelled".
Called by: the Rust provider (Provider::renew_work_item_lock).
Notes: times are ms since the Unix epoch, passed in as p_now_ms.$c$;

COMMENT ON FUNCTION touch_session(text, bigint) IS $c$Records activity on a session that is still held, so renew_session_lock does not treat an active session as idle.
Locks: the updated sessions row.
Rows: sessions: last_activity_at = p_now_ms when locked_until > p_now_ms; no-op for a NULL or expired session.
Errors: none.
Called by: ack_work_item and renew_work_item_lock; internal helper without SET: runs under its caller's search_path.
Notes: times are ms since the Unix epoch, passed in as p_now_ms.$c$;
