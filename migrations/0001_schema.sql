-- 0001_schema: the tables and indexes of one duroxide-pg store.
--
-- Everything lives in the provider's schema: the migration runner sets
-- `search_path` to that schema before it runs this file, so names stay
-- unqualified. All times are milliseconds since the Unix epoch, computed by the
-- Rust side (`p_now_ms`), never by the database clock.

-- One row per orchestration instance. Created by the first ack whose metadata
-- names the orchestration (never by an enqueue).
CREATE TABLE IF NOT EXISTS instances (
    instance_id           TEXT PRIMARY KEY,
    orchestration_name    TEXT NOT NULL,
    orchestration_version TEXT,                        -- NULL: unknown
    current_execution_id  BIGINT NOT NULL DEFAULT 1,
    parent_instance_id    TEXT,                        -- NULL: a root instance
    custom_status         TEXT,
    custom_status_version BIGINT NOT NULL DEFAULT 0,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_parent_idx
    ON instances (parent_instance_id) WHERE parent_instance_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS instances_created_idx ON instances (created_at DESC, instance_id);

-- One row per execution (ContinueAsNew starts a new one). The pinned duroxide
-- version is kept as three integers so range checks compare row values.
CREATE TABLE IF NOT EXISTS executions (
    instance_id   TEXT   NOT NULL,
    execution_id  BIGINT NOT NULL,
    status        TEXT   NOT NULL DEFAULT 'Running',
    output        TEXT,
    pinned_major  BIGINT,
    pinned_minor  BIGINT,
    pinned_patch  BIGINT,
    started_at    BIGINT NOT NULL,
    completed_at  BIGINT,
    PRIMARY KEY (instance_id, execution_id)
);

-- Append-only event history. `event_data` is the event's JSON text exactly as
-- serde wrote it: stored as TEXT (not JSONB) so a read hands the bytes straight
-- to serde, parsing each event once and never re-serialising it.
CREATE TABLE IF NOT EXISTS history (
    instance_id  TEXT   NOT NULL,
    execution_id BIGINT NOT NULL,
    event_id     BIGINT NOT NULL CHECK (event_id > 0),
    event_data   TEXT   NOT NULL,
    PRIMARY KEY (instance_id, execution_id, event_id)
);

-- Orchestrator queue. The instance lock (instance_locks) is authoritative; a
-- row's lock_token only says which fetch tagged it, so that ack deletes exactly
-- the messages that fetch handed out.
CREATE TABLE IF NOT EXISTS orchestrator_queue (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_id   TEXT    NOT NULL,
    kind          TEXT    NOT NULL,                    -- WorkItem variant name
    work_item     TEXT    NOT NULL,                    -- WorkItem JSON
    visible_at    BIGINT  NOT NULL,
    lock_token    TEXT,
    attempt_count INTEGER NOT NULL DEFAULT 0 CHECK (attempt_count >= 0)
);
CREATE INDEX IF NOT EXISTS orchestrator_queue_visible_idx ON orchestrator_queue (visible_at, id);
CREATE INDEX IF NOT EXISTS orchestrator_queue_instance_idx ON orchestrator_queue (instance_id, id);
CREATE INDEX IF NOT EXISTS orchestrator_queue_token_idx
    ON orchestrator_queue (lock_token) WHERE lock_token IS NOT NULL;

-- Instance-level leases: at most one dispatcher owns an instance at a time.
CREATE TABLE IF NOT EXISTS instance_locks (
    instance_id  TEXT   PRIMARY KEY,
    lock_token   TEXT   NOT NULL UNIQUE,
    locked_until BIGINT NOT NULL,
    locked_at    BIGINT NOT NULL
);

-- Worker queue with item-level peek-locks. The identity columns are copied out
-- of the WorkItem so cancellation and deletion find rows without parsing JSON.
CREATE TABLE IF NOT EXISTS worker_queue (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    work_item     TEXT    NOT NULL,
    visible_at    BIGINT  NOT NULL,
    lock_token    TEXT    UNIQUE,
    locked_until  BIGINT,
    attempt_count INTEGER NOT NULL DEFAULT 0 CHECK (attempt_count >= 0),
    instance_id   TEXT,
    execution_id  BIGINT,
    activity_id   BIGINT,
    session_id    TEXT,
    tag           TEXT
);
CREATE INDEX IF NOT EXISTS worker_queue_visible_idx ON worker_queue (visible_at, id);
CREATE INDEX IF NOT EXISTS worker_queue_activity_idx
    ON worker_queue (instance_id, execution_id, activity_id);
CREATE INDEX IF NOT EXISTS worker_queue_lease_idx
    ON worker_queue (locked_until) WHERE lock_token IS NOT NULL;
CREATE INDEX IF NOT EXISTS worker_queue_session_idx
    ON worker_queue (session_id) WHERE session_id IS NOT NULL;

-- Activity sessions: which worker owns a session, until when.
CREATE TABLE IF NOT EXISTS sessions (
    session_id       TEXT   PRIMARY KEY,
    worker_id        TEXT   NOT NULL,
    locked_until     BIGINT NOT NULL,
    last_activity_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_worker_idx ON sessions (worker_id);

-- Per-instance key/value store: values merged at the end of prior executions.
CREATE TABLE IF NOT EXISTS kv_store (
    instance_id        TEXT   NOT NULL,
    key                TEXT   NOT NULL,
    value              TEXT   NOT NULL,
    last_updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (instance_id, key)
);

-- Changes made by the current execution; a NULL value is a tombstone. Merged
-- into kv_store when the execution reaches a terminal status.
CREATE TABLE IF NOT EXISTS kv_delta (
    instance_id        TEXT   NOT NULL,
    key                TEXT   NOT NULL,
    value              TEXT,
    last_updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (instance_id, key)
);
